"""``tickets list`` pages and streams; ``tickets show`` counts its rank instead of ranking every open ticket.

The queue order puts a missing deadline last and breaks ties by creation time
and id; the cursor (``--after``) and the rank are conditions written out from
that order, so they are checked against Python's sort of the same tickets, with
many ties, on SQLite and PostgreSQL.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from maild.cli.main import main as cli_main
from maild.storage import queries, store
from maild.storage.db import open_database
from maild.storage.models import Ticket
from tests.helpers import maildir_source, write_config

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _tickets(count: int, seed: int) -> list[dict[str, Any]]:
    """Tickets with few distinct keys, so every tie-break of the queue order is needed."""
    rng = random.Random(seed)
    rows = []
    for n in range(1, count + 1):
        created = T0 + timedelta(minutes=rng.choice([0, 5, 10]))
        rows.append({
            "id": n, "subject": f"Temat {n}", "status": rng.choice(["new", "open", "waiting", "closed", "resolved"]),
            "requester": f"r{n}@acme.pl", "tier": rng.randint(0, 3), "priority": rng.choice(["P1", "P3"]),
            "reaction_due": rng.choice([None, T0 + timedelta(hours=4), T0 + timedelta(hours=8)]),
            "created_at": created, "updated_at": created, "reasons": [], "participants": [],
            "customer_id": None,
        })
    return rows


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    due = row["reaction_due"]
    return (row["tier"], row["priority"], due is None, due or T0, row["created_at"], row["id"])


def _fill(sessions: sessionmaker[Session], rows: list[dict[str, Any]]) -> None:
    with sessions() as session, session.begin():
        session.execute(insert(Ticket.__table__), rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rank_and_cursor_follow_the_queue_order(backend: str, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_migrated_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    sessions = open_database(url)
    rows = _tickets(300, seed=7)
    _fill(sessions, rows)
    ordered = sorted(rows, key=_key)
    open_order = [r["id"] for r in ordered if r["status"] in store.OPEN_STATUSES]
    with sessions() as session:
        assert store.queue_ranks(session) == {tid: i for i, tid in enumerate(open_order, start=1)}
    engine = sessions.kw["bind"]
    # the daemon's way (a session, ORM tickets as cursors) and the CLI's (a Connection, Core rows)
    with sessions() as session, engine.connect() as conn:
        for db in (session, conn):
            for row in rows[:60]:
                ticket = session.get(Ticket, row["id"]) if db is session else queries.find_ticket(conn, row["id"])
                assert ticket is not None
                expected = open_order.index(row["id"]) + 1 if row["id"] in open_order else None
                assert store.queue_rank(db, ticket) == expected, row
                behind = [r["id"] for r in ordered[ordered.index(row) + 1:]]
                got = [x.ticket.id for chunk in store.stream_tickets(db, "all", after=ticket, chunk=7)
                       for x in chunk]
                assert got == behind, row
            # the plain open list and a filtered one give the same ranks as the whole queue
            listed = [(x.ticket.id, x.rank) for chunk in store.stream_tickets(db, chunk=11) for x in chunk]
            assert listed == [(tid, i) for i, tid in enumerate(open_order, start=1)]
            tier2 = [(x.ticket.id, x.rank) for chunk in store.stream_tickets(
                db, "all", store.TicketFilter(tier=2), chunk=5) for x in chunk]
            assert tier2 == [(r["id"], open_order.index(r["id"]) + 1 if r["id"] in open_order else None)
                             for r in ordered if r["tier"] == 2]
    engine.dispose()


def test_list_pages_through_the_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25)
    (tmp_path / "Maildir").mkdir()

    def run(*args: str) -> str:
        capsys.readouterr()
        assert cli_main(["--config", str(config), "tickets", "list", *args]) == 0
        return capsys.readouterr().out

    run("--json")  # creates the database
    sessions = open_database(f"sqlite:///{tmp_path / 'var' / 'maild.db'}")
    rows = _tickets(1200, seed=3)
    _fill(sessions, rows)
    open_rows = sorted((r for r in rows if r["status"] in store.OPEN_STATUSES), key=_key)
    refs = [f"SUP-{r['id']}" for r in open_rows]

    everything = json.loads(run("--json"))
    assert [t["ref"] for t in everything] == refs
    assert [t["rank"] for t in everything] == list(range(1, len(refs) + 1))
    pages: list[dict[str, Any]] = []
    cursor: list[str] = []
    while True:
        page = json.loads(run("--json", "--limit", "250", *cursor))
        if not page:
            break
        pages += page
        cursor = ["--after", page[-1]["ref"]]
    assert pages == everything

    text = run().splitlines()
    assert text[0] == f"{len(refs)} tickets"
    assert len(text) == 1 + 1 + 100 + 1 and all(len(line) <= 80 for line in text)
    assert text[2].split()[:2] == ["1", refs[0]] and text[101].split()[:2] == ["100", refs[99]]
    assert text[-1] == f"(the first 100; next: --after {refs[99]}; every ticket: --all)"
    every = run("--all").splitlines()
    assert len(every) == 2 + len(refs) and every[-1].split()[1] == refs[-1]
    assert run("--after", refs[99], "--limit", "1").splitlines()[2].split()[:2] == ["101", refs[100]]
    with sessions() as session:
        assert session.scalar(select(Ticket.id).where(Ticket.id == 1)) == 1
    sessions.kw["bind"].dispose()


def test_list_rejects_a_bad_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25)
    (tmp_path / "Maildir").mkdir()
    assert cli_main(["--config", str(config), "tickets", "list", "--after", "SUP-404"]) == 2
    assert "no such ticket" in capsys.readouterr().err
    for bad in (["--limit", "0"], ["--limit", "ten"], ["--limit", "5", "--all"]):
        with pytest.raises(SystemExit) as info:
            cli_main(["--config", str(config), "tickets", "list", *bad])
        assert info.value.code == 2
