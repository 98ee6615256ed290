"""What a consultant's reply says once its command block is off: whether it has words for the customer.

The intake decides by it whether to relay the reply (``pipeline._consultant_mail``) and keeps the decision
with the mail (``messages.answered``), which the month report counts; rows stored before that are judged in
SQL by the first rule below alone (``billing.month.answered_the_customer``).
"""
from __future__ import annotations

import re

# The lines a signature starts with: "-- " by RFC 3676, "--" as many clients strip the space.
SIGNATURE_LINES = ("--", "-- ")

# What a phone or a mail app writes under every mail, with no "-- " above it: "Wysłane z iPhone'a", "Sent from
# my Galaxy", "Get Outlook for Android<https://aka.ms/...>", "Pobierz aplikację Outlook dla systemu iOS".
_DEVICE_LINE = re.compile(
    r"\s*(?:sent\s+from\s|sent\s+with\s|wysłan[eoa]\s+z\s|wysłan[eoa]\s+przy\s+użyciu\s|get\s+outlook\s+for\s"
    r"|pobierz\s+(?:aplikację\s+)?outlook\b)[\w'’. -]{0,50}?(?:<https?://[^<>\s]{1,200}>)?\s*",
    re.IGNORECASE)
# The closing a mail client's signature opens with (Outlook's, Gmail's, a phone's), which no "-- " precedes:
# a line of these words alone ("Pozdrawiam", "Best regards,") ends what the person wrote for the reader.
_CLOSING_LINE = re.compile(
    r"\s*(?:(?:z\s+)?pozdrowieniami|(?:serdecznie\s+|ciepło\s+)?pozdrawiam(?:\s+serdecznie|\s+ciepło)?"
    r"|z\s+poważaniem|z\s+wyrazami\s+szacunku|łączę\s+pozdrowienia"
    r"|(?:best|kind|warm|many)\s+regards|regards|best\s+wishes|(?:yours\s+)?sincerely|cheers)\s*[,.!]?\s*",
    re.IGNORECASE)
_MAX_SIGNATURE_LINE = 300


def says_something(new_text: str) -> bool:
    """Whether a reply's new text (its command block already off) has words for the customer: a mail of
    commands only ("#take", "#time 1h30m") or of commands and a signature says nothing, and relaying it
    sent the customer an empty mail with a signature. The first line that is not a phone's or a mail app's
    own line ("Wysłane z iPhone'a") decides: a signature's "-- " or a closing ("Pozdrawiam") says nothing,
    anything else says something; a text of such lines alone says nothing."""
    for raw in new_text.split("\n"):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line in SIGNATURE_LINES:
            return False
        if len(line) > _MAX_SIGNATURE_LINE:
            return True
        if _DEVICE_LINE.fullmatch(line):
            continue
        return _CLOSING_LINE.fullmatch(line) is None
    return False
