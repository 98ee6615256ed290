"""The outbox against a real SMTP server: retries with backoff, permanent failures recorded."""
from __future__ import annotations

import mailbox
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from maild.config import load_config
from maild.daemon import Daemon
from maild.models import Event, OutboxRow
from maild.outbox import RETRY_BASE, RETRY_CAP, retry_delay
from maild.smtp import Delivery, Envelope, SmtpSender
from tests.helpers import Clock, maildir_source, make_mail, write_config

UTC = timezone.utc


def setup(tmp_path: Path, sink: Any) -> tuple[Daemon, Clock]:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=sink.port)
    mailbox.Maildir(tmp_path / "Maildir", create=True).add(make_mail(msgid="<ob1@acme.pl>"))
    clock = Clock(datetime.now(UTC))
    return Daemon(load_config(config), clock), clock


def outbox_row(daemon: Daemon) -> OutboxRow:
    with daemon.sessions() as session:
        return session.scalars(select(OutboxRow)).one()


def test_temporary_failure_is_retried_with_backoff_then_sent_once(tmp_path: Path, smtp_sink: Any) -> None:
    smtp_sink.mode = "tempfail"
    daemon, clock = setup(tmp_path, smtp_sink)
    daemon.run_once()
    row = outbox_row(daemon)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error.startswith("451")
    assert row.next_attempt_at == clock.now + RETRY_BASE
    clock.now += timedelta(seconds=5)
    assert daemon.outbox.drain().sent == 0, "not before the backoff has passed"
    clock.now += RETRY_BASE
    daemon.outbox.drain()
    row = outbox_row(daemon)
    assert row.attempts == 2 and row.next_attempt_at == clock.now + 2 * RETRY_BASE
    smtp_sink.mode = "accept"
    clock.now += 2 * RETRY_BASE
    assert daemon.outbox.drain().sent == 1
    assert outbox_row(daemon).status == "sent"
    assert daemon.outbox.drain().sent == 0
    assert len(smtp_sink.messages) == 1


def test_permanent_failure_is_recorded_with_the_reply(tmp_path: Path, smtp_sink: Any) -> None:
    smtp_sink.mode = "permfail"
    daemon, _ = setup(tmp_path, smtp_sink)
    daemon.run_once()
    row = outbox_row(daemon)
    assert row.status == "failed" and row.last_error.startswith("550")
    with daemon.sessions() as session:
        [event] = session.scalars(select(Event).where(Event.kind == "delivery_failed")).all()
        assert event.detail["permanent"] is True and event.detail["recipients"] == ["jan@acme.pl"]


def test_server_down_keeps_mail_queued(tmp_path: Path, smtp_sink: Any) -> None:
    daemon, clock = setup(tmp_path, smtp_sink)
    smtp_sink.stop()
    daemon.run_once()
    assert outbox_row(daemon).status == "pending"
    smtp_sink.start()
    clock.now += RETRY_CAP
    assert daemon.outbox.drain().sent == 1
    assert len(smtp_sink.wait_for(1)) == 1


@given(st.integers(min_value=1, max_value=10_000))
def test_backoff_grows_and_is_capped(attempts: int) -> None:
    delay = retry_delay(attempts)
    assert RETRY_BASE <= delay <= RETRY_CAP
    assert retry_delay(attempts + 1) >= delay


def test_each_sent_mark_is_committed_before_the_next_mail_goes_out(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """The "a crash resends at most one mail" guarantee: when mail n+1 is handed to
    SMTP, a separate connection already sees mail n as sent (attempts 1, sent_at set)."""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(4):
        box.add(make_mail(sender=f"Jan {i} <jan{i}@acme.pl>", subject=f"Sprawa {i}", msgid=f"<seq{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    seen: list[list[tuple[str, int, bool]]] = []
    real_send = SmtpSender.send

    async def watching_send(self: SmtpSender, envelope: Envelope) -> Delivery:
        with daemon.sessions() as session:
            seen.append([(r.status, r.attempts, r.sent_at is not None)
                         for r in session.scalars(select(OutboxRow).order_by(OutboxRow.id))])
        return await real_send(self, envelope)

    monkeypatch.setattr(SmtpSender, "send", watching_send)
    assert daemon.outbox.drain().sent == 4
    assert [[s for s, _, _ in states] for states in seen] == [
        ["sent"] * n + ["pending"] * (4 - n) for n in range(4)], "oldest first, each marked before the next"
    assert all(state == ("sent", 1, True) for states in seen for state in states if state[0] == "sent")
    with daemon.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
    assert [(r.status, r.attempts, r.last_error) for r in rows] == [("sent", 1, "")] * 4
    assert all(r.sent_at is not None and r.sent_at.tzinfo is not None for r in rows)
    assert len(smtp_sink.wait_for(4)) == 4
