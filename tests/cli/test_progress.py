"""Long work shows progress on a terminal and nothing when stderr is not one (the journal, cron, a pipe)."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.helpers import deliver, maildir_source, make_mail, write_config

MAILS = 40


def maild(config: Path, *args: str, tty: bool) -> tuple[int, str, str]:
    """Run maild with stderr on a pseudo-terminal (as a person's shell) or a pipe; (code, stdout, stderr)."""
    command = [sys.executable, "-m", "maild.cli", "--config", str(config), *args]
    env = {**os.environ, "COLUMNS": "100"}
    if not tty:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, text=True, env=env)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out = child.stdout.read() if child.stdout else ""
    code = child.wait(60)
    os.close(master)
    return code, out, seen.decode("utf-8", "replace")


def backlog(tmp_path: Path, smtp_sink: Any) -> Path:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                          top="batch_size = 5")
    now = datetime.now(timezone.utc)
    for i in range(MAILS):
        deliver(tmp_path / "Maildir", make_mail(subject=f"Sprawa {i}", msgid=f"<p{i}@acme.pl>", date=now), now)
    return config


def test_run_once_backlog_shows_progress_on_a_terminal(tmp_path: Path, smtp_sink: Any) -> None:
    config = backlog(tmp_path, smtp_sink)
    code, out, err = maild(config, "run", "--once", tty=True)
    assert code == 0, err
    assert "reading mail" in err and f"/{MAILS}" in err and "mails left" in err, err
    assert "reading mail" not in out  # the summary on stdout stays clean
    code, out, err = maild(config, "storage", "verify", tty=True)
    assert code == 0 and "verifying storage" in err and "blobs left" in err, err


def test_no_progress_without_a_terminal(tmp_path: Path, smtp_sink: Any) -> None:
    config = backlog(tmp_path, smtp_sink)
    code, out, err = maild(config, "run", "--once", tty=False)
    assert code == 0, err
    assert "reading mail" not in err and "\r" not in err, err
    code, out, err = maild(config, "storage", "verify", tty=False)
    assert code == 0 and "verifying storage" not in err and "\r" not in err, err
