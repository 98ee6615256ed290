"""Retention's daily run reads the tickets closed since its last run, and compaction weighs only the packs
that lost blobs (0013, ``erasure._past``, ``compact.note_dead_bytes``).

At 1M mails a run that found nothing due still read every closed ticket and every message holding raw
mail (~3 s), and compaction built every pack's list of blobs (~2.5 s): a daily cost of history, not of
what the day let go of.
"""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from maild.desk.erasure import apply_retention
from maild.storage import compact as compact_module
from maild.storage.blobs import BlobStore
from maild.storage.compact import PACKS_TO_COMPACT, compact, drop_unreferenced
from maild.storage.db import open_database
from maild.storage.queries import get_state
from maild.storage.tables import messages, pack_index, tickets

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _closed(session: Any, days_ago: float) -> int:
    closed = NOW - timedelta(days=days_ago)
    ticket = int(session.execute(insert(tickets).values(
        subject="Faktura", status="closed", requester="jan@acme.pl", created_at=closed - timedelta(days=3),
        updated_at=closed, closed_at=closed)).inserted_primary_key[0])
    session.execute(insert(messages).values(
        ticket_id=ticket, direction="in", role="customer", date=closed, subject="Faktura",
        raw_sha256=hashlib.sha256(str(ticket).encode()).hexdigest()))
    return ticket


def _raw_left(sessions: Any, ticket: int) -> bool:
    with sessions() as session:
        return session.scalar(select(messages.c.raw_sha256).where(messages.c.ticket_id == ticket)) is not None


def test_a_daily_run_starts_where_the_last_one_stopped_through_the_closed_tickets_index(tmp_path: Path) -> None:
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    blobs = BlobStore(tmp_path / "blobs")
    with sessions.begin() as session:
        old = [_closed(session, 400), _closed(session, 300)]
        recent = _closed(session, 170)  # six months are 183 days
        open_ticket = int(session.execute(insert(tickets).values(
            subject="Open", status="open", created_at=NOW, updated_at=NOW)).inserted_primary_key[0])
    with sessions.begin() as session:
        first = apply_retention(session, blobs, NOW, raw_mail_months=6, closed_ticket_years=1)
    assert (first.raw_dropped_tickets, first.texts_removed_tickets) == (2, 1)
    assert not any(_raw_left(sessions, t) for t in old) and _raw_left(sessions, recent)

    statements: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
    with sessions.begin() as session:  # the next day: nothing new is past the six months
        nothing = apply_retention(session, blobs, NOW + timedelta(days=1), raw_mail_months=6, closed_ticket_years=1)
    assert (nothing.raw_dropped_tickets, nothing.texts_removed_tickets) == (0, 0)
    found = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT") and "FROM tickets" in s]
    assert len(found) == 2, found  # raw mail, then texts
    with engine.connect() as conn:
        plans = [" | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + s, p)) for s, p in found]
    for plan in plans:
        assert "INDEX ix_tickets_closed (status=? AND closed_at>? AND closed_at<?)" in plan, plan
        assert "SCAN tickets" not in plan and "SCAN messages" not in plan, plan

    with sessions.begin() as session:  # two weeks on, the recent one is past them
        done = apply_retention(session, blobs, NOW + timedelta(days=14), raw_mail_months=6, closed_ticket_years=1)
    assert (done.raw_dropped_tickets, done.texts_removed_tickets) == (1, 0) and not _raw_left(sessions, recent)
    with sessions() as session:
        assert session.scalar(select(tickets.c.status).where(tickets.c.id == open_ticket)) == "open"
    engine.dispose()


def _three_packs(tmp_path: Path) -> tuple[Any, BlobStore, list[tuple[str, str]]]:
    """Packs A and B with two blobs each, then the newest pack C with one; all indexed."""
    sessions = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    blobs = BlobStore(tmp_path / "storage")
    stored: list[tuple[str, str]] = []
    with sessions.begin() as session:
        for n, data in enumerate([b"a1 " * 2000, b"a2 " * 2000, b"b1 " * 2000, b"b2 " * 2000, b"c"]):
            if n in (2, 4):
                blobs._close_pack()
                blobs._pack = None
                (blobs.packs / f"{9999999999999999995 + n:019d}-1.pack").write_bytes(b"")  # newer than A
            where = blobs.append(data)
            sha = hashlib.sha256(data).hexdigest()
            session.execute(insert(pack_index).values(sha256=sha, pack=where.pack, offset=where.offset,
                                                      length=where.length))
            stored.append((sha, where.pack))
    blobs.close()
    return sessions, blobs, stored


def test_compaction_weighs_the_packs_that_lost_blobs_and_asks_the_others_only_whether_they_are_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, blobs, stored = _three_packs(tmp_path)
    pack_a, pack_b = stored[0][1], stored[2][1]
    assert len({pack_a, pack_b, stored[4][1]}) == 3
    weighed: list[str] = []
    live = compact_module._live
    monkeypatch.setattr(compact_module, "_live", lambda session, name: weighed.append(name) or live(session, name))

    # the first pass of a database without the list (just upgraded to 0013) weighs every pack but the newest
    assert compact(sessions, blobs).rewritten == [] and sorted(weighed) == sorted([pack_a, pack_b])
    with sessions() as session:
        assert get_state(session, PACKS_TO_COMPACT) == "[]"
    weighed.clear()
    assert compact(sessions, blobs).rewritten == [] and weighed == []  # nothing was let go of since
    with sessions.begin() as session:
        assert drop_unreferenced(session, blobs, [stored[1][0]]) == 1  # half of pack A
        assert get_state(session, PACKS_TO_COMPACT) == f'["{pack_a}"]'
    result = compact(sessions, blobs)
    assert weighed == [pack_a] and result.rewritten == [pack_a]
    with sessions() as session:
        assert get_state(session, PACKS_TO_COMPACT) == "[]"
    weighed.clear()
    compact(sessions, blobs)  # A, emptied by the rewrite, is named by no row: deleted without weighing B
    assert weighed == [pack_a] and not (blobs.packs / pack_a).exists()
    weighed.clear()
    compact(sessions, blobs, everything=True)  # `maild storage compact`: every pack but the newest
    assert pack_b in weighed and stored[4][1] not in weighed
