"""The customers file: the loader that turns it into the plain data every stage gets.

The shapes (``Contract``, ``Customer``, ...) live in ``records.py`` and are
importable from here too. The loader is strict: the customers file decides who
gets an SLA and how many hours they paid for, so a typo in a key must stop the
daemon with the file, key path and reason rather than quietly change a promise.
The keys each contract kind takes, and how they are read, are the kind's entry
in ``kinds.py``; here are the customer's keys and the keys every contract has.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from maild.errors import ConfigError
from maild.rules.kinds import KINDS, ContractHead
from maild.rules.records import (
    CONTRACT_KINDS,
    DEFAULT_UNIT_MINUTES,
    LANGUAGES,
    REACTION_CLOCKS,
    Contract,
    ContractKind,
    Customer,
    PackageSettings,
    ReactionClock,
    add_months,
    package_valid_until,
)
from maild.rules.toml_table import TableReader

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL_RE = re.compile(r"^(?!-)[^\s.@<>()\[\],;:\"\\/]+(?<!-)$")
_LOCAL_FORBIDDEN = re.compile(r"[\s@<>()\[\],;:\"\\]")

_CUSTOMER_KEYS = frozenset(
    {"id", "name", "language", "addresses", "domains", "billing_address", "contracts", "consultant",
     "occasional_hourly_rate"}
)
_COMMON_CONTRACT_KEYS = frozenset({"id", "kind", "start", "end", "hourly_rate"})


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


def removals_refused(active: Collection[str], customers: Sequence[Customer], max_removed_percent: int,
                     source: str) -> ConfigError | None:
    """The refusal of a customers file that would deactivate more than ``max_removed_percent`` of the
    ``active`` customers in the database, or None: an empty or truncated file once marked every
    contract removed. One rule for the sync (``store.sync_customers``) and ``maild check``, which must
    not call a file fine that the daemon's start refuses."""
    gone = set(active) - {c.id for c in customers}
    if not active or len(gone) * 100 <= max_removed_percent * len(active):
        return None
    return ConfigError(source, "", (
        f"would remove {len(gone)} of the {len(active)} customers in the database (more than "
        f"{max_removed_percent} %, customers_max_removed_percent), e.g. {', '.join(sorted(gone)[:5])}; "
        "refused, the previous customers are kept. A truncated file? If the removals are "
        "meant: maild contracts sync --allow-removals"))


def parse_customers(
    data: Mapping[str, Any], source: str, packages: PackageSettings
) -> tuple[Customer, ...]:
    """Validate already-parsed TOML data; ``source`` names the file in errors."""
    top = TableReader(source, "", data)
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
    reader: TableReader, name: str, values: tuple[str, ...], customer_id: str, owners: dict[str, str]
) -> None:
    for i, value in enumerate(values):
        if value in owners:
            raise reader.fail(
                f"{name}[{i}]", f"{value} is already claimed by customer {owners[value]!r}"
            )
        owners[value] = customer_id


def _checked(key: str, text: str, normalize: Callable[[str], str | None], reader: TableReader) -> str:
    """``text`` normalized, or the config error naming the element's key."""
    value = normalize(text)
    if value is None:
        what = "a domain name" if normalize is normalize_domain else "an email address"
        raise reader.fail(key, f"not {what}: {text!r}")
    return value


def _optional_address(reader: TableReader, key: str) -> str | None:
    return _checked(key, reader.string(key), normalize_address, reader) if reader.has(key) else None


def _parse_customer(
    reader: TableReader, packages: PackageSettings, contract_ids: dict[str, str]
) -> Customer:
    reader.reject_unknown(_CUSTOMER_KEYS)
    customer_id = _identifier(reader, "id")
    name = reader.string("name")
    language = reader.string("language", "pl")
    if language not in LANGUAGES:
        raise reader.fail("language", f"must be one of {', '.join(LANGUAGES)}, got {language!r}")
    addresses = [_checked(key, text, normalize_address, reader) for key, text in reader.strings("addresses")]
    domains = [_checked(key, text, normalize_domain, reader) for key, text in reader.strings("domains")]
    billing_address = _optional_address(reader, "billing_address")
    consultant = _optional_address(reader, "consultant")
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


def _identifier(reader: TableReader, name: str) -> str:
    value = reader.string(name)
    if not _ID_RE.match(value):
        raise reader.fail(
            name, f"{value!r} must start with a letter or digit and use only letters, digits, '.', '_', '-'"
        )
    return value


def _parse_contract(reader: TableReader, packages: PackageSettings) -> Contract:
    kind_keys = frozenset().union(*(rules.file_keys for rules in KINDS.values()))
    reader.reject_unknown(_COMMON_CONTRACT_KEYS | kind_keys)
    contract_id = _identifier(reader, "id")
    kind_text = reader.string("kind")
    rules = KINDS.get(kind_text)
    if rules is None:
        raise reader.fail("kind", f"must be one of {', '.join(KINDS)}, got {kind_text!r}")
    for name in reader.table:
        if name in kind_keys and name not in rules.file_keys:
            raise reader.fail(name, f"not allowed for kind {rules.name!r}")
    start = reader.day("start")
    if start is None:
        raise reader.fail("start", "missing required key")
    end = reader.day("end")
    if end is not None and end < start:
        raise reader.fail("end", f"{end} is before start {start}")
    hourly_rate_cents = reader.scaled("hourly_rate", 100, "grosze (at most 2 decimals)")
    return rules.parse(reader, packages, ContractHead(contract_id, start, end, hourly_rate_cents))


__all__ = [
    "CONTRACT_KINDS",
    "DEFAULT_UNIT_MINUTES",
    "LANGUAGES",
    "REACTION_CLOCKS",
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
