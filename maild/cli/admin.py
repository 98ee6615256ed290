"""CLI handlers for contracts, the hour ledger and the monthly reports.

``cli.py`` parses the arguments and hands over anything it does not handle
itself to ``dispatch``. Each handler reads the customers file and the database,
calls ``reports`` or ``hours`` for the figures, and prints a table, JSON or CSV.
Exit codes follow ``cli``: 0 done, 1 the operation failed (no such ticket or
entry, a double reversal), 2 bad input (month, duration, consultant, customers
file).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maild.billing import reports
from maild.storage import store
from maild.desk.commands import DurationError, parse_duration
from maild.config import Config
from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk
from maild.rules.customers import Customer, load_customers
from maild.rules.kinds import rules_of
from maild.errors import ConfigError, MaildError
from maild.storage.models import LedgerRow, Ticket
from maild.cli.progress import Progress
from maild.cli.common import Failure, Handler, UsageError
from maild.cli.output import print_csv, print_json, print_table
from maild.billing.ledger import vat_cents
from maild.rules.scope import scope_name
from maild.billing.reports import ContractHours, HoursReport, ReportError, format_money

log = logging.getLogger("maild.cli")
UTC = timezone.utc

def _utcnow() -> datetime:
    return datetime.now(UTC)


# Tests replace this to put "this month" and "due by now" where they need them.
clock: Callable[[], datetime] = _utcnow


def _iso_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _hm(minutes: int | None) -> str:
    if minutes is None:
        return "-"
    sign = "-" if minutes < 0 else ""
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h}:{m:02d}"


def _money(cents: int | None) -> str:
    return "-" if cents is None else format_money(cents)


def _customers(cfg: Config) -> tuple[Customer, ...]:
    return load_customers(cfg.customers_file, cfg.packages)


def _tz(cfg: Config) -> ZoneInfo:
    return ZoneInfo(cfg.calendar.timezone)


# Balances are carried month by month up to the month asked for: a month far in
# the future ("9998-12") kept the command busy for more than ten minutes.
MONTHS_AHEAD = 12


def _month(text: str, tz: ZoneInfo) -> str:
    try:
        start, _ = reports.month_bounds(text, tz)
    except ReportError as exc:
        raise Failure(str(exc), 2) from None
    today = clock().astimezone(tz)
    latest = (today.year * 12 + today.month - 1) + MONTHS_AHEAD
    if start.astimezone(tz).year * 12 + start.astimezone(tz).month - 1 > latest:
        raise Failure(f"month {text} is more than {MONTHS_AHEAD} months ahead; give a month up to "
                      f"{latest // 12:04d}-{latest % 12 + 1:02d}", 2)
    return text


# ------------------------------------------------------------------ contracts


def cmd_contracts_list(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    customers = _customers(cfg)
    with sessions() as session:
        balances = reports.contract_balances(session, customers, clock(), _tz(cfg))
    data = [
        {
            "customer": b.customer_id, "customer_name": b.customer_name, "contract_id": b.contract_id,
            "kind": b.kind, "start": _iso_date(b.start), "end": _iso_date(b.end),
            "valid_until": _iso_date(b.valid_until), "used_minutes_month": b.used_minutes_month,
            "balance_minutes": b.balance_minutes, "carry_over_minutes": b.carry_over_minutes,
            "overage_minutes": b.overage_minutes, "expired": b.expired, "removed": b.removed,
        }
        for b in balances
    ]
    if args.json:
        print_json(data)
        return 0
    print_table(
        ["customer", "contract", "kind", "used (month)", "balance", "carry-over", "overage", "valid until", ""],
        [[b.customer_id, b.contract_id, b.kind, _hm(b.used_minutes_month), _hm(b.balance_minutes),
          _hm(b.carry_over_minutes), _hm(b.overage_minutes), _iso_date(b.valid_until) or "-",
          "removed" if b.removed else ("expired" if b.expired else "")] for b in balances],
    )
    return 0


def cmd_contracts_sync(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    try:
        customers = _customers(cfg)
    except ConfigError as exc:
        raise Failure(f"customers file rejected, database unchanged: {exc}", 2) from None
    limit = None if args.allow_removals else cfg.customers_max_removed_percent
    try:
        with sessions() as session, session.begin():
            seen, ended = store.sync_customers(session, customers, clock(), limit, str(cfg.customers_file))
    except ConfigError as exc:
        raise Failure(str(exc), 1) from None
    log.info("customers file %s synced: %d contracts, %d ended", cfg.customers_file, seen, ended)
    print(f"synced {len(customers)} customers, {seen} contracts; {ended} contracts ended")
    return 0


# ------------------------------------------------------------------ time


def cmd_time_add(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    by = args.by.strip().lower()
    if by not in cfg.consultant_emails:
        raise Failure(f"{args.by} is not a configured consultant ([[consultants]] in {cfg.path})", 2)
    try:
        minutes = parse_duration(args.duration)
    except DurationError as exc:
        raise Failure(str(exc), 2) from None
    customers = _customers(cfg)
    ctx = DeskContext.for_config(cfg, customers)
    now = clock()
    with sessions() as session, session.begin():
        number = store.parse_ticket_ref(args.ref, cfg.support.ticket_prefix)
        if number is None:
            raise Failure(f"{args.ref!r} is not a ticket reference (write {cfg.support.ticket_prefix}-12)", 2)
        ticket = session.get(Ticket, number)
        if ticket is None:
            raise Failure(f"no ticket {args.ref}")
        ref = store.ticket_ref(cfg.support.ticket_prefix, ticket.id)
        rows = TicketDesk(ctx, session).book_time(ticket, minutes, by, args.scope, args.note or "", None, now)
        booked = [(r.id, r.contract_id, r.minutes, r.overage) for r in rows]
    log.info("%s: %d min booked by %s from the command line, entries %s", ref, minutes, by,
             ",".join(str(b[0]) for b in booked))
    for entry_id, contract_id, part, overage in booked:
        print(f"entry {entry_id}: {_hm(part)} on {ref}, contract {contract_id or '-'}"
              f"{' (overage)' if overage else ''}")
    return 0


def cmd_time_reverse(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    now = clock()
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
        reversal = TicketDesk(DeskContext.for_config(cfg, ()), session).reverse_time(entry, args.by, args.reason, now)
        result = (reversal.id, entry.id, reversal.minutes)
    log.info("ledger entry %d reversed by entry %d (%d min) by %s", result[1], result[0], result[2], args.by)
    print(f"entry {result[0]}: reverses entry {result[1]} ({_hm(result[2])})")
    return 0


# ------------------------------------------------------------------ report hours


def hours_json(report: HoursReport) -> dict[str, Any]:
    def contract_json(c: ContractHours) -> dict[str, Any]:
        return {
            "contract_id": c.contract_id, "kind": c.kind, "total_minutes": c.total_minutes,
            "minutes_by_scope": dict(c.minutes_by_scope),
            "allowance_minutes": c.allowance_minutes, "carry_in_minutes": c.carry_in_minutes,
            "carry_out_minutes": c.carry_out_minutes, "expired_minutes": c.expired_minutes,
            "balance_start_minutes": c.balance_start_minutes, "balance_end_minutes": c.balance_end_minutes,
            "valid_until": _iso_date(c.valid_until), "overage_minutes": c.overage_minutes,
            "billable_minutes": c.billable_minutes, "hourly_rate_cents": c.hourly_rate_cents,
            "amount_cents": c.amount_cents, "amount": None if c.amount_cents is None else format_money(c.amount_cents),
            "tickets": [
                {"ref": t.ref, "ticket_id": t.ticket_id, "subject": t.subject, "total_minutes": t.total_minutes,
                 "minutes_by_scope": dict(t.minutes_by_scope), "overage_minutes": t.overage_minutes,
                 "billable_minutes": t.billable_minutes}
                for t in c.tickets
            ],
        }

    return {
        "month": report.month,
        "timezone": report.timezone,
        "customers": [
            {"customer": cu.customer_id, "name": cu.name, "total_minutes": cu.total_minutes,
             "amount_cents": cu.amount_cents, "amount": format_money(cu.amount_cents),
             "contracts": [contract_json(c) for c in cu.contracts]}
            for cu in report.customers
        ],
    }


HOURS_CSV = ["month", "customer", "contract_id", "kind", "ticket", "scope", "minutes", "overage_minutes",
             "billable_minutes", "carry_in_minutes", "carry_out_minutes", "amount"]


def hours_csv_rows(report: HoursReport) -> list[list[Any]]:
    """One row per ticket and scope, then one total row per contract (empty ticket and scope).

    Flat rows with a total line per contract is what a spreadsheet user sums
    and checks against the invoice.
    """
    rows: list[list[Any]] = []
    for cu in report.customers:
        for c in cu.contracts:
            for t in c.tickets:
                for scope, minutes in t.minutes_by_scope:
                    rows.append([report.month, cu.customer_id, c.contract_id, c.kind, t.ref or "", scope, minutes,
                                 "", "", "", "", ""])
            rows.append([report.month, cu.customer_id, c.contract_id, c.kind, "", "", c.total_minutes,
                         c.overage_minutes, c.billable_minutes, c.carry_in_minutes, c.carry_out_minutes,
                         "" if c.amount_cents is None else format_money(c.amount_cents)])
    return rows


def _print_hours_table(report: HoursReport) -> None:
    print(f"Hours {report.month} ({report.timezone})")
    for cu in report.customers:
        print()
        print(f"{cu.name} [{cu.customer_id or '-'}]: {_hm(cu.total_minutes)}, to bill {format_money(cu.amount_cents)}")
        for c in cu.contracts:
            extra = []
            if rules_of(c.kind).monthly_allowance:
                extra.append(f"allowance {_hm(c.allowance_minutes)}, carry-over in {_hm(c.carry_in_minutes)}"
                             f" out {_hm(c.carry_out_minutes)}")
            if rules_of(c.kind).packages:
                extra.append(f"balance {_hm(c.balance_start_minutes)} -> {_hm(c.balance_end_minutes)}"
                             f", valid until {_iso_date(c.valid_until)}")
            if c.billable_minutes:
                extra.append(f"billable {_hm(c.billable_minutes)} = {_money(c.amount_cents)}")
            print(f"  {c.contract_id or '(no contract)'} ({c.kind}): {_hm(c.total_minutes)}"
                  + (f"; {'; '.join(extra)}" if extra else ""))
            for t in c.tickets:
                scopes = ", ".join(f"{s} {_hm(m)}" for s, m in t.minutes_by_scope)
                print(f"    {t.ref or '-':<12} {_hm(t.total_minutes):>7}  {scopes}  {t.subject[:50]}")


def statement_context(cfg: Config, report: HoursReport, customer: reports.CustomerHours) -> dict[str, Any]:
    """What the statement template renders: plain JSON values, stored with the outbox row.

    Money is in grosze (``*_cents``), formatted by the template in the mail's language;
    ``amount`` strings stay for the HTML part's charts.
    """
    net = customer.net_cents
    vat = vat_cents(net, cfg.billing.vat_percent)
    return {
        "month": report.month,
        "timezone": report.timezone,
        "customer_name": customer.name,
        "customer_id": customer.customer_id,
        "total_minutes": customer.total_minutes,
        "amount": format_money(net),
        "net_cents": net, "vat_cents": vat, "gross_cents": net + vat, "vat_percent": cfg.billing.vat_percent,
        "from_name": cfg.from_name,
        "contracts": [
            {
                "contract_id": c.contract_id, "kind": c.kind, "total_minutes": c.total_minutes,
                "allowance_minutes": c.allowance_minutes, "carry_in_minutes": c.carry_in_minutes,
                "carry_out_minutes": c.carry_out_minutes, "balance_start_minutes": c.balance_start_minutes,
                "balance_end_minutes": c.balance_end_minutes, "valid_until": _iso_date(c.valid_until),
                "overage_minutes": c.overage_minutes, "billable_minutes": c.billable_minutes,
                "amount": None if c.amount_cents is None else format_money(c.amount_cents),
                "amount_cents": c.amount_cents, "fee_cents": c.fee_cents, "rate_cents": c.hourly_rate_cents,
                "lapsed_minutes": _lapsed(c, report.month),
                "scopes": [{"scope": s, "name": scope_name(s, customer.language), "minutes": m}
                           for s, m in c.minutes_by_scope],
                "tickets": [{"ref": t.ref or "-", "subject": t.subject, "minutes": t.total_minutes}
                            for t in c.tickets],
            }
            for c in customer.contracts
        ],
        "_headers": {"from_name": cfg.from_name},
    }


def _lapsed(contract: reports.ContractHours, month: str) -> int:
    """Minutes of a package that expired by the end of ``month`` unused: then it "wygasł";
    a package at 0 with nothing lapsed was "wykorzystany" (never both)."""
    if contract.kind != "prepaid" or contract.valid_until is None or contract.valid_until.isoformat()[:7] > month:
        return 0
    drawn = contract.total_minutes - contract.overage_minutes
    return max((contract.balance_start_minutes or 0) - drawn, 0)


def send_statements(cfg: Config, session: Session, report: HoursReport, now: datetime,
                    html: bool = True) -> tuple[list[str], list[str]]:
    """Queue each customer's statement once per month; (queued, already queued) customer ids.

    The dedupe key makes a second ``--send`` for the same month a no-op, so an
    operator re-running the command never mails a customer twice. With ``html``
    the statement also gets an HTML part with its charts (multipart/alternative,
    the plain text kept), drawn here, on the report path, and stored with the
    row: the daemon that sends it only assembles the parts.
    """
    desk = TicketDesk(DeskContext.for_config(cfg, ()), session)
    queued: list[str] = []
    before: list[str] = []
    for customer in report.customers:
        if customer.customer_id is None or not customer.billing_address:
            continue
        key = f"statement:{report.month}:{customer.customer_id}"
        if store.outbox_queued(session, key):
            before.append(customer.customer_id)
            continue
        context = statement_context(cfg, report, customer)
        html_mail = None
        if html:
            from maild.billing.pages import html_part, statement_html

            page, images = statement_html(context, customer.language, inline=True, domain=desk.ctx.domain)
            html_mail = html_part(page, images)
        message_id = desk.queue_mail(
            ticket=None, dedupe_key=key, kind="statement", template="statement", language=customer.language,
            recipients=[customer.billing_address], context=context, html=html_mail, now=now, automatic=True,
            rate_limited=False, fresh=True,
        )
        (queued if message_id is not None else before).append(customer.customer_id)
    return queued, before


def cmd_report_hours(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    tz = _tz(cfg)
    month = _month(args.month, tz)
    customers = _customers(cfg)
    with sessions() as session, Progress(f"hours {month}", "customers") as progress:
        report = reports.hours_report(session, customers, month, tz, cfg.support.ticket_prefix,
                                      cfg.ledger.occasional_unit_minutes, progress,
                                      cfg.billing.occasional_hourly_rate_cents)
    if args.json:
        print_json(hours_json(report))
    elif args.csv:
        print_csv(HOURS_CSV, hours_csv_rows(report))
    else:
        _print_hours_table(report)
    if getattr(args, "send", False):
        with sessions() as session, session.begin():
            queued, before = send_statements(cfg, session, report, clock())
        out = sys.stderr if (args.json or args.csv) else sys.stdout
        for customer_id in queued:
            print(f"statement {month} for {customer_id} queued", file=out)
        for customer_id in before:
            print(f"statement {month} for {customer_id} was already queued; not sent again", file=out)
        if not queued and not before:
            print(f"no customer with a billing address has hours in {month}; nothing queued", file=out)
        log.info("statements %s: %d queued, %d already queued before", month, len(queued), len(before))
    return 0


# ------------------------------------------------------------------ report sla


SLA_CSV = ["month", "customer", "contract_id", "tickets", "met", "missed", "open",
           "median_reaction_minutes", "worst_reaction_minutes"]


def sla_json(report: reports.SlaReport) -> dict[str, Any]:
    """What ``report sla --json`` prints (and the ``sla`` part of ``report month --json``)."""
    return {"month": report.month, "timezone": report.timezone, "contracts": [
        {"customer": c.customer_id, "customer_name": c.customer_name, "contract_id": c.contract_id,
         "kind": c.kind, "tickets": c.tickets, "met": c.met, "missed": c.missed, "open": c.open,
         "median_reaction_minutes": c.median_reaction_minutes, "worst_reaction_minutes": c.worst_reaction_minutes,
         "missed_refs": list(c.missed_refs)}
        for c in report.contracts
    ]}


def cmd_report_sla(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    tz = _tz(cfg)
    month = _month(args.month, tz)
    customers = _customers(cfg)
    with sessions() as session:
        report = reports.sla_report(session, customers, month, tz, cfg.support.ticket_prefix, clock())
    data = sla_json(report)["contracts"]
    if args.json:
        print_json(sla_json(report))
    elif args.csv:
        print_csv(SLA_CSV, [[month, *(d[k] for k in SLA_CSV[1:])] for d in data])
    else:
        print(f"SLA reactions {report.month} ({report.timezone})")
        print_table(
            ["customer", "contract", "kind", "tickets", "met", "missed", "open", "median", "worst"],
            [[c.customer_id or "-", c.contract_id or "-", c.kind if c.kind == "sla" else f"{c.kind} (target)", c.tickets, c.met, c.missed, c.open,
              _hm(c.median_reaction_minutes), _hm(c.worst_reaction_minutes)] for c in report.contracts],
        )
    return 0


# ------------------------------------------------------------------ dispatch


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("contracts", "list"): cmd_contracts_list,
    ("contracts", "sync"): cmd_contracts_sync,
    ("report", "hours"): cmd_report_hours,
    ("report", "sla"): cmd_report_sla,
    ("time", "add"): cmd_time_add,
    ("time", "reverse"): cmd_time_reverse,
}


def dispatch(cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    key = (args.command, getattr(args, "sub", None))
    handler = HANDLERS.get(key)
    if handler is None:
        raise UsageError(f"unknown command: {' '.join(k for k in key if k)}")
    return run_handler(handler, cfg, sessions, args)


def run_handler(handler: Handler, cfg: Config, sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    try:
        return handler(cfg, sessions, args)
    except Failure as exc:
        print(f"maild: {exc.message}", file=sys.stderr)
        return exc.code
