"""Who is at work on a given day: consultants' own working days and their absences.

Presence is decided per local calendar day, not per hour: a consultant present
on a day hears of new work at any hour of it (the mail waits in their inbox),
while the business calendar alone decides deadlines. A public holiday or a
closed day of the business calendar is nobody's working day.

Absences come from two places that both count: the config file (planned
holidays) and the database (a sudden sick day recorded with ``maild consultants
away`` or ``#away``). Callers merge them before asking.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal, Protocol

from maild.errors import MaildError

__all__ = [
    "Absence",
    "AbsenceError",
    "WEEKDAY_NAMES",
    "covering",
    "is_present",
    "next_absence",
    "parse_range",
    "parse_weekdays",
]

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
AbsenceSource = Literal["config", "database"]


class AbsenceError(MaildError):
    """An absence that cannot be right: a bad date, an end before its start."""


@dataclass(frozen=True)
class Absence:
    """Days away, both ends inclusive, in the business time zone's calendar."""

    start: date
    until: date
    note: str = ""
    source: AbsenceSource = "config"

    def __post_init__(self) -> None:
        if self.until < self.start:
            raise AbsenceError(f"absence ends {self.until.isoformat()} before it starts {self.start.isoformat()}")

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.until

    def describe(self) -> str:
        span = self.start.isoformat() if self.start == self.until else f"{self.start.isoformat()}..{self.until.isoformat()}"
        return f"{span} ({self.note})" if self.note else span


class WorkingCalendar(Protocol):
    """The part of the business calendar presence needs: holidays and closed days."""

    def is_business_day(self, d: date) -> bool: ...


def covering(absences: Iterable[Absence], day: date) -> Absence | None:
    """The absence that covers ``day``, if any (the earliest-starting one)."""
    hits = [a for a in absences if a.covers(day)]
    return min(hits, key=lambda a: (a.start, a.until)) if hits else None


def is_present(day: date, *, days: frozenset[int] | None, absences: Iterable[Absence],
               calendar: WorkingCalendar) -> bool:
    """A consultant is present on one of their own weekdays that is a business day and no absence covers.

    ``days`` None means the business calendar's working days, which
    ``calendar.is_business_day`` already answers (with holidays and open/closed days).
    """
    if not calendar.is_business_day(day):
        return False
    if days is not None and day.weekday() not in days:
        return False
    return covering(absences, day) is None


def next_absence(absences: Iterable[Absence], today: date) -> Absence | None:
    """The absence in progress today, or else the next one to start."""
    ahead = [a for a in absences if a.until >= today]
    return min(ahead, key=lambda a: (a.start, a.until)) if ahead else None


def present_days(start: date, count: int, *, days: frozenset[int] | None, absences: Sequence[Absence],
                 calendar: WorkingCalendar) -> list[date]:
    """The present days among the ``count`` calendar days from ``start``."""
    return [d for d in (start + timedelta(days=i) for i in range(count))
            if is_present(d, days=days, absences=absences, calendar=calendar)]


_RANGE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*(?:(?:\.\.|–|—)\s*(\d{4}-\d{2}-\d{2}))?\s*$")


def parse_range(text: str) -> tuple[date, date]:
    """``2026-12-21..2027-01-03`` (or one date) as an inclusive pair of dates."""
    m = _RANGE.match(text)
    if m is None:
        raise AbsenceError(f"{text.strip()!r} is not a date or a range like 2026-12-21..2027-01-03")
    try:
        start = date.fromisoformat(m[1])
        until = date.fromisoformat(m[2]) if m[2] else start
    except ValueError as exc:
        raise AbsenceError(f"{text.strip()!r}: {exc}") from exc
    if until < start:
        raise AbsenceError(f"{text.strip()!r}: the end is before the start")
    return start, until


def parse_weekdays(names: Sequence[str]) -> frozenset[int]:
    """``["mon", "tue"]`` as weekday numbers (Monday 0)."""
    out: set[int] = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in WEEKDAY_NAMES:
            raise AbsenceError(f"{name!r} is not a weekday (one of {', '.join(WEEKDAY_NAMES)})")
        out.add(WEEKDAY_NAMES.index(key))
    if not out:
        raise AbsenceError("no working day given")
    return frozenset(out)
