"""Sending while the mailbox is read: the outbox drained by a forked process.

A backlog used to be worked in turns: a slice of reading (the main process
stores, the parse worker parses), then a slice of sending (the main process
renders and sends, and spends half of that time waiting for the relay's
answers). The outbox waited while mail was read, and the reader while mail was
sent, so the whole cycle took the sum of the two. The courier is a copy of the
daemon forked when a reading slice finds a backlog: it drains committed outbox
rows (``Outbox.drain``, the same code and the same guarantees) while the main
process goes on storing, on its own interpreter (a thread would share the main
process's lock with the storing and wait for it at every answer of the relay).

Why the guarantees hold:

* **Each mail once, at most one resent per kill.** While a courier runs the
  daemon itself sends nothing (``Daemon.drain`` lets the couriers finish or stops
  them first), and the courier marks each mail sent before the next one's data
  goes out, as any drain does. When the reading has ended with mail still
  due, a second courier joins the first (``Daemon._send_with_two_couriers``):
  the two take one turn between them (``Outbox.turn_lock``, the POSIX record lock
  of a file both hold, owned per process and dropped by the kernel when its
  holder dies) from a mail's final "." to its committed mark (DATA and the message
  itself go out before it: until the "." the relay cannot accept the mail), so of the
  two only one at a time can have a mail the relay accepted and the database does not
  know, while the other builds, addresses and writes its next one.
  The kernel kills the couriers when the daemon dies (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of the daemon leaves at most one mail unmarked: the daemon holds no
  turn, and when a courier dies holding it, the kill that ends it was sent to
  the other courier in the same step of the daemon's exit, before the dying
  courier's own exit (after it has torn down its memory) lets the turn go.
* **SQLite.** One daemon per file. Its courier while it reads is alone (it
  claims every due row) and marks each mail in the same file while the daemon
  commits its batches: the two take turns at SQLite's one writer. A batch then
  takes the write lock at its BEGIN (a mark committed between its first read and
  its first write would get it refused, SQLITE_BUSY_SNAPSHOT), and the write
  gate (``Outbox.write_gate``: a file's POSIX lock the daemon holds while it
  stores a batch, the courier around each mark) lets a held-up mark go the
  moment the batch commits. The courier ends with the reading
  (``Daemon._end_sqlite_courier``), before the cycle's other steps write: with
  fewer than ``SQLITE_TWO_AFTER_READING_FROM`` mails due it first sends them
  (the daemon waits), else it stops after the mail in hand.
  When the reading ends with at least ``SQLITE_COURIERS_FROM`` mails due, two
  couriers send them, as on PostgreSQL after the reading, with the same shared
  turn; each claims only its half of the rows (``Outbox.partition``: ids even
  or odd), so no row is claimed twice without row locks. Their marks never
  contend: each is written inside the turn. Before each fork every SQLite
  connection of the daemon and its WAL thread's are closed.
* **Several daemons.** On PostgreSQL the courier claims rows like any drain:
  ``FOR UPDATE SKIP LOCKED`` and advisory locks of its own database session,
  which the server drops when the courier dies.
* **SIGTERM.** The courier ignores the stop signals (systemd sends them to the
  whole unit): the daemon stops it, and it finishes the mail in hand first.
* **An unreachable relay** ends the courier's sending; the daemon hears of it
  (``CourierReport.relay_error``) and backs the relay off as after its own drain.

After the fork the courier opens database connections of its own: the
daemon's, copied by the fork, are never used, closed or finalised here (their
pool is kept referenced until ``os._exit``), so the daemon's sessions, its
mailbox lock among them, are untouched.
"""
from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import stat
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from maild.errors import MaildError
from maild.outbound.forked import die_with_parent
from maild.outbound.outbox import DrainResult, Outbox
from maild.outbound.smtp import SmtpError

log = logging.getLogger("maild.courier")

CHUNK = 1_000_000  # mails per Outbox.drain call: in effect one drain, kept open until the courier is stopped
# rows a courier claims at a time, as any drain (outbox.CLAIM_CHUNK): two couriers sending the
# rest of a backlog end within a chunk of each other. Smaller chunks even out that end, but
# each claim sorts the pending rows on the server: 50 cost the server 2 s more CPU per 15,460
# mails than 200 (bench/README.md, seventh session)
CLAIM_CHUNK = 200
# SQLite: due mails from which the reading's end hands the sending to two couriers (a fork each
# and a connection of their own: not worth it for a few mails, which keep the daemon's exact order)
SQLITE_COURIERS_FROM = 200
# SQLite: due mails at a whole reading's end from which the courier that sent while reading stops for
# two couriers with a half each; below it that courier sends the rest alone on the connections it has
# open. Two cost two forks, two connections and two SMTP sessions; one niced process is the slower
# sender of a large rest. 2,000-mail cycles (bench/README, sixteenth session): ~680 left, alone +2.7 %;
# ~2,400 left (a working day), alone -2.5 %
SQLITE_TWO_AFTER_READING_FROM = 1000
# SQLite: the niceness of the courier that sends while the backlog is read. The reading (the daemon
# and its parse worker) is the cycle's critical path; at the same priority the courier took its CPU
# from it on a busy machine (10,000 mails: the reading 34 % longer, the whole cycle no shorter). At
# 10 it runs on what the reading leaves idle, and what it could not send goes after the reading
READING_NICENESS = 10
STOP_POLL_SECONDS = 0.2  # how often a wait for a courier's end looks at the daemon's stop request
IDLE_POLL_SECONDS = 1.0  # how long an idle courier waits for a poke before it looks at the outbox again
_STOP = b"s"
_POKE = b"p"
_FINISH = b"f"  # send what is due, then end (no waiting for the next batch)
# the pools of the daemon's connections, inherited by the fork: kept referenced so that
# nothing in the courier ever closes or finalises them (os._exit runs no finaliser)
_INHERITED: list[Any] = []


@dataclass
class CourierReport:
    """What a courier did: its drains' sums, a relay fault that ended it, and the
    mails the relay took whose sent marks the database refused (``Outbox.unmarked``)."""

    sent: DrainResult = field(default_factory=DrainResult)
    relay_error: str | None = None
    fault: str | None = None  # anything else that ended it (the database went away, ...)
    unmarked: dict[int, dict[str, Any]] = field(default_factory=dict)


class CourierError(MaildError):
    """The courier could not be started (fork failed)."""


class _Control:
    """The courier's end of the daemon's control pipe: pokes (new rows were committed)
    and the stop request, read without blocking between mails."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.stopping = False
        self.poked = False
        self.finishing = False
        os.set_blocking(fd, False)

    def read(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        if not data or _STOP in data:  # EOF: the daemon is gone or closed the pipe
            self.stopping = True
        if _POKE in data:
            self.poked = True
        if _FINISH in data:
            self.finishing = True

    def should_stop(self) -> bool:
        if not self.stopping:
            self.read()
        return self.stopping

    def wait(self, timeout: float) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP)
        if poller.poll(int(timeout * 1000)):
            self.read()


def _close_inherited_pipes(keep: tuple[int, ...]) -> None:
    """Close every pipe the fork copied but ours and stdin/out/err: the daemon's ends of its
    parse worker's pipes above all, whose reader must see them close when the daemon closes
    them, not when the courier ends."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3 or fd in keep:
            continue
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:  # the directory's own descriptor, gone by now
            pass


def _courier_main(outbox: Outbox, control_fd: int, report_fd: int, turn_fd: int | None,
                  partition: tuple[int, int] | None = None, write_gate: int | None = None) -> None:
    _close_inherited_pipes((control_fd, report_fd))
    outbox.turn_lock = turn_fd
    outbox.partition = partition
    outbox.write_gate = write_gate
    outbox.claim_chunk = CLAIM_CHUNK
    engine = outbox.sessions.kw["bind"]
    _INHERITED.append(engine.pool)
    engine.dispose(close=False)  # new connections of its own from here on
    control = _Control(control_fd)
    outbox.stop_requested = control.should_stop

    def wait_for_more() -> bool:
        """Nothing due: wait for the daemon's next batch (or a second), keeping the drain's
        database session and SMTP connections open for it. Once asked to finish: nothing
        due is the end."""
        control.read()
        if control.finishing:
            return False
        if not control.poked and not control.should_stop():
            control.wait(IDLE_POLL_SECONDS)
        control.poked = False
        return not control.should_stop()

    outbox.wait_for_more = wait_for_more
    report = CourierReport()
    try:
        while not control.should_stop():
            part = outbox.drain(limit=CHUNK)
            report.sent.add(part)
            del report.sent.errors[20:]  # the report goes through a pipe: the first errors say enough
            if control.finishing:
                break
    except SmtpError as exc:
        report.relay_error = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which carries on without the courier
        report.fault = f"{type(exc).__name__}: {exc}"
    report.unmarked = dict(outbox.unmarked)
    with open(report_fd, "wb", closefd=False) as out:
        pickle.dump(report, out, protocol=pickle.HIGHEST_PROTOCOL)


class Courier:
    """The daemon's handle on one forked courier: ``start``, ``poke``, ``stop``."""

    def __init__(self, outbox: Outbox, turn_fd: int | None = None) -> None:
        self.outbox = outbox
        self.turn_fd = turn_fd  # the couriers' shared turn (a file all of them hold; ``Outbox.turn_lock``)
        # SQLite: the rows this courier claims, (k, n): ids k modulo n (``Outbox.partition``)
        self.partition: tuple[int, int] | None = None
        # SQLite, sending while the backlog is stored: the file whose lock the daemon holds while it
        # stores a batch and the courier around each mark (``Outbox.write_gate``)
        self.write_gate: int | None = None
        self.after_reading = False  # started once the reading had ended (what it sends is counted so)
        self.niceness = 0  # added to the daemon's (``os.nice``) in the forked courier
        self.pid: int | None = None
        self._status: int | None = None  # the exit status, once reaped
        self._control: int | None = None
        self._report: int | None = None
        self.started_at = 0.0

    @property
    def running(self) -> bool:
        """Started and not yet stopped (it may have ended by itself: ``ended``)."""
        return self.pid is not None

    def ended(self) -> bool:
        """Whether the courier has exited on its own (the relay went away, a fault): its
        report waits in the pipe for ``stop``."""
        if self.pid is None:
            return False
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self._status = status
        return True

    def start(self) -> None:
        """Fork the courier; the mails the daemon knows were taken but not marked go with it."""
        if self.pid is not None:
            return
        control_r, control_w = os.pipe()
        report_r, report_w = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (control_r, control_w, report_r, report_w):
                os.close(fd)
            raise CourierError(f"cannot start the courier: {exc}") from exc
        if pid == 0:  # the courier; never returns into the caller
            code = 0
            try:
                os.close(control_w)
                os.close(report_r)
                die_with_parent(parent)
                if self.niceness:
                    os.nice(self.niceness)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
                _courier_main(self.outbox, control_r, report_w, self.turn_fd, self.partition, self.write_gate)
            except BaseException:  # nothing may escape into a copy of the daemon's stack
                code = 70
            finally:
                os._exit(code)
        os.close(control_r)
        os.close(report_w)
        self.pid, self._control, self._report, self._status = pid, control_w, report_r, None
        self.outbox.unmarked.clear()  # the courier marks them first, or reports them back
        self.started_at = time.monotonic()
        log.debug("courier %d started", pid)

    def poke(self) -> None:
        """New outbox rows were committed: an idle courier looks at once."""
        if self._control is None:
            return
        try:
            os.write(self._control, _POKE)
        except (BlockingIOError, BrokenPipeError):  # a full pipe has pokes enough; a dead courier is found at stop
            pass

    def finish(self) -> None:
        """Ask the courier to send what is due and then end (``ended`` says when)."""
        if self._control is None:
            return
        try:
            os.write(self._control, _FINISH)
        except (BlockingIOError, BrokenPipeError):
            pass

    def wait_ended(self, timeout: float, stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait until the courier is done (asked to ``finish``, it is once nothing is due), at
        most ``timeout`` seconds or until ``stop()`` says so; whether it is done (``stop``
        then collects its report).

        Its report in the pipe, written as its last act, is what ends the wait: no polling
        interval is added to the end of a cycle."""
        if self._report is None:
            return False
        poller = select.poll()
        poller.register(self._report, select.POLLIN | select.POLLHUP)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if poller.poll(int(max(0.0, min(left, STOP_POLL_SECONDS)) * 1000)):
                return True
            if left <= 0 or stop():
                return False

    def stop(self) -> CourierReport:
        """Ask the courier to stop after the mail in hand, wait for it and return its report."""
        if self.pid is None:
            return CourierReport()
        pid, control, report_fd = self.pid, self._control, self._report
        self.pid = self._control = self._report = None
        assert control is not None and report_fd is not None
        try:
            os.write(control, _STOP)
        except BrokenPipeError:
            pass
        os.close(control)
        try:
            with open(report_fd, "rb") as stream:
                report: CourierReport = pickle.load(stream)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            report = CourierReport(fault=f"the courier ended without a report: {exc}")
        status = self._status
        if status is None:
            _, status = os.waitpid(pid, 0)
        if status and report.fault is None:
            report.fault = f"the courier exited with status {status}"
        self.outbox.unmarked.update(report.unmarked)
        log.debug("courier %d stopped after %.1f s: %d sent", pid, time.monotonic() - self.started_at,
                  report.sent.sent)
        return report
