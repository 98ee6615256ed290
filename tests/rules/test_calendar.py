"""Business calendar: holidays, opening hours, and business-minute arithmetic across DST."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.rules.calendar import BusinessCalendar, CalendarError, CalendarSettings, local_month_bounds

WARSAW = ZoneInfo("Europe/Warsaw")
UTC = timezone.utc
CAL = BusinessCalendar(CalendarSettings())
ALWAYS_OPEN = BusinessCalendar(
    CalendarSettings(working_days=tuple(range(7)), opens=time(0), closes=time(0), holidays_country=None)
)
NIGHT_SHIFT = BusinessCalendar(
    CalendarSettings(working_days=tuple(range(7)), opens=time(0), closes=time(6), holidays_country=None)
)
# 02:30 does not exist on the spring-forward day and happens twice on the fall-back day.
GAP_WINDOW = BusinessCalendar(
    CalendarSettings(working_days=tuple(range(7)), opens=time(2, 30), closes=time(4, 0), holidays_country=None)
)


def warsaw(*args: int) -> datetime:
    return datetime(*args, tzinfo=WARSAW)  # type: ignore[arg-type,misc]


def local(value: datetime) -> datetime:
    return value.astimezone(WARSAW)


# --- public holidays ---------------------------------------------------------------

POLISH_HOLIDAYS = [
    # fixed dates, every year
    *[date(year, 1, 1) for year in range(2024, 2028)],
    *[date(year, 1, 6) for year in range(2024, 2028)],
    *[date(year, 5, 1) for year in range(2024, 2028)],
    *[date(year, 5, 3) for year in range(2024, 2028)],
    *[date(year, 8, 15) for year in range(2024, 2028)],
    *[date(year, 11, 1) for year in range(2024, 2028)],
    *[date(year, 11, 11) for year in range(2024, 2028)],
    *[date(year, 12, 25) for year in range(2024, 2028)],
    *[date(year, 12, 26) for year in range(2024, 2028)],
    # Christmas Eve became a public holiday in 2025
    date(2025, 12, 24),
    date(2026, 12, 24),
    date(2027, 12, 24),
    # Easter Monday
    date(2024, 4, 1),
    date(2025, 4, 21),
    date(2026, 4, 6),
    date(2027, 3, 29),
    # Corpus Christi
    date(2024, 5, 30),
    date(2025, 6, 19),
    date(2026, 6, 4),
    date(2027, 5, 27),
]


@pytest.mark.parametrize("day", POLISH_HOLIDAYS, ids=str)
def test_polish_public_holidays_are_closed(day: date) -> None:
    assert CAL.holiday_name(day) is not None
    assert not CAL.is_business_day(day)


def test_christmas_eve_2024_was_a_working_day() -> None:
    assert date(2024, 12, 24).weekday() == 1
    assert CAL.holiday_name(date(2024, 12, 24)) is None
    assert CAL.is_business_day(date(2024, 12, 24))


def test_christmas_eve_from_2025_is_closed_on_a_weekday() -> None:
    assert date(2025, 12, 24).weekday() == 2
    assert not CAL.is_open(warsaw(2025, 12, 24, 10, 0))
    assert CAL.next_opening(warsaw(2025, 12, 23, 16, 0)) == warsaw(2025, 12, 29, 8, 0)


@pytest.mark.parametrize(
    "day",
    [date(2025, 4, 22), date(2025, 6, 20), date(2026, 11, 10), date(2027, 1, 7), date(2025, 12, 29)],
    ids=str,
)
def test_ordinary_weekdays_are_business_days(day: date) -> None:
    assert CAL.holiday_name(day) is None
    assert CAL.is_business_day(day)


def test_holiday_names_in_the_configured_language() -> None:
    polish = BusinessCalendar(CalendarSettings(holidays_language="pl"))
    english = BusinessCalendar(CalendarSettings(holidays_language="en_US"))
    assert polish.holiday_name(date(2025, 12, 24)) == "Wigilia Bożego Narodzenia"
    assert english.holiday_name(date(2025, 12, 24)) == "Christmas Eve"


def test_weekends_are_closed() -> None:
    assert not CAL.is_business_day(date(2026, 11, 28))
    assert not CAL.is_business_day(date(2026, 11, 29))


def test_extra_closed_days_and_open_days() -> None:
    bridge = date(2026, 1, 2)  # Friday after New Year
    saturday_in_lieu = date(2026, 1, 10)
    cal = BusinessCalendar(CalendarSettings(closed_days=(bridge,), open_days=(saturday_in_lieu,)))
    assert CAL.is_business_day(bridge)
    assert not cal.is_business_day(bridge)
    assert not CAL.is_business_day(saturday_in_lieu)
    assert cal.is_business_day(saturday_in_lieu)
    # Dec 31 (Wed) 15:00 + 2 h: 1 h on Dec 31, Jan 1 holiday, Jan 2 closed, weekend -> Mon Jan 5 09:00
    assert local(cal.add_business_minutes(warsaw(2025, 12, 31, 15, 0), 120)) == warsaw(2026, 1, 5, 9, 0)


def test_no_holidays_country_keeps_holidays_open() -> None:
    cal = BusinessCalendar(CalendarSettings(holidays_country=None))
    assert cal.is_business_day(date(2025, 12, 24))
    assert cal.holiday_name(date(2025, 12, 24)) is None


def test_subdivision_holidays_are_used() -> None:
    # Germany, Bavaria: Epiphany is a holiday there, not in Berlin.
    bavaria = BusinessCalendar(CalendarSettings(timezone="Europe/Berlin", holidays_country="DE", holidays_subdiv="BY"))
    berlin = BusinessCalendar(CalendarSettings(timezone="Europe/Berlin", holidays_country="DE", holidays_subdiv="BE"))
    assert not bavaria.is_business_day(date(2026, 1, 6))
    assert berlin.is_business_day(date(2026, 1, 6))


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"timezone": "Europe/Atlantis"}, "calendar.timezone"),
        ({"opens": time(16), "closes": time(8)}, "calendar.opens"),
        ({"opens": time(8), "closes": time(8)}, "calendar.opens"),
        ({"holidays_country": "XX"}, "calendar.holidays_country"),
        ({"holidays_subdiv": "99"}, "calendar.holidays_subdiv"),
        ({"holidays_language": "tlh"}, "calendar.holidays_language"),
        ({"working_days": (0, 7)}, "calendar.working_days"),
        ({"working_days": ()}, "calendar.working_days"),
        ({"closed_days": (date(2026, 1, 3),), "open_days": (date(2026, 1, 3),)}, "calendar.open_days"),
    ],
)
def test_bad_settings_raise_calendar_error_naming_the_setting(overrides: dict[str, object], setting: str) -> None:
    with pytest.raises(CalendarError, match=setting.replace(".", r"\.")):
        BusinessCalendar(CalendarSettings(**overrides))  # type: ignore[arg-type]


def test_calendar_error_is_a_value_error() -> None:
    assert issubclass(CalendarError, ValueError)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        CAL.is_open(datetime(2026, 1, 5, 10, 0))
    with pytest.raises(ValueError, match="tz-aware"):
        CAL.add_business_minutes(datetime(2026, 1, 5, 10, 0), 5)


# --- opening hours and arithmetic ---------------------------------------------------


def test_is_open_is_half_open_at_the_edges() -> None:
    assert not CAL.is_open(warsaw(2026, 11, 26, 7, 59))
    assert CAL.is_open(warsaw(2026, 11, 26, 8, 0))
    assert CAL.is_open(warsaw(2026, 11, 26, 15, 59))
    assert not CAL.is_open(warsaw(2026, 11, 26, 16, 0))


def test_next_opening() -> None:
    at = warsaw(2026, 11, 26, 10, 17, 30)
    assert CAL.next_opening(at) == at
    assert CAL.next_opening(at).tzinfo == UTC
    assert CAL.next_opening(warsaw(2026, 11, 27, 16, 0)) == warsaw(2026, 11, 30, 8, 0)
    assert CAL.next_opening(warsaw(2026, 11, 26, 3, 0)) == warsaw(2026, 11, 26, 8, 0)


def test_deadline_landing_at_closing_stays_at_closing() -> None:
    due = CAL.add_business_minutes(warsaw(2026, 11, 26, 8, 0), 8 * 60)
    assert local(due) == warsaw(2026, 11, 26, 16, 0)
    assert due.tzinfo == UTC
    assert local(CAL.add_business_minutes(due, 1)) == warsaw(2026, 11, 27, 8, 1)


def test_start_outside_hours_counts_from_next_opening() -> None:
    assert local(CAL.add_business_minutes(warsaw(2026, 11, 28, 12, 0), 90)) == warsaw(2026, 11, 30, 9, 30)


def test_seconds_are_kept_exactly() -> None:
    start = warsaw(2026, 11, 26, 15, 59, 30)
    assert local(CAL.add_business_minutes(start, 1)) == warsaw(2026, 11, 27, 8, 0, 30)
    assert CAL.business_minutes_between(start, CAL.add_business_minutes(start, 1)) == 1


def test_business_minutes_between_across_a_holiday_week() -> None:
    # Mon Dec 22 2025 08:00 -> Mon Dec 29 08:00: Mon+Tue open, Wed-Fri holidays
    assert CAL.business_minutes_between(warsaw(2025, 12, 22, 8, 0), warsaw(2025, 12, 29, 8, 0)) == 16 * 60
    assert CAL.business_minutes_between(warsaw(2025, 12, 29, 8, 0), warsaw(2025, 12, 22, 8, 0)) == -16 * 60


def test_long_spans_are_fast() -> None:
    start = warsaw(2026, 1, 5, 8, 0)
    due = CAL.add_business_minutes(start, 10 * 250 * 8 * 60)  # ~ten years of working days
    assert local(due).year in (2035, 2036)
    assert CAL.business_minutes_between(start, due) == 10 * 250 * 8 * 60


def test_calendar_without_any_business_time_raises() -> None:
    cal = BusinessCalendar(CalendarSettings(working_days=(), open_days=(date(2026, 1, 3),)))
    assert local(cal.add_business_minutes(warsaw(2026, 1, 1, 0, 0), 60)) == warsaw(2026, 1, 3, 9, 0)
    with pytest.raises(CalendarError, match="no business time"):
        cal.add_business_minutes(warsaw(2026, 1, 1, 0, 0), 10 * 60)


# --- DST ----------------------------------------------------------------------------


def test_spring_forward_business_day_is_eight_hours() -> None:
    # Mon 31 Mar 2025 is the first working day after the change on Sun 30 Mar.
    assert CAL.business_minutes_between(warsaw(2025, 3, 28, 0, 0), warsaw(2025, 4, 1, 0, 0)) == 16 * 60
    due = CAL.add_business_minutes(warsaw(2025, 3, 28, 15, 0), 120)
    assert local(due) == warsaw(2025, 3, 31, 9, 0)
    assert due == datetime(2025, 3, 31, 7, 0, tzinfo=UTC)


def test_fall_back_business_day_is_eight_hours() -> None:
    due = CAL.add_business_minutes(warsaw(2025, 10, 24, 15, 0), 120)
    assert local(due) == warsaw(2025, 10, 27, 9, 0)
    assert due == datetime(2025, 10, 27, 8, 0, tzinfo=UTC)


def test_window_across_the_spring_gap_loses_an_hour() -> None:
    assert NIGHT_SHIFT.business_minutes_between(warsaw(2025, 3, 30, 0, 0), warsaw(2025, 3, 31, 0, 0)) == 5 * 60
    assert NIGHT_SHIFT.business_minutes_between(warsaw(2025, 3, 29, 0, 0), warsaw(2025, 3, 30, 0, 0)) == 6 * 60
    # 01:00 + 2 h of open time on that night is 04:00 local (02:00-03:00 does not exist).
    assert local(NIGHT_SHIFT.add_business_minutes(warsaw(2025, 3, 30, 1, 0), 120)) == warsaw(2025, 3, 30, 4, 0)


def test_window_across_the_autumn_fold_gains_an_hour() -> None:
    assert NIGHT_SHIFT.business_minutes_between(warsaw(2025, 10, 26, 0, 0), warsaw(2025, 10, 27, 0, 0)) == 7 * 60
    due = NIGHT_SHIFT.add_business_minutes(warsaw(2025, 10, 26, 1, 0), 120)
    assert due == datetime(2025, 10, 26, 1, 0, tzinfo=UTC)  # 02:00 CET, second pass of 02:00
    assert local(due).fold == 1 or local(due).utcoffset() == timedelta(hours=1)


def test_window_opening_inside_the_gap() -> None:
    # 02:30 on 30 Mar 2025 is read as 03:30 CEST, so that night has 30 open minutes.
    assert GAP_WINDOW.business_minutes_between(warsaw(2025, 3, 30, 0, 0), warsaw(2025, 3, 31, 0, 0)) == 30
    # On the fall-back night 02:30 means its first occurrence (CEST): 2.5 real hours to 04:00 CET.
    assert GAP_WINDOW.business_minutes_between(warsaw(2025, 10, 26, 0, 0), warsaw(2025, 10, 27, 0, 0)) == 150
    assert GAP_WINDOW.business_minutes_between(warsaw(2025, 6, 1, 0, 0), warsaw(2025, 6, 2, 0, 0)) == 90


def test_always_open_day_lengths_follow_dst() -> None:
    assert ALWAYS_OPEN.business_minutes_between(warsaw(2025, 3, 30, 0, 0), warsaw(2025, 3, 31, 0, 0)) == 23 * 60
    assert ALWAYS_OPEN.business_minutes_between(warsaw(2025, 10, 26, 0, 0), warsaw(2025, 10, 27, 0, 0)) == 25 * 60
    start = warsaw(2025, 3, 29, 12, 0)
    due = ALWAYS_OPEN.add_business_minutes(start, 24 * 60)
    assert due - start == timedelta(hours=24)
    assert local(due) == warsaw(2025, 3, 30, 13, 0)
    start = warsaw(2025, 10, 25, 12, 0)
    due = ALWAYS_OPEN.add_business_minutes(start, 24 * 60)
    assert due - start == timedelta(hours=24)
    assert local(due) == warsaw(2025, 10, 26, 11, 0)


def test_local_month_bounds_follow_the_zone() -> None:
    start, end = local_month_bounds("2025-03", "Europe/Warsaw")
    assert start == datetime(2025, 2, 28, 23, 0, tzinfo=UTC)
    assert end == datetime(2025, 3, 31, 22, 0, tzinfo=UTC)
    start, end = local_month_bounds("2025-12", WARSAW)
    assert start == datetime(2025, 11, 30, 23, 0, tzinfo=UTC)
    assert end == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize("month", ["2025-13", "2025-3", "March", "2025-00", ""])
def test_local_month_bounds_rejects_bad_months(month: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        local_month_bounds(month, WARSAW)


# --- properties ---------------------------------------------------------------------

CALENDARS = st.sampled_from([CAL, NIGHT_SHIFT, ALWAYS_OPEN, GAP_WINDOW])
# Whole-minute instants spanning both DST changes of 2024-2026 and the Christmas holidays.
INSTANTS = st.integers(min_value=0, max_value=3 * 366 * 24 * 60).map(
    lambda minute: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
)
SECONDS = st.integers(min_value=0, max_value=59)
MINUTES = st.integers(min_value=0, max_value=30 * 8 * 60)


@settings(max_examples=300, deadline=None)
@given(cal=CALENDARS, start=INSTANTS, seconds=SECONDS, minutes=MINUTES)
def test_deadline_is_never_before_start_and_measures_back(
    cal: BusinessCalendar, start: datetime, seconds: int, minutes: int
) -> None:
    start = (start + timedelta(seconds=seconds)).astimezone(WARSAW)
    due = cal.add_business_minutes(start, minutes)
    assert due >= start
    assert due.tzinfo == UTC
    assert cal.business_minutes_between(start, due) == minutes


@settings(max_examples=300, deadline=None)
@given(cal=CALENDARS, start=INSTANTS, first=MINUTES, second=MINUTES)
def test_adding_in_steps_equals_adding_at_once(
    cal: BusinessCalendar, start: datetime, first: int, second: int
) -> None:
    assert cal.add_business_minutes(cal.add_business_minutes(start, first), second) == cal.add_business_minutes(
        start, first + second
    )


@settings(max_examples=300, deadline=None)
@given(cal=CALENDARS, start=INSTANTS, minutes=st.integers(min_value=1, max_value=30 * 8 * 60))
def test_business_deadline_never_falls_in_closed_time(cal: BusinessCalendar, start: datetime, minutes: int) -> None:
    due = cal.add_business_minutes(start, minutes)
    # Either open at the deadline, or the deadline is a closing instant (open just before).
    assert cal.is_open(due) or cal.is_open(due - timedelta(microseconds=1))


@settings(max_examples=200, deadline=None)
@given(cal=CALENDARS, a=INSTANTS, b=INSTANTS)
def test_business_minutes_between_is_antisymmetric_and_bounded(
    cal: BusinessCalendar, a: datetime, b: datetime
) -> None:
    between = cal.business_minutes_between(a, b)
    assert between == -cal.business_minutes_between(b, a)
    assert abs(between) <= abs(b - a) // timedelta(minutes=1)


@settings(max_examples=200, deadline=None)
@given(at=INSTANTS)
def test_always_open_calendar_adds_real_time(at: datetime) -> None:
    assert ALWAYS_OPEN.is_open(at)
    assert ALWAYS_OPEN.add_business_minutes(at, 24 * 60) - at == timedelta(hours=24)


@settings(max_examples=200, deadline=None)
@given(cal=CALENDARS, at=INSTANTS)
def test_next_opening_is_open_and_nothing_open_is_skipped(cal: BusinessCalendar, at: datetime) -> None:
    opening = cal.next_opening(at)
    assert opening >= at
    assert cal.is_open(opening)
    assert cal.business_minutes_between(at, opening) == 0


_LAZY = """
import json, sys
from maild.rules.calendar import BusinessCalendar, CalendarSettings
country, subdiv = sys.argv[1], sys.argv[2] or None
cal = BusinessCalendar(CalendarSettings(holidays_country=country, holidays_subdiv=subdiv))
found = {str(d): n for y in (2025, 2026, 2027) for d, n in cal._holidays(y).items()}
print(json.dumps([found, sum(m.startswith("holidays.countries.") for m in sys.modules)]))
"""
_LIBRARY = """
import json, sys
import holidays
country, subdiv = sys.argv[1], sys.argv[2] or None
language = holidays.country_holidays(country, subdiv=subdiv).default_language
found = {str(d): n for y in (2025, 2026, 2027)
         for d, n in holidays.country_holidays(country, subdiv=subdiv, years=y, language=language).items()}
print(json.dumps([found, sum(m.startswith("holidays.countries.") for m in sys.modules)]))
"""


@pytest.mark.parametrize(("country", "subdiv"), [("PL", ""), ("DE", "BY"), ("AX", "")])
def test_a_calendar_loads_its_own_country_table_only_and_finds_the_same_holidays(country: str, subdiv: str) -> None:
    """``holidays_library`` skips the library's package ``__init__``, which imports every country: the
    calendar (the daemon's, ``check``'s) loads one or two country modules (Åland's borrows Finland's) and
    finds exactly the holidays the library finds its own way, which loads all of them."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def run(code: str) -> tuple[dict[str, str], int]:
        out = subprocess.run([sys.executable, "-c", code, country, subdiv], capture_output=True, text=True,
                             check=True, cwd=root).stdout
        found, modules = json.loads(out)
        return found, modules

    lazy, lazy_modules = run(_LAZY)
    library, library_modules = run(_LIBRARY)
    assert lazy == library and len(lazy) >= 20
    assert lazy_modules <= 2 < 200 < library_modules


def test_the_statutory_days_off_load_one_country_table_too() -> None:
    """``peak.DaysOff`` (a tax deadline moved past a holiday) goes through ``holidays_library`` as well:
    when it is the first to ask, the country package is not imported whole either."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys; from datetime import date; from maild.rules.peak import DaysOff; "
            "off = DaysOff('PL'); print(json.dumps([off.is_off(date(2026, 11, 11)), off.is_off(date(2026, 11, 12)), "
            "sum(m.startswith('holidays.countries.') for m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert json.loads(out) == [True, False, 1]


def test_kept_holidays_answer_as_the_library_did_without_loading_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A calendar keeps the years it computed (``HolidayFile``); the next one, in a new process, reads
    them back and never loads the library, and a year not kept yet is computed and kept too."""
    from maild.rules import calendar as module
    from maild.storage.holiday_file import HolidayFile

    kept = tmp_path / "cache" / "holidays.json"
    settings = CalendarSettings(holidays_country="PL", holidays_language="en_US")
    first = BusinessCalendar(settings, HolidayFile(kept))
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    answers = [(first.is_business_day(d), first.holiday_name(d)) for d in days]
    assert answers[0] == (False, "New Year's Day")

    def no_library() -> None:
        raise AssertionError("the holidays library was loaded")

    monkeypatch.setattr(module, "holidays_library", no_library)
    second = BusinessCalendar(settings, HolidayFile(kept))
    assert [(second.is_business_day(d), second.holiday_name(d)) for d in days] == answers
    with pytest.raises(AssertionError, match="loaded"):
        second.is_business_day(date(2027, 1, 1))  # not kept: the library's to compute
    monkeypatch.undo()
    assert not BusinessCalendar(settings, HolidayFile(kept)).is_business_day(date(2027, 1, 1))
    assert '"2027"' in kept.read_text(encoding="utf-8")
    # other settings are another entry: Polish names, computed by the library
    polish = BusinessCalendar(CalendarSettings(holidays_country="PL"), HolidayFile(kept))
    assert polish.holiday_name(date(2026, 1, 1)) == "Nowy Rok"


def test_bad_holiday_settings_are_refused_with_kept_holidays_too(tmp_path: Path) -> None:
    from maild.storage.holiday_file import HolidayFile

    kept = HolidayFile(tmp_path / "holidays.json")
    with pytest.raises(CalendarError, match="holidays_country"):
        BusinessCalendar(CalendarSettings(holidays_country="XX"), kept)
    assert not (tmp_path / "holidays.json").exists()  # nothing kept for settings the library refused
    (tmp_path / "holidays.json").write_text("{not json", encoding="utf-8")  # damaged: computed as before
    assert BusinessCalendar(CalendarSettings(), HolidayFile(tmp_path / "holidays.json")).holiday_name(
        date(2026, 5, 3)) == "Święto Narodowe Trzeciego Maja"
