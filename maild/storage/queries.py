"""Reads of the queue, the outbox and the state table in SQLAlchemy Core: what the read-only commands need.

``status``, ``tickets list|show`` and the reports read through these on a
Connection and never import the ORM (with the 16 mapped classes, ``import
sqlalchemy.orm`` and the mapping were most of such a command's start-up). Every
function also takes a Session (the daemon and the desk call the same ones inside
their transactions; ``Session.execute`` flushes pending objects first, as its
ORM queries do). Rows come back as SQLAlchemy ``Row`` objects, whose attributes
are the table's column names, so code written for a ``models.Ticket`` reads
one the same way. ``store`` re-exports what its callers used from there.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy import ColumnElement, Connection, Row, TextClause, and_, func, insert, or_, select, text, update

from maild.storage.db import SCHEMA_HEAD
from maild.storage.tables import OUTBOX_PENDING, customers, outbox, state, tickets
from maild.storage.tables import messages as message_rows

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Reader: TypeAlias = "Connection | Session"

OPEN_STATUSES = ("new", "open", "waiting")
# the outbox kinds of the consultants' notifications about a ticket (``desk.desk`` queues them,
# ``tickets show`` lists them)
NOTIFY_KINDS = ("notify_new", "notify_reply")
# maild's mail that goes to a consultant and nobody else: a reply that refers to one
# proves it comes from whoever reads that consultant's mailbox (desk.authority), so
# none of their Message-IDs may reach a customer
CONSULTANT_KINDS = frozenset({*NOTIFY_KINDS, "escalation", "digest", "command_error", "authority_notice",
                              "bounce_notice", "alert"})

# What every Message-ID maild makes begins with (``store.new_message_id``, the only maker of an outbox
# row's): a reference without it names no outbox row.
OWN_MESSAGE_ID_PREFIX = "maild."


def own_message_ids(message_ids: Iterable[str]) -> list[str]:
    """Those of ``message_ids`` that can be maild's own, in their order: all a lookup in the outbox
    needs to ask for. A batch's mail refers mostly to the customers' own Message-IDs; asked for
    with them, PostgreSQL read the whole outbox per batch while its statistics were missing (a
    new database's first minute; bench/README "PostgreSQL's statements, tenth session")."""
    return [m for m in message_ids if m and m.startswith(OWN_MESSAGE_ID_PREFIX)]


# Row ids are PostgreSQL INTEGER (SQLite's hold 64 bits): a larger number from the
# command line must be a usage error, not an OverflowError or DataError in the driver.
MAX_ROW_ID = 2**31 - 1


def dialect_name(db: Reader) -> str:
    return db.dialect.name if isinstance(db, Connection) else db.get_bind().dialect.name


def ticket_ref(prefix: str, number: int) -> str:
    return f"{prefix}-{number}"


def parse_ticket_ref(ref: str, prefix: str) -> int | None:
    """The ticket number in ``SUP-12``, ``[SUP-12]`` or ``12``; None when it cannot name a ticket."""
    text = ref.strip().upper().strip("[]")
    if text.startswith(prefix.upper() + "-"):
        text = text[len(prefix) + 1 :]
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ROW_ID else None


# ---------------------------------------------------------------- state and outbox

def get_state(db: Reader, key: str) -> str | None:
    value = db.scalar(select(state.c.value).where(state.c.key == key))
    return None if value is None else str(value)


# the state key of the customers file's digest at its last mirror into the database (``store.sync_customers``)
CUSTOMERS_SYNCED = "customers_synced"
# bump when ``store.sync_customers`` writes the rows of the same customers differently
CUSTOMERS_SYNC_VERSION = 1


def customers_digest(customers: Sequence[Any]) -> str:
    """A digest of the customers and contracts a file yielded (their frozen dataclasses' repr: every
    field, in order), of the schema they are written to and of the way they are written: equal
    digests mean a sync would write the rows as they are."""
    text = f"{CUSTOMERS_SYNC_VERSION}\0{SCHEMA_HEAD}\0{customers!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def customers_unchanged(db: Reader, customers: Sequence[Any]) -> bool:
    """Whether the database holds these customers as ``store.sync_customers`` last wrote them (the
    daemon's start skips the sync then: it wrote every customer and contract row through the ORM)."""
    return get_state(db, CUSTOMERS_SYNCED) == customers_digest(customers)


def put_state(db: Connection, key: str, value: str, now: datetime) -> None:
    """The one write of a state row, on a Connection (an ORM caller passes ``session.connection()``):
    the daemon's idle cycle records its fetch without loading the ORM."""
    found = db.execute(update(state).where(state.c.key == key).values(value=value, updated_at=now))
    if not found.rowcount:
        db.execute(insert(state).values(key=key, value=value, updated_at=now))


def insert_state_once(db: Reader, key: str, value: str, now: datetime) -> None:
    """Store ``value`` under ``key`` unless a value is there already (another process may race
    us to it: the first one wins). In the caller's transaction, on a Connection or a Session."""
    if dialect_name(db) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        db.execute(pg_insert(state).values(key=key, value=value, updated_at=now).on_conflict_do_nothing())
    else:
        db.execute(insert(state).prefix_with("OR IGNORE").values(key=key, value=value, updated_at=now))


# the pending rows' own condition, written out: what lets both planners read them through the partial index
# ix_outbox_pending_order (the only index of the outbox that holds pending-ness since 0017). A question that
# stops at its first rows asks them in the index's order (created_at, id): the sent rows lie before the pending
# ones in the table, which a LIMIT over a scan would read first
PENDING: TextClause = text(OUTBOX_PENDING)


def outbox_due(db: Reader, now: datetime) -> bool:
    """Whether any mail is due to be sent (the outbox's claim, on its index): the daemon loads the
    outbox, its SMTP client and the templates only then."""
    query = (select(outbox.c.id).where(PENDING, outbox.c.next_attempt_at <= now)
             .order_by(outbox.c.created_at, outbox.c.id).limit(1))
    return db.scalar(query) is not None


def outbox_stats(db: Reader, now: datetime) -> tuple[int, datetime | None]:
    depth, oldest = db.execute(select(func.count(), func.min(outbox.c.created_at)).where(PENDING)).one()
    return int(depth or 0), oldest


# ---------------------------------------------------------------- the queue

class QueuePlace(Protocol):
    """What places a ticket in the queue: a ``models.Ticket`` or a row of ``tables.tickets``."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def tier(self) -> int: ...
    @property
    def priority(self) -> str: ...
    @property
    def reaction_due(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...


T = tickets.c


def queue_order() -> tuple[Any, ...]:
    return (T.tier, T.priority, T.reaction_due.is_(None), T.reaction_due, T.created_at, T.id)


@dataclass(frozen=True)
class TicketFilter:
    """What ``tickets list`` narrows the queue to; every field set must hold (and).

    ``assigned`` is a consultant's address, or ``"none"`` for tickets nobody has;
    ``tier`` is the tier's number (``prioritise.TIER_NAMES``); ``overdue_at``:
    the reaction deadline passed before this moment without a first response.
    """

    customer: str | None = None
    assigned: str | None = None
    tier: int | None = None
    overdue_at: datetime | None = None

    def conditions(self) -> list[Any]:
        """SQL conditions on the tickets table, to add to any ticket query (a page, a count, the whole list)."""
        found: list[Any] = []
        if self.customer is not None:
            found.append(T.customer_id == self.customer)
        if self.assigned is not None:
            found.append(T.assigned_to.is_(None) if self.assigned == "none"
                         else func.lower(T.assigned_to) == self.assigned.lower())
        if self.tier is not None:
            found.append(T.tier == self.tier)
        if self.overdue_at is not None:
            found += [T.reaction_due.is_not(None), T.reaction_due < self.overdue_at, T.first_response_at.is_(None)]
        return found


def queue_before(ticket: QueuePlace) -> ColumnElement[bool]:
    """Tickets ahead of ``ticket`` in queue order (``queue_order``), as a condition.

    Written out term by term because the order puts a missing deadline last,
    which a row-value comparison with NULL cannot express.
    """
    rest = or_(T.created_at < ticket.created_at, and_(T.created_at == ticket.created_at, T.id < ticket.id))
    if ticket.reaction_due is None:
        due = or_(T.reaction_due.is_not(None), and_(T.reaction_due.is_(None), rest))
    else:
        due = or_(T.reaction_due < ticket.reaction_due, and_(T.reaction_due == ticket.reaction_due, rest))
    return or_(T.tier < ticket.tier,
               and_(T.tier == ticket.tier,
                    or_(T.priority < ticket.priority, and_(T.priority == ticket.priority, due))))


def queue_after(ticket: QueuePlace) -> ColumnElement[bool]:
    """Tickets behind ``ticket`` in queue order: the next page after it (``tickets list --after``)."""
    rest = or_(T.created_at > ticket.created_at, and_(T.created_at == ticket.created_at, T.id > ticket.id))
    if ticket.reaction_due is None:
        due = and_(T.reaction_due.is_(None), rest)
    else:
        due = or_(T.reaction_due.is_(None), T.reaction_due > ticket.reaction_due,
                  and_(T.reaction_due == ticket.reaction_due, rest))
    return or_(T.tier > ticket.tier,
               and_(T.tier == ticket.tier,
                    or_(T.priority > ticket.priority, and_(T.priority == ticket.priority, due))))


def queue_rank(db: Reader, ticket: QueuePlace) -> int | None:
    """The ticket's 1-based place in the queue, counted in the database; None when it is not open."""
    if ticket.status not in OPEN_STATUSES:
        return None
    ahead = db.scalar(select(func.count()).select_from(tickets)
                      .where(T.status.in_(OPEN_STATUSES), queue_before(ticket)))
    return int(ahead or 0) + 1


def find_ticket(db: Reader, number: int) -> Row[Any] | None:
    """The ticket's row (every column), or None."""
    return db.execute(select(tickets).where(T.id == number)).first()


def customer_known(db: Reader, customer_id: str) -> bool:
    """Whether the customers file ever named this id (an ended or erased customer still is one)."""
    return db.execute(select(customers.c.id).where(customers.c.id == customer_id)).first() is not None


def find_ticket_by_ref(db: Reader, ref: str, prefix: str) -> Row[Any] | None:
    number = parse_ticket_ref(ref, prefix)
    return None if number is None else find_ticket(db, number)


def message_counts(db: Reader, ticket_ids: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    m = message_rows.c
    for i in range(0, len(ticket_ids), 500):
        rows = db.execute(
            select(m.ticket_id, func.count()).where(m.ticket_id.in_(ticket_ids[i : i + 500])).group_by(m.ticket_id)
        )
        counts.update({int(t): int(c) for t, c in rows if t is not None})
    return counts


def listed(status: str | None, where: TicketFilter | None) -> list[Any]:
    """The conditions of a ``tickets list``: open tickets unless ``status`` says which ("all": every one)."""
    found: list[Any] = []
    if status is None:
        found.append(T.status.in_(OPEN_STATUSES))
    elif status != "all":
        found.append(T.status == status)
    if where is not None:
        found += where.conditions()
    return found


def count_tickets(db: Reader, status: str | None = None, where: TicketFilter | None = None) -> int:
    return int(db.scalar(select(func.count()).select_from(tickets).where(*listed(status, where))) or 0)


@dataclass(frozen=True)
class ListedTicket:
    ticket: Row[Any]  # a row of tables.tickets
    rank: int | None
    messages: int


def stream_tickets(
    db: Reader, status: str | None = None, where: TicketFilter | None = None, *,
    after: QueuePlace | None = None, limit: int | None = None, chunk: int = 500,
) -> Iterator[list[ListedTicket]]:
    """The list in queue order, ``chunk`` tickets at a time, with queue ranks and message counts.

    Memory stays that of one chunk however long the queue: rows are streamed
    (``yield_per``) and only one chunk is held. A rank is the place among all
    open tickets, so a filtered list walks the open queue alongside (one more
    ordered read of ids only); the plain open list counts its own rows.
    ``after`` starts behind that ticket (a cursor).
    """
    conditions = listed(status, where)
    if after is not None:
        conditions.append(queue_after(after))
    query = select(tickets).where(*conditions).order_by(*queue_order())
    if limit is not None:
        query = query.limit(limit)
    ahead = 0
    if after is not None:
        ahead = int(db.scalar(select(func.count()).select_from(tickets).where(
            T.status.in_(OPEN_STATUSES), or_(queue_before(after), T.id == after.id))) or 0)
    plain = status is None and (where is None or not where.conditions())
    open_ids: Iterator[int] | None = None
    if not plain:
        open_query = select(T.id).where(T.status.in_(OPEN_STATUSES)).order_by(*queue_order())
        if after is not None:
            open_query = open_query.where(queue_after(after))
        open_ids = iter(db.scalars(open_query, execution_options={"yield_per": 5000}))
    position = ahead
    for part in db.execute(query, execution_options={"yield_per": chunk}).partitions():
        counts = message_counts(db, [t.id for t in part])
        out: list[ListedTicket] = []
        for ticket in part:
            rank: int | None = None
            if ticket.status in OPEN_STATUSES:
                if open_ids is None:
                    position += 1
                else:
                    for tid in open_ids:
                        position += 1
                        if tid == ticket.id:
                            break
                rank = position
            out.append(ListedTicket(ticket, rank, counts.get(ticket.id, 0)))
        yield out
