"""The Core reads give what the ORM gives: the same values from every column, the same queue.

``status``, ``tickets list|show`` and the reports read ``storage.tables`` on a
Connection (no ORM loaded); the desk writes through ``models``, which map onto
those tables. If a column's type or default differed between the two, or a
Core row read a value differently (JSON, the UTC datetimes, booleans), the
read-only commands would print something else than before; here every table
is written through the ORM and read back both ways, on SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.storage import models, queries, store, tables
from maild.storage.db import open_engine, sessions_for

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 15, 30, 123456, tzinfo=UTC)


def _rows() -> list[models.Base]:
    """One row per table, every column set to something other than its default where it has one."""
    return [
        models.CustomerRow(id="acme", name="ACME sp. z o.o.", language="en", addresses=["a@acme.pl"],
                           domains=["acme.pl"], billing_address="faktury@acme.pl", active=False, synced_at=T0),
        models.ContractRow(id="acme-sla", customer_id="acme", kind="sla", start=date(2026, 1, 1),
                           end=date(2026, 12, 31), terms={"reaction_hours": 8, "rate": [1, 2]}, removed_at=None,
                           synced_at=T0),
        models.Ticket(id=7, subject="Drukarka – nie działa", status="waiting", requester="jan@acme.pl",
                      requester_name="Jan Łoś", language="en", customer_id="acme", contract_id="acme-sla",
                      contract_kind="sla", verified=True, tier=0, priority="P1", peak="year-end",
                      reasons=["sla", {"peak": True}], scope="incident", assigned_to="anna@firma.pl",
                      assigned_at=T0, created_at=T0, updated_at=T0 + timedelta(minutes=5),
                      reaction_due=T0 + timedelta(hours=8), target_due=None, first_response_at=T0,
                      resolved_at=None, closed_at=None, escalation_level=2,
                      next_escalation_at=T0 + timedelta(hours=1), breached_at=T0, linked_to=None,
                      participants=["ewa@acme.pl"]),
        models.MessageRow(id=3, ticket_id=7, message_id="m1@acme.pl", direction="in", role="customer",
                          kind="autoreply", from_addr="jan@acme.pl", from_name="Jan", to_addrs=["s@x.pl"],
                          cc_addrs=["c@x.pl"], subject="Re: x", date=T0, text_new="nowy", text_quoted="> stary",
                          raw_sha256="ab" * 32, size=12345678901, internal=True, notes=["big"]),
        models.AttachmentRow(id=4, message_row_id=3, filename="faktura.pdf", content_type="application/pdf",
                             size=99, sha256="cd" * 32),
        models.PackIndex(sha256="ef" * 32, pack="pack-0001", offset=2**33, length=512),
        models.Intake(id=5, dedupe_key="m1@acme.pl", source_key="INBOX:1:2", disposition="ticket", reason="new",
                      ticket_id=7, message_row_id=3, arrived_at=T0, processed_at=T0),
        models.Failure(id=6, key="k", attempts=3, last_error="boom", updated_at=T0),
        models.QuarantineRow(id=8, key="q", source_key="INBOX:1:3", raw_sha256="01" * 32, subject="s",
                             from_addr="f@x.pl", reason="parse", traceback="tb", attempts=2, arrived_at=None,
                             created_at=T0, status="retried", retried_at=T0),
        models.OutboxRow(id=9, dedupe_key="ack:7", kind="notify_new", ticket_id=7, message_id="o1@maild",
                         recipients=["anna@firma.pl"], rate_key="acme.pl", automatic=False, template="ack",
                         language="en", context={"ticket": {"ref": "SUP-7"}, "n": 1.5}, status="sent",
                         attempts=1, next_attempt_at=T0, last_error="", created_at=T0, sent_at=T0),
        models.Event(id=10, ticket_id=7, at=T0, kind="status", actor="anna@firma.pl", detail={"to": "waiting"}),
        models.LedgerRow(id=11, contract_id="acme-sla", customer_id="acme", ticket_id=7, minutes=90, overage=True,
                         booked_at=T0, by="anna@firma.pl", scope="training", note="szkolenie",
                         source_message_id="m1@acme.pl", reverses=None),
        models.StateRow(key="last_fetch_at", value=T0.isoformat(), updated_at=T0),
        models.AbsenceRow(id=12, consultant="anna@firma.pl", start=date(2026, 3, 1), until=date(2026, 3, 4),
                          note="urlop", created_at=T0, created_by="szef@firma.pl"),
        models.Escalation(id=13, ticket_id=7, level=1, sent_at=T0, skipped=["x@y.pl"], breach=True),
        models.BalanceSnapshot(contract_id="acme-sla", month="2026-03", terms="t" * 64, drawn_minutes=30,
                               state={"month": "2026-02", "lots": [[1, 2]]}, computed_at=T0),
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_column_reads_the_same_through_core_and_the_orm(backend: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'q.db'}"
    engine = open_engine(url)
    sessions = sessions_for(engine)
    with sessions() as session, session.begin():
        for row in _rows():  # in dependency order, flushed one by one
            session.add(row)
            session.flush()
    assert {type(r).__table__.name for r in _rows()} == set(tables.metadata.tables)
    with sessions() as session, engine.connect() as conn:
        for model in (type(r) for r in _rows()):
            table = tables.metadata.tables[model.__table__.name]
            assert model.__table__ is table
            orm = session.scalars(select(model)).one()
            core = conn.execute(select(table)).one()
            for column in table.columns:
                mine, theirs = getattr(core, column.name), getattr(orm, column.name)
                assert mine == theirs and type(mine) is type(theirs), (table.name, column.name, mine, theirs)
                if isinstance(mine, datetime):
                    assert mine.tzinfo is UTC, (table.name, column.name)
        ticket = session.get(models.Ticket, 7)
        assert ticket is not None
        assert queries.get_state(conn, "last_fetch_at") == store.get_state(session, "last_fetch_at") == T0.isoformat()
        assert queries.queue_rank(conn, ticket) == queries.queue_rank(session, ticket) == 1
        assert queries.find_ticket(conn, 7) == conn.execute(select(tables.tickets)).one()
    engine.dispose()


def test_a_default_is_the_same_whichever_way_a_row_is_written(tmp_path: Path) -> None:
    """The Python-side defaults live on the tables: a row inserted with Core gets what the ORM would give."""
    engine = open_engine(f"sqlite:///{tmp_path / 'd.db'}")
    with engine.begin() as conn:
        conn.execute(tables.tickets.insert().values(id=1, created_at=T0, updated_at=T0))
    with Session(engine) as session, session.begin():
        session.add(models.Ticket(id=2, created_at=T0, updated_at=T0))
    with engine.connect() as conn:
        core, orm = (dict(r._mapping) for r in conn.execute(select(tables.tickets).order_by(tables.tickets.c.id)))
    assert {**core, "id": 2} == orm
    assert orm["status"] == "new" and orm["reasons"] == [] and orm["tier"] == 3
    engine.dispose()

