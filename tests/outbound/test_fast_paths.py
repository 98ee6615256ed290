"""The send path's fast paths give exactly what the general code gives (property tests).

``one_line``, ``_fold`` and the attachments' base64 each take a shortcut for the common
case (text already on one line, a header that needs no folding, base64 from one encoding);
each is checked here against the general way written out as it was before the shortcut.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from maild.outbound.outbox import _FOLD_AT, _base64_lines, _fold
from maild.outbound.render import one_line

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_line_general(value: object, limit: int = 200) -> str:
    text = _CONTROL.sub(" ", str(value).replace("\r", " ").replace("\n", " "))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fold_general(name: str, words: Sequence[str], sep: str = " ") -> str:
    out: list[str] = []
    line = f"{name}:"
    for i, word in enumerate(words):
        piece = word + (sep.rstrip() if i < len(words) - 1 else "")
        if len(line) + 1 + len(piece) > _FOLD_AT and line != f"{name}:":
            out.append(line)
            line = " " + piece
        else:
            line = f"{line} {piece}"
    out.append(line)
    return "\r\n".join(out)


text = st.text(alphabet=st.sampled_from(list("ab ł\t\r\n\x00\x1f\x7f\xa0\u2028\u3000\x85é")), max_size=60)


@given(text, st.integers(min_value=2, max_value=80))
def test_one_line_is_the_general_one(value: str, limit: int) -> None:
    assert one_line(value, limit) == one_line_general(value, limit)


@given(st.sampled_from(["Subject", "To", "X-Maild-Ticket"]),
       st.lists(st.text(alphabet="abc@.-", max_size=30), max_size=8), st.sampled_from([" ", ", "]))
def test_fold_is_the_general_one(name: str, words: list[str], sep: str) -> None:
    assert _fold(name, words, sep) == fold_general(name, words, sep)


@given(st.binary(max_size=2000))
def test_attachment_base64_is_encodebytes_with_crlf(data: bytes) -> None:
    assert _base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")
