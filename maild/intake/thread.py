"""Which ticket an inbound message belongs to.

The decision is pure: the store answers questions through ``ThreadLookup`` and
everything else (sender's customer, consultant or not, the clock) is passed in,
so every threading rule is tested without a database.

Order of evidence, strongest first:

1. our tag ``[SUP-123]`` anywhere in the subject: people keep it even when
   their client breaks References (forwarding, new mail with a pasted subject);
2. In-Reply-To / References naming any Message-ID we stored, ours or theirs;
3. plus-addressing in a recipient: ``support+SUP-123@`` or ``support+123@``.

A candidate ticket is joined only if the sender may see it (a consultant, the
ticket's customer, or an address already on the thread). A refused candidate
is recorded in ``reasons`` and the next, weaker evidence is tried; a ticket
number is easy to mistype or guess, and one customer's mail must never land on
another customer's ticket, nor be linked to it.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal, Protocol

__all__ = [
    "ThreadSettings",
    "TicketFacts",
    "ThreadLookup",
    "ThreadDecision",
    "ThreadRule",
    "ticket_tag",
    "find_tag_numbers",
    "clean_subject",
    "decide_thread",
]

ThreadRule = Literal["tag", "references", "plus", "new"]

CLOSED_STATUSES = frozenset({"resolved", "closed"})

# Ticket numbers are bounded so that a hostile subject cannot make us build a
# huge int; twelve digits outlive any support desk.
_MAX_NUMBER_DIGITS = 12


@dataclass(frozen=True, kw_only=True)
class ThreadSettings:
    ticket_prefix: str = "SUP"
    support_addresses: frozenset[str]
    reopen_window: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", self.ticket_prefix):
            raise ValueError(
                f"ticket_prefix {self.ticket_prefix!r}: use letters and digits, starting with a letter"
            )
        object.__setattr__(
            self, "support_addresses", frozenset(a.strip().lower() for a in self.support_addresses)
        )


@dataclass(frozen=True)
class TicketFacts:
    """What the store tells us about a candidate ticket."""

    ticket_id: int
    number: int
    customer_id: str | None
    status: str  # new / open / waiting / resolved / closed
    resolved_at: datetime | None
    participants: frozenset[str] = field(default_factory=frozenset)


class ThreadLookup(Protocol):
    def by_number(self, number: int) -> TicketFacts | None: ...

    def by_message_ids(self, message_ids: Sequence[str]) -> TicketFacts | None:
        """Any stored Message-ID, ours and theirs; the most recent ticket if several.

        ``message_ids`` come oldest first, the direct parent last, without repeats.
        """
        ...


@dataclass(frozen=True)
class ThreadDecision:
    """Where the message goes, and why.

    ``link_to`` is the ``ticket_id`` (not the display number) of an older
    ticket of the same customer that a new ticket should point to; it is set
    only for a reply that came after the reopen window.
    """

    ticket: TicketFacts | None
    rule: ThreadRule
    reopen: bool
    link_to: int | None
    reasons: tuple[str, ...]


def ticket_tag(prefix: str, number: int) -> str:
    return f"[{prefix}-{number}]"


@lru_cache(maxsize=16)  # a pattern per configured prefix, not one built per subject
def _tag_re(prefix: str) -> re.Pattern[str]:
    # re.ASCII: under Unicode case folding "ſ" would match "s" and Arabic-Indic
    # digits would count as a ticket number; neither is our tag.
    return re.compile(
        rf"\[{re.escape(prefix)}-([0-9]{{1,{_MAX_NUMBER_DIGITS}}})\]", re.IGNORECASE | re.ASCII
    )


def find_tag_numbers(subject: str, prefix: str) -> tuple[int, ...]:
    """Ticket numbers tagged in the subject, in order of appearance, without repeats."""
    seen: dict[int, None] = {}
    for match in _tag_re(prefix).finditer(subject):
        seen.setdefault(int(match.group(1)), None)
    return tuple(seen)


# Reply and forward markers of the clients our customers use: English, Polish
# (Odp, PD = "przekaż dalej"), German (AW, WG), Nordic (SV, VS) and counted
# forms such as "Re[2]:" or "Re(3):". Single letters (Italian "R:", "I:") are
# left alone: they are too easily the start of a real subject.
_REPLY_PREFIX = re.compile(
    r"(?:re|odp\.?|aw|antw|fwd?|pd|wg|sv|vs|tr)\s*(?:\[[0-9]+\]|\([0-9]+\))?\s*:\s*",
    re.IGNORECASE | re.ASCII,
)


def clean_subject(subject: str, prefix: str) -> str:
    """The subject a person would recognise: no reply/forward prefixes, no tags.

    Used both for display and for comparing subjects, so it must be idempotent;
    tags are replaced by a space (never by nothing) so removing one cannot
    glue its neighbours into a new tag.
    """
    text = _tag_re(prefix).sub(" ", subject)
    text = " ".join(text.split())
    while True:
        match = _REPLY_PREFIX.match(text)
        if match is None or match.end() == 0:
            break
        text = text[match.end():].lstrip()
    return text


@lru_cache(maxsize=16)
def _plus_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"(?:{re.escape(prefix)}-)?([0-9]{{1,{_MAX_NUMBER_DIGITS}}})", re.IGNORECASE | re.ASCII)


def _plus_numbers(
    recipients: Sequence[str], settings: ThreadSettings
) -> Iterator[tuple[str, int]]:
    plus_detail = _plus_re(settings.ticket_prefix)
    for recipient in recipients:
        address = recipient.strip().lower()
        local, at, domain = address.rpartition("@")
        if not at or "+" not in local:
            continue
        base, _, detail = local.partition("+")
        if f"{base}@{domain}" not in settings.support_addresses:
            continue
        match = plus_detail.fullmatch(detail)
        if match is not None:
            yield address, int(match.group(1))


def _may_join(
    ticket: TicketFacts,
    *,
    from_addr: str,
    sender_customer_id: str | None,
    sender_is_consultant: bool,
) -> bool:
    if sender_is_consultant:
        return True
    if sender_customer_id is not None and sender_customer_id == ticket.customer_id:
        return True
    return from_addr in {p.lower() for p in ticket.participants}


def _describe_owner(customer_id: str | None) -> str:
    return f"customer {customer_id}" if customer_id is not None else "no customer"


def decide_thread(
    *,
    subject: str,
    from_addr: str,
    recipients: Sequence[str],
    in_reply_to: Sequence[str],
    references: Sequence[str],
    sender_customer_id: str | None,
    sender_is_consultant: bool,
    lookup: ThreadLookup,
    settings: ThreadSettings,
    now: datetime,
) -> ThreadDecision:
    """Choose the ticket for a message; see the module docstring for the rules.

    ``now`` and ``resolved_at`` must both be timezone-aware (UTC in the store).
    """
    prefix = settings.ticket_prefix
    sender = from_addr.strip().lower()
    reasons: list[str] = []

    def candidates() -> Iterator[tuple[ThreadRule, str, TicketFacts]]:
        for number in find_tag_numbers(subject, prefix):
            ticket = lookup.by_number(number)
            label = f"tag {prefix}-{number}"
            if ticket is None:
                reasons.append(f"{label} names no ticket")
                continue
            yield "tag", label, ticket
        # Oldest first, newest last, as in References itself: a lookup that
        # must cap a long chain keeps the tail, where the direct parent is.
        message_ids = list(dict.fromkeys(i for i in (*references, *in_reply_to) if i))
        if message_ids:
            ticket = lookup.by_message_ids(message_ids)
            if ticket is None:
                reasons.append(f"none of {len(message_ids)} referenced Message-IDs is ours")
            else:
                yield "references", f"references of {prefix}-{ticket.number}", ticket
        for address, number in _plus_numbers(recipients, settings):
            ticket = lookup.by_number(number)
            label = f"recipient {address}"
            if ticket is None:
                reasons.append(f"{label} names no ticket")
                continue
            yield "plus", label, ticket

    for rule, label, ticket in candidates():
        ref = f"{prefix}-{ticket.number}"
        if not _may_join(
            ticket,
            from_addr=sender,
            sender_customer_id=sender_customer_id,
            sender_is_consultant=sender_is_consultant,
        ):
            reasons.append(
                f"{label} names a ticket of {_describe_owner(ticket.customer_id)}; sender {sender} is "
                f"{_describe_owner(sender_customer_id)} and not on the thread: not joined, not linked"
            )
            continue
        if ticket.status not in CLOSED_STATUSES:
            reasons.append(f"{label}: joins {ref} ({ticket.status})")
            return ThreadDecision(ticket, rule, reopen=False, link_to=None, reasons=tuple(reasons))
        if sender_is_consultant:
            reasons.append(
                f"{label}: consultant mail joins {ticket.status} {ref} without reopening it"
            )
            return ThreadDecision(ticket, rule, reopen=False, link_to=None, reasons=tuple(reasons))
        if ticket.resolved_at is None:
            reasons.append(f"{label}: {ref} is {ticket.status} with no resolution time: reopened")
            return ThreadDecision(ticket, rule, reopen=True, link_to=None, reasons=tuple(reasons))
        since = now - ticket.resolved_at
        if since <= settings.reopen_window:
            reasons.append(
                f"{label}: {ref} {ticket.status} {_format_age(since)} ago, within the "
                f"{_format_age(settings.reopen_window)} reopen window: reopened"
            )
            return ThreadDecision(ticket, rule, reopen=True, link_to=None, reasons=tuple(reasons))
        reasons.append(
            f"{label}: {ref} {ticket.status} {_format_age(since)} ago, after the "
            f"{_format_age(settings.reopen_window)} reopen window: new ticket linked to {ref}"
        )
        return ThreadDecision(
            None, "new", reopen=False, link_to=ticket.ticket_id, reasons=tuple(reasons)
        )

    reasons.append("no ticket matched: new ticket")
    return ThreadDecision(None, "new", reopen=False, link_to=None, reasons=tuple(reasons))


def _format_age(delta: timedelta) -> str:
    delta = max(delta, timedelta(0))
    if delta.days >= 1:
        return f"{delta.days} d"
    hours = delta.seconds // 3600
    if hours >= 1:
        return f"{hours} h"
    return f"{delta.seconds // 60} min"
