"""The daemon's WAL checkpoints run on a thread of their own (``db.WalCheckpointer``).

What must hold: the daemon's connections no longer checkpoint at SQLite's 1,000
pages (else nothing moved off the batch's thread), a kick copies what was
committed into the database file, the WAL cannot grow past its bound whatever
the thread does, the thread ends when idle or closed, and a database
left with an uncopied WAL (a crash) opens with every committed row.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
import pytest
from sqlalchemy import Engine, text

from maild.storage import db
from maild.storage.db import WAL_FALLBACK_PAGES, WalCheckpointer, make_engine

ROW = "x" * 3000  # about one page a row


def _engine(path: Path, background: bool = True) -> Engine:
    engine = make_engine(f"sqlite:///{path}", background_checkpoints=background)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    return engine


def _write(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": ROW}] * rows)


def test_the_daemons_connections_leave_checkpoints_to_the_thread(tmp_path: Path) -> None:
    daemon, command = _engine(tmp_path / "d.db"), _engine(tmp_path / "c.db", background=False)
    with daemon.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WAL_FALLBACK_PAGES
    with command.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    # 1,500 pages committed: a command's connection would have copied them into the file by now
    _write(daemon, 1500)
    assert os.path.getsize(tmp_path / "d.db") < 100 * 4096
    daemon.dispose()
    command.dispose()


def test_a_kick_copies_the_commit_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    engine = _engine(path)
    _write(engine, 300)
    before = os.path.getsize(path)
    checkpoints = WalCheckpointer(path)
    checkpoints.kick()
    checkpoints.settle()
    assert checkpoints.passes >= 1
    assert checkpoints.copied_pages == checkpoints.wal_pages >= 300
    assert os.path.getsize(path) >= before + 300 * 4096
    checkpoints.close()
    engine.dispose()


def _wal_pages_after(path: Path, fallback: int, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(db, "WAL_FALLBACK_PAGES", fallback)
    engine = _engine(path)
    for _ in range(12):
        _write(engine, 100)
    size = os.path.getsize(path.with_name(path.name + "-wal"))
    engine.dispose()
    return (size - 32) // (4096 + 24)


def test_the_wal_stays_bounded_without_the_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread may lag or die: the connections' own checkpoint at the fallback keeps the
    WAL bounded and starts it over (12 commits of ~100 pages; the fallback is 64 MB in use)."""
    assert _wal_pages_after(tmp_path / "a.db", 0, monkeypatch) >= 1200  # no fallback: it grows with every commit
    assert _wal_pages_after(tmp_path / "b.db", 300, monkeypatch) <= 300 + 2 * 110


def test_the_thread_ends_when_idle_and_when_closed(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    engine = _engine(path)
    checkpoints = WalCheckpointer(path, idle_seconds=0.1)
    _write(engine, 10)
    checkpoints.kick()
    checkpoints.settle()
    deadline = time.monotonic() + 5
    while any(t.name == "maild-wal-checkpoint" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "maild-wal-checkpoint" for t in threading.enumerate())
    _write(engine, 10)
    checkpoints.kick()  # starts it again
    passes = checkpoints.passes
    checkpoints.settle()
    assert checkpoints.passes > passes
    checkpoints.close()
    assert not any(t.name == "maild-wal-checkpoint" for t in threading.enumerate())
    engine.dispose()


def test_committed_rows_survive_a_wal_never_copied(tmp_path: Path) -> None:
    """A crash before the thread copied anything: the next opener replays the WAL."""
    path = tmp_path / "d.db"
    engine = _engine(path)
    _write(engine, 500)
    copy = tmp_path / "crashed.db"
    # the files as a kill -9 would leave them: database and WAL, nothing checkpointed
    copy.write_bytes(path.read_bytes())
    copy.with_name("crashed.db-wal").write_bytes(path.with_name("d.db-wal").read_bytes())
    engine.dispose()
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (500,)
    finally:
        conn.close()


def test_commits_within_min_interval_share_one_pass_and_settle_does_not_wait(tmp_path: Path) -> None:
    """A pass copies each page once however many commits changed it: commits closer together than
    ``min_interval`` wait for one pass (a table's last page, changed by each, is copied once), and
    ``settle`` (the benchmark, the end of a run) does not wait the interval out."""
    path = tmp_path / "d.db"
    engine = _engine(path)
    checkpoints = WalCheckpointer(path, min_interval=30)
    _write(engine, 5)
    checkpoints.kick()
    time.sleep(0.3)  # the first pass (none before it) is under way or done
    first = checkpoints.passes
    for _ in range(5):
        _write(engine, 5)
        checkpoints.kick()
        time.sleep(0.05)
    assert checkpoints.passes == first, "five commits inside the interval: no pass of their own yet"
    started = time.monotonic()
    checkpoints.settle()
    assert time.monotonic() - started < 10, "settle waited out min_interval"
    assert checkpoints.passes >= first + 1 and checkpoints.copied_pages == checkpoints.wal_pages
    checkpoints.close()
    engine.dispose()
