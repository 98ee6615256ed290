"""The ingest pipeline: raw mail in, tickets and outbox rows out, in one transaction per batch.

The stages (``parse -> screen -> thread -> resolve -> prioritise/SLA``) are pure
modules; this one orders them, persists their decisions through ``store`` and is
the one place where per-message outcomes are caught. A message that fails is
rolled back alone (a savepoint), counted, retried on the next cycle and
quarantined after ``MAX_ATTEMPTS``; the rest of the batch commits. Trouble that
is not the message's fault (disk full, database gone) aborts the batch, leaving
every message on the server for the next try.
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from maild.storage import store
from maild.storage.blobs import BlobMissing, BlobStore, PackedBlob, StorageError
from maild.desk.authority import Authority, check_authority
from maild.billing.hours import prepaid_left_minutes
from maild.desk.commands import (
    PRESENCE_COMMANDS,
    Applying,
    AwayCommand,
    BackCommand,
    Command,
    CommandError,
    CustomerCommand,
    ParsedCommands,
    help_lines,
    parse_commands,
)
from maild.config import Config, Consultant
from maild.desk.context import DeskContext
from maild.desk.desk import CONSULTANT_KINDS, TicketDesk
from maild.desk.notifications import (
    Event as NotifyEvent,
    NotifyAttachment,
    cut_at_marker,
    follow_up_recipients,
    new_ticket_recipients,
    note_recipients,
)
from maild.desk.notifier import Notifier
from maild.desk.participants import Joining, screen_participants
from maild.desk.team import TeamError
from maild.errors import MaildError
from maild.intake.lookup import DeskThreadLookup
from maild.rules.contracts import Resolution, resolve
from maild.rules.customers import DEFAULT_UNIT_MINUTES, Contract, Customer
from maild.rules.kinds import packages_of, rules_of
from maild.rules.reasons import scope_reason
from maild.rules.replies import says_something
from maild.rules.scope import guess_scope_as_written
from maild.rules.wording import NO_SUBJECT
from maild.intake.attempts import attempt_key as attempt_key
from maild.intake.facts import ReadingRules
from maild.intake.mailbox import FetchedMail
from maild.intake.message import InboundMessage, UnparsableMessage
from maild.intake.parsing import GaveUp, ParserCrash, parse_all, parse_one
from maild.storage.models import Failure, Intake, MessageRow, OutboxRow, QuarantineRow, Ticket
from maild.rules.prioritise import prioritise
from maild.intake.quoting import split_reply
from maild.intake.suspects import MAX_ATTEMPTS as MAX_ATTEMPTS
from maild.intake.screen import Screening, ScreenSettings, screen, sender_authenticated
from maild.intake.thread import ThreadDecision, ThreadSettings, clean_subject, decide_thread

log = logging.getLogger("maild.pipeline")
UTC = timezone.utc
# the dedupe key of a mail whose Message-ID another stored mail already has, before its raw bytes' sha256
SECOND_COPY = "dup:"


class Outcome(Exception):
    """Raised by a stage to end a message's journey; caught in ``_process_one`` only."""

    disposition = "discard"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Discard(Outcome):
    disposition = "discard"


class Quarantine(Outcome):
    disposition = "quarantine"

    def __init__(self, reason: str, attempts: int = 1) -> None:
        super().__init__(reason)
        self.attempts = attempts


class Duplicate(Outcome):
    disposition = "duplicate"


class _Isolate(Exception):
    """A message failed on the fast path: run the batch again, one savepoint per message."""


@dataclass
class _Batch:
    """What one batch knows beyond the database: lookups done once for the whole
    batch, and the rows it created that are not flushed yet."""

    session: Session
    isolated: bool
    counted: bool
    known: set[str]
    desk: TicketDesk
    lookup: DeskThreadLookup
    seen: set[str] = field(default_factory=set)
    first_copies: dict[str, InboundMessage] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)
    minutes_left: dict[str, int | None] = field(default_factory=dict)  # per contract, for notifications
    # the recipients of the outbox rows stored before the batch that its mail refers to, by Message-ID
    # (None: asked of the database per mail, as with a savepoint per message)
    stored_recipients: dict[str, list[list[str]]] | None = None
    customers: list[Customer] = field(default_factory=list)  # the senders' customers, for the balances


@dataclass
class BatchResult:
    done: list[FetchedMail] = field(default_factory=list)
    quarantined: list[FetchedMail] = field(default_factory=list)
    retry: list[FetchedMail] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, disposition: str) -> None:
        self.counts[disposition] = self.counts.get(disposition, 0) + 1


@dataclass
class Context(DeskContext):
    """What the stages need, built once per config/customers load: the desk's
    context plus the screening and threading settings."""

    screen: ScreenSettings
    thread: ThreadSettings
    reading: ReadingRules  # the words the parse worker found each mail's facts with

    @classmethod
    def build(cls, config: Config, customers: Sequence[Customer]) -> Context:
        support = config.support
        desk = DeskContext.for_config(config, customers)
        return cls(
            config=config, calendar=desk.calendar, customers=desk.customers, index=desk.index,
            screen=ScreenSettings(
                own_addresses=desk.support_addresses,
                instance_id=support.instance_id,
                max_age_for_autoreply=support.autoreply_max_age,
            ),
            thread=ThreadSettings(
                ticket_prefix=support.ticket_prefix,
                support_addresses=desk.support_addresses,
                reopen_window=timedelta(days=support.reopen_days),
            ),
            reading=ReadingRules.of(config),
        )


class UnknownCustomer(MaildError):
    """``#customer`` or ``maild tickets open`` named no customer of the customers file."""

    def __init__(self, who: str) -> None:
        super().__init__(f"no customer with the id or e-mail address {who!r} in the customers file")
        self.who = who


@dataclass(frozen=True)
class OnBehalf:
    """A ticket a consultant (or the operator) opens for a customer: a phone call, a conversation."""

    by: str | None  # the consultant, who becomes the assignee
    requester: str  # the customer's address the acknowledgement goes to ("" when the customer has none)
    requester_name: str
    resolution: Resolution
    body: str
    commands: tuple[Command, ...] = ()
    acknowledge: bool = True


_NEW_DECISION = ThreadDecision(ticket=None, rule="new", reopen=False, link_to=None, reasons=())


class Ingestor:
    def __init__(
        self,
        ctx: Context,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.blobs = blobs
        self.clock = clock
        self._batch: _Batch | None = None
        self._notifier: Notifier | None = None
        # `maild tickets open` requests, by the dedupe key of the mail that records them
        self._requests: dict[str, OnBehalf] = {}

    @property
    def notifier(self) -> Notifier:
        """Notifications for the current config (rebuilt after a reload, keeping the token secret)."""
        current = self._notifier
        if current is None or current.config is not self.ctx.config:
            current = self._notifier = Notifier(self.ctx.config, self.ctx.calendar.tz).adopt(current)
        return current

    @property
    def _active(self) -> _Batch:
        assert self._batch is not None, "only inside ingest_batch"
        return self._batch

    def ingest_batch(self, mails: Sequence[FetchedMail],
                     parsed: Sequence[InboundMessage | UnparsableMessage] | None = None,
                     counted: bool = False, prepare: Callable[[Session], None] | None = None) -> BatchResult:
        """Store a batch in one transaction; return what to move where on the source.

        ``counted``: an attempt of each mail was recorded before it was parsed
        (``attempts.begin_attempts``). The batch's transaction takes it back for every mail
        whose processing finished here; a parser that crashed, overran its deadline
        or was killed keeps it (and is not counted twice).

        The fast path writes the whole batch in one flush at the end. If any
        message fails, the transaction is rolled back and the batch runs again
        with a savepoint per message, so the failure is pinned on that message
        alone and the others commit.

        ``prepare`` runs first in the batch's transaction (each time it starts), so
        what it changes commits with the batch or not at all (``quarantine retry``).

        Raises StorageError or a database error when the batch could not be
        committed; then nothing of it was stored and nothing may be moved.
        """
        if parsed is None:
            parsed = parse_all([mail.raw for mail in mails], self.ctx.config.limits,
                               [mail.size if mail.size > len(mail.raw) else None for mail in mails])
        try:
            return self._run_batch(mails, parsed, isolated=False, counted=counted, prepare=prepare)
        except _Isolate:
            log.info("batch of %d: a message failed; processing them one by one", len(mails))
            return self._run_batch(mails, parsed, isolated=True, counted=counted, prepare=prepare)

    def _run_batch(self, mails: Sequence[FetchedMail], parsed: Sequence[InboundMessage | UnparsableMessage],
                   isolated: bool, counted: bool = False,
                   prepare: Callable[[Session], None] | None = None) -> BatchResult:
        result = BatchResult()
        now = self.clock()
        if self.ctx.config.consultants:
            self.notifier.load(self.sessions)
        with self.sessions() as session, session.begin(), session.no_autoflush:
            desk = TicketDesk(self.ctx, session, self.blobs)
            desk.hold_ticket_numbers()
            if prepare is not None:
                prepare(session)
                session.flush()
            keys = [m.dedupe_key for m in parsed if isinstance(m, InboundMessage)]
            senders = [m.from_addr for m in parsed if isinstance(m, InboundMessage)]
            desk.count_recent_automatic(senders, now - timedelta(hours=1))
            self._batch = _Batch(session=session, isolated=isolated, counted=counted,
                                 known=store.known_dedupe_keys(session, keys), desk=desk, lookup=DeskThreadLookup(desk))
            # what the batch's mail refers to, looked up once for the batch instead of once per reply
            refs = {r for m in parsed if isinstance(m, InboundMessage) for r in (*m.references, *m.in_reply_to) if r}
            self._batch.lookup.prefetch(refs)
            found = (self.ctx.index.customer_for(m.from_addr) for m in parsed if isinstance(m, InboundMessage))
            self._batch.customers = list({c.id: c for c in found if c is not None}.values())
            desk.prepaid_hint = [p for c in self._batch.customers for p in packages_of(c)]
            desk.know_blob_places(a.sha256 for m in parsed if isinstance(m, InboundMessage) for a in m.attachments)
            if not isolated:
                self._batch.stored_recipients = store.outbox_recipients_by_message_id(session, refs)
            finished: list[str] = []
            for mail, msg in zip(mails, parsed):
                try:
                    disposition = self._process_one(session, mail, msg, now)
                finally:
                    if isinstance(msg, InboundMessage):
                        desk.rows.raw_settled(msg.raw_sha256)
                result.count(disposition)
                if counted and not (disposition == "retry" and isinstance(msg, ParserCrash)):
                    finished.append(attempt_key(mail))
                if disposition == "quarantine":
                    result.quarantined.append(mail)
                elif disposition == "retry":
                    result.retry.append(mail)
                else:
                    result.done.append(mail)
            try:
                desk.sync()
                if finished:
                    session.execute(delete(Failure).where(Failure.key.in_(finished)))
            except DBAPIError as exc:
                if isolated or exc.connection_invalidated or isinstance(exc, OperationalError):
                    raise
                raise _Isolate() from exc
            finally:
                self._batch = None
            self.blobs.flush()
        return result

    # -------------------------------------------------------------- one message

    def _process_one(self, session: Session, mail: FetchedMail, parsed: InboundMessage | UnparsableMessage,
                     now: datetime) -> str:
        batch = self._active
        msg = parsed if isinstance(parsed, InboundMessage) else None
        key = msg.dedupe_key if msg else attempt_key(mail)
        try:
            with session.begin_nested() if batch.isolated else nullcontext():
                if isinstance(parsed, ParserCrash):
                    raise parsed.original
                if isinstance(parsed, GaveUp):
                    raise Quarantine(parsed.reason, parsed.attempts)
                if msg is None:
                    raise Quarantine(f"unparsable: {parsed}")
                if key in batch.seen or key in batch.known:
                    first_key, key = key, f"{SECOND_COPY}{msg.raw_sha256}"
                    self._second_copy(session, msg, first_key)
                    msg = replace(msg, dedupe_key=key)
                batch.seen.add(key)
                batch.first_copies.setdefault(key, msg)
                batch.desk.rows.raw_packed(msg.raw_sha256, self.blobs.append(mail.raw))
                disposition, _ticket_id = self._route(session, mail, msg, now)
                if batch.isolated:
                    batch.desk.sync()
                return disposition
        except Duplicate as dup:
            log.debug("%s duplicate: %s", mail.source_key, dup.reason)
            return "duplicate"
        except Outcome as outcome:
            # Stages raise outcomes before they write, so on the fast path there
            # is nothing of this message to undo.
            if batch.isolated:
                batch.desk.discard()
            with session.begin_nested() if batch.isolated else nullcontext():
                self._record_outcome(session, mail, msg, key, outcome, now,
                                     attempts=outcome.attempts if isinstance(outcome, Quarantine) else 1)
            return outcome.disposition
        except (StorageError, OperationalError):
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            if not batch.isolated:
                raise _Isolate() from exc
            batch.desk.discard()
            return self._failed(session, mail, msg, key, exc, now)
        except Exception as exc:  # the one catch-all: around one message only
            if not batch.isolated:
                raise _Isolate() from exc
            batch.desk.discard()
            return self._failed(session, mail, msg, key, exc, now,
                                counted=batch.counted and isinstance(parsed, ParserCrash))

    def _second_copy(self, session: Session, msg: InboundMessage, first_key: str) -> None:
        """A Message-ID seen before: return to go on under the mail's own key
        (``dup:<sha256>``), or raise the Outcome that ends it here.

        The same bytes again (a re-read after a crash) is a plain duplicate. Other
        bytes with the same content (a second delivery with other Received lines, a
        forwarder's re-encoding) is recorded and dropped. Other content is a
        different mail under a reused Message-ID (some senders do that): it is not
        dropped.
        """
        batch = self._active
        if first_key == f"sha256:{msg.raw_sha256}":  # no Message-ID: the key is these very bytes' hash
            raise Duplicate(f"already read ({first_key})")
        own_key = f"{SECOND_COPY}{msg.raw_sha256}"
        first = batch.first_copies.get(first_key)
        stored: dict[str, PackedBlob | None] = {first.raw_sha256: None} if first is not None else {}
        if first_key in batch.known and msg.message_id:
            stored.update(store.inbound_copies(session, msg.message_id))
        if own_key in batch.seen or msg.raw_sha256 in stored or store.intake_recorded(session, own_key):
            raise Duplicate(f"already stored ({first_key})")
        if first is None:
            first = self._stored_copy(session, stored)
        if first is None and store.blob_stored(session, self.blobs, msg.raw_sha256):
            # the first copy was not kept as a message (discarded, quarantined) and
            # these very bytes were read before
            raise Duplicate(f"already read ({first_key})")
        if first is not None and _same_content(first, msg):
            raise Discard(f"Message-ID {first_key[:200]} already stored from a copy with the same "
                          "content and other headers (a second delivery)")
        log.warning("%s: Message-ID already used by %s; kept as a mail of its own", msg.message_id,
                    "a mail with other content" if first is not None else "a mail not kept")

    def _stored_copy(self, session: Session, copies: dict[str, PackedBlob | None]) -> InboundMessage | None:
        for sha in sorted(copies):
            try:
                stored = parse_one(store.read_blob(session, self.blobs, sha, copies[sha]), self.ctx.config.limits)
            except BlobMissing as exc:
                log.warning("%s", exc)
                continue
            if isinstance(stored, InboundMessage):
                return stored
        return None

    def _failed(self, session: Session, mail: FetchedMail, msg: InboundMessage | None,
                key: str, exc: BaseException, now: datetime, counted: bool = False) -> str:
        """Count a failed attempt (``counted``: it was recorded before parsing started);
        "retry", or "quarantine" after ``MAX_ATTEMPTS``."""
        summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500]
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
        with session.begin_nested():
            failure = session.scalar(select(Failure).where(Failure.key == key))
            if failure is None:
                failure = Failure(key=key, attempts=0, updated_at=now)
                session.add(failure)
            if not counted or failure.attempts < 1:
                failure.attempts += 1
            failure.last_error, failure.updated_at = summary, now
            attempts = failure.attempts
        log.warning("%s %s: processing failed (attempt %d/%d): %s", mail.source_key,
                    msg.message_id if msg else "-", attempts, MAX_ATTEMPTS, summary)
        if attempts < MAX_ATTEMPTS:
            return "retry"
        with session.begin_nested():
            self._record_outcome(session, mail, msg, key,
                                 Quarantine(f"failed {attempts} times: {summary}"), now, trace, attempts)
        return "quarantine"

    def _record_outcome(self, session: Session, mail: FetchedMail, msg: InboundMessage | None, key: str,
                        outcome: Outcome, now: datetime, trace: str = "", attempts: int = 1) -> None:
        ref = "-"
        if isinstance(outcome, Quarantine):
            sha = self.blobs.put(mail.raw)
            session.add(QuarantineRow(
                key=key, source_key=mail.source_key, raw_sha256=sha,
                subject=msg.subject if msg else "", from_addr=msg.from_addr if msg else "",
                reason=outcome.reason, traceback=trace, attempts=attempts, arrived_at=mail.arrived_at, created_at=now,
            ))
            log.error("%s %s quarantined: %s", mail.source_key, msg.message_id if msg else "-", outcome.reason)
        else:
            log.info("%s %s -> %s %s: %s", mail.source_key, msg.message_id if msg else "-", ref,
                     outcome.disposition, outcome.reason)
        batch = self._active
        if msg is not None and key not in batch.known and key not in batch.recorded:
            batch.recorded.add(key)
            batch.desk.rows.intake(dedupe_key=key, source_key=mail.source_key, disposition=outcome.disposition,
                              reason=outcome.reason, arrived_at=mail.arrived_at, now=now)
        if batch.isolated:
            batch.desk.sync()

    # -------------------------------------------------------------- routing

    def _route(self, session: Session, mail: FetchedMail, msg: InboundMessage, now: datetime) -> tuple[str, int | None]:
        ctx = self.ctx
        request = self._requests.get(msg.dedupe_key)
        if request is not None:  # `maild tickets open`: the operator's own request
            return self._new_ticket(session, mail, msg, Screening("human", False, False, None, ()),
                                    request.resolution, _NEW_DECISION, False, now, on_behalf=request)
        screening = screen(msg, ctx.screen, mail.arrived_at, now)
        if screening.discard:
            raise Discard(screening.discard)
        if msg.report is not None:
            return self._bounce(session, mail, msg, screening, now)
        is_consultant = msg.from_addr in ctx.config.consultant_emails
        resolution = self._resolve(session, msg, mail.arrived_at)
        decision = decide_thread(
            subject=msg.subject, from_addr=msg.from_addr, recipients=(*msg.to, *msg.cc),
            in_reply_to=msg.in_reply_to, references=msg.references,
            sender_customer_id=resolution.customer.id if resolution.customer else None,
            sender_is_consultant=is_consultant, lookup=self._active.lookup,
            settings=ctx.thread, now=mail.arrived_at,
        )
        if is_consultant and decision.ticket is not None:
            return self._consultant_mail(session, mail, msg, screening, decision, now)
        if is_consultant and not screening.automatic:
            presence = self._presence_request(session, mail, msg, screening, now)
            if presence is not None:
                return presence
        if decision.ticket is not None:
            return self._customer_reply(session, mail, msg, screening, decision, now, resolution)
        if not is_consultant and not screening.automatic:
            elsewhere = self._from_another_address(session, mail, msg, screening, now)
            if elsewhere is not None:
                return elsewhere
        if is_consultant:
            if screening.automatic and screening.kind != "human" or screening.out_of_office:
                # an out-of-office answering a digest or a notice: never a ticket, never answered
                raise Discard(f"automatic mail from consultant {msg.from_addr}, about no ticket")
            on_behalf = self._on_behalf(session, mail, msg, screening, now)
            if isinstance(on_behalf, tuple):
                return on_behalf
            if on_behalf is not None:
                return self._new_ticket(session, mail, msg, screening, on_behalf.resolution, decision, False, now,
                                        on_behalf=on_behalf)
            if store.own_message_ids((*msg.in_reply_to, *msg.references)):
                return self._about_no_ticket(session, mail, msg, screening, now)
        return self._new_ticket(session, mail, msg, screening, resolution, decision, is_consultant, now)

    def _resolve(self, session: Session, msg: InboundMessage, arrived_at: datetime) -> Resolution:
        ctx = self.ctx
        day = arrived_at.astimezone(ctx.calendar.tz).date()
        customer = ctx.index.customer_for(msg.from_addr)
        packages = packages_of(customer)
        left = self._active.desk.prepaid_left(packages, arrived_at)
        resolution = resolve(msg.from_addr, ctx.index, day, lambda cid: left.get(cid, 0))
        authserv = ctx.config.trusted_authserv_id
        if resolution.verified and authserv:
            ok, why = sender_authenticated(msg, authserv, msg.return_path or None)
            if not ok:
                resolution = replace(resolution, verified=False,
                                     reason=f"{resolution.reason}; not authenticated: {why}")
        return resolution

    # -------------------------------------------------------------- new ticket

    def _new_ticket(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                    resolution: Resolution, decision: ThreadDecision, is_consultant: bool,
                    now: datetime, on_behalf: OnBehalf | None = None) -> tuple[str, int | None]:
        ctx, cfg = self.ctx, self.ctx.config
        desk = self._active.desk
        arrived = mail.arrived_at
        day = arrived.astimezone(ctx.calendar.tz).date()
        new_text, quoted = msg.reply_split or split_reply(msg.text)
        requester, requester_name = msg.from_addr, msg.from_name
        participants: tuple[str, ...] = (msg.from_addr, *msg.cc, *(a for a in msg.to if a not in ctx.support_addresses))
        if on_behalf is not None:
            new_text, quoted = on_behalf.body, ""
            requester, requester_name = on_behalf.requester, on_behalf.requester_name
            participants = (requester,) if requester else ()
        # the parse worker's facts are of the mail's own new text, not of an operator's body
        facts = msg.facts.for_rules(ctx.reading) if msg.facts is not None and on_behalf is None else None
        prio = prioritise(
            kind=resolution.kind, verified=resolution.verified, subject=msg.subject, text=new_text,
            automatic=screening.automatic and screening.kind != "human",
            urgent_words=cfg.support.urgent_words, peak_windows=cfg.peak_windows, day=day,
            days_off=self.ctx.days_off, signals=facts.signals if facts is not None else None,
        )
        customer = resolution.customer
        language = (customer.language if customer else None) or msg.language or cfg.support.default_language
        if on_behalf is not None:
            language = customer.language if customer else cfg.support.default_language
        if language not in ("pl", "en"):
            language = cfg.support.default_language
        reasons = [resolution.reason, *prio.reasons, *decision.reasons, *screening.reasons]
        scope, clues = (facts.scope, facts.clues) if facts is not None else guess_scope_as_written(msg.subject, new_text)
        if scope is not None:
            reasons.append(scope_reason(scope, clues))
        joining = self._joining(msg.from_addr, (msg.from_addr, *msg.cc, *msg.to), (), resolution.customer,
                                by_consultant=is_consultant)
        if on_behalf is not None:
            reasons.insert(0, f"opened on behalf of the customer by {on_behalf.by or 'the command line'}")
        ticket = desk.open_ticket(
            subject=clean_subject(msg.subject, cfg.support.ticket_prefix) or NO_SUBJECT,
            requester=requester, requester_name=requester_name, language=language, resolution=resolution,
            prio=prio, reasons=reasons, created_at=arrived, now=now, linked_to=decision.link_to,
            participants=joining.added if on_behalf is None else participants, actor=msg.from_addr,
            # Mail from before maild watched the mailbox (a mailbox with years of
            # history connected for the first time): its deadline is reported,
            # but nobody is paged for promises made before we were running.
            page=now - arrived <= cfg.support.autoreply_max_age, scope=scope,
        )
        row = self._message_row(ticket.id, msg, mail, screening,
                                "consultant" if is_consultant or on_behalf else "customer", new_text, quoted)
        desk.created(ticket, msg.from_addr if on_behalf is None else on_behalf.by or "maild")
        self._dropped(ticket, joining, msg, arrived)
        if not is_consultant and on_behalf is None:
            desk.auto_assign(ticket, now)
        ref = ctx.ref(ticket.id)
        ack = None
        if on_behalf is not None:
            if on_behalf.by:
                desk.assign(ticket, on_behalf.by, on_behalf.by, arrived)
            if on_behalf.acknowledge and requester:
                ack = self._acknowledge(session, ticket, msg, screening, resolution, mail, now, on_behalf=on_behalf)
            applying = Applying(desk=desk, ticket=ticket, actor=on_behalf.by or "maild", at=arrived, now=now,
                                source_message_id=msg.message_id)
            for command in on_behalf.commands:
                command.apply(applying)
        elif not is_consultant:
            ack = self._acknowledge(session, ticket, msg, screening, resolution, mail, now)
        if cfg.notifications.new_ticket and (on_behalf is not None or not screening.automatic):
            people = new_ticket_recipients(cfg.consultants, ticket.assigned_to, arrived,
                                           cfg.notifications.managers_get_new, present=self._present(now))
            self._notify(ticket, "new", people, msg, new_text, quoted, requester, now)
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="ticket",
                         reason="; ".join(reasons[:2]), arrived_at=arrived, now=now,
                         ticket_id=ticket.id, message_row_id=row)
        log.info("%s %s -> %s new ticket (%s, %s%s)%s", mail.source_key, msg.message_id, ref, resolution.kind,
                 prio.priority, "" if resolution.verified else ", unverified", "" if ack else ", no acknowledgement")
        return "ticket", ticket.id

    def _joining(self, sender: str, candidates: Sequence[str], current: Sequence[str], customer: Customer | None,
                 by_consultant: bool) -> Joining:
        ctx = self.ctx
        home: set[str] | None = None
        if not by_consultant:
            home = {sender.rpartition("@")[2].casefold()}
            if customer is not None:
                home.update(customer.domains)
                home.update(a.rpartition("@")[2] for a in customer.addresses)
        return screen_participants(candidates, current=current, limit=ctx.config.support.max_participants,
                                   home_domains=home, own=ctx.support_addresses,
                                   consultants=ctx.config.consultant_emails)

    def _dropped(self, ticket: Ticket, joining: Joining, msg: InboundMessage, at: datetime) -> None:
        if joining.dropped:
            self._active.desk.add_event(ticket.id, "participants_dropped", at, msg.from_addr,
                                        addresses=list(joining.dropped[:50]), count=len(joining.dropped),
                                        reason=joining.reason)
            log.info("%s -> %s: %d addresses not made participants: %s", msg.message_id, self.ctx.ref(ticket.id),
                     len(joining.dropped), joining.reason)

    def _acknowledge(self, session: Session, ticket: Ticket, msg: InboundMessage, screening: Screening,
                     resolution: Resolution, mail: FetchedMail, now: datetime,
                     on_behalf: OnBehalf | None = None) -> str | None:
        ctx, cfg = self.ctx, self.ctx.config
        desk = self._active.desk
        if screening.automatic:
            desk.add_event(ticket.id, "ack_suppressed", now, reasons=list(screening.reasons))
            return None
        to = ticket.requester if on_behalf is not None else msg.from_addr
        if not to or to in ctx.screen.own_addresses:
            return None
        known = resolution.customer is not None
        audience = "customer" if known and resolution.verified else ("unverified" if known else "stranger")
        limited = desk.automatic_limit_reached(to, per_domain=audience != "customer")
        if limited is not None:
            desk.add_event(ticket.id, "ack_suppressed", now, reasons=[limited])
            return None
        contract = resolution.contract
        spent = resolution.fell_back_package
        rate = contract.hourly_rate_cents if contract is not None else None
        if rate is None and spent is not None:
            rate = spent.hourly_rate_cents
        if rate is None and resolution.customer is not None:
            rate = resolution.customer.occasional_hourly_rate_cents
        if rate is None:
            rate = cfg.billing.occasional_hourly_rate_cents
        # Plain JSON values: the template formats dates, money and durations in the mail's language.
        context: dict[str, Any] = {
            "ref": ctx.ref(ticket.id), "subject": ack_subject(ticket.subject, audience == "customer"),
            "from_name": cfg.from_name, "audience": audience, "contract_kind": resolution.kind if audience == "customer" else "",
            "timezone": cfg.calendar.timezone, "reaction_due": "", "reaction_hours": 0, "reaction_clock": "",
            "opens": cfg.calendar.opens.strftime("%H:%M"), "closes": cfg.calendar.closes.strftime("%H:%M"),
            "prepaid_left_minutes": 0, "prepaid_valid_until": "",
            "fell_back": resolution.fell_back_why or "", "fell_back_day": "",
            "hourly_rate_cents": rate, "unit_minutes": _unit_minutes(contract, cfg.ledger.occasional_unit_minutes),
            "peak_label": "", "queue_position": 0, "expected_by": "", "on_behalf": on_behalf is not None,
        }
        if audience == "customer" and not rules_of(resolution.kind).reaction_deadline:
            # No promise goes with these kinds: the customer is told where the ticket
            # stands and, with enough history, the day an answer is likely (an estimate).
            desk = self._active.desk
            place = desk.queue_places.get(ticket.id)
            if place is not None:
                context["queue_position"] = place
                likely = desk.team.expected_by(place, now, tier=ticket.tier, priority=ticket.priority)
                context["expected_by"] = likely.isoformat() if likely else ""
        if spent is not None and resolution.fell_back_why == "expired":
            last = spent.valid_until or spent.end
            context["fell_back_day"] = last.isoformat() if last else ""
        if ticket.reaction_due is not None and contract is not None:
            context["reaction_due"] = ticket.reaction_due.astimezone(UTC).isoformat()
            context["reaction_hours"] = contract.reaction_hours or 24
            context["reaction_clock"] = contract.reaction_clock
        if contract is not None and rules_of(contract.kind).packages:
            left = desk.prepaid_left(packages_of(resolution.customer), mail.arrived_at)
            context["prepaid_left_minutes"] = left.get(contract.id, 0)
            context["prepaid_valid_until"] = contract.valid_until.isoformat() if contract.valid_until else ""
        # The notice names the peak period the ticket is about, never another active
        # one (the statutory calendar has some window on most days of a month).
        window = next((w for w in cfg.peak_windows if w.name == ticket.peak), None) if ticket.peak else None
        if window is not None:
            context["peak_label"] = window.label_for(ticket.language)
        return desk.queue_mail(
            ticket=ticket, kind="ack", template="ack", language=ticket.language,
            recipients=[to], context=context, now=now, dedupe_key=f"ack:{ticket.id}",
            in_reply_to=msg.message_id if on_behalf is None else None, automatic=True, fresh=True,
        )

    def _message_row(self, ticket_id: int | None, msg: InboundMessage, mail: FetchedMail, screening: Screening,
                     role: str, new_text: str, quoted: str, internal: bool = False, notes: Sequence[str] = (),
                     answered: bool = False) -> int:
        """``answered``: a consultant's mail the intake took as an answer to the customer (stored for the
        month report; every other mail of a consultant's is stored as no answer)."""
        return self._active.desk.add_message(
            ticket_id, message_id=msg.message_id, direction="in", role=role,
            kind="autoreply" if screening.out_of_office else screening.kind,
            from_addr=msg.from_addr, from_name=msg.from_name, to=msg.to, cc=msg.cc,
            subject=msg.subject, date=mail.arrived_at, text_new=new_text, text_quoted=quoted,
            raw_sha256=msg.raw_sha256, size=msg.size, internal=internal, notes=[*msg.notes, *notes],
            attachments=msg.attachments, reused_id=msg.dedupe_key.startswith(SECOND_COPY),
            answered=answered if role == "consultant" else None,
        )

    # -------------------------------------------------------------- replies

    def _load_ticket(self, decision: ThreadDecision) -> Ticket:
        assert decision.ticket is not None
        ticket = self._active.desk.ticket(decision.ticket.ticket_id)
        assert ticket is not None
        return ticket

    def _customer_reply(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                        decision: ThreadDecision, now: datetime, resolution: Resolution) -> tuple[str, int | None]:
        desk = self._active.desk
        ticket = self._load_ticket(decision)
        new_text, quoted = msg.reply_split or split_reply(msg.text)
        row = self._message_row(ticket.id, msg, mail, screening, "customer", new_text, quoted)
        newcomers = [a for a in (msg.from_addr, *msg.cc) if a and a not in (ticket.participants or [])]
        proven, why = self._reply_proven(session, msg) if newcomers and resolution.verified else (False, "")
        if resolution.verified and proven:  # a forged reply (Cc: attacker@...) must not join anyone
            joining = self._joining(msg.from_addr, (msg.from_addr, *msg.cc), ticket.participants or (),
                                    resolution.customer, by_consultant=False)
            desk.add_participants(ticket, joining.added)
            self._dropped(ticket, joining, msg, mail.arrived_at)
        elif newcomers:
            desk.add_event(ticket.id, "participants_refused", mail.arrived_at, msg.from_addr,
                           addresses=newcomers[:20], reason=why or "sender not verified")
        ref = self.ctx.ref(ticket.id)
        if screening.out_of_office or screening.kind != "human":
            desk.add_event(ticket.id, "automatic_reply", mail.arrived_at, msg.from_addr,
                           reasons=list(screening.reasons))
        elif decision.reopen:
            desk.reopen(ticket, mail.arrived_at, msg.from_addr, decision.reasons)
        else:
            desk.customer_answered(ticket, mail.arrived_at, msg.from_addr)
        ticket.updated_at = now
        cfg = self.ctx.config
        if cfg.notifications.customer_reply and not screening.automatic:
            people = follow_up_recipients(cfg.consultants, ticket.assigned_to, now, present=self._present(now))
            self._notify(ticket, "follow_up", people, msg, new_text, quoted, msg.from_addr, now)
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="reply",
                         reason=decision.rule, arrived_at=mail.arrived_at, now=now,
                         ticket_id=ticket.id, message_row_id=row)
        log.info("%s %s -> %s customer reply (%s)", mail.source_key, msg.message_id, ref, decision.rule)
        return "reply", ticket.id

    def _presence_request(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                          now: datetime) -> tuple[str, int | None] | None:
        """A consultant's own mail with ``#away``/``#back`` (and nothing else): about them, not a ticket.

        Answered with a confirmation, or an error naming the line; never a ticket.
        None when the mail holds no such command (it is then a ticket as before).
        """
        new_text, _ = msg.reply_split or split_reply(msg.text)
        parsed = parse_commands(new_text)
        if not any(isinstance(c, PRESENCE_COMMANDS) for c in parsed.commands) and not any(
                e.line.strip().lower().startswith(("#away", "#back")) for e in parsed.errors):
            return None
        consultant = self.ctx.consultant(msg.from_addr)
        assert consultant is not None
        # A forged From must not mark a consultant away (and hand their tickets to others).
        authority = self._authority(session, msg, consultant.email)
        if not authority.granted:
            return self._unproven(mail, msg, screening, None, consultant, new_text, "", authority, now)
        desk = self._active.desk
        errors: list[dict[str, Any]] = [
            {"line_no": e.line_no, "line": e.line, "reason": e.reason, "code": e.code, "params": dict(e.params)}
            for e in parsed.errors]
        others = [c for c in parsed.commands if not isinstance(c, PRESENCE_COMMANDS)]
        if others:
            errors.append({"line_no": 1, "line": new_text.strip().splitlines()[0][:200], "code": "", "params": {},
                           "reason": "#away and #back go in a mail of their own; ticket commands in a reply "
                                     "to the ticket's mail"})
        done: list[dict[str, str]] = []
        if not errors:
            for command in parsed.commands:
                try:
                    if isinstance(command, AwayCommand):
                        desk.team.record_absence(consultant.email, command.start, command.until, command.note,
                                                 consultant.email, now)
                        done.append({"what": "away", "start": command.start.isoformat(),
                                     "until": command.until.isoformat()})
                    elif isinstance(command, BackCommand):
                        desk.team.end_absence(consultant.email, now, consultant.email)
                        done.append({"what": "back", "start": now.astimezone(self.ctx.calendar.tz).date().isoformat(),
                                     "until": ""})
                except TeamError as exc:
                    errors.append({"line_no": 1, "line": new_text.strip().splitlines()[0][:200], "reason": str(exc),
                                   "code": "", "params": {}})
        if errors:
            self._command_error(consultant, msg, _command_error_context(consultant.language, "", msg.subject, errors),
                                now)
            disposition, reason = "rejected", "; ".join(f"line {e['line_no']}: {e['reason']}" for e in errors)
        else:
            desk.queue_mail(
                ticket=None, kind="presence", template="presence_confirm", language=consultant.language,
                recipients=[consultant.email], now=now, dedupe_key=f"presence:{msg.dedupe_key}"[:400],
                in_reply_to=msg.message_id, automatic=True,
                context={"subject": msg.subject, "done": done})
            disposition, reason = "command", ", ".join(d["what"] for d in done)
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition=disposition,
                         reason=reason[:500], arrived_at=mail.arrived_at, now=now)
        log.info("%s %s -> %s presence %s: %s", mail.source_key, msg.message_id, consultant.email, disposition, reason)
        return disposition, None

    def _from_another_address(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                              now: datetime) -> tuple[str, int | None] | None:
        """A mail that answers maild's mail to a consultant (a notification, the digest, a notice) from an
        address that is no consultant's: the consultant's private account on a phone, an alias, or whoever
        they forwarded it to. It opened a ticket of its own (acknowledged to that address, announced to every
        consultant) and the customer got nothing. Kept instead as an unverified note on the ticket the mail
        answered (when it answered one), nothing applied or relayed, and the consultant told, in their
        language, that it came from another address than theirs. None when it answers no such mail."""
        ctx, cfg = self.ctx, self.ctx.config
        own = store.own_message_ids((*msg.in_reply_to, *msg.references))[-50:]
        if not own:
            return None
        desk = self._active.desk
        desk.sync()
        rows = session.execute(select(OutboxRow.recipients, OutboxRow.ticket_id).where(
            OutboxRow.message_id.in_(own), OutboxRow.kind.in_(CONSULTANT_KINDS))).all()
        people = {c.email: c for c in cfg.consultants}
        told = [(people[str(r).lower()], ticket_id) for recipients, ticket_id in rows
                for r in recipients or [] if str(r).lower() in people]
        if not told:
            return None
        consultant, ticket_id = next(((c, t) for c, t in told if t is not None), told[0])
        ticket = desk.ticket(ticket_id) if ticket_id is not None else None
        new_text, quoted = msg.reply_split or split_reply(msg.text)
        reason = (f"from {msg.from_addr}, not the address of consultant {consultant.email}, whose mail it answers: "
                  "not applied, not relayed")
        row = self._message_row(ticket_id, msg, mail, screening, "consultant", cut_at_marker(new_text), quoted,
                                internal=True, notes=[reason])
        if ticket is not None:
            desk.add_event(ticket.id, "unverified_consultant_mail", mail.arrived_at, msg.from_addr,
                           reason=reason, message_id=msg.message_id)
        self._authority_notice(consultant, msg, ticket_id, reason, "other_address", msg.from_addr, now,
                               address=consultant.email)
        disposition = "reply" if ticket_id is not None else "rejected"
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition=disposition,
                         reason=reason[:2000], arrived_at=mail.arrived_at, now=now, ticket_id=ticket_id,
                         message_row_id=row)
        log.warning("%s %s -> %s mail answering consultant %s's mail from %s, not applied", mail.source_key,
                    msg.message_id, ctx.ref(ticket_id) if ticket_id is not None else "-", consultant.email,
                    msg.from_addr)
        return disposition, ticket_id

    def _about_no_ticket(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                         now: datetime) -> tuple[str, int | None]:
        """A consultant's reply to maild's mail that names no ticket (the morning digest, which lists many;
        a notice or a confirmation about none; a ticket erased since): no ticket is opened (a reply to the
        digest opened one, the consultant its requester, and every consultant was told of it), nothing is
        applied, and the consultant is told, in their language, how to reach the ticket they meant."""
        ctx = self.ctx
        desk = self._active.desk
        consultant = ctx.consultant(msg.from_addr)
        assert consultant is not None
        new_text, _quoted = msg.reply_split or split_reply(msg.text)
        new_text = cut_at_marker(new_text)
        authority = self._authority(session, msg, consultant.email)
        if not authority.granted:
            return self._unproven(mail, msg, screening, None, consultant, new_text, "", authority, now)
        parsed = parse_commands(new_text)
        # the command lines, else the first line written: what the notice quotes back
        written = parsed.lines or [next(((n, line.strip()) for n, line in enumerate(new_text.split("\n"), 1)
                                         if line.strip()), (1, ""))]
        reason = "a reply to maild's mail about no single ticket: nothing applied, no ticket opened"
        errors = [CommandError(n, line[:200], reason, "no_ticket") for n, line in written]
        context = _command_error_context(consultant.language, "", msg.subject, _error_rows(errors))
        context.update(no_ticket=True, example=f"[{ctx.ref(12)}]")
        self._command_error(consultant, msg, context, now)
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="rejected",
                         reason=reason, arrived_at=mail.arrived_at, now=now)
        log.info("%s %s -> - consultant %s: %s", mail.source_key, msg.message_id, consultant.email, reason)
        return "rejected", None

    def _consultant_mail(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                         decision: ThreadDecision, now: datetime) -> tuple[str, int | None]:
        ctx = self.ctx
        desk = self._active.desk
        # Consultant mail reads the thread and the ledger: let it see what this batch wrote.
        desk.sync()
        ticket = self._load_ticket(decision)
        ref = ctx.ref(ticket.id)
        consultant = ctx.consultant(msg.from_addr)
        assert consultant is not None
        new_text, quoted = msg.reply_split or split_reply(msg.text)
        new_text = cut_at_marker(new_text)
        if screening.automatic and screening.kind != "human" or screening.out_of_office:
            # an out-of-office or auto-reply from the consultant's mailbox, most often to a
            # notification: a delivery note on the ticket, never relayed, never answered
            row = self._message_row(ticket.id, msg, mail, screening, "consultant", new_text, quoted,
                                    internal=True, notes=["automatic mail from a consultant: not relayed"])
            desk.add_event(ticket.id, "consultant_autoreply", mail.arrived_at, consultant.email,
                           reasons=list(screening.reasons)[:5])
            desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="reply",
                             reason="consultant automatic mail, not relayed", arrived_at=mail.arrived_at,
                             now=now, ticket_id=ticket.id, message_row_id=row)
            return "reply", ticket.id
        authority = self._authority(session, msg, consultant.email)
        if not authority.granted:
            return self._unproven(mail, msg, screening, ticket, consultant, new_text, quoted, authority, now)
        parsed = parse_commands(new_text)
        errors = parsed.check(ctx)
        if errors:
            # the ticket's own subject: the consultant's "Re: [SUP-1] ..." would repeat the tag
            self._command_error(consultant, msg, _command_error_context(consultant.language, ref, ticket.subject,
                                                                        _error_rows(errors)), now)
            desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="rejected",
                             reason="; ".join(f"line {e.line_no}: {e.reason}" for e in errors),
                             arrived_at=mail.arrived_at, now=now, ticket_id=ticket.id)
            log.info("%s %s -> %s consultant commands rejected: %d errors", mail.source_key, msg.message_id, ref, len(errors))
            return "rejected", ticket.id
        internal = any(c.internal for c in parsed.commands)
        # commands only (or commands and a signature), no file: the desk's business, nothing for the customer:
        # not relayed (it was, as an empty mail with a signature), no first answer, the status as the commands leave it
        silent = not internal and not says_something(parsed.body) and all(a.inline for a in msg.attachments)
        direct = not any(map(self._is_support, msg.to)) and any(map(self._is_support, msg.cc))
        # a Reply All that copied the customer in: they have the consultant's mail from its own server
        reached = {a for a in (*msg.to, *msg.cc) if a and not self._is_support(a)}
        row = self._message_row(ticket.id, msg, mail, screening, "consultant", parsed.body, quoted, internal=internal,
                                answered=not internal and not silent)
        at = mail.arrived_at
        relayed = False
        if not internal and not silent:
            desk.first_response(ticket, at, consultant.email)
            if not direct:
                attachments = [{"sha256": a.sha256, "filename": a.filename, "content_type": a.content_type}
                               for a in msg.attachments if not a.inline]
                relayed = desk.relay(ticket, parsed.body, consultant.name, attachments,
                                     f"relay:{msg.dedupe_key}"[:400], now, reached=reached) is not None
        applying = Applying(desk=desk, ticket=ticket, actor=consultant.email, at=at, now=now,
                            source_message_id=msg.message_id)
        assignee = ticket.assigned_to
        for command in parsed.commands:
            command.apply(applying)
        # a consultant may copy in anyone, of any domain (up to the cap)
        joining = self._joining(msg.from_addr, (*msg.to, *msg.cc), ticket.participants or (), None, by_consultant=True)
        desk.add_participants(ticket, joining.added)
        self._dropped(ticket, joining, msg, at)
        status_set = any(c.sets_status for c in parsed.commands)
        if not internal and not silent and not status_set and ticket.status in ("new", "open"):
            ticket.status = "waiting"
        ticket.updated_at = now
        # a handover ("#assign Bob", "#take") is told to the new assignee and to the one who had the ticket,
        # unless they wrote this mail: by a mail of commands only it notified nobody, so the ticket waited for
        # its new assignee unseen, and whoever had it went on working on it
        handover = [c for c in ctx.config.consultants if ticket.assigned_to != assignee
                    and c.email in (assignee, ticket.assigned_to) and c.email != consultant.email]
        if ctx.config.notifications.enabled and not silent:
            people = note_recipients(ctx.config.consultants, ticket.assigned_to,
                                     self._consultant_writers(session, ticket.id), consultant.email)
            people = (*people, *(c for c in handover if c not in people))
            self._notify(ticket, "note" if internal else "answer", people, msg, parsed.body, "", consultant.email,
                         now)
        elif handover:
            self._notify(ticket, "note", handover, msg, "\n".join(line for _, line in parsed.lines), "",
                         consultant.email, now)
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="reply",
                         reason=_consultant_disposition(internal, silent, relayed),
                         arrived_at=at, now=now, ticket_id=ticket.id, message_row_id=row)
        log.info("%s %s -> %s consultant %s (%s)", mail.source_key, msg.message_id, ref, consultant.email,
                 _consultant_disposition(internal, silent, relayed))
        return "reply", ticket.id

    # -------------------------------------------------------------- authority, notifications, on behalf

    def _authority(self, session: Session, msg: InboundMessage, email: str) -> Authority:
        """Whether this mail from a consultant's address proves it is theirs (see ``desk.authority``)."""
        cfg = self.ctx.config
        authserv = cfg.trusted_authserv_id
        passed, why = sender_authenticated(msg, authserv, msg.return_path or None) if authserv else (False, "")
        refs = (*msg.references, *msg.in_reply_to)
        sent = set() if authserv else self.notifier.sent_to(session, email, refs)
        return check_authority(authserv_configured=bool(authserv), auth_passed=passed, auth_reason=why,
                               references=refs, sent_to_consultant=sent, recipients=(*msg.to, *msg.cc),
                               support_address=cfg.support.address, token=self.notifier.token(session, email))

    def _unproven(self, mail: FetchedMail, msg: InboundMessage, screening: Screening, ticket: Ticket | None,
                  consultant: Consultant, new_text: str, quoted: str, authority: Authority,
                  now: datetime) -> tuple[str, int | None]:
        """A consultant's address without proof: kept as an unverified internal note,
        nothing applied or relayed, and the consultant told how to answer."""
        ctx = self.ctx
        desk = self._active.desk
        ticket_id = ticket.id if ticket is not None else None
        row = self._message_row(ticket_id, msg, mail, screening, "consultant", new_text, quoted, internal=True,
                                notes=[f"unverified consultant mail, not applied, not relayed: {authority.reason}"])
        if ticket is not None:
            desk.add_event(ticket.id, "unverified_consultant_mail", mail.arrived_at, consultant.email,
                           reason=authority.reason, message_id=msg.message_id)
        self._authority_notice(consultant, msg, ticket_id, authority.reason, authority.code, authority.detail, now)
        disposition = "reply" if ticket is not None else "rejected"
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition=disposition,
                         reason=f"unverified consultant mail: {authority.reason}"[:2000],
                         arrived_at=mail.arrived_at, now=now, ticket_id=ticket_id, message_row_id=row)
        log.warning("%s %s -> %s unverified mail from consultant %s, not applied: %s", mail.source_key,
                    msg.message_id, ctx.ref(ticket_id) if ticket_id else "-", consultant.email, authority.reason)
        return disposition, ticket_id

    def _authority_notice(self, consultant: Consultant, msg: InboundMessage, ticket_id: int | None, reason: str,
                          code: str, detail: str, now: datetime, **more: str) -> None:
        """Tell the consultant, in their language, why their mail was kept unapplied and how to answer
        (``authority_notice``; within the hourly limit of automatic mail to one address)."""
        desk = self._active.desk
        if desk.automatic_counts.get(consultant.email, 0) >= self.ctx.config.support.max_auto_replies_per_hour:
            return
        desk.queue_mail(
            ticket=None, kind="authority_notice", template="authority_notice", language=consultant.language,
            recipients=[consultant.email], now=now, dedupe_key=f"authz:{msg.dedupe_key}"[:400],
            in_reply_to=msg.message_id, automatic=True, fresh=True,
            context={"ref": self.ctx.ref(ticket_id) if ticket_id is not None else "-", "subject": msg.subject,
                     "reason": reason, "reason_code": code, "detail": detail, **more,
                     "new_ticket_address": self.notifier.personal_address(desk.session, consultant.email)},
        )

    def _command_error(self, consultant: Consultant, msg: InboundMessage, context: dict[str, Any], now: datetime,
                       rate_limited: bool = True) -> None:
        """The consultant's refused commands (``command_error``, ``_command_error_context``), back to them."""
        self._active.desk.queue_mail(
            ticket=None, kind="command_error", template="command_error", language=consultant.language,
            recipients=[consultant.email], now=now, dedupe_key=f"cmderr:{msg.dedupe_key}"[:400],
            in_reply_to=msg.message_id, automatic=True, rate_limited=rate_limited, context=context)

    def _reply_proven(self, session: Session, msg: InboundMessage) -> tuple[bool, str]:
        """Whether a customer's reply may add people to the ticket: our server vouches
        for its From, or (without one configured) it answers maild's mail to that address."""
        authserv = self.ctx.config.trusted_authserv_id
        if authserv:
            return sender_authenticated(msg, authserv, msg.return_path or None)
        refs = [r for r in (*msg.references, *msg.in_reply_to) if r][-50:]
        if refs and msg.from_addr:
            # this batch's own mail (a reply to an acknowledgement queued minutes ago) is still
            # held by the desk: looked at there, so the batch is not written out for one query
            held = self._active.desk.rows.outbox_recipients(refs)
            if any(msg.from_addr in recipients for recipients in held):
                return True, "answers maild's mail to this address"
            stored = self._active.stored_recipients
            if stored is None:
                own = store.own_message_ids(refs)
                found: Iterable[list[str] | None] = session.scalars(
                    select(OutboxRow.recipients).where(OutboxRow.message_id.in_(own))) if own else ()
            else:  # stored before the batch, or written by it since
                queued = self._active.desk.rows.queued_recipients
                found = [*(r for ref in refs for r in stored.get(ref, ())),
                         *(queued[ref] for ref in refs if ref in queued)]
            for recipients in found:
                if msg.from_addr in (recipients or []):
                    return True, "answers maild's mail to this address"
        return False, "neither authenticated nor a reply to maild's mail to this address"

    def _is_support(self, address: str) -> bool:
        """The support address, with or without a plus part (a consultant's personal one)."""
        if address in self.ctx.support_addresses:
            return True
        local, _, domain = address.partition("@")
        return any(local.startswith(own.split("@")[0] + "+") and domain == own.split("@")[-1]
                   for own in self.ctx.support_addresses)

    def _present(self, at: datetime) -> list[Consultant]:
        """Consultants at work at ``at`` (presence, #15: their days, the calendar, absences), read once
        per batch; intake asks at processing time: who is there to read it now."""
        return self._active.desk.team.present(at)

    def _consultant_writers(self, session: Session, ticket_id: int) -> list[str]:
        return list(session.scalars(
            select(MessageRow.from_addr).where(MessageRow.ticket_id == ticket_id, MessageRow.role == "consultant",
                                               MessageRow.direction == "in", MessageRow.internal.is_(False))
            .distinct()))

    def _notify(self, ticket: Ticket, event: NotifyEvent, people: Sequence[Consultant], msg: InboundMessage,
                body: str, quoted: str, author: str, now: datetime) -> None:
        """One notification per consultant for the event this mail is (dedupe key: the mail's own,
        new in this transaction by construction, so no lookup)."""
        if not people or not self.ctx.config.notifications.enabled:
            return
        batch = self._active
        attachments = [NotifyAttachment(a.filename, a.content_type, a.size, a.sha256)
                       for a in msg.attachments if not a.inline]
        view = self.notifier.view(batch.desk, ticket, now, batch.minutes_left, batch.customers)
        self.notifier.notify(batch.desk, ticket, event, people, view=view, body=body, trimmed=bool(quoted.strip()),
                             attachments=attachments, author=author, source=msg.dedupe_key,
                             root_id=msg.message_id if event == "new" else None, now=now, fresh=True)

    def _on_behalf(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                   now: datetime) -> OnBehalf | tuple[str, int | None] | None:
        """A consultant's new mail (no ticket) with ``#customer``: the ticket to open on the
        customer's behalf; a disposition when the mail is refused; None without ``#customer``."""
        ctx = self.ctx
        desk = self._active.desk
        new_text, _quoted = msg.reply_split or split_reply(msg.text)
        new_text = cut_at_marker(new_text)
        parsed = parse_commands(new_text)
        wanted = next((c for c in parsed.commands if isinstance(c, CustomerCommand)), None)
        if wanted is None and not any(e.line.strip().lower().startswith(("#customer", "#klient"))
                                      for e in parsed.errors):
            return None
        consultant = ctx.consultant(msg.from_addr)
        assert consultant is not None
        authority = self._authority(session, msg, consultant.email)
        if not authority.granted:
            return self._unproven(mail, msg, screening, None, consultant, new_text, "", authority, now)
        commands = tuple(c for c in parsed.commands if not isinstance(c, CustomerCommand))
        errors = list(ParsedCommands(commands, parsed.body, parsed.errors,
                                     tuple(ln for c, ln in zip(parsed.commands, parsed.lines)
                                           if not isinstance(c, CustomerCommand))).check(ctx))
        request: OnBehalf | None = None
        if wanted is not None:
            try:
                request = self.on_behalf_request(session, wanted.who, parsed.body, consultant.email,
                                                 commands=commands, at=mail.arrived_at)
            except UnknownCustomer as exc:
                line_no, line = next(ln for c, ln in zip(parsed.commands, parsed.lines) if c is wanted)
                errors.append(CommandError(line_no, line, str(exc)))
        if errors or request is None:
            self._command_error(consultant, msg, _command_error_context(
                consultant.language, "", msg.subject, _error_rows(sorted(errors, key=lambda e: e.line_no))),
                now, rate_limited=False)
            desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="rejected",
                             reason="; ".join(f"line {e.line_no}: {e.reason}" for e in errors)[:2000],
                             arrived_at=mail.arrived_at, now=now)
            log.info("%s %s -> - #customer refused: %d errors", mail.source_key, msg.message_id, len(errors))
            return "rejected", None
        return request

    def on_behalf_request(self, session: Session, who: str, body: str, by: str | None, *,
                          commands: Sequence[Command] = (), acknowledge: bool = True,
                          at: datetime | None = None) -> OnBehalf:
        """The customer (by id or address) a ticket is opened for, with the contract their
        own mail would get; raises UnknownCustomer."""
        ctx = self.ctx
        who = who.strip()
        if "@" in who:
            customer = ctx.index.customer_for(who)
            requester = who.lower()
        else:
            customer = ctx.customer(who)
            requester = customer.addresses[0] if customer is not None and customer.addresses else ""
        if customer is None:
            raise UnknownCustomer(who)
        at = at or self.clock()
        day = at.astimezone(ctx.calendar.tz).date()
        packages = packages_of(customer)
        left = prepaid_left_minutes(session, packages, at, ctx.calendar.tz) if packages else {}
        probe = requester or (f"{customer.id}@{customer.domains[0]}" if customer.domains else "")
        if probe:
            resolution = resolve(probe, ctx.index, day, lambda cid: left.get(cid, 0))
        else:
            resolution = replace(resolve(f"{customer.id}@invalid.invalid", ctx.index, day, lambda cid: 0),
                                 customer=customer, verified=True,
                                 reason=f"customer {customer.id}: no address to resolve a contract by")
        return OnBehalf(by=by, requester=requester, requester_name=customer.name, resolution=resolution,
                        body=body, commands=tuple(commands), acknowledge=acknowledge)

    def open_on_behalf(self, who: str, subject: str, body: str, by: str | None, acknowledge: bool = True) -> int:
        """``maild tickets open``: the ticket a consultant's ``#customer`` mail opens, through
        the same batch (one transaction, the same rows and outbox mail). The request is
        recorded as a mail of its own (From the consultant or the support address), so the
        ticket's thread shows where it came from. Returns the ticket's number."""
        from email.message import EmailMessage
        from email.utils import format_datetime

        now = self.clock()
        cfg = self.ctx.config
        with self.sessions() as session:
            request = self.on_behalf_request(session, who, body, by, acknowledge=acknowledge, at=now)
        mail = EmailMessage()
        mail["From"] = by or cfg.support.address
        mail["To"] = cfg.support.address
        mail["Subject"] = subject
        mail["Date"] = format_datetime(now)
        message_id = store.new_message_id(self.ctx.domain, None, "opened")
        mail["Message-ID"] = f"<{message_id}>"
        mail.set_content(body or "(opened from the command line)")
        raw = mail.as_bytes()
        parsed = parse_one(raw, cfg.limits)
        if not isinstance(parsed, InboundMessage):
            raise MaildError(f"the request could not be recorded: {parsed}")
        request = replace(request, body=body or parsed.text)
        self._requests[parsed.dedupe_key] = request
        try:
            result = self.ingest_batch([FetchedMail(source_key=f"cli:{message_id}", raw=raw, arrived_at=now,
                                                    size=len(raw))], [parsed])
        finally:
            self._requests.pop(parsed.dedupe_key, None)
        if result.counts.get("ticket") != 1:
            raise MaildError(f"the ticket was not opened ({result.counts})")
        with self.sessions() as session:
            ticket_id = session.scalar(select(Intake.ticket_id).where(Intake.dedupe_key == parsed.dedupe_key))
        assert ticket_id is not None
        return int(ticket_id)

    # -------------------------------------------------------------- bounces

    def _bounce(self, session: Session, mail: FetchedMail, msg: InboundMessage, screening: Screening,
                now: datetime) -> tuple[str, int | None]:
        report = msg.report
        assert report is not None
        desk = self._active.desk
        original = None
        desk.sync()
        if report.original_message_id:
            original = session.scalar(select(OutboxRow).where(OutboxRow.message_id == report.original_message_id))
        if original is None or original.ticket_id is None:
            raise Discard(f"delivery report for mail we did not send ({report.original_message_id or 'no id'})")
        ticket = session.get(Ticket, original.ticket_id)
        assert ticket is not None
        row = self._message_row(ticket.id, msg, mail, screening, "system", msg.text[:4000], "",
                                internal=True, notes=[f"delivery failed: {report.status or '?'} {report.diagnostic}"[:500]])
        desk.add_event(ticket.id, "delivery_failed", mail.arrived_at, recipients=list(report.recipients),
                       status=report.status, permanent=report.permanent, diagnostic=report.diagnostic[:500],
                       outbox_id=original.id)
        recipients = [ticket.assigned_to] if ticket.assigned_to else [
            c.email for c in self.ctx.config.consultants if c.role == "consultant"] or [
            c.email for c in self.ctx.config.consultants]
        if recipients and original.kind not in CONSULTANT_KINDS:
            # (a consultant's own mailbox refusing their mail is recorded above; telling
            # them by mail would only bounce again)
            # in each consultant's language (it was Polish for all); the first group keeps the old key
            spoken = {c.email: c.language for c in self.ctx.config.consultants}
            languages = sorted({spoken.get(r, "pl") for r in recipients}, key=lambda lang: lang != "pl")
            for n, language in enumerate(languages):
                desk.queue_mail(
                    ticket=None, kind="bounce_notice", template="bounce_notice", language=language,
                    recipients=[r for r in recipients if spoken.get(r, "pl") == language], now=now,
                    dedupe_key=f"bounce:{original.id}" + (f":{language}" if n else ""), automatic=True,
                    context={"ref": self.ctx.ref(ticket.id), "subject": ticket.subject,
                             "failed": list(report.recipients), "status": report.status or "",
                             "permanent": report.permanent, "diagnostic": report.diagnostic[:500]},
                )
        desk.rows.intake(dedupe_key=msg.dedupe_key, source_key=mail.source_key, disposition="bounce",
                         reason=f"delivery report for {original.kind} {original.message_id}",
                         arrived_at=mail.arrived_at, now=now, ticket_id=ticket.id, message_row_id=row)
        return "bounce", ticket.id


# An unverified sender's subject, echoed whole from the support address, is a
# phishing text delivered to whoever the forged From names.
ACK_SUBJECT_CHARS = 80


def _error_rows(errors: Sequence[CommandError]) -> list[dict[str, Any]]:
    return [{"line_no": e.line_no, "line": e.line, "reason": e.reason, "code": e.code, "params": dict(e.params)}
            for e in errors]


def _consultant_disposition(internal: bool, silent: bool, relayed: bool) -> str:
    """What became of a consultant's mail, for its intake row and the log line."""
    if internal:
        return "internal note"
    if silent:
        return "commands only, not relayed"
    return "relayed" if relayed else "recorded (direct mail)"


def _command_error_context(language: str, ref: str, subject: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """What a consultant's refused commands mail says, with the commands' help from their table
    (``help_lines``, as the notifications list them): the mail had its own shorter list, which
    lacked #away, #back, #take and #customer and named #assign's argument otherwise."""
    return {"ref": ref, "subject": subject, "errors": errors, "commands": help_lines(language)}


def ack_subject(subject: str, verified: bool) -> str:
    """The subject the acknowledgement quotes: whole for a verified customer, else its first 80 characters."""
    if verified or len(subject) <= ACK_SUBJECT_CHARS:
        return subject
    return subject[:ACK_SUBJECT_CHARS].rstrip() + "…"


def _same_content(a: InboundMessage, b: InboundMessage) -> bool:
    """What a person wrote and sent, not how it travelled: headers added on the way and
    transfer encodings differ between two deliveries of one mail."""
    return ((a.from_addr, a.subject, a.text, a.date_header, [x.sha256 for x in a.attachments])
            == (b.from_addr, b.subject, b.text, b.date_header, [x.sha256 for x in b.attachments]))


def _unit_minutes(contract: Contract | None, default: int) -> int:
    """The occasional billing unit: a contract's own when it sets one, else the configured one."""
    if contract is not None and rules_of(contract.kind).billed_per_unit and contract.unit_minutes != DEFAULT_UNIT_MINUTES:
        return contract.unit_minutes
    return default
