"""A customers file that would remove many customers at once is refused (issue 12).

SIGHUP with an empty or truncated customers file was accepted and marked every
contract removed; tickets created meanwhile lost their contract for good. Now
a reload (SIGHUP, daemon start, ``contracts sync``) that would deactivate more
than ``customers_max_removed_percent`` (20 %) of the active customers is
refused and the previous customers are kept, unless ``maild contracts sync
--allow-removals`` is run. On SQLite and PostgreSQL.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.cli.main import main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import ContractRow, CustomerRow
from tests.helpers import CUSTOMERS, maildir_source, write_config

MORE = "".join(f"""
[[customers]]
id = "extra{i}"
name = "Extra {i}"
addresses = ["biuro@extra{i}.pl"]

  [[customers.contracts]]
  id = "extra{i}-occ"
  kind = "occasional"
  start = 2020-01-01
  hourly_rate = 250
""" for i in range(2))  # with CUSTOMERS: 5 customers


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = str(request.getfixturevalue("pg_migrated_url")) if request.param == "postgresql" else ""
    return write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=2525, database_url=url,
                        customers=CUSTOMERS + MORE)


def active(daemon: Daemon) -> tuple[list[str], list[str]]:
    with daemon.sessions() as session:
        customers = sorted(session.scalars(select(CustomerRow.id).where(CustomerRow.active.is_(True))))
        contracts = sorted(session.scalars(select(ContractRow.id).where(ContractRow.removed_at.is_(None))))
    return customers, contracts


def test_an_empty_or_truncated_file_is_refused_on_sighup_and_the_old_customers_kept(
        config: Path, caplog: pytest.LogCaptureFixture) -> None:
    daemon = Daemon(load_config(config), lambda: datetime.now(timezone.utc))
    try:
        before = active(daemon)
        assert len(before[0]) == 5
        customers_file = config.parent / "customers.toml"
        for text in ("", CUSTOMERS.split("[[customers]]", 2)[1].join(["[[customers]]", ""])):
            customers_file.write_text(text, encoding="utf-8")
            with caplog.at_level(logging.ERROR, logger="maild"):
                assert daemon.reload() is False
            assert "reload refused" in caplog.text and "--allow-removals" in caplog.text
            assert active(daemon) == before
            assert len(daemon.ingestor.ctx.customers) == 5, "the daemon still knows every customer"
        customers_file.write_text(CUSTOMERS + MORE.split("[[customers]]")[1].join(["[[customers]]", ""]),
                                  encoding="utf-8")
        assert daemon.reload() is True, "one customer of five (20 %) may go"
        assert len(active(daemon)[0]) == 4
    finally:
        daemon.release_run_lock()
        daemon.sessions.kw["bind"].dispose()


def test_contracts_sync_refuses_unless_removals_are_allowed(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "contracts", "sync"]) == 0
    (config.parent / "customers.toml").write_text("", encoding="utf-8")
    assert main(["--config", str(config), "contracts", "sync"]) == 1
    err = capsys.readouterr().err
    assert "would remove 5 of the 5 customers" in err and "--allow-removals" in err
    assert main(["--config", str(config), "run", "--once"]) == 2, "a daemon does not start on it either"
    assert "would remove 5 of the 5 customers" in capsys.readouterr().err
    assert main(["--config", str(config), "contracts", "sync", "--allow-removals"]) == 0
    assert "5 contracts ended" in capsys.readouterr().out
    assert main(["--config", str(config), "contracts", "sync"]) == 0, "nothing left to remove"
