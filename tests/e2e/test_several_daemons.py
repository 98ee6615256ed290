"""Several ``maild run`` processes on one PostgreSQL and one mailbox, the reader killed twice with SIGKILL.

The short version of what operations meet: three real daemons (``python -m
maild.cli run``), a backlog in a private Dovecot, the one reading the mailbox
killed in the middle of its work, then the next one too. Another must take the
mailbox over within the configured cycle (here 1 s; the target is under 30 s),
and in the end every mail is stored once, every new request has one ticket and
one acknowledgement, and the SMTP server got each acknowledgement, at most one
resend per kill.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from maild.storage.db import open_database
from maild.storage.models import Intake, OutboxRow, Ticket
from tests.helpers import make_mail, write_config

ROOT = Path(__file__).resolve().parents[2]
N = 300
TAKEN = "this daemon reads the mailbox"


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "maild.cli", "--config", str(config), "run"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)


def _reader(logs: list[Path], alive: set[int]) -> int | None:
    """The live daemon that last said it took the mailbox (its log's last 'taken' line)."""
    for i in alive:
        if TAKEN in logs[i].read_text(errors="replace"):
            return i
    return None


def test_three_daemons_reader_killed_twice(tmp_path: Path, imap_account: Any, smtp_sink: Any, pg_url: str) -> None:
    imap = (f'[imap]\nhost = "127.0.0.1"\nport = {imap_account.port}\nsecurity = "none"\n'
            f'username = "{imap_account.username}"\npassword = "{imap_account.password}"\nidle = false\n'
            'poll_seconds = 1\n')
    daemon = ("\n[daemon]\ncycle_seconds = 1\nslice_seconds = 2\nretry_min_seconds = 1\nretry_max_seconds = 2\n"
              "smtp_retry_base_seconds = 1\n")
    config = write_config(tmp_path, source=imap, smtp_port=smtp_sink.port, database_url=pg_url,
                          top="batch_size = 20", extra=daemon)
    imap_account.append_many([make_mail(sender=f"user{i}@acme.pl", subject=f"Zgłoszenie {i}", msgid=f"<n{i}@t>",
                                        body=f"Treść {i}\n" * 30) for i in range(N)])
    sessions = open_database(pg_url)

    def stored() -> int:
        with sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Intake)) or 0)

    logs = [tmp_path / f"daemon{i}.log" for i in range(3)]
    procs = [_start(config, logs[i]) for i in range(3)]
    alive = {0, 1, 2}
    takeovers: list[float] = []
    try:
        for _ in range(2):
            deadline = time.monotonic() + 120
            while (reader := _reader(logs, alive)) is None or stored() == 0:
                assert time.monotonic() < deadline, [p.read_text()[-2000:] for p in logs]
                time.sleep(0.05)
            assert stored() < N, "the backlog was read before the kill: the test proves nothing"
            procs[reader].send_signal(signal.SIGKILL)
            procs[reader].wait()
            alive.discard(reader)
            killed_at = time.monotonic()
            while _reader(logs, alive) is None:
                assert time.monotonic() - killed_at < 30, "no daemon took the mailbox over within 30 s"
                time.sleep(0.05)
            takeovers.append(time.monotonic() - killed_at)
        deadline = time.monotonic() + 240
        while True:
            with sessions() as session:
                unsent = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent"))
            if stored() == N and unsent == 0:
                break
            assert time.monotonic() < deadline, logs[next(iter(alive))].read_text()[-3000:]
            time.sleep(0.2)
    finally:
        for i in alive:
            procs[i].send_signal(signal.SIGTERM)
        for i in alive:
            procs[i].wait(timeout=60)
    assert all(procs[i].returncode == 0 for i in alive), [logs[i].read_text()[-2000:] for i in alive]
    assert max(takeovers) < 30, takeovers
    assert imap_account.uids("INBOX") == []
    with sessions() as session:
        intake = Counter(session.scalars(select(Intake.dedupe_key)))
        assert len(intake) == N and max(intake.values()) == 1
        assert session.scalar(select(func.count()).select_from(Ticket)) == N
        acks = Counter(session.scalars(select(OutboxRow.ticket_id).where(OutboxRow.kind == "ack")))
        assert len(acks) == N and max(acks.values()) == 1
        ack_ids = set(session.scalars(select(OutboxRow.message_id).where(OutboxRow.kind == "ack")))
    sessions.kw["bind"].dispose()
    received = Counter(str(m.parsed["Message-ID"]).strip("<>") for m in smtp_sink.messages)
    assert ack_ids <= set(received), "every acknowledgement reached the SMTP server"
    assert sum(n - 1 for n in received.values()) <= 2, "at most one resend per kill"
