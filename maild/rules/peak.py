"""Peak periods: the accounting and payroll deadlines around which support queues pile up.

Within a peak window, tickets about that window's topic rank above routine ones (the
prioritiser decides how much); acknowledgements can name the period. Windows are data,
loaded from ``[[peak.windows]]`` tables, with Polish defaults.

Topic matching is deliberately simple and predictable rather than linguistic: text and
topic words are case- and diacritic-folded ("zamkniecie roku" written without Polish
letters still matches), short words such as "VAT" or "PIT" must be whole words, and
longer ones match as prefixes after dropping a final vowel, which covers most Polish
inflections ("deklaracja" -> "deklaracji", "lista płac" -> "listy płac").
"""
from __future__ import annotations

import re
import unicodedata
from calendar import monthrange
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from maild.errors import MaildError


class PeakConfigError(MaildError, ValueError):
    """A ``[[peak.windows]]`` table is unusable; names the window index and key."""


@dataclass(frozen=True)
class MonthlyDays:
    """Days ``first``..``last`` of every month; a ``last`` past the month's end stops there."""

    first: int
    last: int

    def contains(self, day: date) -> bool:
        return self.first <= day.day <= self.last


@dataclass(frozen=True)
class LastDaysOfMonth:
    """The last ``count`` days of every month (payroll runs before payday)."""

    count: int

    def contains(self, day: date) -> bool:
        return day.day > monthrange(day.year, day.month)[1] - self.count


@dataclass(frozen=True)
class YearlyRange:
    """From (month, day) to (month, day) inclusive, every year; wraps over the year end
    when ``start`` is after ``end``. (2, 29) as an end covers February in any year."""

    start: tuple[int, int]
    end: tuple[int, int]

    def contains(self, day: date) -> bool:
        key = (day.month, day.day)
        if self.start <= self.end:
            return self.start <= key <= self.end
        return key >= self.start or key <= self.end


PeakRule = MonthlyDays | LastDaysOfMonth | YearlyRange


@dataclass(frozen=True)
class PeakWindow:
    """A named peak period; active on a day when any of its rules contains it."""

    name: str
    label: Mapping[str, str]
    rules: tuple[PeakRule, ...]
    topic_words: tuple[str, ...]

    def is_active(self, day: date) -> bool:
        return any(rule.contains(day) for rule in self.rules)

    def label_for(self, lang: str) -> str:
        """Label in ``lang`` (``pl-PL`` -> ``pl``), English when that language is missing."""
        base = lang.lower().split("-")[0].split("_")[0]
        return self.label.get(base) or self.label.get("en") or next(iter(self.label.values()))

    def __hash__(self) -> int:
        return hash((self.name, self.rules, self.topic_words))


@dataclass(frozen=True)
class PeakMatch:
    window: str
    words: tuple[str, ...]


def default_peak_windows() -> tuple[PeakWindow, ...]:
    """Polish accounting and payroll deadlines, as consultancies see them in the queue."""
    return (
        PeakWindow(
            "vat_jpk",
            {"pl": "miesięczne rozliczenie VAT / JPK (termin 25.)", "en": "monthly VAT / JPK filing (due on the 25th)"},
            (MonthlyDays(18, 25),),
            ("JPK", "VAT", "deklaracja", "KSeF"),
        ),
        PeakWindow(
            "zus",
            {
                "pl": "deklaracje i składki ZUS, zaliczki PIT-4 (terminy 15. i 20.)",
                "en": "social insurance (ZUS) declarations and payroll tax (due on the 15th and 20th)",
            },
            (MonthlyDays(8, 20),),
            ("ZUS", "DRA", "składka", "składek", "PIT-4", "deklaracja"),
        ),
        PeakWindow(
            "payroll",
            {"pl": "naliczanie wynagrodzeń (koniec miesiąca)", "en": "monthly payroll (end of month)"},
            (LastDaysOfMonth(3), MonthlyDays(1, 2)),
            ("lista płac", "wynagrodzeń", "wypłata", "pensja", "payroll", "salary"),
        ),
        PeakWindow(
            "pit11",
            {"pl": "informacje PIT-11 dla pracowników (do końca lutego)", "en": "PIT-11 employee tax statements (by the end of February)"},
            (YearlyRange((2, 1), (2, 29)),),
            ("PIT-11", "PIT", "informacja roczna"),
        ),
        PeakWindow(
            "cit",
            {"pl": "roczne zeznanie CIT (do końca marca)", "en": "annual corporate income tax return, CIT (by the end of March)"},
            (YearlyRange((3, 1), (3, 31)),),
            ("CIT", "CIT-8", "zeznanie", "sprawozdanie", "bilans"),
        ),
        PeakWindow(
            "pit",
            {"pl": "roczne zeznania PIT (do końca kwietnia)", "en": "annual personal income tax returns, PIT (by the end of April)"},
            (YearlyRange((4, 1), (4, 30)),),
            ("PIT", "zeznanie", "rozliczenie roczne"),
        ),
        PeakWindow(
            "year_end",
            {"pl": "zamknięcie roku", "en": "year-end closing"},
            (YearlyRange((12, 15), (1, 15)),),
            ("zamknięcie roku", "bilans", "sprawozdanie", "inwentaryzacja", "year end", "closing the year"),
        ),
    )


def active_windows(day: date, windows: Sequence[PeakWindow]) -> tuple[PeakWindow, ...]:
    """Windows active on local date ``day``, in the order given."""
    return tuple(window for window in windows if window.is_active(day))


_TOKEN = re.compile(r"[^\W\d_]+|\d+")
_VOWELS = frozenset("aeiouy")
_EXACT_UP_TO = 3


def _fold(text: str) -> str:
    if text.isascii():
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text.casefold().replace("ł", "l"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_fold(text))


def _token_stem(token: str) -> str:
    if len(token) >= 4 and token[-1] in _VOWELS:
        return token[:-1]
    return token


def _token_matches(topic: str, word: str) -> bool:
    if len(topic) <= _EXACT_UP_TO or topic.isdigit():
        return word == topic
    return word.startswith(_token_stem(topic))


def _phrase_in(phrase: list[str], words: list[str]) -> bool:
    span = len(phrase)
    if not span:
        return False
    return any(
        all(_token_matches(topic, words[start + offset]) for offset, topic in enumerate(phrase))
        for start in range(len(words) - span + 1)
    )


def peak_match(text: str, day: date, windows: Sequence[PeakWindow]) -> PeakMatch | None:
    """The active window whose topic words appear in ``text`` (pass subject and body).

    When several active windows match, the one with most distinct topic words wins;
    ties go to the earlier window.
    """
    active = active_windows(day, windows)
    if not active:
        return None
    words = _tokens(text)
    best: PeakMatch | None = None
    for window in active:
        found = tuple(topic for topic in window.topic_words if _phrase_in(_tokens(topic), words))
        if found and (best is None or len(found) > len(best.words)):
            best = PeakMatch(window.name, found)
    return best


_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")
_KNOWN_KEYS = frozenset({"name", "label", "days", "last_days", "from", "until", "topic_words"})


def _month_day(value: object, where: str) -> tuple[int, int]:
    matched = _MONTH_DAY.fullmatch(value) if isinstance(value, str) else None
    if matched is None:
        raise PeakConfigError(f"{where}: expected \"MM-DD\", got {value!r}")
    month, day = int(matched.group(1)), int(matched.group(2))
    if not 1 <= month <= 12 or not 1 <= day <= monthrange(2000, month)[1]:
        raise PeakConfigError(f"{where}: {value!r} is not a day of the year")
    return month, day


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PeakConfigError(f"{where}: expected a whole number {low}..{high}, got {value!r}")
    return value


def _window_from_table(index: int, table: Mapping[str, object]) -> PeakWindow:
    where = f"peak.windows[{index}]"
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise PeakConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")
    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
        raise PeakConfigError(f"{where}.name: expected a lowercase identifier like \"vat_jpk\", got {name!r}")
    label = table.get("label")
    if not isinstance(label, Mapping) or not all(
        isinstance(key, str) and isinstance(text, str) and text for key, text in label.items()
    ):
        raise PeakConfigError(f"{where}.label: expected a table of language = \"text\", got {label!r}")
    for lang in ("pl", "en"):
        if lang not in label:
            raise PeakConfigError(f"{where}.label.{lang}: required (acknowledgements go out in Polish and English)")
    rules: list[PeakRule] = []
    if "days" in table:
        days = table["days"]
        if not isinstance(days, list) or len(days) != 2:
            raise PeakConfigError(f"{where}.days: expected [first, last], got {days!r}")
        first = _int(days[0], f"{where}.days[0]", 1, 31)
        last = _int(days[1], f"{where}.days[1]", 1, 31)
        if first > last:
            raise PeakConfigError(f"{where}.days: first day {first} is after last day {last}")
        rules.append(MonthlyDays(first, last))
    if "last_days" in table:
        rules.append(LastDaysOfMonth(_int(table["last_days"], f"{where}.last_days", 1, 28)))
    if "from" in table or "until" in table:
        for key in ("from", "until"):
            if key not in table:
                raise PeakConfigError(f"{where}.{key}: required together with the other end of the range")
        rules.append(YearlyRange(_month_day(table["from"], f"{where}.from"), _month_day(table["until"], f"{where}.until")))
    if not rules:
        raise PeakConfigError(f"{where}: no period given; set days, last_days, or from and until")
    topic_words = table.get("topic_words", [])
    if not isinstance(topic_words, list) or not all(isinstance(word, str) and _tokens(word) for word in topic_words):
        raise PeakConfigError(f"{where}.topic_words: expected a list of words or phrases, got {topic_words!r}")
    return PeakWindow(name, dict(label), tuple(rules), tuple(topic_words))


def windows_from_config(raw: Sequence[Mapping[str, object]]) -> tuple[PeakWindow, ...]:
    """Parse ``[[peak.windows]]`` tables (as loaded by tomllib)."""
    windows = []
    seen: set[str] = set()
    for index, table in enumerate(raw):
        if not isinstance(table, Mapping):
            raise PeakConfigError(f"peak.windows[{index}]: expected a table, got {table!r}")
        window = _window_from_table(index, table)
        if window.name in seen:
            raise PeakConfigError(f"peak.windows[{index}].name: {window.name!r} used twice")
        seen.add(window.name)
        windows.append(window)
    return tuple(windows)
