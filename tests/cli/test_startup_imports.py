"""A command imports what it uses and nothing else: start-up is mostly imports.

Each case runs the command in a new interpreter (as ``maild`` runs) and reads
``sys.modules`` when it is done. The figures are ``bench/startup.py``'s; here
only which libraries were loaded, never how long it took.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.helpers import deliver, maildir_source, make_mail, write_config
from tests.servers.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
# sqlalchemy.dialects.postgresql: on SQLite too, were its options passed as Index keywords (tables.for_postgresql)
HEAVY = ("sqlalchemy", "sqlalchemy.orm", "alembic", "jinja2", "imapclient", "maild.outbound.smtp", "mailparser",
         "holidays", "matplotlib", "tqdm", "aiosmtpd", "sqlalchemy.dialects.postgresql")

PROBE = """
import json, sys
from maild.cli.main import main
code = None
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
heavy = json.loads(sys.argv[2])
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}), file=sys.stderr)
"""


def loaded_by(*argv: str) -> tuple[int, set[str]]:
    """(exit code, which of HEAVY the command imported)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(argv)), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    return int(result["code"] or 0), set(result["loaded"])


def test_building_the_parser_imports_no_library() -> None:
    probe = ("import json, sys; from maild.cli.main import build_parser; build_parser(); "
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert json.loads(out) == []


def test_version_and_help_import_no_library() -> None:
    assert loaded_by("--version") == (0, set())
    assert loaded_by("--help") == (0, set())
    assert loaded_by("tickets", "--help") == (0, set())


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    """A config whose database is at the schema's head (a copy of one migrated once per test process,
    as a first ``status`` in an interpreter of its own had made it, ~0.45 s a test)."""
    return write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=1, migrated=True)


def test_queries_import_the_database_and_nothing_for_mail(config: Path) -> None:
    """``status``, ``tickets list|show``, ``report hours|sla``, ``contracts list`` and ``quarantine list``
    read the database: SQLAlchemy Core and
    nothing else, not its ORM (they read ``storage.tables`` on a Connection; the ORM and the mapped classes
    were a third of their start-up), no template engine, no mail client, no migration tool (the schema is
    at head), no progress bar without a terminal, and no public holiday tables (nothing they show is a
    deadline computed now)."""
    code, _ = loaded_by("--config", str(config), "tickets", "open", "--customer", "acme", "--subject", "Drukarka",
                        "--no-ack")
    assert code == 0
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    for argv in (["status"], ["tickets", "list"], ["tickets", "show", "SUP-1"],
                 ["report", "hours", "--month", month], ["report", "sla", "--month", month],
                 ["contracts", "list"], ["quarantine", "list"]):
        code, loaded = loaded_by("--config", str(config), *argv)
        assert code == 0, argv
        assert loaded == {"sqlalchemy"}, argv


def test_commands_that_change_tickets_still_load_the_orm(config: Path) -> None:
    """The other side of the line above: the desk changes tickets through the ORM (``tickets open``
    through the intake pipeline, ``time add`` below), so the lazy import is where it is needed, not
    lost."""
    code, loaded = loaded_by("--config", str(config), "tickets", "open", "--customer", "acme", "--subject", "Toner",
                             "--no-ack")
    assert code == 0
    assert "sqlalchemy.orm" in loaded


def test_presence_and_the_estimate_read_in_core(config: Path) -> None:
    """``consultants list|away|back`` and ``tickets list --json`` (the team's estimate) run the team
    (``desk.team``) on a Connection: its reads and its absences are ``tables`` in Core, so neither
    the ORM nor the mapped classes load (they were a third of these commands' start-up)."""
    names = ("sqlalchemy.orm", "maild.storage.models", "maild.desk.desk", "maild.storage.store", "jinja2")
    for argv in (["tickets", "list", "--json"], ["consultants", "list"], ["consultants", "list", "--json"],
                 ["consultants", "away", "anna@firma.pl", "--from", "2030-01-07", "--until", "2030-01-08"],
                 ["consultants", "back", "anna@firma.pl"]):
        code, loaded = modules_loaded(names, "--config", str(config), *argv)
        assert code == 0, argv
        assert loaded == set(), argv


def test_run_once_on_an_empty_mailbox_parses_nothing_and_sends_nothing(config: Path) -> None:
    """The daemon's start-up and an empty cycle: no mail parser (it loads in the parse worker, with
    the first mail), no migration tool, no charts, no progress bar without a terminal."""
    code, loaded = loaded_by("--config", str(config), "run", "--once")
    assert code == 0
    assert not loaded & {"alembic", "mailparser", "matplotlib", "tqdm", "aiosmtpd"}


# what an idle cycle has no use for: the ORM and the desk, the intake pipeline and the mail parser,
# the templates, the outbox and its SMTP client, the holiday tables (kept), IMAP on a Maildir
IDLE_UNUSED = ("sqlalchemy.orm", "jinja2", "holidays", "imapclient", "aiosmtplib", "mailparser", "alembic",
               "maild.storage.models", "maild.intake.pipeline", "maild.intake.message", "maild.intake.parsing",
               "maild.desk.desk", "maild.desk.sweeper", "maild.outbound.outbox", "maild.outbound.render")


def modules_loaded(names: tuple[str, ...], *argv: str) -> tuple[int, set[str]]:
    """(exit code, which of ``names`` the command imported)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(argv)), json.dumps(names)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    return int(result["code"] or 0), set(result["loaded"])


def test_an_idle_run_once_loads_nothing_for_work_it_has_not(config: Path) -> None:
    """After the first start (which syncs the customers, compiles the templates, keeps the holidays),
    ``run --once`` with nothing in the mailbox, nothing due in the outbox and nothing for the sweep
    asks the database in Core and loads none of the parts that would do the work."""
    code, _ = loaded_by("--config", str(config), "run", "--once")
    assert code == 0
    code, loaded = modules_loaded(IDLE_UNUSED, "--config", str(config), "run", "--once")
    assert code == 0
    assert loaded == set()


def test_check_loads_what_it_checks_and_not_the_desk(config: Path) -> None:
    """``check`` renders every template and reaches every server: Jinja2 and SQLAlchemy Core (the SMTP
    client is maild's own), but no ORM, no intake pipeline, no reports (the statement's words need none), no IMAP
    client for a Maildir, and no holiday tables once the daemon kept them."""
    code, _ = loaded_by("--config", str(config), "run", "--once")
    assert code == 0
    names = ("sqlalchemy", "jinja2", "sqlalchemy.orm", "holidays", "imapclient", "mailparser",
             "matplotlib", "maild.storage.models", "maild.intake.pipeline", "maild.billing.reports",
             "maild.desk.team")  # the commands' help it renders needs no team (its queries: 40 ms of start-up)
    code, loaded = modules_loaded(names, "--config", str(config), "check")
    assert code == 1  # the SMTP port (1) refuses; everything else is checked
    assert loaded == {"sqlalchemy", "jinja2"}


def test_run_once_with_mail_still_parses_and_sends(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """The lazy imports are the ones the work needs: a mail in the Maildir is parsed and answered."""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    now = datetime.now(timezone.utc)
    deliver(tmp_path / "Maildir", make_mail(msgid="<lazy-1@acme.pl>", date=now), now)
    code, loaded = loaded_by("--config", str(path), "run", "--once")
    assert code == 0
    assert {"sqlalchemy", "maild.outbound.smtp", "jinja2", "holidays"} <= loaded
    assert smtp_sink.wait_for(1)


def test_run_once_with_mail_after_the_first_start_ranks_tickets_without_the_holidays_library(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """A new ticket's peak ranking moves the windows' deadlines with the calendar's kept holidays
    (``DeskContext.days_off``): once a daemon kept them, the next start's mail loads no library."""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    now = datetime.now(timezone.utc)
    deliver(tmp_path / "Maildir", make_mail(msgid="<kept-1@acme.pl>", date=now), now)
    code, loaded = loaded_by("--config", str(path), "run", "--once")
    assert code == 0 and "holidays" in loaded  # the first start computes and keeps them
    deliver(tmp_path / "Maildir", make_mail(msgid="<kept-2@acme.pl>", subject="Deklaracja VAT", date=now), now)
    code, loaded = loaded_by("--config", str(path), "run", "--once")
    assert code == 0
    assert "holidays" not in loaded
    assert smtp_sink.wait_for(2)


def test_db_upgrade_loads_alembic_only_when_there_is_a_migration_to_run(tmp_path: Path) -> None:
    """On a new database the migrations run; at the head the revision row answers."""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=1)
    code, loaded = loaded_by("--config", str(path), "db", "upgrade")
    assert code == 0
    assert "alembic" in loaded  # a new file: every migration ran
    code, loaded = loaded_by("--config", str(path), "db", "upgrade")
    assert code == 0
    assert "alembic" not in loaded


def test_commands_that_read_presence_use_the_daemons_kept_holidays(config: Path) -> None:
    """``consultants list`` and ``tickets list --json`` (the team's estimate) build a calendar: from
    the holidays the daemon kept (read only), not from the library, once a daemon ran. (``report
    month``: the next test.)"""
    code, _ = loaded_by("--config", str(config), "run", "--once")  # keeps this year's holidays
    assert code == 0
    for argv in (["consultants", "list"], ["tickets", "list", "--json"]):
        code, loaded = loaded_by("--config", str(config), *argv)
        assert code == 0, argv
        assert "holidays" not in loaded, argv


def test_report_month_reads_in_core_with_the_kept_holidays(config: Path) -> None:
    """``report month`` reads the month on a Connection (``tables``, as ``report hours``): no ORM and
    no mapped classes; its calendar and the peak windows' statutory days off come from the holidays
    kept by whoever computed a deadline, so the library is not loaded either (June: every day it asks
    about is in this year, which was kept). Printed and as JSON."""
    # a ticket on an sla contract: its deadline is computed, and this year's holidays kept with it
    code, _ = loaded_by("--config", str(config), "tickets", "open", "--customer", "acme", "--subject", "Drukarka",
                        "--no-ack")
    assert code == 0
    year = datetime.now(timezone.utc).year
    kept = json.loads((config.parent / "var" / "cache" / "holidays.json").read_text(encoding="utf-8"))
    assert str(year) in {kept_year for entry in kept.values() for kept_year in entry["years"]}
    names = ("sqlalchemy.orm", "maild.storage.models", "holidays", "maild.desk.desk", "alembic")
    for extra in ([], ["--json"]):
        code, loaded = modules_loaded(names, "--config", str(config), "report", "month", "--month", f"{year}-06",
                                      *extra)
        assert code == 0, extra
        assert loaded == set(), extra


def test_time_add_books_through_the_desk_without_the_mail_commands(config: Path) -> None:
    """``time add`` books through the ``TicketDesk`` (the ORM, the desk), and parses its duration with
    ``rules.duration``: not the module of the commands consultants write in mail, nor the team
    (presence: the booking does not ask), templates, holidays (kept) or the intake pipeline."""
    code, _ = loaded_by("--config", str(config), "tickets", "open", "--customer", "acme", "--subject", "Drukarka",
                        "--no-ack")
    assert code == 0
    names = ("maild.desk.desk", "sqlalchemy.orm", "maild.desk.commands", "maild.desk.team", "jinja2", "holidays",
             "maild.intake.pipeline", "maild.outbound.render", "alembic")
    code, loaded = modules_loaded(names, "--config", str(config), "time", "add", "--by", "anna@firma.pl", "SUP-1", "15m")
    assert code == 0
    assert loaded == {"maild.desk.desk", "sqlalchemy.orm"}


def test_the_printed_digest_reads_in_core_and_sending_goes_through_the_desk(config: Path) -> None:
    """``maild digest`` prints what the morning digest would list, read on a Connection
    (``morning.QueueReader``): no ORM, mapped classes, desk, mail commands or HTML statement
    templates (the digest's HTML part is only for the mail). ``--send`` queues it through the desk."""
    code, _ = loaded_by("--config", str(config), "tickets", "open", "--customer", "acme", "--subject", "Drukarka",
                        "--no-ack")
    assert code == 0
    names = ("sqlalchemy.orm", "maild.storage.models", "maild.desk.desk", "maild.storage.store",
             "maild.desk.commands", "maild.billing.html", "maild.desk.digest_html", "holidays")
    for argv in (["digest"], ["digest", "--to", "anna@firma.pl"]):
        code, loaded = modules_loaded(names, "--config", str(config), *argv)
        assert code == 0, argv
        assert loaded == set(), argv
    code, loaded = modules_loaded(names, "--config", str(config), "digest", "--send")
    assert code == 0
    assert {"sqlalchemy.orm", "maild.desk.desk", "maild.desk.digest_html"} <= loaded


def test_storage_verify_reads_in_core(config: Path) -> None:
    """``storage verify`` reads the rows that name blobs on a Connection (``storage.audit``): no ORM."""
    names = ("sqlalchemy.orm", "maild.storage.models", "maild.storage.store")
    code, loaded = modules_loaded(names, "--config", str(config), "storage", "verify")
    assert code == 0
    assert loaded == set()


EXIT_PROBE = """
import atexit, gc, json, sys
# registered before the command's own hook, so it runs after it (atexit is last in, first out)
atexit.register(lambda: print(json.dumps({"frozen": gc.get_freeze_count()}), file=sys.stderr))
from maild.cli.main import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
"""


@pytest.mark.parametrize("argv", [["--version"], ["status"]])
def test_an_ending_command_keeps_its_objects_out_of_the_last_garbage_collection(config: Path, argv: list[str]) -> None:
    """The interpreter's collection at exit scanned every object a command had made (50-75 ms of
    each command's start-up, bench/README); ``main`` freezes them in an exit hook instead."""
    full = argv if argv == ["--version"] else ["--config", str(config), *argv]
    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, json.dumps(full)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert json.loads(proc.stderr.strip().splitlines()[-1])["frozen"] > 10_000, proc.stderr
