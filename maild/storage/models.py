"""The database schema: tickets, their messages, the outbox, the ledger.

All times are stored as naive UTC (``UtcDateTime`` converts at the boundary), so
SQLite and PostgreSQL compare them the same way. The raw mail and attachments
are not here: they live under the storage path (``blobs``); ``pack_index`` says
where in its packs each one is.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The condition of the partial index ix_tickets_awaiting_reaction; a query must
# repeat it for the database to use that index (``health.read_health``).
AWAITING_REACTION = "status IN ('new', 'open', 'waiting') AND first_response_at IS NULL AND reaction_due IS NOT NULL"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given where UTC is required")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class CustomerRow(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    language: Mapped[str] = mapped_column(String(8), default="pl")
    addresses: Mapped[list[Any]] = mapped_column(default=list)
    domains: Mapped[list[Any]] = mapped_column(default=list)
    billing_address: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    synced_at: Mapped[datetime | None]


class ContractRow(Base):
    """A contract as last imported from the customers file.

    A contract removed from the file is ended (``removed_at``), never deleted,
    so its tickets and ledger keep their history.
    """

    __tablename__ = "contracts"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date | None] = mapped_column(Date)
    terms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    removed_at: Mapped[datetime | None]
    synced_at: Mapped[datetime | None]


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # the number in the reference
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    requester: Mapped[str] = mapped_column(String(320), default="")
    requester_name: Mapped[str] = mapped_column(String(300), default="")
    language: Mapped[str] = mapped_column(String(8), default="pl")
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"), index=True)
    contract_id: Mapped[str | None] = mapped_column(ForeignKey("contracts.id"), index=True)
    contract_kind: Mapped[str] = mapped_column(String(16), default="occasional")
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    tier: Mapped[int] = mapped_column(Integer, default=3)
    priority: Mapped[str] = mapped_column(String(2), default="P3")
    peak: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    scope: Mapped[str | None] = mapped_column(String(32))
    assigned_to: Mapped[str | None] = mapped_column(String(320))
    # When the current assignee got it: ties in automatic assignment go to whoever waited longest.
    assigned_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    reaction_due: Mapped[datetime | None]
    target_due: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    next_escalation_at: Mapped[datetime | None] = mapped_column(index=True)
    breached_at: Mapped[datetime | None]
    linked_to: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    participants: Mapped[list[Any]] = mapped_column(default=list)

    messages: Mapped[list[MessageRow]] = relationship(
        back_populates="ticket", order_by="MessageRow.id", lazy="raise_on_sql"
    )

    __table_args__ = (
        Index("ix_tickets_queue", "status", "tier", "priority", "reaction_due", "created_at"),
        Index("ix_tickets_assignee", "assigned_to", "status"),
        # open tickets still waiting for a first response, by deadline (status, metrics)
        Index("ix_tickets_awaiting_reaction", "reaction_due",
              sqlite_where=text(AWAITING_REACTION), postgresql_where=text(AWAITING_REACTION)),
    )


class MessageRow(Base):
    """One mail on a ticket, inbound or outbound."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    role: Mapped[str] = mapped_column(String(16))  # customer | consultant | system
    kind: Mapped[str] = mapped_column(String(16), default="human")  # human | autoreply | bounce | ...
    from_addr: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(300), default="")
    to_addrs: Mapped[list[Any]] = mapped_column(default=list)
    cc_addrs: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime]
    text_new: Mapped[str] = mapped_column(Text, default="")
    text_quoted: Mapped[str] = mapped_column(Text, default="")
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[list[Any]] = mapped_column(default=list)

    ticket: Mapped[Ticket | None] = relationship(back_populates="messages")
    attachments: Mapped[list[AttachmentRow]] = relationship(lazy="raise_on_sql")


class AttachmentRow(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_row_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class PackIndex(Base):
    """Where a raw mail's or an attachment's bytes sit in the packs under the storage path.

    Written in the transaction that stores what became of the mail, so a row
    here always points at bytes already flushed to disk. Blobs stored before
    packs, and quarantined mail, are loose files with no row here.
    """

    __tablename__ = "pack_index"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack: Mapped[str] = mapped_column(String(40))
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)


class Intake(Base):
    """What became of each mail read from the source: the exactly-once record.

    ``dedupe_key`` (Message-ID, else the raw bytes' hash) is unique, so reading a
    message twice, after a crash or a UIDVALIDITY reset, finds this row and
    changes nothing.
    """

    __tablename__ = "intake"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(998), unique=True)
    source_key: Mapped[str] = mapped_column(String(300), index=True)
    disposition: Mapped[str] = mapped_column(String(16))  # ticket | reply | discard | quarantine | bounce
    reason: Mapped[str] = mapped_column(Text, default="")
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    arrived_at: Mapped[datetime]
    processed_at: Mapped[datetime]

    message_row: Mapped[MessageRow | None] = relationship(lazy="raise_on_sql")
    # Relationships (never loaded) that tell the unit of work to insert a batch's
    # tickets before the rows that refer to them.
    ticket: Mapped[Ticket | None] = relationship(lazy="raise_on_sql")


class Failure(Base):
    """Failed processing attempts of one mail, counted across restarts."""

    __tablename__ = "failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(998), unique=True)  # dedupe key, or raw hash if unparsable
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime]


class QuarantineRow(Base):
    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(998), index=True)
    source_key: Mapped[str] = mapped_column(String(300))
    raw_sha256: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text, default="")
    from_addr: Mapped[str] = mapped_column(String(320), default="")
    reason: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    arrived_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="held")  # held | retried
    retried_at: Mapped[datetime | None]


class OutboxRow(Base):
    """A mail to send, written in the same transaction as what caused it.

    The body is rendered when sending (from ``context``), the Message-ID is
    fixed at creation so that replies can thread before the mail has left.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(400), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(400), index=True)
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    rate_key: Mapped[str | None] = mapped_column(String(320))
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    template: Mapped[str] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(8), default="pl")
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    ticket: Mapped[Ticket | None] = relationship(lazy="raise_on_sql")

    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_rate", "rate_key", "created_at"),
        Index("ix_outbox_created_at", "created_at"),  # the last hour's automatic mail per domain
    )


class Event(Base):
    """The ticket's history: status changes, priority, escalations, commands."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(320), default="maild")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    ticket: Mapped[Ticket] = relationship(lazy="raise_on_sql")

    # the team's 30-day handling rate reads one kind of event in a window, not every event ever written
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)


class LedgerRow(Base):
    """Time booked against a contract; never edited, corrected by reversal."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[str | None] = mapped_column(ForeignKey("contracts.id"), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(100), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    minutes: Mapped[int] = mapped_column(Integer)
    overage: Mapped[bool] = mapped_column(Boolean, default=False)
    booked_at: Mapped[datetime] = mapped_column(index=True)
    by: Mapped[str] = mapped_column(String(320))
    scope: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    source_message_id: Mapped[str | None] = mapped_column(String(998))
    reverses: Mapped[int | None] = mapped_column(ForeignKey("ledger.id"), unique=True)

    ticket: Mapped[Ticket | None] = relationship(lazy="raise_on_sql")

    # a package's draws this month (the balance snapshot holds the months before)
    __table_args__ = (Index("ix_ledger_contract_booked", "contract_id", "booked_at"),)


class StateRow(Base):
    """Small facts the daemon keeps between runs (last fetch, alert state)."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime]


class AbsenceRow(Base):
    """A consultant's absence recorded at run time (``maild consultants away``, ``#away``).

    Planned absences live in the config file; both count. ``until`` is inclusive.
    """

    __tablename__ = "absences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consultant: Mapped[str] = mapped_column(String(320), index=True)
    start: Mapped[date] = mapped_column(Date)
    until: Mapped[date] = mapped_column(Date)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(320), default="")


class Escalation(Base):
    __tablename__ = "escalations"
    __table_args__ = (UniqueConstraint("ticket_id", "level"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    level: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime]
    skipped: Mapped[list[Any]] = mapped_column(default=list)
    breach: Mapped[bool] = mapped_column(Boolean, default=False)

    ticket: Mapped[Ticket] = relationship(lazy="raise_on_sql")


class BalanceSnapshot(Base):
    """What one contract's statement for ``month`` needs from every month before it.

    ``drawn_minutes``: the minutes drawn from a package before the month (its
    balance at the month's start); ``state``: an sla contract's carried lots
    (``billing.ledger.SlaState``). ``terms`` fingerprints the contract terms
    and time zone it was computed under: a changed customers file makes it
    stale. Booking into a month deletes the contract's snapshots after it,
    in the booking's transaction; a missing one is computed again.
    """

    __tablename__ = "balance_snapshots"

    contract_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM, business time zone
    terms: Mapped[str] = mapped_column(String(64))
    drawn_minutes: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    computed_at: Mapped[datetime]
