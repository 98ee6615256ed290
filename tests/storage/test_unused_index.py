"""The indexes migrations 0008, 0009, 0010 and 0011 dropped are read by no query (SQLite's plans, with each index put back).

Every ingested mail writes an intake row, and each index on a table ingest
writes costs an insert into one more B-tree, at a million mails a page read
and written per mail (bench/README.md, "Ingest at 1M, sixth session"). An index
no statement reads is only that cost. This runs what an operator and the daemon
run (ingest with a duplicate and a reply, status, the reports, the ticket
commands, the statements test_ingest_plans explains), records every statement,
puts the dropped index back and explains each read: none may use it.
"""
from __future__ import annotations

import re
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event

from maild.billing.hours import package_draws
from maild.cli.main import main
from maild.config import load_config
from maild.desk.team import Team
from maild.ops.daemon import Daemon
from maild.rules.customers import Contract
from maild.storage import store
from maild.storage.db import open_database
from tests.helpers import deliver, maildir_source, make_mail, write_config

DROPPED = {"ix_intake_source_key": "CREATE INDEX ix_intake_source_key ON intake (source_key)",
           "ix_outbox_rate": "CREATE INDEX ix_outbox_rate ON outbox (rate_key, created_at)",
           "ix_tickets_contract_id": "CREATE INDEX ix_tickets_contract_id ON tickets (contract_id)"}
# 0010 replaced the index of every message's Message-ID by a partial one (tables.MESSAGE_ID_LOOKUP): put back, the
# full index would serve the lookups as well as the partial one, so SQLite may pick it; what must hold is that
# without it no statement reads messages whole
REPLACED = ("ix_messages_message_id",)


def _explain(db: Path, statements: list[tuple[str, Any]], put_back: bool = True) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        if not put_back:
            return [(statement, " | ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + statement,
                                                                             params or ()).fetchall()))
                    for statement, params in statements
                    if statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "WITH")]
        for ddl in DROPPED.values():
            conn.execute(ddl)
        plans = []
        for statement, params in statements:
            if statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "WITH"):
                rows = conn.execute("EXPLAIN QUERY PLAN " + statement, params or ()).fetchall()
                plans.append((statement, " | ".join(str(r[-1]) for r in rows)))
        # the check can see an index: a lookup by the column does use it
        probe = conn.execute("EXPLAIN QUERY PLAN SELECT id FROM intake WHERE source_key = 'x'").fetchall()
        assert "ix_intake_source_key" in str(probe), probe
        probe = conn.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM outbox WHERE rate_key IN ('a/b', 'c/d')"
                             " AND created_at >= '2026' GROUP BY rate_key").fetchall()
        assert "ix_outbox_rate" in str(probe), probe
        probe = conn.execute("EXPLAIN QUERY PLAN SELECT id FROM tickets WHERE contract_id = 'acme-sla'").fetchall()
        assert "ix_tickets_contract_id" in str(probe), probe
        return plans
    finally:
        conn.close()


def test_no_statement_reads_the_dropped_indexes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Maildir").mkdir()
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525)
    config = load_config(path)
    now = datetime.now(timezone.utc)
    maildir = tmp_path / "Maildir"
    deliver(maildir, make_mail(msgid="<a1@acme.pl>"), now)
    deliver(maildir, make_mail(sender="Kari <kari@nord.no>", subject="Printer", msgid="<n1@nord.no>"), now)
    deliver(maildir, make_mail(msgid="<a1@acme.pl>"), now)  # the same mail again: found by its dedupe key
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if not many:
            statements.append((statement, params))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        daemon = Daemon(config)
        assert sum(daemon.ingest_all().values()) == 3
        deliver(maildir, make_mail(subject="Re: [SUP-1] Problem z fakturą", msgid="<a2@acme.pl>",
                                   headers={"In-Reply-To": "<a1@acme.pl>"}), now + timedelta(minutes=1))
        assert sum(daemon.ingest_all().values()) == 1
        daemon.parse_ahead.close()
        daemon.source.close()
        month = now.strftime("%Y-%m")
        for argv in (["status", "--json"], ["report", "hours", "--month", month, "--json"],
                     ["report", "sla", "--month", month, "--json"], ["tickets", "list"],
                     ["tickets", "list", "--json", "--status", "all"], ["tickets", "show", "SUP-1"],
                     ["quarantine", "list"]):
            assert main(["--config", str(path), *argv]) == 0, argv
        sessions = open_database(config.database_url)
        with sessions() as session:
            store.recent_automatic(session, (), now - timedelta(hours=1), {"acme.pl"})[1]
            Team(session, config).handling_rate(now)
            Team(session, config).note_opened(1, "P3")
            package_draws(session, [Contract(id="p", kind="prepaid", start=date(2026, 1, 1), package_minutes=600)],
                          now, ZoneInfo("Europe/Warsaw"))
        sessions.kw["bind"].dispose()
        daemon.sessions.kw["bind"].dispose()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    capsys.readouterr()
    plans = _explain(config.storage_path / "maild.db", statements)
    assert any("intake" in s for s, _ in plans), "the workload read no intake row"
    assert any("rate_key" in s and "count(" in s.lower() for s, _ in plans), "the workload counted no rate key"
    assert any("intake.dedupe_key IN" in s and "messages" in s for s, _ in plans), "the workload threaded nothing"
    for name in DROPPED:
        used = [(s, p) for s, p in plans if re.search(rf"\b{name}\b", p)]
        assert not used, used
    names = {n for (n,) in sqlite3.connect(config.storage_path / "maild.db").execute("SELECT name FROM sqlite_master")}
    assert not names & set(REPLACED), names
    as_is = _explain(config.storage_path / "maild.db", statements, put_back=False)
    whole = [(s, p) for s, p in as_is if re.search(r"\bSCAN messages\b", p)]
    assert not whole, whole
