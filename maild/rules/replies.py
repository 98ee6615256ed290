"""What a consultant's reply says once its command block is off: whether it has words for the customer.

The intake decides by it whether to relay the reply (``pipeline._consultant_mail``); the month report counts
answers by the same rule in SQL (``billing.month.answered_the_customer``), over rows stored before the intake
applied it too.
"""
from __future__ import annotations


# The lines a signature starts with: "-- " by RFC 3676, "--" as many clients strip the space.
SIGNATURE_LINES = ("--", "-- ")


def says_something(new_text: str) -> bool:
    """Whether a reply's new text (its command block already off) has words for the customer: a mail of
    commands only ("#take", "#time 1h30m") or of commands and a signature says nothing, and relaying it
    sent the customer an empty mail with a signature. The text's first non-blank line decides."""
    for raw in new_text.split("\n"):
        line = raw.rstrip("\r")
        if line.strip():
            return line not in SIGNATURE_LINES
    return False
