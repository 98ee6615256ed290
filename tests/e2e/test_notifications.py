"""Consultants' notifications and the authority rule, end to end: a Maildir (or a private
Dovecot), the SMTP sink, SQLite and PostgreSQL. Asserted on what the SMTP server saw."""
from __future__ import annotations

import json
import mailbox
from collections.abc import Iterator
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Event, LedgerRow, OutboxRow, Ticket
from tests.helpers import maildir_source, make_mail, write_config

UTC = timezone.utc
BOB = '\n[[consultants]]\nemail = "bob@firma.pl"\nname = "Bob Kowal"\nrole = "consultant"\nlanguage = "en"\n'
# every day a working day: the consultants are present whatever day the test runs on
EVERY_DAY = ('\n[calendar]\nworking_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
             'holidays_country = ""\n'
             # no automatic assignment: a new ticket goes to every present consultant
             '\n[assignment]\nmode = "none"\n')
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\r\n"


# no morning digest: these tests count the notifications, and every day is a working day here
# (with the default 08:00 the managers' digest joined them whenever a test ran after 08:00 Warsaw time)
NO_DIGEST = 'digest_at = ""'


def _env(tmp: Path, sink: Any, url: str = "", notifications: str = NO_DIGEST, extra: str = "") -> dict[str, Any]:
    path = write_config(tmp, source=maildir_source(tmp), smtp_port=sink.port, database_url=url,
                        notifications=notifications, extra=BOB + EVERY_DAY + extra)
    return {"path": path, "box": mailbox.Maildir(tmp / "Maildir", create=True), "sink": sink}


class _Imap:
    """The test's mailbox on the private Dovecot: ``add`` appends to the INBOX."""

    def __init__(self, account: Any) -> None:
        self.account = account

    def add(self, raw: bytes) -> None:
        self.account.append(raw)


@pytest.fixture(params=["maildir", "imap"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    """The consultants' loop over a Maildir and over a private Dovecot."""
    if request.param == "maildir":
        yield _env(tmp_path, smtp_sink)
        return
    from tests.e2e.test_exactly_once import imap_table

    account = request.getfixturevalue("imap_account")
    path = write_config(tmp_path, source=imap_table(account), smtp_port=smtp_sink.port,
                        notifications=NO_DIGEST, extra=BOB + EVERY_DAY)
    yield {"path": path, "box": _Imap(account), "sink": smtp_sink}


def run(env: dict[str, Any]) -> Daemon:
    daemon = Daemon(load_config(env["path"]), lambda: datetime.now(UTC))
    daemon.run_once()
    return daemon


def text_of(received: Any) -> str:
    body = received.parsed.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""


def with_file(raw: bytes, name: str, data: bytes, maintype: str = "application", subtype: str = "pdf") -> bytes:
    from email import message_from_bytes, policy

    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def thunderbird_reply(note: Any, sender: str, text: str) -> bytes:
    """Reply as Thunderbird writes it: text on top, attribution line, the whole notification quoted with '> '."""
    quoted = "\n".join(f"> {line}" if line else ">" for line in text_of(note).splitlines())
    return make_mail(sender=sender, subject=f"Re: {note.parsed['Subject']}", msgid=f"<tb-{id(note)}@firma.pl>",
                     to=str(note.parsed["Reply-To"]),
                     body=f"{text}\n\nW dniu 07.12.2026 o 09:15, {note.parsed['From']} pisze:\n{quoted}\n",
                     headers={"In-Reply-To": note.parsed["Message-ID"],
                              "References": f"{note.parsed['References'] or ''} {note.parsed['Message-ID']}".strip()})


def outlook_reply(note: Any, sender: str, text: str) -> bytes:
    """Reply as Outlook writes it: no '>' quoting, the notification below an 'Original Message' header block."""
    return make_mail(sender=sender, subject=f"RE: {note.parsed['Subject']}", msgid=f"<ol-{id(note)}@firma.pl>",
                     to="support@firma.pl",
                     body=(f"{text}\n\n-----Original Message-----\nFrom: {note.parsed['From']}\n"
                           f"Sent: Monday, December 7, 2026 9:15 AM\nTo: {sender}\n"
                           f"Subject: {note.parsed['Subject']}\n\n{text_of(note)}\n"),
                     headers={"In-Reply-To": note.parsed["Message-ID"], "References": note.parsed["Message-ID"],
                              "Thread-Index": "AQHZ1234567890abcdef=="})


def test_the_consultants_loop_by_mail(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sink, box = env["sink"], env["box"]
    box.add(with_file(make_mail(subject="Awaria wydruku", msgid="<n1@acme.pl>",
                                body="Wydruk faktur nie działa.\nW załączniku zrzut.\n"), "zrzut.pdf", PDF))
    run(env)
    mails = sink.wait_for(3)
    assert sorted(r for m in mails for r in m.rcpt_tos) == ["anna@firma.pl", "bob@firma.pl", "jan@acme.pl"]
    notes = {m.rcpt_tos[0]: m for m in mails if m.rcpt_tos[0] != "jan@acme.pl"}
    for who, note in notes.items():
        p = note.parsed
        assert p["From"] == 'Acme via Wsparcie <support@firma.pl>' and p["Reply-To"] == "support@firma.pl"
        assert p["Subject"] == "[SUP-1] Awaria wydruku" and p["Auto-Submitted"] == "auto-generated"
        assert p["X-Maild-Origin"] and p["References"] == "<n1@acme.pl>"
        [att] = list(p.iter_attachments())
        assert att.get_filename() == "zrzut.pdf" and att.get_payload(decode=True) == PDF, "byte for byte"
        body = text_of(note)
        assert "Wydruk faktur nie działa." in body and "acme-sla" in body and "#take" in body
        assert "support+" in body, "the consultant's own address for on-behalf tickets"
    assert "New ticket SUP-1" in text_of(notes["bob@firma.pl"]), "Bob's language is English"
    assert "Nowe zgłoszenie SUP-1" in text_of(notes["anna@firma.pl"])
    # the commands' help in each one's language: the command names as they are written, the rest translated
    assert "#assign <e-mail lub imię>" in text_of(notes["anna@firma.pl"])
    assert "#customer <id lub e-mail> (w pierwszej linii nowej wiadomości)" in text_of(notes["anna@firma.pl"])
    assert "e-mail or name" not in text_of(notes["anna@firma.pl"])
    assert "#assign <e-mail or name>" in text_of(notes["bob@firma.pl"])
    # the contract's balance is named as one, not "left" beside the deadline (read as the time to react)
    assert "\r\n  Saldo:      10 godz." in text_of(notes["anna@firma.pl"]), text_of(notes["anna@firma.pl"])
    assert "\r\n  Balance:   10 h" in text_of(notes["bob@firma.pl"]), text_of(notes["bob@firma.pl"])
    # why the ticket is P1, in each one's language (stored as English, worded when the mail is made)
    assert "Kolejka:    SLA P1 - w wiadomości pilne słowa: „Awaria”, „nie działa”\r\n" in text_of(
        notes["anna@firma.pl"]), text_of(notes["anna@firma.pl"])
    assert "Queue:     SLA P1 - urgent words: “Awaria”, “nie działa”\r\n" in text_of(notes["bob@firma.pl"])
    # the contract's kind and the tier in words, in both languages (English read the keyword "(sla)")
    assert "Umowa:      acme-sla (umowa serwisowa)\r\n" in text_of(notes["anna@firma.pl"])
    assert "Contract:  acme-sla (service contract)\r\n" in text_of(notes["bob@firma.pl"])
    assert "(czas polski)\r\n" in text_of(notes["anna@firma.pl"]) and "Europe/Warsaw" not in text_of(notes["anna@firma.pl"])
    assert "(Polish time)\r\n" in text_of(notes["bob@firma.pl"])

    # Anna presses Reply in Thunderbird: #take, her answer, the notification quoted below
    box.add(thunderbird_reply(notes["anna@firma.pl"], "Anna Nowak <anna@firma.pl>",
                              "#take\n#time 30m\n#priority P2 obejście działa\n\nDzień dobry,\n"
                              "proszę zrestartować usługę wydruku."))
    daemon = run(env)
    [relay] = [m for m in sink.wait_for(4)[3:]]
    assert relay.rcpt_tos == ["jan@acme.pl"]
    relayed = text_of(relay)
    assert "zrestartować usługę" in relayed
    for leaked in ("#take", "Nowe zgłoszenie", "pisze:", "acme-sla", "support+", "Wydruk faktur nie działa"):
        assert leaked not in relayed, f"{leaked!r} reached the customer"
    assert "maild.t1.notify" not in str(relay.parsed["References"]), "consultants' mail ids stay private"
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.assigned_to == "anna@firma.pl"
        assert session.scalar(select(func.sum(LedgerRow.minutes))) == 30

    # the customer's follow-up reaches only the assignee
    box.add(make_mail(subject="Re: [SUP-1] Awaria wydruku", msgid="<n2@acme.pl>", body="Nadal nie działa.\n"))
    run(env)
    [follow] = sink.wait_for(5)[4:]
    assert follow.rcpt_tos == ["anna@firma.pl"] and "Nadal nie działa." in text_of(follow)
    assert follow.parsed["In-Reply-To"] == notes["anna@firma.pl"].parsed["Message-ID"], "threads under the first"
    # the reason Anna gave with #priority, in her words, maild's own in her language
    assert "Kolejka:    SLA P2 - nadany przez anna@firma.pl, powód: „obejście działa”\r\n" in text_of(follow), \
        text_of(follow)

    # Bob answers from Outlook (his first notification, quoted without '>'): the customer gets
    # his new text only, Anna (the assignee) is told
    box.add(outlook_reply(notes["bob@firma.pl"], "Bob Kowal <bob@firma.pl>", "Please also clear the spooler."))
    run(env)
    later = sink.wait_for(7)[5:]
    by = {m.rcpt_tos[0]: m for m in later}
    assert set(by) == {"jan@acme.pl", "anna@firma.pl"}
    assert text_of(by["jan@acme.pl"]).startswith("Please also clear the spooler.")
    assert "Original Message" not in text_of(by["jan@acme.pl"]) and "Nowe" not in text_of(by["jan@acme.pl"])
    assert "bob@firma.pl" in text_of(by["anna@firma.pl"]) and "clear the spooler" in text_of(by["anna@firma.pl"])

    # Anna's out-of-office answers that notification: recorded, never relayed, never answered
    ooo = by["anna@firma.pl"].parsed
    box.add(make_mail(sender="anna@firma.pl", subject=f"Automatic reply: {ooo['Subject']}", msgid="<ooo1@firma.pl>",
                      body="I am out of the office until Monday.\n",
                      headers={"Auto-Submitted": "auto-replied", "In-Reply-To": ooo["Message-ID"],
                               "X-Auto-Response-Suppress": "All"}))
    daemon = run(env)
    assert len(sink.messages) == 7, "nothing sent for the out-of-office"
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "consultant_autoreply")) == 1

    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), "tickets", "show", "SUP-1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    told = [(n["to"], n["event"]) for n in shown["notifications"]]
    assert told == [("anna@firma.pl", "new"), ("bob@firma.pl", "new"), ("anna@firma.pl", "follow_up"),
                    ("anna@firma.pl", "answer")]
    assert all(n["status"] == "sent" and n["sent_at"] for n in shown["notifications"])
    assert shown["reasons"][-1] == "P2: set by anna@firma.pl, reason 'obejście działa'"
    assert cli_main(["--config", str(env["path"]), "tickets", "show", "SUP-1"]) == 0
    reasons = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("reasons: "))
    assert "; P1: urgent words 'Awaria', 'nie działa'; " in reasons
    assert reasons.endswith("; P2: set by anna@firma.pl, reason 'obejście działa'"), reasons


def test_notifications_are_not_counted_against_the_customer_rate_limit(env: dict[str, Any]) -> None:
    for i in range(7):
        env["box"].add(make_mail(subject=f"Sprawa {i}", msgid=f"<rl{i}@acme.pl>"))
    daemon = run(env)
    assert len(env["sink"].received_for("jan@acme.pl")) == 5
    assert len(env["sink"].received_for("anna@firma.pl")) == 7
    with daemon.sessions() as session:
        keys = session.scalars(select(OutboxRow.rate_key).where(OutboxRow.kind == "notify_new")).all()
        assert keys and set(keys) == {None}


def _text_part(received: Any) -> bytes:
    """The notification's text part as it went over the wire (its quoted-printable lines)."""
    body = received.parsed.get_body(preferencelist=("plain",))
    return bytes(body.get_payload(decode=False), "ascii") if body is not None else b""


def test_a_notification_row_carries_no_command_help_and_rows_queued_with_it_still_send(
        tmp_path: Path, smtp_sink: Any) -> None:
    """A notification's outbox row stores neither the commands' help nor the reply marker (the same in
    every notification of a language: it is rendered with them). A row an older version queued, whose
    context holds both, sends the very same text when they are those of today, and its own list when
    they are not (an older version's shorter list)."""
    env = _env(tmp_path, smtp_sink)
    env["box"].add(make_mail(subject="Awaria wydruku", msgid="<u1@acme.pl>", body="Wydruk nie działa.\n"))
    daemon = run(env)
    first = {m.rcpt_tos[0]: m for m in smtp_sink.wait_for(3) if m.rcpt_tos[0] != "jan@acme.pl"}
    assert set(first) == {"anna@firma.pl", "bob@firma.pl"}
    with daemon.sessions() as session:
        rows = session.scalars(select(OutboxRow).where(OutboxRow.kind == "notify_new")).all()
        assert len(rows) == 2
        for row in rows:
            assert "commands" not in row.context and "marker" not in row.context, sorted(row.context)
    assert "#assign <e-mail lub imię>" in text_of(first["anna@firma.pl"])
    assert "#assign <e-mail or name>" in text_of(first["bob@firma.pl"])
    assert text_of(first["bob@firma.pl"]).startswith(
        "## ------ reply above this line / odpowiedz nad tą linią ------ ##\r\n")

    from maild.desk.commands import help_lines
    from maild.desk.notifications import REPLY_MARKER

    older = {"pl": ["#time 1h30m [zakres] [notatka]", "#take"], "en": ["#time 1h30m [scope] [note]", "#take"]}
    for rows_help, expect_same in ((help_lines, True), (older.__getitem__, False)):
        with daemon.sessions() as session, session.begin():
            for row in session.scalars(select(OutboxRow).where(OutboxRow.kind == "notify_new")):
                # as an older version queued it: the help of the row's language and the marker in its context
                row.context = {**row.context, "commands": rows_help(row.language), "marker": REPLY_MARKER}
                row.status, row.sent_at, row.attempts = "pending", None, 0
        count = len(smtp_sink.messages)
        run(env)
        again = {m.rcpt_tos[0]: m for m in smtp_sink.wait_for(count + 2)[count:]}
        assert set(again) == {"anna@firma.pl", "bob@firma.pl"}
        for who, note in again.items():
            if expect_same:
                assert _text_part(note) == _text_part(first[who]), who
            else:
                language = "pl" if who == "anna@firma.pl" else "en"
                assert ", ".join(older[language]) + "\r\n" in text_of(note), text_of(note)
                assert "#assign" not in text_of(note)
