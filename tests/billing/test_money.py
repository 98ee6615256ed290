"""Money on statements: fees and package prices, the occasional rate, VAT, and the rate check."""
from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.billing.ledger import vat_cents
from maild.billing.reports import LedgerLine, TicketInfo, build_hours_report
from maild.config import load_config
from maild.errors import ConfigError
from maild.ops.check import rate_warnings
from maild.rules.customers import Contract, Customer, PackageSettings, parse_customers

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")

SLA = Contract(id="acme-sla", kind="sla", start=date(2025, 12, 1), monthly_minutes=120, monthly_fee_cents=150000)
PACKAGE = Contract(id="nowak-p", kind="prepaid", start=date(2026, 1, 10), package_minutes=240,
                   valid_until=date(2026, 3, 31), price_cents=80000)
CUSTOMERS = (
    Customer(id="acme", name="ACME", contracts=(SLA,)),
    Customer(id="nowak", name="Nowak", contracts=(PACKAGE,), occasional_hourly_rate_cents=30000),
    Customer(id="bare", name="Bare", contracts=()),
)


def line(n: int, contract: str | None, minutes: int, when: str, customer: str | None, overage: bool = False) -> LedgerLine:
    return LedgerLine(id=n, contract_id=contract, customer_id=customer, ticket_id=n, minutes=minutes, overage=overage,
                      booked_at=datetime.fromisoformat(when).replace(tzinfo=UTC), scope=None)


LINES = [
    line(1, "acme-sla", 270, "2026-01-10T10:00", "acme"),  # 30 min beyond 2 h carried + 2 h allowance; no rate of its own
    line(2, "nowak-p", 240, "2026-01-12T10:00", "nowak"),
    line(3, "nowak-p", 60, "2026-01-13T10:00", "nowak", overage=True),  # after the package: the customer's rate
    line(4, None, 20, "2026-01-14T10:00", "bare"),  # a customer with no contract: the configured rate
]
TICKETS = {n: TicketInfo(id=n, ref=f"SUP-{n}", subject="s", customer_id=None, contract_id=None,
                         contract_kind="sla", created_at=datetime(2026, 1, 1, tzinfo=UTC), reaction_due=None,
                         first_response_at=None) for n in range(1, 5)}


def test_fees_prices_and_the_occasional_rate_price_every_hour() -> None:
    report = build_hours_report("2026-01", WARSAW, CUSTOMERS, LINES, TICKETS, 15, occasional_rate_cents=25000)
    sla = report.contract("acme-sla")
    assert sla is not None and (sla.fee_cents, sla.overage_minutes, sla.hourly_rate_cents) == (150000, 30, 25000)
    assert sla.amount_cents == 12500
    package = report.contract("nowak-p")
    assert package is not None and (package.fee_cents, package.hourly_rate_cents, package.amount_cents) == (
        80000, 30000, 30000)
    bare = report.customer("bare")
    assert bare is not None and bare.contracts[0].amount_cents == 25000 * 30 // 60  # 20 min: one started half hour
    acme = report.customer("acme")
    assert acme is not None and acme.net_cents == 150000 + 12500


def test_a_package_price_is_billed_in_the_month_it_starts_only() -> None:
    report = build_hours_report("2026-02", WARSAW, CUSTOMERS, LINES, TICKETS, 15, occasional_rate_cents=25000)
    package = report.contract("nowak-p")
    assert package is not None and package.fee_cents is None
    sla = report.contract("acme-sla")
    assert sla is not None and sla.fee_cents == 150000, "a monthly fee every month the contract runs"


def test_without_any_rate_the_hours_are_listed_unpriced() -> None:
    bare_only = (Customer(id="bare", name="Bare"),)
    report = build_hours_report("2026-01", WARSAW, bare_only, LINES[3:], TICKETS, 15)
    customer = report.customer("bare")
    assert customer is not None and customer.contracts[0].amount_cents is None


@given(st.integers(min_value=-10**12, max_value=10**12), st.integers(min_value=0, max_value=100))
def test_vat_is_the_rounded_share_and_gross_adds_up(net: int, percent: int) -> None:
    vat = vat_cents(net, percent)
    assert abs(vat * 100 - net * percent) <= 50
    assert vat_cents(-net, percent) == -vat


def test_vat_rounds_half_up() -> None:
    assert vat_cents(10050, 23) == 2312  # 2311.5
    assert vat_cents(30000, 23) == 6900


def test_customers_file_money_keys() -> None:
    data = {"customers": [{
        "id": "acme", "name": "ACME", "occasional_hourly_rate": 300.5,
        "contracts": [
            {"id": "s", "kind": "sla", "start": date(2026, 1, 1), "monthly_hours": 10, "monthly_fee": 1500},
            {"id": "p", "kind": "prepaid", "start": date(2026, 1, 1), "hours": 10, "price": 2400.99},
        ],
    }]}
    [acme] = parse_customers(data, "customers.toml", PackageSettings())
    assert acme.occasional_hourly_rate_cents == 30050
    assert (acme.contracts[0].monthly_fee_cents, acme.contracts[1].price_cents) == (150000, 240099)
    data["customers"][0]["contracts"][0]["price"] = 1  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"customers\[0\]\.contracts\[0\]\.price"):
        parse_customers(data, "customers.toml", PackageSettings())


def test_billing_section(tmp_path: Path) -> None:
    base = ('[maildir]\npath = "M"\n[smtp]\nhost = "h"\nsecurity = "none"\nfrom_address = "s@f.pl"\n'
            '[support]\naddress = "s@f.pl"\n')
    (tmp_path / "maild.toml").write_text(base + "[billing]\nvat_percent = 8\noccasional_hourly_rate = 250.50\n")
    cfg = load_config(tmp_path / "maild.toml")
    assert (cfg.billing.vat_percent, cfg.billing.occasional_hourly_rate_cents) == (8, 25050)
    (tmp_path / "maild.toml").write_text(base + "[billing]\noccasional_hourly_rate = 250.505\n")
    with pytest.raises(ConfigError, match="billing.occasional_hourly_rate"):
        load_config(tmp_path / "maild.toml")


def test_check_warns_when_the_occasional_rate_undercuts_a_package() -> None:
    cheap = Customer(id="cheap", name="C", contracts=(PACKAGE,), occasional_hourly_rate_cents=15000)
    fine = Customer(id="fine", name="F", contracts=(PACKAGE,), occasional_hourly_rate_cents=20000)
    # 800,00 zł for 4 h is 200,00 zł an hour
    assert rate_warnings((fine,), None) == []
    [warning] = rate_warnings((cheap,), None)
    assert "cheap" in warning and "150,00 zł" in warning and "200,00 zł" in warning
    assert rate_warnings((Customer(id="x", name="X", contracts=(PACKAGE,)),), 19999)[0].startswith("customer x")
    assert "no occasional rate" in rate_warnings((Customer(id="y", name="Y", contracts=(PACKAGE,)),), None)[0]
