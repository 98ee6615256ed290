"""``maild time add|reverse``: the hour ledger from the command line, through the desk."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from maild.cli import common
from maild.cli.common import Commands, Failure, customers_of, hm, row_id
from maild.rules.scope import known_words, parse_scope

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from maild.config import Config

log = logging.getLogger("maild.cli")

T = TypeVar("T")

# how often a booking's transaction is run when PostgreSQL aborts it for a deadlock or a
# serialization failure (bookings lock in one order, so this is a safety net, not a path)
BOOKING_ATTEMPTS = 4
# SQLSTATEs whose transaction may simply run again: deadlock_detected, serialization_failure
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def retrying(what: str, transaction: Callable[[], T], attempts: int = BOOKING_ATTEMPTS) -> T:
    """Run ``transaction`` (one whole transaction, rolled back when it raises) again when the
    database aborted it as a deadlock victim or for a serialization failure, ``attempts`` times
    in all with a short random pause; then the command fails saying nothing was stored."""
    import random
    import time

    from sqlalchemy.exc import DBAPIError

    for attempt in range(1, attempts + 1):
        try:
            return transaction()
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state not in RETRYABLE_SQLSTATES:
                raise
            if attempt == attempts:
                raise Failure(f"{what}: the database aborted it {attempts} times as conflicting with "
                              f"other transactions (SQLSTATE {state}); nothing was stored, run it again") from None
            log.warning("%s: aborted by the database (SQLSTATE %s), attempt %d/%d; running it again",
                        what, state, attempt, attempts)
            time.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")


def cmd_time_add(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.rules.duration import DurationError, parse_duration
    from maild.desk.context import DeskContext
    from maild.desk.desk import TicketDesk
    from maild.storage import store
    from maild.storage.models import Ticket

    by = args.by.strip().lower()
    if by not in cfg.consultant_emails:
        raise Failure(f"{args.by} is not a configured consultant ([[consultants]] in {cfg.path})", 2)
    try:
        minutes = parse_duration(args.duration)
    except DurationError as exc:
        raise Failure(str(exc), 2) from None
    customers = customers_of(cfg)
    ctx = DeskContext.for_config(cfg, customers)
    now = common.clock()
    number = store.parse_ticket_ref(args.ref, cfg.support.ticket_prefix)
    if number is None:
        raise Failure(f"{args.ref!r} is not a ticket reference (write {cfg.support.ticket_prefix}-12)", 2)

    def book() -> tuple[str, list[tuple[int, str | None, int, bool]]]:
        with sessions() as session, session.begin():
            ticket = session.get(Ticket, number)
            if ticket is None:
                raise Failure(f"no ticket {args.ref}")
            rows = TicketDesk(ctx, session).book_time(ticket, minutes, by, args.scope, args.note or "", None, now)
            return (store.ticket_ref(cfg.support.ticket_prefix, ticket.id),
                    [(r.id, r.contract_id, r.minutes, r.overage) for r in rows])

    ref, booked = retrying(f"time add {args.ref}", book)
    log.info("%s: %d min booked by %s from the command line, entries %s", ref, minutes, by,
             ",".join(str(b[0]) for b in booked))
    for entry_id, contract_id, part, overage in booked:
        print(f"entry {entry_id}: {hm(part)} on {ref}, contract {contract_id or '-'}"
              f"{' (overage)' if overage else ''}")
    return 0


def cmd_time_reverse(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from maild.desk.context import DeskContext
    from maild.desk.desk import TicketDesk
    from maild.storage.models import LedgerRow

    now = common.clock()
    ctx = DeskContext.for_config(cfg, ())

    def reverse() -> tuple[int, int, int]:
        with sessions() as session, session.begin():
            entry = session.get(LedgerRow, args.entry)
            if entry is None:
                raise Failure(f"no ledger entry {args.entry}")
            if entry.reverses is not None:
                raise Failure(f"entry {entry.id} is itself a reversal of entry {entry.reverses}; "
                              f"book the time again with 'maild time add' instead")
            earlier = session.scalar(select(LedgerRow.id).where(LedgerRow.reverses == entry.id))
            if earlier is not None:
                raise Failure(f"entry {entry.id} was already reversed by entry {earlier}")
            reversal = TicketDesk(ctx, session).reverse_time(entry, args.by, args.reason, now)
            return reversal.id, entry.id, reversal.minutes

    result = retrying(f"time reverse {args.entry}", reverse)
    log.info("ledger entry %d reversed by entry %d (%d min) by %s", result[1], result[0], result[2], args.by)
    print(f"entry {result[0]}: reverses entry {result[1]} ({hm(result[2])})")
    return 0


def _scope_argument(text: str) -> str:
    """``--scope szkolenie`` or ``--scope training``: the stored key; anything else is bad usage (exit 2)."""
    scope = parse_scope(text)
    if scope is None:
        raise argparse.ArgumentTypeError(f"unknown scope {text!r}; one of {known_words()}")
    return scope


def register(commands: Commands) -> None:
    tm = commands.group("time", "the hour ledger")
    ta = commands.add_to(tm, "add", cmd_time_add, help="log work done outside mail")
    ta.add_argument("ref")
    ta.add_argument("duration", help="e.g. 1h30m, 90m, 1.5h")
    ta.add_argument("--by", required=True, help="consultant e-mail")
    ta.add_argument("--scope", type=_scope_argument, metavar="SCOPE",
                    help="consultation|installation|training|incident|development, or the Polish name "
                         "(konsultacja, instalacja, szkolenie, problem, rozwój)")
    ta.add_argument("--note", default="")
    tr = commands.add_to(tm, "reverse", cmd_time_reverse, help="reverse a ledger entry")
    tr.add_argument("entry", type=row_id)
    tr.add_argument("--reason", required=True)
    tr.add_argument("--by", default="maild-cli")
