"""Ingest's per-batch reads of history go through an index bounded by their window (SQLite's plans).

At a million mails a 2,000-mail backlog cost the daemon four times the CPU of
an empty database (bench/README.md, Growth): the per-domain acknowledgement
limit walked every acknowledgement ever sent to a domain, the team's 30-day
handling rate read every event, and a package's draws this month every ledger
row of the package. Each statement these three run is explained here: it must
search by the time window's index and scan no table of history.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event

from maild.billing.hours import package_draws
from maild.config import load_config
from maild.desk.team import Team
from maild.rules.customers import Contract
from maild.storage import store
from maild.storage.db import open_database
from tests.helpers import maildir_source, write_config

NOW = datetime(2026, 12, 3, 10, tzinfo=timezone.utc)


def test_ingest_reads_windows_of_history_through_their_indexes(tmp_path: Path) -> None:
    (tmp_path / "Maildir").mkdir()
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525))
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []
    package = Contract(id="p", kind="prepaid", start=date(2026, 1, 1), package_minutes=600)
    with sessions() as session:
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
        store.recent_automatic_by_domain(session, {"acme.pl", "nord.no"}, NOW - timedelta(hours=1))
        Team(session, config).handling_rate(NOW)
        package_draws(session, [package], NOW, ZoneInfo("Europe/Warsaw"))
    plans: list[tuple[str, str]] = []
    with engine.connect() as conn:
        for statement, params in statements:
            if statement.lstrip().upper().startswith("SELECT"):
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                plans.append((statement, " | ".join(str(step[-1]) for step in plan)))
    engine.dispose()
    every = " || ".join(plan for _, plan in plans)
    for index in ("ix_outbox_created_at", "ix_events_kind_at", "ix_ledger_contract_booked"):
        assert index in every, (index, plans)
    for statement, plan in plans:
        assert not any(f"SCAN {table}" in plan for table in ("outbox", "events", "ledger")), (statement, plan)
        assert "SCAN outbox USING INDEX ix_outbox_rate" not in plan, (statement, plan)
