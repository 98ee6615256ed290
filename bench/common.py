"""Shared pieces of the maild benchmarks: corpus, private servers, SMTP sink, config.

Everything runs on 127.0.0.1. The private Dovecot and PostgreSQL come from the
test suite's own server classes (tests/servers), so the benchmarks use exactly
the setup the tests trust; the corpus comes from bench/gen-mail.py (a copy of the
shared harness's generator, byte-identical output for the same N and seed).

Not part of the test suite: nothing here is collected by pytest.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import SMTP, Envelope, Session  # noqa: E402

PY = sys.executable
SEED = 20241101
BENCH_ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/maild-bench"))
SUPPORT_ADDRESS = "support@helpdesk.example.com"  # what gen-mail.py addresses every mail to


def nproc() -> int:
    return len(os.sched_getaffinity(0))


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def versions() -> dict[str, str]:
    import sqlite3

    import sqlalchemy

    out = {"python": sys.version.split()[0], "sqlalchemy": sqlalchemy.__version__, "sqlite": sqlite3.sqlite_version}
    try:
        dv = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        out["dovecot"] = dv
    except OSError:
        pass
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    stamp = ROOT / "REV"  # a snapshot (git archive) carries its revision in this file
    out["maild"] = rev.stdout.strip() or (stamp.read_text().strip() if stamp.exists() else "?")
    return out


def banner(what: str) -> None:
    v = versions()
    print(f"== {what} ==  nproc {nproc()}, load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
          + ", ".join(f"{k} {val}" for k, val in v.items()), flush=True)


# ---------------------------------------------------------------- corpus

def _gen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_mail", BENCH / "gen-mail.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus(n: int, seed: int = SEED) -> Path:
    """The generated mail for (n, seed), generated once and reused (it is deterministic)."""
    out = BENCH_ROOT / f"maild-mail-{n}-{seed}"
    done = out / ".complete"
    if not done.exists():
        t0 = time.perf_counter()
        subprocess.run([PY, str(BENCH / "gen-mail.py"), str(n), str(out), "--seed", str(seed)], check=True,
                       stdout=subprocess.DEVNULL)
        done.write_text("ok\n")
        print(f"generated {n} mails (seed {seed}) in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return out


BIG_NAME = "big-25mb.eml"


def big_corpus(n: int, seed: int = SEED, size: int = 25_000_000) -> Path:
    """The same corpus plus one ~25 MB message (one large PDF-like attachment) in the middle.

    The extra file is named so that it sorts after the middle message; the
    other files are hard links to the plain corpus. The manifest gets a line
    for it as well.
    """
    base = corpus(n, seed)
    out = BENCH_ROOT / f"maild-mail-{n}-{seed}-big"
    done = out / ".complete"
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = sorted(base.glob("*.eml"))
    for f in files:
        os.link(f, out / f.name)
    middle = files[len(files) // 2].stem
    name = f"{middle}b.eml"
    # base64 with 76-char lines: 4/3 * 77/76 bytes per payload byte
    payload_len = int((size - 2000) / (4 / 3 * 77 / 76))
    data = hashlib.shake_256(f"maild-bench-{seed}".encode()).digest(payload_len)
    msgid = f"<big-{seed}@brightpath.io>"
    head = (
        "From: Olivia Brown <olivia.brown@brightpath.io>\r\n"
        f"To: {SUPPORT_ADDRESS}\r\n"
        "Subject: Full database export for the migration\r\n"
        "Date: Sat, 30 Nov 2024 10:00:00 +0000\r\n"
        f"Message-ID: {msgid}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="=_big_boundary"\r\n\r\n'
        "--=_big_boundary\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        "Hello,\r\n\r\nthe export you asked for is attached.\r\n\r\nOlivia\r\n\r\n"
        "--=_big_boundary\r\nContent-Type: application/pdf; name=export.pdf\r\n"
        "Content-Disposition: attachment; filename=export.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    (out / name).write_bytes(head + body + b"\r\n--=_big_boundary--\r\n")
    lines = (base / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    lines.append(json.dumps({"file": name, "message_id": msgid, "kind": "new", "parent": None,
                             "attachment": {"name": "export.pdf", "size": len(data), "ext": "pdf"},
                             "from": "olivia.brown@brightpath.io", "bytes": (out / name).stat().st_size}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done.write_text("ok\n")
    return out


def load_mailbox(directory: Path, port: int, user: str, password: str, *, now: bool = True) -> str:
    """Refill INBOX with exactly the .eml files of ``directory`` (MULTIAPPEND); returns the loader's line."""
    proc = subprocess.run(
        [PY, str(BENCH / "load-mailbox.py"), "--host", "127.0.0.1", "--port", str(port), "--user", user,
         "--password", password, "--replace", "--internaldate", "now" if now else "header", str(directory)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load-mailbox.py failed: {proc.stderr.strip()[-2000:]} {proc.stdout.strip()}")
    return proc.stdout.strip()


# ---------------------------------------------------------------- private servers

def start_dovecot(directory: Path) -> Any:
    """The test suite's private Dovecot in ``directory``.

    Its auth process runs as the unprivileged ``dovecot`` user and opens the
    passwd-file below ``directory``, so every folder above must be searchable by
    others. A work folder from ``tempfile.mkdtemp`` is 0700: the login then fails
    with "[UNAVAILABLE] Temporary authentication failure" (its log: "missing +x
    perm"). The test fixture's Dovecot directory is itself the mkdtemp folder,
    which it makes 0755; a benchmark's sits one level further down. A folder of
    the benchmark's own (under the temp dir or BENCH_ROOT) is made searchable,
    any other one is named.
    """
    from tests.servers.dovecot import DovecotServer

    directory.mkdir(parents=True, exist_ok=True)
    own = (Path(tempfile.gettempdir()).resolve(), BENCH_ROOT.resolve())
    for folder in directory.resolve().parents:
        mode = folder.stat().st_mode
        if mode & 0o001:
            continue
        if any(root in folder.parents for root in own):
            folder.chmod(mode | 0o011)
        else:
            raise RuntimeError(f"Dovecot's auth process (user dovecot) cannot reach {directory}: "
                               f"{folder} is not searchable by others; chmod o+x it or use another folder")
    server = DovecotServer(directory, mail_fsync="optimized")  # a deployment's durability, unlike the tests' Dovecot
    server.start()
    return server


def task_cpu_seconds(stat: str, children: bool = False) -> float:
    """utime+stime (and with ``children`` the reaped children's cutime+cstime) of a /proc stat file."""
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


class PrivatePostgres:
    """The test suite's private cluster, but with default durability (fsync, synchronous_commit on).

    The test fixture turns fsync off because crash durability is not what the
    tests check; a throughput figure must pay for it like a deployment does.
    ``statements``: pg_stat_statements loaded (with planning times and I/O timing),
    for ``bench/pg_statements.py``; its bookkeeping costs the server a little CPU per
    statement, so the throughput benchmarks leave it off. ``explain_ms``: auto_explain
    logs the plan of each statement slower than that (``postgres.log``).
    """

    def __init__(self, directory: Path, statements: bool = False, explain_ms: float | None = None) -> None:
        from tests.servers.postgres import PostgresServer, _find_bindir

        bindir = _find_bindir()
        if bindir is None:
            raise RuntimeError("no initdb/pg_ctl found (Debian: postgresql-15)")
        directory.mkdir(parents=True, exist_ok=True)
        self.server = PostgresServer(directory, bindir)
        self.server.init()
        self.statements = statements
        with (self.server.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# benchmark: deployment durability\nfsync = on\nsynchronous_commit = on\n"
                       "full_page_writes = on\nshared_buffers = 128MB\n")
            if statements:
                conf.write(f"shared_preload_libraries = 'pg_stat_statements{', auto_explain' if explain_ms else ''}'\n"
                           "pg_stat_statements.track = all\npg_stat_statements.track_planning = on\n"
                           "pg_stat_statements.max = 5000\ntrack_io_timing = on\n")
                if explain_ms:  # each statement slower than this logs its plan with its run's figures
                    conf.write(f"auto_explain.log_min_duration = '{explain_ms}ms'\nauto_explain.log_analyze = on\n"
                               "auto_explain.log_buffers = on\nauto_explain.log_nested_statements = on\n")
        self.server.start()
        if statements:
            self.server.execute_admin("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self._count = 0

    def reset_statements(self, database: str) -> None:
        """pg_stat_statements, the shared WAL/bgwriter counters and ``database``'s table and index
        counters start from zero."""
        import psycopg

        self.server.execute_admin("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal'); "
                                  "SELECT pg_stat_reset_shared('bgwriter')")
        conninfo = self.server.conninfo.replace("dbname=postgres", f"dbname={database}")
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_stat_reset()")

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of an admin query (on the ``postgres`` database) as dicts."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.server.conninfo, autocommit=True, connect_timeout=10, row_factory=dict_row) as conn:
            return list(conn.execute(sql).fetchall())

    def processes(self) -> dict[int, str]:
        """The server's processes now: pid -> its title (``postgres: walwriter``,
        ``postgres: postgres maild_bench_1 127.0.0.1(40312) idle``), the postmaster included."""
        try:
            master = int((self.server.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return {}
        found = {master: "postmaster"}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                if ppid == master:
                    found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        "utf-8", "replace").strip()
            except (OSError, ValueError, IndexError):
                continue
        return found

    def fresh_database(self) -> str:
        self._count += 1
        name = f"maild_bench_{self._count}"
        self.server.execute_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.server.execute_admin(f"CREATE DATABASE {name}")
        return str(self.server.url(name))

    def cpu_seconds(self) -> float:
        """CPU seconds of the whole server so far: the postmaster with its reaped
        backends, plus the backends alive now."""
        try:
            master = int((self.server.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        total = task_cpu_seconds(f"/proc/{master}/stat", children=True)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                total += task_cpu_seconds(str(stat))
        return total

    def version(self) -> str:
        out = subprocess.run([str(self.server.bindir / "postgres"), "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------- SMTP sink

_IRT = re.compile(rb"^In-Reply-To:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Delivery:
    at: float  # time.monotonic() when the sink accepted DATA
    in_reply_to: str
    rcpt: tuple[str, ...]
    size: int


class CountingSink:
    """aiosmtpd on loopback in its own thread; counts accepted mail and notes In-Reply-To and time.

    It keeps no message bodies, so 10,000 acknowledgements cost it nothing
    worth measuring, and it runs in the benchmark process, not in maild's.
    """

    def __init__(self) -> None:
        from tests.servers.common import free_port

        self.host = "127.0.0.1"
        self.port = free_port()
        self._lock = threading.Condition()
        self.deliveries: list[Delivery] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                data = envelope.original_content or b""
                head = data.split(b"\r\n\r\n", 1)[0]
                match = _IRT.search(head)
                sink._add(Delivery(time.monotonic(), match.group(1).decode("ascii", "replace") if match else "",
                                   tuple(envelope.rcpt_tos), len(data)))
                return "250 2.0.0 Queued (bench sink)"

        self._controller = Controller(Handler(), hostname=self.host, port=self.port,
                                      server_hostname="sink.bench", ident="maild bench sink")

    def _add(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
            self._lock.notify_all()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.deliveries)

    def clear(self) -> None:
        with self._lock:
            self.deliveries.clear()

    def start(self) -> CountingSink:
        self._controller.start()
        return self

    def cpu_seconds(self) -> float:
        """User+sys CPU seconds of the sink's thread so far (aiosmtpd's loop), from /proc."""
        thread = getattr(self._controller, "_thread", None)
        tid = getattr(thread, "native_id", None)
        return 0.0 if tid is None else task_cpu_seconds(f"/proc/self/task/{tid}/stat")

    def stop(self) -> None:
        self._controller.stop()


class PostfixSink:
    """Postfix's ``smtp-sink`` (a C test server made to measure SMTP clients) as the relay.

    The aiosmtpd sink spends ~0.7 ms of CPU on each mail, on the same two cores as
    maild: in a whole cycle of 15,460 mails that is a fifth of every party's CPU.
    A production relay is Postfix or the like, usually on another host; this one
    costs a small part of that. It appends each mail to one dump file (``-D``), so
    the count is read from the file, as the aiosmtpd sink's is from memory; ``clear``
    starts counting at the file's current end.
    """

    BINARY = "/usr/sbin/smtp-sink"

    def __init__(self) -> None:
        from tests.servers.common import free_port

        if not Path(self.BINARY).exists():
            raise SystemExit(f"{self.BINARY} not found: `apt-get install postfix` (it brings smtp-sink; "
                             "choose 'No configuration' and no mail server is started)")
        self.host = "127.0.0.1"
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
        self._dir.chmod(0o777)  # smtp-sink refuses to run as root: it writes as nobody
        self.dump = self._dir / "dump"
        self._from = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PostfixSink:
        import socket

        self._proc = subprocess.Popen([self.BINARY, "-u", "nobody", "-a", "-4", "-D", str(self.dump),
                                       "-h", "sink.bench", f"{self.host}:{self.port}", "256"])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"smtp-sink did not start on {self.host}:{self.port}")
                time.sleep(0.05)

    def _mails(self) -> bytes:
        try:
            with self.dump.open("rb") as f:
                f.seek(self._from)
                return b"\n" + f.read()
        except FileNotFoundError:
            return b""

    @property
    def count(self) -> int:
        return self._mails().count(b"\nX-Client-Addr: ")

    def clear(self) -> None:
        self._from = self.dump.stat().st_size if self.dump.exists() else 0

    def cpu_seconds(self) -> float:
        return 0.0 if self._proc is None else task_cpu_seconds(f"/proc/{self._proc.pid}/stat")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


def start_sink(kind: str) -> CountingSink | PostfixSink:
    """The relay a benchmark delivers to: ``aiosmtpd`` (in this process's thread) or ``postfix``."""
    return PostfixSink().start() if kind == "postfix" else CountingSink().start()


# ---------------------------------------------------------------- config

def _gen_domains() -> tuple[list[str], list[str]]:
    gen = _gen_module()
    return list(gen.PL_COMPANY_DOMAINS), list(gen.EN_COMPANY_DOMAINS)


def customers_toml() -> str:
    """Customers for the generator's company domains, so contracts really resolve.

    Polish companies: every other one `sla` (24 h), the rest `prepaid` (plenty of
    hours); English companies: a third each `sla`, `prepaid`, `occasional`.
    Free-mail senders (wp.pl, gmail.com, ...) match no customer: unverified.
    """
    pl, en = _gen_domains()
    parts = []
    for i, domain in enumerate(pl + en):
        lang = "pl" if domain in pl else "en"
        if domain in pl:
            kind = "sla" if i % 2 == 0 else "prepaid"
        else:
            kind = ("sla", "prepaid", "occasional")[(i - len(pl)) % 3]
        cid = re.sub(r"[^a-z0-9]+", "-", domain.split(".")[0])
        terms = {
            "sla": "reaction_hours = 24\n  monthly_hours = 20\n  hourly_rate = 200\n",
            "prepaid": "hours = 15\n  valid_until = 2099-12-31\n  hourly_rate = 220\n",
            "occasional": "hourly_rate = 250\n",
        }[kind]
        parts.append(
            f'[[customers]]\nid = "{cid}"\nname = "{cid.replace("-", " ").title()}"\nlanguage = "{lang}"\n'
            f'domains = ["{domain}"]\nbilling_address = "faktury@{domain}"\n\n'
            f'  [[customers.contracts]]\n  id = "{cid}-{kind}"\n  kind = "{kind}"\n  start = 2020-01-01\n  {terms}\n'
        )
    return "\n".join(parts)


def write_config(work: Path, *, imap_port: int, user: str, password: str, smtp_port: int, database_url: str = "",
                 idle: bool = False, ack_limit: int = 1_000_000, extra: str = "") -> Path:
    """A maild config for the private servers, shaped like tests/helpers.write_config."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "customers.toml").write_text(customers_toml(), encoding="utf-8")
    text = f"""\
customers_file = "customers.toml"

[storage]
path = "{work / 'var'}"

[database]
url = "{database_url}"

[imap]
host = "127.0.0.1"
port = {imap_port}
security = "none"
username = "{user}"
password = "{password}"
idle = {"true" if idle else "false"}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from_address = "{SUPPORT_ADDRESS}"
from_name = "Helpdesk"

[support]
address = "{SUPPORT_ADDRESS}"
ticket_prefix = "SUP"
max_auto_replies_per_hour = {ack_limit}
max_auto_replies_per_domain_per_hour = {ack_limit}

[[consultants]]
email = "anna@firma.pl"
name = "Anna Nowak"
role = "consultant"

[[consultants]]
email = "szef@firma.pl"
name = "Szef"
role = "manager"
{extra}
"""
    path = work / "maild.toml"
    path.write_text(text, encoding="utf-8")
    return path


def vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
