"""The command line: ``maild --config PATH <command>``.

Exit codes: 0 done, 1 a check or an operation failed, 2 bad usage or config.
Human output is tables; ``--json`` output is the stable shape documented in the
README, times in ISO-8601 UTC.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maild.storage import store
from maild.desk.team import Team
from maild.config import Config, load_config
from maild.storage.db import open_database
from maild.errors import ConfigError, MaildError
from maild.rules.scope import known_words, parse_scope
from maild.ops.logs import setup_logging
from maild.storage.models import AttachmentRow, Event, LedgerRow, MessageRow, QuarantineRow, Ticket
from maild.cli.progress import Progress
from maild.cli import admin, consultants, erasure, setup
from maild.cli.common import UsageError
from maild.cli.output import iso, local, print_json, print_json_stream, print_table, print_table_stream, short_local
from maild.rules.prioritise import TIER_NAMES

log = logging.getLogger("maild.cli")
UTC = timezone.utc
DEFAULT_CONFIG = "/etc/maild/maild.toml"


def row_id(text: str) -> int:
    """An argparse type for a record number (quarantine id, ledger entry): a bad or
    out-of-range one is a usage error (exit 2) before the database sees it."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or not 1 <= int(value) <= store.MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a record number (a whole number from 1 to "
                                         f"{store.MAX_ROW_ID})")
    return int(value)


def ticket_number(cfg: Config, ref: str) -> int:
    """The ticket number a reference given on the command line names; UsageError when none."""
    number = store.parse_ticket_ref(ref, cfg.support.ticket_prefix)
    if number is None:
        prefix = cfg.support.ticket_prefix
        raise UsageError(f"{ref!r} is not a ticket reference (write {prefix}-12, {prefix}-<n> with n from 1 to "
                         f"{store.MAX_ROW_ID})")
    return number


# ------------------------------------------------------------------ tickets

def _scope_argument(text: str) -> str:
    """``--scope szkolenie`` or ``--scope training``: the stored key; anything else is bad usage (exit 2)."""
    scope = parse_scope(text)
    if scope is None:
        raise argparse.ArgumentTypeError(f"unknown scope {text!r}; one of {known_words()}")
    return scope


def ticket_json(cfg: Config, t: Ticket, rank: int | None, messages: int,
                expected: date | None = None) -> dict[str, Any]:
    return {
        "ref": store.ticket_ref(cfg.support.ticket_prefix, t.id),
        "subject": t.subject,
        "status": t.status,
        "customer": t.customer_id,
        "contract_id": t.contract_id,
        "contract_kind": t.contract_kind,
        "verified": t.verified,
        "tier": TIER_NAMES[t.tier],
        "priority": t.priority,
        "rank": rank,
        # the same number under the name the queue estimate uses (issue 15); null when not open
        "queue_position": rank,
        "expected_by": expected.isoformat() if expected else None,
        "peak": t.peak,
        "scope": t.scope,
        "requester": t.requester,
        "assigned_to": t.assigned_to,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "reaction_due": iso(t.reaction_due),
        "first_response_at": iso(t.first_response_at),
        "resolved_at": iso(t.resolved_at),
        "escalation_level": t.escalation_level,
        "breached": t.breached_at is not None,
        "linked_to": store.ticket_ref(cfg.support.ticket_prefix, t.linked_to) if t.linked_to else None,
        "messages": messages,
        "reasons": list(t.reasons or []),
    }


def ticket_filter(args: argparse.Namespace, now: datetime) -> store.TicketFilter:
    """``--customer --assigned --tier --overdue``; they combine (and), and with any paging of the list."""
    return store.TicketFilter(
        customer=getattr(args, "customer", None),
        assigned=getattr(args, "assigned", None),
        tier=TIER_NAMES.index(args.tier) if getattr(args, "tier", None) else None,
        overdue_at=now if getattr(args, "overdue", False) else None,
    )


TEXT_LIMIT = 100


def cmd_tickets_list(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    """The queue, streamed: text shows the count and the first ``--limit`` (100) tickets; JSON all unless limited.

    ``--after REF`` continues behind REF in queue order, so a script pages
    through a long queue with ``--limit N --after <last ref of the page>``.
    """
    now = datetime.now(UTC)
    where = ticket_filter(args, now)
    limit = None if args.all else (args.limit if args.limit is not None else (None if args.json else TEXT_LIMIT))
    prefix = cfg.support.ticket_prefix
    with sessions() as session:
        after = None
        if args.after is not None:
            after = store.find_ticket_by_ref(session, args.after, prefix)
            if after is None:
                raise UsageError(f"tickets list --after {args.after}: no such ticket")
        chunks = store.stream_tickets(session, args.status, where, after=after, limit=limit)
        if args.json:
            team = Team(session, cfg)

            def expected(x: store.ListedTicket) -> date | None:
                # An estimate for help without a deadline only; an sla ticket has its deadline.
                t = x.ticket
                if x.rank is None or not t.verified or t.contract_kind not in ("prepaid", "occasional"):
                    return None
                return team.expected_by(x.rank, now, tier=t.tier, priority=t.priority)

            print_json_stream(ticket_json(cfg, x.ticket, x.rank, x.messages, expected(x))
                              for chunk in chunks for x in chunk)
            return 0
        total = store.count_tickets(session, args.status, where)
        print(f"{total} ticket{'' if total == 1 else 's'}")
        tz = ZoneInfo(cfg.calendar.timezone)
        zone = now.astimezone(tz).tzname()
        shown: list[str] = []

        def rows(chunk: list[store.ListedTicket]) -> list[list[Any]]:
            out = []
            for x in chunk:
                t, ref = x.ticket, store.ticket_ref(prefix, x.ticket.id)
                shown.append(ref)
                out.append([x.rank or "-", ref, t.status, TIER_NAMES[t.tier], t.priority,
                            t.customer_id or t.requester, short_local(t.reaction_due, tz, zone), t.subject])
            return out

        print_table_stream(
            ["#", "ref", "status", "tier", "P", "customer", f"due {zone}", "subject"],
            (rows(chunk) for chunk in chunks), shrink=((5, 12), (7, 24), (5, 8), (7, 8)), sep=" ",
        )
    if limit is not None and len(shown) == limit and (after is not None or total > limit):
        print(f"(the first {limit}; next: --after {shown[-1]}; every ticket: --all)")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= store.MAX_ROW_ID:  # a larger LIMIT overflowed in the database driver
        raise argparse.ArgumentTypeError(f"must be from 1 to {store.MAX_ROW_ID}, got {value}")
    return value


def cmd_tickets_show(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    with sessions() as session:
        ticket = session.get(Ticket, ticket_number(cfg, args.ref))
        if ticket is None:
            print(f"maild: no ticket {args.ref}", file=sys.stderr)
            return 1
        rows = list(session.scalars(select(MessageRow).where(MessageRow.ticket_id == ticket.id).order_by(MessageRow.id)))
        atts = list(session.scalars(select(AttachmentRow).where(AttachmentRow.message_row_id.in_([r.id for r in rows]))))
        events = list(session.scalars(select(Event).where(Event.ticket_id == ticket.id).order_by(Event.id)))
        ledger = list(session.scalars(select(LedgerRow).where(LedgerRow.ticket_id == ticket.id).order_by(LedgerRow.id)))
        data = ticket_json(cfg, ticket, store.queue_rank(session, ticket), len(rows))
    by_message: dict[int, list[dict[str, Any]]] = {}
    for a in atts:
        by_message.setdefault(a.message_row_id, []).append(
            {"filename": a.filename, "content_type": a.content_type, "size": a.size, "sha256": a.sha256})
    data["messages"] = [
        {
            "message_id": r.message_id, "direction": r.direction, "role": r.role, "kind": r.kind,
            "from": r.from_addr, "from_name": r.from_name, "to": list(r.to_addrs), "cc": list(r.cc_addrs),
            "date": iso(r.date), "subject": r.subject, "internal": r.internal, "text": r.text_new,
            "notes": list(r.notes or []), "attachments": by_message.get(r.id, []),
        }
        for r in rows
    ]
    data["time_logged_minutes"] = sum(e.minutes for e in ledger)
    data["time_entries"] = [
        {"id": e.id, "minutes": e.minutes, "by": e.by, "scope": e.scope, "booked_at": iso(e.booked_at),
         "contract_id": e.contract_id, "overage": e.overage, "reverses": e.reverses, "note": e.note}
        for e in ledger
    ]
    data["delivery_failures"] = [
        {"at": iso(e.at), **e.detail} for e in events if e.kind == "delivery_failed"
    ]
    data["events"] = [{"at": iso(e.at), "kind": e.kind, "actor": e.actor, **e.detail} for e in events]
    if args.json:
        print_json(data)
        return 0
    tz = ZoneInfo(cfg.calendar.timezone)
    print(f"{data['ref']}  {data['subject']}")
    print(f"status {data['status']}, {data['tier']} {data['priority']}, customer {data['customer'] or '-'}"
          f" ({data['contract_kind']}{'' if data['verified'] else ', unverified'}), requester {data['requester']}"
          + (f", assigned to {data['assigned_to']}" if data["assigned_to"] else ""))
    print(f"created {local(ticket.created_at, tz)}, reaction due {local(ticket.reaction_due, tz)}")
    print(f"first response {local(ticket.first_response_at, tz)}, time logged {data['time_logged_minutes']} min")
    for failure in data["delivery_failures"]:
        kind = "PERMANENT" if failure.get("permanent") else "temporary"
        print(f"! delivery failure ({kind}) to {', '.join(failure.get('recipients', []))}: {failure.get('status', '')}")
    for r, m in zip(rows, data["messages"]):
        arrow = "<-" if m["direction"] == "in" else "->"
        flag = " [internal]" if m["internal"] else ""
        print(f"\n{local(r.date, tz)} {arrow} {m['role']} {m['from']}{flag} ({m['kind']})")
        for line in (m["text"] or "").strip().splitlines():
            print(f"    {line}".rstrip())
        for a in m["attachments"]:
            print(f"    [attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes)")
        for note in m["notes"]:
            print(f"    [note] {note}")
    return 0


# ------------------------------------------------------------------ quarantine

def cmd_quarantine_list(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    with sessions() as session:
        rows = list(session.scalars(select(QuarantineRow).order_by(QuarantineRow.id)))
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


# ------------------------------------------------------------------ storage

def cmd_storage_verify(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.storage.blobs import BlobStore

    with sessions() as session, Progress("verifying storage", "blobs") as progress:
        audit = store.audit_blobs(session, BlobStore(cfg.storage_path), progress)
    if args.json:
        print_json({"checked": audit.checked, "problems": audit.problems})
    else:
        for problem in audit.problems:
            print(problem)
        print(f"storage {cfg.storage_path}: {audit.checked} blobs read back (raw mail, attachments, quarantined "
              f"mail); {len(audit.problems) or 'none'} missing or damaged")
    return 1 if audit.problems else 0


# ------------------------------------------------------------------ status

def cmd_status(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    from maild.ops.health import read_health

    now = datetime.now(UTC)
    with sessions() as session:
        health = read_health(session, now)
    prefix = cfg.support.ticket_prefix
    age = health.oldest_unsent_age
    data: dict[str, Any] = {
        "now": iso(now),
        "last_fetch_at": iso(health.last_fetch_at),
        "mail_waiting": health.mail_waiting,
        "outbox_depth": health.outbox_depth,
        "oldest_unsent_at": iso(health.oldest_unsent),
        "oldest_unsent_age_seconds": None if age is None else int(age.total_seconds()),
        "quarantined": health.quarantined,
        "open_tickets": health.open_tickets,
        "nearest_due": [{"ref": store.ticket_ref(prefix, tid), "reaction_due": iso(due),
                         "seconds_left": int((due - now).total_seconds())} for tid, due in health.nearest_due],
    }
    if args.json:
        print_json(data)
        return 0
    tz = ZoneInfo(cfg.calendar.timezone)
    print(f"last fetch:     {local(health.last_fetch_at, tz, 'never')}")
    if health.mail_waiting is not None:
        print(f"mail waiting:   {health.mail_waiting} left on the server by the last cycle")
    print(f"outbox:         {health.outbox_depth} unsent" + (f", oldest {data['oldest_unsent_age_seconds']} s" if age else ""))
    print(f"quarantined:    {health.quarantined}")
    print(f"open tickets:   {health.open_tickets}")
    for item, (_, due) in zip(data["nearest_due"], health.nearest_due):
        left = item["seconds_left"]
        state = f"{left // 60} min left" if left >= 0 else f"OVERDUE by {-left // 60} min"
        print(f"nearest due:    {item['ref']} at {local(due, tz)} ({state})")
    return 0


# ------------------------------------------------------------------ wiring

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maild", description="Support mailbox -> prioritised, SLA-clocked ticket queue.")
    p.add_argument("--config", help=f"config file (default: $MAILD_CONFIG or {DEFAULT_CONFIG})")
    p.add_argument("--version", action="version", version=f"maild {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true", help="one cycle (ingest, sweep, send), then exit")
    sub.add_parser("check", help="validate the config and reach every server it names")
    status = sub.add_parser("status", help="health: fetch, outbox, quarantine, nearest breach")
    status.add_argument("--json", action="store_true")

    tickets = sub.add_parser("tickets", help="the ticket queue").add_subparsers(dest="sub", required=True)
    tl = tickets.add_parser("list", help="tickets in queue order")
    tl.add_argument("--status", choices=["new", "open", "waiting", "resolved", "closed", "all"])
    tl.add_argument("--customer", metavar="ID", help="only this customer's tickets (its id in the customers file)")
    tl.add_argument("--assigned", metavar="EMAIL", help="only tickets assigned to this consultant; 'none': nobody's")
    tl.add_argument("--tier", choices=TIER_NAMES, help="only this queue tier")
    tl.add_argument("--overdue", action="store_true", help="only tickets past their reaction deadline, unanswered")
    tl.add_argument("--json", action="store_true")
    page = tl.add_mutually_exclusive_group()
    page.add_argument("--limit", type=_positive, metavar="N",
                      help=f"at most N tickets (text: {TEXT_LIMIT} unless --all; JSON: all unless --limit)")
    page.add_argument("--all", action="store_true", help="every ticket (text)")
    tl.add_argument("--after", metavar="REF", help="continue behind REF in queue order (the next page)")
    ts = tickets.add_parser("show", help="one ticket with its thread")
    ts.add_argument("ref")
    ts.add_argument("--json", action="store_true")

    contracts = sub.add_parser("contracts", help="contracts and balances").add_subparsers(dest="sub", required=True)
    cl = contracts.add_parser("list", help="contracts with hours used and balances")
    cl.add_argument("--json", action="store_true")
    cs = contracts.add_parser("sync", help="import the customers file into the database")
    cs.add_argument("--allow-removals", action="store_true",
                    help="accept a file that removes more than customers_max_removed_percent of the customers")

    report = sub.add_parser("report", help="monthly reports").add_subparsers(dest="sub", required=True)
    for name, helptext in (("hours", "hours per customer, contract and ticket"), ("sla", "reactions met and missed")):
        r = report.add_parser(name, help=helptext)
        r.add_argument("--month", required=True, help="YYYY-MM")
        fmt = r.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true")
        fmt.add_argument("--csv", action="store_true")
        if name == "hours":
            r.add_argument("--send", action="store_true", help="mail each customer's statement (once per month)")
    rm = report.add_parser("month", help="the month at a glance: SLA, load, backlog, hours, with charts")
    rm.add_argument("--month", help="YYYY-MM (needed unless --send alone catches up the ended months)")
    rm.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML file")
    rm.add_argument("--json", action="store_true", help="the figures behind every chart")
    rm.add_argument("--language", choices=["pl", "en"], help="default: [support] default_language")
    rm.add_argument("--send", action="store_true",
                    help="mail the report to the managers, once per month (without --month: every ended month "
                         "not yet sent)")

    tm = sub.add_parser("time", help="the hour ledger").add_subparsers(dest="sub", required=True)
    ta = tm.add_parser("add", help="log work done outside mail")
    ta.add_argument("ref")
    ta.add_argument("duration", help="e.g. 1h30m, 90m, 1.5h")
    ta.add_argument("--by", required=True, help="consultant e-mail")
    ta.add_argument("--scope", type=_scope_argument, metavar="SCOPE",
                    help="consultation|installation|training|incident|development, or the Polish name "
                         "(konsultacja, instalacja, szkolenie, problem, rozwój)")
    ta.add_argument("--note", default="")
    tr = tm.add_parser("reverse", help="reverse a ledger entry")
    tr.add_argument("entry", type=row_id)
    tr.add_argument("--reason", required=True)
    tr.add_argument("--by", default="maild-cli")

    q = sub.add_parser("quarantine", help="mail that could not be processed").add_subparsers(dest="sub", required=True)
    ql = q.add_parser("list")
    ql.add_argument("--json", action="store_true")
    qr = q.add_parser("retry", help="process a quarantined mail again")
    qr.add_argument("id", type=row_id)

    storage = sub.add_parser("storage", help="the stored mail").add_subparsers(dest="sub", required=True)
    sv = storage.add_parser("verify", help="read back every stored mail and attachment; exit 1 if any is "
                                           "missing or damaged")
    sv.add_argument("--json", action="store_true")
    storage.add_parser("compact", help="rewrite packs that hold erased or expired mail; give the space back")
    erasure.add_parsers(sub)

    db = sub.add_parser("db", help="database").add_subparsers(dest="sub", required=True)
    db.add_parser("upgrade", help="apply pending migrations")

    consultants.add_parser(sub)
    setup.add_parser(sub)

    demo = sub.add_parser("demo", help="a self-contained first look (SQLite, Maildir, in-process SMTP)")
    demo.add_argument("--dir", help="work directory (default: a new temporary one)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``maild`` script; a reader that stops early (``| head``) ends the command quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python would report the failed flush of stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a program the signal ended


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("maild")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from maild.cli.demo import run_demo

        setup_logging("warning")
        return run_demo(main, Path(args.dir) if args.dir else None)
    if args.command == "setup":
        return setup.run(args)
    path = args.config or os.environ.get("MAILD_CONFIG") or DEFAULT_CONFIG
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"maild: config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        return dispatch(cfg, args)
    except ConfigError as exc:
        print(f"maild: config error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return 2
    except MaildError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return 1


def dispatch(cfg: Config, args: argparse.Namespace) -> int:
    command, sub = args.command, getattr(args, "sub", None)
    if command == "check":
        from maild.ops.check import run_checks

        return run_checks(cfg)
    if command == "run":
        from maild.ops.daemon import Daemon

        daemon = Daemon(cfg)
        if args.once:
            with Progress("reading mail", "mails") as progress:
                daemon.on_progress = progress
                report = daemon.run_once()
            print(report.summary())
            return 0
        return daemon.run()
    if command == "db":
        from maild.storage.db import make_engine, safe_url, upgrade

        upgrade(make_engine(cfg.database_url))
        print(f"database {safe_url(cfg.database_url)} is at the latest schema")
        return 0
    sessions = open_database(cfg.database_url)
    handlers = {
        ("tickets", "list"): cmd_tickets_list,
        ("tickets", "show"): cmd_tickets_show,
        ("quarantine", "list"): cmd_quarantine_list,
        ("quarantine", "retry"): cmd_quarantine_retry,
        ("storage", "verify"): cmd_storage_verify,
        ("storage", "compact"): erasure.cmd_storage_compact,
        ("status", None): cmd_status,
        ("forget", None): erasure.cmd_forget,
        ("retention", "run"): erasure.cmd_retention_run,
    }
    if command == "consultants":
        try:
            return consultants.run(cfg, sessions, args)
        except consultants.ConsultantsUsageError as exc:
            raise UsageError(str(exc)) from exc
    handler = handlers.get((command, sub))
    if handler is not None:
        return handler(cfg, sessions, args)
    if (command, sub) == ("report", "month"):
        from maild.cli.month import cmd_report_month  # the report path: charts, matplotlib

        return admin.run_handler(cmd_report_month, cfg, sessions, args)
    return admin.dispatch(cfg, sessions, args)


if __name__ == "__main__":
    sys.exit(main())
