"""A fourth contract kind is one entry in ``kinds.KINDS``: nothing else changes.

A "retainer" (a monthly fee for a monthly allowance of hours, with a target but
no guaranteed reaction) is registered by this test's fixture only. The
customers file loader takes its keys, ``resolve`` picks it in its place in the
choice order, its tickets get its tier and assignment weight, and the month's
reports show it where its rules say (an allowance, a target), all without a
line of ``maild`` knowing its name.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from maild.billing.charts import allowance_chart, month_summary, prepaid_chart, sla_chart
from maild.billing.reports import LedgerLine, TicketInfo, build_hours_report, build_sla_report
from maild.cli.report import hours_json, sla_json
from maild.config import load_config
from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk
from maild.errors import ConfigError
from maild.rules.assignment import ticket_weight
from maild.rules.contracts import CustomerIndex, resolve
from maild.rules.customers import Contract, PackageSettings, parse_customers
from maild.rules.kinds import KINDS, TIER_BY_KIND, UNVERIFIED_TIER, ContractHead, KindRules, rules_of
from maild.rules.prioritise import prioritise
from maild.rules.toml_table import TableReader
from maild.storage.db import open_database
from maild.storage.store import sync_customers
from maild.storage.models import Ticket
from tests.helpers import maildir_source, write_config

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")


def _parse_retainer(reader: TableReader, packages: PackageSettings, head: ContractHead) -> Contract:
    monthly = reader.scaled("monthly_hours", 60, "minutes")
    if monthly is None:
        raise reader.fail("monthly_hours", "missing required key")
    return Contract(
        id=head.id, kind="retainer",  # type: ignore[arg-type]
        start=head.start, end=head.end, hourly_rate_cents=head.hourly_rate_cents, monthly_minutes=monthly,
        monthly_fee_cents=reader.scaled("monthly_fee", 100, "grosze"), target_hours=reader.integer("target_hours", 1),
    )


RETAINER = KindRules(
    "retainer",  # type: ignore[arg-type]
    tier=1, weight=2, choice=15,  # queued with the packages; tried after sla, before prepaid
    reaction_deadline=False, target_deadline=True, monthly_allowance=True, packages=False, billed_per_unit=False,
    file_keys=frozenset({"monthly_hours", "monthly_fee", "target_hours"}), parse=_parse_retainer,
)


@pytest.fixture
def retainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[KindRules]:
    monkeypatch.setitem(KINDS, "retainer", RETAINER)
    yield RETAINER


def customers_file(*contracts: dict[str, Any]) -> dict[str, Any]:
    return {"customers": [{"id": "acme", "name": "ACME", "addresses": ["jan@acme.pl"], "contracts": list(contracts)}]}


RETAINER_ROW = {"id": "acme-r", "kind": "retainer", "start": date(2026, 1, 1), "end": date(2026, 5, 31),
                "monthly_hours": 10, "monthly_fee": 1500, "target_hours": 8, "hourly_rate": 250}
ROWS = (
    {"id": "acme-sla", "kind": "sla", "start": date(2026, 1, 1), "end": date(2026, 2, 28), "monthly_hours": 4},
    RETAINER_ROW,
    {"id": "acme-p", "kind": "prepaid", "start": date(2026, 1, 1), "hours": 10},
    {"id": "acme-occ", "kind": "occasional", "start": date(2025, 1, 1), "hourly_rate": 200},
)


def test_without_its_entry_the_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="kind.*must be one of sla, prepaid, occasional, got 'retainer'"):
        parse_customers(customers_file(RETAINER_ROW), "c.toml", PackageSettings())


@pytest.mark.usefixtures("retainer")
def test_the_customers_file_takes_its_keys_and_refuses_others() -> None:
    [acme] = parse_customers(customers_file(*ROWS), "c.toml", PackageSettings())
    contract = acme.contracts[1]
    assert (contract.kind, contract.monthly_minutes, contract.monthly_fee_cents, contract.target_hours,
            contract.hourly_rate_cents) == ("retainer", 600, 150000, 8, 25000)
    with pytest.raises(ConfigError, match=r"contracts\[0\]\.hours.*not allowed for kind 'retainer'"):
        parse_customers(customers_file({**RETAINER_ROW, "hours": 10}), "c.toml", PackageSettings())
    with pytest.raises(ConfigError, match=r"monthly_hours.*missing required key"):
        parse_customers(customers_file({k: v for k, v in RETAINER_ROW.items() if k != "monthly_hours"}),
                        "c.toml", PackageSettings())
    with pytest.raises(ConfigError, match=r"monthly_fee.*not allowed for kind 'prepaid'"):
        parse_customers(customers_file({**ROWS[2], "monthly_fee": 10}), "c.toml", PackageSettings())


@pytest.mark.usefixtures("retainer")
def test_resolve_tries_it_in_its_place() -> None:
    [acme] = parse_customers(customers_file(*ROWS), "c.toml", PackageSettings())
    index = CustomerIndex([acme])
    left = {"acme-p": 300}.get

    def pick(day: date) -> str | None:
        resolution = resolve("jan@acme.pl", index, day, lambda cid: left(cid, 0))
        return resolution.contract.id if resolution.contract else None

    assert pick(date(2026, 2, 10)) == "acme-sla"    # sla first
    assert pick(date(2026, 3, 10)) == "acme-r"      # then the retainer, before the package with hours left
    assert pick(date(2026, 6, 10)) == "acme-p"      # retainer ended: the package
    assert resolve("jan@acme.pl", index, date(2026, 3, 10), lambda cid: 0).reason.endswith(
        "contract acme-r (retainer)")


@pytest.mark.usefixtures("retainer")
def test_its_tickets_get_its_tier_and_weight() -> None:
    prio = prioritise(kind="retainer", verified=True, subject="Pytanie", text="", automatic=False,  # type: ignore[arg-type]
                      urgent_words=(), peak_windows=(), day=date(2026, 3, 10))
    assert prio.tier == RETAINER.tier == TIER_BY_KIND["retainer"] == 1
    assert prio.tier > TIER_BY_KIND["sla"] and prio.tier < TIER_BY_KIND["occasional"]
    assert ticket_weight("retainer") == 2 and ticket_weight("retainer", verified=False) == 1
    assert rules_of("retainer") is RETAINER


@pytest.mark.usefixtures("retainer")
def test_the_desk_gives_a_verified_ticket_its_tier(tmp_path: Path) -> None:
    """A consultant's #verify: the unverified ticket takes its kind's tier, and no reaction clock."""
    cfg = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25))
    [acme] = parse_customers(customers_file(*ROWS[1:]), "c.toml", PackageSettings())
    now = datetime(2026, 3, 10, 9, tzinfo=UTC)
    with open_database(cfg.database_url)() as session, session.begin():
        sync_customers(session, [acme], now)    # its terms are stored like any kind's
        ticket = Ticket(subject="Pytanie", status="new", requester="jan@acme.pl", requester_name="Jan", language="pl",
                        customer_id="acme", contract_id="acme-r", contract_kind="retainer", verified=False,
                        tier=UNVERIFIED_TIER, priority="P3", created_at=now, updated_at=now,
                        participants=["jan@acme.pl"])
        session.add(ticket)
        session.flush()
        TicketDesk(DeskContext.for_config(cfg, [acme]), session).verify(ticket, "ola@firma.pl", now)
        assert (ticket.verified, ticket.tier, ticket.reaction_due) == (True, RETAINER.tier, None)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.usefixtures("retainer")
def test_the_reports_show_it_where_its_rules_say() -> None:
    [acme] = parse_customers(customers_file(*ROWS[1:]), "c.toml", PackageSettings())
    lines = [
        LedgerLine(id=1, contract_id="acme-r", customer_id="acme", ticket_id=1, minutes=420, overage=False,
                   booked_at=_at("2026-01-10T10:00"), scope="consultation", reverses=None),
        LedgerLine(id=2, contract_id="acme-r", customer_id="acme", ticket_id=2, minutes=700, overage=False,
                   booked_at=_at("2026-02-10T10:00"), scope="consultation", reverses=None),
    ]
    tickets = {n: TicketInfo(id=n, ref=f"SUP-{n}", subject="t", customer_id="acme", contract_id="acme-r",
                             contract_kind="retainer", created_at=_at(f"2026-0{n}-09T10:00"), reaction_due=None,
                             first_response_at=_at(f"2026-0{n}-09T12:00"), target_due=_at(f"2026-0{n}-09T18:00"))
               for n in (1, 2)}
    february = build_hours_report("2026-02", WARSAW, [acme], lines, tickets, 15)
    hours = february.contract("acme-r")
    assert hours is not None and hours.kind == "retainer"
    # a monthly allowance: 180 min of January carried in, 600 this month, 700 used
    assert (hours.allowance_minutes, hours.carry_in_minutes, hours.total_minutes) == (600, 180, 700)
    assert hours.carry_out_minutes == 80 and hours.overage_minutes == 0

    sla = build_sla_report("2026-02", WARSAW, list(tickets.values()), {"acme": "ACME"}, _at("2026-03-01T00:00"))
    [row] = sla.contracts
    assert (row.kind, row.contract_id, row.met, row.missed) == ("retainer", "acme-r", 1, 0)   # a target, reported

    report = {"month": "2026-02", "hours": hours_json(february), "sla": sla_json(sla),
              "activity": {"tickets": 1, "backlog": {}}}
    assert allowance_chart(report, "en").categories == ("ACME (acme-r)",)
    assert prepaid_chart(report, "en").categories == ("ACME (acme-p)",)    # the package, not the retainer
    assert sla_chart(report, "en").categories == ()     # no reaction promised, so no attainment bar
    assert month_summary(report)["sla_due"] == 0
