"""Threads and consultants, end to end: replies join their ticket, consultants answer by mail.

The whole conversation runs against a real Dovecot and a real SMTP server; the
individual rules run on a Maildir source with a controllable clock.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Event, Ticket
from tests.helpers import Clock, deliver, maildir_source, consultant_to, make_mail, write_config

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday


class Box:
    """A Maildir whose deliveries happen at the test clock's time."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path, self.clock = path, clock

    def add(self, raw: bytes) -> None:
        deliver(self.path, raw, self.clock.now)


@pytest.fixture
def env(tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, migrated=True)
    clock = Clock(T0)
    yield {"path": path, "box": Box(tmp_path / "Maildir", clock), "sink": smtp_sink, "clock": clock}


def cycle(env: dict[str, Any]) -> Daemon:
    daemon = Daemon(load_config(env["path"]), env["clock"])
    daemon.run_once()
    return daemon


def ticket(daemon: Daemon, number: int) -> Ticket:
    with daemon.sessions() as session:
        row = session.get(Ticket, number)
        assert row is not None
        return row


def show(env: dict[str, Any], capsys: pytest.CaptureFixture[str], ref: str) -> Any:
    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), "tickets", "show", ref, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tag_of_another_customers_ticket_opens_a_new_one(env: dict[str, Any]) -> None:
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Faktury", msgid="<a@acme.pl>"))
    cycle(env)
    env["box"].add(make_mail(sender="biuro@kowalski.pl", subject="Re: [SUP-1] Faktury", msgid="<k@kowalski.pl>"))
    daemon = cycle(env)
    second = ticket(daemon, 2)
    assert second.customer_id == "kow" and second.linked_to is None
    assert any("another customer" in r or "customer acme" in r for r in second.reasons), second.reasons
    with daemon.sessions() as session:
        assert len(list(session.scalars(select(Ticket)))) == 2


def test_references_and_plus_addressing_join(env: dict[str, Any]) -> None:
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Raport", msgid="<r1@acme.pl>"))
    cycle(env)
    # Gmail-style reply to the customer's own mail, subject changed, no tag.
    env["box"].add(make_mail(sender="ola@acme.pl", subject="Re: Raport - uzupełnienie", msgid="<r2@acme.pl>",
                             headers={"In-Reply-To": "<r1@acme.pl>", "References": "<r1@acme.pl>"}))
    # Plus-addressing with no tag and no references.
    env["box"].add(make_mail(sender="jan@acme.pl", subject="jeszcze jedno", msgid="<r3@acme.pl>",
                             to="support+SUP-1@firma.pl"))
    daemon = cycle(env)
    with daemon.sessions() as session:
        assert len(list(session.scalars(select(Ticket)))) == 1
    assert len(env["sink"].messages) == 1, "replies get no acknowledgement"


def test_reopen_within_window_and_new_linked_ticket_after(env: dict[str, Any]) -> None:
    clock = env["clock"]
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Drukarka", msgid="<d1@acme.pl>"))
    cycle(env)
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Re: [SUP-1] Drukarka", msgid="<d2@firma.pl>",
                             body="#status resolved\n\nGotowe.\n"))
    daemon = cycle(env)
    assert ticket(daemon, 1).status == "resolved"
    resolved_notes = [m for m in env["sink"].messages if "Rozwiązane" in str(m.parsed["Subject"])]
    assert len(resolved_notes) == 1 and resolved_notes[0].rcpt_tos == ["jan@acme.pl"]
    clock.now = T0 + timedelta(days=3)
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Re: [SUP-1] Drukarka", msgid="<d3@acme.pl>",
                             body="Znowu nie drukuje.\n"))
    daemon = cycle(env)
    assert ticket(daemon, 1).status == "open"
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Re: [SUP-1] Drukarka", msgid="<d4@firma.pl>",
                             body="#status resolved\n\nTeraz na pewno.\n"))
    cycle(env)
    clock.now = T0 + timedelta(days=20)
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Re: [SUP-1] Drukarka", msgid="<d5@acme.pl>",
                             body="Po miesiącu znowu.\n"))
    daemon = cycle(env)
    old, new = ticket(daemon, 1), ticket(daemon, 2)
    assert old.status == "closed", "closed by the sweeper after the quiet period"
    assert new.linked_to == 1 and new.status == "new"


def test_consultant_relay_goes_to_customer_addresses_on_the_thread(env: dict[str, Any]) -> None:
    env["box"].add(make_mail(sender="Jan <jan@acme.pl>", subject="Migracja", msgid="<m1@acme.pl>",
                             headers={"Cc": "ola@acme.pl, ksiegowa@biuro-zewn.pl, anna@firma.pl"}))
    cycle(env)
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="Anna Nowak <anna@firma.pl>", subject="RE: [SUP-1] Migracja",
                             msgid="<m2@firma.pl>", body="#assign Anna Nowak\n#priority P1 produkcja stoi\n\nJuż działamy.\n"))
    daemon = cycle(env)
    relay = [m for m in env["sink"].messages if "Już działamy" in m.parsed.get_body(("plain",)).get_content()]
    assert len(relay) == 1
    # an address of another domain joins only when a consultant adds it (issue 12)
    assert sorted(relay[0].rcpt_tos) == ["jan@acme.pl", "ola@acme.pl"]
    assert relay[0].parsed["To"] == "jan@acme.pl"
    t = ticket(daemon, 1)
    assert (t.assigned_to, t.priority, t.status) == ("anna@firma.pl", "P1", "waiting")
    with daemon.sessions() as session:
        kinds = {e.kind: e.detail for e in session.scalars(select(Event).where(Event.ticket_id == 1))}
    assert kinds["priority"]["reason"] == "produkcja stoi"
    assert kinds["participants_dropped"]["addresses"] == ["ksiegowa@biuro-zewn.pl"]
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="Anna Nowak <anna@firma.pl>", subject="RE: [SUP-1] Migracja",
                             msgid="<m3@firma.pl>", headers={"Cc": "ksiegowa@biuro-zewn.pl"},
                             body="Dołączam księgową.\n"))
    cycle(env)
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="Anna Nowak <anna@firma.pl>", subject="RE: [SUP-1] Migracja",
                             msgid="<m4@firma.pl>", body="Gotowe.\n"))
    cycle(env)
    [done] = [m for m in env["sink"].messages if "Gotowe" in m.parsed.get_body(("plain",)).get_content()]
    assert sorted(done.rcpt_tos) == ["jan@acme.pl", "ksiegowa@biuro-zewn.pl", "ola@acme.pl"]


def test_direct_mail_with_support_in_cc_is_recorded_not_relayed(env: dict[str, Any],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Licencje", msgid="<l1@acme.pl>"))
    cycle(env)
    # the consultant writes to the customer directly, with their personal support address in Cc
    env["box"].add(make_mail(sender="anna@firma.pl", subject="Re: [SUP-1] Licencje", msgid="<l2@firma.pl>",
                             to="jan@acme.pl", headers={"Cc": consultant_to(env["path"])}, body="Przesyłam klucze.\n"))
    daemon = cycle(env)
    assert len(env["sink"].messages) == 1, "only the acknowledgement; the customer already has the mail"
    t = ticket(daemon, 1)
    assert t.first_response_at is not None and t.status == "waiting"
    shown = show(env, capsys, "SUP-1")
    assert [(m["direction"], m["role"]) for m in shown["messages"]][-1] == ("in", "consultant")


def test_internal_note_and_consultant_autoreply_are_not_relayed(env: dict[str, Any]) -> None:
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Pytanie", msgid="<i1@acme.pl>"))
    cycle(env)
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Re: [SUP-1] Pytanie", msgid="<i2@firma.pl>",
                             body="#internal\n\nKlient ma starą wersję, sprawdzić licencję.\n"))
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Automatic reply: [SUP-1] Pytanie", msgid="<i3@firma.pl>",
                             body="Jestem na urlopie do poniedziałku.\n", headers={"Auto-Submitted": "auto-replied"}))
    daemon = cycle(env)
    assert len(env["sink"].messages) == 1
    t = ticket(daemon, 1)
    assert t.first_response_at is None and t.status == "new"


def test_customer_reply_keeps_new_text_apart_from_quoted_history(env: dict[str, Any],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Eksport", msgid="<e1@acme.pl>"))
    cycle(env)
    body = ("Nadal pusty plik.\n\nW dniu 23.11.2026 o 10:00, Wsparcie <support@firma.pl> pisze:\n"
            "> Dzień dobry, zarejestrowaliśmy zgłoszenie SUP-1.\n")
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Odp: [SUP-1] Eksport", msgid="<e2@acme.pl>", body=body))
    cycle(env)
    reply = show(env, capsys, "SUP-1")["messages"][-1]
    assert reply["text"].strip() == "Nadal pusty plik."
    assert reply["subject"] == "Odp: [SUP-1] Eksport"
    for key in ("message_id", "direction", "role", "from", "to", "cc", "date", "subject"):
        assert key in reply


def test_whole_conversation_over_imap(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    """Customer mail, ack, Outlook-style reply to the ack, consultant answer with #time and
    #status, relay received by the customer, and a reopen - over a real Dovecot."""
    source = (f'[imap]\nhost = "127.0.0.1"\nport = {imap_account.port}\nsecurity = "none"\n'
              f'username = "{imap_account.username}"\npassword = "{imap_account.password}"\nidle = false\n')
    path = write_config(tmp_path, source=source, smtp_port=smtp_sink.port)
    config = load_config(path)

    def run() -> Daemon:
        daemon = Daemon(config)
        daemon.run_once()
        return daemon

    imap_account.append(make_mail(sender="Jan Kowalski <jan@acme.pl>", subject="Błąd księgowania", msgid="<w1@acme.pl>"))
    run()
    [ack] = smtp_sink.wait_for(1)
    ack_id = ack.parsed["Message-ID"]
    imap_account.append(make_mail(
        sender="Jan Kowalski <jan@acme.pl>", subject="RE: [SUP-1] Błąd księgowania", msgid="<w2@acme.pl>",
        body="Zrzut ekranu w załączeniu.\n\n-----Original Message-----\nFrom: Wsparcie <support@firma.pl>\n"
             "Sent: Monday, November 23, 2026 10:00 AM\nTo: Jan\nSubject: [SUP-1] Błąd księgowania\n\nDzień dobry\n",
        headers={"In-Reply-To": ack_id, "References": f"<w1@acme.pl> {ack_id}",
                 "Thread-Index": "AQHZ1234567890abcdef==", "X-MS-Has-Attach": "yes"}))
    run()
    assert len(smtp_sink.messages) == 1
    imap_account.append(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="RE: [SUP-1] Błąd księgowania",
                                  msgid="<w3@firma.pl>", to=consultant_to(path),
                                  body="#time 45m consultation\n#status resolved\n\nProszę przeksięgować dokument PK.\n"))
    daemon = run()
    relay, resolved = smtp_sink.wait_for(3)[1:]
    assert relay.rcpt_tos == ["jan@acme.pl"] and "przeksięgować" in relay.parsed.get_body(("plain",)).get_content()
    assert relay.parsed["In-Reply-To"] == "<w2@acme.pl>"
    refs = relay.parsed["References"]
    assert "<w1@acme.pl>" in refs and ack_id in refs
    assert resolved.parsed["Subject"].startswith("[SUP-1] Rozwiązane")
    t = ticket(daemon, 1)
    assert t.status == "resolved" and t.first_response_at is not None
    imap_account.append(make_mail(sender="jan@acme.pl", subject="Re: [SUP-1] Błąd księgowania", msgid="<w4@acme.pl>",
                                  headers={"In-Reply-To": relay.parsed["Message-ID"]}))
    daemon = run()
    assert ticket(daemon, 1).status == "open"
    assert imap_account.uids("INBOX") == [] and len(imap_account.uids("Processed")) == 4


def test_mailbox_history_gets_tickets_but_no_acks_or_escalations(env: dict[str, Any]) -> None:
    """Connecting a mailbox with old mail must not page managers for breaches before maild ran."""
    env["clock"].now = T0 - timedelta(days=30)
    env["box"].add(make_mail(sender="jan@acme.pl", subject="Stara sprawa", msgid="<old1@acme.pl>"))
    env["clock"].now = T0
    daemon = cycle(env)
    old = ticket(daemon, 1)
    assert old.reaction_due is not None and old.next_escalation_at is None
    assert any("no escalation" in r for r in old.reasons)
    env["clock"].now = T0 + timedelta(days=2)
    cycle(env)
    assert env["sink"].messages == [], "neither an acknowledgement nor an escalation"


def test_consultant_attachment_reaches_the_customer_and_a_repeated_file_is_stored_once(env: dict[str, Any]) -> None:
    from email.message import EmailMessage
    from hashlib import sha256

    from maild.storage.models import AttachmentRow, PackIndex

    logo = bytes(range(256)) * 50

    def mail(sender: str, subject: str, msgid: str, body: str, files: dict[str, bytes],
             to: str = "support@firma.pl") -> bytes:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, to, subject, msgid
        msg.set_content(body)
        for name, data in files.items():
            msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        return msg.as_bytes()

    env["box"].add(mail("jan@acme.pl", "Faktura", "<a1@acme.pl>", "W załączniku.", {"logo.png": logo}))
    cycle(env)
    fix = b"patch for the ledger \x00\xff" * 100
    env["box"].add(mail("anna@firma.pl", "RE: [SUP-1] Faktura", "<a2@firma.pl>", "Poprawka w załączniku.",
                        {"poprawka.bin": fix, "logo.png": logo}, to=consultant_to(env["path"])))
    daemon = cycle(env)
    relay = [m for m in env["sink"].messages if "Poprawka w załączniku" in m.parsed.get_body(("plain",)).get_content()]
    assert len(relay) == 1
    sent = {a.get_filename(): a.get_payload(decode=True) for a in relay[0].parsed.iter_attachments()}
    assert sent == {"poprawka.bin": fix, "logo.png": logo}
    with daemon.sessions() as session:
        assert len(session.scalars(select(AttachmentRow).where(AttachmentRow.sha256 == sha256(logo).hexdigest()))
                   .all()) == 2
        assert session.scalar(select(PackIndex.sha256).where(PackIndex.sha256 == sha256(logo).hexdigest()))
    packs = b"".join(p.read_bytes() for p in (daemon.config.storage_path / "blobs" / "packs").iterdir())
    assert packs.count(logo) == 1, "the file two mails carry is packed once"
