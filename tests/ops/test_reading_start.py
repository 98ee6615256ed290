"""A reading's start: the first batch goes to the parse worker before the daemon builds the intake
pipeline and the courier, and the worker is handed the next batch while they are built."""
from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.intake import parsing
from maild.intake.suspects import STARTED
from maild.ops import daemon as daemon_module
from maild.ops.daemon import FIRST_BATCH, Daemon
from maild.outbound.courier import Courier
from maild.storage.tables import failures
from tests.helpers import maildir_source, make_mail, write_config

pytestmark = pytest.mark.usefixtures("restore_logging")

N = FIRST_BATCH + 6  # two batches: the first, and the six after it


def backlog(tmp_path: Path, sink: Any, n: int = N) -> Daemon:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=sink.port)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(n):
        box.add(make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<start{i}@acme.pl>"))
    return Daemon(load_config(config))


def test_the_first_batch_is_parsed_before_the_pipeline_is_built_its_attempts_recorded_first(
        tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attempts are recorded in Core (the failures table), without the ORM and the intake pipeline:
    the first batch reaches the parse worker before they are built (~0.1 s of the main process's, which
    the second core spent idle), each of its mails with its attempt already recorded."""
    submitted: list[tuple[bool, int, set[tuple[str, int, str]]]] = []
    real_submit = parsing.ParseAhead.submit

    def submit(ahead: parsing.ParseAhead, mails: Any) -> Any:
        keys = [f"raw:{m.source_key}" for m in mails]
        with daemon.engine.connect() as conn:
            rows = {(key, attempts, error) for key, attempts, error in conn.execute(
                select(failures.c.key, failures.c.attempts, failures.c.last_error).where(failures.c.key.in_(keys)))}
        submitted.append(("ingestor" in daemon.__dict__, len(mails), rows))
        return real_submit(ahead, mails)

    monkeypatch.setattr(parsing.ParseAhead, "submit", submit)
    daemon = backlog(tmp_path, smtp_sink)
    assert daemon.ingest_all() == {"ticket": N}
    first_built, first_count, first_rows = submitted[0]
    assert first_count == FIRST_BATCH
    assert not first_built, "the first batch went to the worker before the intake pipeline was built"
    assert {attempts for _, attempts, _ in first_rows} == {1} and len(first_rows) == FIRST_BATCH
    assert {error for _, _, error in first_rows} == {STARTED}
    assert all(len(rows) == count for _, count, rows in submitted), "every batch's attempts came first"
    with daemon.engine.connect() as conn:
        assert conn.execute(select(failures)).all() == [], "each stored mail's attempt was taken back"
    daemon.drain()
    assert len(smtp_sink.wait_for(N)) == N
    daemon.release_run_lock()


def test_while_the_courier_is_built_the_worker_is_handed_the_next_batch(
        tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch queued behind another reaches the worker only once the one before is read: the daemon
    reads it (``ParseAhead.collect``) between the steps of the courier's start, so the worker parses the
    second batch while the daemon builds the ORM and the outbox, not after the courier's fork."""
    events: list[tuple[str, int]] = []
    real_collect, real_dispatch_start = parsing.ParseAhead.collect, parsing.ParseAhead._start

    def collect(ahead: parsing.ParseAhead) -> None:
        job, worker = ahead._in_flight, ahead._worker
        if job is not None and job.id == 1 and worker is not None:
            worker.wait_readable(30)  # as on a machine where the first batch is parsed by then
        real_collect(ahead)

    def start_job(ahead: parsing.ParseAhead, job: Any) -> None:
        events.append(("parse", job.id))
        real_dispatch_start(ahead, job)

    real_start = Courier.start

    def start(courier: Courier) -> None:
        events.append(("fork", 0))
        real_start(courier)

    monkeypatch.setattr(parsing.ParseAhead, "collect", collect)
    monkeypatch.setattr(parsing.ParseAhead, "_start", start_job)
    monkeypatch.setattr(Courier, "start", start)
    daemon = backlog(tmp_path, smtp_sink)
    assert daemon.ingest_all() == {"ticket": N}
    assert events[:3] == [("parse", 1), ("parse", 2), ("fork", 0)], events
    daemon.drain()
    assert len(smtp_sink.wait_for(N)) == N
    daemon.release_run_lock()


def test_sqlite_the_attempts_take_the_write_lock_at_their_begin_once_the_courier_sends(
        tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the batches do: a transaction that read before a courier's mark was committed and wrote after
    it would be refused at once ("database is locked")."""
    immediate: list[tuple[bool, bool]] = []  # (courier running, BEGIN IMMEDIATE) per batch's attempts
    real_begin = daemon_module.begin_attempts

    def begin_attempts(conn: Any, mails: Any, now: Any) -> Any:
        courier = daemon.__dict__.get("courier")
        immediate.append((courier is not None and courier.running,
                          bool(conn.get_execution_options().get("maild_immediate"))))
        return real_begin(conn, mails, now)

    monkeypatch.setattr(daemon_module, "begin_attempts", begin_attempts)
    n = 3 * FIRST_BATCH + 20  # batches of 64, 128 and 84: the third's attempts with the courier sending
    daemon = backlog(tmp_path, smtp_sink, n)
    assert daemon.engine.dialect.name == "sqlite"
    assert daemon.ingest_all() == {"ticket": n}
    assert immediate == [(False, False), (False, False), (True, True)]
    daemon.drain()
    assert len(smtp_sink.wait_for(n)) == n
    daemon.release_run_lock()
