"""`maild quarantine retry` is all or nothing, and can be run again until it succeeds (issue 12).

A retry that failed midway left the record "retried" and its intake record
deleted, and a second retry was refused: the mail was in neither the queue nor
the quarantine. Now the record changes in the transaction that stores the mail.
"""
from __future__ import annotations

import json
import mailbox
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.blobs import BlobStore, StorageError
from maild.storage.db import open_database
from maild.storage.models import Intake, QuarantineRow, Ticket
from tests.helpers import make_mail, maildir_source, write_config


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_retry_that_fails_midway_changes_nothing_and_can_be_retried(
        db: str, tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    import maild.intake.parsing as parsing
    import maild.intake.pipeline as pipeline

    url = request.getfixturevalue("pg_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(make_mail(subject="trigger the bug", msgid="<bug@acme.pl>"))
    real = pipeline.split_reply
    for module in (pipeline, parsing):
        monkeypatch.setattr(module, "split_reply", lambda text: (_ for _ in ()).throw(ValueError("parser bug")))
    for _ in range(pipeline.MAX_ATTEMPTS):
        Daemon(load_config(config)).run_once()
    for module in (pipeline, parsing):
        monkeypatch.setattr(module, "split_reply", real)  # the fix
    capsys.readouterr()
    assert cli_main(["--config", str(config), "quarantine", "list", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    retry = ["--config", str(config), "quarantine", "retry", str(record["id"])]
    sessions = open_database(url or f"sqlite:///{tmp_path / 'var' / 'maild.db'}", migrate=False)

    def state() -> tuple[str, list[str], int]:
        with sessions() as session:
            row = session.get(QuarantineRow, record["id"])
            assert row is not None
            return (row.status, list(session.scalars(select(Intake.disposition))),
                    len(session.scalars(select(Ticket)).all()))

    held = state()
    assert held == ("held", ["quarantine"], 0)

    # 1. the disk fills up while the mail is stored
    def full(self: BlobStore) -> None:
        raise StorageError("storage: cannot flush to disk: No space left on device")
    with monkeypatch.context() as patch:
        patch.setattr(BlobStore, "flush", full)
        assert cli_main(retry) == 1
    assert "No space left" in capsys.readouterr().err
    assert state() == held, "nothing changed"

    # 2. a broken customers file: refused before anything changes
    customers = tmp_path / "customers.toml"
    good = customers.read_text(encoding="utf-8")
    customers.write_text(good.replace('kind = "sla"', 'kind = "gold"'), encoding="utf-8")
    assert cli_main(retry) == 2
    assert state() == held
    customers.write_text(good, encoding="utf-8")

    # 3. with the fault gone the same retry succeeds, once
    assert cli_main(retry) == 0
    assert state() == ("retried", ["ticket"], 1)
    capsys.readouterr()
    assert cli_main(retry) == 1
    assert "already retried" in capsys.readouterr().err
    sessions.kw["bind"].dispose()
