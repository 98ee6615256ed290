"""Sender -> customer -> contract, decided on the day a message arrives (pure).

The contract decides the promise in the acknowledgement, the queue priority and
where the hours are booked, so the choice is made once, here, with a reason a
person can read in the ticket history.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from maild.errors import MaildError
from maild.rules.customers import Contract, ContractKind, Customer, normalize_address
from maild.rules.kinds import FALLBACK_KIND, expiry_order, in_choice_order, rules_of

log = logging.getLogger("maild.contracts")


@dataclass(frozen=True)
class Resolution:
    """Who wrote and which contract covers it.

    ``kind`` is ``FALLBACK_KIND`` (occasional) whenever no contract applies, so later stages always
    have a kind to prioritise and bill by. ``fell_back_from`` names a prepaid
    package that would have applied but is used up or expired, so the
    acknowledgement can tell the customer why this is billed as occasional work.
    """

    customer: Customer | None
    contract: Contract | None
    kind: ContractKind
    verified: bool
    reason: str
    fell_back_from: str | None = None
    # "used_up" or "expired", so the customer is told the one that is true, not both
    fell_back_why: str | None = None
    fell_back_package: Contract | None = None


class DuplicateClaim(MaildError, ValueError):
    """Two customers claim the same address or domain; the loader prevents this."""


_MATCHED_KEPT = 10_000


class CustomerIndex:
    """Address and domain lookups, built once per customers reload.

    A lookup is one dict hit for the address plus one per domain label, so the
    cost does not grow with the number of customers.
    """

    def __init__(self, customers: Sequence[Customer]) -> None:
        self.customers: tuple[Customer, ...] = tuple(customers)
        self._by_address: dict[str, Customer] = {}
        self._by_domain: dict[str, Customer] = {}
        for customer in self.customers:
            for address in customer.addresses:
                self._add(self._by_address, address.lower(), customer)
            for domain in customer.domains:
                self._add(self._by_domain, domain.lower().removeprefix("@"), customer)
        # answers by the address as given: a batch asks for each sender three times (its customer,
        # its packages' customer, the resolution), and a backlog holds the same senders again and again
        self._matched: dict[str, tuple[Customer | None, str]] = {}

    @staticmethod
    def _add(table: dict[str, Customer], key: str, customer: Customer) -> None:
        other = table.get(key)
        if other is not None and other.id != customer.id:
            raise DuplicateClaim(f"{key} is claimed by customers {other.id!r} and {customer.id!r}")
        table[key] = customer

    def customer_for(self, address: str) -> Customer | None:
        """The customer owning ``address``: exact address first, then the most specific domain."""
        return self._match(address)[0]

    def _match(self, address: str) -> tuple[Customer | None, str]:
        found = self._matched.get(address)
        if found is None:
            if len(self._matched) >= _MATCHED_KEPT:
                self._matched.clear()
            found = self._matched[address] = self._match_now(address)
        return found

    def _match_now(self, address: str) -> tuple[Customer | None, str]:
        normal = normalize_address(address)
        if normal is None:
            return None, ""
        customer = self._by_address.get(normal)
        if customer is not None:
            return customer, f"address {normal}"
        labels = normal.rpartition("@")[2].split(".")
        for i in range(len(labels) - 1):
            domain = ".".join(labels[i:])
            customer = self._by_domain.get(domain)
            if customer is not None:
                return customer, f"domain {domain} ({normal})"
        return None, ""


def resolve(
    address: str, index: CustomerIndex, day: date, prepaid_left: Callable[[str], int]
) -> Resolution:
    """Choose the contract covering mail from ``address`` arriving on ``day``.

    The kinds are tried in their ``choice`` order (``kinds.KINDS``): an active
    sla, then an active, unexpired prepaid package with minutes left (the one
    expiring first, so hours are not lost to expiry), then an active occasional
    contract; each kind's ``usable`` says which of its contracts can take the
    mail, best first. Once every package kind has been tried, the package that
    would have applied but is used up or expired is named, so the acknowledgement
    can say why the work is billed otherwise. ``prepaid_left`` maps a contract id
    to its remaining minutes; it comes from the ledger so this function stays pure.
    """
    customer, matched = index._match(address)
    if customer is None:
        return Resolution(
            customer=None,
            contract=None,
            kind=FALLBACK_KIND,
            verified=False,
            reason=f"unknown sender {address.strip()!r}: {FALLBACK_KIND}, unverified",
        )
    prefix = f"{matched} -> customer {customer.id}"
    active = [c for c in customer.contracts if c.active_on(day)]
    kinds = in_choice_order()
    last_package_kind = max((i for i, rules in enumerate(kinds) if rules.packages), default=-1)
    spent: Contract | None = None
    how: str | None = None
    why = ""
    for i, rules in enumerate(kinds):
        if i == last_package_kind + 1:
            spent, how, why = _spent_package(customer, day, prepaid_left)
        usable = rules.usable([c for c in active if c.kind == rules.name], prepaid_left)
        if usable:
            reason = f"{prefix}, {why}contract {usable[0].id} ({rules.name})"
            return _chosen(customer, usable[0], reason, spent, how)
    if len(kinds) == last_package_kind + 1:
        spent, how, why = _spent_package(customer, day, prepaid_left)
    return _chosen(customer, None, f"{prefix}, {why}no active contract: {FALLBACK_KIND}", spent, how)


def _chosen(
    customer: Customer, contract: Contract | None, reason: str, spent: Contract | None = None,
    how: str | None = None,
) -> Resolution:
    return Resolution(
        customer=customer,
        contract=contract,
        kind=FALLBACK_KIND if contract is None else contract.kind,
        verified=True,
        reason=reason,
        fell_back_from=spent.id if spent is not None else None,
        fell_back_why=how,
        fell_back_package=spent,
    )


def _spent_package(
    customer: Customer, day: date, prepaid_left: Callable[[str], int]
) -> tuple[Contract | None, str | None, str]:
    """The most recent package that has started but can no longer be drawn from.

    Only the latest one is named: the customer needs to know that their hours
    ran out, not a history of every package they ever bought.
    """
    started = [c for c in customer.contracts if rules_of(c.kind).packages and c.start <= day]
    if not started:
        return None, None, ""
    package = max(started, key=expiry_order)
    if not package.active_on(day):
        last = package.valid_until if package.valid_until is not None else package.end
        return package, "expired", f"{package.kind} {package.id} expired {last}: "
    return package, "used_up", f"{package.kind} {package.id} used up: "
