"""Peak periods: default windows at their bounds, topic matching, config parsing."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calendar import monthrange

from maild.rules.peak import (
    DEFAULT_WINDOWS_FILE,
    POLISH_DAYS_OFF,
    DatedRange,
    DaysOff,
    LastDaysOfMonth,
    LastWorkingDaysOfMonth,
    MonthlyDays,
    PeakConfigError,
    PeakMatch,
    PeakWindow,
    YearlyRange,
    active_windows,
    days_off_kept_by,
    default_peak_windows,
    peak_match,
    windows_from_config,
)

DEFAULTS = default_peak_windows()
BY_NAME = {window.name: window for window in DEFAULTS}


def test_default_window_names() -> None:
    assert list(BY_NAME) == [
        "vat_jpk", "zus", "payroll", "pit_january", "pit11", "cit", "pit", "statements_prepare",
        "statements_approve", "statements_file", "ksef_large", "ksef", "ksef_small", "year_end",
    ]
    for window in DEFAULTS:
        assert window.label["pl"] and window.label["en"]
        assert window.topic_words


def test_every_default_window_has_a_source_comment() -> None:
    text = DEFAULT_WINDOWS_FILE.read_text(encoding="utf-8")
    for block in text.split("[[windows]]")[1:]:
        name = block.split('name = "')[1].split('"')[0]
        comment = text.split(f'[[windows]]\nname = "{name}"')[0].rsplit("\n\n", 1)[-1]
        assert name.startswith("ksef") or "Source:" in comment or "Not a deadline" in comment, name


def d(text: str) -> date:
    return date.fromisoformat(text)


# Each default window in 2026 and 2027: first and last day inside, the days around outside.
# A deadline on a Saturday, Sunday or holiday moves to the next working day (Ordynacja
# podatkowa art. 12 § 5), and the window ends on the moved day.
WINDOWS_2026_2027: dict[str, list[tuple[str, str]]] = {
    "vat_jpk": [
        ("2026-01-18", "2026-01-26"),  # 25 Jan 2026 is a Sunday
        ("2026-02-18", "2026-02-25"),
        ("2026-04-18", "2026-04-27"),  # Saturday
        ("2026-07-18", "2026-07-27"),  # Saturday
        ("2026-10-18", "2026-10-26"),  # Sunday
        ("2026-12-18", "2026-12-28"),  # Christmas, then the weekend
        ("2027-04-18", "2027-04-26"),  # Sunday
        ("2027-09-18", "2027-09-27"),  # Saturday
        ("2027-12-18", "2027-12-27"),  # Christmas Day on a Saturday
    ],
    "zus": [
        ("2026-06-08", "2026-06-22"),  # 20 Jun 2026 is a Saturday
        ("2026-09-08", "2026-09-21"),  # Sunday
        ("2026-12-08", "2026-12-21"),  # Sunday
        ("2026-05-08", "2026-05-20"),
        ("2027-02-08", "2027-02-22"),  # Saturday
        ("2027-11-08", "2027-11-22"),  # Saturday
    ],
    "payroll": [
        ("2026-01-28", "2026-02-10"),  # the last 3 working days (28-30 Jan) to payday, the 10th
        ("2026-03-27", "2026-04-10"),  # Fri 27, Mon 30, Tue 31 March: the weekend between counts
        ("2026-12-29", "2027-01-10"),  # 24-26 December are holidays
        ("2027-05-26", "2027-06-10"),  # 27 May 2027 is Corpus Christi
        ("2027-12-29", "2028-01-10"),
    ],
    "pit_january": [("2026-01-16", "2026-02-02"), ("2027-01-16", "2027-02-01")],  # 31 Jan: Sat / Sun
    "pit11": [("2026-02-01", "2026-03-02"), ("2027-02-01", "2027-03-01")],  # 28 Feb: Sat / Sun
    "cit": [("2026-03-01", "2026-03-31"), ("2027-03-01", "2027-03-31")],
    "pit": [("2026-04-01", "2026-04-30"), ("2027-04-01", "2027-04-30")],
    "statements_prepare": [("2026-03-01", "2026-03-31"), ("2027-03-01", "2027-03-31")],
    "statements_approve": [("2026-06-01", "2026-06-30"), ("2027-06-01", "2027-06-30")],
    "statements_file": [("2026-07-01", "2026-07-15"), ("2027-07-01", "2027-07-15")],
    "ksef_large": [("2026-01-19", "2026-02-13")],
    "ksef": [("2026-03-18", "2026-04-15")],
    "ksef_small": [("2026-12-14", "2027-01-15")],
    "year_end": [("2026-12-15", "2027-01-15"), ("2027-12-15", "2028-01-15")],
}


@pytest.mark.parametrize(("name", "first", "last"), [
    (name, first, last) for name, spans in WINDOWS_2026_2027.items() for first, last in spans
])
def test_default_window_bounds_2026_2027(name: str, first: str, last: str) -> None:
    window = BY_NAME[name]
    start, end = d(first), d(last)
    day = start
    while day <= end:
        assert window.is_active(day), day
        assert window in active_windows(day, DEFAULTS)
        day += timedelta(days=1)
    assert not window.is_active(start - timedelta(days=1)), start
    assert not window.is_active(end + timedelta(days=1)), end


def test_ksef_windows_are_once_only() -> None:
    assert not BY_NAME["ksef_large"].is_active(d("2027-02-01"))
    assert not BY_NAME["ksef"].is_active(d("2027-04-01"))
    assert not BY_NAME["ksef_small"].is_active(d("2028-01-01"))


@pytest.mark.parametrize(("name", "day"), [
    ("ksef_large", "2026-02-01"),  # art. 145l: above PLN 200 million of 2024 sales
    ("ksef", "2026-04-01"),  # art. 145l: everyone else
    ("ksef_small", "2027-01-01"),  # the day after art. 145m's period (1 April - 31 December 2026) ends
])
def test_ksef_windows_surround_the_acts_days(name: str, day: str) -> None:
    """Each window runs about two weeks either side of its day, and its label names that day."""
    window = BY_NAME[name]
    start = d(day)
    assert all(window.is_active(start + timedelta(days=n)) for n in range(-12, 13))
    assert not window.is_active(start - timedelta(days=40)) and not window.is_active(start + timedelta(days=40))
    assert f"{start.day} " in window.label_for("en") and str(start.year) in window.label_for("en")


def test_the_issue_days_match_the_vat_window() -> None:
    for day in ("2026-01-26", "2026-04-27", "2026-12-28"):
        assert BY_NAME["vat_jpk"].is_active(d(day)), day
    assert peak_match("Deklaracja VAT", d("2026-04-27"), DEFAULTS) == PeakMatch("vat_jpk", ("VAT", "deklaracja"))


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
def test_a_moved_deadline_is_the_first_working_day_on_or_after_it(day: date) -> None:
    moved = POLISH_DAYS_OFF.moved(day)
    assert moved >= day and not POLISH_DAYS_OFF.is_off(moved)
    assert all(POLISH_DAYS_OFF.is_off(day + timedelta(days=i)) for i in range((moved - day).days))
    assert (moved - day).days <= 5  # the longest run of days off: Christmas Eve on a Wednesday to the Sunday


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(1, 28), st.integers(1, 31))
def test_a_moving_monthly_window_contains_the_fixed_one(day: date, first: int, last: int) -> None:
    if first > last:
        first, last = last, first
    if MonthlyDays(first, last, moves=False).contains(day):
        assert MonthlyDays(first, last).contains(day)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
def test_a_window_ends_exactly_on_the_moved_deadline(day: date) -> None:
    # the 25th's window holds every day from the 18th to the moved 25th, and not the day after
    rule = MonthlyDays(18, 25)
    deadline = POLISH_DAYS_OFF.moved(date(day.year, day.month, 25))
    assert rule.contains(deadline) and not rule.contains(deadline + timedelta(days=1))


def _on(year: int, month_day: tuple[int, int]) -> date:
    month, day = month_day
    return date(year, month, min(day, monthrange(year, month)[1]))


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
       st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(0, 400), st.booleans())
def test_a_range_holds_what_its_moved_end_holds(day: date, first: date, length: int, moves: bool) -> None:
    """The ranges find whether the moved end reaches a day from the days before it (asking no other
    year's holidays for a range that ended long before): the same answer as moving the end itself."""
    last = first + timedelta(days=length)
    end = POLISH_DAYS_OFF.moved(last) if moves else last
    once = DatedRange(first, last, moves)
    assert once.contains(day) == (first <= day <= end)
    assert once.contains(end) and not once.contains(end + timedelta(days=1))
    start_md, end_md = (first.month, first.day), (last.month, last.day)
    wraps = start_md > end_md
    expected = False
    for year in (day.year, day.year - 1):
        deadline = _on(year + 1 if wraps else year, end_md)
        expected |= _on(year, start_md) <= day <= (POLISH_DAYS_OFF.moved(deadline) if moves else deadline)
    assert YearlyRange(start_md, end_md, moves).contains(day) == expected


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(1, 10))
def test_last_working_days_hold_exactly_that_many_working_days(day: date, count: int) -> None:
    rule = LastWorkingDaysOfMonth(count)
    month_days = [date(day.year, day.month, n) for n in range(1, monthrange(day.year, day.month)[1] + 1)]
    inside = [m for m in month_days if rule.contains(m)]
    assert inside == month_days[len(month_days) - len(inside):], "one stretch up to the month's end"
    assert sum(1 for m in inside if not POLISH_DAYS_OFF.is_off(m)) == count
    assert not POLISH_DAYS_OFF.is_off(inside[0])


def test_active_windows_keep_the_given_order() -> None:
    names = [window.name for window in active_windows(date(2027, 1, 1), DEFAULTS)]
    assert names == ["payroll", "ksef_small", "year_end"]
    assert active_windows(date(2026, 7, 28), DEFAULTS) == ()


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
        ("Błąd przy wysyłce JPK_V7M za październik", IN_VAT, "vat_jpk", ("JPK", "V7M")),
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
        ("Zeznanie CIT-8 i sprawozdanie finansowe", date(2026, 3, 20), "cit", ("CIT", "CIT-8", "zeznanie")),
        ("Bilans i sprawozdanie finansowe do KRS", date(2026, 7, 10), "statements_file",
         ("sprawozdanie finansowe", "KRS")),
        ("Nie wysyła się e-faktura do KSeF", date(2026, 2, 2), "ksef_large", ("KSeF", "e-faktura")),
        ("PIT-4R za 2025 nie chce się wysłać", date(2026, 2, 2), "pit_january", ("PIT-4R", "PIT")),
        ("Lista płac za styczeń", date(2026, 2, 9), "payroll", ("lista płac",)),
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


def test_windows_from_config_moves_working_days_and_dates() -> None:
    parsed = windows_from_config(
        [
            {"name": "vat", "label": {"pl": "VAT", "en": "VAT"}, "days": [18, 25], "moves": False},
            {"name": "pay", "label": {"pl": "p", "en": "p"}, "last_working_days": 3},
            {"name": "ksef", "label": {"pl": "k", "en": "k"}, "from": date(2026, 1, 19), "until": date(2026, 2, 13)},
        ]
    )
    assert [w.rules for w in parsed] == [
        (MonthlyDays(18, 25, moves=False),), (LastWorkingDaysOfMonth(3),),
        (DatedRange(date(2026, 1, 19), date(2026, 2, 13), moves=True),),
    ]
    assert not parsed[0].is_active(date(2026, 1, 26)), "moves = false: the 25th is the last day"
    assert BY_NAME["vat_jpk"].is_active(date(2026, 1, 26))


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
        ([{"name": "a", "label": LABEL, "days": [1, 2], "moves": "yes"}], r"peak\.windows\[0\]\.moves"),
        ([{"name": "a", "label": LABEL, "last_working_days": 0}], r"peak\.windows\[0\]\.last_working_days"),
        ([{"name": "a", "label": LABEL, "from": date(2026, 2, 1), "until": "03-01"}], r"peak\.windows\[0\]\.until"),
        ([{"name": "a", "label": LABEL, "from": date(2026, 2, 1), "until": date(2026, 1, 1)}],
         r"peak\.windows\[0\]\.until"),
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


@given(st.text(max_size=200))
def test_the_fast_fold_equals_the_general_one(text: str) -> None:
    from maild.rules.peak import _fold, _strip_marks

    assert _fold(text) == _strip_marks(text.casefold())


@given(st.text(alphabet=st.sampled_from("abcdeklłąęśżźćńóVATJPKZUS -_0123456789"), max_size=120),
       st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)))
def test_the_indexed_topic_match_equals_a_scan(text: str, day: date) -> None:
    from maild.rules.peak import _phrase_in, _token_matches, _tokens, _topic_tokens, _Words

    words = _Words(text)
    for window in DEFAULTS:
        for topic in window.topic_words:
            phrase = _topic_tokens(topic)
            scan = any(all(_token_matches(t, words.words[i + k]) for k, t in enumerate(phrase))
                       for i in range(len(words.words) - len(phrase) + 1))
            assert _phrase_in(phrase, words) == scan, (topic, text)
    assert _tokens(text) == words.words


# Marks written apart from their letter, compatibility forms (ligatures, fractions, full-width
# letters), typographic quotes and dashes, Polish letters: the per-character fold's hard cases.
_FOLD_ALPHABET = "aAeEoOlLzZ łŁąĄęĘśŚżŻźŹćĆńŃóÓ„”“–—…«»ﬁﬂ½²ＡＢａ\u0301\u0328\u0307\u0323İıßẞǅΣσς한글日本"


@given(st.text(alphabet=st.sampled_from(_FOLD_ALPHABET), max_size=200))
def test_the_per_character_fold_equals_folding_the_whole_text(text: str) -> None:
    from maild.rules.peak import _fold, _strip_marks

    assert _fold(text) == _strip_marks(text.casefold())


@given(st.lists(st.text(alphabet=st.sampled_from(_FOLD_ALPHABET), max_size=40), max_size=5))
def test_the_fold_without_room_to_keep_characters_is_the_same(texts: list[str]) -> None:
    from maild.rules import peak

    saved = peak._OTHER_FOLD_MAX, peak._OTHER_FOLD
    peak._OTHER_FOLD_MAX, peak._OTHER_FOLD = 0, {}  # full: what each text needs is folded and not kept
    try:
        for text in texts:
            assert peak._fold(text) == peak._strip_marks(text.casefold())
        assert peak._OTHER_FOLD == {}
    finally:
        peak._OTHER_FOLD_MAX, peak._OTHER_FOLD = saved


@given(st.dates(min_value=date(2025, 12, 1), max_value=date(2028, 1, 31)))
def test_active_windows_of_the_same_tuple_are_those_of_a_fresh_copy(day: date) -> None:
    from maild.rules.peak import _active_on

    first = active_windows(day, DEFAULTS)
    assert first == active_windows(day, DEFAULTS) == active_windows(day, list(DEFAULTS))
    assert first == tuple(w for w in DEFAULTS if w.is_active(day))
    assert active_windows(day, DEFAULTS[:2]) == _active_on(day, DEFAULTS[:2])
    weekends_only = DaysOff(None)  # the days off are part of the answer: another set is asked again
    assert active_windows(day, DEFAULTS, weekends_only) == tuple(w for w in DEFAULTS if w.is_active(day, weekends_only))


def test_the_days_off_of_kept_holidays_are_the_librarys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``days_off_kept_by`` (``report month``'s peak days): a Polish national calendar on the daemon's
    kept holidays moves every deadline as the library's days off do, in any holiday language, without
    loading the library for a kept year; a region's or another country's calendar is not taken for
    Poland's statutory days off."""
    from maild.rules import calendar as module
    from maild.rules.calendar import BusinessCalendar, CalendarSettings
    from maild.storage.holiday_file import HolidayFile

    kept = tmp_path / "holidays.json"
    days = [date(2025, 12, 1) + timedelta(days=i) for i in range(2 * 365)]
    library_off = [POLISH_DAYS_OFF.is_off(d) for d in days]
    library_active = [[w.is_active(d) for w in DEFAULTS] for d in days]
    for settings in (CalendarSettings(), CalendarSettings(holidays_language="en_US")):
        for year in (2025, 2026, 2027, 2028):  # kept as the daemon keeps them (a yearly deadline looks ahead)
            BusinessCalendar(settings, HolidayFile(kept)).public_holidays(year)

        def no_library() -> None:
            raise AssertionError("the holidays library was loaded")

        monkeypatch.setattr(module, "holidays_library", no_library)
        off = days_off_kept_by(BusinessCalendar(settings, HolidayFile(kept, write=False)))
        assert off is not POLISH_DAYS_OFF
        assert [off.is_off(d) for d in days] == library_off
        assert [[w.is_active(d, off) for w in DEFAULTS] for d in days] == library_active
        monkeypatch.undo()
    assert off.is_off(date(2026, 11, 11)) and not off.is_off(date(2026, 11, 12))
    for other in (CalendarSettings(holidays_country="DE"), CalendarSettings(holidays_country=None),
                  CalendarSettings(holidays_country="DE", holidays_subdiv="BY")):
        assert days_off_kept_by(BusinessCalendar(other)) is POLISH_DAYS_OFF


_TOPIC_TEXT = st.lists(
    st.one_of(st.sampled_from([topic for window in DEFAULTS for topic in window.topic_words]),
              st.text(alphabet=st.sampled_from("abcdeklłąęśżźćńóyVATJPKZUSPIT -_,.0123456789\n"), max_size=12)),
    max_size=12).map(" ".join)


@given(_TOPIC_TEXT, st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)))
def test_the_topic_words_found_once_match_as_the_text_does(text: str, day: date) -> None:
    """The parse worker finds a mail's topic words of every window (``peak_topics_in``, one pass
    over its words) and the day's window is picked from them: the same as matching the text."""
    from maild.rules.peak import _phrase_in, _topic_tokens, _Words, peak_match_topics, peak_topics_in

    found = peak_topics_in(text, DEFAULTS)
    words = _Words(text)
    assert found == {topic for window in DEFAULTS for topic in window.topic_words
                     if _phrase_in(_topic_tokens(topic), words)}
    assert peak_match_topics(found, day, DEFAULTS) == peak_match(text, day, DEFAULTS)
    assert peak_topics_in(text, list(DEFAULTS)) == found  # not the config's tuple: an index of its own
