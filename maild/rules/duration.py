"""Durations a consultant writes (``#time 1h30m``, ``maild time add SUP-1 90m``): whole minutes.

Parsed with ``Fraction`` so "1,25h" is exactly 75 and "0.01h" (36 seconds) is
refused instead of rounded. A number without a unit is refused ("2 what? write
2h or 2m"): "#time 2" was meant as 2 hours as often as 2 minutes, and a wrong
guess bills the customer. Pure, and apart from the mail commands
(``desk.commands``) so that ``maild time add`` parses its argument without
loading them.
"""
from __future__ import annotations

import re
from fractions import Fraction

from maild.errors import MaildError

__all__ = ["DurationError", "MAX_ENTRY_MINUTES", "parse_duration"]

# One entry longer than a day is almost always a wrong unit ("90h" for "90m");
# multi-day work is logged day by day, which also keeps monthly statements right.
MAX_ENTRY_MINUTES = 24 * 60


class DurationError(MaildError, ValueError):
    """A duration a consultant wrote that we cannot log; says what was wrong (``code``/``params``
    for the error mail in the consultant's language)."""

    def __init__(self, text: str, reason: str, code: str = "", **params: str) -> None:
        self.text = text
        self.reason = reason
        self.code = code
        self.params = tuple(sorted(params.items()))
        super().__init__(f"{text!r}: {reason}")


_NUM = r"[0-9]{1,6}(?:[.,][0-9]{1,6})?"
_HOURS_UNIT = r"(?:h|hr|hrs|hours?|godz\.?|godzin[ay]?|g)"
_MINUTES_UNIT = r"(?:m|min\.?|mins|minutes?|minut[ay]?)"
_DURATION = re.compile(
    rf"""
    (?:
        (?P<clock_h>[0-9]{{1,4}}):(?P<clock_m>[0-5][0-9])            # 1:30
      | (?P<h>{_NUM})\s*{_HOURS_UNIT}
        (?: (?P<h_bare_m>[0-5]?[0-9])                                 # 1h30
          | \s*(?P<h_m>{_NUM})\s*{_MINUTES_UNIT} )?                  # 1h 30m
      | (?P<m>{_NUM})\s*{_MINUTES_UNIT}                              # 90m
    )
    """,
    re.IGNORECASE | re.ASCII | re.VERBOSE,
)


_BARE_NUMBER = re.compile(_NUM, re.ASCII)


def _number(text: str) -> Fraction:
    return Fraction(text.replace(",", "."))


def parse_duration(text: str) -> int:
    """Whole minutes in ``text``; raises ``DurationError`` with a reason a consultant understands."""
    stripped = text.strip()
    if _BARE_NUMBER.fullmatch(stripped):
        # "#time 2" was booked as 2 minutes when 2 hours were meant: a number needs its unit.
        raise DurationError(text, f"{stripped} what? write {stripped}h or {stripped}m", "bare_number", number=stripped)
    match = _DURATION.fullmatch(stripped)
    if match is None:
        raise DurationError(
            text, "not a duration; write e.g. 1h30m, 1h 30m, 90m, 1.5h, 1,5h or 0:45", "not_duration"
        )
    groups = match.groupdict()
    if groups["clock_h"] is not None:
        total = Fraction(int(groups["clock_h"]) * 60 + int(groups["clock_m"]))
    elif groups["h"] is not None:
        total = _number(groups["h"]) * 60
        if groups["h_bare_m"] is not None:
            total += int(groups["h_bare_m"])
        elif groups["h_m"] is not None:
            total += _number(groups["h_m"])
    else:
        total = _number(groups["m"])
    if total.denominator != 1:
        raise DurationError(
            text, f"that is {float(total):g} minutes; time is logged in whole minutes", "fraction",
            minutes=f"{float(total):g}",
        )
    minutes = int(total)
    if minutes <= 0:
        raise DurationError(text, "a time entry must be at least 1 minute", "zero")
    if minutes > MAX_ENTRY_MINUTES:
        raise DurationError(
            text,
            f"more than {MAX_ENTRY_MINUTES // 60} h in one entry; check the unit or log each day separately",
            "too_long", hours=str(MAX_ENTRY_MINUTES // 60),
        )
    return minutes
