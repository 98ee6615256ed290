"""The sla balances a notification's header shows are read from the ledger again only when they may differ.

Each batch of a backlog read the month's every ledger row for them: 0.16 s a batch with a month of ~8,000
bookings, where an empty ledger costs nothing, so a 2,000-mail backlog at a million mails of history took
-40 % on a working day (bench/README, thirteenth session). The notifier keeps the last batch's balances
while the ledger's last row, the local day and the customers are the same, and not while its own
transaction has booked.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from maild.config import load_config
from maild.desk import notifier as notifier_module
from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk
from maild.desk.notifier import Notifier
from maild.rules.customers import load_customers
from maild.storage import store
from maild.storage.db import open_database
from maild.storage.models import LedgerRow
from maild.storage.tables import ledger
from tests.helpers import maildir_source, write_config

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_the_balances_are_read_again_only_when_what_they_come_from_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, migrated=True))
    sessions = open_database(cfg.database_url)
    customers = load_customers(cfg.customers_file, cfg.packages)
    with sessions() as session, session.begin():
        store.sync_customers(session, customers, NOW)
    reads: list[datetime] = []
    real = notifier_module.sla_balances

    def counted(session: Any, known: Any, at: datetime, tz: Any) -> dict[str, int | None]:
        reads.append(at)
        return real(session, known, at, tz)

    monkeypatch.setattr(notifier_module, "sla_balances", counted)
    ctx = DeskContext.for_config(cfg, customers)
    notifier = Notifier(cfg, ctx.calendar.tz)

    def batch(at: datetime, ctx: DeskContext, book: bool = False) -> dict[str, int | None]:
        with sessions() as session, session.begin():
            desk = TicketDesk(ctx, session)
            if book:
                session.add(LedgerRow(contract_id="acme-sla", customer_id="acme", minutes=30, overage=False,
                                      booked_at=at, by="anna@firma.pl", note=""))
            return notifier._sla_balances(desk, at)

    first = batch(NOW, ctx)
    opening = first["acme-sla"]
    assert opening is not None and opening > 0
    assert batch(NOW + timedelta(seconds=5), ctx) == first and len(reads) == 1  # the next batch: kept
    with sessions() as session, session.begin():  # a booking by another process (maild time add)
        session.execute(insert(ledger).values(contract_id="acme-sla", customer_id="acme", minutes=60,
                                              overage=False, booked_at=NOW + timedelta(seconds=6), by="x", note=""))
    assert batch(NOW + timedelta(seconds=10), ctx)["acme-sla"] == opening - 60 and len(reads) == 2
    assert batch(NOW + timedelta(days=1), ctx) and len(reads) == 3  # another day (a contract may end)
    reloaded = DeskContext.for_config(cfg, load_customers(cfg.customers_file, cfg.packages))
    batch(NOW + timedelta(days=1, seconds=5), reloaded)
    assert len(reads) == 4  # the customers file reloaded
    # this transaction booked: read, and not kept (its row's number may come back if it rolls back)
    assert batch(NOW + timedelta(days=1, seconds=9), reloaded, book=True)["acme-sla"] == opening - 90
    assert len(reads) == 5
    batch(NOW + timedelta(days=1, seconds=12), reloaded)
    assert len(reads) == 6
