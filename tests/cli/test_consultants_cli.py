"""``maild consultants list`` as the operator reads it."""
from __future__ import annotations

from pathlib import Path

import pytest

from maild.cli.main import main
from tests.helpers import maildir_source, write_config


def test_a_manager_is_not_listed_as_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Managers are never assigned, so the team does not count them present (``present`` is false in
    the JSON); the table said "present no" for a manager at work on a Monday, as for a consultant on leave."""
    (tmp_path / "Maildir").mkdir()
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, migrated=True)
    assert main(["--config", str(config), "consultants", "list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["szef@firma.pl"][1:4] == ["manager", "pl", "-"], rows
    assert rows["anna@firma.pl"][3] in ("yes", "no")
