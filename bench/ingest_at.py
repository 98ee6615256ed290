#!/usr/bin/env python3
"""One fresh backlog's ingest into a kept database (or an empty one), split into user/sys CPU and I/O.

    .venv/bin/python bench/ingest_at.py --reuse /work/wt/growth-1m      # a growth.py --work dir: +2,000 mails
    .venv/bin/python bench/ingest_at.py --empty                         # a new empty database, same code
    .venv/bin/python bench/ingest_at.py --empty --pragma cache_size=-2000  # extra PRAGMAs on every connection

The inner loop of ``growth.py``'s ingest figure, without its commands and
reports (~30 s at 1M instead of ~4 min): the same Maildir delivery (a fresh Maildir each run), the database read
into the OS page cache first (``--cold-page-cache``: not), and
``Daemon.ingest_all()`` (``growth.ingest``), the same seeds (``--reuse`` counts
its backlogs in the work dir's growth.json like ``growth.py --reuse``, so the
two never ingest the same mail twice), and the acknowledgements marked sent
afterwards. Prints the main process's user and sys CPU seconds (the forked parse
worker's are not in them; the WAL checkpoint thread's are, up to its pass after the
last batch), those of the thread that ran the ingest alone, blocks read and
written, and the database's mail count.
``--pragma`` adds PRAGMAs to every SQLite connection after maild's own (to
measure one before changing ``storage/db.py``). Before the measure the daemon
builds what its first batch would build whatever the database holds
(``growth.warm``; ``--cold`` leaves that in the measure, as until the eighth
session, when a kept database paid it and an empty one had not).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_ROOT, SEED, corpus  # noqa: E402
from growth import (  # noqa: E402
    STATE,
    age_backlog,
    age_last_hour,
    close_backlog,
    deliver,
    mark_sent,
    read_into_page_cache,
    next_backlog_seed,
    warm,
    reading_alone,
    write_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--reuse", type=Path, metavar="DIR", help="a database growth.py --work built")
    where.add_argument("--empty", action="store_true", help="a new empty database (deleted afterwards)")
    parser.add_argument("--backlog", type=int, default=2_000)
    parser.add_argument("--cold-page-cache", action="store_true",
                        help="leave the database file where the OS page cache has it; by default it is read once "
                             "before the measure (growth.read_into_page_cache), as an empty database is there by "
                             "construction")
    parser.add_argument("--pragma", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep-hour", action="store_true",
                        help="leave earlier backlogs' mail in the last hour (see below); by default it is moved back a "
                             "day first, so that the hour holds only this backlog's, as in an empty database")
    parser.add_argument("--parse-timeout", type=int, metavar="SECONDS",
                        help="the parse deadline (under valgrind the forked parse worker needs minutes)")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="a cProfile of the ingest into FILE")
    parser.add_argument("--cold", action="store_true",
                        help="no growth.warm() before the measure (as until the eighth session): a kept database's "
                             "first batch then builds the ORM, the pipeline and Jinja2, an empty one's constructor did")
    parser.add_argument("--keep-wal", type=Path, metavar="FILE",
                        help="no checkpoint during the ingest (no WAL thread, wal_autocheckpoint=0); the WAL copied to "
                             "FILE after it (and with --empty the database to FILE.db) for bench/wal_pages.py")
    args = parser.parse_args()
    if args.keep_wal is not None:
        args.pragma.append("wal_autocheckpoint=0")

    if args.pragma:
        from sqlalchemy import Engine, event

        def extra(dbapi_connection: Any, _record: Any) -> None:
            if type(dbapi_connection).__module__.startswith("sqlite3"):
                for pragma in args.pragma:
                    dbapi_connection.execute(f"PRAGMA {pragma}")

        event.listen(Engine, "connect", extra)

    from maild.config import load_config
    from maild.ops.daemon import Daemon

    if args.reuse is not None:
        work = args.reuse.resolve()
        state = json.loads((work / STATE).read_text(encoding="utf-8"))
        seed, mails = next_backlog_seed(work, state, args.backlog), state["mails"]
    else:
        work = Path(tempfile.mkdtemp(prefix="ingest-at-", dir=BENCH_ROOT if BENCH_ROOT.exists() else None))
        write_config(work)
        seed, mails = SEED + 1, 0
    config = work / "maild.toml"
    try:
        if args.reuse is not None and not args.keep_hour:
            age_last_hour(config)
        started = datetime.now(timezone.utc)
        deliver(work / "Maildir", corpus(args.backlog, seed), started)
        if not args.cold_page_cache:
            read_into_page_cache(work / "var" / "maild.db")
        settings = reading_alone(load_config(config))
        if args.parse_timeout:
            settings = dataclasses.replace(settings, parse_timeout_seconds=args.parse_timeout)
        daemon = Daemon(settings)
        if args.keep_wal is not None:
            daemon.checkpoints = None
        if not args.cold:
            warm(daemon)
        os.getpgrp()  # valgrind --tool=callgrind --zero-before=os_getpgrp --dump-before=os_getloadavg: the ingest alone
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        m0 = resource.getrusage(resource.RUSAGE_THREAD)
        t0 = time.perf_counter()
        if args.profile is not None:
            import cProfile

            with cProfile.Profile() as profiler:
                count = sum(daemon.ingest_all().values())
            profiler.dump_stats(str(args.profile))
        else:
            count = sum(daemon.ingest_all().values())
        seconds = time.perf_counter() - t0
        m1 = resource.getrusage(resource.RUSAGE_THREAD)
        if args.keep_wal is not None:
            shutil.copyfile(work / "var" / "maild.db-wal", args.keep_wal)
        checkpoints = getattr(daemon, "checkpoints", None)  # (None before the seventh session's thread)
        if checkpoints is not None:
            checkpoints.settle()  # the last batch's pages copied: their CPU counts below
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        load = os.getloadavg()[0]
        daemon.parse_ahead.close()
        if checkpoints is not None:
            checkpoints.close()
        daemon.source.close()
        daemon.sessions.kw["bind"].dispose()
        if args.keep_wal is not None and args.reuse is None:
            shutil.copyfile(work / "var" / "maild.db", args.keep_wal.with_name(args.keep_wal.name + ".db"))
        mark_sent(config)
        if args.reuse is not None:
            close_backlog(config, started)
            age_backlog(config, "created_at >= :since", {"since": started.strftime("%Y-%m-%d %H:%M:%S")})
            state["mails"] += args.backlog
            (work / STATE).write_text(json.dumps(state), encoding="utf-8")
    finally:
        if args.reuse is None:
            shutil.rmtree(work, ignore_errors=True)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    main_user, main_sys = m1.ru_utime - m0.ru_utime, m1.ru_stime - m0.ru_stime
    print(f"{mails:,} mails before | seed {seed} | {count} stored | {count / seconds:.0f} msg/s, {seconds:.2f} s wall"
          f" | CPU {user + system:.2f} s = {user:.2f} user + {system:.2f} sys"
          f" (ingest's thread {main_user + main_sys:.2f} = {main_user:.2f} + {main_sys:.2f}) | blocks in {r1.ru_inblock - r0.ru_inblock}"
          f" out {r1.ru_oublock - r0.ru_oublock} | majflt {r1.ru_majflt - r0.ru_majflt}"
          f" | pragmas {args.pragma or '-'} | load {load:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
