"""``maild db upgrade``: the schema (every command also migrates on first use)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from maild.cli.common import Commands

if TYPE_CHECKING:
    from maild.config import Config


def cmd_db_upgrade(cfg: Config, args: argparse.Namespace) -> int:
    """At the head already, the one-row revision read answers: Alembic (0.09 s of imports) is not loaded."""
    from maild.storage.db import open_engine, safe_url

    open_engine(cfg.database_url).dispose()
    print(f"database {safe_url(cfg.database_url)} is at the latest schema")
    return 0


def register(commands: Commands) -> None:
    commands.add_to(commands.group("db", "database"), "upgrade", cmd_db_upgrade, help="apply pending migrations",
                    needs="config")
