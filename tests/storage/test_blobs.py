"""The blob store on a real filesystem: names, durability flush, and its errors."""
from __future__ import annotations

import hashlib
import os
import resource
import signal
from pathlib import Path

import pytest

from maild.storage import blobs as blobs_module
from maild.storage.blobs import BlobMissing, BlobStore, PackedBlob, StorageError, sync_filesystem


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


def test_packed_blobs_are_read_back_by_place_and_checked_against_their_hash(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    mails = [b"From: a@b\r\n\r\nfirst\r\n", b"", "Zażółć\r\n".encode() * 1000]
    places = [blobs.append(m) for m in mails]
    blobs.flush()
    assert len({p.pack for p in places}) == 1, "one process appends to one pack"
    assert [p.offset for p in places] == [0, len(mails[0]), len(mails[0])]
    for mail, place in zip(mails, places):
        assert blobs.read(place, hashlib.sha256(mail).hexdigest()) == mail
    assert [p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == [places[0].pack]
    blobs.close()
    assert BlobStore(tmp_path).read(places[2], hashlib.sha256(mails[2]).hexdigest()) == mails[2]


def test_a_pack_is_written_by_one_process_at_a_time_and_the_next_one_goes_on_with_it(tmp_path: Path) -> None:
    first = BlobStore(tmp_path)
    a = first.append(b"a" * 100)
    other = BlobStore(tmp_path)  # a second writer while the first holds its pack (flock)
    b = other.append(b"b" * 10)
    assert b.pack != a.pack and b.offset == 0
    first.close()
    other.close()
    later = BlobStore(tmp_path)  # the next run: goes on with the newest pack, after its end
    c = later.append(b"c" * 5)
    assert (c.pack, c.offset) == (b.pack, 10)
    assert len(list((tmp_path / "blobs" / "packs").iterdir())) == 2
    for place, data in ((a, b"a" * 100), (b, b"b" * 10), (c, b"c" * 5)):
        assert later.read(place, hashlib.sha256(data).hexdigest()) == data


def test_a_damaged_or_misnamed_pack_is_an_error_not_a_wrong_mail(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    place = blobs.append(b"the customer's words")
    blobs.close()
    digest = hashlib.sha256(b"the customer's words").hexdigest()
    pack = tmp_path / "blobs" / "packs" / place.pack
    pack.write_bytes(b"the customer's wordz")
    with pytest.raises(BlobMissing, match="damaged"):
        blobs.read(place, digest)
    with pytest.raises(BlobMissing, match="not a pack name"):
        blobs.read(PackedBlob("../../etc/passwd", 0, 10), digest)
    pack.unlink()
    with pytest.raises(BlobMissing, match="cannot read blob"):
        blobs.read(place, digest)


def test_a_pack_past_its_size_is_closed_and_a_new_one_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs_module, "PACK_BYTES", 100)
    blobs = BlobStore(tmp_path)
    places = [blobs.append(bytes([i]) * 60) for i in range(4)]
    assert [p.offset for p in places] == [0, 60, 0, 60]
    assert places[0].pack == places[1].pack != places[2].pack == places[3].pack
    assert blobs.read(places[3], hashlib.sha256(bytes([3]) * 60).hexdigest()) == bytes([3]) * 60


def test_a_failed_append_is_a_storage_error_and_cuts_the_pack_back_to_its_last_whole_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    first = blobs.append(b"a" * 1000)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, old_limit[1]))
    try:
        for _attempt in range(3):  # the daemon retrying while the disk stays full
            with pytest.raises(StorageError, match="cannot append to a pack"):
                blobs.append(b"b" * 1000)  # 500 bytes land, then the file is too large
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    after = blobs.append(b"c" * 1000)
    assert (after.pack, after.offset) == (first.pack, 1000), "no torn tail between two blobs, no new pack per retry"
    assert [p.name for p in (tmp_path / "blobs" / "packs").iterdir()] == [first.pack]
    assert (tmp_path / "blobs" / "packs" / first.pack).stat().st_size == 2000
    assert blobs.read(after, hashlib.sha256(b"c" * 1000).hexdigest()) == b"c" * 1000
    assert blobs.read(first, hashlib.sha256(b"a" * 1000).hexdigest()) == b"a" * 1000


def test_a_pack_that_cannot_be_cut_back_is_dropped_and_reopened_at_its_real_end(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    first = blobs.append(b"a" * 1000)
    assert blobs._pack is not None
    os.close(blobs._pack[1])  # the descriptor gone: neither write nor truncate works on it
    with pytest.raises(StorageError, match="cannot append to a pack"):
        blobs.append(b"b" * 1000)
    pack = tmp_path / "blobs" / "packs" / first.pack
    with open(pack, "ab") as torn:  # and say the failed write had left a torn tail
        torn.write(b"b" * 300)
    after = blobs.append(b"c" * 1000)
    assert (after.pack, after.offset) == (first.pack, 1300), "reopened, and written after what is there"
    assert blobs.read(after, hashlib.sha256(b"c" * 1000).hexdigest()) == b"c" * 1000
    assert blobs.read(first, hashlib.sha256(b"a" * 1000).hexdigest()) == b"a" * 1000


def test_the_writability_check_covers_the_packs_folder(tmp_path: Path) -> None:
    BlobStore(tmp_path).check_writable()
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == ["packs"], "no probe blob stays behind"
    assert [p.name for p in (tmp_path / "blobs" / "packs").iterdir()] == [], "the probe is removed"
    (tmp_path / "blobs" / "packs").rmdir()
    (tmp_path / "blobs" / "packs").write_text("a file where the packs folder should be")
    with pytest.raises(StorageError, match="cannot create a pack"):
        BlobStore(tmp_path).check_writable()
    (tmp_path / "blobs" / "packs").unlink()
    (tmp_path / "blobs").rename(tmp_path / "elsewhere")
    (tmp_path / "blobs").write_text("a file where the blobs folder should be")
    with pytest.raises(StorageError, match="cannot write a blob"):
        BlobStore(tmp_path).check_writable()


def test_a_damaged_loose_blob_is_an_error_too(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"quarantined mail")
    blobs.path_for(digest).write_bytes(b"quarantined maiL")
    with pytest.raises(BlobMissing, match="damaged"):
        blobs.get(digest)


def test_root_gives_what_it_creates_to_the_storage_owner(tmp_path: Path) -> None:
    """An admin command as root in the service's storage (DynamicUser=) leaves nothing the service cannot write."""
    if os.geteuid() != 0:
        pytest.skip("creating files for another uid needs root")
    import pwd

    service = pwd.getpwnam("nobody")
    storage = tmp_path / "state"
    storage.mkdir()
    os.chown(storage, service.pw_uid, service.pw_gid)
    store = BlobStore(storage)
    place = store.append(b"raw mail")
    digest = store.put(b"quarantined mail")
    store.close()
    created = [storage / "blobs", storage / "blobs" / "packs", storage / "blobs" / "packs" / place.pack,
               store.path_for(digest), store.path_for(digest).parent]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in created} == {(service.pw_uid, service.pw_gid)}

    mine = tmp_path / "mine"  # a root-owned storage stays root's
    BlobStore(mine).put(b"x")
    assert (mine / "blobs").stat().st_uid == 0
