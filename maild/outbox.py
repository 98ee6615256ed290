"""Draining the outbox: rows -> rendered mail -> SMTP, with retries and backoff.

A row is marked sent only after the server accepted the mail, and that mark is
committed before the next mail goes out, so a crash can cause at most one
resend. Rows are claimed with a short lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so several daemons can drain one outbox without sending twice.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from . import store
from .blobs import BlobStore
from .models import OutboxRow
from .render import RenderError, Renderer, one_line
from .smtp import Envelope, SmtpError, SmtpSender, SmtpSettings, SmtpUnavailable

log = logging.getLogger("maild.outbox")
UTC = timezone.utc
LEASE = timedelta(minutes=5)
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=3)


def retry_delay(attempts: int, base: timedelta = RETRY_BASE) -> timedelta:
    """Exponential backoff: 30 s, 1 min, 2 min, ... capped at one hour."""
    delay: timedelta = base * (2 ** min(max(attempts - 1, 0), 20))
    return min(delay, RETRY_CAP)


@dataclass(frozen=True)
class Sender:
    """Who outgoing mail is from, and what marks it as ours."""

    address: str
    name: str
    instance_id: str


@dataclass
class DrainResult:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def build_mail(row: OutboxRow, renderer: Renderer, sender: Sender, blobs: BlobStore | None,
               now: datetime) -> bytes:
    context: dict[str, Any] = dict(row.context)
    headers: dict[str, Any] = context.pop("_headers", {})
    subject, body = renderer.render(row.template, row.language, context)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((one_line(headers.get("from_name") or sender.name, 100), sender.address))
    cc = [a for a in headers.get("cc", []) if a]
    to = [a for a in row.recipients if a not in cc]
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = one_line(subject, 900)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{row.message_id}>"
    if headers.get("in_reply_to"):
        msg["In-Reply-To"] = f"<{one_line(headers['in_reply_to'], 900)}>"
    refs = [one_line(r, 900) for r in headers.get("references", []) if r]
    if refs:
        msg["References"] = " ".join(f"<{r}>" for r in refs)
    if row.automatic:
        msg["Auto-Submitted"] = "auto-replied" if row.kind in ("ack", "command_error") else "auto-generated"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = "auto_reply" if row.kind == "ack" else "bulk"
    msg["X-Maild-Origin"] = one_line(sender.instance_id, 100)
    if headers.get("ticket_ref"):
        msg["X-Maild-Ticket"] = one_line(headers["ticket_ref"], 100)
    msg["Content-Language"] = row.language
    msg.set_content(body, charset="utf-8")
    for att in headers.get("attachments", []):
        if blobs is None:
            continue
        maintype, _, subtype = str(att.get("content_type", "application/octet-stream")).partition("/")
        msg.add_attachment(blobs.get(att["sha256"]), maintype=maintype or "application",
                           subtype=subtype or "octet-stream", filename=one_line(att.get("filename", "attachment"), 200))
    return msg.as_bytes()


class Outbox:
    def __init__(self, sessions: sessionmaker[Session], renderer: Renderer, smtp: SmtpSettings, sender: Sender,
                 blobs: BlobStore | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retry_base: timedelta = RETRY_BASE) -> None:
        self.sessions = sessions
        self.retry_base = retry_base
        self.renderer = renderer
        self.smtp = smtp
        self.sender = sender
        self.blobs = blobs
        self.clock = clock

    def drain(self, limit: int = 10000) -> DrainResult:
        return asyncio.run(self.drain_async(limit))

    def _claim(self, chunk: int) -> list[int]:
        """Rows to send now. On PostgreSQL, where several daemons may drain one
        outbox, they are leased for ``LEASE`` so no other daemon takes them; a
        crashed daemon's lease simply runs out. SQLite has one daemon per file,
        so no lease: a restart sends at once what a crash left unsent."""
        now = self.clock()
        with self.sessions() as session, session.begin():
            rows = store.due_outbox(session, now, chunk)
            if session.get_bind().dialect.name != "sqlite":
                for row in rows:
                    row.next_attempt_at = now + LEASE
            return [row.id for row in rows]

    async def drain_async(self, limit: int = 10000) -> DrainResult:
        result = DrainResult()
        async with SmtpSender(self.smtp) as smtp:
            while result.sent + result.retry + result.failed < limit:
                ids = self._claim(min(200, limit))
                if not ids:
                    break
                for position, row_id in enumerate(ids):
                    try:
                        await self._send_one(smtp, row_id, result)
                    except SmtpError:
                        self._release(ids[position:])
                        raise
        return result

    def _release(self, ids: list[int]) -> None:
        """Give claimed rows back, due at once: the caller backs off the relay as a
        whole, and rows that all stay due keep going out oldest first."""
        now = self.clock()
        with self.sessions() as session, session.begin():
            for row in session.scalars(select(OutboxRow).where(OutboxRow.id.in_(ids), OutboxRow.status == "pending")):
                row.next_attempt_at = min(row.next_attempt_at, now)

    async def _send_one(self, smtp: SmtpSender, row_id: int, result: DrainResult) -> None:
        now = self.clock()
        with self.sessions() as session:
            row = session.get(OutboxRow, row_id)
            if row is None or row.status != "pending":
                return
            try:
                data = build_mail(row, self.renderer, self.sender, self.blobs, now)
            except (RenderError, OSError, KeyError, ValueError) as exc:
                self._retry(row, now, f"cannot render: {exc}", result)
                session.commit()
                return
            delivery = await smtp.send(Envelope(self.sender.address, tuple(row.recipients), data))
            if delivery.outcome == "retry" and not smtp.connected:
                # the relay is unreachable, not this mail's fault: the row stays due, in its
                # place in the queue, and the caller backs off the relay as a whole
                row.attempts += 1
                row.last_error = delivery.reply[:2000]
                session.commit()
                raise SmtpUnavailable(delivery.reply)
            row.attempts += 1
            if delivery.outcome == "sent":
                row.status, row.sent_at, row.last_error = "sent", self.clock(), "; ".join(
                    f"{a}: {r}" for a, r in delivery.refused.items())
                result.sent += 1
            elif delivery.outcome == "failed":
                row.status, row.last_error = "failed", delivery.reply[:2000]
                result.failed += 1
                log.error("outbox %d (%s, %s) failed permanently: %s", row.id, row.kind, row.message_id, delivery.reply)
                if row.ticket_id is not None:
                    store.add_event(session, row.ticket_id, "delivery_failed", now, recipients=list(row.recipients),
                                    status=delivery.reply[:200], permanent=True, outbox_id=row.id)
            else:
                self._retry(row, now, delivery.reply, result)
            session.commit()

    def _retry(self, row: OutboxRow, now: datetime, reason: str, result: DrainResult) -> None:
        row.last_error = reason[:2000]
        if now - row.created_at > GIVE_UP_AFTER:
            row.status = "failed"
            result.failed += 1
            log.error("outbox %d (%s) given up after %s: %s", row.id, row.kind, GIVE_UP_AFTER, reason)
            return
        row.next_attempt_at = now + retry_delay(max(row.attempts, 1), self.retry_base)
        result.retry += 1
        result.errors.append(reason)
        log.warning("outbox %d (%s) will retry at %s: %s", row.id, row.kind, row.next_attempt_at.isoformat(), reason)
