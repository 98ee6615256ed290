"""Hostile and odd mail end to end: loops, bounces, poison, limits, spoofing.

Each test drives ``Daemon.run_once`` on a Maildir with a real SMTP sink and the
embedded SQLite, and asserts on what the SMTP server received and what the
database (and the blob directory) holds.
"""
from __future__ import annotations

import io
import json
import mailbox
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import AttachmentRow, Event, Intake, MessageRow, OutboxRow, PackIndex, QuarantineRow, Ticket
from maild.rules.prioritise import TIER_BY_KIND, UNVERIFIED_TIER
from tests.helpers import Clock, maildir_source, consultant_to, make_mail, write_config

UTC = timezone.utc
EML = Path(__file__).parents[1] / "data" / "eml"


def make_env(tmp: Path, sink: Any, extra: str = "") -> dict[str, Any]:
    path = write_config(tmp, source=maildir_source(tmp), smtp_port=sink.port, extra=extra, migrated=True)
    return {"path": path, "box": mailbox.Maildir(tmp / "Maildir", create=True), "sink": sink, "tmp": tmp}


@pytest.fixture
def env(tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    yield make_env(tmp_path, smtp_sink)


def run(env: dict[str, Any], clock: Callable[[], datetime] | None = None) -> Daemon:
    daemon = Daemon(load_config(env["path"]), clock or (lambda: datetime.now(UTC)))
    daemon.run_once()
    return daemon


def count(daemon: Daemon, model: Any, *where: Any) -> int:
    with daemon.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def events(daemon: Daemon, kind: str) -> list[Event]:
    with daemon.sessions() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind)))


def cli(env: dict[str, Any], *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(["--config", str(env["path"]), *args])
    return code, out.getvalue()


def dsn(original_id: str, recipient: str = "jan@acme.pl", status: str = "5.1.1", action: str = "failed",
        msgid: str = "<dsn1@mx.acme.pl>") -> bytes:
    """A standard RFC 3464 report from the customer's MX about one of our mails."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.pl>\r\n"
        "To: support@firma.pl\r\nReturn-Path: <>\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: {msgid}\r\n"
        "Date: Mon, 5 Jan 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        "--BB\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.acme.pl\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "--BB\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Wsparcie <support@firma.pl>\r\nTo: {recipient}\r\nMessage-ID: {original_id}\r\n"
        "Subject: [SUP-1] Problem\r\n--BB--\r\n"
    ).encode()


# ---------------------------------------------------------------------------- 2. loop protection

MDN = (
    "From: Jan <jan@acme.pl>\r\nTo: support@firma.pl\r\nSubject: Read: Problem\r\nMessage-ID: <mdn@acme.pl>\r\n"
    'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary="M"\r\n\r\n'
    "--M\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n"
    "--M\r\nContent-Type: message/disposition-notification\r\n\r\n"
    "Final-Recipient: rfc822; jan@acme.pl\r\nOriginal-Message-ID: <x@firma.pl>\r\n"
    "Disposition: manual-action/MDN-sent-manually; displayed\r\n--M--\r\n"
).encode()

AUTOMATIC: dict[str, bytes] = {
    "auto-submitted": make_mail(msgid="<l1@acme.pl>", headers={"Auto-Submitted": "auto-generated"}),
    "auto-submitted-replied": make_mail(msgid="<l2@acme.pl>", headers={"Auto-Submitted": "auto-replied; owner=x"}),
    "precedence-bulk": make_mail(msgid="<l3@acme.pl>", headers={"Precedence": "bulk"}),
    "precedence-junk": make_mail(msgid="<l4@acme.pl>", headers={"Precedence": "junk"}),
    "precedence-list": make_mail(msgid="<l5@acme.pl>", headers={"Precedence": "list"}),
    "list-id": make_mail(msgid="<l6@acme.pl>", headers={"List-Id": "<erp.lists.acme.pl>"}),
    "list-unsubscribe": make_mail(msgid="<l7@acme.pl>", headers={"List-Unsubscribe": "<mailto:u@acme.pl>"}),
    "x-autoreply": make_mail(msgid="<l8@acme.pl>", headers={"X-Autoreply": "yes"}),
    "x-autorespond": make_mail(msgid="<l9@acme.pl>", headers={"X-Autorespond": "yes"}),
    "x-auto-response-suppress": make_mail(msgid="<l10@acme.pl>", headers={"X-Auto-Response-Suppress": "All"}),
    "return-path-empty": make_mail(msgid="<l11@acme.pl>", headers={"Return-Path": "<>"}),
    "mailer-daemon": make_mail(sender="MAILER-DAEMON@acme.pl", msgid="<l12@acme.pl>"),
    "postmaster": make_mail(sender="Postmaster <postmaster@acme.pl>", msgid="<l13@acme.pl>"),
    "dsn": dsn("<never-ours@elsewhere.example>"),
    "mdn": MDN,
    "own-marker": make_mail(msgid="<l14@acme.pl>", headers={"X-Maild-Origin": "other-instance"}),
    "own-marker-ours": make_mail(msgid="<l15@acme.pl>", headers={"X-Maild-Origin": ""}),
}


@pytest.mark.parametrize("kind", sorted(AUTOMATIC))
def test_no_automatic_mail_to_automatic_mail(env: dict[str, Any], kind: str) -> None:
    env["box"].add(AUTOMATIC[kind])
    daemon = run(env)
    assert env["sink"].messages == [], f"{kind}: an automatic mail went out"
    with daemon.sessions() as session:
        [intake] = session.scalars(select(Intake)).all()
        assert intake.disposition in ("ticket", "discard"), kind
        assert intake.reason
        if intake.disposition == "ticket":
            [suppressed] = session.scalars(select(Event).where(Event.kind == "ack_suppressed")).all()
            assert suppressed.detail["reasons"], kind
        assert session.scalar(select(func.count()).select_from(OutboxRow)) == 0


def test_a_human_mail_is_still_acknowledged(env: dict[str, Any]) -> None:
    """The control for the test above: the same mail without the automatic signal gets its ack."""
    env["box"].add(make_mail(msgid="<human@acme.pl>", headers={"Auto-Submitted": "no"}))
    run(env)
    assert len(env["sink"].wait_for(1)) == 1


def test_per_sender_limit_is_per_hour(env: dict[str, Any]) -> None:
    clock = Clock(datetime.now(UTC))
    for i in range(7):
        env["box"].add(make_mail(subject=f"Sprawa {i}", msgid=f"<rl{i}@acme.pl>"))
    daemon = run(env, clock)
    assert len(env["sink"].received_for("jan@acme.pl")) == 5
    assert len(events(daemon, "ack_suppressed")) == 2
    assert count(daemon, Ticket) == 7
    env["box"].add(make_mail(subject="Sprawa 8", msgid="<rl8@acme.pl>"))
    run(env, clock)
    assert len(env["sink"].received_for("jan@acme.pl")) == 5, "still the same hour"
    clock.now += timedelta(minutes=61)
    env["box"].add(make_mail(subject="Sprawa 9", msgid="<rl9@acme.pl>"))
    run(env, clock)
    assert len(env["sink"].wait_for(6)) == 6, "an hour later acknowledgements resume"


def test_out_of_office_on_waiting_ticket_changes_nothing(env: dict[str, Any]) -> None:
    sink = env["sink"]
    env["box"].add(make_mail(subject="Błąd w JPK", msgid="<w1@acme.pl>"))
    run(env)
    sink.wait_for(1)
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-1] Błąd w JPK",
                             msgid="<w2@firma.pl>", body="Proszę przesłać plik XML.\n"))
    daemon = run(env)
    relay = sink.wait_for(2)[1]
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.status == "waiting"
        updated = ticket.updated_at
    for raw in (EML / "ooo-pl-exchange.eml").read_bytes(), make_mail(
            subject="Automatic reply: [SUP-1] Błąd w JPK", msgid="<w3@acme.pl>", body="I am out of the office.\n",
            headers={"Auto-Submitted": "auto-replied", "In-Reply-To": relay.parsed["Message-ID"]}):
        if b"SUP-1" not in raw:  # the Exchange sample answers another thread: aim it at ours
            raw = raw.replace(b"Subject: ", b"Subject: [SUP-1] ", 1)
            raw = raw.replace(b"From: Anna Nowak <anna@firma.pl>", b"From: Jan <jan@acme.pl>")
        env["box"].add(raw)
    daemon = run(env)
    assert len(sink.messages) == 2, "no acknowledgement or anything else to an out-of-office reply"
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.status == "waiting", "an out-of-office reply must not reopen"
        assert ticket.resolved_at is None
        rows = session.scalars(select(MessageRow).where(MessageRow.ticket_id == 1, MessageRow.direction == "in",
                                                        MessageRow.role == "customer")).all()
        kinds = [r.kind for r in rows]
        assert kinds == ["human", "autoreply", "autoreply"], kinds
        assert count(daemon, Ticket) == 1
        statuses = [e for e in session.scalars(select(Event).where(Event.kind == "status"))]
        assert statuses == [], "no status event from an automatic reply"
    assert len(events(daemon, "automatic_reply")) == 2
    del updated


def test_old_mail_gets_ticket_without_acknowledgement(env: dict[str, Any]) -> None:
    """A mailbox with history connected for the first time: arrival from the Maildir file name."""
    old = int(time.time()) - 4 * 86400
    recent = int(time.time()) - 2 * 86400
    new_dir = env["tmp"] / "Maildir" / "new"
    (new_dir / f"{old}.M1P1.oldhost").write_bytes(make_mail(subject="Stara sprawa", msgid="<old@acme.pl>"))
    (new_dir / f"{recent}.M2P1.oldhost").write_bytes(
        make_mail(sender="ola@acme.pl", subject="Nowsza sprawa", msgid="<recent@acme.pl>"))
    daemon = run(env)
    env["sink"].wait_for(1)
    time.sleep(0.2)
    to_customers = [m.rcpt_tos for m in env["sink"].messages if not m.rcpt_tos[0].endswith("@firma.pl")]
    assert to_customers == [["ola@acme.pl"]], "only the recent mail is acknowledged"
    with daemon.sessions() as session:
        tickets = {t.requester: t for t in session.scalars(select(Ticket))}
        assert set(tickets) == {"jan@acme.pl", "ola@acme.pl"}
        assert abs(tickets["jan@acme.pl"].created_at - datetime.fromtimestamp(old, UTC)) < timedelta(seconds=1)
        [suppressed] = session.scalars(select(Event).where(Event.kind == "ack_suppressed")).all()
        assert suppressed.ticket_id == tickets["jan@acme.pl"].id
        assert any("too late to acknowledge" in r for r in suppressed.detail["reasons"])


# ---------------------------------------------------------------------------- 3. bounces


def test_bounce_of_ack_and_relay_recorded_consultant_told_once(env: dict[str, Any]) -> None:
    sink = env["sink"]
    env["box"].add(make_mail(subject="Problem", msgid="<b1@acme.pl>"))
    run(env)
    ack_id = sink.wait_for(1)[0].parsed["Message-ID"]
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Re: [SUP-1] Problem", msgid="<b2@firma.pl>",
                             body="#assign anna@firma.pl\n\nProszę sprawdzić.\n"))
    run(env)
    relay_id = sink.wait_for(2)[1].parsed["Message-ID"]
    sink.clear()
    env["box"].add(dsn(ack_id, msgid="<dsn-a@mx.acme.pl>"))
    env["box"].add(dsn(ack_id, msgid="<dsn-b@mx.acme.pl>"))  # the MX reports the same failure twice
    daemon = run(env)
    [notice] = sink.wait_for(1)
    assert notice.rcpt_tos == ["anna@firma.pl"], "the assigned consultant only"
    assert "SUP-1" in notice.parsed["Subject"]
    assert notice.parsed["Auto-Submitted"] == "auto-generated"
    body = notice.parsed.get_body(preferencelist=("plain",)).get_content()
    assert "jan@acme.pl" in body and "5.1.1" in body
    env["box"].add(dsn(relay_id, status="4.2.2", action="delayed", msgid="<dsn-c@mx.acme.pl>"))
    daemon = run(env)
    time.sleep(0.2)
    assert len(sink.messages) == 1 or sink.messages[1].rcpt_tos == ["anna@firma.pl"]
    failures = events(daemon, "delivery_failed")
    assert len(failures) == 3
    with daemon.sessions() as session:
        ack_row = session.scalars(select(OutboxRow).where(OutboxRow.kind == "ack")).one()
        relay_row = session.scalars(select(OutboxRow).where(OutboxRow.kind == "relay")).one()
        assert {f.detail["outbox_id"] for f in failures} == {ack_row.id, relay_row.id}
        intakes = session.scalars(select(Intake).where(Intake.disposition == "bounce")).all()
        assert len(intakes) == 3 and all(i.ticket_id == 1 for i in intakes)
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1, "a bounce never opens a ticket"
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.status == "waiting", "a bounce does not change the ticket state"
    code, text = cli(env, "tickets", "show", "SUP-1")
    assert code == 0
    assert "! delivery failure (PERMANENT) to jan@acme.pl: 5.1.1" in text
    assert "delivery failure (temporary) to jan@acme.pl: 4.2.2" in text
    code, out = cli(env, "tickets", "show", "SUP-1", "--json")
    shown = json.loads(out)
    permanent = [f for f in shown["delivery_failures"] if f["permanent"]]
    assert permanent and permanent[0]["recipients"] == ["jan@acme.pl"] and permanent[0]["status"] == "5.1.1"
    assert permanent[0]["at"].endswith("Z")


def test_bounce_with_no_assignee_goes_to_consultants_not_managers(env: dict[str, Any]) -> None:
    sink = env["sink"]
    env["box"].add(make_mail(subject="Problem", msgid="<b5@acme.pl>"))
    run(env)
    ack_id = sink.wait_for(1)[0].parsed["Message-ID"]
    env["box"].add(dsn(ack_id))
    run(env)
    notice = sink.wait_for(2)[1]
    assert notice.rcpt_tos == ["anna@firma.pl"]


BOB = '\n[[consultants]]\nemail = "bob@firma.pl"\nname = "Bob Kowal"\nrole = "consultant"\nlanguage = "en"\n'


def test_bounce_notice_in_each_consultants_language_explains_the_code(tmp_path: Path, smtp_sink: Any) -> None:
    """The notice was Polish for everyone; the relay's text stays as sent, labelled, under the code's meaning.

    The ticket stays unassigned, so every consultant is told, whatever day the test runs: on a
    working day the present consultant would be assigned and told alone."""
    env = make_env(tmp_path, smtp_sink, extra=BOB + '\n[assignment]\nmode = "none"\n')
    env["box"].add(make_mail(subject="Problem", msgid="<b6@acme.pl>"))
    run(env)
    # on a working day the consultants are told of the new ticket too: the mails are told apart by kind
    [ack_id] = [m.parsed["Message-ID"] for m in smtp_sink.wait_for(1) if ".ack." in m.parsed["Message-ID"]]
    env["box"].add(dsn(ack_id))
    run(env)
    notices = {m.rcpt_tos[0]: m.parsed.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
               for m in smtp_sink.messages if ".bounce_notice." in m.parsed["Message-ID"]}
    assert set(notices) == {"anna@firma.pl", "bob@firma.pl"}
    assert "Kod:      5.1.1 – błąd trwały: nie ma takiej skrzynki (adres odbiorcy nie istnieje)" in notices["anna@firma.pl"]
    assert "Odpowiedź serwera pocztowego (w oryginalnym brzmieniu):\n  550 5.1.1 user unknown\n" in notices["anna@firma.pl"]
    assert "Code:       5.1.1 – permanent failure: no such mailbox" in notices["bob@firma.pl"]
    assert "The mail server's reply, as it was sent:\n  550 5.1.1 user unknown\n" in notices["bob@firma.pl"]


# ---------------------------------------------------------------------------- 4. poison


def test_mail_that_crashes_the_parsers_is_quarantined_and_others_go_on(
        env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Our parser failing falls back to mail-parser (a ticket); both failing is a quarantine record."""
    import maild.intake.message as message

    real, real_second = message._parse, message._second_opinion

    def explode(raw: bytes, limits: Any, size: int | None = None) -> Any:
        if b"CRASH-" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return real(raw, limits, size)

    def explode_too(raw: bytes, limits: Any, why: str) -> Any:
        if b"CRASH-BOTH" in raw:
            raise ValueError("mail-parser gave up")
        return real_second(raw, limits, why)

    monkeypatch.setattr(message, "_parse", explode)
    monkeypatch.setattr(message, "_second_opinion", explode_too)
    env["box"].add(make_mail(subject="CRASH-OURS", msgid="<crash1@acme.pl>"))
    env["box"].add(make_mail(subject="CRASH-BOTH", msgid="<crash2@acme.pl>"))
    env["box"].add(make_mail(subject="fine", msgid="<fine@acme.pl>", sender="ola@acme.pl"))
    daemon = run(env)
    with daemon.sessions() as session:
        subjects = sorted(t.subject for t in session.scalars(select(Ticket)))
        assert subjects == ["CRASH-OURS", "fine"]
        fallback = session.scalars(select(MessageRow).where(MessageRow.message_id == "crash1@acme.pl")).one()
        assert any("mail-parser" in n for n in fallback.notes)
        [q] = session.scalars(select(QuarantineRow)).all()
        assert "RecursionError" in q.reason and "mail-parser" in q.reason
    assert len(mailbox.Maildir(env["tmp"] / "Maildir").get_folder("Quarantine")) == 1
    assert not list(env["box"].keys())


def test_memory_error_in_one_message_retried_then_quarantined(
        env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import maild.intake.parsing as parsing

    real = parsing.parse_message

    def explode(raw: bytes, limits: Any, size: int | None = None) -> Any:
        if b"HUGE" in raw:
            raise MemoryError()
        return real(raw, limits, size)

    monkeypatch.setattr(parsing, "parse_message", explode)
    env["box"].add(make_mail(subject="HUGE", msgid="<huge@acme.pl>"))
    for i in range(3):
        env["box"].add(make_mail(subject=f"fine {i}", msgid=f"<f{i}@acme.pl>", sender="ola@acme.pl"))
        daemon = run(env)
        assert count(daemon, Ticket) == i + 1, "the others are not delayed"
    with daemon.sessions() as session:
        [q] = session.scalars(select(QuarantineRow)).all()
        assert q.attempts == 3 and "MemoryError" in q.reason


# ---------------------------------------------------------------------------- 5. limits


def _blobs(daemon: Daemon) -> set[str]:
    """sha256 of every blob stored, packed or loose."""
    with daemon.sessions() as session:
        packed = set(session.scalars(select(PackIndex.sha256)))
    return packed | {p.name for p in (daemon.config.storage_path / "blobs").rglob("*")
                     if p.is_file() and p.suffix != ".pack"}


def test_oversize_message_ticket_with_note_parts_not_stored(tmp_path: Path, smtp_sink: Any) -> None:
    env = make_env(tmp_path, smtp_sink, extra="\n[limits]\nmax_message_mb = 1\nmax_attachments = 2\n")
    big = EmailMessage()
    big["From"], big["To"], big["Subject"], big["Message-ID"] = "jan@acme.pl", "support@firma.pl", "Duży", "<big@acme.pl>"
    big.set_content("Załączam skan.")
    payload = bytes(range(256)) * 6000  # 1.5 MB
    big.add_attachment(payload, maintype="application", subtype="pdf", filename="skan.pdf")
    many = EmailMessage()
    many["From"], many["To"], many["Subject"], many["Message-ID"] = "ola@acme.pl", "support@firma.pl", "Dużo", "<many@acme.pl>"
    many.set_content("Pięć plików.")
    small = [f"plik {i}".encode() * 10 for i in range(5)]
    for i, data in enumerate(small):
        many.add_attachment(data, maintype="application", subtype="octet-stream", filename=f"p{i}.bin")
    env["box"].add(big.as_bytes())
    env["box"].add(many.as_bytes())
    daemon = run(env)
    import hashlib
    with daemon.sessions() as session:
        rows = {r.message_id: r for r in session.scalars(select(MessageRow).where(MessageRow.direction == "in"))}
        assert set(rows) == {"big@acme.pl", "many@acme.pl"}, "both still become tickets"
        assert count(daemon, Ticket) == 2
        assert any("max_message_bytes" in n for n in rows["big@acme.pl"].notes)
        assert any("max_attachments" in n for n in rows["many@acme.pl"].notes)
        atts = session.scalars(select(AttachmentRow)).all()
        by_msg: dict[int, list[str]] = {}
        for a in atts:
            by_msg.setdefault(a.message_row_id, []).append(a.filename)
        assert rows["big@acme.pl"].id not in by_msg
        assert sorted(by_msg[rows["many@acme.pl"].id]) == ["p0.bin", "p1.bin"]
    blobs = _blobs(daemon)
    assert hashlib.sha256(payload).hexdigest() not in blobs
    assert hashlib.sha256(small[2]).hexdigest() not in blobs
    assert hashlib.sha256(small[0]).hexdigest() in blobs
    assert len(smtp_sink.wait_for(2)) == 2


def _deep(depth: int) -> bytes:
    head = "From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: deep\r\nMessage-ID: <deep@acme.pl>\r\nMIME-Version: 1.0\r\n"
    parts = [head]
    for i in range(depth):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n')
    parts.append("Content-Type: text/plain\r\n\r\nsam środek\r\n")
    for i in reversed(range(depth)):
        parts.append(f"--b{i}--\r\n")
    return "".join(parts).encode()


def _many_parts(n: int) -> bytes:
    out = ["From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: parts\r\nMessage-ID: <parts@acme.pl>\r\n"
           'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="P"\r\n\r\n']
    for i in range(n):
        out.append(f'--P\r\nContent-Type: application/octet-stream; name="f{i}.bin"\r\n\r\nx{i}\r\n')
    out.append("--P--\r\n")
    return "".join(out).encode()


def _one_line_body(mb: int) -> bytes:
    return (b"From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: long line\r\nMessage-ID: <line@acme.pl>\r\n\r\n"
            + b"A" * (mb * 1024 * 1024))


def _huge_headers(mb: int) -> bytes:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 990) for i in range(mb * 1024))
    return (b"From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: headers\r\nMessage-ID: <hdr@acme.pl>\r\n"
            + filler + b"X-Long: " + b"z" * (mb * 1024 * 1024) + b"\r\n\r\nbody\r\n")


def _html_links(n: int) -> bytes:
    links = "".join(f'<a href="http://x.example/{i}"><b><i>link {i}</i></b></a><br>' for i in range(n))
    return (("From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: html\r\nMessage-ID: <html@acme.pl>\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>" + links
             + "<div>" * 20000 + "</body></html>\r\n").encode())


def _html_only(name: str, html: str) -> bytes:
    return (f"From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: {name}\r\nMessage-ID: <{name}@acme.pl>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()


PATHOLOGICAL: dict[str, Callable[[], bytes]] = {
    # issue 12: each stalled the daemon for good (quadratic html_to_text)
    "html-nested-unclosed-links-1mb": lambda: _html_only("links", '<a href="x">' * 64000 + "y" + "</a>" * 64000),
    "html-40000-heads": lambda: _html_only("heads", "<head>" * 40000),
    "deep-nesting": lambda: _deep(3000),
    "single-line-50mb": lambda: _one_line_body(50),
    "thousands-of-parts": lambda: _many_parts(5000),
    "megabyte-headers": lambda: _huge_headers(2),
    "html-tens-of-thousands-of-links": lambda: _html_links(40000),
}


_MEASURE = """
import json, resource, sys, time
from maild.config import load_config
from maild.ops.daemon import Daemon

def cpu_seconds():
    # this process and its reaped children (the parse worker, waited for when the cycle closes it)
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as fh:  # the peak RSS inherited from the forking parent goes
    fh.write("5")
before = hwm_kb()
started, cpu = time.monotonic(), cpu_seconds()
Daemon(load_config(sys.argv[1])).run_once()
print(json.dumps({"seconds": time.monotonic() - started, "cpu_seconds": cpu_seconds() - cpu,
                  "rss_before_kb": before, "rss_peak_kb": hwm_kb()}))
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(PATHOLOGICAL))
def test_pathological_mail_bounded_through_the_pipeline(env: dict[str, Any], kind: str) -> None:
    """One full cycle in a fresh process, so its peak RSS is this mail's cost and nothing else's."""
    raw = PATHOLOGICAL[kind]()
    size = len(raw)
    env["box"].add(raw)
    del raw
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(env["path"])], capture_output=True, text=True,
                          timeout=80, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    grown = (measured["rss_peak_kb"] - measured["rss_before_kb"]) * 1024
    print(f"\n{kind}: {size / 1e6:.1f} MB in {measured['seconds']:.2f} s ({measured['cpu_seconds']:.2f} s CPU), "
          f"peak RSS {measured['rss_peak_kb'] / 1024:.0f} MB (+{grown / 1e6:.0f} MB during the cycle)")
    # CPU seconds of the cycle and its parse worker, not wall time: other processes on the
    # machine slow the clock, not the work; the quadratic cases of issue 12 needed minutes.
    assert measured["cpu_seconds"] < 20, f"{kind} took {measured['cpu_seconds']:.1f} s of CPU"
    assert grown < 8 * size + 64_000_000, f"{kind}: grew {grown / 1e6:.0f} MB for {size / 1e6:.1f} MB"
    daemon = Daemon(load_config(env["path"]))
    with daemon.sessions() as session:
        [intake] = session.scalars(select(Intake)).all()
        assert intake.disposition == "ticket", (kind, intake.disposition, intake.reason)
        assert session.scalar(select(func.count()).select_from(AttachmentRow)) <= 100
    assert len(env["sink"].wait_for(1)) == 1


# ---------------------------------------------------------------------------- 6. spoofing

SECURITY = '\n[security]\ntrusted_authserv_id = "mx.firma.pl"\n'


@pytest.fixture
def secure(tmp_path: Path, smtp_sink: Any) -> dict[str, Any]:
    return make_env(tmp_path, smtp_sink, extra=SECURITY)


def _ticket(daemon: Daemon, msgid: str) -> Ticket:
    with daemon.sessions() as session:
        intake = session.scalars(select(Intake).where(Intake.dedupe_key == msgid)).one()
        ticket = session.get(Ticket, intake.ticket_id)
        assert ticket is not None
        session.expunge(ticket)
        return ticket


def test_spoofed_sla_sender_unverified_until_verify(secure: dict[str, Any]) -> None:
    sink = secure["sink"]
    secure["box"].add(make_mail(subject="Pilne: awaria", msgid="<spoof@acme.pl>", headers={
        "Authentication-Results": "mx.evil.example; dkim=pass header.d=acme.pl; spf=pass smtp.mailfrom=acme.pl"}))
    daemon = run(secure)
    ticket = _ticket(daemon, "spoof@acme.pl")
    assert (ticket.verified, ticket.tier, ticket.contract_kind) == (False, UNVERIFIED_TIER, "sla")
    assert ticket.reaction_due is None, "an unverified sender buys no SLA clock"
    assert any("not authenticated" in r and "mx.firma.pl" in r for r in ticket.reasons), ticket.reasons
    [ack] = sink.wait_for(1)
    body = ack.parsed.get_body(preferencelist=("plain",)).get_content()
    assert "zareagujemy na zgłoszenie do" not in body and "Nie mogliśmy potwierdzić" in body
    # our own server vouches for the consultant's mail (with trusted_authserv_id set, that is the proof)
    secure["box"].add(make_mail(sender="anna@firma.pl", subject="Re: [SUP-1] Pilne: awaria", msgid="<v1@firma.pl>",
                                body="#verify\n#internal\nZnam klienta, potwierdzone telefonicznie.\n",
                                headers={"Authentication-Results": "mx.firma.pl; dkim=pass header.d=firma.pl"}))
    daemon = run(secure)
    ticket = _ticket(daemon, "spoof@acme.pl")
    assert (ticket.verified, ticket.tier) == (True, TIER_BY_KIND["sla"])
    assert ticket.reaction_due is not None and ticket.reaction_due - ticket.created_at == timedelta(hours=24)
    [verified] = events(daemon, "verified")
    assert verified.actor == "anna@firma.pl"


@pytest.mark.parametrize("results, envelope", [
    ("mx.firma.pl; dkim=pass header.d=acme.pl header.s=sel", None),
    ("mx.firma.pl (postfix); dkim=pass (2048-bit key) header.i=@mail.acme.pl", None),
    ("mx.firma.pl; spf=pass smtp.mailfrom=jan@acme.pl", "<jan@acme.pl>"),
])
def test_aligned_pass_from_trusted_server_verifies(secure: dict[str, Any], results: str, envelope: str | None) -> None:
    headers = {"Authentication-Results": results}
    if envelope:
        headers["Return-Path"] = envelope
    secure["box"].add(make_mail(subject="Pilne: awaria", msgid="<ok@acme.pl>", headers=headers))
    daemon = run(secure)
    ticket = _ticket(daemon, "ok@acme.pl")
    assert (ticket.verified, ticket.tier) == (True, TIER_BY_KIND["sla"])
    assert ticket.reaction_due is not None


@pytest.mark.parametrize("results", [
    "mx.firma.pl; dkim=pass header.d=evil.example",  # signed, but not by the From domain
    "mx.firma.pl; dkim=fail header.d=acme.pl; spf=softfail smtp.mailfrom=acme.pl",
    "mx.firma.pl; spf=pass smtp.mailfrom=bounce.evil.example",
])
def test_unaligned_or_failed_results_stay_unverified(secure: dict[str, Any], results: str) -> None:
    secure["box"].add(make_mail(subject="Awaria", msgid="<bad@acme.pl>", headers={"Authentication-Results": results}))
    daemon = run(secure)
    ticket = _ticket(daemon, "bad@acme.pl")
    assert (ticket.verified, ticket.tier) == (False, UNVERIFIED_TIER)
    assert ticket.reaction_due is None


def test_forged_results_below_ours_do_not_count(secure: dict[str, Any]) -> None:
    """Our MTA prepends its header; a sender-written one with our id lies below it."""
    msg = make_mail(subject="Awaria", msgid="<forged@acme.pl>")
    msg = (b"Authentication-Results: mx.firma.pl; dkim=none; spf=none\r\n"
           + msg.replace(b"Subject:", b"Authentication-Results: mx.firma.pl; dkim=pass header.d=acme.pl\r\nSubject:", 1))
    secure["box"].add(msg)
    daemon = run(secure)
    assert _ticket(daemon, "forged@acme.pl").verified is False


def test_without_setting_from_decides_and_check_warns(env: dict[str, Any], tmp_path: Path, smtp_sink: Any) -> None:
    env["box"].add(make_mail(subject="Awaria", msgid="<plain@acme.pl>"))
    daemon = run(env)
    ticket = _ticket(daemon, "plain@acme.pl")
    assert (ticket.verified, ticket.tier) == (True, TIER_BY_KIND["sla"])
    _, text = cli(env, "check")
    assert "warn security: [security] trusted_authserv_id is not set" in text
    (tmp_path / "secure").mkdir()
    _, text = cli(make_env(tmp_path / "secure", smtp_sink, extra=SECURITY), "check")
    assert "trusted_authserv_id is not set" not in text


# ---------------------------------------------------------------------------- the folders, on a real IMAP server


def test_hostile_mix_on_imap_poison_in_quarantine_folder_rest_processed(
        tmp_path: Path, imap_account: Any, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot: the poison mail ends in the Quarantine folder after 3 cycles, the rest in Processed at once."""
    import maild.intake.parsing as parsing
    from tests.e2e.test_operations import imap_table

    real = parsing.parse_message

    def explode(raw: bytes, limits: Any, size: int | None = None) -> Any:
        if b"POISON" in raw:
            raise MemoryError()
        return real(raw, limits, size)

    monkeypatch.setattr(parsing, "parse_message", explode)
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    poison = make_mail(subject="POISON", msgid="<poison@acme.pl>")
    others = [make_mail(subject="Zwykła sprawa", msgid="<ok@acme.pl>"), dsn("<not-ours@elsewhere>"),
              AUTOMATIC["x-autoreply"], (EML / "not-a-message.eml").read_bytes()]
    imap_account.append_many([poison, *others])
    for cycle in range(3):
        daemon = Daemon(load_config(config))
        daemon.run_once()
        assert len(imap_account.uids("Processed")) == len(others), "the others are not delayed"
        assert len(imap_account.uids("INBOX")) == (1 if cycle < 2 else 0)
    assert [m.replace(b"\r\n", b"\n") for m in imap_account.messages("Quarantine")] == [poison.replace(b"\r\n", b"\n")]
    with daemon.sessions() as session:
        dispositions = sorted(i.disposition for i in session.scalars(select(Intake)))
        assert dispositions == ["discard", "ticket", "ticket", "ticket"], dispositions
        [q] = session.scalars(select(QuarantineRow)).all()
        assert q.attempts == 3 and "MemoryError" in q.reason and q.source_key.startswith("imap:")
    assert len(smtp_sink.wait_for(1)) == 1, "one acknowledgement: the ordinary mail only"
