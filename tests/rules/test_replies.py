"""Whether a consultant's reply has words for the customer once its commands are off."""
from __future__ import annotations

import pytest

from maild.rules.replies import says_something


@pytest.mark.parametrize(("new_text", "says"), [
    ("", False), ("\n\n", False), ("-- \nAnna Nowak\nFirma", False), ("\r\n--\r\nAnna", False),
    ("Dzień dobry,\nproszę zainstalować poprawkę.", True), ("\n  ok\n-- \nAnna", True), ("--- not a signature", True),
    # a phone's or a mail app's line, a signature's closing: no "-- " above them
    ("Wysłane z iPhone'a", False), ("Sent from my Samsung Galaxy smartphone.", False),
    ("Get Outlook for iOS<https://aka.ms/o0ukef>", False), ("Pobierz aplikację Outlook dla systemu Android", False),
    ("Pozdrawiam\nAnna Nowak", False), ("Best regards,\nBob", False), ("Z poważaniem\nAnna", False),
    ("Sent from my iPhone\n\nThe patch is in.", True), ("Sent from my phone, sorry: the fix is to restart it", True),
    ("Pozdrawiam Jana, proszę przekazać mu hasło.", True), ("Regards the invoice: it is corrected.", True),
])
def test_a_reply_says_something_when_its_first_line_is_not_a_signature(new_text: str, says: bool) -> None:
    assert says_something(new_text) is says
