"""Hour ledger arithmetic: balances, carry-over and billing from immutable entries (pure).

Entries are never edited; a correction is a new entry with the opposite sign
(``reverses`` set). Every figure here is recomputed from the entries, so a
statement can always be reproduced and audited minute by minute. Time is whole
minutes, money whole grosze; nothing is ever a float.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from maild.errors import MaildError
from maild.rules.customers import Contract

DEFAULT_LOW_BALANCE_MINUTES = 60
_UTC = timezone.utc


@dataclass(frozen=True)
class LedgerEntry:
    """Minutes booked against a contract; signed, so a reversal is just another entry."""

    id: int
    contract_id: str
    ticket_id: int | None
    minutes: int
    booked_at: datetime  # aware, UTC
    by: str
    scope: str | None
    reverses: int | None = None


@dataclass(frozen=True)
class SlaMonth:
    """One calendar month of an sla contract, in minutes.

    Per month, exactly: ``carry_in + allowance - used + overage == carry_out + expired``,
    with ``overage >= 0``; ``used`` is the net of the month's entries and may be
    negative after a correction, which credits the balance.
    """

    month: str  # YYYY-MM in the business time zone
    allowance: int
    carry_in: int
    used: int
    carry_out: int
    overage: int
    expired: int


@dataclass(frozen=True)
class PackageBalance:
    contract_id: str
    size: int
    used: int
    left: int  # unused minutes; still reported for an expired package, which can no longer draw
    valid_until: date
    expired: bool


@dataclass(frozen=True)
class Allocation:
    """Part of a booking: from one package, or overage when ``contract_id`` is None."""

    contract_id: str | None
    minutes: int
    overage: bool


class LedgerError(MaildError, ValueError):
    """A ledger computation was asked something that has no meaningful answer."""


def month_key(moment: datetime, tz: ZoneInfo) -> str:
    """The business-time-zone month an instant belongs to, e.g. '2026-01'.

    Allowances are per local calendar month: a minute booked at 00:30 on
    1 April in Warsaw is April's although UTC still says 31 March.
    """
    if moment.tzinfo is None:
        raise LedgerError(f"naive datetime {moment.isoformat()}: ledger times must be aware (UTC)")
    local = moment.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def _month_index(key: str) -> int:
    try:
        year_text, month_text = key.split("-")
        year, month = int(year_text), int(month_text)
    except ValueError:
        raise LedgerError(f"month {key!r} is not YYYY-MM") from None
    if not 1 <= month <= 12:
        raise LedgerError(f"month {key!r} is not YYYY-MM")
    return year * 12 + month - 1


def _month_text(index: int) -> str:
    year, month0 = divmod(index, 12)
    return f"{year:04d}-{month0 + 1:02d}"


def months_after(first: str, last: str) -> list[str]:
    """The months after ``first`` up to ``last`` inclusive, e.g. ('2026-11', '2027-01') -> ['2026-12', '2027-01']."""
    return [_month_text(index) for index in range(_month_index(first) + 1, _month_index(last) + 1)]


def previous_month(month: str) -> str:
    return _month_text(_month_index(month) - 1)


def _effective_month(entries: Sequence[LedgerEntry], tz: ZoneInfo) -> dict[int, int]:
    """Entry id -> month index it counts in.

    A reversal counts in the month of the entry it reverses: it says the booking
    was a mistake, so that month (and every month after it) must read as if the
    booking had never been made. A reversal whose original is not among the
    entries counts where it was booked.
    """
    booked = {entry.id: _month_index(month_key(entry.booked_at, tz)) for entry in entries}
    effective = dict(booked)
    for entry in entries:
        if entry.reverses is not None and entry.reverses in booked:
            effective[entry.id] = booked[entry.reverses]
    return effective


def _start(contract: Contract, entries: Sequence[LedgerEntry], tz: ZoneInfo) -> tuple[int, int]:
    """(the first month the contract's balance runs, minutes brought into it): see ``sla_months``."""
    first = contract.start.year * 12 + contract.start.month - 1
    brought_in = 0
    if contract.opening_month is not None:
        # maild took the contract over in opening_month: nothing before it is invented,
        # only the carry-over the customers file states is brought in
        if _month_index(contract.opening_month) > first:
            first = _month_index(contract.opening_month)
            brought_in = contract.opening_carry_over_minutes or 0
    elif contract.first_seen_month is not None:
        # no opening stated: the months start when maild first saw the contract (or its
        # first booking, should the ledger know it earlier), not at a start years back
        seen = min([_month_index(contract.first_seen_month), *(_month_index(month_key(e.booked_at, tz))
                                                                for e in entries if e.contract_id == contract.id)])
        first = max(first, seen)
    return first, brought_in


def _one_month(contract: Contract, lots: deque[list[int]], month: int, used: int) -> SlaMonth:
    """Month ``month`` of an sla contract: its allowance in, ``used`` out, old lots expired (``lots`` changes)."""
    end = None if contract.end is None else contract.end.year * 12 + contract.end.month - 1
    carry_in = sum(lot[1] for lot in lots)
    running = end is None or month <= end
    allowance = (contract.monthly_minutes or 0) if running else 0
    if allowance:
        lots.append([month, allowance])
    overage = _consume(lots, used) if used >= 0 else 0
    if used < 0:
        lots.append([month, -used])
    expired = 0
    if end is not None and month >= end:
        expire_through: int | None = month
    elif contract.rollover_months is not None:
        expire_through = month - contract.rollover_months
    else:
        expire_through = None
    while lots and expire_through is not None and lots[0][0] <= expire_through:
        expired += lots.popleft()[1]
    return SlaMonth(month=_month_text(month), allowance=allowance, carry_in=carry_in, used=used,
                    carry_out=sum(lot[1] for lot in lots), overage=overage, expired=expired)


def sla_months(
    contract: Contract, entries: Sequence[LedgerEntry], until_month: str, tz: ZoneInfo
) -> list[SlaMonth]:
    """Month-by-month balance of an sla contract from its start month to ``until_month``.

    Unused minutes are kept as one lot per month of origin and used oldest
    first, so ``rollover_months = N`` can expire exactly the minutes that are
    more than N months old (with N = 0 nothing carries over). The first month
    gets the full allowance, whatever day the contract starts; with ``opening_month``
    (a contract maild took over) the months start there, with the stated carry-over. Entries booked
    before the start month count in the start month, so none is dropped. After
    the contract's end month the allowance is 0, whatever was still carried
    expires at the end of the end month, and later bookings are overage.
    """
    own = [entry for entry in entries if entry.contract_id == contract.id]
    first, brought_in = _start(contract, own, tz)
    last = _month_index(until_month)
    effective = _effective_month(own, tz)
    used_by_month: dict[int, int] = {}
    for entry in own:
        month = max(effective[entry.id], first)
        used_by_month[month] = used_by_month.get(month, 0) + entry.minutes

    lots: deque[list[int]] = deque()  # [origin month index, minutes], oldest first
    if brought_in:
        lots.append([first - 1, brought_in])
    return [_one_month(contract, lots, month, used_by_month.get(month, 0)) for month in range(first, last + 1)]


@dataclass(frozen=True)
class SlaState:
    """All an sla contract's later months need from the months before ``month`` (a balance snapshot).

    Started (``first`` set, before ``month``): the carried minutes as lots by
    month of origin, oldest first, as they stand when ``month`` begins. Not
    started yet (``first`` None): ``pending``, the minutes booked before
    ``month``, which will count in the contract's first month, and ``earliest``,
    the month of the first of them (None: none), which can start the months
    earlier (``first_seen_month``), even at 0 net minutes. Entries count in
    the month they were booked (a statement's rule; reversal links are not
    followed), so the state is a function of the terms and the entries booked
    before ``month`` only.
    """

    month: str
    first: str | None
    lots: tuple[tuple[int, int], ...] = ()
    pending: int = 0
    earliest: int | None = None  # month index


def sla_states(contract: Contract, base: SlaState | None, entries: Sequence[LedgerEntry], months: Sequence[str],
               tz: ZoneInfo) -> list[SlaState]:
    """The state at the start of each of ``months`` (ascending, each after ``base.month``), from ``base``
    (None: from nothing) and the contract's entries booked from ``base.month`` on (every one when None).

    ``sla_month`` continues from any of them exactly as ``sla_months`` over every entry would.
    """
    begin = None if base is None else _month_index(base.month)
    own = [(_month_index(month_key(e.booked_at, tz)), e.minutes) for e in entries if e.contract_id == contract.id]
    if begin is not None:
        own = [(m, minutes) for m, minutes in own if m >= begin]
    lots: deque[list[int]] = deque()
    if base is not None and base.first is not None:
        first = _month_index(base.first)
        walked = begin if begin is not None else first
        lots.extend([origin, minutes] for origin, minutes in base.lots)
    else:
        if base is not None and base.earliest is not None:
            own.append((base.earliest, base.pending))
        first, brought_in = _start(contract, _as_entries(contract, own), tz)
        walked = first
        if brought_in:
            lots.append([first - 1, brought_in])
    used_by_month: dict[int, int] = {}
    for month, minutes in own:
        used_by_month[max(month, first)] = used_by_month.get(max(month, first), 0) + minutes
    out: list[SlaState] = []
    for text in months:
        wanted = _month_index(text)
        if wanted <= first:
            before = [(m, minutes) for m, minutes in own if m < wanted]
            out.append(SlaState(month=text, first=None, pending=sum(minutes for _, minutes in before),
                                earliest=min((m for m, _ in before), default=None)))
            continue
        while walked < wanted:
            _one_month(contract, lots, walked, used_by_month.get(walked, 0))
            walked += 1
        out.append(SlaState(month=text, first=_month_text(first),
                            lots=tuple((origin, minutes) for origin, minutes in lots)))
    return out


def _as_entries(contract: Contract, months: Sequence[tuple[int, int]]) -> list[LedgerEntry]:
    """(month index, minutes) as entries dated mid-month, noon UTC: that local month in every time zone."""
    out = []
    for n, (month, minutes) in enumerate(months, start=1):
        year, month0 = divmod(month, 12)
        out.append(LedgerEntry(id=-n, contract_id=contract.id, ticket_id=None, minutes=minutes,
                               booked_at=datetime(year, month0 + 1, 15, 12, tzinfo=_UTC), by="", scope=None))
    return out


def sla_month(contract: Contract, state: SlaState, entries: Sequence[LedgerEntry], tz: ZoneInfo) -> SlaMonth | None:
    """The sla contract's ``state.month``, from the state at its start and the entries booked in it
    (others are ignored); None when the contract does not run yet (as ``sla_months`` has no such month)."""
    month = _month_index(state.month)
    own = [e.minutes for e in entries
           if e.contract_id == contract.id and _month_index(month_key(e.booked_at, tz)) == month]
    used = sum(own)
    if state.first is None:
        # an entry, even of 0 net minutes, can start a contract's months earlier (first_seen): keep it one
        history = [(state.earliest, state.pending)] if state.earliest is not None else []
        months = sla_months(contract, _as_entries(contract, [*history, *([(month, used)] if own else [])]),
                            state.month, tz)
        return months[-1] if months and months[-1].month == state.month else None
    lots: deque[list[int]] = deque([origin, minutes] for origin, minutes in state.lots)
    return _one_month(contract, lots, month, used)


def _consume(lots: deque[list[int]], minutes: int) -> int:
    """Take ``minutes`` from the oldest lots first; return what no lot covered."""
    while minutes and lots:
        take = min(minutes, lots[0][1])
        lots[0][1] -= take
        minutes -= take
        if lots[0][1] == 0:
            lots.popleft()
    return minutes


def _package_day(contract: Contract) -> date:
    if contract.valid_until is not None:
        return contract.valid_until if contract.end is None else min(contract.valid_until, contract.end)
    return contract.end or date.max


def _used_by_package(
    packages: Sequence[Contract], entries: Iterable[LedgerEntry], at: datetime
) -> dict[str, int]:
    used = {package.id: 0 for package in packages}
    for entry in entries:
        if entry.contract_id in used and entry.booked_at <= at:
            used[entry.contract_id] += entry.minutes
    return used


def _local_day(at: datetime, tz: ZoneInfo) -> date:
    if at.tzinfo is None:
        raise LedgerError(f"naive datetime {at.isoformat()}: ledger times must be aware (UTC)")
    return at.astimezone(tz).date()


def prepaid_balances(
    packages: Sequence[Contract], entries: Sequence[LedgerEntry], at: datetime, tz: ZoneInfo
) -> list[PackageBalance]:
    """Each package's balance as of ``at`` (entries booked later are not counted)."""
    day = _local_day(at, tz)
    used = _used_by_package(packages, entries, at)
    balances = []
    for package in packages:
        size = package.package_minutes or 0
        last_day = _package_day(package)
        spent = used[package.id] + (package.used_before_minutes or 0)  # hours used before maild knew it
        balances.append(
            PackageBalance(
                contract_id=package.id,
                size=size,
                used=spent,
                left=max(size - spent, 0),
                valid_until=last_day,
                expired=day > last_day,
            )
        )
    return balances


def allocate_prepaid(
    packages: Sequence[Contract],
    entries: Sequence[LedgerEntry],
    minutes: int,
    at: datetime,
    tz: ZoneInfo,
) -> list[Allocation]:
    """Split new minutes across packages: expiring first, then overage.

    Drawing from the package that expires first loses the customer the fewest
    paid hours. A booking that crosses zero is split, so the package is used to
    the last minute and only the rest is billed at the hourly rate.
    """
    if minutes < 0:
        raise LedgerError(f"cannot allocate {minutes} minutes; book a reversal to take time back")
    day = _local_day(at, tz)
    balances = {b.contract_id: b for b in prepaid_balances(packages, entries, at, tz)}
    usable = sorted(
        (p for p in packages if p.start <= day and not balances[p.id].expired and balances[p.id].left > 0),
        key=lambda p: (_package_day(p), p.start, p.id),
    )
    allocations: list[Allocation] = []
    rest = minutes
    for package in usable:
        if rest == 0:
            break
        take = min(rest, balances[package.id].left)
        allocations.append(Allocation(contract_id=package.id, minutes=take, overage=False))
        rest -= take
    if rest:
        allocations.append(Allocation(contract_id=None, minutes=rest, overage=True))
    return allocations


def occasional_billable(minutes: int, unit_minutes: int = 15) -> int:
    """Minutes billed for occasional work: rounded up to a started unit.

    Apply it to the total of one ticket in one calendar month, not to each
    entry: three five-minute notes on the same ticket are one started quarter
    hour, not three. A month boundary starts a new unit because each month is
    invoiced on its own.
    """
    if unit_minutes <= 0:
        raise LedgerError(f"billing unit must be positive, got {unit_minutes}")
    if minutes < 0:
        raise LedgerError(f"cannot bill {minutes} minutes")
    return -(-minutes // unit_minutes) * unit_minutes


def amount_cents(minutes: int, hourly_rate_cents: int) -> int:
    """Price of ``minutes`` at an hourly rate, exact, rounded half up to the grosz.

    Negative minutes (a credit) round symmetrically, so a credit note always
    cancels the invoice line it corrects.
    """
    if minutes < 0:
        return -amount_cents(-minutes, hourly_rate_cents)
    return (minutes * hourly_rate_cents + 30) // 60


def vat_cents(net_cents: int, percent: int) -> int:
    """VAT on a net amount, rounded half up to the grosz (symmetric for a credit)."""
    if net_cents < 0:
        return -vat_cents(-net_cents, percent)
    return (net_cents * percent + 50) // 100


def crossed_low_balance(
    before_left: int, after_left: int, threshold_minutes: int = DEFAULT_LOW_BALANCE_MINUTES
) -> bool:
    """True for the one booking that takes the balance from above the threshold to at or below it.

    Asking per booking rather than "is the balance low" is what makes the
    warning go out once instead of after every later booking.
    """
    return before_left > threshold_minutes >= after_left

