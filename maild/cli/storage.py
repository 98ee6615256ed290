"""``maild storage verify``: read back every stored mail (``storage compact`` is with erasure)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from maild.cli.common import Commands
from maild.cli.output import print_json
from maild.cli.progress import Progress

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from maild.config import Config


def cmd_storage_verify(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    """Reads the rows on a Connection (``storage.audit``: no ORM)."""
    from maild.storage.audit import audit_blobs
    from maild.storage.blobs import BlobStore

    with engine.connect() as conn, Progress("verifying storage", "blobs") as progress:
        audit = audit_blobs(conn, BlobStore(cfg.storage_path), progress)
    if args.json:
        print_json({"checked": audit.checked, "problems": audit.problems})
    else:
        for problem in audit.problems:
            print(problem)
        print(f"storage {cfg.storage_path}: {audit.checked} blobs read back (raw mail, attachments, quarantined "
              f"mail); {len(audit.problems) or 'none'} missing or damaged")
    return 1 if audit.problems else 0


def register(commands: Commands) -> None:
    sv = commands.add_to(commands.group("storage", "the stored mail"), "verify", cmd_storage_verify,
                         help="read back every stored mail and attachment; exit 1 if any is missing or damaged",
                         needs="engine")
    sv.add_argument("--json", action="store_true")
