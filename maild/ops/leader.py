"""One reader per mailbox when several daemons share a PostgreSQL database.

The daemon that holds a PostgreSQL advisory lock, keyed on the mailbox, reads
the mail; the others sweep and send (rows are claimed with SKIP LOCKED) and
take over when the holder's database session ends. A killed process's socket
is closed by its kernel, so the server ends the session at once; a host that
dies (power, kernel panic, a cut cable) closes nothing, and without keepalive
the server would keep the session, and the lock, for the kernel's two hours
and more. So the lock's session asks the server to probe the peer after a
few seconds of silence and drop it within ``[daemon] takeover_seconds``.
With SQLite one process at a time reads and sends (``SqliteRunLock``).
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from maild.storage.blobs import make_private_dir
from maild.errors import MaildError

log = logging.getLogger("maild.daemon")
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock wait that ran out its lock_timeout
# An idle standby waits for the mailbox lock in steps this long (it hears its signals between them)
WAIT_STEP_SECONDS = 1.0
# A standby that sends tries the mailbox lock at most this often, between two mails: a takeover
# then waits this long plus the mail in hand, not the rest of the standby's sending turn.
TRY_WHILE_SENDING_SECONDS = 0.25


def mailbox_key(identity: str) -> int:
    """A signed 64-bit advisory-lock key from the mailbox's identity (host, user, folder)."""
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big", signed=True)


def keepalive_settings(takeover_seconds: int) -> dict[str, int]:
    """Server-side TCP settings for the lock's session: a silent peer is dropped after about
    ``takeover_seconds`` (probes from half of it; ``tcp_user_timeout`` ends the connection once
    they go unanswered that long since the peer was last heard, whatever the probe count)."""
    return {
        "tcp_keepalives_idle": max(1, takeover_seconds // 2),
        "tcp_keepalives_interval": max(1, takeover_seconds // 4),
        "tcp_keepalives_count": 3,
        "tcp_user_timeout": takeover_seconds * 1000,  # milliseconds
    }


class MailboxLock:
    def __init__(self, engine: Engine, identity: str, takeover_seconds: int = 10) -> None:
        self.engine = engine
        self.identity = identity
        self.key = mailbox_key(identity)
        self.enabled = engine.dialect.name == "postgresql"
        self.takeover_seconds = takeover_seconds
        self._conn: Connection | None = None
        self._held = False
        self._next_try = 0.0  # monotonic time before which ``taken_while_sending`` asks nothing
        self.tries_while_sending = 0  # the lock tries between mails (benchmarks and tests count them)

    @property
    def reading(self) -> bool:
        """Whether this daemon read the mailbox at its last try (always, without PostgreSQL)."""
        return self._held or not self.enabled

    def _session(self, conn: Connection) -> None:
        """Make the lock's session end soon after its daemon's host goes silent, and never
        for being idle between cycles (a server's ``idle_session_timeout`` would hand the
        mailbox to another daemon while this one still reads it)."""
        settings = keepalive_settings(self.takeover_seconds)
        version = conn.dialect.server_version_info or (0,)
        if version < (12,):
            del settings["tcp_user_timeout"]
        if version >= (14,):
            settings["idle_session_timeout"] = 0
        for name, value in settings.items():
            conn.execute(text("SELECT set_config(:name, :value, false)"), {"name": name, "value": str(value)})

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
            # The lock lives as long as this database session: keep it out of
            # the pool, so closing it really ends the session and frees the lock.
            self._conn.detach()
            self._session(self._conn)
        return self._conn

    def acquire(self) -> bool:
        """True when this daemon may read the mailbox now; tries again on every call."""
        if not self.enabled:
            return True
        try:
            self._conn = self._connection()
            if self._held:
                self._conn.execute(text("SELECT 1"))  # still the same session, so still ours
                # not left "idle in transaction", which a server's timeout for that would end
                self._conn.commit()
                return True
            self._held = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            self._conn.commit()
        except DBAPIError as exc:
            log.warning("mailbox lock for %s: database session lost (%s); retrying", self.identity, type(exc).__name__)
            self._held = False  # nothing to unlock on a lost session
            self.release()
            return False
        if self._held:
            log.info("mailbox lock for %s taken: this daemon reads the mailbox", self.identity)
        return self._held

    def taken_while_sending(self) -> bool:
        """Asked between the mails a standby's drain sends (``Daemon.drain``): True once this
        daemon holds the lock, so every connection of the drain ends after its mail in hand,
        no new rows are claimed, and the daemon reads the mailbox.

        A standby tried the lock only between its cycles, and one sending turn of a backlog
        lasts up to ``takeover_seconds``: a reader killed early in a standby's turn left the
        mailbox unread for the rest of it (13.0 s of a 10 s turn and the sweep, bench/takeover.py).
        One try is a round trip to the server (bench/lock_try.py), made at most every
        ``TRY_WHILE_SENDING_SECONDS``. Without PostgreSQL there is no lock: False."""
        if not self.enabled:
            return False
        if self._held:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + TRY_WHILE_SENDING_SECONDS
        self.tries_while_sending += 1
        return self.acquire()

    def wait_for(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the lock (an idle standby, between its cycles); True once held.

        The standby queues for the lock in the server (``pg_advisory_lock`` under a
        transaction-local ``lock_timeout``), which grants it the moment the holder's session
        ends: an idle standby takes over at once, where one that tried every
        ``takeover_seconds`` left the mailbox unread for up to that long (up to 9.5 s of the takeovers
        measured in bench/takeover.py). Nothing is asked meanwhile; the caller waits in steps
        of a second or so to hear its signals. A lost session waits out the step and says
        False (the next call connects again)."""
        if not self.enabled or self._held:
            return True
        started, had_session = time.monotonic(), self._conn is not None
        try:
            conn = self._connection()
            # for this wait only: a server-wide statement_timeout must not end it as a fault
            conn.execute(text("SELECT set_config('lock_timeout', :ms, true), set_config('statement_timeout', '0', true)"),
                         {"ms": f"{max(1, int(seconds * 1000))}ms"})
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._held = True
            conn.commit()
        except DBAPIError as exc:
            if self._conn is not None and LOCK_NOT_AVAILABLE in (getattr(exc.orig, "sqlstate", None),
                                                                 getattr(exc.orig, "pgcode", None)):
                try:
                    self._conn.rollback()  # the wait timed out: the lock is held by a live reader
                    return False
                except DBAPIError:
                    pass
            # once when the session is lost; a database that stays away is the cycle's fault to report
            log.log(logging.WARNING if had_session else logging.DEBUG, "mailbox lock for %s: database session "
                    "lost (%s); retrying", self.identity, type(exc).__name__)
            self._held = False
            self.release()
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            return False
        log.info("mailbox lock for %s taken: this daemon reads the mailbox", self.identity)
        return True

    def release(self) -> None:
        """Give the mailbox up. Unlocked explicitly first: the server frees a closed session's
        locks only when its backend has exited, a moment after the close returns, and a daemon
        stopping cleanly lets another take over now, not at its next try."""
        if self._conn is not None:
            try:
                if self._held:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    self._conn.commit()
            except SQLAlchemyError:
                pass  # a lost or broken session: closing it ends whatever it holds
            try:
                self._conn.close()
            except DBAPIError:
                pass
        self._conn, self._held = None, False


class AnotherMaildRunning(MaildError):
    """A second process would read mail or send on a SQLite database that a running maild works on."""


class SqliteRunLock:
    """One maild at a time reads the mail and sends on a SQLite database.

    SQLite has neither advisory locks nor ``SKIP LOCKED``: two processes on one
    file both took the same outbox rows (200 queued mails went out 382 times).
    The process that reads or sends holds a POSIX record lock on
    ``<database>.lock`` and writes its pid there; a second one is refused at
    once, before it opens the database, with the holder's pid. A record lock
    is the process's own: the forked parse worker does not inherit it, and it
    ends with the process, however that ends. Read-only commands never take
    it, and WAL lets them read while the daemon writes.
    """

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    @classmethod
    def for_url(cls, url: str) -> SqliteRunLock | None:
        """The lock for a SQLite URL on a file; None for PostgreSQL (leases) and in-memory SQLite."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
            return None
        return cls(Path(parsed.database).resolve())

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            make_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AnotherMaildRunning(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = self._holder()
            raise AnotherMaildRunning(
                f"another maild is running on {self.database} (pid {holder or 'unknown'}); "
                "it reads and sends for this database, so this process does not") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _holder(self) -> str:
        """The holder's pid; it writes it right after taking the lock, so wait a moment for it."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                text = self.path.read_text(encoding="ascii", errors="replace").strip()
            except OSError:
                text = ""
            if text.isdigit() or time.monotonic() > deadline:
                return text if text.isdigit() else ""
            time.sleep(0.02)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
