"""A batch's appended rows go into PostgreSQL by COPY (``store.copy_rows``): what is stored must be what an
INSERT through SQLAlchemy stores, value for value, and a refusal must come as SQLAlchemy's error."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from maild.storage import store
from maild.storage.db import open_database
from maild.storage.tables import attachments, events, intake, messages, outbox, tickets

WARSAW = timezone(timedelta(hours=1))
AT = datetime(2026, 12, 6, 15, 4, 5, 123456, tzinfo=WARSAW)


def _rows(n: int, base: int) -> dict[Any, list[dict[str, Any]]]:
    """Rows of every table a batch appends to, with awkward values: non-ASCII and quoting characters,
    backslashes and tabs (COPY's own escapes), empty and nested JSON, NULLs, microseconds, another zone."""
    odd = 'Zażółć "gęślą" jaźń \\ tab\there\nnew line, 😀'
    out: dict[Any, list[dict[str, Any]]] = {messages: [], attachments: [], events: [], intake: [], outbox: []}
    for i in range(n):
        row_id = base + i
        out[messages].append({
            "id": row_id, "ticket_id": 1, "message_id": f"m{row_id}@acme.pl" if i % 2 else None, "direction": "in",
            "role": "customer", "kind": "human", "from_addr": "jan@acme.pl", "from_name": odd, "to_addrs": [odd, "a@b"],
            "cc_addrs": [], "subject": odd, "date": AT + timedelta(seconds=i), "text_new": odd * 3, "text_quoted": "",
            "raw_sha256": "ab" * 32, "size": 2**40 + i, "internal": bool(i % 2), "notes": [{"k": [1, None, odd]}],
            "reused_id": False, "raw_pack": "p1" if i % 2 else None, "raw_offset": i or None, "raw_length": 10 * i})
        out[attachments].append({"message_row_id": row_id, "filename": odd, "content_type": "text/plain", "size": i,
                                 "sha256": "cd" * 32})
        out[events].append({"ticket_id": 1, "kind": "created", "at": AT, "actor": odd, "detail": {"reasons": [odd], "n": i}})
        out[intake].append({"dedupe_key": f"k{row_id}", "source_key": "imap:1:2", "disposition": "ticket",
                            "reason": odd, "ticket_id": 1, "message_row_id": row_id, "arrived_at": AT,
                            "processed_at": AT + timedelta(microseconds=1)})
        out[outbox].append({
            "dedupe_key": f"ack:{row_id}", "kind": "ack", "ticket_id": 1, "message_id": f"maild.t1.ack.{row_id}@x",
            "recipients": ["jan@acme.pl"], "rate_key": "acme.pl/jan" if i % 2 else None, "automatic": True,
            "template": "ack", "language": "pl", "context": {"subject": odd, "nested": {"list": [1.5, True, None]}},
            "status": "pending", "attempts": 0, "next_attempt_at": AT, "last_error": "", "created_at": AT,
            "sent_at": None})
    return out


def _stored(conn: Any, table: Any, where: Any) -> list[tuple[str | None, ...]]:
    """Each row's columns but its id and keys, as the server prints them (JSON as stored, timestamps)."""
    skip = {"id", "dedupe_key", "message_id", "message_row_id"}
    columns = [c for c in table.c if c.name not in skip]
    casts = ", ".join(f'"{c.name}"::text' for c in columns)
    return [tuple(r) for r in conn.execute(text(f"SELECT {casts} FROM {table.name} WHERE {where} ORDER BY id"))]


def test_copied_rows_are_the_inserted_rows(pg_url: str) -> None:
    sessions = open_database(pg_url)
    engine = sessions.kw["bind"]
    with sessions() as session, session.begin():
        session.execute(insert(tickets).values(id=1, subject="s", requester="jan@acme.pl", created_at=AT, updated_at=AT))
        for table, rows in _rows(5, 100).items():
            session.execute(insert(table), rows)
        for table, rows in _rows(5, 200).items():
            store.copy_rows(session, table, rows)
    with engine.connect() as conn:
        for table, (inserted_where, copied_where) in {
                messages: ("id < 200", "id >= 200"), attachments: ("message_row_id < 200", "message_row_id >= 200"),
                events: ("id <= 5", "id > 5"), intake: ("message_row_id < 200", "message_row_id >= 200"),
                outbox: ("id <= 5", "id > 5")}.items():
            inserted, copied = _stored(conn, table, inserted_where), _stored(conn, table, copied_where)
            assert len(inserted) == 5 and inserted == copied, table.name
        # and read back through SQLAlchemy, the same Python values
        got = conn.execute(select(messages.c.to_addrs, messages.c.notes, messages.c.date).where(messages.c.id == 201)).one()
        assert got == (['Zażółć "gęślą" jaźń \\ tab\there\nnew line, 😀', "a@b"],
                       [{"k": [1, None, 'Zażółć "gęślą" jaźń \\ tab\there\nnew line, 😀']}], AT + timedelta(seconds=1))
    engine.dispose()


def test_a_copied_row_that_breaks_a_unique_key_is_sqlalchemys_integrity_error(pg_url: str) -> None:
    sessions = open_database(pg_url)
    with sessions() as session:
        session.execute(insert(tickets).values(id=1, subject="s", requester="jan@acme.pl", created_at=AT, updated_at=AT))
        rows = _rows(2, 100)[outbox]
        rows[1]["dedupe_key"] = rows[0]["dedupe_key"]
        with pytest.raises(IntegrityError, match="uq_outbox_dedupe_key"):
            store.copy_rows(session, outbox, rows)
        session.rollback()
    sessions.kw["bind"].dispose()
