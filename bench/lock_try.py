#!/usr/bin/env python3
"""What one try of the mailbox lock costs a standby while it sends (``MailboxLock.taken_while_sending``).

    .venv/bin/python bench/lock_try.py [--tries 5000] [--wait 10] [--runs 3]
    .venv/bin/python bench/lock_try.py --idle-daemons 60 [--code DIR[,DIR...]] [--runs 2]

A private PostgreSQL (bench/common.py), one session holding the mailbox lock
(the reader), and a standby's ``MailboxLock`` on the same key trying it
``--tries`` times in a row through ``acquire()``: the round trips a try makes
(``SELECT pg_try_advisory_lock`` and its COMMIT). Printed per try: wall time,
the standby process's CPU (user+sys, ``time.process_time``), and the CPU of its
server backend (``/proc/<backend pid>/stat``, utime+stime, in clock ticks over
all tries). A standby tries at most every ``TRY_WHILE_SENDING_SECONDS`` while it
sends, so its cost per second of sending is the per-try figures times 1 / that.

Then an idle standby's wait (``MailboxLock.wait_for`` in steps of
``WAIT_STEP_SECONDS``, as ``Daemon._wait_for_lock`` waits between cycles) for
``--wait`` seconds while the reader holds the lock: the CPU it and its backend
spend per second of waiting.

``--idle-daemons S``: three ``maild run`` processes on one PostgreSQL and one
empty IMAP mailbox (a private Dovecot) for S seconds, then SIGTERM: the CPU
(user+sys, wait4) of the reader and of each standby, per checkout of ``--code``
(alternating, ``--runs`` times): what an idle standby costs with each version.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_ROOT, PrivatePostgres, banner, med, spread  # noqa: E402

from sqlalchemy import create_engine, text  # noqa: E402

from maild.ops.leader import TRY_WHILE_SENDING_SECONDS, WAIT_STEP_SECONDS, MailboxLock  # noqa: E402


def backend_cpu(pid: int) -> float:
    """User+sys CPU seconds of a server backend so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(url: str, tries: int, wait: float) -> tuple[float, float, float, float, float]:
    engine = create_engine(url)
    identity = "imap://bench@127.0.0.1:143/INBOX"
    reader, standby = MailboxLock(engine, identity), MailboxLock(engine, identity)
    try:
        assert reader.acquire(), "the reader takes the free lock"
        assert not standby.acquire(), "the standby finds it held"
        assert standby._conn is not None
        pid = int(standby._conn.execute(text("SELECT pg_backend_pid()")).scalar() or 0)
        standby._conn.commit()
        server0, cpu0, wall0 = backend_cpu(pid), time.process_time(), time.perf_counter()
        for _ in range(tries):
            if standby.acquire():
                raise SystemExit("the standby took a held lock")
        wall, cpu, server = time.perf_counter() - wall0, time.process_time() - cpu0, backend_cpu(pid) - server0
        server0, cpu0, wall0 = backend_cpu(pid), time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < wait:
            if standby.wait_for(WAIT_STEP_SECONDS):
                raise SystemExit("the standby took a held lock")
        waited = time.perf_counter() - wall0
        wait_cpu, wait_server = (time.process_time() - cpu0) / waited, (backend_cpu(pid) - server0) / waited
    finally:
        standby.release()
        reader.release()
        engine.dispose()
    return wall / tries, cpu / tries, server / tries, wait_cpu, wait_server


def idle_daemons(seconds: float, codes: list[Path], runs: int, base: Path, pg: PrivatePostgres) -> None:
    import subprocess

    from common import PY, start_dovecot, write_config
    from tests.servers.common import free_port

    dovecot = start_dovecot(base / "dovecot")
    try:
        for run in range(runs):
            for code in codes:
                user, password = dovecot.add_user()
                work = base / f"idle-{run}-{codes.index(code)}"
                config = write_config(work, imap_port=dovecot.port, user=user, password=password,
                                      smtp_port=free_port(), database_url=pg.fresh_database(),
                                      extra="\n[daemon]\ntakeover_seconds = 10\n")
                env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
                env["PYTHONPATH"] = str(code)
                procs = []
                for k in range(3):
                    with (work / f"daemon{k}.log").open("wb") as err:
                        procs.append(subprocess.Popen([PY, "-m", "maild.cli", "--config", str(config), "run"],
                                                      env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=err))
                    time.sleep(2.0 if k == 0 else 0.0)  # the first migrates the database and takes the lock
                time.sleep(seconds)
                cpu = []
                for proc in procs:
                    proc.send_signal(15)
                    _, _status, usage = os.wait4(proc.pid, 0)
                    cpu.append(usage.ru_utime + usage.ru_stime)
                logs = [(work / f"daemon{k}.log").read_text(errors="replace") for k in range(3)]
                reader = next((k for k in range(3) if "this daemon reads the mailbox" in logs[k]), -1)
                standbys = [f"{cpu[k]:.2f}" for k in range(3) if k != reader]
                print(f"run {run + 1}, {code}: {seconds:.0f} s idle; CPU of the reader (daemon {reader}) "
                      f"{cpu[reader]:.2f} s, of the standbys {', '.join(standbys)} s; load average "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
    finally:
        dovecot.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=5000)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds of an idle standby's wait")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-daemons", type=float, default=0.0,
                        help="instead: three idle `maild run` for this many seconds, their CPU")
    parser.add_argument("--code", default=str(Path(__file__).resolve().parent.parent),
                        help="with --idle-daemons: checkouts whose maild runs, comma-separated")
    args = parser.parse_args()
    banner("maild: the cost of one mailbox-lock try (a standby, while it sends)")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="lock-try-", dir=BENCH_ROOT))
    base.chmod(0o755)  # the server may run as another user (tests/servers/postgres.py)
    pg = PrivatePostgres(base / "postgres")
    rows = []
    if args.idle_daemons:
        base.chmod(0o755)
        try:
            idle_daemons(args.idle_daemons, [Path(c) for c in args.code.split(",")], args.runs, base, pg)
        finally:
            pg.stop()
            shutil.rmtree(base, ignore_errors=True)
        return 0
    try:
        for i in range(args.runs):
            wall, cpu, server, wait_cpu, wait_server = one_run(pg.fresh_database(), args.tries, args.wait)
            rows.append((wall, cpu, server, wait_cpu, wait_server))
            print(f"run {i + 1}: {args.tries} tries, per try: wall {wall * 1e6:.0f} µs, standby CPU "
                  f"{cpu * 1e6:.0f} µs, server backend CPU {server * 1e6:.0f} µs; waiting {args.wait:.0f} s: "
                  f"standby CPU {wait_cpu * 1e3:.2f} ms/s, backend {wait_server * 1e3:.2f} ms/s", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    per_second = 1 / TRY_WHILE_SENDING_SECONDS
    cpu = med([r[1] for r in rows])
    server = med([r[2] for r in rows])
    print(f"\nmedian per try: wall {spread([r[0] * 1e6 for r in rows], '{:.0f}')} µs, standby CPU "
          f"{spread([r[1] * 1e6 for r in rows], '{:.0f}')} µs, server CPU {spread([r[2] * 1e6 for r in rows], '{:.0f}')} µs;"
          f" at one try every {TRY_WHILE_SENDING_SECONDS} s while sending: {(cpu + server) * per_second * 1e3:.2f} ms "
          f"of CPU per second of sending; an idle standby's wait, per second: standby "
          f"{spread([r[3] * 1e3 for r in rows])} ms, backend {spread([r[4] * 1e3 for r in rows])} ms of CPU; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
