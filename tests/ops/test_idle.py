"""An idle cycle loads nothing it does not use, and work that is there is still done (issue 19).

Each run here is a new ``Daemon``, as ``maild run --once`` from cron is: nothing of the desk
is built before its first cycle, so the cycle decides from ``desk.idle``'s and ``queries``' Core
reads whether to load the ORM, the sweeper, the outbox and the templates. Each test has the
work waiting (a ticket past its first threshold, a digest due, mail due in the outbox, a
changed customers file) and asserts that a fresh daemon did it; and that a fresh daemon with
nothing to do built none of those parts.
"""
from __future__ import annotations

import mailbox
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.outbound.render import RenderError
from maild.storage.models import CustomerRow, OutboxRow
from tests.e2e.test_sla_e2e import deliver
from tests.helpers import CUSTOMERS, Clock, maildir_source, make_mail, write_config

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")
T0 = datetime(2026, 11, 16, 10, 0, tzinfo=WARSAW).astimezone(UTC)  # a Monday, open
LAZY = ("sessions", "ingestor", "parse_ahead", "sweeper", "outbox", "courier", "renderer")
NO_ASSIGNMENT = '\n[assignment]\nmode = "none"\n\n[escalation]\noutside_hours = "send"\n'


def fresh(path: Path, clock: Clock) -> Daemon:
    return Daemon(load_config(path), clock)


def started(path: Path, clock: Clock) -> Daemon:
    """A daemon that started (and let go of the database's run lock, for the next one)."""
    daemon = fresh(path, clock)
    daemon.release_run_lock()
    return daemon


def built(daemon: Daemon) -> set[str]:
    return {part for part in LAZY if part in daemon.__dict__}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_migrated_url")) if request.param == "postgresql" else ""


def test_a_ticket_past_its_threshold_is_escalated_by_a_fresh_run_once(tmp_path: Path, smtp_sink: Any,
                                                                      database_url: str) -> None:
    clock = Clock(T0)
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                        extra=NO_ASSIGNMENT, database_url=database_url)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    deliver(tmp_path / "Maildir", make_mail(subject="Problem z fakturą", msgid="<idle1@acme.pl>", date=T0), T0)
    assert fresh(path, clock).run_once().ingested  # the mail waiting is read
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [["jan@acme.pl"]]

    clock.now = T0 + timedelta(hours=1)  # nothing due: the next cycle loads none of the desk
    idle = fresh(path, clock)
    report = idle.run_once()
    assert (report.escalations, report.outbox.sent) == (0, 0)
    assert built(idle) == set()

    clock.now = T0 + timedelta(hours=13)  # past the first threshold (half of 24 h)
    daemon = fresh(path, clock)
    report = daemon.run_once()
    assert report.escalations == 1 and report.outbox.sent == 1
    assert "sweeper" in built(daemon)
    escalation = smtp_sink.wait_for(2)[-1]
    assert escalation.rcpt_tos == ["anna@firma.pl"] and "SLA" in escalation.parsed["Subject"]


def test_the_morning_digest_is_queued_by_a_fresh_run_once(tmp_path: Path, smtp_sink: Any) -> None:
    clock = Clock(datetime(2026, 11, 16, 7, 30, tzinfo=WARSAW).astimezone(UTC))
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, notifications="",
                        extra=NO_ASSIGNMENT)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    fresh(path, clock).run_once()  # the first start: the database, the customers, the templates
    before = fresh(path, clock)
    before.run_once()  # before 08:00: no digest, nothing built
    assert built(before) == set() and smtp_sink.messages == []

    clock.now = datetime(2026, 11, 16, 8, 5, tzinfo=WARSAW).astimezone(UTC)
    fresh(path, clock).run_once()
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.wait_for(2)) == ["anna@firma.pl", "szef@firma.pl"]

    clock.now += timedelta(minutes=5)  # queued today: the next cycle is idle again
    after = fresh(path, clock)
    after.run_once()
    assert built(after) == set() and len(smtp_sink.messages) == 2


def test_mail_due_in_the_outbox_is_sent_by_a_fresh_run_once(tmp_path: Path, smtp_sink: Any,
                                                           database_url: str) -> None:
    clock = Clock(T0)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    deliver(tmp_path / "Maildir", make_mail(subject="Drukarka", msgid="<idle2@acme.pl>", date=T0), T0)
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=1, database_url=database_url)
    fresh(path, clock).run_once()  # the relay refuses: the acknowledgement stays queued
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                        database_url=database_url)
    clock.now += timedelta(minutes=1)
    daemon = fresh(path, clock)
    assert daemon.run_once().outbox.sent == 1
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [["jan@acme.pl"]]
    with daemon.sessions() as session:
        assert list(session.scalars(select(OutboxRow.status))) == ["sent"]


def test_a_changed_customers_file_is_synced_and_an_unchanged_one_left_alone(tmp_path: Path,
                                                                           database_url: str) -> None:
    clock = Clock(T0)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=1, database_url=database_url)

    def synced(daemon: Daemon) -> dict[str, datetime | None]:
        with daemon.sessions() as session:
            return {row.id: row.synced_at for row in session.scalars(select(CustomerRow))}

    first = started(path, clock)
    assert synced(first) == {"acme": T0, "nord": T0, "kow": T0}
    clock.now = T0 + timedelta(hours=1)
    again = started(path, clock)
    assert built(again) == set()  # the file as it was: no sync, no ORM
    assert synced(again) == {"acme": T0, "nord": T0, "kow": T0}

    (tmp_path / "customers.toml").write_text(CUSTOMERS.replace('name = "Nord AS"', 'name = "Nord ASA"') + """
[[customers]]
id = "nowy"
name = "Nowy"
addresses = ["biuro@nowy.pl"]
""", encoding="utf-8")
    clock.now = T0 + timedelta(hours=2)
    changed = started(path, clock)
    assert synced(changed) == {"acme": clock.now, "nord": clock.now, "kow": clock.now, "nowy": clock.now}
    with changed.sessions() as session:
        nord = session.get(CustomerRow, "nord")
        assert nord is not None and nord.name == "Nord ASA"


def test_a_broken_template_still_refuses_the_start(tmp_path: Path) -> None:
    """The start compiles the templates unless this very snapshot compiled before: an edit after a
    good start is compiled (and refused) at the next start, not with the first mail."""
    templates = tmp_path / "templates"
    for language in ("pl", "en"):
        (templates / language).mkdir(parents=True)
        (templates / language / "ack.txt").write_text("{% block subject %}Re{% endblock %}"
                                                      "{% block body %}ok{% endblock %}\n", encoding="utf-8")
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=1,
                        top=f'templates_dir = "{templates}"')
    clock = Clock(T0)
    fresh(path, clock).run_once()
    assert built(started(path, clock)) == set()  # the same snapshot: known to compile
    (templates / "en" / "ack.txt").write_text("{% block subject %}{{ broken {% endblock %}", encoding="utf-8")
    with pytest.raises(RenderError, match="en/ack.txt"):
        fresh(path, clock)


BOB = '\n[[consultants]]\nemail = "bob@firma.pl"\nname = "Bob Kowal"\nrole = "consultant"\n'


def test_an_absent_consultants_ticket_is_reassigned_by_a_fresh_run_once(tmp_path: Path, smtp_sink: Any,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Kowalski's occasional contract promises no reaction time: no escalation is ever due, so only
    the absence makes the sweep's work."""
    from maild.cli.main import main
    from maild.storage.models import Ticket

    clock = Clock(T0)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, extra=BOB)
    deliver(tmp_path / "Maildir", make_mail(sender="Jan <biuro@kowalski.pl>", subject="Pytanie",
                                            msgid="<idle3@kowalski.pl>", date=T0), T0)
    daemon = fresh(path, clock)
    daemon.run_once()
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.next_escalation_at is None
        holder = ticket.assigned_to
    assert holder in ("anna@firma.pl", "bob@firma.pl")
    clock.now = T0 + timedelta(days=1)
    assert fresh(path, clock).run_once().escalations == 0
    assert "sweeper" not in built(daemon)
    tuesday = (T0 + timedelta(days=1)).astimezone(WARSAW).date().isoformat()
    assert main(["--config", str(path), "consultants", "away", str(holder), "--from", tuesday,
                 "--until", tuesday]) == 0
    moved = fresh(path, clock)
    moved.run_once()
    assert "sweeper" in built(moved)
    with moved.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.assigned_to not in (None, holder)


def test_a_quiet_resolved_ticket_is_closed_by_a_fresh_run_once(tmp_path: Path, smtp_sink: Any) -> None:
    from maild.storage.models import Ticket

    clock = Clock(T0)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    deliver(tmp_path / "Maildir", make_mail(sender="Jan <biuro@kowalski.pl>", subject="Pytanie",
                                            msgid="<idle4@kowalski.pl>", date=T0), T0)
    daemon = fresh(path, clock)
    daemon.run_once()
    with daemon.sessions() as session, session.begin():
        ticket = session.get(Ticket, 1)
        assert ticket is not None
        ticket.status, ticket.resolved_at = "resolved", T0 + timedelta(hours=1)
    clock.now = T0 + timedelta(days=3)  # close_after_days is 7
    quiet = fresh(path, clock)
    assert quiet.run_once().closed == 0 and built(quiet) == set()
    clock.now = T0 + timedelta(days=8)
    closing = fresh(path, clock)
    assert closing.run_once().closed == 1
    with closing.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.status == "closed"


def test_a_package_about_to_expire_is_reminded_by_a_fresh_run_once(tmp_path: Path, smtp_sink: Any) -> None:
    clock = Clock(T0)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    soon = (T0 + timedelta(days=5)).date().isoformat()
    customers = CUSTOMERS.replace("valid_until = 2099-12-31", f"valid_until = {soon}")
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, customers=customers)
    (tmp_path / "far").mkdir()
    mailbox.Maildir(tmp_path / "far" / "Maildir", create=True)
    far = write_config(tmp_path / "far", source=maildir_source(tmp_path / "far"), smtp_port=smtp_sink.port)
    fresh(far, clock).run_once()
    outside = fresh(far, clock)
    outside.run_once()  # the package runs to 2099: no reminder, nothing built
    assert built(outside) == set() and smtp_sink.messages == []
    daemon = fresh(path, clock)
    assert daemon.run_once().outbox.sent == 1
    reminder = smtp_sink.wait_for(1)[0]
    assert reminder.rcpt_tos == ["kari@nord.no"]
    again = fresh(path, clock)
    again.run_once()  # reminded once: the key is in the outbox, the next cycle is idle
    assert built(again) == set() and len(smtp_sink.messages) == 1
