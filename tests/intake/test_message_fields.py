"""What the parser reads from MIME fields is the stdlib's answer, though it is worked out once per value.

``_content_type``, ``_param``, ``_filename`` (``maild.intake.message``) read a
part's Content-Type and Content-Disposition parameters from a per-process cache
of parsed field values, and ``_addresses`` caches short address fields; these
tests hold them to ``email.message.Message``'s own methods and the uncached parse.
"""
from __future__ import annotations

import email
import email.message
import uuid
from collections.abc import Callable
from email import policy
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from maild.intake import message
from maild.intake.message import parse_message
from tests.fuzz.mutate import load_seeds

_TYPES = st.sampled_from(["text/plain", "TEXT/HTML", "multipart/mixed", "application/octet-stream", "text", "a/b/c",
                          "", " image/png ", "message/rfc822", "multipart/report"])
_PARAMS = st.sampled_from([
    'charset="utf-8"', "charset=iso-8859-2", "charset=\"\"", 'name="faktura 12.pdf"', "name=plain.txt",
    "name*=utf-8''%C5%82%C3%B3d%C5%BA.pdf", "name*=iso-8859-2'pl'%B3%F3d%BC.txt", "name*0=cz; name*1=esc.txt",
    "name*0*=utf-8''%C5%82; name*1*=%C3%B3d.txt", 'boundary="----=_Part_1"', "boundary=B", "format=flowed",
    'report-type="delivery-status"', "report-type=Disposition-Notification", "x", "=", '"quoted;semi"',
    'name="a\\"b.txt"', "name='single'", "NAME=UPPER.TXT", "charset=UTF-8 (comment)", "name*=bogus''%ZZ",
    "name*=utf-8'%C5%82", 'filename="z.pdf"', "filename*=utf-8''%E2%80%AE.exe",
])
_DISPOSITIONS = st.sampled_from(["", "inline", "attachment", "ATTACHMENT", "attachment;", "form-data"])


def _field(kind: str, params: list[str], separator: str) -> str:
    return separator.join([kind, *params])


@st.composite
def _part(draw: st.DrawFn) -> email.message.Message:
    head = []
    if draw(st.booleans()):
        head.append("Content-Type: " + _field(draw(_TYPES), draw(st.lists(_PARAMS, max_size=4)),
                                              draw(st.sampled_from(["; ", ";", " ;\r\n\t"]))))
    if draw(st.booleans()):
        head.append("Content-Disposition: " + _field(draw(_DISPOSITIONS), draw(st.lists(_PARAMS, max_size=3)), "; "))
    if draw(st.booleans()):
        head.append("Content-Type: text/x-second; name=second.txt")  # a second field: the first counts
    raw = ("\r\n".join(head) + "\r\n\r\nbody\r\n").encode()
    if draw(st.booleans()):
        raw = raw.replace(b"%C5%82", b"\xc5\x82")  # 8-bit bytes in a field: the stdlib's own path
    try:
        return email.message_from_bytes(raw, policy=policy.compat32)
    except TypeError:  # the stdlib's own decode_params on some RFC 2231 continuations of a multipart's boundary
        reject()


def _stdlib_filename(part: email.message.Message) -> str:
    """What ``_filename`` was before the cache."""
    try:
        name: Any = part.get_filename() or part.get_param("name") or ""
    except (ValueError, TypeError, IndexError, LookupError, UnicodeError):
        return ""
    if isinstance(name, tuple):
        name = str(name[2])
    return str(name)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # the same exception type is the same answer
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(part=_part())
def test_the_cached_parameters_are_the_stdlibs(part: email.message.Message) -> None:
    for _ in range(2):  # parsed, then from the cache
        assert message._content_type(part) == part.get_content_type()
        for header in ("content-type", "content-disposition"):
            for name in ("charset", "name", "filename", "boundary", "report-type", "format", "x"):
                assert _outcome(lambda: message._param(part, name, header)) == \
                    _outcome(lambda: part.get_param(name, header=header)), (header, name)
        assert message._filename(part) == _stdlib_filename(part)


def test_a_repeated_content_type_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second mail with the same fields asks the stdlib to parse no parameters."""
    parsed: list[str] = []
    preserve = getattr(email.message.Message, "_get_params_preserve")

    def counting(self: email.message.Message, failobj: Any, header: str) -> Any:
        parsed.append(header)
        return preserve(self, failobj, header)
    monkeypatch.setattr(email.message.Message, "_get_params_preserve", counting)
    unique = uuid.uuid4().hex
    raw = (f"From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: plik\r\n"
           f'Content-Type: text/plain; charset="utf-8"; name="{unique}.txt"\r\n'
           f'Content-Disposition: attachment; filename="{unique}.txt"\r\n\r\nzawartosc pliku\r\n').encode()
    first = parse_message(raw)
    assert parsed
    parsed.clear()
    again = parse_message(raw)
    assert parsed == []
    assert again == first and [a.filename for a in again.attachments] == [f"{unique}.txt"]


_ADDRESS_FIELDS = ("from", "to", "cc", "reply-to", "sender")


def test_every_corpus_address_field_is_read_as_without_the_cache() -> None:
    for raw in load_seeds(max_bytes=1 << 62):
        msg = email.message_from_bytes(raw, policy=policy.compat32)
        for name in _ADDRESS_FIELDS:
            values = [v if isinstance(v, str) else str(v) for k, v in msg.raw_items() if k.lower() == name]
            expected = message._parse_addresses(tuple(values[:20])) if values else ()
            assert message._addresses(values) == expected
            assert message._addresses(values) == expected


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.lists(st.sampled_from(list('ab@.<>", ;:()\\\udcc5\u0142') + ["=?utf-8?q?=C5=82?="]),
                                max_size=30).map("".join), max_size=3))
def test_any_address_field_is_read_as_without_the_cache(values: list[str]) -> None:
    expected = message._parse_addresses(tuple(values))
    assert message._addresses(values) == expected
    assert message._addresses(values) == expected


def test_a_repeated_address_field_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    getaddresses: Callable[[list[str]], list[tuple[str, str]]] = getattr(message, "getaddresses")

    def counting(values: list[str]) -> list[tuple[str, str]]:
        calls.append(values)
        return getaddresses(values)
    monkeypatch.setattr(message, "getaddresses", counting)
    sender = f"Jan Kowalski <jan.{uuid.uuid4().hex}@acme.pl>"
    raw = f"From: {sender}\r\nTo: support@firma.pl\r\nSubject: x\r\n\r\ntekst\r\n".encode()
    first = parse_message(raw)
    assert [sender] in calls
    calls.clear()
    assert parse_message(raw) == first
    assert calls == []
    assert first.from_name == "Jan Kowalski" and first.from_addr.startswith("jan.")


FORWARDED_WITH_BLANK_BOUNDARY = (
    b"From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: Fwd: awaria\r\nMessage-ID: <fwd@acme.pl>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPrzekazuj\xc4\x99 dalej.\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: klient@beta.pl\r\nSubject: awaria\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=\" \"\r\n\r\n"
    b"-- \r\nContent-Type: text/plain\r\n\r\nnie dziala\r\n-- --\r\n"
    b"--outer--\r\n"
)


def test_a_forwarded_message_with_a_blank_boundary_is_stored_with_the_same_bytes_each_parse() -> None:
    """The generator invents a boundary for the inner multipart (its own is blank after the stdlib's rstrip);
    drawn at random, the .eml attachment's bytes and hash differed on every parse of the same mail."""
    first, second = (parse_message(FORWARDED_WITH_BLANK_BOUNDARY) for _ in range(2))
    [eml] = [a for a in first.attachments if a.content_type == "message/rfc822"]
    [again] = [a for a in second.attachments if a.content_type == "message/rfc822"]
    assert b"Subject: awaria" in eml.data and b"boundary=" in eml.data
    assert eml.data == again.data and eml.sha256 == again.sha256
