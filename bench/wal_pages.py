#!/usr/bin/env python3
"""Which B-trees a WAL's frames are pages of: what each index costs a transaction in pages written.

    .venv/bin/python bench/ingest_at.py --reuse /work/wt/growth-1m --keep-wal /tmp/1m.wal
    .venv/bin/python bench/wal_pages.py /tmp/1m.wal /work/wt/growth-1m/var/maild.db
    .venv/bin/python bench/ingest_at.py --empty --keep-wal /tmp/0.wal      # also keeps the database: /tmp/0.wal.db
    .venv/bin/python bench/wal_pages.py /tmp/0.wal /tmp/0.wal.db

Every page a transaction changes is written to the WAL once per transaction (a
frame), and later once more into the database file by a checkpoint: the frames
are the writes an ingest costs. ``ingest_at.py --keep-wal`` runs the ingest with
no checkpoint at all (no WAL thread, ``wal_autocheckpoint=0``) and copies the WAL
after it, so every frame of every batch is there. This reads the frames' page
numbers and names the B-tree each page belongs to in the database after the
ingest (SQLite's ``dbstat``, walked per index and per small table; pages of the
large tables, appended in rowid order, are counted as "tables").
"""
from __future__ import annotations

import argparse
import collections
import sqlite3
import struct
import sys
from pathlib import Path

LARGE_TABLES = ("messages", "tickets", "outbox", "intake", "events", "ledger", "attachments")


def frames(wal: Path) -> list[list[int]]:
    """The page numbers of each committed transaction's frames (the WAL's valid frames only)."""
    data = wal.read_bytes()
    _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", data[:32])
    transactions: list[list[int]] = []
    current: list[int] = []
    offset = 32
    while offset + 24 + page_size <= len(data):
        page, db_size, s1, s2 = struct.unpack(">4I", data[offset:offset + 16])
        if (s1, s2) != (salt1, salt2):
            break
        current.append(page)
        if db_size:  # a commit frame
            transactions.append(current)
            current = []
        offset += 24 + page_size
    return transactions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wal", type=Path)
    parser.add_argument("database", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    transactions = frames(args.wal)
    pages = {p for t in transactions for p in t}
    conn = sqlite3.connect(f"file:{args.database}?mode=ro", uri=True)
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' OR (type = 'table' AND name NOT IN (%s))"
        % ",".join("?" * len(LARGE_TABLES)), LARGE_TABLES)]
    owner: dict[int, str] = {}
    for name in names:
        for (page,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,)):
            if page in pages:
                owner[page] = name
    conn.close()
    written: collections.Counter[str] = collections.Counter()
    distinct: collections.Counter[str] = collections.Counter()
    for t in transactions:
        for page in set(t):
            written[owner.get(page, "tables")] += 1
    for page in pages:
        distinct[owner.get(page, "tables")] += 1
    total = sum(len(t) for t in transactions)
    print(f"{args.wal}: {total} frames in {len(transactions)} transactions, {len(pages)} distinct pages")
    print(f"{'B-tree':40s} {'frames':>7s} {'pages':>7s}")
    for name, count in written.most_common(args.top):
        print(f"{name:40s} {count:7d} {distinct[name]:7d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
