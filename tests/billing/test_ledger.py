"""Hour ledger arithmetic: no minute lost or invented, months cut in the business time zone."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.rules.customers import Contract, package_valid_until
from maild.billing.ledger import (
    Allocation,
    LedgerEntry,
    LedgerError,
    SlaMonth,
    allocate_prepaid,
    amount_cents,
    crossed_low_balance,
    month_key,
    occasional_billable,
    prepaid_balances,
    sla_months,
)

WARSAW = ZoneInfo("Europe/Warsaw")
UTC = timezone.utc
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def entry(n: int, minutes: int, at: datetime, contract_id: str = "sla", reverses: int | None = None) -> LedgerEntry:
    return LedgerEntry(
        id=n, contract_id=contract_id, ticket_id=1, minutes=minutes, booked_at=at, by="ewa", scope=None,
        reverses=reverses,
    )


def book(entries: list[LedgerEntry], allocations: Sequence[Allocation], at: datetime) -> list[LedgerEntry]:
    """What the caller does with an allocation: one entry per package share."""
    out = list(entries)
    for allocation in allocations:
        if allocation.contract_id is not None:
            out.append(entry(len(out) + 1, allocation.minutes, at, allocation.contract_id))
    return out


def sla_contract(monthly: int = 480, rollover: int | None = None, end: date | None = None) -> Contract:
    return Contract(
        id="sla", kind="sla", start=date(2026, 1, 15), end=end, monthly_minutes=monthly, rollover_months=rollover
    )


# --- months in the business time zone --------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "month"),
    [
        (datetime(2026, 1, 31, 22, 30, tzinfo=UTC), "2026-01"),  # 23:30 local, winter time
        (datetime(2026, 1, 31, 23, 0, tzinfo=UTC), "2026-02"),  # 00:00 local on 1 February
        (datetime(2026, 3, 31, 21, 59, tzinfo=UTC), "2026-03"),  # 23:59 local, summer time
        (datetime(2026, 3, 31, 22, 30, tzinfo=UTC), "2026-04"),  # 00:30 local on 1 April
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "2027-01"),
    ],
)
def test_month_boundaries_in_warsaw(utc: datetime, month: str) -> None:
    assert month_key(utc, WARSAW) == month
    rows = sla_months(sla_contract(), [entry(1, 30, utc)], "2027-01", WARSAW)
    assert [row.month for row in rows if row.used] == [month]


def test_naive_times_are_refused() -> None:
    with pytest.raises(LedgerError, match="naive"):
        month_key(datetime(2026, 1, 1), WARSAW)


# --- sla carry-over -----------------------------------------------------------------------


def test_unused_hours_carry_over_and_overage_is_reported() -> None:
    entries = [
        entry(1, 300, datetime(2026, 1, 20, 10, tzinfo=UTC)),
        entry(2, 1000, datetime(2026, 2, 10, 10, tzinfo=UTC)),
        entry(3, 100, datetime(2026, 3, 10, 10, tzinfo=UTC)),
    ]
    rows = sla_months(sla_contract(), entries, "2026-03", WARSAW)
    assert rows == [
        SlaMonth("2026-01", allowance=480, carry_in=0, used=300, carry_out=180, overage=0, expired=0),
        SlaMonth("2026-02", allowance=480, carry_in=180, used=1000, carry_out=0, overage=340, expired=0),
        SlaMonth("2026-03", allowance=480, carry_in=0, used=100, carry_out=380, overage=0, expired=0),
    ]


def test_rollover_limit_expires_oldest_minutes_first() -> None:
    entries = [entry(1, 100, datetime(2026, 3, 5, 10, tzinfo=UTC))]
    rows = sla_months(sla_contract(monthly=60, rollover=1), entries, "2026-04", WARSAW)
    # January's 60 may be used in January and February only: it expires at the end of February.
    assert [(r.month, r.carry_in, r.used, r.overage, r.carry_out, r.expired) for r in rows] == [
        ("2026-01", 0, 0, 0, 60, 0),
        ("2026-02", 60, 0, 0, 60, 60),
        ("2026-03", 60, 100, 0, 20, 0),  # February's 60 used first, then 40 of March's
        ("2026-04", 20, 0, 0, 60, 20),
    ]


def test_no_rollover_means_nothing_carries() -> None:
    rows = sla_months(sla_contract(monthly=60, rollover=0), [], "2026-02", WARSAW)
    assert [(r.carry_in, r.carry_out, r.expired) for r in rows] == [(0, 0, 60), (0, 0, 60)]


def test_after_the_end_carry_expires_and_bookings_are_overage() -> None:
    contract = sla_contract(monthly=60, end=date(2026, 2, 28))
    rows = sla_months(contract, [entry(1, 45, datetime(2026, 3, 2, 10, tzinfo=UTC))], "2026-03", WARSAW)
    assert [(r.month, r.allowance, r.carry_out, r.expired, r.overage) for r in rows] == [
        ("2026-01", 60, 60, 0, 0),
        ("2026-02", 60, 0, 120, 0),
        ("2026-03", 0, 0, 0, 45),
    ]


MONTH_STARTS = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=31 * i) for i in range(14)]
entries_st = st.lists(
    st.tuples(st.integers(-120, 900), st.integers(0, 13 * 31 * 24 * 60)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    monthly=st.integers(0, 600),
    rollover=st.none() | st.integers(0, 4),
    end=st.none() | st.dates(min_value=date(2026, 1, 15), max_value=date(2027, 3, 1)),
    raw=entries_st,
)
def test_carry_over_never_loses_or_invents_a_minute(
    monthly: int, rollover: int | None, end: date | None, raw: list[tuple[int, int]]
) -> None:
    contract = sla_contract(monthly, rollover, end)
    entries = [entry(i, minutes, T0 + timedelta(minutes=offset)) for i, (minutes, offset) in enumerate(raw, 1)]
    rows = sla_months(contract, entries, "2027-02", WARSAW)
    assert len(rows) == 14
    previous_out = 0
    for row in rows:
        assert row.carry_in == previous_out
        assert row.carry_in + row.allowance - row.used + row.overage == row.carry_out + row.expired
        assert min(row.overage, row.carry_out, row.expired) >= 0
        previous_out = row.carry_out
    # Over the whole life: every allowance minute is either used, still carried or expired;
    # overage is exactly the use nothing covered.
    assert sum(r.allowance for r in rows) + sum(r.overage for r in rows) == (
        sum(r.used for r in rows) + rows[-1].carry_out + sum(r.expired for r in rows)
    )
    assert sum(r.used for r in rows) == sum(e.minutes for e in entries)
    if rollover is not None and all(e.minutes >= 0 for e in entries):
        assert all(r.carry_out <= monthly * (rollover + 1) for r in rows)


@settings(max_examples=200, deadline=None)
@given(raw=entries_st, pick=st.integers(0, 39), later=st.integers(0, 200 * 24 * 60))
def test_sla_reversal_restores_every_month(raw: list[tuple[int, int]], pick: int, later: int) -> None:
    contract = sla_contract(monthly=300, rollover=2)
    entries = [entry(i, minutes, T0 + timedelta(minutes=offset)) for i, (minutes, offset) in enumerate(raw, 1)]
    mistake = entry(1000, 240 + pick, T0 + timedelta(minutes=pick * 9000))
    reversal = entry(1001, -mistake.minutes, mistake.booked_at + timedelta(minutes=later), reverses=1000)
    assert sla_months(contract, [*entries, mistake, reversal], "2027-02", WARSAW) == sla_months(
        contract, entries, "2027-02", WARSAW
    )


# --- prepaid packages ---------------------------------------------------------------------


def package(cid: str, hours: int, start: date, valid_until: date | None = None) -> Contract:
    months = {4: 3, 7: 4, 10: 6, 15: 12}[hours]
    return Contract(
        id=cid, kind="prepaid", start=start, package_minutes=hours * 60,
        valid_until=valid_until or package_valid_until(start, months),
    )


@pytest.mark.parametrize(
    ("hours", "valid_until"),
    [(4, date(2026, 3, 31)), (7, date(2026, 4, 30)), (10, date(2026, 6, 30)), (15, date(2026, 12, 31))],
)
def test_default_package_sizes_and_validity(hours: int, valid_until: date) -> None:
    p = package("p", hours, date(2026, 1, 1))
    inside = datetime.combine(valid_until, datetime.min.time(), WARSAW).replace(hour=23, minute=59)
    after = inside + timedelta(minutes=1)
    [balance] = prepaid_balances([p], [], inside, WARSAW)
    assert (balance.size, balance.left, balance.valid_until, balance.expired) == (hours * 60, hours * 60, valid_until, False)
    assert prepaid_balances([p], [], after, WARSAW)[0].expired
    assert allocate_prepaid([p], [], 30, after, WARSAW) == [Allocation(None, 30, True)]


def test_entry_crossing_zero_splits_into_package_and_overage() -> None:
    p1 = package("p1", 4, date(2026, 1, 1))
    entries = [entry(1, 200, datetime(2026, 1, 10, 10, tzinfo=UTC), "p1")]
    at = datetime(2026, 1, 12, 10, tzinfo=UTC)
    assert allocate_prepaid([p1], entries, 90, at, WARSAW) == [
        Allocation("p1", 40, False),
        Allocation(None, 50, True),
    ]
    after = book(entries, [Allocation("p1", 40, False)], at)
    assert prepaid_balances([p1], after, at, WARSAW)[0].left == 0
    assert allocate_prepaid([p1], after, 15, at, WARSAW) == [Allocation(None, 15, True)]


def test_draws_from_the_package_expiring_first() -> None:
    long = package("long", 15, date(2026, 1, 1))
    short = package("short", 4, date(2026, 2, 1))
    not_yet = package("future", 4, date(2026, 6, 1))
    at = datetime(2026, 2, 10, 10, tzinfo=UTC)
    assert allocate_prepaid([long, short, not_yet], [], 300, at, WARSAW) == [
        Allocation("short", 240, False),
        Allocation("long", 60, False),
    ]


def test_explicit_valid_until_is_the_last_usable_day() -> None:
    p = package("p", 4, date(2026, 1, 1), valid_until=date(2026, 1, 31))
    last_minute = datetime(2026, 1, 31, 22, 59, tzinfo=UTC)  # 23:59 in Warsaw
    assert allocate_prepaid([p], [], 10, last_minute, WARSAW) == [Allocation("p", 10, False)]
    assert allocate_prepaid([p], [], 10, last_minute + timedelta(minutes=1), WARSAW)[0].overage


packages_st = st.lists(
    st.tuples(st.sampled_from([4, 7, 10, 15]), st.integers(0, 200)), min_size=1, max_size=4
).map(lambda specs: [package(f"p{i}", h, date(2026, 1, 1) + timedelta(days=d)) for i, (h, d) in enumerate(specs)])


@settings(max_examples=300, deadline=None)
@given(
    packages=packages_st,
    history=st.lists(st.integers(1, 400), max_size=5),
    first=st.integers(0, 900),
    second=st.integers(0, 900),
    day=st.integers(0, 400),
)
def test_allocation_does_not_depend_on_batching(
    packages: list[Contract], history: list[int], first: int, second: int, day: int
) -> None:
    at = datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(days=day)
    entries: list[LedgerEntry] = []
    for minutes in history:
        entries = book(entries, allocate_prepaid(packages, entries, minutes, at, WARSAW), at)

    in_two = allocate_prepaid(packages, entries, first, at, WARSAW)
    after_first = book(entries, in_two, at)
    in_two += allocate_prepaid(packages, after_first, second, at, WARSAW)
    in_one = allocate_prepaid(packages, entries, first + second, at, WARSAW)

    def totals(allocations: list[Allocation]) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for a in allocations:
            out[a.contract_id] = out.get(a.contract_id, 0) + a.minutes
        return out

    assert totals(in_two) == totals(in_one)
    assert sum(a.minutes for a in in_one) == first + second
    assert all(a.minutes > 0 and a.overage == (a.contract_id is None) for a in in_one)


@settings(max_examples=200, deadline=None)
@given(packages=packages_st, bookings=st.lists(st.integers(1, 500), max_size=8), day=st.integers(0, 400))
def test_package_balances_move_by_exactly_the_entries(
    packages: list[Contract], bookings: list[int], day: int
) -> None:
    at = datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(days=day)
    entries: list[LedgerEntry] = []
    overage = 0
    for minutes in bookings:
        allocations = allocate_prepaid(packages, entries, minutes, at, WARSAW)
        overage += sum(a.minutes for a in allocations if a.overage)
        entries = book(entries, allocations, at)
    balances = prepaid_balances(packages, entries, at, WARSAW)
    start = prepaid_balances(packages, [], at, WARSAW)
    assert sum(b.used for b in balances) + overage == sum(bookings)
    assert sum(s.left - b.left for s, b in zip(start, balances)) == sum(e.minutes for e in entries)
    for b in balances:
        assert b.used == sum(e.minutes for e in entries if e.contract_id == b.contract_id)
        assert 0 <= b.left <= b.size


@settings(max_examples=200, deadline=None)
@given(packages=packages_st, bookings=st.lists(st.integers(1, 500), min_size=1, max_size=6), pick=st.integers(0, 50))
def test_prepaid_reversal_restores_balances(packages: list[Contract], bookings: list[int], pick: int) -> None:
    at = datetime(2026, 2, 1, 12, tzinfo=UTC)
    entries: list[LedgerEntry] = []
    for minutes in bookings:
        entries = book(entries, allocate_prepaid(packages, entries, minutes, at, WARSAW), at)
    if not entries:
        return
    before = prepaid_balances(packages, entries[:-1], at, WARSAW)
    last = entries[-1]
    reversal = replace(last, id=999, minutes=-last.minutes, reverses=last.id, booked_at=at + timedelta(minutes=pick))
    later = at + timedelta(hours=1)
    assert prepaid_balances(packages, [*entries, reversal], later, WARSAW) == prepaid_balances(
        packages, entries[:-1], later, WARSAW
    )
    assert [b.left for b in before] == [b.left for b in prepaid_balances(packages, [*entries, reversal], later, WARSAW)]


def test_balance_ignores_entries_booked_after_the_moment_asked() -> None:
    p = package("p", 4, date(2026, 1, 1))
    entries = [entry(1, 60, datetime(2026, 1, 10, tzinfo=UTC), "p"), entry(2, 60, datetime(2026, 1, 20, tzinfo=UTC), "p")]
    assert prepaid_balances([p], entries, datetime(2026, 1, 15, tzinfo=UTC), WARSAW)[0].used == 60


def test_negative_allocation_is_refused() -> None:
    with pytest.raises(LedgerError, match="reversal"):
        allocate_prepaid([], [], -5, T0, WARSAW)


# --- billing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("minutes", "billed"), [(0, 0), (1, 15), (15, 15), (16, 30), (44, 45), (61, 75)])
def test_occasional_is_billed_per_started_quarter(minutes: int, billed: int) -> None:
    assert occasional_billable(minutes) == billed


@given(st.integers(0, 10**6), st.integers(1, 120))
def test_occasional_units_round_up_at_most_one_unit(minutes: int, unit: int) -> None:
    billed = occasional_billable(minutes, unit)
    assert billed % unit == 0 and minutes <= billed < minutes + unit


@pytest.mark.parametrize(
    ("minutes", "rate", "cents"),
    [(60, 25050, 25050), (1, 25050, 418), (1, 30, 1), (1, 29, 0), (90, 20000, 30000), (7, 10, 1), (-1, 30, -1)],
)
def test_amount_is_exact_and_rounds_half_up(minutes: int, rate: int, cents: int) -> None:
    assert amount_cents(minutes, rate) == cents


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_amount_is_within_half_a_grosz(minutes: int, rate: int) -> None:
    cents = amount_cents(minutes, rate)
    assert abs(cents * 60 - minutes * rate) <= 30
    assert cents * 60 - minutes * rate != -30


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [(120, 60, True), (61, 0, True), (60, 30, False), (120, 61, False), (30, 0, False), (90, 90, False)],
)
def test_low_balance_warning_fires_once(before: int, after: int, crossed: bool) -> None:
    assert crossed_low_balance(before, after) is crossed


@given(st.lists(st.integers(0, 200), max_size=20), st.integers(0, 2000))
def test_low_balance_fires_at_most_once_as_a_balance_falls(draws: list[int], start: int) -> None:
    left = start
    fired = 0
    for minutes in draws:
        after = max(left - minutes, 0)
        fired += crossed_low_balance(left, after)
        left = after
    assert fired <= 1
    assert fired == (start > 60 >= left)
