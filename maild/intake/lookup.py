"""The database's answer to ``thread.ThreadLookup``, including what this batch opened and has not written."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from maild.desk.desk import TicketDesk
from maild.intake.thread import TicketFacts
from maild.storage.models import MessageRow, Ticket


def _facts(ticket: Ticket) -> TicketFacts:
    return TicketFacts(
        ticket_id=ticket.id, number=ticket.id, customer_id=ticket.customer_id, status=ticket.status,
        resolved_at=ticket.resolved_at or ticket.closed_at, participants=frozenset(ticket.participants or ()),
    )


class DeskThreadLookup:
    """Tickets by number and by Message-ID, as the desk knows them (its pending
    tickets and messages first, so a reply later in the same batch finds its ticket)."""

    def __init__(self, desk: TicketDesk) -> None:
        self.desk = desk

    def by_number(self, number: int) -> TicketFacts | None:
        ticket = self.desk.ticket(number)
        return None if ticket is None else _facts(ticket)

    def by_message_ids(self, message_ids: Sequence[str]) -> TicketFacts | None:
        ids = [m for m in message_ids if m][-50:]
        if not ids:
            return None
        pending = [self.desk.pending_ids[m] for m in ids if m in self.desk.pending_ids]
        if pending:
            return self.by_number(max(pending))
        ticket_id = self.desk.session.scalar(
            select(MessageRow.ticket_id)
            .where(MessageRow.message_id.in_(ids), MessageRow.ticket_id.is_not(None))
            .order_by(MessageRow.ticket_id.desc())
            .limit(1)
        )
        if ticket_id is None:
            return None
        return self.by_number(ticket_id)
