"""Balance snapshots: a month's statement from one stored figure per contract equals the whole ledger's.

``report hours --month`` reads each sla and prepaid contract's balance as the
month begins from ``balance_snapshots`` (computed and stored when missing or
stale) instead of summing every earlier month. These tests hold the snapshot
path to the from-scratch computation (``build_hours_report`` over every ledger
row): the pure state walk over random ledgers, then random sequences of
bookings (into closed months too), reports that store snapshots, changed terms
and a removed contract on SQLite and PostgreSQL, and the desk's own booking and
reversal through the command line.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from maild.billing.ledger import LedgerEntry, month_key, months_after, sla_month, sla_months, sla_states
from maild.billing.reports import (
    build_balances,
    HoursReport,
    build_hours_report,
    contract_balances,
    hours_report,
    invalidate_snapshots,
    load_lines,
    load_tickets,
    merge_known_customers,
    month_bounds,
)
from maild.cli.common import customers_of
from maild.cli.report import hours_json
from maild.config import load_config
from maild.rules.customers import Contract, Customer
from maild.rules.kinds import rules_of
from maild.storage import store
from maild.storage.db import open_database
from maild.storage.models import BalanceSnapshot, LedgerRow, Ticket
from tests.billing.conftest import Month
from tests.billing.month_data import MONTH

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")
ORIGIN = datetime(2024, 10, 1, tzinfo=UTC)


def _month(offset: int) -> str:
    year, month0 = divmod(2024 * 12 + 9 + offset, 12)
    return f"{year:04d}-{month0 + 1:02d}"


@st.composite
def sla_contracts(draw: st.DrawFn) -> Contract:
    start_offset = draw(st.integers(min_value=0, max_value=12))
    year, month0 = divmod(2024 * 12 + 9 + start_offset, 12)
    start = date(year, month0 + 1, draw(st.integers(min_value=1, max_value=28)))
    end = None
    if draw(st.booleans()):
        end = start + timedelta(days=draw(st.integers(min_value=0, max_value=700)))
    opening = first_seen = None
    carry = None
    choice = draw(st.sampled_from(["plain", "opening", "first_seen", "both"]))
    if choice in ("opening", "both"):
        opening = _month(start_offset + draw(st.integers(min_value=0, max_value=8)))
        carry = draw(st.integers(min_value=0, max_value=2000))
    if choice in ("first_seen", "both"):
        first_seen = _month(start_offset + draw(st.integers(min_value=0, max_value=10)))
    return Contract(id="c", kind="sla", start=start, end=end,
                    monthly_minutes=draw(st.integers(min_value=0, max_value=900)),
                    rollover_months=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=4))),
                    opening_month=opening, opening_carry_over_minutes=carry, first_seen_month=first_seen)


entry_lists = st.lists(st.tuples(st.integers(min_value=0, max_value=40 * 730), st.integers(min_value=-200, max_value=500)),
                       max_size=40)


@settings(max_examples=400, deadline=None)
@given(sla_contracts(), entry_lists, st.integers(min_value=1, max_value=42), st.integers(min_value=0, max_value=41))
# an entry of 0 minutes before the start pulls a first_seen contract's months back to its start
@example(Contract(id="c", kind="sla", start=date(2024, 12, 1), monthly_minutes=0, first_seen_month="2025-01"),
         [(0, 0)], 2, 0).via("found by hypothesis")
def test_the_month_from_a_chain_of_states_equals_the_whole_history(
        contract: Contract, raw: list[tuple[int, int]], month_offset: int, base_offset: int) -> None:
    """State at B from nothing, at M from B's state (walking every month between), then M itself:
    the same month as ``sla_months`` over every entry (None where that has no such month)."""
    entries = [LedgerEntry(id=n, contract_id="c", ticket_id=None, minutes=minutes,
                           booked_at=ORIGIN + timedelta(hours=hours), by="", scope=None)
               for n, (hours, minutes) in enumerate(raw, start=1)]
    month = _month(month_offset)
    base_month = _month(min(base_offset, month_offset - 1))
    whole = sla_months(contract, entries, month, WARSAW)
    expected = whole[-1] if whole and whole[-1].month == month else None

    def booked(entry: LedgerEntry) -> str:
        return month_key(entry.booked_at, WARSAW)

    [base] = sla_states(contract, None, [e for e in entries if booked(e) < base_month], [base_month], WARSAW)
    walked = sla_states(contract, base, [e for e in entries if base_month <= booked(e) < month],
                        months_after(base_month, month), WARSAW)
    assert [s.month for s in walked] == months_after(base_month, month)
    assert sla_month(contract, walked[-1], [e for e in entries if booked(e) == month], WARSAW) == expected
    # and straight from nothing
    [direct] = sla_states(contract, None, [e for e in entries if booked(e) < month], [month], WARSAW)
    assert direct == walked[-1]


# ------------------------------------------------------------------ against the database

SLA_A = Contract(id="a-sla", kind="sla", start=date(2024, 10, 1), monthly_minutes=600, rollover_months=2,
                 opening_month="2024-12", opening_carry_over_minutes=300, hourly_rate_cents=20000)
SLA_B = Contract(id="b-sla", kind="sla", start=date(2024, 6, 1), monthly_minutes=480, hourly_rate_cents=18000)
PACKAGE_1 = Contract(id="b-p1", kind="prepaid", start=date(2024, 10, 1), package_minutes=1200,
                     valid_until=date(2025, 6, 30), used_before_minutes=120, hourly_rate_cents=15000)
PACKAGE_2 = Contract(id="b-p2", kind="prepaid", start=date(2025, 1, 1), package_minutes=600,
                     valid_until=date(2026, 6, 30))
GONE = Contract(id="c-sla", kind="sla", start=date(2024, 10, 1), monthly_minutes=300, rollover_months=1)
OCCASIONAL = Contract(id="c-occ", kind="occasional", start=date(2024, 1, 1), hourly_rate_cents=25000)
IDS = [c.id for c in (SLA_A, SLA_B, PACKAGE_1, PACKAGE_2, GONE, OCCASIONAL)]
OWNER = {"a-sla": "acme", "b-sla": "beta", "b-p1": "beta", "b-p2": "beta", "c-sla": "gamma", "c-occ": "gamma"}


def _customers(sla_a: Contract = SLA_A, with_gone: bool = False) -> tuple[Customer, ...]:
    return (Customer(id="acme", name="Acme", contracts=(sla_a,)),
            Customer(id="beta", name="Beta", contracts=(SLA_B, PACKAGE_1, PACKAGE_2)),
            Customer(id="gamma", name="Gamma", contracts=((GONE,) if with_gone else ()) + (OCCASIONAL,)))


@pytest.fixture(params=["sqlite", "postgresql"])
def synced(request: pytest.FixtureRequest, tmp_path: Path) -> sessionmaker[Session]:
    """A database that saw every contract in November 2024 and had c-sla removed from the file in March 2025."""
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    sessions = open_database(url)
    with sessions() as session, session.begin():
        store.sync_customers(session, _customers(with_gone=True), datetime(2024, 11, 12, tzinfo=UTC))
    with sessions() as session, session.begin():
        store.sync_customers(session, _customers(), datetime(2025, 3, 20, tzinfo=UTC))
    return sessions


bookings = st.tuples(st.just("book"), st.sampled_from(IDS), st.integers(min_value=0, max_value=16 * 730),
                     st.integers(min_value=-120, max_value=600), st.booleans())
reports = st.tuples(st.just("report"), st.integers(min_value=0, max_value=17))
terms = st.tuples(st.just("terms"), st.sampled_from([(600, 2), (540, 2), (600, None), (720, 0)]))
steps = st.lists(st.one_of(bookings, bookings, reports, reports, terms), min_size=1, max_size=14)


def _reference(session: Session, customers: Sequence[Customer], month: str, unit: int = 15,
               rate: int | None = None) -> HoursReport:
    """The statement from every ledger row ever booked (no snapshot)."""
    known, _ = merge_known_customers(session, customers, WARSAW)
    return build_hours_report(month, WARSAW, known, load_lines(session), load_tickets(session, "SUP"), unit,
                              occasional_rate_cents=rate)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(steps)
def test_reports_from_snapshots_equal_the_whole_ledger(synced: sessionmaker[Session], plan: list[tuple]) -> None:  # type: ignore[type-arg]
    sessions = synced
    with sessions() as session, session.begin():
        session.execute(delete(BalanceSnapshot))
        session.execute(delete(LedgerRow))
    customers = _customers()
    for step in plan:
        if step[0] == "book":
            _, contract_id, hours, minutes, overage = step
            at = ORIGIN + timedelta(hours=hours)
            with sessions() as session, session.begin():
                session.add(LedgerRow(contract_id=contract_id, customer_id=OWNER[contract_id], ticket_id=None,
                                      minutes=minutes, overage=overage and contract_id.startswith("b-p"),
                                      booked_at=at, by="anna@firma.pl", scope="consultation"))
                session.flush()
                invalidate_snapshots(session, contract_id, at, WARSAW)
        elif step[0] == "terms":
            monthly, rollover = step[1]
            customers = _customers(replace(SLA_A, monthly_minutes=monthly, rollover_months=rollover))
        else:
            month = _month(step[1])
            with sessions() as session, session.begin():
                got = hours_report(session, customers, month, WARSAW, "SUP", 15, store=True)
            with sessions() as session:
                assert got == _reference(session, customers, month), month
                now = month_bounds(month, WARSAW)[1] - timedelta(hours=30)
                known, removed = merge_known_customers(session, customers, WARSAW)
                expected = build_balances(known, load_lines(session), now, WARSAW, removed)
                assert contract_balances(session, customers, now, WARSAW) == expected
                assert contract_balances(session, customers, now, WARSAW, allowance_only=True) == [
                    b for b in expected if rules_of(b.kind).monthly_allowance]
                assert session.scalar(select(func.count()).select_from(BalanceSnapshot)) > 0


def test_a_report_stores_each_month_once_and_reads_one_row_per_contract(synced: sessionmaker[Session]) -> None:
    """The first report walks the history and keeps a snapshot per contract and month; a booking into
    a closed month deletes its contract's snapshots after that month, and only those."""
    with synced() as session, session.begin():
        for n, month in enumerate(["2024-11", "2025-01", "2025-04", "2025-08"]):
            at = month_bounds(month, WARSAW)[0] + timedelta(days=3)
            for contract_id in ("a-sla", "b-p1"):
                session.add(LedgerRow(contract_id=contract_id, customer_id=OWNER[contract_id], minutes=30 + n,
                                      overage=False, booked_at=at, by="anna@firma.pl"))
    with synced() as session, session.begin():
        hours_report(session, _customers(), "2025-09", WARSAW, "SUP", store=True)
    with synced() as session:
        stored = {(r.contract_id, r.month) for r in session.scalars(select(BalanceSnapshot))}
    assert {("a-sla", m) for m in months_after("2024-11", "2025-09")} <= stored
    assert ("b-sla", "2025-09") in stored and ("c-sla", "2025-09") in stored
    with synced() as session, session.begin():
        at = month_bounds("2025-04", WARSAW)[0] + timedelta(days=9)
        session.add(LedgerRow(contract_id="a-sla", customer_id="acme", minutes=45, overage=False, booked_at=at,
                              by="anna@firma.pl"))
        session.flush()
        invalidate_snapshots(session, "a-sla", at, WARSAW)
    with synced() as session:
        left = {(r.contract_id, r.month) for r in session.scalars(select(BalanceSnapshot))}
    assert max(m for c, m in left if c == "a-sla") == "2025-04"
    assert {(c, m) for c, m in stored if c != "a-sla"} <= left


def test_the_allowance_balances_read_only_the_allowance_contracts_rows(synced: sessionmaker[Session]) -> None:
    """A notification's header shows an sla contract's balance and nothing else: the month's rows of the
    packages and occasional contracts are not read for it (they were: 0.09 s a read with a month of 7,800
    bookings, 3,300 of them sla)."""
    now = datetime(2025, 9, 20, 10, tzinfo=UTC)
    with synced() as session, session.begin():
        for n, contract_id in enumerate(IDS):
            session.add(LedgerRow(contract_id=contract_id, customer_id=OWNER[contract_id], minutes=30 + n,
                                  overage=False, booked_at=now - timedelta(days=2), by="anna@firma.pl"))
    read: list[str] = []

    def rows_read(conn: object, cursor: object, statement: str, params: object, context: object,
                  many: bool) -> None:
        if "FROM ledger" in statement and "booked_at" in statement:
            read.extend(str(p) for p in (params.values() if isinstance(params, dict) else params))  # type: ignore[attr-defined]

    engine = synced.kw["bind"]
    event.listen(engine, "before_cursor_execute", rows_read)
    try:
        with synced() as session:
            got = contract_balances(session, _customers(), now, WARSAW, allowance_only=True)
    finally:
        event.remove(engine, "before_cursor_execute", rows_read)
    assert {b.contract_id for b in got} == {"a-sla", "b-sla", "c-sla"}
    assert {"a-sla", "b-sla", "c-sla"} <= set(read) and not {"b-p1", "b-p2", "c-occ"} & set(read), read


def test_the_desk_books_and_reverses_into_closed_months(month: Month) -> None:
    """``maild time add`` (a late mail's time: October, closed) and ``time reverse`` go through the desk,
    which deletes the contract's later snapshots: the next statement is the whole ledger's."""
    def report() -> object:
        code, out, err = month.run("report", "hours", "--month", MONTH, "--json")
        assert code == 0, err
        return json.loads(out)

    def expected() -> object:
        cfg = load_config(month.config)
        with month.sessions() as session:
            return hours_json(_reference(session, customers_of(cfg), MONTH, cfg.ledger.occasional_unit_minutes,
                                         cfg.billing.occasional_hourly_rate_cents))

    assert report() == expected()
    with month.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BalanceSnapshot).where(
            BalanceSnapshot.month == MONTH)) > 0
        ticket = session.scalar(select(Ticket).where(Ticket.contract_kind == "sla").order_by(Ticket.id))
        assert ticket is not None
    october = datetime(2026, 10, 20, 10, tzinfo=UTC)
    code, out, err = month.run("time", "add", f"SUP-{ticket.id}", "7h", "--by", "anna@firma.pl", now=october)
    assert code == 0, err
    with month.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BalanceSnapshot).where(
            BalanceSnapshot.contract_id == ticket.contract_id, BalanceSnapshot.month > "2026-10")) == 0
    assert report() == expected()
    entry = int(out.split()[1].rstrip(":"))
    code, _, err = month.run("time", "reverse", str(entry), "--by", "anna@firma.pl", "--reason", "wrong ticket",
                             now=datetime(2026, 9, 30, 12, tzinfo=UTC))
    assert code == 0, err
    assert report() == expected()


def test_changed_terms_and_a_removed_contract_make_snapshots_stale(synced: sessionmaker[Session]) -> None:
    """Snapshots stored under one monthly allowance are not read under another (the customers file
    changed); a contract removed after its snapshots were stored is computed under its end."""
    with synced() as session, session.begin():
        for n in range(10):
            at = ORIGIN + timedelta(days=31 * n + 5)
            for contract_id in ("a-sla", "c-sla"):
                session.add(LedgerRow(contract_id=contract_id, customer_id=OWNER[contract_id], minutes=100 + 7 * n,
                                      overage=False, booked_at=at, by="anna@firma.pl"))
    with synced() as session, session.begin():
        hours_report(session, _customers(with_gone=True), "2025-02", WARSAW, "SUP", store=True)
    for customers in (_customers(replace(SLA_A, monthly_minutes=720, rollover_months=0)), _customers()):
        with synced() as session, session.begin():
            got = hours_report(session, customers, "2025-07", WARSAW, "SUP", store=True)
        with synced() as session:
            assert got == _reference(session, customers, "2025-07")


def test_a_booking_committed_while_a_report_computes_never_leaves_a_stale_snapshot(
        synced: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    """A correction into a closed month commits between the report's read of the ledger and its store.

    SQLite refuses the report's write (its read is older than the commit) and
    stores nothing; on PostgreSQL the booking waits for the contract row the
    report holds and then deletes what the report stored. Either way the next
    report equals the whole ledger's.
    """
    from maild.billing import reports

    with synced() as session, session.begin():
        for n in range(8):
            session.add(LedgerRow(contract_id="b-sla", customer_id="beta", minutes=200 + n, overage=False,
                                  booked_at=ORIGIN + timedelta(days=30 * n + 3), by="anna@firma.pl"))
    original = reports.load_history
    booking: list[threading.Thread] = []

    def correction() -> None:
        at = ORIGIN + timedelta(days=200)  # April 2025: b-sla carries without limit
        with synced() as session, session.begin():
            session.add(LedgerRow(contract_id="b-sla", customer_id="beta", minutes=333, overage=False,
                                  booked_at=at, by="anna@firma.pl"))
            session.flush()
            invalidate_snapshots(session, "b-sla", at, WARSAW)

    def load_then_book(*args: object, **kwargs: object) -> list[reports.LedgerLine]:
        lines = original(*args, **kwargs)  # type: ignore[arg-type]
        if not booking:
            booking.append(threading.Thread(target=correction))
            booking[0].start()
            booking[0].join(timeout=3)  # PostgreSQL: still waiting for the report's lock
        return lines

    monkeypatch.setattr(reports, "load_history", load_then_book)
    with synced() as session, session.begin():
        hours_report(session, _customers(), "2025-06", WARSAW, "SUP", store=True)
    booking[0].join(timeout=30)
    assert not booking[0].is_alive()
    monkeypatch.setattr(reports, "load_history", original)
    with synced() as session, session.begin():
        got = hours_report(session, _customers(), "2025-06", WARSAW, "SUP", store=True)
    with synced() as session:
        assert got == _reference(session, _customers(), "2025-06")
        assert any(line.minutes == 333 for line in load_lines(session))


def test_report_month_stores_the_snapshots_it_computes_and_the_next_one_reads_them(month: Month) -> None:
    """``report month`` keeps the balances it had to compute, as ``report hours`` does: the second
    report of the month gives the same hours with the ledger before the month gone (read from
    the snapshots, not summed again)."""
    def hours() -> object:
        code, out, err = month.run("report", "month", "--month", MONTH, "--json")
        assert code == 0, err
        return json.loads(out)["hours"]

    with month.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BalanceSnapshot)) == 0
    first = hours()
    with month.sessions() as session:
        assert session.scalar(select(func.count()).select_from(BalanceSnapshot).where(
            BalanceSnapshot.month == MONTH)) > 0
    with month.sessions() as session, session.begin():
        before = month_bounds(MONTH, WARSAW)[0]
        assert session.execute(delete(LedgerRow).where(LedgerRow.booked_at < before)).rowcount > 0
    assert hours() == first
