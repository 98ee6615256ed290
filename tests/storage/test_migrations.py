"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL.

Several changes add migrations; a model column or index without its migration
would work in tests that create tables from the models and fail on an upgraded
production database. Alembic's own comparison finds the difference.
"""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from maild.storage.db import make_engine, upgrade
from maild.storage.models import Base


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        return list(compare_metadata(context, Base.metadata))


def test_sqlite_migrations_match_the_models(tmp_path: pytest.TempPathFactory) -> None:
    assert _differences(f"sqlite:///{tmp_path}/m.db") == []


def test_postgres_migrations_match_the_models(pg_url: str) -> None:
    assert _differences(pg_url) == []


@pytest.mark.parametrize(("table", "index", "condition"), [
    ("tickets", "ix_tickets_awaiting_reaction", "first_response_at IS NULL"),
    ("messages", "ix_messages_message_id_lookup", "reused_id"),
    ("messages", "ix_messages_raw_pack", "raw_pack IS NOT NULL"),
])
def test_partial_indexes_keep_their_condition_on_both_databases(tmp_path: pytest.TempPathFactory, pg_url: str,
                                                               table: str, index: str, condition: str) -> None:
    """Alembic does not compare an index's condition, so this does: a partial index is partial in the
    migrated database and in the schema compiled for it, on SQLite and PostgreSQL (where the awaiting-
    reaction index's condition reaches the schema only through ``tables.for_postgresql``)."""
    from sqlalchemy import text
    from sqlalchemy.schema import CreateIndex

    from maild.storage.tables import metadata

    found = next(i for i in metadata.tables[table].indexes if i.name == index)
    for url, catalog in ((f"sqlite:///{tmp_path}/m.db", "SELECT sql FROM sqlite_master WHERE name = :name"),
                         (pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname = :name")):
        engine = make_engine(url)
        upgrade(engine)
        assert condition in str(CreateIndex(found).compile(dialect=engine.dialect)), url
        with engine.connect() as conn:
            assert condition in conn.execute(text(catalog), {"name": index}).scalar_one(), url
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0010_marks_the_mail_stored_under_a_reused_message_id(backend: str, tmp_path: pytest.TempPathFactory,
                                                              request: pytest.FixtureRequest) -> None:
    """0010 drops the index of every message's Message-ID for one of maild's own and reused ones: a mail
    stored before it under ``dup:<sha256>`` (another mail had its Message-ID) must come out marked, or
    threading would no longer find it by that Message-ID; the first mail is found through intake."""
    from alembic import command
    from sqlalchemy import text

    from maild.storage.db import alembic_config

    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/m.db"
    engine = make_engine(url)
    cfg = alembic_config(engine)
    with engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
    message = ("INSERT INTO messages (id, message_id, direction, role, kind, from_addr, from_name, to_addrs, cc_addrs,"
               " subject, date, text_new, text_quoted, size, internal, notes)"
               " VALUES (:id, :mid, :dir, 'customer', 'human', '', '', '[]', '[]', '', '2026-12-01 10:00:00', '', '',"
               " 0, FALSE, '[]')")
    intake = ("INSERT INTO intake (dedupe_key, source_key, disposition, reason, message_row_id, arrived_at,"
              " processed_at) VALUES (:key, 'maildir:x', 'ticket', '', :row, '2026-12-01 10:00:00',"
              " '2026-12-01 10:00:00')")
    with engine.begin() as conn:
        for row, mid, direction in ((1, "same@acme.pl", "in"), (2, "same@acme.pl", "in"), (3, "maild.t1.ack.x@h", "out")):
            conn.execute(text(message), {"id": row, "mid": mid, "dir": direction})
        conn.execute(text(intake), {"key": "same@acme.pl", "row": 1})
        conn.execute(text(intake), {"key": "dup:" + "ab" * 32, "row": 2})
    upgrade(engine)
    with engine.connect() as conn:
        marks = conn.execute(text("SELECT id, reused_id FROM messages ORDER BY id")).all()
    engine.dispose()
    assert [(int(i), bool(r)) for i, r in marks] == [(1, False), (2, True), (3, False)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0011_down_gives_pack_index_back_the_places_message_rows_held(backend: str, tmp_path: pytest.TempPathFactory,
                                                                      request: pytest.FixtureRequest) -> None:
    """Since 0011 a stored mail's raw bytes are placed by its message row, with no pack_index row; going back
    to 0010, whose code finds every raw mail by hash, must index each of them there (once per sha256, the
    first row's place), and leave the rows pack_index already had as they were."""
    from alembic import command
    from sqlalchemy import text

    from maild.storage.db import alembic_config

    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/m.db"
    engine = make_engine(url)
    upgrade(engine)
    message = ("INSERT INTO messages (id, message_id, direction, role, kind, from_addr, from_name, to_addrs, cc_addrs,"
               " subject, date, text_new, text_quoted, size, internal, notes, raw_sha256, raw_pack, raw_offset,"
               " raw_length) VALUES (:id, :id, 'in', 'customer', 'human', '', '', '[]', '[]', '',"
               " '2026-12-01 10:00:00', '', '', 0, FALSE, '[]', :sha, :pack, :offset, 10)")
    a, b, old = "a" * 64, "b" * 64, "c" * 64
    with engine.begin() as conn:
        for row, sha, pack, offset in ((1, a, "p1.pack", 0), (2, a, "p2.pack", 50), (3, b, "p1.pack", 10),
                                       (4, old, None, None)):
            conn.execute(text(message), {"id": row, "sha": sha, "pack": pack, "offset": offset})
        conn.execute(text('INSERT INTO pack_index (sha256, pack, "offset", length) VALUES (:sha, \'p0.pack\', 7, 10)'),
                     {"sha": old})
    cfg = alembic_config(engine)
    with engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    with engine.connect() as conn:
        rows = conn.execute(text('SELECT sha256, pack, "offset" FROM pack_index ORDER BY sha256')).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(a, "p1.pack", 0), (b, "p1.pack", 10), (old, "p0.pack", 7)]


def test_0020_postgres_compresses_an_outbox_context_with_lz4(pg_url: str) -> None:
    """A context long enough to be compressed (a notification with a long customer text) is stored
    with lz4, not pglz (a fifth of the server's instructions for COPYing an outbox: bench/README,
    fifteenth session); a row written before keeps its own method and reads back the same."""
    import json
    from datetime import datetime, timezone

    from alembic import command
    from sqlalchemy import text

    from maild.storage.db import alembic_config

    engine = make_engine(pg_url)
    body = " ".join(f"zdanie {i} o fakturze, która nie chce się wydrukować." for i in range(120))
    row = ("INSERT INTO outbox (dedupe_key, kind, message_id, recipients, automatic, template, language, context,"
           " status, attempts, next_attempt_at, last_error, created_at) VALUES (:k, 'notify_new', :k, '[]', true,"
           " 'notify_new', 'pl', :c, 'pending', 0, :t, '', :t)")
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    with engine.connect() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0019")
        conn.execute(text(row), {"k": "before", "c": json.dumps({"body": body}), "t": now})
        conn.commit()
        upgrade(engine)
        conn.execute(text(row), {"k": "after", "c": json.dumps({"body": body}), "t": now})
        conn.commit()
        methods = dict(conn.execute(text("SELECT dedupe_key, pg_column_compression(context) FROM outbox")).all())
        assert methods == {"before": "pglz", "after": "lz4"}
        assert [json.loads(c) if isinstance(c, str) else c for (c,) in conn.execute(
            text("SELECT context FROM outbox ORDER BY id"))] == [{"body": body}] * 2
    engine.dispose()
