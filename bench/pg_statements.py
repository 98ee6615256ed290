#!/usr/bin/env python3
"""What PostgreSQL's own CPU goes to in the whole cycle: statements, server processes, tables and indexes.

    .venv/bin/python bench/pg_statements.py [--n 10000] [--runs 1] [--sink postfix|aiosmtpd] [--top 30]

Each run is ``bench/backlog.py --db postgres --migrated --no-verify``'s run (the
same corpus, Dovecot, sink, config and ``bench/cycle.py`` child), on a private
cluster with pg_stat_statements loaded (``PrivatePostgres(statements=True)``:
``track = all``, ``track_planning``, ``track_io_timing``). The counters are reset
once the database is migrated and the mailbox loaded, right before the timed
child starts, so what is printed is the cycle's alone:

* the server's CPU (user+sys of the postmaster, its reaped and its live
  processes), and by process, sampled every 0.2 s from /proc: the backends of
  maild's main process, those of its forked children (the couriers), the WAL
  writer, checkpointer, background writer, autovacuum; a backend's client is
  found through its socket (the port in its title, /proc/net/tcp, the client's
  /proc/PID/fd). What ended between two samples shows as "not sampled";
* the top statements by total execution time: calls (per mail read), execution
  and planning milliseconds, rows, buffers hit/read/dirtied, WAL bytes; the sum
  over all statements against the server's CPU;
* WAL (records, bytes, writes, syncs), the database's transactions and rows, each
  table's inserted/updated (HOT)/deleted rows and autovacuum/analyze runs, each
  index's scans and size: an index with 0 scans is one the cycle writes and no
  statement of it reads.

pg_stat_statements' own bookkeeping costs the server some CPU per statement, so
the throughput figures are ``backlog.py``'s, not this script's.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backlog  # noqa: E402
from common import BENCH_ROOT, SEED, PrivatePostgres, banner, corpus, spread, start_dovecot, start_sink  # noqa: E402
from common import task_cpu_seconds  # noqa: E402

_PORT = re.compile(r"127\.0\.0\.1\((\d+)\)")


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the loopback TCP sockets whose local port is ``port`` (the client's end of a backend)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class ServerSampler(threading.Thread):
    """Every 0.2 s the CPU of each server process, and for a new backend which process is its client."""

    def __init__(self, pg: PrivatePostgres) -> None:
        super().__init__(daemon=True)
        self.pg = pg
        self.cpu: dict[int, float] = {}  # server pid -> last CPU seen
        self.role: dict[int, str] = {}
        self._done = threading.Event()
        self.start()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def _client_role(self, title: str) -> str:
        match = _PORT.search(title)
        if match is None:
            return "backend (socket)"
        inodes = _socket_inodes(int(match.group(1)))
        me = os.getpid()
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            pid = int(fd_dir.parent.name)
            if pid == me:
                continue
            try:
                cmdline = (fd_dir.parent / "cmdline").read_bytes()
                if b"cycle.py" not in cmdline:
                    continue
                for fd in fd_dir.iterdir():
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return "maild main process" if _ppid(pid) == me else "maild children (couriers)"
            except OSError:
                continue
        return "other clients"

    def _sample(self) -> None:
        for pid, title in self.pg.processes().items():
            if pid not in self.role:
                if title == "postmaster":
                    self.role[pid] = "postmaster"
                elif "127.0.0.1(" in title or "[local]" in title:
                    self.role[pid] = "backend: " + self._client_role(title)
                elif "autovacuum" in title:
                    self.role[pid] = "autovacuum"
                else:
                    self.role[pid] = title.replace("postgres: ", "")
            if title != "postmaster":
                self.cpu[pid] = task_cpu_seconds(f"/proc/{pid}/stat")

    def run(self) -> None:
        self.base = {pid: task_cpu_seconds(f"/proc/{pid}/stat") for pid in self.pg.processes()}
        self._sample()
        while not self._done.wait(0.2):
            self._sample()

    def by_role(self) -> dict[str, tuple[float, int]]:
        """Role -> (CPU seconds since the start, how many processes)."""
        out: dict[str, tuple[float, int]] = {}
        for pid, cpu in self.cpu.items():
            role = self.role.get(pid, "?")
            seconds, count = out.get(role, (0.0, 0))
            out[role] = (seconds + cpu - self.base.get(pid, 0.0), count + 1)
        return out


STATEMENTS = """
SELECT s.query, s.calls, s.total_exec_time, s.total_plan_time, s.plans, s.rows, s.shared_blks_hit,
       s.shared_blks_read, s.shared_blks_dirtied, s.shared_blks_written, s.wal_records, s.wal_bytes,
       s.blk_read_time + s.blk_write_time AS io_ms
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = '{db}'
ORDER BY s.total_exec_time DESC
"""


_LIST = re.compile(r"\(\$\d+(?:::[A-Za-z ]+)?(?:, \$\d+(?:::[A-Za-z ]+)?)+\)")
_SUMMED = ("calls", "total_exec_time", "total_plan_time", "plans", "rows", "shared_blks_hit", "shared_blks_read",
           "shared_blks_dirtied", "shared_blks_written", "wal_records", "wal_bytes", "io_ms")


def grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per statement whatever the length of its IN lists (each length is a shape of its own
    to pg_stat_statements), with ``shapes`` saying how many were summed; by execution time."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = _LIST.sub("(...)", r["query"])
        into = out.setdefault(key, {"query": key, "shapes": 0, **{k: 0 for k in _SUMMED}})
        into["shapes"] += 1
        for k in _SUMMED:
            into[k] += r[k] or 0
    return sorted(out.values(), key=lambda r: -r["total_exec_time"])


def _one_line(query: str, width: int) -> str:
    flat = " ".join(query.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def cpu_line(n: int, server_cpu: float, roles: dict[str, tuple[float, int]]) -> str:
    return (f"  server CPU {server_cpu:.2f} s ({1000 * server_cpu / n:.3f} ms a mail read); by process (sampled): "
            + ", ".join(f"{k} {v:.2f} ({count})" for k, (v, count) in sorted(roles.items(), key=lambda kv: -kv[1][0])
                        if v >= 0.005)
            + f"; not sampled {server_cpu - sum(v for v, _ in roles.values()):.2f} (processes in parentheses)")


def report(pg: PrivatePostgres, db: str, n: int, server_cpu: float, roles: dict[str, tuple[float, int]], top: int,
           width: int) -> None:
    rows = grouped(pg.query(STATEMENTS.format(db=db)))
    total_exec = sum(r["total_exec_time"] for r in rows)
    total_plan = sum(r["total_plan_time"] for r in rows)
    calls = sum(r["calls"] for r in rows)
    print(cpu_line(n, server_cpu, roles))
    print(f"  statements: {calls} calls ({calls / n:.2f} a mail read), execution {total_exec / 1000:.2f} s, "
          f"planning {total_plan / 1000:.2f} s, {len(rows)} statements ({sum(r['shapes'] for r in rows)} shapes); "
          "a foreign key's check (SELECT 1 FROM ONLY ... FOR KEY SHARE) is timed on its own and within its INSERT")
    print(f"  {'calls':>7} {'/mail':>6} {'exec ms':>8} {'plan ms':>8} {'us/call':>7} {'rows':>7} {'hit':>8} "
          f"{'read':>5} {'dirtied':>7} {'WAL kB':>7} {'shapes':>6}  statement")
    for r in rows[:top]:
        print(f"  {r['calls']:7d} {r['calls'] / n:6.3f} {r['total_exec_time']:8.0f} {r['total_plan_time']:8.0f} "
              f"{1000 * r['total_exec_time'] / max(r['calls'], 1):7.0f} {r['rows']:7d} {r['shared_blks_hit']:8d} "
              f"{r['shared_blks_read']:5d} {r['shared_blks_dirtied']:7d} {int(r['wal_bytes']) // 1024:7d} {r['shapes']:6d}  "
              f"{_one_line(r['query'], width)}")
    by_calls = sorted(rows, key=lambda r: -r["calls"])[:12]
    print("  most called: " + "; ".join(f"{r['calls']} x {_one_line(r['query'], 60)}" for r in by_calls))
    wal = pg.query("SELECT wal_records, wal_fpi, wal_bytes, wal_buffers_full, wal_write, wal_sync, wal_write_time, "
                   "wal_sync_time FROM pg_stat_wal")[0]
    bgw = pg.query("SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend "
                   "FROM pg_stat_bgwriter")[0]
    print(f"  WAL: {wal['wal_records']} records ({wal['wal_records'] / n:.1f} a mail), {int(wal['wal_bytes']) // 1024} kB, "
          f"full-page images {wal['wal_fpi']}, writes {wal['wal_write']}, syncs {wal['wal_sync']}; "
          f"checkpoints {bgw['checkpoints_timed']}+{bgw['checkpoints_req']}, buffers written by the checkpointer "
          f"{bgw['buffers_checkpoint']}, bgwriter {bgw['buffers_clean']}, backends {bgw['buffers_backend']}")
    print(f"  per table (inserted / updated (HOT) / deleted rows; autovacuum, autoanalyze):")
    for t in _in_db(pg, db, "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count, "
                            "autoanalyze_count, seq_scan, idx_scan FROM pg_stat_user_tables "
                            "WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY n_tup_ins + n_tup_upd DESC"):
        print(f"    {t['relname']:18} {t['n_tup_ins']:6d} / {t['n_tup_upd']:6d} ({t['n_tup_hot_upd']:6d}) / "
              f"{t['n_tup_del']:5d}; vacuum {t['autovacuum_count']}, analyze {t['autoanalyze_count']}; "
              f"scans: seq {t['seq_scan']}, index {t['idx_scan'] or 0}")
    print("  indexes of written tables (scans, size): an index with 0 scans is written by the cycle and read by "
          "none of its statements")
    written = {t["relname"] for t in _in_db(pg, db, "SELECT relname FROM pg_stat_user_tables "
                                                    "WHERE n_tup_ins + n_tup_upd + n_tup_del > 0")}
    for i in _in_db(pg, db, "SELECT relname, indexrelname, idx_scan, pg_relation_size(indexrelid) AS size "
                            "FROM pg_stat_user_indexes ORDER BY relname, indexrelname"):
        if i["relname"] in written:
            print(f"    {i['relname']:18} {i['indexrelname']:40} {i['idx_scan']:7d} {int(i['size']) // 1024:6d} kB")


def _in_db(pg: PrivatePostgres, db: str, sql: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    conninfo = pg.server.conninfo.replace("dbname=postgres", f"dbname={db}")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10, row_factory=dict_row) as conn:
        cursor = conn.execute(sql)
        return list(cursor.fetchall()) if cursor.description else []


def plans(logfile: Path, start: int) -> None:
    """The plans auto_explain logged since ``start``: the slowest of each statement, and how often it was logged."""
    with logfile.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    found: dict[str, tuple[float, str, int]] = {}
    for entry in re.split(r"\n(?=\S+ \S+ UTC \[\d+\] LOG:  duration: )", text):
        match = re.search(r"LOG:  duration: ([\d.]+) ms  plan:\n\s*Query Text: (.*?)\n(.*)", entry, re.DOTALL)
        if match is None:
            continue
        ms, query, plan = float(match.group(1)), _LIST.sub("(...)", " ".join(match.group(2).split())), match.group(3)
        slowest, _, seen = found.get(query, (0.0, "", 0))
        found[query] = (max(ms, slowest), plan if ms >= slowest else found[query][1], seen + 1)
    print(f"  plans logged (auto_explain): {sum(v[2] for v in found.values())} of {len(found)} statements")
    for query, (ms, plan, seen) in sorted(found.items(), key=lambda kv: -kv[1][0] * kv[1][2]):
        print(f"  -- {seen} x, slowest {ms:.1f} ms: {_one_line(query, 300)}")
        print("\n".join("     " + line.strip() for line in plan.strip().splitlines()[:25]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--sink", choices=("aiosmtpd", "postfix"), default="postfix")
    parser.add_argument("--every-day", action="store_true", help="as backlog.py --every-day")
    parser.add_argument("--restarted", action="store_true",
                        help="as backlog.py --restarted: one untimed run on the empty mailbox first (the counters are "
                             "reset after it, once the mailbox is loaded)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--width", type=int, default=110, help="characters of each statement shown")
    parser.add_argument("--before", action="append", default=[], metavar="SQL",
                        help="run this in each new database once migrated, before the cycle (a what-if: "
                             "DROP INDEX ..., ALTER TABLE ...); may be given more than once")
    parser.add_argument("--alternate", action="store_true",
                        help="--before in every other run only (runs 2, 4, ...), the medians of both halves compared")
    parser.add_argument("--statements", choices=("on", "off"), default="on",
                        help="off: no pg_stat_statements (its own cost out of the server's CPU); the "
                             "server's CPU by process is still printed")
    parser.add_argument("--explain", type=float, metavar="MS",
                        help="auto_explain: print the plan of each statement slower than MS ms (one per statement)")
    args = parser.parse_args()
    # backlog.one_run's options: a migrated database, no check against the corpus
    run_args = argparse.Namespace(every_day=args.every_day, migrated=True, restarted=args.restarted, profile=False,
                                  keep=False, sink=args.sink, acks_only=False)
    banner(f"PostgreSQL's statements in the whole cycle: {args.n} mails, {args.runs} runs, sink {args.sink}")
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="pgstat-", dir=BENCH_ROOT))
    base.chmod(0o755)
    dovecot = start_dovecot(base / "dovecot")
    sink = start_sink(args.sink)
    pg = PrivatePostgres(base / "postgres", statements=args.statements == "on", explain_ms=args.explain)
    mail_dir = corpus(args.n, args.seed)
    count = len(list(mail_dir.glob("*.eml")))
    load_mailbox = backlog.load_mailbox
    sampler: list[ServerSampler] = []
    run_no = [0]

    def loaded_then_reset(*a: Any, **kw: Any) -> str:
        """backlog.one_run loads the mailbox right before starting the timed child: the counters start here."""
        out = load_mailbox(*a, **kw)
        db = f"maild_bench_{pg._count}"
        if not args.alternate or run_no[0] % 2 == 1:
            for sql in args.before:
                _in_db(pg, db, sql)
        if pg.statements:
            pg.reset_statements(db)
        sampler.append(ServerSampler(pg))
        return out

    backlog.load_mailbox = loaded_then_reset  # type: ignore[assignment]
    try:
        rows: list[dict[str, Any]] = []
        for i in range(args.runs):
            run_no[0] = i
            sampler.clear()
            log_from = pg.server.logfile.stat().st_size
            row = backlog.one_run(i, run_args, base, dovecot, sink, pg, mail_dir, count, check=False)
            sampler[0].stop()
            rows.append(row)
            db = f"maild_bench_{pg._count}"
            print(f"\nrun {i + 1}: {count} mails read, {row['sent']} sent; whole cycle {row['cycle_rate']:.0f} msg/s"
                  f"{' (with pg_stat_statements own cost)' if pg.statements else ''}; CPU maild main "
                  f"{row['cpu_user_s'] + row['cpu_sys_s']:.2f} s, its children {row.get('children_cpu_s', 0):.2f} s; "
                  f"load average {os.getloadavg()[0]:.1f}")
            if pg.statements:
                report(pg, db, count, row["pg_cpu_s"], sampler[0].by_role(), args.top, args.width)
            else:
                print(cpu_line(count, row["pg_cpu_s"], sampler[0].by_role()))
            if args.explain:
                plans(pg.server.logfile, log_from)
            # dropped, so that autovacuum's work on it does not count in the next run's server CPU
            pg.server.execute_admin(f"DROP DATABASE {db} WITH (FORCE)")
        halves = {"as migrated": rows[0::2], "with --before": rows[1::2]} if args.alternate else {"all runs": rows}
        for label, part in halves.items():
            if len(part) > 1 or args.alternate:
                print(f"\nmedian of {len(part)} ({label}): server CPU {spread([r['pg_cpu_s'] for r in part])} s, "
                      f"maild main {spread([r['cpu_user_s'] + r['cpu_sys_s'] for r in part])} s, its children "
                      f"{spread([r.get('children_cpu_s', 0) for r in part])} s, whole cycle "
                      f"{spread([r['cycle_rate'] for r in part], '{:.0f}')} msg/s")
    finally:
        backlog.load_mailbox = load_mailbox  # type: ignore[assignment]
        sink.stop()
        dovecot.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
