"""Faults the daemon survives, each against real servers with `maild run` in a subprocess.

IMAP server restarted mid-batch, SMTP relay down for a while, PostgreSQL
restarted, the storage path full, and an IDLE connection silently dropped by a
NAT. In every case mail stays on the server until stored, nothing is stored or
sent twice, and the daemon carries on by itself once the fault is gone.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.storage.db import open_database
from maild.storage.models import Intake, OutboxRow, Ticket
from tests.helpers import make_mail, write_config
from tests.e2e.test_daemon import FAST, daemons, db, imap_table, wait_until  # noqa: F401 (fixture)

N_RESTART = 150


def processed(account: Any, count: int) -> bool:
    return account.uids("INBOX") == [] and len(account.uids("Processed")) == count


def assert_each_once(sessions: Any, sink: Any, count: int) -> None:
    with sessions() as session:
        keys = Counter(session.scalars(select(Intake.dedupe_key)))
        assert len(keys) == count and max(keys.values()) == 1
        assert session.scalar(select(func.count()).select_from(Ticket)) == count
    wait_until(lambda: len(sink.messages) >= count, 20, f"{count} acknowledgements")
    time.sleep(0.5)
    acks = Counter(m.parsed["In-Reply-To"] for m in sink.messages)
    assert len(acks) == count and max(acks.values()) == 1, "every acknowledgement once"


def test_imap_server_restarted_mid_batch(tmp_path: Path, imap_account: Any, smtp_sink: Any, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account, timeout=3), smtp_port=smtp_sink.port,
                          extra=FAST, top="batch_size = 5", migrated=True)
    imap_account.append_many([make_mail(sender=f"jan{i}@acme.pl", subject=f"Restart {i}", msgid=f"<rs{i}@acme.pl>", body=f"Treść {i}\n" * 50)
                              for i in range(N_RESTART)])
    daemon = daemons(config)
    daemon.wait_log(r"moved 5 messages to Processed", count=3)
    imap_account.server.restart()
    assert imap_account.uids("INBOX"), "the restart must land mid-backlog"
    wait_until(lambda: processed(imap_account, N_RESTART), 60, "the whole backlog after the restart")
    daemon.wait_log(r"recovered after \d+ failed attempts")
    assert "MailboxUnavailable" in daemon.log
    assert_each_once(db(tmp_path), smtp_sink, N_RESTART)
    code, _ = daemon.stop()
    assert code == 0


def test_smtp_down_for_a_while_then_everything_once_oldest_first(tmp_path: Path, imap_account: Any,
                                                                  smtp_sink: Any, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST, migrated=True)
    smtp_sink.stop()
    daemon = daemons(config)
    sent_order = []
    for i in range(6):  # one at a time, so each acknowledgement is queued later than the one before
        imap_account.append(make_mail(sender=f"jan{i}@acme.pl", subject=f"Relay {i}", msgid=f"<relay{i}@acme.pl>"))
        sent_order.append(f"<relay{i}@acme.pl>")
        wait_until(lambda: processed(imap_account, i + 1), 20, f"mail {i} ingested")
    sessions = db(tmp_path)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status == "pending")) == 6
    daemon.wait_log(r"SMTP unusable \(attempt [3-9]", timeout=20)  # retried, with backoff
    status = subprocess.run([*daemon.proc.args[:-1], "status", "--json"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert '"outbox_depth": 6' in status.stdout, status.stdout + status.stderr

    smtp_sink.start()
    received = smtp_sink.wait_for(6, timeout=20)
    assert [m.parsed["In-Reply-To"] for m in received] == sent_order, "oldest first"
    daemon.wait_log(r"SMTP relay usable again")
    time.sleep(2.5)  # another cycle: nothing is sent twice
    assert len(smtp_sink.messages) == 6
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent")) == 0
    code, _ = daemon.stop()
    assert code == 0


def test_postgres_restarted_daemon_waits_and_resumes(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                     pg_url: str, postgres_server: Any, daemons: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST,
                          database_url=pg_url)
    daemon = daemons(config)
    imap_account.append(make_mail(subject="Przed", msgid="<pg1@acme.pl>"))
    wait_until(lambda: processed(imap_account, 1), 30, "first mail")
    postgres_server.stop()
    try:
        imap_account.append(make_mail(subject="W trakcie", msgid="<pg2@acme.pl>"))
        daemon.wait_log(r"OperationalError", timeout=20)
        time.sleep(1)
        assert len(imap_account.uids("INBOX")) == 1, "mail stays on the server while the database is down"
    finally:
        postgres_server.start()
    wait_until(lambda: processed(imap_account, 2), 30, "mail after the database returned")
    assert daemon.proc.poll() is None
    assert_each_once(open_database(pg_url, migrate=False), smtp_sink, 2)
    code, _ = daemon.stop()
    assert code == 0


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_mail_stays_on_server_and_recovers(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                     daemons: Any) -> None:
    with tiny_tmpfs(tmp_path / "store") as store:
        config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST,
                              database_url=f"sqlite:///{tmp_path / 'db' / 'maild.db'}")
        config.write_text(config.read_text().replace(f'path = "{tmp_path / "var"}"', f'path = "{store}"'))
        daemon = daemons(config)
        daemon.wait_log(r"logged in")
        filler = fill(store)
        imap_account.append(make_mail(subject="Pełny dysk", msgid="<full@acme.pl>", body="x" * 200_000))
        daemon.wait_log(r"StorageError: storage .*No space left on device; mail stays on the server", timeout=20)
        time.sleep(1)
        assert len(imap_account.uids("INBOX")) == 1, "mail stays on the server"
        filler.unlink()
        wait_until(lambda: processed(imap_account, 1), 20, "mail stored once space returned")
        sessions = open_database(f"sqlite:///{tmp_path / 'db' / 'maild.db'}", migrate=False)
        assert_each_once(sessions, smtp_sink, 1)
        code, _ = daemon.stop()
        assert code == 0


class BlackholeProxy:
    """A loopback TCP proxy that can silently stop forwarding its open connections.

    That is what a NAT does when it forgets an idle mapping: packets vanish, no
    RST, no FIN. New connections get a new mapping and work again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.generation = 0
        self.client_bytes = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            generation = self.generation
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, generation, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, generation, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, generation: int, from_client: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if generation != self.generation:
                continue  # dropped on the floor: the mapping is gone
            if from_client:
                with self._lock:
                    self.client_bytes += data
            try:
                dst.sendall(data)
            except OSError:
                return

    def blackhole(self) -> None:
        self.generation += 1

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()


def test_idle_connection_silently_dropped_by_nat(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                 daemons: Any) -> None:
    proxy = BlackholeProxy(imap_account.port)
    try:
        config = write_config(tmp_path, source=imap_table(imap_account, port=proxy.port, timeout=2),
                              smtp_port=smtp_sink.port, extra=FAST, migrated=True)
        daemon = daemons(config)
        imap_account.append(make_mail(subject="Przed", msgid="<nat1@acme.pl>"))
        wait_until(lambda: processed(imap_account, 1), 20, "first mail")
        # IDLE is re-issued every cycle (here 2 s; at most cycle_seconds, 60 s by default)
        wait_until(lambda: proxy.client_bytes.count(b" IDLE\r\n") >= 2, 10, "IDLE re-issued")
        proxy.blackhole()
        imap_account.append(make_mail(subject="Po", msgid="<nat2@acme.pl>"))
        wait_until(lambda: processed(imap_account, 2), 20, "mail after the NAT dropped the connection")
        assert "connection lost while waiting for mail" in daemon.log or "MailboxUnavailable" in daemon.log
        assert_each_once(db(tmp_path), smtp_sink, 2)
        code, _ = daemon.stop()
        assert code == 0
    finally:
        proxy.close()
