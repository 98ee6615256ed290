"""Storage for raw mail and attachments under the storage path.

Two forms, both keyed by the bytes' sha256, neither ever named from the mail:

* packs (``blobs/packs/<name>.pack``): the raw mail and attachments of every
  ingested message, appended to the newest pack (by one process at a time,
  which holds a lock on it) until it is ``PACK_BYTES`` long, and found through
  the ``pack_index`` table written in the same transaction as the message's
  rows. Creating one file per blob cost 20 µs to 0.8 ms each on a busy disk, a
  third of a backlog's ingest at worst; appending costs neither a file nor a
  folder. A crash between append and commit leaves unreferenced bytes in a
  pack, never an index row pointing at nothing.
* loose files (``blobs/ab/ab12...``): quarantined mail, and the blobs of
  installations from before packs. Writing the same bytes twice is harmless,
  and a crash between writing a blob and committing its row leaves an orphan
  file, never a row pointing at nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from maild.errors import MaildError


class StorageError(MaildError):
    """The storage path cannot take the blob (disk full, permissions): not the mail's fault."""


class BlobMissing(StorageError):
    """A blob the database refers to is not where it says, or not the bytes it should be."""


# A pack is closed and a new one started past this size: small enough to copy
# or check one at a time, large enough that a year of mail is a few hundred files.
PACK_BYTES = 256 * 1024 * 1024
_PACK_NAME = re.compile(r"[0-9]{19}-[0-9]{1,10}\.pack")


@dataclass(frozen=True)
class PackedBlob:
    """Where one blob's bytes sit: a pack under ``blobs/packs`` and a byte range in it."""

    pack: str
    offset: int
    length: int


def row_place(pack: str | None, offset: int | None, length: int | None) -> PackedBlob | None:
    """The place a message row gives its raw mail (0011's three columns); None when it gives none
    (mail stored before 0011, or mail found by hash through pack_index)."""
    return None if pack is None or offset is None or length is None else PackedBlob(pack, int(offset), int(length))


_libc: ctypes.CDLL | None = None


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding ``path`` (syncfs(2)); os.sync where there is none.

    os.sync flushes every mounted filesystem and waits for other programs'
    writes as well; the blobs only need their own.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    syncfs = getattr(_libc, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StorageError(f"storage {path}: cannot flush to disk: {exc.strerror}") from exc
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise StorageError(f"storage {path}: cannot flush to disk: {os.strerror(err)}")
    finally:
        os.close(fd)


def storage_owner(path: Path) -> tuple[int, int] | None:
    """Whom root should give what it creates under ``path``: the folder's owner when that is not root.

    Under ``DynamicUser=`` the storage folder belongs to the service's uid; an
    admin command run as root (``quarantine retry``, ``time add``) that created a
    root-owned pack or folder there would leave the service unable to write it.
    """
    if os.geteuid() != 0:
        return None
    current = path
    while not current.exists() and current.parent != current:
        current = current.parent
    try:
        st = current.stat()
    except OSError:
        return None
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def make_private_dir(path: Path) -> None:
    """``mkdir -p`` where every folder it creates is 0700 (``Path.mkdir`` gives the
    parents the umask's mode): mail must not be readable by other local users.
    Folders that exist keep their mode (systemd's ``StateDirectory=`` sets its own)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    owner = storage_owner(path) if missing else None
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)
            if owner is not None:
                os.chown(folder, *owner)


class BlobStore:
    def __init__(self, root: Path, durable: bool = True) -> None:
        self.root = root / "blobs"
        self.durable = durable
        self._unsynced = 0
        self._dirs: set[Path] = set()
        self.packs = self.root / "packs"
        self._pack: tuple[str, int] | None = None  # name, fd
        self._pack_end = 0

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        # One level of 256 folders, as git does: enough spread for millions of
        # blobs, and a new blob almost never needs a new folder.
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, sha256: str | None = None) -> str:
        digest = sha256 or hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            return digest
        tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
        try:
            if target.parent not in self._dirs:
                make_private_dir(target.parent)
                self._dirs.add(target.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                self._adopt(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, target)
            self._unsynced += 1
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise StorageError(f"storage {self.root}: cannot write blob {digest[:12]}: {exc.strerror}") from exc
        return digest

    def append(self, data: bytes) -> PackedBlob:
        """Append ``data`` to the pack this store writes (taking one if needed).

        A failed write (the disk full) cuts the pack back to its last whole blob,
        so the daemon retrying through an outage neither leaves a torn tail that
        later offsets would skip nor starts a new file per attempt. Where even
        that fails, the pack is dropped and the next append starts another.
        """
        try:
            if self._pack is None or self._pack_end >= PACK_BYTES:
                self._start_pack()
        except OSError as exc:
            raise StorageError(f"storage {self.root}: cannot start a pack: {exc.strerror}") from exc
        assert self._pack is not None
        name, fd = self._pack
        offset = self._pack_end
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(fd, offset)
            except OSError:
                self._close_pack()
            raise StorageError(f"storage {self.root}: cannot append to a pack: {exc.strerror}") from exc
        self._pack_end = offset + len(data)
        self._unsynced += 1
        return PackedBlob(name, offset, len(data))

    def _start_pack(self) -> None:
        """Go on with the newest pack if it has room and no other process writes it,
        else start one. A writer holds an exclusive lock on its pack, so `run --once`
        from cron, or a restart, adds to the last pack instead of a file per run."""
        self._close_pack()
        if self.packs not in self._dirs:
            make_private_dir(self.packs)
            self._dirs.add(self.packs)
        newest = max((e.name for e in os.scandir(self.packs) if _PACK_NAME.fullmatch(e.name)), default=None)
        if newest is not None:
            fd = os.open(self.packs / newest, os.O_WRONLY | os.O_APPEND)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                end = os.fstat(fd).st_size  # after a crash, past its unreferenced tail
            except OSError:  # locked by another writer
                os.close(fd)
            else:
                if end < PACK_BYTES:
                    self._pack, self._pack_end = (newest, fd), end
                    return
                os.close(fd)
        name = f"{time.time_ns():019d}-{os.getpid()}.pack"
        fd = os.open(self.packs / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)  # new and unknown to others until now: never waits
        self._adopt(fd)
        self._pack, self._pack_end = (name, fd), 0

    def _adopt(self, fd: int) -> None:
        """A file root creates here belongs to the storage folder's owner (see ``storage_owner``)."""
        owner = storage_owner(self.root)
        if owner is not None:
            os.fchown(fd, *owner)

    def _close_pack(self) -> None:
        if self._pack is not None:
            with contextlib.suppress(OSError):  # a pack given up on after a failure may not close cleanly
                os.close(self._pack[1])
        self._pack, self._pack_end = None, 0

    def close(self) -> None:
        self._close_pack()

    def read(self, where: PackedBlob, sha256: str) -> bytes:
        """The bytes at ``where``, checked against their sha256: a damaged pack is an
        error here, not a wrong mail later."""
        if not _PACK_NAME.fullmatch(where.pack):
            raise BlobMissing(f"storage {self.root}: {where.pack!r} is not a pack name (blob {sha256[:12]})")
        try:
            with open(self.packs / where.pack, "rb") as pack:
                data = os.pread(pack.fileno(), where.length, where.offset)
        except OSError as exc:
            raise BlobMissing(f"storage {self.root}: cannot read blob {sha256[:12]} from "
                              f"{where.pack}: {exc.strerror}") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BlobMissing(f"storage {self.root}: blob {sha256[:12]} in {where.pack} at {where.offset} "
                              "is damaged (its bytes do not match its sha256)")
        return data

    def flush(self) -> None:
        """Make the blobs written since the last flush durable, before their rows commit.

        One sync per batch instead of one fsync per blob: a backlog of thousands
        of messages must not cost thousands of disk flushes.
        """
        if self.durable and self._unsynced:
            sync_filesystem(self.root)
        self._unsynced = 0

    def get(self, sha256: str) -> bytes:
        """A loose blob's bytes, checked against their sha256 as a pack read is."""
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BlobMissing(f"storage {self.root}: cannot read blob {sha256[:12]}: {exc.strerror}") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BlobMissing(f"storage {self.root}: the file {path} is damaged "
                              "(its bytes do not match its sha256)")
        return data

    def check_writable(self) -> None:
        """Raise StorageError unless files can be created where loose blobs and packs go. Nothing stays
        behind: a probe stored as a blob was a file no row names, left by every ``maild check``."""
        for folder, what in ((self.root, "cannot write a blob"), (self.packs, "cannot create a pack")):
            probe = folder / f".probe.{os.getpid()}"
            try:
                make_private_dir(folder)
                probe.write_bytes(b"maild storage probe\n")
                probe.unlink()
            except OSError as exc:
                raise StorageError(f"storage {folder}: {what}: {exc.strerror}") from exc
