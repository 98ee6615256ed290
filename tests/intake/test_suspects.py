"""After a daemon dies, the mail it had in hand is retried as a group and halved on each
death (``maild.intake.suspects``): a mail that kills the daemon every time is quarantined
within ``death_bound(batch)`` deaths with it in hand, the rest is stored, nothing twice.

The model below runs the daemon's ingest loop as ``Daemon.ingest_all`` does (an attempt
recorded for each fresh mail before its batch is parsed, the next fresh batch parsed while
the one before it is stored, the suspects of a fetched batch after the pending batch, each
step with nothing else in hand) over a mailbox where some mails kill the daemon whenever
they are stored; every death ends the run and leaves the attempts of all mail in hand.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from maild.intake.suspects import (
    MAX_ATTEMPTS,
    STARTED,
    Retry,
    Suspect,
    alone_note,
    queued_note,
    death_bound,
    group_note,
    plan_retries,
)


class Died(Exception):
    pass


@dataclass
class Model:
    mails: list[int]
    poison: set[int]
    batch: int
    failures: dict[int, tuple[int, str]] = field(default_factory=dict)  # mail -> attempts, last_error
    stored: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    deaths: dict[int, int] = field(default_factory=dict)  # poison -> deaths with it in hand
    runs: int = 0
    alone: int = 0  # mails processed alone (not given up)
    tokens: itertools.count[int] = field(default_factory=itertools.count)
    kill_at: set[int] = field(default_factory=set)  # the daemon is killed at these stores (not the mail's doing)
    stores: int = 0

    def _store(self, mails: list[int], in_hand: list[int]) -> None:
        self.stores += 1
        if self.stores in self.kill_at:
            raise Died()
        killers = [m for m in mails if m in self.poison]
        if killers:
            for p in set(in_hand) & self.poison:
                self.deaths[p] = self.deaths.get(p, 0) + 1
            raise Died()
        for m in mails:
            del self.failures[m]
            self.mails.remove(m)
            self.stored.append(m)

    def _step(self, step: Retry) -> None:
        keys = [int(k) for k in step.keys]
        if step.give_up:
            [m] = keys
            del self.failures[m]
            self.mails.remove(m)
            self.quarantined.append(m)
            return
        self.alone += len(keys) == 1
        for m in keys:
            attempts, _ = self.failures[m]
            self.failures[m] = (attempts + 1, step.note)
        self._store(keys, keys)

    def run(self) -> None:
        self.runs += 1
        fetched = [self.mails[i:i + self.batch] for i in range(0, len(self.mails), self.batch)]
        pending: list[int] = []
        try:
            for batch in fetched:
                prior = [Suspect(str(m), *self.failures[m]) for m in batch if m in self.failures]
                fresh = [m for m in batch if m not in self.failures]
                for m in fresh:
                    self.failures[m] = (1, STARTED)
                if fresh:
                    previous, pending = pending, fresh
                    if previous:
                        self._store(previous, previous + fresh)  # the next batch is parsed meanwhile
                if prior:
                    if pending:
                        previous, pending = pending, []
                        self._store(previous, previous)
                    steps = plan_retries(prior, new_token=lambda: f"t{next(self.tokens)}")
                    for step in steps[1:]:
                        for m in (int(k) for k in step.keys if step.queue):
                            self.failures[m] = (self.failures[m][0], step.queue)
                    for step in steps:
                        self._step(step)
            if pending:
                self._store(pending, pending)
        except Died:
            pass


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 120), st.integers(1, 64), st.data())
def test_poison_is_quarantined_within_the_bound_and_the_rest_is_stored(n: int, batch: int,
                                                                      data: st.DataObject) -> None:
    poison = set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3)))
    model = Model(mails=list(range(n)), poison=poison, batch=batch)
    bound = death_bound(batch)
    while model.mails:
        model.run()
        assert model.runs <= len(poison) * bound + 1, "the daemon keeps dying"
    assert sorted(model.quarantined) == sorted(poison)
    assert sorted(model.stored) == sorted(set(range(n)) - poison)
    assert len(model.stored) + len(model.quarantined) == n
    assert not model.failures
    for p in poison:
        assert MAX_ATTEMPTS <= model.deaths[p] <= bound, (p, model.deaths)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 500), st.data())
def test_one_poison_in_a_full_batch_leaves_at_most_two_innocent_mails_alone(n: int, data: st.DataObject) -> None:
    """A half that did not kill the daemon is retried whole, not split unseen: besides the
    poison (MAX_ATTEMPTS times alone) only the last splits' other halves go alone."""
    poison = data.draw(st.integers(0, n - 1))
    model = Model(mails=list(range(n)), poison={poison}, batch=n)
    while model.mails:
        model.run()
    assert model.quarantined == [poison]
    assert model.deaths[poison] <= death_bound(n)
    assert model.alone <= MAX_ATTEMPTS + 2


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.integers(1, 64), st.sets(st.integers(1, 30), max_size=3))
def test_kills_not_caused_by_mail_quarantine_nothing_and_process_no_mail_alone_beyond_lone_leftovers(
        n: int, batch: int, kills: set[int]) -> None:
    """The common case (a restart, the OOM killer, kill -9 of the reader): the dead reader's
    two batches are retried as groups; a mail goes alone only when it is the one suspect of
    its fetched batch (the next reader's batches need not cut where the dead one's did)."""
    model = Model(mails=list(range(n)), poison=set(), batch=batch, kill_at=kills)
    while model.mails:
        model.run()
        assert model.runs <= len(kills) + 1
    assert sorted(model.stored) == list(range(n)) and not model.quarantined and not model.failures
    assert model.alone <= 2 * len(kills)  # a lone leftover at each end of the dead reader's two batches


def test_the_bound_for_the_default_batch_size_and_a_mail_fetched_alone() -> None:
    assert death_bound(500) == 13
    assert death_bound(1) == 1 + MAX_ATTEMPTS


def test_a_kill_not_caused_by_mail_costs_one_group_per_fetched_batch_and_nobody_alone() -> None:
    """The common case (a restart, the OOM killer): the dead reader's mail is retried in
    groups, and none of it alone, where it used to be processed a mail at a time."""
    suspects = [Suspect(f"m{i}", 1, STARTED) for i in range(300)]
    [step] = plan_retries(suspects, new_token=lambda: "a1")
    assert step == Retry(tuple(f"m{i}" for i in range(300)), group_note("a1"), 0, queue=queued_note("a1"))


def test_a_group_that_died_again_is_halved_and_a_single_mail_goes_alone() -> None:
    tokens = iter(["b1", "b2", "b3"])
    suspects = [Suspect(k, 2, group_note("a1")) for k in ("m1", "m2", "m3", "m4", "m5")]
    suspects += [Suspect("m6", 3, group_note("a2")), Suspect("m7", 4, alone_note(1))]
    suspects += [Suspect(k, 2, queued_note("a3")) for k in ("m8", "m9", "m10")]
    steps = plan_retries(suspects, new_token=lambda: next(tokens))
    assert steps == [Retry(("m1", "m2", "m3"), group_note("b1"), 0, queue=queued_note("b1")),
                     Retry(("m4", "m5"), group_note("b2"), 0, queue=queued_note("b2")),
                     Retry(("m6",), alone_note(1), 1), Retry(("m7",), alone_note(2), 2),
                     # the other half of a split whose first half killed the daemon: not split unseen
                     Retry(("m8", "m9", "m10"), group_note("b3"), 0, queue=queued_note("b3"))]


def test_a_single_mail_is_given_up_after_max_attempts_alone_and_not_before() -> None:
    assert plan_retries([Suspect("m", 9, alone_note(MAX_ATTEMPTS - 1))]) == [
        Retry(("m",), alone_note(MAX_ATTEMPTS), MAX_ATTEMPTS)]
    [step] = plan_retries([Suspect("m", 9, alone_note(MAX_ATTEMPTS))])
    assert step.give_up and step.keys == ("m",)


def test_a_failure_pinned_on_the_mail_itself_counts_each_attempt_as_alone() -> None:
    """A parse that overran its deadline (the batch committed, the mail kept its attempt):
    retried alone, given up at MAX_ATTEMPTS attempts as before."""
    assert plan_retries([Suspect("m", 1, "ParseTimeout: within 1 s")]) == [Retry(("m",), alone_note(2), 2)]
    [step] = plan_retries([Suspect("m", MAX_ATTEMPTS, "ParseTimeout: within 1 s")])
    assert step.give_up
