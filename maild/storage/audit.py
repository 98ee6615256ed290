"""``maild storage verify``: every blob a row refers to, read back and checked.

On a Connection (``tables``, Core): the command loads neither the ORM nor the
mapped classes, and reads the rows as ``storage.blobs`` stores them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from maild.storage.blobs import BlobMissing, BlobStore, PackedBlob, row_place
from maild.storage.tables import attachments, messages, pack_index, quarantine


@dataclass
class StorageAudit:
    """What ``audit_blobs`` found: how many blobs it read, and each one it could not."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)


def audit_blobs(db: Connection, blobs: BlobStore,
                progress: Callable[[int, int | None], None] | None = None) -> StorageAudit:
    """Read back every blob a row refers to (raw mail, attachments, quarantined mail)
    and check it against its sha256: after a disk incident or a restore, this says
    which mail, if any, is gone, before a customer or a retry finds out."""
    m, a, q = messages.c, attachments.c, quarantine.c
    wanted: dict[str, str] = {}
    placed: dict[tuple[str, PackedBlob], str] = {}  # raw mail its message row places (0011), by (sha256, place)
    for message_id, ticket_id, sha, pack, offset, length in db.execute(
            select(m.message_id, m.ticket_id, m.raw_sha256, m.raw_pack, m.raw_offset, m.raw_length)
            .where(m.raw_sha256.is_not(None)).order_by(m.id)):
        what = f"raw mail <{message_id}>" + (f" (ticket {ticket_id})" if ticket_id else "")
        where = row_place(pack, offset, length)
        if where is None:
            wanted.setdefault(str(sha), what)
        else:
            placed.setdefault((str(sha), where), what)
    for filename, sha, message_id in db.execute(
            select(a.filename, a.sha256, m.message_id)
            .join(messages, a.message_row_id == m.id).order_by(a.id)):
        wanted.setdefault(sha, f"attachment {filename!r} of <{message_id}>")
    for quarantine_id, sha in db.execute(select(q.id, q.raw_sha256)):
        wanted.setdefault(sha, f"quarantined mail {quarantine_id}")
    places = {row.sha256: PackedBlob(row.pack, row.offset, row.length) for row in db.execute(select(pack_index))}
    # (sha256, its place or None for a loose file, what it is), pack by pack, front to back: one pass over each file
    todo = [(sha, places.get(sha), what) for sha, what in wanted.items()]
    todo += [(sha, where, what) for (sha, where), what in placed.items()]
    todo.sort(key=lambda t: (t[1].pack, t[1].offset) if t[1] is not None else ("~", 0))
    audit = StorageAudit()
    for sha, where, what in todo:
        audit.checked += 1
        if progress is not None:
            progress(audit.checked, len(todo))
        try:  # both reads check the bytes against their sha256
            if where is not None:
                blobs.read(where, sha)
            else:
                blobs.get(sha)
        except BlobMissing as exc:
            audit.problems.append(f"{what}: {exc}")
    return audit
