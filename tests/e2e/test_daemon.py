"""The daemon as systemd runs it: a subprocess, a real NOTIFY_SOCKET, signals, Dovecot and an SMTP sink.

READY=1 comes after the first successful mailbox login (even when the first
cycle then fails), WATCHDOG=1 only while the loop is healthy, STATUS= lines,
STOPPING=1 on the way out. SIGTERM finishes the batch in hand and stops within
10 s losing nothing; SIGHUP reloads customers and templates, refusing a broken
file while the daemon keeps running on the old one.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from maild.ops.check import SAMPLE_CONTEXTS
from maild.storage.db import open_database
from maild.storage.models import Intake, OutboxRow, Ticket
from tests.helpers import CUSTOMERS, make_mail, write_config

ROOT = Path(__file__).resolve().parents[2]
FAST = "\n[daemon]\ncycle_seconds = 2\nretry_min_seconds = 1\nretry_max_seconds = 2\nsmtp_retry_base_seconds = 1\n"


def imap_table(account: Any, *, port: int | None = None, idle: bool = True, password: str | None = None,
               timeout: int = 5) -> str:
    return (f'[imap]\nhost = "127.0.0.1"\nport = {port or account.port}\nsecurity = "none"\n'
            f'username = "{account.username}"\npassword = "{password or account.password}"\n'
            f'idle = {"true" if idle else "false"}\npoll_seconds = 1\ntimeout_seconds = {timeout}\n')


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


class NotifySocket:
    """A unix datagram socket standing in for systemd's; records every state sent."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="maild-notify-", dir="/tmp")  # short: sun_path is 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._lock:
                for state in data.decode("utf-8", "replace").split("\n"):
                    self.messages.append((time.monotonic(), state))

    def states(self, prefix: str = "", since: float = 0.0) -> list[str]:
        with self._lock:
            return [s for t, s in self.messages if s.startswith(prefix) and t >= since]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


class DaemonProcess:
    """`maild run` in a subprocess; stderr goes to a file the test can read at any time."""

    def __init__(self, config: Path, *, notify: NotifySocket | None = None, watchdog_usec: int | None = None,
                 args: tuple[str, ...] = ("run",)) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["PYTHONPATH"] = str(ROOT)
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.path
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = config.parent / f"stderr-{time.monotonic_ns()}.log"
        self._err = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "maild.cli", "--config", str(config), *args],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self._err)

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, pattern: str, timeout: float = 20, count: int = 1) -> str:
        def found() -> bool:
            if self.proc.poll() is not None and len(re.findall(pattern, self.log)) < count:
                raise AssertionError(f"maild exited ({self.proc.returncode}) before logging {pattern!r}:\n"
                                     + self.log[-3000:])
            return len(re.findall(pattern, self.log)) >= count
        try:
            wait_until(found, timeout, f"log {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- maild stderr ---\n{self.log[-4000:]}") from None
        return self.log

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


@pytest.fixture
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: Path, **kwargs: Any) -> DaemonProcess:
        process = DaemonProcess(config, **kwargs)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()


def db(tmp_path: Path) -> Any:
    return open_database(f"sqlite:///{tmp_path / 'var' / 'maild.db'}", migrate=False)


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "--config", str(config), "run", "--once"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# ---------------------------------------------------------------- sd_notify


def test_ready_after_login_watchdog_status_and_stopping(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                        notify_socket: NotifySocket, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST, migrated=True)
    imap_account.append(make_mail())
    daemon = daemons(config, notify=notify_socket, watchdog_usec=2_000_000)
    wait_until(lambda: notify_socket.states("READY=1"), 20, "READY=1")
    smtp_sink.wait_for(1)
    mark = time.monotonic()
    wait_until(lambda: len(notify_socket.states("WATCHDOG=1", since=mark)) >= 2, 10, "watchdog pings while idle")
    assert any("ticket 1" in s for s in notify_socket.states("STATUS="))
    assert all("\n" not in s and len(s) < 400 for s in notify_socket.states("STATUS="))
    code, took = daemon.stop()
    assert code == 0 and took < 10
    states = [s for _, s in notify_socket.messages]
    assert states.index("READY=1") < max(i for i, s in enumerate(states) if s == "WATCHDOG=1")
    assert states[-2:] == ["STOPPING=1", "STATUS=stopping"]


def test_ready_means_logged_in_even_when_the_first_cycle_fails(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                               notify_socket: NotifySocket, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST,
                          compiled=False)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "blobs").write_text("not a directory")  # every blob write fails
    imap_account.append(make_mail())
    daemon = daemons(config, notify=notify_socket)
    wait_until(lambda: notify_socket.states("READY=1"), 20, "READY=1 after login")
    daemon.wait_log(r"StorageError")
    assert imap_account.uids("INBOX"), "mail stays on the server"


def test_no_ready_while_login_is_refused(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                         notify_socket: NotifySocket, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account, password="wrong-secret-123"),
                          smtp_port=smtp_sink.port, extra=FAST, migrated=True)
    daemon = daemons(config, notify=notify_socket, watchdog_usec=2_000_000)
    daemon.wait_log(r"mailbox login refused", count=2)
    assert notify_socket.states("READY=1") == []
    assert "wrong-secret-123" not in daemon.log


def test_watchdog_stops_while_imap_keeps_failing_and_resumes(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                             notify_socket: NotifySocket, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account, timeout=2), smtp_port=smtp_sink.port, extra=FAST, migrated=True)
    daemon = daemons(config, notify=notify_socket, watchdog_usec=2_000_000)
    wait_until(lambda: notify_socket.states("READY=1"), 20, "READY=1")
    server = imap_account.server
    server.stop()
    try:
        # three failures at backoff 1, 2 s: unhealthy after about 3 s
        daemon.wait_log(r"still failing \(attempt 3\)", timeout=15)
        mark = time.monotonic()
        time.sleep(3)
        assert notify_socket.states("WATCHDOG=1", since=mark) == [], "no watchdog ping while failing"
        assert any("MailboxUnavailable" in s for s in notify_socket.states("STATUS=", since=mark))
    finally:
        server.start()
    mark = time.monotonic()
    wait_until(lambda: notify_socket.states("WATCHDOG=1", since=mark), 15, "watchdog resumes")


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_mid_backlog_stops_fast_and_loses_nothing(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                          notify_socket: NotifySocket, daemons: Any) -> None:
    n = 150
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                          extra=FAST, top="batch_size = 5", migrated=True)
    imap_account.append_many([make_mail(sender=f"jan{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<term{i}@acme.pl>") for i in range(n)])
    daemon = daemons(config, notify=notify_socket)
    daemon.wait_log(r"moved 5 messages to Processed", count=2)
    code, took = daemon.stop()
    assert code == 0 and took < 10, (code, took)
    assert "stopping after the batch in hand" in daemon.log
    assert notify_socket.states("STOPPING=1")
    left = len(imap_account.uids("INBOX"))
    assert 0 < left < n, "SIGTERM must have landed mid-run"

    run_once(config)
    assert imap_account.uids("INBOX") == []
    assert len(imap_account.uids("Processed")) == n
    with db(tmp_path)() as session:
        keys = Counter(session.scalars(select(Intake.dedupe_key)))
        assert len(keys) == n and max(keys.values()) == 1
        assert session.scalar(select(func.count()).select_from(Ticket)) == n
        assert session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent")) == 0
    received = Counter(m.parsed["In-Reply-To"] for m in smtp_sink.messages)
    assert len(received) == n and max(received.values()) == 1


def test_sigterm_while_idle_stops_at_once(tmp_path: Path, imap_account: Any, smtp_sink: Any, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                          extra=FAST.replace("cycle_seconds = 2", "cycle_seconds = 600"), migrated=True)
    daemon = daemons(config)
    daemon.wait_log(r"logged in")
    time.sleep(0.5)  # in IDLE now
    code, took = daemon.stop()
    assert code == 0 and took < 3, (code, took)
    assert "stopped" in daemon.log


# ---------------------------------------------------------------- SIGHUP


def contracts_by_subject(tmp_path: Path) -> dict[str, str | None]:
    try:
        with db(tmp_path)() as session:
            return {t.subject: t.contract_id for t in session.scalars(select(Ticket))}
    except OperationalError:  # the daemon has not created the schema yet
        return {}


def test_sighup_reloads_customers_and_refuses_a_broken_file(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                            daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST, migrated=True)
    daemon = daemons(config)
    imap_account.append(make_mail(subject="Przed", msgid="<hup1@acme.pl>"))
    wait_until(lambda: "Przed" in contracts_by_subject(tmp_path), 20, "first ticket")
    assert contracts_by_subject(tmp_path)["Przed"] == "acme-sla"

    (tmp_path / "customers.toml").write_text(CUSTOMERS.replace('id = "acme-sla"', 'id = "acme-sla-2027"'),
                                             encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"reloaded customers and templates")
    imap_account.append(make_mail(subject="Po", msgid="<hup2@acme.pl>"))
    wait_until(lambda: "Po" in contracts_by_subject(tmp_path), 20, "second ticket")
    assert contracts_by_subject(tmp_path)["Po"] == "acme-sla-2027"

    (tmp_path / "customers.toml").write_text("[[customers]\nthis is not toml", encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"reload refused, keeping the previous customers and templates: .*customers\.toml")
    imap_account.append(make_mail(subject="Zepsuty", msgid="<hup3@acme.pl>"))
    wait_until(lambda: "Zepsuty" in contracts_by_subject(tmp_path), 20, "third ticket")
    assert contracts_by_subject(tmp_path)["Zepsuty"] == "acme-sla-2027"
    assert daemon.proc.poll() is None, "the daemon keeps running"
    code, _ = daemon.stop()
    assert code == 0


def test_reload_refuses_a_broken_template_and_keeps_the_old_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 imap_account: Any, smtp_sink: Any) -> None:
    """In-process: the templates directory is the package's, so a copy stands in for it."""
    from maild.config import Config, load_config
    from maild.ops.daemon import Daemon

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    monkeypatch.setattr(Config, "templates_path", property(lambda self: templates))
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST)
    daemon = Daemon(load_config(config))
    ack = templates / "en" / "ack.txt"
    good = ack.read_text(encoding="utf-8")
    ack.write_text(good.replace("{% endblock %}", "{% endblok %}", 1), encoding="utf-8")
    assert daemon.reload() is False
    subject, _ = daemon.outbox.renderer.render("alert", "en", {"what": "x", "detail": "", "since": "", "recovered": False})
    assert "ALERT" in subject
    # the snapshot, not the broken file on disk, is what the outbox renders from
    daemon.outbox.renderer.env.get_template("en/ack.txt")
    ack.write_text(good.replace("{% block subject %}", "{% block subject %}NEW "), encoding="utf-8")
    assert daemon.reload() is True
    assert "NEW" in daemon.outbox.renderer.env.get_template("en/ack.txt").render(**SAMPLE_CONTEXTS["ack"])


def test_a_backlog_is_read_in_slices_with_acknowledgements_going_out_between(tmp_path: Path, smtp_sink: Any) -> None:
    """The first customer of a long backlog hears back after the first slice, not after the last mail."""
    import mailbox
    from dataclasses import replace

    from maild.config import load_config
    from maild.ops.daemon import Daemon
    from tests.helpers import maildir_source, make_mail, write_config

    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, top="batch_size = 2")
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(5):
        box.add(make_mail(msgid=f"<slice{i}@acme.pl>", sender=f"user{i}@acme.pl", subject=f"backlog {i}"))
    cfg = load_config(config)
    cfg = replace(cfg, daemon=replace(cfg.daemon, slice_seconds=0))  # every slice ends after one batch
    daemon = Daemon(cfg)
    first = daemon.cycle()
    assert first.more_waiting and sum(first.ingested.values()) == 2
    assert first.outbox.sent >= 1 and len(box) == 3, "acknowledged before the rest of the backlog is read"
    daemon.source.close()
    report = daemon.run_once()  # --once reads on until the mailbox is empty
    assert sum(report.ingested.values()) == 3 and not report.more_waiting and len(box) == 0
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.wait_for(5)) == [f"user{i}@acme.pl" for i in range(5)]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_slow_relay_is_sent_to_in_slices_between_reading_the_mailbox(
        tmp_path: Path, smtp_sink: Any, db: str, request: pytest.FixtureRequest) -> None:
    """A long outbox to a slow relay: each cycle sends for one slice, then reads the mailbox again;
    what was not sent stays due at once, in order (on PostgreSQL its lease is given back)."""
    import mailbox
    from dataclasses import replace
    from datetime import datetime, timezone

    from maild.config import load_config
    from maild.ops.daemon import Daemon
    from maild.storage.models import OutboxRow
    from tests.helpers import maildir_source, make_mail, write_config

    url = request.getfixturevalue("pg_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(8):
        box.add(make_mail(msgid=f"<slow{i}@acme.pl>", sender=f"user{i}@acme.pl", subject=f"slow {i}"))
    cfg = load_config(config)
    daemon = Daemon(replace(cfg, daemon=replace(cfg.daemon, slice_seconds=1)))
    smtp_sink.delay_seconds = 0.3
    first = daemon.cycle()
    assert sum(first.ingested.values()) == 8
    assert 1 <= first.outbox.sent < 8 and first.outbox.more_due
    with daemon.sessions() as session:
        left = session.scalars(select(OutboxRow).where(OutboxRow.status == "pending")).all()
    assert len(left) == 8 - first.outbox.sent
    assert all(row.next_attempt_at <= datetime.now(timezone.utc) for row in left), "due at once, not leased"
    box.add(make_mail(msgid="<meanwhile@acme.pl>", sender="late@acme.pl", subject="arrived meanwhile"))
    second = daemon.cycle()
    assert second.ingested == {"ticket": 1}, "the mailbox is read between slices"
    daemon.source.close()
    smtp_sink.delay_seconds = 0
    daemon.run_once()
    received = [m.rcpt_tos[0] for m in smtp_sink.wait_for(9)]
    assert sorted(received) == sorted([f"user{i}@acme.pl" for i in range(8)] + ["late@acme.pl"])
    assert received[:8] == [f"user{i}@acme.pl" for i in range(8)], "oldest first across slices"
