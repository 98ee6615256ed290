"""kill -9 during the notification batch, against a real Dovecot: after every crash the
daemon starts again; in the end each consultant got each event's notification, every one
reached the SMTP server, and none twice beyond the one mail a crash may leave in flight
(which comes again under its own Message-ID, so the consultant's client shows it once)."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from maild.storage.db import open_database
from maild.storage.models import OutboxRow
from tests.e2e.test_exactly_once import imap_table, run_maild
from tests.e2e.test_notifications import BOB, EVERY_DAY
from tests.helpers import make_mail, write_config

N_NEW = 60
N_REPLIES = 20


def test_sigkill_while_notifying_loses_none_and_doubles_none(tmp_path: Path, imap_account: Any,
                                                              smtp_sink: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                          top="batch_size = 10", notifications="", extra=BOB + EVERY_DAY)
    smtp_sink.delay_seconds = 0.01  # a relay that takes its time: kills land while notifications go out
    mails = [make_mail(sender=f"user{i}@acme.pl", subject=f"Sprawa {i}", msgid=f"<n{i}@acme.pl>",
                       body=f"Treść {i}\n" * 30) for i in range(N_NEW)]
    mails += [make_mail(sender=f"user{i}@acme.pl", subject=f"Re: Sprawa {i}", msgid=f"<r{i}@acme.pl>",
                        headers={"In-Reply-To": f"<n{i}@acme.pl>", "References": f"<n{i}@acme.pl>"})
              for i in range(N_REPLIES)]
    rng = random.Random(20261205)
    kills = 0
    for start in range(0, len(mails), 20):
        imap_account.append_many(mails[start:start + 20])
        if run_maild(config, kill_after=rng.uniform(0.5, 1.5)) is None:
            kills += 1
    run_maild(config, kill_after=None)
    assert kills >= 2, "the test must actually have crashed the daemon"

    sessions = open_database(f"sqlite:///{tmp_path / 'var' / 'maild.db'}")
    with sessions() as session:
        rows = session.execute(select(OutboxRow.kind, OutboxRow.ticket_id, OutboxRow.recipients, OutboxRow.message_id)
                               .where(OutboxRow.kind.in_(("notify_new", "notify_reply")))).all()
        unsent = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent"))
        all_ids = set(session.scalars(select(OutboxRow.message_id)))
    per_event = Counter((kind, ticket, tuple(to)) for kind, ticket, to, _ in rows)
    assert max(per_event.values()) == 1, "one notification per event and consultant"
    assert sum(1 for k in per_event if k[0] == "notify_new") == 2 * N_NEW
    assert sum(1 for k in per_event if k[0] == "notify_reply") == 2 * N_REPLIES
    assert unsent == 0
    received = Counter(m.parsed["Message-ID"].strip("<>") for m in smtp_sink.messages)
    notify_ids = {mid for *_, mid in rows}
    assert notify_ids <= set(received), "every notification reached the SMTP server"
    assert set(received) <= all_ids
    resends = sum(n - 1 for n in received.values())
    assert resends <= kills, f"{resends} resends after {kills} crashes"
