"""mail-parser as the second opinion when our own parser fails on a message."""
from __future__ import annotations

import pytest

import maild.intake.message as message
from maild.intake.message import UnparsableMessage, parse_message
from tests.helpers import make_mail


def broken(raw: bytes, limits: object, *rest: object) -> object:
    raise ValueError("a parser bug")


def test_mail_parser_takes_over_when_our_parser_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = make_mail(sender="Zofia Żak <zofia@acme.pl>", subject="Zażółć gęślą jaźń", msgid="<fb1@acme.pl>",
                    body="Treść zgłoszenia.\n", headers={"In-Reply-To": "<prev@acme.pl>"})
    monkeypatch.setattr(message, "_parse", broken)
    msg = parse_message(raw)
    assert (msg.from_addr, msg.from_name, msg.subject) == ("zofia@acme.pl", "Zofia Żak", "Zażółć gęślą jaźń")
    assert msg.message_id == "fb1@acme.pl" and msg.dedupe_key == "fb1@acme.pl"
    assert msg.in_reply_to == ("prev@acme.pl",)
    assert msg.text.strip() == "Treść zgłoszenia."
    assert msg.to == ("support@firma.pl",)
    assert "ParsedByMailParserFallback" in msg.defects and "a parser bug" in msg.notes[0]


def test_both_parsers_failing_is_unparsable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(message, "_parse", broken)
    monkeypatch.setattr(message, "_second_opinion", broken)
    with pytest.raises(UnparsableMessage, match="a parser bug"):
        parse_message(b"From: x@y\n\nbody")
