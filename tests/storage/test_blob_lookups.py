"""Retention's, forget's and compaction's lookups of a blob's rows go through indexes (0012).

``compact.referenced`` decides whether a pack_index row is still needed after
retention or ``maild forget`` let go of a mail; compaction lists a pack's blobs.
Both read whole tables of history before 0012 (0.9 s per 500 hashes at 2.5M
message rows). Only a message row that reads its raw mail by hash keeps a
pack_index row alive; a row that places it (0011) does not.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select

from maild.storage import compact
from maild.storage.blobs import BlobStore
from maild.storage.db import open_database
from maild.storage.tables import attachments, messages, pack_index


def _message(session: Any, sha: str, place: tuple[str, int, int] | None) -> int:
    pack, offset, length = place or (None, None, None)
    return int(session.execute(insert(messages).values(
        direction="in", role="customer", date=datetime(2026, 12, 6, tzinfo=timezone.utc), raw_sha256=sha, raw_pack=pack, raw_offset=offset,
        raw_length=length)).inserted_primary_key[0])


def test_a_pack_index_row_lives_while_a_row_finds_the_blob_by_hash(tmp_path: Path) -> None:
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    blobs = BlobStore(tmp_path / "blobs")
    by_hash, placed, attached, orphan = "a" * 64, "b" * 64, "c" * 64, "d" * 64
    with sessions.begin() as session:
        for n, sha in enumerate((by_hash, placed, attached, orphan)):
            session.execute(insert(pack_index).values(sha256=sha, pack="1-1.pack", offset=100 * n, length=10))
        _message(session, by_hash, None)  # stored before 0011: read through pack_index
        _message(session, placed, ("2-2.pack", 0, 10))  # placed: its bytes are where the row says
        row = _message(session, "e" * 64, ("2-2.pack", 10, 10))
        session.execute(insert(attachments).values(message_row_id=row, filename="a.pdf", content_type="x/y",
                                                   size=10, sha256=attached))
    with sessions.begin() as session:
        assert compact.drop_unreferenced(session, blobs, [by_hash, placed, attached, orphan]) == 2
    with sessions() as session:
        assert set(session.scalars(select(pack_index.c.sha256))) == {by_hash, attached}


def test_the_lookups_read_indexes_not_history(tmp_path: Path) -> None:
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    statements: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
    with sessions() as session:
        compact.referenced(session, ["a" * 64, "b" * 64])
        compact._live(session, "1-1.pack")
    recorded = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT")]
    with engine.connect() as conn:
        plans = {statement: " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                               params))
                 for statement, params in recorded}
    engine.dispose()
    every = " || ".join(plans.values())
    assert "ix_messages_raw_by_hash" in every and "ix_pack_index_pack" in every, plans
    assert not [p for p in plans.values() if "SCAN messages" in p or "SCAN pack_index" in p], plans
