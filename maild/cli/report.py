"""``maild report hours|sla``: the monthly figures as tables, JSON or CSV, and the statements.

Each handler reads the customers file and the database, calls ``billing.reports``
for the figures and prints them; ``--send`` queues the statements through the
desk. ``report month`` (charts) is ``month.py``."""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from maild.cli import common
from maild.cli.common import Commands, customers_of, ended_month, hm, iso_date, money, month_arg, tz_of
from maild.cli.output import print_csv, print_json, print_table
from maild.cli.progress import Progress
from maild.rules.kinds import rules_of
from maild.rules.scope import scope_name

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from maild.billing import reports
    from maild.billing.reports import ContractHours, HoursReport
    from maild.config import Config

log = logging.getLogger("maild.cli")


def format_money(cents: int) -> str:
    """``rules.wording.format_amount``, imported when a report is printed (not when the parser is built)."""
    from maild.rules.wording import format_amount

    return format_amount(cents)


def hours_json(report: HoursReport) -> dict[str, Any]:
    def contract_json(c: ContractHours) -> dict[str, Any]:
        return {
            "contract_id": c.contract_id, "kind": c.kind, "total_minutes": c.total_minutes,
            "minutes_by_scope": dict(c.minutes_by_scope),
            "allowance_minutes": c.allowance_minutes, "carry_in_minutes": c.carry_in_minutes,
            "carry_out_minutes": c.carry_out_minutes, "expired_minutes": c.expired_minutes,
            "balance_start_minutes": c.balance_start_minutes, "balance_end_minutes": c.balance_end_minutes,
            "valid_until": iso_date(c.valid_until), "overage_minutes": c.overage_minutes,
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
             # what the customer's statement says is net: the hours above, the month's fees and package prices
             "fees_cents": cu.fees_cents, "net_cents": cu.net_cents,
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
        fees = f" (fees {format_money(cu.fees_cents)})" if cu.fees_cents else ""
        print(f"{cu.name} [{cu.customer_id or '-'}]: {hm(cu.total_minutes)}, to bill {format_money(cu.net_cents)}{fees}")
        for c in cu.contracts:
            extra = []
            if rules_of(c.kind).monthly_allowance:
                extra.append(f"allowance {hm(c.allowance_minutes)}, carry-over in {hm(c.carry_in_minutes)}"
                             f" out {hm(c.carry_out_minutes)}")
            if rules_of(c.kind).packages:
                extra.append(f"balance {hm(c.balance_start_minutes)} -> {hm(c.balance_end_minutes)}"
                             f", valid until {iso_date(c.valid_until)}")
            if c.billable_minutes:
                extra.append(f"billable {hm(c.billable_minutes)} = {money(c.amount_cents)}")
            print(f"  {c.contract_id or '(no contract)'} ({c.kind}): {hm(c.total_minutes)}"
                  + (f"; {'; '.join(extra)}" if extra else ""))
            for t in c.tickets:
                scopes = ", ".join(f"{s} {hm(m)}" for s, m in t.minutes_by_scope)
                print(f"    {t.ref or '-':<12} {hm(t.total_minutes):>7}  {scopes}  {t.subject[:50]}")


def statement_context(cfg: Config, report: HoursReport, customer: reports.CustomerHours) -> dict[str, Any]:
    """What the statement template renders: plain JSON values, stored with the outbox row.

    Money is in grosze (``*_cents``), formatted by the template in the mail's language;
    ``amount`` strings stay for the HTML part's charts.
    """
    net = customer.net_cents
    from maild.billing.ledger import vat_cents

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
                "carry_out_minutes": c.carry_out_minutes, "expired_minutes": c.expired_minutes or 0,
                "balance_start_minutes": c.balance_start_minutes,
                "balance_end_minutes": c.balance_end_minutes, "valid_until": iso_date(c.valid_until),
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
    if not rules_of(contract.kind).packages or contract.valid_until is None or contract.valid_until.isoformat()[:7] > month:
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
    from maild.desk.context import DeskContext
    from maild.desk.desk import TicketDesk
    from maild.storage import store

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

            page, images = statement_html(context, customer.language, inline=True, domain=desk.ctx.domain,
                                          templates=cfg.templates_path)
            html_mail = html_part(page, images)
        message_id = desk.queue_mail(
            ticket=None, dedupe_key=key, kind="statement", template="statement", language=customer.language,
            recipients=[customer.billing_address], context=context, html=html_mail, now=now, automatic=True,
            rate_limited=False, fresh=True,
        )
        (queued if message_id is not None else before).append(customer.customer_id)
    return queued, before


def cmd_report_hours(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    """The month's hours; read on a Connection (no ORM), ``--send`` queues the statements through the desk."""
    from maild.billing import reports

    tz = tz_of(cfg)
    month = month_arg(args.month, tz)
    if getattr(args, "send", False):
        ended_month(month, tz, "report hours")
    customers = customers_of(cfg)
    # one transaction that commits: the balance snapshots the report had to compute are kept for the next
    with engine.begin() as conn, Progress(f"hours {month}", "customers") as progress:
        report = reports.hours_report(conn, customers, month, tz, cfg.support.ticket_prefix,
                                      cfg.ledger.occasional_unit_minutes, progress,
                                      cfg.billing.occasional_hourly_rate_cents, store=True)
    if args.json:
        print_json(hours_json(report))
    elif args.csv:
        print_csv(HOURS_CSV, hours_csv_rows(report))
    else:
        _print_hours_table(report)
    if getattr(args, "send", False):
        from maild.storage.db import sessions_for

        with sessions_for(engine)() as session, session.begin():
            queued, before = send_statements(cfg, session, report, common.clock())
        out = sys.stderr if (args.json or args.csv) else sys.stdout
        for customer_id in queued:
            print(f"statement {month} for {customer_id} queued", file=out)
        for customer_id in before:
            print(f"statement {month} for {customer_id} was already queued; not sent again", file=out)
        if not queued and not before:
            print(f"no customer with a billing address has hours in {month}; nothing queued", file=out)
        log.info("statements %s: %d queued, %d already queued before", month, len(queued), len(before))
    return 0


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


def cmd_report_sla(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    from maild.billing import reports

    tz = tz_of(cfg)
    month = month_arg(args.month, tz)
    customers = customers_of(cfg)
    with engine.connect() as conn:
        report = reports.sla_report(conn, customers, month, tz, cfg.support.ticket_prefix, common.clock())
    data = sla_json(report)["contracts"]
    if args.json:
        print_json(sla_json(report))
    elif args.csv:
        print_csv(SLA_CSV, [[month, *(d[k] for k in SLA_CSV[1:])] for d in data])
    else:
        print(f"SLA reactions {report.month} ({report.timezone})")
        print_table(
            ["customer", "contract", "kind", "tickets", "met", "missed", "open", "median", "worst"],
            [[c.customer_id or "-", c.contract_id or "-", c.kind if rules_of(c.kind).reaction_deadline else f"{c.kind} (target)", c.tickets, c.met, c.missed, c.open,
              hm(c.median_reaction_minutes), hm(c.worst_reaction_minutes)] for c in report.contracts],
        )
    return 0


def register(commands: Commands) -> None:
    report = commands.group("report", "monthly reports")
    for name, helptext, handler in (("hours", "hours per customer, contract and ticket", cmd_report_hours),
                                    ("sla", "reactions met and missed", cmd_report_sla)):
        r = commands.add_to(report, name, handler, help=helptext, needs="engine")
        r.add_argument("--month", required=True, help="YYYY-MM")
        fmt = r.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true")
        fmt.add_argument("--csv", action="store_true")
        if name == "hours":
            r.add_argument("--send", action="store_true", help="mail each customer's statement (once per month)")
