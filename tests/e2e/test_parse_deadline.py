"""One mail never stalls the daemon (issue 12): a parse that hangs is killed at its
deadline and counted; an attempt is recorded before the parse starts, so a daemon
killed mid-parse counts too; the parse worker dies with its daemon; after three
attempts (three kills alone, after its group was halved down to it) the mail is
quarantined and the mail behind it flows.

Real processes, a real Maildir, the SMTP sink; the parser is made to hang by a
test hook (the real parser with a marker that loops), set before the worker forks.
"""
from __future__ import annotations

import mailbox
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.intake import parsing
from maild.intake.message import InboundMessage, ParseLimits
from maild.intake.suspects import MAX_ATTEMPTS, death_bound
from maild.ops.daemon import Daemon
from maild.storage.db import open_database
from maild.storage.models import Failure, Intake, QuarantineRow, Ticket
from tests.helpers import deliver, maildir_source, make_mail, write_config

ROOT = Path(__file__).resolve().parents[2]
HANG = b"HANG-THE-PARSER"


def _env(tmp_path: Path, sink: Any, timeout: int) -> Path:
    return write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=sink.port,
                        extra=f"\n[limits]\nparse_timeout_seconds = {timeout}\n")


def _deliver(tmp_path: Path, raw: bytes) -> None:
    deliver(tmp_path / "Maildir", raw, datetime.now(timezone.utc))


@pytest.fixture
def hanging_parser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = parsing.parse_message

    def parse(raw: bytes, limits: ParseLimits = ParseLimits(), size: int | None = None) -> InboundMessage:
        if HANG in raw:
            while True:  # no signal handler can interrupt this; only a kill ends it
                pass
        return real(raw, limits, size)

    monkeypatch.setattr(parsing, "parse_message", parse)
    yield


@pytest.mark.usefixtures("hanging_parser")
@pytest.mark.timeout(180)
def test_a_mail_that_hangs_the_parser_is_quarantined_after_three_attempts_and_100_behind_it_flow(
        tmp_path: Path, smtp_sink: Any) -> None:
    config = _env(tmp_path, smtp_sink, timeout=1)
    _deliver(tmp_path, make_mail(subject="HANG-THE-PARSER", msgid="<poison@acme.pl>"))
    for i in range(100):
        _deliver(tmp_path, make_mail(subject=f"Sprawa {i}", msgid=f"<behind{i}@acme.pl>", sender=f"u{i}@acme.pl"))
    timings = []
    for attempt in (1, 2, 3):
        started = time.monotonic()
        daemon = Daemon(load_config(config))
        daemon.run_once()
        timings.append(time.monotonic() - started)
        with daemon.sessions() as session:
            assert len(session.scalars(select(Ticket)).all()) == 100, "the mail behind it is not held up"
            failures = {f.key: f.attempts for f in session.scalars(select(Failure))}
            quarantined = session.scalars(select(QuarantineRow)).all()
        if attempt < 3:
            assert list(failures.values()) == [attempt], failures
            assert not quarantined
    [record] = quarantined
    assert record.attempts == 3 and "ParseTimeout" in record.reason and "within 1 s" in record.reason
    assert len(mailbox.Maildir(tmp_path / "Maildir").get_folder("Quarantine")) == 1
    assert not list(mailbox.Maildir(tmp_path / "Maildir").keys()), "the inbox is empty"
    assert len(smtp_sink.wait_for(100)) == 100
    # The hang costs one deadline per run (its attempts rise by one a run, above) and the 100
    # behind it flow in the same run: counted, not timed (wall time is the machine's load).
    print(f"\nhanging parser: three runs of 101 mails took {', '.join(f'{t:.1f}' for t in timings)} s")


_HANGING_RUN = """
import os, sys
import maild.intake.parsing as parsing
real = parsing.parse_message
def parse(raw, limits, size=None):
    if b"HANG-THE-PARSER" in raw:
        with open(sys.argv[2], "w") as out:
            out.write(str(os.getpid()))
        while True:
            pass
    return real(raw, limits, size)
parsing.parse_message = parse
from maild.cli.main import main
sys.exit(main(["--config", sys.argv[1], "run", "--once"]))
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _kill_mid_parse(config: Path, marker: Path) -> tuple[int, float] | None:
    """`maild run --once` in a process of its own, SIGKILLed while its worker parses the
    hanging mail; returns the worker's pid and how long the worker outlived its daemon,
    or None when the run ended by itself (nothing hung: the mail was given up)."""
    marker.unlink(missing_ok=True)
    log = marker.with_suffix(".log")
    with log.open("ab") as out:
        daemon = subprocess.Popen([sys.executable, "-c", _HANGING_RUN, str(config), str(marker)], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            if daemon.poll() is not None:
                assert daemon.returncode == 0, f"the daemon failed: {log.read_text()[-3000:]}"
                return None
            assert time.monotonic() < deadline, "the hanging mail was never parsed"
            time.sleep(0.05)
        worker = int(marker.read_text())
        assert worker != daemon.pid and not _gone(worker)
        time.sleep(0.3)  # mid-parse
    finally:
        daemon.kill()
        daemon.wait()
    killed = time.monotonic()
    while not _gone(worker) and time.monotonic() - killed < 10:
        time.sleep(0.02)
    return worker, time.monotonic() - killed


BEHIND = 20


@pytest.mark.timeout(300)
def test_a_daemon_killed_mid_parse_takes_its_worker_along_and_the_attempt_counts(
        tmp_path: Path, smtp_sink: Any) -> None:
    """The daemon is SIGKILLed (a watchdog, the OOM killer) each time its worker parses a
    mail that hangs: the worker dies with it each time, and each kill counts an attempt,
    recorded before the parse started. The mail it had in hand is retried as a group, the
    group halved on each kill, down to the hanging mail alone; after MAX_ATTEMPTS kills
    alone it is quarantined unparsed, within ``death_bound`` kills, and the 20 mails
    fetched with it become tickets, at most 2 of them processed alone (the last halves)
    where each of them used to be."""
    config = _env(tmp_path, smtp_sink, timeout=3600)  # only the kills end these parses
    _deliver(tmp_path, make_mail(subject="HANG-THE-PARSER", msgid="<poison@acme.pl>"))
    for i in range(BEHIND):
        _deliver(tmp_path, make_mail(subject=f"Sprawa {i}", msgid=f"<behind{i}@acme.pl>", sender=f"u{i}@acme.pl"))
    [poison_file] = [p for p in (tmp_path / "Maildir" / "new").iterdir() if HANG in p.read_bytes()]
    poison_key = "raw:maildir:" + poison_file.name
    marker = tmp_path / "worker.pid"
    kills = 0
    while (killed := _kill_mid_parse(config, marker)) is not None:
        kills += 1
        worker, outlived = killed
        assert _gone(worker), f"the parse worker {worker} outlived its daemon by {outlived:.1f} s"
        sessions = open_database(load_config(config).database_url, migrate=False)  # no Daemon: it holds the run lock
        with sessions() as session:
            failures = {f.key: f.attempts for f in session.scalars(select(Failure))}
            assert failures[poison_key] == kills, failures
            assert len(session.scalars(select(QuarantineRow)).all()) == 0
        sessions.kw["bind"].dispose()
        print(f"\nkill {kills}: the worker was gone {outlived:.2f} s after its daemon")
        assert kills <= death_bound(BEHIND + 1), "the hanging mail was not given up within the bound"
    assert kills >= MAX_ATTEMPTS + 2  # its batch, its group, ..., MAX_ATTEMPTS times alone
    alone = re.findall(r"(\S+): processing started and not finished before .* processing it alone",
                       marker.with_suffix(".log").read_text())
    innocent = {key for key in alone if key != poison_key.removeprefix("raw:")}
    assert alone.count(poison_key.removeprefix("raw:")) == MAX_ATTEMPTS, alone
    assert len(innocent) <= 2, alone
    print(f"{kills} kills; processed alone: the hanging mail {MAX_ATTEMPTS} times, {len(innocent)} of the "
          f"{BEHIND} innocent mails fetched with it")
    daemon = Daemon(load_config(config))
    with daemon.sessions() as session:
        [record] = session.scalars(select(QuarantineRow)).all()
        assert record.attempts == kills and f"started {kills} times and never finished" in record.reason
        assert record.key == poison_key
        assert len(session.scalars(select(Ticket)).all()) == BEHIND
        assert sorted(i.disposition for i in session.scalars(select(Intake))) == ["ticket"] * BEHIND
        assert not session.scalars(select(Failure)).all(), "every finished attempt was taken back"
    daemon.release_run_lock()
    assert len(mailbox.Maildir(tmp_path / "Maildir").get_folder("Quarantine")) == 1
    assert not list(mailbox.Maildir(tmp_path / "Maildir").keys()), "the inbox is empty"
    assert len(smtp_sink.wait_for(BEHIND)) == BEHIND
