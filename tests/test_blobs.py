"""The blob store on a real filesystem: names, durability flush, and its errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from maild.blobs import BlobStore, StorageError, sync_filesystem


def test_put_names_blobs_by_content_and_flush_syncs_their_filesystem(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"raw mail")
    assert digest == hashlib.sha256(b"raw mail").hexdigest()
    assert blobs.path_for(digest) == tmp_path / "blobs" / digest[:2] / digest
    assert blobs.put(b"raw mail") == digest and blobs.get(digest) == b"raw mail"
    blobs.flush()  # syncfs on the storage filesystem; a failure would raise
    assert not list((tmp_path / "blobs" / digest[:2]).glob(".*.tmp")), "no temporary file left behind"


def test_flushing_a_filesystem_that_is_not_there_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot flush to disk"):
        sync_filesystem(tmp_path / "gone")
