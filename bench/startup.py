#!/usr/bin/env python3
"""Start-up of every common command: a new ``python -m maild.cli`` process each time.

    python bench/startup.py [--runs 10] [--source imap|maildir] [--importtime] [--all] [--callgrind]

A fresh config (SQLite, an empty mailbox: a private Dovecot user, or a Maildir
with ``--source maildir``; a counting SMTP sink), the database migrated by a
first untimed run; then each command ``--runs`` times, one after the other.
Per command it prints the median wall time (process start to exit), the median
CPU time of the process (user+system, from ``wait4``; steadier than wall time
on a busy machine) and the range, with the machine's load average before and
after. ``--importtime`` also prints, per command, the ten slowest imports
(cumulative, ``python -X importtime``) of one extra run and how many modules
it loaded in all. ``--callgrind`` also counts, per command, the instructions of
one extra run under ``valgrind --tool=callgrind`` (the same on a busy machine as
on a quiet one, where wall and CPU seconds are the load's; about 5 G a second
here; ``demo`` is not counted).

``run --once`` on the empty mailbox is the daemon's whole start-up (config,
database, customers, templates, mailbox login), one cycle that finds nothing,
and the way out. ``demo`` is timed to its first line of output (the demo's own
servers and folders are up; the two cycles that follow are the demo itself).

``--work N`` (default 20, 0: none; Maildir only) also times ``run --once`` with
work waiting, the cost of a start that has something to do: ``N`` generated
mails were stored with the relay refusing (``N`` tickets, their acknowledgements
due in the outbox), every open ticket's next escalation set due, and before each
run the storage folder (database, caches) is put back as it was then, so each
run sends the acknowledgements and escalates every ticket. That row measures the
work as much as the start-up: the start-up target is the idle rows'.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PY, ROOT, CountingSink, nproc, start_dovecot, write_config  # noqa: E402

TARGET_S = 0.4


def commands(month: str) -> list[tuple[str, list[str]]]:
    return [
        ("--version", ["--version"]),
        ("status", ["status"]),
        ("tickets list", ["tickets", "list"]),
        ("report hours", ["report", "hours", "--month", month]),
        ("report sla", ["report", "sla", "--month", month]),
        ("contracts list", ["contracts", "list"]),
        ("check", ["check"]),
        ("run --once (empty mailbox)", ["run", "--once"]),
    ]


def every_other_command(month: str) -> list[tuple[str, list[str]]]:
    """``--all``: the rest of the CLI, on the same database with one open ticket (SUP-1).

    The writing ones change it a little each run (a quarter of an hour booked on
    SUP-1, an absence ended); the erasures run with ``--dry-run``.
    """
    return [
        ("tickets list --json", ["tickets", "list", "--json"]),
        ("tickets show", ["tickets", "show", "SUP-1"]),
        ("report month", ["report", "month", "--month", month]),
        ("quarantine list", ["quarantine", "list"]),
        ("consultants list", ["consultants", "list"]),
        ("consultants back", ["consultants", "back", "anna@firma.pl"]),
        ("contracts sync", ["contracts", "sync"]),
        ("time add", ["time", "add", "--by", "anna@firma.pl", "SUP-1", "15m"]),
        ("digest", ["digest"]),
        ("forget --dry-run", ["forget", "--address", "nobody@example.com", "--dry-run"]),
        ("retention run --dry-run", ["retention", "run", "--dry-run"]),
        ("storage verify", ["storage", "verify"]),
        ("db upgrade (at the head)", ["db", "upgrade"]),
    ]


def env() -> dict[str, str]:
    # the checkout's code, not whatever the venv's editable install points at
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": ""}


def timed(argv: list[str], cwd: Path, first_line: bool = False) -> tuple[float, float, int]:
    """(wall s, CPU s user+sys, exit code) of one process; ``first_line``: wall time to its first line of stdout."""
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert child.stdout is not None
    wall = None
    if first_line:
        child.stdout.readline()
        wall = time.perf_counter() - t0
        child.kill()  # the demo's own cycles are not its start-up
    child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = 0 if first_line else os.waitstatus_to_exitcode(status)
    if wall is None:
        wall = time.perf_counter() - t0
    return wall, usage.ru_utime + usage.ru_stime, child.returncode


def importtime(argv: list[str], cwd: Path) -> tuple[int, list[tuple[int, str]]]:
    """(modules imported, the ten largest cumulative import times in µs) of one run."""
    proc = subprocess.run([PY, "-X", "importtime", *argv[1:]], cwd=cwd, env=env(), capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    top = sorted(((cum, name) for cum, depth, name in rows if depth <= 3), reverse=True)[:10]
    return len(rows), top


def instructions(argv: list[str], cwd: Path) -> int | None:
    """Instructions of one run under callgrind (None when valgrind is missing or says nothing)."""
    try:
        proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                              cwd=cwd, env=env(), capture_output=True, text=True)
    except FileNotFoundError:
        return None
    found = re.search(r"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if found else None


def prepare_work(work: Path, config: Path, n: int) -> Path:
    """Store ``n`` generated mails with the relay refused, set every open ticket's escalation due, and
    keep a copy of the storage folder as it is then (the database and the caches); returns the copy."""
    import sqlite3

    from common import corpus

    source = corpus(n)
    now = datetime.now(timezone.utc)
    for i, eml in enumerate(sorted(source.glob("*.eml"))[:n]):
        name = f"{int(now.timestamp())}.M{i}P{os.getpid()}.startup"
        shutil.copyfile(eml, work / "Maildir" / "tmp" / name)
        os.rename(work / "Maildir" / "tmp" / name, work / "Maildir" / "new" / name)
    refused = config.with_name("refused.toml")
    refused.write_text(re.sub(r"(\[smtp\][^\[]*?port = )\d+", r"\g<1>1", config.read_text(encoding="utf-8")),
                       encoding="utf-8")
    _, _, code = timed([PY, "-m", "maild.cli", "--config", str(refused), "run", "--once"], work)
    if code != 0:
        raise SystemExit(f"storing the mail for the run with work: exit {code}")
    db = sqlite3.connect(work / "run" / "var" / "maild.db")
    with db:
        due = (now.replace(microsecond=0) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.000000")
        tickets = db.execute("UPDATE tickets SET next_escalation_at = ? WHERE status IN ('new', 'open', 'waiting') "
                             "AND reaction_due IS NOT NULL", (due,)).rowcount
        pending = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
    db.close()
    print(f"run --once with work: {pending} mails due in the outbox, {tickets} open tickets with an "
          f"escalation due (from {n} mails)")
    saved = work / "var-with-work"
    shutil.copytree(work / "run" / "var", saved)
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--source", choices=["imap", "maildir"], default="imap")
    parser.add_argument("--importtime", action="store_true", help="the slowest imports of each command")
    parser.add_argument("--callgrind", action="store_true", help="instructions of one more run of each command")
    parser.add_argument("--all", action="store_true", help="every other command too (a ticket is opened first)")
    parser.add_argument("--work", type=int, default=20, help="mails for the run --once with work (0: none)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="maild-startup-"))
    sink = CountingSink().start()
    dovecot = None
    try:
        if args.source == "imap":
            dovecot = start_dovecot(work / "dovecot")
            user, password = dovecot.add_user()
            config = write_config(work / "run", imap_port=dovecot.port, user=user, password=password,
                                  smtp_port=sink.port)
        else:
            config = write_config(work / "run", imap_port=1, user="-", password="-", smtp_port=sink.port)
            text = config.read_text(encoding="utf-8")
            text = re.sub(r"\[imap\].*?\n\n", f'[maildir]\npath = "{work / "Maildir"}"\n\n', text, flags=re.S)
            config.write_text(text, encoding="utf-8")
            for sub in ("new", "cur", "tmp"):
                (work / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        cli = [PY, "-m", "maild.cli", "--config", str(config)]
        wall, _, code = timed([*cli, "run", "--once"], work)  # creates and migrates the database
        if code != 0:
            raise SystemExit(f"maild run --once failed (exit {code})")
        month = datetime.now(timezone.utc).strftime("%Y-%m")
        load_before = os.getloadavg()
        print(f"maild start-up, {args.runs} runs per command, source {args.source}, nproc {nproc()}, "
              f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
        print(f"{'command':<30} {'wall median s':>13} {'(range)':>15} {'CPU median s':>13}  target < {TARGET_S} s"
              + ("  instructions" if args.callgrind else ""))
        table = [(name, [*cli, *argv], False) for name, argv in commands(month)]
        if args.all:
            opened = subprocess.run([*cli, "tickets", "open", "--customer", "kowalski-transport", "--subject",
                                     "Start-up", "--no-ack"], cwd=work, env=env(), capture_output=True, text=True)
            if opened.returncode != 0:
                raise SystemExit(f"maild tickets open failed: {opened.stderr.strip()}")
            table += [(name, [*cli, *argv], False) for name, argv in every_other_command(month)]
        demo_dir = work / "demo"
        table.append(("demo (to its first line)", [PY, "-m", "maild.cli", "demo", "--dir", str(demo_dir)], True))
        for name, argv, first_line in table:
            walls, cpus = [], []
            for _ in range(args.runs):
                if first_line:
                    shutil.rmtree(demo_dir, ignore_errors=True)
                wall, cpu, code = timed(argv, work, first_line)
                if code not in (0, 1):
                    raise SystemExit(f"{' '.join(argv)}: exit {code}")
                walls.append(wall)
                cpus.append(cpu)
            w, c = statistics.median(walls), statistics.median(cpus)
            counted = instructions(argv, work) if args.callgrind and not first_line else None
            print(f"{name:<30} {w:>13.3f} {f'({min(walls):.3f}-{max(walls):.3f})':>15} {c:>13.3f}  "
                  f"{'ok' if w < TARGET_S else 'SLOW':<4}" + (f"  {counted / 1e9:.3f} G" if counted else ""),
                  flush=True)
            if args.importtime:
                if first_line:
                    shutil.rmtree(demo_dir, ignore_errors=True)
                count, top = importtime(argv, work)
                print(f"    {count} modules imported; slowest (cumulative ms): "
                      + ", ".join(f"{n} {c / 1000:.0f}" for c, n in top))
        if args.work and args.source == "maildir":
            walls, cpus = [], []
            saved = prepare_work(work, config, args.work)
            for _ in range(args.runs):
                shutil.rmtree(work / "run" / "var")
                shutil.copytree(saved, work / "run" / "var")
                wall, cpu, code = timed([*cli, "run", "--once"], work)
                if code != 0:
                    raise SystemExit(f"run --once with work: exit {code}")
                walls.append(wall)
                cpus.append(cpu)
            name = f"run --once ({args.work} due, work)"
            w, c = statistics.median(walls), statistics.median(cpus)
            print(f"{name:<30} {w:>13.3f} {f'({min(walls):.3f}-{max(walls):.3f})':>15} {c:>13.3f}  "
                  "(start-up and work)", flush=True)
        load_after = os.getloadavg()
        print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    finally:
        sink.stop()
        if dovecot is not None:
            dovecot.stop()
        if args.keep:
            print(f"kept {work} (config run/maild.toml; var-with-work: the storage folder with work waiting)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
