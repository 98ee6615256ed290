"""The daemon loop: ingest -> sweep -> health -> drain, then wait for mail (IDLE) or a timer.

Only this module, the mail source, the store and the SMTP sender touch the
outside world. Faults of the world (mail server gone, database restarting, disk
full) are retried with backoff and logged once per state change; mail stays on
the server until its transaction has committed.

systemd hears from the loop (``notify``): READY=1 after the first successful
mailbox login, WATCHDOG=1 while the loop is healthy (cycles succeed, or a fault
is still young), STATUS= a one-line summary, STOPPING=1 on the way out. A loop
that keeps failing stops feeding the watchdog, so systemd restarts it.
"""
from __future__ import annotations

import gc
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.pool import QueuePool
from sqlalchemy.exc import DBAPIError, OperationalError

from maild.config import Config, secret_warnings
from maild.desk import idle
from maild.desk.context import business_calendar
from maild.errors import ConfigError
from maild.intake.faults import ParseWorkerError
from maild.intake.mailbox import FetchedMail, ImapSettings, MailboxAuthError, MailboxError, MailSource, open_source
from maild.intake.attempts import begin_attempts, count_attempts, note_attempts, release_attempts
from maild.intake.suspects import MAX_ATTEMPTS, Retry, Suspect, plan_retries
from maild.ops.health import AlertMail, alert_name, plan_alerts, problems, read_health
from maild.ops.leader import WAIT_STEP_SECONDS, MailboxLock, SqliteRunLock
from maild.ops.sd_notify import notify, watchdog_interval
from maild.outbound.drained import DrainResult
from maild.outbound.compile_aside import CompileAside, compile_aside
from maild.outbound.template_files import TemplateFileError, cache_folder, compiled_before, read_sources, search_path
from maild.rules.customers import Customer, load_customers
from maild.storage import queries
from maild.storage.blobs import BlobStore, StorageError
from maild.storage.db import DatabaseError, WalCheckpointer, open_engine, sessions_for

if TYPE_CHECKING:  # loaded with the work that needs them, not at start (``Daemon``'s lazy parts)
    from sqlalchemy.orm import Session, sessionmaker

    from maild.intake.message import InboundMessage, UnparsableMessage
    from maild.intake.parsing import ParseAhead
    from maild.intake.pipeline import Ingestor
    from maild.desk.sweeper import Sweeper
    from maild.ops.metrics import Metrics
    from maild.outbound.courier import Courier
    from maild.outbound.outbox import Outbox
    from maild.outbound.render import Renderer

log = logging.getLogger("maild.daemon")
# Bytes of mail fetched per batch: with the next batch fetched while this one is
# stored, a 25 MB message plus its neighbours must stay well inside a small VM.
BATCH_BYTES = 6 * 1024 * 1024
# The first batch of a reading is parsed while the main process has nothing to store: it
# holds this many mails, each next one twice as many, up to ``batch_size`` (64, 128, 256, 500).
FIRST_BATCH = 64
UTC = timezone.utc
# consecutive failed cycles after which the loop no longer counts as healthy
UNHEALTHY_AFTER = 3
DRAIN_CHUNK = 1000
FAULTS = (MailboxError, StorageError, DatabaseError, OperationalError, DBAPIError, ParseWorkerError)


class _Interrupt(Exception):
    """Raised from a signal handler only while the loop is idle-waiting."""


@dataclass
class WriteGateWaits:
    """The daemon's waits for the SQLite write gate while a courier sends (``Daemon._write_gate``)."""

    count: int = 0
    seconds: float = 0.0
    longest: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds
        self.longest = max(self.longest, seconds)


@dataclass
class CycleReport:
    ingested: dict[str, int] = field(default_factory=dict)
    more_waiting: bool = False  # the ingest slice ended with mail still on the server
    escalations: int = 0
    closed: int = 0
    outbox: DrainResult = field(default_factory=DrainResult)

    def merge(self, other: CycleReport) -> None:
        for key, value in other.ingested.items():
            self.ingested[key] = self.ingested.get(key, 0) + value
        self.more_waiting = other.more_waiting
        self.outbox.more_due = other.outbox.more_due
        self.escalations += other.escalations
        self.closed += other.closed
        self.outbox.add(other.outbox)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.ingested.items())) or "no mail"
        return (f"{counts}; escalations {self.escalations}; sent {self.outbox.sent}, "
                f"retry {self.outbox.retry}, failed {self.outbox.failed}")


def backoff(failures: int, minimum: float, maximum: float) -> float:
    """Seconds to wait after the n-th consecutive failure: min, 2 min, 4 min ... capped."""
    if failures < 1:
        return 0.0
    return float(min(maximum, minimum * 2 ** min(failures - 1, 30)))


class Daemon:
    def __init__(self, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.clock = clock
        self.started_at = clock()
        # Before the database is even opened (a first start migrates it): a second
        # process on the same SQLite file would send the same outbox rows again.
        self.run_lock = SqliteRunLock.for_url(config.database_url)
        if self.run_lock is not None:
            self.run_lock.acquire()
        self._compiling: CompileAside | None = None
        # SQLite, once a courier sends while the backlog is read: the daemon's writes take the write lock
        # at their BEGIN (``_start_courier``)
        self._write_first = False
        try:
            self._start(config, clock)
        except BaseException:
            if self._compiling is not None:
                self._compiling.abandon()
            if self.run_lock is not None:
                self.run_lock.release()
            raise

    def _start(self, config: Config, clock: Callable[[], datetime]) -> None:
        """What every start needs: the database, the customers, the calendar's and the templates'
        checks, the mailbox. The rest (the ORM, the intake pipeline, the desk, the outbox, Jinja2)
        is built with the first work that needs it (the ``cached_property`` parts below): a cycle
        with nothing to read, sweep or send asks the database in Core whether there is (``desk.idle``)."""
        for warning in secret_warnings(config):
            log.warning("%s", warning)
        # first: a snapshot not compiled before is compiled aside while the rest of the start goes on
        sources, self._compiling = self._read_templates()
        self.engine = open_engine(config.database_url, background_checkpoints=True)
        # SQLite: the WAL is copied into the database off the batch's thread (storage.db.WalCheckpointer)
        self.checkpoints = WalCheckpointer.for_engine(self.engine)
        self.blobs = BlobStore(config.storage_path)
        self.customers = self._load_customers()
        self._sync_customers(self.customers)
        # the holiday settings are checked at start (kept holidays: without the library)
        self.calendar = business_calendar(config)
        self.templates = self._templates_compiled(sources)
        self.mailbox_lock = MailboxLock(self.engine, _mailbox_identity(config), config.daemon.takeover_seconds)
        self._standby_logged = False
        # files whose POSIX lock only is used, made once and held by the couriers (``_lock_fd``)
        self._lock_files: dict[str, IO[bytes]] = {}
        self.gate_waits = WriteGateWaits()  # the daemon's waits for it (benchmarks)
        self.sent_after_reading = 0  # of the couriers' mail, what those started after the reading sent (benchmarks)
        self.sent_while_reading = DrainResult()  # the couriers' mail, not yet in a cycle's report
        self.source: MailSource = open_source(config.source)
        self.metrics: Metrics | None = None
        if config.metrics_listen:
            from maild.ops.metrics import Metrics

            self.metrics = Metrics()
        self._stop = False
        self._reload = False
        self.more_waiting = False
        self.more_work = False  # the last cycle left mail to read or to send for the next, at once
        self.stored = 0  # mails fetched and stored (any outcome) since this daemon started
        # run --once on a terminal shows a progress bar through this: (stored, known in all)
        self.on_progress: Callable[[int, int | None], None] | None = None
        self._waiting = False
        self._ready = False
        self.failures = 0  # consecutive failed cycles
        self._fault_kind = ""
        self._smtp_failures = 0
        self._smtp_next = 0.0  # monotonic time before which the relay is left alone
        _tune_garbage_collector()

    # ------------------------------------------------------------ the parts built with the first work

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return sessions_for(self.engine)

    @cached_property
    def renderer(self) -> Renderer:
        from maild.outbound.render import load_renderer

        return load_renderer(self.config.templates_path, _template_cache(self.config), self.templates)

    @cached_property
    def ingestor(self) -> Ingestor:
        from maild.intake.pipeline import Context, Ingestor

        return Ingestor(Context.build(self.config, self.customers), self._batch_sessions(), self.blobs, self.clock)

    def _batch_sessions(self) -> sessionmaker[Session]:
        """The pipeline's sessions: once a SQLite courier sends while the backlog is read
        (``_write_first``), each begins IMMEDIATE, as the attempts' transactions do."""
        return sessions_for(self.engine, take_the_write_lock=True) if self._write_first else self.sessions

    @cached_property
    def parse_ahead(self) -> ParseAhead:
        from maild.intake.facts import ReadingRules
        from maild.intake.parsing import ParseAhead

        return ParseAhead(self.config.limits, self.config.parse_timeout_seconds, heartbeat=_watchdog_ping,
                          rules=ReadingRules.of(self.config))

    @cached_property
    def sweeper(self) -> Sweeper:
        from maild.desk.sweeper import Sweeper

        return Sweeper(self.ingestor.ctx, self.sessions, self.ingestor.notifier)

    @cached_property
    def outbox(self) -> Outbox:
        from maild.outbound.marks import JOURNAL_NAME
        from maild.outbound.outbox import Outbox, Sender

        config = self.config
        outbox = Outbox(self.sessions, self.renderer, config.smtp,
                        Sender(config.from_address, config.from_name, config.support.instance_id),
                        self.blobs, self.clock, retry_base=timedelta(seconds=config.daemon.smtp_retry_base_seconds),
                        hold_seconds=config.daemon.takeover_seconds)
        if self.engine.dialect.name == "sqlite":
            outbox.journal_path = config.storage_path / JOURNAL_NAME
        return outbox

    @cached_property
    def courier(self) -> Courier:
        from maild.outbound.courier import Courier

        return Courier(self.outbox)

    @cached_property
    def second_courier(self) -> Courier:
        """After the reading, a second courier sends the rest of a backlog beside the first."""
        from maild.outbound.courier import Courier

        return Courier(self.outbox)

    def _built(self, part: str) -> bool:
        """Whether a lazy part exists (was needed by work, or set by a test)."""
        return part in self.__dict__

    # ------------------------------------------------------------ customers and templates

    def _load_customers(self) -> tuple[Customer, ...]:
        return load_customers(self.config.customers_file, self.config.packages)

    def _sync_customers(self, customers: tuple[Customer, ...]) -> None:
        """Mirror the customers file into the database, unless it holds them as they are (the digest
        ``store.sync_customers`` kept): that sync wrote every customer and contract row at each start."""
        with self.engine.connect() as conn:
            if queries.customers_unchanged(conn, customers):
                log.info("customers: %d customers, unchanged since their last sync", len(customers))
                return
        from maild.storage import store

        with self.sessions() as session, session.begin():
            seen, ended = store.sync_customers(session, customers, self.clock(),
                                               self.config.customers_max_removed_percent,
                                               str(self.config.customers_file))
        log.info("customers: %d customers, %d contracts (%d ended)", len(customers), seen, ended)

    def _read_templates(self) -> tuple[dict[str, str], CompileAside | None]:
        """The templates' snapshot, and the process compiling it (``outbound.compile_aside``)
        unless this very snapshot compiled before (``compiled_before``: then with the first mail)."""
        try:
            sources = read_sources(search_path(self.config.templates_path))
        except TemplateFileError as exc:
            from maild.outbound.render import RenderError

            raise RenderError(str(exc)) from None
        self.__dict__.pop("renderer", None)
        cache = _template_cache(self.config)
        if compiled_before(cache, sources):
            return sources, None
        compiling = compile_aside(self.config.templates_path, cache, sources)
        if compiling is None:
            self._compile_here(sources)
        return sources, compiling

    def _templates_compiled(self, sources: dict[str, str]) -> dict[str, str]:
        """The end of the start waits for the compile: a broken edit refuses the start, as when it
        was compiled in this process. A compile that gave no answer, or that could not mark the
        snapshot (a cache folder it cannot write), is done here as before."""
        compiling = self._compiling  # until answered, ended by ``__init__`` if the start fails
        if compiling is not None:
            self._warm_while(compiling)
            try:
                broken = compiling.wait()
            except ChildProcessError as exc:
                log.warning("templates: %s; compiling them here", exc)
                broken = None
                self._compile_here(sources)
            self._compiling = None
            if broken is not None:
                from maild.outbound.render import RenderError

                raise RenderError(broken)
            if not self._built("renderer") and not compiled_before(_template_cache(self.config), sources):
                self._compile_here(sources)
        return sources

    def _warm_while(self, compiling: CompileAside) -> None:
        """While the other process still compiles (a first start: a new installation, an upgrade), this
        one would wait idle: it builds what the reading's first batches need (the intake pipeline, then
        the outbox's modules for the courier), which it built after the mailbox login before. On an
        empty mailbox that is CPU spent in a wait, not time: each part is begun only while the compile
        is still running."""
        if not compiling.answered():
            _ = self.ingestor
        if not compiling.answered():
            import maild.outbound.courier  # noqa: F401

    def _compile_here(self, sources: dict[str, str]) -> None:
        from maild.outbound.render import load_renderer

        self.renderer = load_renderer(self.config.templates_path, _template_cache(self.config), sources)

    def reload(self) -> bool:
        """Re-read the customers file and templates; anything bad keeps the old state."""
        from maild.outbound.render import RenderError, load_renderer

        try:
            customers = self._load_customers()
            renderer = load_renderer(self.config.templates_path, _template_cache(self.config))
            self._sync_customers(customers)
        except (ConfigError, RenderError) as exc:
            log.error("reload refused, keeping the previous customers and templates: %s", exc)
            return False
        except FAULTS as exc:
            log.error("reload failed, keeping the previous customers and templates: %s: %s",
                      type(exc).__name__, exc)
            return False
        self.customers = customers
        if self._built("ingestor"):
            from maild.intake.pipeline import Context

            self.ingestor.ctx = Context.build(self.config, customers)
            if self._built("sweeper"):
                self.sweeper.ctx = self.ingestor.ctx
        self._stop_courier()  # it renders with the templates it was forked with; the next one has the new
        self.renderer = renderer
        if self._built("outbox"):
            self.outbox.renderer = renderer
        log.info("reloaded customers and templates")
        return True

    # ------------------------------------------------------------ one cycle

    def ingest_all(self, budget_seconds: float | None = None) -> dict[str, int]:
        """Fetch and store what the mailbox holds; with a budget, stop after the batch
        that used it up (``self.more_waiting`` then says mail was left for the next slice)."""
        totals: dict[str, int] = {}
        waiting = 0
        self.more_waiting = False
        started = time.monotonic()
        if not self.mailbox_lock.acquire():
            if not self._standby_logged:
                log.info("another daemon reads %s; this one sweeps and sends until it can take over",
                         self.mailbox_lock.identity)
                self._standby_logged = True
            if not self._ready:
                # It reads the mailbox only once it takes over, and waits for the lock, not for mail:
                # a login now (then out) shows a wrong password or folder at its start, not at the takeover.
                self.source.connect()
                self.source.close()
                # a standby is up and useful (it sends): systemd's Type=notify start must not time out
                self._ready = True
                notify("READY=1", "STATUS=standby: another daemon reads the mailbox; sweeping and sending")
            return totals
        self._standby_logged = False
        self.source.connect()
        if not self._ready:
            self._ready = True
            notify("READY=1", "STATUS=logged in to the mailbox, fetching")
            log.info("ready: mailbox login succeeded")
        # Batch k+1 is fetched and parsed (on the other core) while batch k is stored.
        pending: tuple[list[FetchedMail], Future[list[InboundMessage | UnparsableMessage]]] | None = None
        unstored: dict[str, FetchedMail] = {}  # attempts recorded, not stored: taken back if left
        stored_before = self.stored
        whole = False  # the mailbox read to its end, not cut short by a stop, the slice or a fault
        try:
            for batch in self.source.batches(max_count=self.config.batch_size, max_bytes=BATCH_BYTES,
                                             max_message_bytes=self.config.limits.max_message_bytes,
                                             first_count=FIRST_BATCH):
                # an attempt is recorded before parsing starts, so a kill or a crash counts too
                with self._write_gate():
                    prior = self._begin_attempts(batch)
                fresh = [m for m in batch if m.source_key not in prior]
                unstored.update((m.source_key, m) for m in fresh)
                stored = False
                if fresh:
                    future = self.parse_ahead.submit(fresh)
                    previous, pending = pending, (fresh, future)
                    if previous is not None:
                        self._start_courier()  # a second batch: a backlog, worth sending while reading
                        waiting += self._store_batch(*previous, totals, unstored)
                        stored = True
                if prior:
                    # what a dead daemon had in hand, with nothing else in hand: pending goes first
                    if pending is not None:
                        previous, pending = pending, None
                        waiting += self._store_batch(*previous, totals, unstored)
                    by_key = {m.source_key: m for m in batch}
                    steps = plan_retries([prior[m.source_key] for m in batch if m.source_key in prior])
                    # the halves after the first are queued as groups: a death in the first leaves them whole
                    self._note_attempts([([by_key[key] for key in step.keys], step.queue)
                                         for step in steps[1:] if step.queue])
                    for step in steps:
                        waiting += self._retry_suspects([by_key[key] for key in step.keys], step,
                                                        prior[step.keys[0]].attempts, totals)
                    stored = True
                if not stored:
                    continue
                self._report_progress(stored_before)
                if self._stop:
                    log.info("stopping after the batch in hand (%d messages committed)", sum(totals.values()))
                    return totals
                if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
                    # the fetched batch stays on the server, unmoved, for the next slice
                    self.more_waiting = True
                    log.info("backlog: %d mails stored in this %.0f s slice; sweeping and sending before "
                             "reading on", sum(totals.values()), budget_seconds)
                    return totals
            if pending is not None:
                previous, pending = pending, None
                waiting += self._store_batch(*previous, totals, unstored)
                self._report_progress(stored_before)
                if self._stop:
                    log.info("stopping after the batch in hand (%d messages committed)", len(previous[0]))
                    return totals
            whole = True
        finally:
            if unstored:
                self._release(list(unstored.values()))
            self._end_sqlite_courier(whole)
        now = self.clock()
        with self.engine.begin() as conn:
            queries.put_state(conn, "last_fetch_at", now.isoformat(), now)
            queries.put_state(conn, "mail_waiting", str(waiting), now)
        return totals

    @contextmanager
    def _attempts(self) -> Iterator[Connection]:
        """A transaction for the attempts' rows (``intake.attempts``): Core, so that recording the first
        batch's needs neither the ORM nor the intake pipeline; on SQLite it takes the write lock at its
        BEGIN once a courier sends (``_start_courier``), as the pipeline's transactions do."""
        engine = self.engine.execution_options(maild_immediate=True) if self._write_first else self.engine
        with engine.begin() as conn:
            yield conn

    def _begin_attempts(self, batch: list[FetchedMail]) -> dict[str, Suspect]:
        with self._attempts() as conn:
            return begin_attempts(conn, batch, self.clock())

    def _note_attempts(self, notes: list[tuple[list[FetchedMail], str]]) -> None:
        if notes:
            with self._attempts() as conn:
                note_attempts(conn, notes, self.clock())

    def _report_progress(self, stored_before: int) -> None:
        """Tell ``on_progress`` (mails stored in this run, mails known in all) after each batch."""
        if self.on_progress is None:
            return
        found = getattr(self.source, "found", None)
        left = None if found is None else max(found - (self.stored - stored_before), 0)
        self.on_progress(self.stored, None if left is None else self.stored + left)

    def _store_batch(self, batch: list[FetchedMail], future: Future[list[InboundMessage | UnparsableMessage]],
                     totals: dict[str, int], unstored: dict[str, FetchedMail] | None = None) -> int:
        """Store one parsed batch and move its mail on the source; returns how many wait for a retry."""
        from maild.intake.parsing import return_free_memory

        parsed = self.parse_ahead.result(future, batch)
        with self._write_gate():
            result = self.ingestor.ingest_batch(batch, parsed, counted=True)
        if self.checkpoints is not None:
            self.checkpoints.kick()
        for mail in batch:
            (unstored or {}).pop(mail.source_key, None)
        if result.done:
            self.source.mark_done(result.done)
        if result.quarantined:
            self.source.quarantine(result.quarantined)
        for key, value in result.counts.items():
            totals[key] = totals.get(key, 0) + value
        self.stored += len(batch)
        self.courier.poke()  # the batch's outbox rows are committed
        notify("WATCHDOG=1")  # a long backlog is progress, not a hang
        return_free_memory()
        return len(result.retry)

    def _retry_suspects(self, mails: list[FetchedMail], step: Retry, attempts: int,
                        totals: dict[str, int]) -> int:
        """Mail whose processing was started before and never finished (the daemon died
        with it in hand), processed with nothing else in hand as ``suspects.plan_retries``
        says: a group retried together, split in halves each time it kills the daemon
        again, down to one mail, quarantined unparsed after MAX_ATTEMPTS tries alone.
        ``attempts``: the first mail's tries so far (the one mail's, when given up)."""
        from maild.intake.parsing import GaveUp

        future: Future[list[InboundMessage | UnparsableMessage]] = Future()
        if step.give_up:
            future.set_result([GaveUp(attempts)])
            return self._store_batch(mails, future, totals)
        if step.alone:
            log.warning("%s: processing started and not finished before (attempts: %d); processing it alone "
                        "(alone %d/%d)", mails[0].source_key, attempts, step.alone, MAX_ATTEMPTS)
        else:
            log.warning("%s .. %s: %d mails whose processing started and did not finish before (the daemon "
                        "died with them in hand, attempts: %d); processing them as a group",
                        mails[0].source_key, mails[-1].source_key, len(mails), attempts)
        with self._attempts() as conn:
            count_attempts(conn, mails, step.note, self.clock())
        return self._store_batch(mails, self.parse_ahead.submit(mails), totals)

    def _start_courier(self) -> None:
        """Send the outbox from a forked courier while the backlog is read (unless
        ``send_while_reading`` is off or the relay is being backed off).

        SQLite (a database file): the courier's sent marks and the daemon's batches take
        turns at the one write lock. From here on the ingestor's transactions take it at
        their BEGIN (``BEGIN IMMEDIATE``), waiting out a courier's mark (one UPDATE, its own
        transaction) within the busy timeout: a transaction that read first and wrote after
        a mark was committed would be refused at once (SQLITE_BUSY_SNAPSHOT, "database is
        locked", which no busy timeout waits out). The courier ends with the reading
        (``_end_sqlite_courier``), before the cycle's other steps write in transactions
        of their own. As before the couriers after the reading, every SQLite connection of
        this process and the WAL thread's are closed before the fork: none of SQLite's
        state (its locks' bookkeeping, the WAL index's mapping) is carried into it."""
        if not self.config.daemon.send_while_reading or time.monotonic() < self._smtp_next:
            return
        if not self._built("courier"):
            # the ORM, then the outbox (its templates and SMTP client): the worker, which may have
            # parsed the first batch meanwhile, is handed the next after each
            for part in ("sessions", "outbox"):
                getattr(self, part)
                if self._built("parse_ahead"):
                    self.parse_ahead.collect()
        if self.courier.running:
            return
        from maild.outbound.courier import READING_NICENESS, CourierError

        sqlite = self.engine.dialect.name == "sqlite"
        if sqlite:
            pool = self.engine.pool
            if self.checkpoints is None or (isinstance(pool, QueuePool) and pool.checkedout()):
                return  # an in-memory database (tests) or a connection in use: no fork
            self._write_first = True
            if self._built("ingestor"):
                self.ingestor.sessions = self._batch_sessions()
            self.close_checkpoints()  # the next stored batch starts it again
            self.engine.dispose()
        self.courier.turn_fd = self.second_courier.turn_fd = self._turn_fd()
        self.courier.partition, self.courier.after_reading = None, False
        self.courier.write_gate = self._gate_fd() if sqlite else None
        self.courier.niceness = READING_NICENESS if sqlite else 0  # on what the reading leaves idle
        try:
            self.courier.start()
        except CourierError as exc:
            log.warning("outbox: %s; sending after reading instead", exc)

    def _gate_fd(self) -> int | None:
        """SQLite: the file whose lock the daemon and a courier sending while it reads take
        around their writes (``_write_gate``); without one the busy timeout alone hands the
        write lock over."""
        return self._lock_fd("maild-writes-", "the write gate", "the busy timeout alone")

    @contextmanager
    def _write_gate(self) -> Iterator[None]:
        """Write (a batch, the attempts recorded before parsing) holding the write gate while a
        SQLite courier sends: its marks wait in the kernel for the commit and go at once
        (``Outbox.write_gate``), and the daemon waits at most for one mark, one UPDATE, not
        in SQLite's busy handler (``gate_waits`` sums those waits)."""
        courier = self.__dict__.get("courier")
        fd = courier.write_gate if courier is not None and courier.running else None
        if fd is None:
            yield
            return
        import fcntl

        started = time.perf_counter()
        fcntl.lockf(fd, fcntl.LOCK_EX)
        self.gate_waits.add(time.perf_counter() - started)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _end_sqlite_courier(self, whole: bool) -> None:
        """SQLite: the reading has ended (``whole``: the mailbox read to its end), or its slice or
        a fault cut it short. The courier that sent while it went on ends before the cycle's
        other steps (sweep, digests, health) write in deferred transactions its marks would
        outdate.

        Fewer than ``SQLITE_TWO_AFTER_READING_FROM`` mails due after a whole reading: it sends
        them and ends, while the daemon waits (at most a slice: then it stops after the mail in
        hand and the drain sends the rest). Two new couriers would each pay a fork, a database
        connection and an SMTP session for a rest this one sends on the connections it has
        open: the peer's workload at 2,000 mails, ~680 left, was +2.7 % for the whole cycle
        (bench/README, sixteenth session). With more due, or a reading cut short, it stops
        after the mail in hand; the rest goes to two couriers with a half of the rows each
        (``_start_sqlite_couriers``: one niced process is the slower sender of a large rest)
        or to the daemon. A courier that went on beside a second one would claim rows of that
        one's half."""
        if not (self.engine.dialect.name == "sqlite" and self._built("courier") and self.courier.running):
            return
        from maild.outbound.courier import SQLITE_TWO_AFTER_READING_FROM

        if (whole and not self._stop and time.monotonic() >= self._smtp_next and not self.courier.ended()
                and not self.outbox.due_at_least(SQLITE_TWO_AFTER_READING_FROM)):
            self.courier.finish()
            self.courier.wait_ended(self.config.daemon.slice_seconds, stop=lambda: self._stop)
        self._stop_courier()

    def _turn_fd(self) -> int | None:
        """The couriers' shared turn: a file they all hold, made with the first courier; without
        one, one courier, which needs no shared turn."""
        return self._lock_fd("maild-couriers-", "the couriers' turn", "one courier only")

    def _lock_fd(self, prefix: str, purpose: str, otherwise: str) -> int | None:
        """A temporary file (unlinked at once: only its POSIX lock is used) made once per daemon
        for ``purpose``; None without a temporary folder, logged with what is done ``otherwise``."""
        made = self._lock_files.get(prefix)
        if made is None:
            import tempfile

            try:
                made = self._lock_files[prefix] = tempfile.TemporaryFile(prefix=prefix)
            except OSError as exc:
                log.warning("outbox: no file for %s (%s); %s", purpose, exc, otherwise)
                return None
        return made.fileno()

    def _start_sqlite_couriers(self) -> bool:
        """SQLite, the reading ended: two couriers for a backlog of due mail, each with its half
        of the rows (``Outbox.partition``) and the shared turn; False when the daemon sends itself."""
        if not self.config.daemon.send_while_reading:
            return False
        if not self._built("outbox"):
            with self.engine.connect() as conn:
                if not queries.outbox_due(conn, self.clock()):
                    return False  # an idle cycle: the outbox, its SMTP client and the templates stay unloaded
        from maild.outbound.courier import SQLITE_COURIERS_FROM, CourierError

        if self.courier.running or not self.outbox.due_at_least(SQLITE_COURIERS_FROM):
            return False
        fd = self._turn_fd()
        pool = self.engine.pool
        if fd is None or (isinstance(pool, QueuePool) and pool.checkedout()):
            return False
        # SQLite's library state (its locks' bookkeeping, the WAL index's mapping) must not be
        # carried into a fork: every connection of this process is closed first, the WAL
        # thread's too (the next stored batch starts it again)
        self.close_checkpoints()
        self.engine.dispose()
        for k, courier in enumerate((self.courier, self.second_courier)):
            courier.turn_fd, courier.partition, courier.after_reading = fd, (k, 2), True
            courier.write_gate = None  # the daemon stores nothing meanwhile; their marks are in the turn
            courier.niceness = 0
        try:
            self.courier.start()
        except CourierError as exc:
            log.warning("outbox: %s; the daemon sends itself", exc)
            return False
        try:
            self.second_courier.start()
        except CourierError as exc:  # the first sends its half; the daemon the rest once it has ended
            log.warning("outbox: %s; one courier sends half, the daemon the rest", exc)
            self.courier.finish()
            return True
        return True

    def _send_with_two_couriers(self, deadline: float | None) -> None:
        """The reading has ended with mail still due: two couriers send it and end, while this
        process waits. On PostgreSQL the courier that sent while the mailbox was read goes on
        and a second joins it; on SQLite (the courier that sent while reading stopped with the
        reading: it claimed every row, and the two must split them) two start now when at
        least ``SQLITE_COURIERS_FROM`` mails are due, each with its half of the rows.

        One process sending the rest of a backlog takes turns with the relay (render and
        send, wait for the answer, mark), and the building of one mail holds up the next
        step of the other connection's conversation: the relay and the daemon seldom work at
        once. Two couriers keep both cores busy. Their shared turn (``Outbox.turn_lock``)
        keeps one mail at a time between its final "." and its mark; DATA and the message
        go out before it, beside the other courier's turn.
        The daemon itself sends nothing meanwhile, so a kill -9 of the daemon, whose kernel
        kills both couriers (``PR_SET_PDEATHSIG``), still leaves at most one mail accepted
        and unmarked. A stop (SIGTERM) or the slice's budget ends the wait: both stop after
        the mail in hand, and the rest is the daemon's to send.
        """
        if self._stop or time.monotonic() < self._smtp_next:
            return
        if self.engine.dialect.name == "sqlite":
            if not self._start_sqlite_couriers():
                return
        else:
            if (not self._built("courier") or not self.courier.running or self.courier.ended()
                    or self.courier.turn_fd is None):
                return
            from maild.outbound.courier import CourierError

            try:
                self.second_courier.after_reading = True
                self.second_courier.start()
            except CourierError as exc:
                log.warning("outbox: %s; the daemon sends the rest itself", exc)
                return
        self.courier.finish()
        self.second_courier.finish()
        while not self._stop and (deadline is None or time.monotonic() < deadline):
            if self.courier.ended() and (self.second_courier.ended() or not self.second_courier.running):
                break
            time.sleep(0.02)

    def _stop_courier(self) -> None:
        """Stop the couriers after the mail in hand and count what they did as this cycle's
        (before the daemon sends itself, and on the way out)."""
        for part in ("courier", "second_courier"):
            if not self._built(part):
                continue
            courier: Courier = getattr(self, part)
            if not courier.running:
                continue
            when = ("after reading by a second courier" if part == "second_courier" else "after reading by a courier"
                    ) if courier.after_reading else "while reading"
            report = courier.stop()
            sent = report.sent
            self.sent_while_reading.add(sent)
            if report.relay_error is not None:
                self._relay_failed(report.relay_error, self.sent_while_reading)
            elif sent.sent and self._smtp_failures:
                self._relay_usable()
            if report.fault is not None:
                log.warning("outbox: sending %s stopped early (the mail stays queued): %s", when, report.fault)
            if sent.sent:
                log.info("outbox: %d mails sent %s", sent.sent, when)
                if courier.after_reading:
                    self.sent_after_reading += sent.sent

    def _release(self, batch: list[FetchedMail]) -> None:
        """Take back the attempts recorded for mail fetched and not stored (the slice
        ended, the daemon stops, a fault): it was not the mail's doing."""
        try:
            with self._attempts() as conn:
                release_attempts(conn, batch)
        except FAULTS as exc:
            log.warning("could not take back the attempts of %d mails not stored: %s", len(batch), exc)

    def sweep(self) -> tuple[int, int]:
        """The sweep (escalations, closing, reassigning, reminders): (escalations, closed). Before the
        desk is loaded, only when the database says it has something to do (``idle.sweep_has_work``)."""
        now = self.clock()
        if not self._built("sweeper"):
            with self.engine.connect() as conn:
                if not idle.sweep_has_work(conn, self.config, self.customers, self.calendar, now):
                    return 0, 0
        swept = self.sweeper.sweep(now)
        return swept.escalations, swept.closed

    def cycle(self) -> CycleReport:
        report = CycleReport()
        report.ingested = self.ingest_all(self.config.daemon.slice_seconds)
        report.more_waiting = self.more_waiting
        if self._stop:
            return report
        report.escalations, report.closed = self.sweep()
        self.send_digests()
        self.check_health()
        self.apply_retention()
        budget = self.config.daemon.slice_seconds
        standby = not self.mailbox_lock.reading
        if standby:  # it also tries the lock between its mails; a turn ends by takeover_seconds at the latest
            budget = min(budget, self.config.daemon.takeover_seconds)
        if self._built("courier") and self.courier.running and report.more_waiting and not self.courier.ended():
            # the courier sends while the rest of the backlog is read: no turn of sending
            # that would keep the mailbox waiting
            drained = DrainResult()
        else:
            drained = self.drain(budget)
        if standby and self.mailbox_lock.reading:
            report.more_waiting = True  # taken over while sending: the mailbox is read now, not after a wait
        report.outbox, self.sent_while_reading = self.sent_while_reading, DrainResult()
        report.outbox.add(drained)
        report.outbox.more_due = drained.more_due
        if self.metrics is not None:
            self.metrics.observe_cycle(report.ingested, report.escalations, report.outbox.sent)
            with self.sessions() as session:
                self.metrics.observe_health(session, read_health(session, self.clock()))
        return report

    def drain(self, budget_seconds: float | None = None) -> DrainResult:
        """Send what is due, oldest first, in chunks so SIGTERM is heard between them;
        with a budget, stop taking mail when it is used up (``more_due`` says so).

        An unreachable relay is backed off as a whole: the rows stay due in their
        order, and nothing is tried before the backoff has passed.
        """
        total = DrainResult()
        deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        self._send_with_two_couriers(deadline)
        self._stop_courier()  # the daemon sends only while no courier does
        if time.monotonic() < self._smtp_next:
            return total
        if not self._built("outbox"):
            with self.engine.connect() as conn:
                if not queries.outbox_due(conn, self.clock()):
                    return total  # nothing due: the outbox, its SMTP client and the templates stay unloaded
        from maild.outbound.smtp import SmtpError

        # a standby tries the mailbox lock between its mails and ends its turn once it has it;
        # set for this drain only, so no forked courier inherits the lock's connection with it
        standby = not self.mailbox_lock.reading
        self.outbox.stop_requested = self.mailbox_lock.taken_while_sending if standby else None
        try:
            self._drain_chunks(total, deadline, budget_seconds, standby)
        except SmtpError as exc:
            self._relay_failed(str(exc), total)
        finally:
            self.outbox.stop_requested = None
        return total

    def _drain_chunks(self, total: DrainResult, deadline: float | None, budget_seconds: float | None,
                      standby: bool) -> None:
        while not self._stop:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            part = self.outbox.drain(limit=DRAIN_CHUNK, budget_seconds=left)
            if self._smtp_failures:
                self._relay_usable()
            total.add(part)
            if standby and self.mailbox_lock.reading:
                total.more_due = part.more_due
                log.info("outbox: %d mails sent, then the mailbox lock came free: reading the mailbox now",
                         total.sent)
                break
            if part.more_due:
                total.more_due = True
                log.info("outbox: %d mails sent in this %.0f s slice, more due; reading the mailbox before "
                         "sending on", total.sent, budget_seconds or 0)
                break
            if part.sent + part.retry + part.failed < DRAIN_CHUNK:
                break

    def _relay_failed(self, error: str, total: DrainResult) -> None:
        """The relay cannot be used: back it off as a whole (the mail stays queued, in order)."""
        self._smtp_failures += 1
        delay = backoff(self._smtp_failures, self.config.daemon.retry_min_seconds,
                        self.config.daemon.retry_max_seconds)
        self._smtp_next = time.monotonic() + delay
        level = logging.ERROR if self._smtp_failures == 1 else logging.INFO
        log.log(level, "outbox: SMTP unusable (attempt %d), mail stays queued, retrying in %.0f s: %s",
                self._smtp_failures, delay, error)
        total.errors.append(error)

    def _relay_usable(self) -> None:
        log.info("outbox: SMTP relay usable again after %d failed attempts", self._smtp_failures)
        self._smtp_failures, self._smtp_next = 0, 0.0

    def run_once(self) -> CycleReport:
        """Cycles until the mailbox is read empty (a backlog takes several slices)."""
        report = CycleReport()
        try:
            while True:
                part = self.cycle()
                report.merge(part)
                if not (part.more_waiting or part.outbox.more_due) or self._stop:
                    break
        finally:
            self._let_go()
        log.info("cycle done: %s", report.summary())
        return report

    def _let_go(self) -> None:
        """What the daemon holds, given back on its way out (``run_once`` and ``run``): the couriers
        after the mail in hand, the mailbox, the parse worker, the packs, the WAL thread, the locks."""
        self._stop_courier()
        self.source.close()
        if self._built("parse_ahead"):
            self.parse_ahead.close()
        self.blobs.close()
        self.close_checkpoints()
        self.mailbox_lock.release()
        self.release_run_lock()

    def close_checkpoints(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()

    def release_run_lock(self) -> None:
        if self.run_lock is not None:
            self.run_lock.release()

    # ------------------------------------------------------------ retention

    def apply_retention(self) -> None:
        """Once a day, when ``[retention]`` sets a period: drop what is past it, then compact the packs.

        The day is kept in the state table, so restarts do not repeat it; the
        work is idempotent, so two daemons doing it on the same day change
        nothing the first did not.
        """
        settings = self.config.retention
        if not (settings.raw_mail_months or settings.closed_ticket_years):
            return
        from maild.desk.erasure import apply_retention
        from maild.storage import store
        from maild.storage.compact import compact

        now = self.clock()
        with self.sessions() as session, session.begin():
            last = store.get_state(session, "retention_at")
            if last and now - datetime.fromisoformat(last) < timedelta(days=1):
                return
            done = apply_retention(session, self.blobs, now, raw_mail_months=settings.raw_mail_months,
                                   closed_ticket_years=settings.closed_ticket_years)
            store.put_state(session.connection(), "retention_at", now.isoformat(), now)
        packs = compact(self.sessions, BlobStore(self.config.storage_path))
        log.info("retention: raw mail dropped for %d closed tickets, texts removed from %d, %d blobs; "
                 "packs: %d rewritten, %d deleted, %d bytes freed", done.raw_dropped_tickets,
                 done.texts_removed_tickets, done.blobs, len(packs.rewritten), len(packs.deleted),
                 packs.bytes_freed)

    # ------------------------------------------------------------ digest

    def send_digests(self) -> None:
        """The morning digests, once per person and working day (after ``digest_at``; a
        daemon that was down then catches up now). Outside that window: nothing read."""
        cfg = self.config
        now = self.clock()
        if not cfg.consultants or not cfg.notifications.enabled or cfg.notifications.digest_at is None:
            return
        with self.engine.connect() as conn:
            if not idle.digests_due(conn, cfg, self.calendar, now):
                return
        from maild.desk.desk import TicketDesk
        from maild.desk.morning import queue_digests

        notifier = self.ingestor.notifier
        notifier.load(self.sessions)
        with self.sessions() as session, session.begin():
            queued = queue_digests(TicketDesk(self.ingestor.ctx, session), notifier, now)
        if queued:
            log.info("digests queued: %d", queued)

    # ------------------------------------------------------------ health

    def check_health(self) -> None:
        """Queue one alert per problem occurrence and one "recovered" mail when it ends.

        The alerted set lives in the state table, in the same transaction as the
        outbox rows, so a restart neither repeats nor forgets an alert.
        """
        now = self.clock()
        cfg = self.config
        with self.engine.connect() as conn:  # most cycles: nothing to alert, read without the ORM
            mails, _ = self._plan_alerts(conn, now)
        if not mails:
            return
        from maild.desk.desk import TicketDesk, by_language
        from maild.storage import store

        with self.sessions() as session, session.begin():
            mails, after = self._plan_alerts(session.connection(), now)
            if not mails:
                return
            people = list(cfg.managers) or list(cfg.consultants)
            desk = TicketDesk(self.ingestor.ctx, session)
            for mail in mails:
                if mail.recovered:
                    log.warning("health: recovered: %s", alert_name(mail.key))
                else:
                    log.error("health: ALERT: %s", mail.detail)
                for language, recipients in by_language(people):
                    desk.queue_mail(
                        ticket=None, dedupe_key=f"{mail.dedupe_key}:{language}", kind="alert", template="alert",
                        language=language, recipients=recipients,
                        context=mail.context(cfg.calendar.timezone),
                        now=now, automatic=True, rate_limited=False,
                    )
            store.put_state(session.connection(), "alerts", json.dumps({k: v.isoformat() for k, v in after.items()}), now)

    def _plan_alerts(self, db: Connection, now: datetime) -> tuple[list[AlertMail], dict[str, datetime]]:
        cfg = self.config
        health = read_health(db, now, queue=False)
        current = problems(health, cfg.health.fetch_stale, cfg.health.outbox_stale, self.started_at)
        return plan_alerts(current, _load_alerted(db), now)

    # ------------------------------------------------------------ the loop

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True
        if self._waiting:
            raise _Interrupt()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if self.metrics is not None and self.config.metrics_listen:
            self.metrics.serve(self.config.metrics_listen)
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self.reload()
                if self.turn():
                    if not self.more_work:  # else the rest of a backlog is worked at once
                        self._wait(self.wait_seconds())
                else:
                    self._sleep(backoff(self.failures, self.config.daemon.retry_min_seconds,
                                        self.config.daemon.retry_max_seconds))
        finally:
            notify("STOPPING=1", "STATUS=stopping")
            self._let_go()
            if self.metrics is not None:
                self.metrics.close()
        log.info("stopped")
        return 0

    def turn(self) -> bool:
        """One cycle and what systemd hears of it; False when a fault needs a backoff."""
        try:
            report = self.cycle()
        except MailboxAuthError as exc:
            self._fault("mailbox login refused", str(exc))
            return False
        except FAULTS as exc:
            self._fault(type(exc).__name__, str(exc))
            return False
        self.more_work = report.more_waiting or report.outbox.more_due
        if self.failures:
            log.info("recovered after %d failed attempts", self.failures)
        self.failures, self._fault_kind = 0, ""
        notify("WATCHDOG=1", f"STATUS={report.summary()}")
        if report.ingested or report.outbox.sent or report.outbox.failed:
            log.info("cycle: %s", report.summary())
        return True

    @property
    def healthy(self) -> bool:
        return self.failures < UNHEALTHY_AFTER

    def _fault(self, kind: str, detail: str) -> None:
        self.failures += 1
        delay = backoff(self.failures, self.config.daemon.retry_min_seconds, self.config.daemon.retry_max_seconds)
        message = f"{kind}: {detail}; mail stays on the server, retrying in {delay:.0f} s"
        if kind != self._fault_kind or self.failures % 10 == 0:
            log.error("%s (attempt %d)", message, self.failures)
        else:
            log.info("still failing (attempt %d): %s", self.failures, message)
        self._fault_kind = kind
        states = [f"STATUS={message[:200]}"]
        if self.healthy:
            states.append("WATCHDOG=1")
        notify(*states)
        try:
            self.source.close()
        except Exception:  # closing a broken connection may fail in any way; we reconnect anyway
            pass
        # the managers must hear of a mailbox that stays down, and the relay may still work
        try:
            self.check_health()
            self.drain(self.config.daemon.slice_seconds)
        except FAULTS as exc:
            log.debug("health check skipped while failing: %s", exc)

    def wait_seconds(self) -> float:
        """How long to wait for mail before the next full cycle: the cycle period (for a
        standby, ``takeover_seconds``, waiting for the mailbox lock: its sweep and sending come
        that often), the watchdog's ping interval, or the SMTP backoff, whichever ends first."""
        wait = float(self.config.daemon.cycle_seconds)
        if not self.mailbox_lock.reading:
            wait = min(wait, self.config.daemon.takeover_seconds)
        ping = watchdog_interval()
        if ping:
            wait = min(wait, ping)
        if self._smtp_failures:
            wait = min(wait, max(0.1, self._smtp_next - time.monotonic()))
        return wait

    def _sleep(self, seconds: float) -> None:
        self._waiting = True
        try:
            deadline = time.monotonic() + seconds
            while not self._stop and not self._reload and time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        except _Interrupt:
            pass
        finally:
            self._waiting = False

    def _wait(self, timeout: float) -> None:
        if self._stop or self._reload:
            return
        if not self.mailbox_lock.reading:
            self._wait_for_lock(timeout)
            return
        self._waiting = True
        try:
            self.source.wait_for_mail(timeout)
        except _Interrupt:
            pass
        except FAULTS as exc:
            # a dead connection found while waiting (liveness check): the next cycle reconnects
            log.warning("connection lost while waiting for mail, reconnecting: %s", exc)
        finally:
            self._waiting = False

    def _wait_for_lock(self, timeout: float) -> None:
        """A standby waits for the mailbox lock, not for mail it would not read: the server
        hands it the lock the moment the reader's session ends (``MailboxLock.wait_for``).
        In steps, between which its signals are heard (they only set flags meanwhile)."""
        deadline = time.monotonic() + timeout
        while not self._stop and not self._reload:
            left = deadline - time.monotonic()
            if left <= 0 or self.mailbox_lock.wait_for(min(WAIT_STEP_SECONDS, left)):
                return


def _watchdog_ping() -> None:
    """While a message's parse deadline runs, the loop is waiting, not hung."""
    notify("WATCHDOG=1")


def _load_alerted(db: Connection) -> dict[str, datetime]:
    raw = queries.get_state(db, "alerts")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {str(k): datetime.fromisoformat(v) for k, v in data.items()}
    except (ValueError, AttributeError, TypeError):
        log.warning("health: unreadable alert state %r, starting afresh", raw[:100])
        return {}


def _template_cache(config: Config) -> Path:
    return cache_folder(config.storage_path)


def _mailbox_identity(config: Config) -> str:
    source = config.source
    if isinstance(source, ImapSettings):
        return f"imap://{source.username}@{source.host}:{source.port}/{source.folder}"
    return f"maildir:{source.path}"


def _tune_garbage_collector() -> None:
    """Collect cycles less often than Python's default (every 700 allocations).

    A batch allocates hundreds of thousands of short-lived objects, nearly all
    freed by reference counting; the default thresholds ran about 840 collections
    per 10,000 mails, 5 % of ingest (bench/backlog.py), to find almost nothing.
    """
    gc.set_threshold(50_000, 20, 100)
