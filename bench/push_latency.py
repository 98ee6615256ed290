#!/usr/bin/env python3
"""Push latency: from APPEND of a customer's mail to its acknowledgement accepted by the SMTP sink.

    .venv/bin/python bench/push_latency.py [--n 200] [--gap-min 0.2] [--gap-max 1.0] [--db sqlite|postgres]

The real daemon (`python -m maild.cli run`, IDLE on, as a child process) runs
against a private Dovecot and delivers to a counting aiosmtpd sink on loopback.
The benchmark APPENDs N new-ticket mails from the generated corpus one at a time
over its own IMAP connection, with a random gap between them, and matches each
acknowledgement to its mail by In-Reply-To. Printed: p50, p95 and max latency
(target: p95 < 2 s), plus the mails that got no acknowledgement within the
timeout. A warm-up mail, whose acknowledgement is awaited first, keeps start-up
out of the figures.
"""
from __future__ import annotations

import argparse
import imaplib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_ROOT,
    PY,
    ROOT,
    SEED,
    CountingSink,
    PrivatePostgres,
    banner,
    corpus,
    nproc,
    start_dovecot,
    write_config,
)

TARGET_P95 = 2.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_for_ack(sink: CountingSink, msgid: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sink.deliveries:
            if d.in_reply_to == msgid:
                return d.at
        time.sleep(0.01)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--gap-min", type=float, default=0.2)
    parser.add_argument("--gap-max", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--timeout", type=float, default=90.0, help="wait this long for the last acknowledgements")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    banner("maild push latency (IDLE)")
    manifest_dir = corpus(max(2000, args.n * 3), args.seed)
    entries = [json.loads(line) for line in (manifest_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    # new tickets from people: these and only these get an acknowledgement
    chosen = [e for e in entries if e["kind"] == "new"][: args.n + 1]
    if len(chosen) < args.n + 1:
        raise SystemExit("corpus too small")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="push-", dir=BENCH_ROOT))
    base.chmod(0o755)  # Dovecot's unprivileged auth process reads the passwd-file below it
    dovecot = start_dovecot(base / "dovecot")
    sink = CountingSink().start()
    pg = PrivatePostgres(base / "postgres") if args.db == "postgres" else None
    daemon: subprocess.Popen[bytes] | None = None
    rng = random.Random(args.seed)
    try:
        user, password = dovecot.add_user()
        config = write_config(base / "work", imap_port=dovecot.port, user=user, password=password,
                              smtp_port=sink.port, database_url=pg.fresh_database() if pg else "", idle=True)
        log = (base / "work" / "maild.log").open("w")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        daemon = subprocess.Popen([PY, "-m", "maild.cli", "--config", str(config), "run"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log, cwd=base / "work")
        imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
        imap.login(user, password)

        def append(entry: dict[str, object]) -> float:
            raw = (manifest_dir / str(entry["file"])).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            t0 = time.monotonic()
            typ, data = imap.append("INBOX", None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND failed: {data!r}")
            return t0

        warm = chosen[0]
        append(warm)
        if wait_for_ack(sink, str(warm["message_id"]), 60) is None:
            raise SystemExit(f"no acknowledgement for the warm-up mail in 60 s; see {base / 'work' / 'maild.log'}")
        print(f"daemon up; warm-up acknowledged. Appending {args.n} mails one at a time, "
              f"gap {args.gap_min}-{args.gap_max} s ...", flush=True)
        sent: list[tuple[str, float]] = []
        for entry in chosen[1:]:
            sent.append((str(entry["message_id"]), append(entry)))
            time.sleep(rng.uniform(args.gap_min, args.gap_max))
        deadline = time.monotonic() + args.timeout
        wanted = {mid for mid, _ in sent}
        while time.monotonic() < deadline:
            got = {d.in_reply_to for d in sink.deliveries}
            if wanted <= got:
                break
            time.sleep(0.1)
        acked = {d.in_reply_to: d.at for d in sink.deliveries}
        latencies = [acked[mid] - t0 for mid, t0 in sent if mid in acked]
        missing = [mid for mid, _ in sent if mid not in acked]
        imap.logout()
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        print(f"\npush latency, APPEND -> acknowledgement accepted by the sink: N={args.n}, nproc {nproc()}, "
              f"database {args.db}")
        print(f"  p50 {p50:.3f} s, p95 {p95:.3f} s (target < {TARGET_P95:.0f} s), max {max(latencies):.3f} s, "
              f"min {min(latencies):.3f} s; acknowledged {len(latencies)}/{args.n}, missing {len(missing)}")
        if missing:
            print(f"  e.g. missing: {missing[:3]}")
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        sink.stop()
        dovecot.stop()
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
