"""Mail sources against a real private Dovecot and a real Maildir on disk."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import imapclient
import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.intake.mailbox import (
    FetchedMail,
    ImapSettings,
    ImapSource,
    MaildirSettings,
    MaildirSource,
    MailboxAuthError,
    MailboxError,
    MailboxSecurityError,
    MailboxUnavailable,
    maildir_arrival,
    open_source,
    plan_batches,
)
from tests.servers.dovecot import ImapAccount


def mail(n: int, body: bytes = b"hello\r\n", date: str = "Mon, 01 Jan 2024 10:00:00 +0000") -> bytes:
    return (
        f"From: customer{n}@example.com\r\nTo: support@example.com\r\n"
        f"Subject: case {n}\r\nMessage-ID: <m{n}@example.com>\r\nDate: {date}\r\n\r\n"
    ).encode() + body


def settings(account: ImapAccount, **overrides: Any) -> ImapSettings:
    base: dict[str, Any] = dict(
        host=account.host, port=account.port, security="none",
        username=account.username, password=account.password, timeout_seconds=5,
    )
    base.update(overrides)
    return ImapSettings(**base)


@pytest.fixture
def source_for(imap_account: ImapAccount) -> Iterator[Callable[..., ImapSource]]:
    opened: list[ImapSource] = []

    def make(**overrides: Any) -> ImapSource:
        use_move = overrides.pop("use_move", True)
        src = ImapSource(settings(imap_account, **overrides), use_move=use_move)
        opened.append(src)
        return src

    yield make
    for src in opened:
        src.close()


def all_mail(src: ImapSource | MaildirSource, **limits: int) -> list[list[FetchedMail]]:
    return list(src.batches(**limits))


@pytest.fixture
def count_fetches(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"fetch": 0, "move": 0}
    real_fetch, real_move = imapclient.IMAPClient.fetch, imapclient.IMAPClient.move

    def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["fetch"] += 1
        return real_fetch(self, *args, **kwargs)

    def move(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["move"] += 1
        return real_move(self, *args, **kwargs)

    monkeypatch.setattr(imapclient.IMAPClient, "fetch", fetch)
    monkeypatch.setattr(imapclient.IMAPClient, "move", move)
    return calls


# ---------------------------------------------------------------- fetching


def test_fetches_mail_another_client_already_read_and_leaves_seen_alone(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    imap_account.append(mail(1), flags=[b"\\Seen"])
    imap_account.append(mail(2))
    src = source_for()
    src.connect()
    got = [m for batch in all_mail(src) for m in batch]
    assert [m.raw for m in got] == imap_account.messages()
    flags = imap_account.flags()
    assert b"\\Seen" in flags[1]
    assert b"\\Seen" not in flags[2], "fetching must not mark mail read for the humans"


def test_backlog_costs_one_fetch_per_batch_and_one_move_per_batch(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource], count_fetches: dict[str, int]) -> None:
    imap_account.append_many([mail(n) for n in range(120)])
    src = source_for()
    src.connect()
    sizes = []
    for batch in src.batches(max_count=50):
        sizes.append(len(batch))
        src.mark_done(batch)
    assert sizes == [50, 50, 20]
    # one FETCH of sizes, then one per batch; the final look for late arrivals is a SEARCH
    assert count_fetches["fetch"] == 1 + 3
    assert count_fetches["move"] == 3
    assert imap_account.uids("INBOX") == []
    assert len(imap_account.uids("Processed")) == 120


def test_batches_are_bounded_by_bytes_and_an_oversized_mail_travels_alone(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    pad = b"x" * 10_000 + b"\r\n"
    imap_account.append_many([mail(1, pad), mail(2, pad), mail(3, pad), mail(4, b"y" * 60_000 + b"\r\n"), mail(5, pad)])
    src = source_for()
    batches = all_mail(src, max_bytes=25_000)
    assert [[m.uid for m in b] for b in batches] == [[1, 2], [3], [4], [5]]
    assert all(sum(m.size for m in b) <= 25_000 for b in batches if len(b) > 1)
    assert [m.size for m in batches[2]] == [len(imap_account.messages()[3])]


def test_arrival_time_is_internaldate_not_the_date_header(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    received = datetime(2024, 3, 31, 0, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    imap_account.append(mail(1, date="Fri, 01 Dec 2023 08:00:00 +0000"), internaldate=received)
    (fetched,), = all_mail(source_for())
    assert fetched.arrived_at == datetime(2024, 3, 30, 22, 30, 15, tzinfo=timezone.utc)
    assert fetched.arrived_at.utcoffset() == timedelta(0)
    assert fetched.source_key == f"imap:{imap_account.uidvalidity()}:{fetched.uid}"
    assert fetched.uidvalidity == imap_account.uidvalidity()


# ---------------------------------------------------------------- moving


def test_mark_done_creates_the_folder_and_empties_the_inbox(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    bodies = [mail(n) for n in range(5)]
    imap_account.append_many(bodies)
    assert not imap_account.folder_exists("Processed")
    src = source_for()
    for batch in src.batches(max_count=2):
        src.mark_done(batch)
    assert imap_account.uids("INBOX") == []
    assert imap_account.messages("Processed") == bodies
    assert imap_account.folder_exists("Quarantine")


def test_quarantine_moves_poison_and_mail_left_behind_is_not_yielded_twice(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    imap_account.append_many([mail(1), mail(2), mail(3)])
    src = source_for()
    seen: list[int] = []
    for batch in src.batches(max_count=1):
        (m,) = batch
        assert m.uid is not None
        seen.append(m.uid)
        if m.uid == 1:
            src.quarantine(batch)
        elif m.uid == 3:
            src.mark_done(batch)
        # uid 2: the pipeline wants a retry; it stays in INBOX
    assert seen == [1, 2, 3]
    assert imap_account.messages("Quarantine") == [mail(1)]
    assert imap_account.messages("Processed") == [mail(3)]
    assert imap_account.messages("INBOX") == [mail(2)]


def test_copy_expunge_path_when_move_is_not_used(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_move(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("MOVE used although disabled")

    monkeypatch.setattr(imapclient.IMAPClient, "move", no_move)
    imap_account.append_many([mail(1), mail(2), mail(3)])
    imap_account.append(mail(9), flags=[b"\\Deleted"])  # another client's business, must survive
    src = source_for(use_move=False)
    assert src.capabilities() == {"idle": True, "move": True, "uidplus": True}
    for batch in src.batches():
        src.mark_done([m for m in batch if m.uid != 4])
    assert imap_account.messages("Processed") == [mail(1), mail(2), mail(3)]
    assert imap_account.messages("INBOX") == [mail(9)]


def test_uidvalidity_change_gives_new_keys_and_loses_nothing(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    imap_account.append_many([mail(1), mail(2)])
    src = source_for()
    before = [m for b in all_mail(src) for m in b]
    imap_account.reset_uidvalidity()
    src.close()
    after = [m for b in all_mail(src) for m in b]
    assert {m.raw for m in after} == {m.raw for m in before}
    assert not {m.source_key for m in after} & {m.source_key for m in before}
    src.mark_done(before)  # stale UIDs must not move anything
    assert len(imap_account.uids("INBOX")) == 2
    src.mark_done(after)
    assert imap_account.uids("INBOX") == []
    assert sorted(imap_account.messages("Processed")) == sorted([mail(1), mail(2)])


# ---------------------------------------------------------------- security and failures


def test_implicit_tls_with_the_test_ca(imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    if imap_account.tls_port is None:
        pytest.skip("no openssl to make a test certificate")
    imap_account.append(mail(1))
    src = source_for(port=imap_account.tls_port, security="tls", cafile=imap_account.cafile)
    assert [m.raw for b in all_mail(src) for m in b] == [mail(1)]


def test_starttls_with_the_test_ca(imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    if imap_account.cafile is None:
        pytest.skip("no openssl to make a test certificate")
    imap_account.append(mail(1))
    src = source_for(security="starttls", cafile=imap_account.cafile)
    assert [m.raw for b in all_mail(src) for m in b] == [mail(1)]


def test_untrusted_certificate_is_a_config_error(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    if imap_account.tls_port is None:
        pytest.skip("no openssl to make a test certificate")
    src = source_for(port=imap_account.tls_port, security="tls")
    with pytest.raises(MailboxSecurityError, match="certificate"):
        src.connect()


def test_bad_password_is_an_auth_error_that_never_shows_the_password(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    src = source_for(password="wrong-secret-Zq9")
    with pytest.raises(MailboxAuthError) as err:
        src.connect()
    assert imap_account.username in str(err.value)
    assert f"{imap_account.host}:{imap_account.port}" in str(err.value)
    assert "wrong-secret-Zq9" not in str(err.value)
    assert "wrong-secret-Zq9" not in caplog.text
    assert "wrong-secret-Zq9" not in repr(src.settings)


def test_stopped_server_is_unavailable_and_connect_works_after_restart(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    imap_account.append(mail(1))
    src = source_for()
    src.connect()
    server = imap_account.server
    server.stop()
    try:
        with pytest.raises(MailboxUnavailable):
            all_mail(src)
        with pytest.raises(MailboxUnavailable, match="connect"):
            src.connect()
    finally:
        server.start()
    src.connect()
    assert [m.raw for b in all_mail(src) for m in b] == [mail(1)]


def test_starttls_required_but_not_offered() -> None:
    """A server that never offers STARTTLS: security = starttls must refuse, never fall back to plain."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    heard: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] no TLS here\r\n")
            for line in lines:
                heard.append(line)
                tag, _, command = line.decode().strip().partition(" ")
                if command.upper() == "CAPABILITY":
                    conn.sendall(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
                else:
                    conn.sendall(f"* BYE\r\n{tag} OK bye\r\n".encode())
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    src = ImapSource(ImapSettings("127.0.0.1", port, "starttls", "u", "secret-pw", timeout_seconds=5))
    with pytest.raises(MailboxSecurityError, match="STARTTLS"):
        src.connect()
    thread.join(5)
    listener.close()
    assert not any(b"secret-pw" in line or b"LOGIN" in line.upper() for line in heard)


# ---------------------------------------------------------------- waiting


def test_idle_wakes_up_soon_after_another_client_appends(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    src = source_for()
    src.connect()
    appended_at: list[float] = []

    def deliver() -> None:
        time.sleep(0.5)
        imap_account.append(mail(1))
        appended_at.append(time.monotonic())

    thread = threading.Thread(target=deliver)
    thread.start()
    woke = src.wait_for_mail(20)
    woke_at = time.monotonic()
    thread.join()
    assert woke is True
    assert woke_at - appended_at[0] < 1.5
    assert [m.raw for b in all_mail(src) for m in b] == [mail(1)]  # connection usable after IDLE


def test_idle_reports_mail_that_arrived_before_waiting(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    src = source_for()
    src.connect()
    imap_account.append(mail(1))
    started = time.monotonic()
    assert src.wait_for_mail(10) is True
    assert time.monotonic() - started < 1


def test_idle_returns_false_on_timeout_and_renews(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource], monkeypatch: pytest.MonkeyPatch) -> None:
    idles = 0
    real_idle = imapclient.IMAPClient.idle

    def counting_idle(self: Any) -> Any:
        nonlocal idles
        idles += 1
        return real_idle(self)

    monkeypatch.setattr(imapclient.IMAPClient, "idle", counting_idle)
    src = source_for(idle_renew_seconds=0.3)
    started = time.monotonic()
    assert src.wait_for_mail(1.0) is False
    assert 0.9 < time.monotonic() - started < 3
    assert idles >= 3, "IDLE must be re-issued every idle_renew_seconds"
    imap_account.append(mail(1))
    assert len(all_mail(src)[0]) == 1  # the connection left IDLE cleanly


def test_interrupted_idle_leaves_a_usable_source(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource], monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's signal handler raises out of wait_for_mail; the next cycle must still work."""
    class Interrupt(Exception):
        pass

    def interrupted(self: Any, timeout: float | None = None) -> Any:
        raise Interrupt()

    src = source_for()
    src.connect()
    with monkeypatch.context() as patch:
        patch.setattr(imapclient.IMAPClient, "idle_check", interrupted)
        with pytest.raises(Interrupt):
            src.wait_for_mail(10)
    imap_account.append(mail(1))
    assert [m.raw for b in all_mail(src) for m in b] == [mail(1)]


def test_idle_notices_the_server_going_away(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    src = source_for()
    src.connect()
    server = imap_account.server
    stopper = threading.Timer(0.5, server.stop)
    stopper.start()
    started = time.monotonic()
    try:
        with pytest.raises(MailboxUnavailable):
            src.wait_for_mail(30)
        assert time.monotonic() - started < 8
    finally:
        stopper.join()
        server.start()


def test_polling_when_idle_is_off(imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    src = source_for(idle=False, poll_seconds=1)
    started = time.monotonic()
    assert src.wait_for_mail(0.2) is True
    assert time.monotonic() - started < 1


def test_open_source_picks_the_right_kind(imap_account: ImapAccount, tmp_path: Path) -> None:
    assert isinstance(open_source(settings(imap_account)), ImapSource)
    assert isinstance(open_source(MaildirSettings(str(tmp_path / "md"))), MaildirSource)


# ---------------------------------------------------------------- Maildir


def deliver(root: Path, part: str, name: str, raw: bytes) -> Path:
    path = root / part / name
    path.write_bytes(raw)
    return path


def test_maildir_reads_new_and_cur_in_arrival_order_and_moves(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    src = MaildirSource(MaildirSettings(str(root)))
    src.connect()
    for sub in ("new", "cur", "tmp", ".Processed/cur", ".Quarantine/new"):
        assert (root / sub).is_dir()
    deliver(root, "new", "1700000200.M5P1Q1.host", mail(2))
    deliver(root, "cur", "1700000100.M250000P1Q2.host:2,S", mail(1))
    deliver(root, "new", "1700000300.M7P1Q3.host", mail(3))
    deliver(root, "tmp", "1700000050.M1P1Q4.host", mail(99))  # still being delivered
    (m1, m2, m3), = all_mail(src)
    assert [m.raw for m in (m1, m2, m3)] == [mail(1), mail(2), mail(3)]
    assert m1.source_key == "maildir:1700000100.M250000P1Q2.host"
    assert m1.arrived_at == datetime(2023, 11, 14, 22, 15, 0, 250000, tzinfo=timezone.utc)
    assert m1.uid is None and m1.size == len(mail(1))

    src.mark_done([m1, m3])
    src.quarantine([m2])
    assert sorted(p.name for p in (root / ".Processed.2023-11" / "cur").iterdir()) == [
        "1700000100.M250000P1Q2.host:2,S", "1700000300.M7P1Q3.host:2,"]
    assert [p.read_bytes() for p in (root / ".Quarantine" / "cur").iterdir()] == [mail(2)]
    assert list((root / "new").iterdir()) == [] and list((root / "cur").iterdir()) == []
    assert all_mail(src) == []


def test_maildir_finds_mail_a_mua_moved_meanwhile_and_bounds_batches(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    src = MaildirSource(MaildirSettings(str(root)))
    src.connect()
    for n in range(5):
        deliver(root, "new", f"17000000{n:02d}.M1P1Q{n}.host", mail(n, b"z" * 1000))
    batches = all_mail(src, max_count=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [len(b) for b in all_mail(src, max_bytes=2500)] == [2, 2, 1]
    first = batches[0][0]
    name = first.source_key.removeprefix("maildir:")
    os.rename(root / "new" / name, root / "cur" / f"{name}:2,S")
    src.mark_done([first])
    assert [p.name for p in (root / ".Processed.2023-11" / "cur").iterdir()] == [f"{name}:2,S"]


def test_maildir_moves_a_mail_from_where_it_was_read_without_searching_or_checking_it_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename is the check: a mail still where it was read costs a rename (and the check of its
    name in the target), no search of new/ and cur/ and no stat of its own path before."""
    root = tmp_path / "Maildir"
    src = MaildirSource(MaildirSettings(str(root)))
    src.connect()
    for n in range(3):
        deliver(root, "new", f"17000000{n:02d}.M1P1Q{n}.host", mail(n))
    (m0, m1, m2), = all_mail(src)
    os.rename(root / "new" / m2.source_key.removeprefix("maildir:"),
              root / "cur" / f"{m2.source_key.removeprefix('maildir:')}:2,S")  # a MUA's, meanwhile
    searched: list[str] = []
    real_locate = src._locate
    monkeypatch.setattr(src, "_locate", lambda unique: searched.append(unique) or real_locate(unique))
    checked: list[str] = []
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: checked.append(os.fspath(p)) or real_exists(p))
    src.mark_done([m0, m1, m2])
    assert searched == [m2.source_key.removeprefix("maildir:")]
    assert all("/.Processed.2023-11/cur/" in p for p in checked)
    assert sorted(p.name for p in (root / ".Processed.2023-11" / "cur").iterdir()) == [
        "1700000000.M1P1Q0.host:2,", "1700000001.M1P1Q1.host:2,", "1700000002.M1P1Q2.host:2,S"]


def test_maildir_done_mail_goes_to_a_folder_per_month_of_arrival(tmp_path: Path) -> None:
    """The done folder is bounded by a month's mail: each month of arrival its own Maildir++
    subfolder (made when its first mail comes), the quarantine one folder as before, and a
    restarted source (a crash between the commit and the move) moves what it finds again
    into the same month's folder."""
    root = tmp_path / "Maildir"
    src = MaildirSource(MaildirSettings(str(root)))
    src.connect()
    deliver(root, "new", "1700000000.M1P1Q1.host", mail(1))   # 2023-11-14
    deliver(root, "new", "1701388800.M1P1Q2.host", mail(2))   # 2023-12-01 00:00 UTC
    deliver(root, "new", "1704067199.M1P1Q3.host", mail(3))   # 2023-12-31 23:59:59 UTC
    deliver(root, "new", "1704067200.M1P1Q4.host", mail(4))   # 2024-01-01 00:00 UTC
    (m1, m2, m3, m4), = all_mail(src)
    src.mark_done([m1, m2])
    src.quarantine([m3])
    assert [p.read_bytes() for p in (root / ".Processed.2023-11" / "cur").iterdir()] == [mail(1)]
    assert [p.read_bytes() for p in (root / ".Processed.2023-12" / "cur").iterdir()] == [mail(2)]
    assert [p.read_bytes() for p in (root / ".Quarantine" / "cur").iterdir()] == [mail(3)]
    for month in ("2023-11", "2023-12"):
        folder = root / f".Processed.{month}"
        assert (folder / "maildirfolder").is_file() and (folder / "tmp").is_dir() and (folder / "new").is_dir()
    assert list((root / ".Processed" / "cur").iterdir()) == []
    again = MaildirSource(MaildirSettings(str(root)))  # restarted: the rest found again, moved by its month
    (found,), = all_mail(again)
    assert found.source_key == m4.source_key
    again.mark_done([found])
    assert [p.read_bytes() for p in (root / ".Processed.2024-01" / "cur").iterdir()] == [mail(4)]
    assert all_mail(again) == []


def test_maildir_arrival_falls_back_to_mtime_for_foreign_names() -> None:
    assert maildir_arrival("weird-name", 1_700_000_000.5) == datetime(
        2023, 11, 14, 22, 13, 20, 500000, tzinfo=timezone.utc)
    assert maildir_arrival("1700000000.12345_1.host:2,", 0) == datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)


# ---------------------------------------------------------------- pure planning


@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=60),
       st.integers(min_value=1, max_value=10), st.integers(min_value=1, max_value=12000))
def test_plan_batches_keeps_order_and_bounds(sizes: list[int], max_count: int, max_bytes: int) -> None:
    pairs = list(enumerate(sizes))
    batches = plan_batches(pairs, max_count, max_bytes)
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    for b in batches:
        assert 1 <= len(b) <= max_count
        assert len(b) == 1 or sum(sizes[i] for i in b) <= max_bytes


def test_errors_are_mailbox_errors() -> None:
    assert issubclass(MailboxUnavailable, MailboxError)
    assert issubclass(MailboxSecurityError, MailboxAuthError)


def test_missing_source_folder_is_an_error_and_not_a_half_open_connection(
        imap_account: ImapAccount, source_for: Callable[..., ImapSource]) -> None:
    src = source_for(folder="Support")
    with pytest.raises(MailboxError, match="select") as err:
        src.connect()
    assert not isinstance(err.value, MailboxUnavailable)
    imap_account.append(mail(1), folder="Support")
    src.connect()
    assert [m.raw for b in all_mail(src) for m in b] == [mail(1)]
