#!/usr/bin/env python3
"""APPEND every .eml file of DIR into an IMAP folder, in file-name order.

Copied from the shared benchmark harness (../shared/bench/load-mailbox.py) so
that bench/ works on a fresh clone. One addition: --internaldate now lets the
server stamp the arrival time (a backlog that piled up just now), instead of
taking it from each Date: header (the default, as in the original).

    load-mailbox.py --host 127.0.0.1 --port 10143 --user support \\
                    --password support [--folder INBOX] [--replace] DIR

* Order is preserved (sorted file names -> ascending UIDs), so a reply is
  always stored after the message it answers.
* INTERNALDATE is taken from each message's Date: header.
* Messages are stored without flags (i.e. unseen, "new mail").
* Fast path: when the server advertises MULTIAPPEND and LITERAL+ (Dovecot
  does), messages are sent in batches as one MULTIAPPEND command each with
  non-synchronising literals -- one round trip per batch.  Otherwise, or
  with --mode append, plain imaplib APPEND is used, one per message.
* --clear-only just empties the folder (DIR may be omitted).
* --replace first flags everything in the folder \\Deleted and EXPUNGEs it,
  so the folder ends up holding exactly the files of DIR.

Prints the number of messages appended and the folder's message count.
Standard library only (imaplib).
"""
from __future__ import annotations

import argparse
import email.utils
import glob
import imaplib
import os
import re
import sys
import time
from email.parser import BytesHeaderParser

CRLF_RE = re.compile(rb"\r?\n")


def internaldate(raw: bytes) -> str | None:
    hdrs = BytesHeaderParser().parsebytes(raw.split(b"\n\n", 1)[0] + b"\n\n")
    d = hdrs.get("Date")
    if not d:
        return None
    try:
        when = email.utils.parsedate_to_datetime(str(d))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return imaplib.Time2Internaldate(when)


def quote_mailbox(name: str) -> bytes:
    return b'"' + name.replace("\\", "\\\\").replace('"', '\\"').encode("utf-7") + b'"'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=10143)
    ap.add_argument("--user", default="support")
    ap.add_argument("--password", default="support")
    ap.add_argument("--folder", default="INBOX")
    ap.add_argument("--replace", action="store_true", help="expunge the folder's current content first")
    ap.add_argument("--mode", choices=["auto", "multiappend", "append"], default="auto")
    ap.add_argument("--batch", type=int, default=250, help="max messages per MULTIAPPEND")
    ap.add_argument("--batch-bytes", type=int, default=16 << 20, help="max bytes per MULTIAPPEND")
    ap.add_argument("--limit", type=int, default=0, help="append only the first LIMIT files")
    ap.add_argument("--clear-only", action="store_true", help="only empty the folder (implies --replace)")
    ap.add_argument("--internaldate", choices=["header", "now"], default="header",
                    help="INTERNALDATE from the Date: header (default) or the server's clock")
    ap.add_argument("dir", nargs="?")
    a = ap.parse_args()

    files = sorted(glob.glob(os.path.join(a.dir, "*.eml"))) if a.dir else []
    if a.limit:
        files = files[: a.limit]
    if a.clear_only:
        a.replace = True
        files = []
    elif not files:
        print(f"load-mailbox: no .eml files in {a.dir}", file=sys.stderr)
        return 1

    t0 = time.perf_counter()
    m = imaplib.IMAP4(a.host, a.port)
    m.login(a.user, a.password)
    caps = m.capability()[1][0].decode().upper().split()
    if a.replace:
        typ, dat = m.select(a.folder)
        if typ != "OK":
            raise SystemExit(f"SELECT {a.folder} failed: {dat}")
        if typ == "OK" and int(dat[0]) > 0:
            m.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            m.expunge()
        m.close()

    mode = a.mode
    if mode == "auto":
        mode = "multiappend" if ("MULTIAPPEND" in caps and "LITERAL+" in caps) else "append"

    total_bytes = 0
    appended = 0
    mbox = quote_mailbox(a.folder)
    if mode == "append":
        for f in files:
            with open(f, "rb") as fh:
                raw = fh.read()
            typ, dat = m.append(a.folder, None, (internaldate(raw) if a.internaldate == "header" else None), raw)
            if typ != "OK":
                raise SystemExit(f"APPEND {f} failed: {typ} {dat}")
            appended += 1
            total_bytes += len(raw)
    else:
        i = 0
        while i < len(files):
            chunks = []
            size = 0
            n = 0
            while i < len(files) and n < a.batch and (n == 0 or size < a.batch_bytes):
                with open(files[i], "rb") as fh:
                    raw = fh.read()
                date = (internaldate(raw) if a.internaldate == "header" else None)
                data = CRLF_RE.sub(b"\r\n", raw)
                if not data.endswith(b"\r\n"):
                    data += b"\r\n"
                chunks.append((b" " + date.encode() if date else b"") + b" {%d+}\r\n" % len(data))
                chunks.append(data)
                size += len(data)
                n += 1
                i += 1
            tag = m._new_tag()  # imaplib has no MULTIAPPEND API; drive its protocol layer directly
            m.send(tag + b" APPEND " + mbox + b"".join(chunks) + b"\r\n")
            typ, dat = m._command_complete("APPEND", tag)
            if typ != "OK":
                raise SystemExit(f"MULTIAPPEND batch ending at {files[i - 1]} failed: {typ} {dat}")
            appended += n
            total_bytes += size

    typ, dat = m.select(a.folder, readonly=True)
    in_folder = int(dat[0])
    m.logout()
    dt = time.perf_counter() - t0
    print(f"appended {appended} messages ({total_bytes / 1e6:.1f} MB) to {a.folder} in {dt:.2f}s "
          f"({appended / dt:.0f} msg/s, mode={mode}); folder now holds {in_folder} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
