"""Two maild processes on one database never send a mail twice (issue 12, part 3).

Real processes, a real SMTP server: 200 acknowledgements are queued while the
relay is down, then the service (``maild run``) and an operator's
``maild run --once`` work at the same time against a relay that takes 20 ms
per mail. On SQLite the second process is refused at once with the holder's
pid; on PostgreSQL both work and the outbox rows are leased. Either way the
relay sees exactly 200 mails with 200 distinct Message-IDs, and the read-only
commands keep answering while the daemon sends.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.storage.db import open_database
from maild.storage.models import OutboxRow
from tests.helpers import deliver, make_mail, maildir_source, write_config

ROOT = Path(__file__).resolve().parents[2]
N = 200


def maild(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, "-m", "maild.cli", "--config", str(config), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'var' / 'maild.db'}"


def setup(tmp_path: Path, port: int, url: str) -> Path:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=port,
                          database_url=url if url.startswith("postgresql") else "",
                          extra="\n[daemon]\ncycle_seconds = 1\nretry_min_seconds = 1\nretry_max_seconds = 1\n")
    now = datetime.now(timezone.utc)
    for i in range(N):
        # one sender per domain: neither the per-sender nor the per-domain limit holds an acknowledgement
        deliver(tmp_path / "Maildir", make_mail(sender=f"Klient {i} <k{i}@firma{i}.example>",
                                                subject=f"Zgłoszenie {i}", msgid=f"<q{i}@test>"), now)
    return config


def test_service_and_run_once_deliver_each_queued_mail_once(tmp_path: Path, smtp_sink: Any, db_url: str) -> None:
    config = setup(tmp_path, smtp_sink.port, db_url)
    smtp_sink.stop()  # the relay is down while the mail is read: 200 acknowledgements wait
    code, _, err = finish(maild(config, "run", "--once"))
    assert code == 0, err[-3000:]
    sessions = open_database(db_url, migrate=False)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent")) == N
    sessions.kw["bind"].dispose()

    smtp_sink.delay_seconds = 0.02
    smtp_sink.start()
    service = maild(config, "run")
    try:
        wait_until(lambda: len(smtp_sink.messages) >= 1, 60, "the service to start sending")
        once = maild(config, "run", "--once")
        readers = [maild(config, "tickets", "list", "--json"), maild(config, "status", "--json"),
                   maild(config, "report", "hours", "--month", datetime.now(timezone.utc).strftime("%Y-%m"))]
        once_code, _, once_err = finish(once)
        sending_meanwhile = len(smtp_sink.messages) < N
        for reader in readers:
            rcode, _, rerr = finish(reader)
            assert rcode == 0, rerr[-3000:]
        wait_until(lambda: len(smtp_sink.messages) >= N, 120, f"{N} deliveries")
        time.sleep(1.5)  # a second sender would still be at it
    finally:
        service.send_signal(signal.SIGTERM)
        service_code, _, service_err = finish(service, 30)
    assert service_code == 0, service_err[-3000:]
    assert "Traceback" not in once_err, once_err[-3000:]
    if db_url.startswith("sqlite"):
        assert sending_meanwhile, "run --once must have started while the service was sending"
        assert once_code == 1, once_err[-3000:]
        holder = re.search(r"another maild is running on (\S+) \(pid (\d+)\)", once_err)
        assert holder is not None, once_err[-3000:]
        assert holder[1] == str(tmp_path / "var" / "maild.db") and holder[2] == str(service.pid)
    else:
        assert once_code == 0, once_err[-3000:]
    ids = Counter(m.parsed["Message-ID"] for m in smtp_sink.messages)
    assert len(smtp_sink.messages) == N, f"{len(smtp_sink.messages)} deliveries of {N} queued mails"
    assert len(ids) == N


def test_two_processes_started_together_one_runs_the_other_says_why(tmp_path: Path, smtp_sink: Any,
                                                                   db_url: str) -> None:
    config = setup(tmp_path, smtp_sink.port, db_url)
    first, second = maild(config, "run", "--once"), maild(config, "run", "--once")
    results = [finish(first), finish(second)]
    codes = sorted(code for code, _, _ in results)
    if db_url.startswith("sqlite"):
        assert codes == [0, 1], results
        refused = next(err for code, _, err in results if code == 1)
        assert "Traceback" not in refused, refused
        assert re.search(r"^maild: another maild is running on \S+maild\.db \(pid \d+\)", refused, re.M), refused
    else:
        assert codes == [0, 0], results
    wait_until(lambda: len(smtp_sink.messages) >= N, 60, f"{N} deliveries")
    assert len(smtp_sink.messages) == N
    assert len({m.parsed["Message-ID"] for m in smtp_sink.messages}) == N


def test_storage_created_from_a_shell_is_private(tmp_path: Path) -> None:
    """Outside systemd (no StateDirectory=) the folders maild creates are 0700 and the
    SQLite database, with its WAL files, 0600, whatever the umask lets through."""
    from maild.storage.blobs import BlobStore

    old = os.umask(0o022)
    try:
        root = tmp_path / "state" / "maild"
        sessions = open_database(f"sqlite:///{root / 'maild.db'}")
        with sessions() as session, session.begin():
            session.execute(select(1))
        blobs = BlobStore(root)
        blobs.append(b"raw mail")
        blobs.put(b"quarantined mail")
        blobs.close()
    finally:
        os.umask(old)
    for folder in (tmp_path / "state", root, root / "blobs", root / "blobs" / "packs"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    assert [p.stat().st_mode & 0o777 for p in (root / "blobs").glob("??")] == [0o700]
    for name in ("maild.db", "maild.db-wal", "maild.db-shm"):
        assert (root / name).stat().st_mode & 0o777 == 0o600, name
    sessions.kw["bind"].dispose()
