"""Several daemons on one PostgreSQL database: one reads the mailbox, another takes over when it goes."""
from __future__ import annotations

import mailbox
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from maild.config import load_config
from maild.intake.mailbox import MailboxAuthError
from maild.ops.daemon import Daemon
from maild.ops.leader import MailboxLock, keepalive_settings, mailbox_key
from maild.storage.models import Ticket
from tests.helpers import make_mail, maildir_source, write_config


def tickets(daemon: Daemon) -> int:
    with daemon.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Ticket)) or 0)


def test_one_reader_and_takeover(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                                      database_url=pg_url))
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    first, second = Daemon(config), Daemon(config)
    box.add(make_mail(msgid="<l1@acme.pl>"))
    assert first.ingest_all() == {"ticket": 1}
    box.add(make_mail(msgid="<l2@acme.pl>", subject="Druga sprawa"))
    assert second.ingest_all() == {}, "the mailbox is read by the first daemon"
    assert len(box) == 1 and tickets(second) == 1
    first.source.close()
    first.mailbox_lock.release()  # what a crash or a stop does: its database session ends
    assert second.ingest_all() == {"ticket": 1}
    assert tickets(second) == 2 and len(box) == 0
    assert first.ingest_all() == {}, "the first daemon, back, now waits"
    second.mailbox_lock.release()


def test_sqlite_needs_no_lock(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25))
    daemon = Daemon(config)
    assert daemon.mailbox_lock.acquire() and daemon.mailbox_lock.acquire()


def test_lock_key_is_per_mailbox() -> None:
    assert mailbox_key("imap://a@h:993/INBOX") != mailbox_key("imap://b@h:993/INBOX")
    assert -(2**63) <= mailbox_key("x") < 2**63


def test_keepalive_drops_a_silent_host_within_takeover_seconds() -> None:
    for seconds in (2, 3, 10, 29, 300):
        ka = keepalive_settings(seconds)
        assert ka["tcp_user_timeout"] == seconds * 1000
        first_probe = ka["tcp_keepalives_idle"] + ka["tcp_keepalives_interval"]
        assert 1 <= ka["tcp_keepalives_idle"] < seconds and first_probe <= seconds, (seconds, ka)


def test_the_lock_session_carries_keepalive_stays_idle_and_outlives_idle_session_timeout(pg_url: str) -> None:
    """The server probes the lock's peer (a dead host frees the mailbox within about takeover_seconds),
    the session is never left idle in a transaction, and a server-wide idle_session_timeout
    shorter than a cycle does not end it (the mailbox would change hands under a live reader)."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        database = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'ALTER DATABASE "{database}" SET idle_session_timeout = 1000'))
        conn.execute(text(f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = 1000'))
    engine = create_engine(pg_url)
    lock, other = MailboxLock(engine, "imap://u@h:143/INBOX", 6), MailboxLock(engine, "imap://u@h:143/INBOX", 6)
    try:
        assert lock.acquire() and lock.reading
        assert lock._conn is not None
        shown = {name: lock._conn.execute(text(f"SHOW {name}")).scalar()
                 for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                              "tcp_user_timeout", "idle_session_timeout")}
        pid = lock._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        lock._conn.commit()
        # over TCP the server reports what it set on its socket (a Unix socket would show 0)
        assert shown == {"tcp_keepalives_idle": "3", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3",
                         "tcp_user_timeout": "6000", "idle_session_timeout": "0"}, shown
        time.sleep(1.6)  # past both server timeouts
        assert lock.acquire(), "the lock's session outlived the server's idle timeouts"
        with admin.connect() as conn:
            state = conn.execute(text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar()
        assert state == "idle", state
        time.sleep(1.6)
        assert lock.acquire() and not other.acquire() and not other.reading
    finally:
        lock.release()
        other.release()
        engine.dispose()
        admin.dispose()


def reader_and_standby(tmp_path: Path, smtp_sink: Any, pg_url: str, takeover_seconds: int, mails: int,
                       tag: str) -> tuple[Daemon, Daemon, mailbox.Maildir]:
    """Two daemons on one PostgreSQL and one Maildir of ``mails`` new tickets, with a minute's
    cycle and a 30 s slice: whatever bounds a standby's turn is ``takeover_seconds``."""
    base = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                                    database_url=pg_url))
    config = replace(base, daemon=replace(base.daemon, cycle_seconds=60, slice_seconds=30,
                                          takeover_seconds=takeover_seconds))
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(mails):
        box.add(make_mail(msgid=f"<{tag}{i}@acme.pl>", sender=f"user{i}@acme.pl", subject=f"Sprawa {i}"))
    return Daemon(config), Daemon(config), box


def close_daemons(*daemons: Daemon) -> None:
    for daemon in daemons:
        daemon.source.close()
        daemon.parse_ahead.close()
        daemon.mailbox_lock.release()


def end_the_lock_session_in(seconds: float, reader: Daemon, admin: Engine) -> tuple[threading.Timer, list[float]]:
    """Terminate the reader's lock session after ``seconds`` (what kill -9 does to it), from a
    timer already started; the list gets the moment it ended."""
    assert reader.mailbox_lock._conn is not None
    pid = reader.mailbox_lock._conn.execute(text("SELECT pg_backend_pid()")).scalar()
    reader.mailbox_lock._conn.commit()
    killed: list[float] = []

    def end_it() -> None:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        killed.append(time.monotonic())

    timer = threading.Timer(seconds, end_it)
    timer.start()
    return timer, killed


def test_a_standby_tries_the_lock_every_takeover_seconds_and_sends_in_turns_that_short(
        tmp_path: Path, smtp_sink: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a minute's cycle and a 30 s slice, a standby still comes back to the lock within
    takeover_seconds: its wait and its sending turn are both cut to it."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    reader, standby, _ = reader_and_standby(tmp_path, smtp_sink, pg_url, takeover_seconds=2, mails=16, tag="sb")
    try:
        assert reader.ingest_all() == {"ticket": 16}
        assert reader.wait_seconds() == 60
        smtp_sink.delay_seconds = 0.5  # 16 acknowledgements over one connection: 8 s to send them all
        started = time.monotonic()
        report = standby.cycle()
        took = time.monotonic() - started
        assert report.ingested == {} and not standby.mailbox_lock.reading
        assert 1 <= report.outbox.sent < 30 and report.outbox.more_due, report.summary()
        assert took < 6, f"the standby's sending turn took {took:.1f} s, not about takeover_seconds"
        assert standby.wait_seconds() == 2
        # it tried the lock between its mails too, and left it to the live reader
        assert standby.mailbox_lock.tries_while_sending >= 2 and reader.mailbox_lock.reading
    finally:
        smtp_sink.delay_seconds = 0
        close_daemons(reader, standby)


def test_a_standby_takes_the_lock_between_two_mails_of_its_sending_turn(
        tmp_path: Path, smtp_sink: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's session ends (what kill -9 does) while a standby sends a backlog over a slow
    relay in a 10 s turn, on both its SMTP connections: the standby takes the mailbox within a
    lock try and the mails in hand, not at the end of its turn, and reads it in its next cycle;
    no mail goes out twice."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    reader, standby, box = reader_and_standby(tmp_path, smtp_sink, pg_url, takeover_seconds=10, mails=30, tag="tk")
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        assert reader.ingest_all() == {"ticket": 30}
        smtp_sink.delay_seconds = 0.5  # two connections for 30 mails: 7.5 s to send them all
        timer, killed = end_the_lock_session_in(1.5, reader, admin)
        report = standby.cycle()
        returned = time.monotonic()
        timer.join()
        assert report.ingested == {} and standby.mailbox_lock.reading, report.summary()
        assert 1 <= report.outbox.sent < 30 and report.outbox.more_due, report.summary()
        assert report.more_waiting, "the mailbox just taken over is read at once, not after a wait"
        took = returned - killed[0]
        # a try every 0.25 s and the mails in hand (0.5 s at this relay); the turn had 4.5 s more
        assert took < 2.5, f"the standby went on sending {took:.1f} s after the reader's session ended"
        assert standby.mailbox_lock.tries_while_sending >= 2
        smtp_sink.delay_seconds = 0
        box.add(make_mail(msgid="<tk-after@acme.pl>", sender="late@acme.pl", subject="Po przejęciu"))
        after = standby.cycle()
        assert after.ingested == {"ticket": 1} and len(box) == 0
        while after.more_waiting or after.outbox.more_due:
            after = standby.cycle()
        with standby.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Ticket)) == 31
        received = Counter(str(m.parsed["Message-ID"]) for m in smtp_sink.messages)
        assert len(received) >= 31 and max(received.values()) == 1, received.most_common(3)
        assert reader.mailbox_lock.tries_while_sending == 0, "a reader never asks"
    finally:
        smtp_sink.delay_seconds = 0
        close_daemons(reader, standby)
        admin.dispose()


def test_an_idle_standby_waits_for_the_lock_and_takes_it_the_moment_the_reader_dies(
        tmp_path: Path, smtp_sink: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between its cycles a standby queues for the lock in the server: while the reader lives
    its wait lasts what ``wait_seconds`` says; when the reader's session ends (kill -9) the
    standby holds the lock at once, not at its next try takeover_seconds later; a stop (SIGTERM
    sets the flag) ends the wait within a step."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    base = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                                    database_url=pg_url))
    config = replace(base, daemon=replace(base.daemon, cycle_seconds=60, takeover_seconds=10))
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    reader, standby, third = Daemon(config), Daemon(config), Daemon(config)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        assert reader.ingest_all() == {} and reader.mailbox_lock.reading
        assert standby.ingest_all() == {} and not standby.mailbox_lock.reading
        assert standby.wait_seconds() == 10
        started = time.monotonic()
        standby._wait(1.5)
        assert 1.4 <= time.monotonic() - started < 3 and not standby.mailbox_lock.reading
        timer, killed = end_the_lock_session_in(1.0, reader, admin)
        standby._wait(standby.wait_seconds())
        returned = time.monotonic()
        timer.join()
        assert standby.mailbox_lock.reading and returned - killed[0] < 0.8, returned - killed[0]
        box.add(make_mail(msgid="<idle-takeover@acme.pl>"))
        assert standby.ingest_all() == {"ticket": 1} and len(box) == 0
        # the third waits on the new reader; a stop ends its wait within a step, not after 10 s
        assert third.ingest_all() == {} and not third.mailbox_lock.reading
        stopper = threading.Timer(0.5, lambda: setattr(third, "_stop", True))
        stopper.start()
        started = time.monotonic()
        third._wait(third.wait_seconds())
        stopper.join()
        assert time.monotonic() - started < 2.5 and not third.mailbox_lock.reading
    finally:
        for daemon in (reader, standby, third):
            daemon.source.close()
            daemon.mailbox_lock.release()
        admin.dispose()


def test_a_standby_logs_in_to_the_mailbox_once_before_it_says_it_is_ready(
        tmp_path: Path, smtp_sink: Any, pg_url: str, imap_account: Any) -> None:
    """A standby waits for the lock, not for mail, and reads nothing until it takes over: its start
    still logs in to the mailbox once, so a wrong password shows now (a fault, no READY=1), not
    when the reader dies and nobody can take its place."""
    def imap(password: str) -> str:
        return (f'[imap]\nhost = "127.0.0.1"\nport = {imap_account.port}\nsecurity = "none"\n'
                f'username = "{imap_account.username}"\npassword = "{password}"\nidle = false\n')

    for name in ("good", "wrong"):
        (tmp_path / name).mkdir()
    good = load_config(write_config(tmp_path / "good", source=imap(imap_account.password),
                                    smtp_port=smtp_sink.port, database_url=pg_url))
    wrong = load_config(write_config(tmp_path / "wrong", source=imap("not-the-password"),
                                     smtp_port=smtp_sink.port, database_url=pg_url))
    reader, standby, broken = Daemon(good), Daemon(good), Daemon(wrong)
    try:
        assert reader.ingest_all() == {} and reader.mailbox_lock.reading
        assert standby.ingest_all() == {} and standby._ready and not standby.mailbox_lock.reading
        with pytest.raises(MailboxAuthError):
            broken.ingest_all()
        assert not broken._ready and not broken.mailbox_lock.reading
    finally:
        for daemon in (reader, standby, broken):
            daemon.source.close()
            daemon.mailbox_lock.release()
