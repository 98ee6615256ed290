"""Booking consultants' time: ledger rows in, balances out.

The arithmetic is ``ledger`` (pure); this module loads the rows it needs,
writes the new ones and says when the once-only low-balance warning is due
(the desk queues it), all in the caller's transaction so a ``#time`` line and
its ticket change commit together. A booking deletes its contract's balance
snapshots of later months in that transaction too (``reports.invalidate_snapshots``).

On PostgreSQL a booking first locks all its customer's contract rows in one
statement, in id order (``lock_booking_contracts``): bookings of one customer
take turns, so two never draw the same unused minutes, and no two transactions
can hold parts of one customer's rows while each waits for the rest (a batch
books many ``#time`` lines in one transaction, ``maild time add`` one).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from maild.rules.customers import Contract, Customer
from maild.rules.kinds import packages_of, rules_of
from maild.billing.ledger import LedgerEntry, allocate_prepaid, crossed_low_balance, month_key, prepaid_balances
from maild.storage.models import ContractRow, LedgerRow, Ticket
from maild.billing.reports import contract_from_row, invalidate_snapshots, month_bounds, opening_balances


def package_draws(session: Session, packages: Sequence[Contract], at: datetime, tz: ZoneInfo,
                  store: bool = False) -> list[LedgerEntry]:
    """What each package has given up to ``at``: one entry per package.

    The draws before ``at``'s month come from the package's balance snapshot
    (``reports.opening_balances``; ``store``: keep one that had to be computed),
    the month's own by the database's sum, so a batch's balance lookup reads a
    month of rows however long the history. Overage rows draw on no package.
    """
    if not packages:
        return []
    month = month_key(at, tz)
    start, _ = month_bounds(month, tz)
    openings = opening_balances(session, packages, month, tz, store)
    ids = sorted({p.id for p in packages})
    in_month: dict[str | None, int] = {
        contract_id: int(total or 0) for contract_id, total in session.execute(
            select(LedgerRow.contract_id, func.sum(LedgerRow.minutes))
            .where(LedgerRow.contract_id.in_(ids), LedgerRow.overage.is_(False), LedgerRow.booked_at >= start,
                   LedgerRow.booked_at <= at)
            .group_by(LedgerRow.contract_id))}
    return [
        LedgerEntry(id=-n, contract_id=contract_id, ticket_id=None, booked_at=at, by="", scope=None,
                    minutes=openings[contract_id].drawn + in_month.get(contract_id, 0))
        for n, contract_id in enumerate(ids, start=1)
    ]


@dataclass(frozen=True)
class MonthDraws:
    """Packages' draws in one month, read once (``load``): what ``prepaid_left_minutes`` gives at any
    moment of that month from the moment it was read on (``since``), for any of those packages,
    without asking the database again.

    An ingest batch asks for each sender's packages at its first mail's arrival, a moment of its
    own; this reads the snapshots and the month's draws of all the batch's packages in three queries
    instead of two per customer. The rows booked before ``since`` are summed by the database (a
    batch's mail arrives in order, after nearly all of the month's bookings: a row per package, not
    the month's every booking, 3,244 rows a batch in bench/growth.py's month); an earlier moment is
    not covered and the desk reads again. A booking changes the rows: load again.
    """

    month: str
    since: datetime  # the moment it was read for: covers this and later moments of the month
    openings: dict[str, int]  # per package: drawn before the month and in it before ``since``
    booked: dict[str, list[tuple[datetime, int]]]  # per package: the month's rows from ``since`` on

    @classmethod
    def load(cls, session: Session, packages: Sequence[Contract], at: datetime, tz: ZoneInfo,
             store: bool = False) -> MonthDraws:
        """The draws of ``packages`` in ``at``'s month, from ``at`` on (``store`` as in ``package_draws``)."""
        month = month_key(at, tz)
        start, _ = month_bounds(month, tz)
        openings = opening_balances(session, packages, month, tz, store)
        ids = sorted({p.id for p in packages})
        drawn = {contract_id: openings[contract_id].drawn for contract_id in ids}
        booked: dict[str, list[tuple[datetime, int]]] = {contract_id: [] for contract_id in ids}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for contract_id, minutes in session.execute(
                    select(LedgerRow.contract_id, func.sum(LedgerRow.minutes))
                    .where(LedgerRow.contract_id.in_(chunk), LedgerRow.overage.is_(False),
                           LedgerRow.booked_at >= start, LedgerRow.booked_at < at)
                    .group_by(LedgerRow.contract_id)):
                drawn[str(contract_id)] += int(minutes or 0)
            for contract_id, booked_at, minutes in session.execute(
                    select(LedgerRow.contract_id, LedgerRow.booked_at, LedgerRow.minutes)
                    .where(LedgerRow.contract_id.in_(chunk), LedgerRow.overage.is_(False),
                           LedgerRow.booked_at >= max(start, at))):
                booked[str(contract_id)].append((booked_at, int(minutes)))
        return cls(month, at, drawn, booked)

    def covers(self, packages: Sequence[Contract], at: datetime, tz: ZoneInfo) -> bool:
        return (month_key(at, tz) == self.month and at >= self.since
                and all(p.id in self.openings for p in packages))

    def left_minutes(self, packages: Sequence[Contract], at: datetime, tz: ZoneInfo) -> dict[str, int]:
        """``prepaid_left_minutes(session, packages, at, tz)`` for packages and a moment ``covers`` holds."""
        ids = sorted({p.id for p in packages})
        entries = [
            LedgerEntry(id=-n, contract_id=contract_id, ticket_id=None, booked_at=at, by="", scope=None,
                        minutes=self.openings[contract_id] + sum(
                            minutes for booked_at, minutes in self.booked[contract_id] if booked_at <= at))
            for n, contract_id in enumerate(ids, start=1)
        ]
        return {b.contract_id: (0 if b.expired else b.left) for b in prepaid_balances(packages, entries, at, tz)}


def prepaid_left_minutes(session: Session, packages: Sequence[Contract], at: datetime, tz: ZoneInfo,
                         store: bool = False) -> dict[str, int]:
    """Minutes left per package at ``at``; expired packages count as 0."""
    if not packages:
        return {}
    entries = package_draws(session, packages, at, tz, store)
    return {b.contract_id: (0 if b.expired else b.left) for b in prepaid_balances(packages, entries, at, tz)}


def find_contract(session: Session, contract_id: str | None, from_file: Contract | None,
                  tz: ZoneInfo) -> Contract | None:
    """The contract's terms from the customers file (``from_file``), else as last imported into the database.

    A contract removed from the file is ended, not forgotten: its tickets still
    book against it (and its SLA clock still runs) on the terms it was sold with.
    """
    if contract_id is None:
        return None
    if from_file is not None:
        return from_file
    row = session.get(ContractRow, contract_id)
    return None if row is None else contract_from_row(row, tz)


@dataclass(frozen=True)
class LowBalance:
    """A booking took the customer's prepaid packages below the warning line (once per crossing)."""

    customer: Customer
    recipient: str
    package_ids: tuple[str, ...]
    left_minutes: int
    threshold_minutes: int


@dataclass
class Booking:
    rows: list[LedgerRow]
    low_balance: LowBalance | None = None


def lock_booking_contracts(session: Session, customer_id: str | None, contract_ids: Collection[str]) -> None:
    """PostgreSQL: lock every contract row of the customer (and ``contract_ids``) until commit, in id order.

    Taken before the balances are read: a concurrent booking's rows are
    committed and counted, or that booking waits. Always the customer's whole
    set, whatever this booking will draw from: a transaction that booked for the
    customer before holds all of it, one that did not holds none of it, so a
    transaction that waits here holds nothing another one waiting here wants
    (``SELECT ... ORDER BY id FOR NO KEY UPDATE`` locks the rows in sorted order).
    NO KEY UPDATE, as ``invalidate_snapshots``: the foreign-key checks of ticket
    and ledger inserts do not wait. SQLite runs one writer at a time.
    """
    if session.get_bind().dialect.name != "postgresql" or (customer_id is None and not contract_ids):
        return
    owned = ContractRow.customer_id == customer_id if customer_id is not None else None
    listed = ContractRow.id.in_(sorted(contract_ids)) if contract_ids else None
    where = or_(*(c for c in (owned, listed) if c is not None))
    session.execute(select(ContractRow.id).where(where).order_by(ContractRow.id).with_for_update(key_share=True)).all()


def book_time(session: Session, ticket: Ticket, contract: Contract | None, customer: Customer | None, minutes: int,
              by: str, scope: str | None, note: str, source_message_id: str | None, at: datetime, tz: ZoneInfo,
              low_balance_minutes: int) -> Booking:
    """Book ``minutes`` on the ticket's contract; prepaid time is drawn expiring-first, the rest is overage.

    The ticket's ``contract_id`` is the one booked against, also when that
    contract has since left the customers file (``contract`` then has the terms
    from the database), so no minute loses the contract it was worked under.
    The rows are flushed (they have their ids); the warning, if any, is the
    caller's to send.
    """
    booking = Booking(rows=[])
    packages = packages_of(customer) if contract is not None and rules_of(contract.kind).packages else []
    lock_booking_contracts(session, ticket.customer_id, {
        *(p.id for p in packages), *(c for c in (ticket.contract_id, contract.id if contract else None) if c is not None)})

    def add(contract_id: str | None, part: int, overage: bool) -> None:
        row = LedgerRow(contract_id=contract_id, customer_id=ticket.customer_id, ticket_id=ticket.id,
                        minutes=part, overage=overage, booked_at=at, by=by, scope=scope or ticket.scope,
                        note=note[:500], source_message_id=source_message_id)
        session.add(row)
        booking.rows.append(row)

    if contract is not None and rules_of(contract.kind).packages:
        if all(p.id != contract.id for p in packages):
            packages.append(contract)
        entries = package_draws(session, packages, at, tz)
        before = sum(b.left for b in prepaid_balances(packages, entries, at, tz) if not b.expired)
        for allocation in allocate_prepaid(packages, entries, minutes, at, tz):
            add(allocation.contract_id or contract.id, allocation.minutes, allocation.overage)
        after = before - sum(r.minutes for r in booking.rows if not r.overage)
        recipient = (customer.billing_address if customer else None) or ticket.requester
        if customer is not None and recipient and crossed_low_balance(before, after, low_balance_minutes):
            booking.low_balance = LowBalance(customer=customer, recipient=recipient,
                                             package_ids=tuple(p.id for p in packages), left_minutes=after,
                                             threshold_minutes=low_balance_minutes)
    else:
        add(ticket.contract_id, minutes, False)
    session.flush()
    for contract_id in sorted({row.contract_id for row in booking.rows if row.contract_id is not None}):
        invalidate_snapshots(session, contract_id, at, tz)
    return booking
