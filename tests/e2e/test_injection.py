"""Injection: nothing from a mail reaches an outgoing header, a path, template code, a log line or a shell.

The mails go through the real daemon cycle (Maildir -> SQLite -> SMTP sink), and
the assertions are on the raw bytes the SMTP server received, the files on disk
and the captured log records.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import logging
import mailbox
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError
from sqlalchemy import select

from maild.storage import store
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import AttachmentRow, Ticket
from maild.outbound.render import Renderer
from tests.helpers import consultant_to, make_mail, maildir_source, write_config

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[2]
EML = Path(__file__).parents[1] / "data" / "eml"


@pytest.fixture
def env(tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    yield {"path": path, "box": mailbox.Maildir(tmp_path / "Maildir", create=True), "sink": smtp_sink, "tmp": tmp_path}


def run(env: dict[str, Any]) -> Daemon:
    daemon = Daemon(load_config(env["path"]), lambda: datetime.now(UTC))
    daemon.run_once()
    return daemon


def b64word(text: str) -> str:
    return "=?utf-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def header_lines(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


def assert_clean(data: bytes) -> None:
    """What the SMTP server got: no injected field, no NUL, no bare CR/LF, no line over 998."""
    assert b"\x00" not in data
    assert not re.search(rb"(?<!\r)\n|\r(?!\n)", data), "bare CR or LF"
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, f"line of {len(line)} bytes: {line[:80]!r}"
    names = [ln.split(b":", 1)[0].lower() for ln in header_lines(data) if ln and ln[:1] not in (b" ", b"\t")]
    assert b"bcc" not in names and b"x-injected" not in names, names
    assert names.count(b"subject") == 1 and names.count(b"from") == 1 and names.count(b"to") <= 1


HOSTILE_SUBJECT = "Faktura\r\nBcc: victim@evil.example\r\nX-Injected: 1\x00 koniec"
HOSTILE_NAME = "Jan\r\nBcc: victim2@evil.example\nX-Injected: yes"


def test_crlf_nul_and_long_values_never_reach_outgoing_headers(env: dict[str, Any]) -> None:
    sink = env["sink"]
    raw = make_mail(sender="x@acme.pl", subject="placeholder", msgid="<inj1@acme.pl>")
    raw = raw.replace(b"Subject: placeholder", b"Subject: " + b64word(HOSTILE_SUBJECT).encode())
    raw = raw.replace(b"From: x@acme.pl", b"From: " + b64word(HOSTILE_NAME).encode() + b" <jan@acme.pl>")
    env["box"].add(raw)
    long_subject = "Z" * 3000 + " " + "ż" * 1500
    long_id = "<" + "i" * 900 + "@acme.pl>"
    env["box"].add(make_mail(sender=f'"{"N" * 1200}" <ola@acme.pl>', subject=long_subject, msgid=long_id))
    daemon = run(env)
    acks = sink.wait_for(2)
    for ack in acks:
        assert_clean(ack.data)
        assert len(ack.rcpt_tos) == 1 and ack.rcpt_tos[0] in ("jan@acme.pl", "ola@acme.pl")
    by_rcpt = {a.rcpt_tos[0]: a for a in acks}
    subject = str(by_rcpt["jan@acme.pl"].parsed["Subject"])
    assert "Bcc: victim@evil.example" in subject, "the text is kept, on the one Subject line"
    assert "\n" not in subject and "\r" not in subject
    with daemon.sessions() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.requester == "jan@acme.pl")).one()
        assert "\n" not in ticket.subject and "\x00" not in ticket.subject
        assert "\n" not in ticket.requester_name and "\r" not in ticket.requester_name
    # The consultant's answer is relayed under the ticket's (hostile) subject, and a bounce
    # notice quotes it too: the same rules hold for every outgoing mail.
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Re: [SUP-1] x", msgid="<inj-k@firma.pl>",
                             body="Odpowiedź.\n"))
    run(env)
    relay = sink.wait_for(3)[2]
    assert relay.rcpt_tos == ["jan@acme.pl"]
    assert_clean(relay.data)


def test_attachment_names_are_never_paths(env: dict[str, Any]) -> None:
    raw = (EML / "hostile-filename.eml").read_bytes().replace(b"jan@firma.pl", b"jan@acme.pl")
    env["box"].add(raw)
    extra = make_mail(msgid="<paths@acme.pl>", sender="ola@acme.pl")
    extra = extra.replace(b"Content-Type: text/plain", b'Content-Type: multipart/mixed; boundary="Q"', 1)
    head, _, _ = extra.partition(b"\n\n")
    extra = head + (b'\n\n--Q\nContent-Type: text/plain\n\nhi\n'
                    b'--Q\nContent-Type: application/octet-stream\n'
                    b'Content-Disposition: attachment; filename="../../../../tmp/maild-pwned"\n\nowned\n'
                    b'--Q\nContent-Type: application/octet-stream\n'
                    b'Content-Disposition: attachment; filename="/etc/passwd"\n\nroot::0:0\n'
                    b'--Q\nContent-Type: application/octet-stream\n'
                    b'Content-Disposition: attachment; filename="..\\\\..\\\\win.ini"\n\n[x]\n--Q--\n')
    env["box"].add(extra)
    daemon = run(env)
    with daemon.sessions() as session:
        names = [a.filename for a in session.scalars(select(AttachmentRow))]
        shas = [a.sha256 for a in session.scalars(select(AttachmentRow))]
    assert len(names) >= 4
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".") and "\x00" not in name, name
    assert not Path("/tmp/maild-pwned").exists()
    stored = [p for p in (env["tmp"] / "var").rglob("*") if p.is_file()]
    with daemon.sessions() as session:
        for sha in shas:  # read_blob checks the bytes it finds against the sha256
            assert hashlib.sha256(store.read_blob(session, daemon.blobs, sha)).hexdigest() == sha
    for p in stored:
        assert p.resolve().is_relative_to((env["tmp"] / "var").resolve())
        assert "blobs" not in p.parts or re.fullmatch(r"[0-9a-f]{64}|[0-9]{19}-[0-9]+\.pack", p.name), p


def test_template_code_in_mail_is_printed_literally(env: dict[str, Any]) -> None:
    sink = env["sink"]
    env["box"].add(make_mail(sender="{{ 7*7 }} {% raw %} <jan@acme.pl>", subject="{{ 7*7 }} {% raw %} {{ config }}",
                             msgid="<tpl@acme.pl>"))
    run(env)
    [ack] = sink.wait_for(1)
    assert ack.parsed["Subject"] == "[SUP-1] {{ 7*7 }} {% raw %} {{ config }}"
    body = ack.parsed.get_body(preferencelist=("plain",)).get_content()
    # the greeting never pastes the display name; nothing from the mail is evaluated
    assert body.startswith("Dzień dobry,") and "{{" not in body and "config" not in body


def test_template_environment_is_sandboxed_and_escapes_html() -> None:
    renderer = Renderer(ROOT / "templates")
    with pytest.raises(SecurityError):
        renderer.env.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
    with pytest.raises(SecurityError):
        renderer.env.from_string("{{ x.append(1) }}").render(x=[])
    assert renderer.env.autoescape("note.html") is True  # type: ignore[operator]
    assert renderer.env.from_string("{{ v }}").render(v="{{ 7*7 }}") == "{{ 7*7 }}"


def test_log_lines_carry_no_control_characters_from_mail(env: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    evil = "\x1b[2J\x1b[31mFAKE\r\n2026-01-01 ERROR maild: forged line\x07"
    raw = make_mail(sender="x@acme.pl", subject="placeholder", msgid="<log@acme.pl>",
                    headers={"Auto-Submitted": "auto-replied\x1b[31m", "X-Autoreply": "yes\x1b]0;title\x07"})
    raw = raw.replace(b"Subject: placeholder", b"Subject: " + b64word(evil).encode())
    raw = raw.replace(b"From: x@acme.pl", b"From: " + b64word(evil).encode() + b" <jan@acme.pl>")
    env["box"].add(raw)
    env["box"].add(b"From: \x1b[31m<evil@acme.pl>\r\nSubject: \x1b]0;x\x07\r\n\r\n" + b"\x00\x1b" * 50)
    # a bounce whose diagnostic and recipients carry escapes and line breaks
    env["box"].add(
        b"From: MAILER-DAEMON@mx.acme.pl\r\nTo: support@firma.pl\r\nSubject: Undelivered\x1b[0m\r\n"
        b"Message-ID: <dsn-log@mx>\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; a\x1b[31m@acme.pl\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 \x1b[2J gone\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <x\x1b@acme.pl>\r\n--B--\r\n")
    run(env)
    messages = [r.getMessage() for r in caplog.records]
    assert any("log@acme.pl" in m for m in messages)
    for message in messages:
        assert "\x1b" not in message and "\x07" not in message and "\r" not in message, repr(message)
        assert "forged line" not in message or "\n" not in message, repr(message)


def _calls(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.keyword) and node.arg == "shell":
            yield "shell="


def test_nothing_reaches_a_shell() -> None:
    """No module of maild can start a process: no subprocess, os.system/popen/exec*, eval of data."""
    forbidden = {"subprocess", "system", "popen", "execv", "execve", "execvp", "spawnv", "spawnl", "shell=",
                 "pty", "eval", "exec"}
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "maild").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        names = set(_calls(ast.parse(path.read_text(encoding="utf-8"))))
        bad = names & forbidden
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                bad.add(node.func.id)
        if bad:
            found[path.name] = bad
    assert found == {}, found
