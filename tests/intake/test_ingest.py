"""End to end through the daemon's cycle: a Maildir source, the real database, a real SMTP server.

These tests drive ``Daemon.run_once`` with a controllable clock and assert on what
the SMTP server received and what the database holds.
"""
from __future__ import annotations

import json
import mailbox
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email import policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.storage import store
from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import AttachmentRow, Event, Intake, LedgerRow, MessageRow, OutboxRow, Ticket
from tests.helpers import maildir_source, consultant_to, make_mail, write_config

UTC = timezone.utc


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    """Every test here runs on the embedded SQLite and on a real PostgreSQL server."""
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url, migrated=True)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    yield {"path": path, "box": box, "sink": smtp_sink, "tmp": tmp_path}


def run(env: dict[str, Any], clock: Callable[[], datetime] | None = None) -> Daemon:
    daemon = Daemon(load_config(env["path"]), clock or (lambda: datetime.now(UTC)))
    daemon.run_once()
    return daemon


def cli_json(env: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_new_mail_becomes_ticket_with_acknowledgement(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    env["box"].add(make_mail(subject="Pilne: awaria wydruku", msgid="<a1@acme.pl>"))
    daemon = run(env)
    sink = env["sink"]
    [ack] = sink.wait_for(1)
    assert ack.rcpt_tos == ["jan@acme.pl"]
    parsed = ack.parsed
    assert parsed["Subject"] == "[SUP-1] Pilne: awaria wydruku"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["In-Reply-To"] == "<a1@acme.pl>"
    assert "<a1@acme.pl>" in parsed["References"]
    body = parsed.get_body(preferencelist=("plain",)).get_content()
    assert "SUP-1" in body and "zareagujemy na zgłoszenie do" in body
    with daemon.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.customer_id, ticket.contract_kind, ticket.tier, ticket.priority) == ("acme", "sla", 0, "P1")
        assert ticket.reaction_due is not None
        assert ticket.reaction_due - ticket.created_at == timedelta(hours=24)
        ack_row = session.scalars(select(OutboxRow)).one()
        assert ack_row.status == "sent" and parsed["Message-ID"] == f"<{ack_row.message_id}>"
    [listed] = cli_json(env, capsys, "tickets", "list")
    for key in ("ref", "subject", "status", "customer", "contract_kind", "verified", "priority", "rank",
                "created_at", "reaction_due", "first_response_at", "messages", "escalation_level"):
        assert key in listed
    assert listed["ref"] == "SUP-1" and listed["rank"] == 1 and listed["customer"] == "acme"
    assert listed["created_at"].endswith("Z")
    assert not list(env["box"].keys()), "processed mail must leave the inbox"


def _read_twice(env: dict[str, Any], raw: bytes) -> Daemon:
    """The same bytes delivered and read, then delivered and read again; the second run's daemon."""
    env["box"].add(raw)
    run(env)
    env["box"].add(raw)
    return run(env)


def test_same_message_twice_changes_nothing(env: dict[str, Any]) -> None:
    daemon = _read_twice(env, make_mail(msgid="<dup@acme.pl>"))
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalar(select(func.count()).select_from(OutboxRow)) == 1
        assert session.scalar(select(func.count()).select_from(Intake)) == 1
    assert len(env["sink"].messages) == 1


def test_a_mail_without_message_id_read_again_changes_nothing(env: dict[str, Any]) -> None:
    """Its dedupe key is its bytes' hash, and its message row places the bytes (no pack_index row since
    0011): read again after a crash before the move or a UIDVALIDITY reset, it is the same mail."""
    daemon = _read_twice(env, make_mail(msgid=None, subject="Bez Message-ID"))
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalar(select(func.count()).select_from(Intake)) == 1
        assert session.scalar(select(func.count()).select_from(MessageRow).where(MessageRow.direction == "in")) == 1
    assert len(env["sink"].wait_for(1)) == 1 and len(env["sink"].messages) == 1


def test_raw_mail_is_placed_by_its_message_row_and_attachments_and_discards_by_hash(env: dict[str, Any]) -> None:
    """0011: a kept mail's raw bytes are found through its message row, with no pack_index row (a random
    key per mail); an attachment is packed once per content and found by hash, and so is the raw mail of a
    discarded mail (no message row): the same bytes read again are known by that hash, not stored twice."""
    from email.message import EmailMessage

    from maild.storage.models import PackIndex

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "jan@acme.pl", "support@firma.pl", "Skan", "<p1@acme.pl>"
    msg.set_content("W załączeniu skan.")
    msg.add_attachment(b"%PDF skan " * 50, maintype="application", subtype="pdf", filename="skan.pdf")
    kept = msg.as_bytes(policy=policy.SMTP)
    back = make_mail(msgid="<back@firma.pl>", subject="[SUP-9] odbite", headers={"X-Maild-Origin": "maild"})
    env["box"].add(kept)
    env["box"].add(back)
    daemon = run(env)
    with daemon.sessions() as session:
        row = session.scalars(select(MessageRow).where(MessageRow.direction == "in")).one()
        indexed = set(session.scalars(select(PackIndex.sha256)))
        [att] = session.scalars(select(AttachmentRow)).all()
        discarded = session.scalars(select(Intake).where(Intake.dedupe_key == "back@firma.pl")).one()
        assert discarded.disposition == "discard" and discarded.message_row_id is None
        assert row.raw_pack is not None and row.raw_length == len(kept)
        assert row.raw_sha256 not in indexed, "a kept mail's raw bytes are placed by its row, not indexed by hash"
        assert att.sha256 in indexed
        assert len(indexed) == 2, "the attachment and the discarded mail"
        assert store.raw_mail(session, daemon.blobs, row.id) == kept
        assert store.read_blob(session, daemon.blobs, att.sha256) == b"%PDF skan " * 50
    env["box"].add(back)  # read again: found by hash, nothing new
    env["box"].add(kept)
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Intake)) == 2
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalar(select(func.count()).select_from(PackIndex)) == 2
    capsys_free = cli_main(["--config", str(env["path"]), "storage", "verify"])
    assert capsys_free == 0


def test_a_batch_asks_where_its_attachments_were_packed_once_and_packs_a_known_file_no_more(env: dict[str, Any]) -> None:
    """Whether each attachment was packed before is one question for the whole batch (it was one per mail
    with attachments, a round trip each on PostgreSQL); a file packed by an earlier batch is found there and
    only gets another row, one new to the batch is packed once however many of its mails carry it."""
    from email.message import EmailMessage
    from hashlib import sha256

    from sqlalchemy import event

    from maild.storage.models import PackIndex

    logo, scan = bytes(range(256)) * 40, b"%PDF skan " * 60

    def mail(msgid: str, files: dict[str, bytes]) -> bytes:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "jan@acme.pl", "support@firma.pl", msgid, msgid
        msg.set_content("W załączeniu.")
        for name, data in files.items():
            msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        return msg.as_bytes(policy=policy.SMTP)

    env["box"].add(mail("<f1@acme.pl>", {"logo.png": logo}))
    run(env)
    for i in range(2, 6):
        env["box"].add(mail(f"<f{i}@acme.pl>", {"logo.png": logo, "skan.pdf": scan}))
    daemon = Daemon(load_config(env["path"]), lambda: datetime.now(UTC))
    asked: list[str] = []
    event.listen(daemon.engine, "before_cursor_execute", lambda conn, cursor, statement, params, context, many:
                 asked.append(statement) if "FROM pack_index" in statement else None)
    daemon.run_once()
    assert len(asked) == 1, asked
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AttachmentRow)) == 9
        packed = set(session.scalars(select(PackIndex.sha256)))
        assert {sha256(logo).hexdigest(), sha256(scan).hexdigest()} <= packed
        assert store.read_blob(session, daemon.blobs, sha256(scan).hexdigest()) == scan
    packs = b"".join(f.read_bytes() for f in (env["tmp"] / "var").rglob("*") if f.is_file() and "pack" in f.name)
    assert packs.count(logo) == 1 and packs.count(scan) == 1


def test_queue_order_by_tier_then_urgency(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    env["box"].add(make_mail(sender="x@unknown.pl", subject="Pilne! kto to?", msgid="<u@x>"))
    env["box"].add(make_mail(sender="biuro@kowalski.pl", subject="Pytanie", msgid="<o@x>"))
    env["box"].add(make_mail(sender="kari@nord.no", subject="Question", msgid="<p@x>"))
    env["box"].add(make_mail(sender="ola@acme.pl", subject="Routine question", msgid="<s1@x>"))
    env["box"].add(make_mail(sender="jan@sub.acme.pl", subject="URGENT: system down", msgid="<s2@x>"))
    run(env)
    listed = cli_json(env, capsys, "tickets", "list")
    order = [(t["requester"], t["contract_kind"], t["verified"], t["priority"]) for t in listed]
    assert order == [
        ("jan@sub.acme.pl", "sla", True, "P1"),
        ("ola@acme.pl", "sla", True, "P3"),
        ("kari@nord.no", "prepaid", True, "P3"),
        ("biuro@kowalski.pl", "occasional", True, "P3"),
        ("x@unknown.pl", "occasional", False, "P1"),
    ]
    assert [t["rank"] for t in listed] == [1, 2, 3, 4, 5]


def test_automatic_mail_gets_ticket_but_no_acknowledgement(env: dict[str, Any]) -> None:
    env["box"].add(make_mail(msgid="<auto@acme.pl>", headers={"Auto-Submitted": "auto-generated"}))
    env["box"].add(make_mail(sender="news@acme.pl", msgid="<list@acme.pl>", headers={"Precedence": "bulk"}))
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2
        assert session.scalar(select(func.count()).select_from(OutboxRow)) == 0
    assert env["sink"].messages == []


def test_arrival_time_not_date_header(env: dict[str, Any]) -> None:
    env["box"].add(make_mail(msgid="<old-date@acme.pl>", date=datetime(2001, 1, 1, tzinfo=UTC)))
    daemon = run(env)
    with daemon.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.created_at > datetime.now(UTC) - timedelta(minutes=5)


def test_acknowledgement_rate_limit_per_sender(env: dict[str, Any]) -> None:
    for i in range(7):
        env["box"].add(make_mail(subject=f"Sprawa {i}", msgid=f"<r{i}@acme.pl>"))
    run(env)
    assert len(env["sink"].received_for("jan@acme.pl")) == 5


def test_the_per_sender_limit_counts_the_acknowledgements_of_earlier_cycles(env: dict[str, Any]) -> None:
    """The second cycle starts from the database's count of the last hour (read through the
    outbox's time index since 0009 dropped the index by rate key), not from zero."""
    for i in range(3):
        env["box"].add(make_mail(subject=f"Sprawa {i}", msgid=f"<e{i}@acme.pl>"))
    run(env)
    for i in range(3, 7):
        env["box"].add(make_mail(subject=f"Sprawa {i}", msgid=f"<e{i}@acme.pl>"))
    run(env)
    assert len(env["sink"].received_for("jan@acme.pl")) == 5


def test_conversation_customer_reply_consultant_answer(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sink = env["sink"]
    env["box"].add(make_mail(subject="Błąd w JPK", msgid="<c1@acme.pl>"))
    run(env)
    [ack] = sink.wait_for(1)
    ack_id = ack.parsed["Message-ID"]
    # The customer answers the acknowledgement from Outlook: "RE:" and In-Reply-To our ack.
    env["box"].add(make_mail(subject="RE: [SUP-1] Błąd w JPK", msgid="<c2@acme.pl>",
                             body="Dodatkowo: plik XML jest pusty.\n\n-----Original Message-----\nFrom: Wsparcie\n",
                             headers={"In-Reply-To": ack_id, "References": f"<c1@acme.pl> {ack_id}"}))
    run(env)
    assert len(sink.messages) == 1, "a customer reply gets no second acknowledgement"
    # The consultant answers with commands.
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-1] Błąd w JPK",
                             msgid="<k1@firma.pl>",
                             body="#time 1h30m incident\n\nDzień dobry,\nproszę zainstalować poprawkę 2026.1.\n"))
    daemon = run(env)
    relay = sink.wait_for(2)[1]
    assert relay.rcpt_tos == ["jan@acme.pl"]
    assert relay.mail_from == "support@firma.pl"
    parsed = relay.parsed
    assert parsed["Subject"] == "[SUP-1] Błąd w JPK"
    assert "Anna Nowak" in parsed["From"] and "support@firma.pl" in parsed["From"]
    assert parsed["In-Reply-To"] == "<c2@acme.pl>"
    assert "<c1@acme.pl>" in parsed["References"]
    assert parsed["Auto-Submitted"] is None
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    assert "poprawkę 2026.1" in text and "#time" not in text
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.status == "waiting" and ticket.first_response_at is not None
        assert ticket.next_escalation_at is None
        [entry] = session.scalars(select(LedgerRow)).all()
        assert (entry.minutes, entry.scope, entry.by, entry.contract_id) == (90, "incident", "anna@firma.pl", "acme-sla")
    shown = cli_json(env, capsys, "tickets", "show", "SUP-1")
    roles = [(m["direction"], m["role"]) for m in shown["messages"]]
    assert roles == [("in", "customer"), ("out", "system"), ("in", "customer"), ("in", "consultant"), ("out", "consultant")]
    assert shown["time_logged_minutes"] == 90
    # The customer writes again: waiting -> open.
    env["box"].add(make_mail(subject="Re: [SUP-1] Błąd w JPK", msgid="<c3@acme.pl>", body="Działa, dziękuję.\n"))
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.get(Ticket, 1).status == "open"  # type: ignore[union-attr]


def test_bad_consultant_command_changes_nothing_and_explains(env: dict[str, Any]) -> None:
    sink = env["sink"]
    env["box"].add(make_mail(subject="Pytanie", msgid="<q1@acme.pl>"))
    run(env)
    sink.wait_for(1)
    env["box"].add(make_mail(to=consultant_to(env["path"]), sender="anna@firma.pl", subject="Re: [SUP-1] Pytanie", msgid="<k2@firma.pl>",
                             body="#time abc\n#status resolved\n\nOdpowiedź.\n"))
    daemon = run(env)
    error = sink.wait_for(2)[1]
    assert error.rcpt_tos == ["anna@firma.pl"]
    body = error.parsed.get_body(preferencelist=("plain",)).get_content()
    assert "#time abc" in body and ("linia 1" in body or "line 1" in body)
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.status == "new" and ticket.first_response_at is None
        assert session.scalar(select(func.count()).select_from(LedgerRow)) == 0
    assert not sink.received_for("jan@acme.pl")[1:], "nothing relayed to the customer"


def test_poison_message_retried_then_quarantined(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import maild.intake.pipeline as pipeline

    real = pipeline.prioritise

    def explode(**kwargs: Any) -> Any:
        if "poison" in kwargs["subject"]:
            raise RuntimeError("boom")
        return real(**kwargs)

    monkeypatch.setattr(pipeline, "prioritise", explode)
    env["box"].add(make_mail(subject="poison", msgid="<p1@acme.pl>"))
    env["box"].add(make_mail(subject="fine", msgid="<f1@acme.pl>", sender="ola@acme.pl"))
    for attempt in range(3):
        daemon = run(env)
        with daemon.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Ticket)) == 1, "the good mail is not delayed"
    quarantine = mailbox.Maildir(env["tmp"] / "Maildir").get_folder("Quarantine")
    assert len(quarantine) == 1
    assert not list(env["box"].keys())
    with daemon.sessions() as session:
        intake = session.scalars(select(Intake).where(Intake.dedupe_key == "p1@acme.pl")).one()
        assert intake.disposition == "quarantine" and "boom" in intake.reason


def test_failure_after_rows_are_queued_leaves_none_of_them(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are held back and written per batch; a message failing halfway must take its own back out."""
    import maild.intake.pipeline as pipeline

    real = pipeline.Ingestor._acknowledge

    def explode(self: Any, session: Any, ticket: Ticket, msg: Any, *args: Any) -> Any:
        if "poison" in msg.subject:  # its message row and "created" event are queued by now
            raise RuntimeError("boom after writing")
        return real(self, session, ticket, msg, *args)

    monkeypatch.setattr(pipeline.Ingestor, "_acknowledge", explode)
    env["box"].add(make_mail(subject="fine before", msgid="<f0@acme.pl>", sender="ola@acme.pl"))
    env["box"].add(make_mail(subject="poison", msgid="<p1@acme.pl>"))
    env["box"].add(make_mail(subject="fine after", msgid="<f1@acme.pl>", sender="ewa@acme.pl"))
    daemon = run(env)
    with daemon.sessions() as session:
        tickets = session.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert [t.subject for t in tickets] == ["fine before", "fine after"]
        ids = {t.id for t in tickets}
        inbound = session.scalars(select(MessageRow).where(MessageRow.direction == "in")).all()
        assert sorted(m.message_id or "" for m in inbound) == ["f0@acme.pl", "f1@acme.pl"]
        assert {m.ticket_id for m in session.scalars(select(MessageRow))} == ids
        assert {e.ticket_id for e in session.scalars(select(Event))} == ids
        assert sorted(o.dedupe_key for o in session.scalars(select(OutboxRow))) == [f"ack:{i}" for i in sorted(ids)]
        intake = {i.dedupe_key: i for i in session.scalars(select(Intake))}
        assert set(intake) == {"f0@acme.pl", "f1@acme.pl"}, "the failed mail is retried, not recorded"
        assert all(i.message_row_id in {m.id for m in inbound} for i in intake.values())
    assert len(env["sink"].wait_for(2)) == 2


@pytest.mark.parametrize("same_batch", [True, False])
def test_second_delivery_with_other_headers_is_recorded_not_a_second_ticket(env: dict[str, Any],
                                                                           same_batch: bool) -> None:
    sent = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    raw = make_mail(msgid="<twice@acme.pl>", date=sent)
    env["box"].add(raw)
    if not same_batch:
        run(env)
    env["box"].add(b"Received: from relay2.acme.pl by mx.firma.pl; Fri, 27 Nov 2026 09:00:05 +0000\n" + raw)
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        second = session.scalars(select(Intake).where(Intake.dedupe_key.like("dup:%"))).one()
        assert second.disposition == "discard" and "second delivery" in second.reason
    assert len(env["sink"].wait_for(1)) == 1 and len(env["sink"].messages) == 1
    env["box"].add(b"Received: from relay2.acme.pl by mx.firma.pl; Fri, 27 Nov 2026 09:00:05 +0000\n" + raw)
    daemon = run(env)  # the second copy read again: nothing new
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Intake)) == 2


def test_reused_message_id_with_other_content_is_a_mail_of_its_own(env: dict[str, Any]) -> None:
    """Some senders reuse one Message-ID for every mail: the second request must not be dropped."""
    first = make_mail(msgid="<always-the-same@webform.acme.pl>", subject="Faktura nie drukuje się")
    second = make_mail(msgid="<always-the-same@webform.acme.pl>", subject="Błąd przy zamknięciu miesiąca",
                       body="Zamknięcie miesiąca kończy się błędem.\n")
    env["box"].add(first)
    run(env)
    env["box"].add(second)
    daemon = run(env)
    with daemon.sessions() as session:
        subjects = session.scalars(select(Ticket.subject).order_by(Ticket.id)).all()
        assert subjects == ["Faktura nie drukuje się", "Błąd przy zamknięciu miesiąca"]
    assert len(env["sink"].wait_for(2)) == 2
    env["box"].add(second)  # read again, e.g. after a crash before the move
    env["box"].add(first)
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2, "re-reads are duplicates"
    assert len(env["sink"].messages) == 2


def test_a_reply_to_the_customers_own_mail_finds_its_ticket_through_intake(env: dict[str, Any]) -> None:
    """An inbound mail's Message-ID is looked up through intake's dedupe key since 0010 (messages index
    only maild's own and reused ones): a later cycle's reply that names only that mail joins its ticket."""
    env["box"].add(make_mail(subject="Drukarka nie drukuje", msgid="<own1@acme.pl>"))
    run(env)
    env["box"].add(make_mail(subject="Jeszcze jedno", msgid="<own2@acme.pl>", body="Toner też się kończy.\n",
                             headers={"In-Reply-To": "<own1@acme.pl>"}))
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalars(select(MessageRow.ticket_id).where(MessageRow.message_id == "own2@acme.pl")).one() == 1


def test_a_reply_to_a_reused_message_id_finds_the_latest_mail_under_it(env: dict[str, Any]) -> None:
    """The second mail under a reused Message-ID is kept under dup:<sha256>, not under the Message-ID in
    intake: it is marked (``reused_id``) and found in messages, so a reply to that Message-ID joins the
    latest ticket, as before 0010 (without the mark it would join the first one)."""
    env["box"].add(make_mail(msgid="<same@webform.acme.pl>", subject="Faktura nie drukuje się"))
    run(env)
    env["box"].add(make_mail(msgid="<same@webform.acme.pl>", subject="Błąd przy zamknięciu miesiąca",
                             body="Zamknięcie miesiąca kończy się błędem.\n"))
    run(env)
    env["box"].add(make_mail(subject="Uzupełnienie", msgid="<r1@acme.pl>", body="Zrzut ekranu w załączeniu.\n",
                             headers={"In-Reply-To": "<same@webform.acme.pl>"}))
    daemon = run(env)
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2
        marks = session.execute(select(MessageRow.ticket_id, MessageRow.reused_id)
                                .where(MessageRow.message_id == "same@webform.acme.pl").order_by(MessageRow.id)).all()
        assert [tuple(m) for m in marks] == [(1, False), (2, True)]
        assert session.scalars(select(MessageRow.ticket_id).where(MessageRow.message_id == "r1@acme.pl")).one() == 2
        copies = store.inbound_copies(session, "same@webform.acme.pl")
        rows = session.execute(select(MessageRow.id, MessageRow.raw_sha256).where(
            MessageRow.direction == "in", MessageRow.message_id == "same@webform.acme.pl")).all()
        assert set(copies) == {sha for _, sha in rows}
        for row_id, sha in rows:  # each at its message row's place (0011)
            assert copies[sha] is not None and daemon.blobs.read(copies[sha], sha) == store.raw_mail(
                session, daemon.blobs, row_id)


def test_message_rows_keep_raw_and_attachments(env: dict[str, Any]) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "jan@acme.pl"
    msg["To"] = "support@firma.pl"
    msg["Subject"] = "=?iso-8859-2?q?Za=BF=F3=B3=E6_g=EA=B6l=B1_ja=BC=F1?="
    msg["Message-ID"] = "<att@acme.pl>"
    msg.set_content("Załącznik w środku.")
    msg.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="raport płac.bin")
    raw = msg.as_bytes(policy=policy.SMTP)
    env["box"].add(raw)
    daemon = run(env)
    with daemon.sessions() as session:
        row = session.scalars(select(MessageRow).where(MessageRow.direction == "in")).one()
        assert row.subject == "Zażółć gęślą jaźń"
        assert store.raw_mail(session, daemon.blobs, row.id) == raw
        assert not daemon.blobs.path_for(row.raw_sha256 or "").exists(), "raw mail is packed, not a file of its own"
        [att] = session.scalars(select(AttachmentRow)).all()
        assert att.filename == "raport płac.bin"
        assert store.read_blob(session, daemon.blobs, att.sha256) == b"\x00\x01binary"
        assert not daemon.blobs.path_for(att.sha256).exists(), "attachments are packed too"


def test_storage_verify_reads_back_every_blob_and_names_the_mail_whose_bytes_are_gone(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from email.message import EmailMessage

    from maild.storage.models import PackIndex

    env["box"].add(make_mail(subject="Bez załącznika", msgid="<plain@acme.pl>"))
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "jan@acme.pl", "support@firma.pl", "Skan", "<scan@acme.pl>"
    msg.set_content("W załączniku.")
    msg.add_attachment(b"scanned invoice " * 64, maintype="application", subtype="pdf", filename="skan.pdf")
    env["box"].add(msg.as_bytes())
    daemon = run(env)
    assert cli_json(env, capsys, "storage", "verify") == {"checked": 3, "problems": []}

    with daemon.sessions() as session:
        [att] = session.scalars(select(AttachmentRow)).all()
        place = session.get(PackIndex, att.sha256)
        assert place is not None
    pack = daemon.config.storage_path / "blobs" / "packs" / place.pack
    data = bytearray(pack.read_bytes())
    data[place.offset] ^= 0xFF
    pack.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), "storage", "verify"]) == 1
    out = capsys.readouterr().out
    assert "attachment 'skan.pdf' of <scan@acme.pl>" in out and "damaged" in out
    assert "3 blobs read back" in out and "1 missing or damaged" in out

    with daemon.sessions() as session:  # a raw mail is read at the place its message row gives (0011)
        row = session.scalars(select(MessageRow).where(MessageRow.message_id == "plain@acme.pl")).one()
        assert row.raw_pack is not None and row.raw_offset is not None
    raw_pack = daemon.config.storage_path / "blobs" / "packs" / row.raw_pack
    data = bytearray(raw_pack.read_bytes())
    data[row.raw_offset + 3] ^= 0xFF
    raw_pack.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), "storage", "verify"]) == 1
    out = capsys.readouterr().out
    assert "raw mail <plain@acme.pl> (ticket " in out and "2 missing or damaged" in out, out

    pack.unlink()
    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), "storage", "verify", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 3 and any(p.startswith("raw mail <plain@acme.pl> (ticket ") for p in problems)

    # quarantined mail is a loose file: read back and checked the same way
    from maild.storage.models import QuarantineRow

    sha = daemon.blobs.put(b"From: x\r\n\r\nunreadable\r\n")
    with daemon.sessions() as session, session.begin():
        session.add(QuarantineRow(key="raw:q", source_key="q", raw_sha256=sha, reason="test",
                                  created_at=datetime.now(UTC)))
    daemon.blobs.path_for(sha).write_bytes(b"From: x\r\n\r\nunreadablE\r\n")
    capsys.readouterr()
    assert cli_main(["--config", str(env["path"]), "storage", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == 4 and len(report["problems"]) == 4
    assert any(p.startswith("quarantined mail ") and "damaged" in p for p in report["problems"])


def test_ticket_numbers_follow_each_other_across_batches_and_the_command_line(
        env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import event

    path = write_config(env["tmp"], source=maildir_source(env["tmp"]), smtp_port=env["sink"].port,
                        database_url=load_config(env["path"]).database_url, top="batch_size = 2")
    for i in range(5):
        env["box"].add(make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<n{i}@acme.pl>"))
    daemon = Daemon(load_config(path))
    nextvals: list[str] = []  # of the tickets' sequence
    event.listen(daemon.sessions.kw["bind"], "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, *rest: nextvals.append(statement)
                 if "nextval" in statement and (parameters or {}).get("table") == "tickets" else None)
    daemon.run_once()
    # PostgreSQL: a batch (of 2) draws from the ticket sequence once, not once per ticket
    assert len(nextvals) == (3 if daemon.sessions.kw["bind"].dialect.name == "postgresql" else 0)
    assert cli_main(["--config", str(path), "tickets", "open", "--customer", "jan@acme.pl", "--subject", "Telefon",
                     "--no-ack"]) == 0
    env["box"].add(make_mail(sender="ola@acme.pl", subject="Jeszcze jedna", msgid="<n9@acme.pl>"))
    Daemon(load_config(path)).run_once()
    with daemon.sessions() as session:
        assert list(session.scalars(select(Ticket.subject).order_by(Ticket.id))) == [
            "Sprawa 0", "Sprawa 1", "Sprawa 2", "Sprawa 3", "Sprawa 4", "Telefon", "Jeszcze jedna"]
        assert list(session.scalars(select(Ticket.id).order_by(Ticket.id))) == [1, 2, 3, 4, 5, 6, 7]
