"""The business calendar: when the consultancy is open, and business-time arithmetic.

SLA reaction deadlines on a ``business`` clock only run while support is open, and on a
``working_days`` clock through whole working days (00:00-24:00 local), so every
deadline, escalation threshold and "time left" figure goes through this module. Times
in and out are tz-aware; results are UTC because that is what is stored. Opening hours
are wall-clock times in the configured zone, resolved with zoneinfo on each date, so a
DST change shortens or lengthens a business day by exactly the real time it loses or
gains and nothing else moves.
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from types import ModuleType
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from maild import installed_version
from maild.errors import MaildError

log = logging.getLogger("maild.calendar")

UTC = timezone.utc
_MINUTE = timedelta(minutes=1)
_MIDNIGHT = time(0, 0)
# A calendar with no business time for this long is misconfigured; without this bound a
# deadline search on such a calendar would never end.
_MAX_CLOSED_DAYS = 400


class CalendarError(MaildError, ValueError):
    """The calendar settings cannot describe opening hours; names the setting at fault."""


@dataclass(frozen=True)
class CalendarSettings:
    """Opening hours of support.

    ``closes == time(0, 0)`` means midnight at the end of the day, so ``opens=time(0, 0),
    closes=time(0, 0)`` on all seven days is a 24-hour service. ``open_days`` win over
    weekends and public holidays (a Saturday worked in lieu); a date may not be both in
    ``closed_days`` and ``open_days``.
    """

    timezone: str = "Europe/Warsaw"
    working_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    opens: time = time(8, 0)
    closes: time = time(16, 0)
    holidays_country: str | None = "PL"
    holidays_subdiv: str | None = None
    closed_days: tuple[date, ...] = ()
    open_days: tuple[date, ...] = ()
    holidays_language: str | None = None


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be a tz-aware datetime, got naive {value.isoformat()}")


def check_settings(settings: CalendarSettings) -> ZoneInfo:
    """The settings' own checks, which need no holiday tables: the zone, the hours, the days.

    Loading a config runs these; the holiday settings (country, subdivision,
    language) are checked where a ``BusinessCalendar`` is built (the daemon,
    ``maild check``, the reports with deadlines), so a command that only reads
    the queue does not load the ``holidays`` library's country tables.
    """
    try:
        tz = ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CalendarError(f"calendar.timezone: unknown time zone {settings.timezone!r}") from exc
    if settings.opens.tzinfo is not None or settings.closes.tzinfo is not None:
        raise CalendarError("calendar.opens/closes: give wall-clock times without a time zone")
    if settings.closes != _MIDNIGHT and settings.opens >= settings.closes:
        raise CalendarError(
            f"calendar.opens: {settings.opens.isoformat('minutes')} is not before "
            f"calendar.closes {settings.closes.isoformat('minutes')}"
        )
    bad_days = [d for d in settings.working_days if not 0 <= d <= 6]
    if bad_days:
        raise CalendarError(f"calendar.working_days: {bad_days} are not weekdays 0 (Monday) .. 6 (Sunday)")
    if not settings.working_days and not settings.open_days:
        raise CalendarError("calendar.working_days: empty, so support would never be open")
    clash = sorted(set(settings.closed_days) & set(settings.open_days))
    if clash:
        raise CalendarError(
            f"calendar.open_days: {', '.join(d.isoformat() for d in clash)} also listed in calendar.closed_days"
        )
    return tz


def holidays_library() -> ModuleType:
    """The ``holidays`` library, loading only the country tables asked for.

    Its ``holidays.countries`` package imports all of its ~250 country modules
    whichever one is wanted (``country_holidays("PL")`` loaded the Netherlands,
    Iran and Fiji too: 0.27 G instructions, about 0.07 s of every daemon start
    and ``maild check``). The library finds a country through its own registry,
    by module name (``holidays.countries.poland``), so the package only needs to
    exist with its folder to import from: it is registered without running its
    ``__init__``. Left as the library made it when the package is already
    imported or not laid out so; ``tests/rules/test_calendar.py`` compares the
    holidays found with the library's own way.
    """
    import holidays

    if "holidays.countries" not in sys.modules:
        import importlib.util

        spec = importlib.util.find_spec("holidays.countries")
        if spec is not None and spec.submodule_search_locations:
            sys.modules["holidays.countries"] = importlib.util.module_from_spec(spec)
    return holidays


class HolidayTables(Protocol):
    """Where a calendar keeps the holidays it had the library compute, between processes.

    ``load`` gives back what ``save`` stored under the same key, or None. The key
    names the country, subdivision, language setting and the library's version,
    so an entry holds exactly what the library answered for those settings.
    """

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, entry: dict[str, Any]) -> None: ...


def holidays_version() -> str:
    """The installed ``holidays`` library's version, read from its metadata (the library is not imported)."""
    return installed_version("holidays")


class BusinessCalendar:
    """Answers "is support open", and adds or measures business time.

    Business time is the union of one interval per business day, computed in UTC from
    the local opening and closing wall-clock times of that date.

    ``tables``: kept holidays (``HolidayTables``). Importing the ``holidays`` library
    and its country table cost 0.22 G instructions of every daemon start and ``maild
    check`` before any year was computed; with an entry kept for these settings and
    this version of the library, its settings were checked by the library when the
    entry was made and its years are read back, and the library is loaded only for a
    year not kept yet (which is then kept too).
    """

    def __init__(self, settings: CalendarSettings, tables: HolidayTables | None = None) -> None:
        self.settings = settings
        self.tz: ZoneInfo = check_settings(settings)
        self._working_days = frozenset(settings.working_days)
        self._closed_days = frozenset(settings.closed_days)
        self._open_days = frozenset(settings.open_days)
        self._holidays_by_year: dict[int, dict[date, str]] = {}
        self._language: str | None = None
        self._tables = tables
        self._key = ""
        if settings.holidays_country is not None and tables is not None:
            self._key = "|".join((settings.holidays_country, settings.holidays_subdiv or "",
                                  settings.holidays_language or "", holidays_version()))
            if self._read_kept(tables.load(self._key)):
                return
        if settings.holidays_country is not None:
            holidays = holidays_library()
            try:
                probe = holidays.country_holidays(settings.holidays_country, subdiv=settings.holidays_subdiv)
            except NotImplementedError as exc:
                key = "calendar.holidays_subdiv" if settings.holidays_subdiv else "calendar.holidays_country"
                raise CalendarError(f"{key}: {exc}") from exc
            language = settings.holidays_language or probe.default_language
            if settings.holidays_language and settings.holidays_language not in probe.supported_languages:
                raise CalendarError(
                    f"calendar.holidays_language: {settings.holidays_language!r} not one of "
                    f"{', '.join(probe.supported_languages)}"
                )
            self._language = language
            self._keep()

    def _read_kept(self, entry: dict[str, Any] | None) -> bool:
        """Take the kept language and years; False when there is no usable entry."""
        if not isinstance(entry, dict):
            return False
        try:
            language, years = entry["language"], entry["years"]
            by_year = {int(year): {date.fromisoformat(day): str(name) for day, name in days.items()}
                       for year, days in years.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        if language is not None and not isinstance(language, str):
            return False
        self._language, self._holidays_by_year = language, by_year
        return True

    def _keep(self) -> None:
        if self._tables is None or not self._key:
            return
        self._tables.save(self._key, {
            "language": self._language,
            "years": {str(year): {day.isoformat(): name for day, name in sorted(days.items())}
                      for year, days in sorted(self._holidays_by_year.items())},
        })

    def _holidays(self, year: int) -> dict[date, str]:
        cached = self._holidays_by_year.get(year)
        if cached is None:
            if self.settings.holidays_country is None:
                cached = {}
            else:
                found = holidays_library().country_holidays(
                    self.settings.holidays_country,
                    subdiv=self.settings.holidays_subdiv,
                    years=year,
                    language=self._language,
                )
                cached = dict(found.items())
            self._holidays_by_year[year] = cached
            if self.settings.holidays_country is not None:
                self._keep()
        return cached

    def public_holidays(self, year: int) -> frozenset[date]:
        """The configured country's public holidays of ``year`` (not the closed or open days)."""
        return frozenset(self._holidays(year))

    def holiday_name(self, d: date) -> str | None:
        """Name of the public holiday on ``d`` (for "we are closed for ..." texts)."""
        return self._holidays(d.year).get(d)

    def is_business_day(self, d: date) -> bool:
        if d in self._open_days:
            return True
        if d in self._closed_days or d.weekday() not in self._working_days:
            return False
        return d not in self._holidays(d.year)

    def _interval(self, d: date, whole_day: bool = False) -> tuple[datetime, datetime] | None:
        """UTC open interval of business day ``d``, or None when there is no business time.

        ``whole_day``: the day from local midnight to the next local midnight, whatever
        the opening hours, so a 23- or 25-hour DST day counts as long as it really is.
        fold=0 resolves a wall-clock time in a DST gap forward by the gap's length and
        an ambiguous one to its first occurrence; a window swallowed by a gap is empty.
        """
        if not self.is_business_day(d):
            return None
        opens_at, closes_at = (_MIDNIGHT, _MIDNIGHT) if whole_day else (self.settings.opens, self.settings.closes)
        opens = datetime.combine(d, opens_at, tzinfo=self.tz).astimezone(UTC)
        close_day = d + timedelta(days=1) if closes_at == _MIDNIGHT else d
        closes = datetime.combine(close_day, closes_at, tzinfo=self.tz).astimezone(UTC)
        if closes <= opens:
            return None
        return opens, closes

    def _intervals_from(self, at: datetime, whole_day: bool = False) -> Iterator[tuple[datetime, datetime]]:
        """Business intervals (whole working days with ``whole_day``) that end after ``at``, in order, without end."""
        day = at.astimezone(self.tz).date() - timedelta(days=1)
        closed_run = 0
        while True:
            interval = self._interval(day, whole_day)
            day += timedelta(days=1)
            if interval is None:
                closed_run += 1
                if closed_run > _MAX_CLOSED_DAYS:
                    raise CalendarError(
                        f"calendar: no business time in the {_MAX_CLOSED_DAYS} days before {day.isoformat()}"
                    )
                continue
            closed_run = 0
            if interval[1] > at:
                yield interval

    def is_open(self, at: datetime) -> bool:
        """Open at instant ``at``; the closing instant itself is closed."""
        _require_aware("at", at)
        start, _ = next(self._intervals_from(at))
        return start <= at

    def next_opening(self, at: datetime) -> datetime:
        """The first open instant at or after ``at`` (``at`` itself, in UTC, if open)."""
        _require_aware("at", at)
        start, _ = next(self._intervals_from(at))
        return max(start, at.astimezone(UTC))

    def add_business_minutes(self, start: datetime, minutes: int) -> datetime:
        """``start`` plus ``minutes`` of open time, in UTC.

        A deadline that uses up a day exactly ends at that day's closing, not at the next
        opening, so "due by 16:00" reads as it should. Zero minutes returns ``start``.
        """
        return self._add(start, minutes, whole_day=False)

    def add_working_day_minutes(self, start: datetime, minutes: int) -> datetime:
        """``start`` plus ``minutes`` counted on whole working days (00:00-24:00 local), in UTC.

        This is "24 hours" as a Polish customer reads a reaction promise: Friday 15:59 is
        due Monday 15:59, and mail from a Saturday is due when Monday has passed.
        """
        return self._add(start, minutes, whole_day=True)

    def _add(self, start: datetime, minutes: int, whole_day: bool) -> datetime:
        _require_aware("start", start)
        if minutes < 0:
            raise ValueError(f"minutes must not be negative, got {minutes}")
        current = start.astimezone(UTC)
        remaining = timedelta(minutes=minutes)
        if not remaining:
            return current
        for opens, closes in self._intervals_from(current, whole_day):
            current = max(current, opens)
            available = closes - current
            if remaining <= available:
                return current + remaining
            remaining -= available
        raise AssertionError("unreachable: interval iterator does not end")

    def business_minutes_between(self, a: datetime, b: datetime) -> int:
        """Whole minutes of open time from ``a`` to ``b``; negative when ``b`` is before ``a``."""
        return self._between(a, b, whole_day=False)

    def working_day_minutes_between(self, a: datetime, b: datetime) -> int:
        """Whole minutes of working-day time (whole working days) from ``a`` to ``b``."""
        return self._between(a, b, whole_day=True)

    def _between(self, a: datetime, b: datetime, whole_day: bool) -> int:
        _require_aware("a", a)
        _require_aware("b", b)
        if b < a:
            return -self._between(b, a, whole_day)
        total = timedelta(0)
        for opens, closes in self._intervals_from(a, whole_day):
            if opens >= b:
                break
            total += min(closes, b) - max(opens, a)
        return total // _MINUTE


_MONTH = re.compile(r"(\d{4})-(\d{2})")


FIRST_YEAR, LAST_YEAR = 1900, 9998


def local_month_bounds(month: str, tz: tzinfo | str) -> tuple[datetime, datetime]:
    """UTC instants of the start of local month ``YYYY-MM`` and of the next month.

    The end is exclusive, so ``start <= t < end`` selects a month's rows without a
    double-counted midnight; statements follow the customer's calendar, not UTC's.
    """
    matched = _MONTH.fullmatch(month)
    if matched is None or not 1 <= int(matched.group(2)) <= 12:
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    if not FIRST_YEAR <= int(matched.group(1)) <= LAST_YEAR:
        # the reports reach into the months around it (carry-over): year 1 or 9999
        # would leave the range of Python's dates midway
        raise ValueError(f"month must be between {FIRST_YEAR}-01 and {LAST_YEAR}-12, got {month!r}")
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    year, mon = int(matched.group(1)), int(matched.group(2))
    first = date(year, mon, 1)
    following = date(year + 1, 1, 1) if mon == 12 else date(year, mon + 1, 1)
    start = datetime.combine(first, _MIDNIGHT, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(following, _MIDNIGHT, tzinfo=zone).astimezone(UTC)
    return start, end
