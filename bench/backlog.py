#!/usr/bin/env python3
"""Backlog ingest: N generated mails waiting in a private Dovecot, one `maild run --once`.

    .venv/bin/python bench/backlog.py [--n 10000] [--runs 3] [--db sqlite|postgres] [--big]
                                      [--peer [--peer-n N] [--peer-runs 3]] [--profile]

Per run: a fresh Dovecot user whose INBOX is filled with the corpus (untimed,
MULTIAPPEND, arrival time = now), a fresh database, then bench/cycle.py (the
`maild run --once` cycle with phase timers) as a child process, delivering to a
counting aiosmtpd sink on loopback. Printed, as the median (min-max) of the runs:

* ingest: messages/s from the start of the fetch to the last commit (tickets
  stored, acknowledgements queued in the outbox, mail moved on the server);
* whole cycle: messages/s from process start to exit, including start-up, the
  sweep and delivering every acknowledgement to the sink;
* maild's peak RSS (VmHWM of the child), CPU user+sys.

The first run is also checked against the corpus: stored bodies that differ
from Python's own decoding, attachments missing or altered, replies on their
parent's ticket, U+FFFD in stored text. ``--big`` adds one ~25 MB message.
``--peer`` also runs ../shared/bench/peer-django-helpdesk.sh on the same
generated mail (``--peer-n``, by default the same N; about 4 min per run at
10,000) when that harness exists, and prints both rates and the ratio.
``--db postgres`` uses a private PostgreSQL cluster with default durability.

Acknowledgements: the config raises ``max_auto_replies_per_hour`` so every new
ticket from a human gets one (a backlog from 225 senders would otherwise mostly
hit the per-sender rate limit, which would flatter the figures).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH,
    BENCH_ROOT,
    PY,
    ROOT,
    SEED,
    CountingSink,
    PostfixSink,
    PrivatePostgres,
    banner,
    big_corpus,
    corpus,
    load_mailbox,
    med,
    nproc,
    spread,
    start_dovecot,
    start_sink,
    write_config,
)
from verify import verify  # noqa: E402

# The peer harness (peer-django-helpdesk.sh of the shared bench folder): --peer-harness PATH, else
# $PEER_SCRIPT, else ../shared/bench/ beside the checkout. Asked for and missing is an error, never a skip.
DEFAULT_PEER = ROOT.parent / "shared" / "bench" / "peer-django-helpdesk.sh"

TARGET_INGEST = 1000.0
TARGET_CYCLE = 500.0
TARGET_RSS_MB = 250.0
TARGET_RATIO = 15.0


class MemorySampler(threading.Thread):
    """Every 50 ms, the memory of the cycle process and its children (the forked parse
    worker): the peak of their summed PSS, which counts the pages they share after the
    fork once, and of their summed RSS, which counts them in each."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_pss_kb = 0
        self.peak_rss_kb = 0
        self._done = threading.Event()
        self.start()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def _tree(self) -> list[int]:
        pids = [self.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.pid:
                pids.append(int(stat.parent.name))
        return pids

    @staticmethod
    def _kb(path: str, key: str) -> int:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        tick = 0
        pids = [self.pid]
        while not self._done.wait(0.05):
            if tick % 10 == 0:
                pids = self._tree()  # the worker is forked once, at the first big batch
            tick += 1
            pss = sum(self._kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
            rss = sum(self._kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)


def one_run(i: int, args: argparse.Namespace, base: Path, dovecot: Any, sink: CountingSink | PostfixSink,
            pg: PrivatePostgres | None, mail_dir: Path, n: int, check: bool, turns: bool = False) -> dict[str, Any]:
    user, password = dovecot.add_user()
    work = base / f"n{n}-run{i}{'-turns' if turns else ''}"
    db_url = pg.fresh_database() if pg else ""
    # --every-day: every day a working day, so the consultant is present and each new
    # ticket and follow-up also queues (and the drain sends) a notification, whatever
    # day the benchmark runs on; without it a weekend run notifies nobody
    every_day = ('[calendar]\nworking_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
                 'holidays_country = ""\n') if args.every_day else ""
    config = write_config(work, imap_port=dovecot.port, user=user, password=password, smtp_port=sink.port,
                          database_url=db_url,
                          extra=every_day + ("[daemon]\nsend_while_reading = false\n" if turns else "")
                          + ("[notifications]\nenabled = false\n" if args.acks_only else ""))
    if args.migrated or args.restarted:
        # as the peer's harness copies a database migrated beforehand into each run: not timed;
        # --restarted: the daemon ran before the mail piled up (a cycle on the empty mailbox synced the
        # customers and compiled the templates), as after an outage, not a new installation's first start
        step = ["run", "--once"] if args.restarted else ["db", "upgrade"]
        subprocess.run([PY, "-m", "maild.cli", "--config", str(config), *step], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
                       env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    loaded = load_mailbox(mail_dir, dovecot.port, user, password)
    os.sync()
    sink.clear()
    cmd = [PY, str(BENCH / "cycle.py"), str(config)]
    if args.profile and i == 0:
        cmd += ["--profile", str(work / "cycle.prof")]
    sink_cpu0, pg_cpu0 = sink.cpu_seconds(), (pg.cpu_seconds() if pg else 0.0)
    with (work / "maild.log").open("w") as log:
        t0 = time.monotonic()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=work)
        sampler = MemorySampler(child.pid)
        stdout, _ = child.communicate()
        wall = time.monotonic() - t0
        sampler.stop()
        proc = subprocess.CompletedProcess(cmd, child.returncode, stdout)
    if proc.returncode != 0:
        tail = (work / "maild.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"maild cycle failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    time.sleep(0.2)  # the sink thread may still be recording the last mail
    sink_cpu, pg_cpu = sink.cpu_seconds() - sink_cpu0, (pg.cpu_seconds() - pg_cpu0) if pg else 0.0
    row: dict[str, Any] = {
        "run": i + 1, "n": n, "wall_s": wall, **out, "sink": sink.count,
        "ingest_rate": n / out["ingest_s"], "cycle_rate": n / wall,
        "rss_mb": out["vm_hwm_kb"] / 1024, "loaded": loaded,
        "pss_mb": sampler.peak_pss_kb / 1024, "rss_all_mb": sampler.peak_rss_kb / 1024,
        "sink_cpu_s": sink_cpu, "pg_cpu_s": pg_cpu,
    }
    if check:
        row["verify"] = verify(config, mail_dir)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(out["ingested"].items()))
    print(f"run {i + 1}{' (turns)' if turns else ''}: start-up {out['startup_s']:.2f} s, ingest {out['ingest_s']:.2f} s "
          f"({row['ingest_rate']:.0f} msg/s), sweep {out['sweep_s']:.2f} s, drain {out['drain_s']:.2f} s "
          f"(sent {out['sent']}, sink got {sink.count}); whole cycle {wall:.2f} s ({row['cycle_rate']:.0f} msg/s); "
          f"peak RSS {row['rss_mb']:.0f} MB (PSS with worker {row['pss_mb']:.0f}); CPU {out['cpu_user_s']:.1f}+{out['cpu_sys_s']:.1f} s "
          f"(ingest {out.get('cpu_ingest_s', 0):.1f}, drain {out.get('cpu_drain_s', 0):.1f}; its children {out.get('children_cpu_s', 0):.1f}; "
          f"sink {sink_cpu:.1f}; postgres {pg_cpu:.1f}); sent while reading {out.get('sent_while_reading', 0)}, by a second courier after it {out.get('sent_by_second_courier', 0)}; "
          f"main's BEGIN IMMEDIATE {out.get('write_lock_waits', 0)} x, {out.get('write_lock_wait_s', 0) * 1000:.0f} ms, longest {out.get('write_lock_wait_max_s', 0) * 1000:.1f} ms; "
          f"main's write gate {out.get('gate_waits', 0)} x, {out.get('gate_wait_s', 0) * 1000:.0f} ms, longest {out.get('gate_wait_max_s', 0) * 1000:.1f} ms; GC {out['gc_collections']} runs {out['gc_s']:.2f} s; [{counts}]",
          flush=True)
    if not args.keep:
        for sub in ("var",):
            shutil.rmtree(work / sub, ignore_errors=True)
    return row


def series(args: argparse.Namespace, base: Path, dovecot: Any, sink: CountingSink | PostfixSink, pg: PrivatePostgres | None,
           n: int, runs: int, big: bool) -> list[dict[str, Any]]:
    mail_dir = big_corpus(n, args.seed) if big else corpus(n, args.seed)
    count = len(list(mail_dir.glob("*.eml")))
    print(f"\n-- maild backlog: {count} mails ({mail_dir.name}), {runs} runs, database {args.db}, sink {args.sink} --", flush=True)
    if args.turns:  # each run twice, back to back: reading and sending taking turns, then with the courier
        rows = []
        for i in range(runs):
            rows.append(one_run(i, args, base, dovecot, sink, pg, mail_dir, count, check=False, turns=True))
            rows.append(one_run(i, args, base, dovecot, sink, pg, mail_dir, count,
                                check=(i == 0 and not args.no_verify)))
        return rows
    return [one_run(i, args, base, dovecot, sink, pg, mail_dir, count, check=(i == 0 and not args.no_verify))
            for i in range(runs)]


def summarise(rows: list[dict[str, Any]], label: str) -> dict[str, float]:
    ingest = [r["ingest_rate"] for r in rows]
    cycle = [r["cycle_rate"] for r in rows]
    rss = [r["rss_mb"] for r in rows]
    n = rows[0]["n"]
    print(f"\n{label}: N={n}, {len(rows)} runs, nproc {nproc()}")
    print(f"  ingest to committed tickets + queued acks: {spread(ingest, '{:.0f}')} msg/s  (target >= {TARGET_INGEST:.0f})")
    print(f"  whole cycle incl. start-up and delivery:   {spread(cycle, '{:.0f}')} msg/s  (target >= {TARGET_CYCLE:.0f})")
    print(f"  phases (median s): start-up {med([r['startup_s'] for r in rows]):.2f}, ingest "
          f"{med([r['ingest_s'] for r in rows]):.2f}, sweep {med([r['sweep_s'] for r in rows]):.2f}, "
          f"drain {med([r['drain_s'] for r in rows]):.2f} ({med([r['sent'] / max(r['drain_s'], 1e-9) for r in rows]):.0f} mails/s)")
    print(f"  peak RSS: {spread(rss, '{:.0f}')} MB  (target < {TARGET_RSS_MB:.0f}); main process, VmHWM")
    print(f"  with the parse worker, sampled every 50 ms: peak PSS {spread([r['pss_mb'] for r in rows], '{:.0f}')} MB, "
          f"peak RSS summed {spread([r['rss_all_mb'] for r in rows], '{:.0f}')} MB (shared pages counted twice)")
    print(f"  CPU s (median): maild {med([r['cpu_user_s'] + r['cpu_sys_s'] for r in rows]):.1f} (ingest "
          f"{med([r.get('cpu_ingest_s', 0) for r in rows]):.1f}, drain {med([r.get('cpu_drain_s', 0) for r in rows]):.1f}), "
          f"its children {med([r.get('children_cpu_s', 0) for r in rows]):.1f}, sink {med([r['sink_cpu_s'] for r in rows]):.1f}, "
          f"postgres {med([r['pg_cpu_s'] for r in rows]):.1f}; sent while reading {med([r.get('sent_while_reading', 0) for r in rows]):.0f}")
    if any(r.get("write_lock_waits") for r in rows):
        print(f"  SQLite, the main process's BEGIN IMMEDIATE (median): {med([r['write_lock_waits'] for r in rows]):.0f} x, "
              f"{med([r['write_lock_wait_s'] for r in rows]) * 1000:.0f} ms in all, longest "
              f"{med([r['write_lock_wait_max_s'] for r in rows]) * 1000:.1f} ms; waiting for the write gate "
              f"{med([r.get('gate_waits', 0) for r in rows]):.0f} x, {med([r.get('gate_wait_s', 0) for r in rows]) * 1000:.0f} ms, "
              f"longest {med([r.get('gate_wait_max_s', 0) for r in rows]) * 1000:.1f} ms")
    print(f"  acknowledgements sent {rows[0]['sent']}, sink received {rows[0]['sink']}; outcomes {rows[0]['ingested']}")
    check = rows[0].get("verify")
    if check:
        print(f"  correctness (run 1): raw mail not kept byte for byte {check['raw_differ']}, "
              f"bodies differing from Python's decoding {check['bodies_differ']} "
              f"(of {check['bodies_checked']}), U+FFFD in stored text {check['replacement_chars']}, "
              f"messages not stored {check['not_stored']}, attachments missing or altered "
              f"{check['attachments_missing']} (of {check['attachments_expected']}), file names differing "
              f"{check['attachment_names_differ']}; replies on parent's ticket {check['replies_on_parent']}/"
              f"{check['replies']}; tickets {check['tickets']}, outbox {check['outbox']}")
        for example in check["examples"][:5]:
            print(f"    e.g. {example}")
    return {"ingest": med(ingest), "cycle": med(cycle), "rss": med(rss)}


def peer_script(option: str | None) -> Path:
    """The harness to run, or exit 2 naming where it was looked for (a clone has no ../shared)."""
    path = Path(option or os.environ.get("PEER_SCRIPT") or DEFAULT_PEER)
    if not path.is_file():
        source = "--peer-harness" if option else ("$PEER_SCRIPT" if os.environ.get("PEER_SCRIPT") else "the default")
        raise SystemExit(f"backlog.py --peer: no peer harness at {path} ({source}); pass --peer-harness "
                         "PATH/TO/peer-django-helpdesk.sh or set PEER_SCRIPT (the shared bench folder; "
                         "run scripts/bootstrap.sh --test first)")
    return path


def run_peer(harness: Path, n: int, runs: int, seed: int) -> float | None:
    work = BENCH_ROOT / f"dh-{n}"
    print(f"\n-- peer: django-helpdesk get_email, N={n}, {runs} runs ({harness}; ~25 s per 1,000 mails and run) --",
          flush=True)
    env = {**os.environ, "BENCH_ROOT": str(BENCH_ROOT), "WORK": str(work), "SEED": str(seed)}
    proc = subprocess.run(["bash", str(harness), str(n), str(runs)], env=env, cwd=harness.parent,
                          capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("run ", "median", "text fidelity", "attachments"))]
    for line in lines:
        print(f"  peer {line}")
    if proc.returncode != 0:
        print(f"  peer failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
        return None
    results = json.loads((work / "results.json").read_text())
    return float(results["msgs_per_s_median"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--big", action="store_true", help="also a series with one ~25 MB message in the batch")
    parser.add_argument("--peer", action="store_true", help="side by side with django-helpdesk (shared harness)")
    parser.add_argument("--peer-n", type=int, default=None, help="the peer's N (default: --n)")
    parser.add_argument("--peer-harness", metavar="PATH", help="peer-django-helpdesk.sh (default: $PEER_SCRIPT, "
                                                               "else ../shared/bench/ beside the checkout)")
    parser.add_argument("--peer-runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the first run -> <work>/cycle.prof")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--turns", action="store_true",
                        help="each run also with [daemon] send_while_reading = false, just before it "
                             "(reading and sending taking turns, as before the courier)")
    parser.add_argument("--keep", action="store_true", help="keep the work dirs (databases, blobs, logs)")
    parser.add_argument("--migrated", action="store_true",
                        help="each run's new database migrated before the clock starts, as the peer's harness does "
                             "(without it the timed start-up migrates it: a new installation's first start)")
    parser.add_argument("--restarted", action="store_true",
                        help="the daemon ran before the mail piled up: one untimed `maild run --once` on the empty "
                             "mailbox first (the database migrated, the customers synced, the templates compiled), "
                             "as a restart after an outage finds them")
    parser.add_argument("--every-day", action="store_true",
                        help="every day a working day: the consultant is present, so notifications are measured")
    parser.add_argument("--acks-only", action="store_true",
                        help="no consultant notifications ([notifications] enabled = false): only the "
                             "acknowledgements go out, the peer's workload (it files them and notifies nobody)")
    parser.add_argument("--sink", choices=("aiosmtpd", "postfix"), default="aiosmtpd",
                        help="the relay: aiosmtpd in this process's thread (default), or Postfix's smtp-sink, "
                             "a C test server (apt-get install postfix), whose CPU per mail is a fraction of it")
    args = parser.parse_args()
    peer = peer_script(args.peer_harness) if args.peer else None  # before minutes of work, not after

    banner("maild backlog benchmark")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="backlog-", dir=BENCH_ROOT))
    base.chmod(0o755)  # Dovecot's unprivileged auth process reads the passwd-file below it
    dovecot = start_dovecot(base / "dovecot")
    sink = start_sink(args.sink)
    pg = None
    summary: dict[str, Any] = {}
    try:
        if args.db == "postgres":
            pg = PrivatePostgres(base / "postgres")
            print(f"private {pg.version()} on 127.0.0.1:{pg.server.port} (fsync on, synchronous_commit on)")
        rows = series(args, base, dovecot, sink, pg, args.n, args.runs, big=False)
        if args.turns:
            summarise(rows[0::2], f"maild backlog ({args.db}), send_while_reading = false (turns)")
            rows = rows[1::2]
        summary["main"] = summarise(rows, f"maild backlog ({args.db})")
        if args.big:
            rows_big = series(args, base, dovecot, sink, pg, args.n, args.runs, big=True)
            summary["big"] = summarise(rows_big, f"maild backlog with one 25 MB message ({args.db})")
        if args.peer:
            if args.peer_n is None:
                args.peer_n = args.n
            if args.peer_n == args.n:
                ours = summary["main"]
            else:
                ours = summarise(series(args, base, dovecot, sink, pg, args.peer_n, args.peer_runs, big=False),
                                 f"maild backlog at the peer's N ({args.db})")
            assert peer is not None
            peer_rate = run_peer(peer, args.peer_n, args.peer_runs, args.seed)
            if peer_rate:
                print(f"\nside by side, N={args.peer_n}: maild whole cycle {ours['cycle']:.0f} msg/s, ingest "
                      f"{ours['ingest']:.0f} msg/s; django-helpdesk get_email {peer_rate:.1f} msg/s; ratio "
                      f"{ours['cycle'] / peer_rate:.1f}x (whole cycle) / {ours['ingest'] / peer_rate:.1f}x (ingest)  "
                      f"(target >= {TARGET_RATIO:.0f}x)")
        if args.profile:
            print(f"\nprofile of run 1: {base}/n{args.n}-run0/cycle.prof "
                  f"(python -m pstats, or: python -c \"import pstats; pstats.Stats('...').sort_stats('cumtime').print_stats(40)\")")
    finally:
        sink.stop()
        dovecot.stop()
        if pg is not None:
            pg.stop()
        if not args.keep and not args.profile:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
