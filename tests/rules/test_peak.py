"""Peak periods: default windows at their bounds, topic matching, config parsing."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.peak import (
    LastDaysOfMonth,
    MonthlyDays,
    PeakConfigError,
    PeakMatch,
    PeakWindow,
    YearlyRange,
    active_windows,
    default_peak_windows,
    peak_match,
    windows_from_config,
)

DEFAULTS = default_peak_windows()
BY_NAME = {window.name: window for window in DEFAULTS}


def test_default_window_names() -> None:
    assert list(BY_NAME) == ["vat_jpk", "zus", "payroll", "pit11", "cit", "pit", "year_end"]
    for window in DEFAULTS:
        assert window.label["pl"] and window.label["en"]
        assert window.topic_words


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("vat_jpk", [date(2026, 3, 18), date(2026, 3, 25)], [date(2026, 3, 17), date(2026, 3, 26)]),
        ("zus", [date(2026, 5, 8), date(2026, 5, 15), date(2026, 5, 20)], [date(2026, 5, 7), date(2026, 5, 21)]),
        (
            "payroll",
            [date(2026, 1, 29), date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2), date(2026, 2, 26), date(2024, 2, 27)],
            [date(2026, 1, 28), date(2026, 2, 3), date(2026, 2, 25), date(2024, 2, 26)],
        ),
        ("pit11", [date(2026, 2, 1), date(2026, 2, 28), date(2028, 2, 29)], [date(2026, 1, 31), date(2026, 3, 1)]),
        ("cit", [date(2026, 3, 1), date(2026, 3, 31)], [date(2026, 2, 28), date(2026, 4, 1)]),
        ("pit", [date(2026, 4, 1), date(2026, 4, 30)], [date(2026, 3, 31), date(2026, 5, 1)]),
        (
            "year_end",
            [date(2026, 12, 15), date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 15)],
            [date(2026, 12, 14), date(2027, 1, 16), date(2026, 7, 1)],
        ),
    ],
)
def test_default_window_bounds(name: str, inside: list[date], outside: list[date]) -> None:
    window = BY_NAME[name]
    for day in inside:
        assert window.is_active(day), day
        assert window in active_windows(day, DEFAULTS)
    for day in outside:
        assert not window.is_active(day), day
        assert window not in active_windows(day, DEFAULTS)


def test_active_windows_keep_the_given_order() -> None:
    names = [window.name for window in active_windows(date(2027, 1, 1), DEFAULTS)]
    assert names == ["payroll", "year_end"]
    assert active_windows(date(2026, 7, 5), DEFAULTS) == ()


def test_last_days_of_month_follow_month_length() -> None:
    rule = LastDaysOfMonth(3)
    assert [d.day for d in _month(2026, 4) if rule.contains(d)] == [28, 29, 30]
    assert [d.day for d in _month(2024, 2) if rule.contains(d)] == [27, 28, 29]
    assert [d.day for d in _month(2026, 2) if rule.contains(d)] == [26, 27, 28]


def _month(year: int, month: int) -> list[date]:
    first = date(year, month, 1)
    return [first + timedelta(days=offset) for offset in range(31) if (first + timedelta(days=offset)).month == month]


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_year_end_wrap_is_the_union_of_its_two_halves(day: date) -> None:
    wrapped = YearlyRange((12, 15), (1, 15))
    halves = YearlyRange((12, 15), (12, 31)).contains(day) or YearlyRange((1, 1), (1, 15)).contains(day)
    assert wrapped.contains(day) == halves


# --- topic matching -----------------------------------------------------------------

IN_VAT = date(2026, 11, 20)  # also in the ZUS window
IN_PAYROLL = date(2026, 11, 29)
IN_YEAR_END = date(2026, 12, 29)
QUIET = date(2026, 7, 5)


@pytest.mark.parametrize(
    ("text", "day", "window", "words"),
    [
        ("Błąd przy wysyłce JPK_V7M za październik", IN_VAT, "vat_jpk", ("JPK",)),
        ("Re: korekta VAT-7 i deklaracji", IN_VAT, "vat_jpk", ("VAT", "deklaracja")),
        ("Problem z deklaracją DRA w ZUS-ie", IN_VAT, "zus", ("ZUS", "DRA", "deklaracja")),
        ("Nie zgadzają się składki na liście płac", date(2026, 11, 12), "zus", ("składka",)),
        ("Nie naliczają się listy płac za listopad", IN_PAYROLL, "payroll", ("lista płac",)),
        ("Wynagrodzenia nie przeszły, wypłaty wstrzymane", IN_PAYROLL, "payroll", ("wynagrodzeń", "wypłata")),
        ("payroll run fails", IN_PAYROLL, "payroll", ("payroll",)),
        ("Zamknięcia roku nie da się wykonać, bilansu brak", IN_YEAR_END, "year_end", ("zamknięcie roku", "bilans")),
        ("zamkniecie roku bez polskich liter", IN_YEAR_END, "year_end", ("zamknięcie roku",)),
        ("Year-end closing question", IN_YEAR_END, "year_end", ("year end",)),
        ("Wydruk PIT-11 dla pracowników", date(2026, 2, 20), "pit11", ("PIT-11", "PIT")),
        ("PIT11 się nie generuje", date(2026, 2, 20), "pit11", ("PIT-11", "PIT")),
        ("Zeznanie CIT-8 i sprawozdanie finansowe", date(2026, 3, 20), "cit", ("CIT", "CIT-8", "zeznanie", "sprawozdanie")),
    ],
)
def test_topic_words_of_active_windows_match(text: str, day: date, window: str, words: tuple[str, ...]) -> None:
    assert peak_match(text, day, DEFAULTS) == PeakMatch(window, words)


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("Błąd przy wysyłce JPK", QUIET),  # right topic, wrong time of month
        ("Prośba o szkolenie z modułu magazyn", IN_VAT),  # right time, routine topic
        ("Our office moved to another city", date(2026, 3, 20)),  # "city" is not CIT
        ("Spotkanie w listopadzie w sprawie place", IN_PAYROLL),  # "listopad" is not "lista"
        ("Pitch for the vatican visit", date(2026, 4, 10)),  # PIT/VAT need whole words
    ],
)
def test_routine_mail_is_not_a_peak_topic(text: str, day: date) -> None:
    assert peak_match(text, day, DEFAULTS) is None


def test_window_with_most_topic_words_wins() -> None:
    # 20 Nov: both vat_jpk and zus are active; "deklaracja" is in both.
    assert peak_match("deklaracja ZUS DRA", IN_VAT, DEFAULTS) == PeakMatch("zus", ("ZUS", "DRA", "deklaracja"))
    assert peak_match("deklaracja", IN_VAT, DEFAULTS) == PeakMatch("vat_jpk", ("deklaracja",))


def test_label_for_language() -> None:
    window = BY_NAME["year_end"]
    assert window.label_for("pl-PL") == "zamknięcie roku"
    assert window.label_for("en") == "year-end closing"
    assert window.label_for("de") == "year-end closing"


# --- config -------------------------------------------------------------------------


def test_windows_from_config() -> None:
    parsed = windows_from_config(
        [
            {
                "name": "vat_jpk",
                "label": {"pl": "VAT", "en": "VAT"},
                "days": [18, 25],
                "topic_words": ["JPK", "VAT"],
            },
            {"name": "payroll", "label": {"pl": "płace", "en": "payroll"}, "days": [1, 2], "last_days": 3},
            {"name": "year_end", "label": {"pl": "rok", "en": "year"}, "from": "12-15", "until": "01-15"},
        ]
    )
    assert parsed == (
        PeakWindow("vat_jpk", {"pl": "VAT", "en": "VAT"}, (MonthlyDays(18, 25),), ("JPK", "VAT")),
        PeakWindow("payroll", {"pl": "płace", "en": "payroll"}, (MonthlyDays(1, 2), LastDaysOfMonth(3)), ()),
        PeakWindow("year_end", {"pl": "rok", "en": "year"}, (YearlyRange((12, 15), (1, 15)),), ()),
    )
    assert [w.name for w in active_windows(date(2027, 1, 1), parsed)] == ["payroll", "year_end"]


LABEL = {"pl": "x", "en": "x"}


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ([{"label": LABEL, "days": [1, 2]}], r"peak\.windows\[0\]\.name"),
        ([{"name": "Big Name", "label": LABEL, "days": [1, 2]}], r"peak\.windows\[0\]\.name"),
        ([{"name": "a", "days": [1, 2]}], r"peak\.windows\[0\]\.label"),
        ([{"name": "a", "label": {"pl": "x"}, "days": [1, 2]}], r"peak\.windows\[0\]\.label\.en"),
        ([{"name": "a", "label": LABEL}], r"peak\.windows\[0\]: no period"),
        ([{"name": "a", "label": LABEL, "days": [25, 18]}], r"peak\.windows\[0\]\.days"),
        ([{"name": "a", "label": LABEL, "days": [0, 18]}], r"peak\.windows\[0\]\.days\[0\]"),
        ([{"name": "a", "label": LABEL, "days": [1, 32]}], r"peak\.windows\[0\]\.days\[1\]"),
        ([{"name": "a", "label": LABEL, "days": 18}], r"peak\.windows\[0\]\.days"),
        ([{"name": "a", "label": LABEL, "last_days": 0}], r"peak\.windows\[0\]\.last_days"),
        ([{"name": "a", "label": LABEL, "from": "12-15"}], r"peak\.windows\[0\]\.until"),
        ([{"name": "a", "label": LABEL, "from": "13-01", "until": "01-15"}], r"peak\.windows\[0\]\.from"),
        ([{"name": "a", "label": LABEL, "from": "02-30", "until": "03-15"}], r"peak\.windows\[0\]\.from"),
        ([{"name": "a", "label": LABEL, "from": "12-15", "until": "1-15"}], r"peak\.windows\[0\]\.until"),
        ([{"name": "a", "label": LABEL, "days": [1, 2], "topic_words": "JPK"}], r"peak\.windows\[0\]\.topic_words"),
        ([{"name": "a", "label": LABEL, "days": [1, 2], "topic_words": ["--"]}], r"peak\.windows\[0\]\.topic_words"),
        ([{"name": "a", "label": LABEL, "days": [1, 2], "month": 3}], r"peak\.windows\[0\]\.month"),
        (
            [{"name": "a", "label": LABEL, "days": [1, 2]}, {"name": "a", "label": LABEL, "last_days": 2}],
            r"peak\.windows\[1\]\.name",
        ),
        ([{"name": "a", "label": LABEL, "days": [1, 2]}, "oops"], r"peak\.windows\[1\]"),
    ],
)
def test_config_errors_name_the_window_and_key(raw: list[object], where: str) -> None:
    with pytest.raises(PeakConfigError, match=where):
        windows_from_config(raw)  # type: ignore[arg-type]
