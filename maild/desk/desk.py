"""The one way anything opens a ticket, adds a message, changes a ticket, books time,
writes an event or queues mail.

One ``TicketDesk`` per database session. Intake (a batch of mail), the sweeper,
the command line and the daemon's health alerts all change tickets through it,
so a rule such as "a resolved ticket mails the customer once" or "ticket mail
joins the ticket's thread" is written once. The desk reads its rules from the
pure modules (``rules``, ``billing.ledger``) and never imports intake.

Messages, events and outbox rows are append-only, so the desk holds them and
writes them with one multi-row INSERT per table (``store.BatchRows``): for an
ingest batch that is a third of its time saved over the ORM's unit of work.
``sync`` writes what is held (anything that reads those tables in the same
transaction calls it first); whatever is still held when the transaction
commits is written just before, so a caller that never reads back needs to do
nothing. Tickets, ledger rows and escalations stay ORM objects; the tickets opened
since the last write are inserted by one statement at ``sync`` and are then
persistent in the session, as after the ORM's flush (``store.insert_new_tickets``).
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from maild.billing.hours import MonthDraws, book_time, find_contract, prepaid_left_minutes
from maild.billing.reports import invalidate_snapshots
from maild.desk.context import DeskContext
from maild.rules.assignment import ticket_weight
from maild.rules.contracts import Resolution
from maild.rules.customers import Contract, Customer
from maild.rules.kinds import TIER_BY_KIND, UNVERIFIED_TIER, promises_reaction, rules_of
from maild.rules.prioritise import Priority
from maild.rules.reasons import OLD_MAIL, with_priority_set
from maild.rules.sla import plan_escalation, reaction_due, target_due
from maild.storage import store
from maild.storage.blobs import BlobStore, PackedBlob
from maild.storage.models import Escalation, LedgerRow, MessageRow, Ticket
from maild.storage.queries import CONSULTANT_KINDS as CONSULTANT_KINDS
from maild.storage.queries import NOTIFY_KINDS as NOTIFY_KINDS

if TYPE_CHECKING:
    from maild.desk.team import Team

log = logging.getLogger("maild.desk")
ledger_log = logging.getLogger("maild.ledger")
# pg_advisory_xact_lock key of a transaction that numbers new tickets ("maild-tk", see ``hold_ticket_numbers``)
TICKET_NUMBERS_LOCK_KEY = 0x6D61696C642D746B


class StoredFile(Protocol):
    """An attachment as the desk stores it (``intake.message.Attachment`` is one)."""

    @property
    def filename(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def data(self) -> bytes: ...


class TicketDesk:
    """Ticket changes for one session; see the module docstring.

    ``blobs`` is needed only to store attachments (``add_message``).
    """

    def __init__(self, ctx: DeskContext, session: Session, blobs: BlobStore | None = None) -> None:
        self.ctx = ctx
        self.session = session
        self.blobs = blobs
        self.rows = store.BatchRows(session)
        self._ticket_ids = store.RowIds(session, Ticket.__table__.name)
        # what this desk created and has not written yet, for a reply in the same batch
        self.pending_tickets: dict[int, Ticket] = {}
        self.pending_ids: dict[str, int] = {}
        # tickets ``load_tickets`` read (held here: the session's identity map holds its objects weakly)
        self._loaded: dict[int, Ticket] = {}
        # automatic mails queued per rate key (``store.rate_key``) and per domain in the
        # last hour: the caller seeds them (see ``count_recent_automatic``)
        self.automatic_counts: dict[str, int] = {}
        self.automatic_domain_counts: dict[str, int] = {}
        # per set of packages, minutes left, until a booking changes them
        self._prepaid_left: dict[tuple[str, ...], dict[str, int]] = {}
        # packages whose draws are read together with the first asked for (an ingest batch's
        # senders'), and what was read
        self.prepaid_hint: list[Contract] = []
        self._month_draws: MonthDraws | None = None
        # where the batch's attachments were packed before it (None: nowhere), read for all of them at
        # once (``know_blob_places``); a file not asked for there is asked for when its message is stored
        self._blob_places: dict[str, PackedBlob | None] = {}
        # place in the queue of each ticket this desk opened, when it was opened
        self.queue_places: dict[int, int] = {}
        # per ticket, the consultants' notifications on it as this transaction has them written (Message-ID,
        # recipients), oldest first: read for a batch's tickets at once, then kept up as the desk writes
        self._notifications: dict[int, list[tuple[str, list[str]]]] = {}
        self._team: Team | None = None
        event.listen(session, "before_commit", self._before_commit)

    # ------------------------------------------------------------ writing

    def hold_ticket_numbers(self) -> None:
        """On PostgreSQL, number the tickets this transaction opens one after the other under a
        lock held to its commit, instead of a round trip to the sequence per ticket (a batch
        opens hundreds). Called first in the transaction, before any other lock is taken, so
        two batches (the daemon's, ``maild tickets open``) only wait for each other. Without
        it each ticket draws its number from the sequence."""
        self._ticket_ids.hold(TICKET_NUMBERS_LOCK_KEY)

    def sync(self) -> None:
        """Write everything held so far, for a query that must see it; the tickets opened since
        the last write go first, by one INSERT (``store.insert_new_tickets``), not the flush."""
        store.insert_new_tickets(self.session)
        self.session.flush()
        outbox = self.rows.held_outbox() if self._notifications else ()
        self.rows.write()
        for row in outbox:
            notified = self._notifications.get(row["ticket_id"]) if row["kind"] in NOTIFY_KINDS else None
            if notified is not None:
                notified.append((row["message_id"], list(row["recipients"])))
        self._ticket_ids.settle()

    def discard(self) -> None:
        """Forget what is held: the savepoint it belonged to was rolled back."""
        self.rows.discard()
        self._notifications.clear()  # it may have written some

    def _before_commit(self, session: Session) -> None:
        self.sync()

    # ------------------------------------------------------------ reading

    def ticket(self, number: int) -> Ticket | None:
        """A ticket, also one opened by this desk and not written yet."""
        if not 1 <= number <= store.MAX_ROW_ID:  # a tag like [SUP-999999999999]: PostgreSQL refused the query
            return None
        return self.pending_tickets.get(number) or self._loaded.get(number) or self.session.get(Ticket, number)

    def load_tickets(self, numbers: Iterable[int]) -> None:
        """Load these tickets into the session at once (one query per 500), so that ``ticket`` finds
        each without a query of its own: a batch's replies asked for their tickets one by one."""
        wanted = sorted({n for n in numbers if n not in self.pending_tickets and n not in self._loaded})
        for i in range(0, len(wanted), 500):
            self._loaded.update((t.id, t) for t in self.session.scalars(
                select(Ticket).where(Ticket.id.in_(wanted[i:i + 500]))))

    def notifications(self, ticket_id: int) -> list[tuple[str, list[str]]]:
        """The consultants' notifications on the ticket (Message-ID, recipients), oldest first, as a query
        in this transaction finds them (those held and not written yet are not among them). The first
        question reads them for every ticket ``load_tickets`` read too (a batch's replies asked one query
        each, ~0.2 ms); what the desk writes after is added at ``sync``; a ticket it opened has none before."""
        if ticket_id not in self._notifications:
            wanted = {ticket_id, *(n for n in self._loaded if n not in self._notifications)}
            found = store.notifications_on(self.session, wanted)
            for number in wanted:
                self._notifications[number] = found.get(number, [])
        return self._notifications[ticket_id]

    def contract_of(self, ticket: Ticket) -> Contract | None:
        """The terms the ticket's contract was sold with (see ``billing.hours.find_contract``)."""
        return find_contract(self.session, ticket.contract_id, self.ctx.contract(ticket.contract_id),
                             self.ctx.calendar.tz)

    def prepaid_left(self, packages: Sequence[Contract], at: datetime) -> dict[str, int]:
        """Minutes left per package, read once per desk: only a booking changes them. With a
        ``prepaid_hint``, the draws of all those packages are read at the first question
        (``MonthDraws``), and each set's minutes at its own moment computed from them."""
        if not packages:
            return {}
        key = tuple(sorted(p.id for p in packages))
        if key not in self._prepaid_left:
            tz = self.ctx.calendar.tz
            if self.prepaid_hint:
                draws = self._month_draws
                if draws is None or not draws.covers(packages, at, tz):
                    wanted = {p.id: p for p in (*self.prepaid_hint, *packages)}
                    draws = self._month_draws = MonthDraws.load(self.session, list(wanted.values()), at, tz,
                                                                 store=True)
                self._prepaid_left[key] = draws.left_minutes(packages, at, tz)
            else:
                self._prepaid_left[key] = prepaid_left_minutes(self.session, packages, at, tz, store=True)
        return self._prepaid_left[key]

    @property
    def team(self) -> Team:
        """Presence and load, read once per desk (see ``maild.desk.team``)."""
        if self._team is None:
            from maild.desk.team import Team  # presence and the estimate: not every desk asks (time add)

            self._team = Team(self.session, self.ctx.config, self.ctx.calendar)
        return self._team

    def count_recent_automatic(self, addresses: Sequence[str], since: datetime) -> None:
        """Seed the counts of automatic mail per address and per domain (the acknowledgement limits)."""
        keys = {store.rate_key(a) for a in addresses if a}
        self.automatic_counts, self.automatic_domain_counts = store.recent_automatic(self.session, keys, since)

    def automatic_limit_reached(self, address: str, per_domain: bool = True) -> str | None:
        """Why no more automatic mail may go to ``address`` this hour, or None.

        ``per_domain``: also the limit per domain; False for a verified customer,
        whose colleagues may well open dozens of tickets an hour."""
        support = self.ctx.config.support
        key = store.rate_key(address)
        if self.automatic_counts.get(key, 0) >= support.max_auto_replies_per_hour:
            return (f"rate limit: {support.max_auto_replies_per_hour} automatic mails an hour to {address} "
                    f"(its plus-addresses and spellings count as one)")
        domain = store.rate_domain(key)
        if per_domain and self.automatic_domain_counts.get(domain, 0) >= support.max_auto_replies_per_domain_per_hour:
            return (f"rate limit: {support.max_auto_replies_per_domain_per_hour} automatic mails an hour to "
                    f"the domain {domain}")
        return None

    # ------------------------------------------------------------ tickets

    def open_ticket(self, *, subject: str, requester: str, requester_name: str, language: str,
                    resolution: Resolution, prio: Priority, reasons: list[str], created_at: datetime,
                    now: datetime, linked_to: int | None, participants: Sequence[str], actor: str,
                    page: bool = True, scope: str | None = None) -> Ticket:
        """A new ticket with its SLA clock, queue place and "created" event.

        ``page``: plan escalations; False for mail from before maild watched the
        mailbox, whose deadline is recorded but pages nobody. ``scope``: its scope of
        work, when known (``set_scope`` writes an event; a new ticket's needs none).
        """
        contract = resolution.contract
        due = target = None
        rules = rules_of(contract.kind) if contract is not None else None
        if contract is not None and rules is not None and rules.reaction_deadline and resolution.verified:
            due = reaction_due(created_at, contract.reaction_hours or 24, contract.reaction_clock, self.ctx.calendar)
        if contract is not None and rules is not None and rules.target_deadline and contract.target_hours:
            target = target_due(created_at, contract.target_hours, contract.reaction_clock, self.ctx.calendar)
        customer = resolution.customer
        values: dict[str, Any] = {
            "subject": subject, "status": "new", "requester": requester, "requester_name": requester_name,
            "language": language, "customer_id": customer.id if customer else None,
            "contract_id": contract.id if contract else None, "contract_kind": resolution.kind,
            "verified": resolution.verified, "tier": prio.tier, "priority": prio.priority, "peak": prio.peak,
            "reasons": reasons, "created_at": created_at, "updated_at": now, "reaction_due": due,
            "target_due": target, "escalation_level": 0, "linked_to": linked_to,
            "participants": store.participant_list(participants), "scope": scope,
        }
        if due is not None and not page:
            reasons.append(OLD_MAIL)
        elif due is not None:
            values["next_escalation_at"] = plan_escalation(
                created_at=created_at, due=due, clock=contract.reaction_clock if contract else "calendar",
                cal=self.ctx.calendar, settings=self.ctx.config.escalation, levels_sent=0,
                first_response_at=None, now=created_at,
            ).next_escalation_at
        values["id"] = number = self._ticket_ids.take()
        ticket = store.new_ticket(values)
        self.queue_places[number] = self.team.note_opened(prio.tier, prio.priority)
        self.session.add(ticket)
        self.pending_tickets[ticket.id] = ticket
        self._notifications[ticket.id] = []  # a new number: no outbox row can name it yet
        return ticket

    def auto_assign(self, ticket: Ticket, at: datetime) -> str | None:
        """Give a new verified ticket to a present consultant by ``[assignment] mode``.

        A customer's preferred consultant gets it when present; ``#assign`` and
        ``#take`` later win over this choice. With nobody present the ticket stays
        unassigned (its notification goes to the managers).
        """
        if ticket.assigned_to or not ticket.verified or self.ctx.config.assignment.mode == "none":
            return None
        customer = self.ctx.customer(ticket.customer_id)
        chosen = self.team.choose(at, preferred=customer.consultant if customer else None)
        if chosen is not None:
            self.assign(ticket, chosen, "maild", at, why=self.ctx.config.assignment.mode)
        return chosen

    def reassign_absent(self, at: datetime) -> list[tuple[Ticket, str | None, str]]:
        """Open tickets of a consultant who is away today go to a present one (same rule)."""
        return self.team.reassign_absent(
            at, assign=lambda ticket, to, when, why: self.assign(ticket, to, "maild", when, why=why))

    def created(self, ticket: Ticket, actor: str) -> None:
        """The "created" event, once the ticket's first message is in."""
        self.add_event(ticket.id, "created", ticket.created_at, actor, reasons=ticket.reasons)

    def add_participants(self, ticket: Ticket, addresses: Sequence[str]) -> None:
        store.add_participants(ticket, addresses)

    def add_message(self, ticket_id: int | None, *, message_id: str | None, direction: str, role: str, kind: str,
                    from_addr: str, from_name: str, to: Sequence[str], cc: Sequence[str], subject: str,
                    date: datetime, text_new: str, text_quoted: str = "", raw_sha256: str | None = None,
                    size: int = 0, internal: bool = False, notes: Sequence[str] = (),
                    attachments: Sequence[StoredFile] = (), reused_id: bool = False,
                    answered: bool | None = None) -> int:
        """A message on a ticket (or, ``ticket_id`` None, on none); returns its row id.

        ``answered``: for a consultant's inbound mail, whether the intake took it as an answer to the
        customer (``tables.messages``); the month report counts what the intake decided.

        ``reused_id``: an inbound mail kept under ``dup:<sha256>`` because another stored
        mail has its Message-ID; threading finds it in messages, where every other inbound
        mail is found through intake (``tables.MESSAGE_ID_LOOKUP``).

        Attachments are packed once per content: the same file again (a logo in
        every signature) only gets another row. Whether each was packed before is
        one query for the message's attachments, not one per file.
        """
        rows = self.rows
        row_id = rows.message(
            ticket_id=ticket_id, message_id=message_id, direction=direction, role=role, kind=kind,
            from_addr=from_addr, from_name=from_name, to_addrs=to, cc_addrs=cc, subject=subject, date=date,
            text_new=text_new, text_quoted=text_quoted, raw_sha256=raw_sha256, size=size, internal=internal,
            notes=notes, reused_id=reused_id, answered=answered,
        )
        if message_id and ticket_id is not None:
            self.pending_ids[message_id] = ticket_id
        if not attachments:  # every mail maild queues, most mail it reads
            return row_id
        unpacked = [att.sha256 for att in attachments if not rows.is_packed(att.sha256)]
        earlier = {sha: place for sha in unpacked if (place := self._blob_places.get(sha)) is not None}
        unknown = [sha for sha in unpacked if sha not in self._blob_places]
        if unknown:
            with self.session.no_autoflush:  # the index is written with the batch's rows, never through the ORM
                earlier.update(store.blob_places(self.session, unknown))
        for att in attachments:
            assert self.blobs is not None, "a desk that stores attachments needs the blob store"
            if (not rows.is_packed(att.sha256) and att.sha256 not in earlier
                    and not self.blobs.path_for(att.sha256).exists()):
                rows.packed(att.sha256, self.blobs.append(att.data))
            rows.attachment(message_row_id=row_id, filename=att.filename, content_type=att.content_type,
                            size=att.size, sha256=att.sha256)
        return row_id

    def know_blob_places(self, digests: Iterable[str]) -> None:
        """Read where each of these files (a batch's attachments) was packed before, in one query per
        500, for ``add_message``: it asked once per message with attachments (a round trip for one
        mail in ten of the backlog benchmark's). What this desk packs itself it knows (``BatchRows``)."""
        wanted = set(digests).difference(self._blob_places)
        if wanted:
            with self.session.no_autoflush:
                found = store.blob_places(self.session, wanted)
            self._blob_places.update((sha, found.get(sha)) for sha in wanted)

    def add_event(self, ticket_id: int, kind: str, at: datetime, actor: str = "maild", **detail: Any) -> None:
        self.rows.event(ticket_id, kind, at, actor, detail)

    def reopen(self, ticket: Ticket, at: datetime, actor: str, reasons: Sequence[str]) -> None:
        ticket.status, ticket.resolved_at, ticket.closed_at = "open", None, None
        self.add_event(ticket.id, "reopened", at, actor, reasons=list(reasons))

    def customer_answered(self, ticket: Ticket, at: datetime, actor: str) -> None:
        """A customer's reply puts a ticket waiting for them back in the queue."""
        if ticket.status == "waiting":
            ticket.status = "open"
            self.add_event(ticket.id, "status", at, actor, status="open", reason="customer replied")

    def first_response(self, ticket: Ticket, at: datetime, actor: str) -> None:
        """The first answer to the customer stops the SLA clock and its escalations."""
        if ticket.first_response_at is None:
            ticket.first_response_at = at
            ticket.next_escalation_at = None
            self.add_event(ticket.id, "first_response", at, actor)

    def set_status(self, ticket: Ticket, status: str, actor: str, at: datetime, now: datetime) -> None:
        """Change the status; resolving mails the requester once (their mail says how to reopen)."""
        old = ticket.status
        if old == status:
            return
        ticket.status = status
        if status == "resolved":
            ticket.resolved_at = at
            if ticket.requester:
                self.queue_mail(
                    ticket=ticket, kind="resolved", template="resolved", language=ticket.language,
                    recipients=[ticket.requester], now=now,
                    dedupe_key=f"resolved:{ticket.id}:{int(at.timestamp())}", automatic=True,
                    context={"ref": self.ctx.ref(ticket.id), "subject": ticket.subject,
                             # an unverified sender's name may be a forged lure ("Your bank")
                             "requester_name": ticket.requester_name if ticket.verified else "",
                             "reopen_days": self.ctx.config.support.reopen_days,
                             "from_name": self.ctx.config.from_name},
                )
        elif status == "closed":
            ticket.closed_at = at
        elif status in ("open", "waiting"):
            ticket.resolved_at, ticket.closed_at = None, None
        self.add_event(ticket.id, "status", at, actor, old=old, status=status)

    def close_quiet(self, ticket: Ticket, now: datetime) -> None:
        """A resolved ticket nobody wrote on for ``close_after_days``."""
        ticket.status, ticket.closed_at, ticket.updated_at = "closed", now, now
        self.add_event(ticket.id, "status", now, status="closed", reason="quiet after resolution")

    def assign(self, ticket: Ticket, to: str, actor: str, at: datetime, why: str = "") -> None:
        previous = ticket.assigned_to
        ticket.assigned_to, ticket.assigned_at = to, at
        if self._team is not None:
            self._team.note_assigned(to, at, ticket_weight(ticket.contract_kind, ticket.verified), previous)
        detail: dict[str, Any] = {"to": to}
        if previous:
            detail["from"] = previous
        if why:
            detail["why"] = why
        self.add_event(ticket.id, "assigned", at, actor, **detail)

    def set_scope(self, ticket: Ticket, scope: str, actor: str, at: datetime) -> None:
        """The ticket's scope of work (what its hours are booked as when a #time line names none)."""
        if ticket.scope == scope:
            return
        self.add_event(ticket.id, "scope", at, actor, scope=scope, was=ticket.scope)
        ticket.scope = scope

    def set_priority(self, ticket: Ticket, priority: str, reason: str, actor: str, at: datetime) -> None:
        self.add_event(ticket.id, "priority", at, actor, old=ticket.priority, new=priority, reason=reason)
        ticket.priority = priority
        # among the ticket's reasons too: the notifications and `tickets show` show them
        ticket.reasons = with_priority_set(ticket.reasons or [], priority, actor, reason)

    def verify(self, ticket: Ticket, actor: str, at: datetime) -> None:
        """A consultant vouches for the sender: the contract's tier, and for ``sla`` its clock."""
        ticket.verified = True
        ticket.tier = TIER_BY_KIND.get(ticket.contract_kind, UNVERIFIED_TIER)
        contract = self.ctx.contract(ticket.contract_id)
        if (contract is not None and promises_reaction(contract) and ticket.reaction_due is None
                and ticket.first_response_at is None):
            ticket.reaction_due = reaction_due(ticket.created_at, contract.reaction_hours or 24,
                                               contract.reaction_clock, self.ctx.calendar)
            ticket.next_escalation_at = at  # the sweeper plans the escalations from here
        self.add_event(ticket.id, "verified", at, actor, tier=ticket.tier)
        self.auto_assign(ticket, at)

    def record_escalation(self, ticket: Ticket, level: int, skipped: Sequence[int], breach: bool,
                          recipients: Sequence[str], now: datetime) -> bool:
        """An escalation level sent; returns whether it recorded a new breach."""
        self.session.add(Escalation(ticket_id=ticket.id, level=level, sent_at=now, skipped=list(skipped),
                                    breach=breach))
        ticket.escalation_level = level + 1
        new_breach = breach and ticket.breached_at is None
        if new_breach:
            ticket.breached_at = ticket.reaction_due
        self.add_event(ticket.id, "escalation", now, level=level + 1, skipped=[s + 1 for s in skipped],
                       recipients=list(recipients))
        return new_breach

    # ------------------------------------------------------------ time

    def book_time(self, ticket: Ticket, minutes: int, by: str, scope: str | None, note: str,
                  source_message_id: str | None, at: datetime) -> list[LedgerRow]:
        """Book minutes on the ticket's contract (see ``billing.hours.book_time``); queue the
        low-balance warning when this booking crossed the line."""
        ctx = self.ctx
        customer = ctx.customer(ticket.customer_id)
        booking = book_time(self.session, ticket, self.contract_of(ticket), customer, minutes, by, scope, note,
                            source_message_id, at, ctx.calendar.tz, ctx.config.ledger.low_balance_minutes)
        self._prepaid_left.clear()
        self._month_draws = None
        low = booking.low_balance
        if low is not None:
            self.queue_mail(
                ticket=ticket, kind="low_balance", template="low_balance", language=low.customer.language,
                recipients=[low.recipient], now=at,
                dedupe_key=f"lowbal:{low.customer.id}:{'+'.join(low.package_ids)}:{low.left_minutes <= 0}",
                automatic=True,
                context={"ref": ctx.ref(ticket.id), "customer_name": low.customer.name,
                         "left_minutes": max(low.left_minutes, 0),
                         "valid_until": _last_usable_day(low.customer, at.astimezone(ctx.calendar.tz).date()),
                         "rate_cents": _occasional_rate(low.customer, ctx.config.billing.occasional_hourly_rate_cents),
                         "from_name": ctx.config.from_name},
            )
            ledger_log.info("%s low prepaid balance for %s: %d min left", ctx.ref(ticket.id), low.customer.id,
                            low.left_minutes)
        self.add_event(ticket.id, "time", at, by, minutes=minutes, scope=scope, entries=[r.id for r in booking.rows])
        return booking.rows

    def reverse_time(self, entry: LedgerRow, by: str, reason: str, now: datetime) -> LedgerRow:
        """The opposite of a ledger row (rows are never edited); the caller checked it may be reversed."""
        reversal = LedgerRow(
            contract_id=entry.contract_id, customer_id=entry.customer_id, ticket_id=entry.ticket_id,
            minutes=-entry.minutes, overage=entry.overage, booked_at=now, by=by, scope=entry.scope,
            note=reason[:500], source_message_id=None, reverses=entry.id,
        )
        self.session.add(reversal)
        self.session.flush()
        invalidate_snapshots(self.session, reversal.contract_id, now, self.ctx.calendar.tz)
        self._prepaid_left.clear()
        self._month_draws = None
        if entry.ticket_id is not None:
            self.add_event(entry.ticket_id, "time_reversed", now, by, entry=entry.id, reversal=reversal.id,
                           minutes=-entry.minutes, reason=reason[:500])
        return reversal

    # ------------------------------------------------------------ mail

    def relay_recipients(self, ticket: Ticket, reached: Collection[str] = ()) -> tuple[list[str], list[str]]:
        """(To, Cc) of a consultant's answer: the customer and the ticket's other participants, but for those
        the consultant's own mail reached (``reached``: its To and Cc, lower case), who have it already."""
        ctx = self.ctx
        consultants = ctx.config.consultant_emails
        own = ctx.support_addresses
        to = [ticket.requester] if ticket.requester else []
        cc = [a for a in (ticket.participants or []) if a not in consultants and a not in own and a not in to]
        if reached:
            to, cc = [a for a in to if a not in reached], [a for a in cc if a not in reached]
            if not to:
                to, cc = cc[:1], cc[1:]
        return to, cc

    def relay(self, ticket: Ticket, body: str, consultant_name: str, attachments: Sequence[dict[str, Any]],
              dedupe_key: str, now: datetime, reached: Collection[str] = ()) -> str | None:
        """A consultant's answer to the customer (and the ticket's other participants), in the thread; None
        when the consultant's mail reached them all itself (``relay_recipients``)."""
        ctx = self.ctx
        to, cc = self.relay_recipients(ticket, reached)
        if reached and not to:
            return None
        self.sync()
        thread_ids = list(self.session.scalars(
            select(MessageRow.message_id).where(MessageRow.ticket_id == ticket.id, MessageRow.message_id.is_not(None),
                                                MessageRow.internal.is_(False),
                                                MessageRow.kind.not_in(CONSULTANT_KINDS)).order_by(MessageRow.id)
        ))
        last_customer = self.session.scalar(
            select(MessageRow.message_id).where(MessageRow.ticket_id == ticket.id, MessageRow.role == "customer",
                                                MessageRow.message_id.is_not(None)).order_by(MessageRow.id.desc()).limit(1)
        )
        return self.queue_mail(
            ticket=ticket, kind="relay", template="relay", language=ticket.language, recipients=to, cc=cc,
            now=now, dedupe_key=dedupe_key, in_reply_to=last_customer, references=[t for t in thread_ids if t],
            automatic=False, from_name=f"{consultant_name} ({ctx.config.from_name})",
            context={"ref": ctx.ref(ticket.id), "subject": ticket.subject, "body": body,
                     "consultant": consultant_name}, attachments=attachments,
        )

    def queue_mail(self, *, ticket: Ticket | None, kind: str, template: str, language: str,
                   recipients: Sequence[str], context: dict[str, Any], now: datetime, dedupe_key: str,
                   in_reply_to: str | None = None, references: Sequence[str] = (), automatic: bool = True,
                   rate_limited: bool = True, cc: Sequence[str] = (), from_name: str | None = None,
                   attachments: Sequence[dict[str, Any]] = (), html: dict[str, Any] | None = None,
                   fresh: bool = False, internal: bool = False, reply_to: str | None = None,
                   thread_text: str | None = None) -> str | None:
        """Queue one outgoing mail and, for ticket mail, its row in the thread;
        returns its Message-ID, or None when a mail with this dedupe key exists.

        ``automatic`` mail to a first recipient counts against that address's
        hourly limit unless ``rate_limited`` is False (alerts, statements).
        ``html``: an HTML alternative part with its images (``billing.pages.html_part``).
        ``fresh``: the dedupe key names something created in this transaction (or
        the caller just looked it up), so no lookup is needed (the unique index
        still guards it). ``internal``: its thread row is kept from the customer
        (a consultant's notification: its Message-ID must never reach the
        customer's References). ``reply_to``: a Reply-To header. ``thread_text``:
        what the thread row shows, when not the context's body.
        """
        ctx = self.ctx
        if not fresh:
            self.sync()
            if store.outbox_queued(self.session, dedupe_key):
                return None
        ticket_id = ticket.id if ticket is not None else None
        message_id = store.new_message_id(ctx.domain, ticket_id, kind)
        refs = [r for r in references if r]
        if in_reply_to and in_reply_to not in refs:
            refs.append(in_reply_to)
        full_context = dict(context)
        full_context["_headers"] = {
            "in_reply_to": in_reply_to or "", "references": refs[-20:], "cc": list(cc),
            "from_name": from_name or ctx.config.from_name,
            "ticket_ref": ctx.ref(ticket.id) if ticket is not None else "",
            "attachments": list(attachments),
        }
        if html is not None:
            full_context["_headers"]["html"] = html
        if reply_to:
            full_context["_headers"]["reply_to"] = reply_to
        rate_key = store.rate_key(recipients[0]) if automatic and rate_limited and recipients else None
        self.rows.outbox(
            dedupe_key=dedupe_key, kind=kind, template=template, language=language,
            recipients=[*recipients, *cc], context=full_context, message_id=message_id, now=now,
            ticket_id=ticket_id, automatic=automatic, rate_key=rate_key,
        )
        if rate_key:
            self.automatic_counts[rate_key] = self.automatic_counts.get(rate_key, 0) + 1
            domain = store.rate_domain(rate_key)
            self.automatic_domain_counts[domain] = self.automatic_domain_counts.get(domain, 0) + 1
        if ticket is not None:  # ticket mail also joins the ticket's thread
            self.add_message(
                ticket_id, message_id=message_id, direction="out", role="consultant" if kind == "relay" else "system",
                kind=kind, from_addr=ctx.config.from_address, from_name=from_name or ctx.config.from_name,
                to=recipients, cc=cc, subject="", date=now, internal=internal,
                text_new=str(context.get("body", "") if thread_text is None else thread_text)[:20000],
            )
        return message_id


class Person(Protocol):
    @property
    def email(self) -> str: ...
    @property
    def language(self) -> str: ...


def by_language(people: Sequence[Person]) -> list[tuple[str, list[str]]]:
    """Recipients grouped by their language, languages in a stable order: one mail per group."""
    return [(language, [p.email for p in people if p.language == language])
            for language in sorted({p.language for p in people})]


def _last_usable_day(customer: Customer, today: date) -> str:
    """The last day the customer's unexpired packages can be used (ISO), for the low-balance mail."""
    days = [c.valid_until for c in customer.contracts
            if rules_of(c.kind).packages and c.valid_until is not None and c.start <= today <= c.valid_until]
    return max(days).isoformat() if days else ""


def _occasional_rate(customer: Customer, default: int | None) -> int | None:
    """The rate after the packages: a package's own, else the customer's, else the configured one."""
    own = [c.hourly_rate_cents for c in customer.contracts if rules_of(c.kind).packages and c.hourly_rate_cents is not None]
    if own:
        return own[-1]
    return customer.occasional_hourly_rate_cents if customer.occasional_hourly_rate_cents is not None else default
