"""Queueing consultants' notifications, and what the authority rule needs from storage.

``notifications`` decides who hears of what; this module turns that into
outbox rows through the ``TicketDesk``, one per event and consultant, written
in the event's own transaction (its dedupe key makes it exactly once), and
answers the two questions about a consultant that need stored state: their
personal token and the Message-IDs of maild's mail to them.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from maild.config import Config, Consultant
from maild.desk.authority import TOKEN_SECRET_KEY, consultant_token, token_address
from maild.desk.notifications import (
    Event,
    NotifyAttachment,
    TicketView,
    dedupe_key,
    header_block,
    split_attachments,
)
from maild.rules.customers import Contract, Customer
from maild.rules.kinds import packages_of, rules_of
from maild.rules.prioritise import TIER_NAMES
from maild.storage.queries import (
    CONSULTANT_KINDS,
    NOTIFY_KINDS,
    Reader,
    get_state,
    insert_state_once,
    own_message_ids,
)
from maild.storage.tables import ledger, outbox

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from maild.desk.desk import TicketDesk
    from maild.storage.models import Ticket

__all__ = ["Notifier", "NOTIFY_KINDS", "CONSULTANT_KINDS", "contract_minutes_left"]

log = logging.getLogger("maild.notify")


def contract_minutes_left(session: Session, customer: Customer, contract: Contract, at: datetime,
                          tz: ZoneInfo) -> int | None:
    """What a notification shows as left on the contract: an sla's balance (carry-over
    plus this month's allowance minus use), a package's minutes; None for occasional."""
    from maild.billing.hours import prepaid_left_minutes
    from maild.billing.reports import contract_balances

    rules = rules_of(contract.kind)
    if rules.packages:
        return prepaid_left_minutes(session, packages_of(customer), at, tz, store=True).get(contract.id, 0)
    if rules.monthly_allowance:
        for balance in contract_balances(session, [customer], at, tz, store=True, allowance_only=True):
            if balance.contract_id == contract.id:
                return balance.balance_minutes
    return None


def sla_balances(session: Session, customers: Sequence[Customer], at: datetime,
                 tz: ZoneInfo) -> dict[str, int | None]:
    """Every sla (monthly allowance) contract's balance at ``at`` (``contract_minutes_left`` for all of them at once,
    storing the snapshots it had to compute as that does, so the next batch reads them instead of the history)."""
    from maild.billing.reports import contract_balances

    return {balance.contract_id: balance.balance_minutes
            for balance in contract_balances(session, customers, at, tz, store=True, allowance_only=True)}


class Notifier:
    """Notifications for one config; the token secret is read (or made) once per process."""

    def __init__(self, config: Config, tz: ZoneInfo) -> None:
        self.config = config
        self.tz = tz
        self._secret: bytes | None = None
        self._tokens: dict[str, str] = {}
        # the sla balances of the last batch that asked, and what they were read from (``_sla_balances``)
        self._sla_memo: tuple[tuple[object, ...], Sequence[Customer], dict[str, int | None]] | None = None

    # ------------------------------------------------------------ tokens

    def load(self, sessions: Callable[[], AbstractContextManager[Reader]]) -> None:
        """Read the secret tokens are derived from, creating it on first use in a
        transaction of its own (before a batch opens its own, which on SQLite holds
        the only write lock). Two processes creating it at once agree on the first.
        ``sessions``: ORM sessions, or ``engine.connect`` for a caller in Core."""
        if self._secret is not None:
            return
        with sessions() as session:
            value = get_state(session, TOKEN_SECRET_KEY)
        if not value:
            with sessions() as session, session.begin():
                insert_state_once(session, TOKEN_SECRET_KEY, secrets.token_hex(32), datetime.now(timezone.utc))
            with sessions() as session:
                value = get_state(session, TOKEN_SECRET_KEY)
        assert value
        self._secret = bytes.fromhex(value)

    def adopt(self, other: Notifier | None) -> Notifier:
        """Keep another notifier's secret (the config was reloaded)."""
        if other is not None:
            self._secret = other._secret
        return self

    def token(self, session: Reader, email: str) -> str:
        if self._secret is None:
            value = get_state(session, TOKEN_SECRET_KEY)
            if not value:
                raise RuntimeError("Notifier.load() must run before tokens are used")
            self._secret = bytes.fromhex(value)
        key = email.lower()
        if key not in self._tokens:
            self._tokens[key] = consultant_token(self._secret, key)
        return self._tokens[key]

    def personal_address(self, session: Reader, email: str) -> str:
        """``support+<token>@domain``: the consultant's address for new tickets on a customer's behalf."""
        return token_address(self.config.support.address, self.token(session, email))

    # ------------------------------------------------------------ what was sent to whom

    @staticmethod
    def sent_to(session: Reader, email: str, message_ids: Iterable[str]) -> set[str]:
        """Which of ``message_ids`` are maild's mail to ``email`` alone (notifications,
        escalations, digests, error replies): the references a consultant's reply may prove itself with."""
        ids = own_message_ids(dict.fromkeys(message_ids))[-50:]  # only maild's own can be in the outbox
        if not ids:
            return set()
        o = outbox.c
        rows = session.execute(select(o.message_id, o.recipients, o.kind).where(o.message_id.in_(ids)))
        wanted = email.lower()
        return {mid for mid, recipients, kind in rows
                if kind in CONSULTANT_KINDS and wanted in [str(r).lower() for r in recipients or []]}

    @staticmethod
    def previous(notified: Sequence[tuple[str, Sequence[str]]], email: str, limit: int = 10) -> list[str]:
        """Message-IDs of the notifications this consultant got on the ticket, oldest first, of the
        ticket's notifications (``TicketDesk.notifications``): their client threads the next one under them."""
        return [mid for mid, recipients in notified if email in (recipients or [])][-limit:]

    # ------------------------------------------------------------ queueing

    def _sla_balances(self, desk: TicketDesk, at: datetime) -> dict[str, int | None]:
        """``sla_balances``, read again only when what they are read from may have changed: the ledger
        (its last row), the day (a contract's end), the customers (a reload). Each batch of a backlog
        asked afresh and read the month's every ledger row (0.16 s a batch with a month of ~8,000
        bookings, where an empty ledger costs nothing: bench/README, thirteenth session). Not kept
        while this transaction has booked (a rolled-back booking's row number can come back)."""
        from maild.storage.models import LedgerRow

        session = desk.session
        customers = desk.ctx.customers
        if any(isinstance(o, LedgerRow) for o in (*session.new, *session.identity_map.values())):
            return sla_balances(session, customers, at, self.tz)
        key = (at.astimezone(self.tz).date(), session.scalar(select(func.max(ledger.c.id))))
        memo = self._sla_memo
        if memo is not None and memo[0] == key and memo[1] is customers:
            return memo[2]
        found = sla_balances(session, customers, at, self.tz)
        self._sla_memo = (key, customers, found)
        return found

    def view(self, desk: TicketDesk, ticket: Ticket, at: datetime, cache: dict[str, int | None],
             customers: Sequence[Customer] = ()) -> TicketView:
        """The header block's facts; ``cache`` keeps each contract's balance for the batch.

        The first sla contract asked for fills in every sla contract's balance: the
        month's ledger is read once per batch, not once per contract (a backlog
        touches dozens of customers, and each read was a scan of the month). The first
        package asked for likewise fills in the packages of ``customers`` (the batch's
        senders): each package's balance is its own draws, whoever else is asked with it.
        """
        ctx = desk.ctx
        customer = ctx.customer(ticket.customer_id)
        contract = ctx.contract(ticket.contract_id)
        left = None
        if contract is not None and customer is not None:
            if contract.id not in cache:
                rules = rules_of(contract.kind)
                if rules.monthly_allowance:
                    cache.update(self._sla_balances(desk, at))
                    cache.setdefault(contract.id, None)
                elif rules.packages:
                    from maild.billing.hours import prepaid_left_minutes

                    owners = {c.id: c for c in (*customers, customer)}
                    packages = [p for c in owners.values() for p in packages_of(c) if p.id not in cache]
                    found = prepaid_left_minutes(desk.session, packages, at, self.tz, store=True)
                    own = {p.id for p in packages_of(customer)}
                    cache[contract.id] = found.get(contract.id, 0) if contract.id in own else 0
                    for package in packages:
                        cache.setdefault(package.id, found.get(package.id, 0))
                else:
                    cache[contract.id] = contract_minutes_left(desk.session, customer, contract, at, self.tz)
            left = cache[contract.id]
        return TicketView(
            ref=ctx.ref(ticket.id), subject=ticket.subject,
            customer_name=customer.name if customer else (ticket.requester_name or ""),
            contract_id=ticket.contract_id or "", contract_kind=ticket.contract_kind,
            tier_name=TIER_NAMES[ticket.tier], priority=ticket.priority,
            reasons=tuple(str(r) for r in ticket.reasons or ()), reaction_due=ticket.reaction_due,
            minutes_left=left, assigned_to=ticket.assigned_to, requester=ticket.requester, status=ticket.status)

    def notify(self, desk: TicketDesk, ticket: Ticket, event: Event, people: Sequence[Consultant], *,
               view: TicketView, body: str, trimmed: bool, attachments: Sequence[NotifyAttachment],
               author: str, source: str, root_id: str | None, now: datetime, fresh: bool = False) -> list[str]:
        """Queue one notification per consultant in ``people``; returns the Message-IDs queued.

        ``source`` names the event for the dedupe key (the inbound mail's key);
        ``root_id`` is the customer's first Message-ID, under which every
        consultant's client threads the ticket's notifications.
        """
        settings = self.config.notifications
        if not settings.enabled or not people:
            return []
        attached, named = split_attachments(attachments, settings.attach_max_bytes)
        template = "notify_new" if event == "new" else "notify_reply"
        from_name = f"{view.customer_name or view.requester} via {self.config.from_name}"
        queued = []
        for person in people:
            context = header_block(view, self.tz, self.personal_address(desk.session, person.email),
                                   person.language, self.config.peak_windows)
            context.update(body=body, trimmed=trimmed, attached=attached, named=named, event=event, author=author)
            earlier = [] if event == "new" else self.previous(desk.notifications(ticket.id), person.email)
            references = [r for r in (root_id, *earlier) if r]
            message_id = desk.queue_mail(
                ticket=ticket, kind=template, template=template, language=person.language,
                recipients=[person.email], context=context, now=now,
                dedupe_key=dedupe_key(event, ticket.id, source, person.email),
                in_reply_to=earlier[-1] if earlier else None, references=references,
                automatic=True, rate_limited=False, from_name=from_name, attachments=attached, fresh=fresh,
                internal=True, reply_to=self.config.support.address, thread_text="",
            )
            if message_id:
                queued.append(message_id)
                log.info("%s %s notified %s (%s)", view.ref, message_id, person.email, event)
        return queued
