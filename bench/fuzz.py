#!/usr/bin/env python3
"""Long fuzz run: mutated corpus mail through parse, screen, authentication check and thread.

    .venv/bin/python bench/fuzz.py [--seconds 300] [--seed N] [--save DIR]

The same mutations and stages as tests/test_fuzz.py (tests/fuzz/mutate.py), for
minutes instead of seconds, from a plain random generator (reproducible with
--seed). Prints iterations, throughput, the outcome mix, the slowest input and
every failure (exception type, seed file, iteration); with --save the failing
inputs are written as files to replay. Exit 1 if anything failed.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz.mutate import load_seeds, mutate, run_stages  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--save", type=Path, default=None, help="directory for failing inputs")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    seeds = load_seeds()
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[tuple[int, str, str]] = []
    slowest = (0.0, -1)
    started = time.monotonic()
    iterations = 0
    print(f"fuzz: {len(seeds)} seed messages, random seed {seed}, {args.seconds:.0f} s, nproc {os.cpu_count()}")
    while time.monotonic() - started < args.seconds:
        index = rng.randrange(len(seeds))
        raw = mutate(seeds[index], rng)
        t0 = time.monotonic()
        try:
            outcomes[run_stages(raw).split("/")[0]] += 1
        except Exception as exc:  # every escape is a finding, reported below
            kind = f"{type(exc).__name__}: {str(exc)[:200]}"
            failures.append((iterations, kind, traceback.format_exc(limit=-3)))
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"fail-{seed}-{iterations}.eml").write_bytes(raw)
        took = time.monotonic() - t0
        if took > slowest[0]:
            slowest = (took, iterations)
        iterations += 1
        if iterations % 20000 == 0:
            elapsed = time.monotonic() - started
            print(f"  {iterations} iterations, {iterations / elapsed:.0f}/s, {len(failures)} failures", flush=True)
    elapsed = time.monotonic() - started
    print(f"iterations {iterations} in {elapsed:.0f} s ({iterations / elapsed:.0f}/s); "
          f"slowest input {slowest[0] * 1000:.0f} ms (iteration {slowest[1]})")
    print("screening kinds: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print(f"failures: {len(failures)}")
    by_kind = collections.Counter(kind for _, kind, _ in failures)
    for kind, n in by_kind.most_common(20):
        first = next(f for f in failures if f[1] == kind)
        print(f"  {n} x {kind} (first at iteration {first[0]})\n{first[2]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
