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


def test_the_urgent_reason_shows_the_mails_word_not_the_stem() -> None:
    """The configured stem "krytyczn" showed to the consultant as „krytyczn”; the mail's word now,
    as written, still stored in the format every version stored (reasons.parse reads it)."""
    from maild.rules.reasons import for_reader, parse

    prio = prioritise(kind="sla", verified=True, subject="Sprawa KRYTYCZNA", text="Awaria krytyczna, pilnego!",
                      automatic=False, urgent_words=URGENT, peak_windows=WINDOWS, day=date(2026, 3, 2))
    stored = prio.reasons[1]
    assert stored == "P1: urgent words 'KRYTYCZNA', 'Awaria', 'pilnego'"
    assert parse(stored) is not None and parse(stored).words == ("KRYTYCZNA", "Awaria", "pilnego")  # type: ignore[union-attr]
    assert for_reader(stored, "pl") == "P1: w wiadomości pilne słowa: „KRYTYCZNA”, „Awaria”, „pilnego”"
    assert for_reader("P1: urgent words 'krytyczn'", "pl") == "P1: w wiadomości pilne słowo: „krytyczn”", \
        "a stem stored by an earlier version still reads"


@given(TEXT, TEXT)
def test_each_urgent_word_is_the_mails_own_and_begins_with_a_configured_one(subject: str, text: str) -> None:
    from maild.rules.prioritise import _head, urgent_words_in

    head = _head(subject, text)
    found = urgent_words_in(head, URGENT)
    assert len({w.casefold() for w in found}) == len(found), "once whatever its case"
    for word in found:
        assert word in head or word in head.casefold()
        assert any(word.casefold().startswith(u) for u in URGENT), word
