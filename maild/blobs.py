"""Content-addressed storage for raw mail and attachments under the storage path.

A blob's name is its sha256, so writing the same bytes twice is harmless and a
crash between writing a blob and committing its row leaves only an orphan file,
never a row pointing at nothing. Names never come from the mail.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from pathlib import Path

from .errors import MaildError


class StorageError(MaildError):
    """The storage path cannot take the blob (disk full, permissions): not the mail's fault."""


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


class BlobStore:
    def __init__(self, root: Path, durable: bool = True) -> None:
        self.root = root / "blobs"
        self.durable = durable
        self._unsynced = 0
        self._dirs: set[Path] = set()

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
                target.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(target.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
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

    def flush(self) -> None:
        """Make the blobs written since the last flush durable, before their rows commit.

        One sync per batch instead of one fsync per blob: a backlog of thousands
        of messages must not cost thousands of disk flushes.
        """
        if self.durable and self._unsynced:
            sync_filesystem(self.root)
        self._unsynced = 0

    def get(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def check_writable(self) -> None:
        """Raise StorageError unless a file can be created under the storage path."""
        self.put(b"maild storage probe\n")
