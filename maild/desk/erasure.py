"""Erasing personal data: ``maild forget`` (GDPR art. 17) and the retention periods.

What goes: mail texts, subjects, names, addresses, attachments and raw mail
(their index rows here; their bytes when ``storage.compact`` next rewrites the
packs). What stays: the tickets' numbers, dates, contracts and states, and every
ledger row's minutes, contract and customer id, so a statement for any month
still adds up; a ledger row's note and source Message-ID are personal and go.

Each function is idempotent: erased rows no longer match what selects them (an
erased message has no sender, an erased ticket no requester), so a second run
finds nothing. Logs name tickets and counts, never the address or customer
being erased.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, delete, func, or_, select, text, true, update
from sqlalchemy.orm import Session

from maild.storage import store
from maild.storage.blobs import BlobStore
from maild.storage.compact import drop_unreferenced, note_dead_bytes, referenced
from maild.storage.tables import CLOSED
from maild.storage.models import (
    AttachmentRow,
    CustomerRow,
    Event,
    LedgerRow,
    MessageRow,
    OutboxRow,
    QuarantineRow,
    Ticket,
)

log = logging.getLogger("maild.erasure")

ERASED = "(erased)"


@dataclass
class Erasure:
    """What an erasure touched (or, with ``dry_run``, would touch)."""

    tickets: list[int] = field(default_factory=list)
    messages: int = 0
    attachments: int = 0
    blobs: int = 0
    outbox: int = 0
    ledger_rows: int = 0
    quarantined: int = 0
    customer: bool = False

    @property
    def empty(self) -> bool:
        return not (self.tickets or self.messages or self.outbox or self.quarantined or self.customer)

    def summary(self, prefix: str) -> str:
        refs = ", ".join(f"{prefix}-{t}" for t in self.tickets[:20]) + (" ..." if len(self.tickets) > 20 else "")
        return (f"{len(self.tickets)} tickets{f' ({refs})' if refs else ''}, {self.messages} messages, "
                f"{self.attachments} attachments, {self.blobs} stored blobs, {self.outbox} outgoing mails, "
                f"{self.ledger_rows} ledger notes, {self.quarantined} quarantined mails"
                + (", the customer's names and addresses" if self.customer else ""))


def _drop_bytes(session: Session, message_ids: Sequence[int], hashes: set[str], **blank: Any) -> int:
    """Let the messages go of their raw mail and attachments (500 at a time): their hashes go into
    ``hashes`` for ``drop_unreferenced``, the packs that held their places are noted for compaction.
    ``blank``: more of the messages' columns to set in the same UPDATE. Returns the attachments dropped."""
    attachments = 0
    packs: set[str] = set()
    for i in range(0, len(message_ids), 500):
        part = list(message_ids[i:i + 500])
        for sha in session.scalars(select(AttachmentRow.sha256).where(AttachmentRow.message_row_id.in_(part))):
            hashes.add(sha)
            attachments += 1
        for raw, pack in session.execute(select(MessageRow.raw_sha256, MessageRow.raw_pack).where(
                MessageRow.id.in_(part), MessageRow.raw_sha256.is_not(None))):
            if raw:
                hashes.add(raw)
            if pack:
                packs.add(pack)
        session.execute(delete(AttachmentRow).where(AttachmentRow.message_row_id.in_(part)))
        session.execute(update(MessageRow).where(MessageRow.id.in_(part)).values(
            raw_sha256=None, raw_pack=None, raw_offset=None, raw_length=None, **blank))
    note_dead_bytes(session, packs)
    return attachments


def _erase_messages(session: Session, message_ids: Sequence[int], hashes: set[str]) -> tuple[int, int]:
    """Blank the messages' personal fields; drop their attachments. Returns (messages, attachments)."""
    return len(message_ids), _drop_bytes(session, message_ids, hashes, from_addr="", from_name="", to_addrs=[],
                                         cc_addrs=[], subject="", text_new="", text_quoted="", notes=[])


def _erase_tickets(session: Session, ticket_ids: Sequence[int], now: datetime, done: Erasure,
                   hashes: set[str]) -> None:
    for i in range(0, len(ticket_ids), 500):
        part = list(ticket_ids[i:i + 500])
        messages = list(session.scalars(select(MessageRow.id).where(MessageRow.ticket_id.in_(part))))
        count, attachments = _erase_messages(session, messages, hashes)
        done.messages += count
        done.attachments += attachments
        session.execute(update(Ticket).where(Ticket.id.in_(part)).values(
            subject=ERASED, requester="", requester_name="", participants=[], reasons=[]))
        session.execute(update(Event).where(Event.ticket_id.in_(part)).values(detail={"erased": True}))
        done.ledger_rows += session.execute(
            update(LedgerRow).where(LedgerRow.ticket_id.in_(part)).values(note="", source_message_id=None)
        ).rowcount or 0  # type: ignore[attr-defined]
        outbox = session.execute(update(OutboxRow).where(OutboxRow.ticket_id.in_(part)).values(
            recipients=[], context={}, rate_key=None, last_error=""))
        done.outbox += outbox.rowcount or 0  # type: ignore[attr-defined]
        # what was still to be sent to the person is not sent any more
        session.execute(update(OutboxRow).where(OutboxRow.ticket_id.in_(part), OutboxRow.status == "pending")
                        .values(status="failed", last_error="erased"))


def forget(session: Session, blobs: BlobStore, now: datetime, *, address: str | None = None,
           customer: str | None = None, dry_run: bool = False) -> Erasure:
    """Erase one person's (``address``) or one customer's personal data, in the caller's transaction.

    An address: the tickets they opened, wholly, and their messages on other
    tickets, their quarantined mail and the mail addressed to them. A customer:
    every ticket of the customer, its statements, and its names and addresses
    as imported from the customers file (remove it from the file too, or the
    next ``contracts sync`` imports them again).
    """
    done = Erasure()
    hashes: set[str] = set()
    if address is not None:
        who = address.strip().lower()
        tickets = list(session.scalars(select(Ticket.id).where(func.lower(Ticket.requester) == who)
                                       .order_by(Ticket.id)))
        loose = [m for m, in session.execute(
            select(MessageRow.id).where(or_(func.lower(MessageRow.from_addr) == who,
                                            func.lower(cast(MessageRow.to_addrs, String)).contains(who, autoescape=True),
                                            func.lower(cast(MessageRow.cc_addrs, String)).contains(who, autoescape=True)))
            .where(or_(MessageRow.ticket_id.is_(None), MessageRow.ticket_id.not_in(tickets) if tickets else true())))]
        quarantined = list(session.scalars(select(QuarantineRow.id).where(func.lower(QuarantineRow.from_addr) == who)))
        mailed = [o.id for o in session.scalars(select(OutboxRow).where(
            func.lower(cast(OutboxRow.recipients, String)).contains(who, autoescape=True)))
            if who in {r.lower() for r in o.recipients}]
    else:
        assert customer is not None
        tickets = list(session.scalars(select(Ticket.id).where(Ticket.customer_id == customer, Ticket.subject != ERASED)
                                       .order_by(Ticket.id)))
        loose, quarantined = [], []
        mailed = list(session.scalars(select(OutboxRow.id).where(
            OutboxRow.ticket_id.is_(None), OutboxRow.dedupe_key.like(f"statement:%:{customer}"))))
        row = session.get(CustomerRow, customer)
        done.customer = row is not None and (row.name != ERASED or bool(row.addresses) or bool(row.domains)
                                             or row.billing_address is not None)
    done.tickets = tickets
    if dry_run:
        # the very erasure, undone: a count of its own would have to follow every row it reaches
        # (it once told of the person's mail but not of their tickets' outgoing mail, ledger notes
        # or blobs); no file is touched, as the blobs are only counted
        with session.begin_nested() as trial:
            _erase(session, now, done, hashes, customer, tickets, loose, mailed, quarantined)
            candidates = hashes - {""}
            done.blobs = len(candidates - referenced(session, candidates))
            trial.rollback()
        return done
    _erase(session, now, done, hashes, customer, tickets, loose, mailed, quarantined)
    done.blobs = drop_unreferenced(session, blobs, hashes - {""})
    return done


def _erase(session: Session, now: datetime, done: Erasure, hashes: set[str], customer: str | None,
           tickets: list[int], loose: list[int], mailed: list[int], quarantined: list[int]) -> None:
    """Blank what ``forget`` found, counting it into ``done``; the hashes it lets go of go into ``hashes``."""
    _erase_tickets(session, tickets, now, done, hashes)
    count, attachments = _erase_messages(session, loose, hashes)
    done.messages += count
    done.attachments += attachments
    for i in range(0, len(mailed), 500):
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(mailed[i:i + 500])).values(
            recipients=[], context={}, rate_key=None))
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(mailed[i:i + 500]), OutboxRow.status == "pending")
                        .values(status="failed", last_error="erased"))
    done.outbox += len(mailed)
    for qid in quarantined:
        row_q = session.get(QuarantineRow, qid)
        if row_q is not None:
            hashes.add(row_q.raw_sha256)
            row_q.from_addr, row_q.subject, row_q.traceback, row_q.raw_sha256 = "", "", "", ""
    done.quarantined = len(quarantined)
    if done.customer and customer is not None:
        row = session.get(CustomerRow, customer)
        assert row is not None
        row.name, row.addresses, row.domains, row.billing_address = ERASED, [], [], None
        store.forget_customers_sync(session)  # the next start writes the file's customers again, as before
    session.flush()


@dataclass
class Retention:
    raw_dropped_tickets: int = 0
    texts_removed_tickets: int = 0
    attachments: int = 0
    blobs: int = 0


# How far each period has been applied: the cutoff of the last run (state table, ISO time).
RAW_DONE_THROUGH = "retention_raw_through"
TEXTS_DONE_THROUGH = "retention_texts_through"
# A run looks again at tickets closed this long before the last run's cutoff: a ticket is closed at
# the time its closing mail arrived (``closed_at``), which may be days before the mail was read.
LOOK_BACK = timedelta(days=62)


def _past(session: Session, key: str, cutoff: datetime, now: datetime, *conditions: Any) -> list[int]:
    """The closed tickets before ``cutoff`` that match ``conditions`` and that no earlier run (its cutoff
    under ``key``) has seen, oldest first: a search of ``ix_tickets_closed`` from the last cutoff less
    ``LOOK_BACK``, so a day's run reads that day's closings, not every ticket ever closed. The first
    run reads from the start. A shorter period moves the cutoff on and the run covers the gap; a
    longer one moves it back, and the kept cutoff stays until time passes it (what lay between is gone)."""
    # the index's own condition, as text: a bound 'closed' would not match the partial index
    where = [text(CLOSED), Ticket.closed_at < cutoff, *conditions]
    kept = store.get_state(session, key)
    done = None if kept is None else datetime.fromisoformat(kept)
    if done is not None:
        where.append(Ticket.closed_at >= done - LOOK_BACK)
    tickets = list(session.scalars(select(Ticket.id).where(*where).order_by(Ticket.closed_at)))
    if done is None or done < cutoff:
        store.put_state(session.connection(), key, cutoff.isoformat(), now)
    return tickets


def apply_retention(session: Session, blobs: BlobStore, now: datetime, *, raw_mail_months: int,
                    closed_ticket_years: int, batch: int = 500) -> Retention:
    """Drop what the retention periods say is past keeping (0: keep forever), in the caller's transaction.

    ``raw_mail_months``: the raw mail and attachments of tickets closed that
    long ago (the texts stay readable on the ticket). ``closed_ticket_years``:
    also the texts, subjects and addresses of tickets closed that long ago; the
    ticket's numbers and its ledger rows stay. Each period remembers how far it
    has been applied (``_past``), so the daily run costs that day's closings.
    """
    done = Retention()
    hashes: set[str] = set()
    if raw_mail_months > 0:
        cutoff = now - timedelta(days=round(raw_mail_months * 30.44))
        holds_raw = select(MessageRow.id).where(MessageRow.ticket_id == Ticket.id,
                                                MessageRow.raw_sha256.is_not(None)).exists()
        tickets = _past(session, RAW_DONE_THROUGH, cutoff, now, holds_raw)
        for i in range(0, len(tickets), batch):
            part = tickets[i:i + batch]
            ids = list(session.scalars(select(MessageRow.id).where(MessageRow.ticket_id.in_(part))))
            done.attachments += _drop_bytes(session, ids, hashes)
        done.raw_dropped_tickets = len(tickets)
    if closed_ticket_years > 0:
        cutoff = now - timedelta(days=round(closed_ticket_years * 365.25))
        tickets = _past(session, TEXTS_DONE_THROUGH, cutoff, now, Ticket.subject != ERASED)
        erased = Erasure()
        _erase_tickets(session, tickets, now, erased, hashes)
        done.texts_removed_tickets = len(tickets)
        done.attachments += erased.attachments
    session.flush()
    done.blobs = drop_unreferenced(session, blobs, hashes)
    return done
