"""``maild db upgrade``: the schema (every command also migrates on first use)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from maild.cli.common import Commands

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


def register(commands: Commands) -> None:
    commands.add_to(commands.group("db", "database"), "upgrade", cmd_db_upgrade, help="apply pending migrations",
                    needs="config")
