"""The database's answer to ``thread.ThreadLookup``, including what this batch opened and has not written."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from maild.desk.desk import TicketDesk
from maild.intake.thread import TicketFacts
from maild.storage import store
from maild.storage.models import Ticket


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
        # Message-IDs looked up for the whole batch before it started (``prefetch``), and the
        # highest ticket stored under each that has one
        self._looked_up: set[str] = set()
        self._stored: dict[str, int] = {}

    def prefetch(self, message_ids: Iterable[str]) -> None:
        """Look up every Message-ID the batch's mail refers to at once (one query per 500), instead
        of one query per reply, and load the tickets found (one query per 500, instead of one per
        reply's ticket). What the batch itself writes is the desk's ``pending_ids``, which
        ``by_message_ids`` asks first; a mail refers only to mail sent before it was fetched."""
        wanted = {m for m in message_ids if m} - self._looked_up
        found = store.tickets_by_message_id(self.desk.session, wanted)
        self._stored.update(found)
        self._looked_up.update(wanted)
        self.desk.load_tickets(found.values())

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
        if self._looked_up.issuperset(ids):
            stored = [self._stored[m] for m in ids if m in self._stored]
            return self.by_number(max(stored)) if stored else None
        stored = list(store.tickets_by_message_id(self.desk.session, ids).values())
        return self.by_number(max(stored)) if stored else None
