"""What the month report counts as a consultant's answer, from mail the daemon took in (SQLite and PostgreSQL).

A consultant's reply of commands only ("#take", "#time 1h30m") or of commands and a signature is the
desk's business (assigned, booked) and told the customer nothing; the report counted it as an answer.
"""
from __future__ import annotations

from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.billing.month import load_activity
from maild.config import load_config
from maild.desk.context import business_calendar
from maild.storage.db import open_database
from tests.helpers import ANNAS_REPLIES, two_tickets_answered_by_anna
from tests.intake.test_ingest import env, run  # noqa: F401 - the daemon's env on SQLite and PostgreSQL

UTC = timezone.utc
T = TypeVar("T")


def _anna_this_month(env: dict[str, Any], read: Callable[[Session], T]) -> tuple[Any, T]:
    """Anna's line of this month's report, and what ``read`` finds in the same session."""
    cfg = load_config(env["path"])
    now = datetime.now(UTC)
    month = now.astimezone(ZoneInfo(cfg.calendar.timezone)).strftime("%Y-%m")
    sessions = open_database(cfg.database_url)
    try:
        with sessions() as session:
            activity = load_activity(session, month, business_calendar(cfg, write=False), cfg.peak_windows,
                                     {c.email: c.name for c in cfg.consultants}, now)
            found = read(session)
    finally:
        sessions.kw["bind"].dispose()
    [anna] = [c for c in activity.consultants if c.email == "anna@firma.pl"]
    return anna, found


def test_the_report_counts_only_answers_that_told_the_customer_something(env: dict[str, Any]) -> None:  # noqa: F811
    two_tickets_answered_by_anna(env, run, {
        **ANNAS_REPLIES, "<k4@firma.pl>": ("Re: [SUP-2] Awaria wydruku", "#internal\nKlient dzwonił.\n")})
    from maild.storage.models import MessageRow

    anna, stored = _anna_this_month(env, lambda session: {
        m.message_id: (m.internal, m.text_new) for m in session.scalars(
            select(MessageRow).where(MessageRow.role == "consultant", MessageRow.direction == "in"))})
    # how the desk kept them: the text without the command block, none internal but the note
    assert stored["k1@firma.pl"] == (False, "") and stored["k2@firma.pl"][1].startswith("-- \n"), stored
    assert stored["k3@firma.pl"][0] is False and stored["k4@firma.pl"][0] is True, stored
    # SUP-1 got a #take and a booking with a signature, SUP-2 an answer and a note: one ticket answered,
    # and the only first answer is SUP-2's (it read 2 and 2)
    assert (anna.answered, anna.first_responses) == (1, 1), anna


def test_an_answer_of_a_file_alone_is_counted_as_the_intake_relayed_it(env: dict[str, Any]) -> None:  # noqa: F811
    """Anna answers SUP-1 with the corrected invoice attached and no word: the intake relays the file to the
    customer and takes it as the ticket's first answer; the report counted no answer (the text rule saw an empty
    text), so the month's first answers and the tickets answered disagreed with the tickets' own first answers."""
    from tests.e2e.test_notifications import PDF, with_file
    from tests.helpers import consultant_to, make_mail

    two_tickets_answered_by_anna(env, run, {})
    env["box"].add(with_file(make_mail(to=consultant_to(env["path"]), sender="Anna Nowak <anna@firma.pl>",
                                       subject="Re: [SUP-1] Pytanie o licencję", msgid="<f1@firma.pl>",
                                       body="\nW dniu 07.12.2026 o 09:15, Wsparcie pisze:\n> Pytanie o licencję\n"),
                             "faktura-korekta.pdf", PDF))
    run(env)
    from maild.storage.models import OutboxRow, Ticket

    anna, (relayed, first_response_at) = _anna_this_month(env, lambda session: (
        session.scalars(select(OutboxRow.ticket_id).where(OutboxRow.kind == "relay")).all(),
        session.get(Ticket, 1).first_response_at))  # type: ignore[union-attr]
    assert relayed == [1] and first_response_at is not None, "the intake took the file as the answer"
    assert (anna.answered, anna.first_responses) == (1, 1), anna
