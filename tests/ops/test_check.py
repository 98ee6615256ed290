"""`maild check` against real Dovecot, SMTP sink, SQLite and PostgreSQL.

One line per check; exit 0 when all is well, 1 naming the failing part.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from maild.cli.main import main
from maild.config import Config
from maild.desk.commands import help_lines
from maild.ops.check import sample_context
from maild.outbound.render import Renderer
from tests.helpers import CUSTOMERS, maildir_source, write_config
from tests.servers.common import free_port
from tests.e2e.test_daemon import imap_table

ROOT = Path(__file__).resolve().parents[2]
MARKS = ("ok  ", "FAIL", "warn", "info")


pytestmark = pytest.mark.usefixtures("restore_logging")


def check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    code = main(["--config", str(config), "check"])
    out = capsys.readouterr().out
    lines: dict[str, str] = {}
    for line in out.splitlines():
        assert line[:4] in MARKS, f"not one line per check: {line!r}"
        name, _, detail = line[5:].partition(": ")
        lines[name] = f"{line[:4].strip()} {detail}"
    return code, lines


def test_all_fine_with_a_new_sqlite_database(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    code, lines = check(config, capsys)
    assert code == 0, lines
    assert set(lines) >= {"config", "customers", "storage", "database", "templates", "mailbox", "smtp"}
    assert lines["database"].startswith("ok") and "will be created" in lines["database"]
    assert "idle yes" in lines["mailbox"] and "move yes" in lines["mailbox"]
    assert "EHLO" in lines["smtp"]
    assert lines["templates"].startswith("ok") and "pl, en" in lines["templates"]
    assert not (tmp_path / "var" / "maild.db").exists(), "check creates no database"


def test_unknown_holidays_country(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Loading the config leaves the holiday settings to the calendar's builders; check still names them."""
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                          extra='[calendar]\nholidays_country = "XX"\n')
    code, lines = check(config, capsys)
    assert code == 1
    assert lines["calendar"].startswith("FAIL") and "calendar.holidays_country" in lines["calendar"], lines
    assert lines["templates"].startswith("ok"), lines
    assert main(["--config", str(config), "run", "--once"]) == 2  # a config error, before any mail is read
    assert "calendar.holidays_country" in capsys.readouterr().err


def test_wrong_imap_password(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account, password="nie-to-haslo-42"),
                          smtp_port=smtp_sink.port)
    code, lines = check(config, capsys)
    assert code == 1
    assert lines["mailbox"].startswith("FAIL") and "login" in lines["mailbox"]
    assert "nie-to-haslo-42" not in lines["mailbox"]
    assert all(v.startswith(("ok", "warn")) for k, v in lines.items() if k != "mailbox")


def test_smtp_down(tmp_path: Path, imap_account: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=free_port())
    code, lines = check(config, capsys)
    assert code == 1 and lines["smtp"].startswith("FAIL")
    assert lines["mailbox"].startswith("ok")


def test_unwritable_storage(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                            capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                          database_url=f"sqlite:///{tmp_path / 'db' / 'maild.db'}", compiled=False)
    (tmp_path / "var").write_text("a file where the storage directory should be")  # even root cannot write here
    code, lines = check(config, capsys)
    assert code == 1 and lines["storage"].startswith("FAIL")
    assert lines["smtp"].startswith("ok")


def test_broken_template(tmp_path: Path, imap_account: Any, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "pl" / "ack.txt").write_text("{% block subject %}{{ ref }{% endblock %}{% block body %}{% endblock %}")
    monkeypatch.setattr(Config, "templates_path", property(lambda self: templates))
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    code, lines = check(config, capsys)
    assert code == 1 and lines["templates"].startswith("FAIL") and "pl/ack.txt" in lines["templates"]


def test_old_template_copy_is_named_and_passes(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A templates_dir copied before notify_new existed: the packaged one is used, and check says so."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    for language in ("pl", "en"):
        (templates / language / "notify_new.txt").unlink()
    monkeypatch.setattr(Config, "templates_path", property(lambda self: templates))
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    code, lines = check(config, capsys)
    assert code == 0, lines
    assert lines["templates"].startswith("ok") and "statement's HTML part" in lines["templates"]
    assert lines["templates_dir"].startswith("info") and str(templates) in lines["templates_dir"]
    assert "en/notify_new.txt, pl/notify_new.txt" in lines["templates_dir"]
    assert "ack.txt" not in lines["templates_dir"]


def test_packaged_templates_need_no_info_line(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    code, lines = check(config, capsys)
    assert code == 0 and "templates_dir" not in lines


@pytest.mark.parametrize(("name", "old", "new"), [
    ("pl/ack.txt", "{{ ref }}.", "{{ no_such_value }}."),
    ("en/statement.html", '{{ s.customer_name }}{% endmacro %}', '{{ s.no_such_value }}{% endmacro %}'),
])
def test_template_that_fails_with_sample_values(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                name: str, old: str, new: str) -> None:
    """Compiles, but fails when rendered (a variable the mail does not have): FAIL naming the
    template, its folder and the missing name, before a customer's mail is due."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    text = (templates / name).read_text(encoding="utf-8")
    assert old in text
    (templates / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    monkeypatch.setattr(Config, "templates_path", property(lambda self: templates))
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port)
    code, lines = check(config, capsys)
    assert code == 1, lines
    failure = lines["templates"]
    assert failure.startswith("FAIL") and name in failure and "no_such_value" in failure, failure
    assert str(templates) in failure and "sample" in failure, failure
    assert all(v.startswith(("ok", "warn", "info")) for k, v in lines.items() if k != "templates"), lines


def test_postgres_reachable_then_migrated(tmp_path: Path, imap_account: Any, smtp_sink: Any, pg_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, database_url=pg_url)
    code, lines = check(config, capsys)
    assert code == 0 and "reachable, schema at empty, will migrate" in lines["database"]
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    capsys.readouterr()
    code, lines = check(config, capsys)
    assert code == 0 and "up to date" in lines["database"]


def test_postgres_unreachable(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, database_url=url)
    code, lines = check(config, capsys)
    assert code == 1 and lines["database"].startswith("FAIL")


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


@pytest.mark.parametrize(("language", "lines"), [
    ("pl", {"notify_new": ["  Termin:     2.01.2026 r., godz. 11:00 (czas polski)",
                           "  Kolejka:    SLA P1 - w wiadomości pilne słowo: „Awaria”"],
            "notify_reply": ["  Kolejka:    SLA P1 - nadany przez anna@x.pl, powód: „pilne”"],
            "escalation": ["Termin:        2.01.2026 r., godz. 11:00 (czas polski; pozostało 1 godz.)"],
            "digest": ["SUP-1  SLA P1  otwarte  wiek 1 godz.  PO TERMINIE 10 min  (nieprzypisane)"],
            "authority_notice": ["Powód: nic nie potwierdza, że wiadomość jest od Ciebie: nie odpowiada na wiadomość,"]}),
    ("en", {"notify_new": ["  Deadline:  2 January 2026, 11:00 (Polish time)",
                           "  Queue:     SLA P1 - urgent word: “Awaria”"],
            "notify_reply": ["  Queue:     SLA P1 - set by anna@x.pl, reason: “pilne”"],
            "escalation": ["Deadline:   2 January 2026, 11:00 (Polish time; 1 h left)"],
            "authority_notice": ["Why: nothing shows the mail is yours: it answers no mail maild sent you,"]}),
])
def test_check_renders_with_the_values_the_daemon_words_for_its_reader(language: str,
                                                                       lines: dict[str, list[str]]) -> None:
    """The samples carried an ISO deadline ("2026-01-02 10:00"), "1 h" left in both languages,
    the reason "urgent", two help lines and an authority notice without its code: maild check's
    render test saw shapes no mail has. Now the daemon's own functions word them per reader."""
    renderer = Renderer(ROOT / "templates")
    for name in ("notify_new", "notify_reply", "escalation", "digest", "command_error", "authority_notice"):
        _, body = renderer.render(name, language, sample_context(name, language))
        assert not ISO_TIME.search(body), (name, body)
        for line in lines.get(name, []):
            assert line in body.splitlines(), (name, line, body)
        if name == "command_error":
            assert all(f"  {help}" in body.splitlines() for help in help_lines(language)), body
        if name.startswith("notify_"):
            assert ", ".join(help_lines(language)) in body, body


def test_a_customers_file_the_start_would_refuse_fails_the_check(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``maild run`` refuses a file that drops more than ``customers_max_removed_percent`` of the
    database's customers (exit 2, and systemd restarts it into the same refusal): check said
    "ok customers: 0 customers" for an emptied file and exit 0, the upgrade path's green light."""
    (tmp_path / "Maildir").mkdir()
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=free_port(), migrated=True)
    assert main(["--config", str(config), "contracts", "sync"]) == 0
    capsys.readouterr()
    (tmp_path / "customers.toml").write_text("", encoding="utf-8")
    code, lines = check(config, capsys)
    assert code == 1
    assert lines["customers"].startswith("FAIL") and "would remove 3 of the 3 customers" in lines["customers"]
    assert "--allow-removals" in lines["customers"], lines["customers"]


def test_what_the_files_leave_unpriced_or_unassigned_is_warned_about(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The example config promises "Unset: such hours are listed but priced at nothing, and `maild
    check` warns", and a customer's ``consultant`` who is not one of the [[consultants]] is passed
    over without a word: check said nothing of either."""
    (tmp_path / "Maildir").mkdir()
    customers = CUSTOMERS.replace('id = "acme"\n', 'id = "acme"\nconsultant = "ania@firma.pl"\n', 1)
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=free_port(), customers=customers)
    _, lines = check(config, capsys)
    assert lines["billing"].startswith("warn") and "[billing] occasional_hourly_rate" in lines["billing"]
    assert lines["assignment"].startswith("warn") and "ania@firma.pl" in lines["assignment"], lines
    write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=free_port(),
                 customers=CUSTOMERS.replace('id = "acme"\n', 'id = "acme"\nconsultant = "anna@firma.pl"\n', 1),
                 extra="[billing]\noccasional_hourly_rate = 300\n")
    _, lines = check(config, capsys)
    assert "billing" not in lines and "assignment" not in lines, lines
