"""Scope of work: Polish and English names, what consultants may write, and the guess from a mail."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.scope import SCOPES, guess_scope, parse_scope, scope_name


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
