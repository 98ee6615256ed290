"""What the month report counts as a consultant's answer, from mail the daemon took in (SQLite and PostgreSQL).

A consultant's reply of commands only ("#take", "#time 1h30m") or of commands and a signature is the
desk's business (assigned, booked) and told the customer nothing; the report counted it as an answer.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from maild.billing.month import load_activity
from maild.config import load_config
from maild.desk.context import business_calendar
from maild.storage.db import open_database
from tests.helpers import ANNAS_REPLIES, two_tickets_answered_by_anna
from tests.intake.test_ingest import env, run  # noqa: F401 - the daemon's env on SQLite and PostgreSQL

UTC = timezone.utc


def test_the_report_counts_only_answers_that_told_the_customer_something(env: dict[str, Any]) -> None:  # noqa: F811
    two_tickets_answered_by_anna(env, run, {
        **ANNAS_REPLIES, "<k4@firma.pl>": ("Re: [SUP-2] Awaria wydruku", "#internal\nKlient dzwonił.\n")})
    cfg = load_config(env["path"])
    now = datetime.now(UTC)
    month = now.astimezone(ZoneInfo(cfg.calendar.timezone)).strftime("%Y-%m")
    sessions = open_database(cfg.database_url)
    try:
        with sessions() as session:
            activity = load_activity(session, month, business_calendar(cfg, write=False), cfg.peak_windows,
                                     {c.email: c.name for c in cfg.consultants}, now)
            from sqlalchemy import select

            from maild.storage.models import MessageRow

            stored = {m.message_id: (m.internal, m.text_new) for m in session.scalars(
                select(MessageRow).where(MessageRow.role == "consultant", MessageRow.direction == "in"))}
    finally:
        sessions.kw["bind"].dispose()
    # how the desk kept them: the text without the command block, none internal but the note
    assert stored["k1@firma.pl"] == (False, "") and stored["k2@firma.pl"][1].startswith("-- \n"), stored
    assert stored["k3@firma.pl"][0] is False and stored["k4@firma.pl"][0] is True, stored
    [anna] = [c for c in activity.consultants if c.email == "anna@firma.pl"]
    # SUP-1 got a #take and a booking with a signature, SUP-2 an answer and a note: one ticket answered,
    # and the only first answer is SUP-2's (it read 2 and 2)
    assert (anna.answered, anna.first_responses) == (1, 1), anna
