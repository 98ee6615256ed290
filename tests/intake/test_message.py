"""Raw bytes -> InboundMessage, on hand-written quirk files and generated hostile input."""
from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maild.intake.htmltext import html_to_text
from maild.intake.message import (
    guess_language,
    InboundMessage,
    ParseLimits,
    UnparsableMessage,
    decode_bytes,
    decode_header_words,
    normalise_message_id,
    parse_message,
)

# A pathological input is bounded in CPU seconds of this process, not wall time: a machine
# running other work slows the clock, not the work. Each needs well under a second; 20 s is
# for slow machines. The pytest timeout only catches a hang.
HANG = 120


@contextmanager
def at_most_cpu_seconds(limit: float) -> Iterator[None]:
    started = time.process_time()
    yield
    spent = time.process_time() - started
    assert spent < limit, f"{spent:.1f} s of CPU"


EML = Path(__file__).parents[1] / "data" / "eml"
CORPUS = Path(__file__).parents[1] / "data" / "corpus" / "mail"
PANGRAM = "Zażółć gęślą jaźń"


def load(name: str) -> InboundMessage:
    return parse_message((EML / name).read_bytes())


def simple(headers: str, body: bytes = b"body\r\n") -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


# --------------------------------------------------------------------------
# headers
# --------------------------------------------------------------------------

def test_rfc2047_subject_split_across_words_and_q_name() -> None:
    msg = load("rfc2047-split-words.eml")
    assert msg.subject == "Zażółć gęślą jaźń - pilne"
    assert msg.from_name == "Paweł Łukasz"
    assert msg.from_addr == "jan@firma.pl"


@pytest.mark.parametrize(("raw", "expected"), [
    ("=?utf-8?q?za=C5=BC=C3=B3=C5=82=C4=87?=", "zażółć"),
    ("=?UTF-8?B?emHFvMOzxYLEhw==?=", "zażółć"),
    ("=?iso-8859-2?Q?g=EA=B6l=B1?= =?iso-8859-2?Q?_ja=BC=F1?=", "gęślą jaźń"),
    ("Re: =?utf-8?q?faktura?= nr 5", "Re: faktura nr 5"),
    ("=?x-unknown-charset?q?abc?=", "abc"),
    ("=?utf-8*pl?q?tak?=", "tak"),
])
def test_decode_header_words(raw: str, expected: str) -> None:
    assert decode_header_words(raw) == expected


def test_raw_8bit_header_is_decoded_not_replaced() -> None:
    raw = b"From: =?utf-8?q?x?= <a@b.pl>\r\nSubject: " + "Faktura zaległa".encode("cp1250") + b"\r\n\r\nx"
    msg = parse_message(raw)
    assert msg.subject == "Faktura zaległa"
    assert "\ufffd" not in msg.subject


def test_subject_is_one_safe_line_and_capped() -> None:
    raw = simple("From: a@b.pl\nSubject: line1\n\tline2 \x1b[31mred\u202e".encode("utf-8").decode("latin-1")
                 + "\nSubject: second")
    msg = parse_message(raw)
    assert "\n" not in msg.subject and "\x1b" not in msg.subject
    assert msg.subject.startswith("line1 line2")
    long = parse_message(simple("From: a@b.pl\nSubject: " + "x" * 5000))
    assert len(long.subject) == 998


def test_addresses_lower_cased_and_listed() -> None:
    raw = simple('From: "Kowalski, Jan" <Jan.Kowalski@Firma.PL>\nTo: Support <SUPPORT@example.com>, b@x.pl\n'
                 "Cc: c@x.pl\nReply-To: Biuro <Biuro@Firma.pl>\nReturn-Path: <Bounce@Firma.pl>")
    msg = parse_message(raw)
    assert msg.from_addr == "jan.kowalski@firma.pl"
    assert msg.from_name == "Kowalski, Jan"
    assert msg.to == ("support@example.com", "b@x.pl")
    assert msg.cc == ("c@x.pl",)
    assert msg.reply_to == ("biuro@firma.pl",)
    assert msg.return_path == "bounce@firma.pl"


def test_return_path_missing_vs_null() -> None:
    assert parse_message(simple("From: a@b.pl")).return_path is None
    assert parse_message(simple("From: a@b.pl\nReturn-Path: <>")).return_path == ""


def test_message_id_normalised_and_dedupe_key() -> None:
    raw = simple("From: a@b.pl\nMessage-ID:   <  abc.123@Firma.pl >  ")
    msg = parse_message(raw)
    assert msg.message_id == "abc.123@Firma.pl"
    assert msg.dedupe_key == "abc.123@Firma.pl"
    assert msg.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert msg.size == len(raw)


def test_message_id_absent_or_garbage_falls_back_to_hash() -> None:
    for name in ("no-message-id.eml", "garbage-message-id.eml"):
        msg = load(name)
        assert msg.message_id is None
        assert msg.dedupe_key == "sha256:" + msg.raw_sha256


def test_in_reply_to_and_references() -> None:
    msg = load("garbage-message-id.eml")
    assert msg.in_reply_to == ("parent@firma.pl",)
    assert msg.references == ("root@firma.pl", "mid@firma.pl", "parent@firma.pl")


@pytest.mark.parametrize(("value", "expected"), [
    ("<a@b>", "a@b"), ("a@b", "a@b"), ("", None), (None, None), ("<nonsense>", None), ("garbage", None),
])
def test_normalise_message_id(value: str | None, expected: str | None) -> None:
    assert normalise_message_id(value) == expected


def test_references_capped_keeping_root_and_latest() -> None:
    refs = " ".join(f"<r{i}@x>" for i in range(500))
    msg = parse_message(simple("From: a@b.pl\nReferences: " + refs))
    assert len(msg.references) == 100
    assert msg.references[0] == "r0@x" and msg.references[-1] == "r499@x"


def test_date_header_is_utc_aware() -> None:
    msg = parse_message(simple("From: a@b.pl\nDate: Mon, 04 Nov 2024 10:00:00 +0100"))
    assert msg.date_header == datetime(2024, 11, 4, 9, 0, tzinfo=timezone.utc)
    assert parse_message(simple("From: a@b.pl\nDate: yesterday-ish")).date_header is None


def test_kept_headers_joined_authentication_results() -> None:
    raw = simple("From: a@b.pl\nAuthentication-Results: mx.example.com; spf=pass\n"
                 "Authentication-Results: other; dkim=fail\nAuto-Submitted: auto-replied\nX-Unrelated: 1\n"
                 "X-MS-Exchange-Inbox-Rules-Loop: a@b.pl")
    msg = parse_message(raw)
    assert msg.headers["authentication-results"] == "mx.example.com; spf=pass\nother; dkim=fail"
    assert msg.headers["auto-submitted"] == "auto-replied"
    assert msg.headers["x-ms-exchange-inbox-rules-loop"] == "a@b.pl"
    assert "x-unrelated" not in msg.headers


# --------------------------------------------------------------------------
# bodies and charsets
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "body-iso-8859-2.eml",
    "body-windows-1250.eml",
    "body-utf-8-qp.eml",
    "mislabelled-cp1250-as-iso-8859-2.eml",
    "mislabelled-iso-8859-2-as-cp1250.eml",
    "mislabelled-utf-8-as-iso-8859-1.eml",
    "undeclared-8bit-cp1250.eml",
])
def test_polish_text_in_any_labelling(name: str) -> None:
    msg = load(name)
    assert PANGRAM in msg.text
    assert "\ufffd" not in msg.text
    assert msg.language == "pl"


@pytest.mark.parametrize("charset", ["iso-8859-2", "windows-1250", "utf-8", "bogus-charset", None])
@pytest.mark.parametrize("encoding", ["cp1250", "iso-8859-2", "utf-8"])
def test_decode_bytes_recovers_polish(charset: str | None, encoding: str) -> None:
    assert decode_bytes(PANGRAM.encode(encoding), charset) == PANGRAM


def test_decode_bytes_keeps_other_declared_charsets() -> None:
    assert decode_bytes("Привет".encode("koi8-r"), "koi8-r") == "Привет"
    assert decode_bytes("日本語".encode("shift_jis"), "shift_jis") == "日本語"


def test_html_only_mail_becomes_text() -> None:
    msg = load("html-only.eml")
    assert msg.html is not None and "<b>" in msg.html
    assert "faktura nie działa." in msg.text
    assert "* krok 1\n* krok 2" in msg.text
    assert "alert" not in msg.text and "color:red" not in msg.text
    assert "link <https://erp.example.com/x>" in msg.text


def test_plain_part_preferred_over_html() -> None:
    raw = simple("From: a@b.pl\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=A",
                 b"--A\r\nContent-Type: text/plain\r\n\r\nplain version\r\n--A\r\nContent-Type: text/html\r\n\r\n"
                 b"<p>html version</p>\r\n--A--\r\n")
    msg = parse_message(raw)
    assert msg.text.strip() == "plain version"
    assert msg.html is not None and "html version" in msg.html
    assert msg.content_type == "multipart/alternative"


# --------------------------------------------------------------------------
# attachments
# --------------------------------------------------------------------------

def test_attachments_exact_bytes_sha_and_rfc2231_names() -> None:
    msg = load("rfc2231-polish-filename.eml")
    pdf, png = msg.attachments
    expected = bytes(range(256)) * 4
    assert pdf.filename == "zażółć gęślą.pdf"
    assert pdf.data == expected and pdf.size == 1024
    assert pdf.sha256 == hashlib.sha256(expected).hexdigest()
    assert pdf.content_type == "application/pdf" and not pdf.inline
    assert png.filename == "jaźń.png"
    assert png.inline and png.content_id == "img1@firma.pl"
    assert png.data == base64.b64decode("iVBORw0KGgo=")
    assert msg.text.strip() == "W załączniku faktura."


def test_hostile_filenames_are_display_safe() -> None:
    names = [a.filename for a in load("hostile-filename.eml").attachments]
    assert names[0] == "passwd"
    assert names[2] == "x.dll"
    for name in names:
        assert "/" not in name and "\\" not in name and ".." not in name
        assert not any(ord(c) < 32 or 0x202A <= ord(c) <= 0x202E for c in name)


def test_attachment_over_limit_is_noted_not_stored() -> None:
    big = base64.encodebytes(b"\x00" * 50_000)
    raw = simple("From: a@b.pl\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=Z",
                 b"--Z\r\nContent-Type: text/plain\r\n\r\nhi\r\n--Z\r\nContent-Type: application/zip\r\n"
                 b"Content-Disposition: attachment; filename=big.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 + big + b"--Z\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=small.csv\r\n\r\na,b\r\n--Z--\r\n")
    msg = parse_message(raw, ParseLimits(max_attachment_bytes=10_000))
    assert [a.filename for a in msg.attachments] == ["small.csv"]
    assert any("big.zip" in n and "max_attachment_bytes" in n for n in msg.notes)
    assert msg.text.strip() == "hi"


def test_attachment_count_limit() -> None:
    parts = b"".join(b"--Z\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                     b"filename=f%d.bin\r\n\r\nx\r\n" % i for i in range(30))
    raw = simple("From: a@b.pl\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=Z", parts + b"--Z--\r\n")
    msg = parse_message(raw, ParseLimits(max_attachments=5))
    assert len(msg.attachments) == 5
    assert any("max_attachments" in n for n in msg.notes)


# --------------------------------------------------------------------------
# delivery reports
# --------------------------------------------------------------------------

def test_dsn_permanent() -> None:
    report = load("dsn-permanent.eml").report
    assert report is not None
    assert report.original_message_id == "ack-1042@support.example.com"
    assert report.recipients == ("nobody@customer.pl",)
    assert report.status == "5.1.1"
    assert report.permanent
    assert "User unknown" in report.diagnostic


def test_dsn_delayed_is_not_permanent() -> None:
    report = load("dsn-delayed.eml").report
    assert report is not None
    assert report.original_message_id == "ack-77@support.example.com"
    assert report.status == "4.4.1" and not report.permanent


def test_non_standard_ndr_text() -> None:
    report = load("ndr-qmail-plain.eml").report
    assert report is not None
    assert report.recipients == ("gone@customer.pl",)
    assert report.original_message_id == "ack-9@support.example.com"
    assert report.status == "5.1.1" and report.permanent


def test_ordinary_mail_has_no_report() -> None:
    assert load("body-utf-8-qp.eml").report is None


# --------------------------------------------------------------------------
# hostile and pathological input
# --------------------------------------------------------------------------

def test_not_a_message_still_returns_something() -> None:
    msg = load("not-a-message.eml")
    assert msg.from_addr == "" and msg.subject == ""
    assert msg.dedupe_key.startswith("sha256:")


def test_nul_bytes_in_headers() -> None:
    msg = load("nul-in-headers.eml")
    assert "\x00" not in msg.subject and "\x00" not in msg.text and "\x00" not in msg.from_name
    assert msg.message_id == "nul@firma.pl"


def test_empty_input() -> None:
    msg = parse_message(b"")
    assert msg.size == 0 and msg.text == ""


@pytest.mark.timeout(HANG)
def test_deep_mime_nesting() -> None:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(1000))
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(1000)))
    raw = b"From: a@b.pl\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\nhello" + tail
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert msg.subject == "deep"
    assert any("nest" in n for n in msg.notes)
    with at_most_cpu_seconds(20):
        shallow = parse_message(raw, ParseLimits(max_depth=5))
    assert shallow.subject == "deep"


@pytest.mark.timeout(HANG)
def test_moderate_nesting_over_max_depth_is_noted() -> None:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(40))
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(40)))
    raw = b"From: a@b.pl\r\nMIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\nhello" + tail
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert any("max_depth" in n for n in msg.notes)
    assert "hello" not in msg.text


@pytest.mark.timeout(HANG)
def test_fifty_megabyte_single_line_body() -> None:
    raw = b"From: a@b.pl\r\nSubject: huge\r\n\r\n" + b"x" * (50 * 1024 * 1024)
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert msg.subject == "huge"
    assert msg.size == len(raw)
    assert len(msg.text) == 1_000_000
    assert any("max_message_bytes" in n for n in msg.notes)
    assert any("max_text_chars" in n for n in msg.notes)


@pytest.mark.timeout(HANG)
def test_thousands_of_parts() -> None:
    parts = b"".join(b"--z\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                     b"filename=p%d.txt\r\n\r\npart %d\r\n" % (i, i) for i in range(5000))
    raw = simple("From: a@b.pl\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=z", parts + b"--z--\r\n")
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert len(msg.attachments) == 100
    assert any("max_parts" in n for n in msg.notes)
    assert any("max_attachments" in n for n in msg.notes)


@pytest.mark.timeout(HANG)
def test_megabytes_of_headers() -> None:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(40_000))
    raw = b"From: a@b.pl\r\nSubject: many headers\r\n" + filler + b"\r\nthe body\r\n"
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert msg.subject == "many headers"
    assert msg.text.strip() == "the body"
    assert any("max_header_bytes" in n for n in msg.notes)


@pytest.mark.timeout(HANG)
def test_one_giant_header_line() -> None:
    raw = b"From: a@b.pl\r\nSubject: " + b"word " * 1_000_000 + b"\r\n\r\nbody"
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert len(msg.subject) <= 998


@pytest.mark.timeout(HANG)
def test_html_with_tens_of_thousands_of_links() -> None:
    links = "".join(f'<p><a href="https://x.example/{i}">link {i}</a><span>t</span></p>' for i in range(50_000))
    raw = simple("From: a@b.pl\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8", links.encode())
    with at_most_cpu_seconds(20):
        msg = parse_message(raw)
    assert msg.text.startswith("link 0 <https://x.example/0>")
    assert len(msg.text) <= 1_000_000


@pytest.mark.timeout(HANG)
@pytest.mark.parametrize("html", ["<!--" * 200_000, "<a" * 200_000, "<?" * 200_000, "<![CDATA[" * 100_000,
                                  '<a href="' * 100_000 + ">x", "<" * 1_000_000, "<div>" * 200_000])
def test_html_to_text_is_linear_on_unclosed_constructs(html: str) -> None:
    with at_most_cpu_seconds(20):
        text = html_to_text(html)
    assert len(text) <= 1_000_000


def test_html_to_text_basics() -> None:
    text = html_to_text('<p>A&amp;B</p><p>x<br>y</p><a href="mailto:a@b.pl">a@b.pl</a> <img alt="logo">'
                        "<pre>  keep\n  this</pre><script>no()</script>")
    assert text.splitlines()[0] == "A&B"
    assert "x\ny" in text
    assert "a@b.pl" in text and "mailto" not in text
    assert "[logo]" in text
    assert "  keep\n  this" in text
    assert "no()" not in text
    assert html_to_text("<p>" + "x" * 100 + "</p>", max_chars=10) == "x" * 10


@pytest.mark.timeout(HANG)
def test_text_cap_applies() -> None:
    with at_most_cpu_seconds(20):
        msg = parse_message(simple("From: a@b.pl", b"y" * 5000), ParseLimits(max_text_chars=100))
    assert len(msg.text) == 100
    assert any("max_text_chars" in n for n in msg.notes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        msg = parse_message(raw)
    except UnparsableMessage:
        return
    assert msg.size == len(raw)


_CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.stat().st_size < 100_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_CORPUS_FILES),
    st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(["flip", "delete", "insert", "cut"]),
                       st.binary(min_size=1, max_size=8)), max_size=8),
)
def test_mutated_corpus_messages_never_raise_anything_else(
    path: Path, mutations: list[tuple[int, str, bytes]]
) -> None:
    data = bytearray(path.read_bytes())
    for position, op, blob in mutations:
        if not data:
            break
        i = position % len(data)
        if op == "flip":
            data[i] ^= blob[0] or 0x80
        elif op == "delete":
            del data[i:i + len(blob) * 8]
        elif op == "insert":
            data[i:i] = blob
        else:
            data = data[:i]
    try:
        parse_message(bytes(data))
    except UnparsableMessage:
        pass


def test_raw_8bit_inside_encoded_word() -> None:
    """Found by fuzzing: 8-bit bytes inside =?..?= once escaped the ascii encoder."""
    raw = b"From: a@b.pl\r\nSubject: =?utf-8?q?\xc5\x82adny?= =?utf-8?b?\xc5\x82?=\r\n\r\nx"
    msg = parse_message(raw)
    assert msg.subject.startswith("ładny")


@pytest.mark.parametrize(
    ("subject", "text", "language"),
    [
        ("Question", "Hello, I need help with invoices.", "en"),
        ("Request for quote", "Hi, could you send me an offer for the ERP implementation? Thanks", "en"),
        ("Pytanie", "Dzień dobry, mam pytanie o licencje dla firmy.", "pl"),
        ("Faktura", "Nie mogę wysłać faktury do KSeF, pilne.", "pl"),
        ("", "OK", None),
    ],
)
def test_a_strangers_language_is_guessed_from_the_text(subject: str, text: str, language: str | None) -> None:
    assert guess_language(subject, text) == language


_FIELD_NAMES = ["From", "FROM", "to", "To", "Cc", "CC", "Reply-To", "Subject", "subject", "Date", "Message-ID",
                "Message-Id", "In-Reply-To", "References", "X-Other", "Return-Path"]


@given(st.lists(st.tuples(st.sampled_from(_FIELD_NAMES),
                          st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b" "))),
                max_size=20))
def test_the_fields_read_once_are_those_read_one_name_at_a_time(fields: list[tuple[str, bytes]]) -> None:
    """``_Fields`` (every field in one pass) gives ``_first`` and ``_all`` of every name, 8-bit values too."""
    import email
    from email import policy as email_policy

    from maild.intake.message import _all, _Fields, _first

    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in fields) + b"\r\nbody\r\n"
    msg = email.message_from_bytes(raw, policy=email_policy.compat32)
    read = _Fields(msg)
    for name in {n.lower() for n in _FIELD_NAMES} | {"absent"}:
        assert read.first(name) == _first(msg, name)
        assert read.all(name) == _all(msg, name)
