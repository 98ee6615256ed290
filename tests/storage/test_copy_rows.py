"""A batch's appended rows go into PostgreSQL by COPY (``store.copy_rows``): what is stored must be what an
INSERT through SQLAlchemy stores, value for value, and a refusal must come as SQLAlchemy's error."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st
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


def test_a_json_value_a_batch_repeats_is_dumped_once_by_the_connections_dumps(pg_url: str) -> None:
    """COPY's JSON text comes from the dumps function psycopg would use (here a compact one set for the
    process), once per list a batch repeats (every row's one recipient) and once per other value."""
    import json

    from psycopg.types.json import set_json_dumps

    calls: list[Any] = []

    def compact(value: Any) -> str:
        calls.append(value)
        return json.dumps(value, separators=(",", ":"))

    sessions = open_database(pg_url)
    engine = sessions.kw["bind"]
    rows = _rows(30, 300)[outbox]
    for i, row in enumerate(rows):
        row["recipients"] = ["jan@acme.pl"]  # a list of its own per row, equal to the others
        row["context"] = {"n": i, "to": ["jan@acme.pl"]}
    set_json_dumps(compact)
    try:
        with sessions() as session, session.begin():
            session.execute(insert(tickets).values(id=1, subject="s", requester="jan@acme.pl", created_at=AT,
                                                   updated_at=AT))
            calls.clear()  # the ticket's own JSON columns
            store.copy_rows(session, outbox, rows)
    finally:
        set_json_dumps(json.dumps)
    assert len(calls) == 1 + 30, calls
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT recipients::text, context::text FROM outbox ORDER BY id")).all()
    assert stored == [('["jan@acme.pl"]', f'{{"n":{i},"to":["jan@acme.pl"]}}') for i in range(30)]
    engine.dispose()


def _a_duplicate_dedupe_key_is_refused(url: str, write: Any, match: str) -> None:
    """``write`` two outbox rows with one dedupe key: SQLAlchemy's ``IntegrityError``, as its INSERT raises."""
    sessions = open_database(url)
    with sessions() as session:
        session.execute(insert(tickets).values(id=1, subject="s", requester="jan@acme.pl", created_at=AT, updated_at=AT))
        rows = _rows(2, 100)[outbox]
        rows[1]["dedupe_key"] = rows[0]["dedupe_key"]
        with pytest.raises(IntegrityError, match=match):
            write(session, outbox, rows)
        session.rollback()
    sessions.kw["bind"].dispose()


def test_a_copied_row_that_breaks_a_unique_key_is_sqlalchemys_integrity_error(pg_url: str) -> None:
    _a_duplicate_dedupe_key_is_refused(pg_url, store.copy_rows, "uq_outbox_dedupe_key")


# ---------------------------------------------------------------- SQLite: store.insert_rows

def _raw(conn: Any, table: Any, where: str) -> list[tuple[Any, ...]]:
    """Each row's columns but its id and keys, as SQLite holds them (the bound text, number or NULL)."""
    skip = {"id", "dedupe_key", "message_id", "message_row_id"}
    names = ", ".join(f'"{c.name}"' for c in table.c if c.name not in skip)
    return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {names} FROM {table.name} WHERE {where} ORDER BY id")]


def test_sqlite_inserted_rows_are_sqlalchemys_rows(tmp_path: Path) -> None:
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    utc_same_instant = AT.astimezone(timezone.utc)  # equal to AT: stored alike, converted once
    with sessions() as session, session.begin():
        session.execute(insert(tickets).values(id=1, subject="s", requester="jan@acme.pl", created_at=AT, updated_at=AT))
        for base, write in ((100, lambda t, r: session.execute(insert(t), r)),
                            (200, lambda t, r: store.insert_rows(session, t, r))):
            rows = _rows(5, base)
            rows[events][1]["at"] = utc_same_instant
            rows[messages][2]["to_addrs"] = [1, True, "a@b"]  # not a list of strings: converted on its own
            rows[messages][3]["to_addrs"] = [True, 1, "a@b"]  # equal as a tuple to the one above, not as JSON
            for table, table_rows in rows.items():
                write(table, table_rows)
    with engine.connect() as conn:
        for table, (inserted_where, copied_where) in {
                messages: ("id < 200", "id >= 200"), attachments: ("message_row_id < 200", "message_row_id >= 200"),
                events: ("id <= 5", "id > 5"), intake: ("message_row_id < 200", "message_row_id >= 200"),
                outbox: ("id <= 5", "id > 5")}.items():
            inserted, written = _raw(conn, table, inserted_where), _raw(conn, table, copied_where)
            assert len(inserted) == 5 and inserted == written, table.name
        assert conn.exec_driver_sql("SELECT to_addrs FROM messages WHERE id IN (202, 203) ORDER BY id").scalars().all() \
            == ['[1, true, "a@b"]', '[true, 1, "a@b"]']
    engine.dispose()


def test_a_sqlite_inserted_row_that_breaks_a_unique_key_is_sqlalchemys_integrity_error(tmp_path: Path) -> None:
    _a_duplicate_dedupe_key_is_refused(f"sqlite:///{tmp_path / 'maild.db'}", store.insert_rows, "dedupe_key")


_zones = st.sampled_from([timezone.utc, WARSAW, timezone(timedelta(hours=-7, minutes=-30))])
_instants = st.builds(lambda s, z: datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=s) if z is None
                      else (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=s)).astimezone(z),
                      st.integers(0, 3), st.one_of(st.none(), _zones))
_json_values = st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", "ż"]), max_size=2),
                         st.lists(st.sampled_from([1, True, 1.0]), min_size=1, max_size=1),
                         st.lists(st.sampled_from([1, True, 1.0, "a", None, 0, False]), max_size=2),
                         st.dictionaries(st.sampled_from(["k", "l"]), st.sampled_from([1, True, "a"]), max_size=2))


@given(st.lists(st.tuples(_instants, _json_values), min_size=1, max_size=20))
def test_values_converted_once_per_batch_are_each_values_own(values: list[tuple[datetime, Any]]) -> None:
    """Equal instants in other zones, equal tuples of other JSON (1 and True): each row gets what its
    own value's bind processor gives, whichever row came first."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    rows = [{"at": at, "detail": detail} for at, detail in values]
    bound = store._bound_rows(events, ["at", "detail"], rows, dialect)
    at_process = events.c.at.type.dialect_impl(dialect).bind_processor(dialect)
    json_process = events.c.detail.type.dialect_impl(dialect).bind_processor(dialect)
    assert bound == [(at_process(at), json_process(detail)) for at, detail in values]
