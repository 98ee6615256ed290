"""kill -9 while mail is sent *and* read, and while the couriers send after the reading (both databases): a real ``maild run --once`` reads a
backlog 20 at a time while its courier (a forked process) sends the acknowledgements, and is
killed until three kills have landed in the middle of that (300 more mails arrive before each run;
a kill that comes after the reading ended is not counted, up to 8 kills in all). The courier dies with its daemon (no process
of a killed daemon lives on), and in the end every acknowledgement reached the relay, none more
than once beyond the one mail each kill may leave accepted by the relay and not yet marked sent.
"""
from __future__ import annotations

import mailbox
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from maild.config import load_config
from maild.storage.db import open_database
from maild.storage.models import OutboxRow
from tests.helpers import log_tail, maildir_source, make_mail, spawn_maild, write_config

ROOT = Path(__file__).resolve().parents[2]
ROUND = 300
# the SIGTERM test's backlog: long enough to be still reading after the first ten mails went out on a
# loaded machine (with 200, one run beside a CI run failed before its SIGTERM, most likely because the
# reading had ended, and left its daemon running; with 500, one run at load 12-18 read it all first
# once the thirteenth session's reading was 11 % cheaper)
SIGTERM_BACKLOG = 800
MAX_KILLS = 8


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(p) for p in task.read_text().split())
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _finish_and_count(config: Path, env: dict[str, str], url: str, smtp_sink: Any, kills: int,
                      mails: int | None = None) -> None:
    """A last ``run --once`` sends what the kills left; then every queued mail reached the relay, each
    sent and marked, and no more mails went twice than there were kills."""
    smtp_sink.delay_seconds = 0
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "--config", str(config), "run", "--once"],
                          env=env, capture_output=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    sessions = open_database(url or load_config(config).database_url)
    with sessions() as session:
        rows = session.execute(select(OutboxRow.message_id, OutboxRow.status)).all()
    sessions.kw["bind"].dispose()
    assert len(rows) == (kills * ROUND if mails is None else mails) and {status for _, status in rows} == {"sent"}
    received = Counter(str(m.parsed["Message-ID"]).strip("<>") for m in smtp_sink.messages)
    assert set(received) == {message_id for message_id, _ in rows}, "every queued mail reached the relay"
    resends = sum(n - 1 for n in received.values())
    assert resends <= kills, f"{resends} mails sent twice after {kills} kills"


def test_sigkill_while_the_courier_sends_during_reading(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    _killed_while_the_courier_sends_during_reading(tmp_path, smtp_sink, pg_url)


def test_sigkill_while_the_sqlite_courier_sends_during_reading(tmp_path: Path, smtp_sink: Any) -> None:
    """The same on SQLite, where the courier's sent marks and the daemon's batches take turns at
    the file's one write lock: the batches are never refused (each run ends only by its kill),
    and each kill leaves at most one mail accepted by the relay and not marked."""
    # three times the mail a round: the courier runs niced (READING_NICENESS) on what the reading
    # leaves idle, which a Maildir read 20 at a time seldom does; with 300 a round, on a loaded
    # machine, 6 of 8 kills came after the reading had ended
    _killed_while_the_courier_sends_during_reading(tmp_path, smtp_sink, "", 3 * ROUND)


def _killed_while_the_courier_sends_during_reading(tmp_path: Path, smtp_sink: Any, url: str,
                                                   round_size: int = ROUND) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url,
                          top="batch_size = 20")
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    smtp_sink.delay_seconds = 0.01  # reading outpaces sending: the kills land with both under way
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(20261206)
    kills = landed = 0  # landed: kills that came while mail was still being read
    while landed < 3:
        assert kills < MAX_KILLS, f"only {landed} of {kills} kills came while mail was still being read"
        for i in range(kills * round_size, (kills + 1) * round_size):
            box.add(make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<ck{i}@acme.pl>"))
        before = len(smtp_sink.messages)
        log = tmp_path / f"run-{kills}.log"
        proc = spawn_maild(config, "run", "--once", log=log, env=env)
        kill_at = before + rng.randint(3, 15)
        deadline = time.monotonic() + 120
        forked: set[int] = set()
        while len(smtp_sink.messages) < kill_at:
            assert proc.poll() is None, "the run ended before its kill: " + log_tail(log, 2000)
            assert time.monotonic() < deadline, "the courier never sent that far"
            forked |= children(proc.pid)
            time.sleep(0.002)
        forked |= children(proc.pid)
        left = len(list(box.iterkeys()))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # a kill after the reading had ended proves nothing about reading and sending together:
        # it still counts for the resend bound, and another round is run
        landed += left > 0
        assert len(forked) >= 2, "the parse worker and the courier were running"
        end = time.monotonic() + 5
        while any(alive(pid) for pid in forked) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in forked), "a process of the killed daemon lives on"
        kills += 1
    _finish_and_count(config, env, url, smtp_sink, kills, kills * round_size)


def test_sigterm_while_the_courier_sends_stops_cleanly_and_resends_nothing(tmp_path: Path, smtp_sink: Any,
                                                                           pg_url: str) -> None:
    """systemd's SIGTERM goes to the whole unit, the courier too: it ignores it, and the daemon
    stops it after the mail in hand, so a clean stop leaves no mail accepted and unmarked."""
    _stopped_while_the_courier_sends(tmp_path, smtp_sink, pg_url)


def test_sigterm_while_the_sqlite_courier_sends_stops_cleanly_and_resends_nothing(tmp_path: Path,
                                                                                  smtp_sink: Any) -> None:
    _stopped_while_the_courier_sends(tmp_path, smtp_sink, "")


def _stopped_while_the_courier_sends(tmp_path: Path, smtp_sink: Any, url: str) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url,
                          top="batch_size = 20")
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(SIGTERM_BACKLOG):
        box.add(make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<ct{i}@acme.pl>"))
    smtp_sink.delay_seconds = 0.01
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "service.log"
    proc = spawn_maild(config, "run", log=log, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        forked: set[int] = set()
        while len(smtp_sink.messages) < 10:
            assert proc.poll() is None and time.monotonic() < deadline
            forked |= children(proc.pid)
            time.sleep(0.002)
        assert len(list(box.iterkeys())) > 0, "the signal must land while the backlog is read"
        os.killpg(proc.pid, signal.SIGTERM)  # as systemd does: every process of the unit
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # a failed step above must not leave the daemon running after the test
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log_tail(log)
    assert "mails sent while reading" in log.read_text(errors="replace")
    assert not any(alive(pid) for pid in forked), "the courier ended with its daemon"
    smtp_sink.delay_seconds = 0
    done = subprocess.run([sys.executable, "-m", "maild.cli", "--config", str(config), "run", "--once"],
                          env=env, capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    received = Counter(str(m.parsed["Message-ID"]).strip("<>") for m in smtp_sink.messages)
    assert len(received) == SIGTERM_BACKLOG and max(received.values()) == 1, "every mail once: nothing resent"


def test_sigkill_while_two_couriers_send_after_reading(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    """The reading has ended and two couriers send the rest of the backlog when the daemon is
    killed: both die with it, and over three such kills no more mails are resent than kills
    (the couriers' shared turn keeps one mail at a time between its "." and its mark)."""
    _killed_three_times_after_reading(tmp_path, smtp_sink, pg_url)


def test_sigkill_while_two_sqlite_couriers_send_after_reading(tmp_path: Path, smtp_sink: Any) -> None:
    """The same on SQLite, where the two couriers start when the reading has ended with at least
    ``SQLITE_TWO_AFTER_READING_FROM`` mails due, each sending its half of the rows."""
    from maild.outbound.courier import SQLITE_TWO_AFTER_READING_FROM

    # the reading's courier sends ~100 a second (the sink's delay) while the round is read: 60 %
    # more than the threshold leaves it crossed on a loaded machine too
    _killed_three_times_after_reading(tmp_path, smtp_sink, "", SQLITE_TWO_AFTER_READING_FROM * 8 // 5)


def test_sigkill_while_the_sqlite_courier_sends_a_small_rest_after_reading(tmp_path: Path, smtp_sink: Any) -> None:
    """SQLite, a rest under ``SQLITE_TWO_AFTER_READING_FROM``: the courier that sent while the
    mailbox was read sends it alone after the reading (no other courier is forked) and is killed
    with its daemon there; three such kills resend no more mails than kills."""
    _killed_three_times_after_reading(tmp_path, smtp_sink, "", ROUND, couriers_after=1)


def _killed_three_times_after_reading(tmp_path: Path, smtp_sink: Any, url: str, round_size: int = ROUND,
                                     couriers_after: int = 2) -> None:
    """Three runs, each killed once the reading has ended and ``couriers_after`` couriers send
    the rest (beside the parse worker: the first courier, for one, is the reading's)."""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url,
                          top="batch_size = 100")
    url = url or load_config(config).database_url
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    smtp_sink.delay_seconds = 0.01  # the reading ends long before the sending
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(20261207)
    kills = 0
    for kills in range(1, 4):
        for i in range((kills - 1) * round_size, kills * round_size):
            box.add(make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<tc{i}@acme.pl>"))
        log = tmp_path / f"run-{kills}.log"
        proc = spawn_maild(config, "run", "--once", log=log, env=env)
        deadline = time.monotonic() + 120
        forked: set[int] = set()
        while len(forked) < 1 + couriers_after or len(list(box.iterkeys())) > 0:
            assert proc.poll() is None, "the run ended before its kill: " + log_tail(log, 2000)
            assert time.monotonic() < deadline, f"{couriers_after} couriers never sent after the reading"
            forked |= children(proc.pid)
            time.sleep(0.002)
        read = set(forked)  # the processes forked by the reading's end
        kill_at = len(smtp_sink.messages) + rng.randint(3, 15)
        while len(smtp_sink.messages) < kill_at:
            assert proc.poll() is None and time.monotonic() < deadline
            forked |= children(proc.pid)
            time.sleep(0.002)
        forked |= children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if couriers_after == 1:
            assert forked == read, "no courier was forked after the reading: the reading's sends the rest"
        end = time.monotonic() + 5
        while any(alive(pid) for pid in forked) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in forked), "a process of the killed daemon lives on"
    _finish_and_count(config, env, url, smtp_sink, kills, kills * round_size)
