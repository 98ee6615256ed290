"""``report month`` on PostgreSQL: the same figures as the other reports, sent once per manager."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from maild.cli import common
from maild.cli.main import main
from maild.storage.db import open_database
from maild.storage.models import OutboxRow
from tests.billing.month_data import MONTH, NOW, generate, write_files


def test_month_report_on_postgresql(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_files(tmp_path, database_url=pg_url)
    monkeypatch.setattr(common, "clock", lambda: NOW)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--config", str(config), *argv])
        return code, capsys.readouterr().out

    assert run("contracts", "sync")[0] == 0
    sessions = open_database(pg_url)
    try:
        generated = generate(sessions)
        code, out = run("report", "month", "--month", MONTH, "--json")
        assert code == 0
        data = json.loads(out)
        assert data["hours"] == json.loads(run("report", "hours", "--month", MONTH, "--json")[1])
        assert data["sla"] == json.loads(run("report", "sla", "--month", MONTH, "--json")[1])
        assert 0 < data["activity"]["tickets"] < generated.tickets
        assert sum(c["answered"] for c in data["activity"]["consultants"]) > 0
        assert run("report", "month", "--send")[0] == 0
        code, out = run("report", "month", "--send")
        assert code == 0 and "already sent" in out
        with sessions() as session:
            keys = sorted(session.scalars(select(OutboxRow.dedupe_key).where(OutboxRow.kind == "month_report")))
        assert keys == [f"month_report:{MONTH}:boss@firma.pl", f"month_report:{MONTH}:szef@firma.pl"]
    finally:
        sessions.kw["bind"].dispose()
