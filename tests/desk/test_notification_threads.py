"""A follow-up notification threads under the consultant's earlier notifications on the ticket
(``TicketDesk.notifications``): read once for a batch's tickets, kept up as the desk writes, and the
same Message-IDs a query per reply found, on SQLite and PostgreSQL."""
from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import OutboxRow
from tests.helpers import maildir_source, make_mail, write_config

UTC = timezone.utc
AUTHSERV = '\n[security]\ntrusted_authserv_id = "mx.firma.pl"\n'
PASSED = {"Authentication-Results": "mx.firma.pl; dkim=pass header.d=firma.pl; spf=pass smtp.mailfrom=firma.pl"}


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    yield {"tmp": tmp_path, "url": url, "box": mailbox.Maildir(tmp_path / "Maildir", create=True), "sink": smtp_sink}


def test_follow_ups_thread_under_the_notifications_written_before_them_with_one_query_per_batch(
        env: dict[str, Any]) -> None:
    config = write_config(env["tmp"], source=maildir_source(env["tmp"]), smtp_port=env["sink"].port,
                          database_url=env["url"], extra=AUTHSERV, notifications="enabled = true", migrated=True)
    box = env["box"]
    box.add(make_mail(subject="Faktura", msgid="<a1@acme.pl>"))
    box.add(make_mail(subject="Umowa", msgid="<a2@acme.pl>"))
    Daemon(load_config(config), lambda: datetime.now(UTC)).run_once()
    # one batch: a new ticket (3), the consultant's note on ticket 2 (the desk writes the batch so far before
    # it reads the thread: ticket 3's notifications with it), then replies on tickets 1, 2 and 3; each refers
    # to the ticket's first mail, so the batch loads tickets 1 and 2 at its start
    box.add(make_mail(subject="Drukarka", msgid="<a3@acme.pl>"))
    box.add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-2] Umowa", msgid="<c1@firma.pl>",
                      headers={**PASSED, "References": "<a2@acme.pl>"}, body="#internal\n\nKlient ma starą wersję.\n"))
    for ref, subject, msgid, parent in (("SUP-1", "Faktura", "<r1@acme.pl>", "<a1@acme.pl>"),
                                        ("SUP-2", "Umowa", "<r2@acme.pl>", "<a2@acme.pl>"),
                                        ("SUP-3", "Drukarka", "<r3@acme.pl>", "<a3@acme.pl>")):
        box.add(make_mail(subject=f"Re: [{ref}] {subject}", msgid=msgid, body="Dalej nie działa.\n",
                          headers={"In-Reply-To": parent, "References": parent}))
    daemon = Daemon(load_config(config), lambda: datetime.now(UTC))
    asked: list[str] = []
    event.listen(daemon.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: asked.append(statement)
                 if re.search(r"FROM outbox\s+WHERE outbox.ticket_id", statement) else None)
    daemon.run_once()
    assert len(asked) == 1, "the notifications on the batch's tickets are read once, not once per reply"
    with daemon.sessions() as session:
        rows = session.scalars(select(OutboxRow).where(OutboxRow.kind.in_(("notify_new", "notify_reply")))
                               .order_by(OutboxRow.id)).all()
    follow_ups = [r for r in rows if r.kind == "notify_reply"]
    assert {r.ticket_id for r in follow_ups} == {1, 2, 3}
    for reply in follow_ups:
        person = reply.recipients[0]
        # each earlier notification to this consultant on the ticket was written when the reply came
        earlier = [r.message_id for r in rows if r.id < reply.id and r.ticket_id == reply.ticket_id
                   and person in r.recipients]
        headers = reply.context["_headers"]
        assert headers["in_reply_to"] == (earlier[-1] if earlier else ""), (reply.ticket_id, person)
        assert [h for h in headers["references"] if h in earlier] == earlier[-10:]
    # ticket 3's own notification, queued and written in this batch, is among those it threads under
    assert any(r.ticket_id == 3 and r.context["_headers"]["in_reply_to"] for r in follow_ups)
