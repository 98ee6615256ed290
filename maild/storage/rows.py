"""Rows appended in bulk, in SQLAlchemy Core: one COPY on PostgreSQL, one executemany of the values
SQLAlchemy would bind on SQLite. ``store`` appends a batch's rows through these in its session's
transaction; the attempts recorded before a batch is parsed (``intake.attempts``) go through them on a
connection of their own, before the ORM is loaded.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, insert


def append_rows(connection: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the connection's transaction:
    one COPY on PostgreSQL (``copy_rows``), one executemany of converted rows on SQLite (``insert_rows``)."""
    if connection.dialect.name == "postgresql":
        copy_rows(connection, table, rows)
    else:
        insert_rows(connection, table, rows)


def _bound_rows(table: Any, columns: Sequence[str], rows: Sequence[dict[str, Any]], dialect: Any) -> list[tuple[Any, ...]]:
    """``rows``' values of ``columns``, each converted by its column type's own bind processor
    (``type.dialect_impl(dialect).bind_processor``: what SQLAlchemy binds for it), column by column.

    A batch repeats values: every outbox and intake row of a batch carries the batch's ``now``, most
    messages the same one-address list and an empty one. Those are converted once per batch: a UTC
    time per instant (``UtcDateTime`` stores equal instants alike, whatever their zone), a JSON list
    of strings per tuple of its strings (equal tuples of ``str`` serialise alike). Every other value
    is converted on its own, as SQLAlchemy's executemany does row by row."""
    from sqlalchemy import JSON

    from maild.storage.tables import UtcDateTime

    converted: list[list[Any]] = []
    for name in columns:
        column_type = table.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[name] for row in rows]
        if process is None:
            converted.append(values)
        elif isinstance(column_type, UtcDateTime):
            instants: dict[Any, Any] = {}
            converted.append([instants[v] if v in instants else instants.setdefault(v, process(v)) for v in values])
        elif isinstance(column_type, JSON):
            lists: dict[tuple[str, ...], Any] = {}
            out = []
            for v in values:
                if type(v) is list and all(type(item) is str for item in v):
                    key = tuple(v)
                    out.append(lists[key] if key in lists else lists.setdefault(key, process(v)))
                else:
                    out.append(process(v))
            converted.append(out)
        else:
            converted.append([process(v) for v in values])
    return list(zip(*converted))


def insert_rows(connection: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """SQLite: insert ``rows`` (dicts with the same keys) into ``table`` with one executemany of the
    values SQLAlchemy would bind (``_bound_rows``) through ``exec_driver_sql``, in the connection's
    transaction. The rows stored are those ``connection.execute(insert(table), rows)`` stores
    (``test_sqlite_inserted_rows_are_sqlalchemys_rows``), a refusal is SQLAlchemy's error, the
    statement events see it; what goes is SQLAlchemy's per-row work for an executemany
    (``construct_params`` and each value's processor, row by row): a backlog's batch appends
    ~9 rows a mail, and that was a fifth of the main process's CPU while reading (bench/README
    "Own CPU, twelfth session"). A table whose missing columns have Python-side defaults, which
    SQLAlchemy would fill in, goes through ``insert`` as before."""
    if not rows:
        return
    columns = list(rows[0])
    dialect = connection.dialect
    if dialect.paramstyle != "qmark" or any(
            c.default is not None or c.onupdate is not None for c in table.c if c.name not in columns):
        connection.execute(insert(table), rows)
        return
    quote = dialect.identifier_preparer.quote
    statement = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
                 f"({', '.join(quote(c) for c in columns)}) VALUES ({', '.join('?' * len(columns))})")
    connection.exec_driver_sql(statement, _bound_rows(table, columns, rows, dialect))


def copy_rows(connection: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """PostgreSQL: append ``rows`` (dicts with the same keys) to ``table`` with one COPY in the connection's
    transaction, each value converted by its column type's own bind processor (``_bound_rows``), so the rows
    stored are those an INSERT through SQLAlchemy stores (``test_copied_rows_are_the_inserted_rows``). A refusal
    is raised as SQLAlchemy raises the driver's errors (a unique key's as ``IntegrityError``).

    psycopg's executemany runs an INSERT per row (pipelined): the server starts and ends an
    executor per row, and psycopg handles each row's result. COPY is one statement for the batch:
    10,000-mail backlog, the server's CPU during the reading 2.5-2.9 -> 2.2 s, the main process's
    6.99-7.75 -> 6.56-6.74 s (bench/README "PostgreSQL's statements, tenth session"). SQLAlchemy's
    statement events do not see it (``bench/ingest.py --sql`` counts these rows no more).
    """
    import psycopg
    from sqlalchemy.exc import DBAPIError

    columns = list(rows[0])
    dialect = connection.dialect
    statement = f"COPY {table.name} ({', '.join(dialect.identifier_preparer.quote(c) for c in columns)}) FROM STDIN"
    raw = cast(psycopg.Connection[Any], connection.connection.dbapi_connection)
    values = _json_as_text(table, columns, _bound_rows(table, columns, rows, dialect), raw)
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in values:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error, hide_parameters=True,
                                  dialect=dialect) from exc


def _json_as_text(table: Any, columns: Sequence[str], rows: list[tuple[Any, ...]], raw: Any) -> Sequence[Sequence[Any]]:
    """``rows`` (``_bound_rows``' on PostgreSQL) with each JSON value as the text psycopg's dumper makes of it,
    made once per value: COPY's text form is that text whatever the column's type.

    SQLAlchemy binds a JSON value as psycopg's ``Json`` wrapper, and ``_bound_rows`` hands one wrapper to every
    row of a batch whose list of strings is the same (most messages' one address and empty Cc, the outbox's
    recipients), but psycopg dumped the wrapper again for each row, through its Python dumper: ~150,000 dumps
    per 10,000 mails, ~90,000 of them repeats. Dumped here once per wrapper, by the dumper the connection uses
    (its ``dumps``, or the wrapper's own): ``copy_rows`` 1.20 -> 1.13 s of the main process's CPU per 10,000
    mails (the messages' 0.37 -> 0.29), the stored text byte for byte the same (bench/README, fourteenth
    session)."""
    from sqlalchemy import JSON

    at = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
    if not at:
        return rows
    from psycopg.adapt import PyFormat
    from psycopg.types.json import Json

    dumper = raw.adapters.get_dumper(Json, PyFormat.TEXT)(Json, raw)
    texts: dict[int, str] = {}  # by the wrapper's id: the rows hold every wrapper until the COPY is written
    out: list[list[Any]] = []
    for row in rows:
        values = list(row)
        for i in at:
            value = values[i]
            if type(value) is Json:
                dumped = texts.get(id(value))
                if dumped is None:
                    dumped = texts[id(value)] = bytes(dumper.dump(value)).decode()
                values[i] = dumped
        out.append(values)
    return out
