"""Presence and assignment through the real daemon (Maildir, SMTP sink; SQLite and PostgreSQL): issue 15."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.storage.models import AbsenceRow, Event, Ticket
from tests.helpers import consultant_to
from tests.e2e.test_sla_e2e import CUSTOMERS, MORE_PEOPLE, T0, World, body, warsaw

ASSIGN = '\n[assignment]\nmode = "least_loaded"\n'
# Piotr (English) is away the week of 23 November 2026.
PIOTR_AWAY = MORE_PEOPLE.replace('language = "en"\n\n[[consultants]]\nemail = "boss',
                                 'language = "en"\naway = [{ from = 2026-11-23, until = 2026-11-27 }]\n\n'
                                 '[[consultants]]\nemail = "boss', 1)
PREFERS_PIOTR = CUSTOMERS.replace('billing_address = "kari@nord.no"\n',
                                  'billing_address = "kari@nord.no"\nconsultant = "piotr@firma.pl"\n', 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_migrated_url")) if request.param == "postgresql" else ""


def assignees(w: World) -> dict[int, str | None]:
    with w.daemon.sessions() as s:
        return {t.id: t.assigned_to for t in s.scalars(select(Ticket).order_by(Ticket.id))}


def test_new_tickets_are_spread_over_present_consultants(tmp_path: Path, smtp_sink: Any, url: str) -> None:
    w = World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE + ASSIGN, database_url=url)
    for i in range(4):
        w.mail(subject=f"Problem {i}", msgid=f"<s{i}@acme.pl>")           # sla: weight 3 each
    w.run()
    got = assignees(w)
    assert sorted(got.values()) == ["anna@firma.pl", "anna@firma.pl", "piotr@firma.pl", "piotr@firma.pl"]
    assert "boss@firma.pl" not in got.values()                            # managers never auto-assigned
    with w.daemon.sessions() as s:
        events = s.scalars(select(Event).where(Event.kind == "assigned")).all()
        assert len(events) == 4 and all(e.actor == "maild" and e.detail["why"] == "least_loaded" for e in events)


def test_preferred_consultant_and_absence(tmp_path: Path, smtp_sink: Any, url: str) -> None:
    w = World(tmp_path, smtp_sink, T0, customers=PREFERS_PIOTR, extra=PIOTR_AWAY + ASSIGN, database_url=url)
    w.mail(sender="kari@nord.no", subject="Question", msgid="<k1@nord.no>")
    w.run()
    assert assignees(w)[1] == "piotr@firma.pl"                            # preferred and present
    w.at(warsaw("2026-11-23 09:00"))
    w.mail(sender="kari@nord.no", subject="Another", msgid="<k2@nord.no>")
    w.run()
    got = assignees(w)
    # Monday of Piotr's week away: his open ticket went to Anna at the sweep, and the new one too
    assert got == {1: "anna@firma.pl", 2: "anna@firma.pl"}
    with w.daemon.sessions() as s:
        moved = s.scalars(select(Event).where(Event.kind == "assigned", Event.ticket_id == 1)
                          .order_by(Event.id)).all()[-1]
        assert moved.detail["from"] == "piotr@firma.pl" and "away" in moved.detail["why"]


def test_escalation_skips_an_absent_assignee(tmp_path: Path, smtp_sink: Any, url: str) -> None:
    start = warsaw("2026-11-23 10:00")   # Monday of Piotr's week away
    w = World(tmp_path, smtp_sink, start, extra=PIOTR_AWAY + '\n[escalation]\noutside_hours = "send"\n'
              + '\n[assignment]\nmode = "none"\n', database_url=url)
    w.mail(subject="Faktura", msgid="<e1@acme.pl>")
    w.run()
    with w.daemon.sessions() as s, s.begin():
        ticket = s.get(Ticket, 1)
        assert ticket is not None and ticket.reaction_due is not None
        ticket.assigned_to = "piotr@firma.pl"
        due = ticket.reaction_due
    # the ticket is his (say, an #assign), but the warning goes to the consultant who is present
    w.at(due - timedelta(hours=12)).run()
    w.run()
    rcpts = [r for r, subject in w.escalations()]
    assert rcpts and "piotr@firma.pl" not in rcpts and set(rcpts) == {"anna@firma.pl"}


def test_ack_tells_place_in_queue_and_estimate(tmp_path: Path, smtp_sink: Any, url: str) -> None:
    w = World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE + ASSIGN, database_url=url)
    w.mail(sender="biuro@kowalski.pl", subject="Pytanie 1", msgid="<o1@kowalski.pl>")
    w.mail(sender="biuro@kowalski.pl", subject="Pytanie 2", msgid="<o2@kowalski.pl>")
    w.run()
    acks = [m for m in w.sink.messages if m.rcpt_tos == ["biuro@kowalski.pl"]]
    texts = sorted(body(m) for m in acks)
    assert "Państwa zgłoszenie jest 1. w kolejce." in texts[0] + texts[1]
    assert "Państwa zgłoszenie jest 2. w kolejce." in texts[0] + texts[1]
    assert all("Szacujemy" not in t for t in texts)                     # no history: no estimate
    # a month of history: 40 tickets first-answered, two a working day
    with w.daemon.sessions() as s, s.begin():
        n = 100
        for day in range(1, 31):
            at = T0 - timedelta(days=day)
            if at.weekday() >= 5:
                continue
            for k in range(2):
                n += 1
                s.add(Ticket(id=n, subject="old", status="closed", contract_kind="occasional", verified=True,
                             tier=2, created_at=at - timedelta(hours=3), updated_at=at, first_response_at=at))
                s.flush()
                s.add(Event(ticket_id=n, kind="first_response", at=at, actor="anna@firma.pl", detail={}))
    w.at(T0 + timedelta(hours=1))
    w.mail(sender="kari@nord.no", subject="Printing question", msgid="<p3@nord.no>")
    w.run()
    [en] = [m for m in w.sink.messages if m.rcpt_tos == ["kari@nord.no"]]
    text = body(en)
    # prepaid ranks above the two occasional tickets waiting
    assert "Your request is number 1 in the queue." in text, text
    assert "We expect to answer it by Monday 16 November 2026." in text    # 1 answer/consultant/day, 2 present
    assert "the date depends on the consultants' availability" in text
    # sla tickets get their deadline, never a place or an estimate
    w.mail(subject="Awaria", msgid="<s9@acme.pl>")
    w.run()
    sla_ack = [m for m in w.sink.messages if m.rcpt_tos == ["jan@acme.pl"]][-1]
    assert "w kolejce" not in body(sla_ack) and "Szacujemy" not in body(sla_ack)


def test_away_and_back_by_mail(tmp_path: Path, smtp_sink: Any, url: str) -> None:
    w = World(tmp_path, smtp_sink, T0, extra=MORE_PEOPLE + ASSIGN, database_url=url)
    # Anyone can write Anna's address in From: without proof nothing is recorded
    w.mail(sender="Anna <anna@firma.pl>", subject="urlop", msgid="<forged@evil.example>",
           body="#away 2026-11-01..2027-11-01\n", to="support@firma.pl")
    w.run()
    to_anna = [m for m in w.sink.messages if m.rcpt_tos == ["anna@firma.pl"]]
    assert to_anna and not any("nieobecność" in body(m) for m in to_anna), [m.parsed["Subject"] for m in to_anna]
    with w.daemon.sessions() as s:
        assert s.scalars(select(AbsenceRow)).all() == []
    seen = len(w.sink.messages)
    mine = consultant_to(w.path)            # her personal address, shown in every notification: proof
    w.mail(sender="Anna <anna@firma.pl>", subject="urlop", msgid="<away1@firma.pl>",
           body="#away 2026-11-17..2026-11-18 urlop\n", to=mine)
    w.run()
    [confirm] = [m for m in w.sink.messages[seen:] if m.rcpt_tos == ["anna@firma.pl"]]
    assert "nieobecność od 17.11.2026 r. do 18.11.2026 r. włącznie" in body(confirm)
    assert confirm.parsed["In-Reply-To"] == "<away1@firma.pl>"
    with w.daemon.sessions() as s:
        assert s.scalars(select(Ticket)).all() == []                      # no ticket for it
    # on the 17th the new ticket goes to Piotr, not to the absent Anna
    w.at(warsaw("2026-11-17 09:00"))
    w.mail(subject="Problem", msgid="<q1@acme.pl>")
    w.mail(subject="Problem 2", msgid="<q2@acme.pl>")
    w.run()
    assert set(assignees(w).values()) == {"piotr@firma.pl"}
    w.mail(sender="anna@firma.pl", subject="wracam", msgid="<back1@firma.pl>", body="#back\n", to=mine)
    w.run()
    w.mail(subject="Problem 3", msgid="<q3@acme.pl>")
    w.run()
    assert assignees(w)[3] == "anna@firma.pl"                            # back, and the least loaded
    # a bad range is an error naming the line; nothing recorded
    w.mail(sender="anna@firma.pl", subject="urlop", msgid="<away2@firma.pl>", body="#away 2026-12-24..2026-12-20\n",
           to=mine)
    w.run()
    error = [m for m in w.sink.messages if m.rcpt_tos == ["anna@firma.pl"]][-1]
    assert "linia 1: #away 2026-12-24..2026-12-20" in body(error) and "[" not in error.parsed["Subject"]


def test_digest_lists_absences_and_says_when_nobody_is_present(tmp_path: Path, smtp_sink: Any) -> None:
    from maild.cli.main import main as cli_main
    from maild.config import load_config
    from maild.ops.daemon import Daemon
    from tests.helpers import Clock, maildir_source, make_mail, write_config

    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, notifications="")
    box = __import__("mailbox").Maildir(tmp_path / "Maildir", create=True)
    box.add(make_mail(subject="Awaria", msgid="<n1@acme.pl>"))
    assert cli_main(["--config", str(path), "consultants", "away", "anna@firma.pl",
                     "--from", "2026-12-07", "--until", "2026-12-09", "--note", "L4"]) == 0
    clock = Clock(warsaw("2026-12-07 09:00"))
    Daemon(load_config(path), clock).run_once()
    digests = [m for m in smtp_sink.messages if "Kolejka" in str(m.parsed["Subject"])]
    assert [m.rcpt_tos for m in digests] == [["szef@firma.pl"]]        # Anna is away: the manager only
    text = body(digests[0])
    assert "Dziś nikt z konsultantów nie jest obecny" in text
    assert "Anna Nowak <anna@firma.pl>: 7.12.2026 r. - 9.12.2026 r. (L4)" in text
    # the new ticket went to the manager, unassigned
    with Daemon(load_config(path), clock).sessions() as s:
        assert s.get(Ticket, 1).assigned_to is None                   # type: ignore[union-attr]


def test_the_new_assignee_hears_of_a_reassigned_ticket(tmp_path: Path, smtp_sink: Any) -> None:
    from maild.config import load_config
    from maild.ops.daemon import Daemon
    from tests.helpers import Clock, maildir_source, make_mail, write_config

    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, notifications="",
                        customers=PREFERS_PIOTR, extra=PIOTR_AWAY + ASSIGN)
    box = __import__("mailbox").Maildir(tmp_path / "Maildir", create=True)
    box.add(make_mail(sender="kari@nord.no", subject="Printing question", msgid="<r1@nord.no>",
                      body="The invoice printout is cut off.\n"))
    clock = Clock(warsaw("2026-11-20 10:00"))          # the Friday before Piotr's week away
    Daemon(load_config(path), clock).run_once()
    assert [m.rcpt_tos for m in smtp_sink.messages if "SUP-1" in str(m.parsed["Subject"])
            and m.rcpt_tos != ["kari@nord.no"]] == [["piotr@firma.pl"]]
    clock.now = warsaw("2026-11-23 08:30")             # Monday: Piotr is away
    Daemon(load_config(path), clock).run_once()
    def to_anna() -> list[Any]:   # her digest aside
        return [m for m in smtp_sink.messages if m.rcpt_tos == ["anna@firma.pl"] and "SUP-1" in str(m.parsed["Subject"])]
    [told] = to_anna()
    assert "The invoice printout is cut off." in body(told)
    Daemon(load_config(path), clock).run_once()        # once: a second sweep tells nobody again
    assert len(to_anna()) == 1
