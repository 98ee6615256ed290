"""The parse worker: batches parsed on the other core, a big message parsed in place and alone."""
from __future__ import annotations

from datetime import datetime, timezone

from maild.intake.mailbox import FetchedMail
from maild.intake.message import InboundMessage, ParseLimits
from maild.intake.pipeline import ParseAhead
from tests.helpers import make_mail


def batch(tag: str, n: int, big: bool = False) -> list[FetchedMail]:
    mails = [make_mail(subject=f"{tag} {i}", msgid=f"<{tag}{i}@acme.pl>") for i in range(n)]
    if big:
        mails[0] = make_mail(subject=f"{tag} 0", msgid=f"<{tag}0@acme.pl>", body=("x" * 70 + "\n") * 60_000)
    now = datetime.now(timezone.utc)
    return [FetchedMail(source_key=f"{tag}:{i}", raw=raw, arrived_at=now, size=len(raw)) for i, raw in enumerate(mails)]


def subjects(parsed: list[object]) -> list[str]:
    assert all(isinstance(m, InboundMessage) for m in parsed)
    return [m.subject for m in parsed if isinstance(m, InboundMessage)]


def test_a_big_message_stops_the_worker_until_it_was_parsed_in_place() -> None:
    ahead = ParseAhead(ParseLimits())
    try:
        first, big, after, later = batch("a", 60), batch("b", 60, big=True), batch("c", 60), batch("d", 60)
        assert len(big[0].raw) >= ParseAhead.MAX_MESSAGE
        f1 = ahead.submit(first)
        assert ahead._pool is not None, "a backlog batch goes to the worker"
        f2 = ahead.submit(big)
        assert ahead._pool is None, "the worker is stopped before the big message is parsed"
        assert f1.done(), "after finishing the batch it had"
        f3 = ahead.submit(after)
        assert ahead._pool is None, "no worker while the big message waits to be parsed"
        assert subjects(ahead.result(f1, first)) == [f"a {i}" for i in range(60)]
        assert subjects(ahead.result(f2, big)) == [f"b {i}" for i in range(60)]
        f4 = ahead.submit(later)
        assert ahead._pool is not None, "the worker is back once the big message was parsed"
        assert subjects(ahead.result(f3, after)) == [f"c {i}" for i in range(60)]
        assert subjects(ahead.result(f4, later)) == [f"d {i}" for i in range(60)]
    finally:
        ahead.close()


def test_a_big_batch_dropped_unparsed_does_not_keep_the_worker_away() -> None:
    """The slice ends or the daemon stops with the big batch fetched but not stored."""
    ahead = ParseAhead(ParseLimits())
    try:
        big = ahead.submit(batch("e", 60, big=True))
        del big
        later = batch("f", 60)
        future = ahead.submit(later)
        assert ahead._pool is not None
        assert subjects(ahead.result(future, later)) == [f"f {i}" for i in range(60)]
    finally:
        ahead.close()
