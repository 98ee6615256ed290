#!/usr/bin/env python3
"""Sweeper cost: 100,000 open sla tickets of which 100 are due; median sweep time.

    .venv/bin/python bench/sweep.py [--open 100000] [--due 100] [--runs 7]

Prints the median and spread over several runs (each on a fresh copy of the
database, so every run really sends the 100 escalations) and the machine's
nproc. Target: under 50 ms on SQLite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402

from maild.blobs import BlobStore  # noqa: E402
from maild.config import load_config  # noqa: E402
from maild.customers import load_customers  # noqa: E402
from maild.db import open_database  # noqa: E402
from maild.models import Ticket  # noqa: E402
from maild.pipeline import Context, Ingestor  # noqa: E402
from maild.sweeper import Sweeper  # noqa: E402
from tests.helpers import maildir_source, write_config  # noqa: E402

UTC = timezone.utc


def build(base: Path, n_open: int, n_due: int, now: datetime) -> Path:
    config = write_config(base, source=maildir_source(base), smtp_port=25)
    cfg = load_config(config)
    sessions = open_database(cfg.database_url)
    rows = []
    for i in range(n_open):
        due_soon = i < n_due
        created = now - timedelta(hours=13) if due_soon else now - timedelta(minutes=i % 600)
        rows.append({
            "subject": f"t{i}", "status": "open", "requester": "jan@acme.pl", "requester_name": "",
            "language": "pl", "customer_id": None, "contract_id": None, "contract_kind": "sla", "verified": True,
            "tier": 0, "priority": "P3", "reasons": [], "participants": [], "created_at": created,
            "updated_at": created, "reaction_due": created + timedelta(hours=24), "escalation_level": 0,
            "next_escalation_at": created + timedelta(hours=12), "low_balance_warned": False,
        })
    with sessions() as session, session.begin():
        for start in range(0, len(rows), 10000):
            session.execute(insert(Ticket), rows[start:start + 10000])
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    base = Path(tempfile.mkdtemp(prefix="maild-bench-sweep-"))
    try:
        template = base / "template"
        template.mkdir()
        t0 = time.perf_counter()
        config = build(template, args.open, args.due, now)
        print(f"built {args.open} open tickets ({args.due} due) in {time.perf_counter() - t0:.1f} s")
        timings = []
        for run in range(args.runs):
            work = base / f"run{run}"
            shutil.copytree(template, work)
            cfg_text = (work / "maild.toml").read_text().replace(str(template), str(work))
            (work / "maild.toml").write_text(cfg_text)
            cfg = load_config(work / "maild.toml")
            sessions = open_database(cfg.database_url)
            ctx = Context.build(cfg, load_customers(cfg.customers_file, cfg.packages))
            sweeper = Sweeper(Ingestor(ctx, sessions, BlobStore(cfg.storage_path)))
            t0 = time.perf_counter()
            result = sweeper.sweep(now)
            timings.append((time.perf_counter() - t0) * 1000)
            assert result.escalations == args.due, result
        med = statistics.median(timings)
        print(f"sweep: median {med:.1f} ms (min {min(timings):.1f}, max {max(timings):.1f}) over {args.runs} runs; "
              f"{args.due} escalations among {args.open} open tickets; nproc {os.cpu_count()}; target < 50 ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
