"""Reads and writes of tickets, messages, intake, outbox and ledger rows.

The pipeline decides; this module persists, inside the caller's transaction.
Lookups that run once per message take the whole batch at once where they can
(``known_dedupe_keys``), so a 10,000-message backlog is not 10,000 round trips.
"""
from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_dict, instance_state

from maild.storage import rows as rows_of
from maild.storage.blobs import BlobMissing, BlobStore, PackedBlob, row_place
from maild.storage.rows import _bound_rows as _bound_rows
from maild.rules.customers import Customer, removals_refused
from maild.rules.kinds import contract_terms
# the reads without the ORM live in queries; re-exported for the callers that know them here
from maild.storage.queries import (
    MAX_ROW_ID as MAX_ROW_ID,
    OWN_MESSAGE_ID_PREFIX as OWN_MESSAGE_ID_PREFIX,
    own_message_ids as own_message_ids,
    OPEN_STATUSES as OPEN_STATUSES,
    ListedTicket as ListedTicket,
    TicketFilter as TicketFilter,
    CUSTOMERS_SYNCED as CUSTOMERS_SYNCED,
    count_tickets as count_tickets,
    customers_digest as customers_digest,
    customers_unchanged as customers_unchanged,
    get_state as get_state,
    put_state as put_state,
    message_counts as message_counts,
    outbox_stats as outbox_stats,
    parse_ticket_ref as parse_ticket_ref,
    queue_after as queue_after,
    queue_before as queue_before,
    queue_order as queue_order,
    queue_rank as queue_rank,
    stream_tickets as stream_tickets,
    ticket_ref as ticket_ref,
)
from maild.storage.queries import NOTIFY_KINDS
from maild.storage.models import (
    AttachmentRow,
    ContractRow,
    CustomerRow,
    Event,
    Intake,
    MessageRow,
    OutboxRow,
    PackIndex,
    StateRow,
    Ticket,
)
from maild.storage.tables import MESSAGE_ID_LOOKUP, OUTBOX_RATE_KEYED


def new_message_id(domain: str, ticket_id: int | None, kind: str) -> str:
    """Our own Message-ID (without <>), unique and recognisable as ours."""
    ticket = f"t{ticket_id}." if ticket_id is not None else ""
    return f"{OWN_MESSAGE_ID_PREFIX}{ticket}{kind}.{secrets.token_hex(8)}@{domain}"


# ---------------------------------------------------------------- intake

def known_dedupe_keys(session: Session, keys: Iterable[str]) -> set[str]:
    wanted = list(set(keys))
    found: set[str] = set()
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        found.update(session.scalars(select(Intake.dedupe_key).where(Intake.dedupe_key.in_(chunk))))
    return found


def intake_recorded(session: Session, dedupe_key: str) -> bool:
    return session.scalar(select(Intake.id).where(Intake.dedupe_key == dedupe_key)) is not None


def _looked_up() -> ColumnElement[bool]:
    """The condition of ``ix_messages_message_id_lookup``, as the index has it (see ``tables.MESSAGE_ID_LOOKUP``)."""
    return text(f"({MESSAGE_ID_LOOKUP})")  # type: ignore[return-value]


def inbound_copies(session: Session, message_id: str) -> dict[str, PackedBlob | None]:
    """Each stored inbound mail with this Message-ID, by the sha256 of its raw bytes: the first
    (intake's row under the Message-ID) and those kept under ``dup:<sha256>`` (``reused_id``),
    with the place its message row gives (None: found by hash, ``read_blob``)."""
    columns = (MessageRow.raw_sha256, MessageRow.raw_pack, MessageRow.raw_offset, MessageRow.raw_length)
    first = (select(*columns).join(Intake, Intake.message_row_id == MessageRow.id)
             .where(Intake.dedupe_key == message_id, MessageRow.direction == "in"))
    others = select(*columns).where(MessageRow.message_id == message_id, MessageRow.direction == "in", _looked_up())
    return {sha: row_place(pack, offset, length) for sha, pack, offset, length in session.execute(first.union_all(others))
            if sha}


def tickets_by_message_id(session: Session, message_ids: Iterable[str]) -> dict[str, int]:
    """The highest ticket holding a stored mail with each of these Message-IDs (threading), one read per 500.

    maild's own mail and inbound mail under a reused Message-ID through the
    messages' partial index; every other inbound mail through intake's dedupe
    key, which is its Message-ID (``tables.MESSAGE_ID_LOOKUP``)."""
    wanted = sorted({m for m in message_ids if m})
    found: dict[str, int] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        own = (select(MessageRow.message_id, MessageRow.ticket_id)
               .where(MessageRow.message_id.in_(chunk), MessageRow.ticket_id.is_not(None), _looked_up()))
        inbound = (select(Intake.dedupe_key, MessageRow.ticket_id).join(MessageRow, MessageRow.id == Intake.message_row_id)
                   .where(Intake.dedupe_key.in_(chunk), MessageRow.ticket_id.is_not(None)))
        for mid, tid in session.execute(own.union_all(inbound)):
            if mid is not None and tid is not None:
                found[str(mid)] = max(found.get(str(mid), 0), int(tid))
    return found


def blob_place(session: Session, sha256: str) -> PackedBlob | None:
    with session.no_autoflush:  # the index is written with the batch's rows, never through the ORM
        row = session.get(PackIndex, sha256)
    return None if row is None else PackedBlob(row.pack, row.offset, row.length)


def blob_places(session: Session, digests: Iterable[str]) -> dict[str, PackedBlob]:
    """Where each of these blobs sits, for those in packs: one SELECT per 500 (the outbox
    reads a chunk's attachments so, instead of one query per file)."""
    wanted = sorted(set(digests))
    found: dict[str, PackedBlob] = {}
    for i in range(0, len(wanted), 500):
        for sha, pack, offset, length in session.execute(
                select(PackIndex.sha256, PackIndex.pack, PackIndex.offset, PackIndex.length)
                .where(PackIndex.sha256.in_(wanted[i:i + 500]))):
            found[sha] = PackedBlob(pack, offset, length)
    return found


def blob_stored(session: Session, blobs: BlobStore, sha256: str) -> bool:
    """Whether these bytes were stored before, packed or (before packs, or quarantined) loose."""
    return blob_place(session, sha256) is not None or blobs.path_for(sha256).exists()


def read_blob(session: Session, blobs: BlobStore, sha256: str, where: PackedBlob | None = None) -> bytes:
    """Stored bytes (an attachment, a raw mail), from ``where`` (a message row's place of its raw
    mail), else their pack found by hash, else their loose file."""
    if where is None:
        where = blob_place(session, sha256)
    return blobs.get(sha256) if where is None else blobs.read(where, sha256)


def raw_mail(session: Session, blobs: BlobStore, message_row_id: int) -> bytes:
    """A stored message's raw mail: at the place its row gives (mail stored since 0011), else found
    by its sha256. BlobMissing when the row keeps none (erased, retention) or the bytes are gone."""
    row = session.execute(select(MessageRow.raw_sha256, MessageRow.raw_pack, MessageRow.raw_offset,
                                 MessageRow.raw_length).where(MessageRow.id == message_row_id)).one_or_none()
    if row is None or not row[0]:
        raise BlobMissing(f"storage {blobs.root}: message {message_row_id} keeps no raw mail")
    return read_blob(session, blobs, row[0], row_place(row[1], row[2], row[3]))


class RowIds:
    """Hands out a table's ids inside a batch, before its rows are written.

    A batch's rows are written together at its end, and rows refer to each
    other (a message's attachments, an intake row's message) before that.
    PostgreSQL draws from the table's sequence, ``block`` ids per round trip
    (safe with several writers; a block's unused ids are a gap), or, for ticket
    numbers, counts up under a lock (``hold``); SQLite, one writer per file,
    counts up from max(id).
    """

    def __init__(self, session: Session, table: str, block: int = 1) -> None:
        self.session = session
        self.table = table
        self.block = block
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self._next: int | None = None
        self._reserved: list[int] = []
        self._held = False  # PostgreSQL: ``hold`` took the table's numbering lock
        self._settled = 0  # the last id the sequence was told of (``settle``)

    def hold(self, lock_key: int) -> None:
        """PostgreSQL: take the transaction's lock on this table's numbers (every writer that
        numbers the table through ``hold`` takes it, in its transaction before any other lock, so
        two never wait on each other), then number one after the other from one ``nextval``: one
        round trip per transaction instead of one per row, and no gap (``settle`` tells the
        sequence before the commit). Where it is not held, ``take`` draws from the sequence."""
        if not self.postgres or self._held:
            return
        self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
        self._held = True

    def settle(self) -> None:
        """Set the sequence to the last id handed out under ``hold`` (before the commit)."""
        if self._held and self._next is not None and self._next - 1 > self._settled:
            self._settled = self._next - 1
            self.session.execute(text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :last)"),
                                 {"table": self.table, "last": self._settled})

    def take(self) -> int:
        if self.postgres and self._held:
            if self._next is None:
                self._next = self._settled = int(self.session.scalar(
                    text("SELECT nextval(pg_get_serial_sequence(:table, 'id'))"), {"table": self.table}))
            number = self._next
            self._next += 1
            return number
        if self.postgres:
            if not self._reserved:
                self._reserved = list(self.session.scalars(
                    text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                    {"table": self.table, "n": self.block},
                ))[::-1]
            return int(self._reserved.pop())
        if self._next is None:
            self._next = int(self.session.scalar(text(f"SELECT coalesce(max(id), 0) FROM {self.table}")) or 0) + 1
        number = self._next
        self._next += 1
        return number


class BatchRows:
    """The append-only rows of one ingest batch, written with one multi-row INSERT per table.

    Messages, attachments, events, intake and outbox rows are only ever added
    by ingest, never changed in the same batch, so they skip the ORM's unit of
    work (a third of ingest's time when they went through it). Tickets stay ORM
    objects: later mail in the batch changes them. ``write`` runs after the
    session's flush, so the tickets these rows refer to exist; anything that
    reads these tables inside the batch calls ``write`` first.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.message_ids = RowIds(session, MessageRow.__table__.name, block=256)
        self._rows: dict[Any, list[dict[str, Any]]] = {
            table: [] for table in (MessageRow.__table__, AttachmentRow.__table__, Event.__table__,
                                    Intake.__table__, OutboxRow.__table__)
        }
        self._packed: dict[str, dict[str, Any]] = {}
        # raw mail appended in this batch and not settled yet (``raw_packed``), the message row that placed each,
        # and the message rows an intake row names
        self._raw: dict[str, PackedBlob] = {}
        self._placed: dict[str, int] = {}
        self._linked: set[int] = set()
        # the recipients of every outbox row queued here, written or not, by Message-ID
        self.queued_recipients: dict[str, list[str]] = {}
        index: Any = PackIndex.__table__
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert_packed: Any = pg_insert(index).on_conflict_do_nothing()
        else:
            self._insert_packed = insert(index).prefix_with("OR IGNORE")

    def packed(self, sha256: str, where: PackedBlob) -> None:
        """Index bytes just appended to a pack. The same bytes indexed before (a
        quarantined mail retried) keep their first place."""
        self._packed.setdefault(sha256, {"sha256": sha256, "pack": where.pack, "offset": where.offset,
                                         "length": where.length})

    def is_packed(self, sha256: str) -> bool:
        """Whether these bytes were packed in this batch and are not written yet."""
        return sha256 in self._packed

    def raw_packed(self, sha256: str, where: PackedBlob) -> None:
        """A raw mail just appended to a pack: a message row made for it (``message`` with this
        ``raw_sha256``) carries the place; ``raw_settled`` indexes it by hash if none did."""
        self._raw.setdefault(sha256, where)

    def raw_settled(self, sha256: str) -> None:
        """The mail is dealt with: its raw bytes go to pack_index unless the message row its intake
        row names placed them. A second copy of a mail finds the first's bytes through that intake
        row (``inbound_copies``); any other mail's (a discarded one has no message row, a rejected
        consultant command a row its intake row does not name) only by hash (``blob_stored``)."""
        where = self._raw.pop(sha256, None)
        row_id = self._placed.pop(sha256, None)
        if where is not None and (row_id is None or row_id not in self._linked):
            self.packed(sha256, where)

    def message(self, *, ticket_id: int | None, message_id: str | None, direction: str, role: str, kind: str,
                from_addr: str, from_name: str, to_addrs: Sequence[str], cc_addrs: Sequence[str], subject: str,
                date: datetime, text_new: str, text_quoted: str = "", raw_sha256: str | None = None, size: int = 0,
                internal: bool = False, notes: Sequence[str] = (), reused_id: bool = False,
                answered: bool | None = None) -> int:
        row_id = self.message_ids.take()
        place = self._raw.get(raw_sha256) if raw_sha256 else None
        if place is not None:
            self._placed.setdefault(str(raw_sha256), row_id)
        self._rows[MessageRow.__table__].append({
            "id": row_id, "ticket_id": ticket_id, "message_id": message_id, "direction": direction, "role": role,
            "kind": kind, "from_addr": from_addr, "from_name": from_name, "to_addrs": list(to_addrs),
            "cc_addrs": list(cc_addrs), "subject": subject, "date": date, "text_new": text_new,
            "text_quoted": text_quoted, "raw_sha256": raw_sha256, "size": size, "internal": internal,
            "notes": list(notes), "reused_id": reused_id, "answered": answered,
            "raw_pack": place.pack if place else None, "raw_offset": place.offset if place else None,
            "raw_length": place.length if place else None,
        })
        return row_id

    def attachment(self, *, message_row_id: int, filename: str, content_type: str, size: int, sha256: str) -> None:
        self._rows[AttachmentRow.__table__].append({
            "message_row_id": message_row_id, "filename": filename, "content_type": content_type,
            "size": size, "sha256": sha256,
        })

    def event(self, ticket_id: int, kind: str, at: datetime, actor: str, detail: dict[str, Any]) -> None:
        self._rows[Event.__table__].append(
            {"ticket_id": ticket_id, "kind": kind, "at": at, "actor": actor, "detail": detail})

    def intake(self, *, dedupe_key: str, source_key: str, disposition: str, reason: str, arrived_at: datetime,
               now: datetime, ticket_id: int | None = None, message_row_id: int | None = None) -> None:
        if message_row_id is not None:
            self._linked.add(message_row_id)
        self._rows[Intake.__table__].append({
            "dedupe_key": dedupe_key, "source_key": source_key, "disposition": disposition, "reason": reason,
            "ticket_id": ticket_id, "message_row_id": message_row_id, "arrived_at": arrived_at,
            "processed_at": now,
        })

    def outbox(self, *, dedupe_key: str, kind: str, template: str, language: str, recipients: Sequence[str],
               context: dict[str, Any], message_id: str, now: datetime, ticket_id: int | None,
               automatic: bool, rate_key: str | None) -> None:
        self._rows[OutboxRow.__table__].append({
            "dedupe_key": dedupe_key, "kind": kind, "ticket_id": ticket_id, "message_id": message_id,
            "recipients": list(recipients), "rate_key": rate_key, "automatic": automatic, "template": template,
            "language": language, "context": context, "status": "pending", "attempts": 0,
            "next_attempt_at": now, "last_error": "", "created_at": now, "sent_at": None,
        })
        self.queued_recipients[message_id] = list(recipients)

    def held_outbox(self) -> list[dict[str, Any]]:
        """The outbox rows held, not written yet, in the order ``write`` writes them."""
        return list(self._rows[OutboxRow.__table__])

    def outbox_recipients(self, message_ids: Sequence[str]) -> list[list[str]]:
        """The recipients of each outbox row held (not written yet) with one of these Message-IDs."""
        wanted = set(message_ids)
        return [row["recipients"] for row in self._rows[OutboxRow.__table__] if row["message_id"] in wanted]

    def write(self) -> None:
        """Insert what is pending, in foreign-key order; the caller flushed the session's tickets."""
        if self._packed:
            self.session.execute(self._insert_packed, list(self._packed.values()))
            self._packed.clear()
        for table, rows in self._rows.items():
            if rows:
                append_rows(self.session, table, rows)
                rows.clear()

    def discard(self) -> None:
        """Forget what is pending: the savepoint it belonged to was rolled back.

        The pack index stays: the bytes are in the pack whatever became of the
        mail, as a loose file stayed when blobs were stored that way. A raw
        mail whose message row is dropped here is indexed when it settles.
        """
        for row in self._rows[OutboxRow.__table__]:
            self.queued_recipients.pop(row["message_id"], None)
        for row in self._rows[MessageRow.__table__]:
            if row["raw_pack"] is not None and self._placed.get(row["raw_sha256"]) == row["id"]:
                del self._placed[row["raw_sha256"]]
        for row in self._rows[Intake.__table__]:
            self._linked.discard(row["message_row_id"])
        for rows in self._rows.values():
            rows.clear()


def append_rows(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the session's transaction:
    one COPY on PostgreSQL, one executemany of converted rows on SQLite (``storage.rows``)."""
    rows_of.append_rows(session.connection(), table, rows)


def insert_rows(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """SQLite: ``rows`` inserted with one executemany in the session's transaction (``rows.insert_rows``)."""
    rows_of.insert_rows(session.connection(), table, rows)


def copy_rows(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """PostgreSQL: ``rows`` appended with one COPY in the session's transaction (``rows.copy_rows``)."""
    rows_of.copy_rows(session.connection(), table, rows)


def new_ticket(values: dict[str, Any]) -> Ticket:
    """A new ``Ticket`` holding ``values`` (attribute: value; the dict's own objects, as the constructor keeps
    them), as ``Ticket(**values)`` makes it, without the ORM's per-attribute work.

    The mapped constructor sets each value through its instrumented attribute (an event dispatch and a
    pending-change record each, ~20 per ticket): a backlog's batch opens ~1,600 tickets per 2,000 mails and
    that was ~45 ms of them (bench/README, sixteenth session). Here the instance is made as the constructor
    makes it (``ClassManager.new_instance``: the same state, no ``init`` event: the mappers are configured
    first, all that event does) and the values go into its dict. Once written (``insert_new_tickets``, or
    the flush) the ticket is the constructor's to the last committed value; before that it differs only in
    what the ORM records of changes to a transient object, which it drops at the write. A SQLAlchemy without
    ``new_instance`` gets the constructor (``test_a_ticket_made_without_the_constructor_is_the_constructors``).
    """
    made = _ticket_maker()
    if made is None:
        return Ticket(**values)
    make, keys = made
    if not keys.issuperset(values):
        raise TypeError(f"not columns of tickets: {sorted(set(values) - keys)}")
    ticket = make()
    instance_dict(ticket).update(values)
    return ticket


@functools.cache
def _ticket_maker() -> tuple[Callable[[], Ticket], frozenset[str]] | None:
    """(what makes a bare ``Ticket`` with its ORM state, the column attributes' names), or None when this
    SQLAlchemy's class manager has no ``new_instance``. Read once per process."""
    from sqlalchemy import inspect
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    mapper = inspect(Ticket)
    make = getattr(mapper.class_manager, "new_instance", None)
    if make is None:
        return None
    return make, frozenset(prop.key for prop in mapper.column_attrs)


def insert_new_tickets(session: Session) -> int:
    """Insert the session's new tickets with one statement (``append_rows``: COPY on PostgreSQL,
    one executemany on SQLite) and make them persistent as the ORM's own flush does; returns how
    many. The caller flushes the rest after (their rows may refer to these tickets).

    A backlog's batch opens ~1,600 tickets per 2,000 mails, and the unit of work's INSERT of each
    (its per-object bookkeeping, per-row parameters) was ~9 % of the main process's instructions while
    reading (bench/README "Own CPU, twelfth session"). The values inserted are the ones the flush
    inserts (a column the ticket leaves unset, or sets to None, gets its scalar default, as the flush
    sends it, else None); then ``Session._register_persistent``, what the unit of work calls after its
    own INSERTs, moves them from pending to persistent: in the identity map, those values their
    committed state, expunged if the (nested) transaction they were added in rolls back, a later change
    an UPDATE. No flush event fires for them (maild listens to none).

    A ticket is left to the ORM's flush when it cannot be inserted so: no number yet, its ``messages``
    collection touched (the flush writes those rows through the relationship), or a customer or
    contract row pending in the session (a ticket's row refers to them; the flush orders the INSERTs).
    """
    new = list(session.new)
    if not new or any(isinstance(o, (CustomerRow, ContractRow)) for o in new):
        return 0
    if _REGISTER_PERSISTENT is None:  # a SQLAlchemy without it: the flush writes them, as before
        return 0
    states = [s for s in (instance_state(o) for o in new if type(o) is Ticket)
              if s.dict.get("id") is not None and "messages" not in s.dict]
    if not states:
        return 0
    columns = _ticket_insert_columns()
    if columns is None:
        return 0
    states.sort(key=lambda s: s.dict["id"])  # linked_to names an earlier ticket: its row goes first
    rows = []
    for state in states:
        values = state.dict
        row = {}
        for name, key, default in columns:
            value = values.get(key)
            if value is None and default is not None:
                value = values[key] = default()
            row[name] = value
        rows.append(row)
    append_rows(session, Ticket.__table__, rows)
    _REGISTER_PERSISTENT(session, set(states))
    return len(states)


# SQLAlchemy's own, not public API (what its unit of work calls after its INSERTs): a release without
# it leaves the tickets to the flush, slower and the same rows (tests/desk/test_new_tickets.py)
_REGISTER_PERSISTENT: Callable[[Session, set[Any]], None] | None = getattr(Session, "_register_persistent", None)


@functools.cache
def _ticket_insert_columns() -> list[tuple[str, str, Callable[[], Any] | None]] | None:
    """(column, attribute, default) of every column of the tickets table, the default a function giving
    the column's scalar or Python-side default (what the flush sends for a value left unset or None),
    or None when the flush would send None; None for a table whose defaults the flush alone computes
    (a server default, a SQL expression). Read from the mapping once per process."""
    from sqlalchemy import inspect
    from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

    mapper = inspect(Ticket)
    found: list[tuple[str, str, Callable[[], Any] | None]] = []
    for column in Ticket.__table__.c:
        default = column.default
        maker: Callable[[], Any] | None = None
        if column.server_default is not None:
            return None
        if default is not None:
            if isinstance(default, ScalarElementColumnDefault):
                maker = (lambda value: lambda: value)(default.arg)
            elif isinstance(default, CallableColumnDefault):
                # SQLAlchemy wraps a default taking no context (the tickets' ``list``) to take one
                maker = (lambda fn: lambda: fn(cast(Any, None)))(default.arg)
            else:
                return None
        found.append((column.name, mapper.get_property_by_column(column).key, maker))
    return found


def notifications_on(session: Session, ticket_ids: Iterable[int]) -> dict[int, list[tuple[str, list[str]]]]:
    """The consultants' notifications on each of these tickets (Message-ID, recipients), oldest first, one
    SELECT per 500 tickets (``TicketDesk.notifications``: a batch asked once per customer reply)."""
    wanted = sorted(set(ticket_ids))
    found: dict[int, list[tuple[str, list[str]]]] = {}
    for i in range(0, len(wanted), 500):
        for ticket_id, message_id, recipients in session.execute(
                select(OutboxRow.ticket_id, OutboxRow.message_id, OutboxRow.recipients)
                .where(OutboxRow.ticket_id.in_(wanted[i:i + 500]), OutboxRow.kind.in_(NOTIFY_KINDS))
                .order_by(OutboxRow.id)):
            found.setdefault(ticket_id, []).append((message_id, list(recipients or [])))
    return found


def outbox_recipients_by_message_id(session: Session, message_ids: Iterable[str]) -> dict[str, list[list[str]]]:
    """The recipients of each outbox row with one of these Message-IDs (one SELECT per 500 of
    them that can be maild's own, none when none can)."""
    wanted = sorted(set(own_message_ids(message_ids)))
    found: dict[str, list[list[str]]] = {}
    for i in range(0, len(wanted), 500):
        for message_id, recipients in session.execute(
                select(OutboxRow.message_id, OutboxRow.recipients).where(OutboxRow.message_id.in_(wanted[i:i + 500]))):
            found.setdefault(message_id, []).append(list(recipients or []))
    return found


# ---------------------------------------------------------------- tickets and messages

def add_event(session: Session, ticket_id: int, kind: str, at: datetime, actor: str = "maild", **detail: Any) -> None:
    session.add(Event(ticket_id=ticket_id, kind=kind, at=at, actor=actor, detail=detail))


def participant_list(addresses: Iterable[str], current: Sequence[str] = ()) -> list[str]:
    """``current``, then each non-empty address of ``addresses`` it does not hold yet, in order: a
    ticket's participants, made (``TicketDesk.open_ticket``) or joined (``add_participants``)."""
    merged = list(current)
    for address in addresses:
        if address and address not in merged:
            merged.append(address)
    return merged


def add_participants(ticket: Ticket, addresses: Iterable[str]) -> None:
    current = ticket.participants or []
    merged = participant_list(addresses, current)
    if len(merged) != len(current):
        ticket.participants = merged


def rate_key(address: str) -> str:
    """The key automatic mail to ``address`` is counted under: ``domain/mailbox``,
    case-folded, without the plus-part. Keyed on the exact address, victim+0@ to
    victim+19@ got 20 acknowledgements; the domain first lets one index range
    count a whole domain (``recent_automatic``)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        local, domain = address.strip(), ""
    mailbox = local.split("+", 1)[0] or local
    return f"{domain.casefold()}/{mailbox.casefold()}"


def rate_domain(key: str) -> str:
    return key.split("/", 1)[0]


def _recent_automatic_keys(session: Session, since: datetime) -> Iterator[tuple[str, int]]:
    """(rate key, automatic mails queued under it since ``since``) for every key of the last hour.

    Read through the time index alone (``ix_outbox_recent_automatic``: created_at,
    automatic, rate_key), so it reads the window's mail and nothing older; there
    is no index by rate key (0009 dropped it: each acknowledgement inserted its
    random key into a million-row B-tree, a page written per mail at 1M mails). Only the rows with a rate key
    are counted, and only they are in the index (0018): its condition is written out, as the planners need it.
    """
    # grouped by an expression of the key, not the key: SQLite would walk a whole key index for its order
    key = OutboxRow.rate_key.concat("")
    rows = session.execute(
        select(key, func.count()).where(OutboxRow.created_at >= since, OutboxRow.automatic.is_(True),
                                        text(OUTBOX_RATE_KEYED)).group_by(key))
    for rate, count in rows:
        yield (str(rate) if rate else ""), int(count)


def recent_automatic(session: Session, keys: Iterable[str], since: datetime,
                     domains: Iterable[str] = ()) -> tuple[dict[str, int], dict[str, int]]:
    """Automatic mails queued since ``since`` under each rate key (see ``rate_key``; the
    per-sender limit) and to each domain (the per-domain limit): ``domains`` and those
    of ``keys``. One read of the last hour's mail for both: a range of a rate-key index per domain
    ("d/" <= key < "d0") could not bound the time, and read every mail ever sent to the domain."""
    wanted = set(k for k in keys if k)
    domains_wanted = set(d for d in (*(rate_domain(k) for k in wanted), *domains) if d)
    per_key: dict[str, int] = {}
    per_domain: dict[str, int] = {}
    if not wanted and not domains_wanted:
        return per_key, per_domain
    for rate, count in _recent_automatic_keys(session, since):
        if rate in wanted:
            per_key[rate] = per_key.get(rate, 0) + count
        domain = rate_domain(rate) if rate else ""
        if domain in domains_wanted:
            per_domain[domain] = per_domain.get(domain, 0) + count
    return per_key, per_domain


def queue_ranks(session: Session) -> dict[int, int]:
    """1-based position of every open ticket in the queue (reads the whole queue: for tests and small tools)."""
    ids = session.scalars(select(Ticket.id).where(Ticket.status.in_(OPEN_STATUSES)).order_by(*queue_order()))
    return {tid: i for i, tid in enumerate(ids, start=1)}


# ---------------------------------------------------------------- outbox

def enqueue(
    session: Session,
    *,
    dedupe_key: str,
    kind: str,
    template: str,
    language: str,
    recipients: Sequence[str],
    context: dict[str, Any],
    message_id: str,
    now: datetime,
    ticket_id: int | None = None,
    automatic: bool = True,
    rate_key: str | None = None,
    fresh: bool = False,
) -> OutboxRow | None:
    """Queue a mail once: a second row with the same dedupe key is not written.

    ``fresh`` skips the lookup for keys that cannot exist yet (they name a row
    created in this transaction); the unique index still guards them.
    """
    if not fresh and outbox_queued(session, dedupe_key):
        return None
    row = OutboxRow(
        dedupe_key=dedupe_key, kind=kind, template=template, language=language,
        recipients=list(recipients), context=context, message_id=message_id, ticket_id=ticket_id,
        automatic=automatic, rate_key=rate_key, status="pending", attempts=0,
        next_attempt_at=now, created_at=now,
    )
    session.add(row)
    return row


def outbox_queued(session: Session, dedupe_key: str) -> bool:
    return session.scalar(select(OutboxRow.id).where(OutboxRow.dedupe_key == dedupe_key)) is not None


# ---------------------------------------------------------------- customers

# pg_advisory_xact_lock key held while the customers file is mirrored ("maild-cu").
CUSTOMER_SYNC_LOCK_KEY = 0x6D61696C642D6375


def sync_customers(session: Session, customers: Sequence[Customer], now: datetime,
                   max_removed_percent: int | None = None, source: str = "customers file") -> tuple[int, int]:
    """Mirror the customers file into the database; returns (contracts seen, contracts ended).

    Contracts are matched by their stable id; one that left the file is marked
    removed, never deleted, so tickets and the ledger keep their history.
    With ``max_removed_percent``, a file that would deactivate more than that
    share of the active customers is refused (``ConfigError``, nothing changed):
    an empty or truncated file once marked every contract removed, and tickets
    created meanwhile lost their contract for good.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Daemons started together each mirror the file: the second waits for the
        # first's commit and then updates its rows instead of inserting them again.
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CUSTOMER_SYNC_LOCK_KEY})
    if max_removed_percent is not None:
        active = set(session.scalars(select(CustomerRow.id).where(CustomerRow.active.is_(True))))
        refused = removals_refused(active, customers, max_removed_percent, source)
        if refused is not None:
            raise refused
    seen_customers: set[str] = set()
    seen_contracts: set[str] = set()
    # every row read in two queries, not two per customer (each start of the daemon syncs)
    customer_rows = {row.id: row for row in session.scalars(select(CustomerRow))}
    contract_rows = {row.id: row for row in session.scalars(select(ContractRow))}
    for customer in customers:
        seen_customers.add(customer.id)
        row = customer_rows.get(customer.id)
        new = row is None
        if row is None:
            row = customer_rows[customer.id] = CustomerRow(id=customer.id)
            session.add(row)
        row.name, row.language = customer.name, customer.language
        row.addresses, row.domains = list(customer.addresses), list(customer.domains)
        row.billing_address, row.active, row.synced_at = customer.billing_address, True, now
        if new:
            session.flush()  # inserted before its contracts, which refer to it
        for contract in customer.contracts:
            seen_contracts.add(contract.id)
            crow = contract_rows.get(contract.id)
            if crow is None:
                crow = ContractRow(id=contract.id)
                session.add(crow)
            crow.customer_id, crow.kind, crow.start, crow.end = customer.id, contract.kind, contract.start, contract.end
            # the day maild first saw the contract: an sla carry-over counts from that month,
            # not from a start years back (rows from before this was kept: the start, as then)
            seen = (crow.terms or {}).get("first_seen") if crow.terms else None
            if seen is None:
                seen = contract.start.isoformat() if crow.synced_at is not None else now.date().isoformat()
            crow.terms = {**contract_terms(contract), "first_seen": seen}
            crow.removed_at, crow.synced_at = None, now
    ended = 0
    for crow in session.scalars(select(ContractRow).where(ContractRow.removed_at.is_(None))):
        if crow.id not in seen_contracts:
            crow.removed_at = now
            ended += 1
    session.execute(
        update(CustomerRow).where(CustomerRow.id.not_in(seen_customers) if seen_customers else CustomerRow.id.is_not(None))
        .values(active=False)
    )
    put_state(session.connection(), CUSTOMERS_SYNCED, customers_digest(customers), now)
    return len(seen_contracts), ended


def forget_customers_sync(session: Session) -> None:
    """The customer rows were changed outside a sync (an erasure): the next start syncs them again."""
    row = session.get(StateRow, CUSTOMERS_SYNCED)
    if row is not None:
        session.delete(row)


# ---------------------------------------------------------------- state
# (``queries.get_state``, ``put_state`` and ``insert_state_once``: on a Connection or a Session)


def tickets_due_for_sweep(session: Session, now: datetime, limit: int = 1000) -> list[Ticket]:
    query = (
        select(Ticket)
        .where(Ticket.next_escalation_at.is_not(None), Ticket.next_escalation_at <= now)
        .order_by(Ticket.next_escalation_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def resolved_older_than(session: Session, cutoff: datetime) -> list[Ticket]:
    return list(session.scalars(
        select(Ticket).where(Ticket.status == "resolved", Ticket.resolved_at <= cutoff)
    ))
