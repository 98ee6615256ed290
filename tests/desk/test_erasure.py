"""Erasure and retention end to end: mail in through the daemon, ``maild forget`` / ``retention run`` /
``storage compact`` through the CLI, and what is left in the database and in the pack files.

The check that matters for GDPR is on the disk: after ``forget`` the person's
words and attachment are in no file under the storage path, while the hours
booked on their ticket still add up in the statement. Compaction is checked
at its crash points (new pack written, index not moved) and for readers
(an old pack outlives the pass that emptied it).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage import blobs as blobs_module
from maild.storage import compact as compact_module
from maild.storage.blobs import BlobStore
from maild.storage.compact import compact, drop_unreferenced
from maild.storage.db import open_database
from maild.storage.models import AttachmentRow, LedgerRow, MessageRow, PackIndex, Ticket
from tests.helpers import Clock, deliver, maildir_source, write_config

UTC = timezone.utc
SECRET_WORDS = "Mój PESEL to 85010112345 i mieszkam przy ulicy Kwiatowej 7"
ATTACHMENT = b"%PDF-1.4 umowa Jana Kowalskiego " + bytes(range(256)) * 40


def _mail(sender: str, subject: str, body: str, msgid: str, attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, "support@firma.pl", subject, msgid
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="umowa.pdf")
    return msg.as_bytes()


def _packs_hold(storage: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in (storage / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def desk(tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Daemon]:
    """Jan (acme) with a secret and an attachment, then Kari (nord); one pack per blob (PACK_BYTES = 1)."""
    monkeypatch.setattr(blobs_module, "PACK_BYTES", 1)
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    start = datetime.now(UTC) - timedelta(days=1)
    deliver(tmp_path / "Maildir", _mail("Jan Kowalski <jan@acme.pl>", "Umowa", SECRET_WORDS, "<j1@acme.pl>",
                                        ATTACHMENT), start)
    deliver(tmp_path / "Maildir", _mail("Kari <kari@nord.no>", "Report", "Hello, the report is empty.\n",
                                        "<k1@nord.no>"), start)
    daemon = Daemon(load_config(config), Clock(start))
    daemon.run_once()
    return config, daemon


LOG: list[str] = []


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    LOG[:] = err.splitlines()
    return code, out


def test_forget_an_address_erases_texts_and_bytes_and_keeps_the_hours(
        desk: tuple[Path, Daemon], capsys: pytest.CaptureFixture[str]) -> None:
    config, daemon = desk
    storage = load_config(config).storage_path
    assert run(capsys, config, "time", "add", "SUP-1", "1h30m", "--by", "anna@firma.pl", "--note",
               "Jan Kowalski dzwonił")[0] == 0
    month = datetime.now(UTC).strftime("%Y-%m")
    before = json.loads(run(capsys, config, "report", "hours", "--month", month, "--json")[1])
    assert _packs_hold(storage, SECRET_WORDS.encode()) or _packs_hold(storage, ATTACHMENT[:40])

    code, out = run(capsys, config, "forget", "--address", "jan@acme.pl", "--dry-run")
    assert code == 0 and "would erase 1 tickets (SUP-1)" in out
    with daemon.sessions() as session:
        assert session.scalar(select(Ticket.subject).where(Ticket.id == 1)) == "Umowa"

    code, real = run(capsys, config, "forget", "--address", "Jan@Acme.pl")
    assert code == 0 and "erased 1 tickets (SUP-1)" in real and "1 attachments" in real, real
    # the dry run told of every row and blob the erasure reached, not only of the tickets and messages
    assert out.split("would erase ", 1)[1].strip() == real.split("erased ", 1)[1].split(";")[0], (out, real)
    assert any("SUP-1: personal data erased" in line for line in LOG), LOG
    assert not any("jan@acme.pl" in line.lower() for line in LOG), LOG
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and (ticket.subject, ticket.requester, ticket.requester_name) == ("(erased)", "", "")
        texts = [(m.text_new, m.from_addr, m.raw_sha256) for m in session.scalars(
            select(MessageRow).where(MessageRow.ticket_id == 1))]
        assert texts and all(t == ("", "", None) for t in texts)
        assert session.scalar(select(AttachmentRow.id)) is None
        (entry,) = session.scalars(select(LedgerRow))
        assert (entry.minutes, entry.note) == (90, "")
        other = session.get(Ticket, 2)
        assert other is not None and other.subject == "Report"
    assert not _packs_hold(storage, SECRET_WORDS.encode()), "the words are in a file under the storage path"
    assert not _packs_hold(storage, ATTACHMENT[:40]), "the attachment is in a file under the storage path"
    after = json.loads(run(capsys, config, "report", "hours", "--month", month, "--json")[1])
    assert [c["total_minutes"] for c in after["customers"]] == [c["total_minutes"] for c in before["customers"]]
    assert run(capsys, config, "storage", "verify")[0] == 0
    code, out = run(capsys, config, "tickets", "show", "SUP-2", "--json")
    assert "Hello, the report is empty." in out
    code, out = run(capsys, config, "forget", "--address", "jan@acme.pl")
    assert code == 0 and "nothing to erase" in out


def test_forget_a_customer_and_bad_usage(desk: tuple[Path, Daemon], capsys: pytest.CaptureFixture[str]) -> None:
    config, daemon = desk
    code, out = run(capsys, config, "forget", "--customer", "nord")
    assert code == 0 and "SUP-2" in out and "the customer's names and addresses" in out, out
    assert "1 stored blobs" in out
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 2)
        assert ticket is not None and ticket.subject == "(erased)"
    assert "nothing to erase" in run(capsys, config, "forget", "--customer", "nord")[1]
    assert run(capsys, config, "forget", "--address", "not-an-address")[0] == 2
    with pytest.raises(SystemExit) as info:
        cli_main(["--config", str(config), "forget"])
    assert info.value.code == 2


def test_retention_drops_raw_mail_then_texts_of_old_closed_tickets(
        desk: tuple[Path, Daemon], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config, daemon = desk
    assert "no period set" in run(capsys, config, "retention", "run")[1]
    text = config.read_text() + "\n[retention]\nraw_mail_months = 6\nclosed_ticket_years = 2\n"
    config.write_text(text)
    storage = load_config(config).storage_path
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with daemon.sessions() as session, session.begin():
        session.execute(update(Ticket).where(Ticket.id == 1).values(status="closed", closed_at=long_ago))
    code, out = run(capsys, config, "retention", "run", "--dry-run")
    assert code == 0 and "would drop the raw mail of 1 closed tickets and the texts of 0: 1 attachments" in out, out
    assert _packs_hold(storage, ATTACHMENT[:40]), "a dry run changes nothing"
    with daemon.sessions() as session:
        assert session.scalar(select(MessageRow.raw_sha256).where(MessageRow.ticket_id == 1,
                                                                  MessageRow.direction == "in")) is not None
    code, out = run(capsys, config, "retention", "run")
    assert code == 0 and "raw mail dropped for 1 closed tickets, texts removed from 0" in out, out
    with daemon.sessions() as session:
        assert session.scalar(select(Ticket.subject).where(Ticket.id == 1)) == "Umowa"
        assert session.scalar(select(MessageRow.text_new).where(MessageRow.ticket_id == 1)).startswith("Mój PESEL")
    assert not _packs_hold(storage, ATTACHMENT[:40])
    # a shorter period: the run covers the tickets closed between the old cutoff and the new one
    config.write_text(text.replace("closed_ticket_years = 2", "closed_ticket_years = 1"))
    code, out = run(capsys, config, "retention", "run")
    assert "raw mail dropped for 0 closed tickets, texts removed from 1" in out, out
    with daemon.sessions() as session:
        assert session.scalar(select(Ticket.subject).where(Ticket.id == 1)) == "(erased)"
        assert session.scalar(select(Ticket.subject).where(Ticket.id == 2)) == "Report"
    assert "texts removed from 0" in run(capsys, config, "retention", "run")[1]
    assert run(capsys, config, "storage", "verify")[0] == 0


# ------------------------------------------------------------------ compaction, at its crash points


def _store(tmp_path: Path) -> tuple[Any, BlobStore, list[tuple[str, bytes]]]:
    """Pack A with three blobs, then a newer pack B with one; all indexed."""
    sessions = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    blobs = BlobStore(tmp_path / "storage")
    import hashlib

    stored = []
    with sessions() as session, session.begin():
        for n, data in enumerate([b"first " * 1000, b"second, erased " * 1000, b"third " * 1000, b"newest"]):
            if n == 3:
                blobs._close_pack()
                name = f"{9999999999999999999:019d}-1.pack"
                (blobs.packs / name).write_bytes(b"")
                blobs._pack = None
            where = blobs.append(data)
            sha = hashlib.sha256(data).hexdigest()
            session.add(PackIndex(sha256=sha, pack=where.pack, offset=where.offset, length=where.length))
            stored.append((sha, data))
    blobs.close()
    return sessions, blobs, stored


def _read_all(sessions: Any, blobs: BlobStore, stored: list[tuple[str, bytes]]) -> None:
    from maild.storage.store import read_blob

    with sessions() as session:
        for sha, data in stored:
            assert read_blob(session, blobs, sha) == data


def test_compaction_survives_a_crash_before_the_index_moves(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, blobs, stored = _store(tmp_path)
    packs = sorted(p.name for p in blobs.packs.iterdir())
    assert len(packs) == 2
    with sessions() as session, session.begin():  # as retention and forget let go of a blob
        assert drop_unreferenced(session, blobs, [stored[1][0]]) == 1
    live = [stored[0], stored[2], stored[3]]

    def crash() -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(compact_module, "_before_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        compact(sessions, blobs)
    _read_all(sessions, blobs, live)  # the index still names the old pack, intact
    monkeypatch.undo()
    first = compact(sessions, blobs)
    assert first.rewritten == [packs[0]]
    assert (blobs.packs / packs[0]).exists(), "the emptied pack outlives the pass that emptied it"
    _read_all(sessions, blobs, live)
    for _ in range(3):
        compact(sessions, blobs)
    left = sorted(p.name for p in blobs.packs.iterdir())
    assert packs[0] not in left and len(left) == 2, left  # the rewrite and the newest; the orphan is gone
    _read_all(sessions, blobs, live)
    assert not any(b"second, erased" in (blobs.packs / name).read_bytes() for name in left)


def test_compaction_moves_the_raw_mail_a_message_row_places(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Since 0011 a stored mail's raw bytes are named by its message row, not by pack_index: compaction keeps
    them live, copies them with the indexed blobs, and moves the row's place in the same transaction; until
    that commits (a crash after the copy) the row still names the old pack, intact."""
    import hashlib

    from maild.storage.store import raw_mail

    sessions, blobs, stored = _store(tmp_path)
    packs = sorted(p.name for p in blobs.packs.iterdir())
    raw = b"From: jan@acme.pl\r\nSubject: placed\r\n\r\n" + b"body " * 500
    blobs._pack = None
    blobs._start_pack()
    assert blobs._pack is not None and blobs._pack[0] == packs[1], "the newest pack takes the append"
    blobs.close()
    # put the raw mail into the older pack A, as if it had been appended there before B was started
    path_a = blobs.packs / packs[0]
    offset = path_a.stat().st_size
    with open(path_a, "ab") as pack:
        pack.write(raw)
    sha = hashlib.sha256(raw).hexdigest()
    with sessions() as session, session.begin():
        session.add(MessageRow(id=7, direction="in", role="customer", kind="human", subject="placed",
                               date=datetime.now(UTC), raw_sha256=sha, raw_pack=packs[0], raw_offset=offset,
                               raw_length=len(raw)))
        assert drop_unreferenced(session, blobs, [stored[1][0]]) == 1

    def crash() -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(compact_module, "_before_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        compact(sessions, blobs)
    with sessions() as session:
        assert raw_mail(session, blobs, 7) == raw  # still at the old place, intact
    monkeypatch.undo()
    assert compact(sessions, blobs).rewritten == [packs[0]]
    with sessions() as session:
        row = session.get(MessageRow, 7)
        assert row is not None and row.raw_pack not in (None, packs[0])
        assert raw_mail(session, blobs, 7) == raw
    _read_all(sessions, blobs, [stored[0], stored[2], stored[3]])
    for _ in range(3):
        compact(sessions, blobs)
    left = sorted(p.name for p in blobs.packs.iterdir())
    assert packs[0] not in left
    assert not any(b"second, erased" in (blobs.packs / name).read_bytes() for name in left)
    with sessions() as session:
        assert raw_mail(session, blobs, 7) == raw


def test_the_daemon_applies_retention_once_a_day(desk: tuple[Path, Daemon]) -> None:
    config, _ = desk
    config.write_text(config.read_text() + "\n[retention]\nraw_mail_months = 6\n")
    clock = Clock(datetime.now(UTC))
    daemon = Daemon(load_config(config), clock)
    with daemon.sessions() as session, session.begin():
        session.execute(update(Ticket).where(Ticket.id == 1).values(
            status="closed", closed_at=clock() - timedelta(days=400)))
    daemon.apply_retention()
    with daemon.sessions() as session, session.begin():
        assert session.scalar(select(MessageRow.raw_sha256).where(MessageRow.ticket_id == 1,
                                                                  MessageRow.direction == "in")) is None
        # closed half a day short of the six months (183 days) at this run: past them at the next
        session.execute(update(Ticket).where(Ticket.id == 2).values(
            status="closed", closed_at=clock() - timedelta(days=183) + timedelta(hours=12)))
    clock.advance(hours=23)
    daemon.apply_retention()
    with daemon.sessions() as session:
        assert session.scalar(select(MessageRow.raw_sha256).where(MessageRow.ticket_id == 2,
                                                                  MessageRow.direction == "in")) is not None
    clock.advance(hours=2)
    daemon.apply_retention()
    with daemon.sessions() as session:
        assert session.scalar(select(MessageRow.raw_sha256).where(MessageRow.ticket_id == 2,
                                                                  MessageRow.direction == "in")) is None
    daemon.blobs.close()
