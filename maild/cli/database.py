"""``maild db upgrade``: the schema (every command also migrates on first use); ``maild db backup``: a
copy of a SQLite database that holds what its WAL holds."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from maild.cli.common import Commands, UsageError

if TYPE_CHECKING:
    from maild.config import Config


def cmd_db_upgrade(cfg: Config, args: argparse.Namespace) -> int:
    """Says which revisions it went through, so an operator upgrading maild sees that the migration ran (and
    that a second run did nothing). At the head already, the one-row revision read answers: Alembic (0.09 s of
    imports) is not loaded."""
    from maild.storage.db import SCHEMA_HEAD, make_engine, migrate_to_head, safe_url

    engine = make_engine(cfg.database_url)
    try:
        before = migrate_to_head(engine, cfg.database_url)
    finally:
        engine.dispose()
    where = safe_url(cfg.database_url)
    if before == SCHEMA_HEAD:
        print(f"database {where} is at the latest schema ({SCHEMA_HEAD}); nothing to do")
    else:
        print(f"database {where} migrated {before or 'empty'} -> {SCHEMA_HEAD}: it is at the latest schema")
    return 0


def cmd_db_backup(cfg: Config, args: argparse.Namespace) -> int:
    """SQLite's online backup of the database into a new file (0600), whole: ``maild.db`` alone lacks the
    commits still in ``maild.db-wal``, which a stopped daemon and every command leave there. It reads a
    snapshot under a read lock, so the daemon may run meanwhile (its writes wait for the copy)."""
    import os
    import sqlite3

    from sqlalchemy.engine import make_url

    url = make_url(cfg.database_url)
    if url.get_backend_name() != "sqlite":
        raise UsageError("db backup copies a SQLite database; for PostgreSQL use pg_dump "
                         "(pg_dump -Fc -f maild.dump DBNAME)")
    source = Path(url.database or "")
    if not source.is_file():
        raise UsageError(f"db backup: no database at {source}")
    target = Path(args.file).absolute()
    if target.exists() or Path(f"{target}-wal").exists():
        raise UsageError(f"db backup: {target} exists; give a new file (a backup is never overwritten)")
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        # a file: URI of its own making: "#", "?" or "%" in the path would cut or change a URI written by hand
        reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        writer = sqlite3.connect(partial)
        try:
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            writer.close()
            reader.close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"database {source} backed up to {target} ({target.stat().st_size / 1e6:.1f} MB); back up the storage "
          f"folder {cfg.storage_path} with it: raw mail and attachments are there")
    return 0


def register(commands: Commands) -> None:
    db = commands.group("db", "database")
    commands.add_to(db, "upgrade", cmd_db_upgrade, help="apply pending migrations", needs="config")
    backup = commands.add_to(db, "backup", cmd_db_backup, needs="config",
                             help="copy the SQLite database, with what its WAL holds, into a new file "
                                  "(the daemon may run)")
    backup.add_argument("file", help="the new file (never overwritten)")
