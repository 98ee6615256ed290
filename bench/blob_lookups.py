#!/usr/bin/env python3
"""Retention's and compaction's blob lookups on a kept database, timed (read only).

    .venv/bin/python bench/blob_lookups.py --db /work/wt/lead-1m/var/maild.db

``compact.referenced`` (does a row still need this blob's pack_index row?) over a
sample of raw-mail hashes (every 400th message row, up to 5,000) and attachment
hashes (every 30th, up to 1,000), then ``compact._live`` (a pack's blobs) for every
pack pack_index or a message row names. Prints seconds and counts; writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from maild.storage import compact  # noqa: E402
from maild.storage.db import make_engine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a maild SQLite database (read only)")
    args = parser.parse_args()
    if not args.db.is_file():
        parser.error(f"--db: no such file: {args.db}")
    engine = make_engine(f"sqlite:///{args.db}")
    with Session(engine) as session:
        raw = [h for h, in session.execute(text(
            "SELECT raw_sha256 FROM messages WHERE raw_sha256 IS NOT NULL AND id % 400 = 7 LIMIT 5000"))]
        attached = [h for h, in session.execute(text("SELECT sha256 FROM attachments WHERE id % 30 = 1 LIMIT 1000"))]
        hashes = set(raw) | set(attached)
        start = time.perf_counter()
        found = compact.referenced(session, hashes)
        print(f"referenced: {len(hashes)} hashes ({len(set(raw))} raw mail, {len(set(attached))} attachments), "
              f"{len(found)} still needed, {time.perf_counter() - start:.2f} s")
        packs = sorted({p for p, in session.execute(text(
            "SELECT DISTINCT pack FROM pack_index UNION SELECT DISTINCT raw_pack FROM messages "
            "WHERE raw_pack IS NOT NULL"))})
        start = time.perf_counter()
        blobs = sum(len(compact._live(session, name)) for name in packs)
        print(f"a pack's blobs: {len(packs)} packs, {blobs} blobs, {time.perf_counter() - start:.2f} s")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
