#!/usr/bin/env python3
"""What one sent mail costs, part by part: SMTP client, sink, sent mark, the DATA preparation.

    .venv/bin/python bench/send_parts.py [--n 3000]

Each part timed on its own, in CPU seconds per mail (``time.process_time`` for
this process, ``/proc/<pid>/stat`` for the others):

* ``SmtpSender.send`` (maild's client, aiosmtplib: MAIL, RCPT, DATA, the data)
  to an aiosmtpd sink (``python -m aiosmtpd -n -c aiosmtpd.handlers.Sink``) in a
  process of its own, so client and sink CPU are apart;
* a bare asyncio-stream client on the same sink, in lockstep and with MAIL,
  RCPT and DATA in one write (RFC 2920 PIPELINING: aiosmtpd does not advertise
  it but reads pipelined commands in turn), to see what pipelining would save;
* the sent mark on a private PostgreSQL (fsync on): the UPDATE through SQLAlchemy
  Core (until the seventh session), on psycopg's cursor prepared (until the tenth),
  ``_DrainLine.mark_sent`` (prepared once, run through psycopg's libpq interface)
  and the raw psycopg cursor, with the server's CPU;
* the DATA preparation (line ends, dot stuffing): aiosmtplib's regexes (what its
  ``data()`` runs), against ``maild.outbound.smtp.wire_data`` (the same bytes; since
  the ninth session SmtpSender sends DATA, the message and its "." apart).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PrivatePostgres, banner, task_cpu_seconds  # noqa: E402

BODY = (b"From: a@b.c\r\nTo: x@y.z\r\nSubject: test\r\nMessage-ID: <1@b.c>\r\n\r\n"
        + b"Hello there, this is a body line of an acknowledgement.\r\n" * 30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_cpu(pid: int) -> float:
    return task_cpu_seconds(f"/proc/{pid}/stat")


async def maild_client(port: int, n: int, sink: int, label: str = "") -> None:
    from maild.config import SmtpSettings
    from maild.outbound.smtp import Envelope, SmtpSender

    sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=port, security="none"))
    await sender.send(Envelope("a@b.c", ("x@y.z",), BODY))
    cpu, wall, s0 = time.process_time(), time.perf_counter(), sink_cpu(sink)
    for _ in range(n):
        await sender.send(Envelope("a@b.c", ("x@y.z",), BODY))
    print(f"  maild SmtpSender{label}: client CPU {(time.process_time() - cpu) / n * 1e6:.0f} us/mail, "
          f"wall {(time.perf_counter() - wall) / n * 1e6:.0f} us, sink CPU {(sink_cpu(sink) - s0) / n * 1e6:.0f} us")
    await sender.close()


async def bare_client(port: int, n: int, sink: int, pipelined: bool) -> None:
    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply()
    writer.write(b"EHLO bench\r\n")
    await reply()
    data = BODY + b".\r\n"
    cpu, wall, s0 = time.process_time(), time.perf_counter(), sink_cpu(sink)
    for _ in range(n):
        if pipelined:
            writer.write(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\nDATA\r\n")
            for _ in range(3):
                await reply()
        else:
            for command in (b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<x@y.z>\r\n", b"DATA\r\n"):
                writer.write(command)
                await reply()
        writer.write(data)
        await reply()
    print(f"  bare asyncio client, {'pipelined' if pipelined else 'lockstep '}: client CPU "
          f"{(time.process_time() - cpu) / n * 1e6:.0f} us/mail, wall {(time.perf_counter() - wall) / n * 1e6:.0f} us, "
          f"sink CPU {(sink_cpu(sink) - s0) / n * 1e6:.0f} us")
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


def marks(n: int) -> None:
    from sqlalchemy import text

    from maild.outbound.outbox import _MARK_SENT, _DrainLine
    from maild.storage.db import open_database

    work = Path(tempfile.mkdtemp(prefix="send-parts-"))
    work.chmod(0o755)
    pg = PrivatePostgres(work / "postgres")
    try:
        sessions = open_database(pg.fresh_database())
        engine = sessions.kw["bind"]
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO outbox (kind, ticket_id, message_id, recipients, automatic, template, language, context,"
                " status, attempts, created_at, next_attempt_at, dedupe_key, last_error) SELECT 'ack', NULL,"
                " 'm' || g || '@x', '[\"a@b.c\"]', true, 'ack', 'pl', '{}', 'pending', 0, now(), now(), 'k' || g, ''"
                " FROM generate_series(1, :n) g"), {"n": 4 * n})
            ids = [row[0] for row in conn.execute(text("SELECT id FROM outbox ORDER BY id"))]
        line = _DrainLine(sessions, 10)
        now = datetime.now(timezone.utc)
        cursor = line.conn.connection.dbapi_connection.cursor()
        raw = ("UPDATE outbox SET status = 'sent', sent_at = %s, attempts = outbox.attempts + 1, last_error = %s"
               " WHERE outbox.id = %s")
        naive = now.replace(tzinfo=None)
        labels = ("SQLAlchemy Core (until the seventh session)", "psycopg cursor, prepare=True (until the tenth session)",
                  "_DrainLine.mark_sent (prepared, psycopg's libpq interface)", "raw psycopg cursor")
        half = n // 2
        for rnd in range(2):  # each way twice, the order reversed the second time (a later mark costs the server more)
            for k, label in (enumerate(labels) if rnd == 0 else reversed(list(enumerate(labels)))):
                part = ids[(2 * k + rnd) * half:(2 * k + rnd + 1) * half]
                cpu, wall, server = time.process_time(), time.perf_counter(), pg.cpu_seconds()
                for row_id in part:
                    if label.startswith("SQL"):
                        line.conn.execute(_MARK_SENT, {"row_id": row_id, "sent_at": now, "refused": ""})
                    elif label.startswith("psycopg"):
                        cursor.execute(raw, (naive, "", row_id), prepare=True)
                    elif label.startswith("_Drain"):
                        line.mark_sent({"row_id": row_id, "sent_at": now, "refused": ""})
                    else:
                        cursor.execute(raw, (now, "", row_id))
                print(f"  sent mark, {label}: client CPU {(time.process_time() - cpu) / half * 1e6:.0f} us, "
                      f"wall {(time.perf_counter() - wall) / half * 1e6:.0f} us, server CPU "
                      f"{(pg.cpu_seconds() - server) / half * 1e6:.0f} us")
        line.close()
        engine.dispose()
    finally:
        pg.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def regexes() -> None:
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    try:
        from maild.outbound.smtp import wire_data
    except ImportError:  # before the ninth session: aiosmtplib's data() prepared every message
        wire_data = None
    line = b"Line of a mail body with some text in it, Zg\xc5\x82oszenie.\r\n"
    for size, kind in ((1500, ""), (3000, ""), (60000, ""), (3000, ", LF line ends and dot lines")):
        message = line * (size // 55)
        if kind:
            message = message.replace(b"\r\n", b"\n").replace(b"\nLine of", b"\n.Line of", 5)
        rounds = 2000
        cpu = time.process_time()
        for _ in range(rounds):
            PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))
        theirs = (time.process_time() - cpu) / rounds * 1e6
        ours = ""
        if wire_data is not None:
            assert wire_data(message) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))
            cpu = time.process_time()
            for _ in range(rounds):
                wire_data(message)
            ours = f", maild's wire_data {(time.process_time() - cpu) / rounds * 1e6:.1f} us"
        print(f"  DATA preparation, {len(message)} bytes{kind}: aiosmtplib's regexes {theirs:.1f} us{ours}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    banner("what one sent mail costs, part by part")
    logging.disable(logging.INFO)  # maild logs a line per mail; the daemon's log handler is not what is measured
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                             "-c", "aiosmtpd.handlers.Sink"])
    try:
        deadline = time.monotonic() + 10
        for p in (port,):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        for _ in range(2):
            asyncio.run(maild_client(port, args.n, sink.pid))
            asyncio.run(bare_client(port, args.n, sink.pid, pipelined=False))
            asyncio.run(bare_client(port, args.n, sink.pid, pipelined=True))
    finally:
        for proc in (sink,):
            proc.terminate()
            proc.wait()
    marks(args.n // 2)
    regexes()
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
