"""``maild db backup FILE``: the SQLite database with its WAL, as one file, while maild runs or not.

The README's rollback once said ``cp /var/lib/maild/maild.db{,.bak}`` with the service stopped: the
stopped daemon, and every command before it, leave their last commits in ``maild.db-wal`` (the
walk-through's copy had 0 of the 6 ledger rows, 8 of the 11 outbox rows).
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from maild.cli.main import main
from tests.helpers import maildir_source, write_config


def test_the_backup_holds_what_the_wal_holds_and_a_copy_of_the_file_does_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Maildir").mkdir()
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, migrated=True)
    database = tmp_path / "var" / "maild.db"
    writer = sqlite3.connect(database)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # as a process that ended without checkpointing leaves it
    writer.execute("INSERT INTO state (key, value, updated_at) VALUES ('walk', 'in the WAL only', '2026-12-07')")
    writer.commit()
    try:
        shutil.copyfile(database, tmp_path / "copy.db")
        with sqlite3.connect(tmp_path / "copy.db") as copy:
            assert copy.execute("SELECT count(*) FROM state WHERE key = 'walk'").fetchone() == (0,)

        backup = tmp_path / "backups" / "maild.db"
        backup.parent.mkdir()
        assert main(["--config", str(config), "db", "backup", str(backup)]) == 0
        out = capsys.readouterr().out
        assert str(backup) in out and str(tmp_path / "var") in out, out  # the storage folder goes with it
        assert backup.stat().st_mode & 0o777 == 0o600  # personal data
        with sqlite3.connect(backup) as copy:
            assert copy.execute("SELECT value FROM state WHERE key = 'walk'").fetchone() == ("in the WAL only",)
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert not Path(f"{backup}-wal").exists()  # one file, whole

        assert main(["--config", str(config), "db", "backup", str(backup)]) == 2  # never over a backup
        assert "exists" in capsys.readouterr().err
    finally:
        writer.close()


def test_postgresql_is_backed_up_with_pg_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Maildir").mkdir()
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25,
                          database_url="postgresql+psycopg://maild@127.0.0.1:1/maild")
    assert main(["--config", str(config), "db", "backup", str(tmp_path / "x.db")]) == 2
    assert "pg_dump" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_a_database_path_with_uri_characters_is_backed_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "maild #2"  # read through a file: URI, where "#" ends the path
    (home / "Maildir").mkdir(parents=True)
    config = write_config(home, source=maildir_source(home), smtp_port=25, migrated=True)
    backup = tmp_path / "maild.db"
    assert main(["--config", str(config), "db", "backup", str(backup)]) == 0, capsys.readouterr().err
    with sqlite3.connect(backup) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
