"""A generated month behind real config files, for the month report and statement tests."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from maild.cli import common
from maild.cli.main import main
from maild.storage.db import open_database
from tests.billing.month_data import NOW, Generated, Runner, generate, write_files
from tests.helpers import seed_template_cache


@dataclass
class Month:
    directory: Path
    config: Path
    sessions: sessionmaker[Session]
    generated: Generated
    run: Runner


@pytest.fixture()
def month(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Month]:
    config = write_files(tmp_path)
    seed_template_cache(tmp_path / "storage")  # the packaged templates compiled once per test process
    clock = {"now": NOW}
    monkeypatch.setattr(common, "clock", lambda: clock["now"])

    def run(*argv: str, now: datetime | None = None) -> tuple[int, str, str]:
        clock["now"] = now or NOW
        capsys.readouterr()
        code = main(["--config", str(config), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("contracts", "sync")[0] == 0
    sessions = open_database(f"sqlite:///{tmp_path / 'storage' / 'maild.db'}")
    generated = generate(sessions)
    yield Month(tmp_path, config, sessions, generated, run)
    sessions.kw["bind"].dispose()
