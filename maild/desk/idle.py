"""Whether the desk's timed work has anything to do now, read with SQLAlchemy Core.

The daemon asks these before it loads the desk (the ORM, the mapped classes,
the templates): a cycle of ``run --once`` that finds nothing to do then costs
a few indexed reads instead of that start-up, a third of the command. Each
answer errs on the side of work: ``True`` whenever the desk's own rule might
act (``sweeper.Sweeper.sweep``, ``morning.queue_digests``), and then the desk
decides as before. A ``False`` must never hide work: ``tests/ops/test_idle.py``
has a fresh daemon do each kind of work, and fails when a rule here misses it.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, select

from maild.config import Config, Consultant
from maild.desk.digest import digest_day, digest_key
from maild.rules.calendar import BusinessCalendar
from maild.rules.customers import Customer
from maild.rules.kinds import rules_of
from maild.rules.presence import Absence, covering, is_present
from maild.storage.queries import OPEN_STATUSES
from maild.storage.tables import absences, outbox, tickets

T = tickets.c


def sweep_has_work(db: Connection, config: Config, customers: Sequence[Customer], calendar: BusinessCalendar,
                   now: datetime) -> bool:
    """Whether a sweep at ``now`` may escalate, close, reassign or remind: the four things it does."""
    due = select(T.id).where(T.next_escalation_at.is_not(None), T.next_escalation_at <= now).limit(1)
    if db.scalar(due) is not None:
        return True
    cutoff = now - timedelta(days=config.support.close_after_days)
    if db.scalar(select(T.id).where(T.status == "resolved", T.resolved_at <= cutoff).limit(1)) is not None:
        return True
    day = now.astimezone(calendar.tz).date()
    away = [c.email for c in absent(db, config, calendar, day)]
    if away and db.scalar(select(T.id).where(T.assigned_to.in_(away), T.status.in_(OPEN_STATUSES))
                          .limit(1)) is not None:
        return True
    return bool(_unsent(db, expiry_keys(config, customers, day)))


def digests_due(db: Connection, config: Config, calendar: BusinessCalendar, now: datetime) -> bool:
    """Whether a morning digest is due and not queued yet for someone who gets one today."""
    settings = config.notifications
    if not config.consultants or not settings.enabled:
        return False
    day = digest_day(now, settings.digest_at, calendar)
    if day is None:
        return False
    known = _absences(db, config)
    people = [c for c in config.consultants if c.role == "consultant"
              and is_present(day, days=c.days, absences=known.get(c.email, ()), calendar=calendar)]
    people += list(config.managers)
    return bool(_unsent(db, [digest_key(p.email, day) for p in people]))


def absent(db: Connection, config: Config, calendar: BusinessCalendar, day: date) -> list[Consultant]:
    """The consultants an absence keeps away on ``day`` (``team.Team.reassign_absent``'s rule)."""
    known = _absences(db, config)
    return [c for c in config.consultants
            if c.role == "consultant"
            and not is_present(day, days=c.days, absences=known.get(c.email, ()), calendar=calendar)
            and covering(known.get(c.email, ()), day) is not None]


def expiry_keys(config: Config, customers: Sequence[Customer], today: date) -> list[str]:
    """The outbox keys of the packages inside the expiry reminder's window with somebody to tell
    (``sweeper.remind_expiring_packages``; whether hours are left is the desk's to read)."""
    days = config.ledger.expiry_reminder_days
    if days <= 0:
        return []
    horizon = today + timedelta(days=days)
    keys = []
    for customer in customers:
        if customer.billing_address is None and not customer.addresses:
            continue
        keys += [f"expiry:{c.id}" for c in customer.contracts
                 if rules_of(c.kind).packages and c.valid_until is not None
                 and c.start <= today <= c.valid_until <= horizon and (c.end is None or c.end >= c.valid_until)]
    return keys


def _absences(db: Connection, config: Config) -> dict[str, tuple[Absence, ...]]:
    """Every consultant's absences, the config's and the database's (``team.Team.absences``)."""
    found: dict[str, list[Absence]] = {c.email: list(c.away) for c in config.consultants}
    rows = db.execute(select(absences.c.consultant, absences.c.start, absences.c.until, absences.c.note)
                      .order_by(absences.c.start))
    for consultant, start, until, note in rows:
        found.setdefault(consultant, []).append(Absence(start, until, note, "database"))
    return {k: tuple(v) for k, v in found.items()}


def _unsent(db: Connection, keys: Sequence[str]) -> set[str]:
    """The keys no outbox row holds yet."""
    if not keys:
        return set()
    queued = set(db.scalars(select(outbox.c.dedupe_key).where(outbox.c.dedupe_key.in_(list(keys)))))
    return set(keys) - queued
