"""Logs: one line per event on stderr, text or JSON, with ticket ref and Message-ID;
control characters escaped; never a password, never a mail body."""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from maild.ops.logs import JsonFormatter, TextFormatter
from tests.helpers import make_mail, write_config
from tests.e2e.test_daemon import imap_table

ROOT = Path(__file__).resolve().parents[2]


def record(message: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord("maild.pipeline", logging.INFO, __file__, 1, message, args, None)


@given(st.text())
def test_formatters_emit_one_line_without_control_characters(text: str) -> None:
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(record("%s -> SUP-1: %s", "<m@x>", text))
        assert "\n" not in line and "\r" not in line
        assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in line)
    entry = json.loads(JsonFormatter().format(record("%s", text)))
    assert entry["level"] == "info" and entry["logger"] == "maild.pipeline"


def test_escapes_are_visible() -> None:
    line = TextFormatter().format(record("subject %s", "a\r\nFAKE b\x1b[31m"))
    assert line == "INFO maild.pipeline: subject a\\x0d\\x0aFAKE b\\x1b[31m"


def run_cycle(tmp_path: Path, account: Any, sink: Any, fmt: str, password: str | None = None) -> str:
    config = write_config(tmp_path, source=imap_table(account, password=password), smtp_port=sink.port,
                          extra=f'\n[logging]\nformat = "{fmt}"\nlevel = "debug"\n')
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "--config", str(config), "run", "--once"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    return proc.stderr


def test_json_log_of_a_cycle(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    body_secret = f"poufne-{secrets.token_hex(6)}"
    imap_account.append(make_mail(subject="Faktura", msgid="<log1@acme.pl>", body=f"Hasło do ERP: {body_secret}\n"))
    stderr = run_cycle(tmp_path, imap_account, smtp_sink, "json")
    lines = stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any("log1@acme.pl" in e["message"] and "SUP-1" in e["message"] for e in entries), stderr
    assert body_secret not in stderr, "no mail body in the logs"
    assert imap_account.password not in stderr, "no password in the logs"
    assert smtp_sink.messages and body_secret not in stderr


def test_text_log_has_no_password_even_when_login_fails(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    wrong = f"zle-haslo-{secrets.token_hex(6)}"
    stderr = run_cycle(tmp_path, imap_account, smtp_sink, "text", password=wrong)
    assert "login" in stderr.lower()
    assert wrong not in stderr and imap_account.password not in stderr
    assert all(line.split(" ", 1)[0] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "maild:")
               for line in stderr.splitlines()), stderr


def test_database_errors_carry_no_row_values(tmp_path: Path) -> None:
    """A failed INSERT's message is logged by the pipeline; the row may hold a mail body."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from maild.storage.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v TEXT UNIQUE)"))
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": "tajna treść maila"})
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": "tajna treść maila"})
    except IntegrityError as exc:
        assert "tajna" not in str(exc)
    else:
        raise AssertionError("expected a unique violation")


def test_setup_logging_makes_records_without_looking_up_caller_thread_or_process() -> None:
    """Neither format names them, so setup_logging turns those lookups off (a stack walk per
    line was a sixth of a sent mail's log line); the line itself is unchanged. In a child
    process: the switches are the logging module's globals."""
    code = ("import logging, sys, io; from maild.ops.logs import setup_logging; setup_logging('info', 'text');"
            "out = io.StringIO(); logging.getLogger('maild').handlers[0].setStream(out);"
            "seen = []; logging.getLogger('maild').handlers[0].addFilter(lambda r: seen.append(r) or True);"
            "logging.getLogger('maild.smtp').info('%s sent', '<m@x>');"
            "r = seen[0]; print(r.funcName, r.lineno, r.threadName, r.processName, out.getvalue().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    assert out == "(unknown function) 0 None None INFO maild.smtp: <m@x> sent"
