"""Monthly statements, balances and the SLA report: exact numbers from known ledger lines."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from maild.billing.ledger import LedgerEntry
from maild.rules.customers import Contract, Customer
from maild.storage.db import open_database
from maild.storage.models import ContractRow, CustomerRow, LedgerRow, Ticket
from maild.rules.wording import format_amount as format_money
from maild.billing.reports import (
    HoursReport,
    LedgerLine,
    ReportError,
    TicketInfo,
    build_balances,
    build_hours_report,
    build_sla_report,
    contract_balances,
    hours_report,
    sla_report,
)

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")

SLA = Contract(id="acme-sla", kind="sla", start=date(2025, 12, 1), monthly_minutes=120, hourly_rate_cents=20000)
P1 = Contract(id="nowak-p1", kind="prepaid", start=date(2026, 1, 1), package_minutes=240,
              valid_until=date(2026, 3, 31), hourly_rate_cents=28000)
P2 = Contract(id="nowak-p2", kind="prepaid", start=date(2026, 1, 1), package_minutes=420,
              valid_until=date(2026, 6, 30), hourly_rate_cents=28000)
SMALL = Contract(id="small-p", kind="prepaid", start=date(2026, 1, 1), package_minutes=240,
                 valid_until=date(2026, 3, 31), hourly_rate_cents=28000)
ADHOC = Contract(id="globex-adhoc", kind="occasional", start=date(2025, 6, 1), hourly_rate_cents=32000)
CUSTOMERS = (
    Customer(id="acme", name="ACME", billing_address="faktury@acme.pl", contracts=(SLA,)),
    Customer(id="nowak", name="Biuro Nowak", contracts=(P1, P2)),
    Customer(id="small", name="Small", contracts=(SMALL,)),
    Customer(id="globex", name="Globex", language="en", contracts=(ADHOC,)),
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def line(n: int, contract: str | None, ticket: int | None, minutes: int, when: str, scope: str | None = None,
         overage: bool = False, reverses: int | None = None, customer: str | None = None) -> LedgerLine:
    owner = customer
    if owner is None and contract is not None:
        owner = next((c.id for c in CUSTOMERS for k in c.contracts if k.id == contract), None)
    return LedgerLine(id=n, contract_id=contract, customer_id=owner, ticket_id=ticket, minutes=minutes,
                      overage=overage, booked_at=at(when), scope=scope, reverses=reverses)


LINES = [
    # sla: 60 min in December carry over into January
    line(1, "acme-sla", 1, 60, "2025-12-10T10:00", "consultation"),
    line(2, "acme-sla", 1, 90, "2026-01-05T10:00", "consultation"),
    line(3, "acme-sla", 1, 45, "2026-01-20T10:00", "incident"),
    line(4, "acme-sla", 2, 100, "2026-01-31T22:59", "development"),  # 23:59 on 31 January in Warsaw
    line(5, "acme-sla", 1, -45, "2026-01-25T10:00", "incident", reverses=3),
    line(6, "acme-sla", 2, 30, "2026-01-31T23:00", "development"),  # 00:00 on 1 February in Warsaw
    line(7, "acme-sla", 2, -100, "2026-02-03T10:00", "development", reverses=4),
    # prepaid, two packages: a booking split across them
    line(10, "nowak-p1", 3, 200, "2026-01-10T10:00", "training"),
    line(11, "nowak-p1", 3, 40, "2026-01-20T10:00", "training"),
    line(12, "nowak-p2", 3, 60, "2026-01-20T10:00", "training"),
    # prepaid crossing zero: the rest is overage at the hourly rate
    line(20, "small-p", 4, 200, "2026-01-10T10:00"),
    line(21, "small-p", 4, 40, "2026-01-15T10:00"),
    line(22, "small-p", 4, 50, "2026-01-15T10:00", overage=True),
    # occasional: per started quarter hour, per ticket and month
    line(30, "globex-adhoc", 5, 5, "2026-01-02T10:00"),
    line(31, "globex-adhoc", 5, 5, "2026-01-03T10:00"),
    line(32, "globex-adhoc", 5, 5, "2026-01-04T10:00"),
    line(33, "globex-adhoc", 6, 16, "2026-01-04T10:00"),
    line(34, "globex-adhoc", 7, 40, "2026-01-31T22:50"),
    line(35, "globex-adhoc", 7, 10, "2026-02-10T10:00"),
    # an unknown sender: no contract, no rate
    line(40, None, 8, 7, "2026-01-12T10:00", customer=None),
]


def tickets() -> dict[int, TicketInfo]:
    return {
        n: TicketInfo(id=n, ref=f"SUP-{n}", subject=f"ticket {n}", customer_id=None, contract_id=None,
                      contract_kind="sla", created_at=at("2026-01-01T10:00"), reaction_due=None,
                      first_response_at=None)
        for n in range(1, 9)
    }


def january() -> HoursReport:
    return build_hours_report("2026-01", WARSAW, CUSTOMERS, LINES, tickets(), 15)


def test_sla_statement_carry_over_reversal_and_overage() -> None:
    sla = january().contract("acme-sla")
    assert sla is not None
    assert sla.total_minutes == 90 + 45 + 100 - 45
    assert (sla.allowance_minutes, sla.carry_in_minutes) == (120, 60)
    assert sla.overage_minutes == 190 - 180
    assert sla.carry_out_minutes == 0
    assert sla.billable_minutes == 10
    assert sla.amount_cents == 3333
    assert dict(sla.minutes_by_scope) == {"consultation": 90, "incident": 0, "development": 100}
    assert [(t.ref, t.total_minutes) for t in sla.tickets] == [("SUP-1", 90), ("SUP-2", 100)]


def test_entry_at_local_midnight_belongs_to_the_next_month_and_reversal_corrects_its_own_month() -> None:
    feb = build_hours_report("2026-02", WARSAW, CUSTOMERS, LINES, tickets(), 15).contract("acme-sla")
    assert feb is not None
    assert feb.total_minutes == 30 - 100
    assert feb.carry_in_minutes == 0
    assert feb.carry_out_minutes == 120 + 70
    assert feb.overage_minutes == 0
    assert january().contract("acme-sla") == build_hours_report(
        "2026-01", WARSAW, CUSTOMERS, LINES[:5], tickets(), 15).contract("acme-sla"), \
        "a later reversal must not change an issued statement"


def test_prepaid_balances_over_the_month() -> None:
    report = january()
    p1, p2 = report.contract("nowak-p1"), report.contract("nowak-p2")
    assert p1 is not None and p2 is not None
    assert (p1.balance_start_minutes, p1.total_minutes, p1.balance_end_minutes) == (240, 240, 0)
    assert (p2.balance_start_minutes, p2.total_minutes, p2.balance_end_minutes) == (420, 60, 360)
    assert (p1.overage_minutes, p1.amount_cents) == (0, 0)
    assert p2.valid_until == date(2026, 6, 30)


def test_prepaid_crossing_zero_bills_the_rest_as_overage() -> None:
    small = january().contract("small-p")
    assert small is not None
    assert small.total_minutes == 290
    assert (small.balance_start_minutes, small.balance_end_minutes) == (240, 0)
    assert small.overage_minutes == 50
    assert small.amount_cents == 23333
    assert small.tickets[0].overage_minutes == 50


def test_occasional_bills_started_units_per_ticket_and_month() -> None:
    adhoc = january().contract("globex-adhoc")
    assert adhoc is not None
    assert [(t.ref, t.total_minutes, t.billable_minutes) for t in adhoc.tickets] == [
        ("SUP-5", 15, 15), ("SUP-6", 16, 30), ("SUP-7", 40, 45)]
    assert adhoc.billable_minutes == 90
    assert adhoc.amount_cents == 48000
    assert format_money(adhoc.amount_cents) == "480,00"


def test_unknown_sender_time_is_reported_without_an_amount() -> None:
    unknown = january().customer(None)
    assert unknown is not None
    (contract,) = unknown.contracts
    assert (contract.contract_id, contract.total_minutes, contract.billable_minutes) == (None, 7, 15)
    assert contract.amount_cents is None


def test_customer_totals() -> None:
    acme = january().customer("acme")
    assert acme is not None
    assert (acme.total_minutes, acme.amount_cents, acme.billing_address) == (190, 3333, "faktury@acme.pl")


def test_active_sla_contract_without_time_is_still_on_the_statement() -> None:
    report = build_hours_report("2026-03", WARSAW, CUSTOMERS, LINES, tickets(), 15)
    sla = report.contract("acme-sla")
    assert sla is not None and sla.total_minutes == 0
    assert sla.carry_in_minutes == 120 + 70, "February's carry-out"
    assert sla.carry_out_minutes == 120 + 70 + 120
    assert report.contract("globex-adhoc") is None


@pytest.mark.parametrize(("cents", "text"), [(0, "0,00"), (5, "0,05"), (12345, "123,45"), (-150, "-1,50"),
                                             (100000000, "1000000,00")])
def test_money_is_printed_with_a_decimal_comma(cents: int, text: str) -> None:
    assert format_money(cents) == text


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "January", "", "2026-00"])
def test_bad_month_is_refused(month: str) -> None:
    with pytest.raises(ReportError, match="YYYY-MM"):
        build_hours_report(month, WARSAW, CUSTOMERS, LINES, tickets(), 15)


# ------------------------------------------------------------------ balances


def test_balances_now() -> None:
    now = at("2026-01-31T23:30")  # 1 February, 00:30 in Warsaw: a new month has begun
    by_id = {b.contract_id: b for b in build_balances(CUSTOMERS, LINES, now, WARSAW)}
    sla = by_id["acme-sla"]
    assert (sla.used_minutes_month, sla.carry_over_minutes, sla.balance_minutes, sla.overage_minutes) == (30, 0, 90, 0)
    assert (by_id["nowak-p1"].balance_minutes, by_id["nowak-p2"].balance_minutes) == (0, 360)
    assert by_id["nowak-p1"].valid_until == date(2026, 3, 31)
    assert by_id["small-p"].balance_minutes == 0
    assert by_id["globex-adhoc"].balance_minutes is None


def test_balances_in_an_overdrawn_month_and_after_expiry() -> None:
    jan = {b.contract_id: b for b in build_balances(CUSTOMERS, LINES, at("2026-01-31T22:59:30"), WARSAW)}
    assert (jan["acme-sla"].used_minutes_month, jan["acme-sla"].balance_minutes) == (190, -10)
    assert jan["acme-sla"].overage_minutes == 10
    assert (jan["small-p"].used_minutes_month, jan["small-p"].overage_minutes) == (290, 50)
    april = {b.contract_id: b for b in build_balances(CUSTOMERS, LINES, at("2026-04-02T12:00"), WARSAW)}
    assert april["nowak-p1"].expired and april["nowak-p1"].balance_minutes == 0
    assert not april["nowak-p2"].expired and april["nowak-p2"].balance_minutes == 360


# ------------------------------------------------------------------ SLA report


def sla_ticket(n: int, created: str, due_hours: int | None, response_minutes: int | None,
               kind: str = "sla", contract: str = "acme-sla") -> TicketInfo:
    created_at = at(created)
    return TicketInfo(
        id=n, ref=f"SUP-{n}", subject="", customer_id="acme", contract_id=contract, contract_kind=kind,
        created_at=created_at,
        reaction_due=None if due_hours is None else created_at + timedelta(hours=due_hours),
        first_response_at=None if response_minutes is None else created_at + timedelta(minutes=response_minutes),
    )


SLA_TICKETS = [
    sla_ticket(1, "2026-01-05T10:00", 24, 120),
    sla_ticket(2, "2026-01-10T10:00", 24, 1800),  # answered after the deadline
    sla_ticket(3, "2026-01-20T10:00", 24, None),  # never answered, deadline passed
    sla_ticket(4, "2026-01-31T22:00", 24, None),  # 23:00 local on 31 January, still running
    sla_ticket(5, "2026-01-31T23:30", 24, 10),  # February in Warsaw
    sla_ticket(6, "2026-01-03T10:00", 24, 60),
    sla_ticket(7, "2026-01-03T10:00", None, 500, kind="prepaid", contract="nowak-p1"),
]


def test_sla_report_counts_met_missed_open_median_and_worst() -> None:
    report = build_sla_report("2026-01", WARSAW, SLA_TICKETS, {"acme": "ACME"}, at("2026-02-01T12:00"))
    (row,) = report.contracts
    assert (row.customer_id, row.customer_name, row.contract_id) == ("acme", "ACME", "acme-sla")
    assert (row.tickets, row.met, row.missed, row.open) == (5, 2, 2, 1)
    assert (row.median_reaction_minutes, row.worst_reaction_minutes) == (120, 1800)
    assert row.missed_refs == ("SUP-2", "SUP-3")


def test_sla_report_once_the_last_deadline_passed() -> None:
    report = build_sla_report("2026-01", WARSAW, SLA_TICKETS, {}, at("2026-02-02T12:00"))
    (row,) = report.contracts
    assert (row.met, row.missed, row.open) == (2, 3, 0)


def test_sla_median_of_an_even_count_is_the_lower_whole_minute() -> None:
    tickets = [sla_ticket(1, "2026-01-05T10:00", 24, 10), sla_ticket(2, "2026-01-06T10:00", 24, 21)]
    (row,) = build_sla_report("2026-01", WARSAW, tickets, {}, at("2026-02-01T00:00")).contracts
    assert (row.median_reaction_minutes, row.worst_reaction_minutes) == (15, 21)


# ------------------------------------------------------------------ property


CONTRACT_CHOICES = ["acme-sla", "nowak-p1", "nowak-p2", "small-p", "globex-adhoc", None, "gone"]
START = at("2025-12-15T00:00")


@st.composite
def ledgers(draw: st.DrawFn) -> list[LedgerLine]:
    count = draw(st.integers(0, 25))
    lines: list[LedgerLine] = []
    for n in range(1, count + 1):
        when = START + timedelta(minutes=draw(st.integers(0, 80 * 24 * 60)))
        earlier = [x for x in lines if x.reverses is None and x.minutes > 0
                   and not any(y.reverses == x.id for y in lines)]
        reverse: bool = draw(st.booleans())
        if earlier and reverse:
            target: LedgerLine = draw(st.sampled_from(earlier))
            lines.append(LedgerLine(
                id=n, contract_id=target.contract_id, customer_id=target.customer_id, ticket_id=target.ticket_id,
                minutes=-target.minutes, overage=target.overage, booked_at=max(when, target.booked_at),
                scope=target.scope, reverses=target.id))
            continue
        contract = draw(st.sampled_from(CONTRACT_CHOICES))
        lines.append(LedgerLine(
            id=n, contract_id=contract,
            customer_id=draw(st.sampled_from(["acme", "nowak", None])) if contract in (None, "gone") else
            next(c.id for c in CUSTOMERS for k in c.contracts if k.id == contract),
            ticket_id=draw(st.sampled_from([1, 2, 3, None])), minutes=draw(st.integers(1, 600)),
            overage=draw(st.booleans()) if contract in ("small-p", "nowak-p2") else False,
            booked_at=when, scope=draw(st.sampled_from(["training", "incident", None])),
        ))
    return lines


@settings(max_examples=150, deadline=None)
@given(ledgers(), st.sampled_from(["2025-12", "2026-01", "2026-02"]))
def test_report_minutes_equal_the_ledger_rows_of_the_month(lines: list[LedgerLine], month: str) -> None:
    report = build_hours_report(month, WARSAW, CUSTOMERS, lines, tickets(), 15)
    start = {"2025-12": at("2025-11-30T23:00"), "2026-01": at("2025-12-31T23:00"),
             "2026-02": at("2026-01-31T23:00")}[month]
    end = {"2025-12": at("2025-12-31T23:00"), "2026-01": at("2026-01-31T23:00"),
           "2026-02": at("2026-02-28T23:00")}[month]
    expected: dict[str | None, int] = defaultdict(int)
    for x in lines:
        if start <= x.booked_at < end:
            expected[x.contract_id] += x.minutes
    got: dict[str | None, int] = defaultdict(int)
    for customer in report.customers:
        for contract in customer.contracts:
            got[contract.contract_id] += contract.total_minutes
            assert sum(t.total_minutes for t in contract.tickets) == contract.total_minutes
            assert sum(m for _, m in contract.minutes_by_scope) == contract.total_minutes
            if contract.kind == "sla":
                assert contract.carry_in_minutes is not None and contract.carry_out_minutes is not None
                assert (contract.carry_in_minutes + (contract.allowance_minutes or 0) - contract.total_minutes
                        + contract.overage_minutes) == contract.carry_out_minutes + (contract.expired_minutes or 0)
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in expected.items() if v}
    assert set(expected) <= set(got), "a contract with rows in the month is missing from the report"


# ------------------------------------------------------------------ from the database


@pytest.fixture()
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return open_database(f"sqlite:///{tmp_path / 'maild.db'}")


def test_reports_from_database_rows_including_a_removed_contract(sessions: sessionmaker[Session]) -> None:
    when = at("2026-01-05T10:00")
    with sessions() as session, session.begin():
        session.add(CustomerRow(id="acme", name="ACME", language="pl", addresses=[], domains=[],
                                billing_address=None, active=True))
        session.flush()
        session.add_all([
            ContractRow(id="acme-sla", customer_id="acme", kind="sla", start=date(2025, 12, 1), end=None,
                        terms={"monthly_minutes": 120, "hourly_rate_cents": 20000}),
            ContractRow(id="acme-old", customer_id="acme", kind="sla", start=date(2025, 1, 1),
                        end=date(2026, 1, 31), removed_at=when,
                        terms={"monthly_minutes": 60, "hourly_rate_cents": 10000}),
        ])
        session.flush()
        session.add_all([
            Ticket(id=1, subject="Faktura", customer_id="acme", contract_id="acme-sla", contract_kind="sla",
                   created_at=when, updated_at=when, reaction_due=when + timedelta(hours=24),
                   first_response_at=when + timedelta(hours=2)),
            Ticket(id=2, subject="Stara", customer_id="acme", contract_id="acme-old", contract_kind="sla",
                   created_at=when, updated_at=when, reaction_due=when + timedelta(hours=24)),
        ])
        session.flush()
        session.add_all([
            LedgerRow(contract_id="acme-sla", customer_id="acme", ticket_id=1, minutes=150, booked_at=when,
                      by="ewa@firma.pl", scope="consultation"),
            LedgerRow(contract_id="acme-old", customer_id="acme", ticket_id=2, minutes=30, booked_at=when,
                      by="ewa@firma.pl", scope=None),
        ])
    in_file = (Customer(id="acme", name="ACME", contracts=(replace(SLA, start=date(2026, 1, 1)),)),)
    with sessions() as session:
        report = hours_report(session, in_file, "2026-01", WARSAW, "SUP", 15)
        balances = {b.contract_id: b for b in contract_balances(session, in_file, at("2026-01-20T10:00"), WARSAW)}
        sla = sla_report(session, in_file, "2026-01", WARSAW, "SUP", at("2026-02-01T00:00"))
    current, old = report.contract("acme-sla"), report.contract("acme-old")
    assert current is not None and old is not None
    assert (current.total_minutes, current.overage_minutes, current.amount_cents) == (150, 30, 10000)
    assert current.tickets[0].ref == "SUP-1" and current.tickets[0].subject == "Faktura"
    assert (old.total_minutes, old.allowance_minutes) == (30, 60)
    assert balances["acme-old"].removed and not balances["acme-sla"].removed
    assert (balances["acme-sla"].balance_minutes, balances["acme-sla"].overage_minutes) == (120 - 150, 30)
    by_contract = {c.contract_id: c for c in sla.contracts}
    assert (by_contract["acme-sla"].met, by_contract["acme-sla"].median_reaction_minutes) == (1, 120)
    assert by_contract["acme-old"].missed == 1


@pytest.mark.parametrize("contract", [
    Contract(id="o", kind="occasional", start=date(2026, 1, 1), hourly_rate_cents=25050, unit_minutes=30),
    Contract(id="s", kind="sla", start=date(2026, 1, 1), hourly_rate_cents=20000, reaction_hours=8,
             reaction_clock="business", monthly_minutes=450, rollover_months=3),
    Contract(id="p", kind="prepaid", start=date(2026, 1, 1), package_minutes=240,
             valid_until=date(2026, 3, 31), target_hours=48),
])
def test_removed_contract_keeps_every_term(contract: Contract) -> None:
    """What the database remembers of a contract that left the file is the contract itself."""
    from maild.billing.reports import contract_from_row
    from maild.rules.kinds import contract_terms

    row = ContractRow(id=contract.id, customer_id="c", kind=contract.kind, start=contract.start,
                      end=contract.end, terms=contract_terms(contract), removed_at=None)
    assert contract_from_row(row) == contract


# ------------------------------------------------------------------ summed history equals every row


_DB: dict[str, sessionmaker[Session]] = {}


def _history_db() -> sessionmaker[Session]:
    """One database for every example: the schema is built once, the ledger emptied per example."""
    if "db" not in _DB:
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="maild-reports-"))
        sessions = open_database(f"sqlite:///{directory / 'maild.db'}")
        when = at("2025-12-01T00:00")
        with sessions() as session, session.begin():
            session.add(CustomerRow(id="acme", name="ACME", language="pl", addresses=[], domains=[],
                                    billing_address=None, active=True))
            session.flush()
            session.add_all([ContractRow(id=c, customer_id="acme", kind="sla", start=date(2025, 1, 1), end=None,
                                         terms={}) for c in ("acme-sla", "nowak-p1", "nowak-p2", "small-p",
                                                              "globex-adhoc")])
            session.add(ContractRow(id="gone", customer_id="acme", kind="occasional", start=date(2025, 1, 1),
                                    end=None, terms={}, removed_at=when))
            session.flush()
            session.add_all([Ticket(id=n, subject=f"ticket {n}", created_at=when, updated_at=when)
                             for n in range(1, 9)])
        _DB["db"] = sessions
    return _DB["db"]


# Local month starts in Warsaw, in UTC: rows within hours of them are where a wrong bucket would show.
BOUNDARIES = [at("2025-12-31T23:00"), at("2026-01-31T23:00"), at("2026-02-28T23:00"), at("2026-03-31T22:00")]


@st.composite
def boundary_ledgers(draw: st.DrawFn) -> list[LedgerLine]:
    lines = draw(ledgers())
    out = []
    for x in lines:
        if x.reverses is None and draw(st.booleans()):
            edge = draw(st.sampled_from(BOUNDARIES)) + timedelta(minutes=draw(st.integers(-150, 150)))
            x = replace(x, booked_at=edge)
        out.append(x)
    return out


ROLLING = (replace(CUSTOMERS[0], contracts=(replace(SLA, rollover_months=1),)), *CUSTOMERS[1:])


@settings(max_examples=120, deadline=None)
@example([line(1, "acme-sla", 1, 1, "2025-12-10T23:30"), line(2, "acme-sla", 2, 200, "2025-12-31T23:30")],
         "2026-02", 0)  # 00:30 on 1 January in Warsaw: counted in December, the carry-in to February is 120
@given(boundary_ledgers(), st.sampled_from(["2025-12", "2026-01", "2026-02", "2026-03", "2026-04"]),
       st.integers(0, 100 * 24 * 60))
def test_reports_from_summed_history_equal_reports_from_every_row(lines: list[LedgerLine], month: str,
                                                                   now_minutes: int) -> None:
    """The database path sums the months before the report's; every figure must match the row-by-row build."""
    from maild.billing.reports import load_lines, merge_known_customers

    sessions = _history_db()
    with sessions() as session, session.begin():
        session.query(LedgerRow).delete()
        for x in lines:
            session.add(LedgerRow(id=x.id, contract_id=x.contract_id, customer_id=x.customer_id,
                                  ticket_id=x.ticket_id, minutes=x.minutes, overage=x.overage,
                                  booked_at=x.booked_at, by="ewa@firma.pl", scope=x.scope, reverses=x.reverses))
            session.flush()
    now = START + timedelta(minutes=now_minutes * 2)
    with sessions() as session:
        known, removed = merge_known_customers(session, ROLLING, WARSAW)
        every_row = load_lines(session)
        assert len(every_row) == len(lines)
        infos = {n: replace(t, subject=f"ticket {n}", contract_kind="occasional", created_at=at("2025-12-01T00:00"))
                 for n, t in tickets().items()}
        summed = hours_report(session, ROLLING, month, WARSAW, "SUP", 15)
        balances = contract_balances(session, ROLLING, now, WARSAW)
    expected = build_hours_report(month, WARSAW, known, every_row, infos, 15)
    booked = {t.ticket_id for c in expected.customers for k in c.contracts for t in k.tickets}
    assert summed == build_hours_report(month, WARSAW, known, every_row,
                                        {n: i for n, i in infos.items() if n in booked}, 15)
    assert balances == build_balances(known, every_row, now, WARSAW, removed)


@settings(max_examples=60, deadline=None)
@given(boundary_ledgers(), st.integers(0, 100 * 24 * 60))
def test_prepaid_left_from_summed_draws_equals_every_row(lines: list[LedgerLine], at_minutes: int) -> None:
    """Ingest asks for a customer's package balances per batch; the database's sums must give every row's answer."""
    from maild.billing.hours import prepaid_left_minutes
    from maild.billing.ledger import prepaid_balances

    sessions = _history_db()
    with sessions() as session, session.begin():
        session.query(LedgerRow).delete()
        for x in lines:
            session.add(LedgerRow(id=x.id, contract_id=x.contract_id, customer_id=x.customer_id,
                                  ticket_id=x.ticket_id, minutes=x.minutes, overage=x.overage,
                                  booked_at=x.booked_at, by="ewa@firma.pl", scope=x.scope, reverses=x.reverses))
            session.flush()
    moment = START + timedelta(minutes=at_minutes)
    entries = [LedgerEntry(id=x.id, contract_id=x.contract_id or "", ticket_id=x.ticket_id, minutes=x.minutes,
                           booked_at=x.booked_at, by="", scope=x.scope) for x in lines if not x.overage]
    for packages in ((P1, P2), (SMALL,)):
        with sessions() as session:
            got = prepaid_left_minutes(session, packages, moment, WARSAW)
        assert got == {b.contract_id: 0 if b.expired else b.left
                       for b in prepaid_balances(packages, entries, moment, WARSAW)}
