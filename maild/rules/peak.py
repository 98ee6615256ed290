"""Peak periods: the accounting and payroll deadlines around which support queues pile up.

Within a peak window, tickets about that window's topic rank above routine ones (the
prioritiser decides how much); acknowledgements can name the period. Windows are data,
loaded from ``[[peak.windows]]`` tables, with the Polish statutory calendar as the
default (``peak_windows.toml``, each window with its legal source). A window's last day
is a deadline, which moves off Saturdays, Sundays and public holidays (``DaysOff``).

Topic matching is deliberately simple and predictable rather than linguistic: text and
topic words are case- and diacritic-folded ("zamkniecie roku" written without Polish
letters still matches), short words such as "VAT" or "PIT" must be whole words, and
longer ones match as prefixes after dropping a final vowel, which covers most Polish
inflections ("deklaracja" -> "deklaracji", "lista płac" -> "listy płac").
"""
from __future__ import annotations

import re
import tomllib
import unicodedata
from bisect import bisect_left
from functools import lru_cache
from calendar import monthrange
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from maild.errors import MaildError

if TYPE_CHECKING:
    from maild.rules.calendar import BusinessCalendar


class PeakConfigError(MaildError, ValueError):
    """A ``[[peak.windows]]`` table is unusable; names the window index and key."""


class DaysOff:
    """Saturdays, Sundays and public holidays: days a statutory deadline cannot fall on.

    Tax ordinance art. 12 § 5 (Ordynacja podatkowa): a deadline on a Saturday,
    Sunday or public holiday moves to the next day that is none of them; the civil
    code (art. 115 k.c.) says the same for other deadlines. This is the state's
    calendar, not the consultancy's: its ``closed_days`` move no tax deadline.

    ``holidays``: the country's public holidays of a year, from somewhere other than
    the library (``days_off_kept_by``); by default the library computes them.
    """

    def __init__(self, country: str | None = "PL",
                 holidays: Callable[[int], Collection[date]] | None = None) -> None:
        self.country = country
        self._holidays = holidays
        self._by_year: dict[int, frozenset[date]] = {}

    def is_off(self, day: date) -> bool:
        if day.weekday() >= 5:
            return True
        if self.country is None:
            return False
        found = self._by_year.get(day.year)
        if found is None:
            if self._holidays is not None:
                found = frozenset(self._holidays(day.year))
            else:
                from maild.rules.calendar import holidays_library  # when a deadline is first moved

                found = frozenset(holidays_library().country_holidays(self.country, years=day.year))
            self._by_year[day.year] = found
        return day in found

    def moved(self, deadline: date) -> date:
        """The day a deadline really falls on: itself, or the next day that is not off."""
        while self.is_off(deadline):
            deadline += _DAY
        return deadline


_DAY = timedelta(days=1)
POLISH_DAYS_OFF = DaysOff("PL")


def days_off_kept_by(calendar: BusinessCalendar) -> DaysOff:
    """Poland's statutory days off with the holidays ``calendar`` holds, when it is Poland's
    national calendar (no region: the same days in any of its languages): a calendar built on
    the daemon's kept holidays (``desk.context.business_calendar``) answers without loading
    the library for a year it kept. For any other calendar, ``POLISH_DAYS_OFF``."""
    settings = calendar.settings
    if settings.holidays_country == "PL" and not settings.holidays_subdiv:
        return DaysOff("PL", calendar.public_holidays)
    return POLISH_DAYS_OFF


def _month_day(year: int, month: int, day: int) -> date:
    """``day`` of the month, or the month's last day when the month is shorter (31 -> 30 April)."""
    return date(year, month, min(day, monthrange(year, month)[1]))


def _within(first: date, last: date, day: date, moves: bool, off: DaysOff) -> bool:
    """``first <= day <= (off.moved(last) if moves else last)``, asking ``off`` only about the days
    from ``last`` to ``day`` and from the latest back: the moved end reaches ``day`` exactly when
    every day from ``last`` to the day before ``day`` is off. So a window of another year that ended
    months before ``day`` costs one question about the day before ``day``, not that year's holidays."""
    if day < first:
        return False
    if day <= last:
        return True
    if not moves:
        return False
    before = day - _DAY
    while before >= last:
        if not off.is_off(before):
            return False
        before -= _DAY
    return True


def _previous_month(day: date) -> tuple[int, int]:
    return (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)


@dataclass(frozen=True)
class MonthlyDays:
    """Days ``first``..``last`` of every month; a ``last`` past the month's end stops there.

    With ``moves`` the ``last`` day is a statutory deadline: when it is a day off the
    window runs to the next working day (VAT due on the 25th: 25 January 2026 is a
    Sunday, so the window ends on Monday the 26th), possibly into the next month.
    """

    first: int
    last: int
    moves: bool = True

    def contains(self, day: date, off: DaysOff = POLISH_DAYS_OFF) -> bool:
        for year, month in ((day.year, day.month), _previous_month(day)):
            if _within(_month_day(year, month, self.first), _month_day(year, month, self.last), day, self.moves, off):
                return True
        return False


@dataclass(frozen=True)
class LastDaysOfMonth:
    """The last ``count`` days of every month."""

    count: int

    def contains(self, day: date, off: DaysOff = POLISH_DAYS_OFF) -> bool:
        return day.day > monthrange(day.year, day.month)[1] - self.count


@dataclass(frozen=True)
class LastWorkingDaysOfMonth:
    """From the ``count``-th last working day of every month to its end (payroll is run
    before payday); a weekend inside that stretch belongs to it."""

    count: int

    def contains(self, day: date, off: DaysOff = POLISH_DAYS_OFF) -> bool:
        current = _month_day(day.year, day.month, 31)
        found = 0
        while current.month == day.month:
            if not off.is_off(current):
                found += 1
                if found == self.count:
                    break
            current -= _DAY
        return day >= current


@dataclass(frozen=True)
class YearlyRange:
    """From (month, day) to (month, day) inclusive, every year; wraps over the year end
    when ``start`` is after ``end``. (2, 29) as an end covers February in any year.
    With ``moves`` the end is a statutory deadline and moves off a day off (31 January
    2026 is a Saturday: the January returns are due on Monday 2 February)."""

    start: tuple[int, int]
    end: tuple[int, int]
    moves: bool = True

    def contains(self, day: date, off: DaysOff = POLISH_DAYS_OFF) -> bool:
        wraps = self.start > self.end
        for year in (day.year, day.year - 1):
            if _within(_month_day(year, *self.start), _month_day(year + 1 if wraps else year, *self.end), day,
                       self.moves, off):
                return True
        return False


@dataclass(frozen=True)
class DatedRange:
    """From one date to another, once (the KSeF rollout stages); ``moves`` as above."""

    start: date
    end: date
    moves: bool = False

    def contains(self, day: date, off: DaysOff = POLISH_DAYS_OFF) -> bool:
        return _within(self.start, self.end, day, self.moves, off)


PeakRule = MonthlyDays | LastDaysOfMonth | LastWorkingDaysOfMonth | YearlyRange | DatedRange


@dataclass(frozen=True)
class PeakWindow:
    """A named peak period; active on a day when any of its rules contains it."""

    name: str
    label: Mapping[str, str]
    rules: tuple[PeakRule, ...]
    topic_words: tuple[str, ...]

    def is_active(self, day: date, off: DaysOff = POLISH_DAYS_OFF) -> bool:
        return any(rule.contains(day, off) for rule in self.rules)

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


DEFAULT_WINDOWS_FILE = Path(__file__).resolve().parent / "peak_windows.toml"


def default_peak_windows() -> tuple[PeakWindow, ...]:
    """The Polish statutory calendar, from ``peak_windows.toml`` (each window with its legal source)."""
    with DEFAULT_WINDOWS_FILE.open("rb") as handle:
        data = tomllib.load(handle)
    return windows_from_config(data["windows"])


def active_windows(day: date, windows: Sequence[PeakWindow], off: DaysOff = POLISH_DAYS_OFF) -> tuple[PeakWindow, ...]:
    """Windows active on local date ``day``, in the order given; ``off`` moves their deadlines.

    Cached per day: a batch of mail arrives on one or two days, and the statutory
    rules (moved deadlines, last working days) cost a few holiday lookups each.
    """
    if isinstance(windows, tuple):
        # the config's own tuple, asked for every new ticket: found by identity, not by hashing
        # every window's rules and words again (a tenth of a ticket's prioritising)
        hit = _ACTIVE_BY_IDENTITY.get((id(windows), id(off), day))
        if hit is not None and hit[0] is windows and hit[1] is off:
            return hit[2]
        found = _active_on(day, windows, off)
        if len(_ACTIVE_BY_IDENTITY) >= 256:
            _ACTIVE_BY_IDENTITY.clear()
        # the tuple and days off are kept with their answer, so their ids cannot be reused while the entry lives
        _ACTIVE_BY_IDENTITY[(id(windows), id(off), day)] = (windows, off, found)
        return found
    return _active_on(day, tuple(windows), off)


_ACTIVE_BY_IDENTITY: dict[tuple[int, int, date],
                          tuple[tuple[PeakWindow, ...], DaysOff, tuple[PeakWindow, ...]]] = {}


@lru_cache(maxsize=256)
def _active_on(day: date, windows: tuple[PeakWindow, ...], off: DaysOff = POLISH_DAYS_OFF) -> tuple[PeakWindow, ...]:
    return tuple(window for window in windows if window.is_active(day, off))


_TOKEN = re.compile(r"[^\W\d_]+|\d+")
_VOWELS = frozenset("aeiouy")
_EXACT_UP_TO = 3


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.replace("ł", "l"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Latin letters with marks (up to U+024F, which holds every Polish letter) folded once, so a
# 2,000-character mail is one str.translate instead of a Python loop over its characters.
_LATIN_FOLD = {code: _strip_marks(chr(code)) for code in range(0x80, 0x250) if _strip_marks(chr(code)) != chr(code)}


# Every other character, folded once when first seen. NFKD decomposes character by
# character and only reorders the marks it puts after a letter, which are all dropped, so
# folding each character alone gives the whole text's fold (typographic quotes and dashes
# left a Polish mail non-ASCII, and it was decomposed whole, a Python step per character).
_OTHER_FOLD: dict[int, str] = {}
_OTHER_FOLD_MAX = 20_000


def fold_marks(text: str) -> str:
    """``text`` case-folded, Polish ł as l, every letter's marks dropped (NFKD without combining marks)."""
    folded = text.casefold()
    if folded.isascii():
        return folded
    folded = folded.translate(_LATIN_FOLD)
    if folded.isascii():
        return folded
    table = _OTHER_FOLD
    new = {ch for ch in set(folded) if not ch.isascii() and ord(ch) not in table}
    if len(table) + len(new) > _OTHER_FOLD_MAX:  # a flood of distinct characters: not kept
        table = dict(table)
    for ch in new:
        table[ord(ch)] = _strip_marks(ch)
    return folded.translate(table)


_fold = fold_marks


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(fold_marks(text))


def _token_stem(token: str) -> str:
    if len(token) >= 4 and token[-1] in _VOWELS:
        return token[:-1]
    return token


def _token_matches(topic: str, word: str) -> bool:
    if len(topic) <= _EXACT_UP_TO or topic.isdigit():
        return word == topic
    return word.startswith(_token_stem(topic))


@lru_cache(maxsize=4096)
def _topic_tokens(topic: str) -> tuple[str, ...]:
    return tuple(_tokens(topic))


class _Words:
    """A text's words, for asking "does this topic word occur" in O(log n) instead of a scan."""

    def __init__(self, text: str) -> None:
        self.words = _tokens(text)
        self.exact = frozenset(self.words)
        self.sorted = sorted(self.exact)

    def has(self, topic: str) -> bool:
        if len(topic) <= _EXACT_UP_TO or topic.isdigit():
            return topic in self.exact
        stem = _token_stem(topic)
        at = bisect_left(self.sorted, stem)
        return at < len(self.sorted) and self.sorted[at].startswith(stem)


def _phrase_in(phrase: tuple[str, ...], words: _Words) -> bool:
    span = len(phrase)
    if not span or not all(words.has(topic) for topic in phrase):
        return False
    return span == 1 or _in_sequence(phrase, words.words)


def _in_sequence(phrase: tuple[str, ...], seq: Sequence[str]) -> bool:
    span = len(phrase)
    return any(
        all(_token_matches(topic, seq[start + offset]) for offset, topic in enumerate(phrase))
        for start in range(len(seq) - span + 1)
    )


class _TopicIndex:
    """The windows' topic words by what a text's word must be or start with to hold them
    (``peak_topics_in``): one pass over a text's distinct words finds every topic word, where
    ``_Words.has`` would search the text once per topic word of every window."""

    def __init__(self, windows: Sequence[PeakWindow]) -> None:
        self.topics = tuple(dict.fromkeys((topic, _topic_tokens(topic))
                                          for window in windows for topic in window.topic_words))
        self.exact: frozenset[str] = frozenset(
            token for _, tokens in self.topics for token in tokens if len(token) <= _EXACT_UP_TO or token.isdigit())
        stems: dict[str, set[str]] = {}
        for _, tokens in self.topics:
            for token in tokens:
                if token not in self.exact:
                    stems.setdefault(_token_stem(token), set()).add(token)
        self.stems = {stem: frozenset(tokens) for stem, tokens in stems.items()}
        self.lengths = sorted({len(stem) for stem in stems})
        # every stem is 3 letters or more (``_token_stem`` cuts one letter off 4 or more): a word
        # starting with none of their first three letters holds none of them
        self.starts = frozenset(stem[:3] for stem in stems)

    def found_in(self, text: str) -> frozenset[str]:
        seq = _tokens(text)
        held: set[str] = set()  # the topic tokens ``_Words(text).has`` says yes to
        exact, stems, lengths, starts = self.exact, self.stems, self.lengths, self.starts
        for word in set(seq):
            if word in exact:
                held.add(word)
            if word[:3] not in starts:
                continue
            for length in lengths:
                if length > len(word):
                    break
                tokens = stems.get(word[:length])
                if tokens is not None:
                    held.update(tokens)
        if not held:
            return frozenset()
        return frozenset(topic for topic, tokens in self.topics
                         if tokens and all(token in held for token in tokens)
                         and (len(tokens) == 1 or _in_sequence(tokens, seq)))


_INDEX_BY_IDENTITY: dict[int, tuple[tuple[PeakWindow, ...], _TopicIndex]] = {}


def _topic_index(windows: Sequence[PeakWindow]) -> _TopicIndex:
    if not isinstance(windows, tuple):
        return _TopicIndex(windows)
    hit = _INDEX_BY_IDENTITY.get(id(windows))
    if hit is not None and hit[0] is windows:
        return hit[1]
    if len(_INDEX_BY_IDENTITY) >= 16:
        _INDEX_BY_IDENTITY.clear()
    index = _TopicIndex(windows)
    _INDEX_BY_IDENTITY[id(windows)] = (windows, index)  # the tuple is kept: its id is not reused meanwhile
    return index


def peak_match(text: str, day: date, windows: Sequence[PeakWindow], off: DaysOff = POLISH_DAYS_OFF) -> PeakMatch | None:
    """The active window whose topic words appear in ``text`` (pass subject and body).

    When several active windows match, the one with most distinct topic words wins;
    ties go to the earlier window. ``off``: the days off that move the windows' deadlines.
    """
    active = active_windows(day, windows, off)
    if not active:
        return None
    words = _Words(text)
    best: PeakMatch | None = None
    for window in active:
        found = tuple(topic for topic in window.topic_words if _phrase_in(_topic_tokens(topic), words))
        if found and (best is None or len(found) > len(best.words)):
            best = PeakMatch(window.name, found)
    return best


def peak_topics_in(text: str, windows: Sequence[PeakWindow]) -> frozenset[str]:
    """Every topic word of ``windows`` that ``text`` holds, whatever the day.

    What ``peak_match`` reads in a text, found once for any day's active windows: the
    parse worker finds it for each mail, off the process that stores the batch, and
    ``peak_match_topics`` picks the day's window from it.
    """
    return _topic_index(windows).found_in(text)


def peak_match_topics(topics: Collection[str], day: date, windows: Sequence[PeakWindow],
                      off: DaysOff = POLISH_DAYS_OFF) -> PeakMatch | None:
    """``peak_match`` of a text whose topic words (``peak_topics_in`` over ``windows``) are ``topics``."""
    best: PeakMatch | None = None
    for window in active_windows(day, windows, off):
        found = tuple(topic for topic in window.topic_words if topic in topics)
        if found and (best is None or len(found) > len(best.words)):
            best = PeakMatch(window.name, found)
    return best


_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")
_KNOWN_KEYS = frozenset(
    {"name", "label", "days", "last_days", "last_working_days", "from", "until", "moves", "topic_words"}
)


def _month_day_text(value: object, where: str) -> tuple[int, int]:
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
    moves = table.get("moves", True)
    if not isinstance(moves, bool):
        raise PeakConfigError(f"{where}.moves: expected true or false, got {moves!r}")
    rules: list[PeakRule] = []
    if "days" in table:
        days = table["days"]
        if not isinstance(days, list) or len(days) != 2:
            raise PeakConfigError(f"{where}.days: expected [first, last], got {days!r}")
        first = _int(days[0], f"{where}.days[0]", 1, 31)
        last = _int(days[1], f"{where}.days[1]", 1, 31)
        if first > last:
            raise PeakConfigError(f"{where}.days: first day {first} is after last day {last}")
        rules.append(MonthlyDays(first, last, moves))
    if "last_days" in table:
        rules.append(LastDaysOfMonth(_int(table["last_days"], f"{where}.last_days", 1, 28)))
    if "last_working_days" in table:
        rules.append(LastWorkingDaysOfMonth(_int(table["last_working_days"], f"{where}.last_working_days", 1, 20)))
    if "from" in table or "until" in table:
        for key in ("from", "until"):
            if key not in table:
                raise PeakConfigError(f"{where}.{key}: required together with the other end of the range")
        opens, until = table["from"], table["until"]
        if isinstance(opens, date) or isinstance(until, date):
            if not (isinstance(opens, date) and isinstance(until, date)) or opens > until:
                raise PeakConfigError(f"{where}.until: give two TOML dates, from before until, got {opens!r}, {until!r}")
            rules.append(DatedRange(opens, until, moves))
        else:
            rules.append(YearlyRange(_month_day_text(opens, f"{where}.from"), _month_day_text(until, f"{where}.until"),
                                     moves))
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
