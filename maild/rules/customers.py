"""Customers and their contracts: the plain data every stage that needs them gets,
and the loader that turns the customers file into that data.

The shapes come first so pure stages (contracts, ledger, prioritise) import data
and never depend on a file. The loader is strict: the customers file decides who
gets an SLA and how many hours they paid for, so a typo in a key must stop the
daemon with the file, key path and reason rather than quietly change a promise.
"""
from __future__ import annotations

import calendar
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from maild.errors import ConfigError

ContractKind = Literal["sla", "prepaid", "occasional"]
CONTRACT_KINDS: tuple[ContractKind, ...] = ("sla", "prepaid", "occasional")
ReactionClock = Literal["calendar", "working_days", "business"]
REACTION_CLOCKS: tuple[ReactionClock, ...] = ("calendar", "working_days", "business")
LANGUAGES: tuple[str, ...] = ("pl", "en")
DEFAULT_UNIT_MINUTES = 15


@dataclass(frozen=True)
class Contract:
    """One contract of a customer.

    Money is in minor units (grosze/cents) and time in whole minutes, so that
    every balance is exact and reproducible; no floats anywhere.
    """

    id: str
    kind: ContractKind
    start: date
    end: date | None = None
    hourly_rate_cents: int | None = None
    # sla
    reaction_hours: int | None = None
    reaction_clock: ReactionClock = "calendar"
    monthly_minutes: int | None = None
    rollover_months: int | None = None  # None: carry-over unlimited while the contract runs
    # prepaid
    package_minutes: int | None = None
    valid_until: date | None = None
    target_hours: int | None = None
    # occasional: billed per started unit
    unit_minutes: int = DEFAULT_UNIT_MINUTES
    # money: an sla contract's fee for each month it runs, a package's price (billed in the
    # month it starts); net, in grosze
    monthly_fee_cents: int | None = None
    price_cents: int | None = None
    # opening balances of a contract that ran before maild knew it: an sla contract's
    # carry-over counts from opening_month (YYYY-MM) with opening_carry_over_minutes brought
    # in; a package has used_before_minutes gone. Without opening_month, carry-over counts
    # from the month maild first saw the contract (never invented for months before it).
    opening_month: str | None = None
    opening_carry_over_minutes: int | None = None
    used_before_minutes: int | None = None
    # the month maild first saw the contract (from the database, not the file)
    first_seen_month: str | None = None

    def active_on(self, day: date) -> bool:
        if day < self.start:
            return False
        if self.end is not None and day > self.end:
            return False
        if self.kind == "prepaid" and self.valid_until is not None and day > self.valid_until:
            return False
        return True


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    language: str = "pl"
    addresses: tuple[str, ...] = ()  # lower-cased
    domains: tuple[str, ...] = ()  # lower-cased, no leading '@'
    billing_address: str | None = None
    contracts: tuple[Contract, ...] = field(default_factory=tuple)
    # the rate for hours no contract prices (packages used up, no occasional contract);
    # None: [billing] occasional_hourly_rate
    occasional_hourly_rate_cents: int | None = None
    # A consultant the customer prefers: they get the customer's new tickets when present.
    consultant: str | None = None


def _default_validity() -> Mapping[int, int]:
    return MappingProxyType({4: 3, 7: 4, 10: 6, 15: 12})


@dataclass(frozen=True)
class PackageSettings:
    """The consultancy's package offer; lives in the main config, passed in here.

    ``validity_months`` maps a package size in hours to how many months it can be
    used, counted from the package's start.
    """

    sizes_hours: tuple[int, ...] = (4, 7, 10, 15)
    validity_months: Mapping[int, int] = field(default_factory=_default_validity)
    default_reaction_hours: int = 24


def add_months(day: date, months: int) -> date:
    """Same day-of-month ``months`` later, clamped to the last day of a shorter month."""
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def package_valid_until(start: date, months: int) -> date:
    """Last day a package bought on ``start`` can be used.

    A package is valid for ``months`` whole months: bought on 1 January for three
    months it is usable up to and including 31 March. When the same day does not
    exist in the final month (bought 31 January for one month), it is usable to the
    end of that month instead of losing the clamped-off days.
    """
    later = add_months(start, months)
    if later.day < start.day:
        return later
    return later - timedelta(days=1)


# ---------------------------------------------------------------------------
# Loading

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL_RE = re.compile(r"^(?!-)[^\s.@<>()\[\],;:\"\\/]+(?<!-)$")
_LOCAL_FORBIDDEN = re.compile(r"[\s@<>()\[\],;:\"\\]")

_CUSTOMER_KEYS = frozenset(
    {"id", "name", "language", "addresses", "domains", "billing_address", "contracts", "consultant",
     "occasional_hourly_rate"}
)
_COMMON_CONTRACT_KEYS = frozenset({"id", "kind", "start", "end", "hourly_rate"})
_KIND_KEYS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "sla": frozenset({"reaction_hours", "reaction_clock", "monthly_hours", "rollover_months", "monthly_fee",
                          "opening_month", "opening_carry_over_hours"}),
        "prepaid": frozenset({"hours", "custom_size", "valid_until", "target_hours", "price", "used_before_hours"}),
        "occasional": frozenset({"unit_minutes"}),
    }
)
_ALL_KIND_KEYS = frozenset().union(*_KIND_KEYS.values())


def normalize_domain(text: str) -> str | None:
    """Lower-cased domain without a leading '@', or None when it is not a domain.

    At least two labels are required so a bare TLD ("pl") can never claim a
    whole country's mail.
    """
    domain = text.strip().lower().removeprefix("@").rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or any(len(label) > 63 or not _LABEL_RE.match(label) for label in labels):
        return None
    return domain


def normalize_address(text: str) -> str | None:
    """Lower-cased ``local@domain`` or None when it is not a plain address."""
    address = text.strip().lower()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or _LOCAL_FORBIDDEN.search(local):
        return None
    normal_domain = normalize_domain(domain)
    if normal_domain is None or normal_domain != domain:
        return None
    return address


class _Reader:
    """Typed access to one TOML table that remembers which file and key path it is."""

    def __init__(self, source: str, path: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.path = path
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.source, self.key(name) if name else self.path, reason)

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        for name in self.table:
            if name not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(name, f"unknown key (allowed here: {hint})")

    def has(self, name: str) -> bool:
        return name in self.table

    def string(self, name: str, default: str | None = None) -> str:
        if name not in self.table:
            if default is None:
                raise self.fail(name, "missing required key")
            return default
        value = self.table[name]
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, not {_type_name(value)}")
        if not value.strip():
            raise self.fail(name, "must not be empty")
        return value.strip()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, not {_type_name(value)}")
        return value

    def integer(self, name: str, minimum: int) -> int | None:
        if name not in self.table:
            return None
        value = self.table[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be a whole number, not {_type_name(value)}")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return value

    def day(self, name: str) -> date | None:
        if name not in self.table:
            return None
        value = self.table[name]
        if isinstance(value, datetime) or not isinstance(value, date):
            raise self.fail(name, f"must be a TOML date like 2026-01-31, not {_type_name(value)}")
        return value

    def scaled(self, name: str, scale: int, unit: str) -> int | None:
        """A non-negative TOML number times ``scale``, exactly, as an int.

        Floats are read through their shortest decimal text, so ``250.50`` is
        exactly 25050 grosze; anything finer than one ``unit`` is refused instead
        of being rounded behind the operator's back.
        """
        if name not in self.table:
            return None
        value = self.table[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, f"must be a number, not {_type_name(value)}")
        try:
            exact = Decimal(str(value))
        except InvalidOperation:  # pragma: no cover - str() of a TOML number always parses
            raise self.fail(name, f"not a number: {value!r}") from None
        if not exact.is_finite():
            raise self.fail(name, f"must be a finite number, got {value!r}")
        if exact < 0:
            raise self.fail(name, f"must not be negative, got {value!r}")
        scaled = exact * scale
        if scaled != scaled.to_integral_value():
            raise self.fail(name, f"{value!r} is not a whole number of {unit}")
        return int(scaled)

    def tables(self, name: str) -> list[_Reader]:
        value = self.table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(name, f"must be an array of tables ([[{self.key(name)}]])")
        return [_Reader(self.source, f"{self.key(name)}[{i}]", item) for i, item in enumerate(value)]

    def strings(self, name: str) -> list[tuple[str, str]]:
        """(key path, value) for each element, so errors point at the element."""
        value = self.table.get(name, [])
        if not isinstance(value, list):
            raise self.fail(name, f"must be an array of strings, not {_type_name(value)}")
        out: list[tuple[str, str]] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{name}[{i}]", f"must be a string, not {_type_name(item)}")
            out.append((f"{name}[{i}]", item))
        return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, datetime):
        return "a date-time"
    names = {int: "an integer", float: "a float", str: "a string", list: "an array",
             dict: "a table", date: "a date"}
    return names.get(type(value), type(value).__name__)


def load_customers(path: Path, packages: PackageSettings = PackageSettings()) -> tuple[Customer, ...]:
    """Read and validate the customers file; raises ConfigError naming file, key and reason."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the customers file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc
    return parse_customers(data, source, packages)


def parse_customers(
    data: Mapping[str, Any], source: str, packages: PackageSettings
) -> tuple[Customer, ...]:
    """Validate already-parsed TOML data; ``source`` names the file in errors."""
    top = _Reader(source, "", data)
    top.reject_unknown(frozenset({"customers"}))
    customer_ids: dict[str, str] = {}
    contract_ids: dict[str, str] = {}
    address_owner: dict[str, str] = {}
    domain_owner: dict[str, str] = {}
    customers: list[Customer] = []
    for reader in top.tables("customers"):
        customer = _parse_customer(reader, packages, contract_ids)
        if customer.id in customer_ids:
            raise reader.fail(
                "id", f"duplicate customer id {customer.id!r} (also {customer_ids[customer.id]})"
            )
        customer_ids[customer.id] = reader.path
        _claim(reader, "addresses", customer.addresses, customer.id, address_owner)
        _claim(reader, "domains", customer.domains, customer.id, domain_owner)
        customers.append(customer)
    return tuple(customers)


def _claim(
    reader: _Reader, name: str, values: tuple[str, ...], customer_id: str, owners: dict[str, str]
) -> None:
    for i, value in enumerate(values):
        if value in owners:
            raise reader.fail(
                f"{name}[{i}]", f"{value} is already claimed by customer {owners[value]!r}"
            )
        owners[value] = customer_id


def _parse_customer(
    reader: _Reader, packages: PackageSettings, contract_ids: dict[str, str]
) -> Customer:
    reader.reject_unknown(_CUSTOMER_KEYS)
    customer_id = _identifier(reader, "id")
    name = reader.string("name")
    language = reader.string("language", "pl")
    if language not in LANGUAGES:
        raise reader.fail("language", f"must be one of {', '.join(LANGUAGES)}, got {language!r}")
    addresses = []
    for key, text in reader.strings("addresses"):
        address = normalize_address(text)
        if address is None:
            raise reader.fail(key, f"not an email address: {text!r}")
        addresses.append(address)
    domains = []
    for key, text in reader.strings("domains"):
        domain = normalize_domain(text)
        if domain is None:
            raise reader.fail(key, f"not a domain name: {text!r}")
        domains.append(domain)
    billing_address = None
    if reader.has("billing_address"):
        text = reader.string("billing_address")
        billing_address = normalize_address(text)
        if billing_address is None:
            raise reader.fail("billing_address", f"not an email address: {text!r}")
    consultant = None
    if reader.has("consultant"):
        text = reader.string("consultant")
        consultant = normalize_address(text)
        if consultant is None:
            raise reader.fail("consultant", f"not an email address: {text!r}")
    contracts = []
    for contract_reader in reader.tables("contracts"):
        contract = _parse_contract(contract_reader, packages)
        if contract.id in contract_ids:
            raise contract_reader.fail(
                "id", f"duplicate contract id {contract.id!r} (also {contract_ids[contract.id]})"
            )
        contract_ids[contract.id] = contract_reader.path
        contracts.append(contract)
    return Customer(
        id=customer_id,
        name=name,
        language=language,
        addresses=tuple(addresses),
        domains=tuple(domains),
        billing_address=billing_address,
        contracts=tuple(contracts),
        consultant=consultant,
        occasional_hourly_rate_cents=reader.scaled("occasional_hourly_rate", 100, "grosze (at most 2 decimals)"),
    )


def _identifier(reader: _Reader, name: str) -> str:
    value = reader.string(name)
    if not _ID_RE.match(value):
        raise reader.fail(
            name, f"{value!r} must start with a letter or digit and use only letters, digits, '.', '_', '-'"
        )
    return value


def _parse_contract(reader: _Reader, packages: PackageSettings) -> Contract:
    reader.reject_unknown(_COMMON_CONTRACT_KEYS | _ALL_KIND_KEYS)
    contract_id = _identifier(reader, "id")
    kind_text = reader.string("kind")
    if kind_text not in CONTRACT_KINDS:
        raise reader.fail("kind", f"must be one of {', '.join(CONTRACT_KINDS)}, got {kind_text!r}")
    kind: ContractKind = kind_text
    for name in reader.table:
        if name in _ALL_KIND_KEYS and name not in _KIND_KEYS[kind]:
            raise reader.fail(name, f"not allowed for kind {kind!r}")
    start = reader.day("start")
    if start is None:
        raise reader.fail("start", "missing required key")
    end = reader.day("end")
    if end is not None and end < start:
        raise reader.fail("end", f"{end} is before start {start}")
    hourly_rate_cents = reader.scaled("hourly_rate", 100, "grosze (at most 2 decimals)")
    if kind == "sla":
        return _parse_sla(reader, packages, contract_id, start, end, hourly_rate_cents)
    if kind == "prepaid":
        return _parse_prepaid(reader, packages, contract_id, start, end, hourly_rate_cents)
    if hourly_rate_cents is None:
        raise reader.fail("hourly_rate", "missing required key (occasional work is billed by the hour)")
    unit = reader.integer("unit_minutes", 1)
    return Contract(
        id=contract_id,
        kind=kind,
        start=start,
        end=end,
        hourly_rate_cents=hourly_rate_cents,
        unit_minutes=DEFAULT_UNIT_MINUTES if unit is None else unit,
    )


def _parse_sla(
    reader: _Reader,
    packages: PackageSettings,
    contract_id: str,
    start: date,
    end: date | None,
    hourly_rate_cents: int | None,
) -> Contract:
    reaction_hours = reader.integer("reaction_hours", 1)
    clock = reader.string("reaction_clock", "calendar")
    if clock not in REACTION_CLOCKS:
        raise reader.fail("reaction_clock", f"must be one of {', '.join(REACTION_CLOCKS)}, got {clock!r}")
    monthly_minutes = reader.scaled("monthly_hours", 60, "minutes")
    if monthly_minutes is None:
        raise reader.fail("monthly_hours", "missing required key")
    opening_month = None
    if reader.has("opening_month"):
        opening_month = reader.string("opening_month")
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", opening_month):
            raise reader.fail("opening_month", f"must be a month like \"2026-12\", got {opening_month!r}")
        if opening_month < f"{start.year:04d}-{start.month:02d}":
            raise reader.fail("opening_month", f"{opening_month} is before the contract's start {start}")
    opening_carry = reader.scaled("opening_carry_over_hours", 60, "minutes")
    if opening_carry is not None and opening_month is None:
        raise reader.fail("opening_carry_over_hours", "needs opening_month: the month the carried-over hours come into")
    return Contract(
        id=contract_id,
        kind="sla",
        start=start,
        end=end,
        hourly_rate_cents=hourly_rate_cents,
        reaction_hours=(
            packages.default_reaction_hours if reaction_hours is None else reaction_hours
        ),
        reaction_clock=clock,
        monthly_minutes=monthly_minutes,
        rollover_months=reader.integer("rollover_months", 0),
        monthly_fee_cents=reader.scaled("monthly_fee", 100, "grosze (at most 2 decimals)"),
        opening_month=opening_month,
        opening_carry_over_minutes=opening_carry,
    )


def _parse_prepaid(
    reader: _Reader,
    packages: PackageSettings,
    contract_id: str,
    start: date,
    end: date | None,
    hourly_rate_cents: int | None,
) -> Contract:
    minutes = reader.scaled("hours", 60, "minutes")
    if minutes is None:
        raise reader.fail("hours", "missing required key")
    if minutes == 0:
        raise reader.fail("hours", "a package must hold some hours")
    custom = reader.boolean("custom_size", False)
    whole_hours = minutes // 60 if minutes % 60 == 0 else None
    shown = reader.table["hours"]
    if not custom and whole_hours not in packages.sizes_hours:
        sizes = ", ".join(str(size) for size in packages.sizes_hours)
        raise reader.fail(
            "hours", f"{shown} is not a package size ({sizes}); set custom_size = true for a one-off"
        )
    valid_until = reader.day("valid_until")
    if valid_until is None:
        months = None if whole_hours is None else packages.validity_months.get(whole_hours)
        if months is None:
            raise reader.fail(
                "valid_until",
                f"missing: a {shown} h package has no validity in the package table; give valid_until",
            )
        valid_until = package_valid_until(start, months)
    elif valid_until < start:
        raise reader.fail("valid_until", f"{valid_until} is before start {start}")
    return Contract(
        id=contract_id,
        kind="prepaid",
        start=start,
        end=end,
        hourly_rate_cents=hourly_rate_cents,
        package_minutes=minutes,
        valid_until=valid_until,
        target_hours=reader.integer("target_hours", 1),
        price_cents=reader.scaled("price", 100, "grosze (at most 2 decimals)"),
        used_before_minutes=_used_before(reader, minutes),
    )


def _used_before(reader: _Reader, package_minutes: int) -> int | None:
    used = reader.scaled("used_before_hours", 60, "minutes")
    if used is not None and used > package_minutes:
        raise reader.fail("used_before_hours", f"more than the package's {package_minutes // 60} h")
    return used


__all__ = [
    "CONTRACT_KINDS",
    "Contract",
    "ContractKind",
    "Customer",
    "PackageSettings",
    "ReactionClock",
    "add_months",
    "load_customers",
    "normalize_address",
    "normalize_domain",
    "package_valid_until",
    "parse_customers",
]
