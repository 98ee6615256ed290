"""Ingest's per-batch reads of history go through an index bounded by their window (SQLite's plans).

At a million mails a 2,000-mail backlog cost the daemon four times the CPU of
an empty database (bench/README.md, Growth): the per-domain acknowledgement
limit walked every acknowledgement ever sent to a domain, the team's 30-day
handling rate read every event, and a package's draws this month every ledger
row of the package. Each statement these three run is explained here: it must
search by the time window's index and scan no table of history; the per-domain
count reads the index alone (a covering index, 0007), on SQLite and PostgreSQL.
"""
from __future__ import annotations

import sqlite3
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
        store.recent_automatic(session, (), NOW - timedelta(hours=1), {"acme.pl", "nord.no"})[1]
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
    for index in ("ix_outbox_recent_automatic", "ix_events_kind_at", "ix_ledger_contract_booked"):
        assert index in every, (index, plans)
    # the per-domain count never reads the outbox's wide rows: the index holds what it needs
    [(_, domain_plan)] = [(s, p) for s, p in plans if "rate_key" in s and "count(" in s.lower()]
    assert "USING COVERING INDEX ix_outbox_recent_automatic" in domain_plan, domain_plan
    # only mail with a rate key is in it (0018): a notification's row is no limit's business
    index_sql = sqlite3.connect(tmp_path / "maild.db").execute(
        "SELECT sql FROM sqlite_master WHERE name = 'ix_outbox_recent_automatic'").fetchone()[0]
    assert "WHERE rate_key IS NOT NULL" in index_sql, index_sql
    for statement, plan in plans:
        assert not any(f"SCAN {table}" in plan for table in ("outbox", "events", "ledger")), (statement, plan)
        assert "SCAN outbox USING INDEX ix_outbox_rate" not in plan, (statement, plan)


def test_the_per_domain_count_is_an_index_only_scan_on_postgresql(pg_url: str) -> None:
    """PostgreSQL answers the last hour's automatic mail per domain from the covering index
    (an index-only scan; seq and bitmap scans are turned off: an empty table would be read whole)."""
    sessions = open_database(pg_url)
    engine = sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []
    with sessions() as session:
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
        store.recent_automatic(session, (), NOW - timedelta(hours=1), {"acme.pl"})[1]
    [(statement, params)] = [(s, p) for s, p in statements if "rate_key" in s]
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_bitmapscan = off")
        plan = " | ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
        definition = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_outbox_recent_automatic'").scalar_one()
    engine.dispose()
    assert "Index Only Scan using ix_outbox_recent_automatic" in plan, plan
    # a notification's sent mark (a new row version) writes no entry into it: only rows with a rate key are in it
    assert "WHERE (rate_key IS NOT NULL)" in definition, definition


def test_the_open_queue_is_counted_off_the_queue_index(tmp_path: Path) -> None:
    """Each batch's first new ticket counts the open queue per (tier, priority) for its place in it: grouped by
    status first, in ix_tickets_queue's order, SQLite counts the index range as it reads it, where grouping by
    (tier, priority) alone sorted every open ticket into a temporary B-tree per batch (58,000 open: 17 -> 7 ms)."""
    (tmp_path / "Maildir").mkdir()
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525))
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []
    with sessions() as session:
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
        Team(session, config).note_opened(1, "P2")
    [(statement, params)] = [(s, p) for s, p in statements if "FROM tickets" in s]
    with engine.connect() as conn:
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
    engine.dispose()
    assert "COVERING INDEX ix_tickets_queue" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_message_ids_are_looked_up_through_the_partial_index_and_intake(tmp_path: Path) -> None:
    """Threading's and the second copy's lookups by Message-ID (0010): maild's own and reused Message-IDs in
    ix_messages_message_id_lookup (the query carries its condition), every other inbound one through intake's
    dedupe key; neither reads the messages table whole."""
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []
    with sessions() as session:
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
        assert store.tickets_by_message_id(session, ["a@acme.pl", "maild.t1.ack.x@h"]) == {}
        assert store.inbound_copies(session, "a@acme.pl") == {}
    recorded = list(statements)
    plans: list[str] = []
    with engine.connect() as conn:
        for statement, params in recorded:
            if "messages" in statement:
                plans.append(" | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                                 params)))
    engine.dispose()
    assert len(plans) == 2, plans
    for plan in plans:
        assert "ix_messages_message_id_lookup" in plan and "sqlite_autoindex_intake_1" in plan, plan
        assert "SCAN messages" not in plan and "SCAN intake" not in plan, plan


def _team_statements(sessions: Any, config: Any, ask: str) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """``Team.<ask>`` for three consultants over four tickets, and the statements it ran on tickets."""
    from maild.storage.tables import tickets

    engine = sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []
    with sessions() as session, session.begin():
        session.execute(tickets.insert(), [
            {"id": n, "subject": "s", "requester": "jan@acme.pl", "status": status,
             "tier": 2, "priority": "P3", "contract_kind": kind, "verified": True,
             "created_at": NOW, "updated_at": NOW, "assigned_to": who, "assigned_at": NOW - timedelta(days=n)}
            for n, who, status, kind in ((1, "anna@firma.pl", "open", "sla"), (2, "anna@firma.pl", "closed", "sla"),
                                         (3, "piotr@firma.pl", "new", "occasional"), (4, None, "new", "sla"))])
    with sessions() as session:
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
        found = getattr(Team(session, config), ask)(["anna@firma.pl", "piotr@firma.pl", "ola@firma.pl"])
    return found, [(s, p) for s, p in statements if "FROM tickets" in s]


def _last_assigned_statements(sessions: Any, config: Any) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    return _team_statements(sessions, config, "last_assigned")


def test_each_consultants_last_assignment_is_the_end_of_an_index(tmp_path: Path) -> None:
    """The assignment's tie-break asks for each present consultant's last assignment once per batch and day;
    as a GROUP BY over an IN list it read every ticket they were ever given (0.34 s a batch at 1M mails, 790,000
    of them assigned). Now one query each, ordered as the index is and limited to one row: the end of
    ix_tickets_assigned_last (0015), reading the index alone."""
    (tmp_path / "Maildir").mkdir()
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525))
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    last, statements = _last_assigned_statements(sessions, config)
    assert last == {"anna@firma.pl": NOW - timedelta(days=1), "piotr@firma.pl": NOW - timedelta(days=3),
                    "ola@firma.pl": None}
    assert len(statements) == 3
    with sessions.kw["bind"].connect() as conn:
        for statement, params in statements:
            plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
            assert "COVERING INDEX ix_tickets_assigned_last (assigned_to=? AND assigned_at>?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    sessions.kw["bind"].dispose()


def test_each_consultants_last_assignment_is_one_index_row_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL reads the index backwards for one row (a Limit)."""
    (tmp_path / "Maildir").mkdir()
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525))
    sessions = open_database(pg_url)
    last, statements = _last_assigned_statements(sessions, config)
    assert last["anna@firma.pl"] == NOW - timedelta(days=1) and last["ola@firma.pl"] is None
    with sessions.kw["bind"].connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_bitmapscan = off")
        for statement, params in statements:
            plan = " | ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
            assert "Limit" in plan and "Backward using ix_tickets_assigned_last" in plan, plan
    sessions.kw["bind"].dispose()


def test_the_open_load_is_read_from_the_assignee_index_alone(tmp_path: Path) -> None:
    """The open load of the present consultants, once per batch, counts their open tickets by kind and
    verification. Through ix_tickets_assignee (assigned_to, status) it then read each open ticket's row
    (15 ms a batch with 9,000 open tickets assigned); with the two columns in the index (0016) it reads the
    index alone."""
    (tmp_path / "Maildir").mkdir()
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525))
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    load, statements = _team_statements(sessions, config, "open_load")
    assert load["ola@firma.pl"] == 0 and load["anna@firma.pl"] > 0 and load["piotr@firma.pl"] > 0
    assert len(statements) == 1
    with sessions.kw["bind"].connect() as conn:
        statement, params = statements[0]
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
    sessions.kw["bind"].dispose()
    assert "COVERING INDEX ix_tickets_assignee (assigned_to=? AND status=?)" in plan, plan


def test_the_open_load_is_an_index_only_scan_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "Maildir").mkdir()
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525))
    sessions = open_database(pg_url)
    load, statements = _team_statements(sessions, config, "open_load")
    assert load["ola@firma.pl"] == 0 and load["anna@firma.pl"] > 0
    engine = sessions.kw["bind"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE tickets")  # the visibility map an index-only scan relies on
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_bitmapscan = off")
        statement, params = statements[0]
        plan = " | ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
    engine.dispose()
    assert "Index Only Scan using ix_tickets_assignee" in plan, plan
