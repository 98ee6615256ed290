"""The ORM classes of the schema in ``tables``: what the desk and the daemon change tickets through.

Each class maps one table of ``tables`` (declarative with an imperative table:
``__table__``), so the schema is written once and a command that only reads
can query ``tables`` without importing the ORM; the columns' ``Mapped``
annotations say the attributes' types to mypy and must match the columns. They
sit under ``TYPE_CHECKING``: the mapper takes the columns from ``__table__``, and
scanning ~170 annotations at import was a fifth of this module's import. The
relationships are never loaded implicitly (``raise_on_sql``); they tell the unit
of work the order of inserts.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from maild.storage import tables
from maild.storage.tables import AWAITING_REACTION, NAMING, UtcDateTime

__all__ = ["AWAITING_REACTION", "NAMING", "UtcDateTime"]


class Base(DeclarativeBase):
    metadata = tables.metadata


class CustomerRow(Base):
    __table__ = tables.customers

    if TYPE_CHECKING:
        id: Mapped[str]
        name: Mapped[str]
        language: Mapped[str]
        addresses: Mapped[list[Any]]
        domains: Mapped[list[Any]]
        billing_address: Mapped[str | None]
        active: Mapped[bool]
        synced_at: Mapped[datetime | None]


class ContractRow(Base):
    """A contract as last imported from the customers file.

    A contract removed from the file is ended (``removed_at``), never deleted,
    so its tickets and ledger keep their history.
    """

    __table__ = tables.contracts

    if TYPE_CHECKING:
        id: Mapped[str]
        customer_id: Mapped[str]
        kind: Mapped[str]
        start: Mapped[date]
        end: Mapped[date | None]
        terms: Mapped[dict[str, Any]]
        removed_at: Mapped[datetime | None]
        synced_at: Mapped[datetime | None]


class Ticket(Base):
    __table__ = tables.tickets

    if TYPE_CHECKING:
        id: Mapped[int]
        subject: Mapped[str]
        status: Mapped[str]
        requester: Mapped[str]
        requester_name: Mapped[str]
        language: Mapped[str]
        customer_id: Mapped[str | None]
        contract_id: Mapped[str | None]
        contract_kind: Mapped[str]
        verified: Mapped[bool]
        tier: Mapped[int]
        priority: Mapped[str]
        peak: Mapped[str | None]
        reasons: Mapped[list[Any]]
        scope: Mapped[str | None]
        assigned_to: Mapped[str | None]
        # When the current assignee got it: ties in automatic assignment go to whoever waited longest.
        assigned_at: Mapped[datetime | None]
        created_at: Mapped[datetime]
        updated_at: Mapped[datetime]
        reaction_due: Mapped[datetime | None]
        target_due: Mapped[datetime | None]
        first_response_at: Mapped[datetime | None]
        resolved_at: Mapped[datetime | None]
        closed_at: Mapped[datetime | None]
        escalation_level: Mapped[int]
        next_escalation_at: Mapped[datetime | None]
        breached_at: Mapped[datetime | None]
        linked_to: Mapped[int | None]
        participants: Mapped[list[Any]]

    messages: Mapped[list[MessageRow]] = relationship(
        back_populates="ticket", order_by="MessageRow.id", lazy="raise_on_sql"
    )


class MessageRow(Base):
    """One mail on a ticket, inbound or outbound."""

    __table__ = tables.messages

    if TYPE_CHECKING:
        id: Mapped[int]
        ticket_id: Mapped[int | None]
        message_id: Mapped[str | None]
        direction: Mapped[str]
        role: Mapped[str]
        kind: Mapped[str]
        from_addr: Mapped[str]
        from_name: Mapped[str]
        to_addrs: Mapped[list[Any]]
        cc_addrs: Mapped[list[Any]]
        subject: Mapped[str]
        date: Mapped[datetime]
        text_new: Mapped[str]
        text_quoted: Mapped[str]
        raw_sha256: Mapped[str | None]
        size: Mapped[int]
        internal: Mapped[bool]
        notes: Mapped[list[Any]]
        reused_id: Mapped[bool]
        raw_pack: Mapped[str | None]
        raw_offset: Mapped[int | None]
        raw_length: Mapped[int | None]
        answered: Mapped[bool | None]

    ticket: Mapped[Ticket | None] = relationship(back_populates="messages")
    attachments: Mapped[list[AttachmentRow]] = relationship(lazy="raise_on_sql")


class AttachmentRow(Base):
    __table__ = tables.attachments

    if TYPE_CHECKING:
        id: Mapped[int]
        message_row_id: Mapped[int]
        filename: Mapped[str]
        content_type: Mapped[str]
        size: Mapped[int]
        sha256: Mapped[str]


class PackIndex(Base):
    """Where a raw mail's or an attachment's bytes sit in the packs under the storage path.

    Written in the transaction that stores what became of the mail, so a row
    here always points at bytes already flushed to disk. Blobs stored before
    packs, and quarantined mail, are loose files with no row here.
    """

    __table__ = tables.pack_index

    if TYPE_CHECKING:
        sha256: Mapped[str]
        pack: Mapped[str]
        offset: Mapped[int]
        length: Mapped[int]


class Intake(Base):
    """What became of each mail read from the source: the exactly-once record.

    ``dedupe_key`` (Message-ID, else the raw bytes' hash) is unique, so reading a
    message twice, after a crash or a UIDVALIDITY reset, finds this row and
    changes nothing.
    """

    __table__ = tables.intake

    if TYPE_CHECKING:
        id: Mapped[int]
        dedupe_key: Mapped[str]
        source_key: Mapped[str]
        disposition: Mapped[str]
        reason: Mapped[str]
        ticket_id: Mapped[int | None]
        message_row_id: Mapped[int | None]
        arrived_at: Mapped[datetime]
        processed_at: Mapped[datetime]

    message_row: Mapped[MessageRow | None] = relationship(lazy="raise_on_sql")
    # Relationships (never loaded) that tell the unit of work to insert a batch's
    # tickets before the rows that refer to them.
    ticket: Mapped[Ticket | None] = relationship(lazy="raise_on_sql")


class Failure(Base):
    """Failed processing attempts of one mail, counted across restarts."""

    __table__ = tables.failures

    if TYPE_CHECKING:
        id: Mapped[int]
        key: Mapped[str]
        attempts: Mapped[int]
        last_error: Mapped[str]
        updated_at: Mapped[datetime]


class QuarantineRow(Base):
    __table__ = tables.quarantine

    if TYPE_CHECKING:
        id: Mapped[int]
        key: Mapped[str]
        source_key: Mapped[str]
        raw_sha256: Mapped[str]
        subject: Mapped[str]
        from_addr: Mapped[str]
        reason: Mapped[str]
        traceback: Mapped[str]
        attempts: Mapped[int]
        arrived_at: Mapped[datetime | None]
        created_at: Mapped[datetime]
        status: Mapped[str]
        retried_at: Mapped[datetime | None]


class OutboxRow(Base):
    """A mail to send, written in the same transaction as what caused it.

    The body is rendered when sending (from ``context``), the Message-ID is
    fixed at creation so that replies can thread before the mail has left.
    """

    __table__ = tables.outbox

    if TYPE_CHECKING:
        id: Mapped[int]
        dedupe_key: Mapped[str]
        kind: Mapped[str]
        ticket_id: Mapped[int | None]
        message_id: Mapped[str]
        recipients: Mapped[list[Any]]
        rate_key: Mapped[str | None]
        automatic: Mapped[bool]
        template: Mapped[str]
        language: Mapped[str]
        context: Mapped[dict[str, Any]]
        status: Mapped[str]
        attempts: Mapped[int]
        next_attempt_at: Mapped[datetime]
        last_error: Mapped[str]
        created_at: Mapped[datetime]
        sent_at: Mapped[datetime | None]

    ticket: Mapped[Ticket | None] = relationship(lazy="raise_on_sql")


class Event(Base):
    """The ticket's history: status changes, priority, escalations, commands."""

    __table__ = tables.events

    if TYPE_CHECKING:
        id: Mapped[int]
        ticket_id: Mapped[int]
        at: Mapped[datetime]
        kind: Mapped[str]
        actor: Mapped[str]
        detail: Mapped[dict[str, Any]]

    ticket: Mapped[Ticket] = relationship(lazy="raise_on_sql")


class LedgerRow(Base):
    """Time booked against a contract; never edited, corrected by reversal."""

    __table__ = tables.ledger

    if TYPE_CHECKING:
        id: Mapped[int]
        contract_id: Mapped[str | None]
        customer_id: Mapped[str | None]
        ticket_id: Mapped[int | None]
        minutes: Mapped[int]
        overage: Mapped[bool]
        booked_at: Mapped[datetime]
        by: Mapped[str]
        scope: Mapped[str | None]
        note: Mapped[str]
        source_message_id: Mapped[str | None]
        reverses: Mapped[int | None]

    ticket: Mapped[Ticket | None] = relationship(lazy="raise_on_sql")


class StateRow(Base):
    """Small facts the daemon keeps between runs (last fetch, alert state)."""

    __table__ = tables.state

    if TYPE_CHECKING:
        key: Mapped[str]
        value: Mapped[str]
        updated_at: Mapped[datetime]


class AbsenceRow(Base):
    """A consultant's absence recorded at run time (``maild consultants away``, ``#away``).

    Planned absences live in the config file; both count. ``until`` is inclusive.
    """

    __table__ = tables.absences

    if TYPE_CHECKING:
        id: Mapped[int]
        consultant: Mapped[str]
        start: Mapped[date]
        until: Mapped[date]
        note: Mapped[str]
        created_at: Mapped[datetime]
        created_by: Mapped[str]


class Escalation(Base):
    __table__ = tables.escalations

    if TYPE_CHECKING:
        id: Mapped[int]
        ticket_id: Mapped[int]
        level: Mapped[int]
        sent_at: Mapped[datetime]
        skipped: Mapped[list[Any]]
        breach: Mapped[bool]

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

    __table__ = tables.balance_snapshots

    if TYPE_CHECKING:
        contract_id: Mapped[str]
        month: Mapped[str]
        terms: Mapped[str]
        drawn_minutes: Mapped[int]
        state: Mapped[dict[str, Any]]
        computed_at: Mapped[datetime]
