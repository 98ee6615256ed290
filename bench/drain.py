#!/usr/bin/env python3
"""The outbox drain alone: N generated mails ingested once, then their queued mail sent again and again.

    .venv/bin/python bench/drain.py [--n 2000] [--runs 3] [--db sqlite|postgres] [--every-day] [--profile] [--turns]

The backlog's own corpus (``gen-mail.py``, same seed) is read once from a
Maildir by ``Daemon.ingest_all()`` in this process, which queues an
acknowledgement per new ticket and, with ``--every-day`` or on a working day, a
notification per new ticket and follow-up (those carry the customer's
attachments). Then, per run, every outbox row is set back to pending and a child
process (``python bench/drain.py --child CONFIG``) builds the daemon and times
``Daemon.drain()`` to the counting sink (aiosmtpd in this process's thread, as in
``backlog.py``). Each run prints the drain's wall time, mails per second and the
child's CPU seconds (user+sys), so ideas for the send path can be compared
without a 10,000-mail ingest each time. PostgreSQL: the private cluster with
fsync and synchronous_commit on, as ``backlog.py --db postgres``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_ROOT, PY, SEED, CountingSink, PrivatePostgres, banner, corpus, med, nproc, spread, write_config)


def child(config: str, profile: str | None) -> int:
    """One drain in a fresh process, as the daemon's cycle runs it (start-up not timed)."""
    from maild.config import load_config
    from maild.ops.daemon import Daemon

    cfg = load_config(config)
    if os.environ.get("DRAIN_ONE_PROCESS"):  # --one-process: the daemon sends it all itself, as before couriers
        cfg = replace(cfg, daemon=replace(cfg.daemon, send_while_reading=False))
    daemon = Daemon(cfg)
    if os.environ.get("DRAIN_TURN_LOG"):
        _log_turns(os.environ["DRAIN_TURN_LOG"])
    before = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    profiler = None
    if profile:
        import cProfile

        # CPU time: waiting on the sink is not maild's cost; wall time (--profile-wall) shows the waits
        profiler = cProfile.Profile(time.perf_counter if os.environ.get("DRAIN_PROFILE_WALL") else time.process_time)
        profiler.enable()
    os.getpgrp()  # valgrind --tool=callgrind --zero-before=os_getpgrp --dump-before=os_getloadavg: the drain alone
    t0 = time.perf_counter()
    result = daemon.drain()  # two couriers send a backlog (SQLite: from outbox's SQLITE_COURIERS_FROM due mails)
    result.sent += getattr(daemon, "sent_after_reading", 0)
    wall = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    os.getloadavg()
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the couriers, reaped by the drain
    daemon.source.close()
    daemon.parse_ahead.close()
    print(json.dumps({"drain_s": wall, "sent": result.sent, "retry": result.retry, "failed": result.failed,
                      "cpu_user_s": after.ru_utime - before.ru_utime + children.ru_utime - before_children.ru_utime,
                      "cpu_sys_s": after.ru_stime - before.ru_stime + children.ru_stime - before_children.ru_stime,
                      "couriers_cpu_s": children.ru_utime + children.ru_stime - before_children.ru_utime
                      - before_children.ru_stime, "by_couriers": getattr(daemon, "sent_after_reading", 0)}))
    return 0


def _log_turns(path: str) -> None:
    """--turns: each process (the couriers are forks) appends "<pid> <taken> <given up>" per
    mail (CLOCK_MONOTONIC, one clock for all processes) when it gives the one-mail turn up."""
    from maild.outbound import outbox

    real_take, real_release = outbox._Turn.take, outbox._Turn.release
    taken: dict[int, float] = {}

    async def take(turn: Any) -> None:
        held = turn.held
        await real_take(turn)
        if not held:
            taken[id(turn)] = time.monotonic()

    def release(turn: Any) -> None:
        if turn.held:
            given = time.monotonic()
            with open(path, "a") as out:
                out.write(f"{os.getpid()} {taken.pop(id(turn))} {given}\n")
        real_release(turn)

    outbox._Turn.take = take  # type: ignore[method-assign,assignment]
    outbox._Turn.release = release  # type: ignore[method-assign,assignment]


def turns_held(path: Path, wall: float) -> str:
    """What the turns' log says: a hold's median and 90th percentile, and the share of the
    drain's wall time some mail held the turn (the part no two connections or couriers overlap)."""
    holds = sorted(float(given) - float(taken) for _, taken, given in
                   (line.split() for line in path.read_text().splitlines()))
    if not holds:
        return "no turn taken"
    return (f"turn held {1000 * holds[len(holds) // 2]:.2f} ms median, {1000 * holds[len(holds) * 9 // 10]:.2f} ms "
            f"p90 ({len(holds)} turns, {sum(holds):.2f} s = {100 * sum(holds) / wall:.0f} % of the drain)")


def maildir_config(work: Path, smtp_port: int, database_url: str, every_day: bool) -> Path:
    extra = ('[calendar]\nworking_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
             'holidays_country = ""\n') if every_day else ""
    path = write_config(work, imap_port=1, user="-", password="-", smtp_port=smtp_port, database_url=database_url,
                        extra=extra)
    text = re.sub(r"\[imap\]\n(?:[^\[\n][^\n]*\n)*", f'[maildir]\npath = "{work / "Maildir"}"\n\n',
                  path.read_text(encoding="utf-8"), count=1)
    path.write_text(text, encoding="utf-8")
    return path


def reset_outbox(url: str) -> int:
    """Every outbox row pending and due again, as the ingest left it; returns how many."""
    from sqlalchemy import text

    from maild.storage.db import open_database

    sessions = open_database(url)
    with sessions() as session, session.begin():
        count = session.execute(text(
            "UPDATE outbox SET status = 'pending', attempts = 0, sent_at = NULL, last_error = '', "
            "next_attempt_at = created_at")).rowcount
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE outbox")
    engine.dispose()
    return int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--every-day", action="store_true", help="every day a working day: notifications too")
    parser.add_argument("--profile", action="store_true", help="cProfile the first run's drain, print its top")
    parser.add_argument("--profile-wall", action="store_true",
                        help="with --profile: the profile in wall time (where the drain waits), not CPU time")
    parser.add_argument("--callgrind", metavar="OUT",
                        help="run the first drain under callgrind: OUT.<pid> per process, the drain's instructions "
                             "in the daemon's part 1 file (Ir; `callgrind_annotate`), each courier's in its own")
    parser.add_argument("--one-process", action="store_true",
                        help="send_while_reading = false: no couriers, the daemon's process sends every mail "
                             "(on SQLite two couriers send a backlog of 200 or more otherwise)")
    parser.add_argument("--processes", type=int, default=1,
                        help="drains at once, each in a process of its own (PostgreSQL: rows split as between daemons)")
    parser.add_argument("--turns", action="store_true",
                        help="log each mail's hold of the one-mail turn (slows the drain a little): median, p90, "
                             "and the share of the drain some mail held it")
    parser.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.child_profile)
    if args.one_process:
        os.environ["DRAIN_ONE_PROCESS"] = "1"  # read by the child
    if args.profile_wall:
        os.environ["DRAIN_PROFILE_WALL"] = "1"  # read by the child

    banner("maild outbox drain benchmark")
    mail_dir = corpus(args.n, args.seed)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="drain-", dir=BENCH_ROOT))
    base.chmod(0o755)  # the private PostgreSQL runs as its own user below it
    sink = CountingSink().start()
    pg = None
    try:
        url = ""
        if args.db == "postgres":
            pg = PrivatePostgres(base / "postgres")
            url = pg.fresh_database()
            print(f"private {pg.version()} on 127.0.0.1:{pg.server.port} (fsync on, synchronous_commit on)")
        work = base / "work"
        config = maildir_config(work, sink.port, url, args.every_day)
        new = work / "Maildir" / "new"
        new.mkdir(parents=True)
        for name in ("cur", "tmp"):
            (work / "Maildir" / name).mkdir()
        for eml in sorted(mail_dir.glob("*.eml")):
            shutil.copyfile(eml, new / eml.name)  # arrival = now: every new ticket is acknowledged
        db_url = url or f"sqlite:///{work / 'var' / 'maild.db'}"
        from maild.config import load_config
        from maild.ops.daemon import Daemon

        t0 = time.perf_counter()
        cfg = load_config(config)
        # every row stays queued for the timed drains: no courier sending while this ingest reads
        daemon = Daemon(replace(cfg, daemon=replace(cfg.daemon, send_while_reading=False)))
        daemon.ingest_all()
        daemon.source.close()
        daemon.parse_ahead.close()
        daemon.blobs.close()
        daemon.release_run_lock()
        daemon.sessions.kw["bind"].dispose()
        print(f"ingested {args.n} mails in {time.perf_counter() - t0:.1f} s (not timed below)", flush=True)
        rows: list[dict[str, Any]] = []
        for i in range(args.runs):
            queued = reset_outbox(db_url)
            sink.clear()
            sink_cpu0 = sink.cpu_seconds()
            cmd = [PY, str(Path(__file__).resolve()), "--child", str(config)]
            profile = BENCH_ROOT / f"drain-{args.db}.prof"  # kept: python -m pstats
            if args.profile and i == 0:
                cmd += ["--child-profile", str(profile)]
            if args.callgrind and i == 0:  # instructions of the drain alone (its couriers' in files of their own)
                cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={args.callgrind}.%p",
                       "--zero-before=os_getpgrp", "--dump-before=os_getloadavg", *cmd]
            turn_log = base / f"turns-{i}.log"
            if args.turns:
                os.environ["DRAIN_TURN_LOG"] = str(turn_log)  # read by the child
            t0 = time.perf_counter()
            procs = [subprocess.Popen(cmd if k == 0 else cmd[:4], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=work) for k in range(args.processes)]
            outs = []
            for proc in procs:
                stdout, stderr = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"drain failed (exit {proc.returncode}):\n{stderr[-3000:]}")
                outs.append(json.loads(stdout.strip().splitlines()[-1]))
            out = outs[0]
            if len(outs) > 1:  # from the first start to the last end; the processes' CPU summed
                out = {"drain_s": time.perf_counter() - t0, **{k: sum(o[k] for o in outs) for k in (
                    "sent", "retry", "failed", "cpu_user_s", "cpu_sys_s")}}
            time.sleep(0.2)
            out["sink"] = sink.count
            out["sink_cpu_s"] = sink.cpu_seconds() - sink_cpu0
            out["rate"] = out["sent"] / out["drain_s"]
            rows.append(out)
            print(f"run {i + 1}: {queued} queued, sent {out['sent']} (sink got {out['sink']}, retry {out['retry']}, "
                  f"failed {out['failed']}) in {out['drain_s']:.2f} s = {out['rate']:.0f} mails/s; drain CPU "
                  f"{out['cpu_user_s']:.2f}+{out['cpu_sys_s']:.2f} s (couriers {out.get('couriers_cpu_s', 0):.2f} s, "
                  f"{out.get('by_couriers', 0)} mails; {1000 * (out['cpu_user_s'] + out['cpu_sys_s']) / max(out['sent'], 1):.3f} ms a mail); "
                  f"sink CPU {out['sink_cpu_s']:.2f} s; load {os.getloadavg()[0]:.1f}", flush=True)
            if args.turns:
                print(f"  {turns_held(turn_log, out['drain_s'])}", flush=True)
            if args.profile and i == 0:
                import pstats

                pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)
                print(f"profile kept: {profile}")
        print(f"\ndrain ({args.db}), N={args.n}, {len(rows)} runs, nproc {nproc()}: "
              f"{spread([r['rate'] for r in rows], '{:.0f}')} mails/s, "
              f"{spread([r['drain_s'] for r in rows])} s, CPU user+sys "
              f"{med([r['cpu_user_s'] + r['cpu_sys_s'] for r in rows]):.2f} s, sink CPU "
              f"{med([r['sink_cpu_s'] for r in rows]):.2f} s (medians)")
    finally:
        sink.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
