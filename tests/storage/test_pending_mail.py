"""Pending mail is found through the pending rows' own index, and a sent mark writes no other index of pending-ness.

A sent mark changes ``status``, so every index holding ``status`` (or any column the mark writes) takes a
new entry per mark: on PostgreSQL the mark's new row version goes into every index of the outbox, on SQLite
the mark rewrites the entry's page. 0017 dropped ``ix_outbox_due`` (status, next_attempt_at), which held the
sent rows too and which no statement of the cycle read since 0014; the daemon's questions about pending mail
(is any due, how many wait and since when, are at least N due, the claim) go through
``ix_outbox_pending_order``, whose condition they write out (``queries.PENDING``).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, inspect
from sqlalchemy.orm import sessionmaker

from maild.storage import queries, tables
from maild.storage.db import open_database

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
# what a sent mark writes (outbox._MARK_SENT)
MARKED = {"status", "sent_at", "attempts", "last_error"}


def _fill(engine: Engine) -> None:
    """5,000 sent rows, then 300 pending of which the first 100 wait for a retry (due at 12:30); on
    PostgreSQL 45,000 more sent rows before them (what a planner weighs a scan against)."""
    postgres = engine.dialect.name == "postgresql"
    series = "generate_series(1, 5300) g" if postgres else \
        "(WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < 5300) SELECT g FROM n)"
    if postgres:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO outbox (kind, ticket_id, message_id, recipients, automatic, template, language, context,"
                " status, attempts, created_at, next_attempt_at, dedupe_key, last_error) SELECT 'ack', NULL,"
                " 'old' || g || '@x', '[]', true, 'ack', 'pl', '{}', 'sent', 1, timestamp '2026-12-01', "
                " timestamp '2026-12-01', 'old' || g, '' FROM generate_series(1, 45000) g")

    def at(seconds: str) -> str:
        """10:00 plus ``seconds`` (an SQL expression), in each database's own words."""
        if postgres:
            return f"timestamp '2026-12-07 10:00:00' + {seconds} * interval '1 second'"
        return f"datetime('2026-12-07 10:00:00', '+' || ({seconds}) || ' seconds')"

    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO outbox (kind, ticket_id, message_id, recipients, automatic, template, language, context,"
            " status, attempts, created_at, next_attempt_at, dedupe_key, last_error) SELECT 'ack', NULL,"
            " 'm' || g || '@x', '[]', true, 'ack', 'pl', '{}',"
            " CASE WHEN g <= 5000 THEN 'sent' ELSE 'pending' END, 0,"
            f" {at('g')}, CASE WHEN g <= 5100 THEN {at('9000')} ELSE {at('g')} END, 'k' || g, '' FROM {series}")
        if postgres:
            conn.exec_driver_sql("ANALYZE outbox")


def _asked(engine: Engine) -> list[tuple[str, Any]]:
    """The statements of ``queries.outbox_due``, ``queries.outbox_stats`` and ``Outbox.due_at_least``, with
    their answers checked: mail is due, 300 wait since the first pending row, 200 but not 201 are due."""
    from maild.config import SmtpSettings
    from maild.outbound.outbox import Outbox, Sender

    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        with engine.connect() as conn:
            assert queries.outbox_due(conn, NOW)
            assert queries.outbox_stats(conn, NOW) == (300, datetime(2026, 12, 7, 11, 23, 21, tzinfo=UTC))
        box = Outbox(sessionmaker(bind=engine), None, SmtpSettings(host="127.0.0.1", port=1, security="none"),  # type: ignore[arg-type]
                     Sender("a@b.c", "A", "i"), clock=lambda: NOW)
        assert box.due_at_least(200) and not box.due_at_least(201)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert len(seen) == 4, seen
    return seen


def test_no_outbox_index_but_the_pending_rows_holds_what_a_sent_mark_writes(tmp_path: Path) -> None:
    """In the tables and in a migrated database: only the partial index of the pending rows has a column
    a sent mark changes (in its condition, which the mark leaves: one entry deleted, none written)."""
    holding = {index.name for index in tables.outbox.indexes
               if MARKED & {column.name for column in index.columns}}
    assert holding == set(), holding
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    migrated = {index["name"]: set(index["column_names"]) for index in inspect(engine).get_indexes("outbox")}
    assert "ix_outbox_pending_order" in migrated
    assert {name for name, columns in migrated.items() if columns & MARKED} == set(), migrated
    engine.dispose()


def test_sqlite_finds_pending_mail_through_the_pending_rows_index(tmp_path: Path) -> None:
    """SQLite uses a partial index only for a query that writes its condition out: each question about
    pending mail reads ``ix_outbox_pending_order`` and no statement scans the outbox."""
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    _fill(engine)
    with engine.connect() as conn:
        for statement, params in _asked(engine):
            plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
            assert "ix_outbox_pending_order" in plan and not re.search(r"SCAN outbox(?! USING)", plan), (statement, plan)
    engine.dispose()


def test_postgres_finds_pending_mail_through_the_pending_rows_index(pg_url: str) -> None:
    """PostgreSQL, 50,000 sent rows and 300 pending, statistics taken: each question about pending mail
    reads ``ix_outbox_pending_order``."""
    sessions = open_database(pg_url)
    engine = sessions.kw["bind"]
    _fill(engine)
    with engine.connect() as conn:
        for statement, params in _asked(engine):
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params))
            assert "ix_outbox_pending_order" in plan and "Seq Scan" not in plan, (statement, plan)
    engine.dispose()
