"""Hostile mail through the whole pipeline (issue 12, "also found"), on SQLite and PostgreSQL."""
from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Intake, Ticket
from tests.helpers import maildir_source, make_mail, write_config

UTC = timezone.utc


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else ""
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    yield {"tmp": tmp_path, "url": url, "box": box, "sink": smtp_sink}


def configure(env: dict[str, Any], extra: str = "", top: str = "", customers: str | None = None) -> Path:
    kwargs: dict[str, Any] = {} if customers is None else {"customers": customers}
    return write_config(env["tmp"], source=maildir_source(env["tmp"]), smtp_port=env["sink"].port,
                        database_url=env["url"], extra=extra, top=top, **kwargs)


def run(config: Path, clock: Callable[[], datetime] | None = None) -> Daemon:
    daemon = Daemon(load_config(config), clock or (lambda: datetime.now(UTC)))
    daemon.run_once()
    return daemon


def test_a_ticket_number_beyond_the_database_in_a_subject_is_a_new_ticket(env: dict[str, Any]) -> None:
    """[SUP-999999999999] made PostgreSQL refuse the lookup (INTEGER ids): the mail failed
    every attempt and went to quarantine instead of becoming a ticket."""
    config = configure(env)
    env["box"].add(make_mail(subject="[SUP-999999999999] [SUP-2147483648] hello", msgid="<big@acme.pl>"))
    daemon = run(config)
    with daemon.sessions() as session:
        assert session.scalars(select(Intake.disposition)).all() == ["ticket"]
        assert session.scalars(select(Ticket.id)).all() == [1]
