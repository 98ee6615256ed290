"""SLA reaction deadlines and the escalation plan (pure: ``now`` is always passed in).

A service contract promises a first reaction within N hours, on a ``calendar`` clock
(real elapsed time), a ``working_days`` clock (whole working days, 00:00-24:00 local:
what "24 h" means to a Polish customer) or a ``business`` clock (open hours only). Before the deadline the
sweeper warns consultants, then managers, then reports the breach. This module decides
*what* to send and *when to look again*; the sweeper stores ``levels_sent`` and
``next_escalation_at`` and writes the outbox rows.

Thresholds are per-mille integers so stored and compared times never pass through a
float.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Literal, get_args

from maild.rules.calendar import BusinessCalendar
from maild.errors import MaildError
from maild.rules.wording import format_duration, reader_language

log = logging.getLogger("maild.sla")

UTC = timezone.utc
Clock = Literal["calendar", "working_days", "business"]
OutsideHours = Literal["hold", "send"]
Recipients = Literal["consultants", "managers", "managers+breach"]
_RECIPIENTS: tuple[str, ...] = get_args(Recipients)
_CLOCKS: tuple[str, ...] = get_args(Clock)
OUTSIDE_HOURS: tuple[str, ...] = get_args(OutsideHours)
_MICROSECOND = timedelta(microseconds=1)


class EscalationConfigError(MaildError, ValueError):
    """An escalation level in the config is unusable; names the level index and key."""


@dataclass(frozen=True)
class EscalationLevel:
    """Reached when ``permille``/1000 of the reaction window has elapsed."""

    permille: int
    recipients: Recipients


@dataclass(frozen=True)
class EscalationSettings:
    """The levels, and what happens to a warning that falls outside business hours.

    ``outside_hours = "hold"`` keeps a warning until the next opening (nobody can act
    on it at 03:59 on a Saturday); ``"send"`` sends it when its threshold is reached.
    A breach (a level at or after the deadline) is always sent when it happens.
    """

    levels: tuple[EscalationLevel, ...] = (
        EscalationLevel(500, "consultants"),
        EscalationLevel(800, "managers"),
        EscalationLevel(1000, "managers+breach"),
    )
    outside_hours: OutsideHours = "hold"

    def __post_init__(self) -> None:
        if self.outside_hours not in OUTSIDE_HOURS:
            raise EscalationConfigError(
                f"escalation.outside_hours: {self.outside_hours!r} not one of {', '.join(OUTSIDE_HOURS)}"
            )
        previous = 0
        for index, level in enumerate(self.levels):
            if level.permille <= previous:
                raise EscalationConfigError(
                    f"escalation.thresholds[{index}]: {level.permille}/1000 must be above the previous level "
                    f"({previous}/1000)"
                )
            if level.recipients not in _RECIPIENTS:
                raise EscalationConfigError(
                    f"escalation.recipients[{index}]: {level.recipients!r} not one of {', '.join(_RECIPIENTS)}"
                )
            previous = level.permille


def permille_from_fraction(value: object, where: str = "at") -> int:
    """0.5 -> 500, exactly: via Decimal of the written value, so 0.8 does not become 799."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise EscalationConfigError(f"{where}: expected a fraction like 0.8, got {value!r}")
    try:
        scaled = Decimal(str(value)) * 1000
    except InvalidOperation as exc:
        raise EscalationConfigError(f"{where}: expected a fraction like 0.8, got {value!r}") from exc
    if scaled != scaled.to_integral_value() or scaled <= 0:
        raise EscalationConfigError(f"{where}: {value!r} must be a positive fraction with at most 3 decimals")
    return int(scaled)


def escalation_levels(thresholds: Sequence[object], recipients: Sequence[str]) -> EscalationSettings:
    """The ``[escalation]`` section's levels: ``thresholds = [0.5, 0.8, 1.0]`` (fractions of the
    reaction window, rising, at most 1.0, to a thousandth) and one ``recipients`` entry each.

    The one parser of the escalation config; errors name the key
    (``escalation.thresholds[1]: ...``), which the config loader prefixes with the file.
    """
    if len(thresholds) != len(recipients):
        raise EscalationConfigError(f"escalation.recipients: needs one entry per threshold ({len(thresholds)})")
    levels = []
    previous = 0
    for i, (value, who) in enumerate(zip(thresholds, recipients)):
        key = f"escalation.thresholds[{i}]"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EscalationConfigError(f"{key}: must be a fraction like 0.8, not {value!r}")
        try:
            permille = Decimal(str(value)) * 1000
        except InvalidOperation:
            raise EscalationConfigError(f"{key}: not a number: {value!r}") from None
        if permille != permille.to_integral_value() or not 0 < permille <= 1000 or permille <= previous:
            raise EscalationConfigError(f"{key}: fractions must rise, each above 0 and at most 1.0, to a thousandth")
        if who not in _RECIPIENTS:
            raise EscalationConfigError(f"escalation.recipients[{i}]: must be consultants, managers or "
                                        f"managers+breach, not {who!r}")
        previous = int(permille)
        levels.append(EscalationLevel(permille=int(permille), recipients=who))  # type: ignore[arg-type]
    return EscalationSettings(levels=tuple(levels))


def _check_clock(clock: str) -> None:
    if clock not in _CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(_CLOCKS)}, got {clock!r}")


def reaction_due(created_at: datetime, reaction_hours: int, clock: Clock, cal: BusinessCalendar) -> datetime:
    """The reaction deadline in UTC.

    On the calendar clock the hours are real elapsed time, so 24 h across a DST change
    is 24 real hours (the wall clock reads 23 or 25 h later). On the working_days clock
    they run through whole working days only, each as long as it really is.
    """
    _check_clock(clock)
    if created_at.tzinfo is None:
        raise ValueError(f"created_at must be tz-aware, got {created_at.isoformat()}")
    if reaction_hours < 0:
        raise ValueError(f"reaction_hours must not be negative, got {reaction_hours}")
    if clock == "calendar":
        return created_at.astimezone(UTC) + timedelta(hours=reaction_hours)
    if clock == "working_days":
        return cal.add_working_day_minutes(created_at, reaction_hours * 60)
    return cal.add_business_minutes(created_at, reaction_hours * 60)


def target_due(created_at: datetime, target_hours: int, clock: Clock, cal: BusinessCalendar) -> datetime:
    """Target time for a prepaid package: reported on the ticket, never escalated."""
    return reaction_due(created_at, target_hours, clock, cal)


def threshold_times(
    created_at: datetime,
    due: datetime,
    clock: Clock,
    cal: BusinessCalendar,
    settings: EscalationSettings,
) -> tuple[datetime, ...]:
    """When each level is reached, in UTC.

    The window is elapsed real time on the calendar clock, working-day minutes on the
    working_days clock and open minutes on the business clock, so "80%" means 80% of
    the time the promise actually counted.
    """
    _check_clock(clock)
    start = created_at.astimezone(UTC)
    end = due.astimezone(UTC)
    times = []
    if clock == "calendar":
        window_us = (end - start) // _MICROSECOND
        for level in settings.levels:
            if level.permille == 1000:
                times.append(end)
            else:
                times.append(start + timedelta(microseconds=window_us * level.permille // 1000))
    else:
        whole_day = clock == "working_days"
        between = cal.working_day_minutes_between if whole_day else cal.business_minutes_between
        add = cal.add_working_day_minutes if whole_day else cal.add_business_minutes
        window_min = between(start, end)
        for level in settings.levels:
            if level.permille == 1000:
                times.append(end)
            else:
                times.append(add(start, window_min * level.permille // 1000))
    return tuple(times)


def delivery_times(
    created_at: datetime,
    due: datetime,
    clock: Clock,
    cal: BusinessCalendar,
    settings: EscalationSettings,
) -> tuple[datetime, ...]:
    """When each level's mail goes out, in UTC.

    With ``outside_hours = "hold"`` a warning reached while support is closed waits
    for the next opening, on every clock, since nobody can act on it before then; a
    warning whose opening comes only at or after the deadline goes out with the
    breach (the breach mail names it) instead of after it. Levels at or after the
    deadline go out when they are reached. With ``"send"`` the calendar and
    working_days clocks send each level when it is reached, and the business clock
    holds a warning unless the deadline comes no later than the next opening.
    """
    thresholds = threshold_times(created_at, due, clock, cal, settings)
    end = due.astimezone(UTC)
    if settings.outside_hours == "hold":
        return tuple(
            reached if reached >= end else min(cal.next_opening(reached), end) for reached in thresholds
        )
    if clock != "business":
        return thresholds
    result = []
    for reached in thresholds:
        opening = cal.next_opening(reached)
        result.append(opening if opening < end else reached)
    return tuple(result)


@dataclass(frozen=True)
class SweepDecision:
    """What the sweeper does with one ticket now.

    ``send_level`` is the one mail to send (the highest level due); ``skipped_levels``
    were passed while no sweep ran and are mentioned in that mail instead of being sent
    late one by one. ``next_escalation_at`` is when the ticket needs looking at again
    (the indexed column the sweeper selects on); None once nothing is left to send.
    """

    send_level: int | None
    skipped_levels: tuple[int, ...]
    breach: bool
    next_escalation_at: datetime | None


def _breached(due: datetime, first_response_at: datetime | None, now: datetime) -> bool:
    """A reply exactly at the deadline is in time; no reply by the deadline instant is a breach."""
    if first_response_at is not None:
        return first_response_at > due
    return now >= due


def plan_escalation(
    *,
    created_at: datetime,
    due: datetime,
    clock: Clock,
    cal: BusinessCalendar,
    settings: EscalationSettings,
    levels_sent: int,
    first_response_at: datetime | None,
    now: datetime,
) -> SweepDecision:
    """Decide the escalation mail for one ticket at ``now``.

    Levels go out in order, each at most once; after ``send_level`` the caller stores
    ``levels_sent = send_level + 1``. Nothing is sent once the ticket has a first
    response: the promise is kept (or broken) for good then.
    """
    for name, value in (("created_at", created_at), ("due", due), ("now", now)):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be tz-aware, got {value.isoformat()}")
    count = len(settings.levels)
    if not 0 <= levels_sent <= count:
        raise ValueError(f"levels_sent must be within 0..{count}, got {levels_sent}")
    breach = _breached(due, first_response_at, now)
    if first_response_at is not None:
        return SweepDecision(None, (), breach, None)
    deliveries = delivery_times(created_at, due, clock, cal, settings)
    reached = [index for index in range(levels_sent, count) if deliveries[index] <= now]
    send_level = reached[-1] if reached else None
    following = levels_sent if send_level is None else send_level + 1
    next_at = deliveries[following] if following < count else None
    skipped = tuple(range(levels_sent, send_level)) if send_level is not None else ()
    if skipped:
        log.info("escalation levels %s passed unswept; sending level %d only", skipped, send_level)
    return SweepDecision(send_level, skipped, breach, next_at)


def time_left_text(due: datetime, now: datetime, lang: str) -> str:
    """Human "time left" for templates, Polish for ``pl*`` languages, English otherwise.

    Rounds towards urgency: time left is rounded down and time overdue up, so the text
    never promises more time than there is.
    """
    polish = reader_language(lang) == "pl"
    remaining = due - now
    if remaining >= timedelta(0):
        text = format_duration(remaining // timedelta(minutes=1), "pl" if polish else "en")
        return f"pozostało {text}" if polish else f"{text} left"
    overdue_minutes = -(remaining // timedelta(minutes=1))
    text = format_duration(overdue_minutes, "pl" if polish else "en")
    return f"po terminie o {text}" if polish else f"overdue by {text}"
