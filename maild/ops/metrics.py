"""An optional Prometheus endpoint (``[metrics] listen``): what ops graph and alert on.

Counters count what the daemon did since it started (mail ingested by
disposition, escalations queued); gauges are read from the database after each
cycle, so they say the same as ``maild status``. The registry is our own, not
prometheus-client's global one, so two daemons in one test process never share
a number. Off by default: without ``listen`` nothing imports prometheus-client.
"""
from __future__ import annotations

import logging
from http.server import HTTPServer
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maild.storage import store
from maild.errors import ConfigError
from maild.ops.health import Health
from maild.storage.models import Ticket
from maild.rules.prioritise import TIER_NAMES

log = logging.getLogger("maild.metrics")


class MetricsError(ConfigError):
    """The endpoint cannot listen where the config says (port taken, bad address)."""


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter("maild_messages_total", "Mail taken from the source, by disposition",
                                ["disposition"], registry=self.registry)
        self.escalations = Counter("maild_escalations_total", "SLA escalation mails queued",
                                   registry=self.registry)
        self.sent = Counter("maild_outbox_sent_total", "Mails the SMTP relay accepted", registry=self.registry)
        self.tickets = Gauge("maild_open_tickets", "Open tickets by tier", ["tier"], registry=self.registry)
        self.outbox_depth = Gauge("maild_outbox_depth", "Mails waiting to be sent", registry=self.registry)
        self.oldest_unsent = Gauge("maild_outbox_oldest_unsent_seconds",
                                   "Age of the oldest unsent mail (0 when none)", registry=self.registry)
        self.quarantined = Gauge("maild_quarantined", "Quarantined mail held for a person",
                                 registry=self.registry)
        self.nearest_breach = Gauge("maild_seconds_to_nearest_breach",
                                    "Seconds until the nearest reaction deadline (negative: overdue; "
                                    "absent when none is open)", registry=self.registry)
        self.last_fetch = Gauge("maild_last_fetch_timestamp_seconds", "Unix time of the last successful fetch",
                                registry=self.registry)
        for disposition in ("ticket", "reply", "discard", "quarantine", "duplicate", "bounce"):
            self.ingested.labels(disposition)
        self._server: HTTPServer | None = None

    def observe_cycle(self, ingested: dict[str, int], escalations: int, sent: int) -> None:
        for disposition, count in ingested.items():
            self.ingested.labels(disposition).inc(count)
        self.escalations.inc(escalations)
        self.sent.inc(sent)

    def observe_health(self, session: Session, health: Health) -> None:
        by_tier = {int(tier): int(count) for tier, count in session.execute(
            select(Ticket.tier, func.count()).where(Ticket.status.in_(store.OPEN_STATUSES)).group_by(Ticket.tier))}
        for tier, name in enumerate(TIER_NAMES):
            self.tickets.labels(name).set(int(by_tier.get(tier, 0)))
        self.outbox_depth.set(health.outbox_depth)
        age = health.oldest_unsent_age
        self.oldest_unsent.set(0 if age is None else age.total_seconds())
        self.quarantined.set(health.quarantined)
        if health.nearest_due:
            self.nearest_breach.set((health.nearest_due[0][1] - health.now).total_seconds())
        else:
            self.nearest_breach.set(float("nan"))
        if health.last_fetch_at is not None:
            self.last_fetch.set(health.last_fetch_at.timestamp())

    def serve(self, listen: str) -> tuple[str, int]:
        """Start the HTTP endpoint in a daemon thread; returns the bound (host, port)."""
        from prometheus_client import start_http_server

        host, _, port = listen.rpartition(":")
        try:
            server: Any
            server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError("", "metrics.listen", f"cannot listen on {listen}: {exc.strerror}") from None
        self._server = server
        bound = server.server_address
        log.info("metrics: serving Prometheus metrics on http://%s:%d/metrics", bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
