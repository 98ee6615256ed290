"""kill -9 in the middle of sending a long outbox, SQLite and PostgreSQL: a real ``maild run --once``
is killed again and again while it drains 300 acknowledgements to the SMTP sink; in the end every
queued mail reached the sink, and none more than once beyond the one mail each kill may leave
accepted by the relay but not yet marked sent.

On PostgreSQL this is the path that commits its sent marks without waiting for the WAL flush
(``synchronous_commit = off`` on the drain's own session): the server has each mark when it
answers, so killing the daemon loses none. It also holds claimed rows by the drain session's
advisory locks, so the rows a killed daemon had claimed are due again at once: the run after a
kill sends them without waiting out a lease.
"""
from __future__ import annotations

import mailbox
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.db import open_database
from maild.storage.models import OutboxRow
from tests.helpers import log_tail, maildir_source, make_mail, spawn_maild, write_config

ROOT = Path(__file__).resolve().parents[2]
N = 300


def run_until(config: Path, sink: Any, kill_at: int | None) -> bool:
    """``maild run --once``; killed with SIGKILL as soon as the sink holds ``kill_at`` mails.
    True when it was killed, False when it ended first (then it must have ended cleanly)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = config.parent / "runs.log"
    proc = spawn_maild(config, "run", "--once", log=log, env=env)
    deadline = time.monotonic() + 180
    while kill_at is not None and proc.poll() is None:
        if len(sink.messages) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        assert time.monotonic() < deadline, "the drain never got that far"
        time.sleep(0.001)
    proc.wait(timeout=180)
    assert proc.returncode == 0, log_tail(log)
    return False


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_sigkill_mid_drain_sends_every_mail_and_at_most_one_twice_per_kill(
        tmp_path: Path, smtp_sink: Any, db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(N):
        box.add(make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<drain{i}@acme.pl>"))
    smtp_sink.stop()  # the relay is away while the backlog is read: every acknowledgement stays queued
    Daemon(load_config(config)).run_once()
    smtp_sink.start()
    sessions = open_database(url or f"sqlite:///{tmp_path / 'var' / 'maild.db'}")
    with sessions() as session:
        queued = set(session.scalars(select(OutboxRow.message_id).where(OutboxRow.status == "pending")))
    assert len(queued) == N

    rng = random.Random(20261206)
    kills = 0
    while kills < 5:
        before = len(smtp_sink.messages)
        if not run_until(config, smtp_sink, kill_at=before + rng.randint(5, 40)):
            break
        kills += 1
        with sessions() as session:
            left = session.scalars(select(OutboxRow.id).where(OutboxRow.status == "pending")).all()
        assert left, "killed after the drain had finished: the test proves nothing"
    assert kills == 5, "every run must be killed in the middle of its drain"
    # the last run, not killed, sends the rest at once: also the rows the killed runs had
    # claimed (a time lease kept them for five minutes, so they would still be pending below)
    run_until(config, smtp_sink, kill_at=None)

    with sessions() as session:
        rows = session.execute(select(OutboxRow.message_id, OutboxRow.status, OutboxRow.attempts)).all()
    sessions.kw["bind"].dispose()
    assert {status for _, status, _ in rows} == {"sent"}
    received = Counter(str(m.parsed["Message-ID"]).strip("<>") for m in smtp_sink.messages)
    assert set(received) == queued, "every queued mail reached the relay, and nothing else"
    resends = sum(n - 1 for n in received.values())
    assert resends <= kills, f"{resends} mails sent twice after {kills} kills"
