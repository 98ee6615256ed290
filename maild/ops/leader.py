"""One reader per mailbox when several daemons share a PostgreSQL database.

The daemon that holds a PostgreSQL advisory lock, keyed on the mailbox, reads
the mail; the others sweep and send (rows are claimed with SKIP LOCKED) and
take over when the holder's database session ends, as it does when the holder
dies. With SQLite there is one daemon per database file and nothing to lock.
"""
from __future__ import annotations

import hashlib
import logging

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("maild.daemon")


def mailbox_key(identity: str) -> int:
    """A signed 64-bit advisory-lock key from the mailbox's identity (host, user, folder)."""
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big", signed=True)


class MailboxLock:
    def __init__(self, engine: Engine, identity: str) -> None:
        self.engine = engine
        self.identity = identity
        self.key = mailbox_key(identity)
        self.enabled = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._held = False

    def acquire(self) -> bool:
        """True when this daemon may read the mailbox now; tries again on every call."""
        if not self.enabled:
            return True
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
                # The lock lives as long as this database session: keep it out of
                # the pool, so closing it really ends the session and frees the lock.
                self._conn.detach()
            if self._held:
                self._conn.execute(text("SELECT 1"))  # still the same session, so still ours
                return True
            self._held = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            self._conn.commit()
        except DBAPIError as exc:
            log.warning("mailbox lock for %s: database session lost (%s); retrying", self.identity, type(exc).__name__)
            self.release()
            return False
        if self._held:
            log.info("mailbox lock for %s taken: this daemon reads the mailbox", self.identity)
        return self._held

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except DBAPIError:
                pass
        self._conn, self._held = None, False
