"""``maild report month``: the month at a glance, as JSON, as one HTML file, and mailed to the managers.

The report is one JSON object (``month_report_json``) made of exactly what
``report hours --json`` and ``report sla --json`` print for the month, plus the
month's activity; the HTML and its charts are drawn from that object and
nothing else, so the page and the JSON cannot disagree.

``--send`` queues one mail per manager and month (dedupe key
``month_report:<month>:<address>``), like statements: running it again changes
nothing. Without ``--month`` it catches up: every month that ended since the
last one sent (only the last ended month when none was ever sent), so a daily
timer that was off on the 1st still sends each month once.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maild.cli import common
from maild.cli.common import Failure
from maild.cli.common import Commands, customers_of, ended_month, month_arg, tz_of
from maild.cli.output import iso, print_json
from maild.rules.kinds import rules_of

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from maild.config import Config
    from maild.storage.queries import Reader

log = logging.getLogger("maild.cli")
KEY_PREFIX = "month_report:"
MAX_CATCH_UP = 12  # months one catch-up run sends at most


def month_report_json(cfg: Config, session: Reader, month: str, now: datetime, language: str,
                      store: bool = False) -> dict[str, Any]:
    """The object ``report month --json`` prints: ``hours`` and ``sla`` are the other reports' JSON, verbatim.

    ``store``: keep the balance snapshots the hours part had to compute (``reports.opening_balances``),
    for the caller's transaction to commit, as ``report hours`` does: the next report reads them."""
    from maild.billing import reports
    from maild.billing.month import activity_json, load_activity
    from maild.cli.report import hours_json, sla_json
    from maild.desk.context import business_calendar

    tz = tz_of(cfg)
    customers = customers_of(cfg)
    prefix = cfg.support.ticket_prefix
    hours = reports.hours_report(session, customers, month, tz, prefix, cfg.ledger.occasional_unit_minutes,
                                 occasional_rate_cents=cfg.billing.occasional_hourly_rate_cents, store=store)
    sla = reports.sla_report(session, customers, month, tz, prefix, now)
    activity = load_activity(session, month, business_calendar(cfg, write=False), cfg.peak_windows,
                             {c.email: c.name for c in cfg.consultants}, now, language)
    return {"month": month, "timezone": tz.key, "generated_at": iso(now), "language": language,
            "hours": hours_json(hours), "sla": sla_json(sla), "activity": activity_json(activity)}


def previous_month(now: datetime, cfg: Config) -> str:
    local = now.astimezone(tz_of(cfg))
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def _next(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def catch_up_months(session: Reader, cfg: Config, now: datetime) -> list[str]:
    """The ended months not yet sent: after the last one sent up to last month (at most ``MAX_CATCH_UP``)."""
    from sqlalchemy import select

    from maild.storage.tables import outbox

    last = previous_month(now, cfg)
    keys = session.scalars(select(outbox.c.dedupe_key).where(outbox.c.dedupe_key.like(f"{KEY_PREFIX}%")))
    sent = sorted({key[len(KEY_PREFIX):len(KEY_PREFIX) + 7] for key in keys})
    if not sent:
        return [last]
    months: list[str] = []
    month = _next(sent[-1])
    while month <= last and len(months) < MAX_CATCH_UP:
        months.append(month)
        month = _next(month)
    return months


def write_html(path: Path, html: str) -> None:
    """Write the page whole or not at all (a reader never sees half a report)."""
    import tempfile

    try:
        handle, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent or Path("."))
    except OSError as exc:
        raise Failure(f"cannot write the report to {path}: {exc.strerror or exc}", 1) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(html)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file would be, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise Failure(f"cannot write the report to {path}: {exc.strerror or exc}", 1) from None


def mail_context(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    """What the plain-text part (``month_report.txt``) renders: plain JSON values."""
    from maild.billing.charts import month_summary

    return {
        "month": data["month"], "timezone": data["timezone"], "from_name": cfg.from_name,
        "summary": month_summary(data),
        "sla": [{"customer_name": c["customer_name"], "contract_id": c["contract_id"], "met": c["met"],
                 "due": c["met"] + c["missed"], "missed_refs": c["missed_refs"]}
                for c in data["sla"]["contracts"] if rules_of(c["kind"]).reaction_deadline],
    }


def send_month_report(cfg: Config, session: Session, month: str, now: datetime) -> tuple[list[str], list[str]]:
    """Queue the month's report to each manager once, through the desk; (queued, already queued) addresses."""
    from maild.billing.pages import html_part, month_report_html
    from maild.desk.context import DeskContext
    from maild.desk.desk import TicketDesk
    from maild.storage import store

    desk = TicketDesk(DeskContext.for_config(cfg, ()), session)
    queued: list[str] = []
    before: list[str] = []
    pages: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for manager in cfg.managers:
        key = f"{KEY_PREFIX}{month}:{manager.email}"
        if store.outbox_queued(session, key):
            before.append(manager.email)
            continue
        language = manager.language if manager.language in ("pl", "en") else "en"
        if language not in pages:
            data = month_report_json(cfg, session, month, now, language, store=True)
            page, images = month_report_html(data, language, cfg.from_name, now, inline=True, domain=desk.ctx.domain)
            pages[language] = (mail_context(cfg, data), html_part(page, images))
        context, html = pages[language]
        message_id = desk.queue_mail(
            ticket=None, dedupe_key=key, kind="month_report", template="month_report", language=language,
            recipients=[manager.email], context=context, html=html, now=now, automatic=True,
            rate_limited=False, fresh=True,
        )
        (queued if message_id is not None else before).append(manager.email)
    return queued, before


def cmd_report_month(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    """The report is read on a Connection (no ORM: ``tables``, as ``report hours``); ``--send`` queues
    the mail through the desk's ORM session."""
    tz = tz_of(cfg)
    now = common.clock()
    language = args.language or (cfg.support.default_language if cfg.support.default_language in ("pl", "en")
                                 else "en")
    if args.month is None and not args.send:
        raise Failure("report month: give --month YYYY-MM (or --send alone, to send every ended month not yet sent)", 2)
    if args.html and args.month is None:
        raise Failure("report month: --html needs --month YYYY-MM", 2)
    if args.send and not cfg.managers:
        raise Failure('report month --send: no manager to send to: add role = "manager" to one of the '
                      "[[consultants]] in " + str(cfg.path), 1)
    if args.month is not None:
        months = [month_arg(args.month, tz)]
        if args.send:
            ended_month(months[0], tz, "report month")
    else:
        with engine.connect() as conn:
            months = catch_up_months(conn, cfg, now)
    if args.month is not None and (args.json or args.html or not args.send):
        # one transaction that commits: the balance snapshots the report had to compute are kept for the next
        # (on SQLite it begins IMMEDIATE, as the command line's sessions do: ``db.sessions_for``)
        with engine.execution_options(maild_immediate=True).begin() as conn:
            data = month_report_json(cfg, conn, months[0], now, language, store=True)
        if args.html:
            from maild.billing.pages import month_report_html

            page, _ = month_report_html(data, language, cfg.from_name, now)
            write_html(Path(args.html), page)
            print(f"report {months[0]} written to {args.html}", file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print_json(data)
        elif not args.html:
            _print_summary(data)
    if args.send:
        out = sys.stderr if args.json else sys.stdout
        if not months:
            print(f"report month: every ended month up to {previous_month(now, cfg)} was already sent", file=out)
        from maild.storage.db import sessions_for

        sessions = sessions_for(engine, take_the_write_lock=True)
        for month in months:
            with sessions() as session, session.begin():
                queued, before = send_month_report(cfg, session, month, now)
            for address in queued:
                print(f"report {month} for {address} queued", file=out)
            for address in before:
                print(f"report {month} for {address} was already queued; not sent again", file=out)
            log.info("month report %s: %d queued, %d already queued before", month, len(queued), len(before))
    return 0


def _print_summary(data: dict[str, Any]) -> None:
    from maild.billing.charts import month_summary

    s = month_summary(data)
    print(f"Month {data['month']} ({data['timezone']})")
    print(f"  tickets opened:   {s['tickets']}")
    print(f"  SLA in time:      {s['sla_met']} of {s['sla_due']} due; {s['breaches']} breached")
    print(f"  open at the end:  {s['backlog']}")
    print(f"  hours booked:     {s['minutes'] // 60}:{s['minutes'] % 60:02d}")
    print("  (--html FILE for the report with its charts, --json for the figures)")


def register(commands: Commands) -> None:
    rm = commands.add_to(commands.group("report", "monthly reports"), "month", cmd_report_month,
                         help="the month at a glance: SLA, load, backlog, hours, with charts", needs="engine")
    rm.add_argument("--month", help="YYYY-MM (needed unless --send alone catches up the ended months)")
    rm.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML file")
    rm.add_argument("--json", action="store_true", help="the figures behind every chart")
    rm.add_argument("--language", choices=["pl", "en"], help="default: [support] default_language")
    rm.add_argument("--send", action="store_true",
                    help="mail the report to the managers, once per month (without --month: every ended month "
                         "not yet sent)")
