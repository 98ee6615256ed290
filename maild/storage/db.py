"""Engine, sessions and migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable at each checkpoint,
crash-safe, and fast enough that a batch commit costs one fsync). Every command
that needs the database calls ``open_database``, which applies pending Alembic
migrations itself, so a newcomer never needs a separate step.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from maild.errors import MaildError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger("maild.db")
MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test holds it to Alembic's own
# answer). Knowing it here lets every start-up compare revisions without
# importing Alembic, a sixth of the start-up time; Alembic loads only to migrate.
SCHEMA_HEAD = "0003"


class DatabaseError(MaildError):
    """The database cannot be reached or migrated; carries the URL without password."""


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database url>"


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


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"database.url: not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


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
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(url: str, migrate: bool = True) -> sessionmaker[Session]:
    engine = make_engine(url)
    try:
        if migrate:
            current, head = migration_state(engine)
            if current != head:
                log.info("database %s: migrating %s -> %s", safe_url(url), current or "empty", head)
                upgrade(engine)
    except OperationalError as exc:
        raise DatabaseError(f"database {safe_url(url)}: {exc.orig}") from None
    return sessionmaker(engine, expire_on_commit=False)
