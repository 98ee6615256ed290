"""TicketDesk against a real database (SQLite and PostgreSQL): what it holds is written
with the transaction, once, whoever uses it (a batch syncs itself; a command line does not)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from maild.config import Config, load_config
from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk, by_language
from maild.storage.blobs import BlobStore
from maild.storage.db import open_database
from maild.storage.models import AttachmentRow, Event, MessageRow, OutboxRow, PackIndex, Ticket
from tests.helpers import maildir_source, write_config

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Config, sessionmaker[Session]]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    cfg = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=url, migrated=True))
    return cfg, open_database(cfg.database_url)


def _ticket(session: Session) -> Ticket:
    t = Ticket(subject="Faktura", status="open", requester="jan@acme.pl", requester_name="Jan", language="pl",
               contract_kind="occasional", verified=True, tier=2, priority="P3", created_at=NOW, updated_at=NOW,
               participants=["jan@acme.pl"])
    session.add(t)
    session.flush()
    return t


def _count(session: Session, table: type) -> int:
    return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_what_the_desk_holds_is_written_when_the_transaction_commits(
        world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    with sessions() as session, session.begin():
        ticket = _ticket(session)
        desk = TicketDesk(ctx, session)
        desk.set_status(ticket, "resolved", "ola@firma.pl", NOW, NOW)  # an event and the "resolved" mail
        ticket_id = ticket.id
    with sessions() as session:
        assert [e.kind for e in session.scalars(select(Event).where(Event.ticket_id == ticket_id))] == ["status"]
        [row] = session.scalars(select(OutboxRow)).all()
        assert row.kind == "resolved" and row.recipients == ["jan@acme.pl"] and row.ticket_id == ticket_id
        # ticket mail joins the ticket's thread
        [thread] = session.scalars(select(MessageRow).where(MessageRow.ticket_id == ticket_id)).all()
        assert thread.direction == "out" and thread.message_id == row.message_id


def test_a_dedupe_key_queues_once_across_desks_and_a_rollback_leaves_nothing(
        world: tuple[Config, sessionmaker[Session]]) -> None:
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    mail = dict(ticket=None, kind="alert", template="alert", language="pl", recipients=["szef@firma.pl"],
                context={"what": "x"}, now=NOW, dedupe_key="alert:1", rate_limited=False)
    with sessions() as session, session.begin():
        desk = TicketDesk(ctx, session)
        assert desk.queue_mail(**mail) is not None
        assert desk.queue_mail(**mail) is None  # the first is seen (held rows are written for the lookup)
    with sessions() as session, session.begin():
        assert TicketDesk(ctx, session).queue_mail(**mail) is None
    with pytest.raises(RuntimeError):
        with sessions() as session, session.begin():
            TicketDesk(ctx, session).queue_mail(**{**mail, "dedupe_key": "alert:2"})
            raise RuntimeError("the caller fails before commit")
    with sessions() as session:
        assert [r.dedupe_key for r in session.scalars(select(OutboxRow))] == ["alert:1"]
        assert session.scalars(select(OutboxRow)).one().rate_key is None


@dataclass(frozen=True)
class _File:
    filename: str
    data: bytes
    content_type: str = "text/plain"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _message(desk: TicketDesk, files: list[_File]) -> int:
    return desk.add_message(None, message_id=None, direction="in", role="customer", kind="mail",
                            from_addr="jan@acme.pl", from_name="Jan", to=["pomoc@firma.pl"], cc=[],
                            subject="Pliki", date=NOW, text_new="w załączniku", attachments=files)


def test_a_messages_attachments_are_looked_up_in_the_pack_index_with_one_query(
        world: tuple[Config, sessionmaker[Session]], tmp_path: Path) -> None:
    """Seven attachments, three packed by an earlier message and one twice: one SELECT of the pack
    index for all of them (it was one per file), and each content packed once."""
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    blobs = BlobStore(tmp_path / "desk-blobs", durable=False)
    files = [_File(f"f{i}.txt", f"plik {i}".encode()) for i in range(6)]
    with sessions() as session, session.begin():
        _message(TicketDesk(ctx, session, blobs), files[:3])
    statements: list[str] = []
    engine = sessions.kw["bind"]

    def seen(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with sessions() as session, session.begin():
            _message(TicketDesk(ctx, session, blobs), [*files, files[4]])
            lookups = [s for s in statements if "pack_index" in s and s.lstrip().upper().startswith("SELECT")]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(lookups) == 1, lookups
    with sessions() as session:
        assert _count(session, PackIndex) == 6
        assert _count(session, AttachmentRow) == 3 + 7
    blobs.close()


def test_recipients_grouped_by_language_once_each() -> None:
    from maild.config import Consultant

    people = [Consultant("a@x.pl", "A", language="pl"), Consultant("b@x.pl", "B", language="en"),
              Consultant("c@x.pl", "C", language="pl")]
    assert by_language(people) == [("en", ["b@x.pl"]), ("pl", ["a@x.pl", "c@x.pl"])]


def _nextval_counter(sessions: sessionmaker[Session]) -> list[str]:
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(sessions.kw["bind"], "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement) if "nextval" in statement else None)
    return seen


def _numbered(session: Session, number: int) -> None:
    session.add(Ticket(id=number, subject=f"t{number}", status="open", requester="jan@acme.pl", requester_name="",
                       language="pl", contract_kind="occasional", verified=True, tier=2, priority="P3",
                       created_at=NOW, updated_at=NOW, participants=[]))


def test_ticket_numbers_held_follow_each_other_and_the_sequence_goes_on_after_them(
        world: tuple[Config, sessionmaker[Session]]) -> None:
    from maild.desk.desk import TICKET_NUMBERS_LOCK_KEY
    from maild.storage.store import RowIds

    cfg, sessions = world
    with sessions() as session, session.begin():
        _ticket(session)  # 1, from the sequence (PostgreSQL) or max(id)
    nextvals = _nextval_counter(sessions)
    with sessions() as session, session.begin():
        ids = RowIds(session, "tickets")
        ids.hold(TICKET_NUMBERS_LOCK_KEY)
        numbers = [ids.take() for _ in range(5)]
        for number in numbers:
            _numbered(session, number)
        ids.settle()
    assert numbers == [2, 3, 4, 5, 6]
    # one round trip to the sequence for the five, not one each
    assert len(nextvals) == (1 if sessions.kw["bind"].dialect.name == "postgresql" else 0)
    with sessions() as session, session.begin():
        assert _ticket(session).id == 7  # whoever draws from the sequence next


def test_a_second_transaction_numbering_tickets_waits_for_the_first(pg_url: str, tmp_path: Path) -> None:
    import threading

    from maild.desk.desk import TICKET_NUMBERS_LOCK_KEY
    from maild.storage.store import RowIds

    sessions = open_database(pg_url)
    got: list[int] = []
    held = threading.Event()

    def second() -> None:
        with sessions() as session, session.begin():
            ids = RowIds(session, "tickets")
            ids.hold(TICKET_NUMBERS_LOCK_KEY)
            held.set()
            got.extend(ids.take() for _ in range(2))
            for number in got:
                _numbered(session, number)
            ids.settle()

    with sessions() as session, session.begin():
        ids = RowIds(session, "tickets")
        ids.hold(TICKET_NUMBERS_LOCK_KEY)
        first = [ids.take() for _ in range(3)]
        for number in first:
            _numbered(session, number)
        thread = threading.Thread(target=second)
        thread.start()
        assert not held.wait(0.5), "the second transaction took the lock while the first held it"
        ids.settle()
    thread.join(10)
    assert not thread.is_alive()
    assert first == [1, 2, 3] and got == [4, 5]
    with sessions() as session:
        assert sorted(session.scalars(select(Ticket.id))) == [1, 2, 3, 4, 5]


PACKAGE_CUSTOMERS = """\
[[customers]]
id = "nord"
name = "Nord AS"
addresses = ["kari@nord.no"]
  [[customers.contracts]]
  id = "nord-p4"
  kind = "prepaid"
  start = 2020-01-01
  hours = 4
  valid_until = 2099-12-31
  hourly_rate = 200

[[customers]]
id = "baltic"
name = "Baltic"
domains = ["baltic.pl"]
  [[customers.contracts]]
  id = "baltic-old"
  kind = "prepaid"
  start = 2020-01-01
  hours = 10
  valid_until = 2026-06-30
  hourly_rate = 200
  [[customers.contracts]]
  id = "baltic-new"
  kind = "prepaid"
  start = 2026-01-01
  hours = 15
  valid_until = 2099-12-31
  hourly_rate = 200

[[customers]]
id = "acme"
name = "Acme"
domains = ["acme.pl"]
  [[customers.contracts]]
  id = "acme-sla"
  kind = "sla"
  start = 2020-01-01
  reaction_hours = 24
  monthly_hours = 10
  hourly_rate = 200
"""


@pytest.mark.parametrize("asked_first", ["nord-p4", "baltic-new", "baltic-old"])
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_the_batch_balances_of_packages_are_each_customers_own(
        request: pytest.FixtureRequest, tmp_path: Path, asked_first: str, db: str) -> None:
    """A notification's balance of a package, filled in for every sender's packages at once, is
    what that package's own customer's balance says (``contract_minutes_left``)."""
    from datetime import timedelta

    from maild.desk.notifier import Notifier, contract_minutes_left
    from maild.rules.customers import load_customers
    from maild.storage import store
    from maild.storage.models import LedgerRow

    url = request.getfixturevalue("pg_migrated_url") if db == "postgresql" else ""
    cfg = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=url, migrated=True,
                                   customers=PACKAGE_CUSTOMERS))
    sessions = open_database(cfg.database_url)
    customers = load_customers(cfg.customers_file, cfg.packages)
    ctx = DeskContext.for_config(cfg, customers)
    booked = [("nord-p4", "nord", 90, False, -40), ("nord-p4", "nord", 30, False, -2), ("nord-p4", "nord", 45, True, -1),
              ("baltic-old", "baltic", 500, False, -200), ("baltic-new", "baltic", 120, False, -3),
              ("baltic-new", "baltic", 60, False, 1),  # after the moment asked about: not counted
              ("acme-sla", "acme", 30, False, -5)]
    with sessions() as session, session.begin():
        store.sync_customers(session, customers, NOW)
        session.flush()
        for contract_id, customer_id, minutes, overage, days in booked:
            session.add(LedgerRow(contract_id=contract_id, customer_id=customer_id, minutes=minutes, overage=overage,
                                  booked_at=NOW + timedelta(days=days), by="anna@firma.pl", scope=None, note=""))
    expected = {}
    with sessions() as session:
        for customer in customers:
            for contract in customer.contracts:
                expected[contract.id] = contract_minutes_left(session, customer, contract, NOW, ctx.calendar.tz)
    assert expected["nord-p4"] == 240 - 120 and expected["baltic-new"] == 900 - 120 and expected["baltic-old"] == 0
    notifier = Notifier(cfg, ctx.calendar.tz)
    with sessions() as session, session.begin():
        desk = TicketDesk(ctx, session)
        cache: dict[str, int | None] = {}
        order = [asked_first, *(c for c in ("nord-p4", "baltic-new", "baltic-old", "acme-sla") if c != asked_first)]
        for number, contract_id in enumerate(order, start=1):
            contract = ctx.contract(contract_id)
            assert contract is not None
            owner = next(c for c in customers if contract in c.contracts)
            ticket = Ticket(id=number, subject="x", status="new", requester="", requester_name="", language="pl",
                            customer_id=owner.id, contract_id=contract_id, contract_kind=contract.kind, verified=True,
                            tier=1, priority="P3", reasons=[], created_at=NOW, updated_at=NOW, participants=[])
            view = notifier.view(desk, ticket, NOW, cache, customers)
            assert view.minutes_left == expected[contract_id], contract_id


def _package_world(tmp_path: Path, url: str = "") -> tuple[Config, sessionmaker[Session], tuple[Any, ...]]:
    from maild.rules.customers import load_customers
    from maild.storage import store

    cfg = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=url,
                                   customers=PACKAGE_CUSTOMERS))
    sessions = open_database(cfg.database_url)
    customers = load_customers(cfg.customers_file, cfg.packages)
    with sessions() as session, session.begin():
        store.sync_customers(session, customers, NOW)
    return cfg, sessions, customers


_BOOKINGS = st.lists(st.tuples(st.sampled_from(["nord-p4", "baltic-old", "baltic-new"]), st.integers(1, 400),
                               st.booleans(), st.integers(-90 * 24 * 60, 25 * 24 * 60)), max_size=12)
_MOMENTS = st.lists(st.integers(-7 * 24 * 60, 25 * 24 * 60), min_size=1, max_size=4)


def test_the_month_s_draws_read_once_give_every_package_s_balance_at_every_moment(tmp_path: Path) -> None:
    """``MonthDraws`` (a batch's packages read at once) against ``prepaid_left_minutes`` (a read per
    question): the same minutes for each customer's packages and for all of them, at any moment of the
    month from the one it was read for on (an earlier one is not covered: read again), whatever was
    booked before, in or after it (overage rows draw on none)."""
    from datetime import timedelta

    from hypothesis import given, settings

    from maild.billing.hours import MonthDraws, prepaid_left_minutes
    from maild.rules.kinds import packages_of
    from maild.storage.models import LedgerRow

    cfg, sessions, customers = _package_world(tmp_path)
    tz = DeskContext.for_config(cfg, customers).calendar.tz
    owners = {p.id: c.id for c in customers for p in packages_of(c)}
    sets = [packages_of(c) for c in customers if packages_of(c)]
    every = [p for ps in sets for p in ps]

    @settings(max_examples=60, deadline=None)
    @given(_BOOKINGS, _MOMENTS)
    def check(bookings: list[tuple[str, int, bool, int]], moments: list[int]) -> None:
        with sessions() as session:
            session.begin()
            for contract_id, minutes, overage, offset in bookings:
                session.add(LedgerRow(contract_id=contract_id, customer_id=owners[contract_id], minutes=minutes,
                                      overage=overage, booked_at=NOW + timedelta(minutes=offset),
                                      by="anna@firma.pl", scope=None, note=""))
            session.flush()
            draws = MonthDraws.load(session, every, NOW, tz, store=True)
            for offset in moments:
                at = NOW + timedelta(minutes=offset)
                if not draws.covers(every, at, tz):
                    if at.astimezone(tz).month != NOW.astimezone(tz).month:
                        continue
                    # a moment before the one it was read for: the desk reads again, for that moment
                    assert at < draws.since
                    draws = MonthDraws.load(session, every, at, tz, store=True)
                    assert draws.covers(every, at, tz)
                for packages in (*sets, every):
                    assert draws.left_minutes(packages, at, tz) == prepaid_left_minutes(session, packages, at, tz)
            session.rollback()

    check()
