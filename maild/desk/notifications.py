"""Who among the consultants hears of a ticket event, and what their mail says about it.

Pure: the pipeline (and later ``TicketDesk``) hands in the ticket's facts and
the config, and gets back recipients, dedupe keys and template context. The
mail itself goes through the outbox like every other mail, one row per event
and consultant, written in the event's transaction (exactly once across
crashes by its dedupe key).

``present_consultants`` is the one place that decides who is at work; until
presence is tracked (issue #15) that is everyone with the consultant role.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from maild.config import Consultant
from maild.rules.command_help import REPLY_MARKER
from maild.rules.peak import PeakWindow
from maild.rules.reasons import for_reader
from maild.rules.wording import format_local_time

__all__ = [
    "Event",
    "REPLY_MARKER",
    "NotifyAttachment",
    "TicketView",
    "present_consultants",
    "new_ticket_recipients",
    "follow_up_recipients",
    "note_recipients",
    "dedupe_key",
    "split_attachments",
    "header_block",
    "cut_at_marker",
]

Event = Literal["new", "follow_up", "answer", "note"]

def present_consultants(consultants: Sequence[Consultant], at: datetime) -> tuple[Consultant, ...]:
    """Consultants at work at ``at``: whoever takes new work by mail.

    Every consultant: the fallback when no presence is given. Intake passes the
    team's presence (``desk.team.Team.present``: working days and absences).
    """
    del at
    return tuple(c for c in consultants if c.role == "consultant")


def _by_email(consultants: Sequence[Consultant], email: str | None) -> Consultant | None:
    if not email:
        return None
    wanted = email.casefold()
    return next((c for c in consultants if c.email.casefold() == wanted), None)


def _unique(people: Iterable[Consultant]) -> tuple[Consultant, ...]:
    seen: dict[str, Consultant] = {}
    for person in people:
        seen.setdefault(person.email, person)
    return tuple(seen.values())


def new_ticket_recipients(consultants: Sequence[Consultant], assigned_to: str | None, at: datetime,
                          managers_get_new: bool = False, exclude: str | None = None,
                          present: Sequence[Consultant] | None = None) -> tuple[Consultant, ...]:
    """A new ticket goes to its assignee, else to every present consultant; managers
    too when configured, and when nobody is present. ``exclude``: the consultant who opened it themselves;
    ``present``: who is at work (the team's presence), else ``present_consultants``."""
    assignee = _by_email(consultants, assigned_to)
    at_work = present_consultants(consultants, at) if present is None else tuple(present)
    people = [assignee] if assignee is not None else list(at_work)
    if not people or managers_get_new:  # nobody at work to take it: the managers hear of it
        people += [c for c in consultants if c.role == "manager"]
    return _unique(p for p in people if p.email != exclude)


def follow_up_recipients(consultants: Sequence[Consultant], assigned_to: str | None,
                         at: datetime, present: Sequence[Consultant] | None = None) -> tuple[Consultant, ...]:
    """A customer's follow-up goes to the assignee, or to all present consultants while unassigned."""
    assignee = _by_email(consultants, assigned_to)
    if assignee is not None:
        return (assignee,)
    return present_consultants(consultants, at) if present is None else tuple(present)


def note_recipients(consultants: Sequence[Consultant], assigned_to: str | None, writers: Iterable[str],
                    author: str) -> tuple[Consultant, ...]:
    """A consultant's answer or note goes to the others watching the ticket: its
    assignee and every consultant who wrote on it, never the author."""
    people = [_by_email(consultants, assigned_to), *(_by_email(consultants, w) for w in writers)]
    return _unique(p for p in people if p is not None and p.email != author.lower())


def dedupe_key(event: Event, ticket_id: int, source: str, recipient: str) -> str:
    """One mail per event and consultant: ``source`` names the event (the inbound
    mail's dedupe key, or the ticket for its creation)."""
    return f"notify:{event}:{ticket_id}:{recipient}:{source}"[:400]


@dataclass(frozen=True)
class NotifyAttachment:
    filename: str
    content_type: str
    size: int
    sha256: str


def split_attachments(attachments: Sequence[NotifyAttachment],
                      max_bytes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(attached, named only): files up to ``max_bytes`` in all travel with the
    notification; the rest are named with their size so the consultant knows to
    look at the ticket. Taken in order, so what fits is what came first."""
    attached: list[dict[str, Any]] = []
    named: list[dict[str, Any]] = []
    total = 0
    for att in attachments:
        entry = {"filename": att.filename, "content_type": att.content_type, "size": att.size, "sha256": att.sha256}
        if total + att.size <= max_bytes:
            attached.append(entry)
            total += att.size
        else:
            named.append(entry)
    return attached, named


@dataclass(frozen=True)
class TicketView:
    """What a notification's header block says about a ticket (plain values, no ORM)."""

    ref: str
    subject: str
    customer_name: str
    contract_id: str
    contract_kind: str
    tier_name: str
    priority: str
    reasons: tuple[str, ...]
    reaction_due: datetime | None
    minutes_left: int | None  # on the contract: sla balance or prepaid minutes; None for occasional
    assigned_to: str | None
    requester: str
    status: str


def header_block(view: TicketView, tz: ZoneInfo, new_ticket_address: str, language: str = "en",
                 peak_windows: Sequence[PeakWindow] = ()) -> dict[str, Any]:
    """The template context of the short block at the top of a notification:
    everything a consultant needs to decide what to do without opening the queue
    (the priority's reasons in the notification's ``language``; ``peak_windows``: the
    configured ones, whose labels name a peak period). The commands' help and the reply
    marker, the same in every notification of a language, are not in it: the notification
    is rendered with them (``rules.command_help.notification_values``)."""
    due = format_local_time(view.reaction_due, tz.key, language) if view.reaction_due else ""
    return {
        "ref": view.ref, "subject": view.subject, "customer": view.customer_name or view.requester,
        "contract_id": view.contract_id, "contract_kind": view.contract_kind, "tier": view.tier_name,
        "priority": view.priority, "reasons": _priority_reasons(view, language, peak_windows),
        "due_local": due, "timezone": tz.key, "minutes_left": view.minutes_left,
        "assigned_to": view.assigned_to or "", "requester": view.requester, "status": view.status,
        "new_ticket_address": new_ticket_address,
    }


def _priority_reasons(view: TicketView, language: str, peak_windows: Sequence[PeakWindow]) -> list[str]:
    """Why the ticket has its priority, in ``language`` and short ("w wiadomości pilne słowa:
    „awaria”" after "sla P1 - "): the header block is read at a glance; the full list is in
    ``maild tickets show``.

    Only the lines of the ticket's present priority, without their "P1: " (the line shows the
    priority just before): after a consultant's ``#priority`` the stored line explains the
    priority maild gave, which no longer holds (a ticket opened on a customer's behalf with
    ``#priority P1`` read "P1 - P3: routine")."""
    own = view.priority + ":"
    lines = [_worded(r, language, peak_windows)[len(own):].strip() for r in view.reasons if r.startswith(own)]
    return [r if len(r) <= 96 else r[:95] + "…" for r in lines if r][:2]


# A backlog's notifications repeat a few reasons ("P3: routine" in most): each is worded once per
# language and windows (the config's tuple, known by identity: hashing every window per call costs more).
_WORDED: dict[tuple[str, str, int], tuple[Sequence[PeakWindow], str]] = {}


def _worded(text: str, language: str, peak_windows: Sequence[PeakWindow]) -> str:
    key = (text, language, id(peak_windows))
    hit = _WORDED.get(key)
    if hit is not None and hit[0] is peak_windows:
        return hit[1]
    worded = for_reader(text, language, peak_windows)
    if len(_WORDED) >= 4096:
        _WORDED.clear()
    _WORDED[key] = (peak_windows, worded)
    return worded


def cut_at_marker(text: str) -> str:
    """A consultant's text up to our reply marker (the whole text when there is none)."""
    index = text.find(REPLY_MARKER)
    if index < 0:
        return text
    head = text[:index]
    # the marker may be quoted ("> ## ---") or follow an attribution line: drop that line too
    lines = head.split("\n")
    if lines and lines[-1].strip(" >\t") == "":
        lines.pop()
    return "\n".join(lines).rstrip() + ("\n" if lines else "")
