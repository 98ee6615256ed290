"""Operating maild: UIDVALIDITY resets, quarantine replay, migrations, the demo."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from maild.storage import store
from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.db import SCHEMA_HEAD, make_engine, migration_state
from maild.intake.mailbox import ImapSource
from maild.storage.models import Intake, MessageRow, PackIndex, Ticket
from tests.helpers import make_mail, maildir_source, write_config

ROOT = Path(__file__).resolve().parents[2]


def imap_table(account: Any) -> str:
    return (f'[imap]\nhost = "127.0.0.1"\nport = {account.port}\nsecurity = "none"\n'
            f'username = "{account.username}"\npassword = "{account.password}"\nidle = false\n')


def test_uidvalidity_reset_after_crash_reimports_nothing(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    """Stored but not yet moved (a crash), then the server renumbers the folder: nothing doubles."""
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    mails = [make_mail(subject=f"Sprawa {i}", msgid=f"<uv{i}@acme.pl>") for i in range(3)]
    mails.append(make_mail(subject="Bez Message-ID", msgid=None))
    imap_account.append_many(mails)
    daemon = Daemon(load_config(config))
    source = daemon.source
    assert isinstance(source, ImapSource)
    source.connect()
    for batch in source.batches():
        daemon.ingestor.ingest_batch(batch)  # committed, never moved: the crash window
    source.close()
    old_keys = imap_account.uidvalidity("INBOX")
    assert imap_account.reset_uidvalidity("INBOX") != old_keys
    Daemon(load_config(config)).run_once()
    assert imap_account.uids("INBOX") == []
    assert len(imap_account.uids("Processed")) == 4
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 4
        assert session.scalar(select(func.count()).select_from(Intake)) == 4
        assert session.scalar(select(func.count()).select_from(MessageRow).where(MessageRow.direction == "in")) == 4
    assert len(smtp_sink.messages) == 4


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_quarantine_list_and_retry_after_fix(db: str, tmp_path: Path, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    """Also: the raw mail was packed and indexed at the first attempt, so the retry
    indexes the same bytes again, which must keep the first place, not fail."""
    import mailbox

    import maild.intake.pipeline as pipeline

    url = request.getfixturevalue("pg_url") if db == "postgresql" else ""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(make_mail(subject="trigger the bug", msgid="<bug@acme.pl>"))
    import maild.intake.parsing as parsing

    real = pipeline.split_reply
    for module in (pipeline, parsing):  # the parse worker splits first; the pipeline again when it could not
        monkeypatch.setattr(module, "split_reply", lambda text: (_ for _ in ()).throw(ValueError("parser bug")))
    for _ in range(pipeline.MAX_ATTEMPTS):
        Daemon(load_config(config)).run_once()
    assert len(box.get_folder("Quarantine")) == 1
    capsys.readouterr()
    assert cli_main(["--config", str(config), "quarantine", "list", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["status"] == "held" and "parser bug" in record["reason"] and record["attempts"] == 3
    # Retrying before the fix fails again and says so.
    assert cli_main(["--config", str(config), "quarantine", "retry", str(record["id"])]) == 1
    capsys.readouterr()
    assert cli_main(["--config", str(config), "quarantine", "list", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in records] == ["retried", "held"]
    for module in (pipeline, parsing):
        monkeypatch.setattr(module, "split_reply", real)
    assert cli_main(["--config", str(config), "quarantine", "retry", str(records[1]["id"])]) == 0
    assert cli_main(["--config", str(config), "quarantine", "retry", str(records[1]["id"])]) == 1, "only once"
    daemon = Daemon(load_config(config))
    with daemon.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.subject == "trigger the bug"
        row = session.scalars(select(MessageRow).where(MessageRow.direction == "in")).one()
        assert session.scalar(select(func.count()).select_from(PackIndex)) == 1  # the failed attempts' bytes
        assert row.raw_pack is not None, "the retry's bytes are placed by its message row"
        assert b"Subject: trigger the bug" in store.raw_mail(session, daemon.blobs, row.id)
        assert b"Subject: trigger the bug" in store.read_blob(session, daemon.blobs, row.raw_sha256 or "")
    daemon.run_once()
    assert [m.parsed["Subject"] for m in smtp_sink.wait_for(1)] == ["[SUP-1] trigger the bug"]


def test_db_upgrade_on_sqlite_and_postgres(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("", pg_url):
        config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=url)
        assert cli_main(["--config", str(config), "db", "upgrade"]) == 0
        out = capsys.readouterr().out
        assert "latest schema" in out and f"migrated empty -> {SCHEMA_HEAD}" in out, out
        cfg = load_config(config)
        engine = make_engine(cfg.database_url)
        current, head = migration_state(engine)
        assert current == head and head
        assert {"tickets", "messages", "outbox", "intake", "ledger"} <= set(inspect(engine).get_table_names())
        assert cli_main(["--config", str(config), "db", "upgrade"]) == 0  # idempotent
        assert f"at the latest schema ({SCHEMA_HEAD}); nothing to do" in capsys.readouterr().out
        engine.dispose()


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, extra='\n[calendar]\nopens = "late"\n')
    assert cli_main(["--config", str(config), "tickets", "list"]) == 2
    err = capsys.readouterr().err
    assert "calendar.opens" in err and str(config) in err
    assert cli_main(["--config", str(tmp_path / "nope.toml"), "tickets", "list"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_unknown_ticket_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25)
    assert cli_main(["--config", str(config), "tickets", "show", "SUP-99"]) == 1
    assert "no ticket SUP-99" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["--config", str(config), "tickets", "list", "--status", "bogus"])
    assert info.value.code == 2


def test_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "maild.cli", "demo", "--dir", str(tmp_path / "demo")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SUP-1" in out and "sla" in out and "unverified" in out
    assert "Subject: [SUP-1] Pilne: awaria wydruku faktur" in out
    assert "zareagujemy na zgłoszenie do" in out
    notification = out.split("4. ")[1].split("5. ")[0]
    assert "anna@consultancy.example" in notification and "Reply-To: support@consultancy.example" in notification
    assert "Nowe zgłoszenie SUP-1" in notification and "od rana nie działa wydruk" in notification
    relayed = out.split("6. ")[1].split("7. ")[0]
    assert "wydruk działa ponownie" in relayed and "#time" not in relayed
    assert "Nowe zgłoszenie" not in relayed and "pisze:" not in relayed, "only the new text reaches the customer"
    assert "time logged 90 min" in out
    assert (tmp_path / "demo" / "var" / "maild.db").exists()
    (page,) = (tmp_path / "demo").glob("report-*.html")
    assert f"written to {page}" in out  # the month's report, its path printed
    assert page.read_text(encoding="utf-8").count('<img src="data:image/png;base64,') == 8
    hint = out.strip().splitlines()[-1]
    assert hint.startswith("Try: "), hint
    tried = subprocess.run(shlex.split(hint.removeprefix("Try: ")), cwd="/", capture_output=True, text=True,
                           timeout=60)
    assert tried.returncode == 0, tried.stderr  # the closing hint works as printed, from anywhere
    assert {t["ref"] for t in json.loads(tried.stdout)} >= {"SUP-2", "SUP-3"}


def test_crash_during_first_migration_leaves_no_half_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import alembic.runtime.migration as migration

    from maild.storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'maild.db'}"

    def crash(self: object, step: object) -> None:
        raise RuntimeError("killed before the version was stamped")

    with monkeypatch.context() as patch:
        patch.setattr(migration.HeadMaintainer, "update_to_step", crash)
        with pytest.raises(RuntimeError):
            upgrade(make_engine(url))
    assert inspect(make_engine(url)).get_table_names() == []
    upgrade(make_engine(url))
    current, head = migration_state(make_engine(url))
    assert current == head


def test_schema_head_is_alembics_newest_revision() -> None:
    """Start-up compares revisions without Alembic; a new migration must move SCHEMA_HEAD with it."""
    from alembic.script import ScriptDirectory

    from maild.storage.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_current_head() == SCHEMA_HEAD
