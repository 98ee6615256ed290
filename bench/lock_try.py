#!/usr/bin/env python3
"""What one try of the mailbox lock costs a standby while it sends (``MailboxLock.taken_while_sending``).

    .venv/bin/python bench/lock_try.py [--tries 5000] [--wait 10] [--runs 3]

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=5000)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds of an idle standby's wait")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    banner("maild: the cost of one mailbox-lock try (a standby, while it sends)")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="lock-try-", dir=BENCH_ROOT))
    base.chmod(0o755)  # the server may run as another user (tests/servers/postgres.py)
    pg = PrivatePostgres(base / "postgres")
    rows = []
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
