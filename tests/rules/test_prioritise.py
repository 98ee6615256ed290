"""Prioritising from the text's signals found before (in the parse worker) decides as from the text."""
from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from maild.config import DEFAULT_URGENT_WORDS
from maild.rules.peak import default_peak_windows
from maild.rules.prioritise import prioritise, text_signals

WINDOWS = default_peak_windows()
URGENT = tuple(w.casefold() for w in DEFAULT_URGENT_WORDS)
WORDS = [*URGENT, *(topic for window in WINDOWS for topic in window.topic_words), "faktura", "Pilne!", "ZUS"]
TEXT = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=10)), max_size=15).map(" ".join)


@given(TEXT, TEXT, st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)), st.booleans(),
       st.booleans(), st.sampled_from(["sla", "prepaid", "occasional"]))
def test_the_signals_found_before_give_the_same_priority(subject: str, text: str, day: date, automatic: bool,
                                                         verified: bool, kind: str) -> None:
    plain = dict(kind=kind, verified=verified, subject=subject, text=text, automatic=automatic,
                 urgent_words=URGENT, peak_windows=WINDOWS, day=day)
    signals = text_signals(subject, text, URGENT, WINDOWS)
    assert prioritise(**plain, signals=signals) == prioritise(**plain)  # type: ignore[arg-type]
