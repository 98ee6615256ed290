#!/usr/bin/env python3
"""Retention's daily run on a copy of a kept database: the first run, then the next days' (nothing or little due).

    .venv/bin/python bench/retention_daily.py --db /work/wt/growth-1m/var/maild.db [--raw-months 12] [--text-years 3]

The database is copied into a temporary folder first (the copy is changed and
deleted afterwards; the packs are not copied and not touched). Each run is
``erasure.apply_retention`` in one transaction, as the daemon's daily step runs
it, then what compaction does before it rewrites anything: it decides which
packs to weigh. Before 0013 every pack's blobs were listed (``compact._live``);
since, the packs retention noted are listed and every other pack is asked
whether a row names it (``compact._named``); a database without the list yet (its
first pass since 0013) weighs every pack once. Packs are never rewritten here.
Prints seconds (wall and this process's CPU) per step.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_ROOT  # noqa: E402


def _timed(label: str, work: object) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work() if callable(work) else None
    print(f"  {label}: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a maild SQLite database (copied, never changed)")
    parser.add_argument("--raw-months", type=int, default=12)
    parser.add_argument("--text-years", type=int, default=3)
    parser.add_argument("--days", type=int, default=2, help="daily runs after the first")
    args = parser.parse_args()
    if not args.db.is_file():
        parser.error(f"--db: no such file: {args.db}")

    from sqlalchemy import text

    from maild.desk.erasure import apply_retention
    from maild.storage import compact
    from maild.storage.blobs import BlobStore
    from maild.storage.db import open_database

    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="retention-", dir=BENCH_ROOT))
    try:
        copy = work / "maild.db"
        t0 = time.perf_counter()
        shutil.copyfile(args.db, copy)
        print(f"copied {args.db} ({os.path.getsize(copy) / 1e9:.1f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
        sessions = open_database(f"sqlite:///{copy}")
        blobs = BlobStore(work / "blobs")  # empty: nothing is read from or written to packs
        now = datetime.now(UTC)
        for day in range(args.days + 1):
            at = now + timedelta(days=day)
            print(f"day {day} ({'first run' if day == 0 else 'a day later'}):", flush=True)

            def run() -> object:
                with sessions() as session, session.begin():
                    return apply_retention(session, blobs, at, raw_mail_months=args.raw_months,
                                           closed_ticket_years=args.text_years)

            done = _timed("apply_retention", run)
            print(f"    {done}", flush=True)
            with sessions() as session:
                packs = sorted({p for p, in session.execute(text(
                    "SELECT DISTINCT pack FROM pack_index UNION SELECT DISTINCT raw_pack FROM messages "
                    "WHERE raw_pack IS NOT NULL"))})
                noted_text = session.scalar(text("SELECT value FROM state WHERE key = 'packs_to_compact'"))
            noted = set(json.loads(noted_text)) if noted_text else set()

            def decide() -> object:
                with sessions() as session:
                    if hasattr(compact, "_named") and noted_text is not None:
                        weighed = [n for n in packs if n in noted or not compact._named(session, n)]
                        return sum(len(compact._live(session, n)) for n in weighed), len(weighed)
                    return sum(len(compact._live(session, n)) for n in packs), len(packs)

            blobs_listed, weighed = _timed(f"compaction's choice of packs ({len(packs)} packs)", decide)  # type: ignore[misc]
            print(f"    weighed {weighed} packs, listed {blobs_listed} blobs; noted {len(noted)}", flush=True)
            if hasattr(compact, "_weighed"):
                compact._weighed(sessions, noted)  # as a pass that rewrote nothing leaves it
        sessions.kw["bind"].dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
