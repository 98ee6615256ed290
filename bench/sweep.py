#!/usr/bin/env python3
"""Sweeper cost: 100,000 open sla tickets of which 100 are due; median sweep time.

    .venv/bin/python bench/sweep.py [--open 100000] [--due 100] [--runs 7]

Every open ticket has its first message (the sweep quotes its first lines in
the escalation mail). Each run works on a fresh copy of the database, so every
run really sends the 100 escalations, and times two sweeps on it:

* cold: the first sweep after the database was opened (SQLAlchemy has compiled
  none of the statements yet): what the first cycle after a restart pays;
* warm: a later sweep on the same engine, with 100 other tickets due: what the
  daemon pays on every cycle of its loop (the figure the target is about).

The first (cold) sweep escalates 100 tickets created long ago whose next
threshold then lies after the warm sweep's time, so the warm sweep sees exactly
the 100 tickets it is meant to. Logging goes through maild's own formatter to
/dev/null (a daemon writes it to journald; the terminal is not part of the cost).
Prints the median and spread over the runs and the machine's nproc. Target:
under 50 ms on SQLite.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from maild.config import load_config  # noqa: E402
from maild.rules.customers import load_customers  # noqa: E402
from maild.storage.db import open_database  # noqa: E402
from maild.ops.logs import TextFormatter  # noqa: E402
from maild.storage.models import MessageRow, Ticket  # noqa: E402
from maild.desk.context import DeskContext  # noqa: E402
from maild.desk.sweeper import Sweeper  # noqa: E402
from tests.helpers import maildir_source, write_config  # noqa: E402

UTC = timezone.utc
WARM_AT = timedelta(hours=5)  # the cold sweep runs this long before the timed one


def _ticket(i: int, created: datetime, reaction: timedelta, next_at: datetime) -> dict[str, object]:
    return {
        "subject": f"t{i}", "status": "open", "requester": "jan@acme.pl", "requester_name": "",
        "language": "pl", "customer_id": None, "contract_id": None, "contract_kind": "sla", "verified": True,
        "tier": 0, "priority": "P3", "reasons": [], "participants": [], "created_at": created,
        "updated_at": created, "reaction_due": created + reaction, "escalation_level": 0,
        "next_escalation_at": next_at,
    }


def build(base: Path, n_open: int, n_due: int, now: datetime) -> Path:
    config = write_config(base, source=maildir_source(base), smtp_port=25)
    cfg = load_config(config)
    sessions = open_database(cfg.database_url)
    rows = []
    for i in range(n_open):
        if i < n_due:  # due at `now` (50 % of 24 h passed 1 h ago), not yet at the cold sweep
            created = now - timedelta(hours=13)
            rows.append(_ticket(i, created, timedelta(hours=24), created + timedelta(hours=12)))
        elif i < 2 * n_due:  # due at the cold sweep; their next threshold (80 % of 48 h) is after `now`
            created = now - timedelta(hours=30)
            rows.append(_ticket(i, created, timedelta(hours=48), created + timedelta(hours=24)))
        else:
            created = now - timedelta(minutes=i % 600)
            rows.append(_ticket(i, created, timedelta(hours=24), created + timedelta(hours=12)))
    with sessions() as session, session.begin():
        for start in range(0, len(rows), 10000):
            session.execute(insert(Ticket), rows[start:start + 10000])
        ids = list(session.scalars(select(Ticket.id).order_by(Ticket.id)))
        messages = [{
            "ticket_id": tid, "message_id": f"m{tid}@acme.pl", "direction": "in", "role": "customer",
            "kind": "human", "from_addr": "jan@acme.pl", "from_name": "Jan", "to_addrs": [], "cc_addrs": [],
            "subject": f"t{tid}", "date": now - timedelta(hours=13),
            "text_new": "Dzień dobry,\nfaktura nie drukuje się od rana.\nProszę o pilny kontakt.\n",
            "text_quoted": "", "size": 1000, "internal": False, "notes": [],
        } for tid in ids]
        for start in range(0, len(messages), 10000):
            session.execute(insert(MessageRow), messages[start:start + 10000])
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(TextFormatter())
    root = logging.getLogger("maild")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    base = Path(tempfile.mkdtemp(prefix="maild-bench-sweep-"))
    try:
        template = base / "template"
        template.mkdir()
        t0 = time.perf_counter()
        build(template, args.open, args.due, now)
        print(f"built {args.open} open tickets with a message each ({args.due} due) in "
              f"{time.perf_counter() - t0:.1f} s")
        cold, warm = [], []
        for run in range(args.runs):
            work = base / f"run{run}"
            shutil.copytree(template, work)
            cfg_text = (work / "maild.toml").read_text().replace(str(template), str(work))
            (work / "maild.toml").write_text(cfg_text)
            cfg = load_config(work / "maild.toml")
            sessions = open_database(cfg.database_url)
            ctx = DeskContext.for_config(cfg, load_customers(cfg.customers_file, cfg.packages))
            sweeper = Sweeper(ctx, sessions)
            t0 = time.perf_counter()
            first = sweeper.sweep(now - WARM_AT)
            cold.append((time.perf_counter() - t0) * 1000)
            assert first.escalations == args.due, first
            t0 = time.perf_counter()
            result = sweeper.sweep(now)
            warm.append((time.perf_counter() - t0) * 1000)
            assert result.escalations == args.due, result
            shutil.rmtree(work)

        def fmt(values: list[float]) -> str:
            return f"median {statistics.median(values):.1f} ms (min {min(values):.1f}, max {max(values):.1f})"

        print(f"sweep, {args.due} escalations among {args.open} open tickets, {args.runs} runs, nproc "
              f"{len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}:")
        print(f"  warm (every cycle of the running daemon): {fmt(warm)}; target < 50 ms")
        print(f"  cold (first sweep after start-up):         {fmt(cold)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
