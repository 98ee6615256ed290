"""Why a ticket has its queue place: the reasons as the ticket stores them, and as a reader reads them.

A ticket keeps its reasons as English text in its JSON ``reasons`` column, and
``maild tickets show [--json]`` prints them as stored. Every earlier version stored
these same texts, so the stored text is the format: this module makes it
(``prioritise`` and the desk call the makers below, never an f-string of their own),
reads it back (``parse``) and words it for a reader in Polish or English
(``for_reader``) when a notification is rendered, in the consultant's language.

Why text in the column and not codes: the tickets of every earlier version must
read the same in Polish as new ones, with no migration rewriting millions of rows,
and ``tickets show --json`` must stay what scripts already read. Parsing our own
few formats back is exact (``tests/rules/test_reasons.py`` proves that every reason
``prioritise`` can make parses back to itself and is worded in both languages, so a
new reason without a wording fails there). Text this module does not recognise (a
consultant's own words, another module's reason) reads as written.

Pure: text in, text out; the peak windows' labels are passed in.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from functools import cache
from typing import Literal, NamedTuple

from maild.rules.peak import PeakWindow
from maild.rules.scope import scope_name
from maild.rules.wording import reader_language

ReasonCode = Literal["tier", "unverified", "automatic", "urgent", "peak", "routine", "old_mail", "set", "scope"]
REASON_CODES: tuple[ReasonCode, ...] = ("tier", "unverified", "automatic", "urgent", "peak", "routine", "old_mail",
                                        "set", "scope")


class Reason(NamedTuple):
    """One reason with its parameters: ``tier``/``kind`` for ``tier``, ``words`` for ``urgent``
    (the urgent words found) and ``peak`` (the window's topic words found), ``window`` (its name);
    for ``set`` (a consultant's ``#priority``) the ``priority``, who set it (``by``) and the reason
    they gave (``note``, may be empty); for ``scope`` (the scope guessed from a new ticket's text)
    the ``scope``'s key and the ``words`` it was guessed from."""

    code: ReasonCode
    tier: str = ""
    kind: str = ""
    window: str = ""
    words: tuple[str, ...] = ()
    priority: str = ""
    by: str = ""
    note: str = ""
    scope: str = ""

    @property
    def stored(self) -> str:
        """The English text the ticket stores (and every earlier version stored)."""
        code = self.code
        if code == "tier":
            return tier_reason(self.tier, self.kind)
        if code == "urgent":
            return urgent_reason(self.words)
        if code == "peak":
            return peak_reason(self.window, self.words)
        if code == "set":
            return set_reason(self.priority, self.by, self.note)
        if code == "scope":
            return scope_reason(self.scope, self.words)
        return _FIXED_TEXT[code]


# The makers: what prioritise stores (plain strings, no Reason built: it runs once per mail).
def tier_reason(tier: str, kind: str) -> str:
    return f"tier {tier}: {kind} contract"


def urgent_reason(words: Sequence[str]) -> str:
    return _URGENT + _quoted_list(words)


def peak_reason(window: str, words: Sequence[str]) -> str:
    return f"{_PEAK}{window}{_TOPIC}{_quoted_list(words)}"


# The desk's, for a consultant's ``#priority P1 <reason>``: the reason was kept in the event only,
# where no reader saw it.
def set_reason(priority: str, by: str, note: str) -> str:
    return f"{priority}{_SET_BY}{by}" + (f"{_BECAUSE}{_quoted_list((note,))}" if note else "")


# The intake's, for a new ticket's scope guessed from its text (``maild.rules.scope``): the words as
# the mail wrote them ("'Błąd', 'awaria'"; versions before stored the stems "'blad', 'awari'").
def scope_reason(scope: str, words: Sequence[str]) -> str:
    return f"{_SCOPE}{scope}{_GUESSED}{_quoted_list(words)}"


def with_priority_set(reasons: Sequence[str], priority: str, by: str, note: str) -> list[str]:
    """``reasons`` with a consultant's ``#priority`` as the last one; an earlier ``#priority``'s
    line goes (the latest decision explains the priority), maild's own lines stay."""
    kept = [r for r in reasons if not _is_set(r)]
    return [*kept, set_reason(priority, by, note)]


def _is_set(text: str) -> bool:
    reason = parse(text) if _SET_BY in text else None
    return reason is not None and reason.code == "set"


UNVERIFIED = "tier unverified: sender not verified as a customer"
AUTOMATIC = "P4: automatic mail"
ROUTINE = "P3: routine"
# The desk's: a mail from before maild watched the mailbox (its deadline pages nobody).
OLD_MAIL = "old mail: reaction deadline recorded, no escalation"
_URGENT = "P1: urgent words "
_SET_BY = ": set by "
_BECAUSE = ", reason "
_PEAK = "P2: peak period "
_SCOPE = "scope "
_GUESSED = " guessed from "
_TOPIC = ", topic "
_FIXED_TEXT: dict[ReasonCode, str] = {
    "unverified": UNVERIFIED, "automatic": AUTOMATIC, "routine": ROUTINE, "old_mail": OLD_MAIL}
_FIXED: dict[str, Reason] = {text: Reason(code) for code, text in _FIXED_TEXT.items()}


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(a tier's line, one Python string literal as repr() writes it, a consultant's #priority line):
    compiled at the first notification, not when the daemon starts (prioritise imports this module)."""
    return (re.compile(r"tier (\S+): (\S+) contract"),
            re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", re.DOTALL),
            re.compile(r"(P[1-4]): set by (\S+?)(?:, reason (.+))?", re.DOTALL))


def _quoted_list(words: Sequence[str]) -> str:
    return ", ".join(repr(w) for w in words)


def _words(text: str) -> tuple[str, ...] | None:
    """The words of ``_quoted_list``'s text, or None when ``text`` is not exactly such a list."""
    words: list[str] = []
    at = 0
    literal_pattern = _patterns()[1]
    while True:
        found = literal_pattern.match(text, at)
        if found is None:
            return None
        literal = found.group(0)
        if "\\" in literal:  # an escape: Python reads it back (the round trip below checks the spelling)
            try:
                word = ast.literal_eval(literal)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(word, str):
                return None
            words.append(word)
        else:
            words.append(literal[1:-1])
        at = found.end()
        if at == len(text):
            break
        if not text.startswith(", ", at):
            return None
        at += 2
    # repr() writes one spelling per word: anything else was not written by us
    return tuple(words) if _quoted_list(words) == text else None


def parse(text: str) -> Reason | None:
    """The reason a stored text says, or None for text this module did not make."""
    fixed = _FIXED.get(text)
    if fixed is not None:
        return fixed
    if text.startswith(_URGENT):
        words = _words(text[len(_URGENT):])
        return Reason("urgent", words=words) if words else None
    if text.startswith(_PEAK):
        rest = text[len(_PEAK):]
        # the window is named before the first ", topic " that a list of our quoted words follows
        at = rest.find(_TOPIC)
        while at >= 0:
            words = _words(rest[at + len(_TOPIC):])
            if words:
                return Reason("peak", window=rest[:at], words=words)
            at = rest.find(_TOPIC, at + 1)
        return None
    if text.startswith(_SCOPE):
        scope, found, quoted = text[len(_SCOPE):].partition(_GUESSED)
        words = _words(quoted) if found and scope and " " not in scope else None
        return Reason("scope", scope=scope, words=words) if words else None
    tier = _patterns()[0].fullmatch(text)
    if tier is not None:
        return Reason("tier", tier=tier.group(1), kind=tier.group(2))
    manual = _patterns()[2].fullmatch(text)
    if manual is not None:
        priority, by, quoted = manual.groups()
        note = _words(quoted) if quoted is not None else ("",)
        if note is not None and len(note) == 1 and set_reason(priority, by, note[0]) == text:
            return Reason("set", priority=priority, by=by, note=note[0])
    return None


def _quotes(words: Sequence[str], language: str) -> str:
    # Polish quotes open low („), English ones high (“)
    if language == "pl":
        return ", ".join(f"„{w}”" for w in words)
    return ", ".join(f"“{w}”" for w in words)


def _window_label(name: str, windows: Sequence[PeakWindow], language: str) -> str:
    """The window's label in ``language``; its name when the window is no longer configured."""
    for window in windows:
        if window.name == name:
            return window.label_for(language)
    return name


def word(reason: Reason, language: str, windows: Sequence[PeakWindow] = ()) -> str:
    """``reason`` as a reader of ``language`` reads it (Polish, anything else English)."""
    lang = reader_language(language)
    code = reason.code
    if code == "urgent":
        one = len(reason.words) == 1
        if lang == "pl":
            return f"P1: w wiadomości {'pilne słowo' if one else 'pilne słowa'}: {_quotes(reason.words, lang)}"
        return f"P1: {'urgent word' if one else 'urgent words'}: {_quotes(reason.words, lang)}"
    if code == "peak":
        # the topic first: a long period's label may be cut short in a header line, the topic never
        label = _window_label(reason.window, windows, lang)
        if lang == "pl":
            return f"P2: temat {_quotes(reason.words, lang)} w okresie szczytu: {label}"
        return f"P2: topic {_quotes(reason.words, lang)} in a peak period: {label}"
    if code == "tier":
        if lang == "pl":
            return f"kolejka {reason.tier}: umowa {reason.kind}"
        return f"tier {reason.tier}: {reason.kind} contract"
    if code == "set":
        # the consultant's own words as written, in the reader's quotes
        if lang == "pl":
            return (f"{reason.priority}: nadany przez {reason.by}"
                    + (f", powód: {_quotes((reason.note,), lang)}" if reason.note else ""))
        return f"{reason.priority}: set by {reason.by}" + (f", reason: {_quotes((reason.note,), lang)}" if reason.note else "")
    if code == "scope":
        one = len(reason.words) == 1
        if lang == "pl":
            return (f"zakres: {scope_name(reason.scope, lang)}, odgadnięty ze {'słowa' if one else 'słów'} "
                    f"{_quotes(reason.words, lang)}")
        return f"scope: {scope_name(reason.scope, lang)}, guessed from the {'word' if one else 'words'} " \
               f"{_quotes(reason.words, lang)}"
    return _FIXED_WORDING[code][lang]


_FIXED_WORDING: dict[str, dict[str, str]] = {
    "unverified": {"pl": "kolejka unverified: nadawca nie jest potwierdzonym klientem",
                   "en": "tier unverified: sender not verified as a customer"},
    "automatic": {"pl": "P4: wiadomość automatyczna", "en": "P4: automatic mail"},
    "routine": {"pl": "P3: zwykła sprawa", "en": "P3: routine"},
    "old_mail": {"pl": "stara wiadomość: termin reakcji odnotowany, bez eskalacji",
                 "en": "old mail: reaction deadline recorded, no escalation"},
}


def for_reader(text: str, language: str, windows: Sequence[PeakWindow] = ()) -> str:
    """A stored reason as a reader of ``language`` reads it; text this module did not make
    (a consultant's own words) as written."""
    reason = parse(text)
    return text if reason is None else word(reason, language, windows)
