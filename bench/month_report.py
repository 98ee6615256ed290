"""What ``maild report month`` costs: wall time and peak memory of the JSON, the HTML file and the mail.

Builds a database with the test suite's month generator (``tests/billing/month_data.py``:
customers of every kind, tickets every day with answers, resolutions and booked
hours), ``--scale`` times its 2-9 tickets a working day, ``--history-days`` of
tickets before the reported month (2026-11), then runs each command as its own
process ``--runs`` times and prints the medians (wall seconds, peak RSS from
the child's rusage). For comparison it also times ``report hours --json`` (the
same month, no charts) and the import of the daemon's module against the
report path's (matplotlib).

    .venv/bin/python bench/month_report.py                       # scale 20: ~3,000 tickets in the month
    .venv/bin/python bench/month_report.py --scale 40 --history-days 90
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall seconds and median peak RSS (MB) of ``argv`` run ``runs`` times.

    The peak RSS is GNU time's (``/usr/bin/time``), which runs the command from
    a small process: a child forked straight from this one would report this
    process's own size (the generator's database session) as its peak.
    """
    walls, rss = [], []
    for _ in range(runs):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
            start = time.perf_counter()
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, cwd=ROOT, env=env)
            walls.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()}")
            rss.append(int(out.read().split()[-1]) / 1024)
    return statistics.median(walls), statistics.median(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--history-days", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from maild.cli.main import main as cli_main
    from maild.storage.db import open_database
    from maild.storage.models import LedgerRow, Ticket
    from tests.billing.month_data import MONTH, MONTH_END, MONTH_START, generate, write_files

    work = Path(tempfile.mkdtemp(prefix="maild-bench-month-"))
    try:
        config = write_files(work)
        started = time.perf_counter()
        assert cli_main(["--config", str(config), "contracts", "sync"]) == 0
        sessions = open_database(f"sqlite:///{work / 'storage' / 'maild.db'}")
        generated = generate(sessions, history_days=args.history_days, scale=args.scale)
        with sessions() as session:
            in_month = session.scalar(select(func.count()).select_from(Ticket).where(
                Ticket.created_at >= MONTH_START, Ticket.created_at < MONTH_END))
            ledger = session.scalar(select(func.count()).select_from(LedgerRow))
        sessions.kw["bind"].dispose()
        print(f"database: {generated.tickets} tickets ({in_month} in {MONTH}), {generated.answers} answers, "
              f"{ledger} ledger rows; built in {time.perf_counter() - started:.1f} s")
        print(f"machine: nproc {os.cpu_count()}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"median of {args.runs} runs, each its own process")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        maild = [sys.executable, "-m", "maild.cli", "--config", str(config)]
        cases = [
            ("report hours --json (no charts)", [*maild, "report", "hours", "--month", MONTH, "--json"]),
            ("report month --json", [*maild, "report", "month", "--month", MONTH, "--json"]),
            ("report month --html FILE (8 charts)",
             [*maild, "report", "month", "--month", MONTH, "--html", str(work / "report.html")]),
            ("import maild.ops.daemon", [sys.executable, "-c", "import maild.ops.daemon"]),
            ("import maild.billing.pages (matplotlib)", [sys.executable, "-c", "import maild.billing.pages"]),
        ]
        print(f"{'command':<42} {'wall s':>8} {'peak RSS MB':>12}")
        for name, argv in cases:
            wall, rss = measure(argv, args.runs, env)
            print(f"{name:<42} {wall:8.2f} {rss:12.1f}")
        size = (work / "report.html").stat().st_size
        print(f"report.html: {size / 1024:.0f} KB")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
