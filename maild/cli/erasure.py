"""``maild forget``, ``maild retention run`` and ``maild storage compact``: erasing and reclaiming space.

Erasure happens in one transaction; the packs are rewritten afterwards
(``storage.compact``), so a crash in between leaves the rows erased and the
bytes for the next compaction, never a row pointing at missing bytes.
"""
from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from maild.cli.common import Commands, UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from maild.config import Config
    from maild.storage.blobs import BlobStore

log = logging.getLogger("maild.erasure")
UTC = timezone.utc


def register(commands: Commands) -> None:
    fg = commands.add("forget", help="erase a person's or a customer's personal data (GDPR art. 17)",
                      handler=cmd_forget)
    who = fg.add_mutually_exclusive_group(required=True)
    who.add_argument("--address", metavar="EMAIL", help="the person's e-mail address")
    who.add_argument("--customer", metavar="ID", help="the customer's id in the customers file")
    fg.add_argument("--dry-run", action="store_true", help="say what would be erased; change nothing")
    rr = commands.add_to(commands.group("retention", "the [retention] periods"), "run", cmd_retention_run,
                         help="drop what is past its retention period, then compact the packs")
    rr.add_argument("--dry-run", action="store_true", help="say what would be dropped; change nothing")
    commands.add_to(commands.group("storage", "the stored mail"), "compact", cmd_storage_compact,
                    help="rewrite packs that hold erased or expired mail; give the space back")


def _compact(cfg: Config, sessions: sessionmaker[Session], blobs: BlobStore, everything: bool = False) -> str:
    from maild.storage.compact import compact

    result = compact(sessions, blobs, everything=everything)
    return (f"packs: {len(result.rewritten)} rewritten, {len(result.deleted)} deleted, "
            f"{result.bytes_freed / 1e6:.1f} MB freed")


def cmd_forget(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.desk.erasure import forget
    from maild.storage.blobs import BlobStore

    if args.address is not None and "@" not in args.address:
        raise UsageError(f"forget --address {args.address!r}: not an e-mail address")
    blobs = BlobStore(cfg.storage_path)
    now = datetime.now(UTC)
    prefix = cfg.support.ticket_prefix
    with sessions() as session, session.begin():
        done = forget(session, blobs, now, address=args.address, customer=args.customer, dry_run=args.dry_run)
        if args.dry_run:
            session.rollback()
    what = "address" if args.address is not None else "customer"
    if done.empty:
        print(f"forget: nothing to erase for that {what} (already erased, or never seen)")
        log.info("forget (%s): nothing to erase", what)
        return 0
    if args.dry_run:
        print(f"forget --dry-run: would erase {done.summary(prefix)}")
        return 0
    for ticket_id in done.tickets:
        log.info("%s-%d: personal data erased (forget %s)", prefix, ticket_id, what)
    log.info("forget (%s): erased %s", what, done.summary(prefix))
    print(f"forget: erased {done.summary(prefix)}; {_compact(cfg, sessions, blobs)}")
    return 0


def cmd_retention_run(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.desk.erasure import apply_retention
    from maild.storage.blobs import BlobStore

    settings = cfg.retention
    if not settings.raw_mail_months and not settings.closed_ticket_years:
        print("retention: no period set in [retention]; nothing is dropped")
        return 0
    blobs = BlobStore(cfg.storage_path)
    with sessions() as session, session.begin():
        done = apply_retention(session, blobs, datetime.now(UTC), raw_mail_months=settings.raw_mail_months,
                               closed_ticket_years=settings.closed_ticket_years)
        if args.dry_run:
            session.rollback()
    if args.dry_run:
        print(f"retention --dry-run: would drop the raw mail of {done.raw_dropped_tickets} closed tickets and the "
              f"texts of {done.texts_removed_tickets}: {done.attachments} attachments, {done.blobs} stored blobs")
        return 0
    text = (f"raw mail dropped for {done.raw_dropped_tickets} closed tickets, texts removed from "
            f"{done.texts_removed_tickets}, {done.attachments} attachments, {done.blobs} stored blobs")
    log.info("retention: %s", text)
    print(f"retention: {text}; {_compact(cfg, sessions, blobs)}")
    return 0


def cmd_storage_compact(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.storage.blobs import BlobStore

    print(_compact(cfg, sessions, BlobStore(cfg.storage_path), everything=True))
    return 0
