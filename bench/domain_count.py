#!/usr/bin/env python3
"""The per-domain acknowledgement count (``store.recent_automatic``) over a busy hour.

    .venv/bin/python bench/domain_count.py [--recent 15000] [--old 200000] [--db sqlite|postgres]

Each ingest batch counts the automatic mail queued in the last hour per domain
(the per-domain auto-reply limit). During a backlog that hour holds every
acknowledgement and notification queued so far (15,460 at 10,000 mails). This
fills an outbox with ``--old`` rows spread over the last 300 days and
``--recent`` rows in the last hour (80 % automatic, 3,000 domains, the context
and recipients of a real acknowledgement), times 10 calls, then drops the
indexes on ``created_at`` that the migrations made (``ix_outbox_recent_automatic``,
0007) and times them through a plain ``created_at`` index, as before 0007.
Prints wall and CPU ms per call (CPU: this process; PostgreSQL's work is in its
wall time) and the plan. PostgreSQL: the private cluster, after VACUUM ANALYZE
(an index-only scan needs the pages marked visible).
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PrivatePostgres, banner  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from maild.storage import store  # noqa: E402
from maild.storage.db import open_database  # noqa: E402
from maild.storage.models import OutboxRow  # noqa: E402

NOW = datetime(2026, 12, 6, 12, tzinfo=timezone.utc)
CONTEXT = {"subject": "x" * 200, "body": "y" * 600, "ticket": 1}


def _rows(rng: random.Random, n: int, tag: str, newest: datetime, span_s: float) -> Any:
    for i in range(n):
        domain = f"d{rng.randrange(3000)}.pl"
        yield {"dedupe_key": f"{tag}{i}", "kind": "ack", "message_id": f"<{tag}{i}@bench>", "recipients": [f"u@{domain}"],
               "rate_key": f"{domain}/u{rng.randrange(50)}", "automatic": rng.random() < 0.8, "template": "ack",
               "language": "pl", "context": CONTEXT, "status": "sent", "attempts": 1, "last_error": "",
               "created_at": newest - timedelta(seconds=rng.uniform(0, span_s)), "next_attempt_at": NOW}


def measure(url: str, recent: int, old: int) -> None:
    sessions = open_database(url)
    engine = sessions.kw["bind"]
    rng = random.Random(1)
    with sessions() as session, session.begin():
        for rows in (_rows(rng, old, "o", NOW - timedelta(hours=2), 86400 * 300), _rows(rng, recent, "r", NOW, 3500)):
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) == 5000:
                    session.execute(insert(OutboxRow), chunk)
                    chunk = []
            if chunk:
                session.execute(insert(OutboxRow), chunk)
    postgres = engine.dialect.name == "postgresql"

    def analyze() -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE outbox" if postgres else "ANALYZE")

    domains = {f"d{i}.pl" for i in range(0, 3000, 7)}
    since = NOW - timedelta(hours=1)

    def run(label: str) -> dict[str, int]:
        analyze()
        with sessions() as session:
            store.recent_automatic(session, (), since, domains)[1]
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(10):
                got = store.recent_automatic(session, (), since, domains)[1]
            wall, cpu = (time.perf_counter() - wall) / 10, (time.process_time() - cpu) / 10
        statements: list[str] = []
        print(f"  {label}: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU per call; {sum(got.values())} counted")
        with engine.connect() as conn:
            query = ("SELECT rate_key || '', count(*) FROM outbox WHERE created_at >= :since AND automatic IS true "
                     "GROUP BY rate_key || ''")
            explain = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
            statements = [str(r[-1]) for r in conn.execute(text(explain + query), {"since": since if postgres
                          else since.replace(tzinfo=None).isoformat(sep=" ")})]
        print("    plan: " + " | ".join(s.strip() for s in statements if s.strip()))
        return got

    after = run("ix_outbox_recent_automatic (created_at, automatic, rate_key)")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_outbox_recent_automatic")
        conn.exec_driver_sql("CREATE INDEX ix_outbox_created_at ON outbox (created_at)")
    before = run("ix_outbox_created_at (created_at), before 0007")
    assert before == after
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recent", type=int, default=15000)
    parser.add_argument("--old", type=int, default=200000)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    banner(f"per-domain count over {args.recent} rows in the last hour and {args.old} older, {args.db}")
    work = Path(tempfile.mkdtemp(prefix="maild-domain-count-"))
    work.chmod(0o755)  # the private PostgreSQL runs as its own user below it
    try:
        if args.db == "sqlite":
            measure(f"sqlite:///{work / 'maild.db'}", args.recent, args.old)
            return 0
        pg = PrivatePostgres(work / "pg")
        try:
            measure(pg.fresh_database(), args.recent, args.old)
        finally:
            pg.stop()
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
