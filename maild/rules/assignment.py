"""Who gets a new ticket: the least loaded present consultant, or the next in turn.

Load is weighted by what a ticket asks of a consultant, its kind's ``weight``
(``kinds.KINDS``): an ``sla`` ticket runs against a clock and counts three, a
``prepaid`` one two, an ``occasional`` or unverified one one. Ties go to
whoever has waited longest since their last assignment, so a quiet week spreads
work instead of piling it on the first name in the config.

Pure: the desk hands in the present consultants with their loads and gets back
an address. Managers never reach this function (the caller leaves them out).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from maild.rules.kinds import rules_of

__all__ = ["Candidate", "Mode", "MODES", "choose_assignee", "ticket_weight"]

Mode = Literal["least_loaded", "round_robin", "none"]
MODES: tuple[Mode, ...] = ("least_loaded", "round_robin", "none")
_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def ticket_weight(contract_kind: str, verified: bool = True) -> int:
    """What one open ticket adds to its assignee's load."""
    if not verified:
        return 1
    return rules_of(contract_kind).weight


@dataclass(frozen=True)
class Candidate:
    """A present consultant as the assignment sees them."""

    email: str
    weighted_load: int = 0
    last_assigned_at: datetime | None = None


def choose_assignee(candidates: Sequence[Candidate], mode: Mode, preferred: str | None = None) -> str | None:
    """The address to assign, or None (no candidate, or assignment switched off).

    A customer's preferred consultant wins whenever they are among the candidates
    (that is, present); otherwise the mode decides.
    """
    if mode == "none" or not candidates:
        return None
    if preferred:
        wanted = preferred.casefold()
        for c in candidates:
            if c.email.casefold() == wanted:
                return c.email
    if mode == "round_robin":
        best = min(candidates, key=lambda c: (c.last_assigned_at or _NEVER, c.email))
    else:
        best = min(candidates, key=lambda c: (c.weighted_load, c.last_assigned_at or _NEVER, c.email))
    return best.email
