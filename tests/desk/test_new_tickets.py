"""The tickets a desk opens are inserted at its ``sync`` by one statement (``store.insert_new_tickets``), not
through the ORM's unit of work: the rows stored and what the session holds afterwards must be what the
ORM's flush leaves, on SQLite and PostgreSQL, and every later step in the same session (a change, an
escalation, a booking, a savepoint rolled back) must go as it went."""
from __future__ import annotations

import mailbox
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from maild.config import Config, load_config
from maild.desk.context import DeskContext
from maild.desk.desk import TicketDesk
from maild.rules.contracts import Resolution
from maild.rules.prioritise import Priority
from maild.storage.db import open_database
from maild.storage.models import Escalation, Event, Intake, LedgerRow, Ticket
from maild.storage.tables import tickets
from tests.helpers import maildir_source, make_mail, write_config

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Config, sessionmaker[Session]]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    cfg = load_config(write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25, database_url=url,
                                   migrated=True))
    return cfg, open_database(cfg.database_url)


@pytest.fixture
def unit_of_work_inserts() -> Iterator[list[int]]:
    """The ticket numbers the ORM's unit of work inserted (its ``before_insert`` event)."""
    seen: list[int] = []

    def record(mapper: Any, connection: Any, target: Ticket) -> None:
        seen.append(target.id)

    event.listen(Ticket, "before_insert", record)
    yield seen
    event.remove(Ticket, "before_insert", record)


def _open(desk: TicketDesk, subject: str, linked_to: int | None = None, reasons: list[str] | None = None) -> Ticket:
    return desk.open_ticket(
        subject=subject, requester="jan@acme.pl", requester_name="Jan", language="pl",
        resolution=Resolution(None, None, "occasional", False, "unknown sender"),
        prio=Priority(4, "P3", None, ()), reasons=reasons if reasons is not None else ["unknown sender"],
        created_at=NOW - timedelta(minutes=5), now=NOW, linked_to=linked_to, participants=["jan@acme.pl", "ola@acme.pl"],
        actor="jan@acme.pl")


def _state(session: Session, ticket: Ticket) -> dict[str, Any]:
    """What the session knows of a ticket: its place, loaded values, pending changes, expired names."""
    state = inspect(ticket)
    values = {k: v for k, v in state.dict.items() if k != "id" and not k.startswith("_sa_")}
    if values.get("linked_to") is not None:  # numbers differ between the two sessions; the link's distance not
        values["linked_to"] -= ticket.id
    return {"persistent": state.persistent,
            "in_identity_map": state.key is not None and session.identity_map.get(state.key) is ticket,
            "values": values, "committed": dict(state.committed_state),
            "expired": set(state.expired_attributes), "modified": state.modified}


def _stored(session: Session, ids: list[int]) -> list[tuple[Any, ...]]:
    """The rows as the database holds them (text of every column but the number)."""
    names = [c.name for c in tickets.c if c.name != "id"]
    casts = ", ".join(f"CAST({c} - id AS TEXT)" if c == "linked_to" else f"CAST({c} AS TEXT)" for c in names)
    return [tuple(r) for r in session.execute(text(f"SELECT {casts} FROM tickets WHERE id IN ({', '.join(map(str, ids))}) "
                                                  "ORDER BY id"))]


def _open_three(desk: TicketDesk) -> list[Ticket]:
    """Three tickets, the second linked to the first, changed after opening as intake changes them."""
    first = _open(desk, "Faktura")
    second = _open(desk, "Faktura (2)", linked_to=first.id)
    second.scope = "incident"
    third = _open(desk, "Drukarka", reasons=[])
    third.reasons.append("P3: urgent")  # the list handed in, changed in place before the write
    desk.assign(third, "anna@firma.pl", "maild", NOW)
    return [first, second, third]


def test_a_sync_inserts_the_opened_tickets_without_the_unit_of_work_and_leaves_them_as_its_flush_does(
        world: tuple[Config, sessionmaker[Session]], unit_of_work_inserts: list[int]) -> None:
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    with sessions() as session, session.begin():  # the ORM's flush, as every ticket went before
        flushed = _open_three(TicketDesk(ctx, session))
        session.flush()
        by_flush = [_state(session, t) for t in flushed]
        rows_by_flush = _stored(session, [t.id for t in flushed])
    assert unit_of_work_inserts == [t.id for t in flushed]
    unit_of_work_inserts.clear()
    with sessions() as session, session.begin(), session.no_autoflush:  # as intake's batch: else a query flushes
        desk = TicketDesk(ctx, session)
        desk.hold_ticket_numbers()
        synced = _open_three(desk)
        desk.sync()
        assert unit_of_work_inserts == [], "the desk's tickets went through the unit of work"
        assert [_state(session, t) for t in synced] == by_flush
        assert not session.new and not session.dirty
        assert _stored(session, [t.id for t in synced]) == rows_by_flush
        # a change after the write is an UPDATE of that row, as after a flush
        synced[0].status = "open"
        assert synced[0] in session.dirty
        ids = [t.id for t in synced]
    with sessions() as session:
        assert [t.status for t in session.scalars(select(Ticket).where(Ticket.id.in_(ids)).order_by(Ticket.id))] \
            == ["open", "new", "new"]


def test_an_escalation_and_a_booking_on_a_ticket_opened_in_the_same_session_find_it(
        world: tuple[Config, sessionmaker[Session]]) -> None:
    """Rows that refer to a new ticket, flushed by the ORM: the escalation at the desk's sync (after the
    tickets' INSERT), the booking by its own flush before any sync."""
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    with sessions() as session, session.begin():
        desk = TicketDesk(ctx, session)
        escalated, booked = _open(desk, "Awaria"), _open(desk, "Wydruk")
        desk.record_escalation(escalated, 0, [], False, ["szef@firma.pl"], NOW)
        desk.book_time(booked, 30, "anna@firma.pl", None, "telefon", None, NOW)
        desk.sync()
        ids = escalated.id, booked.id
    with sessions() as session:
        assert session.scalars(select(Escalation.ticket_id)).all() == [ids[0]]
        assert session.scalars(select(LedgerRow.ticket_id)).all() == [ids[1]]
        assert session.get(Ticket, ids[0]).escalation_level == 1  # type: ignore[union-attr]
        assert {e.kind for e in session.scalars(select(Event).where(Event.ticket_id == ids[1]))} == {"time"}


def test_a_ticket_written_in_a_savepoint_rolled_back_is_gone_from_the_session_as_after_a_flush(
        world: tuple[Config, sessionmaker[Session]]) -> None:
    """An isolated batch writes each mail in a savepoint: one rolled back takes its ticket out of the
    session (the ORM expunges what it inserted there), whichever way the ticket was written."""
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    for write in ("flush", "sync"):
        with sessions() as session, session.begin():
            desk = TicketDesk(ctx, session)
            kept = _open(desk, "Zostaje")
            desk.sync()
            savepoint = session.begin_nested()
            dropped = _open(desk, "Cofnięty")
            session.flush() if write == "flush" else desk.sync()
            assert inspect(dropped).persistent
            savepoint.rollback()
            desk.discard()
            assert not inspect(dropped).persistent and dropped not in session, write
            assert inspect(kept).persistent and kept in session
            kept_id, dropped_id = kept.id, dropped.id
        with sessions() as session:
            assert session.get(Ticket, kept_id) is not None and session.get(Ticket, dropped_id) is None


# ---------------------------------------------------------------- the paths that open tickets, through intake


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    yield {"tmp": tmp_path, "url": url, "box": mailbox.Maildir(tmp_path / "Maildir", create=True), "sink": smtp_sink}


AUTHSERV = '\n[security]\ntrusted_authserv_id = "mx.firma.pl"\n'
PASSED = {"Authentication-Results": "mx.firma.pl; dkim=pass header.d=firma.pl; spf=pass smtp.mailfrom=firma.pl"}


def test_one_batch_opens_tickets_and_changes_them_after_the_desk_wrote_them(
        env: dict[str, Any], unit_of_work_inserts: list[int]) -> None:
    """One batch: a customer's new mail, the consultant's commands on that ticket (the desk writes the
    batch so far before it reads the thread), the customer's reply after them, and a ticket the
    consultant opens on a customer's behalf. Each change after the write is stored, none twice."""
    from maild.ops.daemon import Daemon

    config = write_config(env["tmp"], source=maildir_source(env["tmp"]), smtp_port=env["sink"].port,
                          database_url=env["url"], extra=AUTHSERV, migrated=True)
    box = env["box"]
    box.add(make_mail(subject="Faktura nie drukuje", msgid="<n1@acme.pl>"))
    box.add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-1] Faktura nie drukuje",
                      msgid="<c1@firma.pl>", headers=PASSED,
                      body="#time 30m\n#scope training\n#status waiting\n\nProszę sprawdzić drukarkę.\n"))
    box.add(make_mail(subject="Re: [SUP-1] Faktura nie drukuje", msgid="<n2@acme.pl>",
                      body="Sprawdziłem, dalej nie działa.\n"))
    box.add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="Telefon od Acme", msgid="<c2@firma.pl>",
                      headers=PASSED, body="#customer jan@acme.pl\n\nKlient dzwonił w sprawie eksportu JPK.\n"))
    daemon = Daemon(load_config(config), lambda: NOW)
    daemon.run_once()
    assert unit_of_work_inserts == []
    with daemon.sessions() as session:
        assert {i.dedupe_key: (i.disposition, i.ticket_id) for i in session.scalars(select(Intake))} == {
            "n1@acme.pl": ("ticket", 1), "c1@firma.pl": ("reply", 1), "n2@acme.pl": ("reply", 1),
            "c2@firma.pl": ("ticket", 2)}
        first, second = session.get(Ticket, 1), session.get(Ticket, 2)
        assert first is not None and second is not None
        # the customer's reply after #status waiting puts it back in the queue
        assert (first.status, first.scope, first.first_response_at is not None) == ("open", "training", True)
        assert session.scalars(select(LedgerRow.minutes).where(LedgerRow.ticket_id == 1)).all() == [30]
        assert [e.kind for e in session.scalars(select(Event).where(Event.ticket_id == 1, Event.kind == "status")
                                                .order_by(Event.id))] == ["status", "status"]
        assert second.requester == "jan@acme.pl" and second.assigned_to == "anna@firma.pl"


def test_the_installed_sqlalchemy_has_the_private_call_the_desk_relies_on() -> None:
    """``Session._register_persistent`` is SQLAlchemy's own, not public: an upgrade without it must be
    seen here (the desk then goes back to the slower flush, silently, as the next test shows)."""
    assert callable(getattr(Session, "_register_persistent", None))


def test_without_that_call_the_flush_writes_the_tickets_as_before(
        world: tuple[Config, sessionmaker[Session]], unit_of_work_inserts: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from maild.storage import store

    monkeypatch.setattr(store, "_REGISTER_PERSISTENT", None)
    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    with sessions() as session, session.begin(), session.no_autoflush:
        desk = TicketDesk(ctx, session)
        desk.hold_ticket_numbers()
        opened = _open_three(desk)
        desk.sync()
        assert unit_of_work_inserts == [t.id for t in opened]
        assert all(inspect(t).persistent for t in opened)
        ids = [t.id for t in opened]
    with sessions() as session:
        assert [t.subject for t in session.scalars(select(Ticket).where(Ticket.id.in_(ids)).order_by(Ticket.id))] \
            == ["Faktura", "Faktura (2)", "Drukarka"]


# ---------------------------------------------------------------- a new ticket made without the mapped constructor


@pytest.fixture
def constructor_calls() -> Iterator[list[Ticket]]:
    """The tickets made through the mapped constructor (its ``init`` event)."""
    seen: list[Ticket] = []

    def record(target: Ticket, args: Any, kwargs: Any) -> None:
        seen.append(target)

    event.listen(Ticket, "init", record)
    yield seen
    event.remove(Ticket, "init", record)


@pytest.mark.parametrize("write", ["sync", "flush"])
def test_a_ticket_the_desk_opens_is_made_without_the_constructor_and_is_the_constructors(
        world: tuple[Config, sessionmaker[Session]], constructor_calls: list[Ticket], monkeypatch: pytest.MonkeyPatch,
        write: str) -> None:
    """``store.new_ticket`` puts the values into a bare instance instead of ``Ticket(**values)``: written by the
    desk's sync or by the ORM's flush, the rows stored and the session's state of each ticket are those of the
    tickets the constructor made."""
    from maild.storage import store

    cfg, sessions = world
    ctx = DeskContext.for_config(cfg, ())
    found = {}
    for making in ("constructor", "new_ticket"):
        with monkeypatch.context() as patch:
            if making == "constructor":
                patch.setattr(store, "new_ticket", lambda values: Ticket(**values))
            with sessions() as session, session.begin(), session.no_autoflush:
                desk = TicketDesk(ctx, session)
                desk.hold_ticket_numbers()
                constructor_calls.clear()
                opened = _open_three(desk)
                made = len(constructor_calls)
                session.flush() if write == "flush" else desk.sync()
                found[making] = (made, [_state(session, t) for t in opened], _stored(session, [t.id for t in opened]))
    assert found["constructor"][0] == 3 and found["new_ticket"][0] == 0
    assert found["new_ticket"][1:] == found["constructor"][1:]


def test_a_sqlalchemy_without_new_instance_gets_tickets_from_the_constructor(
        monkeypatch: pytest.MonkeyPatch, constructor_calls: list[Ticket]) -> None:
    from maild.storage import store

    monkeypatch.setattr(store, "_ticket_maker", lambda: None)
    ticket = store.new_ticket({"id": 7, "subject": "Faktura", "reasons": []})
    assert constructor_calls == [ticket] and (ticket.id, ticket.subject) == (7, "Faktura")


def test_a_new_ticket_refuses_a_name_that_is_no_column() -> None:
    from maild.storage import store

    with pytest.raises(TypeError, match="messages"):
        store.new_ticket({"id": 7, "messages": []})
    assert callable(getattr(inspect(Ticket).class_manager, "new_instance", None))
