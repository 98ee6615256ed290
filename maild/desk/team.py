"""The team as the desk sees it on a given day: who is present, how loaded, who gets the next ticket.

The rules (presence, assignment, the estimate) are pure and live in
``maild.rules``; this module feeds them from the config and the database:
absences from both places, open tickets per assignee, the last 30 days of first
answers. Everything it reads is bounded by the open queue or by 30 days, never
by the whole history.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from statistics import median
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, and_, delete, func, insert, or_, select, update

from maild.config import Config, Consultant
from maild.errors import MaildError
from maild.rules.assignment import Candidate, choose_assignee, ticket_weight
from maild.rules.calendar import BusinessCalendar
from maild.rules.estimate import expected_by, handling_rate
from maild.rules.presence import Absence, covering, is_present, next_absence
from maild.storage.queries import OPEN_STATUSES, Reader, dialect_name
from maild.storage.tables import absences as absence_rows
from maild.storage.tables import events, tickets

if TYPE_CHECKING:
    from maild.storage.models import Ticket

__all__ = ["Team", "TeamError", "MemberStats"]

log = logging.getLogger("maild.team")
UTC = timezone.utc
HISTORY_DAYS = 30


class TeamError(MaildError):
    """An absence or a consultant that cannot be recorded as asked."""


@dataclass(frozen=True)
class MemberStats:
    """One line of ``maild consultants list``."""

    consultant: Consultant
    present: bool
    next_absence: Absence | None
    open_assigned: int
    answered_30d: int
    median_first_response_minutes: int | None


class Team:
    """Presence and assignment for one database session.

    It reads and writes ``tables`` in Core, so a command that only reads presence and load
    (``consultants``, ``tickets list --json``, ``digest``) runs it on a Connection without the
    ORM; only ``reassign_absent`` (the sweep's, through the desk) loads tickets as ORM objects.
    """

    def __init__(self, session: Reader, config: Config, calendar: BusinessCalendar | None = None) -> None:
        self.session = session
        self.config = config
        self.calendar = calendar or BusinessCalendar(config.calendar)
        self._absences: dict[str, tuple[Absence, ...]] | None = None
        # Read once per team (one per batch or sweep) and kept current by what this
        # team assigns or sees opened: a backlog of new tickets costs a query, not
        # a query per ticket.
        self._day_candidates: tuple[date, dict[str, int], dict[str, datetime | None]] | None = None
        self._queue_counts: dict[tuple[int, str], int] | None = None
        self._rate: dict[date, float | None] = {}
        self._overtaking: dict[tuple[date, int, str], float] = {}
        self._coming: dict[date, list[tuple[date, int]]] = {}

    # ------------------------------------------------------------ presence

    def local_day(self, at: datetime) -> date:
        return at.astimezone(self.calendar.tz).date()

    def consultant(self, email: str) -> Consultant:
        wanted = email.strip().casefold()
        for c in self.config.consultants:
            if c.email.casefold() == wanted:
                return c
        raise TeamError(f"{email} is not a consultant in the config")

    def absences(self) -> dict[str, tuple[Absence, ...]]:
        """Every consultant's absences, from the config and the database together."""
        if self._absences is None:
            found: dict[str, list[Absence]] = {c.email: list(c.away) for c in self.config.consultants}
            for row in self.session.execute(select(absence_rows).order_by(absence_rows.c.start)):
                found.setdefault(row.consultant, []).append(
                    Absence(row.start, row.until, row.note, "database"))
            self._absences = {k: tuple(v) for k, v in found.items()}
        return self._absences

    def is_present(self, consultant: Consultant, day: date) -> bool:
        return is_present(day, days=consultant.days, absences=self.absences().get(consultant.email, ()),
                          calendar=self.calendar)

    def present(self, at: datetime) -> list[Consultant]:
        """Consultants (not managers) present on ``at``'s local day."""
        return self.present_on(self.local_day(at))

    def present_on(self, day: date) -> list[Consultant]:
        return [c for c in self.config.consultants if c.role == "consultant" and self.is_present(c, day)]

    # ------------------------------------------------------------ assignment

    def open_load(self, emails: Iterable[str]) -> dict[str, int]:
        """Open tickets per assignee, weighted by tier."""
        wanted = list(emails)
        load = {e: 0 for e in wanted}
        if not wanted:
            return load
        rows = self.session.execute(
            select(tickets.c.assigned_to, tickets.c.contract_kind, tickets.c.verified, func.count())
            .where(tickets.c.assigned_to.in_(wanted), tickets.c.status.in_(OPEN_STATUSES))
            .group_by(tickets.c.assigned_to, tickets.c.contract_kind, tickets.c.verified))
        for who, kind, verified, n in rows:
            if who is not None:
                load[who] = load.get(who, 0) + ticket_weight(kind, bool(verified)) * int(n)
        return load

    def last_assigned(self, emails: Iterable[str]) -> dict[str, datetime | None]:
        """Each consultant's last assignment, one query each that reads the end of
        ``ix_tickets_assigned_last`` (one row, on SQLite and PostgreSQL alike), where a ``max`` grouped over
        an ``IN`` list read every ticket each of them was ever given (0.34 s a batch at 1M mails)."""
        at = tickets.c.assigned_at
        return {e: self.session.scalar(select(at).where(tickets.c.assigned_to == e, at.is_not(None))
                                       .order_by(at.desc()).limit(1))
                for e in emails}

    def candidates(self, at: datetime, exclude: Iterable[str] = ()) -> list[Candidate]:
        day = self.local_day(at)
        if self._day_candidates is None or self._day_candidates[0] != day:
            people = [c.email for c in self.present(at)]
            self._day_candidates = (day, self.open_load(people), self.last_assigned(people))
        _, load, last = self._day_candidates
        skip = {e.casefold() for e in exclude}
        return [Candidate(e, load[e], last[e]) for e in load if e.casefold() not in skip]

    def note_assigned(self, email: str, at: datetime, weight: int, previous: str | None = None) -> None:
        """Keep the cached loads current after an assignment made through this team's session."""
        if self._day_candidates is None:
            return
        _, load, last = self._day_candidates
        if email in load:
            load[email] += weight
            last[email] = at
        if previous in load:
            load[previous] = max(0, load[previous] - weight)

    def choose(self, at: datetime, preferred: str | None = None, exclude: Iterable[str] = ()) -> str | None:
        """The present consultant who should get a new ticket now, or None."""
        return choose_assignee(self.candidates(at, exclude), self.config.assignment.mode, preferred)

    def reassign_absent(self, at: datetime, assign: Callable[[Ticket, str, datetime, str], None],
                        ) -> list[tuple[Ticket, str | None, str]]:
        """Open tickets whose assignee is absent today go to a present consultant (same rule).

        ``assign(ticket, to, at, why)`` is the desk's (``TicketDesk.reassign_absent``):
        a ticket changes hands only through the desk, which writes the event and
        keeps this team's loads current (``note_assigned``). Returns (ticket, new
        assignee or None, old assignee). With nobody present a ticket stays with
        its assignee: moving it to nobody would hide it from the digest of the one
        person who will be back first.
        """
        day = self.local_day(at)
        absent = [c for c in self.config.consultants
                  if c.role == "consultant" and not self.is_present(c, day)
                  and covering(self.absences().get(c.email, ()), day) is not None]
        moved: list[tuple[Ticket, str | None, str]] = []
        if not absent:
            return moved
        from maild.storage.models import Ticket  # the desk changes them as ORM objects

        query = (select(Ticket).where(Ticket.assigned_to.in_([c.email for c in absent]),
                                      Ticket.status.in_(OPEN_STATUSES)).order_by(Ticket.tier, Ticket.id))
        if dialect_name(self.session) == "postgresql":
            # Several daemons sweep one database: a ticket another one is moving is left to it.
            query = query.with_for_update(skip_locked=True, of=Ticket)
        tickets = self.session.scalars(query).all()
        for ticket in tickets:
            old = ticket.assigned_to or ""
            new = self.choose(at, exclude=[old])
            if new is None:
                continue
            assign(ticket, new, at, f"{old} is away")
            moved.append((ticket, new, old))
            log.info("ticket %s reassigned from %s to %s: %s is away", ticket.id, old, new, old)
        return moved

    # ------------------------------------------------------------ absences recorded at run time

    def record_absence(self, email: str, start: date, until: date, note: str, by: str, at: datetime) -> None:
        consultant = self.consultant(email)
        if until < start:
            raise TeamError(f"the absence ends {until.isoformat()} before it starts {start.isoformat()}")
        self.session.execute(insert(absence_rows).values(consultant=consultant.email, start=start, until=until,
                                                         note=note, created_at=at, created_by=by))
        self._absences = None
        log.info("%s away %s..%s recorded by %s", consultant.email, start.isoformat(), until.isoformat(), by)

    def end_absence(self, email: str, at: datetime, by: str) -> int:
        """``back``: recorded absences covering today end yesterday; later ones are dropped.

        An absence from the config file cannot be ended here (the file would bring
        it back on the next reload): that is an error naming the file.
        """
        consultant = self.consultant(email)
        today = self.local_day(at)
        from_config = covering(consultant.away, today)
        A = absence_rows.c
        dropped: CursorResult[Any] = self.session.execute(  # type: ignore[assignment]
            delete(absence_rows).where(A.consultant == consultant.email, A.start >= today))
        cut: CursorResult[Any] = self.session.execute(  # type: ignore[assignment]
            update(absence_rows).where(A.consultant == consultant.email, A.start < today,
                                       A.until >= today).values(until=today - timedelta(days=1)))
        changed = (dropped.rowcount or 0) + (cut.rowcount or 0)
        self._absences = None
        if from_config is not None and not changed:
            raise TeamError(f"{consultant.email} is away by the config file ({from_config.describe()}): "
                            f"change it in {self.config.path}")
        log.info("%s back from %s (%d absence(s) ended) by %s", consultant.email, today.isoformat(), changed, by)
        return changed

    # ------------------------------------------------------------ the queue estimate

    def coming_capacity(self, at: datetime, days: int = 60) -> list[tuple[date, int]]:
        """The coming business days (today first) with the number of consultants present on each."""
        start = self.local_day(at)
        out = []
        for i in range(days):
            day = start + timedelta(days=i)
            if self.calendar.is_business_day(day):
                out.append((day, len(self.present_on(day))))
        return out

    def _first_responses(self, at: datetime) -> list[tuple[str, datetime, datetime]]:
        since = at - timedelta(days=HISTORY_DAYS)
        rows = self.session.execute(
            select(events.c.actor, events.c.at, tickets.c.created_at).join(tickets, tickets.c.id == events.c.ticket_id)
            .where(events.c.kind == "first_response", events.c.at >= since, events.c.at < at))
        return [(actor, when, created) for actor, when, created in rows]

    def handling_rate(self, at: datetime) -> float | None:
        answered: Counter[date] = Counter(self.local_day(when) for _, when, _ in self._first_responses(at))
        present: dict[date, int] = {}
        today = self.local_day(at)
        for i in range(1, HISTORY_DAYS + 1):
            day = today - timedelta(days=i)
            if self.calendar.is_business_day(day):
                present[day] = len(self.present_on(day))
        return handling_rate(answered, present)

    def overtaking_rate(self, at: datetime, tier: int, priority: str) -> float:
        """Tickets that rank ahead of (tier, priority) arriving per business day, over the last 30 days."""
        since = at - timedelta(days=HISTORY_DAYS)
        today = self.local_day(at)
        days = sum(1 for i in range(1, HISTORY_DAYS + 1) if self.calendar.is_business_day(today - timedelta(days=i)))
        if not days:
            return 0.0
        ahead = self.session.scalar(
            select(func.count()).select_from(tickets).where(
                tickets.c.created_at >= since, tickets.c.created_at < at,
                or_(tickets.c.tier < tier, and_(tickets.c.tier == tier, tickets.c.priority < priority)))) or 0
        return int(ahead) / days

    def expected_by(self, position: int, at: datetime, rate: float | None = None, *, tier: int | None = None,
                    priority: str = "P3") -> date | None:
        """When a ticket at ``position`` is likely answered; with its tier, later arrivals that overtake count.

        The day's rate, overtaking rates and capacity are read once per team and day.
        """
        day = self.local_day(at)
        if rate is None:
            if day not in self._rate:
                self._rate[day] = self.handling_rate(at)
            rate = self._rate[day]
        if rate is None:
            return None
        overtaking = 0.0
        if tier is not None:
            key = (day, tier, priority)
            if key not in self._overtaking:
                self._overtaking[key] = self.overtaking_rate(at, tier, priority)
            overtaking = self._overtaking[key]
        if day not in self._coming:
            self._coming[day] = self.coming_capacity(at)
        return expected_by(position, self._coming[day], rate, overtaking)

    def note_opened(self, tier: int, priority: str) -> int:
        """Count a ticket just opened into the queue; returns its place (1-based).

        The place among open tickets by (tier, priority): a new ticket is the newest of
        its group, so everyone in its group and above it is ahead. The counts are
        read once per team and kept current by what it opens.
        """
        if self._queue_counts is None:
            # grouped by status first, in ix_tickets_queue's order: the open queue is counted straight off the
            # index instead of every open ticket being sorted into a temporary B-tree (58,000 open: 17 -> 7 ms)
            counts: dict[tuple[int, str], int] = {}
            for _status, tr, pr, n in self.session.execute(
                    select(tickets.c.status, tickets.c.tier, tickets.c.priority, func.count())
                    .where(tickets.c.status.in_(OPEN_STATUSES)).group_by(tickets.c.status, tickets.c.tier, tickets.c.priority)):
                counts[(int(tr), str(pr))] = counts.get((int(tr), str(pr)), 0) + int(n)
            self._queue_counts = counts
        key = (tier, priority)
        self._queue_counts[key] = self._queue_counts.get(key, 0) + 1
        return sum(n for k, n in self._queue_counts.items() if k <= key)

    # ------------------------------------------------------------ the list

    def stats(self, at: datetime) -> list[MemberStats]:
        today = self.local_day(at)
        emails = [c.email for c in self.config.consultants]
        open_counts: dict[str, int] = {e: 0 for e in emails}
        for who, n in self.session.execute(
                select(tickets.c.assigned_to, func.count()).where(tickets.c.assigned_to.in_(emails),
                                                                tickets.c.status.in_(OPEN_STATUSES))
                .group_by(tickets.c.assigned_to)):
            if who is not None:
                open_counts[who] = int(n)
        waits: dict[str, list[float]] = defaultdict(list)
        for actor, when, created in self._first_responses(at):
            waits[actor].append((when - created).total_seconds() / 60)
        out = []
        for c in self.config.consultants:
            mine = waits.get(c.email, [])
            out.append(MemberStats(
                consultant=c,
                present=c.role == "consultant" and self.is_present(c, today),
                next_absence=next_absence(self.absences().get(c.email, ()), today),
                open_assigned=open_counts.get(c.email, 0),
                answered_30d=len(mine),
                median_first_response_minutes=round(median(mine)) if mine else None,
            ))
        return out


def absences_in_digest(team: Team, at: datetime, horizon_days: int = 14) -> list[tuple[Consultant, Absence]]:
    """Absences in progress or starting within ``horizon_days``: what the digest lists."""
    today = team.local_day(at)
    out = []
    for c in team.config.consultants:
        for a in team.absences().get(c.email, ()):
            if a.until >= today and a.start <= today + timedelta(days=horizon_days):
                out.append((c, a))
    return sorted(out, key=lambda pair: (pair[1].start, pair[0].email))

