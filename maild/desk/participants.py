"""Who joins a ticket: its participants get every answer in copy and may write to it.

A customer mail with 998 recipients made the next consultant answer go to 999
addresses, and a forged reply with ``Cc: attacker@...`` had the attacker
copied from then on. So a customer's mail adds only addresses of the
customer's own domains (the sender's domain and those the customers file
lists for them), up to ``[support] max_participants`` in all; a consultant
may add anyone (still up to the cap); an unverified reply adds no one. Our
own addresses (also ``support+anything@``) and the consultants are never
participants. Pure: the caller passes what it knows and records what was
dropped.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Joining", "screen_participants"]


@dataclass(frozen=True)
class Joining:
    added: tuple[str, ...]
    dropped: tuple[str, ...]  # other domains, or over the cap
    reason: str  # why anything was dropped ("" when nothing was)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].casefold()


def _is_own(address: str, own: Collection[str]) -> bool:
    local, _, domain = address.rpartition("@")
    return address in own or f"{local.split('+', 1)[0]}@{domain}" in own


def screen_participants(candidates: Iterable[str], *, current: Sequence[str], limit: int,
                        home_domains: Collection[str] | None, own: Collection[str],
                        consultants: Collection[str]) -> Joining:
    """Which of ``candidates`` (sender first) join a ticket that has ``current``.

    ``home_domains``: the domains a customer's mail may add; None when a
    consultant adds them (any domain).
    """
    present = {a.casefold() for a in current}
    added: list[str] = []
    foreign: list[str] = []
    over: list[str] = []
    for address in candidates:
        address = address.strip()
        folded = address.casefold()
        if not address or "@" not in address or folded in present or _is_own(folded, own) or folded in consultants:
            continue
        present.add(folded)
        if home_domains is not None and _domain(address) not in home_domains:
            foreign.append(address)
        elif len(current) + len(added) >= limit:
            over.append(address)
        else:
            added.append(address)
    reasons = []
    if foreign:
        reasons.append(f"{len(foreign)} of other domains than {', '.join(sorted(home_domains or ()))} "
                       f"(a consultant may add them)")
    if over:
        reasons.append(f"{len(over)} over the limit of {limit} participants")
    return Joining(tuple(added), tuple(foreign + over), "; ".join(reasons))
