#!/usr/bin/env python3
"""One `maild run --once` cycle with a timer on each phase; prints one JSON line.

    python bench/cycle.py CONFIG [--profile OUT.prof]

It does what `maild run --once` does (the same Daemon, the same logging set-up
from the config, logs to stderr) and adds timestamps between the phases:
start-up (config, database, customers), ingest (connect, fetch, parse, commit,
move: ``Daemon.ingest_all``), sweep, drain (render and send every queued mail).
The benchmark drivers run it as a child process, so its peak RSS (VmHWM) is
maild's and nothing of the driver's. It ends as the command ends: its objects are
frozen out of the interpreter's last garbage collection (``maild.cli.main``); until
the fifteenth session it was not, and that collection added 0.1-0.15 s to a
2,000-mail cycle's wall that ``maild run --once`` does not spend.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def vm_hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def profile_couriers(path: str) -> None:
    """Each courier (forked, ended by os._exit) profiles itself in CPU time into <path>.courier-<pid>."""
    import cProfile
    import os

    from maild.outbound import courier

    real = courier._courier_main

    def profiled(*args: object, **kwargs: object) -> None:
        sys.setprofile(None)  # the daemon's profiler, copied by the fork, stops here
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        try:
            real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            profiler.disable()
            profiler.dump_stats(f"{path}.courier-{os.getpid()}")

    courier._courier_main = profiled  # type: ignore[assignment]


def time_write_lock_waits(daemon: object) -> dict[str, float]:
    """SQLite: the main process's time in ``BEGIN IMMEDIATE`` (its wait for the write lock, which
    a courier's sent mark may hold while the backlog is read): count, sum and longest."""
    import os

    from sqlalchemy import event

    waits = {"n": 0, "s": 0.0, "max": 0.0}
    engine = daemon.engine  # type: ignore[attr-defined]
    if engine.dialect.name != "sqlite":
        return waits
    main_pid = os.getpid()

    def before(conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("BEGIN IMMEDIATE") and os.getpid() == main_pid:
            conn.info["maild_bench_begin"] = time.perf_counter()  # type: ignore[attr-defined]

    def after(conn: object, _cursor: object, statement: str, *_args: object) -> None:
        started = conn.info.pop("maild_bench_begin", None)  # type: ignore[attr-defined]
        if started is not None:
            took = time.perf_counter() - started
            waits["n"] += 1
            waits["s"] += took
            waits["max"] = max(waits["max"], took)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    return waits


def time_the_reading_couriers_finish(daemon: object) -> dict[str, float]:
    """SQLite: how long the courier that sent while reading takes to send a small rest at the
    reading's end (``Daemon._end_sqlite_courier``), which ``ingest_all`` waits for."""
    took = {"s": 0.0}
    end = getattr(daemon, "_end_sqlite_courier", None)
    if end is None:  # older code
        return took

    def timed(whole: bool) -> None:
        started = time.perf_counter()
        try:
            end(whole)
        finally:
            took["s"] += time.perf_counter() - started

    daemon._end_sqlite_courier = timed  # type: ignore[attr-defined]
    return took


def gate_waits(daemon: object) -> dict[str, float]:
    """SQLite: the main process's waits for the write gate a courier takes around each mark."""
    waits = getattr(daemon, "gate_waits", None)
    if waits is None:
        return {}
    return {"gate_waits": waits.count, "gate_wait_s": waits.seconds, "gate_wait_max_s": waits.longest}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--profile", help="write a cProfile of the whole cycle here")
    args = parser.parse_args()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    from maild.cli.main import _skip_the_collection_at_exit
    from maild.config import load_config
    from maild.ops.daemon import Daemon

    _skip_the_collection_at_exit()  # as ``maild run --once`` ends

    if args.profile:
        profile_couriers(args.profile)
    from maild.ops.logs import setup_logging

    import gc

    collections = {"n": 0, "s": 0.0, "started": 0.0}

    def count_collections(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            collections["started"] = time.perf_counter()
        else:
            collections["n"] += 1
            collections["s"] += time.perf_counter() - collections["started"]

    gc.callbacks.append(count_collections)
    cfg = load_config(args.config)
    setup_logging(cfg.log_level, cfg.log_format)
    daemon = Daemon(cfg)
    lock_waits = time_write_lock_waits(daemon)
    finishing = time_the_reading_couriers_finish(daemon)
    t_init = time.perf_counter()
    cpu_init = time.process_time()
    try:
        ingested = daemon.ingest_all()
        # SQLite: a small rest is sent by the reading's courier before ingest_all returns; it is
        # sending, counted with the drain, not reading
        t_ingest = time.perf_counter()
        cpu_ingest = time.process_time()
        swept = daemon.sweeper.sweep(daemon.clock())
        t_sweep = time.perf_counter()
        drained = daemon.drain()  # the couriers (if any) send the rest and end, then the daemon sends what is left
        t_drain = time.perf_counter()
        sent_while_reading = getattr(daemon, "sent_while_reading", None)
        cpu_drain = time.process_time()
    finally:
        daemon.source.close()
        daemon.parse_ahead.close()  # waited for: its CPU counts in RUSAGE_CHILDREN
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    second = getattr(daemon, "sent_after_reading", 0)  # the second courier's, after the reading
    early = sent_while_reading.sent - second if sent_while_reading is not None else 0
    print(json.dumps({
        "startup_s": t_init - T0, "ingest_s": t_ingest - t_init - finishing["s"], "sweep_s": t_sweep - t_ingest,
        "drain_s": t_drain - t_sweep + finishing["s"], "total_s": t_drain - T0, "ingested": ingested,
        "escalations": swept.escalations, "sent": drained.sent + early + second, "sent_while_reading": early, "sent_by_second_courier": second, "retry": drained.retry, "failed": drained.failed,
        "vm_hwm_kb": vm_hwm_kb(), "gc_collections": collections["n"], "gc_s": collections["s"], "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime,
        "cpu_ingest_s": cpu_ingest - cpu_init, "cpu_drain_s": cpu_drain - cpu_ingest,
        "children_cpu_s": children.ru_utime + children.ru_stime,
        "write_lock_waits": lock_waits["n"], "write_lock_wait_s": lock_waits["s"],
        "write_lock_wait_max_s": lock_waits["max"], **gate_waits(daemon),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
