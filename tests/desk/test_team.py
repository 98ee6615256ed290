"""Presence and assignment against a real database (SQLite and PostgreSQL): issue 15."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maild.config import Config, load_config
from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk
from maild.desk.team import Team, TeamError
from maild.storage.db import open_database
from maild.storage.models import Event, Ticket
from tests.helpers import maildir_source, write_config

UTC = timezone.utc
# Monday 7 December 2026, 10:00 in Warsaw
MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

TEAM = """
[[consultants]]
email = "ola@firma.pl"
name = "Ola"
days = ["mon", "tue", "wed", "thu"]

[[consultants]]
email = "piotr@firma.pl"
name = "Piotr"
away = [{ from = 2026-12-21, until = 2027-01-03 }]
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Config, sessionmaker[Session]]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=url, migrated=True, extra=TEAM)
    cfg = load_config(path)
    return cfg, open_database(cfg.database_url)


def ticket(session: Session, n: int, kind: str = "prepaid", assigned: str | None = None,
           status: str = "open", at: datetime = MONDAY) -> Ticket:
    t = Ticket(id=n, subject=f"t{n}", status=status, contract_kind=kind, verified=True, tier=1,
               created_at=at, updated_at=at, assigned_to=assigned, assigned_at=at if assigned else None)
    session.add(t)
    session.flush()
    return t


def desk(session: Session, cfg: Config) -> TicketDesk:
    """Tickets change hands only through the desk: its team reassigns, its ``assign`` writes."""
    return TicketDesk(DeskContext.for_config(cfg, []), session)


def emails(people: Any) -> list[str]:
    return sorted(c.email for c in people)


def test_who_is_present(world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    with sessions() as s:
        team = Team(s, cfg)
        assert emails(team.present(MONDAY)) == ["anna@firma.pl", "ola@firma.pl", "piotr@firma.pl"]
        friday = MONDAY + timedelta(days=4)
        assert emails(team.present(friday)) == ["anna@firma.pl", "piotr@firma.pl"]   # not Ola's day
        assert team.present(MONDAY - timedelta(days=1)) == []                         # Sunday
        assert emails(team.present(datetime(2026, 12, 28, 9, tzinfo=UTC))) == ["anna@firma.pl", "ola@firma.pl"]
        # late in the evening still counts as the day (the mail waits in the inbox)
        assert emails(team.present(datetime(2026, 12, 7, 21, 30, tzinfo=UTC))) == emails(team.present(MONDAY))


def test_recorded_absence_and_back(world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    with sessions() as s:
        team = Team(s, cfg)
        team.record_absence("ANNA@firma.pl", date(2026, 12, 7), date(2026, 12, 9), "chora", "szef@firma.pl", MONDAY)
        s.commit()
    with sessions() as s:
        team = Team(s, cfg)
        assert "anna@firma.pl" not in emails(team.present(MONDAY))
        [stat] = [m for m in team.stats(MONDAY) if m.consultant.email == "anna@firma.pl"]
        assert not stat.present and stat.next_absence is not None and stat.next_absence.note == "chora"
        assert team.end_absence("anna@firma.pl", MONDAY + timedelta(days=1), "anna@firma.pl") == 1
        s.commit()
    with sessions() as s:
        team = Team(s, cfg)
        assert "anna@firma.pl" not in emails(team.present(MONDAY))          # Monday stays recorded
        assert "anna@firma.pl" in emails(team.present(MONDAY + timedelta(days=1)))
        with pytest.raises(TeamError, match="config file"):
            team.end_absence("piotr@firma.pl", datetime(2026, 12, 22, 9, tzinfo=UTC), "piotr@firma.pl")
        with pytest.raises(TeamError, match="not a consultant"):
            team.record_absence("x@y.pl", date(2026, 12, 7), date(2026, 12, 7), "", "cli", MONDAY)


def test_least_loaded_weighted_by_tier(world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    with sessions() as s:
        ticket(s, 1, "sla", "anna@firma.pl")                  # 3
        ticket(s, 2, "prepaid", "ola@firma.pl")               # 2
        ticket(s, 3, "occasional", "piotr@firma.pl")          # 1
        ticket(s, 4, "sla", "piotr@firma.pl", status="closed")   # closed: no load
        team = Team(s, cfg)
        assert team.open_load(["anna@firma.pl", "ola@firma.pl", "piotr@firma.pl"]) == {
            "anna@firma.pl": 3, "ola@firma.pl": 2, "piotr@firma.pl": 1}
        assert team.choose(MONDAY) == "piotr@firma.pl"
        assert team.choose(MONDAY, preferred="ola@firma.pl") == "ola@firma.pl"
        # the manager is never a candidate, even with no load at all
        assert "szef@firma.pl" not in [c.email for c in team.candidates(MONDAY)]


def test_reassignment_at_the_start_of_an_absence(world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    with sessions() as s:
        ticket(s, 1, "sla", "piotr@firma.pl")
        ticket(s, 2, "prepaid", "piotr@firma.pl")
        ticket(s, 3, "prepaid", "piotr@firma.pl", status="resolved")
        mover = desk(s, cfg)
        assert mover.reassign_absent(datetime(2026, 12, 18, 9, tzinfo=UTC)) == []    # not away yet
        moved = mover.reassign_absent(datetime(2026, 12, 21, 9, tzinfo=UTC))
        assert sorted((t.id, old) for t, _, old in moved) == [(1, "piotr@firma.pl"), (2, "piotr@firma.pl")]
        assert {new for _, new, _ in moved} <= {"anna@firma.pl", "ola@firma.pl"}
        # the two tickets were spread by load: the sla one to one, the prepaid one to the other
        assert len({new for _, new, _ in moved}) == 2
        s.commit()
    with sessions() as s:
        assert s.get(Ticket, 3).assigned_to == "piotr@firma.pl"   # type: ignore[union-attr]
        events = s.scalars(select(Event).where(Event.kind == "assigned")).all()
        assert sorted(e.ticket_id for e in events) == [1, 2]
        assert all(e.detail["from"] == "piotr@firma.pl" and "away" in e.detail["why"] for e in events)


def test_each_reassigned_ticket_adds_its_weight_once(world: tuple[Config, sessionmaker[Session]]) -> None:
    """Anna starts with a prepaid ticket (2), Ola with none; Piotr's three occasional tickets (1 each)
    go Ola, Ola (1 < 2), then Anna: a tie at 2 goes to whoever waited longest. Counting each move
    twice (the team and the desk both noting it) gave Ola, Anna, Ola."""
    cfg, sessions = world
    with sessions() as s:
        ticket(s, 1, "prepaid", "anna@firma.pl")
        for n in (2, 3, 4):
            ticket(s, n, "occasional", "piotr@firma.pl")
        moved = desk(s, cfg).reassign_absent(datetime(2026, 12, 21, 9, tzinfo=UTC))
        assert [(t.id, new) for t, new, _ in moved] == [
            (2, "ola@firma.pl"), (3, "ola@firma.pl"), (4, "anna@firma.pl")]


def test_estimate_from_the_last_30_days(world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    with sessions() as s:
        team = Team(s, cfg)
        assert team.handling_rate(MONDAY) is None        # no history
        n = 100
        for day in range(1, 29):
            d = MONDAY - timedelta(days=day)
            if not team.calendar.is_business_day(d.astimezone(team.calendar.tz).date()):
                continue
            for k in range(6):
                n += 1
                ticket(s, n, at=d - timedelta(hours=5))
                s.add(Event(ticket_id=n, kind="first_response", at=d + timedelta(minutes=k), actor="anna@firma.pl",
                            detail={}))
        s.flush()
        rate = team.handling_rate(MONDAY)
        assert rate is not None and 1.5 <= rate <= 3.0      # 6 answers a day over 3 (or 2 on Fridays) present
        coming = team.coming_capacity(MONDAY)
        assert coming[0] == (date(2026, 12, 7), 3)
        assert team.expected_by(1, MONDAY) == date(2026, 12, 7)
        far = team.expected_by(40, MONDAY)
        assert far is not None and far > date(2026, 12, 7)
        [anna] = [m for m in team.stats(MONDAY) if m.consultant.email == "anna@firma.pl"]
        assert anna.answered_30d > 100 and anna.median_first_response_minutes is not None
        assert 300 <= anna.median_first_response_minutes <= 306


def test_consultants_commands(world: tuple[Config, sessionmaker[Session]], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from maild.cli.main import main

    cfg, _ = world
    base = ["--config", str(cfg.path)]
    start, until = (date.today() + timedelta(days=2)).isoformat(), (date.today() + timedelta(days=3)).isoformat()
    assert main([*base, "consultants", "away", "anna@firma.pl", "--from", start, "--until", until,
                 "--note", "L4"]) == 0
    assert f"anna@firma.pl away {start}..{until}" in capsys.readouterr().out
    assert main([*base, "consultants", "list", "--json"]) == 0
    data = {row["email"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(data) == {"anna@firma.pl", "szef@firma.pl", "ola@firma.pl", "piotr@firma.pl"}
    assert data["anna@firma.pl"]["next_absence"] == {"from": start, "until": until, "note": "L4",
                                                     "source": "database"}
    assert data["szef@firma.pl"]["present"] is False and data["szef@firma.pl"]["role"] == "manager"
    assert set(data["ola@firma.pl"]) == {"email", "name", "role", "language", "present", "next_absence",
                                         "open_assigned", "answered_30d", "median_first_response_minutes"}
    assert main([*base, "consultants", "list"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:4] == ["email", "role", "lang", "present"]
    # bad input: exit 2 with the reason, never a traceback
    assert main([*base, "consultants", "away", "anna@firma.pl", "--from", "2026-13-01", "--until", "2026-12-08"]) == 2
    assert "--from '2026-13-01'" in capsys.readouterr().err
    assert main([*base, "consultants", "away", "anna@firma.pl", "--from", "2026-12-09", "--until", "2026-12-08"]) == 2
    assert main([*base, "consultants", "away", "nobody@firma.pl", "--from", "2026-12-09", "--until", "2026-12-10"]) == 2
    assert "not a consultant" in capsys.readouterr().err
    assert main([*base, "consultants", "back", "anna@firma.pl"]) == 0


def test_two_daemons_never_move_one_ticket_twice(pg_url: str, tmp_path: Path) -> None:
    """Two sweeps at once on PostgreSQL: each ticket of the absent consultant is reassigned exactly once."""
    import threading

    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=pg_url, extra=TEAM)
    cfg = load_config(path)
    sessions = open_database(cfg.database_url)
    with sessions() as s:
        for n in range(1, 41):
            ticket(s, n, "prepaid", "piotr@firma.pl")
        s.commit()
    at = datetime(2026, 12, 21, 9, tzinfo=UTC)
    barrier = threading.Barrier(2)
    moved: list[int] = []

    def sweep() -> None:
        with sessions() as s:
            mover = desk(s, cfg)
            barrier.wait()
            found = mover.reassign_absent(at)
            s.commit()
            moved.extend(t.id for t, _, _ in found)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(moved) == list(range(1, 41))
    with sessions() as s:
        events = s.scalars(select(Event).where(Event.kind == "assigned")).all()
        assert sorted(e.ticket_id for e in events) == list(range(1, 41))
        assert not s.scalars(select(Ticket).where(Ticket.assigned_to == "piotr@firma.pl")).all()


def test_tickets_list_json_has_queue_position_and_estimate(world: tuple[Config, sessionmaker[Session]],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from maild.cli.main import main

    cfg, sessions = world
    now = datetime.now(UTC)
    with sessions() as s:
        n = 100
        for day in range(1, 29):
            at = now - timedelta(days=day)
            for _ in range(3):
                n += 1
                ticket(s, n, "occasional", status="closed", at=at - timedelta(hours=2)).tier = 2
                s.add(Event(ticket_id=n, kind="first_response", at=at, actor="anna@firma.pl", detail={}))
        sla = ticket(s, 1, "sla", at=now - timedelta(hours=1))
        sla.tier, sla.reaction_due = 0, now + timedelta(hours=5)
        ticket(s, 2, "prepaid", at=now - timedelta(minutes=30))
        ticket(s, 3, "occasional", at=now - timedelta(minutes=20)).tier = 2
        s.commit()
    capsys.readouterr()
    assert main(["--config", str(cfg.path), "tickets", "list", "--json"]) == 0
    rows = {r["ref"]: r for r in json.loads(capsys.readouterr().out)}
    assert [rows[r]["queue_position"] for r in ("SUP-1", "SUP-2", "SUP-3")] == [1, 2, 3]
    assert all(rows[r]["queue_position"] == rows[r]["rank"] for r in rows)
    assert rows["SUP-1"]["expected_by"] is None, rows                  # sla: a deadline, never an estimate
    assert rows["SUP-2"]["expected_by"] and rows["SUP-3"]["expected_by"], rows
    prepaid, occasional = (date.fromisoformat(rows[r]["expected_by"]) for r in ("SUP-2", "SUP-3"))
    assert now.date() <= prepaid <= occasional
