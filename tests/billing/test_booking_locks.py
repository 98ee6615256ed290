"""Concurrent bookings on one customer's packages, on a real PostgreSQL.

A batch books several ``#time`` lines in one transaction; ``maild time add``
books one. A booking that draws from two packages used to lock the rows it
drew from in id order only after it had read the balances, so a batch holding
the package that expires first (booked earlier in the batch) and a command
holding the other one waited on each other until PostgreSQL aborted one
(DeadlockDetected), and both could draw the same unused minutes. Now every
booking locks all its customer's contract rows in one id-ordered statement
before it reads anything (``billing.hours.lock_booking_contracts``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from maild.billing.hours import book_time
from maild.rules.customers import Contract, Customer
from maild.storage import store
from maild.storage.db import open_database
from maild.storage.models import LedgerRow, Ticket

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")
AT = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
# p-b expires first, so it is drawn first although p-a sorts (and is locked) first
LATER = Contract(id="p-a", kind="prepaid", start=date(2026, 1, 1), package_minutes=600, valid_until=date(2027, 12, 31))
SOONER = Contract(id="p-b", kind="prepaid", start=date(2026, 1, 1), package_minutes=60, valid_until=date(2026, 12, 31))
BETA = Customer(id="beta", name="Beta", contracts=(LATER, SOONER))


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    made = open_database(pg_url)
    with made() as session, session.begin():
        store.sync_customers(session, (BETA,), AT - timedelta(days=30))
        session.add_all([Ticket(id=n, subject=f"t{n}", customer_id="beta", contract_id="p-b", contract_kind="prepaid",
                                created_at=AT, updated_at=AT) for n in (1, 2)])
    yield made
    made.kw["bind"].dispose()


def _book(session: Session, ticket_id: int, minutes: int) -> None:
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None
    book_time(session, ticket, SOONER, BETA, minutes, "anna@firma.pl", None, "", None, AT, WARSAW, 0)


def _drawn(sessions: sessionmaker[Session]) -> dict[tuple[str | None, bool], int]:
    with sessions() as session:
        return {(contract_id, overage): int(total) for contract_id, overage, total in session.execute(
            select(LedgerRow.contract_id, LedgerRow.overage, func.sum(LedgerRow.minutes))
            .group_by(LedgerRow.contract_id, LedgerRow.overage))}


def _run(*targets: Callable[[], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def _wait_for_a_lock_wait(sessions: sessionmaker[Session]) -> None:
    deadline = time.monotonic() + 10
    with sessions() as watcher:
        while watcher.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")) == 0:
            assert time.monotonic() < deadline, "the second booking never waited for the first one's lock"
            time.sleep(0.01)
            watcher.rollback()


def test_a_batch_and_a_command_booking_the_same_two_packages_in_opposite_orders_do_not_deadlock(
        sessions: sessionmaker[Session]) -> None:
    """The batch's first booking draws from p-b only; then ``time add`` needs p-a and p-b; then the
    batch's second booking needs both too. The old code held p-b in the batch and p-a in the
    command: PostgreSQL aborted one of them after deadlock_timeout (1 s)."""
    first_booked = threading.Event()

    def batch() -> None:
        with sessions() as session, session.begin():
            _book(session, 1, 30)
            first_booked.set()
            _wait_for_a_lock_wait(sessions)
            _book(session, 1, 60)

    def command() -> None:
        assert first_booked.wait(10)
        with sessions() as session, session.begin():
            _book(session, 2, 120)

    assert _run(batch, command) == []
    # one after the other, expiring first: p-b gives its 60 minutes once, the rest comes from p-a
    assert _drawn(sessions) == {("p-b", False): 60, ("p-a", False): 150}


def test_many_rounds_of_concurrent_bookings_draw_each_minute_once(sessions: sessionmaker[Session]) -> None:
    """Two writers race for 20 rounds each (two bookings per transaction against one); no
    transaction is aborted and the packages give exactly what they hold, the rest is overage."""

    def batches() -> None:
        for _ in range(20):
            with sessions() as session, session.begin():
                _book(session, 1, 10)
                _book(session, 1, 10)

    def commands() -> None:
        for _ in range(20):
            with sessions() as session, session.begin():
                _book(session, 2, 25)

    assert _run(batches, commands) == []
    assert _drawn(sessions) == {("p-b", False): 60, ("p-a", False): 600, ("p-b", True): 240}
