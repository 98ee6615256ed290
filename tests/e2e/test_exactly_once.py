"""Exactly once against a real Dovecot: SIGKILL at random points while 240 messages are ingested.

After every crash the daemon is started again; in the end every message is stored
once, none is lost, there is one ticket per new request, one acknowledgement row
per ticket, and the SMTP server saw at most one resend per crash. On SQLite and on
PostgreSQL (where the mailbox lock, the outbox rows' claims and the sent marks are
the server's sessions' business, all of which a kill ends).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.storage.db import open_database
from maild.storage.models import Intake, MessageRow, OutboxRow, Ticket
from tests.helpers import log_tail, make_mail, spawn_maild, write_config

ROOT = Path(__file__).resolve().parents[2]
N_NEW = 200
N_REPLIES = 40


def sender(i: int) -> str:
    base = ["jan@acme.pl", "ola@acme.pl", "kari@nord.no", "biuro@kowalski.pl", "someone@else.example"][i % 5]
    return base.replace("@", f"+{i}@") if i % 7 == 0 else base


def corpus() -> list[bytes]:
    mails = [make_mail(sender=sender(i), subject=f"Zgłoszenie {i}", msgid=f"<new{i}@test>", body=f"Treść {i}\n" * 20)
             for i in range(N_NEW)]
    mails += [make_mail(sender=sender(i), subject=f"Re: Zgłoszenie {i}", msgid=f"<re{i}@test>",
                        headers={"In-Reply-To": f"<new{i}@test>", "References": f"<new{i}@test>"})
              for i in range(N_REPLIES)]
    return mails


def imap_table(account: Any) -> str:
    return (f'[imap]\nhost = "127.0.0.1"\nport = {account.port}\nsecurity = "none"\n'
            f'username = "{account.username}"\npassword = "{account.password}"\nidle = false\n')


def run_maild(config: Path, kill_after: float | None) -> int | None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = config.parent / "runs.log"
    proc = spawn_maild(config, "run", "--once", log=log, env=env)
    if kill_after is None:
        proc.wait(timeout=240)
        assert proc.returncode == 0, log_tail(log)
        return proc.returncode
    try:
        proc.wait(timeout=kill_after)
        return proc.returncode
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                             db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, top="batch_size = 25",
                          database_url=url)
    mails = corpus()
    rng = random.Random(20261127)
    kills = 0
    # Mail arrives in rounds, and each round's run is killed somewhere between
    # start-up and the end of its work, so crashes land in fetch, commit, move and send.
    for start in range(0, len(mails), 30):
        imap_account.append_many(mails[start:start + 30])
        if run_maild(config, kill_after=rng.uniform(0.4, 1.2)) is None:
            kills += 1
    run_maild(config, kill_after=None)  # the final, clean run
    assert kills >= 2, "the test must actually have crashed the daemon"

    assert imap_account.uids("INBOX") == []
    assert len(imap_account.uids("Processed")) == N_NEW + N_REPLIES
    sessions = open_database(url or f"sqlite:///{tmp_path / 'var' / 'maild.db'}")
    with sessions() as session:
        intake = Counter(session.scalars(select(Intake.dedupe_key)))
        assert len(intake) == N_NEW + N_REPLIES and max(intake.values()) == 1
        inbound = Counter(session.scalars(select(MessageRow.message_id).where(MessageRow.direction == "in")))
        assert len(inbound) == N_NEW + N_REPLIES and max(inbound.values()) == 1
        tickets = session.scalar(select(func.count()).select_from(Ticket))
        assert tickets == N_NEW
        acks = Counter(session.scalars(select(OutboxRow.ticket_id).where(OutboxRow.kind == "ack")))
        assert max(acks.values()) == 1
        ack_ids = set(session.scalars(select(OutboxRow.message_id).where(OutboxRow.kind == "ack")))
        unsent = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent"))
        assert unsent == 0
    sessions.kw["bind"].dispose()
    received = Counter(m.parsed["Message-ID"].strip("<>") for m in smtp_sink.messages)
    assert set(received) == ack_ids, "every acknowledgement reached the SMTP server"
    resends = sum(n - 1 for n in received.values())
    assert resends <= kills, f"{resends} resends after {kills} crashes"
