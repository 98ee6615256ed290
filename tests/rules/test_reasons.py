"""The priority's reasons: stored as the English text every version stored, read back exactly,
and worded for a Polish or English reader; a reason ``prioritise`` can make without a wording fails here."""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.config import DEFAULT_URGENT_WORDS
from maild.rules.kinds import TIER_NAMES
from maild.rules.peak import PeakWindow, _tokens, default_peak_windows, windows_from_config
from maild.rules.prioritise import prioritise
from maild.rules.reasons import REASON_CODES, Reason, for_reader, parse, set_reason, with_priority_set, word

WINDOWS = default_peak_windows()
URGENT = tuple(w.casefold() for w in DEFAULT_URGENT_WORDS)
WORDS = [*URGENT, *(topic for window in WINDOWS for topic in window.topic_words), "faktura", "Pilne!", "ZUS"]
TEXT = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=10)), max_size=15).map(" ".join)
# Words an operator may configure: anything printable, quotes and ", " included.
ODD_WORD = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(str.strip)
# What gives a reason away as untranslated English in a Polish line.
ENGLISH = ("urgent", "word", "peak", "period", "topic", "routine", "automatic", "mail", "contract",
           "sender", "verified", "customer", "old", "recorded", "escalation", "deadline")


def _assert_polish(line: str, reason: Reason) -> None:
    # the reason's own parameters (a word found in the mail, a window's name) are quoted, not worded;
    # the tiers' names are identifiers, shown as they are everywhere ("Kolejka: unverified P3")
    own = " ".join((*reason.words, reason.window, reason.tier, reason.kind, reason.by, reason.note,
                    *TIER_NAMES)).casefold()
    stray = [w for w in ENGLISH if w in line.casefold() and w not in own]
    assert not stray, f"{line!r} reads English: {stray}"


def _config_windows(names_and_words: list[tuple[str, list[str]]]) -> tuple[PeakWindow, ...]:
    return windows_from_config([{"name": name, "label": {"pl": f"okres {name}", "en": f"period {name}"},
                                 "from": "01-01", "until": "12-31", "topic_words": words}
                                for name, words in names_and_words])


@given(TEXT, TEXT, st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)), st.booleans(),
       st.booleans(), st.sampled_from(["sla", "prepaid", "occasional"]))
def test_every_reason_prioritise_makes_reads_back_and_is_worded_in_both_languages(
        subject: str, text: str, day: date, automatic: bool, verified: bool, kind: str) -> None:
    prio = prioritise(kind=kind, verified=verified, subject=subject, text=text,  # type: ignore[arg-type]
                      automatic=automatic, urgent_words=URGENT, peak_windows=WINDOWS, day=day)
    assert len(prio.reasons) == 2
    for stored in prio.reasons:
        reason = parse(stored)
        assert reason is not None, f"{stored!r}: made by prioritise but not read back (no wording)"
        assert reason.stored == stored
        polish = for_reader(stored, "pl", WINDOWS)
        assert polish != stored, f"{stored!r} reaches a Pole as stored"
        _assert_polish(polish, reason)
        assert for_reader(stored, "en", WINDOWS)
    assert parse(prio.reasons[1]).code != "peak" or prio.peak == parse(prio.reasons[1]).window  # type: ignore[union-attr]


@given(st.lists(ODD_WORD, min_size=1, max_size=4, unique=True),
       st.lists(st.tuples(st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
                          st.lists(ODD_WORD.filter(lambda w: bool(_tokens(w))), min_size=1,
                                   max_size=3, unique=True)),
                min_size=1, max_size=3, unique_by=lambda t: t[0]))
def test_operators_own_urgent_and_topic_words_read_back_exactly(
        urgent: list[str], windows: list[tuple[str, list[str]]]) -> None:
    """Urgent words and topic words are the operator's (quotes, commas, ", topic " in them):
    whatever prioritise stores of them parses back to the same words and window."""
    configured = _config_windows(windows)
    words = tuple(w.casefold() for w in urgent)
    for _, topics in windows:
        for subject in (" ".join(topics), " ".join(urgent)):
            prio = prioritise(kind="sla", verified=True, subject=subject, text="", automatic=False,
                              urgent_words=words, peak_windows=configured, day=date(2026, 6, 1))
            for stored in prio.reasons:
                reason = parse(stored)
                assert reason is not None and reason.stored == stored
    for reason in (Reason("urgent", words=words), *(Reason("peak", window=n, words=tuple(t)) for n, t in windows)):
        assert parse(reason.stored) == reason
        _assert_polish(word(reason, "pl", configured), reason)


def test_every_code_has_a_polish_and_an_english_wording() -> None:
    for code in REASON_CODES:
        reason = Reason(code, tier="sla", kind="sla", window="vat_jpk", words=("jpk",), priority="P2",
                        by="anna@firma.pl", note="klient czeka", scope="training")
        polish, english = word(reason, "pl", WINDOWS), word(reason, "pl-PL", WINDOWS)
        assert polish == english and polish != word(reason, "en", WINDOWS)
        _assert_polish(polish, reason)
        assert parse(reason.stored) is not None


@pytest.mark.parametrize(("stored", "polish", "english"), [
    # as every version before this one stored them (tickets of earlier years)
    ("P1: urgent words 'pilne', 'awaria'", "P1: w wiadomości pilne słowa: „pilne”, „awaria”",
     "P1: urgent words: “pilne”, “awaria”"),
    ("P1: urgent words 'nie działa'", "P1: w wiadomości pilne słowo: „nie działa”", "P1: urgent word: “nie działa”"),
    ("P2: peak period year_end, topic 'zamknięcie roku'",
     "P2: temat „zamknięcie roku” w okresie szczytu: zamknięcie roku",
     "P2: topic “zamknięcie roku” in a peak period: year-end closing"),
    ("P2: peak period vat_jpk, topic 'JPK', 'VAT'",
     "P2: temat „JPK”, „VAT” w okresie szczytu: miesięczne rozliczenie VAT / JPK (do 25. dnia miesiąca)",
     "P2: topic “JPK”, “VAT” in a peak period: monthly VAT / JPK filing (due on the 25th)"),
    # a window no longer configured is named as stored
    ("P2: peak period inwentaryzacja, topic 'remanent'", "P2: temat „remanent” w okresie szczytu: inwentaryzacja",
     "P2: topic “remanent” in a peak period: inwentaryzacja"),
    ("P3: routine", "P3: zwykła sprawa", "P3: routine"),
    ("P4: automatic mail", "P4: wiadomość automatyczna", "P4: automatic mail"),
    ("tier sla: sla contract", "kolejka sla: umowa sla", "tier sla: sla contract"),
    ("tier unverified: sender not verified as a customer",
     "kolejka unverified: nadawca nie jest potwierdzonym klientem",
     "tier unverified: sender not verified as a customer"),
    ("old mail: reaction deadline recorded, no escalation", "stara wiadomość: termin reakcji odnotowany, bez eskalacji",
     "old mail: reaction deadline recorded, no escalation"),
    # a consultant's #priority: who set it and the reason given, as written
    ("P1: set by anna@firma.pl, reason 'produkcja stoi'", "P1: nadany przez anna@firma.pl, powód: „produkcja stoi”",
     "P1: set by anna@firma.pl, reason: “produkcja stoi”"),
    ("P4: set by anna@firma.pl", "P4: nadany przez anna@firma.pl", "P4: set by anna@firma.pl"),
    ("P1: set by anna@firma.pl, reason 'a', 'b'", "P1: set by anna@firma.pl, reason 'a', 'b'",
     "P1: set by anna@firma.pl, reason 'a', 'b'"),
    # a consultant's own words, and anything this module did not make, read as written
    # the scope guessed from a new ticket's text: the words as the mail wrote them, and the stems
    # every version before stored
    ("scope incident guessed from 'Błąd', 'nie działa'",
     "zakres: rozwiązanie problemu, odgadnięty ze słów „Błąd”, „nie działa”",
     "scope: problem, guessed from the words “Błąd”, “nie działa”"),
    ("scope training guessed from 'szkolen'", "zakres: szkolenie, odgadnięty ze słowa „szkolen”",
     "scope: training, guessed from the word “szkolen”"),
    ("scope incident guessed from ", "scope incident guessed from ", "scope incident guessed from "),
    ("P1: produkcja stoi u klienta", "P1: produkcja stoi u klienta", "P1: produkcja stoi u klienta"),
    ("P1: urgent words pilne", "P1: urgent words pilne", "P1: urgent words pilne"),
    ("P2: peak period zus, topic ", "P2: peak period zus, topic ", "P2: peak period zus, topic "),
    ("known customer acme (sla)", "known customer acme (sla)", "known customer acme (sla)"),
])
def test_stored_reasons_read_in_the_readers_language(stored: str, polish: str, english: str) -> None:
    assert for_reader(stored, "pl", WINDOWS) == polish
    assert for_reader(stored, "en", WINDOWS) == english


@given(st.text(max_size=60))
def test_text_not_ours_reads_as_written(text: str) -> None:
    reason = parse(text)
    assert for_reader(text, "pl", WINDOWS) == (text if reason is None else word(reason, "pl", WINDOWS))
    assert reason is None or reason.stored == text, "only our exact spelling is read as ours"


EMAIL = st.from_regex(r"[a-z0-9._+-]{1,12}@[a-z0-9-]{1,10}\.pl", fullmatch=True)


@given(st.sampled_from(["P1", "P2", "P3", "P4"]), EMAIL, st.one_of(st.just(""), ODD_WORD))
def test_a_consultants_priority_reads_back_and_is_worded(priority: str, by: str, note: str) -> None:
    """``#priority P1 <reason>``: whatever the consultant wrote (quotes, ", reason " in it) reads
    back exactly, and a reader sees it as written, maild's own words in their language."""
    stored = set_reason(priority, by, note)
    assert stored.startswith(f"{priority}: ")  # the notification shows the present priority's lines
    assert parse(stored) == Reason("set", priority=priority, by=by, note=note)
    polish, english = for_reader(stored, "pl"), for_reader(stored, "en")
    assert polish.startswith(f"{priority}: nadany przez {by}") and english.startswith(f"{priority}: set by {by}")
    assert (f"„{note}”" in polish and f"“{note}”" in english) if note else ("powód" not in polish)


def test_a_later_priority_replaces_the_earlier_consultants_line_only() -> None:
    first = with_priority_set(["tier sla: sla contract", "P3: routine"], "P1", "anna@firma.pl", "stoi")
    assert first == ["tier sla: sla contract", "P3: routine", "P1: set by anna@firma.pl, reason 'stoi'"]
    assert with_priority_set(first, "P2", "bob@firma.pl", "") == [
        "tier sla: sla contract", "P3: routine", "P2: set by bob@firma.pl"]
