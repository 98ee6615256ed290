"""``tickets list`` and ``tickets show`` as people read them, and the list's filters.

Tickets come from real mail through the daemon (Maildir in, the SMTP sink out).
Text output: the business time zone to the minute with its abbreviation, 80
columns; JSON: UTC, to the second.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Ticket
from tests.helpers import Clock, deliver, maildir_source, make_mail, write_config

UTC = timezone.utc
LONG_SUBJECT = "Zestawienie VAT nie zgadza się z rejestrem sprzedaży po aktualizacji do wersji 2026.3 w oddziale"
BODY = "".join(f"Linia {i}: " + "treść zgłoszenia " * 12 + "\n" for i in range(1, 31))
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def config(tmp_path: Path, smtp_sink: Any) -> Path:
    """Three tickets four days ago: acme (sla, due after 24 h, so overdue now), nord (prepaid), unknown."""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                        extra="\n[assignment]\nmode = \"none\"\n")  # the filters see who assigned what
    start = datetime.now(UTC).replace(microsecond=123456) - timedelta(days=4)
    for i, (sender, subject, body) in enumerate([
        ("Jan <jan@acme.pl>", LONG_SUBJECT, BODY),
        ("Kari <kari@nord.no>", "Report", "Hello\n"),
        ("Someone <someone@a-very-long-unknown-domain.example>", "Oferta", "Dzień dobry\n"),
    ]):
        deliver(tmp_path / "Maildir", make_mail(sender=sender, subject=subject, body=body, msgid=f"<t{i}@x>",
                                                date=start), start)
    daemon = Daemon(load_config(path), Clock(start))
    daemon.run_once()
    with daemon.sessions() as session, session.begin():
        ticket = session.get(Ticket, 2)
        assert ticket is not None
        ticket.assigned_to = "anna@firma.pl"
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> str:
    capsys.readouterr()
    assert cli_main(["--config", str(config), *args]) == 0
    return capsys.readouterr().out


def refs(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> list[str]:
    return [t["ref"] for t in json.loads(run(capsys, config, "tickets", "list", "--json", *args))]


def test_list_fits_80_columns_in_local_time(capsys: pytest.CaptureFixture[str], config: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # not a terminal: 80
    out = run(capsys, config, "tickets", "list")
    lines = out.splitlines()
    assert len(lines) == 5 and all(len(line) <= 80 for line in lines), out
    assert lines[0] == "3 tickets"
    header = lines[1]
    assert re.search(r"due (CET|CEST)\b", header), header
    assert "…" in out and "SUP-1" in out and LONG_SUBJECT[:20] in out
    assert "Z " not in out and "T0" not in out and "UTC" not in out  # no raw ISO UTC in text
    monkeypatch.setenv("COLUMNS", "200")
    assert LONG_SUBJECT in run(capsys, config, "tickets", "list")


def test_list_filters_combine(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert refs(capsys, config) == ["SUP-1", "SUP-2", "SUP-3"]
    assert refs(capsys, config, "--customer", "acme") == ["SUP-1"]
    assert refs(capsys, config, "--assigned", "Anna@Firma.pl") == ["SUP-2"]
    assert refs(capsys, config, "--assigned", "none") == ["SUP-1", "SUP-3"]
    assert refs(capsys, config, "--tier", "unverified") == ["SUP-3"]
    assert refs(capsys, config, "--overdue") == ["SUP-1"]
    assert refs(capsys, config, "--overdue", "--customer", "nord") == []
    assert refs(capsys, config, "--assigned", "none", "--tier", "sla", "--status", "all") == ["SUP-1"]


def test_list_names_an_unknown_customer_and_not_an_empty_queue(capsys: pytest.CaptureFixture[str],
                                                                 config: Path) -> None:
    for view in ((), ("--json",)):
        assert cli_main(["--config", str(config), "tickets", "list", *view, "--customer", "nope"]) == 2
        captured = capsys.readouterr()
        assert "--customer nope: no such customer" in captured.err and "0 tickets" not in captured.out
    assert run(capsys, config, "tickets", "list", "--customer", "nord").splitlines()[0] == "1 ticket"


def test_list_rejects_an_unknown_tier(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["--config", str(config), "tickets", "list", "--tier", "gold"])
    assert info.value.code == 2


def test_json_times_are_utc_to_the_second(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    ticket = json.loads(run(capsys, config, "tickets", "show", "SUP-1", "--json"))
    stamps = [ticket["created_at"], ticket["reaction_due"], ticket["updated_at"],
              *(m["date"] for m in ticket["messages"])]
    assert stamps and all(ISO_UTC.match(s) for s in stamps), stamps


def test_show_prints_whole_messages_in_local_time(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    out = run(capsys, config, "tickets", "show", "SUP-1")
    for line in BODY.splitlines():
        assert f"    {line.rstrip()}" in out  # every line, whole: nothing cut at 4 lines or 100 characters
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d (CET|CEST), reaction due", out), out
    assert "Z," not in out and "+00:00" not in out


def test_show_gives_the_scope_guess_with_the_words_the_mail_wrote(capsys: pytest.CaptureFixture[str],
                                                                  config: Path) -> None:
    """The reasons line read "scope installation guessed from 'aktualizac'" (the stem)."""
    out = run(capsys, config, "tickets", "show", "SUP-1")
    assert "scope installation guessed from 'aktualizacji'" in out, out
