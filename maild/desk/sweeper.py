"""The timer side of the daemon: SLA escalations, closing quiet resolved tickets, and the
one reminder a customer gets before a package with hours left expires.

It reads only tickets whose indexed ``next_escalation_at`` has come, so its cost
grows with the tickets that are due, not with the open queue. The due tickets'
first lines are read in one query and the new rows are flushed once at the end
(no autoflush per ticket), so a sweep is a handful of statements, not a few per
ticket.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from collections.abc import Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sqlalchemy.orm import sessionmaker

from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk, by_language
from maild.desk.notifier import Notifier
from maild.outbound.render import first_lines
from maild.storage import store
from maild.storage.models import MessageRow, Ticket
from maild.rules.kinds import rules_of
from maild.rules.sla import plan_escalation, time_left_text
from maild.rules.wording import format_local_time

log = logging.getLogger("maild.sla")


@dataclass
class SweepResult:
    examined: int = 0
    escalations: int = 0
    breaches: int = 0
    closed: int = 0
    reminders: int = 0
    reassigned: int = 0


class Sweeper:
    def __init__(self, ctx: DeskContext, sessions: sessionmaker[Session], notifier: Notifier | None = None) -> None:
        self.ctx = ctx
        self.sessions = sessions
        # tells a consultant who is handed an absent colleague's ticket
        self.notifier = notifier

    def sweep(self, now: datetime, limit: int = 1000) -> SweepResult:
        result = SweepResult()
        with self.sessions() as session, session.begin():
            desk = TicketDesk(self.ctx, session)
            due = store.tickets_due_for_sweep(session, now, limit)
            if due:
                excerpts = _first_texts(session, [t.id for t in due])
                with session.no_autoflush:
                    for ticket in due:
                        result.examined += 1
                        self._escalate(desk, ticket, now, result, excerpts.get(ticket.id, ""))
            moved = desk.reassign_absent(now)
            for ticket, to, was in moved:
                result.reassigned += 1
                log.info("%s reassigned from %s to %s (away)", self.ctx.ref(ticket.id), was, to)
            if moved and self.notifier is not None and self.ctx.config.notifications.enabled:
                self.notifier.load(self.sessions)
                texts = _first_texts(session, [t.id for t, _, _ in moved])
                balances: dict[str, int | None] = {}
                for ticket, to, was in moved:
                    person = self.ctx.consultant(to) if to else None
                    if person is None:
                        continue
                    view = self.notifier.view(desk, ticket, now, balances)
                    self.notifier.notify(desk, ticket, "new", [person], view=view, body=texts.get(ticket.id, ""),
                                         trimmed=False, attachments=[], author=was,
                                         source=f"reassigned:{was}:{now.date().isoformat()}", root_id=None, now=now)
            cutoff = now - timedelta(days=self.ctx.config.support.close_after_days)
            for ticket in store.resolved_older_than(session, cutoff):
                desk.close_quiet(ticket, now)
                result.closed += 1
            result.reminders = remind_expiring_packages(desk, now)
        return result

    def _escalate(self, desk: TicketDesk, ticket: Ticket, now: datetime, result: SweepResult,
                  first_message: str) -> None:
        ctx = self.ctx
        cfg = ctx.config
        if ticket.reaction_due is None or ticket.first_response_at is not None or ticket.status in ("resolved", "closed"):
            ticket.next_escalation_at = None
            return
        contract = desk.contract_of(ticket)
        clock = contract.reaction_clock if contract is not None else "calendar"
        decision = plan_escalation(
            created_at=ticket.created_at, due=ticket.reaction_due, clock=clock, cal=ctx.calendar,
            settings=cfg.escalation, levels_sent=ticket.escalation_level, first_response_at=None, now=now,
        )
        ticket.next_escalation_at = decision.next_escalation_at
        if decision.send_level is None:
            return
        level = cfg.escalation.levels[decision.send_level]
        if level.recipients == "consultants":
            # The assignee when present, else whoever is present; with nobody at work
            # (a holiday week) the managers, so that a warning never goes nowhere.
            assignee = ctx.consultant(ticket.assigned_to) if ticket.assigned_to else None
            if assignee is not None and (assignee.role == "manager"
                                         or desk.team.is_present(assignee, desk.team.local_day(now))):
                people = [assignee]
            else:
                people = desk.team.present(now) or list(cfg.managers) or list(cfg.consultants)
        else:
            people = list(cfg.managers) or list(cfg.consultants)
        breach = level.recipients == "managers+breach"
        ref = ctx.ref(ticket.id)
        customer = ctx.customer(ticket.customer_id)
        for language, recipients in by_language(people):
            desk.queue_mail(
                ticket=None, kind="escalation", template="escalation", language=language,
                recipients=recipients, now=now, dedupe_key=f"esc:{ticket.id}:{decision.send_level}:{language}",
                # Levels go out in order and escalation_level records the last one
                # sent, so this key is new; the unique index still guards it.
                automatic=True, fresh=True,
                context={
                    "ref": ref, "subject": ticket.subject, "level": decision.send_level + 1,
                    "levels": len(cfg.escalation.levels), "percent": level.permille // 10,
                    "skipped": [s + 1 for s in decision.skipped_levels], "breach": breach or decision.breach,
                    "customer": customer.name if customer else (ticket.requester or "?"),
                    "contract_id": ticket.contract_id or "", "requester": ticket.requester,
                    "due_local": format_local_time(ticket.reaction_due, cfg.calendar.timezone, language),
                    "timezone": cfg.calendar.timezone,  # named after the time, as the notifications do
                    "time_left": time_left_text(ticket.reaction_due, now, language),
                    "excerpt": first_lines(first_message), "assigned_to": ticket.assigned_to or "",
                },
            )
        if desk.record_escalation(ticket, decision.send_level, decision.skipped_levels, breach,
                                  [p.email for p in people], now):
            result.breaches += 1
        result.escalations += 1
        log.warning("%s escalation level %d to %s%s", ref, decision.send_level + 1,
                    ", ".join(p.email for p in people),
                    f" (levels {', '.join(str(s + 1) for s in decision.skipped_levels)} passed while down)"
                    if decision.skipped_levels else "")


def remind_expiring_packages(desk: TicketDesk, now: datetime) -> int:
    """One mail per prepaid package that still has hours and expires within
    ``[packages] expiry_reminder_days``: how many hours lapse on which day.

    Once per package: the outbox's unique dedupe key (``expiry:<contract>``) holds it
    across sweeps and restarts. Only packages inside the window are looked at, so
    a sweep costs nothing for customers without one.
    """
    ctx = desk.ctx
    days = ctx.config.ledger.expiry_reminder_days
    if days <= 0:
        return 0
    today = now.astimezone(ctx.calendar.tz).date()
    horizon = today + timedelta(days=days)
    sent = 0
    for customer in ctx.customers:
        expiring = [c for c in customer.contracts if rules_of(c.kind).packages and c.valid_until is not None
                    and c.start <= today <= c.valid_until <= horizon and (c.end is None or c.end >= c.valid_until)]
        recipient = customer.billing_address or next(iter(customer.addresses), None)
        if not expiring or recipient is None:
            continue
        packages = [c for c in customer.contracts if rules_of(c.kind).packages]
        for package in expiring:
            key = f"expiry:{package.id}"
            if store.outbox_queued(desk.session, key):
                continue
            left = desk.prepaid_left(packages, now).get(package.id, 0)
            if left <= 0:
                continue
            assert package.valid_until is not None
            queued = desk.queue_mail(
                ticket=None, kind="expiry_reminder", template="expiry_reminder", language=customer.language,
                recipients=[recipient], now=now, dedupe_key=key, automatic=True, rate_limited=False, fresh=True,
                context={"customer_name": customer.name, "left_minutes": left,
                         "valid_until": package.valid_until.isoformat(), "from_name": ctx.config.from_name},
            )
            if queued is not None:
                sent += 1
                log.info("package %s of %s expires %s with %d min left: reminder queued", package.id, customer.id,
                         package.valid_until, left)
    return sent


def _first_texts(session: Session, ticket_ids: Sequence[int]) -> Mapping[int, str]:
    """The text of each ticket's first message, for the escalation excerpt, in one query."""
    first_ids = (
        select(func.min(MessageRow.id)).where(MessageRow.ticket_id.in_(ticket_ids))
        .group_by(MessageRow.ticket_id).scalar_subquery()
    )
    rows = session.execute(select(MessageRow.ticket_id, MessageRow.text_new).where(MessageRow.id.in_(first_ids)))
    return {ticket_id: text or "" for ticket_id, text in rows if ticket_id is not None}
