"""The rules of each contract kind, in one table.

What differs between ``sla``, ``prepaid`` and ``occasional`` is said here once:
the queue tier, whether a reaction deadline is guaranteed (and escalated),
whether a target is reported, whether time is drawn from packages or counted
against a monthly allowance, whether work is billed per started unit. The desk,
booking, the acknowledgement and the reports ask this table instead of
comparing kind names. A new kind is one ``KindRules`` entry here, its keys in
the customers file loader (``customers.py``), and its templates' wording.

The terms stored with a contract in the database (``ContractRow.terms``) and the
contract rebuilt from them (a contract that left the customers file still
bills on the terms it was sold with) are here too, side by side.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from maild.rules.customers import DEFAULT_UNIT_MINUTES, Contract, ContractKind, Customer


@dataclass(frozen=True)
class KindRules:
    name: ContractKind
    tier: int  # the queue tier: every ticket of a lower tier first
    reaction_deadline: bool  # a reaction guaranteed within reaction_hours: the SLA clock and escalations
    target_deadline: bool  # an optional target_hours, reported, never escalated
    monthly_allowance: bool  # monthly_minutes each month, unused time carried over
    packages: bool  # time drawn from packages expiring-first; a low-balance warning
    billed_per_unit: bool  # billed per started unit_minutes per ticket and month, no balance


KINDS: dict[str, KindRules] = {k.name: k for k in (
    KindRules("sla", tier=0, reaction_deadline=True, target_deadline=False, monthly_allowance=True,
              packages=False, billed_per_unit=False),
    KindRules("prepaid", tier=1, reaction_deadline=False, target_deadline=True, monthly_allowance=False,
              packages=True, billed_per_unit=False),
    KindRules("occasional", tier=2, reaction_deadline=False, target_deadline=False, monthly_allowance=False,
              packages=False, billed_per_unit=True),
)}
UNVERIFIED_TIER = 3
TIER_BY_KIND: dict[str, int] = {name: rules.tier for name, rules in KINDS.items()}
TIER_NAMES = (*sorted(KINDS, key=lambda name: KINDS[name].tier), "unverified")


def rules_of(kind: str) -> KindRules:
    """A kind's rules; a kind no longer known (an old row) is treated as occasional."""
    return KINDS.get(kind, KINDS["occasional"])


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
