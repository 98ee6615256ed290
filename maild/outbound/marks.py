"""Sent marks held up by the daemon's batch, kept in a file until the write lock is free (SQLite).

SQLite has one writer. While the daemon stores a batch of the backlog it holds the write gate
(``Daemon._write_gate``, 0.1-0.2 s a batch), and the courier that sends meanwhile took the gate
around each sent mark. A mail's mark is written before the next mail's final "." (at most one
resent mail per kill), so the courier stood still until the batch committed: over a 2,000-mail
reading of 2.07 s it waited 0.64 s, most of it while the parse worker was idle too, and the
mail it could not send went after the reading (bench/README.md, seventeenth session).

Now a mark that finds the gate held is appended to this journal, a file in the storage folder,
and the courier goes on with the next mail. A line written to the file is there for whoever
opens it next however the courier and its daemon die (the kernel's page cache: against a
process's death as durable as a commit under ``synchronous=NORMAL``, which neither flushes),
so the bound holds. The journal's marks are committed with the first mark that finds the gate
free, in one transaction, and the file starts over. Whoever drains the outbox next applies
what a dead courier left in it before it looks for due mail (``replay``, at the start of every
SQLite drain): a mail in the journal is not sent again. Until then its row reads pending to
anyone else (``maild status``, the health check), at most for a batch.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from maild.storage.models import OutboxRow

log = logging.getLogger("maild.outbox")

JOURNAL_NAME = "outbox-marks.journal"
# a SQLite drain's sent mark (``outbox._SqliteLine``), qmark parameters in a journal line's order
MARK_SENT_SQLITE = (f"UPDATE {OutboxRow.__table__.name} SET status = 'sent', sent_at = ?,"
                    " attempts = attempts + 1, last_error = ? WHERE id = ?")
# the same for rows still pending: applying a journal twice (a kill after its commit, before the
# file started over) changes nothing
APPLY = MARK_SENT_SQLITE + " AND status = 'pending'"

Mark = tuple[Any, str, int]  # sent_at as bound for the driver, the refused recipients' note, the row id


class MarkJournal:
    """One courier's journal (one daemon per SQLite file, one courier sending while it reads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held: dict[int, Mark] = {}  # by row id: marks in the file, not yet in the database
        self._fd: int | None = None

    def keep(self, mark: Mark) -> None:
        """Append the mark to the file (one write, whole or not at all for a process's death)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, json.dumps(mark, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n")
        self.held[mark[2]] = mark

    def written(self) -> None:
        """The held marks are committed: the file starts over."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        self.held.clear()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def replay(sessions: sessionmaker[Session], path: Path) -> int:
    """Commit the marks a courier left in the journal at ``path`` and empty it; how many were pending.

    A line that does not read whole (a disk that filled up under its write) is skipped: its
    mail may go again, as it would have without the journal."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:  # not ours to read (left by a run as another user): sending goes on
        log.error("outbox: cannot read the sent marks in %s (%s); a mail kept there may go again", path, exc)
        return 0
    if not data:
        return 0
    marks: list[Mark] = []
    for line in data.splitlines():
        try:
            sent_at, refused, row_id = json.loads(line)
        except ValueError:
            log.warning("outbox: a sent mark in %s does not read whole; skipped (its mail may go again)", path)
            continue
        marks.append((sent_at, str(refused), int(row_id)))
    with sessions() as session, session.begin():
        applied = session.connection().exec_driver_sql(APPLY, marks).rowcount
    os.truncate(path, 0)
    log.info("outbox: %d sent mark(s) a courier kept in %s committed (%d already were)", applied, path.name,
             len(marks) - applied)
    return int(applied)
