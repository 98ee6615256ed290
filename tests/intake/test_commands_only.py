"""A consultant's reply of commands only tells the customer nothing (SQLite and PostgreSQL, through the daemon).

"#take" and "#time 1h30m", alone or above a signature, were relayed to the customer as an empty mail ending in
the relay's signature, stopped the SLA clock as the ticket's first answer and set it waiting.
"""
from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from maild.config import load_config
from maild.storage.db import open_database
from maild.storage.models import Intake, LedgerRow, OutboxRow, Ticket
from tests.helpers import ANNAS_REPLIES, two_tickets_answered_by_anna
from tests.intake.test_ingest import env, run  # noqa: F401 - the daemon's env on SQLite and PostgreSQL


def test_a_reply_of_commands_only_is_applied_and_not_relayed(env: dict[str, Any]) -> None:  # noqa: F811
    two_tickets_answered_by_anna(env, run, ANNAS_REPLIES)
    cfg = load_config(env["path"])
    sessions = open_database(cfg.database_url)
    try:
        with sessions() as session:
            relays = {r.ticket_id: r for r in session.scalars(select(OutboxRow).where(OutboxRow.kind == "relay"))}
            first, second = (session.get(Ticket, n) for n in (1, 2))
            booked = session.scalar(select(func.sum(LedgerRow.minutes)).where(LedgerRow.ticket_id == 1))
            reasons = {row.dedupe_key: row.reason for row in session.scalars(select(Intake))}
    finally:
        sessions.kw["bind"].dispose()
    assert first is not None and second is not None
    # the commands were applied: taken, booked
    assert first.assigned_to == "anna@firma.pl" and booked == 105
    # nothing went to the customer on SUP-1, and its clock runs: no first answer, not waiting for the customer
    assert set(relays) == {2}, relays
    assert first.first_response_at is None and first.status in ("new", "open"), (first.first_response_at, first.status)
    assert second.first_response_at is not None and second.status == "waiting"
    assert reasons["k1@firma.pl"] == reasons["k2@firma.pl"] == "commands only, not relayed", reasons
    assert reasons["k3@firma.pl"] == "relayed"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the relay of SUP-2 is delivered; nothing of SUP-1 after its acknowledgement
        to_customer = [m for m in env["sink"].messages if "jan@acme.pl" in m.rcpt_tos]
        if any("ola@acme.pl" in m.rcpt_tos and m.parsed["Auto-Submitted"] is None for m in env["sink"].messages):
            break
        time.sleep(0.05)
    assert len(to_customer) == 1 and to_customer[0].parsed["Auto-Submitted"] == "auto-replied", \
        [m.parsed["Subject"] for m in to_customer]


# commands from a phone or with a mail client's signature, which no "-- " line opens (Message-ID: (subject, body))
PHONE_REPLIES = {
    "<p1@firma.pl>": ("Re: [SUP-1] Pytanie o licencję",
                      "#take\n\nWysłane z iPhone'a\n\n> W dniu 07.12.2026 o 09:10 Wsparcie pisze:\n> Pytanie\n"),
    "<p2@firma.pl>": ("RE: [SUP-1] Pytanie o licencję",
                      "#time 10m\n\nGet Outlook for Android<https://aka.ms/ghei36>\n"
                      "________________________________\nFrom: Acme via Wsparcie <support@firma.pl>\n"
                      "Sent: Monday, December 7, 2026 9:10:12 AM\nTo: Anna Nowak <anna@firma.pl>\n"
                      "Subject: [SUP-1] Pytanie o licencję\n\nPytanie\n"),
    "<p3@firma.pl>": ("Re: [SUP-1] Pytanie o licencję", "#time 5m\n\nPozdrawiam\nAnna Nowak\nKonsultant ERP, Firma\n"),
    "<p4@firma.pl>": ("Re: [SUP-2] Awaria wydruku", "#time 5m\n\nSent from my iPhone\n\nThe patch is in, please retry.\n"),
}


def test_commands_above_a_phones_or_a_clients_signature_are_not_relayed(env: dict[str, Any]) -> None:  # noqa: F811
    """"Wysłane z iPhone'a", "Get Outlook for Android" or "Pozdrawiam / Anna Nowak" under the commands told the
    customer nothing, as a "-- " signature does not: each went to the customer as an empty mail with the
    signature, and made the ticket's first answer. Words under a phone's line still go (SUP-2)."""
    two_tickets_answered_by_anna(env, run, PHONE_REPLIES)
    cfg = load_config(env["path"])
    sessions = open_database(cfg.database_url)
    try:
        with sessions() as session:
            relays = session.scalars(select(OutboxRow.ticket_id).where(OutboxRow.kind == "relay")).all()
            first = session.get(Ticket, 1)
            booked = session.scalar(select(func.sum(LedgerRow.minutes)).where(LedgerRow.ticket_id == 1))
            reasons = {row.dedupe_key: row.reason for row in session.scalars(select(Intake))}
    finally:
        sessions.kw["bind"].dispose()
    assert first is not None and first.assigned_to == "anna@firma.pl" and booked == 15
    assert relays == [2], relays
    assert first.first_response_at is None, first.first_response_at
    assert {reasons[f"p{n}@firma.pl"] for n in (1, 2, 3)} == {"commands only, not relayed"}, reasons
