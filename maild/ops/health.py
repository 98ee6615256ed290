"""Health: what ``maild status`` shows and when the managers get an alert mail.

The decision is pure (``alert_transitions``): given the current problems and
the ones already alerted, which alerts and "recovered" mails to send. The
daemon stores the alerted set in the state table, so each problem produces one
alert and, later, one recovery mail, across restarts too.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Integer, TextualSelect, func, select, text

from maild.rules.wording import format_problem
from maild.storage import queries
from maild.storage.queries import Reader, dialect_name
from maild.storage.tables import AWAITING_REACTION, UtcDateTime, quarantine, tickets


@dataclass(frozen=True)
class Health:
    now: datetime
    last_fetch_at: datetime | None
    outbox_depth: int
    oldest_unsent: datetime | None
    quarantined: int
    open_tickets: int
    nearest_due: tuple[tuple[int, datetime], ...]  # (ticket id, reaction_due), soonest first
    # mail the last cycle left on the source (to retry); None before the first cycle
    mail_waiting: int | None = None

    @property
    def oldest_unsent_age(self) -> timedelta | None:
        return None if self.oldest_unsent is None else self.now - self.oldest_unsent


def _nearest_due(dialect: str) -> TextualSelect:
    """The open tickets awaiting a first response, soonest deadline first, read from the partial index.

    SQLite, with no statistics, would rather take ``ix_tickets_status`` and sort
    every open ticket; ``INDEXED BY`` holds it to the index made for this.
    """
    hint = " INDEXED BY ix_tickets_awaiting_reaction" if dialect == "sqlite" else ""
    return text(
        f"SELECT id, reaction_due FROM tickets{hint} WHERE {AWAITING_REACTION} ORDER BY reaction_due LIMIT :n"
    ).columns(id=Integer, reaction_due=UtcDateTime)


def read_health(db: Reader, now: datetime, nearest: int = 5, queue: bool = True) -> Health:
    """The figures of ``maild status``; ``queue=False`` reads only what the alerts need.

    The daemon checks for alerts every cycle, and the alert rule looks at the
    last fetch and the outbox only: counting the open tickets and the held
    quarantine there cost a scan that grew with the queue (0.3 s a cycle with
    800,000 open tickets). Without ``queue`` those figures are 0 and empty.
    ``db``: the daemon's session, or ``status``'s Connection (no ORM loaded).
    """
    last = queries.get_state(db, "last_fetch_at")
    waiting = queries.get_state(db, "mail_waiting")
    depth, oldest = queries.outbox_stats(db, now)
    quarantined = open_count = 0
    due: list[Any] = []
    if queue:
        quarantined = int(db.scalar(
            select(func.count()).select_from(quarantine).where(quarantine.c.status == "held")) or 0)
        open_count = int(db.scalar(
            select(func.count()).select_from(tickets).where(tickets.c.status.in_(queries.OPEN_STATUSES))) or 0)
        due = list(db.execute(_nearest_due(dialect_name(db)), {"n": nearest}).all())
    return Health(
        now=now, last_fetch_at=datetime.fromisoformat(last) if last else None, outbox_depth=depth,
        oldest_unsent=oldest, quarantined=quarantined, open_tickets=open_count,
        nearest_due=tuple((int(tid), due_at) for tid, due_at in due if due_at is not None),
        mail_waiting=int(waiting) if waiting is not None and waiting.isdigit() else None,
    )


@dataclass(frozen=True)
class Problem:
    """A current problem: its English sentence (the log's, and the English alert's) and its
    figures, from which a Polish alert words it (templates/pl/alert.txt)."""

    text: str
    figures: Mapping[str, Any] = field(default_factory=dict)


def problems(health: Health, fetch_stale: timedelta, outbox_stale: timedelta,
             started_at: datetime) -> dict[str, Problem]:
    """Current problems by key, each with a sentence and figures for the alert mail."""
    found: dict[str, Problem] = {}
    since = health.last_fetch_at or started_at
    if health.now - since > fetch_stale:
        last, limit = since.isoformat(timespec="minutes"), int(fetch_stale.total_seconds() // 60)
        found["fetch"] = Problem(f"no successful mailbox fetch since {last} (limit {limit} min)",
                                 {"last": last, "limit": limit})
    age = health.oldest_unsent_age
    if age is not None and age > outbox_stale:
        oldest, limit = int(age.total_seconds() // 60), int(outbox_stale.total_seconds() // 60)
        found["outbox"] = Problem(f"{health.outbox_depth} mails unsent, the oldest for {oldest} min (limit {limit} min)",
                                  {"unsent": health.outbox_depth, "oldest": oldest, "limit": limit})
    return found


P = TypeVar("P")


def alert_transitions(current: Mapping[str, P], alerted: set[str]) -> tuple[dict[str, P], set[str]]:
    """(new alerts to send, recoveries to send)."""
    new = {key: text for key, text in current.items() if key not in alerted}
    recovered = {key for key in alerted if key not in current}
    return new, recovered


def alert_name(key: str) -> str:
    """The problem's English name, for the log (the alert mail names it in its reader's language)."""
    return format_problem(key, "en") or key


@dataclass(frozen=True)
class AlertMail:
    key: str
    recovered: bool
    detail: str
    since: datetime
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """One row per problem occurrence: the same problem later is a new occurrence."""
        kind = "recovered" if self.recovered else "alert"
        return f"{kind}:{self.key}:{self.since.isoformat()}"

    def context(self, timezone: str) -> dict[str, Any]:
        """The alert template's context. Times stay instants (ISO): the template words them in the
        business ``timezone`` and the reader's language; ``what`` and ``detail`` (English) are for
        operators' templates of earlier versions, which print them."""
        return {"what": alert_name(self.key), "detail": self.detail, "since": self.since.isoformat(timespec="minutes"),
                "recovered": self.recovered, "key": self.key, "figures": dict(self.figures), "timezone": timezone}


def plan_alerts(current: Mapping[str, Problem], alerted: dict[str, datetime],
                now: datetime) -> tuple[list[AlertMail], dict[str, datetime]]:
    """The mails to queue and the alerted set (problem -> since) to store afterwards."""
    new, recovered = alert_transitions(current, set(alerted))
    mails = [AlertMail(key, False, p.text, now, p.figures) for key, p in sorted(new.items(), key=lambda item: item[0])]
    mails += [AlertMail(key, True, f"{alert_name(key)} is working again", alerted[key])
              for key in sorted(recovered)]
    after = {k: v for k, v in alerted.items() if k not in recovered}
    after.update({key: now for key in new})
    return mails, after
