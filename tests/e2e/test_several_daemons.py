"""Several ``maild run`` processes on one PostgreSQL and one mailbox, the reader killed twice with SIGKILL.

The short version of what operations meet (the long one, 10,000 mails with
figures, is bench/takeover.py): three real daemons (``python -m maild.cli
run``), each with its own systemd notify socket, a backlog in a private
Dovecot, the one reading the mailbox killed while it stores a batch, then the
next one too. Another must take the mailbox over within ``[daemon]
takeover_seconds`` (2 s here, against a 60 s cycle and IMAP poll, so only that
setting can make it quick), and in the end every mail is stored once, every new
request has one ticket and one acknowledgement, the SMTP server got each
acknowledgement with at most one resend per kill, the standbys sent while the
reader read, and every daemon, the standbys included, told systemd READY=1.
"""
from __future__ import annotations

import os
import re
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
from tests.e2e.test_daemon import NotifySocket
from tests.helpers import make_mail, write_config

ROOT = Path(__file__).resolve().parents[2]
N = 300
TAKEOVER = 2
TAKEN = "this daemon reads the mailbox"
FETCHED = "fetched batch of"
SENT = re.compile(r"maild\.smtp: <[^>]+> sent to ")


def _start(config: Path, log: Path, notify: NotifySocket) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify.path)
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "maild.cli", "--config", str(config), "run"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)


def _reader(logs: list[Path], alive: set[int]) -> int | None:
    """The live daemon that said it took the mailbox (a daemon holds it until it dies)."""
    for i in sorted(alive):
        if TAKEN in logs[i].read_text(errors="replace"):
            return i
    return None


def test_three_daemons_reader_killed_twice(tmp_path: Path, imap_account: Any, smtp_sink: Any, pg_url: str) -> None:
    imap = (f'[imap]\nhost = "127.0.0.1"\nport = {imap_account.port}\nsecurity = "none"\n'
            f'username = "{imap_account.username}"\npassword = "{imap_account.password}"\nidle = false\n'
            'poll_seconds = 60\n')
    daemon = (f"\n[daemon]\ncycle_seconds = 60\ntakeover_seconds = {TAKEOVER}\nslice_seconds = 1\n"
              "retry_min_seconds = 1\nretry_max_seconds = 2\nsmtp_retry_base_seconds = 1\n")
    config = write_config(tmp_path, source=imap, smtp_port=smtp_sink.port, database_url=pg_url,
                          top="batch_size = 20", extra=daemon)
    total = 0

    def append(count: int) -> None:
        nonlocal total
        imap_account.append_many([make_mail(sender=f"user{i}@acme.pl", subject=f"Zgłoszenie {i}", msgid=f"<n{i}@t>",
                                            body=f"Treść {i}\n" * 30) for i in range(total, total + count)])
        total += count

    def keep_mail_waiting() -> None:
        """A fast machine reads the backlog before a kill's moment comes: more mail arrives then.

        Enough waits that the reader never finds the mailbox empty (it would then wait for its
        next poll, 60 s here, and the kill's moment, a fetch, would not come in time: CI saw
        that with a 60-mail margin and a 1,200-mail cap)."""
        if stored() >= total - 200 and total < 12 * N:
            append(100)

    append(N)
    sessions = open_database(pg_url)

    def stored() -> int:
        with sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Intake)) or 0)

    def text(i: int) -> str:
        return logs[i].read_text(errors="replace")

    logs = [tmp_path / f"daemon{i}.log" for i in range(3)]
    sockets = [NotifySocket() for _ in range(3)]
    procs = [_start(config, logs[i], sockets[i]) for i in range(3)]
    alive = {0, 1, 2}
    takeovers: list[float] = []
    try:
        base = 0  # mails stored before the current reader took over
        for _ in range(2):
            deadline = time.monotonic() + 120
            # in the middle of its work: it took the mailbox, stored mail of its own, fetched the next
            # batch, and sent mail (so all three have sent); before the first kill the two standbys
            # must have told systemd READY=1 too
            while ((reader := _reader(logs, alive)) is None or stored() <= base
                   or text(reader).split(TAKEN, 1)[1].count(FETCHED) < 2 or not SENT.search(text(reader))
                   or not (takeovers or all(sock.states("READY=1") for sock in sockets))):
                assert time.monotonic() < deadline, ([sock.states() for sock in sockets],
                                                     [text(i)[-2000:] for i in range(3)])
                keep_mail_waiting()
                time.sleep(0.02)
            # right after it logs fetching the next batch: it is storing the one before (a drain
            # killed would leave its claimed rows leased, a different case)
            fetched = text(reader).count(FETCHED)
            while text(reader).count(FETCHED) == fetched:
                assert time.monotonic() < deadline, text(reader)[-2000:]
                keep_mail_waiting()
                time.sleep(0.005)
            assert stored() < total, "the backlog was read before the kill: the test proves nothing"
            procs[reader].send_signal(signal.SIGKILL)
            procs[reader].wait()
            alive.discard(reader)
            killed_at = time.monotonic()
            while _reader(logs, alive) is None:
                assert time.monotonic() - killed_at < 30, "no daemon took the mailbox over within 30 s"
                time.sleep(0.02)
            takeovers.append(time.monotonic() - killed_at)
            base = stored()
        deadline = time.monotonic() + 120
        while True:
            with sessions() as session:
                unsent = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent"))
            if stored() == total and unsent == 0:
                break
            assert time.monotonic() < deadline, text(next(iter(alive)))[-3000:]
            time.sleep(0.2)
    finally:
        for i in alive:
            procs[i].send_signal(signal.SIGTERM)
        for i in alive:
            procs[i].wait(timeout=60)
        for sock in sockets:
            sock.close()
    assert all(procs[i].returncode == 0 for i in alive), [text(i)[-2000:] for i in alive]
    # an idle standby tries every 2 s, a sending one between its mails too; plus its sweep, on a loaded machine
    assert max(takeovers) < 4 * TAKEOVER + 4, takeovers
    sent = [len(SENT.findall(text(i))) for i in range(3)]
    assert all(sent), f"every daemon sent mail (SKIP LOCKED shares the outbox): {sent}"
    assert imap_account.uids("INBOX") == []
    with sessions() as session:
        intake = Counter(session.scalars(select(Intake.dedupe_key)))
        assert len(intake) == total and max(intake.values()) == 1
        assert session.scalar(select(func.count()).select_from(Ticket)) == total
        acks = Counter(session.scalars(select(OutboxRow.ticket_id).where(OutboxRow.kind == "ack")))
        assert len(acks) == total and max(acks.values()) == 1
        ack_ids = set(session.scalars(select(OutboxRow.message_id).where(OutboxRow.kind == "ack")))
    sessions.kw["bind"].dispose()
    received = Counter(str(m.parsed["Message-ID"]).strip("<>") for m in smtp_sink.messages)
    assert ack_ids <= set(received), "every acknowledgement reached the SMTP server"
    assert sum(n - 1 for n in received.values()) <= 2, "at most one resend per kill"
