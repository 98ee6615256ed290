"""The acknowledgement limits' counts (``store.recent_automatic``) against a count by hand.

Since 0009 both counts, per rate key and per domain, come from one read of the
last hour through the outbox's time index: mail older than the window, mail
that is not automatic, other senders and other domains must not count, and a
domain counts every mailbox's mail under it.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from maild.storage import store, tables
from maild.storage.db import open_database

SINCE = datetime(2026, 12, 3, 9, tzinfo=timezone.utc)
KEYS = ["acme.pl/jan", "acme.pl/ola", "nord.no/kari", "x.example/a", "/bare", ""]

rows = st.lists(st.tuples(st.sampled_from([*KEYS, None]), st.booleans(), st.integers(-90, 30)), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outbox=rows, keys=st.sets(st.sampled_from(KEYS)), domains=st.sets(st.sampled_from(["acme.pl", "nord.no", "y"])))
def test_counts_per_key_and_domain_match_a_count_by_hand(
        tmp_path: Path, outbox: list[tuple[str | None, bool, int]], keys: set[str], domains: set[str]) -> None:
    sessions = open_database(f"sqlite:///{tmp_path / 'maild.db'}")
    with sessions() as session, session.begin():
        session.execute(delete(tables.outbox))
        for i, (key, automatic, minutes) in enumerate(outbox):
            at = SINCE + timedelta(minutes=minutes)
            session.execute(insert(tables.outbox).values(
                dedupe_key=f"k{i}", kind="ack", message_id=f"m{i}@x", recipients=[], rate_key=key,
                automatic=automatic, template="ack", language="pl", context={}, status="sent", attempts=0,
                next_attempt_at=at, last_error="", created_at=at))
    with sessions() as session:
        per_key, per_domain = store.recent_automatic(session, keys, SINCE, domains)
        by_domain = store.recent_automatic(session, (), SINCE, domains)[1]
    sessions.kw["bind"].dispose()
    counted = [key for key, automatic, minutes in outbox if automatic and minutes >= 0 and key]
    wanted_keys = {k for k in keys if k}
    assert per_key == {k: counted.count(k) for k in wanted_keys if counted.count(k)}
    wanted_domains = {store.rate_domain(k) for k in wanted_keys} | domains
    expected = {d: sum(1 for k in counted if store.rate_domain(k) == d) for d in wanted_domains if d}
    assert per_domain == {d: n for d, n in expected.items() if n}
    assert by_domain == {d: n for d, n in expected.items() if n and d in domains}
