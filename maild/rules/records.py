"""Customers and their contracts as plain data: what every stage that needs them gets.

The shapes sit below everything else in ``rules`` so pure stages (contracts,
ledger, prioritise) and the kind table import data and never depend on a file;
the customers file loader (``customers.py``) builds them, the kind table
(``kinds.py``) says what each kind does with them.
"""
from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Literal, get_args

ContractKind = Literal["sla", "prepaid", "occasional"]
CONTRACT_KINDS: tuple[ContractKind, ...] = get_args(ContractKind)
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
    valid_until: date | None = None  # the last day the contract can be used (the loader sets it for packages)
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
        return self.valid_until is None or day <= self.valid_until


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
