"""The attempts recorded before a mail is parsed (``failures`` rows), in SQLAlchemy Core.

An attempt of each mail is recorded before its batch goes to the parse worker and taken
back in the transaction that stores it (``Ingestor.ingest_batch(counted=True)``), so a
mail fetched again with an attempt still recorded was in hand when a daemon died
(``suspects``). Recording one needs the ``failures`` table and a connection, not the
intake pipeline (the ORM, the desk, the stages): the daemon records the first batch's
attempts and hands it to the parse worker before it builds the pipeline, so that batch
is parsed on the other core while the pipeline is built (bench/README, seventeenth
session).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from maild.intake.mailbox import FetchedMail
from maild.intake.suspects import STARTED, Suspect
from maild.storage.rows import append_rows
from maild.storage.tables import failures


def attempt_key(mail: FetchedMail) -> str:
    """The failures key of a mail before it is parsed (and of one that cannot be)."""
    return f"raw:{mail.source_key}"


def begin_attempts(conn: Connection, mails: Sequence[FetchedMail], now: datetime) -> dict[str, Suspect]:
    """The mails with an attempt started and never finished, by source key; and one
    attempt recorded now, in ``conn``'s transaction, for each mail that has none.

    A mail with one is suspect (the daemon was killed or crashed while it was in
    hand): the daemon retries it as ``suspects.plan_retries`` says, recording each
    try with ``count_attempts`` first.
    """
    keys = {attempt_key(m): m.source_key for m in mails}
    rows = {key: (attempts, last_error) for key, attempts, last_error in conn.execute(
        select(failures.c.key, failures.c.attempts, failures.c.last_error).where(failures.c.key.in_(list(keys))))}
    fresh = [{"key": key, "attempts": 1, "last_error": STARTED, "updated_at": now}
             for key in keys if key not in rows]
    if fresh:  # a row per mail: one COPY on PostgreSQL
        append_rows(conn, failures, fresh)
    zero = [key for key, (attempts, _) in rows.items() if attempts < 1]
    if zero:
        conn.execute(update(failures).where(failures.c.key.in_(zero)).values(
            attempts=1, last_error=STARTED, updated_at=now))
    return {keys[key]: Suspect(keys[key], attempts, last_error)
            for key, (attempts, last_error) in rows.items() if attempts >= 1}


def count_attempts(conn: Connection, mails: Sequence[FetchedMail], note: str, now: datetime) -> None:
    """Record one more attempt of each suspect mail before a retry parses it, saying how
    it is made (``note``: in a group, alone)."""
    keys = [attempt_key(m) for m in mails]
    known = set(conn.scalars(select(failures.c.key).where(failures.c.key.in_(keys))))
    if known:
        conn.execute(update(failures).where(failures.c.key.in_(known)).values(
            attempts=failures.c.attempts + 1, last_error=note, updated_at=now))
    missing = [key for key in keys if key not in known]
    if missing:
        conn.execute(insert(failures), [
            {"key": key, "attempts": 1, "last_error": note, "updated_at": now} for key in missing])


def note_attempts(conn: Connection, notes: Sequence[tuple[Sequence[FetchedMail], str]], now: datetime) -> None:
    """Say how each suspect's next attempt will be made (``last_error``) without counting one."""
    for mails, how in notes:
        conn.execute(update(failures).where(failures.c.key.in_([attempt_key(m) for m in mails])).values(
            last_error=how, updated_at=now))


def release_attempts(conn: Connection, mails: Sequence[FetchedMail]) -> None:
    """Take back the attempts recorded by ``begin_attempts`` for mails not processed after all."""
    conn.execute(delete(failures).where(failures.c.key.in_([attempt_key(m) for m in mails]),
                                        failures.c.last_error == STARTED))
