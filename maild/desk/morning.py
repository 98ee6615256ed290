"""The morning digest by mail: once per person and working day, with catch-up.

``digest`` decides the day and the rows (pure); this module reads the open queue,
picks who gets a digest (each present consultant; every manager, with the whole
queue and the previous working day's breaches) and queues the mails through the
``TicketDesk``. The dedupe key ``digest:<email>:<day>`` makes it once per person
and day across restarts and several daemons; the daemon asks every cycle, so a
daemon that was down at ``digest_at`` sends the day's digest when it starts.

What a digest lists is read in Core (``tables``) from a ``QueueView``: the desk
in the daemon, or a ``QueueReader`` on a Connection for ``maild digest``, which
prints it without loading the ORM.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Row, select

from maild.config import Consultant
from maild.desk.context import DeskContext
from maild.desk.digest import DigestTicket, breaches_on, digest_day, digest_key, digest_lines, previous_working_day
from maild.desk.notifier import Notifier
from maild.desk.team import Team, absences_in_digest
from maild.rules.prioritise import TIER_NAMES
from maild.storage.queries import OPEN_STATUSES, Reader, queue_order
from maild.storage.tables import outbox, tickets

if TYPE_CHECKING:
    from maild.desk.desk import TicketDesk

__all__ = ["Digest", "QueueReader", "QueueView", "queue_digests", "digest_for"]

log = logging.getLogger("maild.digest")


class Digest:
    """One person's digest: the template context (and what the HTML part shows)."""

    def __init__(self, person: Consultant, day: date, everything: bool, rows: list[dict[str, Any]],
                 breaches: list[dict[str, Any]], previous_day: date, new_ticket_address: str,
                 absences: list[dict[str, str]] | None = None, nobody_present: bool = False) -> None:
        self.absences = absences or []
        self.nobody_present = nobody_present
        self.person = person
        self.day = day
        self.everything = everything
        self.rows = rows
        self.breaches = breaches
        self.previous_day = previous_day
        self.new_ticket_address = new_ticket_address

    @property
    def context(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "everything": self.everything, "rows": self.rows,
                "overdue": sum(1 for r in self.rows if r["overdue"]), "breaches": self.breaches,
                "previous_day": self.previous_day.isoformat(), "new_ticket_address": self.new_ticket_address,
                "absences": self.absences, "nobody_present": self.nobody_present}


class QueueView(Protocol):
    """What a digest is read from: the ``TicketDesk`` is one."""

    @property
    def ctx(self) -> DeskContext: ...
    @property
    def session(self) -> Reader: ...
    @property
    def team(self) -> Team: ...


class QueueReader:
    """A ``QueueView`` on a Connection: the digest read without the desk (``maild digest``)."""

    def __init__(self, ctx: DeskContext, connection: Connection) -> None:
        self.ctx = ctx
        self.session = connection
        self.team = Team(connection, ctx.config, ctx.calendar)


def _open_queue(desk: QueueView) -> list[DigestTicket]:
    rows = desk.session.execute(select(tickets).where(tickets.c.status.in_(OPEN_STATUSES)).order_by(*queue_order()))
    return [_digest_ticket(desk, t) for t in rows]


def _digest_ticket(desk: QueueView, t: Row[Any]) -> DigestTicket:
    customer = desk.ctx.customer(t.customer_id)
    return DigestTicket(ref=desk.ctx.ref(t.id), subject=t.subject, customer=customer.name if customer else t.requester,
                        tier=TIER_NAMES[t.tier], priority=t.priority, status=t.status, assigned_to=t.assigned_to,
                        created_at=t.created_at, reaction_due=t.reaction_due, breached_at=t.breached_at)


def _breached(desk: QueueView, day: date) -> list[DigestTicket]:
    tz = desk.ctx.calendar.tz
    start = datetime.combine(day, time(0), tz)
    end = start + timedelta(days=1)
    T = tickets.c
    rows = desk.session.execute(select(tickets).where(T.breached_at >= start, T.breached_at < end).order_by(T.id))
    return [_digest_ticket(desk, t) for t in rows]


def digest_for(desk: QueueView, notifier: Notifier, person: Consultant, day: date, now: datetime,
               queue: Sequence[DigestTicket] | None = None) -> Digest:
    """What ``person``'s digest for ``day`` lists at ``now``."""
    everything = person.role == "manager"
    tickets = list(queue) if queue is not None else _open_queue(desk)
    previous = previous_working_day(day, desk.ctx.calendar)
    rows = digest_lines(tickets, now, who=person.email, everything=everything, language=person.language)
    breaches = breaches_on(_breached(desk, previous), previous, desk.ctx.calendar.tz) if everything else []
    # Who is away now or within two weeks, and whether anyone is at work today: the
    # team reads the digest to know who covers for whom.
    team = desk.team
    absences = [{"name": c.name, "email": c.email, "from": a.start.isoformat(), "until": a.until.isoformat(),
                 "note": a.note} for c, a in absences_in_digest(team, now)]
    return Digest(person, day, everything, rows, breaches, previous,
                  notifier.personal_address(desk.session, person.email), absences, not team.present(now))


def recipients(desk: QueueView, now: datetime) -> list[Consultant]:
    """Each present consultant (presence, #15) and every manager."""
    return [*desk.team.present(now), *desk.ctx.config.managers]


def queue_digest(desk: TicketDesk, digest: Digest, now: datetime, key: str | None = None) -> str | None:
    """Queue one digest mail (plain text and an HTML part); None when its key was queued before."""
    from maild.desk.digest_html import digest_html_part  # Jinja2's HTML templates: only for the mail

    person = digest.person
    html = digest_html_part(digest.rows, language=person.language, day=digest.day.isoformat(),
                            everything=digest.everything, breaches=digest.breaches,
                            previous_day=digest.previous_day.isoformat())
    return desk.queue_mail(
        ticket=None, kind="digest", template="digest", language=person.language, recipients=[person.email],
        context=digest.context, now=now, dedupe_key=key or digest_key(person.email, digest.day),
        automatic=True, rate_limited=False, html=html, reply_to=desk.ctx.config.support.address,
    )


def queue_digests(desk: TicketDesk, notifier: Notifier, now: datetime) -> int:
    """The day's digests not queued yet, if one is due now; returns how many were queued."""
    cfg = desk.ctx.config
    if not cfg.notifications.enabled:
        return 0
    day = digest_day(now, cfg.notifications.digest_at, desk.ctx.calendar)
    if day is None:
        return 0
    people = recipients(desk, now)
    keys = {digest_key(p.email, day): p for p in people}
    if not keys:
        return 0
    done = set(desk.session.scalars(select(outbox.c.dedupe_key).where(outbox.c.dedupe_key.in_(list(keys)))))
    todo = [p for k, p in keys.items() if k not in done]
    if not todo:
        return 0
    queue = _open_queue(desk)
    queued = 0
    for person in todo:
        if queue_digest(desk, digest_for(desk, notifier, person, day, now, queue), now) is not None:
            queued += 1
            log.info("digest %s for %s queued", day.isoformat(), person.email)
    return queued
