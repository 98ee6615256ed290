"""Opening balances of contracts that ran before maild knew them: no invented carry-over."""
from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from maild.billing.ledger import prepaid_balances, sla_months
from maild.billing.reports import contract_balances
from maild.errors import ConfigError
from maild.rules.customers import Contract, Customer, PackageSettings, parse_customers
from maild.storage import store
from maild.storage.db import open_database

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")
SLA = Contract(id="acme-sla", kind="sla", start=date(2026, 1, 1), monthly_minutes=480)
DECEMBER = datetime(2026, 12, 10, 10, tzinfo=UTC)


def test_opening_month_starts_the_months_with_the_stated_carry_over() -> None:
    opened = Contract(id="acme-sla", kind="sla", start=date(2026, 1, 1), monthly_minutes=480,
                      opening_month="2026-12", opening_carry_over_minutes=750)
    months = sla_months(opened, [], "2026-12", WARSAW)
    assert [m.month for m in months] == ["2026-12"]
    assert (months[0].carry_in, months[0].allowance, months[0].carry_out) == (750, 480, 1230)
    # without it: eleven months of allowance nobody used, 88 h of phantom carry-over
    assert sla_months(SLA, [], "2026-12", WARSAW)[-1].carry_in == 11 * 480


@given(st.integers(min_value=2, max_value=12), st.integers(min_value=0, max_value=6000),
       st.one_of(st.none(), st.integers(min_value=0, max_value=6)))
def test_the_stated_carry_over_is_what_the_first_month_brings_in(month: int, carry: int, rollover: int | None) -> None:
    opened = Contract(id="c", kind="sla", start=date(2026, 1, 1), monthly_minutes=480, rollover_months=rollover,
                      opening_month=f"2026-{month:02d}", opening_carry_over_minutes=carry)
    first = sla_months(opened, [], f"2026-{month:02d}", WARSAW)
    assert len(first) == 1 and first[0].carry_in == carry
    assert first[0].carry_in + first[0].allowance == first[0].carry_out + first[0].expired


def test_hours_used_before_maild_come_off_the_package() -> None:
    package = Contract(id="p", kind="prepaid", start=date(2026, 11, 1), package_minutes=600,
                       valid_until=date(2027, 4, 30), used_before_minutes=180)
    [balance] = prepaid_balances([package], [], DECEMBER, WARSAW)
    assert (balance.used, balance.left) == (180, 420)


def test_customers_file_opening_keys() -> None:
    def contracts(**extra: object) -> dict[str, object]:
        return {"customers": [{"id": "a", "name": "A", "contracts": [
            {"id": "s", "kind": "sla", "start": date(2026, 1, 1), "monthly_hours": 8, **extra}]}]}

    [customer] = parse_customers(contracts(opening_month="2026-12", opening_carry_over_hours=12.5), "c.toml",
                                 PackageSettings())
    assert (customer.contracts[0].opening_month, customer.contracts[0].opening_carry_over_minutes) == ("2026-12", 750)
    with pytest.raises(ConfigError, match="opening_carry_over_hours: needs opening_month"):
        parse_customers(contracts(opening_carry_over_hours=3), "c.toml", PackageSettings())
    with pytest.raises(ConfigError, match="opening_month: 2025-12 is before"):
        parse_customers(contracts(opening_month="2025-12"), "c.toml", PackageSettings())
    with pytest.raises(ConfigError, match="opening_month: must be a month"):
        parse_customers(contracts(opening_month="12/2026"), "c.toml", PackageSettings())
    prepaid = {"customers": [{"id": "a", "name": "A", "contracts": [
        {"id": "p", "kind": "prepaid", "start": date(2026, 1, 1), "hours": 10, "used_before_hours": 3}]}]}
    assert parse_customers(prepaid, "c.toml", PackageSettings())[0].contracts[0].used_before_minutes == 180


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> sessionmaker[Session]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    return open_database(url)


def test_carry_over_counts_from_the_month_maild_first_saw_the_contract(sessions: sessionmaker[Session]) -> None:
    customers = (Customer(id="acme", name="ACME", contracts=(SLA,)),)
    with sessions() as session, session.begin():
        store.sync_customers(session, customers, DECEMBER)  # loaded in December
    with sessions() as session, session.begin():
        store.sync_customers(session, customers, datetime(2027, 1, 5, tzinfo=UTC))  # a later sync keeps the day
    with sessions() as session:
        [december] = contract_balances(session, customers, DECEMBER, WARSAW)
        [january] = contract_balances(session, customers, datetime(2027, 1, 20, tzinfo=UTC), WARSAW)
    assert (december.carry_over_minutes, december.balance_minutes) == (0, 480), "no phantom 88 h"
    assert (january.carry_over_minutes, january.balance_minutes) == (480, 960)


def test_the_customers_file_states_the_opening_balance(sessions: sessionmaker[Session]) -> None:
    stated = Contract(id="acme-sla", kind="sla", start=date(2026, 1, 1), monthly_minutes=480,
                      opening_month="2026-12", opening_carry_over_minutes=750)
    customers = (Customer(id="acme", name="ACME", contracts=(stated,)),)
    with sessions() as session, session.begin():
        store.sync_customers(session, customers, DECEMBER)
    with sessions() as session:
        [balance] = contract_balances(session, customers, DECEMBER, WARSAW)
    assert (balance.carry_over_minutes, balance.balance_minutes) == (750, 1230)
