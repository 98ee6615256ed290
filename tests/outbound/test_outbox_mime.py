"""The hand-composed outgoing mail (`compose_text_mail`) read back by Python's own parser.

maild writes its mail header line by header line instead of through
``EmailMessage`` (the header registry dominated the send path). These tests
hold it to what the registry guaranteed: whatever a customer's mail puts into a
subject, a display name, a ticket reference or a body (Polish letters, emoji,
control characters, very long text, attempts to start a new header), the mail
parses back to exactly that text, no line passes 998 bytes, no bare CR or LF
reaches SMTP, and no header appears that maild did not write.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from maild.storage.blobs import BlobStore
from maild.outbound.outbox import PendingMail, Sender, _composed, _text_mail, build_mail, compose_text_mail
from maild.outbound.smtp import wire_data
from maild.ops.check import SAMPLE_CONTEXTS
from maild.outbound.render import Renderer, one_line

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
SENDER = Sender("support@firma.pl", "Wsparcie Firma", "maild-test")
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ACK_CONTEXT = {**SAMPLE_CONTEXTS["ack"], "ref": "SUP-12", "subject": "Nie działa KSeF",
               "reaction_due": "2026-03-02T12:30:00+00:00", "from_name": "Wsparcie Firma"}
EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "message-id", "auto-submitted", "x-auto-response-suppress", "precedence",
    "x-maild-origin", "content-language", "mime-version", "content-type", "content-transfer-encoding",
}

_polish = st.sampled_from([
    "Zażółć gęślą jaźń", "ZAŻÓŁĆ GĘŚLĄ JAŹŃ", "Faktura nr 12/2026 – błąd w KSeF", "Łódź", "Śląsk",
    "Re: Odp: Pilne!!!", "Re: [SUP-12] brak dostępu", "\u00a0", "😀", "👩‍💻", "\u200b", "\u2028", "\x85",
    "=?utf-8?q?=41?=", "=?", "?=", "\r\nBcc: evil@example.com", "\nX-Injected: 1", "\r", "\x00", "\t",
    "a" * 300, "ą" * 200, "😀" * 120, " ", "  ", '"', "\\", "<x@y>", ",", ";", "(comment)",
])
_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_polish, st.text(max_size=20)), max_size=25).map("".join),
    st.text(st.characters(max_codepoint=0x7f), max_size=1200),
)
_body = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(_polish, st.text(max_size=40), st.just("\n"), st.just("\r\n"), st.just(".\n")),
             max_size=60).map("".join),
)


def pending(*, recipients: list[Any] | None = None, kind: str = "ack", automatic: bool = True,
            language: str = "pl", context: dict[str, Any] | None = None) -> PendingMail:
    return PendingMail(7, kind, 3, "20260302093000.7.ack@firma.pl", recipients or ["jan@acme.pl"], automatic,
                       "ack", language, context or {})


def check_wire_form(raw: bytes) -> None:
    """What SMTP and every reader need: CRLF only, lines <= 998, an ASCII header block."""
    assert b"\r\n\r\n" in raw
    without_crlf = raw.replace(b"\r\n", b"")
    assert b"\r" not in without_crlf and b"\n" not in without_crlf, "bare CR or LF"
    assert b"\x00" not in raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    for line in head.split(b"\r\n"):
        assert line[:1] in (b" ", b"\t") or re.match(rb"[!-9;-~]+: ", line), line


def check_own_wire_form(raw: bytes, wire: bytes | None) -> None:
    """The wire form the outbox hands the sender with a mail it composed (``Envelope.wire``)
    is exactly what aiosmtplib's DATA makes of the mail (``wire_data``)."""
    assert wire is not None and wire == wire_data(raw)


def normalised(text: str) -> str:
    text = re.sub(r"\r\n?", "\n", text)
    return text if text.endswith("\n") else text + "\n"


def parse(raw: bytes) -> EmailMessage:
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    assert not mail.defects, mail.defects
    return mail


def body_text(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return normalised(content)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_text, name=_text, body=_body)
# binascii.b2a_qp gave this body a 77-character line (a 76-character line ending in a space, "=20")
@example(subject="", name="", body="00000\x1f\x1f\x08\x80\x80\x80\x80\x80\x80\U00010000\U00010000 ")
def test_subject_name_and_body_read_back_exactly(subject: str, name: str, body: str) -> None:
    raw = compose_text_mail(pending(), subject, body, {"from_name": name}, SENDER, NOW)
    check_wire_form(raw)
    own, wire = _text_mail(pending(), subject, body, {"from_name": name}, SENDER, NOW)
    assert own == raw
    check_own_wire_form(raw, wire)
    mail = parse(raw)
    assert {k.lower() for k in mail.keys()} == EXPECTED_HEADERS
    assert len(mail.keys()) == len(EXPECTED_HEADERS), "every header once"
    assert mail["Subject"] == one_line(subject, 900)
    subject_lines = re.search(r"^Subject:.*?(?=\r\n\S)", raw.decode("ascii"), re.S | re.M)
    assert subject_lines is not None
    if "=?utf-8?" in subject_lines.group(0):
        assert all(len(line) <= 78 for line in subject_lines.group(0).split("\r\n"))
    [address] = mail["From"].addresses
    assert address.addr_spec == SENDER.address
    assert address.display_name == one_line(name or SENDER.name, 100)
    assert body_text(mail) == normalised(body)
    assert mail["Content-Transfer-Encoding"] in ("7bit", "quoted-printable", "base64")
    if mail["Content-Transfer-Encoding"] != "7bit":
        assert all(len(line) <= 76 for line in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))


@settings(max_examples=300, deadline=None)
@given(ticket=_text, origin=_text, in_reply_to=_text, references=st.lists(_text, max_size=6))
def test_nothing_from_a_customer_adds_a_header(ticket: str, origin: str, in_reply_to: str,
                                               references: list[str]) -> None:
    """Ticket reference, instance id and the ids a customer's mail supplied for threading
    come out as the same text, or (a malformed msg-id) not at all, never as a new header."""
    headers = {"ticket_ref": ticket, "in_reply_to": in_reply_to, "references": references}
    raw = compose_text_mail(pending(), "Temat", "Treść\n", headers, Sender(SENDER.address, "S", origin), NOW)
    check_wire_form(raw)
    assert _text_mail(pending(), "Temat", "Treść\n", headers, Sender(SENDER.address, "S", origin), NOW) == (raw, raw)
    mail = parse(raw)
    optional = {"x-maild-ticket", "in-reply-to", "references"}
    assert EXPECTED_HEADERS <= {k.lower() for k in mail.keys()} <= EXPECTED_HEADERS | optional
    assert len(mail.keys()) == len(set(k.lower() for k in mail.keys()))
    assert mail["X-Maild-Origin"] == one_line(origin, 100)
    if one_line(ticket, 100):
        assert mail["X-Maild-Ticket"] == one_line(ticket, 100)
    if mail["In-Reply-To"] is not None:
        assert str(mail["In-Reply-To"]) == f"<{one_line(in_reply_to, 900)}>"
    if mail["References"] is not None:
        sent = " ".join(str(mail["References"]).split())
        assert set(re.findall(r"<([^<>]*)>", sent)) <= {one_line(r, 900) for r in references}


def test_threading_headers_keep_well_formed_ids_and_fold_long_lists() -> None:
    refs = [f"{'x' * 300}.{i}@example.com" for i in range(8)] + ["bad id@x", "ok@x"]
    raw = compose_text_mail(pending(), "t", "b\n", {"in_reply_to": "ok@x", "references": refs}, SENDER, NOW)
    check_wire_form(raw)
    mail = parse(raw)
    assert mail["In-Reply-To"] == "<ok@x>"
    assert str(mail["References"]).split() == [f"<{r}>" for r in refs if " " not in r]


def test_recipients_and_copies() -> None:
    row = pending(recipients=["jan@acme.pl", "ewa@acme.pl", "biuro@acme.pl"] + [f"u{i}@acme.pl" for i in range(30)])
    raw = compose_text_mail(row, "t", "b\n", {"cc": ["ewa@acme.pl"]}, SENDER, NOW)
    check_wire_form(raw)
    mail = parse(raw)
    assert [a.addr_spec for a in mail["To"].addresses] == [a for a in row.recipients if a != "ewa@acme.pl"]
    assert [a.addr_spec for a in mail["Cc"].addresses] == ["ewa@acme.pl"]
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n"))


@pytest.mark.parametrize("bad", ["jan@acme.pl\r\nBcc: evil@x", "jan@acme.pl, evil@x", "a <b@c>", "", '"x"@y'])
def test_a_malformed_address_is_refused_not_written(bad: str) -> None:
    with pytest.raises(ValueError, match="unsafe address"):
        compose_text_mail(pending(recipients=[bad]), "t", "b\n", {}, SENDER, NOW)


def test_non_ascii_address_is_written_as_utf8() -> None:
    """RFC 6532: the envelope needs SMTPUTF8 for it anyway (smtp.py checks)."""
    raw = compose_text_mail(pending(recipients=["józef@przykład.pl"]), "t", "b\n", {}, SENDER, NOW)
    assert "\r\nTo: józef@przykład.pl\r\n".encode() in raw


@pytest.mark.parametrize(("kind", "automatic", "expected"), [
    ("ack", True, ("auto-replied", "All", "auto_reply")),
    ("command_error", True, ("auto-replied", "All", "bulk")),
    ("escalation", True, ("auto-generated", "All", "bulk")),
    ("reply", False, (None, None, None)),
])
def test_loop_protection_headers(kind: str, automatic: bool, expected: tuple[str | None, ...]) -> None:
    mail = parse(compose_text_mail(pending(kind=kind, automatic=automatic), "t", "b\n", {}, SENDER, NOW))
    assert (mail["Auto-Submitted"], mail["X-Auto-Response-Suppress"], mail["Precedence"]) == expected
    assert mail["Date"].datetime == NOW and mail["Message-ID"] == "<20260302093000.7.ack@firma.pl>"
    assert mail["Content-Language"] == "pl" and mail.get_content_type() == "text/plain"
    assert mail.get_content_charset() == "utf-8" and mail["MIME-Version"] == "1.0"


@pytest.mark.parametrize(("body", "cte"), [
    ("Dzień dobry,\nprzyjęliśmy zgłoszenie.\n", "quoted-printable"),
    ("Hello,\nwe got it.\n", "7bit"),
    ("x" * 100 + "\n", "quoted-printable"),
    ("😀" * 50 + "\n", "base64"),
    ("line\x00with NUL\n", "quoted-printable"),
])
def test_body_encoding_is_7bit_safe(body: str, cte: str) -> None:
    raw = compose_text_mail(pending(), "t", body, {}, SENDER, NOW)
    assert raw.isascii()
    mail = parse(raw)
    assert mail["Content-Transfer-Encoding"] == cte
    assert body_text(mail) == body


def test_a_dot_line_and_from_line_survive() -> None:
    body = "a\n.\n..\nFrom here\n.\n"
    assert body_text(parse(compose_text_mail(pending(), "t", body, {}, SENDER, NOW))) == body


@pytest.mark.parametrize(("body", "own"), [
    (".first line\n", False), ("a\n.b\n", False), ("zażółć\n.x\n", False),  # 7bit, quoted-printable
    ("x" * 69 + "ą.\n", False),  # a soft break before the "."
    ("\u0105" * 80 + "\n.x\n", True),  # base64: no "." at all
    ("ok\n", True), ("a" * 200, True),
])
def test_a_mail_is_its_own_wire_form_but_for_dot_lines(body: str, own: bool) -> None:
    """A line of the body starting with "." (in 7bit, quoted-printable or after a soft break) is
    doubled on the wire; a mail without one goes out as it is."""
    raw, wire = _text_mail(pending(), "t", body, {}, SENDER, NOW)
    assert (wire is raw) is own
    check_own_wire_form(raw, wire)


def test_build_mail_renders_the_template(tmp_path: Path) -> None:
    context = {**ACK_CONTEXT, "subject": "Nie działa KSeF\r\nBcc: evil@x", "_headers": {"from_name": "Wsparcie Łódź", "ticket_ref": "SUP-12",
                                           "in_reply_to": "orig@acme.pl", "references": ["orig@acme.pl"]}}
    renderer = Renderer(TEMPLATES)
    raw = build_mail(pending(context=context), renderer, SENDER, None, NOW)
    check_wire_form(raw)
    mail = parse(raw)
    subject, body = renderer.render("ack", "pl", {k: v for k, v in context.items() if k != "_headers"})
    assert mail["Subject"] == subject and "Bcc" not in mail
    assert body_text(mail) == normalised(body)
    assert mail["From"].addresses[0].display_name == "Wsparcie Łódź"
    assert (mail["X-Maild-Ticket"], mail["In-Reply-To"]) == ("SUP-12", "<orig@acme.pl>")


def test_attachments_keep_every_header_and_byte(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", durable=False)
    data = bytes(range(256)) * 40
    digest = blobs.put(data)
    assert digest == sha256(data).hexdigest()
    context = {**ACK_CONTEXT, "_headers": {"ticket_ref": "SUP-1", "attachments": [
                   {"sha256": digest, "content_type": "application/pdf", "filename": "Faktura łódź.pdf"}]}}
    raw = build_mail(pending(context=context), Renderer(TEMPLATES), SENDER, blobs.get, NOW)
    check_wire_form(raw)
    mail = parse(raw)
    assert mail.get_content_type() == "multipart/mixed"
    assert {k.lower() for k in mail.keys()} - {"content-transfer-encoding"} >= EXPECTED_HEADERS - {
        "content-transfer-encoding"} | {"x-maild-ticket"}
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "Faktura łódź.pdf"
    assert attachment.get_content() == data
    assert body_text(mail).strip()


@given(st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=40),
                min_size=1, max_size=40).map(" ".join))
def test_long_ascii_subject_is_folded_at_its_spaces(subject: str) -> None:
    raw = compose_text_mail(pending(), subject, "b\n", {}, SENDER, NOW)
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    subject_lines = re.search(r"^Subject:.*?(?=\r\n\S)", head, re.S | re.M)
    assert subject_lines is not None
    assert all(len(line) <= 78 for line in subject_lines.group(0).split("\r\n"))
    assert parse(raw)["Subject"] == one_line(subject, 900)


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def test_html_part_with_inline_images_and_attachments() -> None:
    """Plain text first, then the HTML with its images related by Content-ID; attachments still mixed in."""
    import base64

    html = {"body": '<p>Wykres</p><img src="cid:chart.1@firma.pl" alt="Wykres godzin">', "images": [
        {"cid": "chart.1@firma.pl", "filename": "scopes.png", "content_type": "image/png",
         "data": base64.b64encode(PNG).decode("ascii")}]}
    context = {**ACK_CONTEXT, "_headers": {"ticket_ref": "SUP-1", "html": html}}
    raw = build_mail(pending(context=context), Renderer(TEMPLATES), SENDER, None, NOW)
    check_wire_form(raw)
    mail = parse(raw)
    assert mail.get_content_type() == "multipart/alternative"
    plain, related = mail.iter_parts()
    assert plain.get_content_type() == "text/plain" and body_text(mail).strip()
    assert related.get_content_type() == "multipart/related"
    page, image = related.iter_parts()
    assert page.get_content().strip() == html["body"]
    assert (image["Content-ID"], image.get_content(), image.get_content_disposition()) == (
        "<chart.1@firma.pl>", PNG, "inline")


@pytest.mark.parametrize("cid", ["a b@x", "a@x>\r\nBcc: evil@x", "<a@x>", ""])
def test_a_malformed_content_id_is_refused_not_written(cid: str) -> None:
    import base64

    html = {"body": "<p>x</p>", "images": [{"cid": cid, "data": base64.b64encode(PNG).decode("ascii")}]}
    with pytest.raises(ValueError, match="content id"):
        build_mail(pending(context={**ACK_CONTEXT, "_headers": {"html": html}}), Renderer(TEMPLATES), SENDER, None, NOW)


_content_types = st.one_of(
    st.sampled_from(["application/pdf", "image/png", "text/plain", "application/vnd.ms-excel", "x/y",
                     "application/octet-stream", "", "pdf", "text/plain; charset=utf-8",
                     "application/pdf\r\nBcc: evil@example.com", "a/b\nX-Injected: 1", "/", "a/"]),
    st.text(max_size=40),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.tuples(_text, _content_types, st.binary(max_size=3000)), min_size=1, max_size=3),
       body=_body)
@example(files=[('C:\\temp\\"x".pdf', "application/pdf", b"%PDF"), ("=?utf-8?q?y?=.txt", "text/plain", b"y"),
                ("Zestawienie godzin październik " + "ą" * 80 + ".xlsx", "application/vnd.ms-excel", b"")],
         body="Dzień dobry\n")
def test_attachments_composed_directly_read_back_exactly(files: list[tuple[str, str, bytes]], body: str) -> None:
    """A notification with the customer's files, composed without ``EmailMessage``: every
    file's name (Polish, emoji, quotes, 300 characters, attempts at a header), type and
    bytes read back as queued, the body too, and nothing a file name or type holds adds
    a header or ends one."""
    store = {sha256(data).hexdigest(): data for _, _, data in files}
    attachments = [{"sha256": sha256(data).hexdigest(), "content_type": ctype, "filename": name}
                   for name, ctype, data in files]
    raw, wire = _composed(pending(context={"body": body, "_headers": {"ticket_ref": "SUP-1",
                                                                      "attachments": attachments}}),
                          _BodyOnly(), SENDER, store.__getitem__, NOW)
    check_wire_form(raw)
    check_own_wire_form(raw, wire)
    mail = parse(raw)
    assert mail.get_content_type() == "multipart/mixed" and "Bcc" not in mail and "X-Injected" not in mail
    assert body_text(mail) == normalised(body)
    found = list(mail.iter_attachments())
    assert len(found) == len(files)
    for part, (name, ctype, data) in zip(found, files):
        assert not part.defects, part.defects
        assert set(part.keys()) == {"Content-Type", "Content-Transfer-Encoding", "Content-Disposition"}
        # the parameter as parsed (get_filename() also strips a name's own "<...>")
        assert part["Content-Disposition"].params["filename"] == (one_line(name, 200) or "attachment")
        maintype, _, subtype = ctype.partition("/")
        plain = re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]{1,64}", maintype) and re.fullmatch(
            r"[A-Za-z0-9!#$&^_.+-]{1,64}", subtype)
        assert part.get_content_type() == (ctype.lower() if plain else "application/octet-stream")
        assert part.get_payload(decode=True) == data


class _BodyOnly(Renderer):
    """Subject and body straight from the context: the test is about the MIME structure."""

    def __init__(self) -> None:
        pass

    def render(self, name: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
        return "Sprawa", str(context["body"])
