"""How a reader retries the mail a daemon died with in hand: as a group first, halved on each death.

An attempt of each mail is recorded before its batch is parsed
(``attempts.begin_attempts``) and taken back when its batch commits, so a mail
fetched again with an attempt still recorded was in hand when a daemon died (a
kill, the OOM killer, a crash): a *suspect*. Almost every death is not the
mail's doing (a restart, a watchdog, ``kill -9`` of the reader), and the dead
reader had two batches in hand (the one being stored and the one parsed ahead),
hundreds of mails. Retrying each of them alone, so that a second death is
charged to one mail only, cost 0.1-0.2 s a mail and minutes per kill; so the
suspects are narrowed down only as far as deaths make necessary:

1. the suspects of one fetched batch that died in an ordinary batch are retried
   together, as one group, with nothing else in hand;
2. a group that kills the daemon again is split in halves, each retried as a
   group of its own (its first half first; a half is split again only when it
   killed the daemon itself), and so on down to a single mail;
3. a single mail is retried alone; after ``MAX_ATTEMPTS`` attempts alone that
   never finished it is quarantined unparsed.

The bound: a mail that kills the daemon every time is quarantined after at most
``death_bound(B) = 1 + ceil(log2 B) + MAX_ATTEMPTS`` deaths with it in hand, B the
number of mail in a fetched batch (``batch_size``: 13 deaths for the default 500,
4 for a mail fetched alone). Innocent mail fetched with it is stored with the
first group or half that does not hold it; of it, only the other halves of the
last splits (two mails at most) are ever processed alone, and nothing is given
up unparsed before ``MAX_ATTEMPTS`` tries of its own, alone, never finished
(``tests/intake/test_suspects.py`` holds a model of the ingest loop to this).

Where a mail stands is kept in its ``failures`` row (the attempt recorded before
each try): ``attempts`` counts the tries never finished, ``last_error`` says how
the last one was made (``STARTED`` alone: an ordinary batch; with `` [group
<token>]``: a retried group; with `` [alone <n>]``: alone, the n-th time), or
that a group is planned and not tried yet (`` [queued <token>]``: the halves
of one split are queued together, before the first is tried). Any other
``last_error`` is a failure pinned on the mail itself (its parse overran the
deadline or crashed the worker): that mail is retried alone, each attempt counting.
Pure: data in, decisions out; the daemon records and runs them.
"""
from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_ATTEMPTS = 3
STARTED = "processing started, not finished (the daemon was killed, crashed or stopped)"
_HOW = re.compile(r" \[(group|alone|queued) ([0-9a-z]+)\]\Z")


@dataclass(frozen=True)
class Suspect:
    """A fetched mail with an attempt recorded and never finished."""

    key: str  # the mail's source key
    attempts: int
    last_error: str


@dataclass(frozen=True)
class Retry:
    """One step: the mails to process together, with nothing else in hand."""

    keys: tuple[str, ...]
    note: str  # the failures row's last_error, recorded with the attempt before the try
    alone: int  # the how-manyth attempt alone this is (0: a group)
    give_up: bool = False  # quarantine unparsed instead (a single mail): it died alone MAX_ATTEMPTS times
    queue: str = ""  # a group: the last_error recorded, with no attempt, for all steps before the first runs


def death_bound(batch_size: int) -> int:
    """Daemon deaths with a mail in hand after which the mail is quarantined at the latest."""
    return 1 + math.ceil(math.log2(max(batch_size, 1))) + MAX_ATTEMPTS


def group_note(token: str) -> str:
    return f"{STARTED} [group {token}]"


def queued_note(token: str) -> str:
    return f"{STARTED} [queued {token}]"


def alone_note(times: int) -> str:
    return f"{STARTED} [alone {times}]"


def _how(suspect: Suspect) -> tuple[str, str]:
    """("batch", ""), ("queued", token), ("group", token), or ("alone", times so far)."""
    if suspect.last_error == STARTED:
        return "batch", ""
    match = _HOW.search(suspect.last_error)
    if match is not None and suspect.last_error.startswith(STARTED):
        return match[1], match[2]
    # a failure pinned on the mail itself (a parse deadline, a crashed worker): each attempt counts
    return "alone", str(suspect.attempts)


def _new_token() -> str:
    return secrets.token_hex(6)


def plan_retries(suspects: Sequence[Suspect], new_token: Callable[[], str] = _new_token) -> list[Retry]:
    """The steps for the suspects of one fetched batch (in fetch order), in the order to run them."""
    steps: list[Retry] = []
    batch: list[str] = []
    groups: dict[str, list[str]] = {}
    order: list[tuple[str, str]] = []  # ("batch", ""), ("group", token) or ("alone", key), first seen first
    alone: dict[str, int] = {}
    for suspect in suspects:
        how, what = _how(suspect)
        if how == "batch":
            if not batch:
                order.append(("batch", ""))
            batch.append(suspect.key)
        elif how in ("group", "queued"):
            what = f"{how} {what}"
            if what not in groups:
                order.append(("group", what))
            groups.setdefault(what, []).append(suspect.key)
        else:
            order.append(("alone", suspect.key))
            alone[suspect.key] = int(what)

    def retry(keys: Sequence[str], times_alone: int = 0) -> Retry:
        if len(keys) > 1:
            token = new_token()
            return Retry(tuple(keys), group_note(token), 0, queue=queued_note(token))
        if times_alone >= MAX_ATTEMPTS:
            return Retry(tuple(keys), "", times_alone, give_up=True)
        return Retry(tuple(keys), alone_note(times_alone + 1), times_alone + 1)

    for how, what in order:
        if how == "batch":
            steps.append(retry(batch))  # died in an ordinary batch: retried as it was, narrowed later
        elif how == "group":
            keys = groups[what]
            if len(keys) == 1 or what.startswith("queued "):  # not tried yet: no death of its own
                steps.append(retry(keys))
            else:
                half = (len(keys) + 1) // 2
                steps += [retry(keys[:half]), retry(keys[half:])]
        else:
            steps.append(retry([what], alone[what]))
    return steps
