"""Monthly reports and balances from the ledger: what a customer is billed, what was promised.

The arithmetic is ``ledger`` (pure); this module gathers the rows a report
needs, groups them by customer, contract and ticket, and returns frozen values
the CLI prints and the statement template renders. The ``build_*`` functions are
pure over plain data, so the figures can be tested without a database; the
``load_*`` functions read the database (a Connection, or the caller's
Session: the tables in SQLAlchemy Core, so ``report hours`` and ``report sla``
never load the ORM).

Statements are append-only: an entry counts in the month it was booked, and a
reversal booked in February corrects February, not January. An issued
statement therefore never changes when it is produced again later, which is
what an invoice needs; ``ledger.sla_months`` is given the entries without their
``reverses`` link for that reason.
"""
from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Executable, Row, case, delete, func, insert, literal_column, select
from sqlalchemy.exc import IntegrityError, OperationalError

from maild.errors import MaildError
from maild.rules.calendar import local_month_bounds
from maild.rules.customers import DEFAULT_UNIT_MINUTES, Contract, Customer
from maild.rules.kinds import FALLBACK_KIND, contract_from_terms, first_seen_month, packages_of, rules_of
from maild.billing.ledger import (
    LedgerEntry,
    PackageBalance,
    SlaMonth,
    amount_cents,
    month_key,
    occasional_billable,
    SlaState,
    months_after,
    previous_month,
    prepaid_balances,
    sla_month,
    sla_months,
    sla_states,
)
from maild.storage.queries import Reader, dialect_name
from maild.storage.tables import balance_snapshots, ledger, tickets
from maild.storage.tables import contracts as contract_rows
from maild.storage.tables import customers as customer_rows

if TYPE_CHECKING:
    from maild.storage.models import ContractRow

UTC = timezone.utc
log = logging.getLogger("maild.billing")
UNSPECIFIED_SCOPE = "unspecified"
_INSTANT = timedelta(microseconds=1)


class ReportError(MaildError, ValueError):
    """A report was asked for something it cannot compute (e.g. a month that is not YYYY-MM)."""


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class LedgerLine:
    """One ledger row as the reports see it (``LedgerRow`` without the ORM)."""

    id: int
    contract_id: str | None
    customer_id: str | None
    ticket_id: int | None
    minutes: int
    overage: bool
    booked_at: datetime  # aware UTC
    scope: str | None
    reverses: int | None = None


@dataclass(frozen=True)
class TicketInfo:
    id: int
    ref: str
    subject: str
    customer_id: str | None
    contract_id: str | None
    contract_kind: str
    created_at: datetime
    reaction_due: datetime | None
    first_response_at: datetime | None
    target_due: datetime | None = None


# ------------------------------------------------------------------ outputs


@dataclass(frozen=True)
class TicketHours:
    ticket_id: int | None
    ref: str | None
    subject: str
    minutes_by_scope: tuple[tuple[str, int], ...]
    total_minutes: int
    overage_minutes: int  # prepaid time beyond the packages, booked as overage rows
    billable_minutes: int  # occasional: rounded up per started unit; otherwise 0


@dataclass(frozen=True)
class ContractHours:
    """One contract in one month.

    ``carry_in``/``carry_out``/``allowance``/``expired`` are set for ``sla`` only,
    ``balance_start``/``balance_end``/``valid_until`` for ``prepaid``; ``None``
    where a figure does not apply, so a 0 always means zero.
    """

    contract_id: str | None
    kind: str
    minutes_by_scope: tuple[tuple[str, int], ...]
    total_minutes: int
    allowance_minutes: int | None
    carry_in_minutes: int | None
    carry_out_minutes: int | None
    expired_minutes: int | None
    balance_start_minutes: int | None
    balance_end_minutes: int | None
    valid_until: date | None
    overage_minutes: int
    billable_minutes: int  # minutes charged at the hourly rate: overage, or occasional per started unit
    hourly_rate_cents: int | None
    amount_cents: int | None  # None when minutes are billable but no rate is known
    tickets: tuple[TicketHours, ...]
    # the sla contract's monthly fee (months it runs) or the package's price (the month it
    # starts); None when the customers file names no price
    fee_cents: int | None = None


@dataclass(frozen=True)
class CustomerHours:
    customer_id: str | None
    name: str
    language: str
    billing_address: str | None
    contracts: tuple[ContractHours, ...]

    @property
    def total_minutes(self) -> int:
        return sum(c.total_minutes for c in self.contracts)

    @property
    def amount_cents(self) -> int:
        """The hours billed at an hourly rate (overage, occasional work), net."""
        return sum(c.amount_cents or 0 for c in self.contracts)

    @property
    def fees_cents(self) -> int:
        """Monthly fees and package prices of the month, net."""
        return sum(c.fee_cents or 0 for c in self.contracts)

    @property
    def net_cents(self) -> int:
        return self.amount_cents + self.fees_cents


@dataclass(frozen=True)
class HoursReport:
    month: str
    timezone: str
    customers: tuple[CustomerHours, ...]

    def customer(self, customer_id: str | None) -> CustomerHours | None:
        return next((c for c in self.customers if c.customer_id == customer_id), None)

    def contract(self, contract_id: str | None) -> ContractHours | None:
        for customer in self.customers:
            for contract in customer.contracts:
                if contract.contract_id == contract_id:
                    return contract
        return None


@dataclass(frozen=True)
class ContractBalance:
    """A contract's standing now, for ``contracts list``."""

    customer_id: str
    customer_name: str
    contract_id: str
    kind: str
    start: date
    end: date | None
    valid_until: date | None
    used_minutes_month: int
    balance_minutes: int | None  # None for occasional: it has no balance
    carry_over_minutes: int
    overage_minutes: int
    expired: bool
    removed: bool


@dataclass(frozen=True)
class SlaContractReport:
    customer_id: str | None
    customer_name: str
    contract_id: str | None
    tickets: int
    met: int
    missed: int
    open: int
    median_reaction_minutes: int | None
    worst_reaction_minutes: int | None
    missed_refs: tuple[str, ...]
    kind: str = "sla"  # "prepaid": met/missed against the package's target_hours, a goal, not a promise


@dataclass(frozen=True)
class SlaReport:
    month: str
    timezone: str
    contracts: tuple[SlaContractReport, ...]


# ------------------------------------------------------------------ helpers


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    try:
        return local_month_bounds(month, tz)
    except ValueError as exc:
        raise ReportError(str(exc)) from None


def _entries(lines: Iterable[LedgerLine]) -> list[LedgerEntry]:
    return [
        LedgerEntry(id=line.id, contract_id=line.contract_id or "", ticket_id=line.ticket_id,
                    minutes=line.minutes, booked_at=line.booked_at, by="", scope=line.scope)
        for line in lines
    ]


def _scopes(lines: Iterable[LedgerLine]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        totals[line.scope or UNSPECIFIED_SCOPE] += line.minutes
    return tuple(sorted(totals.items()))


def _unit(contract: Contract | None, default_unit: int) -> int:
    """The billing unit: a contract's own when it sets one, else the configured default.

    ``Contract.unit_minutes`` carries the loader's default when the file is
    silent, so only a different value is taken as the contract's own.
    """
    if contract is not None and contract.unit_minutes != DEFAULT_UNIT_MINUTES:
        return contract.unit_minutes
    return default_unit


def _package_last_day(contract: Contract) -> date | None:
    if not rules_of(contract.kind).packages:
        return contract.end
    days = [d for d in (contract.valid_until, contract.end) if d is not None]
    return min(days) if days else None


def _active_in(contract: Contract, first: date, last: date) -> bool:
    ends = _package_last_day(contract)
    return contract.start <= last and (ends is None or ends >= first)


# ------------------------------------------------------------------ hours report (pure)


def build_hours_report(
    month: str,
    tz: ZoneInfo,
    customers: Sequence[Customer],
    lines: Sequence[LedgerLine],
    tickets: Mapping[int, TicketInfo],
    occasional_unit_minutes: int = DEFAULT_UNIT_MINUTES,
    progress: Callable[[int, int | None], None] | None = None,
    occasional_rate_cents: int | None = None,
    openings: Mapping[str, Opening] | None = None,
) -> HoursReport:
    """The monthly statement of every customer, from the ledger lines booked up to the month's end.

    With ``openings`` (every sla and prepaid contract's balance as the month
    begins, ``opening_balances``), ``lines`` need hold only the month's own rows.

    Hours that no contract prices (a package used up with no hourly rate of its own,
    time with no contract) are billed at the customer's ``occasional_hourly_rate``,
    else at ``occasional_rate_cents`` (``[billing] occasional_hourly_rate``).

    ``lines`` may include earlier months (sla carry-over needs them); only
    lines booked inside the month are listed. Lines whose contract is not among
    ``customers`` (unknown senders, contracts gone from the file and the
    database) are still reported under their customer id, so no minute booked
    in the month is left out of the statement totals.
    """
    start, end = month_bounds(month, tz)
    first = start.astimezone(tz).date()
    last = (end - _INSTANT).astimezone(tz).date()
    until = [line for line in lines if line.booked_at < end]
    in_month = [line for line in until if line.booked_at >= start]
    if openings is not None:
        until = _drawn_lines(openings, start) + in_month
    by_contract: dict[str | None, list[LedgerLine]] = defaultdict(list)
    for line in in_month:
        by_contract[line.contract_id].append(line)

    known: set[str] = set()
    result: list[CustomerHours] = []
    for done, customer in enumerate(customers, start=1):
        if progress is not None:
            progress(done, len(customers))
        contracts: list[ContractHours] = []
        for contract in customer.contracts:
            known.add(contract.id)
            own = by_contract.get(contract.id, [])
            if not own and not (not rules_of(contract.kind).billed_per_unit and _active_in(contract, first, last)):
                continue
            contracts.append(_contract_hours(contract, customer, own, until, tickets, month, tz,
                                             start, end, occasional_unit_minutes,
                                             _fallback_rate(customer, occasional_rate_cents),
                                             None if openings is None else openings.get(contract.id)))
        if contracts:
            result.append(CustomerHours(customer.id, customer.name, customer.language,
                                        customer.billing_address, tuple(contracts)))

    orphans: dict[str | None, list[LedgerLine]] = defaultdict(list)
    for contract_id, own in by_contract.items():
        if contract_id is None or contract_id not in known:
            for line in own:
                orphans[line.customer_id].append(line)
    names = {c.id: c for c in customers}
    for customer_id, own in sorted(orphans.items(), key=lambda kv: kv[0] or ""):
        groups: dict[str | None, list[LedgerLine]] = defaultdict(list)
        for line in own:
            groups[line.contract_id].append(line)
        contracts = [
            _unknown_contract_hours(contract_id, group, tickets, occasional_unit_minutes,
                                    _fallback_rate(names.get(customer_id or ""), occasional_rate_cents))
            for contract_id, group in sorted(groups.items(), key=lambda kv: kv[0] or "")
        ]
        known_customer = names.get(customer_id or "")
        existing = next((i for i, c in enumerate(result) if c.customer_id == customer_id), None)
        if existing is not None:
            merged = result[existing]
            result[existing] = replace(merged, contracts=merged.contracts + tuple(contracts))
        else:
            result.append(CustomerHours(
                customer_id,
                known_customer.name if known_customer else (customer_id or "(unknown sender)"),
                known_customer.language if known_customer else "pl",
                known_customer.billing_address if known_customer else None,
                tuple(contracts),
            ))
    return HoursReport(month=month, timezone=tz.key, customers=tuple(result))


def _ticket_hours(
    lines: Sequence[LedgerLine], tickets: Mapping[int, TicketInfo], unit: int | None
) -> tuple[TicketHours, ...]:
    """Per-ticket totals; ``unit`` set means occasional billing per started unit per ticket."""
    by_ticket: dict[int | None, list[LedgerLine]] = defaultdict(list)
    for line in lines:
        by_ticket[line.ticket_id].append(line)
    out = []
    for ticket_id in sorted(by_ticket, key=lambda t: -1 if t is None else t):
        own = by_ticket[ticket_id]
        total = sum(line.minutes for line in own)
        info = tickets.get(ticket_id) if ticket_id is not None else None
        out.append(TicketHours(
            ticket_id=ticket_id,
            ref=info.ref if info else None,
            subject=info.subject if info else "",
            minutes_by_scope=_scopes(own),
            total_minutes=total,
            overage_minutes=sum(line.minutes for line in own if line.overage),
            billable_minutes=occasional_billable(max(total, 0), unit) if unit is not None else 0,
        ))
    return tuple(out)


def _fallback_rate(customer: Customer | None, default: int | None) -> int | None:
    if customer is not None and customer.occasional_hourly_rate_cents is not None:
        return customer.occasional_hourly_rate_cents
    return default


def _contract_hours(
    contract: Contract,
    customer: Customer,
    own: Sequence[LedgerLine],
    until: Sequence[LedgerLine],
    tickets: Mapping[int, TicketInfo],
    month: str,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    default_unit: int,
    fallback_rate: int | None = None,
    opening: Opening | None = None,
) -> ContractHours:
    total = sum(line.minutes for line in own)
    rate = contract.hourly_rate_cents if contract.hourly_rate_cents is not None else fallback_rate
    fee: int | None = None
    allowance = carry_in = carry_out = expired = balance_start = balance_end = None
    valid_until = _package_last_day(contract)
    overage = billable = 0
    unit: int | None = None
    rules = rules_of(contract.kind)
    if rules.monthly_allowance:
        now = _sla_month(contract, opening, own, until, month, tz)
        if now is not None:
            allowance, carry_in, carry_out = now.allowance, now.carry_in, now.carry_out
            expired, overage = now.expired, now.overage
        else:
            allowance = carry_in = carry_out = expired = 0
        billable = overage
        if contract.monthly_fee_cents is not None and allowance:
            fee = contract.monthly_fee_cents
    elif rules.packages:
        balance_start = _left(_packages_at(customer, until, start - _INSTANT, tz)[contract.id])
        balance_end = _left(_packages_at(customer, until, end - _INSTANT, tz)[contract.id])
        overage = billable = sum(line.minutes for line in own if line.overage)
        if contract.price_cents is not None and start.astimezone(tz).date() <= contract.start < end.astimezone(tz).date():
            fee = contract.price_cents
    else:
        unit = _unit(contract, default_unit)
    ticket_rows = _ticket_hours(own, tickets, unit)
    if unit is not None:
        billable = sum(t.billable_minutes for t in ticket_rows)
    return ContractHours(
        contract_id=contract.id,
        kind=contract.kind,
        minutes_by_scope=_scopes(own),
        total_minutes=total,
        allowance_minutes=allowance,
        carry_in_minutes=carry_in,
        carry_out_minutes=carry_out,
        expired_minutes=expired,
        balance_start_minutes=balance_start,
        balance_end_minutes=balance_end,
        valid_until=valid_until,
        overage_minutes=overage,
        billable_minutes=billable,
        hourly_rate_cents=rate,
        amount_cents=(amount_cents(billable, rate) if rate is not None else (0 if billable == 0 else None)),
        tickets=ticket_rows,
        fee_cents=fee,
    )


def _unknown_contract_hours(
    contract_id: str | None, own: Sequence[LedgerLine], tickets: Mapping[int, TicketInfo], unit: int,
    rate: int | None = None,
) -> ContractHours:
    """Time with no contract to price it: billed per started unit like occasional work, at the
    occasional rate (the customer's, else the configured one; no amount when neither is set)."""
    ticket_rows = _ticket_hours(own, tickets, unit)
    billable = sum(t.billable_minutes for t in ticket_rows)
    return ContractHours(
        contract_id=contract_id, kind=FALLBACK_KIND, minutes_by_scope=_scopes(own),
        total_minutes=sum(line.minutes for line in own), allowance_minutes=None, carry_in_minutes=None,
        carry_out_minutes=None, expired_minutes=None, balance_start_minutes=None, balance_end_minutes=None,
        valid_until=None, overage_minutes=0, billable_minutes=billable, hourly_rate_cents=rate,
        amount_cents=amount_cents(billable, rate) if rate is not None else (0 if billable == 0 else None),
        tickets=ticket_rows,
    )


# ------------------------------------------------------------------ balances (pure)


def _sla_month(contract: Contract, opening: Opening | None, month_lines: Sequence[LedgerLine],
               all_lines: Iterable[LedgerLine], month: str, tz: ZoneInfo) -> SlaMonth | None:
    """An SLA contract's month from the month's opening snapshot and its own rows when there is one, else
    from every row up to the month's end: the statement and the balances must agree on which."""
    if opening is not None and opening.sla is not None:
        return sla_month(contract, opening.sla, _entries(month_lines), tz)
    return _allowance_month(contract, all_lines, month, tz)


def _allowance_month(contract: Contract, lines: Iterable[LedgerLine], month: str, tz: ZoneInfo) -> SlaMonth | None:
    """A monthly-allowance contract's standing in ``month`` (None: it did not run then)."""
    history = _entries(line for line in lines if line.contract_id == contract.id)
    months = sla_months(contract, history, month, tz)
    return months[-1] if months and months[-1].month == month else None


def _packages_at(customer: Customer, lines: Iterable[LedgerLine], at: datetime, tz: ZoneInfo) -> dict[str, PackageBalance]:
    """Each of the customer's packages at ``at``, drawn expiring-first."""
    packages = packages_of(customer)
    ids = {p.id for p in packages}
    draws = _entries(line for line in lines if not line.overage and line.contract_id in ids)
    return {b.contract_id: b for b in prepaid_balances(packages, draws, at, tz)}


def _left(state: PackageBalance) -> int:
    return 0 if state.expired else state.left


@dataclass(frozen=True)
class Opening:
    """A contract's balance as ``month`` begins: all its statement needs from every earlier month.

    ``drawn``: minutes drawn from the package before the month (overage rows
    draw on none); ``sla``: a monthly-allowance contract's carried lots.
    """

    month: str
    drawn: int
    sla: SlaState | None


def _drawn_lines(openings: Mapping[str, Opening], start: datetime) -> list[LedgerLine]:
    """Each opening's draws as one line just before the month: what a package balance sums."""
    return [LedgerLine(id=-n, contract_id=contract_id, customer_id=None, ticket_id=None, minutes=opening.drawn,
                       overage=False, booked_at=start - _INSTANT, scope=None)
            for n, (contract_id, opening) in enumerate(sorted(openings.items()), start=1) if opening.drawn]


def build_balances(
    customers: Sequence[Customer], lines: Sequence[LedgerLine], now: datetime, tz: ZoneInfo,
    removed: frozenset[str] = frozenset(), openings: Mapping[str, Opening] | None = None,
) -> list[ContractBalance]:
    """Every contract's standing at ``now``: used this (local) month, balance, carry-over, overage.

    ``openings`` as for ``build_hours_report``: then ``lines`` need hold only this month's rows."""
    month = month_key(now, tz)
    start, end = month_bounds(month, tz)
    upto = [line for line in lines if line.booked_at <= now]
    this_month = [line for line in upto if line.booked_at >= start]
    if openings is not None:
        upto = _drawn_lines(openings, start) + this_month
    today = now.astimezone(tz).date()
    out: list[ContractBalance] = []
    for customer in customers:
        package_state = _packages_at(customer, upto, now, tz)
        for contract in customer.contracts:
            own_month = [line for line in this_month if line.contract_id == contract.id]
            used = sum(line.minutes for line in own_month)
            balance: int | None = None
            carry = overage = 0
            expired = contract.end is not None and today > contract.end
            rules = rules_of(contract.kind)
            if rules.monthly_allowance:
                opening = None if openings is None else openings.get(contract.id)
                current = _sla_month(contract, opening, own_month, upto, month, tz)
                if current is not None:
                    used, carry, overage = current.used, current.carry_in, current.overage
                    balance = current.carry_in + current.allowance - current.used
                else:
                    balance = 0
            elif rules.packages:
                state = package_state[contract.id]
                expired = state.expired
                balance = _left(state)
                overage = sum(line.minutes for line in own_month if line.overage)
            out.append(ContractBalance(
                customer_id=customer.id, customer_name=customer.name, contract_id=contract.id,
                kind=contract.kind, start=contract.start, end=contract.end,
                valid_until=_package_last_day(contract), used_minutes_month=used, balance_minutes=balance,
                carry_over_minutes=carry, overage_minutes=overage, expired=expired,
                removed=contract.id in removed,
            ))
    return out


# ------------------------------------------------------------------ SLA report (pure)


def _median(values: Sequence[int]) -> int | None:
    """Median in whole minutes; between two middle values, the lower whole minute."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) // 2


def build_sla_report(
    month: str, tz: ZoneInfo, tickets: Sequence[TicketInfo], customer_names: Mapping[str, str], now: datetime
) -> SlaReport:
    """Reactions met and missed for the sla tickets created in ``month`` (local calendar).

    Prepaid tickets with a ``target_due`` (the package's ``target_hours``) are
    reported on rows of kind "prepaid": the goal is measured the same way, but
    it is never escalated and never a breach.

    A ticket with no first response counts as missed once its deadline passed
    by ``now`` and as open before that, so a report for the running month does
    not call a ticket missed that can still be answered in time.
    """
    start, end = month_bounds(month, tz)
    groups: dict[tuple[str, str | None, str | None], list[TicketInfo]] = defaultdict(list)
    for ticket in tickets:
        if not start <= ticket.created_at < end:
            continue
        rules = rules_of(ticket.contract_kind)
        if rules.reaction_deadline or rules.target_deadline and ticket.target_due is not None:
            groups[(rules.name, ticket.customer_id, ticket.contract_id)].append(ticket)
    out = []
    for (kind, customer_id, contract_id), own in sorted(
        groups.items(), key=lambda kv: (kv[0][1] or "", kv[0][2] or "", kv[0][0])
    ):
        met = missed = still_open = 0
        reactions: list[int] = []
        missed_refs: list[str] = []
        for ticket in sorted(own, key=lambda t: t.id):
            due = ticket.reaction_due if rules_of(kind).reaction_deadline else ticket.target_due
            if ticket.first_response_at is not None:
                reactions.append(int((ticket.first_response_at - ticket.created_at).total_seconds()) // 60)
                if due is None or ticket.first_response_at <= due:
                    met += 1
                else:
                    missed += 1
                    missed_refs.append(ticket.ref)
            elif due is not None and due <= now:
                missed += 1
                missed_refs.append(ticket.ref)
            else:
                still_open += 1
        out.append(SlaContractReport(
            customer_id=customer_id,
            customer_name=customer_names.get(customer_id or "", customer_id or "(unknown)"),
            contract_id=contract_id, tickets=len(own), met=met, missed=missed, open=still_open,
            median_reaction_minutes=_median(reactions),
            worst_reaction_minutes=max(reactions) if reactions else None,
            missed_refs=tuple(missed_refs), kind=kind,
        ))
    return SlaReport(month=month, timezone=tz.key, contracts=tuple(out))


# ------------------------------------------------------------------ loading from the database


_LINE_COLUMNS = (ledger.c.id, ledger.c.contract_id, ledger.c.customer_id, ledger.c.ticket_id,
                 ledger.c.minutes, ledger.c.overage, ledger.c.booked_at, ledger.c.scope, ledger.c.reverses)


def _lines(session: Reader, query: Executable) -> list[LedgerLine]:
    return [
        LedgerLine(id=r.id, contract_id=r.contract_id, customer_id=r.customer_id, ticket_id=r.ticket_id,
                   minutes=r.minutes, overage=r.overage, booked_at=r.booked_at, scope=r.scope, reverses=r.reverses)
        for r in session.execute(query)
    ]


def load_lines(session: Reader, since: datetime | None = None, until: datetime | None = None,
               contract_ids: Collection[str] | None = None) -> list[LedgerLine]:
    """The ledger rows booked in ``[since, until)`` as plain values (all of them when unbounded), of
    ``contract_ids`` alone when given (one parameter per contract, never per row)."""
    query = select(*_LINE_COLUMNS).order_by(ledger.c.id)
    if since is not None:
        query = query.where(ledger.c.booked_at >= since)
    if until is not None:
        query = query.where(ledger.c.booked_at < until)
    if contract_ids is not None:
        query = query.where(ledger.c.contract_id.in_(sorted(contract_ids)))
    return _lines(session, query)


def _month_starts(first: datetime, before: datetime, tz: ZoneInfo) -> list[datetime]:
    """UTC instants where each local month from ``first``'s to ``before``'s begins (both included)."""
    starts: list[datetime] = []
    month = month_key(first, tz)
    while True:
        begin, following = month_bounds(month, tz)
        starts.append(begin)
        if following > before:
            return starts
        month = month_key(following, tz)


def _month_of(column: Any, starts: Sequence[datetime], low: int, high: int) -> Any:
    """A CASE tree giving the index in ``starts`` of the month a row falls in: log2(months) comparisons a row.

    Binds one parameter per month boundary, never one per row, and needs no
    date function (SQLite and PostgreSQL have no common one that knows the
    business time zone).
    """
    if high - low <= 1:
        return literal_column(str(low))
    middle = (low + high) // 2
    return case((column < starts[middle], _month_of(column, starts, low, middle)),
                else_=_month_of(column, starts, middle, high))


def load_history(session: Reader, before: datetime, tz: ZoneInfo,
                 contract_ids: Collection[str] | None = None, since: datetime | None = None) -> list[LedgerLine]:
    """The ledger booked before ``before`` as one summed line per contract, overage flag and local month.

    A statement needs the past only for balances: an sla contract's carry-over
    (minutes per month) and a prepaid package's draws (minutes up to an
    instant). Both are sums, so the database adds them up and a month's report
    reads a few lines per contract and month of history instead of every row
    ever booked. Each line is dated at the start of its month and has a
    negative id, so it can never be mistaken for a real entry; reversals count
    where they were booked, as a statement counts them (``sla_months`` is given
    no ``reverses`` links by the reports). ``contract_ids`` limits the sums to
    the contracts whose past counts (sla and prepaid): occasional time and
    unknown contracts are reported from the month's own rows only. ``since``
    (a month's start) leaves out what was booked before it.
    """
    bounds = [ledger.c.booked_at < before, *([ledger.c.booked_at >= since] if since is not None else [])]
    first = session.scalar(select(func.min(ledger.c.booked_at)).where(*bounds))
    if first is None:
        return []
    starts = _month_starts(first, before, tz)
    rows = (
        select(ledger.c.contract_id.label("contract_id"), ledger.c.overage.label("overage"),
               ledger.c.minutes.label("minutes"),
               _month_of(ledger.c.booked_at, starts, 0, len(starts)).label("month"))
        .where(*bounds, ledger.c.contract_id.is_not(None),
               *([ledger.c.contract_id.in_(sorted(contract_ids))] if contract_ids is not None else []))
        .subquery()
    )
    query = (
        select(rows.c.contract_id, rows.c.overage, rows.c.month, func.sum(rows.c.minutes))
        .group_by(rows.c.contract_id, rows.c.overage, rows.c.month)
        .order_by(rows.c.contract_id, rows.c.month, rows.c.overage)
    )
    out: list[LedgerLine] = []
    for n, (contract_id, overage, month, minutes) in enumerate(session.execute(query), start=1):
        out.append(LedgerLine(id=-n, contract_id=contract_id, customer_id=None, ticket_id=None,
                              minutes=int(minutes), overage=bool(overage), booked_at=starts[int(month)],
                              scope=None))
    return out


def _ticket_infos(session: Reader, prefix: str, query: Executable) -> dict[int, TicketInfo]:
    return {
        t.id: TicketInfo(id=t.id, ref=f"{prefix}-{t.id}", subject=t.subject, customer_id=t.customer_id,
                         contract_id=t.contract_id, contract_kind=t.contract_kind, created_at=t.created_at,
                         reaction_due=t.reaction_due, first_response_at=t.first_response_at,
                         target_due=t.target_due)
        for t in session.execute(query)
    }


_TICKET_COLUMNS = (tickets.c.id, tickets.c.subject, tickets.c.customer_id, tickets.c.contract_id, tickets.c.contract_kind,
                   tickets.c.created_at, tickets.c.reaction_due, tickets.c.first_response_at, tickets.c.target_due)


def load_tickets(session: Reader, prefix: str, created_from: datetime | None = None,
                 created_to: datetime | None = None) -> dict[int, TicketInfo]:
    query = select(*_TICKET_COLUMNS)
    if created_from is not None:
        query = query.where(tickets.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(tickets.c.created_at < created_to)
    return _ticket_infos(session, prefix, query)


def load_booked_tickets(session: Reader, prefix: str, since: datetime, until: datetime) -> dict[int, TicketInfo]:
    """The tickets with time booked in ``[since, until)``, found by a join rather than a list of ids.

    An ``IN (...)`` of every booked ticket binds a parameter per ticket and
    fails past the driver's limit (65,535 on PostgreSQL) after about a year.
    """
    booked = select(ledger.c.ticket_id).where(ledger.c.booked_at >= since, ledger.c.booked_at < until,
                                               ledger.c.ticket_id.is_not(None))
    return _ticket_infos(session, prefix, select(*_TICKET_COLUMNS).where(tickets.c.id.in_(booked.scalar_subquery())))


def contract_from_row(row: ContractRow | Row[Any], tz: ZoneInfo | None = None) -> Contract:
    """A contract that left the customers file, from its row (see ``kinds.contract_from_terms``)."""
    return contract_from_terms(row.id, row.kind, row.start, row.end, row.terms, row.removed_at, tz)


def with_first_seen(contract: Contract, row: Row[Any] | None) -> Contract:
    """An sla contract's months start where maild first saw it, unless the file gives opening_month:
    a contract started in January and loaded in December has no carry-over for January-November."""
    if not rules_of(contract.kind).monthly_allowance or row is None:
        return contract
    month = first_seen_month(row.terms or {})
    return replace(contract, first_seen_month=month) if month else contract


def merge_known_customers(
    session: Reader, customers: Sequence[Customer], tz: ZoneInfo | None = None
) -> tuple[tuple[Customer, ...], frozenset[str]]:
    """The customers file plus what the database still remembers; and the ids of removed contracts."""
    in_file = {contract.id for customer in customers for contract in customer.contracts}
    extra: dict[str, list[Contract]] = defaultdict(list)
    rows: dict[str, Row[Any]] = {}
    for row in session.execute(select(contract_rows).order_by(contract_rows.c.id)):
        rows[row.id] = row
        if row.id not in in_file:
            extra[row.customer_id].append(contract_from_row(row, tz))
    customers = [
        replace(customer, contracts=tuple(with_first_seen(c, rows.get(c.id)) for c in customer.contracts))
        if any(rules_of(c.kind).monthly_allowance for c in customer.contracts) else customer
        for customer in customers
    ]
    merged = [
        replace(customer, contracts=customer.contracts + tuple(extra.pop(customer.id, [])))
        if customer.id in extra else customer
        for customer in customers
    ]
    for customer_id, contracts in sorted(extra.items()):
        owner = session.execute(select(customer_rows).where(customer_rows.c.id == customer_id)).first()
        merged.append(Customer(
            id=customer_id, name=owner.name if owner else customer_id,
            language=owner.language if owner else "pl",
            billing_address=owner.billing_address if owner else None, contracts=tuple(contracts),
        ))
    removed = frozenset(
        contract.id for customer in merged for contract in customer.contracts if contract.id not in in_file
    )
    return tuple(merged), removed


def _with_past(customers: Sequence[Customer]) -> list[Contract]:
    """The contracts whose earlier months a report needs: a monthly allowance (carry-over) or packages (draws)."""
    return [c for customer in customers for c in customer.contracts
            if rules_of(c.kind).monthly_allowance or rules_of(c.kind).packages]


# ------------------------------------------------------------------ balance snapshots


def terms_key(contract: Contract, tz: ZoneInfo) -> str:
    """A fingerprint of what an opening balance is computed from besides the ledger: the terms and the zone
    whose months it counts in. A snapshot under other terms (the customers file changed) is not used."""
    # 2: the state's shape (SlaState.earliest); a snapshot of another shape is stale
    fields = (2, tz.key, contract.kind, contract.start.isoformat(), contract.end and contract.end.isoformat(),
              contract.monthly_minutes, contract.rollover_months, contract.opening_month,
              contract.opening_carry_over_minutes, contract.first_seen_month)
    return hashlib.sha256(repr(fields).encode()).hexdigest()


def _opening(row: Row[Any]) -> Opening:
    return _opening_of(row.month, row.drawn_minutes, row.state)


def _opening_of(month: str, drawn: int, state: dict[str, Any] | None) -> Opening:
    state = state or {}
    sla = None
    if "month" in state:
        sla = SlaState(month=state["month"], first=state.get("first"),
                       lots=tuple((int(origin), int(minutes)) for origin, minutes in state.get("lots", [])),
                       pending=int(state.get("pending", 0)), earliest=state.get("earliest"))
    return Opening(month=month, drawn=drawn, sla=sla)


def _lock_contracts(session: Reader, contract_ids: Collection[str]) -> set[str]:
    """The contracts whose snapshots this transaction may store: on PostgreSQL those it could lock.

    A booking locks its contract's row before it deletes the snapshots after
    its month (``invalidate_snapshots``); holding the row shared from before
    the ledger is read until commit means a booking either committed before
    that read (and is in the sums) or waits and deletes what is stored here.
    A row a booking holds right now is skipped: its figures are computed, not
    stored. SQLite needs no lock: a transaction that read before another one
    committed cannot write (SQLITE_BUSY_SNAPSHOT; ``_store`` then stores nothing).
    """
    if not contract_ids:
        return set()
    if dialect_name(session) != "postgresql":
        return set(contract_ids)
    query = (select(contract_rows.c.id).where(contract_rows.c.id.in_(sorted(contract_ids))).order_by(contract_rows.c.id)
             .with_for_update(read=True, skip_locked=True))
    return set(session.scalars(query))


def opening_balances(session: Reader, contracts: Sequence[Contract], month: str, tz: ZoneInfo,
                     store: bool = False) -> dict[str, Opening]:
    """Each contract's balance as ``month`` begins, from its stored snapshot when there is a valid one.

    Otherwise from its latest valid snapshot before the month plus the ledger
    summed since (the whole ledger when there is none), as ``load_history``
    sums it; with ``store`` the snapshot of every month walked through is kept
    (in the caller's transaction), so the next report of any of those months
    reads one row per contract.
    """
    if not contracts:
        return {}
    start, _ = month_bounds(month, tz)
    keys = {c.id: terms_key(c, tz) for c in contracts}
    found: dict[str, Opening] = {}
    exact = select(balance_snapshots.c.contract_id, balance_snapshots.c.terms, balance_snapshots.c.drawn_minutes,
                   balance_snapshots.c.state).where(
        balance_snapshots.c.month == month, *([balance_snapshots.c.contract_id.in_(sorted(keys))] if len(keys) <= 500 else []))
    for contract_id, terms, drawn, state in session.execute(exact):
        if keys.get(contract_id) == terms:
            found[contract_id] = _opening_of(month, drawn, state)
    missing = [c for c in contracts if c.id not in found]
    if not missing:
        return found
    storable = _lock_contracts(session, [c.id for c in missing]) if store else set()
    bases: dict[str, Opening | None] = {}
    for contract in missing:
        row = session.execute(
            select(balance_snapshots)
            .where(balance_snapshots.c.contract_id == contract.id, balance_snapshots.c.month < month,
                   balance_snapshots.c.terms == keys[contract.id])
            .order_by(balance_snapshots.c.month.desc()).limit(1)
        ).first()
        latest = None if row is None else _opening(row)
        if latest is not None and rules_of(contract.kind).monthly_allowance and latest.sla is None:
            latest = None
        bases[contract.id] = latest
    groups: dict[str | None, list[Contract]] = defaultdict(list)
    for contract in missing:
        latest = bases[contract.id]
        groups[None if latest is None else latest.month].append(contract)
    now = datetime.now(UTC)
    new_rows: list[dict[str, Any]] = []
    for since_month, group in sorted(groups.items(), key=lambda kv: kv[0] or ""):
        since = None if since_month is None else month_bounds(since_month, tz)[0]
        history: dict[str | None, list[LedgerLine]] = defaultdict(list)
        for line in load_history(session, start, tz, [c.id for c in group], since):
            history[line.contract_id].append(line)
        for contract in group:
            base = bases[contract.id]
            own = history[contract.id]
            first = base.month if base is not None else min(
                [month_key(line.booked_at, tz) for line in own], default=previous_month(month))
            wanted = months_after(first, month)
            drawn_by_month: dict[str, int] = defaultdict(int)
            for line in own:
                if not line.overage:
                    drawn_by_month[month_key(line.booked_at, tz)] += line.minutes
            states: list[SlaState | None] = [None] * len(wanted)
            if rules_of(contract.kind).monthly_allowance:
                states = list(sla_states(contract, None if base is None else base.sla, _entries(own), wanted, tz))
            drawn = 0 if base is None else base.drawn
            walked = first
            for text, state in zip(wanted, states):
                drawn += drawn_by_month.get(walked, 0)
                walked = text
                if contract.id in storable:
                    new_rows.append({"contract_id": contract.id, "month": text, "terms": keys[contract.id],
                                     "drawn_minutes": drawn, "computed_at": now,
                                     "state": {} if state is None else {
                                         "month": state.month, "first": state.first,
                                         "lots": [list(lot) for lot in state.lots], "pending": state.pending,
                                         "earliest": state.earliest}})
            found[contract.id] = Opening(month=month, drawn=drawn, sla=states[-1])
    if new_rows:
        _store(session, new_rows)
    return found


def _store(session: Reader, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the snapshots of ``rows``' contracts and months; nothing when the ledger changed since this
    transaction read it (SQLite) or another report stored them meanwhile: the figures computed stand."""
    spans: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        spans[row["contract_id"]].append(row["month"])
    try:
        with session.begin_nested():
            for contract_id, months in spans.items():
                session.execute(delete(balance_snapshots).where(
                    balance_snapshots.c.contract_id == contract_id, balance_snapshots.c.month >= min(months),
                    balance_snapshots.c.month <= max(months)))
            session.execute(insert(balance_snapshots), list(rows))
    except (OperationalError, IntegrityError) as exc:  # IntegrityError: another report stored them first
        log.info("balance snapshots not stored: %s", exc.orig)


def invalidate_snapshots(session: Reader, contract_id: str | None, booked_at: datetime, tz: ZoneInfo) -> None:
    """A row booked at ``booked_at``: the contract's snapshots of the months after its month are stale; delete
    them in the booking's transaction (after locking the contract's row on PostgreSQL, see ``_lock_contracts``)."""
    if contract_id is None:
        return
    if dialect_name(session) == "postgresql":
        # NO KEY UPDATE: waits for a report holding the row shared, not for the foreign-key checks of
        # transactions inserting tickets or ledger rows of the contract
        session.execute(select(contract_rows.c.id).where(contract_rows.c.id == contract_id).with_for_update(key_share=True))
    session.execute(delete(balance_snapshots).where(balance_snapshots.c.contract_id == contract_id,
                                                  balance_snapshots.c.month > month_key(booked_at, tz)))


def hours_report(
    session: Reader, customers: Sequence[Customer], month: str, tz: ZoneInfo, prefix: str,
    occasional_unit_minutes: int = DEFAULT_UNIT_MINUTES,
    progress: Callable[[int, int | None], None] | None = None,
    occasional_rate_cents: int | None = None,
    store: bool = False,
) -> HoursReport:
    """The month's statement; reads the month's ledger rows and each contract's balance as the month
    begins (``opening_balances``; ``store``: keep what had to be computed, for the caller to commit).

    ``progress(customers done, customers)`` for a display.
    """
    start, end = month_bounds(month, tz)
    known, _removed = merge_known_customers(session, customers, tz)
    openings = opening_balances(session, _with_past(known), month, tz, store)
    lines = load_lines(session, since=start, until=end)
    tickets = load_booked_tickets(session, prefix, start, end)
    return build_hours_report(month, tz, known, lines, tickets, occasional_unit_minutes, progress,
                              occasional_rate_cents, openings)


def contract_balances(
    session: Reader, customers: Sequence[Customer], now: datetime, tz: ZoneInfo, store: bool = False,
    allowance_only: bool = False,
) -> list[ContractBalance]:
    """Every contract's standing at ``now`` (``build_balances``) from this month's rows and the balances as
    it began (``store``: keep those that had to be computed, in the caller's transaction).

    ``allowance_only``: the monthly-allowance contracts' alone, from their own rows of the month, for a
    notification's header, which shows no other balance: all the month's rows were read for it, 0.09 s with
    7,800 bookings of which 3,300 were sla (bench/README, fourteenth session).
    """
    month = month_key(now, tz)
    start, _ = month_bounds(month, tz)
    known, removed = merge_known_customers(session, customers, tz)
    wanted: list[str] | None = None
    if allowance_only:
        known = tuple(kept for kept in (
            replace(customer, contracts=tuple(c for c in customer.contracts if rules_of(c.kind).monthly_allowance))
            for customer in known) if kept.contracts)
        wanted = [c.id for customer in known for c in customer.contracts]
    openings = opening_balances(session, _with_past(known), month, tz, store)
    lines = load_lines(session, since=start, until=now + _INSTANT,
                       contract_ids=wanted if wanted is None or len(wanted) <= 500 else None)
    return build_balances(known, lines, now, tz, removed, openings)


def sla_report(session: Reader, customers: Sequence[Customer], month: str, tz: ZoneInfo, prefix: str,
               now: datetime) -> SlaReport:
    start, end = month_bounds(month, tz)
    names = {c.id: c.name for c in customers}
    for row in session.execute(select(customer_rows.c.id, customer_rows.c.name)):
        names.setdefault(row.id, row.name)
    tickets = load_tickets(session, prefix, created_from=start, created_to=end)
    return build_sla_report(month, tz, list(tickets.values()), names, now)
