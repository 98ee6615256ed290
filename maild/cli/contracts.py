"""``maild contracts list|sync``: contracts with their balances, and the customers file imported."""
from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from maild.cli import common
from maild.cli.common import Commands, Failure, customers_of, hm, iso_date, tz_of
from maild.cli.output import print_json, print_table
from maild.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from maild.config import Config

log = logging.getLogger("maild.cli")


def cmd_contracts_list(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    from maild.billing import reports

    customers = customers_of(cfg)
    with engine.connect() as conn:
        balances = reports.contract_balances(conn, customers, common.clock(), tz_of(cfg))
    data = [
        {
            "customer": b.customer_id, "customer_name": b.customer_name, "contract_id": b.contract_id,
            "kind": b.kind, "start": iso_date(b.start), "end": iso_date(b.end),
            "valid_until": iso_date(b.valid_until), "used_minutes_month": b.used_minutes_month,
            "balance_minutes": b.balance_minutes, "carry_over_minutes": b.carry_over_minutes,
            "overage_minutes": b.overage_minutes, "expired": b.expired, "removed": b.removed,
        }
        for b in balances
    ]
    if args.json:
        print_json(data)
        return 0
    print_table(
        ["customer", "contract", "kind", "used (month)", "balance", "carry-over", "overage", "valid until", ""],
        [[b.customer_id, b.contract_id, b.kind, hm(b.used_minutes_month), hm(b.balance_minutes),
          hm(b.carry_over_minutes), hm(b.overage_minutes), iso_date(b.valid_until) or "-",
          "removed" if b.removed else ("expired" if b.expired else "")] for b in balances],
    )
    return 0


def cmd_contracts_sync(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.storage import store

    try:
        customers = customers_of(cfg)
    except ConfigError as exc:
        raise Failure(f"customers file rejected, database unchanged: {exc}", 2) from None
    limit = None if args.allow_removals else cfg.customers_max_removed_percent
    try:
        with sessions() as session, session.begin():
            seen, ended = store.sync_customers(session, customers, common.clock(), limit, str(cfg.customers_file))
    except ConfigError as exc:
        raise Failure(str(exc), 1) from None
    log.info("customers file %s synced: %d contracts, %d ended", cfg.customers_file, seen, ended)
    print(f"synced {len(customers)} customers, {seen} contracts; {ended} contracts ended")
    return 0


def register(commands: Commands) -> None:
    contracts = commands.group("contracts", "contracts and balances")
    cl = commands.add_to(contracts, "list", cmd_contracts_list, help="contracts with hours used and balances",
                         needs="engine")
    cl.add_argument("--json", action="store_true")
    cs = commands.add_to(contracts, "sync", cmd_contracts_sync, help="import the customers file into the database")
    cs.add_argument("--allow-removals", action="store_true",
                    help="accept a file that removes more than customers_max_removed_percent of the customers")
