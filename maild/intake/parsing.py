"""Parsing off the main process, with a hard deadline on every message.

Parsing is the one stage that reads every byte a stranger sent, so it is where a
message can take unbounded time or memory (a quadratic corner in a parser, a
regex that backtracks). A stage that hangs in C code cannot be interrupted from
inside the process, so every batch is parsed in a forked worker that the daemon
can kill: a message still being parsed after ``deadline_seconds`` gets its worker
killed and comes back as a ``ParserCrash`` (counted as an attempt, quarantined
after ``MAX_ATTEMPTS`` by the pipeline); the rest of its batch is parsed by a
new worker. A worker that dies (a segfault, the OOM killer) is treated the same
way, the message it was at named by the progress it reports in shared memory.

The worker also overlaps parsing with storing: batch k+1 is parsed on the other
core while batch k is being stored. A batch with a big message is parsed only
when its result is asked for (after the batch before it was stored and let go),
by a worker forked for it alone that shares the raw bytes with the daemon
(copy-on-write) and exits afterwards, so that its memory is given back.

The worker dies with the daemon: the kernel kills it when its parent goes
(``PR_SET_PDEATHSIG``), it checks its parent before each message, and it ends
when its job pipe closes; it ignores the terminal's and systemd's stop signals,
which are the daemon's to handle.
"""
from __future__ import annotations

import copyreg
import ctypes
import ctypes.util
import io
import logging
import mmap
import os
import pickle
import select
import signal
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, BinaryIO

from maild.errors import MaildError
from maild.intake.mailbox import FetchedMail
from maild.intake.facts import ReadingRules, mail_facts
from maild.intake.faults import ParseWorkerError as ParseWorkerError
from maild.intake.message import InboundMessage, ParseLimits, UnparsableMessage, parse_message
from maild.intake.quoting import split_reply
from maild.outbound.forked import die_with_parent

log = logging.getLogger("maild.parse")

Parsed = InboundMessage | UnparsableMessage


class ParseTimeout(MaildError):
    """A message was still being parsed at the deadline; its worker was killed."""


class ParseWorkerDied(MaildError):
    """The parse worker died while parsing a message (a signal, the OOM killer)."""


class ParserCrash(UnparsableMessage):
    """The parser failed on a message (MemoryError, a bug it let through, a deadline,
    a dead worker): counted and retried like any processing failure, quarantined
    after ``MAX_ATTEMPTS``."""

    def __init__(self, original: Exception | str) -> None:
        self.original = original if isinstance(original, Exception) else RuntimeError(original)
        super().__init__(f"parser crashed: {type(self.original).__name__}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses from the parse worker as text: the exception object itself may not pickle.
        return (type(self), (f"{type(self.original).__name__}: {self.original}",))


class GaveUp(UnparsableMessage):
    """A message whose processing was started ``attempts`` times and never finished
    (the daemon was killed or crashed each time): not parsed again, quarantined."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(f"processing started {attempts} times and never finished "
                         "(the daemon was killed, crashed or stopped each time); not parsed again")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.attempts,))


def parse_one(raw: bytes, limits: ParseLimits, size: int | None = None, rules: ReadingRules | None = None) -> Parsed:
    """Parse, turning every failure into a value: one message's bytes are never the batch's problem.

    The text is split into new text and quoted history too, and with ``rules`` the
    stages' facts are found (``intake.facts``): the parse worker does both for the
    process that stores the batch.
    """
    try:
        msg = parse_message(raw, limits, size)
    except UnparsableMessage as exc:
        return exc
    except Exception as exc:  # this message's fault, not the batch's: see ParserCrash
        return ParserCrash(exc)
    try:
        split = split_reply(msg.text)
    except Exception:  # left to the routing stage, where a failure is counted against the message
        return msg
    try:
        facts = mail_facts(msg.subject, msg.text, split[0], msg.headers, rules) if rules is not None else None
    except Exception:  # found again by the stages, where a failure is counted against the message
        facts = None
    return replace(msg, reply_split=split, facts=facts)


def parse_all(raws: Sequence[bytes], limits: ParseLimits, sizes: Sequence[int | None] = (),
              rules: ReadingRules | None = None) -> list[Parsed]:
    return [parse_one(raw, limits, sizes[i] if i < len(sizes) else None, rules) for i, raw in enumerate(raws)]


# (job id, raw mails, their sizes on the server, whether to find their facts)
JobPayload = tuple[int, list[bytes], list[int | None], bool]


# InboundMessage.headers is a read-only view; it crosses to and from the parse
# worker as a plain dict.
def _read_only(items: dict[str, str]) -> types.MappingProxyType[str, str]:
    return types.MappingProxyType(items)


copyreg.pickle(types.MappingProxyType, lambda m: (_read_only, (dict(m),)))


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def return_free_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise): run after each
    batch in the daemon and in the parse worker, so neither idles at the size of its
    biggest batch while the other holds a 25 MB message."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


# The parent's ends of every live worker's pipes: a worker forked later closes
# them, so that a worker sees its job pipe close when the daemon goes.
_PARENT_FDS: set[int] = set()


class _Progress:
    """Which job and message a worker is at, and since when (CLOCK_MONOTONIC, the same
    in every process), in a page shared across the fork: read without asking the worker."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, mmap.PAGESIZE)
        self._cells = (ctypes.c_double * 3).from_buffer(self._map)

    def set(self, job: int, index: int, started: float) -> None:
        self._cells[0], self._cells[1], self._cells[2] = float(job), float(index), started

    def get(self) -> tuple[int, int, float]:
        return int(self._cells[0]), int(self._cells[1]), self._cells[2]

    def close(self) -> None:
        del self._cells
        self._map.close()


def _write(fd: int, obj: object) -> None:
    """Pickle to a pipe as a stream: a big message's parts are never held twice as bytes."""
    with open(fd, "wb", closefd=False, buffering=1 << 16) as out:
        pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)


def _read(stream: BinaryIO) -> Any:
    return pickle.load(stream)


def _worker_main(jobs_fd: int, results_fd: int, progress: _Progress, limits: ParseLimits, parent_pid: int,
                 job: JobPayload | None, rules: ReadingRules | None = None) -> None:
    """The forked worker: parse jobs until the pipe closes (or, given ``job``, that one only)."""
    # Keep only the worker's own pipes: every other descriptor the fork copied (the
    # daemon's sockets, a listening metrics port, other workers' pipes) would stay
    # open as long as this worker lives, holding a port or a connection for it.
    low, high = sorted((jobs_fd, results_fd))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
    die_with_parent(parent_pid)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    jobs = open(jobs_fd, "rb", buffering=1 << 16) if job is None else None
    while True:
        if job is None:
            assert jobs is not None
            try:
                job = _read(jobs)
            except (EOFError, OSError, pickle.UnpicklingError):
                return
            if job is None:
                return
        job_id, raws, sizes, with_facts = job
        found_with = rules if with_facts else None
        results: list[Parsed] = []
        for index, raw in enumerate(raws):
            if os.getppid() != parent_pid:
                return
            progress.set(job_id, index, time.monotonic())
            results.append(parse_one(raw, limits, sizes[index], found_with))
        progress.set(job_id, len(raws), 0.0)
        _write(results_fd, (job_id, results))
        del results, raws, job
        job = None
        if jobs is None:
            return
        return_free_memory()


class _Worker:
    """One forked worker process and the parent's ends of its pipes."""

    def __init__(self, limits: ParseLimits, job: JobPayload | None = None,
                 rules: ReadingRules | None = None) -> None:
        self.progress = _Progress()
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        parent_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (jobs_r, jobs_w, results_r, results_w):
                os.close(fd)
            self.progress.close()
            raise ParseWorkerError(f"cannot start a parse worker: {exc}") from exc
        if pid == 0:  # the worker; never returns into the caller
            code = 0
            try:
                os.close(jobs_w)
                os.close(results_r)
                _worker_main(jobs_r, results_w, self.progress, limits, parent_pid, job, rules)
            except BaseException:  # nothing may escape into a copy of the daemon's stack
                code = 70
            finally:
                os._exit(code)
        os.close(jobs_r)
        os.close(results_w)
        self.pid = pid
        self.one_shot = job is not None
        self.jobs_fd: int | None = jobs_w
        self.results_fd = results_r
        self.results = open(results_r, "rb", buffering=1 << 16, closefd=False)
        self.exit_status: int | None = None
        _PARENT_FDS.update((jobs_w, results_r))

    def send(self, job: JobPayload) -> None:
        assert self.jobs_fd is not None
        _write(self.jobs_fd, job)

    def wait_readable(self, timeout: float) -> bool:
        poller = select.poll()
        poller.register(self.results_fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    def alive(self) -> bool:
        if self.exit_status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return True
            self.exit_status = status
        return False

    def describe_exit(self) -> str:
        status = self.exit_status
        if status is None:
            return "still running"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"

    def close(self, kill: bool = False) -> None:
        """End the worker: closing its job pipe ends an idle one; ``kill`` ends it at once."""
        if self.jobs_fd is not None:
            _PARENT_FDS.discard(self.jobs_fd)
            os.close(self.jobs_fd)
            self.jobs_fd = None
        if kill and self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.exit_status is None:
            _, self.exit_status = os.waitpid(self.pid, 0)
        if self.results_fd in _PARENT_FDS:
            _PARENT_FDS.discard(self.results_fd)
            self.results.close()
            os.close(self.results_fd)
        self.progress.close()


class _Job(Future[list[Parsed]]):
    """One batch: results fill in as workers finish, ``todo`` is what is still unparsed."""

    def __init__(self, job_id: int, mails: Sequence[FetchedMail], big: bool) -> None:
        super().__init__()
        self.id = job_id
        self.raws: list[bytes] | None = [m.raw for m in mails]
        # the size on the server, when only the start of a bigger mail was fetched
        self.sizes: list[int | None] = [m.size if m.size > len(m.raw) else None for m in mails]
        self.keys = [m.source_key for m in mails]
        self.parsed: list[Parsed | None] = [None] * len(mails)
        self.todo = list(range(len(mails)))
        self.big = big
        self.sent_at = 0.0
        self.lost_workers = 0

    def payload(self, with_facts: bool) -> JobPayload:
        assert self.raws is not None
        return self.id, [self.raws[i] for i in self.todo], [self.sizes[i] for i in self.todo], with_facts

    def finish(self, results: list[Parsed]) -> None:
        for index, parsed in zip(self.todo, results):
            self.parsed[index] = parsed
        self.todo = []
        self._complete()

    def fail(self, position: int, why: Exception) -> None:
        index = self.todo.pop(position)
        self.parsed[index] = ParserCrash(why)
        if not self.todo:
            self._complete()

    def _complete(self) -> None:
        self.raws = None
        done = [p for p in self.parsed if p is not None]
        assert len(done) == len(self.parsed)
        self.set_result(done)


class ParseAhead:
    """Parses batches in a forked worker, each message within ``deadline_seconds``.

    ``submit`` hands a batch to the worker at once when it is idle (else it waits
    its turn); ``result`` returns it, in order, killing and replacing a worker that
    overruns the deadline or dies. ``heartbeat`` is called while waiting, so that a
    service manager hears the daemon is alive while a message's deadline runs.
    """

    MAX_MESSAGE = 4 * 1024 * 1024

    def __init__(self, limits: ParseLimits, deadline_seconds: float = 30.0,
                 heartbeat: Callable[[], None] | None = None, rules: ReadingRules | None = None) -> None:
        self.limits = limits
        self.rules = rules
        # The worker finds the mails' facts (``rules``) while it keeps ahead of the main process:
        # a batch not parsed yet when its result is asked for means the main process waits, so
        # the next batch is parsed without them (the stages find them themselves) until a batch
        # is ready when asked for again. Either way the stages decide the same (``intake.facts``).
        self._facts = rules is not None
        self.deadline = deadline_seconds
        self.heartbeat = heartbeat
        self._worker: _Worker | None = None
        self._queue: deque[weakref.ref[_Job]] = deque()
        self._in_flight: _Job | None = None
        self._next_id = 1

    def submit(self, mails: Sequence[FetchedMail]) -> Future[list[Parsed]]:
        big = max((len(m.raw) for m in mails), default=0) >= self.MAX_MESSAGE
        job = _Job(self._next_id, mails, big)
        self._next_id += 1
        if not mails:
            job.set_result([])
            return job
        self._queue.append(weakref.ref(job))
        if self._in_flight is None:
            self._dispatch()
        return job

    def result(self, future: Future[list[Parsed]], mails: Sequence[FetchedMail]) -> list[Parsed]:
        """The batch's parsed messages, in order; a message that overran or killed its
        worker is a ``ParserCrash``. Raises ParseWorkerError when no worker can be started."""
        if not isinstance(future, _Job):
            return future.result()
        self._facts = self.rules is not None and self._ready(future)
        while not future.done():
            if self._in_flight is None:
                head = self._next_job()
                assert head is not None, "a batch asked for is queued until parsed"
                self._start(head)
            self._wait()
        if self._in_flight is None:
            self._dispatch()
        return future.result()

    def collect(self) -> None:
        """Without waiting: the batch in the worker's results, if they are there, read, and the
        worker handed the next queued batch. A batch queued behind another goes to the worker
        only when the one before it is read (``result``, or this), so the daemon calls this
        between the steps of a reading's start (building the courier and the pipeline), which
        would otherwise leave the worker idle with a batch waiting."""
        worker = self._worker
        if self._in_flight is None or worker is None or not worker.wait_readable(0):
            return
        self._wait()  # the results (or the worker's end) are there: it returns without waiting
        if self._in_flight is None:
            self._dispatch()

    def close(self, wait: bool = False) -> None:
        """Stop the worker (``wait``: after the batch in hand) and drop queued batches."""
        if self._worker is not None:
            if wait and self._in_flight is not None:
                self._wait_until_idle()
            self._worker.close(kill=True)
            self._worker = None
        self._in_flight = None
        self._queue.clear()

    # ------------------------------------------------------------ internals

    def _ready(self, job: _Job) -> bool:
        """Whether ``job`` is parsed (its results wait in the pipe, or were read)."""
        if job.done():
            return True
        worker = self._worker
        return self._in_flight is job and worker is not None and worker.wait_readable(0)

    def _next_job(self) -> _Job | None:
        """The oldest batch still wanted; one dropped unasked (the slice ended) is skipped."""
        while self._queue:
            job = self._queue[0]()
            if job is not None and not job.done():
                return job
            self._queue.popleft()
        return None

    def _dispatch(self) -> None:
        head = self._next_job()
        if head is not None and not head.big:
            try:
                self._start(head)
            except ParseWorkerError as exc:
                # said again, and raised, when the batch's result is asked for
                log.warning("%s", exc)

    def _start(self, job: _Job) -> None:
        if job.big:
            # alone, in a worker of its own forked with the bytes in hand: the
            # regular worker is stopped so that its memory is given back
            if self._worker is not None:
                self._worker.close(kill=True)
            self._worker = _Worker(self.limits, job.payload(self._facts), self.rules)
        else:
            if self._worker is not None and (self._worker.one_shot or not self._worker.alive()):
                self._worker.close(kill=True)
                self._worker = None
            for tries in (1, 2):
                if self._worker is None:
                    self._worker = _Worker(self.limits, rules=self.rules)
                try:
                    self._worker.send(job.payload(self._facts))
                    break
                except OSError as exc:  # it died since it was last seen alive (EPIPE)
                    self._drop_worker(kill=True)
                    if tries == 2:
                        raise ParseWorkerError(f"cannot hand a batch to the parse worker: {exc}") from exc
        job.sent_at = time.monotonic()
        self._in_flight = job

    def _wait_until_idle(self) -> None:
        while self._in_flight is not None:
            self._wait()

    def _wait(self) -> None:
        """Wait for the batch in the worker: its result, the deadline, or the worker's death."""
        job, worker = self._in_flight, self._worker
        assert job is not None and worker is not None
        while True:
            at_job, position, started = worker.progress.get()
            started_this = at_job == job.id and started > 0
            left = self.deadline - (time.monotonic() - (started if started_this else job.sent_at))
            if left <= 0:
                self._drop_worker(kill=True)
                if started_this:
                    self._lost(job, position, ParseTimeout(
                        f"parse did not finish within {self.deadline:g} s; the parse worker was killed"))
                else:
                    self._died(job, "the parse worker did not start the batch in time")
                return
            if worker.wait_readable(min(max(left, 0.05), 1.0)):
                try:
                    job_id, results = _read(worker.results)
                except (EOFError, OSError, pickle.UnpicklingError, ValueError):
                    self._worker_died(job, worker)
                    return
                assert job_id == job.id
                job.finish(results)
                self._in_flight = None
                if worker.one_shot:
                    self._drop_worker()
                return
            if not worker.alive():
                self._worker_died(job, worker)
                return
            if self.heartbeat is not None:
                self.heartbeat()

    def _drop_worker(self, kill: bool = False) -> None:
        if self._worker is not None:
            self._worker.close(kill=kill)
            self._worker = None

    def _worker_died(self, job: _Job, worker: _Worker) -> None:
        at_job, position, started = worker.progress.get()
        self._drop_worker(kill=True)
        why = f"the parse worker died ({worker.describe_exit()})"
        if at_job == job.id and started > 0:
            self._lost(job, position, ParseWorkerDied(f"{why} while parsing this message"))
        else:
            self._died(job, why)

    def _died(self, job: _Job, why: str) -> None:
        """The worker went before it started the batch: not a message's fault, unless it keeps happening."""
        job.lost_workers += 1
        log.warning("%s before batch %d was parsed (%d times)", why, job.id, job.lost_workers)
        self._in_flight = None
        if job.lost_workers >= 3:
            while job.todo:
                job.fail(0, ParseWorkerDied(f"{why} before this message was parsed, {job.lost_workers} times"))

    def _lost(self, job: _Job, position: int, why: Exception) -> None:
        self._in_flight = None
        position = min(position, len(job.todo) - 1)
        log.warning("%s: %s", job.keys[job.todo[position]], why)
        job.fail(position, why)
