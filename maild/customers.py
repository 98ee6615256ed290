"""Customers and their contracts: the plain data every stage that needs them gets.

Loading and validating the customers file lives in ``config``; this module only
holds the shapes, so pure stages (contracts, ledger, prioritise) import data and
never a file reader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

ContractKind = Literal["sla", "prepaid", "occasional"]
CONTRACT_KINDS: tuple[ContractKind, ...] = ("sla", "prepaid", "occasional")
ReactionClock = Literal["calendar", "business"]


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
