#!/usr/bin/env python3
"""What each command and daemon step costs as the history grows: 0, 100k, 1M mails.

    .venv/bin/python bench/growth.py                          # sizes 0,100000 (~10 min)
    .venv/bin/python bench/growth.py --sizes 0,100000,1000000  # + 1M mails (~1 h, ~5 GB of disk)
    .venv/bin/python bench/growth.py --work DIR --sizes 0,1000000 --skip-list   # build once, keep it in DIR
    .venv/bin/python bench/growth.py --reuse DIR              # measure DIR again (migrated first), no build
    .venv/bin/python bench/growth.py --reuse DIR --drop-snapshots   # ... with the first report after an upgrade

How the database is built (SQLite, one work dir):

1. **Through maild's own ingest**: ``--seed-mails`` (10,000) generated mails
   (``gen-mail.py``, the backlog benchmark's corpus) are delivered to a Maildir
   and read by ``Daemon.ingest_all()``, the daemon's own cycle: parsed,
   threaded, stored with raw mail and attachments in packs, acknowledgements
   queued. Then every ticket with a contract gets 5-44 minutes booked (one
   ledger row) and the sla tickets a first response 0-39 h after they opened
   (one ``UPDATE``), so the reports have hours and reactions to count.
2. **SQL copies**: to reach N mails, ``INSERT ... SELECT`` copies the seed's
   rows of every table the ingest wrote (tickets, messages, attachments, intake,
   events, outbox, ledger), ids offset, Message-IDs and dedupe keys suffixed,
   every time moved back by the seed's span (10,000 mails are about two months
   at ~50,000 tickets a year), tickets of copies closed. N mails is the seed
   times ``N / seed`` copies; the packs are not copied (copies point at the
   seed's blobs), so "packs per mail" is the seed's.

At each size: a fresh ``--backlog`` (2,000) mails, generated with another
seed so none is a duplicate, delivered to a fresh Maildir (``deliver``) and
ingested through the same cycle (msg/s) with the database file read into the
OS page cache first (``read_into_page_cache``, ``--cold-page-cache`` to leave
it: an empty database is there by construction, a kept one partly), and the
commands as an operator runs them, each a new process (``python -m maild.cli``;
wall time and peak RSS from ``/usr/bin/time``): ``report hours`` and ``report
sla`` for the current month, ``tickets list --json --status all`` (every
ticket; bytes written), ``tickets list`` (the text page), ``tickets show``,
``status --json``; and, in process, the daemon's per-cycle health check
(``read_health(queue=False)``) and the full one ``status`` reads, median of 50.
Medians of ``--runs`` (3) for the commands (one run of the whole-list JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import func, select, text  # noqa: E402

from common import BENCH_ROOT, PY, SEED, banner, corpus, customers_toml, nproc  # noqa: E402

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent
MAILS_PER_YEAR = 62_000  # ~50,000 tickets a year at the corpus's 0.81 tickets a mail
# columns holding a row id of a copied table: offset like the ids themselves
ID_COLUMNS = {"id", "ticket_id", "message_row_id", "linked_to", "reverses"}
# unique (or looked-up) text keys: suffixed per copy so a copy is never a duplicate
SUFFIXED = {("intake", "dedupe_key"), ("outbox", "dedupe_key"), ("messages", "message_id"),
            ("outbox", "message_id")}
COPIED = ("tickets", "messages", "attachments", "intake", "events", "outbox", "ledger")


def next_backlog_seed(work: Path, state: dict[str, int], backlog: int) -> int:
    """The next ``--reuse`` backlog's seed (``state["backlogs"]`` counts on): one whose mail this database
    has never read. A seed a run outside this count ingested (a profiler's or an ``ingest_at.py`` run on a
    copy, say) would store duplicates only and time nothing: its first mails' Message-IDs are looked up in
    intake, and a seed that finds any is passed over, saying so."""
    import sqlite3
    from email.parser import BytesHeaderParser

    database = sqlite3.connect(f"file:{work / 'var' / 'maild.db'}?mode=ro", uri=True)
    try:
        while True:
            state["backlogs"] += 1
            seed = SEED + 100 + state["backlogs"]
            mails = sorted(corpus(backlog, seed).glob("*.eml"))[:20]
            ids = [str(BytesHeaderParser().parsebytes(m.read_bytes()).get("Message-ID", "")).strip().strip("<>")
                   for m in mails]
            known = database.execute(f"SELECT count(*) FROM intake WHERE dedupe_key IN ({','.join('?' * len(ids))})",
                                     ids).fetchone()[0]
            if not known:
                return seed
            print(f"backlog seed {seed} (run {state['backlogs']}): {known} of its first {len(ids)} mails are in "
                  f"this database already; the next seed", flush=True)
    finally:
        database.close()


def write_config(work: Path) -> Path:
    (work / "Maildir").mkdir(parents=True, exist_ok=True)
    (work / "customers.toml").write_text(customers_toml(), encoding="utf-8")
    path = work / "maild.toml"
    path.write_text(f"""\
customers_file = "customers.toml"

[storage]
path = "{work / 'var'}"

[maildir]
path = "{work / 'Maildir'}"

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from_address = "support@helpdesk.example.com"

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
""", encoding="utf-8")
    return path


def deliver(maildir: Path, source: Path, at: datetime) -> int:
    """Every .eml of ``source`` into a fresh Maildir, as an MDA delivers (arrival ``at``).

    Fresh: what earlier backlogs left there goes first. The database's history is what a kept
    database differs in, not the source folder's: until the tenth session a kept work dir's
    ``.Processed/cur`` held every backlog ever read (272,000 files in /work/wt/growth-1m) and its
    ``new`` a directory grown to 585 KB, so each mail's move and each listing cost more at "1M"
    than in an empty database's new Maildir (cProfile: ``stat`` 0.13 against 0.02 s for the same
    4,210 calls; bench/README "Ingest at 1M, tenth session")."""
    count = 0
    if maildir.exists():
        old = maildir.with_name(f"{maildir.name}.old-{os.getpid()}")
        maildir.rename(old)
        shutil.rmtree(old)
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for count, eml in enumerate(sorted(source.glob("*.eml")), start=1):
        name = f"{int(at.timestamp())}.M{count}P{os.getpid()}Q{count}.bench"
        shutil.copyfile(eml, maildir / "tmp" / name)
        os.rename(maildir / "tmp" / name, maildir / "new" / name)
    return count


def read_into_page_cache(database: Path) -> tuple[float, int]:
    """Read the SQLite file (and its WAL) once, so that the measure finds it in the OS page cache: (seconds, bytes).

    A new empty database is in the page cache by construction; a kept one of 6 GB is there only
    in the parts read since the machine started, so a run at "1M" read 11-51 k blocks from disk
    that the empty one did not (the ninth session's quiet runs). A server that has run a while
    holds the pages it uses: this compares like with like. ``--cold-page-cache`` skips it."""
    t0, size = time.perf_counter(), 0
    for path in (database, database.with_name(database.name + "-wal")):
        try:
            with path.open("rb", buffering=0) as f:
                while chunk := f.read(8 << 20):
                    size += len(chunk)
        except FileNotFoundError:
            pass
    return time.perf_counter() - t0, size


def warm(daemon: Any) -> None:
    """Build, before the measure, what a new daemon process builds with its first batch whatever its database
    holds: the intake pipeline with the ORM, the parse worker, Jinja2 and the templates, the outbox.

    On a new empty database the constructor's migration (the ORM), template compilation (Jinja2) and
    holidays already did most of it; on a kept database at its schema head with its templates compiled
    nothing had, so the first batch did, inside the measure: ~0.5 G instructions (~0.1 s) counted at 1M
    and not on the empty database (callgrind, bench/README "Ingest at 1M, eighth session")."""
    daemon.ingestor, daemon.parse_ahead, daemon.renderer, daemon.outbox  # noqa: B018
    import maild.outbound.courier  # noqa: F401


def reading_alone(settings: Any) -> Any:
    """The config with no courier sending while the backlog is read: the ingest alone, as measured
    until the eleventh session (since then SQLite forks one too, and the benchmarks' relay port is
    closed). In code, not in the config file, so that a --reuse work dir's config written before
    measures the same."""
    import dataclasses

    return dataclasses.replace(settings, daemon=dataclasses.replace(settings.daemon, send_while_reading=False))


def ingest(config: Path, profile: Path | None = None, cold: bool = False) -> tuple[float, float, int]:
    """Read the Maildir through the daemon's own cycle; (wall seconds, CPU seconds of this process (user+sys;
    the forked parse worker's are not in it, the WAL checkpoint thread's are), mails stored). ``profile``: a
    cProfile of the ingest there. ``cold``: without ``warm`` first (as measured until the eighth session)."""
    from maild.config import load_config
    from maild.ops.daemon import Daemon

    daemon = Daemon(reading_alone(load_config(config)))
    if not cold:
        warm(daemon)
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    totals = daemon.ingest_all()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    seconds = time.perf_counter() - t0
    checkpoints = getattr(daemon, "checkpoints", None)  # (None before the seventh session's WAL thread)
    if checkpoints is not None:
        checkpoints.settle()  # the last batch's WAL copied: its CPU counts in the process's
    cpu = time.process_time() - cpu0
    if checkpoints is not None:
        checkpoints.close()
    daemon.parse_ahead.close()
    daemon.source.close()
    daemon.sessions.kw["bind"].dispose()
    return seconds, cpu, sum(totals.values())


def book_seed(sessions: object) -> None:
    """Hours on every ticket with a contract, and a first response on the sla ones."""
    with sessions() as session, session.begin():  # type: ignore[operator]
        session.execute(text(
            "INSERT INTO ledger (contract_id, customer_id, ticket_id, minutes, overage, booked_at, \"by\", scope,"
            " note) SELECT contract_id, customer_id, id, 5 + id % 40, 0, created_at, 'anna@firma.pl',"
            " 'consultation', '' FROM tickets WHERE contract_id IS NOT NULL"))
        # the daemon would have delivered them: a real outbox holds minutes of mail, not the history
        session.execute(text("UPDATE outbox SET status = 'sent', sent_at = created_at WHERE status = 'pending'"))
        session.execute(text(
            "UPDATE tickets SET first_response_at = strftime('%Y-%m-%d %H:%M:%S', created_at, '+' || (id % 40)"
            " || ' hours') || substr(created_at, 20) WHERE contract_kind = 'sla'"))


def copy_rows(sessions: object, copies: range, seed_max: dict[str, int], days: int) -> None:
    """``INSERT ... SELECT`` of the seed's rows, once per copy: ids put past every row there (backlogs
    included), references moved with them, keys suffixed, times moved back ``days`` per copy."""
    from maild.storage.models import Base

    refers = {"ticket_id": "tickets", "linked_to": "tickets", "message_row_id": "messages", "reverses": "ledger"}
    with sessions() as session:  # type: ignore[operator]
        for k in copies:
            with session.begin():
                offset = {name: int(session.scalar(text(f"SELECT coalesce(max(id), 0) FROM {name}")))
                          for name in COPIED}
                for name in COPIED:
                    table = Base.metadata.tables[name]
                    cols, exprs = [], []
                    for column in table.columns:
                        cols.append(f'"{column.name}"')
                        if column.name in ID_COLUMNS:
                            exprs.append(f'"{column.name}" + {offset[refers.get(column.name, name)]}')
                        elif (name, column.name) in SUFFIXED:
                            exprs.append(f"\"{column.name}\" || '.c{k}'")
                        elif str(column.type).startswith("DATETIME"):
                            exprs.append(f"strftime('%Y-%m-%d %H:%M:%S', \"{column.name}\", '-{k * days} days')"
                                         f" || substr(\"{column.name}\", 20)")
                        elif name == "tickets" and column.name == "status":
                            exprs.append("'closed'")
                        elif name == "outbox" and column.name == "status":
                            exprs.append("'sent'")
                        else:
                            exprs.append(f'"{column.name}"')
                    session.execute(text(
                        f"INSERT INTO {name} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {name}"
                        f" WHERE id <= {seed_max[name]}"))


def timed_cli(config: Path, *args: str, runs: int) -> tuple[float, float, int, float, list[str]]:
    """(median seconds, median peak RSS MB, bytes written, median CPU seconds (user+sys), each run's
    figures) of ``maild ARGS`` as a new process. A report's first run after an upgrade builds the
    balance snapshots: ``each run`` keeps it apart from the rest."""
    seconds, rss, cpu, size, each = [], [], [], 0, []
    for _ in range(runs):
        with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as stats:
            proc = subprocess.run(["/usr/bin/time", "-o", stats.name, "-f", "%e %M %U %S", PY, "-m", "maild.cli",
                                   "--config", str(config), *args], stdout=out, stderr=subprocess.PIPE,
                                  cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"maild {' '.join(args)} failed: {proc.stderr.decode()[-2000:]}")
            wall, kb, user, system = stats.read().split()[-4:]
            seconds.append(float(wall))
            rss.append(int(kb) / 1024)
            cpu.append(float(user) + float(system))
            each.append(f"{float(wall):.2f} s wall, {cpu[-1]:.2f} s CPU, {int(kb) / 1024:.0f} MB")
            size = out.seek(0, os.SEEK_END)
    return statistics.median(seconds), statistics.median(rss), size, statistics.median(cpu), each


def health_ms(config: Path) -> tuple[float, float]:
    from maild.config import load_config
    from maild.ops.health import read_health
    from maild.storage.db import open_database

    sessions = open_database(load_config(config).database_url)
    light, full = [], []
    with sessions() as session:
        for _ in range(50):
            now = datetime.now(UTC)
            t0 = time.perf_counter()
            read_health(session, now, queue=False)
            light.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read_health(session, now)
            full.append(time.perf_counter() - t0)
            session.rollback()
    sessions.kw["bind"].dispose()
    return statistics.median(light) * 1000, statistics.median(full) * 1000


def in_process(config: Path) -> dict[str, float]:
    """The same reads without a new interpreter (seconds, median of 3): what the work costs once started.

    Each report runs in a transaction that commits, as the CLI's does, so the balance snapshots the
    first run stores are there for the next; every run's wall and CPU time is printed."""
    from zoneinfo import ZoneInfo

    from maild.billing.reports import hours_report, sla_report
    from maild.config import load_config
    from maild.rules.customers import load_customers
    from maild.storage import store
    from maild.storage.db import open_database
    from maild.storage.models import Ticket

    cfg = load_config(config)
    customers = load_customers(cfg.customers_file, cfg.packages)
    tz = ZoneInfo(cfg.calendar.timezone)
    now = datetime.now(UTC)
    month = now.astimezone(tz).strftime("%Y-%m")
    sessions = open_database(cfg.database_url)
    timings: dict[str, list[float]] = {"report hours": [], "report sla": [], "tickets show (rank)": []}
    cpu: dict[str, list[float]] = {key: [] for key in timings}

    def timed(key: str, call: object) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        call()  # type: ignore[operator]
        timings[key].append(time.perf_counter() - t0)
        cpu[key].append(time.process_time() - c0)

    import inspect

    # the snapshots a report computes are stored, as the command line does (not before they existed)
    storing = {"store": True} if "store" in inspect.signature(hours_report).parameters else {}
    for _ in range(3):
        with sessions() as session, session.begin():
            timed("report hours", lambda: hours_report(session, customers, month, tz, "SUP", **storing))
        with sessions() as session, session.begin():
            timed("report sla", lambda: sla_report(session, customers, month, tz, "SUP", now))
        with sessions() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.status != "closed").order_by(Ticket.id.desc()))
            if ticket is not None:
                timed("tickets show (rank)", lambda: store.queue_rank(session, ticket))
    sessions.kw["bind"].dispose()
    for key, values in timings.items():
        print(f"in process, {key}: " + "; ".join(f"{w:.3f} s wall, {c:.3f} s CPU" for w, c in zip(values, cpu[key])),
              flush=True)
    return {key: statistics.median(values) for key, values in timings.items() if values}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


STATE = "growth.json"  # what a work dir holds, for --reuse


def mark_sent(config: Path) -> None:
    """The backlog's acknowledgements as the daemon would have delivered them: the next measurement's
    outbox holds minutes of mail, not every backlog's (the health check counts the unsent)."""
    from maild.config import load_config
    from maild.storage.db import open_database

    sessions = open_database(load_config(config).database_url)
    with sessions() as session, session.begin():
        session.execute(text("UPDATE outbox SET status = 'sent', sent_at = created_at WHERE status = 'pending'"))
    sessions.kw["bind"].dispose()


def age_last_hour(config: Path) -> None:
    """Earlier backlogs' mail moved back a day: each backlog's per-domain limit reads every automatic mail of the
    last hour (``store.recent_automatic``), so back-to-back runs would measure the hour's volume, not the
    history's size."""
    from sqlalchemy import text

    from maild.config import load_config
    from maild.storage.db import open_database

    sessions = open_database(load_config(config).database_url)
    with sessions() as session, session.begin():
        moved = session.execute(text(
            "UPDATE outbox SET created_at = datetime(created_at, '-1 day') || substr(created_at, 20),"
            " sent_at = datetime(sent_at, '-1 day') || substr(sent_at, 20) WHERE created_at >= :since"),
            {"since": (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")}).rowcount
    sessions.kw["bind"].dispose()
    print(f"moved {moved} outbox rows of the last two hours back a day", flush=True)


def close_backlog(config: Path, since: datetime) -> None:
    """The backlog's tickets closed once measured, as the desk would have answered them: each batch counts the open
    queue (``Team.note_opened``), so without this every run would measure a queue 1,600 tickets longer."""
    from sqlalchemy import text

    from maild.config import load_config
    from maild.storage.db import open_database

    sessions = open_database(load_config(config).database_url)
    with sessions() as session, session.begin():
        session.execute(text("UPDATE tickets SET status = 'closed', closed_at = updated_at WHERE created_at >= :since"
                             " AND status != 'closed'"), {"since": since.strftime("%Y-%m-%d %H:%M:%S")})
    sessions.kw["bind"].dispose()


# every time a ticket carries, moved together so a moved ticket stays consistent with itself
TICKET_TIMES = ("created_at", "updated_at", "assigned_at", "reaction_due", "target_due", "first_response_at",
                "resolved_at", "closed_at", "next_escalation_at", "breached_at")


def age_backlog(config: Path, where: str, params: dict[str, object]) -> int:
    """A measured backlog's tickets moved out of this month, spread by id over the 24 months before it: each
    ``--reuse`` run adds 2,000 tickets "now", and ``report sla`` reads this month's tickets, so without this the
    month the reports measure grew by every run (179,896 tickets after the sixth and seventh sessions' ~75 runs,
    against the 32,407 the build made) and the report's cost with it."""
    from sqlalchemy import text

    from maild.config import load_config
    from maild.storage.db import open_database

    shift = "'-' || (id % 24 + 1) || ' months'"
    columns = ", ".join(f"{c} = datetime({c}, {shift}) || substr({c}, 20)" for c in TICKET_TIMES)
    sessions = open_database(load_config(config).database_url)
    with sessions() as session, session.begin():
        moved = session.execute(text(f"UPDATE tickets SET {columns} WHERE {where}"), params).rowcount
    sessions.kw["bind"].dispose()
    return int(moved)


def drop_snapshots(config: Path) -> None:
    """Forget the balance snapshots, so that the next report runs as the first one after the upgrade."""
    from maild.config import load_config
    from maild.storage.db import open_database

    sessions = open_database(load_config(config).database_url)
    with sessions() as session, session.begin():
        session.execute(text("DELETE FROM balance_snapshots"))
    sessions.kw["bind"].dispose()
    print("balance snapshots dropped: the next report computes them", flush=True)


def measure(work: Path, config: Path, mails: int, backlog_seed: int, args: argparse.Namespace) -> dict[str, object]:
    """Every command at the database's present size, then a fresh backlog's ingest."""
    from maild.config import load_config
    from maild.storage.db import open_database
    from maild.storage.models import MessageRow, Ticket

    db_path = work / "var" / "maild.db"
    sessions = open_database(load_config(config).database_url)
    with sessions() as session:
        tickets = int(session.scalar(select(func.count()).select_from(Ticket)) or 0)
        messages = int(session.scalar(select(func.count()).select_from(MessageRow)) or 0)
        ref = session.scalar(select(func.max(Ticket.id)).where(Ticket.status != "closed"))
    sessions.kw["bind"].dispose()
    print(f"\n== {mails} mails in the database: {tickets} tickets, {messages} message rows, "
          f"database {db_path.stat().st_size / 1e6 if db_path.exists() else 0:.0f} MB, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    month = datetime.now(UTC).strftime("%Y-%m")
    row: dict[str, object] = {"mails": mails, "tickets": tickets, "messages": messages}
    commands: list[tuple[str, tuple[str, ...]]] = [
        ("report hours", ("report", "hours", "--month", month, "--json")),
        ("report sla", ("report", "sla", "--month", month, "--json")),
        ("tickets list --json --status all", ("tickets", "list", "--json", "--status", "all")),
        ("tickets list (text page)", ("tickets", "list")),
        *((("tickets show", ("tickets", "show", f"SUP-{ref}")),) if ref else ()),
        ("status --json", ("status", "--json"))]
    if args.drop_snapshots:
        drop_snapshots(config)
    for key, argv in commands:
        if args.skip_list and "--status" in argv:
            continue
        row[key] = result = timed_cli(config, *argv, runs=1 if "--status" in argv else args.runs)
        print(f"{key}: {result[0]:.2f} s, {result[3]:.2f} s CPU, {result[1]:.0f} MB RSS, {result[2] / 1e6:.1f} MB out"
              f" (each run: {'; '.join(result[4])})", flush=True)
    row["health"] = health_ms(config)
    if args.drop_snapshots:
        drop_snapshots(config)
    row["in_process"] = in_process(config)
    print("in process: " + ", ".join(f"{k} {v:.3f} s" for k, v in row["in_process"].items()), flush=True)
    print(f"health check per cycle {row['health'][0]:.2f} ms (status's full read "
          f"{row['health'][1]:.2f} ms)", flush=True)
    if args.reuse is not None:  # the last hour as an empty database has it: nothing but this backlog's mail
        age_last_hour(config)
    started = datetime.now(UTC)
    deliver(work / "Maildir", corpus(args.backlog, backlog_seed), started)
    if not args.cold_page_cache:
        took, size = read_into_page_cache(work / "var" / "maild.db")
        print(f"database read into the page cache before the ingest: {size / 1e9:.1f} GB in {took:.1f} s", flush=True)
    seconds, cpu, count = ingest(config, work / f"ingest-{mails}.prof" if args.profile_ingest else None,
                                 cold=args.cold_ingest)
    mark_sent(config)
    if args.reuse is not None:
        close_backlog(config, started)
        age_backlog(config, "created_at >= :since", {"since": started.strftime("%Y-%m-%d %H:%M:%S")})
    row["ingest"] = count / seconds
    row["ingest_cpu"] = cpu
    print(f"ingest of a fresh {count}-mail backlog (seed {backlog_seed}): {count / seconds:.0f} msg/s "
          f"({seconds:.1f} s wall, {cpu:.1f} s CPU in the main process, load {os.getloadavg()[0]:.2f})", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,100000", help="mails in the database before each measurement")
    parser.add_argument("--seed-mails", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--work", type=Path, help="build in this directory (created if missing, kept) instead of a "
                                                  "temporary one, so that --reuse can measure it again")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="measure a database an earlier --work run built, without building: its migrations run "
                             "(the commands' own start-up), then every figure once at its size; each run ingests "
                             "a fresh backlog of another seed (the database grows by --backlog mails a run); earlier "
                             "backlogs' mail is moved out of the last hour first and this one's tickets are closed "
                             "after it (the per-domain count reads the hour, each batch counts the open queue: "
                             "back-to-back runs would measure those, not the history)")
    parser.add_argument("--skip-list", action="store_true",
                        help="leave out tickets list --json --status all (it prints every ticket: 11 min at 1M)")
    parser.add_argument("--drop-snapshots", action="store_true",
                        help="delete the balance snapshots before the commands and again before the in-process "
                             "reads: each series' first report is then the first after an upgrade")
    parser.add_argument("--profile-ingest", action="store_true",
                        help="a cProfile of each backlog ingest in <work>/ingest-<mails>.prof")
    parser.add_argument("--cold-ingest", action="store_true",
                        help="measure the ingest from the daemon's construction on, without warm(): as until the "
                             "eighth session, when a kept database's first batch paid imports an empty one had not")
    parser.add_argument("--cold-page-cache", action="store_true",
                        help="leave the database file where the OS page cache has it; by default it is read once "
                             "before the ingest (read_into_page_cache), as an empty database is there by construction")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from maild.config import load_config
    from maild.storage.db import open_database

    rows: list[dict[str, object]] = []
    if args.reuse is not None:
        work = args.reuse.resolve()
        state = json.loads((work / STATE).read_text(encoding="utf-8"))
        banner(f"growth: reusing {work} ({state['mails']} mails), backlog {args.backlog}")
        config = work / "maild.toml"
        row = measure(work, config, state["mails"], next_backlog_seed(work, state, args.backlog), args)
        state["mails"] += args.backlog
        (work / STATE).write_text(json.dumps(state), encoding="utf-8")
        rows.append(row)
        print_table(rows, args)
        return 0

    banner(f"growth: sizes {sizes}, seed {args.seed_mails} mails, backlog {args.backlog}")
    if args.work is not None:
        work = args.work.resolve()
        if (work / STATE).exists():
            raise SystemExit(f"{work} holds a built database; measure it with --reuse {work}")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="growth-", dir=BENCH_ROOT if BENCH_ROOT.exists() else None))
    config = write_config(work)
    stored_mails = 0  # mails that went through ingest (their blobs are in the packs)
    copied = 0  # copies of the seed made so far
    seed_max: dict[str, int] = {}
    span_days = max(1, round(args.seed_mails / MAILS_PER_YEAR * 365))
    try:
        for index, size in enumerate(sizes):
            if size > 0:
                if not seed_max:
                    deliver(work / "Maildir", corpus(args.seed_mails, SEED), datetime.now(UTC))
                    seconds, _cpu, count = ingest(config)
                    stored_mails += count
                    print(f"seed: {count} mails ingested in {seconds:.1f} s ({count / seconds:.0f} msg/s)", flush=True)
                    sessions = open_database(load_config(config).database_url)
                    book_seed(sessions)
                    with sessions() as session:
                        for name in COPIED:
                            seed_max[name] = int(session.scalar(text(f"SELECT coalesce(max(id), 0) FROM {name}")))
                    sessions.kw["bind"].dispose()
                wanted = max(size // args.seed_mails - 1, 0)
                if wanted > copied:
                    sessions = open_database(load_config(config).database_url)
                    t0 = time.perf_counter()
                    copy_rows(sessions, range(copied + 1, wanted + 1), seed_max, span_days)
                    print(f"copied the seed {wanted - copied} times in {time.perf_counter() - t0:.0f} s", flush=True)
                    sessions.kw["bind"].dispose()
                    copied = wanted
            mails = stored_mails + copied * args.seed_mails if size else 0
            row = measure(work, config, mails, SEED + 1 + index, args)
            stored_mails += args.backlog
            db_path = work / "var" / "maild.db"
            if mails:
                row["db_per_mail"] = db_path.stat().st_size / (mails + args.backlog)
                row["packs_per_mail"] = du(work / "var" / "blobs") / stored_mails
                print(f"database {row['db_per_mail'] / 1e3:.1f} KB/mail, packs {row['packs_per_mail'] / 1e3:.1f}"
                      f" KB/mail (the seed's and backlogs' blobs only)", flush=True)
            rows.append(row)
            (work / STATE).write_text(json.dumps({"mails": stored_mails + copied * args.seed_mails,
                                                  "backlogs": 0}), encoding="utf-8")
    finally:
        if args.keep or args.work is not None:
            print(f"kept {work} (measure it again: bench/growth.py --reuse {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args)
    return 0


def print_table(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    print(f"\nnproc {nproc()}, load {os.getloadavg()[0]:.2f}; medians of {args.runs} runs (commands)")
    head = ["", *(f"{r['mails']:,} mails" for r in rows)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    print("| ingest msg/s (fresh backlog), main process CPU s | " + " | ".join(
        f"{r['ingest']:.0f}, {r['ingest_cpu']:.1f} s" for r in rows) + " |")
    for key in ("report hours", "report sla", "tickets list --json --status all", "tickets list (text page)",
                "tickets show", "status --json"):
        cells = []
        for r in rows:
            value = r.get(key)
            if isinstance(value, tuple):
                cells.append(f"{value[0]:.2f} s ({value[3]:.2f} s CPU), {value[1]:.0f} MB" + (f", {value[2] / 1e6:.0f} MB out"
                                                                       if "json --status" in key else ""))
            else:
                cells.append("-")
        print(f"| `{key}` | " + " | ".join(cells) + " |")
    print("| health check per cycle (status's full read) | " + " | ".join(
        f"{r['health'][0]:.1f} ms ({r['health'][1]:.1f} ms)" if "health" in r else "-" for r in rows) + " |")
    print("| in process, without start-up: report hours / report sla / tickets show's rank | " + " | ".join(
        " / ".join(f"{v:.2f} s" for v in r["in_process"].values()) if "in_process" in r else "-"
        for r in rows) + " |")
    print("| database / packs per mail | " + " | ".join(
        f"{r['db_per_mail'] / 1e3:.1f} KB / {r['packs_per_mail'] / 1e3:.1f} KB" if "db_per_mail" in r else "-"
        for r in rows) + " |")


if __name__ == "__main__":
    sys.exit(main())
