"""The rules of each contract kind, in one table.

What differs between ``sla``, ``prepaid`` and ``occasional`` is said here once:
the queue tier and the assignment weight, the order in which ``resolve`` tries
the kinds and which of a kind's contracts can take a mail, the keys a contract
of the kind takes in the customers file and how they are read, whether a
reaction deadline is guaranteed (and escalated), whether a target is reported,
whether time is drawn from packages or counted against a monthly allowance,
whether work is billed per started unit. The loader, ``resolve``, the desk,
booking, the acknowledgement, notifications and the reports (with their
sections and charts) ask this table instead of comparing kind names
(``tests/rules/test_kinds.py`` fails on a comparison with a kind name anywhere
else). A new kind is one ``KindRules`` entry here, its name in ``ContractKind``
(``records.py``), and its wording in the templates.

The terms stored with a contract in the database (``ContractRow.terms``) and the
contract rebuilt from them (a contract that left the customers file still
bills on the terms it was sold with) are here too, side by side.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from maild.rules.records import (
    DEFAULT_UNIT_MINUTES,
    REACTION_CLOCKS,
    Contract,
    ContractKind,
    Customer,
    PackageSettings,
    package_valid_until,
)
from maild.rules.toml_table import TableReader


@dataclass(frozen=True)
class ContractHead:
    """What every contract in the customers file gives, read before its kind's own keys."""

    id: str
    start: date
    end: date | None
    hourly_rate_cents: int | None


ParseTerms = Callable[[TableReader, PackageSettings, ContractHead], Contract]
# (the kind's contracts active on the day, minutes left per contract id) -> those that can take the mail, best first
Usable = Callable[[Sequence[Contract], Callable[[str], int]], list[Contract]]


def by_id(contracts: Sequence[Contract], left: Callable[[str], int]) -> list[Contract]:
    """Any active contract can take the mail; the same one every time (by id) when there are several."""
    return sorted(contracts, key=lambda c: c.id)


@dataclass(frozen=True)
class KindRules:
    name: ContractKind
    tier: int  # the queue tier: every ticket of a lower tier first (kinds may share a tier; see TIER_NAMES)
    weight: int  # what one open ticket adds to its assignee's load (rules/assignment.py)
    choice: int  # resolve() tries the kinds lowest first; spaced so a new kind fits between two
    reaction_deadline: bool  # a reaction guaranteed within reaction_hours: the SLA clock and escalations
    target_deadline: bool  # an optional target_hours, reported, never escalated
    monthly_allowance: bool  # monthly_minutes each month, unused time carried over
    packages: bool  # time drawn from packages expiring-first; a low-balance warning
    billed_per_unit: bool  # billed per started unit_minutes per ticket and month, no balance
    file_keys: frozenset[str]  # the customers-file keys it takes beside id, kind, start, end, hourly_rate
    parse: ParseTerms  # reads those keys into a Contract, refusing a missing required one
    usable: Usable = by_id


# ------------------------------------------------------------------ the customers file, per kind


def _parse_sla(reader: TableReader, packages: PackageSettings, head: ContractHead) -> Contract:
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
        if opening_month < f"{head.start.year:04d}-{head.start.month:02d}":
            raise reader.fail("opening_month", f"{opening_month} is before the contract's start {head.start}")
    opening_carry = reader.scaled("opening_carry_over_hours", 60, "minutes")
    if opening_carry is not None and opening_month is None:
        raise reader.fail("opening_carry_over_hours", "needs opening_month: the month the carried-over hours come into")
    return Contract(
        id=head.id,
        kind="sla",
        start=head.start,
        end=head.end,
        hourly_rate_cents=head.hourly_rate_cents,
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


def _parse_prepaid(reader: TableReader, packages: PackageSettings, head: ContractHead) -> Contract:
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
        valid_until = package_valid_until(head.start, months)
    elif valid_until < head.start:
        raise reader.fail("valid_until", f"{valid_until} is before start {head.start}")
    return Contract(
        id=head.id,
        kind="prepaid",
        start=head.start,
        end=head.end,
        hourly_rate_cents=head.hourly_rate_cents,
        package_minutes=minutes,
        valid_until=valid_until,
        target_hours=reader.integer("target_hours", 1),
        price_cents=reader.scaled("price", 100, "grosze (at most 2 decimals)"),
        used_before_minutes=_used_before(reader, minutes),
    )


def _used_before(reader: TableReader, package_minutes: int) -> int | None:
    used = reader.scaled("used_before_hours", 60, "minutes")
    if used is not None and used > package_minutes:
        raise reader.fail("used_before_hours", f"more than the package's {package_minutes // 60} h")
    return used


def _parse_occasional(reader: TableReader, packages: PackageSettings, head: ContractHead) -> Contract:
    if head.hourly_rate_cents is None:
        raise reader.fail("hourly_rate", "missing required key (occasional work is billed by the hour)")
    unit = reader.integer("unit_minutes", 1)
    return Contract(
        id=head.id,
        kind="occasional",
        start=head.start,
        end=head.end,
        hourly_rate_cents=head.hourly_rate_cents,
        unit_minutes=DEFAULT_UNIT_MINUTES if unit is None else unit,
    )


# ------------------------------------------------------------------ which contract takes a mail


def expiry_order(contract: Contract) -> tuple[date, date, str]:
    """The package to draw from first: the one that expires first, so hours are not lost to expiry."""
    return (contract.valid_until or contract.end or date.max, contract.start, contract.id)


def _shortest_reaction(contracts: Sequence[Contract], left: Callable[[str], int]) -> list[Contract]:
    return sorted(contracts, key=lambda c: (c.reaction_hours or 0, c.id))


def _with_minutes_left(contracts: Sequence[Contract], left: Callable[[str], int]) -> list[Contract]:
    return sorted((c for c in contracts if left(c.id) > 0), key=expiry_order)


# ------------------------------------------------------------------ the table


KINDS: dict[str, KindRules] = {k.name: k for k in (
    KindRules("sla", tier=0, weight=3, choice=10, reaction_deadline=True, target_deadline=False,
              monthly_allowance=True, packages=False, billed_per_unit=False,
              file_keys=frozenset({"reaction_hours", "reaction_clock", "monthly_hours", "rollover_months",
                                   "monthly_fee", "opening_month", "opening_carry_over_hours"}),
              parse=_parse_sla, usable=_shortest_reaction),
    KindRules("prepaid", tier=1, weight=2, choice=20, reaction_deadline=False, target_deadline=True,
              monthly_allowance=False, packages=True, billed_per_unit=False,
              file_keys=frozenset({"hours", "custom_size", "valid_until", "target_hours", "price",
                                   "used_before_hours"}),
              parse=_parse_prepaid, usable=_with_minutes_left),
    KindRules("occasional", tier=2, weight=1, choice=30, reaction_deadline=False, target_deadline=False,
              monthly_allowance=False, packages=False, billed_per_unit=True,
              file_keys=frozenset({"unit_minutes"}), parse=_parse_occasional),
)}
FALLBACK_KIND: ContractKind = "occasional"  # the kind of work no contract covers (billed per started unit)
# The tiers are numbers stored with each ticket, so they stay put: a new kind joins one of these
# (a tier of its own would renumber the stored tickets: a migration). A tier is named after the
# first kind in it.
UNVERIFIED_TIER = 3
TIER_NAMES: tuple[str, ...] = (
    *(next(name for name, rules in KINDS.items() if rules.tier == tier) for tier in range(UNVERIFIED_TIER)),
    "unverified",
)


class _Tiers(Mapping[str, int]):
    """Each kind's tier, read from ``KINDS`` when asked, so a kind added to the table is in it."""

    def __getitem__(self, kind: str) -> int:
        return KINDS[kind].tier

    def __iter__(self) -> Iterator[str]:
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)


TIER_BY_KIND: Mapping[str, int] = _Tiers()


def rules_of(kind: str) -> KindRules:
    """A kind's rules; a kind no longer known (an old row) is treated as occasional."""
    return KINDS.get(kind, KINDS[FALLBACK_KIND])


def in_choice_order() -> list[KindRules]:
    """The kinds in the order ``resolve`` tries them."""
    return sorted(KINDS.values(), key=lambda rules: rules.choice)


def promises_reaction(contract: Contract | None) -> bool:
    return contract is not None and rules_of(contract.kind).reaction_deadline


def packages_of(customer: Customer | None) -> list[Contract]:
    """The customer's contracts whose time is drawn from packages (prepaid)."""
    return [c for c in (customer.contracts if customer else ()) if rules_of(c.kind).packages]


# ------------------------------------------------------------------ terms in the database

TERM_FIELDS = ("hourly_rate_cents", "reaction_hours", "reaction_clock", "monthly_minutes",
               "rollover_months", "package_minutes", "valid_until", "target_hours", "unit_minutes",
               "monthly_fee_cents", "price_cents", "opening_month", "opening_carry_over_minutes",
               "used_before_minutes")


def contract_terms(contract: Contract) -> dict[str, Any]:
    """The terms stored with a contract (plain JSON: dates as ISO text); ``contract_from_terms`` reads them."""
    terms = {}
    for name in TERM_FIELDS:
        value = getattr(contract, name, None)
        if value is not None:
            terms[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return terms


def contract_from_terms(contract_id: str, kind: str, start: date, end: date | None, terms: dict[str, Any] | None,
                        removed_at: datetime | None = None, tz: ZoneInfo | None = None) -> Contract:
    """A contract that left the customers file, rebuilt from the terms last imported.

    Its history stays billable: a statement for a month it ran in must still
    show it after it was removed from the file. Removing it ended it on the
    (local) day of the removal: later time on its tickets is still booked
    against it, as overage, and an sla allowance stops accruing.
    """
    terms = terms or {}
    if removed_at is not None:
        removed_on = removed_at.astimezone(tz or timezone.utc).date()
        end = removed_on if end is None else min(end, removed_on)
    valid_until = terms.get("valid_until")
    return Contract(
        id=contract_id, kind=kind,  # type: ignore[arg-type]
        start=start, end=end,
        hourly_rate_cents=terms.get("hourly_rate_cents"),
        reaction_hours=terms.get("reaction_hours"),
        reaction_clock=terms.get("reaction_clock", "calendar"),
        monthly_minutes=terms.get("monthly_minutes"),
        rollover_months=terms.get("rollover_months"),
        package_minutes=terms.get("package_minutes"),
        valid_until=date.fromisoformat(valid_until) if isinstance(valid_until, str) else None,
        target_hours=terms.get("target_hours"),
        unit_minutes=terms.get("unit_minutes", DEFAULT_UNIT_MINUTES),
        monthly_fee_cents=terms.get("monthly_fee_cents"),
        price_cents=terms.get("price_cents"),
        opening_month=terms.get("opening_month"),
        first_seen_month=first_seen_month(terms),
        opening_carry_over_minutes=terms.get("opening_carry_over_minutes"),
        used_before_minutes=terms.get("used_before_minutes"),
    )


def first_seen_month(terms: dict[str, Any]) -> str | None:
    """The month maild first saw a contract (``first_seen``, kept in its terms by the sync)."""
    seen = terms.get("first_seen")
    return seen[:7] if isinstance(seen, str) else None
