"""The month at a glance: the figures of ``report month`` that the hours and SLA reports do not hold.

Tickets per local day (with working days and peak windows), the reaction to
each sla ticket against its deadline, the open backlog by age at the month's
end, and per consultant the tickets answered and the median first response.
The ``build_*`` functions are pure over plain values, so the figures are tested
without a database; ``load_activity`` reads only the month's rows (and the
backlog still open at its end), never the whole history.

The SLA buckets count the same tickets, with the same rule, as
``reports.build_sla_report``: a ticket answered by its deadline is "met"
(bucketed by how much of its window the answer used), one answered after it or
still unanswered past it is "missed", one still unanswered before it is "open".
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, not_, or_, select

from maild.rules.replies import SIGNATURE_LINES
from maild.rules.kinds import rules_of
from maild.rules.calendar import BusinessCalendar
from maild.storage.tables import messages, tickets as ticket_rows
from maild.rules.peak import POLISH_DAYS_OFF, DaysOff, PeakWindow, days_off_kept_by
from maild.billing.reports import _median, month_bounds

if TYPE_CHECKING:
    from maild.storage.queries import Reader

# how much of the reaction window the first answer used; then the misses and the still open
REACTION_BUCKETS = ("0-25%", "25-50%", "50-75%", "75-100%", "late", "unanswered_missed", "unanswered_open")
# open backlog at the month's end by age: (label, upper bound in days, None = no bound)
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("<1d", 1), ("1-3d", 3), ("3-7d", 7), ("7-30d", 30), (">30d", None),
)


@dataclass(frozen=True)
class MonthTicket:
    """A ticket as the month's figures need it (``Ticket`` without the ORM)."""

    id: int
    customer_id: str | None
    contract_kind: str
    created_at: datetime
    reaction_due: datetime | None
    first_response_at: datetime | None


@dataclass(frozen=True)
class Answer:
    """A consultant's answer on a ticket: a mail that reached the customer (see ``answered_the_customer``),
    not an internal note, nor one that carried only commands."""

    ticket_id: int
    consultant: str
    at: datetime


@dataclass(frozen=True)
class DayCount:
    day: date
    tickets: int
    working: bool
    peaks: tuple[str, ...]  # names of the peak windows active that day


@dataclass(frozen=True)
class ConsultantStats:
    email: str
    name: str
    answered: int  # tickets with at least one answer of theirs in the month
    first_responses: int  # tickets whose first answer (by first_response_at, in the month) was theirs
    median_first_response_minutes: int | None


@dataclass(frozen=True)
class MonthActivity:
    month: str
    timezone: str
    days: tuple[DayCount, ...]
    peak_labels: tuple[tuple[str, str], ...]  # (window name, label) of the windows active in the month
    reactions: tuple[tuple[str, int], ...]
    backlog_at: datetime
    backlog: tuple[tuple[str, int], ...]
    consultants: tuple[ConsultantStats, ...]

    @property
    def tickets(self) -> int:
        return sum(d.tickets for d in self.days)


# ------------------------------------------------------------------ pure


def month_days(month: str, tz: ZoneInfo) -> list[date]:
    start, end = month_bounds(month, tz)
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def build_days(month: str, tz: ZoneInfo, created: Iterable[datetime], calendar: BusinessCalendar,
               windows: Sequence[PeakWindow], off: DaysOff = POLISH_DAYS_OFF) -> tuple[DayCount, ...]:
    """Tickets opened on each local day of the month, with whether it was a working day and its peaks
    (``off``: the statutory days off that move the windows' deadlines)."""
    counts: dict[date, int] = defaultdict(int)
    for at in created:
        counts[at.astimezone(tz).date()] += 1
    return tuple(
        DayCount(day=d, tickets=counts.get(d, 0), working=calendar.is_business_day(d),
                 peaks=tuple(w.name for w in windows if w.is_active(d, off)))
        for d in month_days(month, tz)
    )


def reaction_bucket(ticket: MonthTicket, now: datetime) -> str | None:
    """Where an sla ticket's reaction falls; None for a ticket that is not sla.

    The same rule as ``build_sla_report``: answered by the deadline is met,
    answered after it or unanswered past it missed, unanswered before it open.
    A met ticket is placed by the share of its window (created to deadline)
    that the answer took; one with no deadline counts as answered at once.
    """
    if not rules_of(ticket.contract_kind).reaction_deadline:
        return None
    due, answered = ticket.reaction_due, ticket.first_response_at
    if answered is None:
        return "unanswered_missed" if due is not None and due <= now else "unanswered_open"
    if due is not None and answered > due:
        return "late"
    window = (due - ticket.created_at).total_seconds() if due is not None else 0.0
    share = (answered - ticket.created_at).total_seconds() / window if window > 0 else 0.0
    for limit, name in ((0.25, "0-25%"), (0.5, "25-50%"), (0.75, "50-75%")):
        if share <= limit:
            return name
    return "75-100%"


def build_reactions(month: str, tz: ZoneInfo, tickets: Iterable[MonthTicket], now: datetime) -> tuple[tuple[str, int], ...]:
    """The sla tickets created in the month, counted per reaction bucket (every bucket listed)."""
    start, end = month_bounds(month, tz)
    counts = dict.fromkeys(REACTION_BUCKETS, 0)
    for ticket in tickets:
        if start <= ticket.created_at < end:
            bucket = reaction_bucket(ticket, now)
            if bucket is not None:
                counts[bucket] += 1
    return tuple(counts.items())


def build_backlog(open_created: Iterable[datetime], at: datetime) -> tuple[tuple[str, int], ...]:
    """Tickets still open at ``at`` by their age then (every bucket listed, youngest first)."""
    counts = {label: 0 for label, _ in AGE_BUCKETS}
    for created in open_created:
        age = at - created
        for label, days in AGE_BUCKETS:
            if days is None or age < timedelta(days=days):
                counts[label] += 1
                break
    return tuple(counts.items())


def build_consultants(month: str, tz: ZoneInfo, answers: Sequence[Answer], first_answers: Mapping[int, Answer],
                      created: Mapping[int, datetime], names: Mapping[str, str]) -> tuple[ConsultantStats, ...]:
    """Per consultant: tickets answered in the month and the median time to the first answer they gave.

    ``answers`` are the answers given in the month; ``first_answers`` the first
    answer of each ticket whose first response fell in the month, and
    ``created`` those tickets' creation times. Consultants in ``names`` are
    listed even with nothing to show, so a quiet month is visible too.
    """
    start, end = month_bounds(month, tz)
    answered: dict[str, set[int]] = defaultdict(set)
    for answer in answers:
        if start <= answer.at < end:
            answered[answer.consultant].add(answer.ticket_id)
    firsts: dict[str, list[int]] = defaultdict(list)
    for ticket_id, answer in first_answers.items():
        if start <= answer.at < end and ticket_id in created:
            firsts[answer.consultant].append(max(int((answer.at - created[ticket_id]).total_seconds()) // 60, 0))
    emails = sorted(set(names) | set(answered) | set(firsts), key=lambda e: (names.get(e, e).casefold(), e))
    return tuple(
        ConsultantStats(email=e, name=names.get(e, e), answered=len(answered.get(e, ())),
                        first_responses=len(firsts.get(e, ())), median_first_response_minutes=_median(firsts.get(e, [])))
        for e in emails
    )


def activity_json(activity: MonthActivity) -> dict[str, Any]:
    """The ``activity`` object of ``report month --json``; the charts are drawn from it."""
    return {
        "tickets": activity.tickets,
        "days": [{"date": d.day.isoformat(), "tickets": d.tickets, "working": d.working, "peaks": list(d.peaks)}
                 for d in activity.days],
        "peaks": [{"name": name, "label": label} for name, label in activity.peak_labels],
        "reactions": dict(activity.reactions),
        "backlog_at": activity.backlog_at.isoformat().replace("+00:00", "Z"),
        "backlog": dict(activity.backlog),
        "consultants": [
            {"email": c.email, "name": c.name, "answered": c.answered, "first_responses": c.first_responses,
             "median_first_response_minutes": c.median_first_response_minutes}
            for c in activity.consultants
        ],
    }


# ------------------------------------------------------------------ loading


def answered_the_customer() -> ColumnElement[bool]:
    """A consultant's mail (a ``messages`` row, inbound) that answered the customer, as the intake decided
    when it took the mail in (``messages.answered``, since 0019): relayed, or sent to the customer directly,
    with words or a file for them; the same decision made it the ticket's first answer. Not an internal
    note, nor a mail of commands only ("#take", "#time 1h30m") or of commands and a signature. An answer of
    a file alone counts: the intake relays it (the text rule below did not count it).

    Rows stored before 0019 (NULL) are judged by their text, as the report always did: not an internal
    note, and text for the customer once the command block is off, which the intake stored starting at
    its first non-blank line, so a mail of commands only has an empty text or one that starts with a
    signature line (``rules.replies.says_something`` in SQL)."""
    M = messages.c
    signature_only = or_(*(M.text_new.like(f"{line}{end}%") for line in SIGNATURE_LINES for end in ("\n", "\r\n")),
                         M.text_new.in_(SIGNATURE_LINES))
    by_text = and_(M.answered.is_(None), M.internal.is_(False), M.text_new != "", not_(signature_only))
    return and_(M.role == "consultant", M.direction == "in", or_(M.answered.is_(True), by_text))


def load_activity(session: Reader, month: str, calendar: BusinessCalendar, windows: Sequence[PeakWindow],
                  consultants: Mapping[str, str], now: datetime, language: str = "en") -> MonthActivity:
    """The month's activity, read with queries bounded by the month (and the backlog open at its end).

    ``consultants`` maps each consultant's address to their name. For the
    running month the backlog is taken now rather than at the month's end.
    """
    tz = calendar.tz
    T, M = ticket_rows.c, messages.c
    start, end = month_bounds(month, tz)
    tickets = [
        MonthTicket(id=r.id, customer_id=r.customer_id, contract_kind=r.contract_kind, created_at=r.created_at,
                    reaction_due=r.reaction_due, first_response_at=r.first_response_at)
        for r in session.execute(
            select(T.id, T.customer_id, T.contract_kind, T.created_at, T.reaction_due,
                   T.first_response_at).where(T.created_at >= start, T.created_at < end))
    ]
    backlog_at = min(end, now)
    still_open = session.scalars(
        select(T.created_at).where(
            T.created_at < backlog_at,
            or_(T.resolved_at.is_(None), T.resolved_at >= backlog_at),
            or_(T.closed_at.is_(None), T.closed_at >= backlog_at),
            # a ticket closed or resolved without a stamp (an import) has no place in the backlog
            or_(T.status.in_(("new", "open", "waiting")),
                and_(T.resolved_at.is_not(None), T.resolved_at >= backlog_at),
                and_(T.closed_at.is_not(None), T.closed_at >= backlog_at)),
        )
    )
    open_created = list(still_open)
    answer_rows = session.execute(
        select(M.ticket_id, M.from_addr, M.date).where(
            answered_the_customer(), M.ticket_id.is_not(None), M.date >= start, M.date < end)
    )
    answers = [Answer(ticket_id=r.ticket_id, consultant=r.from_addr.casefold(), at=r.date) for r in answer_rows]
    firsts_due = session.execute(
        select(T.id, T.created_at).where(T.first_response_at >= start, T.first_response_at < end)
    )
    created = {r.id: r.created_at for r in firsts_due}
    first_answers: dict[int, Answer] = {}
    rows = session.execute(
        select(M.ticket_id, M.from_addr, T.first_response_at)
        .join(ticket_rows, T.id == M.ticket_id)
        .where(T.first_response_at >= start, T.first_response_at < end, answered_the_customer())
        .order_by(M.ticket_id, M.id)
    )
    for r in rows:
        if r.ticket_id not in first_answers:
            first_answers[r.ticket_id] = Answer(r.ticket_id, r.from_addr.casefold(), r.first_response_at)
    days = build_days(month, tz, (t.created_at for t in tickets), calendar, windows,
                      days_off_kept_by(calendar))
    active = {name for d in days for name in d.peaks}
    return MonthActivity(
        month=month, timezone=tz.key, days=days,
        peak_labels=tuple((w.name, w.label_for(language)) for w in windows if w.name in active),
        reactions=build_reactions(month, tz, tickets, now),
        backlog_at=backlog_at, backlog=build_backlog(open_created, backlog_at),
        consultants=build_consultants(month, tz, answers, first_answers, created,
                                      {k.casefold(): v for k, v in consultants.items()}),
    )
