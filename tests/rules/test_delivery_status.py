"""A delivery report's status code (RFC 3463) explained to the consultant, in Polish and English."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.delivery_status import explain_status


@pytest.mark.parametrize(("code", "polish", "english"), [
    ("5.1.1", "błąd trwały: nie ma takiej skrzynki (adres odbiorcy nie istnieje)",
     "permanent failure: no such mailbox (the recipient's address does not exist)"),
    ("5.2.2", "błąd trwały: skrzynka odbiorcy jest pełna", "permanent failure: the recipient's mailbox is full"),
    ("4.2.2", "błąd przejściowy: skrzynka odbiorcy jest pełna", "temporary failure: the recipient's mailbox is full"),
    ("5.7.1", "błąd trwały: serwer odbiorcy odmówił przyjęcia wiadomości ze względu na swoje zasady",
     "permanent failure: the receiving server refused the mail by its policy"),
    ("4.4.7", "błąd przejściowy: minął czas na doręczenie, serwer przestał ponawiać próby",
     "temporary failure: the time allowed for delivery ran out, the server stopped retrying"),
    # a detail not in the table: its subject says which part of the path failed
    ("5.7.26", "błąd trwały: odmowa ze względów bezpieczeństwa lub zasad serwera",
     "permanent failure: refused for security or policy reasons"),
    ("4.3.2", "błąd przejściowy: problem z serwerem pocztowym odbiorcy",
     "temporary failure: a problem with the receiving mail system"),
    # a subject RFC 3463 does not define: the class alone
    ("4.9.9", "błąd przejściowy", "temporary failure"),
    (" 5.1.1\n", "błąd trwały: nie ma takiej skrzynki (adres odbiorcy nie istnieje)",
     "permanent failure: no such mailbox (the recipient's address does not exist)"),
])
def test_common_codes_read_in_the_readers_language(code: str, polish: str, english: str) -> None:
    assert explain_status(code, "pl") == polish
    assert explain_status(code, "pl-PL") == polish
    assert explain_status(code, "en") == english


@pytest.mark.parametrize("code", ["", "550", "5.1", "3.1.1", "5.1.1.1", "x.1.1", "5.1.1 user unknown", "5.1234.1"])
def test_what_is_not_a_status_code_is_not_explained(code: str) -> None:
    assert explain_status(code, "pl") == "" and explain_status(code, "en") == ""


@given(st.sampled_from("245"), st.integers(0, 999), st.integers(0, 999), st.sampled_from(["pl", "en"]))
def test_every_code_is_explained_by_its_class_first(klass: str, subject: int, detail: int, language: str) -> None:
    text = explain_status(f"{klass}.{subject}.{detail}", language)
    first = {"pl": {"2": "doręczono", "4": "błąd przejściowy", "5": "błąd trwały"},
             "en": {"2": "delivered", "4": "temporary failure", "5": "permanent failure"}}[language][klass]
    assert text == first or text.startswith(first + ": ")
    assert (text == first) == (subject > 7), "every subject RFC 3463 defines (0-7) is named"
