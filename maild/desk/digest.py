"""The morning digest: each present consultant's queue in one mail, the managers' whole queue.

Pure: which day is due (``digest_day``) and what a digest lists
(``digest_lines``) are functions of the clock, the calendar and plain ticket
facts. Sending it once per consultant and day, and catching up after a daemon
that was down at ``digest_at``, is the outbox's dedupe key
``digest:<email>:<day>``: the daemon asks every cycle, and only the first ask
of the day after ``digest_at`` queues a row.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

from maild.rules.wording import format_duration, plural, reader_language

__all__ = ["DigestTicket", "digest_day", "digest_lines", "previous_working_day", "digest_key", "age_text",
           "left_text"]


class _Calendar(Protocol):
    @property
    def tz(self) -> Any: ...
    def is_business_day(self, d: date) -> bool: ...


@dataclass(frozen=True)
class DigestTicket:
    """One open ticket as the digest shows it, given in queue order."""

    ref: str
    subject: str
    customer: str
    tier: str
    priority: str
    status: str
    assigned_to: str | None
    created_at: datetime
    reaction_due: datetime | None
    breached_at: datetime | None


def digest_day(now: datetime, digest_at: time | None, calendar: _Calendar) -> date | None:
    """The local day whose digest is due at ``now``: today, when it is a working day
    and ``digest_at`` has passed; None otherwise (or when the digest is off)."""
    if digest_at is None:
        return None
    local = now.astimezone(calendar.tz)
    if not calendar.is_business_day(local.date()) or local.time() < digest_at:
        return None
    return local.date()


def previous_working_day(day: date, calendar: _Calendar) -> date:
    d = day - timedelta(days=1)
    for _ in range(60):
        if calendar.is_business_day(d):
            return d
        d -= timedelta(days=1)
    return day - timedelta(days=1)


def digest_key(email: str, day: date) -> str:
    return f"digest:{email}:{day.isoformat()}"


def age_text(seconds: float, language: str = "en") -> str:
    """"2 days 3 h" / "1 h 5 min", in Polish "2 dni 3 godz." / "1 godz. 5 min": the units of the
    notifications' balance and deadlines (``format_duration``). The English digest read "2d 3h" and
    "0h 45m" beside a notification's "1 h 30 min" (the Polish one took these units before)."""
    minutes = max(0, int(seconds // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours = rest // 60
    lang = reader_language(language)
    if days:
        unit = "godz." if lang == "pl" else "h"
        return f"{plural(days, 'day', lang)} {hours} {unit}" if hours else plural(days, "day", lang)
    return format_duration(rest, lang)


def left_text(seconds: float, language: str = "en") -> str:
    """The time left or overdue, without a sign: the digest's "OVERDUE" / "PO TERMINIE" or
    "left" / "pozostało" before it already says which (an English one read "OVERDUE -1h 30m")."""
    return age_text(abs(seconds), language)


def digest_lines(tickets: Sequence[DigestTicket], now: datetime, *, who: str | None,
                 everything: bool, language: str = "en") -> list[dict[str, Any]]:
    """The digest's rows for one person: their tickets and the unassigned ones
    (``everything``: the whole queue, for managers), overdue first, else in the
    queue order given; ages and times left in ``language``."""
    chosen = [t for t in tickets if everything or t.assigned_to is None
              or (who is not None and t.assigned_to.lower() == who.lower())]
    overdue = [t for t in chosen if t.reaction_due is not None and t.reaction_due <= now]
    rest = [t for t in chosen if not (t.reaction_due is not None and t.reaction_due <= now)]
    rows = []
    for t in overdue + rest:
        left = (t.reaction_due - now).total_seconds() if t.reaction_due is not None else None
        rows.append({
            "ref": t.ref, "subject": t.subject, "customer": t.customer, "tier": t.tier, "priority": t.priority,
            "status": t.status, "assigned_to": t.assigned_to or "", "age": age_text((now - t.created_at).total_seconds(), language),
            "left": left_text(left, language) if left is not None else "", "overdue": left is not None and left <= 0,
            "seconds_left": None if left is None else int(left),
            "mine": bool(who and t.assigned_to and t.assigned_to.lower() == who.lower()),
        })
    return rows


def breaches_on(tickets: Sequence[DigestTicket], day: date, tz: Any) -> list[dict[str, Any]]:
    """Tickets whose reaction deadline was breached on ``day`` (local), for the managers."""
    return [{"ref": t.ref, "subject": t.subject, "customer": t.customer, "assigned_to": t.assigned_to or ""}
            for t in tickets if t.breached_at is not None and t.breached_at.astimezone(tz).date() == day]
