"""Dropping blobs nobody refers to any more, and giving their space back: pack compaction.

Retention and ``maild forget`` remove rows; the bytes of the mail and
attachments they named stay in append-only packs until this rewrites them.
``drop_unreferenced`` deletes the ``pack_index`` rows (and loose files) of blobs
no message, attachment or quarantine row names; a raw mail its message row
places (``messages.raw_pack``, since 0011) is dead once that row lets go of it.
``compact`` then rewrites each pack with enough dead bytes, online, crash-safe
at every step:

1. the live blobs are copied into a new pack, created under an exclusive lock
   (no writer adopts a locked pack) and synced to disk;
2. one transaction points their ``pack_index`` rows, and the message rows that
   place raw mail there, at the new pack; until it commits every row still
   names the old pack, intact;
3. the old pack, now named by no row, is deleted by a later pass, never by
   the one that emptied it, so a reader that looked a blob up just before the
   commit can still open it.

A crash after 1 leaves a new pack no row names; after 2 an old one: either is
an unreferenced pack, which the next pass deletes. The newest pack is never
touched (it is the one a writer adopts to append to), nor one a writer holds.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from maild.storage.blobs import _PACK_NAME, BlobStore, PackedBlob, sync_filesystem
from maild.storage.models import AttachmentRow, MessageRow, PackIndex, QuarantineRow
from maild.storage.queries import get_state, put_state

log = logging.getLogger("maild.storage")

# A pack is rewritten once this share of its bytes belongs to no blob.
DEAD_SHARE = 0.25


@dataclass
class Compaction:
    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def referenced(session: Session, hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` a row still finds by hash: an attachment, a quarantined mail, or a message row
    that does not place its raw mail (checked 500 at a time).

    A message row that places its raw mail (``raw_pack``, since 0011) reads it there, never through
    pack_index or a loose file, so it keeps neither alive; the rows that do are those in the partial
    index ``ix_messages_raw_by_hash``, which the query's condition lets SQLite and PostgreSQL use
    instead of reading every message ever stored."""
    wanted = sorted(set(hashes))
    found: set[str] = set()
    for i in range(0, len(wanted), 500):
        part = wanted[i:i + 500]
        found.update(session.scalars(select(MessageRow.raw_sha256).where(
            MessageRow.raw_sha256.in_(part), MessageRow.raw_pack.is_(None), MessageRow.raw_sha256.is_not(None))))
        found.update(session.scalars(select(AttachmentRow.sha256).where(AttachmentRow.sha256.in_(part))))
        found.update(session.scalars(select(QuarantineRow.raw_sha256).where(QuarantineRow.raw_sha256.in_(part))))
    return found


def drop_unreferenced(session: Session, blobs: BlobStore, hashes: Iterable[str]) -> int:
    """Forget the blobs among ``hashes`` that no row names: their index rows and loose files.

    Run in the transaction that removed the rows, so a blob another mail
    still carries (the same attachment twice) is kept. The bytes leave the
    packs when ``compact`` rewrites them.
    """
    candidates = set(hashes)
    dead = sorted(candidates - referenced(session, candidates))
    packs: set[str] = set()
    for i in range(0, len(dead), 500):
        packs.update(session.scalars(select(PackIndex.pack).where(PackIndex.sha256.in_(dead[i:i + 500])).distinct()))
        session.execute(delete(PackIndex).where(PackIndex.sha256.in_(dead[i:i + 500])))
    note_dead_bytes(session, packs)
    for sha in dead:
        try:
            blobs.path_for(sha).unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
    return len(dead)


# The packs that have lost blobs since compaction last looked at them (state table, a JSON list):
# a daily pass rewrites what retention or ``forget`` let go of without listing every pack's blobs.
PACKS_TO_COMPACT = "packs_to_compact"


def _noted(session: Session) -> set[str] | None:
    """The packs noted as having lost blobs; None before the first pass since 0013 started the list."""
    kept = get_state(session, PACKS_TO_COMPACT)
    return None if kept is None else set(json.loads(kept))


def note_dead_bytes(session: Session, packs: Iterable[str]) -> None:
    """Remember, in the caller's transaction, that ``packs`` hold bytes no row names any more, so the
    next ``compact`` weighs them even if the process stops before it runs."""
    wanted = {p for p in packs if p}
    if not wanted:
        return
    known = _noted(session) or set()
    if not wanted <= known:
        put_state(session.connection(), PACKS_TO_COMPACT, json.dumps(sorted(known | wanted)), datetime.now(UTC))


def _named(session: Session, name: str) -> bool:
    """Does any row name a blob in pack ``name``? Two index searches (``ix_pack_index_pack``, ``ix_messages_raw_pack``)."""
    return (session.scalar(select(PackIndex.sha256).where(PackIndex.pack == name).limit(1)) is not None
            or session.scalar(select(MessageRow.id).where(MessageRow.raw_pack == name).limit(1)) is not None)


def _try_lock(path: os.PathLike[str] | str) -> int | None:
    """An fd holding the pack's exclusive lock, or None when a writer holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def compact(sessions: sessionmaker[Session], blobs: BlobStore, dead_share: float = DEAD_SHARE,
            everything: bool = False) -> Compaction:
    """Rewrite packs with dead bytes and delete packs no row names (see the module's steps).

    By default only the packs noted as having lost blobs (``note_dead_bytes``) are weighed, blob by
    blob; every other pack is only asked whether a row still names it (two index searches), so the
    daemon's daily pass after retention costs what retention let go of, not every blob ever stored.
    ``everything`` weighs every pack (``maild storage compact``), as does the first pass of a database
    that has no list yet (upgraded to 0013: what retention let go of before was never noted).
    """
    result = Compaction()
    if not blobs.packs.is_dir():
        return result
    with sessions() as session:
        listed = _noted(session)
    # no list yet: the first pass since 0013, and what was let go of before it was never noted
    first = listed is None
    noted = listed or set()
    everything = everything or first
    weighed: set[str] = set()
    names = sorted(e.name for e in os.scandir(blobs.packs) if _PACK_NAME.fullmatch(e.name))
    for name in names[:-1]:  # never the newest: writers adopt it
        path = blobs.packs / name
        fd = _try_lock(path)
        if fd is None:
            continue
        try:
            size = os.fstat(fd).st_size
            with sessions() as session:
                if not (everything or name in noted) and _named(session, name):
                    continue
                live = _live(session, name)
            weighed.add(name)
            live_bytes = sum(length for _, length in {(where.offset, where.length) for _, where, _ in live})
            if not live:
                os.unlink(path)
                result.deleted.append(name)
                result.bytes_freed += size
                log.info("storage: pack %s deleted: no stored mail refers to it (%d bytes)", name, size)
                continue
            if size - live_bytes < dead_share * size:
                continue
            new_name = _rewrite(sessions, blobs, name, live)
            result.rewritten.append(name)
            result.bytes_freed += size - live_bytes
            log.info("storage: pack %s rewritten as %s: %d of %d bytes kept, %d blobs", name, new_name,
                     live_bytes, size, len(live))
        finally:
            os.close(fd)
    _weighed(sessions, weighed | (noted - set(names)), first)  # and the noted packs a pass deleted before
    return result


def _weighed(sessions: sessionmaker[Session], names: set[str], first: bool) -> None:
    """Take the packs this pass weighed off the noted list (another process may have noted more since);
    after the ``first`` pass, start the list."""
    if not names and not first:
        return
    with sessions() as session, session.begin():
        listed = _noted(session)
        if listed is None and not first:
            return
        left = (listed or set()) - names
        put_state(session.connection(), PACKS_TO_COMPACT, json.dumps(sorted(left)), datetime.now(UTC))


# a live blob of a pack: (sha256, where, the message row that places it, or None for its pack_index row)
Live = tuple[str, PackedBlob, int | None]


def _live(session: Session, name: str) -> list[Live]:
    """The blobs of pack ``name`` a row names, in the pack's order: pack_index's (attachments, raw mail
    no message places, rows from before 0011) and the raw mail message rows place (``ix_messages_raw_pack``)."""
    live: list[Live] = [(row.sha256, PackedBlob(row.pack, row.offset, row.length), None) for row in session.scalars(
        select(PackIndex).where(PackIndex.pack == name))]
    live += [(str(sha), PackedBlob(name, offset, length), row_id)
             for row_id, sha, offset, length in session.execute(
                 select(MessageRow.id, MessageRow.raw_sha256, MessageRow.raw_offset, MessageRow.raw_length)
                 .where(MessageRow.raw_pack == name))
             if sha is not None and offset is not None and length is not None]
    live.sort(key=lambda blob: blob[1].offset)
    return live


def _rewrite(sessions: sessionmaker[Session], blobs: BlobStore, old: str, live: list[Live]) -> str:
    name = f"{time.time_ns():019d}-{os.getpid()}.pack"
    fd = os.open(blobs.packs / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # new and unknown to others: never waits; keeps writers off it
        blobs._adopt(fd)
        moved: list[tuple[str, int, int, int | None]] = []
        copied: dict[tuple[int, int], int] = {}  # old (offset, length) -> new offset: bytes two rows name, copied once
        offset = 0
        for sha, where, row_id in live:
            new_offset = copied.get((where.offset, where.length))
            if new_offset is None:
                data = blobs.read(where, sha)  # checked against its sha256 on the way
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                new_offset = copied[(where.offset, where.length)] = offset
                offset += len(data)
            moved.append((sha, new_offset, where.length, row_id))
        os.fsync(fd)
        sync_filesystem(blobs.packs)
        _before_commit()
        with sessions() as session, session.begin():
            for sha, new_offset, length, row_id in moved:
                if row_id is None:
                    session.execute(update(PackIndex).where(PackIndex.sha256 == sha, PackIndex.pack == old)
                                    .values(pack=name, offset=new_offset, length=length))
                else:
                    session.execute(update(MessageRow).where(MessageRow.id == row_id, MessageRow.raw_pack == old)
                                    .values(raw_pack=name, raw_offset=new_offset, raw_length=length))
    finally:
        os.close(fd)
    return name


def _before_commit() -> None:
    """A point where a test stops the rewrite as a crash would: new pack written, index not yet moved."""
