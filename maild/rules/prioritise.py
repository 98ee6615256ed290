"""Where a new ticket goes in the queue, and why.

The tier is the contract: every ``sla`` ticket before every ``prepaid`` one,
before ``occasional``, unverified senders last; nothing inside a ticket can move
it across tiers. Within a tier the priority orders: urgent words (P1), a topic
of an active peak period (P2), the rest (P3), automatic mail (P4); then the
earlier deadline, then age.

The reasons are stored as English text made by ``maild.rules.reasons`` (which also
reads them back and words them in the reader's language); never written here by hand.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from maild.rules.customers import ContractKind
from maild.rules.kinds import TIER_BY_KIND as TIER_BY_KIND
from maild.rules.kinds import TIER_NAMES as TIER_NAMES
from maild.rules.kinds import UNVERIFIED_TIER as UNVERIFIED_TIER
from maild.rules.peak import POLISH_DAYS_OFF, DaysOff, PeakWindow, peak_match, peak_match_topics, peak_topics_in
from maild.rules.reasons import AUTOMATIC, ROUTINE, UNVERIFIED, peak_reason, tier_reason, urgent_reason

PRIORITIES = ("P1", "P2", "P3", "P4")


@dataclass(frozen=True)
class Priority:
    tier: int
    priority: str
    peak: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class TextSignals:
    """What prioritising reads in a new ticket's subject and text, whatever its day and contract:
    the urgent words found and the peak windows' topic words found (``text_signals``)."""

    urgent: tuple[str, ...]
    peak_topics: frozenset[str]


def _head(subject: str, text: str) -> str:
    # The subject says most; the body's first lines are enough to spot urgency
    # without letting a long quoted history full of old words decide.
    return subject + "\n" + text[:2000]


def text_signals(subject: str, text: str, urgent_words: tuple[str, ...],
                 peak_windows: Sequence[PeakWindow]) -> TextSignals:
    """The text's part of ``prioritise``, found once per mail (the parse worker does it, off the
    process that stores the batch); ``prioritise(signals=...)`` decides the same from it."""
    head = _head(subject, text)
    return TextSignals(urgent_words_in(head, urgent_words), peak_topics_in(head, peak_windows))


@lru_cache(maxsize=16)
def _urgent_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """A configured word (or stem: "krytyczn") at a word's start, with the rest of that word."""
    if not words:
        return None
    alternatives = "|".join(re.escape(w.casefold()) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})\w*")


def urgent_words_in(text: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """The urgent words found, each as the mail wrote it ("Krytyczna" for the stem "krytyczn": the
    consultant reads the mail's word, not the configured stem), once whatever its case."""
    pattern = _urgent_pattern(words)
    if pattern is None:
        return ()
    folded = text.casefold()
    # casefold gives every character one or more: as long as the text, it is one for one, at the same places
    aligned = len(folded) == len(text)
    found: dict[str, str] = {}
    for match in pattern.finditer(folded):
        found.setdefault(match.group(0), text[match.start():match.end()] if aligned else match.group(0))
    return tuple(found.values())


def prioritise(
    *,
    kind: ContractKind,
    verified: bool,
    subject: str,
    text: str,
    automatic: bool,
    urgent_words: tuple[str, ...],
    peak_windows: Sequence[PeakWindow],
    day: date,
    days_off: DaysOff = POLISH_DAYS_OFF,
    signals: TextSignals | None = None,
) -> Priority:
    """The ticket's tier, priority and peak window. ``signals``: ``text_signals`` of this very
    ``subject`` and ``text`` with these ``urgent_words`` and ``peak_windows``, found before."""
    reasons: list[str] = []
    if verified:
        tier = TIER_BY_KIND[kind]
        reasons.append(tier_reason(TIER_NAMES[tier], kind))
    else:
        tier = UNVERIFIED_TIER
        reasons.append(UNVERIFIED)
    if signals is None:
        head = _head(subject, text)
        found = urgent_words_in(head, urgent_words)
        peak = peak_match(head, day, peak_windows, days_off)
    else:
        found = signals.urgent
        peak = peak_match_topics(signals.peak_topics, day, peak_windows, days_off)
    if automatic:
        priority = "P4"
        reasons.append(AUTOMATIC)
    elif found:
        priority = "P1"
        reasons.append(urgent_reason(found))
    elif peak is not None:
        priority = "P2"
        reasons.append(peak_reason(peak.window, peak.words))
    else:
        priority = "P3"
        reasons.append(ROUTINE)
    return Priority(tier=tier, priority=priority, peak=peak.window if peak else None, reasons=tuple(reasons))
