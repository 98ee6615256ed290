"""The customers file: what loads, and that every mistake names file, key and reason."""
from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.customers import (
    PackageSettings,
    add_months,
    load_customers,
    package_valid_until,
    parse_customers,
)
from maild.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "customers.example.toml"
SOURCE = "customers.toml"


def base() -> dict[str, Any]:
    return {
        "customers": [
            {
                "id": "acme",
                "name": "ACME",
                "addresses": ["Jan@ACME.pl"],
                "domains": ["@Acme.PL"],
                "contracts": [
                    {"id": "acme-sla", "kind": "sla", "start": date(2026, 1, 1), "monthly_hours": 8},
                ],
            },
            {
                "id": "nowak",
                "name": "Nowak",
                "domains": ["nowak.pl"],
                "contracts": [
                    {"id": "nowak-p1", "kind": "prepaid", "start": date(2026, 1, 1), "hours": 4},
                    {"id": "nowak-occ", "kind": "occasional", "start": date(2026, 1, 1), "hourly_rate": 200},
                ],
            },
        ]
    }


def parse(data: dict[str, Any]) -> Any:
    return parse_customers(data, SOURCE, PackageSettings())


def test_example_file_loads_with_every_kind() -> None:
    customers = load_customers(EXAMPLE)
    kinds = sorted(c.kind for customer in customers for c in customer.contracts)
    assert kinds == ["occasional", "prepaid", "prepaid", "sla"]
    nowak = next(c for c in customers if c.id == "biuro-nowak")
    assert [c.id for c in nowak.contracts] == ["nowak-p1", "nowak-p2"]
    acme = next(c for c in customers if c.id == "acme")
    sla = acme.contracts[0]
    assert (sla.monthly_minutes, sla.hourly_rate_cents, sla.rollover_months) == (450, 25050, 3)
    assert sla.reaction_clock == "working_days"
    assert acme.consultant == "anna@example.com"


def test_addresses_and_domains_are_normalised() -> None:
    acme = parse(base())[0]
    assert acme.addresses == ("jan@acme.pl",)
    assert acme.domains == ("acme.pl",)


def test_sla_defaults() -> None:
    sla = parse(base())[0].contracts[0]
    assert (sla.reaction_hours, sla.reaction_clock, sla.rollover_months) == (24, "calendar", None)
    settings = PackageSettings(default_reaction_hours=8)
    assert parse_customers(base(), SOURCE, settings)[0].contracts[0].reaction_hours == 8


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of base() with one key set (value ...) or deleted (value DELETE)."""
    data = copy.deepcopy(base())
    node: Any = data
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()

ERRORS = [
    # (change at key path, value, expected key path in the error, words in the reason)
    ("customers[1].id", "acme", "customers[1].id", "duplicate customer id"),
    ("customers[1].contracts[0].id", "acme-sla", "customers[1].contracts[0].id", "duplicate contract id"),
    ("customers[1].contracts[1].id", "nowak-p1", "customers[1].contracts[1].id", "duplicate contract id"),
    ("customers[1].domains[0]", "ACME.pl", "customers[1].domains[0]", "already claimed by customer 'acme'"),
    ("customers[1].addresses", ["jan@acme.pl"], "customers[1].addresses[0]", "already claimed"),
    ("customers[0].addresses[0]", "jan at acme.pl", "customers[0].addresses[0]", "not an email address"),
    ("customers[0].addresses[0]", "jan@localhost", "customers[0].addresses[0]", "not an email address"),
    ("customers[0].addresses[0]", "a b@acme.pl", "customers[0].addresses[0]", "not an email address"),
    ("customers[0].domains[0]", "pl", "customers[0].domains[0]", "not a domain"),
    ("customers[0].domains[0]", "-acme.pl", "customers[0].domains[0]", "not a domain"),
    ("customers[0].domains[0]", 7, "customers[0].domains[0]", "must be a string"),
    ("customers[0].adresses", ["x@acme.pl"], "customers[0].adresses", "unknown key"),
    ("customers[0].contracts[0].monthly_hous", 8, "customers[0].contracts[0].monthly_hous", "unknown key"),
    ("customer", [], "customer", "unknown key"),
    ("customers[0].contracts[0].hours", 4, "customers[0].contracts[0].hours", "not allowed for kind 'sla'"),
    ("customers[0].name", 5, "customers[0].name", "must be a string"),
    ("customers[0].name", DELETE, "customers[0].name", "missing required key"),
    ("customers[0].language", "de", "customers[0].language", "must be one of pl, en"),
    ("customers[0].contracts[0].start", "2026-01-01", "customers[0].contracts[0].start", "must be a TOML date"),
    ("customers[0].contracts[0].start", DELETE, "customers[0].contracts[0].start", "missing required key"),
    ("customers[0].contracts[0].end", date(2025, 12, 31), "customers[0].contracts[0].end", "before start"),
    ("customers[0].contracts[0].kind", "gold", "customers[0].contracts[0].kind", "must be one of sla"),
    ("customers[0].contracts[0].monthly_hours", DELETE, "customers[0].contracts[0].monthly_hours", "missing"),
    ("customers[0].contracts[0].monthly_hours", "8", "customers[0].contracts[0].monthly_hours", "must be a number"),
    ("customers[0].contracts[0].monthly_hours", 7.51, "customers[0].contracts[0].monthly_hours", "whole number of minutes"),
    ("customers[0].contracts[0].monthly_hours", -1, "customers[0].contracts[0].monthly_hours", "negative"),
    ("customers[0].contracts[0].reaction_hours", 2.5, "customers[0].contracts[0].reaction_hours", "whole number"),
    ("customers[0].contracts[0].reaction_hours", True, "customers[0].contracts[0].reaction_hours", "whole number"),
    ("customers[0].contracts[0].reaction_clock", "office", "customers[0].contracts[0].reaction_clock", "calendar"),
    ("customers[0].contracts[0].rollover_months", -1, "customers[0].contracts[0].rollover_months", "at least 0"),
    ("customers[0].contracts[0].hourly_rate", 250.505, "customers[0].contracts[0].hourly_rate", "whole number of grosze"),
    ("customers[1].contracts[0].hours", 5, "customers[1].contracts[0].hours", "not a package size"),
    ("customers[1].contracts[0].hours", DELETE, "customers[1].contracts[0].hours", "missing required key"),
    ("customers[1].contracts[0].valid_until", date(2025, 1, 1), "customers[1].contracts[0].valid_until", "before start"),
    ("customers[1].contracts[1].hourly_rate", DELETE, "customers[1].contracts[1].hourly_rate", "missing required key"),
    ("customers[1].contracts", {"id": "x"}, "customers[1].contracts", "array of tables"),
    ("customers[1].contracts[0].custom_size", "yes", "customers[1].contracts[0].custom_size", "true or false"),
    ("customers[1].id", "no spaces", "customers[1].id", "letters, digits"),
    ("customers[0].consultant", "anna", "customers[0].consultant", "not an email address"),
]


@pytest.mark.parametrize(("path", "value", "key", "reason"), ERRORS)
def test_each_mistake_names_file_key_and_reason(path: str, value: Any, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_change(path, value))
    assert caught.value.file == SOURCE
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{SOURCE}: {key}: ")


def test_unreadable_and_broken_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_customers(missing)
    assert caught.value.file == str(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[customers]]\nid = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_customers(broken)


def test_date_time_is_not_a_date(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[customers]]\nid = "a"\nname = "A"\n[[customers.contracts]]\nid = "a1"\nkind = "occasional"\n'
        "start = 2026-01-01T10:00:00\nhourly_rate = 100\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="TOML date") as caught:
        load_customers(path)
    assert caught.value.key == "customers[0].contracts[0].start"


@pytest.mark.parametrize(
    ("hours_text", "minutes", "rate_text", "cents"),
    [
        ("7.5", 450, "250.50", 25050),
        ("0.25", 15, "0.01", 1),
        ("1.1", 66, "1.1", 110),
        ("33.3", 1998, "0.29", 29),
        ("8", 480, "8", 800),
    ],
)
def test_toml_floats_are_read_exactly(
    tmp_path: Path, hours_text: str, minutes: int, rate_text: str, cents: int
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[[customers]]\nid = "a"\nname = "A"\n[[customers.contracts]]\nid = "a1"\nkind = "sla"\n'
        f"start = 2026-01-01\nmonthly_hours = {hours_text}\nhourly_rate = {rate_text}\n",
        encoding="utf-8",
    )
    contract = load_customers(path)[0].contracts[0]
    assert contract.monthly_minutes == minutes
    assert contract.hourly_rate_cents == cents


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=99))
def test_any_two_decimal_rate_is_exact(whole: int, fraction: int) -> None:
    import tomllib

    data = tomllib.loads(f"rate = {whole}.{fraction:02d}")
    payload = with_change("customers[1].contracts[1].hourly_rate", data["rate"])
    occasional = parse(payload)[1].contracts[1]
    assert occasional.hourly_rate_cents == whole * 100 + fraction


@pytest.mark.parametrize(
    ("hours", "start", "valid_until"),
    [
        (4, date(2026, 1, 1), date(2026, 3, 31)),
        (7, date(2026, 1, 1), date(2026, 4, 30)),
        (10, date(2026, 1, 1), date(2026, 6, 30)),
        (15, date(2026, 1, 1), date(2026, 12, 31)),
        (4, date(2026, 1, 15), date(2026, 4, 14)),
        (4, date(2025, 11, 30), date(2026, 2, 28)),  # Feb 30 does not exist: to the end of February
        (15, date(2027, 2, 28), date(2028, 2, 27)),
    ],
)
def test_default_validity_table(hours: int, start: date, valid_until: date) -> None:
    payload = with_change("customers[1].contracts[0].hours", hours)
    payload["customers"][1]["contracts"][0]["start"] = start
    package = parse(payload)[1].contracts[0]
    assert package.package_minutes == hours * 60
    assert package.valid_until == valid_until


def test_explicit_valid_until_wins() -> None:
    payload = with_change("customers[1].contracts[0].valid_until", date(2026, 2, 10))
    assert parse(payload)[1].contracts[0].valid_until == date(2026, 2, 10)


def test_configured_sizes_and_validity() -> None:
    settings = PackageSettings(sizes_hours=(5,), validity_months={5: 2})
    payload = with_change("customers[1].contracts[0].hours", 5)
    package = parse_customers(payload, SOURCE, settings)[1].contracts[0]
    assert package.valid_until == date(2026, 2, 28)
    with pytest.raises(ConfigError, match="not a package size"):
        parse_customers(base(), SOURCE, settings)


def test_custom_size_needs_a_validity() -> None:
    payload = with_change("customers[1].contracts[0].hours", 2.5)
    payload["customers"][1]["contracts"][0]["custom_size"] = True
    with pytest.raises(ConfigError) as caught:
        parse(payload)
    assert caught.value.key == "customers[1].contracts[0].valid_until"
    payload["customers"][1]["contracts"][0]["valid_until"] = date(2026, 5, 1)
    assert parse(payload)[1].contracts[0].package_minutes == 150


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(1, 36))
def test_validity_is_about_n_months(start: date, months: int) -> None:
    last = package_valid_until(start, months)
    assert add_months(start, months - 1) <= last < add_months(start, months + 1)
    assert last >= start
