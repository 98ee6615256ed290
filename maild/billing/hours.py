"""Booking consultants' time: ledger rows in, balances out.

The arithmetic is ``ledger`` (pure); this module loads the rows it needs,
writes the new ones and queues the once-only low-balance warning, all in the
caller's transaction so a ``#time`` line and its ticket change commit together.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.rules.customers import Contract
from maild.billing.ledger import LedgerEntry, allocate_prepaid, crossed_low_balance, prepaid_balances
from maild.storage.models import ContractRow, LedgerRow, Ticket
from maild.billing.reports import contract_from_row

if TYPE_CHECKING:
    from maild.intake.pipeline import Ingestor

log = logging.getLogger("maild.ledger")


def ledger_entries(session: Session, contract_ids: Sequence[str]) -> list[LedgerEntry]:
    if not contract_ids:
        return []
    rows = session.scalars(
        select(LedgerRow).where(LedgerRow.contract_id.in_(contract_ids), LedgerRow.overage.is_(False))
        .order_by(LedgerRow.id)
    )
    return [
        LedgerEntry(id=r.id, contract_id=r.contract_id or "", ticket_id=r.ticket_id, minutes=r.minutes,
                    booked_at=r.booked_at, by=r.by, scope=r.scope, reverses=r.reverses)
        for r in rows
    ]


def prepaid_left_minutes(session: Session, packages: Sequence[Contract], at: datetime, tz: ZoneInfo) -> dict[str, int]:
    """Minutes left per package at ``at``; expired packages count as 0."""
    if not packages:
        return {}
    entries = ledger_entries(session, [p.id for p in packages])
    return {b.contract_id: (0 if b.expired else b.left) for b in prepaid_balances(packages, entries, at, tz)}


def find_contract(ingestor: Ingestor, session: Session, contract_id: str | None) -> Contract | None:
    """The contract's terms from the customers file, else as last imported into the database.

    A contract removed from the file is ended, not forgotten: its tickets still
    book against it (and its SLA clock still runs) on the terms it was sold with.
    """
    if contract_id is None:
        return None
    found = ingestor.ctx.contract(contract_id)
    if found is not None:
        return found
    row = session.get(ContractRow, contract_id)
    return None if row is None else contract_from_row(row, ingestor.ctx.calendar.tz)


def book_time(ingestor: Ingestor, session: Session, ticket: Ticket, minutes: int, by: str, scope: str | None,
              note: str, source_message_id: str | None, at: datetime) -> list[LedgerRow]:
    """Book ``minutes`` on the ticket's contract; prepaid time is drawn expiring-first, the rest is overage.

    The ticket's ``contract_id`` is the one booked against, also when that
    contract has since left the customers file (its terms then come from the
    database), so no minute loses the contract it was worked under.
    """
    ctx = ingestor.ctx
    contract = find_contract(ingestor, session, ticket.contract_id)
    customer = ctx.customer(ticket.customer_id)
    rows: list[LedgerRow] = []

    def add(contract_id: str | None, part: int, overage: bool) -> None:
        row = LedgerRow(contract_id=contract_id, customer_id=ticket.customer_id, ticket_id=ticket.id,
                        minutes=part, overage=overage, booked_at=at, by=by, scope=scope or ticket.scope,
                        note=note[:500], source_message_id=source_message_id)
        session.add(row)
        rows.append(row)

    if contract is not None and contract.kind == "prepaid":
        packages = [c for c in (customer.contracts if customer else ()) if c.kind == "prepaid"]
        if all(p.id != contract.id for p in packages):
            packages.append(contract)
        entries = ledger_entries(session, [p.id for p in packages])
        tz = ctx.calendar.tz
        before = sum(b.left for b in prepaid_balances(packages, entries, at, tz) if not b.expired)
        for allocation in allocate_prepaid(packages, entries, minutes, at, tz):
            add(allocation.contract_id or contract.id, allocation.minutes, allocation.overage)
        after = before - sum(r.minutes for r in rows if not r.overage)
        threshold = ctx.config.ledger.low_balance_minutes
        recipient = (customer.billing_address if customer else None) or ticket.requester
        if customer is not None and recipient and crossed_low_balance(before, after, threshold):
            ingestor.queue_mail(
                session, ticket=ticket, kind="low_balance", template="low_balance", language=customer.language,
                recipients=[recipient], now=at, dedupe_key=f"lowbal:{customer.id}:{'+'.join(p.id for p in packages)}:{after <= 0}",
                automatic=True,
                context={"ref": ctx.ref(ticket.id), "customer_name": customer.name, "left_minutes": max(after, 0),
                         "threshold_minutes": threshold, "from_name": ctx.config.from_name},
            )
            log.info("%s low prepaid balance for %s: %d min left", ctx.ref(ticket.id), customer.id, after)
    else:
        add(ticket.contract_id, minutes, False)
    session.flush()
    ingestor.add_event(session, ticket.id, "time", at, by, minutes=minutes, scope=scope,
                       entries=[r.id for r in rows])
    return rows
