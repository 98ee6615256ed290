"""Draining the outbox: rows -> rendered mail -> SMTP, with retries and backoff.

A row is marked sent only after the server accepted the mail, and that mark is
committed before the next mail goes out, so a crash of the daemon can cause at
most one resend. On PostgreSQL a drain works through a database session of its
own (``_DrainLine``): its rows are claimed with ``FOR UPDATE SKIP LOCKED`` and
held by session advisory locks, which the server drops the moment that session
ends, so several daemons drain one outbox without sending twice and a killed
daemon's rows are free at once (a time lease kept them for minutes); and its sent
marks are committed without waiting for the WAL flush (``synchronous_commit =
off``). The server has such a commit when it answers, so a killed daemon loses
no mark; only a crash of the database server itself can lose the last marks
before a flush, bounded by a durable mark every ``DURABLE_EVERY`` mails.

The send path is the daemon's hottest loop after ingest (a backlog after an
outage means thousands of acknowledgements in one cycle), so it avoids the
costly general tools where a narrow one is exact: a chunk of due rows is read
with one Core SELECT, a plain-text mail is composed header line by header line
(``compose_text_mail``) instead of through ``EmailMessage`` and the header
registry, a text mail with attachments likewise (``_mixed_mail``), and a sent
row is marked with one Core UPDATE and a commit. The rare paths (render errors,
4xx/5xx, an unreachable relay) keep the ORM, and mail with an HTML part
(statements, digests) ``EmailMessage``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import fcntl
import functools
import hashlib
import logging
import re
import secrets
import struct
import time
from collections import deque
from pathlib import Path
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from email.charset import Charset
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any, NoReturn, Protocol, cast
from urllib.parse import quote

from sqlalchemy import Connection, Integer, Table, TextualSelect, bindparam, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from maild.storage import store
from maild.storage.blobs import BlobStore, StorageError
from maild.storage.models import OutboxRow
from maild.storage.queries import PENDING
from maild.storage.tables import OUTBOX_PENDING, UtcDateTime
from maild.outbound.drained import DrainResult as DrainResult
from maild.outbound.marks import MARK_SENT_SQLITE, MarkJournal, replay as replay_marks
from maild.outbound.render import RenderError, Renderer, one_line
from maild.outbound.smtp import Delivery, Envelope, SmtpError, SmtpSender, SmtpSettings, SmtpUnavailable

log = logging.getLogger("maild.outbox")
UTC = timezone.utc
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=3)
CLAIM_CHUNK = 200
CLAIM_TRIES = 5  # claims in a row that found rows and lost them all to another drain before one counts as empty
# SMTP connections a drain uses at once: while the relay works on one mail, maild
# builds and sends the next on the other
SMTP_CONNECTIONS = 2
PARALLEL_FROM = 20  # due mails from which a drain uses more than one connection
STALLS_BEFORE_SET_ASIDE = 3  # attempts after which a mail the relay times out on stops holding the queue
# PostgreSQL: every this many sent marks one is committed durably (waiting for the WAL
# flush, which also makes every mark before it durable), so a crash of the database
# server, which loses the marks committed since the last flush, resends at most this many
DURABLE_EVERY = 100
# the first key of the two-key advisory locks that hold claimed outbox rows (the second is
# the row id); the one-key locks (the mailbox lock) are a key space of their own
OUTBOX_LOCK_CLASS = 0x6D61696C  # "mail"

_OUTBOX: Table = OutboxRow.__table__
# a header line SHOULD stay within 78 characters (RFC 5322 2.1.1); folding only
# happens at spaces we put there, so unfolding gives the value back exactly
_FOLD_AT = 78
# what may go verbatim into a header: printable ASCII, no "=?" that a reader
# would decode as an RFC 2047 encoded-word
_PLAIN_HEADER = re.compile(r"[ -~]*")
# what smtp.py refuses in the envelope, plus what would split or unbalance a list
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20<>\x7f,;\"()\\]|^$")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")  # a phrase that needs no quotes
_UTF8 = Charset("utf-8")
_MSG_ID = re.compile(r"[!-;=?-~]+")  # printable ASCII without space, "<" and ">"
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
_UNSAFE_7BIT = re.compile(rb"[^\t\n -~]")
_LINE_END = re.compile(r"\r\n?")
_MIME_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}")  # a type or subtype that needs no checking
_RFC2231_SAFE = "!#$&+-.^_`|~"  # attr-chars besides letters and digits (RFC 2231, 7.)


def retry_delay(attempts: int, base: timedelta = RETRY_BASE) -> timedelta:
    """Exponential backoff: 30 s, 1 min, 2 min, ... capped at one hour."""
    delay: timedelta = base * (2 ** min(max(attempts - 1, 0), 20))
    return min(delay, RETRY_CAP)


@dataclass(frozen=True)
class Sender:
    """Who outgoing mail is from, and what marks it as ours."""

    address: str
    name: str
    instance_id: str


def _past(deadline: float | None, done: DrainResult) -> bool:
    """Whether a drain's time is up; never before its first mail, so every slice makes progress."""
    return (deadline is not None and done.sent + done.retry + done.failed > 0
            and time.monotonic() >= deadline)


class MailRow(Protocol):
    """What building a mail needs of an outbox row: an ``OutboxRow`` or a ``PendingMail``."""

    @property
    def kind(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def recipients(self) -> list[Any]: ...
    @property
    def automatic(self) -> bool: ...
    @property
    def template(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def context(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PendingMail:
    """One claimed outbox row, read with the chunk's single SELECT (no ORM identity map)."""

    id: int
    kind: str
    ticket_id: int | None
    message_id: str
    recipients: list[Any]
    automatic: bool
    template: str
    language: str
    context: dict[str, Any]


# one statement, compiled once: the per-mail "sent" mark of the hot path
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(status="sent", sent_at=bindparam("sent_at"), attempts=_OUTBOX.c.attempts + 1,
            last_error=bindparam("refused"))
)
# the same mark as the drain line sends it on PostgreSQL: prepared once per session and run through
# psycopg's libpq interface (``PGconn.exec_prepared``): SQLAlchemy's execute path cost 58-65 us of
# client CPU a mark, psycopg's cursor with prepare=True 21-26 us, this 12-14 us (bench/README.md,
# tenth session); ``_DrainLine.mark_sent`` keeps SQLAlchemy's error types
_MARK_SENT_PG = (f"UPDATE {_OUTBOX.name} SET status = 'sent', sent_at = $1, attempts = attempts + 1,"
                 " last_error = $2 WHERE id = $3")
_MARK_SENT_PG_NAME = b"maild_mark_sent"
# and on SQLite's (``_SqliteLine``): ``marks.MARK_SENT_SQLITE``, beside the journal replayed with it
_SENT_AT = UtcDateTime()  # the column's type: aware UTC in, naive UTC to the driver
_DROP_IMAGES = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(context=bindparam("trimmed", type_=_OUTBOX.c.context.type))
)
# a read-then-write transaction of the rare paths (``_settle``, ``_release``) takes SQLite's write
# lock at its BEGIN: with two couriers marking, a deferred one could read, see the other's mark
# commit, and be refused its write on the outdated snapshot (SQLITE_BUSY_SNAPSHOT, which no
# busy timeout waits out); PostgreSQL ignores the option
_WRITE_FIRST = {"maild_immediate": True}
# PendingMail's fields in their order: a claimed row is built from the row's values as they come
_PENDING_COLUMNS = tuple(_OUTBOX.c[field.name] for field in fields(PendingMail))


def _sqlite_claim(partition: bool) -> TextualSelect:
    """SQLite's claim: the oldest due rows, walked in ``ix_outbox_pending_order``'s own order and
    stopped at the limit. Asked as SQLAlchemy writes it (``status = ?`` and the due time), SQLite's
    planner took every pending row through ix_outbox_due and sorted them with their contexts
    (3.4 ms a claim with 3,482 pending, against 0.4 ms so), and without statistics it does so
    however many are pending. The partial index serves only a condition that is its own
    (``OUTBOX_PENDING``, written out), and ``INDEXED BY`` takes it. The columns are typed as
    ``PendingMail``'s, so each value is converted as the SELECT of the columns converts it."""
    where = f"{OUTBOX_PENDING} AND next_attempt_at <= :now" + (" AND id % :parts = :part" if partition else "")
    return (text(f"SELECT {', '.join(column.name for column in _PENDING_COLUMNS)} FROM {_OUTBOX.name}"
                 f" INDEXED BY ix_outbox_pending_order WHERE {where} ORDER BY created_at, id LIMIT :chunk")
            .bindparams(bindparam("now", type_=_OUTBOX.c.next_attempt_at.type))
            .columns(*_PENDING_COLUMNS))


_SQLITE_CLAIM = _sqlite_claim(partition=False)
_SQLITE_CLAIM_PART = _sqlite_claim(partition=True)
# PostgreSQL: a claim walks ix_outbox_pending_order (0014) in its own order and stops at its LIMIT. In a database
# without statistics yet (a new one: a backlog's first claims) the planner guesses a handful of pending rows and
# would rather find them all (through ix_outbox_due until 0017, by a scan now) and sort them (all 10,000 of a
# backlog: 4-9 ms a claim), so sorting is ruled out for the claim's transaction alone. The condition is the
# partial index's own, written out (``queries.PENDING``): a bound 'pending' proves nothing in a generic plan
_IN_INDEX_ORDER = text("SET LOCAL enable_sort = off")
# outbox rows some drain's session holds in this database now (pg_locks lists the whole cluster)
_HELD = text(
    "SELECT objid::integer FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
    f" AND classid = {OUTBOX_LOCK_CLASS}::oid"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
).columns(objid=Integer)


def _raise_as_sqlalchemy(exc: Exception, conn: Connection, dbapi: Any, cursor: Any, statement: str,
                         values: tuple[Any, ...]) -> NoReturn:
    """A sent mark written on the driver's cursor failed: raise what the session would have raised
    (SQLAlchemy's ``OperationalError`` for a lost server, ...), which the unmarked-mail memory and
    the daemon's fault handling catch; anything that is not the driver's error goes on as it is."""
    dialect = conn.dialect
    if not isinstance(exc, dialect.loaded_dbapi.Error):
        raise exc
    raise DBAPIError.instance(
        statement, values, exc, dialect.loaded_dbapi.Error, dialect=dialect,
        connection_invalidated=dialect.is_disconnect(exc, dbapi, cursor)) from exc


class _DrainLine:
    """A drain's own PostgreSQL session: it holds the claimed rows and commits the sent marks.

    Autocommit, so a mark is one round trip, and ``synchronous_commit = off``:
    the commit returns once the server has it in memory, without waiting for the
    WAL to reach the disk (a flush took about 5 ms on the benchmark VM's disk,
    more than the rest of a mail's work). The server keeps such a commit when the
    daemon dies right after it; what it can lose is a crash of the server itself
    before the WAL writer flushes (within 3 x ``wal_writer_delay``), which
    ``Outbox`` bounds by making every ``DURABLE_EVERY``-th mark durable.

    The session is kept out of the pool, so closing it ends it, and with it its
    locks and settings. A killed daemon's kernel closes the socket and the
    server ends the session at once; for a host that dies silently the session
    asks the server for TCP keepalive, so its rows are free within about
    ``hold_seconds`` (the daemon's ``takeover_seconds``), not hours.
    """

    def __init__(self, sessions: sessionmaker[Session], hold_seconds: int) -> None:
        conn = sessions.kw["bind"].connect()
        conn.detach()
        try:
            # autocommit at the driver (a detached connection takes no isolation_level option)
            conn.connection.dbapi_connection.autocommit = True
            self.conn: Connection = conn
            settings = {"synchronous_commit": "off", "tcp_keepalives_idle": str(max(1, hold_seconds // 2)),
                        "tcp_keepalives_interval": str(max(1, hold_seconds // 4)), "tcp_keepalives_count": "3"}
            if (conn.dialect.server_version_info or (0,)) >= (12,):
                settings["tcp_user_timeout"] = str(hold_seconds * 1000)
            self.conn.execute(text("SELECT " + ", ".join(
                f"set_config(:name{i}, :value{i}, false)" for i in range(len(settings)))),
                {k: v for i, (name, value) in enumerate(settings.items())
                 for k, v in ((f"name{i}", name), (f"value{i}", value))})
            self._dbapi = conn.connection.dbapi_connection
            self._cursor = self._dbapi.cursor()
            from psycopg import OperationalError
            from psycopg.errors import error_from_result
            from psycopg.pq import ConnStatus, ExecStatus

            self._pgconn = self._dbapi.pgconn
            self._encoding: str = self._dbapi.info.encoding
            self._refused_by_server = error_from_result
            self._lost, self._bad = OperationalError, ConnStatus.BAD
            self._done = ExecStatus.COMMAND_OK
            self._prepared = False
        except BaseException:
            conn.close()
            raise
        self.marks = 0

    def take(self, ids: list[int]) -> set[int]:
        """Advisory-lock these rows for this session; returns those it got."""
        found = self.conn.execute(
            text("SELECT id FROM unnest(CAST(:ids AS integer[])) AS claimed(id) "
                 "WHERE pg_try_advisory_lock(:class, id)"),
            {"ids": ids, "class": OUTBOX_LOCK_CLASS})
        return {int(row_id) for (row_id,) in found}

    def mark_sent(self, params: dict[str, Any]) -> None:
        """``_MARK_SENT`` as one prepared statement on psycopg's connection to the server: its
        values as the server's text input (``sent_at`` naive UTC through the column's own type,
        the ISO form PostgreSQL reads to the microsecond). A statement the server refuses is
        raised as psycopg raises it (``psycopg.errors.error_from_result``; a lost server as its
        ``OperationalError``), and any driver error
        as SQLAlchemy's (``OperationalError`` for a lost server, ...), as the session would raise
        it, which the unmarked-mail memory and the daemon's fault handling catch."""
        sent_at = cast(datetime, _SENT_AT.process_bind_param(params["sent_at"], self.conn.dialect))
        values = (sent_at.isoformat(" ").encode("ascii"), str(params["refused"]).encode(self._encoding),
                  b"%d" % params["row_id"])
        try:
            if not self._prepared:
                self._check(self._pgconn.prepare(_MARK_SENT_PG_NAME, _MARK_SENT_PG.encode("ascii")))
                self._prepared = True
            self._check(self._pgconn.exec_prepared(_MARK_SENT_PG_NAME, values))
        except Exception as exc:
            _raise_as_sqlalchemy(exc, self.conn, self._dbapi, self._cursor, _MARK_SENT_PG, values)
        self.marks += 1

    def _check(self, result: Any) -> None:
        if result.status != self._done:
            if self._pgconn.status == self._bad:
                # the server is gone (libpq keeps the last of its results, "server closed the
                # connection"): OperationalError, as psycopg's own execute raises then
                raise self._lost(result.get_error_message(self._encoding))
            raise self._refused_by_server(result, encoding=self._encoding)

    def release(self) -> None:
        """Let the claimed rows go (the rest of a chunk the budget cut short is due again)."""
        self.conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")

    def close(self) -> None:
        try:
            self.conn.close()
        except DBAPIError:
            pass


class _SqliteLine:
    """SQLite's counterpart of ``_DrainLine``: a pooled connection whose statements are each
    their own transaction (the driver's autocommit: no BEGIN), so a sent mark is one call into
    SQLite instead of BEGIN, UPDATE and COMMIT through the session (a third of the drain's
    CPU on SQLite). Committed when the call returns, as a session's commit was (WAL,
    ``synchronous=NORMAL``: in the file, not yet flushed). The drain's session must then
    hold no read transaction when it writes (``Outbox._settle``), or SQLite would refuse
    its stale snapshot.

    The mark goes to the driver's cursor, as on PostgreSQL: SQLAlchemy's execute path
    (the cached compiled statement, its parameters and result) cost about as much CPU as
    SQLite's own work on the UPDATE; ``sent_at`` is bound through the column's own type,
    so the stored text is what SQLAlchemy writes, and a driver error is raised as
    SQLAlchemy's, as the session would raise it.

    ``gate``: a courier sending while its daemon stores the backlog (``Outbox.write_gate``)
    takes this file's POSIX lock around each mark, as the daemon does around each stored
    batch: a mark held up by a batch waits in the kernel and goes the moment the batch is
    committed, instead of in SQLite's busy handler, whose sleeps grow to 100 ms and
    would keep missing the short gaps between back-to-back batches."""

    def __init__(self, sessions: sessionmaker[Session], gate: int | None = None,
                 journal: MarkJournal | None = None) -> None:
        self.gate = gate
        self.journal = journal  # with the gate: where a mark the daemon's batch holds up is kept meanwhile
        self.conn: Connection = sessions.kw["bind"].connect().execution_options(maild_autocommit=True)
        dialect = self.conn.dialect
        bind = _OUTBOX.c.sent_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._sent_at: Callable[[Any], Any] = bind or (lambda value: value)
        self._dbapi = self.conn.connection.dbapi_connection
        self._cursor = self._dbapi.cursor()
        self.marks = 0

    def mark_sent(self, params: dict[str, Any]) -> None:
        values = (self._sent_at(params["sent_at"]), params["refused"], params["row_id"])
        if self.gate is not None:
            if self.journal is None:
                fcntl.lockf(self.gate, fcntl.LOCK_EX)
            elif not self._gate_taken_if_free():
                try:
                    self.journal.keep(values)  # the daemon stores a batch: in the file until it is done
                    self.marks += 1
                    return
                except OSError as kept:  # a full disk: the mark waits for the batch, as without a journal
                    log.warning("outbox: cannot keep a sent mark in %s (%s); waiting for the write lock",
                                self.journal.path.name, kept)
                    fcntl.lockf(self.gate, fcntl.LOCK_EX)
        try:
            if self.journal is not None and self.journal.held:
                self._write_held(values)
            else:
                self._cursor.execute(MARK_SENT_SQLITE, values)
        except Exception as exc:
            _raise_as_sqlalchemy(exc, self.conn, self._dbapi, self._cursor, MARK_SENT_SQLITE, values)
        finally:
            if self.gate is not None:
                fcntl.lockf(self.gate, fcntl.LOCK_UN)
        self.marks += 1

    def _write_held(self, values: tuple[Any, ...] | None = None) -> None:
        """The journal's marks (and ``values``) in one transaction; then the file starts over."""
        assert self.journal is not None
        marks = list(self.journal.held.values()) + ([values] if values is not None else [])
        self._cursor.execute("BEGIN IMMEDIATE")
        try:
            self._cursor.executemany(MARK_SENT_SQLITE, marks)
            self._cursor.execute("COMMIT")
        except BaseException:
            self._cursor.execute("ROLLBACK")
            raise
        self.journal.written()

    def write_held_if_free(self) -> None:
        """Nothing to send: commit the journal's marks now if the daemon is not storing a batch
        (its rows would read pending to others until the next mail's mark)."""
        if self.journal is None or not self.journal.held or self.gate is None or not self._gate_taken_if_free():
            return
        try:
            self._write_held()
        except Exception as exc:
            _raise_as_sqlalchemy(exc, self.conn, self._dbapi, self._cursor, MARK_SENT_SQLITE, ())
        finally:
            fcntl.lockf(self.gate, fcntl.LOCK_UN)

    def _gate_taken_if_free(self) -> bool:
        """Take the write gate unless the daemon holds it (storing a batch)."""
        assert self.gate is not None
        try:
            fcntl.lockf(self.gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            return False
        return True

    def held(self) -> dict[int, Any]:
        """Rows this line marked in its journal only: sent, still pending in the database."""
        return self.journal.held if self.journal is not None else {}

    def release(self) -> None:
        """Nothing is held on SQLite (one daemon per file)."""

    def close(self) -> None:
        """The journal's marks are committed first (waiting for the daemon's batch); should the
        database refuse, they stay in the file for the next drain (``marks.replay``)."""
        try:
            if self.journal is not None:
                try:
                    if self.journal.held:
                        assert self.gate is not None
                        fcntl.lockf(self.gate, fcntl.LOCK_EX)
                        try:
                            self._write_held()
                        finally:
                            fcntl.lockf(self.gate, fcntl.LOCK_UN)
                except Exception as exc:  # noqa: BLE001 - kept in the file, applied by the next drain
                    log.warning("outbox: %d sent mark(s) stay in %s for the next drain: %s",
                                len(self.journal.held), self.journal.path.name, exc)
                finally:
                    self.journal.close()
            self._cursor.close()
        finally:
            self.conn.close()


# ------------------------------------------------------------------ composing


def _fold(name: str, words: Sequence[str], sep: str = " ") -> str:
    """``Name: w1<sep>w2...``, with CRLF + space before a word that would pass 78 columns."""
    if words:
        whole = f"{name}: {sep.join(words)}"
        if len(whole) <= _FOLD_AT:  # most headers: nothing to fold
            return whole
    out: list[str] = []
    line = f"{name}:"
    for i, word in enumerate(words):
        piece = word + (sep.rstrip() if i < len(words) - 1 else "")
        if len(line) + 1 + len(piece) > _FOLD_AT and line != f"{name}:":
            out.append(line)
            line = " " + piece
        else:
            line = f"{line} {piece}"
    out.append(line)
    return "\r\n".join(out)


def _encoded(name: str, text: str) -> str:
    """RFC 2047 base64 encoded-words in UTF-8, one per line, each line within 78
    columns, each word whole characters (a cut never falls inside a UTF-8 sequence).

    Written here rather than with ``email.header.Header``, which took a quarter
    of the time of building a mail; readers join adjacent encoded-words without
    the folding space, so the text reads back exactly.
    """
    data = text.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    words: list[str] = []
    room = _FOLD_AT - len(name) - 2  # after "Name: " on the first line
    start = 0
    while start < len(data):
        end = min(len(data), start + max((room - 12) // 4 * 3, 4))
        while end < len(data) and 0x80 <= data[end] < 0xC0:  # continuation byte: back off
            end -= 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?=")
        start, room = end, _FOLD_AT - 1
    return "\r\n ".join(words)


def _is_plain(text: str) -> bool:
    return _PLAIN_HEADER.fullmatch(text) is not None and "=?" not in text


def _text_header(name: str, value: str) -> str:
    """An unstructured header (Subject, X-...): verbatim if plain ASCII, else RFC 2047.

    Control characters never reach the wire verbatim: they are not plain, so
    they end up inside encoded-words, which cannot start a new header line.
    """
    if _is_plain(value):
        return _fold(name, value.split(" "))
    return f"{name}: {_encoded(name, value)}"


def _address(address: str) -> str:
    if _UNSAFE_ADDRESS.search(address):
        raise ValueError(f"unsafe address {address!r}")
    return address


def _address_header(name: str, addresses: Sequence[str]) -> str:
    """A list of bare addresses; a non-ASCII one is written as UTF-8 (RFC 6532), as
    the envelope then needs SMTPUTF8 anyway."""
    return _fold(name, [_address(a) for a in addresses], sep=", ")


def _display_name(display: str) -> str:
    """A display name as a phrase: atoms as they are, other ASCII quoted, anything else
    one RFC 2047 encoded-word.

    One word, not several folded ones: Python's own address parser (3.11) keeps the
    space between adjacent encoded-words in a phrase, which RFC 2047 says to drop,
    so a long name split in two would read back with a space in it. The name is
    capped at 100 characters, so the word stays well within 998 bytes.
    """
    if not _is_plain(display):  # non-ASCII, control characters, or "=?" a reader would decode
        return _UTF8.header_encode(display.encode("utf-8", "replace").decode("utf-8"))
    if _ATOMS.fullmatch(display):
        return display
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _from_header(display: str, address: str) -> str:
    address = _address(address)
    if not display:
        return f"From: {address}"
    line = f"From: {_display_name(display)}"
    joint = "\r\n " if len(line) + len(address) + 3 > _FOLD_AT else " "
    return f"{line}{joint}<{address}>"


def _msg_id(value: str) -> str | None:
    """``<id>`` if ``value`` is usable as a msg-id; a malformed id from a client's
    mail is left out of In-Reply-To/References rather than sent broken (so is one
    with "=?", which readers that treat these headers as text would decode)."""
    return f"<{value}>" if _MSG_ID.fullmatch(value) and "=?" not in value else None


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, CRLF-terminated body): 7bit when the text is short
    ASCII lines, else quoted-printable (readable, and not what spam filters frown
    on in text), unless it is more than twice the size of base64 (emoji,
    non-Latin scripts). Any CR, LF or CRLF in the text is one line break: no bare
    CR or LF reaches SMTP."""
    data = (_LINE_END.sub("\n", text) if "\r" in text else text).encode("utf-8", "replace")
    if not data.endswith(b"\n"):
        data += b"\n"
    crlf = data.replace(b"\n", b"\r\n")  # no CR is left in data: each line ends with CRLF
    if not _UNSAFE_7BIT.search(data) and max(map(len, data.split(b"\n"))) <= _FOLD_AT:
        return "7bit", crlf
    qp = _qp_lines_within_76(binascii.b2a_qp(crlf, istext=True))
    if len(qp) <= 2 * (len(data) * 4 // 3 + len(data) // 57 * 2 + 2):
        return "quoted-printable", qp if qp.endswith(b"\r\n") else qp + b"\r\n"
    b64 = b"".join(binascii.b2a_base64(data[i:i + 57], newline=False) + b"\r\n"
                   for i in range(0, len(data), 57))
    return "base64", b64


def _qp_lines_within_76(qp: bytes) -> bytes:
    """Soft-break the lines ``binascii.b2a_qp`` leaves at 77 characters.

    It folds at 76 before it encodes a line's trailing space or tab, so a line
    of exactly 76 that ends in whitespace comes out as 77 with ``=20``, one more
    than RFC 2045 allows (found by the MIME property test). A line is cut before
    an ``=XX`` escape, never inside one.
    """
    lines = qp.split(b"\r\n")
    if max(map(len, lines)) <= 76:
        return qp
    folded: list[bytes] = []
    for line in lines:
        while len(line) > 76:
            cut = 75
            if line[cut - 1:cut] == b"=":
                cut -= 1
            elif line[cut - 2:cut - 1] == b"=":
                cut -= 2
            folded.append(line[:cut] + b"=")
            line = line[cut:]
        folded.append(line)
    return b"\r\n".join(folded)


_DATE: list[tuple[datetime, str]] = []  # the last Date header and the second it is for


def _date(now: datetime) -> str:
    """``format_datetime(now)``, which is the same for every mail of one second."""
    second = now.replace(microsecond=0)
    if _DATE and _DATE[0][0] == second:
        return _DATE[0][1]
    text = format_datetime(second)
    _DATE[:] = [(second, text)]
    return text


@functools.lru_cache(maxsize=1024)
def _from_line(display: str, address: str) -> str:
    """The From line for a display name as queued (or the sender's name) and our address: the
    same few pairs for every mail of a drain, so composed once each."""
    return _from_header(one_line(display, 100), address)


@functools.lru_cache(maxsize=4096)
def _addresses_line(name: str, addresses: tuple[str, ...]) -> str:
    """``_address_header`` once per list: a backlog's mail goes to a few hundred customers.
    An unsafe address raises each time (a raised call is not kept)."""
    return _address_header(name, addresses)


@functools.lru_cache(maxsize=256)
def _constant_lines(instance_id: str, language: str) -> tuple[str, str | None]:
    """X-Maild-Origin and Content-Language (None for a malformed tag): one per daemon and language."""
    return (_text_header("X-Maild-Origin", one_line(instance_id, 100)),
            f"Content-Language: {language}" if _LANGUAGE_TAG.fullmatch(language) else None)


def _automatic_lines(kind: str) -> tuple[str, ...]:
    return ("Auto-Submitted: " + ("auto-replied" if kind in ("ack", "command_error") else "auto-generated"),
            "X-Auto-Response-Suppress: All",
            "Precedence: " + ("auto_reply" if kind == "ack" else "bulk"))


def _headers(row: MailRow, subject: str, headers: dict[str, Any], sender: Sender, now: datetime) -> list[str]:
    """The header lines every outgoing mail carries, in one order, each CRLF-free but for folding.

    What is the same for many mails (From, the recipients' lists, X-Maild-Origin,
    Content-Language) is composed once per value (``_from_line``, ``_addresses_line``,
    ``_constant_lines``), by the same functions, so the lines are the same."""
    cc = [a for a in headers.get("cc", ()) if a]
    to = [a for a in row.recipients if a not in cc] if cc else row.recipients
    message_id = _msg_id(row.message_id)
    if message_id is None:
        raise ValueError(f"malformed message id {row.message_id!r}")
    lines = [_from_line(headers.get("from_name") or sender.name, sender.address)]
    if to:
        lines.append(_addresses_line("To", tuple(to)))
    if cc:
        lines.append(_addresses_line("Cc", tuple(cc)))
    if headers.get("reply_to"):
        lines.append(_address_header("Reply-To", [one_line(headers["reply_to"], 320)]))
    lines += [_text_header("Subject", one_line(subject, 900)), f"Date: {_date(now)}",
              f"Message-ID: {message_id}"]
    in_reply_to = _msg_id(one_line(headers["in_reply_to"], 900)) if headers.get("in_reply_to") else None
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    references = headers.get("references")
    if references:
        refs = [ref for ref in (_msg_id(one_line(r, 900)) for r in references if r) if ref]
        if refs:
            lines.append("References: " + "\r\n ".join(refs))
    if row.automatic:
        lines += _automatic_lines(row.kind)
    origin, language = _constant_lines(sender.instance_id, row.language)
    lines.append(origin)
    if headers.get("ticket_ref"):
        lines.append(_text_header("X-Maild-Ticket", one_line(headers["ticket_ref"], 100)))
    if language is not None:
        lines.append(language)
    return lines


def compose_text_mail(row: MailRow, subject: str, body: str, headers: dict[str, Any], sender: Sender,
                      now: datetime) -> bytes:
    """A text/plain mail as bytes, composed directly (no ``EmailMessage``).

    Every value is one_line()'d and then either checked (addresses, message ids,
    the language tag) or written where it cannot break out of its header
    (plain printable ASCII, or RFC 2047 encoded-words), so data from a
    customer's mail can never add a header or end the header block.
    """
    return _text_mail(row, subject, body, headers, sender, now)[0]


def _text_mail(row: MailRow, subject: str, body: str, headers: dict[str, Any], sender: Sender,
               now: datetime) -> tuple[bytes, bytes]:
    """``compose_text_mail``, and its wire form (``_wire_form``)."""
    cte, payload = _body(body)
    lines = _headers(row, subject, headers, sender, now)
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"]
    message = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + payload
    return message, _wire_form(message, payload)


def _wire_form(message: bytes, payload: bytes) -> bytes:
    """A mail composed here as SMTP's DATA sends it (``smtp.wire_data``): itself, unless a line
    of its text ``payload`` starts with "." (then every such dot is doubled).

    A text mail composed here (``_text_mail``, ``_mixed_mail``) is CRLF throughout, ends with
    CRLF and starts with a header: its header lines are one line each or folded with CRLF and
    a space, its body's line ends are CRLF (``_body``), and so are an attachment's base64
    lines, which hold no ".". So only the text's lines can start with a dot, and the rest of
    what ``wire_data`` looks for (a bare CR or LF, no final CRLF) cannot be there: it counted
    and searched a notification with 240 KB of attachments for 0.6 ms. Property tests hold
    the two equal (``test_outbox_mime``)."""
    if payload[:1] != b"." and b"\n." not in payload:
        return message
    return message.replace(b"\n.", b"\n..")


def _mime_mail(row: MailRow, subject: str, body: str, headers: dict[str, Any], sender: Sender,
               read_blob: Callable[[str], bytes] | None, now: datetime) -> bytes:
    """A mail with attachments or an HTML part: our header lines, then the MIME entity
    ``EmailMessage`` makes of body, HTML and files (rare, not worth a hand-made multipart).

    The HTML part (``headers["html"]``: the HTML and its images, rendered when
    the row was queued) makes the body multipart/alternative, the plain text
    first; its images ride in a multipart/related beside the HTML, each an inline
    part named by the Content-ID the HTML refers to as ``cid:``.
    """
    mime = EmailMessage(policy=SMTP)
    mime.set_content(body, charset="utf-8", cte="quoted-printable")
    html = headers.get("html")
    if html:
        mime.add_alternative(str(html["body"]), subtype="html", charset="utf-8", cte="quoted-printable")
        html_part = cast(EmailMessage, list(mime.iter_parts())[1])
        for image in html.get("images", []):
            if "data" not in image:
                raise ValueError(f"inline image {image.get('cid')} was dropped after the mail was sent; "
                                 "this mail cannot be built again")
            maintype, _, subtype = str(image.get("content_type", "image/png")).partition("/")
            html_part.add_related(base64.b64decode(image["data"]), maintype=maintype or "image",
                                  subtype=subtype or "png", cid=f"<{_content_id(str(image['cid']))}>",
                                  disposition="inline", filename=one_line(image.get("filename", "image.png"), 200))
    for att in headers.get("attachments", []):
        if read_blob is None:
            break
        maintype, _, subtype = str(att.get("content_type", "application/octet-stream")).partition("/")
        mime.add_attachment(read_blob(att["sha256"]), maintype=maintype or "application",
                            subtype=subtype or "octet-stream",
                            filename=one_line(att.get("filename", "attachment"), 200))
    return "\r\n".join(_headers(row, subject, headers, sender, now)).encode("utf-8") + b"\r\n" + mime.as_bytes()


def without_image_data(context: dict[str, Any]) -> dict[str, Any] | None:
    """The context of a sent mail without its inline images' bytes, or None when it has none.

    A statement's or month report's charts ride base64 in the row's context
    (100-320 KB a row) only until the relay has the mail: the row is the record
    that it went out, not a copy of it. What stays of each image is its
    Content-ID, file name, type, size and sha256 (what was sent, checkable).
    """
    headers = context.get("_headers")
    if not isinstance(headers, dict) or not isinstance(headers.get("html"), dict):
        return None
    html: dict[str, Any] = headers["html"]
    images = html.get("images")
    if not images or not any("data" in image for image in images):
        return None
    kept = []
    for image in images:
        image = dict(image)
        data = image.pop("data", None)
        if data is not None:
            png = base64.b64decode(data)
            image.update(size=len(png), sha256=hashlib.sha256(png).hexdigest(), sent_without_data=True)
        kept.append(image)
    return {**context, "_headers": {**headers, "html": {**html, "images": kept}}}


def _content_id(value: str) -> str:
    """A Content-ID as queued, checked like a Message-ID: nothing that could end the header."""
    if _MSG_ID.fullmatch(value) is None:
        raise ValueError(f"malformed content id {value!r}")
    return value


def _filename_param(filename: str) -> str:
    """``filename=...`` for Content-Disposition, on a line of its own: quoted when printable
    ASCII without "=?" (which some readers would decode), else RFC 2231 percent-encoded UTF-8 in continuations of at most 60 characters
    (as ``EmailMessage`` writes it; the name is at most 200 characters, one_line()'d)."""
    if _is_plain(filename):
        return 'filename="' + filename.replace("\\", "\\\\").replace('"', '\\"') + '"'
    encoded = "utf-8''" + quote(filename, safe=_RFC2231_SAFE)
    pieces: list[str] = []
    while encoded:
        cut = min(len(encoded), 60)
        while cut < len(encoded) and "%" in encoded[max(0, cut - 2):cut]:  # never inside a %XX
            cut -= 1
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    if len(pieces) == 1:
        return f"filename*={pieces[0]}"
    return ";\r\n ".join(f"filename*{i}*={piece}" for i, piece in enumerate(pieces))


# 256 base64 lines of 76 characters as one struct: cut out of the encoding with one C call
_BASE64_LINES = struct.Struct("76s" * 256)


def _base64_lines(data: bytes) -> bytes:
    """Base64 in CRLF-ended lines of 76 characters, as ``base64.encodebytes`` writes them
    (with CRLF for LF), from one encoding cut into its lines ``_BASE64_LINES`` at a time:
    ``encodebytes`` encodes 57 bytes at a time in Python (a fifth of a notification's CPU
    for a 100 KB attachment), and a slice and a concatenation per line took about twice
    as long as the encoding itself (bench/README.md, thirteenth session)."""
    encoded = binascii.b2a_base64(data, newline=False)
    whole = len(encoded) - len(encoded) % _BASE64_LINES.size
    lines: list[bytes] = []
    for block in _BASE64_LINES.iter_unpack(memoryview(encoded)[:whole]):
        lines += block
    lines += [encoded[i:i + 76] for i in range(whole, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n" if lines else b""


def _mixed_mail(row: MailRow, subject: str, body: str, headers: dict[str, Any], sender: Sender,
                read_blob: Callable[[str], bytes], now: datetime) -> tuple[bytes, bytes]:
    """A text mail with attachments (a consultant's notification carrying the customer's
    files), composed directly as multipart/mixed: ``EmailMessage`` and its generator took
    20 times as long as a text mail for one of these, most of it writing base64 lines.

    The text part is encoded as ``compose_text_mail`` encodes a body; each file is
    base64 with its type (checked to be a plain type/subtype, else
    application/octet-stream) and its file name; the boundary is random and checked
    against the parts it separates. Returned with its wire form (``_wire_form``).
    """
    cte, payload = _body(body)
    parts = [b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: '
             + cte.encode("ascii") + b"\r\n\r\n" + payload]
    for att in headers.get("attachments", []):
        maintype, _, subtype = str(att.get("content_type", "application/octet-stream")).partition("/")
        if not (_MIME_TOKEN.fullmatch(maintype) and _MIME_TOKEN.fullmatch(subtype)):
            maintype, subtype = "application", "octet-stream"
        name = _filename_param(one_line(att.get("filename", "attachment"), 200) or "attachment")
        data = _base64_lines(read_blob(att["sha256"]))
        parts.append(f"Content-Type: {maintype}/{subtype}\r\nContent-Transfer-Encoding: base64\r\n"
                     f"Content-Disposition: attachment;\r\n {name}\r\n\r\n".encode("ascii") + data)
    while True:
        boundary = "=_maild_" + secrets.token_hex(16)
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in part for part in parts):
            break
    lines = _headers(row, subject, headers, sender, now)
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{boundary}"']
    out = ["\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"]
    for part in parts:
        out += [marker, b"\r\n", part, b"\r\n"]
    out += [marker, b"--\r\n"]
    message = b"".join(out)
    return message, _wire_form(message, payload)


def build_mail(row: MailRow, renderer: Renderer, sender: Sender, read_blob: Callable[[str], bytes] | None,
               now: datetime) -> bytes:
    """The complete mail for an outbox row, rendered from its template and context;
    ``read_blob`` gives an attachment's bytes by sha256."""
    return _composed(row, renderer, sender, read_blob, now)[0]


def _composed(row: MailRow, renderer: Renderer, sender: Sender, read_blob: Callable[[str], bytes] | None,
              now: datetime) -> tuple[bytes, bytes | None]:
    """``build_mail``, and the mail's wire form (``_wire_form``) for ``Envelope.wire``; None
    for a mail ``EmailMessage`` wrote (``smtp.wire_data`` makes it)."""
    context: dict[str, Any] = dict(row.context)
    headers: dict[str, Any] = context.pop("_headers", {})
    subject, body = renderer.render(row.template, row.language, context)
    if headers.get("html"):
        return _mime_mail(row, subject, body, headers, sender, read_blob, now), None
    if read_blob is not None and headers.get("attachments"):
        return _mixed_mail(row, subject, body, headers, sender, read_blob, now)
    return _text_mail(row, subject, body, headers, sender, now)


# ------------------------------------------------------------------ draining


class _Turn:
    """One mail's hold on the drain's gate: taken once the message is written and before
    its final "." (``SmtpSender.send``'s ``before_dot``; until the "." the relay cannot
    have accepted it), perhaps asked for twice when the connection was re-opened,
    released once the outcome is committed.

    ``shared``: the descriptor of a file the daemon's couriers all hold; its POSIX
    record lock (``lockf``, owned per process) is taken under the gate, so of the
    couriers sending at once too only one has a mail between its final "." and its mark.
    The wait blocks the event loop, for at most the other courier's one reply and mark.
    """

    def __init__(self, gate: asyncio.Lock, shared: int | None = None) -> None:
        self.gate = gate
        self.shared = shared
        self.held = False

    async def take(self) -> None:
        if not self.held:
            await self.gate.acquire()
            if self.shared is not None:
                try:
                    fcntl.lockf(self.shared, fcntl.LOCK_EX)
                except BaseException:
                    self.gate.release()
                    raise
            self.held = True

    def release(self) -> None:
        if self.held:
            if self.shared is not None:
                fcntl.lockf(self.shared, fcntl.LOCK_UN)
            self.gate.release()
            self.held = False


class Outbox:
    def __init__(self, sessions: sessionmaker[Session], renderer: Renderer, smtp: SmtpSettings, sender: Sender,
                 blobs: BlobStore | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retry_base: timedelta = RETRY_BASE, connections: int = SMTP_CONNECTIONS,
                 hold_seconds: int = 10) -> None:
        self.sessions = sessions
        # PostgreSQL: how soon the rows a drain holds are free when its host dies silently
        self.hold_seconds = hold_seconds
        self.connections = connections
        self.parallel_from = PARALLEL_FROM
        self.retry_base = retry_base
        self.renderer = renderer
        self.smtp = smtp
        self.sender = sender
        self.blobs = blobs
        self.clock = clock
        # mail the relay accepted whose sent mark the database did not take (it went away
        # between the two): marked first thing in the next drain, so a daemon that outlives
        # a database outage does not send it again
        self.unmarked: dict[int, dict[str, Any]] = {}
        # asked between mails: true when whoever runs this drain wants it to end after the
        # mail in hand (the courier's daemon stopping it); the rest of the chunk goes back
        self.stop_requested: Callable[[], bool] | None = None
        # the daemon's couriers' shared turn (``_Turn``): set in each courier, None in the daemon
        self.turn_lock: int | None = None
        self.claim_chunk = CLAIM_CHUNK
        # SQLite's couriers after the reading (``Daemon._send_with_two_couriers``): (k, n), this
        # drain claims only the rows whose id is k modulo n, so two couriers never claim one row
        # (SQLite has no row locks to skip; one daemon per file, and its couriers split the rows)
        self.partition: tuple[int, int] | None = None
        # SQLite, a courier sending while its daemon stores the backlog: the descriptor of a file whose
        # POSIX lock the daemon holds while it stores a batch and this drain around each mark (``_SqliteLine``)
        self.write_gate: int | None = None
        # SQLite: the file where such a drain keeps the marks a batch holds up (``marks``), and which
        # every SQLite drain applies first; None: no journal (each mark waits for the gate)
        self.journal_path: Path | None = None
        self._line: _SqliteLine | None = None  # this drain's, while it runs: its journal's rows are not claimed again
        # asked when nothing is due: blocks until more may be (the courier's daemon committed
        # a batch) and says whether to look again; None ends the drain there, as it always did
        self.wait_for_more: Callable[[], bool] | None = None

    def _time_up(self, deadline: float | None, done: DrainResult) -> bool:
        return _past(deadline, done) or (self.stop_requested is not None and self.stop_requested())

    def drain(self, limit: int = 10000, budget_seconds: float | None = None) -> DrainResult:
        """Send up to ``limit`` due mails; with a budget, take no new mail once it is used up
        (a slow relay must not keep the daemon from reading its mailbox)."""
        deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        return asyncio.run(self.drain_async(limit, deadline))

    def _claim(self, chunk: int, line: _DrainLine | None = None, peek: bool = False) -> list[PendingMail]:
        """Rows to send now, oldest first, in one SELECT.

        On PostgreSQL, where several daemons may drain one outbox, rows another
        drain holds are skipped, and with ``line`` the rows are taken: locked by
        advisory locks of the drain's own session, which the server drops when
        that session ends (by ``line.release`` after the chunk, or because the
        daemon died), so a killed daemon's rows are due again at once. SQLite
        has one daemon per file: nothing to take, and its SELECT walks the pending rows in
        their order (``_SQLITE_CLAIM``). ``peek``: only whether mail is due."""
        now = self.clock()
        if not self.postgres:
            # the rows this drain sent and marked in its journal only are pending in the database still
            held = self._line.held() if self._line is not None else {}
            values: dict[str, Any] = {"now": now, "chunk": chunk + len(held)}
            if self.partition is not None:
                values["part"], values["parts"] = self.partition
            with self.sessions() as session, session.begin():
                rows = [PendingMail(*row) for row in session.execute(
                    _SQLITE_CLAIM if self.partition is None else _SQLITE_CLAIM_PART, values)]
            return [row for row in rows if row.id not in held][:chunk] if held else rows
        query = (
            select(*_PENDING_COLUMNS)
            .where(PENDING, _OUTBOX.c.next_attempt_at <= now)
            .order_by(_OUTBOX.c.created_at, _OUTBOX.c.id)
            .limit(chunk)
        )
        # the row locks keep a concurrent claim off these rows until they are
        # advisory-locked; pg_locks says which rows other drains hold now
        query = query.where(_OUTBOX.c.id.not_in(_HELD))
        if not peek:
            query = query.with_for_update(skip_locked=True)
        for _ in range(CLAIM_TRIES):
            with self.sessions() as session, session.begin():
                session.execute(_IN_INDEX_ORDER)
                rows = [PendingMail(*row) for row in session.execute(query)]
                if line is None or not rows:
                    return rows
                taken = line.take([row.id for row in rows])
            if taken:
                return [row for row in rows if row.id in taken]
            # another drain advisory-locked every row found after this SELECT read pg_locks and
            # before it locked them (its claim had just committed): the next look sees them held.
            # Not "nothing due", which would end a courier that was asked to finish.
        return []

    def due_at_least(self, count: int) -> bool:
        """Whether at least ``count`` mails are due now (one indexed read of at most ``count`` ids)."""
        due = (select(_OUTBOX.c.id).where(PENDING, _OUTBOX.c.next_attempt_at <= self.clock())
               .order_by(_OUTBOX.c.created_at, _OUTBOX.c.id).limit(count).subquery())
        with self.sessions() as session, session.begin():
            return int(session.scalar(select(func.count()).select_from(due)) or 0) >= count

    async def drain_async(self, limit: int = 10000, deadline: float | None = None) -> DrainResult:
        """Send up to ``limit`` due mails over ``self.connections`` SMTP connections
        (one when fewer than ``self.parallel_from`` are due).

        The workers take the claimed rows in order from one queue, so mail still
        leaves oldest first (give or take the one in flight on the other
        connection). Each marks its mail sent and commits before taking the next;
        the commits cannot interleave (one thread, nothing awaited between a
        statement and its commit), so all workers share one session. A message's
        final "." goes out over one connection at a time, and that connection holds
        the turn until the outcome is committed (``_send_one``), so a crash still
        resends at most one mail; what overlaps is building the next mail, MAIL FROM,
        RCPT TO, DATA and the message itself, and the relay's work on the other
        connection. When the relay fails for one
        worker, the others finish the mail they have in hand and take no more,
        and every row not sent is given back in its place in the queue.

        On PostgreSQL the rows are claimed, and the sent marks committed, through
        the drain's own session (``_DrainLine``), opened once a claim finds mail.
        """
        result = DrainResult()
        self._mark_unmarked()
        if self.journal_path is not None and not self.postgres:
            replay_marks(self.sessions, self.journal_path)  # what a killed courier kept there: sent
        gate = asyncio.Lock()
        senders = [SmtpSender(self.smtp) for _ in range(max(1, self.connections))]
        line: _DrainLine | _SqliteLine | None = None
        try:
            while result.sent + result.retry + result.failed < limit:
                if self._time_up(deadline, result):
                    result.more_due = bool(self._claim(1, peek=True))
                    break
                chunk = min(self.claim_chunk, limit - result.sent - result.retry - result.failed)
                if line is None and self.postgres:
                    if not self._claim(1, peek=True):
                        if self.wait_for_more is not None and self.wait_for_more():
                            continue
                        break
                    line = _DrainLine(self.sessions, self.hold_seconds)
                rows = self._claim(chunk, line if isinstance(line, _DrainLine) else None)
                if not rows:
                    if isinstance(line, _SqliteLine):
                        line.write_held_if_free()
                    if self.wait_for_more is not None and self.wait_for_more():
                        continue
                    break
                if line is None:
                    journal = (MarkJournal(self.journal_path)
                               if self.write_gate is not None and self.journal_path is not None else None)
                    line = self._line = _SqliteLine(self.sessions, self.write_gate, journal)
                queue = deque(rows)
                unsent: list[int] = []
                faults: list[Exception] = []
                # a trickle goes over one connection, in exact order; a backlog over all
                workers = senders if len(rows) >= self.parallel_from else senders[:1]
                with self.sessions() as session:
                    read_blob = self._blob_reader(session, rows)
                    session.commit()  # no read transaction left open while the line writes
                    await asyncio.gather(*(self._worker(session, line, read_blob, smtp, gate, queue, result, unsent,
                                                        faults, deadline)
                                           for smtp in workers))
                if faults:
                    if isinstance(faults[0], SmtpError):
                        self._release(unsent + [row.id for row in queue])
                    raise faults[0]
                if line is not None:
                    line.release()
                if queue:  # the budget ran out: the rest goes back, due at once, in its place
                    self._release([row.id for row in queue])
                    result.more_due = True
                    break
        finally:
            self._line = None
            if line is not None:
                line.close()
            for smtp in senders:
                await smtp.close()
        return result

    def _mark_unmarked(self) -> None:
        """Record the sends a lost database connection left unrecorded (raises while it is still away)."""
        if not self.unmarked:
            return
        with self.sessions() as session, session.begin():
            for params in self.unmarked.values():
                session.connection().execute(_MARK_SENT, params)
        log.info("outbox: %d mail(s) sent before the database went away marked sent: %s",
                 len(self.unmarked), ", ".join(str(row_id) for row_id in self.unmarked))
        self.unmarked.clear()

    def _blob_reader(self, session: Session, rows: Sequence[PendingMail]) -> Callable[[str], bytes] | None:
        """Attachments' bytes by sha256 for this chunk's mail: where they sit in the packs is
        read for the whole chunk at once, anything else (a loose file) as before."""
        blobs = self.blobs
        if blobs is None:
            return None
        digests = [str(att["sha256"]) for row in rows
                   for att in (row.context.get("_headers") or {}).get("attachments") or ()
                   if isinstance(att, dict) and "sha256" in att]
        places = store.blob_places(session, digests) if digests else {}

        def read(sha256: str) -> bytes:
            where = places.get(sha256)
            return store.read_blob(session, blobs, sha256) if where is None else blobs.read(where, sha256)

        return read

    @property
    def postgres(self) -> bool:
        return bool(self.sessions.kw["bind"].dialect.name == "postgresql")

    async def _worker(self, session: Session, line: _DrainLine | _SqliteLine | None, read_blob: Callable[[str], bytes] | None,
                      smtp: SmtpSender, gate: asyncio.Lock, queue: deque[PendingMail], result: DrainResult,
                      unsent: list[int], faults: list[Exception], deadline: float | None = None) -> None:
        """Send from the shared queue until it is empty or any worker met a fault.

        A fault (the relay gone, the database failing) is kept for ``drain_async``
        to raise once every worker has finished the mail it has in hand: raising at
        once would leave the other worker's mail half sent and unrecorded.
        """
        while queue and not faults and not self._time_up(deadline, result):
            mail = queue.popleft()
            try:
                await self._send_one(session, line, read_blob, smtp, gate, mail, result)
            except Exception as exc:  # noqa: BLE001 - raised again by drain_async
                faults.append(exc)
                unsent.append(mail.id)

    def _release(self, ids: list[int]) -> None:
        """Give claimed rows back, due at once: the caller backs off the relay as a
        whole, and rows that all stay due keep going out oldest first."""
        now = self.clock()
        with self.sessions() as session, session.begin():
            session.connection(execution_options=_WRITE_FIRST)
            for row in session.scalars(select(OutboxRow).where(OutboxRow.id.in_(ids), OutboxRow.status == "pending")):
                row.next_attempt_at = min(row.next_attempt_at, now)

    async def _send_one(self, session: Session, line: _DrainLine | _SqliteLine | None, read_blob: Callable[[str], bytes] | None,
                        smtp: SmtpSender, gate: asyncio.Lock, mail: PendingMail, result: DrainResult) -> None:
        """Build, send and settle one mail; the row's new state is committed before returning.

        From its final "." (the message itself is written before) until its outcome
        is committed the mail holds ``gate``, so of several connections only one at a
        time can have a mail the relay accepted and the database does not know of
        yet: a crash still resends at most one mail.
        """
        now = self.clock()
        try:
            data, wire = _composed(mail, self.renderer, self.sender, read_blob, now)
        except (RenderError, StorageError, OSError, KeyError, ValueError) as exc:
            reason = f"cannot render: {exc}"
            self._settle(session, mail.id, lambda row: self._retry(row, now, reason, result))
            return
        turn = _Turn(gate, self.turn_lock)
        envelope = Envelope(self.sender.address, tuple(mail.recipients), data, f"<{mail.message_id}>", wire)
        delivery: Delivery | None = None
        try:
            delivery = await smtp.send(envelope, turn.take, logged=False)
            self._record(session, line, smtp, mail, delivery, now, result)
        finally:
            turn.release()
            # the outcome's log line once it is recorded and the turn is free: formatting and
            # writing it inside the turn was an eighth of a mail's hold (bench/README.md)
            if delivery is not None:
                smtp.log_delivery(envelope, delivery)

    def _record(self, session: Session, line: _DrainLine | _SqliteLine | None, smtp: SmtpSender, mail: PendingMail,
                delivery: Delivery, now: datetime, result: DrainResult) -> None:
        """Commit what became of one mail (raises SmtpUnavailable if the relay is gone)."""
        if delivery.outcome == "sent":
            # the hot path: one UPDATE, committed before the next mail goes out
            params = {"row_id": mail.id, "sent_at": self.clock(),
                      "refused": "; ".join(f"{a}: {r}" for a, r in delivery.refused.items())}
            trimmed = without_image_data(mail.context)
            durable = isinstance(line, _DrainLine) and line.marks % DURABLE_EVERY == DURABLE_EVERY - 1
            try:
                if trimmed is None and line is not None and not durable:
                    line.mark_sent(params)  # PostgreSQL: the server has it, the WAL flush follows on its own
                else:
                    # on PostgreSQL the durable mark that flushes every mark before it too,
                    # or a mail whose charts leave the row in the mark's transaction
                    session.commit()  # SQLite: no stale read snapshot under the write
                    session.connection().execute(_MARK_SENT, params)
                    if trimmed is not None:  # a statement's or report's charts: not kept once sent
                        session.connection().execute(_DROP_IMAGES, {"row_id": mail.id, "trimmed": trimmed})
                    session.commit()
                    if line is not None:
                        line.marks += 1
            except DBAPIError:
                self.unmarked[mail.id] = params
                raise
            result.sent += 1
            return
        if delivery.outcome == "retry" and not smtp.connected:
            # the relay is unreachable, not this mail's fault: the row stays due, in its
            # place in the queue, and the caller backs off the relay as a whole ...
            set_aside = False

            def unreachable(row: OutboxRow) -> None:
                nonlocal set_aside
                row.attempts += 1
                row.last_error = delivery.reply[:2000]
                if delivery.timed_out and row.attempts >= STALLS_BEFORE_SET_ASIDE:
                    # ... unless the relay keeps going silent on this very mail: then it
                    # waits out its own backoff, so the mail queued behind it still goes
                    set_aside = True
                    log.warning("outbox %d (%s, %s): the relay went silent on it %d times; set aside",
                                row.id, row.kind, row.message_id, row.attempts)
                    self._retry(row, now, delivery.reply, result)

            self._settle(session, mail.id, unreachable)
            if not set_aside:
                raise SmtpUnavailable(delivery.reply)
            return

        def refused(row: OutboxRow) -> None:
            row.attempts += 1
            if delivery.outcome == "failed":
                row.status, row.last_error = "failed", delivery.reply[:2000]
                result.failed += 1
                log.error("outbox %d (%s, %s) failed permanently: %s", row.id, row.kind, row.message_id,
                          delivery.reply)
                if row.ticket_id is not None:
                    store.add_event(session, row.ticket_id, "delivery_failed", now, recipients=list(row.recipients),
                                    status=delivery.reply[:200], permanent=True, outbox_id=row.id)
            else:
                self._retry(row, now, delivery.reply, result)

        self._settle(session, mail.id, refused)

    @staticmethod
    def _settle(session: Session, row_id: int, change: Callable[[OutboxRow], None]) -> None:
        """The rare outcomes (retry, failure) through the ORM, committed at once."""
        session.commit()  # a fresh transaction: SQLite refuses a write on a read snapshot the line outdated
        session.connection(execution_options=_WRITE_FIRST)
        row = session.get(OutboxRow, row_id)
        if row is not None:
            change(row)
        session.commit()

    def _retry(self, row: OutboxRow, now: datetime, reason: str, result: DrainResult) -> None:
        row.last_error = reason[:2000]
        if now - row.created_at > GIVE_UP_AFTER:
            row.status = "failed"
            result.failed += 1
            log.error("outbox %d (%s) given up after %s: %s", row.id, row.kind, GIVE_UP_AFTER, reason)
            return
        row.next_attempt_at = now + retry_delay(max(row.attempts, 1), self.retry_base)
        result.retry += 1
        result.errors.append(reason)
        log.warning("outbox %d (%s) will retry at %s: %s", row.id, row.kind, row.next_attempt_at.isoformat(), reason)
