"""Presence, assignment and the queue estimate: the pure rules of issue 15."""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from statistics import mean

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.rules.assignment import Candidate, choose_assignee, ticket_weight
from maild.rules.calendar import BusinessCalendar, CalendarSettings
from maild.rules.estimate import expected_by, handling_rate
from maild.rules.presence import (
    Absence,
    AbsenceError,
    covering,
    is_present,
    next_absence,
    parse_range,
    parse_weekdays,
)

CAL = BusinessCalendar(CalendarSettings(timezone="Europe/Warsaw", holidays_country="PL"))


def present(day: date, days: frozenset[int] | None = None, absences: tuple[Absence, ...] = ()) -> bool:
    return is_present(day, days=days, absences=absences, calendar=CAL)


def test_presence_across_a_weekend_a_holiday_and_an_absence() -> None:
    assert present(date(2026, 12, 4))            # Friday
    assert not present(date(2026, 12, 5))        # Saturday
    assert not present(date(2026, 12, 6))        # Sunday
    assert not present(date(2026, 12, 24))       # Wigilia, a public holiday in Poland from 2025
    assert not present(date(2026, 12, 25))
    assert present(date(2026, 12, 28))
    away = (Absence(date(2026, 12, 21), date(2027, 1, 3)),)
    assert not present(date(2026, 12, 21), absences=away)
    assert not present(date(2026, 12, 28), absences=away)
    assert present(date(2027, 1, 4), absences=away)
    assert present(date(2026, 12, 18), absences=away)


def test_own_working_days() -> None:
    four_days = parse_weekdays(["mon", "tue", "wed", "thu"])
    assert present(date(2026, 12, 3), days=four_days)       # Thursday
    assert not present(date(2026, 12, 4), days=four_days)   # Friday is not theirs
    # their own days never open a day the business calendar keeps closed
    assert not present(date(2026, 12, 5), days=frozenset(range(7)))


@given(st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)),
       st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=30))
def test_an_absence_covers_exactly_its_days(start: date, length: int, offset: int) -> None:
    absence = Absence(start, start + timedelta(days=length))
    probe = start - timedelta(days=5) + timedelta(days=offset)
    covered = start <= probe <= start + timedelta(days=length)
    assert (covering([absence], probe) is absence) == covered
    if covered:
        assert not present(probe, absences=(absence,))
    else:
        assert present(probe, absences=(absence,)) == CAL.is_business_day(probe)


def test_next_absence_is_the_current_or_the_next_one() -> None:
    past = Absence(date(2026, 11, 1), date(2026, 11, 3))
    now = Absence(date(2026, 12, 1), date(2026, 12, 10), note="sick")
    later = Absence(date(2027, 2, 1), date(2027, 2, 5))
    assert next_absence([later, past, now], date(2026, 12, 5)) is now
    assert next_absence([later, past, now], date(2026, 12, 11)) is later
    assert next_absence([past], date(2026, 12, 11)) is None
    assert now.describe() == "2026-12-01..2026-12-10 (sick)"


def test_ranges_and_weekdays_parse_or_say_why() -> None:
    assert parse_range("2026-12-21..2027-01-03") == (date(2026, 12, 21), date(2027, 1, 3))
    assert parse_range(" 2026-12-21 ") == (date(2026, 12, 21), date(2026, 12, 21))
    for bad in ("tomorrow", "2026-12-32", "2027-01-03..2026-12-21", "2026-12-21..", ""):
        with pytest.raises(AbsenceError):
            parse_range(bad)
    with pytest.raises(AbsenceError, match="not a weekday"):
        parse_weekdays(["mon", "fryday"])
    with pytest.raises(AbsenceError):
        Absence(date(2026, 12, 2), date(2026, 12, 1))


def test_preferred_consultant_wins_when_present_and_managers_are_callers_business() -> None:
    cands = [Candidate("a@x.pl", 9), Candidate("b@x.pl", 0)]
    assert choose_assignee(cands, "least_loaded", preferred="A@x.pl") == "a@x.pl"
    assert choose_assignee(cands, "least_loaded", preferred="absent@x.pl") == "b@x.pl"
    assert choose_assignee(cands, "none") is None
    assert choose_assignee([], "least_loaded") is None


def test_ties_go_to_whoever_waited_longest() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
    cands = [Candidate("a@x.pl", 3, t0 + timedelta(hours=2)), Candidate("b@x.pl", 3, t0),
             Candidate("c@x.pl", 3, t0 + timedelta(hours=1))]
    assert choose_assignee(cands, "least_loaded") == "b@x.pl"
    assert choose_assignee(cands + [Candidate("d@x.pl", 7, None)], "round_robin") == "d@x.pl"
    assert choose_assignee(cands, "round_robin") == "b@x.pl"


def simulate(n_tickets: int, consultants: list[str], seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    load = {c: 0 for c in consultants}
    last: dict[str, datetime | None] = {c: None for c in consultants}
    t = datetime(2026, 12, 1, tzinfo=timezone.utc)
    for i in range(n_tickets):
        kind = rng.choice(["sla", "prepaid", "occasional"])
        who = choose_assignee([Candidate(c, load[c], last[c]) for c in consultants], "least_loaded")
        assert who is not None
        load[who] += ticket_weight(kind)
        last[who] = t + timedelta(minutes=i)
    return load


@pytest.mark.parametrize("seed", range(5))
def test_1000_tickets_spread_within_10_percent_of_the_mean(seed: int) -> None:
    load = simulate(1000, [f"c{i}@x.pl" for i in range(5)], seed)
    assert max(load.values()) <= 1.10 * mean(load.values())


def test_weights() -> None:
    assert [ticket_weight(k) for k in ("sla", "prepaid", "occasional")] == [3, 2, 1]
    assert ticket_weight("sla", verified=False) == 1


def test_estimate_needs_history() -> None:
    days = [date(2026, 11, d) for d in (2, 3, 4, 5)]
    assert handling_rate({d: 5 for d in days}, {d: 2 for d in days}) is None  # four days only
    days.append(date(2026, 11, 6))
    assert handling_rate({d: 1 for d in days}, {d: 2 for d in days}) is None  # five answers only
    assert handling_rate({d: 6 for d in days}, {d: 2 for d in days}) == 3.0


def test_expected_by_counts_present_consultants_day_by_day() -> None:
    coming = [(date(2026, 12, 7), 2), (date(2026, 12, 8), 0), (date(2026, 12, 9), 1)]
    assert expected_by(4, coming, 2.0) == date(2026, 12, 7)
    assert expected_by(5, coming, 2.0) == date(2026, 12, 9)
    assert expected_by(7, coming, 2.0) is None       # beyond what the coming days hold
    assert expected_by(1, coming, None) is None


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0.1, max_value=10),
       st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=60))
@settings(max_examples=200)
def test_a_later_place_is_never_expected_earlier(position: int, rate: float, staff: list[int]) -> None:
    coming = [(date(2027, 1, 1) + timedelta(days=i), n) for i, n in enumerate(staff)]
    here, behind = expected_by(position, coming, rate), expected_by(position + 1, coming, rate)
    if here is None:
        assert behind is None
    elif behind is not None:
        assert behind >= here


def test_tickets_that_will_overtake_take_their_share_first() -> None:
    coming = [(date(2026, 12, 7), 2), (date(2026, 12, 8), 2), (date(2026, 12, 9), 2)]
    assert expected_by(6, coming, 3.0) == date(2026, 12, 7)
    # four sla tickets a day arrive and rank ahead: 2 answers a day left for this tier
    assert expected_by(6, coming, 3.0, overtaking_per_day=4.0) == date(2026, 12, 9)
    assert expected_by(1, coming, 3.0, overtaking_per_day=6.0) is None   # never reached
