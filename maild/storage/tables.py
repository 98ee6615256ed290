"""The database schema as SQLAlchemy Core tables: tickets, their messages, the outbox, the ledger.

The one description of the schema: ``models`` maps its classes onto these
tables (the ORM, for the desk and the daemon), Alembic's migrations are
compared with this ``metadata`` (``tests/storage/test_migrations.py``), and a
command that only reads (``status``, ``tickets list``, the reports) queries
these tables on a Connection without importing the ORM, which with the 16
mapped classes is most of such a command's start-up (``bench/startup.py``).

All times are stored as naive UTC (``UtcDateTime`` converts at the boundary), so
SQLite and PostgreSQL compare them the same way. The raw mail and attachments
are not here: they live under the storage path (``blobs``); ``pack_index`` says
where in its packs each one is.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from maild.rules.kinds import FALLBACK_KIND

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
# The messages whose Message-ID threading looks up in ``messages`` (ix_messages_message_id_lookup, 0010):
# maild's own mail (outbound; its Message-IDs begin with the ticket number, so new ones land next to each
# other) and an inbound mail that reused a Message-ID another stored mail has. Every other inbound mail is
# found through intake's dedupe key, the same text (``store.tickets_by_message_id``): indexing it here too
# cost a random leaf page per mail at a million mails. A query must carry this condition as it is written
# (in parentheses) for SQLite and PostgreSQL to use the index.
MESSAGE_ID_LOOKUP = "direction = 'out' OR reused_id"
# The messages whose raw mail sits in a pack at the place the row names (0011; ix_messages_raw_pack).
RAW_PLACED = "raw_pack IS NOT NULL"
# The closed tickets, by closing time (0013, ix_tickets_closed): retention's periods run from ``closed_at``.
CLOSED = "status = 'closed'"
# The messages whose raw mail is found by hash in pack_index (stored before 0011, or a row no batch placed): what
# keeps a pack_index row alive when retention or ``forget`` asks (0012, ix_messages_raw_by_hash). Mail stored since
# 0011 is placed, so ingest writes no entry into this index.
RAW_BY_HASH = "raw_pack IS NULL AND raw_sha256 IS NOT NULL"
# The mail still to send, in the order the outbox sends it (0014, ix_outbox_pending_order): a claim takes the oldest
# 200 due rows, which ix_outbox_due (status, next_attempt_at) could not give in (created_at, id) order, so each claim
# sorted every pending row. A row leaves the index when it is marked sent or failed. Every question about pending
# mail is asked through it, with this condition written out (a bound 'pending' proves nothing to either planner);
# 0017 dropped ix_outbox_due, whose entry for each sent row every sent mark wrote.
OUTBOX_PENDING = "status = 'pending'"
# The rows the acknowledgement limits count (ix_outbox_recent_automatic, 0018): a notification, an escalation, a
# digest have no rate key and are no limit's business, so they stay out of the index, and on PostgreSQL their sent
# mark writes one index entry fewer (a mark's new row version goes into every index whose condition it meets).
OUTBOX_RATE_KEYED = "rate_key IS NOT NULL"


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


metadata = MetaData(naming_convention=NAMING)


def _at(name: str, nullable: bool = False, index: bool | None = None) -> Column[datetime]:
    return Column(name, UtcDateTime(), nullable=nullable, index=index)


customers = Table(
    "customers", metadata,
    Column("id", String(100), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("language", String(8), nullable=False, default="pl"),
    Column("addresses", JSON, nullable=False, default=list),
    Column("domains", JSON, nullable=False, default=list),
    Column("billing_address", String(320)),
    Column("active", Boolean, nullable=False, default=True),
    _at("synced_at", nullable=True),
)

# A contract as last imported from the customers file. A contract removed from
# the file is ended (``removed_at``), never deleted, so its tickets and ledger
# keep their history.
contracts = Table(
    "contracts", metadata,
    Column("id", String(100), primary_key=True),
    Column("customer_id", String(100), ForeignKey("customers.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("start", Date, nullable=False),
    Column("end", Date),
    Column("terms", JSON, nullable=False, default=dict),
    _at("removed_at", nullable=True),
    _at("synced_at", nullable=True),
)

tickets = Table(
    "tickets", metadata,
    Column("id", Integer, primary_key=True),  # the number in the reference
    Column("subject", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, default="new", index=True),
    Column("requester", String(320), nullable=False, default=""),
    Column("requester_name", String(300), nullable=False, default=""),
    Column("language", String(8), nullable=False, default="pl"),
    Column("customer_id", String(100), ForeignKey("customers.id"), index=True),
    # not indexed (0011 dropped ix_tickets_contract_id): no statement reads tickets by contract, and each
    # new ticket wrote a leaf per contract per batch into it (~310 WAL pages per 2,000 mails at 1M)
    Column("contract_id", String(100), ForeignKey("contracts.id")),
    Column("contract_kind", String(16), nullable=False, default=FALLBACK_KIND),
    Column("verified", Boolean, nullable=False, default=False),
    Column("tier", Integer, nullable=False, default=3),
    Column("priority", String(2), nullable=False, default="P3"),
    Column("peak", String(64)),
    Column("reasons", JSON, nullable=False, default=list),
    Column("scope", String(32)),
    Column("assigned_to", String(320)),
    # When the current assignee got it: ties in automatic assignment go to whoever waited longest.
    _at("assigned_at", nullable=True),
    _at("created_at", index=True),
    _at("updated_at"),
    _at("reaction_due", nullable=True),
    _at("target_due", nullable=True),
    _at("first_response_at", nullable=True),
    _at("resolved_at", nullable=True),
    _at("closed_at", nullable=True),
    Column("escalation_level", Integer, nullable=False, default=0),
    _at("next_escalation_at", nullable=True, index=True),
    _at("breached_at", nullable=True),
    Column("linked_to", Integer, ForeignKey("tickets.id")),
    Column("participants", JSON, nullable=False, default=list),
    Index("ix_tickets_queue", "status", "tier", "priority", "reaction_due", "created_at"),
    # the open load per consultant (``Team.open_load``) is read from the index alone (0016)
    Index("ix_tickets_assignee", "assigned_to", "status", "contract_kind", "verified"),
    # each consultant's last assignment (the assignment's tie-break, ``Team.last_assigned``) as one index
    # seek, not a scan of every ticket they were ever given (0015)
    Index("ix_tickets_assigned_last", "assigned_to", "assigned_at"),
    # open tickets still waiting for a first response, by deadline (status, metrics);
    # PostgreSQL's condition is added by ``for_postgresql``
    Index("ix_tickets_awaiting_reaction", "reaction_due", sqlite_where=text(AWAITING_REACTION)),
    # retention's closed tickets by closing time (0013); a ticket enters when it closes, at the end of the range.
    # ``status`` leads so that SQLite, seeing ``status = 'closed'``, takes this index over ix_tickets_status
    Index("ix_tickets_closed", "status", "closed_at", sqlite_where=text(CLOSED)),
)

# One mail on a ticket, inbound or outbound.
messages = Table(
    "messages", metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), index=True),
    Column("message_id", String(998)),
    Column("direction", String(3), nullable=False),  # in | out
    Column("role", String(16), nullable=False),  # customer | consultant | system
    Column("kind", String(16), nullable=False, default="human"),  # human | autoreply | bounce | ...
    Column("from_addr", String(320), nullable=False, default=""),
    Column("from_name", String(300), nullable=False, default=""),
    Column("to_addrs", JSON, nullable=False, default=list),
    Column("cc_addrs", JSON, nullable=False, default=list),
    Column("subject", Text, nullable=False, default=""),
    _at("date"),
    Column("text_new", Text, nullable=False, default=""),
    Column("text_quoted", Text, nullable=False, default=""),
    Column("raw_sha256", String(64)),
    Column("size", BigInteger, nullable=False, default=0),
    Column("internal", Boolean, nullable=False, default=False),
    Column("notes", JSON, nullable=False, default=list),
    # an inbound mail kept under ``dup:<sha256>`` because another stored mail has its Message-ID
    Column("reused_id", Boolean, nullable=False, default=False, server_default=false()),
    # Where the raw mail (``raw_sha256``) sits in the packs, for mail stored since 0011: found through
    # its message, not through pack_index's sha256 key, a random key per mail (a leaf page of a
    # million-row B-tree written per mail). NULL: the place is in pack_index (or a loose file).
    Column("raw_pack", String(40)),
    Column("raw_offset", BigInteger),
    Column("raw_length", BigInteger),
    # A consultant's inbound mail: whether the intake took it as an answer to the customer (relayed, or sent
    # to the customer directly: the ticket's first answer, the month report's answers); false for a note, a
    # mail of commands only, an auto-reply, an unproven mail, a ticket opened by a consultant. NULL: any other
    # row, and consultants' mail stored before 0019, which the report judges by its text as it always did.
    Column("answered", Boolean),
    Index("ix_messages_message_id_lookup", "message_id", sqlite_where=text(MESSAGE_ID_LOOKUP)),
    # a pack's raw mail, for compaction; appended in (pack, offset) order as mail arrives
    Index("ix_messages_raw_pack", "raw_pack", "raw_offset", sqlite_where=text(RAW_PLACED)),
    Index("ix_messages_raw_by_hash", "raw_sha256", sqlite_where=text(RAW_BY_HASH)),
)

attachments = Table(
    "attachments", metadata,
    Column("id", Integer, primary_key=True),
    Column("message_row_id", Integer, ForeignKey("messages.id"), nullable=False, index=True),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
)

# Where an attachment's bytes (and a raw mail's that no message row places: a
# discarded mail, mail stored before 0011) sit in the packs under the storage
# path, found by their sha256: an attachment is packed once per content. Written
# in the transaction that stores what became of the mail, so a row here always
# points at bytes already flushed to disk. Blobs stored before packs, and
# quarantined mail, are loose files with no row here.
pack_index = Table(
    "pack_index", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("pack", String(40), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("length", BigInteger, nullable=False),
    # a pack's blobs, for compaction (0012); an ingest appends to the newest pack, so its keys land together
    Index("ix_pack_index_pack", "pack", "offset"),
)

# What became of each mail read from the source: the exactly-once record.
# ``dedupe_key`` (Message-ID, else the raw bytes' hash) is unique, so reading a
# message twice, after a crash or a UIDVALIDITY reset, finds this row and
# changes nothing.
intake = Table(
    "intake", metadata,
    Column("id", Integer, primary_key=True),
    Column("dedupe_key", String(998), nullable=False, unique=True),
    # where the mail was read (``imap:UIDVALIDITY:UID``, ``maildir:NAME``): shown, never looked up (0008 dropped its index)
    Column("source_key", String(300), nullable=False),
    Column("disposition", String(16), nullable=False),  # ticket | reply | discard | quarantine | bounce
    Column("reason", Text, nullable=False, default=""),
    Column("ticket_id", Integer, ForeignKey("tickets.id")),
    Column("message_row_id", Integer, ForeignKey("messages.id")),
    _at("arrived_at"),
    _at("processed_at"),
)

# Failed processing attempts of one mail, counted across restarts.
failures = Table(
    "failures", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(998), nullable=False, unique=True),  # dedupe key, or raw hash if unparsable
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
    _at("updated_at"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(998), nullable=False, index=True),
    Column("source_key", String(300), nullable=False),
    Column("raw_sha256", String(64), nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("from_addr", String(320), nullable=False, default=""),
    Column("reason", Text, nullable=False),
    Column("traceback", Text, nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=1),
    _at("arrived_at", nullable=True),
    _at("created_at"),
    Column("status", String(16), nullable=False, default="held"),  # held | retried
    _at("retried_at", nullable=True),
)

# A mail to send, written in the same transaction as what caused it. The body is
# rendered when sending (from ``context``), the Message-ID is fixed at creation
# so that replies can thread before the mail has left.
outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True),
    Column("dedupe_key", String(400), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), index=True),
    Column("message_id", String(400), nullable=False, index=True),
    Column("recipients", JSON, nullable=False, default=list),
    Column("rate_key", String(320)),
    Column("automatic", Boolean, nullable=False, default=True),
    Column("template", String(100), nullable=False),
    Column("language", String(8), nullable=False, default="pl"),
    Column("context", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default="pending"),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    _at("next_attempt_at"),
    Column("last_error", Text, nullable=False, default=""),
    _at("created_at"),
    _at("sent_at", nullable=True),
    # the last hour's automatic mail per sender and per domain, from the index alone (migration 0007; the
    # rate limits). 0009 dropped ix_outbox_rate (rate_key, created_at): a random key per mail at 1M mails
    Index("ix_outbox_recent_automatic", "created_at", "automatic", "rate_key", sqlite_where=text(OUTBOX_RATE_KEYED)),
    # the claim's order among the pending rows (0014); PostgreSQL's condition is added by ``for_postgresql``
    Index("ix_outbox_pending_order", "created_at", "id", sqlite_where=text(OUTBOX_PENDING)),
)

# The ticket's history: status changes, priority, escalations, commands.
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False, index=True),
    _at("at"),
    Column("kind", String(32), nullable=False),
    Column("actor", String(320), nullable=False, default="maild"),
    Column("detail", JSON, nullable=False, default=dict),
    # the team's 30-day handling rate reads one kind of event in a window, not every event ever written
    Index("ix_events_kind_at", "kind", "at"),
)

# Time booked against a contract; never edited, corrected by reversal.
ledger = Table(
    "ledger", metadata,
    Column("id", Integer, primary_key=True),
    Column("contract_id", String(100), ForeignKey("contracts.id"), index=True),
    Column("customer_id", String(100), index=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), index=True),
    Column("minutes", Integer, nullable=False),
    Column("overage", Boolean, nullable=False, default=False),
    _at("booked_at", index=True),
    Column("by", String(320), nullable=False),
    Column("scope", String(32)),
    Column("note", Text, nullable=False, default=""),
    Column("source_message_id", String(998)),
    Column("reverses", Integer, ForeignKey("ledger.id"), unique=True),
    # a package's draws this month (the balance snapshot holds the months before)
    Index("ix_ledger_contract_booked", "contract_id", "booked_at"),
)

# Small facts the daemon keeps between runs (last fetch, alert state).
state = Table(
    "state", metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False, default=""),
    _at("updated_at"),
)

# A consultant's absence recorded at run time (``maild consultants away``,
# ``#away``). Planned absences live in the config file; both count. ``until``
# is inclusive.
absences = Table(
    "absences", metadata,
    Column("id", Integer, primary_key=True),
    Column("consultant", String(320), nullable=False, index=True),
    Column("start", Date, nullable=False),
    Column("until", Date, nullable=False),
    Column("note", Text, nullable=False, default=""),
    _at("created_at"),
    Column("created_by", String(320), nullable=False, default=""),
)

escalations = Table(
    "escalations", metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False, index=True),
    Column("level", Integer, nullable=False),
    _at("sent_at"),
    Column("skipped", JSON, nullable=False, default=list),
    Column("breach", Boolean, nullable=False, default=False),
    UniqueConstraint("ticket_id", "level"),
)

# What one contract's statement for ``month`` needs from every month before it.
# ``drawn_minutes``: the minutes drawn from a package before the month (its
# balance at the month's start); ``state``: an sla contract's carried lots
# (``billing.ledger.SlaState``). ``terms`` fingerprints the contract terms and
# time zone it was computed under: a changed customers file makes it stale.
# Booking into a month deletes the contract's snapshots after it, in the
# booking's transaction; a missing one is computed again.
balance_snapshots = Table(
    "balance_snapshots", metadata,
    Column("contract_id", String(100), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM, business time zone
    Column("terms", String(64), nullable=False),
    Column("drawn_minutes", Integer, nullable=False, default=0),
    Column("state", JSON, nullable=False, default=dict),
    _at("computed_at"),
)


def for_postgresql() -> None:
    """Give the schema its PostgreSQL-only options; called when a PostgreSQL engine is made.

    Written into ``Index(...)`` as ``postgresql_where``, the keyword makes
    SQLAlchemy import its whole PostgreSQL dialect (and asyncio, for asyncpg)
    just to check that the keyword exists: 25 ms of every command on SQLite,
    a tenth of ``status``'s start-up. Setting the option afterwards is what that
    keyword does once checked. Idempotent.
    """
    for index in tickets.indexes:
        if index.name == "ix_tickets_awaiting_reaction":
            index.dialect_options["postgresql"]["where"] = text(AWAITING_REACTION)
        elif index.name == "ix_tickets_closed":
            index.dialect_options["postgresql"]["where"] = text(CLOSED)
    for index in messages.indexes:
        if index.name == "ix_messages_message_id_lookup":
            index.dialect_options["postgresql"]["where"] = text(MESSAGE_ID_LOOKUP)
        elif index.name == "ix_messages_raw_pack":
            index.dialect_options["postgresql"]["where"] = text(RAW_PLACED)
        elif index.name == "ix_messages_raw_by_hash":
            index.dialect_options["postgresql"]["where"] = text(RAW_BY_HASH)
    for index in outbox.indexes:
        if index.name == "ix_outbox_pending_order":
            index.dialect_options["postgresql"]["where"] = text(OUTBOX_PENDING)
        elif index.name == "ix_outbox_recent_automatic":
            index.dialect_options["postgresql"]["where"] = text(OUTBOX_RATE_KEYED)
