"""The parse worker: batches parsed in a forked worker, in order; a big message in a
worker of its own; a message that overruns its deadline or kills its worker is
pinned on that message alone, and the rest of its batch is parsed."""
from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

import pytest

from maild.intake import parsing
from maild.intake.mailbox import FetchedMail
from maild.intake.message import InboundMessage, ParseLimits
from maild.intake.parsing import ParseAhead, ParserCrash, ParseTimeout, ParseWorkerDied
from tests.helpers import make_mail

HANG = "hang-forever"
DIE = "die-now"


def batch(tag: str, n: int, big: bool = False, subjects: dict[int, str] | None = None) -> list[FetchedMail]:
    mails = [make_mail(subject=(subjects or {}).get(i, f"{tag} {i}"), msgid=f"<{tag}{i}@acme.pl>") for i in range(n)]
    if big:
        mails[0] = make_mail(subject=f"{tag} 0", msgid=f"<{tag}0@acme.pl>", body=("x" * 70 + "\n") * 60_000)
    now = datetime.now(timezone.utc)
    return [FetchedMail(source_key=f"{tag}:{i}", raw=raw, arrived_at=now, size=len(raw)) for i, raw in enumerate(mails)]


def subjects(parsed: list[object]) -> list[str]:
    return [m.subject if isinstance(m, InboundMessage) else type(m).__name__ for m in parsed]


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parser that hangs (in a loop no signal handler interrupts) or kills itself on
    a marked subject; set before the worker is forked, so the worker has it."""
    real = parsing.parse_message

    def parse(raw: bytes, limits: ParseLimits = ParseLimits(), size: int | None = None) -> InboundMessage:
        if HANG.encode() in raw:
            while True:
                pass
        if DIE.encode() in raw:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(raw, limits, size)

    monkeypatch.setattr(parsing, "parse_message", parse)


def test_batches_come_back_in_order_from_the_worker() -> None:
    ahead = ParseAhead(ParseLimits())
    try:
        first, second, small = batch("a", 60), batch("b", 60), batch("c", 2)
        f1, f2 = ahead.submit(first), ahead.submit(second)
        worker = ahead._worker
        assert worker is not None and worker.pid != os.getpid(), "parsed in a forked worker"
        assert subjects(ahead.result(f1, first)) == [f"a {i}" for i in range(60)]
        assert subjects(ahead.result(f2, second)) == [f"b {i}" for i in range(60)]
        f3 = ahead.submit(small)
        assert ahead._worker is worker, "one worker for every batch"
        assert subjects(ahead.result(f3, small)) == ["c 0", "c 1"]
    finally:
        ahead.close()


def test_collect_reads_a_parsed_batch_and_hands_the_worker_the_next_without_waiting() -> None:
    """The daemon asks between the steps of a reading's start: a batch parsed meanwhile is read and the
    queued one goes to the worker at once, not when the first batch's result is asked for."""
    ahead = ParseAhead(ParseLimits())
    try:
        first, second = batch("a", 60), batch("b", 60)
        f1, f2 = ahead.submit(first), ahead.submit(second)
        ahead.collect()  # nothing waits: with the first batch in the worker it returns at once
        worker = ahead._worker
        assert worker is not None and worker.wait_readable(30)
        ahead.collect()
        assert f1.done() and ahead._in_flight is f2, "the second batch is in the worker"
        assert subjects(ahead.result(f1, first)) == [f"a {i}" for i in range(60)]
        assert subjects(ahead.result(f2, second)) == [f"b {i}" for i in range(60)]
        ahead.collect()  # nothing in flight
    finally:
        ahead.close()


@pytest.mark.usefixtures("poison")
def test_collect_of_a_dead_workers_batch_names_the_mail_and_parses_the_rest() -> None:
    ahead = ParseAhead(ParseLimits())
    try:
        mails = batch("k", 5, subjects={2: DIE})
        future = ahead.submit(mails)
        worker = ahead._worker
        assert worker is not None and worker.wait_readable(30)  # its pipe closes with it
        ahead.collect()
        parsed = ahead.result(future, mails)
        crash = parsed[2]
        assert isinstance(crash, ParserCrash) and isinstance(crash.original, ParseWorkerDied)
        assert subjects(parsed[:2] + parsed[3:]) == ["k 0", "k 1", "k 3", "k 4"]
    finally:
        ahead.close()


def test_a_big_message_gets_a_worker_of_its_own_when_asked_for() -> None:
    ahead = ParseAhead(ParseLimits())
    try:
        first, big, after = batch("a", 60), batch("b", 60, big=True), batch("c", 60)
        assert len(big[0].raw) >= ParseAhead.MAX_MESSAGE
        f1, f2, f3 = ahead.submit(first), ahead.submit(big), ahead.submit(after)
        regular = ahead._worker
        assert subjects(ahead.result(f1, first)) == [f"a {i}" for i in range(60)]
        assert ahead._in_flight is None, "the big batch is not parsed while the batch before it is held"
        assert subjects(ahead.result(f2, big)) == [f"b {i}" for i in range(60)]
        assert regular is not None and regular.exit_status is not None, "the regular worker was stopped"
        assert subjects(ahead.result(f3, after)) == [f"c {i}" for i in range(60)]
    finally:
        ahead.close()


def test_a_batch_dropped_unasked_is_skipped() -> None:
    """The slice ends or the daemon stops with a batch fetched but not stored."""
    ahead = ParseAhead(ParseLimits())
    try:
        busy = batch("d", 60)
        kept = ahead.submit(busy)
        dropped = ahead.submit(batch("e", 60, big=True))
        del dropped
        later = batch("f", 60)
        future = ahead.submit(later)
        assert subjects(ahead.result(kept, busy)) == [f"d {i}" for i in range(60)]
        assert subjects(ahead.result(future, later)) == [f"f {i}" for i in range(60)]
    finally:
        ahead.close()


@pytest.mark.usefixtures("poison")
@pytest.mark.timeout(60)
def test_a_message_that_hangs_is_killed_at_the_deadline_and_the_rest_is_parsed() -> None:
    ahead = ParseAhead(ParseLimits(), deadline_seconds=1.0)
    try:
        mails = batch("g", 50, subjects={10: HANG, 30: HANG})
        started = time.monotonic()
        parsed = ahead.result(ahead.submit(mails), mails)
        took = time.monotonic() - started
        assert [i for i, p in enumerate(parsed) if isinstance(p, ParserCrash)] == [10, 30]
        crash = parsed[10]
        assert isinstance(crash, ParserCrash) and isinstance(crash.original, ParseTimeout)
        assert "within 1 s" in str(crash.original)
        assert subjects([p for p in parsed if not isinstance(p, ParserCrash)]) == [
            f"g {i}" for i in range(50) if i not in (10, 30)]
        # each hanging mail cost its deadline (killed, not finished: ParseTimeout above); the
        # others are parsed, so no upper bound in seconds is needed (the test's timeout catches a hang)
        assert took >= 2.0, took
        after = batch("h", 3)
        assert subjects(ahead.result(ahead.submit(after), after)) == ["h 0", "h 1", "h 2"], "a new worker took over"
    finally:
        ahead.close()


@pytest.mark.usefixtures("poison")
@pytest.mark.timeout(60)
def test_a_message_that_kills_its_worker_is_named_and_the_rest_is_parsed() -> None:
    ahead = ParseAhead(ParseLimits(), deadline_seconds=30.0)
    try:
        mails = batch("k", 20, subjects={5: DIE})
        parsed = ahead.result(ahead.submit(mails), mails)
        crash = parsed[5]
        assert isinstance(crash, ParserCrash) and isinstance(crash.original, ParseWorkerDied)
        assert f"signal {int(signal.SIGKILL)}" in str(crash.original)
        assert subjects(parsed[:5] + parsed[6:]) == [f"k {i}" for i in range(20) if i != 5]
    finally:
        ahead.close()


@pytest.mark.usefixtures("poison")
@pytest.mark.timeout(60)
def test_a_big_message_that_hangs_is_killed_too() -> None:
    ahead = ParseAhead(ParseLimits(), deadline_seconds=1.0)
    try:
        mails = batch("m", 3, big=True, subjects={2: HANG})
        parsed = ahead.result(ahead.submit(mails), mails)
        assert subjects(parsed[:2]) == ["m 0", "m 1"]
        assert isinstance(parsed[2], ParserCrash) and isinstance(parsed[2].original, ParseTimeout)
    finally:
        ahead.close()


def test_close_ends_the_worker() -> None:
    ahead = ParseAhead(ParseLimits())
    mails = batch("n", 2)
    ahead.result(ahead.submit(mails), mails)
    worker = ahead._worker
    assert worker is not None
    ahead.close()
    assert worker.exit_status is not None
    with pytest.raises(ProcessLookupError):
        os.kill(worker.pid, 0)


def test_a_worker_that_died_idle_is_replaced_and_nobody_is_blamed() -> None:
    ahead = ParseAhead(ParseLimits())
    try:
        first = batch("p", 3)
        assert subjects(ahead.result(ahead.submit(first), first)) == ["p 0", "p 1", "p 2"]
        worker = ahead._worker
        assert worker is not None
        os.kill(worker.pid, signal.SIGKILL)  # the OOM killer, between batches
        later = batch("q", 3)
        assert subjects(ahead.result(ahead.submit(later), later)) == ["q 0", "q 1", "q 2"]
        assert ahead._worker is not None and ahead._worker.pid != worker.pid
    finally:
        ahead.close()
