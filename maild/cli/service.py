"""``maild run|check|status``: the daemon and its health."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from maild.cli.common import Commands
from maild.cli.output import iso, local, print_json

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from maild.config import Config

UTC = timezone.utc


def cmd_status(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    from maild.ops.health import read_health
    from maild.storage import queries

    now = datetime.now(UTC)
    with engine.connect() as conn:
        health = read_health(conn, now)
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
        "nearest_due": [{"ref": queries.ticket_ref(prefix, tid), "reaction_due": iso(due),
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


def cmd_check(cfg: Config, args: argparse.Namespace) -> int:
    from maild.ops.check import run_checks

    return run_checks(cfg)


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from maild.cli.progress import Progress
    from maild.ops.daemon import Daemon

    daemon = Daemon(cfg)
    if args.once:
        with Progress("reading mail", "mails") as progress:
            daemon.on_progress = progress
            report = daemon.run_once()
        print(report.summary())
        return 0
    return daemon.run()


def register(commands: Commands) -> None:
    run = commands.add("run", help="run the daemon", handler=cmd_run, needs="config")
    run.add_argument("--once", action="store_true", help="one cycle (ingest, sweep, send), then exit")
    commands.add("check", help="validate the config and reach every server it names", handler=cmd_check,
                 needs="config")
    status = commands.add("status", help="health: fetch, outbox, quarantine, nearest breach", handler=cmd_status,
                          needs="engine")
    status.add_argument("--json", action="store_true")
