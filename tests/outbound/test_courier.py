"""The courier: the outbox sent by a forked process while the mailbox is read (PostgreSQL and a
SQLite file), and the two couriers that send the rest once it is read."""
from __future__ import annotations

import fcntl
import mailbox
import os
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.outbound.courier import Courier, CourierReport
from maild.storage.models import OutboxRow
from tests.helpers import maildir_source, make_mail, write_config


def backlog(tmp_path: Path, sink: Any, url: str, n: int, send_while_reading: bool = True) -> Daemon:
    """A daemon over a Maildir of ``n`` new requests, read 10 at a time."""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=sink.port, database_url=url,
                          top="batch_size = 10")
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(n):
        box.add(make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<courier{i}@acme.pl>"))
    cfg = load_config(config)
    return Daemon(replace(cfg, daemon=replace(cfg.daemon, send_while_reading=send_while_reading)))


def queued(tmp_path: Path, sink: Any, url: str, n: int) -> Daemon:
    """The backlog read with nothing sent: ``n`` acknowledgements queued for a courier of the test's own."""
    daemon = backlog(tmp_path, sink, url, n, send_while_reading=False)
    daemon.ingest_all()
    assert pending(daemon) == n and sink.messages == []
    return daemon


def sending_after_reading(daemon: Daemon) -> Daemon:
    """The daemon of ``queued``, with ``send_while_reading`` on again for the sending after the reading."""
    daemon.config = replace(daemon.config, daemon=replace(daemon.config.daemon, send_while_reading=True))
    return daemon


def pending(daemon: Daemon) -> int:
    with daemon.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status == "pending"))
                   or 0)


def test_the_backlog_is_acknowledged_while_it_is_read_each_mail_once(tmp_path: Path, smtp_sink: Any,
                                                                        pg_url: str, monkeypatch: Any) -> None:
    n = 120
    daemon = backlog(tmp_path, smtp_sink, pg_url, n)
    # a relay that takes a moment, so reading and sending overlap for sure and mail is left when the
    # reading ends (at 5 ms a mail the first courier sometimes sent all 120 while they were read);
    # claims of 10, so the first courier cannot hold all of the rest when the second one starts
    smtp_sink.delay_seconds = 0.02
    monkeypatch.setattr("maild.outbound.courier.CLAIM_CHUNK", 10)
    reports: list[CourierReport] = []

    def recording(courier: Courier) -> None:
        stop = courier.stop

        def record() -> CourierReport:
            reports.append(stop())
            return reports[-1]

        courier.stop = record  # type: ignore[method-assign]

    recording(daemon.courier)
    recording(daemon.second_courier)
    ingested = daemon.ingest_all()
    assert sum(ingested.values()) == n
    assert daemon.courier.running and len(smtp_sink.messages) > 0, "mail went out while the backlog was read"
    assert not daemon.second_courier.running
    drained = daemon.drain()  # a second courier joins the first, both send what is due and end
    assert not daemon.courier.running and not daemon.second_courier.running
    assert len(reports) == 2 and all(r.fault is None and r.relay_error is None for r in reports)
    first, second = reports[0].sent.sent, reports[1].sent.sent
    assert first > 0 and second > 0, "both couriers sent"
    assert daemon.sent_while_reading.sent == first + second and daemon.sent_after_reading == second
    assert drained.sent == n - first - second and pending(daemon) == 0
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1


def test_the_courier_sends_on_through_the_reading_slices(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    """A backlog read in slices: while mail is left to read, the daemon reads on and leaves the
    sending to the courier (no turn of sending keeps the mailbox waiting); the last cycle stops
    the courier and sends what is left itself. Each cycle's report counts the courier's mail."""
    n = 60
    daemon = backlog(tmp_path, smtp_sink, pg_url, n)
    daemon.config = replace(daemon.config, daemon=replace(daemon.config.daemon, slice_seconds=0))
    smtp_sink.delay_seconds = 0.005
    first = daemon.cycle()
    assert first.more_waiting and first.outbox.sent == 0 and daemon.courier.running
    report = daemon.run_once()
    assert not daemon.courier.running and pending(daemon) == 0
    assert first.outbox.sent + report.outbox.sent == n
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1


def test_without_send_while_reading_the_outbox_waits_for_the_reading(tmp_path: Path, smtp_sink: Any,
                                                                      pg_url: str) -> None:
    daemon = queued(tmp_path, smtp_sink, pg_url, 40)
    assert daemon.sent_while_reading.sent == 0


def test_the_daemons_own_sessions_survive_the_courier(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    """The fork copies the daemon's open database connections; the courier never uses,
    closes or finalises them, so the daemon's sessions (its mailbox lock among them)
    are the same server sessions after the courier has come and gone."""
    daemon = queued(tmp_path, smtp_sink, pg_url, 20)
    assert daemon.mailbox_lock.acquire()
    held = daemon.mailbox_lock._conn
    assert held is not None
    lock_pid = held.execute(text("SELECT pg_backend_pid()")).scalar()
    pooled = daemon.sessions.kw["bind"].connect()  # one checked out, and one idle in the pool
    pooled_pid = pooled.execute(text("SELECT pg_backend_pid()")).scalar()
    with daemon.sessions() as session:
        idle_pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
    courier = Courier(daemon.outbox)
    courier.start()
    courier.poke()
    deadline = time.monotonic() + 20
    while pending(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    report = courier.stop()
    assert report.sent.sent == 20 and report.fault is None and pending(daemon) == 0
    assert held.execute(text("SELECT pg_backend_pid()")).scalar() == lock_pid
    assert pooled.execute(text("SELECT pg_backend_pid()")).scalar() == pooled_pid
    with daemon.sessions() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar() == idle_pid
    with daemon.sessions() as session:  # the lock is still the daemon's: the server lists it for its session
        holders = session.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted")).scalars().all()
    assert lock_pid in holders
    pooled.close()
    daemon.mailbox_lock.release()


def test_a_stopped_courier_finishes_the_mail_in_hand_and_gives_the_rest_back(tmp_path: Path, smtp_sink: Any,
                                                                            pg_url: str) -> None:
    daemon = queued(tmp_path, smtp_sink, pg_url, 30)
    smtp_sink.delay_seconds = 0.1
    courier = Courier(daemon.outbox)
    courier.start()
    deadline = time.monotonic() + 20
    while len(smtp_sink.messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    report = courier.stop()
    assert report.fault is None
    sent = len(smtp_sink.messages)
    assert 3 <= report.sent.sent == sent < 30, "stopped mid-outbox, every mail it sent marked"
    assert pending(daemon) == 30 - sent
    smtp_sink.delay_seconds = 0
    assert daemon.drain().sent == 30 - sent  # the rows it had claimed are due again at once
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(30))
    assert len(received) == 30 and max(received.values()) == 1


def test_a_relay_away_ends_the_courier_and_is_backed_off(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    daemon = backlog(tmp_path, smtp_sink, pg_url, 30)
    smtp_sink.stop()
    ingested = daemon.ingest_all()
    assert sum(ingested.values()) == 30
    deadline = time.monotonic() + 20
    while not daemon.courier.ended():
        assert time.monotonic() < deadline, "the courier ends when the relay is away"
        time.sleep(0.05)
    assert daemon.drain().sent == 0
    assert daemon._smtp_failures == 1 and daemon._smtp_next > time.monotonic(), "the relay is backed off"
    assert daemon.sent_while_reading.errors, "the relay's fault is in the cycle's report"
    assert pending(daemon) == 30
    assert daemon.drain().sent == 0, "nothing is tried while the backoff runs"
    smtp_sink.start()
    daemon._smtp_next = 0.0
    assert daemon.drain().sent == 30 and daemon._smtp_failures == 0


def test_a_courier_that_dies_is_reported_and_its_mail_stays_queued(tmp_path: Path, smtp_sink: Any,
                                                                  pg_url: str) -> None:
    daemon = queued(tmp_path, smtp_sink, pg_url, 20)
    smtp_sink.stop()  # nothing goes out: the courier retries its connection until killed
    courier = Courier(daemon.outbox)
    courier.start()
    assert courier.pid is not None
    os.kill(courier.pid, 9)
    report = courier.stop()
    assert report.fault is not None and report.sent.sent == 0
    assert pending(daemon) == 20


def test_the_courier_keeps_no_copy_of_the_daemons_pipes(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    """A pipe the daemon holds (its parse worker's) reads as closed once the daemon closes its
    end, also while a courier forked after it runs."""
    daemon = queued(tmp_path, smtp_sink, pg_url, 5)
    read_end, write_end = os.pipe()
    courier = Courier(daemon.outbox)
    courier.start()
    try:
        deadline = time.monotonic() + 20
        while pending(daemon) and time.monotonic() < deadline:  # the courier is well under way
            time.sleep(0.05)
        os.close(write_end)
        os.set_blocking(read_end, False)
        assert os.read(read_end, 1) == b"", "end of file: no other process holds the write end"
    finally:
        os.close(read_end)
        courier.stop()


def test_two_couriers_send_the_rest_taking_one_turn_between_a_final_dot_and_its_mark(
        tmp_path: Path, smtp_sink: Any, pg_url: str, monkeypatch: Any) -> None:
    """After the reading, a second courier joins the first and both send the rest of the
    backlog; of the two, only one at a time holds a mail between its final "." and its
    committed mark (the at-most-one-resend window), checked by each process writing a line
    to one file when it has written a message, takes the turn, writes the "." and gives up
    the turn: each mail's message goes out before its turn, and a courier writes its next
    message while the other holds the turn (the relay's 10 ms on each mail)."""
    journal = tmp_path / "turns.log"
    _journal_turns(monkeypatch, journal)
    # claims of 10: with 200 the first courier could claim all that was left just before the second
    # one started, which then sent nothing
    monkeypatch.setattr("maild.outbound.courier.CLAIM_CHUNK", 10)
    n = 150
    daemon = backlog(tmp_path, smtp_sink, pg_url, n)
    smtp_sink.delay_seconds = 0.01
    daemon.ingest_all()
    assert daemon.courier.running and pending(daemon) > 40, "much is left when the reading ends"
    assert daemon.drain().sent == 0, "the couriers sent it all"
    assert pending(daemon) == 0 and daemon.sent_after_reading > 0
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1
    assert _check_turns(journal, n) > 0, "a courier wrote a message while the other held the turn"


def test_without_a_file_for_the_shared_turn_one_courier_sends_and_the_daemon_the_rest(
        tmp_path: Path, smtp_sink: Any, pg_url: str, monkeypatch: Any) -> None:
    """No temporary file to lock (a read-only system): the courier still sends while the backlog
    is read, no second courier joins it (two would have no shared turn), the daemon sends the rest."""
    import tempfile

    def no_temporary_folder(*args: Any, **kwargs: Any) -> Any:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_temporary_folder)
    n = 60
    daemon = backlog(tmp_path, smtp_sink, pg_url, n)
    smtp_sink.delay_seconds = 0.01
    daemon.ingest_all()
    assert daemon.courier.running and daemon.courier.turn_fd is None
    drained = daemon.drain()
    assert daemon.sent_after_reading == 0 and not daemon.second_courier.running
    assert drained.sent + daemon.sent_while_reading.sent == n and pending(daemon) == 0
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1


def _journal_turns(monkeypatch: Any, journal: Path) -> None:
    """Each process writes "<pid> wrote" to ``journal`` once a mail's message is written to
    the relay's connection (aiosmtplib's protocol's ``write`` of the bytes holding its
    Message-ID header), "<pid> in" when the mail takes the couriers' turn, "<pid> dot" when
    its final "." is written and "<pid> out" when it gives the turn up."""
    from aiosmtplib.protocol import SMTPProtocol

    from maild.outbound import outbox as outbox_module

    real_take, real_release = outbox_module._Turn.take, outbox_module._Turn.release
    real_write = SMTPProtocol.write

    def note(event: str) -> None:
        with open(journal, "a") as out:
            out.write(f"{os.getpid()} {event}\n")

    async def take(turn: Any) -> None:
        held = turn.held
        await real_take(turn)
        if not held:
            note("in")

    def release(turn: Any) -> None:
        if turn.held:
            note("out")
        real_release(turn)

    def write(protocol: Any, data: bytes) -> None:
        real_write(protocol, data)
        if data == b".\r\n":
            note("dot")
        elif b"\r\nMessage-ID: " in data:
            note("wrote")

    monkeypatch.setattr(outbox_module._Turn, "take", take)
    monkeypatch.setattr(outbox_module._Turn, "release", release)
    monkeypatch.setattr(SMTPProtocol, "write", write)


def _check_turns(journal: Path, mails: int) -> int:
    """The journal's turns strictly alternate across the processes, each from a mail's final
    "." to its mark, taken only with a message written and not yet ended (a courier's own
    connections take the turn in turns too); returns how many messages were written while
    another mail held the turn (the overlap the turn at the "." allows)."""
    events = [tuple(line.split()) for line in journal.read_text().splitlines()]
    assert len(events) == 4 * mails
    pids = {pid for pid, _ in events}
    assert len(pids) == 2, "two processes sent"
    count = {(pid, event): 0 for pid in pids for event in ("wrote", "in", "dot", "out")}
    overlap, holder = 0, None
    for pid, event in events:
        if event == "in":
            assert holder is None, "one turn at a time across the couriers"
            assert count[pid, "wrote"] > count[pid, "in"], "the turn is taken once the message is written"
            holder = pid
        elif event == "dot":
            assert holder == pid, "the final dot only inside the turn"
        elif event == "out":
            assert holder == pid and count[pid, "dot"] == count[pid, "in"], "the turn given up after the dot"
            holder = None
        elif holder is not None:
            overlap += 1
        count[pid, event] += 1
    return overlap


def test_sqlite_two_couriers_send_a_backlog_after_the_reading_each_row_by_one(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """SQLite: once the mailbox is read with at least SQLITE_COURIERS_FROM mails due, two
    couriers send them, each claiming only its half of the rows (ids even / odd: no row locks
    to skip on SQLite), one turn at a time across the two between a mail's final "." and its
    committed mark (its message written before), each mail once, and the daemon's own SQLite
    connections closed before the fork (none of SQLite's state is carried into a courier).
    The backlog is read with nothing sent here (``queued``), so every row is theirs to claim."""
    from maild.outbound import outbox as outbox_module
    from maild.outbound.courier import SQLITE_COURIERS_FROM

    journal = tmp_path / "turns.log"
    _journal_turns(monkeypatch, journal)
    claimed = tmp_path / "claims.log"
    real_claim = outbox_module.Outbox._claim

    def claim(outbox: Any, chunk: int, line: Any = None, peek: bool = False) -> Any:
        rows = real_claim(outbox, chunk, line, peek)
        if not peek:
            with open(claimed, "a") as out:
                out.writelines(f"{os.getpid()} {row.id}\n" for row in rows)
        return rows

    monkeypatch.setattr(outbox_module.Outbox, "_claim", claim)
    n = SQLITE_COURIERS_FROM + 20
    daemon = sending_after_reading(queued(tmp_path, smtp_sink, "", n))
    assert daemon.engine.dialect.name == "sqlite"
    before_fork = daemon.engine
    assert daemon.drain().sent == 0, "the couriers sent it all"
    assert pending(daemon) == 0 and daemon.sent_after_reading == n
    assert daemon.engine is before_fork and daemon.checkpoints is not None
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1
    claims = [line.split() for line in claimed.read_text().splitlines()]
    by_pid: dict[str, set[int]] = {}
    for pid, row_id in claims:
        by_pid.setdefault(pid, set()).add(int(row_id) % 2)
    assert str(os.getpid()) not in by_pid and len(by_pid) == 2, "two couriers claimed, the daemon none"
    assert sorted(tuple(parities) for parities in by_pid.values()) == [(0,), (1,)], "each its own half"
    assert len(claims) == n, "no row claimed twice"
    assert _check_turns(journal, n) > 0, "a message was written while another mail held the turn"


def test_sqlite_two_couriers_record_refusals_beside_each_others_marks(tmp_path: Path, smtp_sink: Any) -> None:
    """SQLite, two couriers: a mail the relay refuses (4xx: retried later, 5xx: failed) is
    recorded by a read-then-write transaction while the other courier commits marks; it
    takes the write lock at its BEGIN, so it never meets SQLite's refusal of a write on an
    outdated snapshot, and every row ends sent, failed or due later, each mail once."""
    from maild.outbound.courier import SQLITE_COURIERS_FROM

    n = SQLITE_COURIERS_FROM + 40
    smtp_sink.reject_rcpt = {f"user{i}@acme.pl": (450 if i % 2 else 550) for i in range(0, n, 7)}
    daemon = sending_after_reading(queued(tmp_path, smtp_sink, "", n))
    drained = daemon.drain()
    refused = len(smtp_sink.reject_rcpt)
    assert drained.sent == 0 and daemon.sent_after_reading == n - refused
    assert daemon.sent_while_reading.retry + daemon.sent_while_reading.failed == refused
    with daemon.sessions() as session:
        states = Counter(session.scalars(select(OutboxRow.status)))
    failed = sum(1 for code in smtp_sink.reject_rcpt.values() if code == 550)
    assert states == {"sent": n - refused, "failed": failed, "pending": refused - failed}
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n - refused))
    assert len(received) == n - refused and max(received.values()) == 1


def test_sqlite_the_backlog_is_acknowledged_while_it_is_read_each_mail_once(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """SQLite, as on PostgreSQL: a courier forked at the second batch sends while the backlog is
    read, marking each mail in the same file while the daemon commits its batches; it stops
    with the reading (before the sweep's and the other steps' transactions), and two
    couriers, each with its half of the rows, send the rest. Every batch is stored (none
    refused "database is locked"), every mail goes out once, and the daemon's connections
    and WAL thread were closed before the fork."""
    from maild.outbound.courier import READING_NICENESS, SQLITE_COURIERS_FROM

    forks: list[tuple[int, bool]] = []  # (connections checked in, WAL thread running) at each fork
    real_start = Courier.start

    def start(courier: Courier) -> None:
        pool = daemon.engine.pool
        forks.append((pool.checkedin(), daemon.checkpoints is not None and daemon.checkpoints._running))
        real_start(courier)

    monkeypatch.setattr(Courier, "start", start)
    monkeypatch.setattr("maild.outbound.courier.CLAIM_CHUNK", 10)
    from maild.outbound import outbox as outbox_module

    niceness = tmp_path / "niceness.log"  # "<pid> <niceness> <after_reading>" at each claim
    real_claim = outbox_module.Outbox._claim

    def claim(outbox: Any, chunk: int, line: Any = None, peek: bool = False) -> Any:
        with open(niceness, "a") as out:
            out.write(f"{os.getpid()} {os.getpriority(os.PRIO_PROCESS, 0)} {outbox.partition is not None}\n")
        return real_claim(outbox, chunk, line, peek)

    monkeypatch.setattr(outbox_module.Outbox, "_claim", claim)
    # two couriers take over from SQLITE_COURIERS_FROM here (a rest under SQLITE_TWO_AFTER_READING_FROM
    # is the reading courier's own: the next tests)
    monkeypatch.setattr("maild.outbound.courier.SQLITE_TWO_AFTER_READING_FROM", SQLITE_COURIERS_FROM)
    n = SQLITE_COURIERS_FROM + 120
    daemon = backlog(tmp_path, smtp_sink, "", n)
    assert daemon.engine.dialect.name == "sqlite"
    smtp_sink.delay_seconds = 0.005  # the reading outpaces the sending: mail is left for the couriers after it
    ingested = daemon.ingest_all()
    assert ingested == {"ticket": n}, "every batch stored"
    early = daemon.sent_while_reading.sent
    assert early > 0, "mail went out while the backlog was read"
    assert not daemon.courier.running, "the courier ended with the reading"
    assert daemon.ingestor.sessions.kw["bind"].get_execution_options().get("maild_immediate"), \
        "the batches take the write lock at their BEGIN"
    assert pending(daemon) >= SQLITE_COURIERS_FROM, "enough left for two couriers"
    drained = daemon.drain()
    assert drained.sent == 0 and daemon.sent_after_reading == n - early and pending(daemon) == 0
    assert forks == [(0, False)] * 3, "no SQLite connection or WAL thread of the daemon at any fork"
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {tuple(line.split()) for line in niceness.read_text().splitlines()}
    assert {(int(nice), after == "True") for pid, nice, after in seen if pid != str(os.getpid())} == {
        (min(ours + READING_NICENESS, 19), False), (ours, True)}, "the courier while reading runs niced, not those after it"
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1


def _reading_with_a_small_rest(tmp_path: Path, smtp_sink: Any, monkeypatch: Any, n: int) -> tuple[Daemon, list[Courier]]:
    """A SQLite backlog of ``n`` read 10 at a time with a slow relay: its courier is left with
    mail due (fewer than ``SQLITE_TWO_AFTER_READING_FROM``) when the reading ends. The couriers
    started are listed."""
    started: list[Courier] = []
    real_start = Courier.start

    def start(courier: Courier) -> None:
        started.append(courier)
        real_start(courier)

    monkeypatch.setattr(Courier, "start", start)
    monkeypatch.setattr("maild.outbound.courier.CLAIM_CHUNK", 10)
    daemon = backlog(tmp_path, smtp_sink, "", n)
    assert daemon.engine.dialect.name == "sqlite"
    return daemon, started


def test_sqlite_the_reading_courier_sends_a_small_rest_alone_before_the_reading_ends(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """SQLite: a whole reading that leaves fewer than ``SQLITE_TWO_AFTER_READING_FROM`` mails due
    hands them to no new courier: the one that sent while the mailbox was read sends them on the
    connections it has open and ends before ``ingest_all`` returns (before the sweep's and the
    other steps' transactions). Every mail goes out once; the drain finds nothing."""
    from maild.outbound.courier import SQLITE_TWO_AFTER_READING_FROM

    n = 150
    assert n < SQLITE_TWO_AFTER_READING_FROM
    daemon, started = _reading_with_a_small_rest(tmp_path, smtp_sink, monkeypatch, n)
    rests: list[int] = []
    real_finish = Courier.finish

    def finish(courier: Courier) -> None:
        rests.append(pending(daemon))
        real_finish(courier)

    monkeypatch.setattr(Courier, "finish", finish)
    smtp_sink.delay_seconds = 0.005  # the reading outpaces the sending: mail is left after it
    assert daemon.ingest_all() == {"ticket": n}
    assert rests and rests[0] > 0, "mail was left due at the reading's end"
    assert not daemon.courier.running, "the courier ended with the reading"
    assert pending(daemon) == 0 and daemon.sent_while_reading.sent == n, "it sent the rest before the reading returned"
    assert started == [daemon.courier], "no courier but the reading's"
    drained = daemon.drain()
    assert drained.sent == 0 and daemon.sent_after_reading == 0
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1


def test_sqlite_a_rest_the_reading_courier_cannot_send_within_a_slice_goes_to_the_drain(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """The wait for the reading courier's rest is bounded by the slice: a relay too slow for it
    gets the courier stopped after the mail in hand, and the drain sends what is left (its
    sweep and health check wait no longer than a slice). Each mail still goes out once."""
    n = 60
    daemon, started = _reading_with_a_small_rest(tmp_path, smtp_sink, monkeypatch, n)
    daemon.config = replace(daemon.config, daemon=replace(daemon.config.daemon, slice_seconds=1))
    smtp_sink.delay_seconds = 0.1  # ~10 a second: the rest of 60 takes longer than the 1 s slice
    started_at = time.monotonic()
    assert daemon.ingest_all() == {"ticket": n}
    took = time.monotonic() - started_at
    assert not daemon.courier.running
    left = pending(daemon)
    assert left > 0, "the slice ended the wait with mail still due"
    assert took < 1 + 1.5, f"the reading's end waited {took:.1f} s for its courier, past the slice"
    smtp_sink.delay_seconds = 0
    drained = daemon.drain()
    assert drained.sent == left and pending(daemon) == 0
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1


def test_sqlite_a_stop_during_the_reading_couriers_rest_ends_the_wait(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """A stop (SIGTERM) while the daemon waits for the reading courier's rest: the courier stops
    after the mail in hand at once, the rest stays queued."""
    n = 60
    daemon, started = _reading_with_a_small_rest(tmp_path, smtp_sink, monkeypatch, n)
    real_finish = Courier.finish

    def finish_then_stop(courier: Courier) -> None:
        real_finish(courier)
        daemon._stop = True  # as the SIGTERM handler sets it

    monkeypatch.setattr(Courier, "finish", finish_then_stop)
    smtp_sink.delay_seconds = 0.1
    started_at = time.monotonic()
    daemon.ingest_all()
    assert time.monotonic() - started_at < 5, "the stop ended the wait"
    assert not daemon.courier.running and pending(daemon) > 0, "the rest stays queued"


def _courier_behind_a_held_gate(tmp_path: Path, sink: Any, n: int) -> tuple[Daemon, int, Path]:
    """``n`` acknowledgements queued, and a courier sending them as while the backlog is read,
    started while this process holds the write gate as the daemon does while it stores a batch
    (a POSIX lock: the forked courier cannot take it). The gate's descriptor and the journal."""
    from maild.outbound.marks import JOURNAL_NAME

    daemon = queued(tmp_path, sink, "", n)
    daemon.close_checkpoints()
    daemon.engine.dispose()  # nothing of SQLite's carried into the fork, as _start_courier does
    gate = daemon._gate_fd()
    assert gate is not None
    courier = daemon.courier
    courier.write_gate, courier.turn_fd = gate, daemon._turn_fd()
    fcntl.lockf(gate, fcntl.LOCK_EX)
    courier.start()
    return daemon, gate, daemon.config.storage_path / JOURNAL_NAME


def test_sqlite_a_courier_sends_on_while_the_daemon_stores_a_batch_keeping_its_marks_in_the_journal(
        tmp_path: Path, smtp_sink: Any) -> None:
    """While the daemon holds the write gate (storing a batch), the courier's sent marks go to the
    journal and it sends the next mail; the rows read pending meanwhile and are not claimed again;
    once the gate is free they are committed in one go and the journal starts over. Before, the
    courier stood at its first mark until the batch committed."""
    n = 25
    daemon, gate, journal = _courier_behind_a_held_gate(tmp_path, smtp_sink, n)
    received = smtp_sink.wait_for(n, timeout=20)  # all of them while the gate is held
    time.sleep(0.3)
    assert len(smtp_sink.messages) == n, "no row claimed twice"
    assert len(journal.read_text().splitlines()) == n and pending(daemon) == n, "marked in the journal only"
    fcntl.lockf(gate, fcntl.LOCK_UN)  # the batch committed
    deadline = time.monotonic() + 10
    while pending(daemon) and time.monotonic() < deadline:  # the idle courier commits them at its next look
        time.sleep(0.05)
    assert pending(daemon) == 0 and journal.read_bytes() == b""
    daemon.courier.finish()
    report = daemon.courier.stop()
    assert report.fault is None and report.sent.sent == n
    assert max(Counter(m.parsed["In-Reply-To"] for m in received).values()) == 1


def test_sqlite_marks_a_killed_courier_kept_in_the_journal_are_committed_before_the_next_drain_sends(
        tmp_path: Path, smtp_sink: Any) -> None:
    """kill -9 of a courier whose marks are in the journal only: the next drain commits them
    first (``marks.replay``) and sends none of those mails again."""
    n = 20
    daemon, gate, journal = _courier_behind_a_held_gate(tmp_path, smtp_sink, n)
    smtp_sink.wait_for(n, timeout=20)
    deadline = time.monotonic() + 10
    while len(journal.read_text().splitlines()) < n and time.monotonic() < deadline:  # the last mark kept too
        time.sleep(0.01)
    pid = daemon.courier.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    fcntl.lockf(gate, fcntl.LOCK_UN)
    report = daemon.courier.stop()
    assert report.fault is not None, "the courier died"
    assert pending(daemon) == n and len(journal.read_text().splitlines()) == n
    drained = daemon.drain()
    assert drained.sent == 0 and pending(daemon) == 0 and journal.read_bytes() == b""
    time.sleep(0.3)
    assert len(smtp_sink.messages) == n, "no mail of the journal sent again"


def test_sqlite_replaying_a_journal_commits_pending_rows_once_and_skips_a_torn_line(
        tmp_path: Path, smtp_sink: Any, caplog: Any) -> None:
    """The journal's marks go to rows still pending only (applied twice, nothing changes), a line
    a full disk cut short is skipped and said, and the file is emptied."""
    from maild.outbound.marks import JOURNAL_NAME, replay

    daemon = queued(tmp_path, smtp_sink, "", 3)
    with daemon.sessions() as session:
        ids = sorted(session.scalars(select(OutboxRow.id)))
    journal = daemon.config.storage_path / JOURNAL_NAME
    journal.write_text(f'["2026-12-07 08:00:00.000000","",{ids[0]}]\n'
                       f'["2026-12-07 08:00:01.000000","x@y: 550 no",{ids[1]}]\n'
                       f'["2026-12-07 08:00:01.000000","",{ids[1]}]\n["2026-12-07 08:0')
    assert replay(daemon.sessions, journal) == 2
    assert journal.read_bytes() == b"" and "does not read whole" in caplog.text
    with daemon.sessions() as session:
        rows = {row.id: row for row in session.scalars(select(OutboxRow))}
    assert [rows[i].status for i in ids] == ["sent", "sent", "pending"]
    assert rows[ids[1]].attempts == 1 and rows[ids[1]].last_error == "x@y: 550 no", "the first mark of a row counts"
    assert replay(daemon.sessions, journal) == 0


def test_sqlite_a_batch_that_read_before_a_couriers_mark_still_writes(
        tmp_path: Path, smtp_sink: Any, monkeypatch: Any) -> None:
    """Once a courier sends while the backlog is read, a batch's transaction takes SQLite's write
    lock at its BEGIN: a mark committed between the batch's first read and its first write
    would otherwise leave it writing on an outdated snapshot, which SQLite refuses at once
    ("database is locked", SQLITE_BUSY_SNAPSHOT; no busy timeout waits it out). Here another
    connection writes right after each batch's first read, as a courier's mark may; it waits
    for the batch's commit, and every batch is stored."""
    import sqlite3
    import threading

    from maild.intake import pipeline

    daemon = backlog(tmp_path, smtp_sink, "", 60)
    database = daemon.engine.url.database
    assert database
    writers: list[threading.Thread] = []
    outcomes: list[str] = []
    real_known = pipeline.store.known_dedupe_keys

    def mark(n: int) -> None:
        conn = sqlite3.connect(database, timeout=30, isolation_level=None)
        try:
            conn.execute("INSERT INTO state (key, value, updated_at) VALUES (?, '', '2026-12-06 00:00:00')",
                         (f"probe{n}",))
            outcomes.append("committed")
        finally:
            conn.close()

    def known_then_a_mark(session: Any, keys: Any) -> Any:
        found = real_known(session, keys)  # the batch has read: its snapshot is taken
        writer = threading.Thread(target=mark, args=(len(writers),))
        writers.append(writer)
        writer.start()
        writer.join(0.2)  # a mark that is not held up commits now, inside the batch's transaction
        return found

    monkeypatch.setattr(pipeline.store, "known_dedupe_keys", known_then_a_mark)
    ingested = daemon.ingest_all()
    for writer in writers:
        writer.join(30)
    assert ingested == {"ticket": 60}, "every batch stored, none refused"
    assert len(outcomes) == len(writers) >= 5


def test_sqlite_a_backlog_read_in_slices_is_sent_each_mail_once(tmp_path: Path, smtp_sink: Any) -> None:
    """SQLite, a backlog read in slices: each slice's courier stops with the slice, before the
    sweep and the cycle's other steps write (their deferred transactions would meet its marks),
    and the next slice forks another; every mail goes out once, and each cycle's report counts
    what the couriers sent."""
    n = 60
    daemon = backlog(tmp_path, smtp_sink, "", n)
    daemon.config = replace(daemon.config, daemon=replace(daemon.config.daemon, slice_seconds=0))
    smtp_sink.delay_seconds = 0.005
    first = daemon.cycle()
    assert first.more_waiting and not daemon.courier.running, "the courier ended with the slice"
    report = daemon.run_once()
    assert not daemon.courier.running and pending(daemon) == 0
    assert first.outbox.sent + report.outbox.sent == n
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.wait_for(n))
    assert len(received) == n and max(received.values()) == 1
