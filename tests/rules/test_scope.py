"""Scope of work: Polish and English names, what consultants may write, and the guess from a mail."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.peak import fold_marks
from maild.rules.scope import SCOPES, clue_words, guess_scope, parse_scope, scope_name


@pytest.mark.parametrize(
    ("scope", "pl", "en"),
    [
        ("consultation", "konsultacja", "consultation"),
        ("installation", "instalacja", "installation"),
        ("training", "szkolenie", "training"),
        ("incident", "rozwiązanie problemu", "problem"),
        ("development", "rozwój (nowe zastosowania, wydruki, raporty)", "development"),
        (None, "bez określonego zakresu", "not specified"),
    ],
)
def test_every_scope_has_a_polish_and_an_english_name(scope: str | None, pl: str, en: str) -> None:
    assert scope_name(scope, "pl") == pl
    assert scope_name(scope, "en") == en


@pytest.mark.parametrize(
    ("word", "scope"),
    [("szkolenie", "training"), ("Training", "training"), ("rozwój", "development"), ("rozwoj", "development"),
     ("problem", "incident"), ("konsultacja", "consultation"), ("instalacja", "installation"),
     ("nonsense", None)],
)
def test_words_consultants_write(word: str, scope: str | None) -> None:
    assert parse_scope(word) == scope


@pytest.mark.parametrize(
    ("subject", "text", "scope"),
    [
        ("Prośba o szkolenie z modułu Kadry", "Dzień dobry, chcielibyśmy przeszkolić dwie osoby.", "training"),
        ("Nie działa wydruk faktury", "Wyskakuje błąd przy drukowaniu.", "incident"),
        ("Nowy wydruk zestawienia sprzedaży", "Potrzebujemy raportu sprzedaży według regionów.", "development"),
        ("Aktualizacja do nowej wersji", "Kiedy możemy zainstalować nową wersję programu?", "installation"),
        ("Pytanie o księgowanie", "Jak zaksięgować korektę faktury?", "consultation"),
        ("Training for new staff", "We would like a workshop for three people.", "training"),
        ("Dzień dobry", "Przesyłam w załączniku dokumenty.", None),
    ],
)
def test_a_new_ticket_gets_a_scope_guessed_from_its_text(subject: str, text: str, scope: str | None) -> None:
    found, clues = guess_scope(subject, text)
    assert found == scope
    assert bool(clues) == (scope is not None)


@given(st.text(max_size=300), st.text(max_size=3000))
def test_the_guess_is_a_known_scope_or_none(subject: str, text: str) -> None:
    found, clues = guess_scope(subject, text)
    assert found is None or found in SCOPES
    assert (found is None) == (clues == ())


def _fold_nfkd(text: str) -> str:
    """The scope guess's fold as it was written first: NFKD over the whole text, marks dropped."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text.casefold().replace("ł", "l"))
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


_SCOPE_ALPHABET = "aAeEoOlLzZ łŁąĄęĘśŚżŻźŹćĆńŃóÓ„”“–—…«»ﬁﬂ½²ＡＢａ\u0301\u0328\u0307\u0323İıßẞǅΣσς\t\n\u00a0\u2003"


@given(st.text(alphabet=st.sampled_from(_SCOPE_ALPHABET), max_size=200))
def test_the_fold_by_table_equals_nfkd_over_the_whole_text(text: str) -> None:
    from maild.rules.scope import _fold

    assert _fold(text) == _fold_nfkd(text)


@given(st.lists(st.one_of(st.sampled_from(["BŁĄD", "nie działa", "Szkolenie", "raport", "jak to", "Jak ",
                                           "update", "pytanie", "awaria", "wydruku"]),
                          st.text(alphabet=st.sampled_from(_SCOPE_ALPHABET), max_size=8)), max_size=10),
       st.lists(st.sampled_from(["błąd", "instalacja", "how to", "report"]), max_size=3))
def test_the_guess_counts_the_subject_twice_and_keeps_the_clues_in_order(body: list[str], subject: list[str]) -> None:
    from maild.rules.scope import _CLUES

    head, text = _fold_nfkd(" ".join(subject)), _fold_nfkd(" ".join(body)[:2000])
    best: tuple[int, str | None, tuple[str, ...]] = (0, None, ())
    for scope, clues in _CLUES:
        hits = [clue for clue in clues if clue in head or clue in text]
        score = sum(2 if clue in head else 1 for clue in hits)
        if score > best[0]:
            best = (score, scope, tuple(clue.strip() for clue in hits))
    assert guess_scope(" ".join(subject), " ".join(body)) == (best[1], best[2])


@pytest.mark.parametrize(
    ("subject", "text", "written"),
    [
        ("Błąd w systemie", "Awaria! System nie\n  działa od rana.", ("Błąd", "Awaria", "nie działa")),
        ("Nie działa wydruk faktury", "Wyskakuje BŁĄD przy drukowaniu.", ("BŁĄD", "Nie działa")),
        ("Nowy wydruk zestawienia sprzedaży", "", ("Nowy wydruk", "zestawienia")),
        ("Pytanie o księgowanie", "Jak zaksięgować korektę? Jakość bez zmian.", ("Pytanie", "Jak")),
        ("Aktualizacja do nowej wersji", "", ("Aktualizacja", "nowej wersji")),
    ],
)
def test_the_guess_is_explained_with_the_words_the_mail_wrote(subject: str, text: str,
                                                              written: tuple[str, ...]) -> None:
    """The stems ("blad", "awari", "nie dziala") reached tickets show's reasons line."""
    _, clues = guess_scope(subject, text)
    assert clue_words(subject, text, clues) == written


WORDS = ["Błąd", "błędu", "AWARIA", "nie  działa", "Nie działają", "zawiesza się", "raportu", "wydruk", "Jak",
         "jakość", "szkolenia", "Instalacja", "nową wersję", "ß", "ĳ", "pytanie", "debugging"]


@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=12).map(" ".join),
       st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=30).map(" ".join))
def test_every_word_shown_is_in_the_mail_and_holds_a_clue(subject: str, text: str) -> None:
    _, clues = guess_scope(subject, text)
    written = clue_words(subject, text, clues)
    assert bool(written) == bool(clues)
    for word in written:
        found = " ".join(word.split())
        folded = " ".join(fold_marks(word).split())
        in_mail = found in " ".join(subject.split()) or found in " ".join(text[:2000].split())
        # a clue a character folded into two hid is given as the clue
        assert (in_mail and any(c.strip() in folded for c in clues)) or word in (c.strip() for c in clues), word
