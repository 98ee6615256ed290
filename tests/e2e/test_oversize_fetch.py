"""A mail bigger than max_message_mb is not fetched whole (issue 12): its RFC822.SIZE is
read first and only its first max_message_mb are fetched; it still becomes a ticket,
with a note saying how big it was. Against the private Dovecot, and a Maildir."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select

from maild.config import load_config
from maild.intake.mailbox import open_source
from maild.ops.daemon import Daemon
from maild.storage import store
from maild.storage.models import AttachmentRow, MessageRow, PackIndex, Ticket
from tests.e2e.test_operations import imap_table
from tests.helpers import deliver, maildir_source, make_mail, write_config

MB = 1024 * 1024
LIMIT = "\n[limits]\nmax_message_mb = 1\n"


def _big_mail() -> tuple[bytes, bytes]:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "jan@acme.pl", "support@firma.pl", "Skan 3 MB"
    mail["Message-ID"] = "<big3@acme.pl>"
    mail.set_content("Załączam skan faktury.")
    payload = bytes(range(256)) * (12 * 1024)  # 3 MB
    mail.add_attachment(payload, maintype="application", subtype="pdf", filename="skan.pdf")
    return mail.as_bytes(), payload


def _check(daemon: Daemon, raw: bytes, payload: bytes) -> None:
    with daemon.sessions() as session:
        [row] = session.scalars(select(MessageRow).where(MessageRow.message_id == "big3@acme.pl")).all()
        assert row.size >= len(raw) - 4096, "the real size is recorded"  # CRLF on the server
        assert any("only the first 1 MB fetched" in n for n in row.notes), row.notes
        assert "Załączam skan" in (row.text_new or "")
        assert len(session.scalars(select(Ticket)).all()) == 2, "the big mail and the small one"
        assert not session.scalars(select(AttachmentRow).where(AttachmentRow.message_row_id == row.id)).all()
        assert hashlib.sha256(payload).hexdigest() not in set(session.scalars(select(PackIndex.sha256)))
        assert row.raw_sha256 is not None
        kept = store.raw_mail(session, daemon.blobs, row.id)
    assert 0 < len(kept) <= MB, f"kept {len(kept)} bytes of the mail: only what was fetched"
    assert raw.replace(b"\r\n", b"\n").startswith(kept.replace(b"\r\n", b"\n")[:1000])


def test_imap_fetches_only_the_first_max_message_mb(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    raw, payload = _big_mail()
    imap_account.append_many([raw, make_mail(subject="mała", msgid="<small@acme.pl>", sender="ola@acme.pl")])
    config = load_config(write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                                      extra=LIMIT))
    source = open_source(config.source)
    try:
        source.connect()
        [batch] = list(source.batches(max_message_bytes=MB))
    finally:
        source.close()
    fetched = {m.raw.split(b"Message-ID: ")[1][:12]: m for m in batch}
    big = fetched[b"<big3@acme.p"]
    assert len(big.raw) == MB and big.size > 3 * MB, (len(big.raw), big.size)
    daemon = Daemon(config)
    daemon.run_once()
    _check(daemon, raw, payload)
    assert len(imap_account.uids("Processed")) == 2
    assert len(smtp_sink.wait_for(2)) == 2


def test_maildir_reads_only_the_first_max_message_mb(tmp_path: Path, smtp_sink: Any) -> None:
    raw, payload = _big_mail()
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, extra=LIMIT)
    deliver(tmp_path / "Maildir", raw, datetime.now(timezone.utc))
    deliver(tmp_path / "Maildir", make_mail(subject="mała", msgid="<small@acme.pl>", sender="ola@acme.pl"),
            datetime.now(timezone.utc))
    daemon = Daemon(load_config(config))
    daemon.run_once()
    _check(daemon, raw, payload)
