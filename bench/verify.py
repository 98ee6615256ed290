"""What maild stored, checked against the generated corpus and Python's own decoding.

The reference is the standard library: ``email.message_from_bytes(raw,
policy=policy.default)``, ``get_body(preferencelist=("plain", "html"))``,
``get_content()``. maild stores a mail's text in two parts, what the person
just wrote (``text_new``) and the quoted history (``text_quoted``), cut out
wherever it sits, so the comparison is on lines: a body counts as differing
when the multiset of its non-blank lines (trailing whitespace and CR dropped)
differs from that of ``text_new`` + ``text_quoted``. Any changed, lost or added
character shows up; the reordering the split causes and blank lines at the
edges of the two parts do not.

An attachment counts as missing when no attachment row of its message carries
the sha256 of the part's decoded bytes, or the blob under the storage path does
not hash to it.
"""
from __future__ import annotations

import email
import hashlib
import json
import re
from collections import Counter
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, text


def _lines(body: str) -> Counter[str]:
    return Counter(line.rstrip() for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                   if line.strip())


def _reference(raw: bytes) -> tuple[str | None, list[tuple[str, str]]]:
    msg = cast(EmailMessage, email.message_from_bytes(raw, policy=policy.default))
    body = msg.get_body(preferencelist=("plain", "html"))
    ref = None
    if body is not None and body.get_content_type() == "text/plain":
        ref = str(body.get_content())
    atts = []
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            atts.append((hashlib.sha256(data).hexdigest(), part.get_filename() or ""))
    return ref, atts


def _as_appended(raw: bytes) -> bytes:
    """The file as load-mailbox.py APPENDs it: CRLF line ends, ending in CRLF."""
    data = re.sub(rb"\r?\n", b"\r\n", raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def verify(config: Path, mail_dir: Path) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from maild.storage.blobs import BlobMissing, BlobStore
    from maild.config import load_config
    from maild.storage.store import raw_mail, read_blob

    cfg = load_config(config)
    engine = create_engine(cfg.database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, ticket_id, message_id, text_new, text_quoted, raw_sha256 FROM messages "
            "WHERE direction = 'in'"
        )).all()
        by_mid = {r.message_id: r for r in rows}
        atts: dict[int, list[tuple[str, str]]] = {}
        for a in conn.execute(text("SELECT message_row_id, sha256, filename FROM attachments")):
            atts.setdefault(a.message_row_id, []).append((a.sha256, a.filename))
        tickets = conn.execute(text("SELECT count(*) FROM tickets")).scalar_one()
        outbox = dict(conn.execute(text("SELECT kind || '/' || status, count(*) FROM outbox GROUP BY 1")).all())
        intake = dict(conn.execute(text("SELECT disposition, count(*) FROM intake GROUP BY disposition")).all())
    blobs = BlobStore(cfg.storage_path)
    session = Session(engine)

    result: dict[str, Any] = {
        "raw_differ": 0, "bodies_checked": 0, "bodies_differ": 0, "replacement_chars": 0, "not_stored": 0,
        "attachments_expected": 0, "attachments_missing": 0, "attachment_names_differ": 0,
        "replies": 0, "replies_on_parent": 0, "tickets": tickets, "outbox": outbox, "intake": intake,
        "examples": [],
    }
    manifest = [json.loads(line) for line in (mail_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    ticket_of: dict[str, int | None] = {}
    for entry in manifest:
        mid = entry["message_id"].strip("<>")
        row = by_mid.get(mid)
        if row is None:
            result["not_stored"] += 1
            if len(result["examples"]) < 10:
                result["examples"].append(f"{entry['file']} {mid}: not stored (intake {intake})")
            continue
        ticket_of[mid] = row.ticket_id
        raw = (mail_dir / entry["file"]).read_bytes()
        try:
            problem = "" if raw_mail(session, blobs, row.id) == _as_appended(raw) else "other bytes"
        except BlobMissing as exc:
            problem = str(exc)
        if problem:
            result["raw_differ"] += 1
            if len(result["examples"]) < 10:
                result["examples"].append(f"{entry['file']} {mid}: raw mail not kept: {problem}")
        ref, expected = _reference(raw)
        stored = f"{row.text_new}\n{row.text_quoted}"
        result["replacement_chars"] += stored.count("\ufffd")
        if ref is not None:
            result["bodies_checked"] += 1
            if _lines(ref) != _lines(stored):
                result["bodies_differ"] += 1
                if len(result["examples"]) < 10:
                    missing = list((_lines(ref) - _lines(stored)).elements())[:2]
                    extra = list((_lines(stored) - _lines(ref)).elements())[:2]
                    result["examples"].append(f"{entry['file']} ({entry.get('charset')}/{entry.get('cte')}): "
                                              f"missing {missing!r}, extra {extra!r}")
        stored_atts = atts.get(row.id, [])
        for sha, name in expected:
            result["attachments_expected"] += 1
            names = [n for s, n in stored_atts if s == sha]
            try:  # read_blob checks the bytes against their sha256
                ok_blob = hashlib.sha256(read_blob(session, blobs, sha)).hexdigest() == sha
            except BlobMissing:
                ok_blob = False
            if not names or not ok_blob:
                result["attachments_missing"] += 1
                if len(result["examples"]) < 10:
                    result["examples"].append(f"{entry['file']}: attachment {name!r} missing "
                                              f"(row {bool(names)}, blob {ok_blob})")
            elif name not in names:
                result["attachment_names_differ"] += 1
                if len(result["examples"]) < 10:
                    result["examples"].append(f"{entry['file']}: attachment name {names[0]!r}, expected {name!r}")
        if entry.get("kind") == "reply" and entry.get("parent"):
            result["replies"] += 1
            parent = entry["parent"].strip("<>")
            if parent in ticket_of and ticket_of[parent] is not None and ticket_of[parent] == row.ticket_id:
                result["replies_on_parent"] += 1
    session.close()
    engine.dispose()
    return result
