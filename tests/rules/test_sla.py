"""SLA deadlines and the escalation plan the sweeper follows."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.rules.calendar import BusinessCalendar, CalendarSettings
from maild.rules.sla import (
    Clock,
    EscalationConfigError,
    EscalationLevel,
    EscalationSettings,
    SweepDecision,
    delivery_times,
    escalation_levels,
    permille_from_fraction,
    plan_escalation,
    reaction_due,
    target_due,
    threshold_times,
    time_left_text,
)

WARSAW = ZoneInfo("Europe/Warsaw")
UTC = timezone.utc
CAL = BusinessCalendar(CalendarSettings())
DEFAULT = EscalationSettings()
SEND = EscalationSettings(outside_hours="send")


def warsaw(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=WARSAW)


def local(value: datetime) -> datetime:
    return value.astimezone(WARSAW)


def plan(
    created_at: datetime,
    due: datetime,
    clock: Clock,
    now: datetime,
    levels_sent: int = 0,
    first_response_at: datetime | None = None,
    escalation: EscalationSettings = DEFAULT,
) -> SweepDecision:
    return plan_escalation(
        created_at=created_at,
        due=due,
        clock=clock,
        cal=CAL,
        settings=escalation,
        levels_sent=levels_sent,
        first_response_at=first_response_at,
        now=now,
    )


# --- deadlines ----------------------------------------------------------------------


def test_friday_afternoon_plus_24_business_hours_is_wednesday_afternoon() -> None:
    due = reaction_due(warsaw(2026, 11, 20, 15), 24, "business", CAL)
    assert local(due) == warsaw(2026, 11, 25, 15)
    assert due.tzinfo == UTC


def test_business_deadline_skips_a_holiday_monday() -> None:
    # Mon 11 Nov 2024 is Independence Day: Fri 1 h + Tue 8 + Wed 8 + Thu 7.
    assert local(reaction_due(warsaw(2024, 11, 8, 15), 24, "business", CAL)) == warsaw(2024, 11, 14, 15)


def test_business_deadline_over_christmas_2025() -> None:
    # Fri 19 Dec 15:00: 1 h, Mon 8, Tue 8, 24-26 Dec closed, Mon 29 Dec 7 h.
    assert local(reaction_due(warsaw(2025, 12, 19, 15), 24, "business", CAL)) == warsaw(2025, 12, 29, 15)


@pytest.mark.parametrize(
    ("created", "due"),
    [
        (warsaw(2026, 12, 4, 15, 59), warsaw(2026, 12, 7, 15, 59)),  # Friday -> Monday
        (warsaw(2026, 12, 23, 15, 30), warsaw(2026, 12, 28, 15, 30)),  # 24-27 Dec closed (24th a holiday from 2025)
        (warsaw(2026, 12, 5, 10), warsaw(2026, 12, 8, 0)),  # Saturday -> the whole Monday -> Tuesday 00:00
        (warsaw(2026, 11, 10, 12), warsaw(2026, 11, 12, 12)),  # Wed 11 Nov, Independence Day, does not count
        (warsaw(2026, 12, 7, 0), warsaw(2026, 12, 8, 0)),  # a whole working day
    ],
)
def test_working_days_clock_counts_whole_working_days(created: datetime, due: datetime) -> None:
    found = reaction_due(created, 24, "working_days", CAL)
    assert local(found) == due
    assert found.tzinfo == UTC
    assert CAL.working_day_minutes_between(created, found) == 24 * 60


SEVEN_DAYS = BusinessCalendar(CalendarSettings(working_days=tuple(range(7)), holidays_country=None))


@pytest.mark.parametrize(
    ("created", "wall_clock_due"),
    [
        (warsaw(2026, 3, 29, 0), warsaw(2026, 3, 30, 1)),  # the 23-hour Sunday counts 23 hours
        (warsaw(2026, 10, 25, 0), warsaw(2026, 10, 25, 23)),  # the 25-hour Sunday counts 25 hours
    ],
)
def test_working_days_clock_counts_a_dst_day_as_long_as_it_is(created: datetime, wall_clock_due: datetime) -> None:
    due = reaction_due(created, 24, "working_days", SEVEN_DAYS)
    assert due - created == timedelta(hours=24)
    assert local(due) == wall_clock_due


def test_working_days_clock_skips_a_dst_weekend_in_real_hours() -> None:
    # Fri 27 Mar 2026 12:00 + 24 h: 12 h on Friday, the weekend (DST change) is skipped,
    # 12 h on Monday: Monday 12:00, whatever the weekend's length.
    assert local(reaction_due(warsaw(2026, 3, 27, 12), 24, "working_days", CAL)) == warsaw(2026, 3, 30, 12)
    assert local(reaction_due(warsaw(2026, 10, 23, 12), 24, "working_days", CAL)) == warsaw(2026, 10, 26, 12)


@settings(max_examples=200, deadline=None)
@given(
    minute=st.integers(min_value=0, max_value=3 * 366 * 24 * 60),
    hours=st.integers(min_value=0, max_value=96),
)
def test_working_days_clock_is_the_calendar_clock_when_every_day_is_a_working_day(minute: int, hours: int) -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    assert reaction_due(created, hours, "working_days", SEVEN_DAYS) == reaction_due(created, hours, "calendar", CAL)


@settings(max_examples=200, deadline=None)
@given(
    minute=st.integers(min_value=0, max_value=3 * 366 * 24 * 60),
    hours=st.integers(min_value=1, max_value=96),
)
def test_working_days_deadline_is_never_earlier_than_calendar_nor_later_than_business(minute: int, hours: int) -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    due = reaction_due(created, hours, "working_days", CAL)
    assert reaction_due(created, hours, "calendar", CAL) <= due <= reaction_due(created, hours, "business", CAL)
    assert CAL.working_day_minutes_between(created, due) == hours * 60
    # the deadline is inside a working day or at the midnight ending one
    last_day = (local(due) - timedelta(microseconds=1)).date()
    assert CAL.is_business_day(last_day)


def test_working_days_thresholds_count_working_day_time_and_wait_for_the_opening() -> None:
    created = warsaw(2026, 12, 4, 15, 59)  # Friday
    due = reaction_due(created, 24, "working_days", CAL)
    # 50 % = 12 h: Fri 8 h 01 + Mon 3 h 59 = Mon 03:59; 80 % = 19 h 12 = Mon 11:11.
    assert [local(t) for t in threshold_times(created, due, "working_days", CAL, DEFAULT)] == [
        warsaw(2026, 12, 7, 3, 59), warsaw(2026, 12, 7, 11, 11), warsaw(2026, 12, 7, 15, 59),
    ]
    assert [local(t) for t in delivery_times(created, due, "working_days", CAL, DEFAULT)] == [
        warsaw(2026, 12, 7, 8), warsaw(2026, 12, 7, 11, 11), warsaw(2026, 12, 7, 15, 59),
    ]
    assert [local(t) for t in delivery_times(created, due, "working_days", CAL, SEND)] == [
        warsaw(2026, 12, 7, 3, 59), warsaw(2026, 12, 7, 11, 11), warsaw(2026, 12, 7, 15, 59),
    ]


def test_outside_hours_must_be_hold_or_send() -> None:
    with pytest.raises(EscalationConfigError, match="outside_hours"):
        EscalationSettings(outside_hours="later")  # type: ignore[arg-type]


def test_calendar_clock_is_real_elapsed_time() -> None:
    created = warsaw(2026, 11, 20, 15)
    assert local(reaction_due(created, 24, "calendar", CAL)) == warsaw(2026, 11, 21, 15)


@pytest.mark.parametrize(
    ("created", "wall_clock_due"),
    [
        (warsaw(2025, 3, 29, 12), warsaw(2025, 3, 30, 13)),  # spring forward: 24 real hours read 25
        (warsaw(2025, 10, 25, 12), warsaw(2025, 10, 26, 11)),  # fall back: 24 real hours read 23
    ],
)
def test_calendar_clock_across_dst_is_24_real_hours(created: datetime, wall_clock_due: datetime) -> None:
    due = reaction_due(created, 24, "calendar", CAL)
    assert due - created == timedelta(hours=24)
    assert local(due) == wall_clock_due


def test_target_due_follows_the_same_clock_rules() -> None:
    created = warsaw(2026, 11, 20, 15)
    assert target_due(created, 10, "business", CAL) == reaction_due(created, 10, "business", CAL)
    assert local(target_due(created, 9, "business", CAL)) == warsaw(2026, 11, 23, 16)


def test_bad_clock_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="clock"):
        reaction_due(warsaw(2026, 11, 20, 15), 24, "wallclock", CAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tz-aware"):
        reaction_due(datetime(2026, 11, 20, 15), 24, "calendar", CAL)


# --- thresholds and delivery --------------------------------------------------------


def test_calendar_clock_thresholds_are_fractions_of_real_time() -> None:
    created = datetime(2026, 11, 23, 10, tzinfo=UTC)
    due = reaction_due(created, 24, "calendar", CAL)
    assert threshold_times(created, due, "calendar", CAL, DEFAULT) == (
        datetime(2026, 11, 23, 22, tzinfo=UTC),
        datetime(2026, 11, 24, 5, 12, tzinfo=UTC),
        datetime(2026, 11, 24, 10, tzinfo=UTC),
    )
    # With outside_hours = "send", night-time thresholds are not delayed on a calendar clock.
    assert delivery_times(created, due, "calendar", CAL, SEND) == threshold_times(
        created, due, "calendar", CAL, SEND
    )


def test_business_clock_thresholds_count_open_minutes() -> None:
    created = warsaw(2026, 11, 20, 15)  # Friday
    due = reaction_due(created, 24, "business", CAL)
    # 50 % = 12 h: Fri 1 h + Mon 8 h + Tue 3 h; 80 % = 19 h 12 min: ... Wed 2 h 12 min.
    assert [local(t) for t in threshold_times(created, due, "business", CAL, DEFAULT)] == [
        warsaw(2026, 11, 24, 11),
        warsaw(2026, 11, 25, 10, 12),
        warsaw(2026, 11, 25, 15),
    ]


def test_business_threshold_reached_at_closing_goes_out_at_next_opening() -> None:
    created = warsaw(2026, 11, 23, 8)  # Monday
    due = reaction_due(created, 10, "business", CAL)
    assert local(due) == warsaw(2026, 11, 24, 10)
    thresholds = threshold_times(created, due, "business", CAL, DEFAULT)
    assert local(thresholds[1]) == warsaw(2026, 11, 23, 16)
    assert [local(t) for t in delivery_times(created, due, "business", CAL, DEFAULT)] == [
        warsaw(2026, 11, 23, 13),
        warsaw(2026, 11, 24, 8),
        warsaw(2026, 11, 24, 10),
    ]


def test_breach_at_closing_is_not_held_until_the_next_morning() -> None:
    created = warsaw(2026, 11, 23, 12)
    due = reaction_due(created, 4, "business", CAL)
    assert local(due) == warsaw(2026, 11, 23, 16)
    deliveries = delivery_times(created, due, "business", CAL, DEFAULT)
    assert local(deliveries[2]) == warsaw(2026, 11, 23, 16)
    decision = plan(created, due, "business", now=warsaw(2026, 11, 23, 16), levels_sent=2)
    assert decision == SweepDecision(2, (), True, None)


def test_threshold_while_closed_goes_out_at_once_when_the_deadline_is_no_later_than_the_next_opening() -> None:
    # A zero-hour promise made on a Saturday: every threshold is "now", and so is the
    # deadline, which comes long before Monday's opening, so nothing waits for Monday.
    created = warsaw(2026, 11, 21, 12)
    due = reaction_due(created, 0, "business", CAL)
    assert due == created
    assert delivery_times(created, due, "business", CAL, DEFAULT) == (due, due, due)
    assert plan(created, due, "business", now=created) == SweepDecision(2, (0, 1), True, None)


def test_levels_reached_at_closing_together_with_the_deadline_are_not_delayed() -> None:
    late = EscalationSettings((EscalationLevel(1000, "managers+breach"), EscalationLevel(1010, "managers")))
    created = warsaw(2026, 11, 23, 15)
    due = reaction_due(created, 1, "business", CAL)
    # 101 % of 60 open minutes rounds down to 60: both land on Monday's closing.
    assert [local(t) for t in delivery_times(created, due, "business", CAL, late)] == [
        warsaw(2026, 11, 23, 16),
        warsaw(2026, 11, 23, 16),
    ]


def test_business_thresholds_of_a_ticket_created_at_night_wait_for_the_opening() -> None:
    created = warsaw(2026, 11, 21, 12)  # Saturday
    due = reaction_due(created, 8, "business", CAL)
    assert local(due) == warsaw(2026, 11, 23, 16)
    assert [local(t) for t in delivery_times(created, due, "business", CAL, DEFAULT)] == [
        warsaw(2026, 11, 23, 12),
        warsaw(2026, 11, 23, 14, 24),
        warsaw(2026, 11, 23, 16),
    ]


# --- the sweep plan -----------------------------------------------------------------

CREATED = warsaw(2026, 11, 23, 8)
DUE = reaction_due(CREATED, 10, "business", CAL)  # Tue 24 Nov 10:00; deliveries Mon 13:00, Tue 08:00, Tue 10:00


@pytest.mark.parametrize(
    ("now", "levels_sent", "expected"),
    [
        (warsaw(2026, 11, 23, 12, 59), 0, SweepDecision(None, (), False, warsaw(2026, 11, 23, 13))),
        (warsaw(2026, 11, 23, 13), 0, SweepDecision(0, (), False, warsaw(2026, 11, 24, 8))),
        (warsaw(2026, 11, 23, 13, 5), 1, SweepDecision(None, (), False, warsaw(2026, 11, 24, 8))),
        # The 80 % threshold was reached at 16:00 Monday, but goes out at Tuesday's opening.
        (warsaw(2026, 11, 23, 20), 1, SweepDecision(None, (), False, warsaw(2026, 11, 24, 8))),
        (warsaw(2026, 11, 24, 8), 1, SweepDecision(1, (), False, warsaw(2026, 11, 24, 10))),
        (warsaw(2026, 11, 24, 10), 2, SweepDecision(2, (), True, None)),
        (warsaw(2026, 11, 24, 12), 3, SweepDecision(None, (), True, None)),
        # Downtime across two thresholds: one mail for the highest, the other reported in it.
        (warsaw(2026, 11, 24, 9), 0, SweepDecision(1, (0,), False, warsaw(2026, 11, 24, 10))),
        (warsaw(2026, 11, 25, 9), 0, SweepDecision(2, (0, 1), True, None)),
        (warsaw(2026, 11, 25, 9), 1, SweepDecision(2, (1,), True, None)),
    ],
)
def test_plan_escalation_table(now: datetime, levels_sent: int, expected: SweepDecision) -> None:
    assert plan(CREATED, DUE, "business", now=now, levels_sent=levels_sent) == expected


def test_first_response_stops_all_escalation() -> None:
    answered = warsaw(2026, 11, 23, 14)
    decision = plan(CREATED, DUE, "business", now=warsaw(2026, 11, 25, 9), levels_sent=1, first_response_at=answered)
    assert decision == SweepDecision(None, (), False, None)


def test_first_response_after_the_deadline_is_a_breach_without_mail() -> None:
    answered = warsaw(2026, 11, 24, 11)
    decision = plan(CREATED, DUE, "business", now=warsaw(2026, 11, 24, 12), levels_sent=2, first_response_at=answered)
    assert decision == SweepDecision(None, (), True, None)


def test_first_response_exactly_at_the_deadline_is_in_time() -> None:
    decision = plan(CREATED, DUE, "business", now=warsaw(2026, 11, 24, 12), levels_sent=2, first_response_at=DUE)
    assert not decision.breach


def test_calendar_clock_escalates_at_night_with_outside_hours_send() -> None:
    created = datetime(2026, 11, 23, 10, tzinfo=UTC)
    due = reaction_due(created, 24, "calendar", CAL)
    decision = plan(created, due, "calendar", now=datetime(2026, 11, 23, 22, tzinfo=UTC), escalation=SEND)
    assert decision == SweepDecision(0, (), False, datetime(2026, 11, 24, 5, 12, tzinfo=UTC))


def test_calendar_clock_holds_a_night_warning_until_the_opening_by_default() -> None:
    created = datetime(2026, 11, 23, 10, tzinfo=UTC)  # Mon 11:00 in Warsaw
    due = reaction_due(created, 24, "calendar", CAL)
    # 50 % at 23:00 and 80 % at 06:12 local are both held until Tuesday 08:00.
    assert [local(t) for t in delivery_times(created, due, "calendar", CAL, DEFAULT)] == [
        warsaw(2026, 11, 24, 8), warsaw(2026, 11, 24, 8), warsaw(2026, 11, 24, 11),
    ]
    assert plan(created, due, "calendar", now=datetime(2026, 11, 23, 22, tzinfo=UTC)) == SweepDecision(
        None, (), False, warsaw(2026, 11, 24, 8).astimezone(UTC))
    assert plan(created, due, "calendar", now=warsaw(2026, 11, 24, 8)) == SweepDecision(
        1, (0,), False, due)


def test_calendar_clock_breach_on_a_saturday_goes_out_when_it_happens() -> None:
    created = warsaw(2026, 12, 4, 15, 59)  # Friday
    due = reaction_due(created, 24, "calendar", CAL)
    assert local(due) == warsaw(2026, 12, 5, 15, 59)
    deliveries = delivery_times(created, due, "calendar", CAL, DEFAULT)
    # 50 % at Sat 03:59 and 80 % at Sat 11:11 would wait for Monday: after the breach,
    # so they go out with it, named in the breach mail; nothing at 03:59.
    assert deliveries == (due, due, due)
    assert plan(created, due, "calendar", now=warsaw(2026, 12, 5, 3, 59)).send_level is None
    assert plan(created, due, "calendar", now=due) == SweepDecision(2, (0, 1), True, None)


def test_levels_sent_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="levels_sent"):
        plan(CREATED, DUE, "business", now=DUE, levels_sent=4)


# --- config -------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "permille"), [(0.5, 500), (0.8, 800), (1, 1000), ("0.95", 950), (1.25, 1250)])
def test_fractions_become_exact_permille(fraction: object, permille: int) -> None:
    assert permille_from_fraction(fraction) == permille


def test_escalation_levels() -> None:
    parsed = escalation_levels([0.5, 0.8, 1.0], ["consultants", "managers", "managers+breach"])
    assert parsed == DEFAULT


@pytest.mark.parametrize(
    ("thresholds", "recipients", "where"),
    [
        ([0.1234], ["managers"], r"escalation\.thresholds\[0\]: fractions must rise"),
        ([0], ["managers"], r"escalation\.thresholds\[0\]"),
        (["soon"], ["managers"], r"escalation\.thresholds\[0\]: must be a fraction"),
        ([True], ["managers"], r"escalation\.thresholds\[0\]"),
        ([1.25], ["managers"], r"escalation\.thresholds\[0\]: .*at most 1\.0"),
        ([0.5], ["everyone"], r"escalation\.recipients\[0\]: must be consultants"),
        ([0.5, 0.8], ["managers"], r"escalation\.recipients: needs one entry per threshold"),
        ([0.8, 0.5], ["managers", "consultants"], r"escalation\.thresholds\[1\]: fractions must rise"),
    ],
)
def test_escalation_config_errors_name_the_level(thresholds: list[object], recipients: list[str], where: str) -> None:
    with pytest.raises(EscalationConfigError, match=where):
        escalation_levels(thresholds, recipients)


# --- time left ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "lang", "text"),
    [
        (timedelta(hours=3, minutes=20), "en", "3 h 20 min left"),
        (timedelta(hours=3, minutes=20), "pl", "pozostało 3 godz. 20 min"),
        (timedelta(hours=3, minutes=20, seconds=59), "en", "3 h 20 min left"),
        (timedelta(hours=26), "pl-PL", "pozostało 26 godz."),
        (timedelta(minutes=5), "en", "5 min left"),
        (timedelta(0), "en", "0 min left"),
        (-timedelta(seconds=1), "en", "overdue by 1 min"),
        (-timedelta(hours=1, minutes=5), "en", "overdue by 1 h 5 min"),
        (-timedelta(hours=1, minutes=5), "pl", "po terminie o 1 godz. 5 min"),
        (-timedelta(hours=2), "pl", "po terminie o 2 godz."),
    ],
)
def test_time_left_text(left: timedelta, lang: str, text: str) -> None:
    now = warsaw(2026, 11, 23, 10)
    assert time_left_text(now + left, now, lang) == text


# --- sweeper properties -------------------------------------------------------------

NIGHT_SHIFT = BusinessCalendar(
    CalendarSettings(working_days=tuple(range(7)), opens=time(0), closes=time(6), holidays_country=None)
)
_LEVELS = (
    EscalationSettings().levels,
    (EscalationLevel(1000, "managers+breach"),),
    (
        EscalationLevel(250, "consultants"),
        EscalationLevel(500, "consultants"),
        EscalationLevel(900, "managers"),
        EscalationLevel(1000, "managers+breach"),
        EscalationLevel(1200, "managers"),
    ),
)
LEVEL_SETS = st.sampled_from(
    [EscalationSettings(levels, outside) for levels in _LEVELS for outside in ("hold", "send")]  # type: ignore[arg-type]
)
CREATED_AT = st.integers(min_value=0, max_value=3 * 366 * 24 * 60).map(
    lambda minute: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
)


@settings(max_examples=300, deadline=None)
@given(
    cal=st.sampled_from([CAL, NIGHT_SHIFT]),
    escalation=LEVEL_SETS,
    created=CREATED_AT,
    hours=st.integers(min_value=0, max_value=72),
    clock=st.sampled_from(["calendar", "working_days", "business"]),
    sweep_gaps=st.lists(st.integers(min_value=0, max_value=48 * 60), min_size=1, max_size=25),
    response_after=st.one_of(st.none(), st.integers(min_value=0, max_value=30 * 24 * 60)),
)
def test_sweeper_sends_each_level_once_in_order_and_never_after_a_response(
    cal: BusinessCalendar,
    escalation: EscalationSettings,
    created: datetime,
    hours: int,
    clock: Clock,
    sweep_gaps: list[int],
    response_after: int | None,
) -> None:
    due = reaction_due(created, hours, clock, cal)
    deliveries = delivery_times(created, due, clock, cal, escalation)
    responded = None if response_after is None else created + timedelta(minutes=response_after)
    count = len(escalation.levels)
    levels_sent = 0
    mentioned: list[int] = []
    now = created
    sweeps = [*sweep_gaps, 100 * 24 * 60]  # a last sweep long after every threshold
    for gap in sweeps:
        now += timedelta(minutes=gap)
        known_response = responded if responded is not None and responded <= now else None
        decision = plan_escalation(
            created_at=created,
            due=due,
            clock=clock,
            cal=cal,
            settings=escalation,
            levels_sent=levels_sent,
            first_response_at=known_response,
            now=now,
        )
        if known_response is not None:
            assert decision.send_level is None
            assert decision.next_escalation_at is None
            continue
        if decision.send_level is None:
            assert decision.skipped_levels == ()
        else:
            assert decision.send_level >= levels_sent
            assert deliveries[decision.send_level] <= now
            assert decision.skipped_levels == tuple(range(levels_sent, decision.send_level))
            mentioned.extend([*decision.skipped_levels, decision.send_level])
            levels_sent = decision.send_level + 1
        if levels_sent < count:
            assert decision.next_escalation_at == deliveries[levels_sent]
            assert decision.next_escalation_at > now
        else:
            assert decision.next_escalation_at is None
        assert decision.breach == (now >= due)
    assert mentioned == list(range(len(mentioned)))
    if responded is None:
        assert levels_sent == count
    else:
        assert all(deliveries[level] <= responded for level in mentioned)


@settings(max_examples=200, deadline=None)
@given(
    escalation=LEVEL_SETS,
    created=CREATED_AT,
    hours=st.integers(min_value=1, max_value=72),
    clock=st.sampled_from(["calendar", "working_days", "business"]),
)
def test_sweeper_waking_at_next_escalation_at_sends_every_distinct_time_on_time(
    escalation: EscalationSettings, created: datetime, hours: int, clock: Clock
) -> None:
    due = reaction_due(created, hours, clock, CAL)
    deliveries = delivery_times(created, due, clock, CAL, escalation)
    assert list(deliveries) == sorted(deliveries)
    if clock == "business" or escalation.outside_hours == "hold":
        for delivered in deliveries:
            assert CAL.is_open(delivered) or delivered >= due
    levels_sent = 0
    wake: datetime | None = created
    sent_at: dict[int, datetime] = {}
    while wake is not None:
        decision = plan(created, due, clock, now=wake, levels_sent=levels_sent, escalation=escalation)
        if decision.send_level is not None:
            for level in (*decision.skipped_levels, decision.send_level):
                sent_at[level] = wake
            levels_sent = decision.send_level + 1
        wake = decision.next_escalation_at
    assert sent_at == dict(enumerate(deliveries))
