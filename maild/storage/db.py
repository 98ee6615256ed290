"""Engine, sessions and migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable at each checkpoint,
crash-safe, and fast enough that a batch commit costs one fsync). Every command
that needs the database calls ``open_database``, which applies pending Alembic
migrations itself, so a newcomer never needs a separate step.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from maild.errors import MaildError
from maild.storage.blobs import make_private_dir

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("maild.db")
MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test holds it to Alembic's own
# answer). Knowing it here lets every start-up compare revisions without
# importing Alembic, a sixth of the start-up time; Alembic loads only to migrate.
SCHEMA_HEAD = "0020"
# PostgreSQL advisory lock held while migrating (any constant; the mailbox locks hash theirs)
MIGRATION_LOCK_KEY = 0x6D61696C64


class DatabaseError(MaildError):
    """The database cannot be reached or migrated; carries the URL without password."""


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database url>"


# The daemon's connections leave the WAL's checkpoints to a thread of its own
# (``WalCheckpointer``): at this many WAL pages (64 MB) a committing connection
# checkpoints itself again (SQLite's own auto-checkpoint), which bounds the WAL
# and starts it over, whatever the thread does.
WAL_FALLBACK_PAGES = 16384


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite opens transactions only before DML, so DDL (a migration) would
    # autocommit statement by statement and a crash could leave half a schema.
    # Take transaction control back: SQLAlchemy's "begin" hook emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _checkpoint_fallback(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={WAL_FALLBACK_PAGES}")


def _sqlite_begin(connection: Any) -> None:
    # A migration takes the write lock up front: two processes starting on a new
    # file would otherwise both find it empty and the second fail on "table exists".
    options = connection.get_execution_options()
    if options.get("maild_autocommit", False):
        return  # each statement its own transaction (the outbox's sent marks: one call a mark)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get("maild_immediate", False) else "BEGIN")


def make_engine(url: str, background_checkpoints: bool = False) -> Engine:
    """``background_checkpoints``: the connections checkpoint only past ``WAL_FALLBACK_PAGES``
    (for the daemon, whose ``WalCheckpointer`` does it off the committing thread)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"database.url: not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            create_private(Path(parsed.database))
        engine = create_engine(parsed, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        if background_checkpoints:
            event.listen(engine, "connect", _checkpoint_fallback)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        from maild.storage.tables import for_postgresql
        for_postgresql()
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


def create_private(database: Path) -> None:
    """Create the SQLite file (and its folder) readable by its owner only.

    Under systemd ``StateDirectory=`` makes the folder; a database created from a
    shell would otherwise get the umask's 0644 and show every mail to every local
    user. SQLite gives its -wal and -shm files the database file's mode. An
    existing file or folder is left as the operator set it.
    """
    make_private_dir(database.parent)
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseError(f"database {database}: cannot create: {exc.strerror}") from None


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migration_state(engine: Engine) -> tuple[str | None, str]:
    """(current revision, head revision)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None, SCHEMA_HEAD
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return current, SCHEMA_HEAD


def upgrade(engine: Engine) -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with engine.connect() as conn:
        conn = conn.execution_options(maild_immediate=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":  # the same for two processes starting on PostgreSQL
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def open_engine(url: str, migrate: bool = True, background_checkpoints: bool = False) -> Engine:
    """The engine of a database at the schema's head (migrated first unless ``migrate`` is false).

    What a command that only reads needs (``tables`` and ``queries`` on its
    connections): no ORM is imported on the way.
    """
    engine = make_engine(url, background_checkpoints)
    if migrate:
        migrate_to_head(engine, url)
    return engine


def migrate_to_head(engine: Engine, url: str) -> str | None:
    """Bring the schema to the head; returns the revision it found (None: an empty database), which
    ``maild db upgrade`` reports."""
    try:
        current, head = migration_state(engine)
        if current != head:
            log.info("database %s: migrating %s -> %s", safe_url(url), current or "empty", head)
            upgrade(engine)
    except OperationalError as exc:
        raise DatabaseError(f"database {safe_url(url)}: {exc.orig}") from None
    return current


def sessions_for(engine: Engine, take_the_write_lock: bool = False) -> sessionmaker[Session]:
    """ORM sessions on ``engine``, as ``open_database`` makes them (objects stay readable after commit).

    ``take_the_write_lock``: on SQLite each transaction begins IMMEDIATE, waiting
    its turn behind the daemon's batch (the busy timeout), instead of reading from
    a snapshot that the daemon's next commit makes stale: SQLite refuses such a
    transaction's first write at once ("database is locked", SQLITE_BUSY_SNAPSHOT;
    the busy timeout does not apply to it). For the command line, whose
    transactions are short and one at a time; the daemon's own stages keep
    deferred transactions (several of its sessions are open at once).
    """
    from sqlalchemy.orm import sessionmaker

    if take_the_write_lock and engine.dialect.name == "sqlite":
        engine = engine.execution_options(maild_immediate=True)
    return sessionmaker(engine, expire_on_commit=False)


def open_database(url: str, migrate: bool = True, take_the_write_lock: bool = False,
                  background_checkpoints: bool = False) -> sessionmaker[Session]:
    return sessions_for(open_engine(url, migrate, background_checkpoints), take_the_write_lock)


class WalCheckpointer:
    """Copies a SQLite database's WAL into the database file from a thread of its own.

    By default the connection whose commit takes the WAL past 1,000 pages runs the
    checkpoint itself: it reads each page it logged back from the WAL, writes it
    into the database file and waits for two fsyncs, inside the daemon's batch.
    At a million mails that is half of what ingest spends more than on an empty
    database (each mail dirties a leaf of several random-key indexes: bench/README
    "Ingest at 1M, seventh session"). Here the daemon's connections leave it to
    this thread (``open_database(background_checkpoints=True)``), which runs a
    PASSIVE checkpoint (never blocking a reader or the writer) after a batch's
    commit (``kick``), at most one every ``min_interval`` seconds: a pass copies
    each page once however many batches changed it since the last (a table's and
    a time-ordered index's last pages change in every batch), and syncs twice
    whatever it copies. SQLite releases the GIL meanwhile. The thread starts at a
    kick and ends after ``idle_seconds`` without one (one last pass first), so an
    idle daemon holds no thread and no connection for it.

    The bound: a WAL starts over from its beginning only when a writer begins
    with every frame copied, which the thread, a commit behind, rarely sees. The
    connections' own auto-checkpoint at ``WAL_FALLBACK_PAGES`` stays: the commit
    that takes the WAL past it copies what the thread has not (little, or all of
    it should the thread have failed), and the next transaction starts the WAL
    over. A crash loses nothing: committed frames in the WAL are replayed by the
    next opener, whichever process it is.
    """

    def __init__(self, database: Path, idle_seconds: float = 5.0, min_interval: float = 1.0) -> None:
        self.database = database
        self.idle_seconds = idle_seconds
        self.min_interval = min_interval
        self.wal_pages = 0  # the WAL's frames at the end of the last pass
        self.copied_pages = 0  # of which copied into the database file
        self.passes = 0
        self._wanted = 0  # passes someone waits for (``settle``)
        self._kicked = threading.Event()
        self._hurry = threading.Event()  # settle or close: no waiting out min_interval
        self._last_pass = float("-inf")  # time.monotonic() of the last pass's start
        self._passed = threading.Condition()  # also guards _running and the thread's start and end
        self._running = False
        self._thread: threading.Thread | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> WalCheckpointer | None:
        """A checkpointer for a SQLite file's engine; None for PostgreSQL or an in-memory database."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(Path(url.database))

    def kick(self) -> None:
        """A transaction was committed: copy its pages now (starting the thread if it ended)."""
        with self._passed:
            self._kicked.set()
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._run, name="maild-wal-checkpoint", daemon=True)
                self._thread.start()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait for a pass that starts after this call: what was committed before is then copied."""
        with self._passed:
            target = self.passes + (2 if self._running else 1)  # a pass under way may predate the last commit
            self._wanted = max(self._wanted, target)
            self._hurry.set()
            self.kick()
            self._passed.wait_for(lambda: self.passes >= target or not self._running, timeout)

    def close(self) -> None:
        """Wait for a pass under way (a kick's pass is then skipped) and end the thread."""
        with self._passed:
            self._running = False
            thread, self._thread = self._thread, None
            self._hurry.set()
            self._kicked.set()
        if thread is not None:
            thread.join(timeout=60)

    def _pass(self, conn: Any) -> tuple[int, int]:
        """One PASSIVE checkpoint: (pages in the WAL, pages of them copied into the database)."""
        _busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return max(int(pages), 0), max(int(copied), 0)

    def _run(self) -> None:
        import sqlite3

        try:
            conn = sqlite3.connect(self.database, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("database %s: WAL checkpoints left to the committing connections: %s", self.database, exc)
            with self._passed:
                self._running = False
                self._passed.notify_all()
            return
        try:
            idle = False
            while True:
                kicked = self._kicked.wait(self.idle_seconds)
                with self._passed:
                    self._kicked.clear()
                    if not self._running or (idle and not kicked):
                        self._running = False
                        return
                # commits of the next batches join this pass until min_interval after the last one
                self._hurry.wait(self._last_pass + self.min_interval - time.monotonic())
                with self._passed:
                    if not self._running:
                        self._running = False
                        return
                    if self.passes + 1 >= self._wanted:
                        self._hurry.clear()
                    self._kicked.clear()
                self._last_pass = time.monotonic()
                pages, copied = self._pass(conn)
                idle = not kicked
                with self._passed:
                    self.wal_pages, self.copied_pages = pages, copied
                    self.passes += 1
                    if self.passes < self._wanted:
                        self._kicked.set()
                    self._passed.notify_all()
        except sqlite3.Error as exc:
            log.warning("database %s: WAL checkpoint failed, left to the committing connections: %s",
                        self.database, exc)
            with self._passed:
                self._running = False
        finally:
            conn.close()
            with self._passed:
                self._passed.notify_all()
