#!/usr/bin/env python3
"""Ingest alone, in process: CPU per mail of the daemon and of its parse worker, and SQL per mail.

    .venv/bin/python bench/ingest.py                         # 2,000 mails, 3 runs, SQLite
    .venv/bin/python bench/ingest.py --db postgres --n 10000 # a private PostgreSQL 15 (fsync on)
    .venv/bin/python bench/ingest.py --runs 1 --profile      # cProfile of the daemon and of the worker
    .venv/bin/python bench/ingest.py --sql                   # + every statement's shape and count

Per run: the corpus (``gen-mail.py``, the backlog benchmark's mail) delivered to a
fresh Maildir with arrival time now, a fresh database (SQLite file, or a new
database in one private cluster), the daemon built (migrations, customers,
templates: not measured), then ``Daemon.ingest_all()`` measured: wall time, this
process's CPU (``time.process_time``: the daemon's main process, which stores)
and the parse worker's (the children's rusage once the worker is stopped: it
parses batch k+1 on the other core while batch k is stored). The customers and
consultants are the backlog benchmark's (``common.customers_toml``; a consultant
and a manager, so each new ticket queues a notification as well as an
acknowledgement).

With two cores shared by others, the CPU seconds and the statement counts are
the figures to compare between two trees; the wall time is the load's.
``--sql`` counts what reaches the driver (statements, the rows of an
executemany, commits): each statement is a round trip on PostgreSQL. There a
batch's appended rows and its attempts go by COPY (``store.copy_rows``), which
SQLAlchemy's events, and so this count, do not see.
``--profile`` writes ``main.prof`` and ``worker.prof`` under the work folder
(kept; printed), timed in CPU seconds (``process_time``), so that neither the
load nor waiting for the other process shows as cost.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_ROOT, SEED, PrivatePostgres, banner, corpus, customers_toml  # noqa: E402

UTC = timezone.utc


def write_config(work: Path, database_url: str) -> Path:
    (work / "Maildir").mkdir(parents=True, exist_ok=True)
    (work / "customers.toml").write_text(customers_toml(), encoding="utf-8")
    path = work / "maild.toml"
    path.write_text(f"""\
customers_file = "customers.toml"

[storage]
path = "{work / 'var'}"

[database]
url = "{database_url}"

[maildir]
path = "{work / 'Maildir'}"

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from_address = "support@helpdesk.example.com"
from_name = "Helpdesk"

[support]
address = "support@helpdesk.example.com"
ticket_prefix = "SUP"
max_auto_replies_per_hour = 1000000
max_auto_replies_per_domain_per_hour = 1000000

[logging]
level = "warning"

[[consultants]]
email = "anna@firma.pl"
name = "Anna Nowak"
role = "consultant"

[[consultants]]
email = "szef@firma.pl"
name = "Szef"
role = "manager"
""", encoding="utf-8")
    return path


def deliver(maildir: Path, source: Path, at: datetime) -> int:
    """Every .eml of ``source`` into the Maildir, as an MDA delivers (arrival ``at``)."""
    count = 0
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for count, eml in enumerate(sorted(source.glob("*.eml")), start=1):
        name = f"{int(at.timestamp())}.M{count:06d}P{os.getpid()}Q{count:06d}.bench"
        shutil.copyfile(eml, maildir / "tmp" / name)
        os.rename(maildir / "tmp" / name, maildir / "new" / name)
    return count


_SHAPE = re.compile(r"^\s*(SELECT|INSERT(?: OR IGNORE)? INTO|UPDATE|DELETE FROM|BEGIN|SAVEPOINT|RELEASE|"
                    r"ROLLBACK|PRAGMA)\s*(\S*)", re.IGNORECASE)


def shape(statement: str) -> str:
    """``INSERT INTO messages``, ``SELECT ... FROM tickets``: what a statement is, without its values."""
    match = _SHAPE.match(statement)
    if match is None:
        return statement.split()[0].upper() if statement.split() else "?"
    verb = match.group(1).upper()
    if verb == "SELECT":
        table = re.search(r"\bFROM\s+(\S+)", statement, re.IGNORECASE)
        return f"SELECT ... FROM {table.group(1) if table else '-'}"
    return f"{verb} {match.group(2)}".strip()


class SqlCount:
    """Statements, executemany rows and commits that reached the driver."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.statements: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()
        self.commits = 0
        self.on = False

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                       executemany: bool) -> None:
            if self.on:
                key = shape(statement) + (" (executemany)" if executemany else "")
                self.statements[key] += 1
                self.rows[key] += len(parameters) if executemany else 1

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            if self.on:
                self.commits += 1


def profile_worker(out: Path) -> None:
    """The parse worker writes a cProfile of its whole life to ``out`` (it ends with ``os._exit``)."""
    import cProfile

    from maild.intake import parsing

    original = parsing._worker_main

    def profiled(*args: Any, **kwargs: Any) -> None:
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        try:
            original(*args, **kwargs)
        finally:
            profiler.disable()
            profiler.dump_stats(str(out))

    parsing._worker_main = profiled  # type: ignore[assignment]


def run_once(source: Path, work: Path, database_url: str, profile: bool, sql: bool,
             pg: PrivatePostgres | None = None) -> dict[str, Any]:
    from maild.config import load_config
    from maild.ops.daemon import Daemon

    work.mkdir(parents=True)
    config = write_config(work, database_url or f"sqlite:///{work / 'maild.db'}")
    n = deliver(work / "Maildir", source, datetime.now(UTC))
    settings = load_config(config)
    # the ingest alone: no courier sending while the backlog is read (SQLite too since the eleventh session)
    daemon = Daemon(dataclasses.replace(settings, daemon=dataclasses.replace(settings.daemon, send_while_reading=False)))
    counter = SqlCount(daemon.sessions.kw["bind"]) if sql else None
    profiler = None
    if profile:
        import cProfile

        profile_worker(work / "worker.prof")
        profiler = cProfile.Profile(time.process_time)
    import gc

    gc.collect()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if counter is not None:
        counter.on = True
    server0 = pg.cpu_seconds() if pg is not None else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    totals = daemon.ingest_all()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(work / "main.prof"))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server = pg.cpu_seconds() - server0 if pg is not None else 0.0
    if counter is not None:
        counter.on = False
    worker_proc = daemon.parse_ahead._worker
    if worker_proc is not None:  # its job pipe closed, it ends by itself (and writes its profile)
        worker_proc.close(kill=False)
        daemon.parse_ahead._worker = None
    daemon.parse_ahead.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    daemon.source.close()
    daemon.sessions.kw["bind"].dispose()
    if daemon.run_lock is not None:
        daemon.run_lock.release()
    stored = sum(totals.values())
    assert stored == n, f"stored {stored} of {n}: {totals}"
    return {"n": n, "wall": wall, "cpu": cpu, "worker": worker, "server": server, "totals": totals, "sql": counter}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--profile", action="store_true", help="cProfile the first run (daemon and worker)")
    parser.add_argument("--sql", action="store_true", help="count the statements of the first run")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    banner(f"ingest in process: {args.n} mails, {args.runs} runs, {args.db}")
    source = corpus(args.n, args.seed)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ingest-", dir=BENCH_ROOT))
    root.chmod(0o755)  # the private PostgreSQL runs as its own user below it
    pg = PrivatePostgres(root / "pg") if args.db == "postgres" else None
    results = []
    try:
        for i in range(args.runs):
            url = pg.fresh_database() if pg is not None else ""
            first = i == 0
            r = run_once(source, root / f"run{i}", url, args.profile and first, args.sql and first, pg)
            results.append(r)
            load = os.getloadavg()[0]
            print(f"run {i + 1}: {r['n']} mails in {r['wall']:.2f} s ({r['n'] / r['wall']:.0f} msg/s); CPU main "
                  f"{r['cpu']:.2f} s ({1000 * r['cpu'] / r['n']:.2f} ms/mail), worker {r['worker']:.2f} s "
                  f"({1000 * r['worker'] / r['n']:.2f} ms/mail)"
                  + (f", PostgreSQL {r['server']:.2f} s ({1000 * r['server'] / r['n']:.2f} ms/mail)" if pg else "")
                  + f"; load {load:.1f}; {r['totals']}", flush=True)
            counter = r["sql"]
            if counter is not None:
                total = sum(counter.statements.values())
                print(f"  statements {total} ({total / r['n']:.2f} a mail), rows {sum(counter.rows.values())}, "
                      f"commits {counter.commits}")
                for key, count in counter.statements.most_common():
                    print(f"  {count:7d} {counter.rows[key]:7d} rows  {key}")
        if len(results) > 1:
            print(f"median of {len(results)}: wall {statistics.median(r['wall'] for r in results):.2f} s, "
                  f"CPU main {statistics.median(r['cpu'] for r in results):.2f} s, "
                  f"worker {statistics.median(r['worker'] for r in results):.2f} s"
                  + (f", PostgreSQL {statistics.median(r['server'] for r in results):.2f} s" if pg else ""))
        if args.profile:
            print(f"profiles: {root / 'run0' / 'main.prof'} {root / 'run0' / 'worker.prof'}")
    finally:
        if pg is not None:
            pg.stop()
        if not (args.keep or args.profile):
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
