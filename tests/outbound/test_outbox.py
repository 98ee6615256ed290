"""The outbox against a real SMTP server: retries with backoff, permanent failures recorded."""
from __future__ import annotations

import logging
import mailbox
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Event, OutboxRow
from maild.outbound import outbox as outbox_module
from maild.outbound.outbox import RETRY_BASE, RETRY_CAP, Outbox, retry_delay
from maild.outbound.smtp import BeforeDot, Delivery, Envelope, SmtpSender, SmtpUnavailable
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


@pytest.mark.parametrize("connections", [1, 2])
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_each_sent_mark_is_committed_before_the_next_mail_goes_out(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any, connections: int, db: str,
        request: pytest.FixtureRequest) -> None:
    """The "a crash resends at most one mail" guarantee, also over two connections:
    when a connection hands over its next mail, and again when any mail's data is
    about to go out, a separate database connection already sees the mails before
    it as sent (attempts 1, sent_at set); mail is handed over oldest first. On
    PostgreSQL the marks are committed without waiting for the WAL flush: visible
    to every other session (and kept by the server) all the same."""
    url = request.getfixturevalue("pg_migrated_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url, migrated=True)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(6):
        box.add(make_mail(sender=f"Jan {i} <jan{i}@acme.pl>", subject=f"Sprawa {i}", msgid=f"<seq{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    daemon.outbox.connections, daemon.outbox.parallel_from = connections, 2
    with daemon.sessions() as session:
        order = list(session.scalars(select(OutboxRow.message_id).order_by(OutboxRow.created_at, OutboxRow.id)))
    handed: list[tuple[int, str, dict[str, tuple[str, int, bool]]]] = []
    real_send = SmtpSender.send

    def states() -> dict[str, tuple[str, int, bool]]:
        with daemon.sessions() as session:
            rows = session.scalars(select(OutboxRow))
            return {r.message_id: (r.status, r.attempts, r.sent_at is not None) for r in rows}

    data_phase: list[tuple[str, dict[str, tuple[str, int, bool]]]] = []

    async def watching_send(self: SmtpSender, envelope: Envelope, before_dot: BeforeDot | None = None,
                            logged: bool = True) -> Delivery:
        found = re.search(rb"\r\nMessage-ID: <([^>]*)>", envelope.message)
        assert found is not None and before_dot is not None
        handed.append((id(self), found.group(1).decode(), states()))

        async def watching_before_dot() -> None:
            await before_dot()
            data_phase.append((found.group(1).decode(), states()))

        return await real_send(self, envelope, watching_before_dot, logged)

    monkeypatch.setattr(SmtpSender, "send", watching_send)
    assert daemon.outbox.drain().sent == 6
    assert [mid for _, mid, _ in handed] == order, "oldest first"
    assert len({sender for sender, _, _ in handed}) == connections
    for n, (sender, _, states) in enumerate(handed):
        before = [mid for s, mid, _ in handed[:n] if s == sender]
        assert all(states[mid] == ("sent", 1, True) for mid in before), (n, states)
        assert sum(state[0] != "sent" for state in states.values()) <= 6 - n + connections - 1
    for n, (mid, states) in enumerate(data_phase):
        assert all(states[earlier] == ("sent", 1, True) for earlier, _ in data_phase[:n]), (
            "a mail's data goes out only when every mail before it in that phase is committed as sent")
    with daemon.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
    assert [(r.status, r.attempts, r.last_error) for r in rows] == [("sent", 1, "")] * 6
    assert all(r.sent_at is not None and r.sent_at.tzinfo is not None for r in rows)
    assert len(smtp_sink.wait_for(6)) == 6


def acknowledgements_queued(tmp_path: Path, sink: Any, count: int, tag: str) -> Daemon:
    """A daemon whose outbox holds ``count`` acknowledgements (In-Reply-To <tag0@acme.pl> ...), oldest first."""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=sink.port)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(count):
        box.add(make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<{tag}{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    return daemon


def _posix_locks_of_this_process(path: Path) -> list[str]:
    """The lines of /proc/locks for a POSIX record lock this process holds on ``path``."""
    inode = f":{path.stat().st_ino}"
    return [line for line in Path("/proc/locks").read_text().splitlines()
            if " POSIX " in line and f" {os.getpid()} " in line and inode in line.split()[5]]


def test_a_sent_mails_log_line_comes_once_its_mark_is_committed_and_the_turn_is_free(
        tmp_path: Path, smtp_sink: Any) -> None:
    """Formatting and writing the "sent" line took an eighth of a mail's hold of the couriers'
    turn (the at-most-one-resent window, which bounds the drain after a backlog): it is written
    after the mark, outside the turn, and so says what the database already knows."""
    daemon = acknowledgements_queued(tmp_path, smtp_sink, 3, "logged")
    turn_file = tmp_path / "turn"
    turn_file.touch()
    fd = os.open(turn_file, os.O_RDWR)
    daemon.outbox.turn_lock = fd
    seen: list[tuple[str, str, list[str]]] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = re.match(r"<([^>]+)> sent ", record.getMessage())
            if found is None:
                return
            with daemon.engine.connect() as conn:  # another connection: only what is committed
                status = conn.execute(text("SELECT status FROM outbox WHERE message_id = :mid"),
                                      {"mid": found.group(1)}).scalar()
            seen.append((found.group(1), str(status), _posix_locks_of_this_process(turn_file)))

    watch = Watch(logging.INFO)
    logger = logging.getLogger("maild.smtp")
    logger.addHandler(watch)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert daemon.outbox.drain().sent == 3
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
        os.close(fd)
    assert len(seen) == 3, seen
    assert all(status == "sent" for _, status, _ in seen), seen
    assert all(locks == [] for _, _, locks in seen), "logged while the turn was held"


def test_a_few_due_mails_go_over_one_connection_in_exact_order(tmp_path: Path, smtp_sink: Any) -> None:
    daemon = acknowledgements_queued(tmp_path, smtp_sink, 5, "few")
    assert daemon.outbox.connections > 1 and daemon.outbox.parallel_from > 5
    assert daemon.outbox.drain().sent == 5
    assert smtp_sink.connections == 1
    assert [m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(5)] == [f"<few{i}@acme.pl>" for i in range(5)]


def test_relay_lost_mid_backlog_gives_every_unsent_mail_back_in_order(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """Two connections, the relay goes away while both have a mail in hand: the drain
    stops, every row not sent stays pending and due, and once the relay is back each
    mail arrives, the rest oldest first, none more than once beyond the one a
    connection may have had in flight."""
    daemon = acknowledgements_queued(tmp_path, smtp_sink, 12, "lost")
    daemon.outbox.connections, daemon.outbox.parallel_from = 2, 2
    real_send = SmtpSender.send
    calls = 0

    async def relay_dies_at_the_fifth(self: SmtpSender, envelope: Envelope,
                                      before_dot: BeforeDot | None = None, logged: bool = True) -> Delivery:
        nonlocal calls
        calls += 1
        if calls == 5:
            smtp_sink.stop()
        return await real_send(self, envelope, before_dot, logged)

    monkeypatch.setattr(SmtpSender, "send", relay_dies_at_the_fifth)
    with pytest.raises(SmtpUnavailable):
        daemon.outbox.drain()
    monkeypatch.undo()
    with daemon.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.created_at, OutboxRow.id)))
    pending = [r.message_id for r in rows if r.status == "pending"]
    # the fifth and later never went out; of the four before it, the one the other
    # connection had in hand may have failed with the relay, the rest stay sent
    assert 8 <= len(pending) <= 9, pending
    assert all(r.next_attempt_at <= daemon.clock() for r in rows if r.status == "pending"), "due at once"
    first = [m.parsed["In-Reply-To"] for m in smtp_sink.messages]
    smtp_sink.start()
    daemon.outbox.parallel_from = 100  # the rest over one connection, to see their order
    assert daemon.outbox.drain().sent == len(pending)
    received = [m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(len(first) + len(pending))]
    assert sorted(set(received)) == sorted(f"<lost{i}@acme.pl>" for i in range(12))
    assert len(received) - 12 <= 1, "at most the one mail in flight is sent twice"
    by_message_id = {r.message_id: r for r in rows}
    resent = [m.parsed["Message-ID"].strip("<>") for m in smtp_sink.messages[len(first):]]
    assert resent == pending and [by_message_id[m].created_at for m in resent] == sorted(
        by_message_id[m].created_at for m in resent), "oldest first"


def test_a_database_fault_lets_the_other_connection_finish_its_mail(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """One worker cannot record its mail (the database fails): the drain raises that
    error, but only after the other connection has recorded the mail it had in hand,
    so no mail but the faulty one was sent without being marked."""
    daemon = acknowledgements_queued(tmp_path, smtp_sink, 10, "db")
    daemon.outbox.connections, daemon.outbox.parallel_from = 2, 2
    real_record = Outbox._record
    calls = 0

    def failing_third(self: Outbox, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OperationalError("UPDATE outbox", {}, Exception("disk I/O error"))
        real_record(self, *args)

    monkeypatch.setattr(Outbox, "_record", failing_third)
    with pytest.raises(OperationalError):
        daemon.outbox.drain()
    with daemon.sessions() as session:
        sent = set(session.scalars(select(OutboxRow.message_id).where(OutboxRow.status == "sent")))
    received = {m.parsed["Message-ID"].strip("<>") for m in smtp_sink.wait_for(len(sent) + 1)}
    assert len(sent) == 3, "the two before it and the other connection's mail in hand"
    assert sent < received and len(received - sent) == 1, "only the faulty mail went out unrecorded"


def test_mail_that_cannot_be_rendered_waits_and_says_why(tmp_path: Path, smtp_sink: Any) -> None:
    daemon, clock = setup(tmp_path, smtp_sink)
    daemon.ingest_all()
    with daemon.sessions() as session, session.begin():
        session.scalars(select(OutboxRow)).one().template = "no_such_template"
    result = daemon.outbox.drain()
    row = outbox_row(daemon)
    assert (result.sent, result.retry) == (0, 1)
    assert row.status == "pending" and row.last_error.startswith("cannot render: template")
    assert "no_such_template" in row.last_error
    assert row.next_attempt_at > clock.now
    assert smtp_sink.messages == []


def test_mail_the_relay_stalls_on_every_time_is_set_aside_so_the_queue_moves(tmp_path: Path, smtp_sink: Any) -> None:
    """A relay that connects and then goes silent on one mail: after a few tries that
    mail waits out its own backoff instead of holding every mail behind it."""
    from dataclasses import replace

    from maild.outbound.outbox import STALLS_BEFORE_SET_ASIDE

    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(make_mail(msgid="<stall1@acme.pl>", sender="jan@acme.pl"))
    cfg = load_config(config)
    cfg = replace(cfg, smtp=replace(cfg.smtp, timeout_seconds=1))
    clock = Clock(datetime.now(UTC))
    daemon = Daemon(cfg, clock)
    assert daemon.ingest_all() == {"ticket": 1}
    box.add(make_mail(msgid="<stall2@acme.pl>", sender="ola@acme.pl"))
    clock.now += timedelta(seconds=1)
    assert daemon.ingest_all() == {"ticket": 1}
    smtp_sink.stall_rcpt = {"jan@acme.pl"}
    smtp_sink.stall_seconds = 3
    for attempt in range(1, STALLS_BEFORE_SET_ASIDE):
        with pytest.raises(SmtpUnavailable):
            daemon.outbox.drain()
        assert not smtp_sink.messages, f"attempt {attempt}: the relay as a whole is backed off, in order"
    result = daemon.outbox.drain()
    assert result.sent == 1 and result.retry == 1
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [["ola@acme.pl"]]
    with daemon.sessions() as session:
        stalled = session.scalars(select(OutboxRow).where(OutboxRow.status == "pending")).one()
    assert stalled.recipients == ["jan@acme.pl"] and stalled.attempts == STALLS_BEFORE_SET_ASIDE
    assert stalled.next_attempt_at == clock.now + retry_delay(STALLS_BEFORE_SET_ASIDE, RETRY_BASE)
    assert "timed out" in stalled.last_error
    smtp_sink.stall_rcpt = set()
    clock.now = stalled.next_attempt_at
    assert daemon.outbox.drain().sent == 1
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.wait_for(2)) == ["jan@acme.pl", "ola@acme.pl"]


def test_a_drain_holds_its_rows_from_other_daemons_only_while_it_runs(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any, pg_url: str) -> None:
    """PostgreSQL, several daemons on one outbox: while one drain sends, the rows it claimed
    are held by its own session's advisory locks, and another daemon's claim skips every one
    of them (so a row is never sent by two live daemons); once the drain is done none is held."""
    from maild.outbound.outbox import OUTBOX_LOCK_CLASS
    from sqlalchemy import text

    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=pg_url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(30):
        box.add(make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<held{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    other = Daemon(load_config(config), Clock(datetime.now(UTC)))
    held_query = text("SELECT objid::integer FROM pg_locks WHERE locktype = 'advisory' AND classid = CAST(:c AS oid) "
                      "AND objsubid = 2").bindparams(c=OUTBOX_LOCK_CLASS)
    seen: list[tuple[set[int], set[int]]] = []
    real_send = SmtpSender.send

    async def watching_send(self: SmtpSender, envelope: Envelope, before_dot: BeforeDot | None = None,
                            logged: bool = True) -> Delivery:
        if not seen:
            with daemon.sessions() as session:
                held = set(session.scalars(held_query))
            seen.append((held, {row.id for row in other.outbox._claim(100, peek=True)}))
        return await real_send(self, envelope, before_dot, logged)

    monkeypatch.setattr(SmtpSender, "send", watching_send)
    assert daemon.outbox.drain().sent == 30
    [(held, others)] = seen
    with daemon.sessions() as session:
        queued = set(session.scalars(select(OutboxRow.id)))
        assert set(session.scalars(held_query)) == set(), "nothing held once the drain is done"
    assert held == queued, "the drain held every row it claimed"
    assert others == set(), "another daemon finds none of them due"
    for d in (daemon, other):
        d.sessions.kw["bind"].dispose()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_refused_and_unrenderable_mail_between_sent_mail_is_recorded(
        tmp_path: Path, smtp_sink: Any, db: str, request: pytest.FixtureRequest) -> None:
    """Marks go over the drain's own connection and the rare outcomes through the session: a
    mail the relay refuses and one that cannot be built (its file is gone), among mail that goes
    out, are each recorded (on SQLite the session must not write on a read snapshot the marks
    outdated: "database is locked")."""
    url = request.getfixturevalue("pg_migrated_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url, migrated=True)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(8):
        box.add(make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<mix{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    daemon.outbox.parallel_from = 100  # one connection, in order
    with daemon.sessions() as session, session.begin():
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
        # a file that is not in the storage: the chunk's attachments are looked up (a read in
        # the drain's session before the first mark), then this mail cannot be built
        headers = {**rows[2].context["_headers"], "attachments": [
            {"sha256": "0" * 64, "content_type": "application/pdf", "filename": "gone.pdf"}]}
        rows[2].context = {**rows[2].context, "_headers": headers}
    smtp_sink.reject_rcpt["jan5@acme.pl"] = 550
    result = daemon.outbox.drain()
    assert (result.sent, result.retry, result.failed) == (6, 1, 1)
    with daemon.sessions() as session:
        states = {r.recipients[0]: (r.status, r.attempts, r.last_error[:13])
                  for r in session.scalars(select(OutboxRow))}
    assert states["jan2@acme.pl"] == ("pending", 0, "cannot render")
    assert states["jan5@acme.pl"] == ("failed", 1, "550 5.1.1 Mai")
    assert sum(state == ("sent", 1, "") for state in states.values()) == 6
    daemon.sessions.kw["bind"].dispose()



def test_mail_sent_while_the_database_went_away_is_marked_not_sent_again(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """The relay took a mail, then its sent mark failed (the database went away between the
    two): the same daemon, once the database is back, records it sent instead of sending it
    a second time (a PostgreSQL restart under a running daemon did just that in CI)."""
    daemon = acknowledgements_queued(tmp_path, smtp_sink, 3, "gone")
    real_mark = outbox_module._SqliteLine.mark_sent
    marks: list[int] = []

    def gone_once(line: Any, params: dict[str, Any]) -> None:
        marks.append(params["row_id"])
        if len(marks) == 1:
            raise OperationalError("UPDATE outbox", {}, Exception("server closed the connection unexpectedly"))
        real_mark(line, params)

    monkeypatch.setattr(outbox_module._SqliteLine, "mark_sent", gone_once)
    with pytest.raises(OperationalError):
        daemon.outbox.drain()
    assert list(daemon.outbox.unmarked) == marks[:1]
    assert daemon.outbox.drain().sent == 2
    with daemon.sessions() as session:
        assert set(session.scalars(select(OutboxRow.status))) == {"sent"}
    received = [m.parsed["Message-ID"] for m in smtp_sink.wait_for(3)]
    assert len(received) == 3 and len(set(received)) == 3, "each mail once"
    assert daemon.outbox.unmarked == {}


def test_the_sqlite_mark_on_the_drivers_cursor_stores_what_sqlalchemy_stores_and_raises_its_errors(
        tmp_path: Path, smtp_sink: Any) -> None:
    """SQLite's sent mark goes to the driver's cursor: the row reads back through the ORM as
    a mark through SQLAlchemy leaves it (the same ``sent_at`` text, to the microsecond), and
    a driver error (the database locked by another writer) comes as SQLAlchemy's
    OperationalError, which the unmarked-mail memory catches."""
    import sqlite3

    daemon = acknowledgements_queued(tmp_path, smtp_sink, 1, "rawsqlite")
    with daemon.sessions() as session:
        row_id = session.scalars(select(OutboxRow.id)).one()
    at = datetime(2026, 12, 6, 10, 11, 12, 345678, tzinfo=UTC)
    line = outbox_module._SqliteLine(daemon.sessions)
    try:
        line.mark_sent({"row_id": row_id, "sent_at": at, "refused": "x@acme.pl: 450 later"})
        with daemon.sessions() as session:
            row = session.get(OutboxRow, row_id)
            assert row is not None
            assert (row.status, row.sent_at, row.attempts, row.last_error) == ("sent", at, 1, "x@acme.pl: 450 later")
            stored = session.execute(text("SELECT sent_at FROM outbox")).scalar_one()
        assert stored == "2026-12-06 10:11:12.345678"
        blocker = sqlite3.connect(daemon.engine.url.database, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            line._dbapi.execute("PRAGMA busy_timeout=50")
            with pytest.raises(OperationalError, match="locked"):
                line.mark_sent({"row_id": row_id, "sent_at": at, "refused": ""})
        finally:
            blocker.close()
    finally:
        line.close()
    daemon.sessions.kw["bind"].dispose()



def _claim_as_run(engine: Any, box: Any) -> tuple[list[Any], list[tuple[str, Any]]]:
    """One claim of 200, and every statement it sent (to explain its SELECT as it ran)."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        return box._claim(200), seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def _generated_outbox_rows(engine: Any, count: int, status: str = "'pending'",
                           created_at: str = "now()", next_attempt_at: str = "now()") -> None:
    """``count`` acknowledgement rows made by the server (``g`` numbers them in the SQL given)."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO outbox (kind, ticket_id, message_id, recipients, automatic, template, language, context,"
            " status, attempts, created_at, next_attempt_at, dedupe_key, last_error) SELECT 'ack', NULL,"
            f" 'm' || g || '@x', '[\"a@b.c\"]', true, 'ack', 'pl', '{{}}', {status}, 0, {created_at},"
            f" {next_attempt_at}, 'k' || g, '' FROM generate_series(1, :n) g"), {"n": count})

@pytest.mark.parametrize("partition", [None, (1, 2)], ids=["one-drain", "odd-ids"])
def test_a_sqlite_claim_reads_its_oldest_pending_rows_in_the_index_order(tmp_path: Path,
                                                                        partition: tuple[int, int] | None) -> None:
    """SQLite's claim walks the pending rows in their order through ``ix_outbox_pending_order``
    (0014) and stops at its limit: no sort of every pending row with its context (SQLite's
    planner, asked ``status = ?``, took them all through ix_outbox_due and sorted them). With
    5,000 sent, 4,000 pending and due, and 1,000 pending but not due before them, it returns the
    oldest due rows, as a couriers' half too (``Outbox.partition``)."""
    from maild.config import SmtpSettings
    from maild.outbound.outbox import Sender
    from maild.storage.db import open_database

    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    engine = sessions.kw["bind"]
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:  # g: 1-5,000 sent, 5,001-6,000 pending later, 6,001-10,000 pending and due
        conn.exec_driver_sql(
            "WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < 10000)"
            " INSERT INTO outbox (kind, ticket_id, message_id, recipients, automatic, template, language, context,"
            " status, attempts, created_at, next_attempt_at, dedupe_key, last_error) SELECT 'ack', NULL,"
            " 'm' || g || '@x', '[\"a@b.c\"]', 1, 'ack', 'pl', '{\"ref\": \"SUP-' || g || '\"}',"
            " CASE WHEN g <= 5000 THEN 'sent' ELSE 'pending' END, 0,"
            " datetime('2026-12-05 12:00:00', '+' || g || ' seconds'),"
            " CASE WHEN g <= 6000 THEN '2026-12-06 13:00:00.000000' ELSE '2026-12-06 11:00:00.000000' END,"
            " 'k' || g, '' FROM n")
    box = Outbox(sessions, None, SmtpSettings(host="127.0.0.1", port=1, security="none"),  # type: ignore[arg-type]
                 Sender("a@b.c", "A", "i"), clock=lambda: now)
    box.partition = partition
    rows, seen = _claim_as_run(engine, box)
    due = [g for g in range(6001, 10001) if partition is None or g % partition[1] == partition[0]]
    assert [row.message_id for row in rows] == [f"m{g}@x" for g in due[:200]]
    assert rows[0].recipients == ["a@b.c"] and rows[0].automatic is True and rows[0].context == {"ref": f"SUP-{due[0]}"}
    [(statement, params)] = [(st, p) for st, p in seen if st.lstrip().upper().startswith("SELECT")]
    with engine.connect() as conn:
        plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
    assert "ix_outbox_pending_order" in plan and "TEMP B-TREE" not in plan, plan
    engine.dispose()


def test_the_postgres_mark_stores_what_sqlalchemy_stores_and_raises_its_errors(pg_url: str) -> None:
    """PostgreSQL's sent mark is one prepared statement on psycopg's libpq connection: rows read
    back through the ORM as a mark through SQLAlchemy leaves them (``sent_at`` to the
    microsecond, a non-ASCII refusal, attempts counted), the statement is prepared once for
    many marks, and a statement the server refuses (a row locked past the session's
    lock_timeout) comes as SQLAlchemy's OperationalError, which the unmarked-mail memory
    catches; the line goes on marking after it."""
    from maild.storage.db import open_database

    sessions = open_database(pg_url)
    engine = sessions.kw["bind"]
    _generated_outbox_rows(engine, 3)
    with sessions() as session:
        ids = list(session.scalars(select(OutboxRow.id).order_by(OutboxRow.id)))
    at = datetime(2026, 12, 6, 10, 11, 12, 345678, tzinfo=UTC)
    line = outbox_module._DrainLine(sessions, 10)
    try:
        line.mark_sent({"row_id": ids[0], "sent_at": at, "refused": "żaneta@acme.pl: 450 później"})
        line.mark_sent({"row_id": ids[1], "sent_at": at.replace(microsecond=0), "refused": ""})
        with sessions() as session:
            first, second, third = (session.get(OutboxRow, row_id) for row_id in ids)
            assert first is not None and second is not None and third is not None
            assert (first.status, first.sent_at, first.attempts, first.last_error) == (
                "sent", at, 1, "żaneta@acme.pl: 450 później")
            assert (second.status, second.sent_at, second.attempts, second.last_error) == (
                "sent", at.replace(microsecond=0), 1, "")
            assert third.status == "pending"
            prepared = session.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
        assert line.marks == 2
        with engine.connect() as blocker:
            blocker.execute(text("SELECT id FROM outbox WHERE id = :i FOR UPDATE"), {"i": ids[2]})
            line.conn.exec_driver_sql("SET lock_timeout = '50ms'")
            with pytest.raises(OperationalError, match="lock"):
                line.mark_sent({"row_id": ids[2], "sent_at": at, "refused": ""})
            blocker.rollback()
        line.mark_sent({"row_id": ids[2], "sent_at": at, "refused": ""})
        names = line.conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars().all()
        assert names.count("maild_mark_sent") == 1, names
    finally:
        line.close()
    with sessions() as session:
        assert session.get(OutboxRow, ids[2]).status == "sent"  # type: ignore[union-attr]
    assert prepared == 0  # another session: the statement is the line's own
    engine.dispose()


def test_a_postgres_mark_whose_session_died_is_remembered_and_not_sent_again(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any, pg_url: str) -> None:
    """PostgreSQL: the sent mark goes on the driver's own cursor; when the drain's session
    dies between the relay's "250" and the mark (its backend terminated, as a server
    restart would), the error comes as SQLAlchemy's OperationalError, the mail is kept in
    the unmarked memory, and the next drain marks it instead of sending it again."""
    from maild.outbound.outbox import OUTBOX_LOCK_CLASS
    from sqlalchemy import text

    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=pg_url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(4):
        box.add(make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<rawmark{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    real_send = SmtpSender.send
    sent: list[str] = []

    async def line_dies_after_the_second(self: SmtpSender, envelope: Envelope,
                                         before_end: BeforeDot | None = None, logged: bool = True) -> Delivery:
        delivery = await real_send(self, envelope, before_end, logged)
        sent.append(envelope.recipients[0])
        if len(sent) == 2:
            with daemon.sessions() as session, session.begin():
                session.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = CAST(:c AS oid) AND objsubid = 2").bindparams(c=OUTBOX_LOCK_CLASS))
        return delivery

    monkeypatch.setattr(SmtpSender, "send", line_dies_after_the_second)
    with pytest.raises(OperationalError):
        daemon.outbox.drain()
    monkeypatch.undo()
    assert len(daemon.outbox.unmarked) == 1
    assert daemon.outbox.drain().sent == 2
    with daemon.sessions() as session:
        assert set(session.scalars(select(OutboxRow.status))) == {"sent"}
    received = [m.parsed["Message-ID"] for m in smtp_sink.wait_for(4)]
    assert len(received) == 4 and len(set(received)) == 4, "each mail once"
    assert daemon.outbox.unmarked == {}
    daemon.sessions.kw["bind"].dispose()


def test_a_claim_that_loses_its_rows_to_another_drain_looks_again(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any, pg_url: str) -> None:
    """PostgreSQL: another drain can advisory-lock the rows a claim found between the claim's
    read of pg_locks and its row locks; that claim then takes none. It looks again rather than
    reporting nothing due, which would end a courier asked to finish with mail still queued."""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=pg_url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(6):
        box.add(make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<lost-race{i}@acme.pl>"))
    daemon = Daemon(load_config(config), Clock(datetime.now(UTC)))
    daemon.ingest_all()
    real_take = outbox_module._DrainLine.take
    takes: list[int] = []

    def loses_the_first_race(line: Any, ids: list[int]) -> set[int]:
        takes.append(len(ids))
        return set() if len(takes) == 1 else real_take(line, ids)

    monkeypatch.setattr(outbox_module._DrainLine, "take", loses_the_first_race)
    daemon.outbox.wait_for_more = lambda: False  # as a courier asked to finish: nothing due ends it
    assert daemon.outbox.drain().sent == 6
    assert takes[:2] == [6, 6]
    daemon.sessions.kw["bind"].dispose()


@pytest.mark.parametrize("analyzed", [True, False], ids=["with-statistics", "new-database"])
def test_a_postgres_claim_reads_its_oldest_pending_rows_in_the_index_order(pg_url: str, analyzed: bool) -> None:
    """A claim's SELECT (the oldest due rows, ``FOR UPDATE SKIP LOCKED``) walks the pending rows
    in its own order through ``ix_outbox_pending_order`` (0014) and stops at its limit: no sort
    of every pending row, with 5,000 pending and as many sent, and also in a new database
    before any statistics (a cycle's first claims)."""
    from maild.outbound.outbox import Sender
    from maild.config import SmtpSettings
    from maild.storage.db import open_database

    sessions = open_database(pg_url)
    engine = sessions.kw["bind"]
    _generated_outbox_rows(engine, 10_000, status="CASE WHEN g <= 5000 THEN 'sent' ELSE 'pending' END",
                           created_at="now() - interval '1 day' + g * interval '1 second'",
                           next_attempt_at="now() - interval '1 day'")
    if analyzed:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE outbox")
    box = Outbox(sessions, None, SmtpSettings(host="127.0.0.1", port=1, security="none"),  # type: ignore[arg-type]
                 Sender("a@b.c", "A", "i"))
    rows, seen = _claim_as_run(engine, box)
    assert [row.message_id for row in rows] == [f"m{g}@x" for g in range(5001, 5201)]
    *before, (statement, params) = seen  # the claim's transaction as it ran, its SELECT explained
    assert "FOR UPDATE SKIP LOCKED" in statement
    with engine.begin() as conn:
        for earlier, values in before:
            conn.exec_driver_sql(earlier, values)
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params))
    assert "ix_outbox_pending_order" in plan and "Sort" not in plan, plan
    engine.dispose()
