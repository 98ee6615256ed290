"""The public holidays a calendar computed, kept in one JSON file between processes.

``<storage>/cache/holidays.json`` maps a calendar's key (country, subdivision,
language setting, version of the ``holidays`` library) to its language and years
(``rules.calendar.HolidayTables``). A file that cannot be read is passed over (the
library computes the holidays as before) and one that cannot be written costs the
next start the same, nothing more. ``write=False`` (``maild check``) only reads
what the daemon kept: a check run as another user must leave no file behind.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from maild.storage.blobs import StorageError, make_private_dir

log = logging.getLogger("maild.calendar")


def holidays_file(storage_path: Path) -> Path:
    return storage_path / "cache" / "holidays.json"


class HolidayFile:
    def __init__(self, path: Path, write: bool = True) -> None:
        self.path = path
        self.write = write
        self._entries: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._entries is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as exc:
                log.debug("kept holidays %s unreadable, computing them: %s", self.path, exc)
                data = {}
            self._entries = data if isinstance(data, dict) else {}
        return self._entries

    def load(self, key: str) -> dict[str, Any] | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) else None

    def save(self, key: str, entry: dict[str, Any]) -> None:
        entries = self._read()
        entries[key] = entry
        if not self.write:
            return
        try:
            make_private_dir(self.path.parent)
            fd, tmp = tempfile.mkstemp(prefix=".holidays-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(entries, out, ensure_ascii=False, sort_keys=True)
                os.replace(tmp, self.path)  # readers see the old file or the new one, never half of one
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, StorageError) as exc:
            log.debug("kept holidays %s not written: %s", self.path, exc)
