"""The daemon loop: ingest -> sweep -> drain, then wait for mail (IDLE) or a timer.

Only this module, the mail source, the store and the SMTP sender touch the
outside world. Faults of the world (mail server gone, database restarting, disk
full) are retried with backoff and logged once per state change; mail stays on
the server until its transaction has committed.
"""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType

from sqlalchemy.exc import DBAPIError, OperationalError

from . import store
from .blobs import BlobStore, StorageError
from .config import Config
from .customers import Customer, load_customers
from .db import DatabaseError, open_database
from .errors import ConfigError
from .mailbox import MailboxAuthError, MailboxError, MailSource, open_source
from .notify import notify, watchdog_interval
from .outbox import DrainResult, Outbox, Sender
from .pipeline import Context, Ingestor
from .render import Renderer
from .smtp import SmtpError
from .sweeper import Sweeper

log = logging.getLogger("maild.daemon")
UTC = timezone.utc


class _Interrupt(Exception):
    """Raised from a signal handler only while the loop is idle-waiting."""


@dataclass
class CycleReport:
    ingested: dict[str, int] = field(default_factory=dict)
    escalations: int = 0
    closed: int = 0
    outbox: DrainResult = field(default_factory=DrainResult)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.ingested.items())) or "no mail"
        return (f"{counts}; escalations {self.escalations}; sent {self.outbox.sent}, "
                f"retry {self.outbox.retry}, failed {self.outbox.failed}")


class Daemon:
    def __init__(self, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.clock = clock
        self.sessions = open_database(config.database_url)
        self.blobs = BlobStore(config.storage_path)
        customers = self._load_customers()
        self._sync_customers(customers)
        self.renderer = Renderer(config.templates_path)
        self.ingestor = Ingestor(Context.build(config, customers), self.sessions, self.blobs, clock)
        self.sweeper = Sweeper(self.ingestor)
        self.outbox = Outbox(self.sessions, self.renderer, config.smtp,
                             Sender(config.from_address, config.from_name, config.support.instance_id),
                             self.blobs, clock)
        self.source: MailSource = open_source(config.source)
        self._stop = False
        self._reload = False
        self._waiting = False

    # ------------------------------------------------------------ customers

    def _load_customers(self) -> tuple[Customer, ...]:
        return load_customers(self.config.customers_file, self.config.packages)

    def _sync_customers(self, customers: tuple[Customer, ...]) -> None:
        with self.sessions() as session, session.begin():
            seen, ended = store.sync_customers(session, customers, self.clock())
        log.info("customers: %d customers, %d contracts (%d ended)", len(customers), seen, ended)

    def reload(self) -> bool:
        """Re-read the customers file and templates; a bad file keeps the old state."""
        try:
            customers = self._load_customers()
            renderer = Renderer(self.config.templates_path)
            self._sync_customers(customers)
        except ConfigError as exc:
            log.error("reload refused, keeping the previous customers: %s", exc)
            return False
        self.ingestor.ctx = Context.build(self.config, customers)
        self.renderer = renderer
        self.outbox.renderer = renderer
        log.info("reloaded customers and templates")
        return True

    # ------------------------------------------------------------ one cycle

    def ingest_all(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        self.source.connect()
        for batch in self.source.batches(max_count=self.config.batch_size):
            result = self.ingestor.ingest_batch(batch)
            if result.done:
                self.source.mark_done(result.done)
            if result.quarantined:
                self.source.quarantine(result.quarantined)
            for key, value in result.counts.items():
                totals[key] = totals.get(key, 0) + value
            if self._stop:
                break
        with self.sessions() as session, session.begin():
            store.set_state(session, "last_fetch_at", self.clock().isoformat(), self.clock())
        return totals

    def cycle(self) -> CycleReport:
        report = CycleReport()
        report.ingested = self.ingest_all()
        swept = self.sweeper.sweep(self.clock())
        report.escalations, report.closed = swept.escalations, swept.closed
        report.outbox = self.drain()
        return report

    def drain(self) -> DrainResult:
        try:
            return self.outbox.drain()
        except SmtpError as exc:
            log.error("outbox: SMTP unusable, mail stays queued: %s", exc)
            return DrainResult(errors=[str(exc)])

    def run_once(self) -> CycleReport:
        try:
            report = self.cycle()
        finally:
            self.source.close()
        log.info("cycle done: %s", report.summary())
        return report

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
        ping = watchdog_interval()
        backoff = 1.0
        ready = False
        while not self._stop:
            if self._reload:
                self._reload = False
                self.reload()
            try:
                report = self.cycle()
                if not ready:
                    notify("READY=1")
                    ready = True
                notify("WATCHDOG=1", f"STATUS={report.summary()}")
                backoff = 1.0
                if report.ingested:
                    log.info("cycle: %s", report.summary())
                self._wait(min(ping or 60.0, 60.0))
            except _Interrupt:
                continue
            except MailboxAuthError as exc:
                self._trouble(f"mailbox login refused: {exc}", 300.0)
            except (MailboxError, StorageError, DatabaseError, OperationalError, DBAPIError) as exc:
                what = type(exc).__name__
                self._trouble(f"{what}: {exc}; mail stays on the server, retrying in {backoff:.0f} s", backoff)
                backoff = min(backoff * 2, 60.0)
        notify("STOPPING=1")
        self.source.close()
        log.info("stopped")
        return 0

    def _trouble(self, message: str, delay: float) -> None:
        log.error("%s", message)
        notify(f"STATUS={message[:200]}")
        try:
            self.source.close()
        except Exception:  # closing a broken connection may fail in any way; we reconnect anyway
            pass
        self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        self._waiting = True
        try:
            deadline = time.monotonic() + seconds
            while not self._stop and time.monotonic() < deadline:
                time.sleep(min(1.0, deadline - time.monotonic()))
        except _Interrupt:
            pass
        finally:
            self._waiting = False

    def _wait(self, timeout: float) -> None:
        if self._stop or self._reload:
            return
        self._waiting = True
        try:
            self.source.wait_for_mail(timeout)
        except _Interrupt:
            pass
        finally:
            self._waiting = False
