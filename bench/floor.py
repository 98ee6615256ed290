#!/usr/bin/env python3
"""What the user's stack costs alone for a backlog: the floor under any whole cycle.

    .venv/bin/python bench/floor.py [--n 2000] [--runs 3] [--sent 3076]

A whole ``maild run --once`` on a backlog of N mails cannot cost less CPU than the
parts it is built from doing only their own part, with nothing of maild between:

* start-up: a new interpreter importing the stack (sqlalchemy with its sqlite
  dialect, imapclient, mailparser, jinja2, aiosmtplib);
* imapclient fetching the N mails (``BODY.PEEK[]``, 200 a command, as maild's
  mailbox does) from a private Dovecot, and Dovecot's own CPU for it;
* mail-parser parsing each of them (``parse_from_bytes``);
* aiosmtplib sending ``--sent`` small mails (an acknowledgement's size) over one
  connection to Postfix's ``smtp-sink``, and the sink's CPU;
* SQLite storing N rows of ~1 KB in batches of 200 (WAL, synchronous NORMAL).

Each part runs on its own and is measured in CPU seconds (this process's
``time.process_time``, ``/proc`` for Dovecot and the sink). Their sum over two
cores is the shortest whole cycle those parts allow with no wait at all; the
ratio printed is what a peer's rate would need to be beaten by.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PY, PostfixSink, banner, corpus, load_mailbox, med, nproc, spread, start_dovecot, task_cpu_seconds  # noqa: E402

IMPORTS = "import sqlalchemy, sqlalchemy.dialects.sqlite, imapclient, mailparser, jinja2, aiosmtplib"
ACK = (b"From: support@maild.example\r\nTo: customer@example.com\r\nSubject: Re: [#T-000123] question\r\n"
       b"Message-ID: <maild.1@maild.example>\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
       + b"We have your message and will answer within the reaction time of your contract.\r\n" * 12)


def start_up() -> float:
    """CPU of a new interpreter that imports the stack and exits (children's times of ``wait4``)."""
    before = os.times()
    subprocess.run([PY, "-c", IMPORTS], check=True)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def dovecot_cpu(master: int) -> float:
    """Dovecot's master, its living children, and what it reaped of the rest."""
    total = task_cpu_seconds(f"/proc/{master}/stat", children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master:
                total += task_cpu_seconds(str(entry / "stat"), children=True)
    return total


def fetch(server: object, user: str, password: str) -> tuple[float, float, list[bytes]]:
    from imapclient import IMAPClient

    master = server._master_pid()  # type: ignore[attr-defined]
    d0, c0 = dovecot_cpu(master), time.process_time()
    raws: list[bytes] = []
    with IMAPClient("127.0.0.1", port=server.port, ssl=False) as imap:  # type: ignore[attr-defined]
        imap.login(user, password)
        imap.select_folder("INBOX")
        uids = imap.search("ALL")
        for start in range(0, len(uids), 200):
            data = imap.fetch(uids[start:start + 200], ["BODY.PEEK[]", "INTERNALDATE"])
            raws.extend(item[b"BODY[]"] for item in data.values())
    client = time.process_time() - c0
    time.sleep(0.2)  # the imap process ends after the logout and is reaped by the master
    return client, dovecot_cpu(master) - d0, raws


def parse(raws: list[bytes]) -> float:
    import mailparser

    c0 = time.process_time()
    for raw in raws:
        mail = mailparser.parse_from_bytes(raw)
        mail.body, mail.attachments, mail.from_, mail.subject  # noqa: B018: what a parse stage reads
    return time.process_time() - c0


def send(sink: PostfixSink, count: int) -> tuple[float, float]:
    import aiosmtplib

    async def run() -> None:
        smtp = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False)
        await smtp.connect()
        for k in range(count):
            await smtp.sendmail("support@maild.example", [f"customer{k % 225}@example.com"], ACK)
        await smtp.quit()

    s0, c0 = sink.cpu_seconds(), time.process_time()
    asyncio.run(run())
    return time.process_time() - c0, sink.cpu_seconds() - s0


def store(raws: list[bytes]) -> float:
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(Path(d) / "floor.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE message (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, subject TEXT, body TEXT)")
        c0 = time.process_time()
        for start in range(0, len(raws), 200):
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO message (message_id, subject, body) VALUES (?, ?, ?)",
                           ((f"<{start + k}@floor>", "subject", raw[:1024].decode("latin-1"))
                            for k, raw in enumerate(raws[start:start + 200])))
            db.execute("COMMIT")
        spent = time.process_time() - c0
        db.close()
        return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sent", type=int, default=3076,
                    help="mails delivered (a backlog of 2,000 makes 3,076: an acknowledgement and a "
                         "consultants' notification per new ticket)")
    ap.add_argument("--peer-rate", type=float, default=57.6,
                    help="the peer's msg/s in the same conditions (bench/README: 57.6 in the tenth session)")
    args = ap.parse_args()
    banner("stack floor")
    mails = corpus(args.n)
    work = Path(tempfile.mkdtemp(prefix="maild-floor-"))
    server = start_dovecot(work / "dovecot")
    sink = PostfixSink().start()
    rows: dict[str, list[float]] = {}
    try:
        for run in range(args.runs):
            user, password = server.add_user()
            load_mailbox(mails, server.port, user, password)
            parts = {"start-up (imports)": start_up()}
            parts["imapclient fetch"], parts["Dovecot"], raws = fetch(server, user, password)
            parts["mail-parser"] = parse(raws)
            parts["SQLite rows"] = store(raws)
            parts["aiosmtplib send"], parts["smtp-sink"] = send(sink, args.sent)
            for name, value in parts.items():
                rows.setdefault(name, []).append(value)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                  + f"; sum {sum(parts.values()):.2f} s CPU", flush=True)
    finally:
        sink.stop()
        server.stop()
    total = [sum(values) for values in zip(*rows.values())]
    cores = nproc()
    print(f"\nstack floor for {args.n} mails read and {args.sent} sent (CPU s, median of {args.runs}):")
    for name, values in rows.items():
        print(f"  {name:<20} {med(values):6.2f}  ({spread(values)})")
    floor = med(total) / cores
    print(f"  {'sum':<20} {med(total):6.2f}  -> {floor:.2f} s on {cores} cores with no wait: "
          f"{args.n / floor:.0f} msg/s, {args.n / floor / args.peer_rate:.1f}x a peer at {args.peer_rate} msg/s")


if __name__ == "__main__":
    main()
