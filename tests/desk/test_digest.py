"""The digest's day (working days, after digest_at, in local time) and its rows."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from maild.rules.calendar import BusinessCalendar, CalendarSettings
from maild.desk.digest import DigestTicket, digest_day, digest_lines, previous_working_day

CAL = BusinessCalendar(CalendarSettings(timezone="Europe/Warsaw"))
UTC = timezone.utc


def test_due_only_on_working_days_after_digest_at_local_time() -> None:
    at8 = time(8)
    # Friday 2026-12-04, 07:30 UTC = 08:30 Warsaw
    assert digest_day(datetime(2026, 12, 4, 7, 30, tzinfo=UTC), at8, CAL) == date(2026, 12, 4)
    assert digest_day(datetime(2026, 12, 4, 6, 30, tzinfo=UTC), at8, CAL) is None  # 07:30 local
    assert digest_day(datetime(2026, 12, 5, 9, tzinfo=UTC), at8, CAL) is None  # Saturday
    assert digest_day(datetime(2026, 12, 25, 9, tzinfo=UTC), at8, CAL) is None  # Christmas
    assert digest_day(datetime(2026, 12, 4, 9, tzinfo=UTC), None, CAL) is None  # off
    # summer time: 08:00 Warsaw is 06:00 UTC
    assert digest_day(datetime(2026, 7, 1, 6, 1, tzinfo=UTC), at8, CAL) == date(2026, 7, 1)


def test_previous_working_day_skips_weekends_and_holidays() -> None:
    assert previous_working_day(date(2026, 12, 7), CAL) == date(2026, 12, 4)  # Monday -> Friday
    assert previous_working_day(date(2026, 12, 28), CAL) == date(2026, 12, 23)  # Christmas Eve is a holiday in PL since 2025


NOW = datetime(2026, 12, 7, 8, tzinfo=UTC)
tickets = st.lists(st.builds(
    DigestTicket, ref=st.from_regex(r"SUP-[0-9]{1,4}", fullmatch=True), subject=st.just("s"), customer=st.just("c"),
    tier=st.sampled_from(["sla", "prepaid"]), priority=st.just("P3"), status=st.just("open"),
    assigned_to=st.sampled_from([None, "anna@firma.pl", "bob@firma.pl"]),
    created_at=st.just(NOW - timedelta(days=2)),
    reaction_due=st.one_of(st.none(), st.integers(-3000, 3000).map(lambda m: NOW + timedelta(minutes=m))),
    breached_at=st.none()), max_size=12)


@given(tickets)
def test_rows_are_mine_and_unassigned_overdue_first_in_queue_order(given_tickets: list[DigestTicket]) -> None:
    rows = digest_lines(given_tickets, NOW, who="anna@firma.pl", everything=False)
    wanted = [t for t in given_tickets if t.assigned_to in (None, "anna@firma.pl")]
    assert sorted(r["ref"] for r in rows) == sorted(t.ref for t in wanted)
    flags = [r["overdue"] for r in rows]
    assert flags == sorted(flags, reverse=True)
    in_order = [t.ref for t in wanted if not (t.reaction_due is not None and t.reaction_due <= NOW)]
    assert [r["ref"] for r in rows if not r["overdue"]] == in_order
    everything = digest_lines(given_tickets, NOW, who="szef@firma.pl", everything=True)
    assert len(everything) == len(given_tickets)


def test_a_polish_digest_gives_ages_and_times_left_in_polish_units() -> None:
    """A Polish consultant read "wiek 2d 3h" and "PO TERMINIE -1h 30m"."""
    from pathlib import Path

    from maild.outbound.render import Renderer

    queue = [DigestTicket("SUP-1", "Awaria", "Acme", "sla", "P1", "open", None, NOW - timedelta(days=2, hours=3),
                          NOW - timedelta(hours=1, minutes=30), None),
             DigestTicket("SUP-2", "Pytanie", "Acme", "sla", "P3", "open", None, NOW - timedelta(minutes=45),
                          NOW + timedelta(hours=3), None)]
    polish = digest_lines(queue, NOW, who="anna@firma.pl", everything=False, language="pl")
    assert [(r["age"], r["left"], r["overdue"]) for r in polish] == [
        ("2 dni 3 godz.", "1 godz. 30 min", True), ("45 min", "3 godz.", False)]
    assert [r["seconds_left"] for r in polish] == [-5400, 10800], "the HTML part's colours read these"
    english = digest_lines(queue, NOW, who="anna@firma.pl", everything=False)
    # the notifications' units in English too (it read "2d 3h", "-1h 30m" after OVERDUE, "0h 45m", "3h 00m")
    assert [(r["age"], r["left"]) for r in english] == [("2 days 3 h", "1 h 30 min"), ("45 min", "3 h")]
    _, english_body = Renderer(Path(__file__).resolve().parents[2] / "templates").render(
        "digest", "en", {"day": "2026-12-07", "rows": english, "overdue": 1, "everything": False, "breaches": [],
                         "previous_day": "2026-12-04", "new_ticket_address": "support+t@firma.pl"})
    assert "SUP-1  SLA P1  open  age 2 days 3 h  OVERDUE 1 h 30 min  (unassigned)" in english_body, english_body
    assert "age 45 min  left 3 h" in english_body, english_body
    _, body = Renderer(Path(__file__).resolve().parents[2] / "templates").render(
        "digest", "pl", {"day": "2026-12-07", "rows": polish, "overdue": 1, "everything": False, "breaches": [],
                         "previous_day": "2026-12-04", "new_ticket_address": "support+t@firma.pl"})
    assert "SUP-1  SLA P1  otwarte  wiek 2 dni 3 godz.  PO TERMINIE 1 godz. 30 min  (nieprzypisane)" in body, body
    assert "wiek 45 min  pozostało 3 godz." in body, body
