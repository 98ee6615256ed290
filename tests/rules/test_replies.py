"""Whether a consultant's reply has words for the customer once its commands are off."""
from __future__ import annotations

import pytest

from maild.rules.replies import says_something


@pytest.mark.parametrize(("new_text", "says"), [
    ("", False), ("\n\n", False), ("-- \nAnna Nowak\nFirma", False), ("\r\n--\r\nAnna", False),
    ("Dzień dobry,\nproszę zainstalować poprawkę.", True), ("\n  ok\n-- \nAnna", True), ("--- not a signature", True),
])
def test_a_reply_says_something_when_its_first_line_is_not_a_signature(new_text: str, says: bool) -> None:
    assert says_something(new_text) is says
