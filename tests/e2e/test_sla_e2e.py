"""The SLA clock end to end: Maildir in, the daemon's cycle with a controllable clock, a real SMTP server out.

Each test delivers mail with a chosen arrival time (the Maildir unique name),
moves the clock and runs ``Daemon.run_once``; it asserts on what the SMTP
server received, what the database holds and what ``maild report sla`` says.
"""
from __future__ import annotations

import itertools
import json
import mailbox
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from maild.cli import common
from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import CycleReport, Daemon
from maild.storage.models import Escalation, Ticket
from tests.helpers import CUSTOMERS, Clock, consultant_to, maildir_source, make_mail, write_config

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")

# A second consultant and a second manager who read English, so every level
# shows that each recipient gets the mail in their own language.
MORE_PEOPLE = """
[[consultants]]
email = "piotr@firma.pl"
name = "Piotr"
role = "consultant"
language = "en"

[[consultants]]
email = "boss@firma.pl"
name = "Boss"
role = "manager"
language = "en"
"""
# These tests follow a calendar-clock ticket through the night, level by level.
SEND_AT_NIGHT = '\n[escalation]\noutside_hours = "send"\n'

_unique = itertools.count(1)


def warsaw(text: str) -> datetime:
    """'2026-11-16 10:00' in Warsaw, as aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=WARSAW).astimezone(UTC)


def deliver(root: Path, raw: bytes, at: datetime) -> None:
    """Put a mail into the Maildir as a delivery agent would at ``at`` (the unique name carries the time)."""
    name = f"{int(at.timestamp())}.M{at.microsecond}P{next(_unique):07d}.test"
    (root / "tmp" / name).write_bytes(raw)
    (root / "tmp" / name).rename(root / "new" / name)


class World:
    """A configured daemon on a Maildir and the test's SMTP sink, with a clock the test moves."""

    def __init__(self, tmp: Path, sink: Any, start: datetime, *, customers: str = CUSTOMERS, extra: str = "",
                 database_url: str = "") -> None:
        self.clock = Clock(start)
        self.sink = sink
        self.root = tmp / "Maildir"
        mailbox.Maildir(self.root, create=True)
        if "[assignment]" not in extra:
            # These tests are about who hears of an unassigned ticket; assignment has its own.
            extra += '\n[assignment]\nmode = "none"\n'
        self.path = write_config(tmp, source=maildir_source(tmp), smtp_port=sink.port, extra=extra,
                                 customers=customers, database_url=database_url, migrated=True)
        self.daemon = Daemon(load_config(self.path), self.clock)

    def at(self, when: datetime) -> World:
        self.clock.now = when
        return self

    def mail(self, **kwargs: Any) -> None:
        """A mail in the mailbox; a consultant's goes to their personal address (proof it is theirs)."""
        sender = str(kwargs.get("sender", ""))
        if "to" not in kwargs and "@firma.pl" in sender:
            kwargs["to"] = consultant_to(self.path, sender.split("<")[-1].rstrip(">").strip())
        deliver(self.root, make_mail(date=self.clock.now, **kwargs), self.clock.now)

    def run(self) -> CycleReport:
        return self.daemon.run_once()

    def ticket(self, number: int = 1) -> Ticket:
        with self.daemon.sessions() as session:
            ticket = session.get(Ticket, number)
            assert ticket is not None
            session.expunge(ticket)
            return ticket

    def cli(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
        monkeypatch.setattr(common, "clock", self.clock)
        capsys.readouterr()
        assert cli_main(["--config", str(self.path), *args]) == 0
        out = capsys.readouterr().out
        return json.loads(out) if "--json" in args else out

    def escalations(self) -> list[tuple[str, str]]:
        """(recipient, subject) of every escalation mail the SMTP server has seen, in order."""
        return [(rcpt, m.parsed["Subject"]) for m in self.sink.messages
                if "SLA" in m.parsed["Subject"] for rcpt in m.rcpt_tos]


def body(received: Any) -> str:
    return str(received.parsed.get_body(preferencelist=("plain",)).get_content())


T0 = warsaw("2026-11-16 10:00")  # a Monday


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> World:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    return World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE + SEND_AT_NIGHT, database_url=url)


@pytest.fixture
def lite(tmp_path: Path, smtp_sink: Any) -> World:
    return World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE + SEND_AT_NIGHT)


def test_ticket_crosses_each_threshold_once_to_the_right_people(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world.mail(subject="Problem z fakturą", msgid="<esc1@acme.pl>")
    world.run()
    ticket = world.ticket()
    assert ticket.reaction_due == T0 + timedelta(hours=24)
    assert ticket.next_escalation_at == T0 + timedelta(hours=12)
    assert [m.rcpt_tos for m in world.sink.messages] == [["jan@acme.pl"]]

    world.at(T0 + timedelta(hours=11, minutes=59)).run()
    assert world.escalations() == []

    world.at(T0 + timedelta(hours=12)).run()
    world.run()  # a second sweep at the same moment sends nothing more
    assert sorted(world.escalations()) == [
        ("anna@firma.pl", "[SUP-1] Eskalacja SLA 1/3: Problem z fakturą"),
        ("piotr@firma.pl", "[SUP-1] SLA escalation 1/3: Problem z fakturą"),
    ]
    [to_anna] = [m for m in world.sink.messages if m.rcpt_tos == ["anna@firma.pl"]]
    text = body(to_anna)
    assert "50%" in text and "Acme" in text and "acme-sla" in text and "jan@acme.pl" in text
    assert "Termin:        17.11.2026 r., godz. 10:00 (czas polski; pozostało 12 godz.)\r\n" in text, text  # the zone named
    assert "Proszę o pomoc z wydrukiem faktury." in text
    assert to_anna.parsed["Auto-Submitted"] == "auto-generated"

    world.at(T0 + timedelta(hours=19, minutes=12)).run()
    assert sorted(world.escalations()[2:]) == [
        ("boss@firma.pl", "[SUP-1] SLA escalation 2/3: Problem z fakturą"),
        ("szef@firma.pl", "[SUP-1] Eskalacja SLA 2/3: Problem z fakturą"),
    ]
    assert "(Polish time; 4 h 48 min left)\r\n" in body(world.sink.received_for("boss@firma.pl")[0])

    world.at(T0 + timedelta(hours=24)).run()
    assert sorted(world.escalations()[4:]) == [
        ("boss@firma.pl", "[SUP-1] SLA BREACH: Problem z fakturą"),
        ("szef@firma.pl", "[SUP-1] PRZEKROCZONE SLA: Problem z fakturą"),
    ]
    world.at(T0 + timedelta(days=3)).run()
    counts = Counter(rcpt for rcpt, _ in world.escalations())
    assert counts == {"anna@firma.pl": 1, "piotr@firma.pl": 1, "szef@firma.pl": 2, "boss@firma.pl": 2}
    ticket = world.ticket()
    assert ticket.escalation_level == 3 and ticket.next_escalation_at is None
    assert ticket.breached_at == T0 + timedelta(hours=24)
    with world.daemon.sessions() as session:
        rows = session.scalars(select(Escalation).order_by(Escalation.level)).all()
        assert [(r.level, r.breach, r.skipped) for r in rows] == [(0, False, []), (1, False, []), (2, True, [])]

    [row] = world.cli(capsys, monkeypatch, "report", "sla", "--month", "2026-11", "--json")["contracts"]
    assert (row["contract_id"], row["kind"], row["tickets"], row["met"], row["missed"], row["open"]) == (
        "acme-sla", "sla", 1, 0, 1, 0)
    assert row["missed_refs"] == ["SUP-1"]


def test_consultant_reply_stops_further_escalations(
    lite: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lite.mail(subject="Problem z fakturą", msgid="<esc2@acme.pl>")
    lite.run()
    lite.at(T0 + timedelta(hours=12)).run()
    assert len(lite.escalations()) == 2
    lite.at(T0 + timedelta(hours=13))
    lite.mail(sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-1] Problem z fakturą", msgid="<r2@firma.pl>",
              body="#time 30m consultation\n\nProszę sprawdzić ustawienia wydruku.\n")
    lite.run()
    ticket = lite.ticket()
    assert ticket.first_response_at == T0 + timedelta(hours=13)
    assert ticket.next_escalation_at is None
    for hours in (19, 20, 24, 30, 72):
        lite.at(T0 + timedelta(hours=hours)).run()
    assert len(lite.escalations()) == 2, "no escalation after the first response"
    [row] = lite.cli(capsys, monkeypatch, "report", "sla", "--month", "2026-11", "--json")["contracts"]
    assert (row["tickets"], row["met"], row["missed"], row["median_reaction_minutes"]) == (1, 1, 0, 13 * 60)


def test_first_level_goes_to_the_assigned_consultant_only(lite: World) -> None:
    lite.mail(subject="Problem z fakturą", msgid="<esc3@acme.pl>")
    lite.run()
    lite.at(T0 + timedelta(hours=1))
    # An internal note assigns the ticket: no reply to the customer, so the clock runs on.
    lite.mail(sender="anna@firma.pl", subject="Re: [SUP-1] Problem z fakturą", msgid="<as3@firma.pl>",
              body="#internal\n#assign piotr@firma.pl\n\nPiotr zna ten moduł.\n")
    lite.run()
    assert lite.ticket().first_response_at is None
    lite.at(T0 + timedelta(hours=12)).run()
    assert lite.escalations() == [("piotr@firma.pl", "[SUP-1] SLA escalation 1/3: Problem z fakturą")]
    assert "piotr@firma.pl" in body(lite.sink.received_for("piotr@firma.pl")[0])
    lite.at(T0 + timedelta(hours=20)).run()
    assert sorted(r for r, _ in lite.escalations()[1:]) == ["boss@firma.pl", "szef@firma.pl"]


def test_downtime_catch_up_sends_one_mail_that_says_so(lite: World) -> None:
    lite.mail(subject="Problem z fakturą", msgid="<esc4@acme.pl>")
    lite.run()
    # maild was down from T0 until past the 80 % threshold.
    lite.at(T0 + timedelta(hours=20)).run()
    assert sorted(lite.escalations()) == [
        ("boss@firma.pl", "[SUP-1] SLA escalation 2/3: Problem z fakturą"),
        ("szef@firma.pl", "[SUP-1] Eskalacja SLA 2/3: Problem z fakturą"),
    ]
    assert "Wcześniejszy poziom eskalacji 1 minął" in body(lite.sink.received_for("szef@firma.pl")[0])
    assert "Earlier escalation level 1 was passed" in body(lite.sink.received_for("boss@firma.pl")[0])
    with lite.daemon.sessions() as session:
        [row] = session.scalars(select(Escalation)).all()
        assert (row.level, row.skipped) == (1, [0])
    # Down again past the deadline and beyond: the breach is still reported, once.
    lite.at(T0 + timedelta(days=2)).run()
    lite.at(T0 + timedelta(days=3)).run()
    assert sorted(s for _, s in lite.escalations()[2:]) == [
        "[SUP-1] PRZEKROCZONE SLA: Problem z fakturą", "[SUP-1] SLA BREACH: Problem z fakturą"]
    assert lite.ticket().breached_at == T0 + timedelta(hours=24)


def test_downtime_past_every_threshold_sends_only_the_breach(lite: World) -> None:
    lite.mail(subject="Problem z fakturą", msgid="<esc5@acme.pl>")
    lite.run()
    lite.at(T0 + timedelta(hours=30)).run()
    assert sorted(s for _, s in lite.escalations()) == [
        "[SUP-1] PRZEKROCZONE SLA: Problem z fakturą", "[SUP-1] SLA BREACH: Problem z fakturą"]
    text = body(lite.sink.received_for("szef@firma.pl")[0])
    assert "poziomy eskalacji 1 i 2 minęły" in text and "po terminie o 6 godz." in text


BUSINESS_CUSTOMERS = CUSTOMERS.replace(
    "  reaction_hours = 24\n", '  reaction_hours = 4\n  reaction_clock = "business"\n', 1)


@pytest.fixture
def business(tmp_path: Path, smtp_sink: Any) -> World:
    return World(tmp_path, smtp_sink, warsaw("2026-11-10 14:00"), customers=BUSINESS_CUSTOMERS)


def test_business_clock_waits_for_opening_hours_across_a_holiday(business: World) -> None:
    # Tuesday 14:00; Wednesday 11 November is a public holiday in Poland.
    business.mail(subject="Problem z fakturą", msgid="<biz1@acme.pl>")
    business.run()
    ticket = business.ticket()
    assert ticket.reaction_due == warsaw("2026-11-12 10:00"), "2 h on Tuesday + 2 h on Thursday"
    ack = body(business.sink.messages[0])
    assert "do czwartku 12.11.2026 r., godz. 10:00" in ack and "Europe/Warsaw" not in ack
    # 50 % is reached at Tuesday's closing; the mail waits for Thursday's opening.
    for moment in ("2026-11-10 16:00", "2026-11-10 23:30", "2026-11-11 00:00", "2026-11-11 12:00",
                   "2026-11-12 07:59"):
        business.at(warsaw(moment)).run()
        assert business.escalations() == [], moment
    business.at(warsaw("2026-11-12 08:00")).run()
    assert business.escalations() == [("anna@firma.pl", "[SUP-1] Eskalacja SLA 1/3: Problem z fakturą")]
    business.at(warsaw("2026-11-12 09:11")).run()
    assert len(business.escalations()) == 1
    business.at(warsaw("2026-11-12 09:12")).run()
    assert business.escalations()[1:] == [("szef@firma.pl", "[SUP-1] Eskalacja SLA 2/3: Problem z fakturą")]
    business.at(warsaw("2026-11-12 10:00")).run()
    assert business.escalations()[2:] == [("szef@firma.pl", "[SUP-1] PRZEKROCZONE SLA: Problem z fakturą")]


def test_business_clock_breach_goes_out_at_night_when_the_deadline_is_before_the_next_opening(
    business: World,
) -> None:
    business.at(warsaw("2026-11-13 12:00"))  # a Friday; due at 16:00, the next opening is Monday
    business.mail(subject="Problem z fakturą", msgid="<biz2@acme.pl>")
    business.run()
    assert business.ticket().reaction_due == warsaw("2026-11-13 16:00")
    business.at(warsaw("2026-11-13 15:30")).run()  # 50 % and 80 % passed: one mail, to the managers
    assert business.escalations() == [("szef@firma.pl", "[SUP-1] Eskalacja SLA 2/3: Problem z fakturą")]
    business.at(warsaw("2026-11-13 22:00")).run()
    assert business.escalations()[1:] == [("szef@firma.pl", "[SUP-1] PRZEKROCZONE SLA: Problem z fakturą")]


def test_verifying_a_sender_starts_the_clock(tmp_path: Path, smtp_sink: Any) -> None:
    # With a trusted authserv-id, mail from an sla customer that our MTA did not
    # authenticate is unverified: no promise, no clock, until a consultant confirms it.
    w = World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE + SEND_AT_NIGHT)
    w.path.write_text(w.path.read_text().replace(
        'customers_file = "customers.toml"', 'customers_file = "customers.toml"\n\n[security]\ntrusted_authserv_id = "mx.firma.pl"', 1))
    w.daemon = Daemon(load_config(w.path), w.clock)
    w.mail(subject="Problem z fakturą", msgid="<unv@acme.pl>")
    w.run()
    ticket = w.ticket()
    assert (ticket.contract_id, ticket.verified, ticket.reaction_due) == ("acme-sla", False, None)
    w.at(T0 + timedelta(hours=1))
    w.mail(sender="anna@firma.pl", subject="Re: [SUP-1] Problem z fakturą", msgid="<v@firma.pl>",
           body="#internal\n#verify\n\nTo nasz klient.\n",
           headers={"Authentication-Results": "mx.firma.pl; dkim=pass header.d=firma.pl"})
    w.run()
    ticket = w.ticket()
    assert ticket.verified and ticket.reaction_due == T0 + timedelta(hours=24)
    assert ticket.next_escalation_at is not None
    w.at(T0 + timedelta(hours=12)).run()
    assert sorted(r for r, _ in w.escalations()) == ["anna@firma.pl", "piotr@firma.pl"]


def test_a_warning_reached_at_night_waits_for_the_opening(tmp_path: Path, smtp_sink: Any) -> None:
    # outside_hours = "hold" (the default): the 50 % warning of a calendar-clock ticket
    # created Monday 10:00 falls at 22:00; it goes out at Tuesday's 08:00 opening.
    w = World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE)
    w.mail(subject="Problem z fakturą", msgid="<hold@acme.pl>")
    w.run()
    assert w.ticket().next_escalation_at == warsaw("2026-11-17 08:00")
    w.at(T0 + timedelta(hours=12)).run()
    assert w.escalations() == []
    w.at(warsaw("2026-11-17 08:00")).run()
    assert sorted(w.escalations()) == [
        ("boss@firma.pl", "[SUP-1] SLA escalation 2/3: Problem z fakturą"),
        ("szef@firma.pl", "[SUP-1] Eskalacja SLA 2/3: Problem z fakturą"),
    ]


PREPAID_TARGET = CUSTOMERS.replace("  valid_until = 2099-12-31\n", "  valid_until = 2099-12-31\n  target_hours = 8\n")


def test_prepaid_target_is_reported_never_escalated(
    tmp_path: Path, smtp_sink: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(tmp_path, smtp_sink, T0, customers=PREPAID_TARGET, extra=MORE_PEOPLE + SEND_AT_NIGHT)
    w.mail(sender="kari@nord.no", subject="Printing question", msgid="<p1@nord.no>")
    w.at(T0 + timedelta(minutes=5))
    w.mail(sender="kari@nord.no", subject="Another question", msgid="<p2@nord.no>")
    w.run()
    first = w.ticket(1)
    assert first.target_due == T0 + timedelta(hours=8)
    assert first.reaction_due is None and first.next_escalation_at is None
    w.at(T0 + timedelta(hours=2))
    w.mail(sender="anna@firma.pl", subject="Re: [SUP-2] Another question", msgid="<a2@firma.pl>",
           body="Here is the answer.\n")
    for hours in (4, 8, 12, 48):
        w.at(T0 + timedelta(hours=hours)).run()
    assert w.escalations() == [], "a target is a goal: never escalated"
    [row] = w.cli(capsys, monkeypatch, "report", "sla", "--month", "2026-11", "--json")["contracts"]
    assert (row["contract_id"], row["kind"], row["tickets"], row["met"], row["missed"]) == ("nord-p4", "prepaid", 2, 1, 1)
    assert row["missed_refs"] == ["SUP-1"] and row["median_reaction_minutes"] == 115


def test_report_sla_from_ingested_tickets(
    lite: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n, offset in enumerate((0, 1, 2, 3)):
        lite.at(T0 + timedelta(hours=offset))
        lite.mail(sender="jan@acme.pl", subject=f"Sprawa {n + 1}", msgid=f"<rep{n}@acme.pl>")
    lite.mail(sender="kari@nord.no", subject="Not an SLA ticket", msgid="<rep-nord@nord.no>")
    lite.run()

    def reply(ref: int, at: datetime) -> None:
        lite.at(at)
        lite.mail(sender="anna@firma.pl", subject=f"Re: [SUP-{ref}] Sprawa {ref}", msgid=f"<ans{ref}@firma.pl>",
                  body="Odpowiedź.\n")
        lite.run()

    reply(1, T0 + timedelta(hours=2))            # 120 min: met
    reply(2, T0 + timedelta(hours=1, minutes=45))  # 45 min: met
    reply(3, T0 + timedelta(hours=30))           # 28 h: missed
    lite.at(T0 + timedelta(hours=26))
    report = lite.cli(capsys, monkeypatch, "report", "sla", "--month", "2026-11", "--json")
    [row] = report["contracts"]
    # SUP-4 (created T0+3h, due T0+27h) can still be answered in time: open, not missed.
    assert (row["tickets"], row["met"], row["missed"], row["open"]) == (4, 2, 1, 1)
    assert row["median_reaction_minutes"] == 120 and row["worst_reaction_minutes"] == 28 * 60
    assert row["missed_refs"] == ["SUP-3"]
    lite.at(T0 + timedelta(hours=28))
    csv_out = lite.cli(capsys, monkeypatch, "report", "sla", "--month", "2026-11", "--csv")
    assert csv_out.splitlines()[1] == "2026-11,acme,acme-sla,4,2,2,0,120,1680"
    assert lite.cli(capsys, monkeypatch, "report", "sla", "--month", "2026-10", "--json")["contracts"] == []
