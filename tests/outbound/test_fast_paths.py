"""The send path's fast paths give exactly what the general code gives (property tests).

``one_line``, ``_fold`` and the attachments' base64 each take a shortcut for the common
case (text already on one line, a header that needs no folding, base64 from one encoding);
each is checked here against the general way written out as it was before the shortcut.
"""
from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.outbound.outbox import _FOLD_AT, _base64_lines, _body, _fold, _qp_lines_within_76
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


@given(st.integers(min_value=0, max_value=3 * 256 * 57 + 200), st.integers(min_value=0, max_value=2**32))
def test_a_large_attachments_base64_is_encodebytes_with_crlf(size: int, seed: int) -> None:
    """Sizes across the blocks of 256 lines ``_base64_lines`` cuts at once, and their ends."""
    data = random.Random(seed).randbytes(size)
    assert _base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")


@pytest.mark.parametrize("size", [256 * 57 - 1, 256 * 57, 256 * 57 + 1, 2 * 256 * 57, 2 * 256 * 57 + 57])
def test_base64_at_the_edges_of_a_block_is_encodebytes_with_crlf(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert _base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")


def body_general(text: str) -> tuple[str, bytes]:
    """``outbox._body`` as it was before its shortcuts (every text through the line-end
    substitution, its lines split and joined again with CRLF)."""
    data = re.sub(r"\r\n?", "\n", text).encode("utf-8", "replace")
    if not data.endswith(b"\n"):
        data += b"\n"
    lines = data.split(b"\n")[:-1]
    crlf = b"\r\n".join(lines) + b"\r\n"
    if not re.search(rb"[^\t\n -~]", data) and max(map(len, lines)) <= _FOLD_AT:
        return "7bit", crlf
    qp = _qp_lines_within_76(binascii.b2a_qp(crlf, istext=True))
    if len(qp) <= 2 * (len(data) * 4 // 3 + len(data) // 57 * 2 + 2):
        return "quoted-printable", qp if qp.endswith(b"\r\n") else qp + b"\r\n"
    return "base64", b"".join(binascii.b2a_base64(data[i:i + 57], newline=False) + b"\r\n"
                              for i in range(0, len(data), 57))


body_text = st.lists(st.sampled_from(list("ab .ł\t\r\n\x00\x7f\u2028é😀") + ["x" * 40, "\ud800"]),
                     max_size=120).map("".join)


@given(body_text)
def test_body_is_the_general_one(text: str) -> None:
    assert _body(text) == body_general(text)
