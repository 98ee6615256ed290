"""Several daemons on one PostgreSQL database: one reads the mailbox, another takes over when it goes."""
from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.ops.leader import mailbox_key
from maild.storage.models import Ticket
from tests.helpers import make_mail, maildir_source, write_config


def tickets(daemon: Daemon) -> int:
    with daemon.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Ticket)) or 0)


def test_one_reader_and_takeover(tmp_path: Path, smtp_sink: Any, pg_url: str) -> None:
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                                      database_url=pg_url))
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    first, second = Daemon(config), Daemon(config)
    box.add(make_mail(msgid="<l1@acme.pl>"))
    assert first.ingest_all() == {"ticket": 1}
    box.add(make_mail(msgid="<l2@acme.pl>", subject="Druga sprawa"))
    assert second.ingest_all() == {}, "the mailbox is read by the first daemon"
    assert len(box) == 1 and tickets(second) == 1
    first.source.close()
    first.mailbox_lock.release()  # what a crash or a stop does: its database session ends
    assert second.ingest_all() == {"ticket": 1}
    assert tickets(second) == 2 and len(box) == 0
    assert first.ingest_all() == {}, "the first daemon, back, now waits"
    second.mailbox_lock.release()


def test_sqlite_needs_no_lock(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25))
    daemon = Daemon(config)
    assert daemon.mailbox_lock.acquire() and daemon.mailbox_lock.acquire()


def test_lock_key_is_per_mailbox() -> None:
    assert mailbox_key("imap://a@h:993/INBOX") != mailbox_key("imap://b@h:993/INBOX")
    assert -(2**63) <= mailbox_key("x") < 2**63
