"""``maild quarantine list|retry``: mail that could not be processed."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from maild.cli.common import Commands, Failure, row_id
from maild.cli.output import iso, local, print_json, print_table
from maild.errors import MaildError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from maild.config import Config
    from maild.storage.models import QuarantineRow

UTC = timezone.utc


def cmd_quarantine_list(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from maild.storage.tables import quarantine

    with engine.connect() as conn:
        rows = list(conn.execute(select(quarantine).order_by(quarantine.c.id)))
    data: list[dict[str, Any]] = [{"id": r.id, "created_at": iso(r.created_at), "status": r.status, "from": r.from_addr,
             "subject": r.subject, "reason": r.reason, "attempts": r.attempts, "source_key": r.source_key,
             "raw_sha256": r.raw_sha256} for r in rows]
    if args.json:
        print_json(data)
    else:
        tz = ZoneInfo(cfg.calendar.timezone)
        print_table(["id", "when", "status", "from", "reason"],
                    [[d["id"], local(r.created_at, tz), d["status"], d["from"], d["reason"]]
                     for r, d in zip(rows, data)], shrink=((4, 30), (3, 16), (4, 8)))
    return 0


def cmd_quarantine_retry(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    """Process a quarantined mail again, from its stored raw bytes, after a fix.

    It gets one attempt: failing again quarantines it anew with the new reason.
    All or nothing: the record is marked retried (and the old intake record
    dropped) in the transaction that stores the mail, so a retry that fails
    midway (storage, database, a broken customers file) changes nothing and can
    be run again until it succeeds.
    """
    from maild.storage.blobs import BlobStore
    from maild.rules.customers import load_customers
    from maild.intake.mailbox import FetchedMail
    from maild.storage.models import Failure, Intake
    from maild.intake.pipeline import MAX_ATTEMPTS, Context, Ingestor
    from sqlalchemy import select

    from maild.storage.models import QuarantineRow

    def usable(row: QuarantineRow | None) -> QuarantineRow:
        if row is None:
            raise MaildError(f"no quarantine record {args.id}")
        if row.status != "held":
            raise MaildError(f"quarantine record {args.id} was already retried")
        return row

    blobs = BlobStore(cfg.storage_path)
    try:
        with sessions() as session:
            row = usable(session.get(QuarantineRow, args.id))
            raw = blobs.get(row.raw_sha256)
            key, arrived = row.key, row.arrived_at or row.created_at
        ingestor = Ingestor(Context.build(cfg, load_customers(cfg.customers_file, cfg.packages)), sessions, blobs)

        def prepare(session: Session) -> None:
            held = usable(session.get(QuarantineRow, args.id, with_for_update=True))  # not retried meanwhile
            for intake in session.scalars(select(Intake).where(Intake.dedupe_key == key,
                                                               Intake.disposition == "quarantine")):
                session.delete(intake)
            failure = session.scalar(select(Failure).where(Failure.key == key))
            if failure is not None:
                failure.attempts = MAX_ATTEMPTS - 1
            held.status, held.retried_at = "retried", datetime.now(UTC)

        mail = FetchedMail(source_key=f"quarantine:{args.id}", raw=raw, arrived_at=arrived, size=len(raw))
        result = ingestor.ingest_batch([mail], prepare=prepare)
    finally:
        blobs.close()
    outcome = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    print(f"quarantine {args.id}: {outcome}")
    return 1 if result.quarantined else 0


def register(commands: Commands) -> None:
    q = commands.group("quarantine", "mail that could not be processed")
    ql = commands.add_to(q, "list", cmd_quarantine_list, needs="engine")
    ql.add_argument("--json", action="store_true")
    qr = commands.add_to(q, "retry", cmd_quarantine_retry, help="process a quarantined mail again")
    qr.add_argument("id", type=row_id)
