"""Numbers the database cannot hold are usage errors (exit 2), never an OverflowError traceback.

Issue 12: ``tickets show SUP-9223372036854775808``, ``quarantine retry 1e23``,
``time reverse 1e23`` and ``report hours --month 0001-01`` ended in raw
tracebacks; so did ``time add`` with such a reference, and a report for a month
far ahead kept the command busy for more than ten minutes.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from maild.cli.main import main
from tests.helpers import maildir_source, write_config

TOO_BIG = str(2**63)


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = str(request.getfixturevalue("pg_migrated_url")) if request.param == "postgresql" else ""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525, database_url=url, migrated=True)
    assert main(["--config", str(path), "tickets", "list"]) == 0  # the database exists and is migrated
    return path


@pytest.mark.parametrize("argv", [
    ["tickets", "show", f"SUP-{TOO_BIG}"],
    ["tickets", "show", "SUP-99999999999999999999999999"],
    ["tickets", "show", f"SUP-{2**31}"],  # PostgreSQL's INTEGER ids
    ["tickets", "show", "SUP-0"],
    ["tickets", "show", "SUP-１２"],  # fullwidth digits: str.isdigit() says yes, int() reads them
    ["quarantine", "retry", "1e23"],
    ["quarantine", "retry", "100000000000000000000000"],
    ["quarantine", "retry", TOO_BIG],
    ["quarantine", "retry", "-5"],
    ["quarantine", "retry", str(2**31)],
    ["time", "reverse", "1e23", "--reason", "x"],
    ["time", "reverse", TOO_BIG, "--reason", "x"],
    ["time", "reverse", "-9223372036854775809", "--reason", "x"],
    ["time", "add", f"SUP-{TOO_BIG}", "1h", "--by", "anna@firma.pl"],
    ["tickets", "list", "--limit", "100000000000000000000000"],
    ["tickets", "list", "--after", f"SUP-{TOO_BIG}"],
    ["report", "hours", "--month", "0001-01"],
    ["report", "sla", "--month", "0001-01"],
    ["report", "hours", "--month", "9999-12"],
    ["report", "hours", "--month", "9998-12"],
    ["report", "sla", "--json", "--month", "9998-12"],
])
def test_a_number_out_of_range_is_a_usage_error(config: Path, argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["--config", str(config), *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "OverflowError" not in err
    assert err.strip(), "the user is told what was wrong"


def test_the_largest_number_is_still_asked_for(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "tickets", "show", f"SUP-{2**31 - 1}"]) == 1
    assert "no ticket" in capsys.readouterr().err
    assert main(["--config", str(config), "quarantine", "retry", str(2**31 - 1)]) == 1
    assert "no quarantine record" in capsys.readouterr().err
