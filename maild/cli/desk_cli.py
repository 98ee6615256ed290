"""``maild tickets open`` (a ticket on a customer's behalf) and ``maild digest`` (the morning digest on demand)."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from maild.cli.common import Commands, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from maild.config import Config, Consultant

UTC = timezone.utc


def register(commands: Commands) -> None:
    tickets = commands.group("tickets", "the ticket queue")
    to = commands.add_to(tickets, "open", cmd_tickets_open,
                         help="open a ticket on a customer's behalf (a phone call, a conversation)")
    to.add_argument("--customer", required=True, metavar="ID|EMAIL", help="the customer's id or e-mail address")
    to.add_argument("--subject", required=True)
    to.add_argument("--by", metavar="EMAIL", help="the consultant who took it (becomes the assignee)")
    to.add_argument("--body-file", metavar="FILE", help="the request's text (UTF-8); '-' reads stdin")
    to.add_argument("--no-ack", action="store_true", help="do not send the customer an acknowledgement")

    dg = commands.add("digest", "today's digest: print it, or --send it now", cmd_digest, needs="engine")
    dg.add_argument("--to", metavar="EMAIL", help="one consultant or manager (default: everyone who gets one)")
    dg.add_argument("--send", action="store_true", help="queue it for sending (maild run sends it)")


def cmd_tickets_open(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.intake.pipeline import Context, Ingestor, UnknownCustomer
    from maild.rules.customers import load_customers
    from maild.storage import store
    from maild.storage.blobs import BlobStore

    by = args.by.strip().lower() if args.by else None
    if by is not None and by not in cfg.consultant_emails:
        raise UsageError(f"--by {args.by}: not a consultant in {cfg.path}")
    body = ""
    if args.body_file:
        try:
            body = sys.stdin.read() if args.body_file == "-" else Path(args.body_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--body-file {args.body_file}: {exc}") from None
    if not args.subject.strip():
        raise UsageError("--subject must not be empty")
    customers = load_customers(cfg.customers_file, cfg.packages)
    with sessions() as session, session.begin():  # the ticket refers to the customer's rows
        store.sync_customers(session, customers, datetime.now(UTC))
    ingestor = Ingestor(Context.build(cfg, customers), sessions, BlobStore(cfg.storage_path))
    try:
        number = ingestor.open_on_behalf(args.customer, args.subject, body, by, acknowledge=not args.no_ack)
    except UnknownCustomer as exc:
        raise UsageError(str(exc)) from None
    finally:
        ingestor.blobs.close()
    print(f"opened {store.ticket_ref(cfg.support.ticket_prefix, number)}"
          + (f", assigned to {by}" if by else "") + ("" if args.no_ack else "; the customer is acknowledged"))
    return 0


def cmd_digest(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    """Printed, the digest is read on a Connection (``morning.QueueReader``: no ORM); ``--send``
    queues it through the desk in one transaction."""
    from maild.desk.context import DeskContext
    from maild.desk.digest import digest_key
    from maild.desk.morning import QueueReader, QueueView, digest_for, queue_digest, recipients
    from maild.desk.notifier import Notifier
    from maild.rules.customers import load_customers

    # the desk's context: the digest reads tickets, it screens and threads no mail (no intake pipeline)
    ctx = DeskContext.for_config(cfg, load_customers(cfg.customers_file, cfg.packages))
    notifier = Notifier(cfg, ctx.calendar.tz)
    notifier.load(engine.connect)
    now = datetime.now(UTC)
    day = now.astimezone(ctx.calendar.tz).date()
    chosen: list[Consultant] = []
    if args.to:
        wanted = args.to.strip().lower()
        chosen = [c for c in cfg.consultants if c.email == wanted][:1]
        if not chosen:
            raise UsageError(f"--to {args.to}: not a consultant or manager in {cfg.path}")

    def people(view: QueueView) -> list[Consultant]:
        return chosen or recipients(view, now)

    if args.send:
        from maild.desk.desk import TicketDesk
        from maild.storage.db import sessions_for

        with sessions_for(engine, take_the_write_lock=True)() as session, session.begin():
            desk = TicketDesk(ctx, session)
            for someone in people(desk):
                digest = digest_for(desk, notifier, someone, day, now)
                queue_digest(desk, digest, now, key=f"{digest_key(someone.email, day)}:on-demand:{now.isoformat()}")
                print(f"digest for {someone.email} queued ({len(digest.rows)} tickets)")
        return 0
    from maild.outbound.render import Renderer

    renderer = Renderer(cfg.templates_path)
    with engine.connect() as conn:
        view = QueueReader(ctx, conn)
        for someone in people(view):
            digest = digest_for(view, notifier, someone, day, now)
            subject, body = renderer.render("digest", someone.language, digest.context)
            print(f"To: {someone.email}\nSubject: {subject}\n\n{body}")
    return 0
