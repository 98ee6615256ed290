"""Logging to stderr (journald), one line per event, text or JSON.

Control characters from mail (a subject with CR/LF, ANSI escapes) are escaped
here once, so no mail can forge a log line or repaint an operator's terminal.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The message escaped whole (a CR/LF from mail stays visible as \\x0d\\x0a); a
        traceback's own line breaks become " | " so it still takes one line."""
        line = f"{record.levelname} {record.name}: {_escape(record.getMessage())}"
        if record.exc_info:
            line += " | " + _escape(self.formatException(record.exc_info).replace("\n", " | "))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _escape(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = _escape(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """One handler on the "maild" logger. Neither format names the source line, thread or
    process, so a record is made without looking them up (the logging module's documented
    switches): a stack walk and three lookups per line, a sixth of the daemon's cost per
    sent mail's log line (bench/README.md, seventh session)."""
    logging._srcfile = None  # no findCaller: no file, line or function
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("maild")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
