"""Mutated real mail through parse, screen and thread: no exception escapes those stages.

The seeds are the 200 corpus messages and the hand-written .eml files; the
mutations (byte flips, truncation, header duplication, boundary damage, spliced
and repeated chunks, line-ending changes, NUL and 8-bit bytes) are those of
``tests/fuzz/mutate.py``. This is the CI-sized run (a few seconds);
``bench/fuzz.py`` runs the same for minutes, and ``tests/fuzz/fuzz_parse.py`` is
an atheris target.
"""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.mutate import MUTATIONS, load_seeds, mutate, run_stages

SEEDS = load_seeds()


def test_seeds_cover_the_corpus() -> None:
    assert len(SEEDS) >= 200
    for seed in SEEDS:
        run_stages(seed)  # unmutated: the baseline must pass too


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False)
@given(index=st.integers(0, len(SEEDS) - 1), rng_seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6))
def test_mutated_corpus_mail_never_crashes_the_stages(index: int, rng_seed: int, steps: int) -> None:
    run_stages(mutate(SEEDS[index], random.Random(rng_seed), steps))


@settings(max_examples=400, deadline=None)
@given(index=st.integers(0, len(SEEDS) - 1), name=st.sampled_from(
    ["Subject", "From", "To", "Cc", "Message-ID", "In-Reply-To", "References", "Content-Type", "Return-Path",
     "Authentication-Results", "Auto-Submitted", "Content-Transfer-Encoding", "Content-Disposition", "Date"]),
    value=st.binary(max_size=300), position=st.floats(0, 1))
def test_arbitrary_header_values_never_crash_the_stages(index: int, name: str, value: bytes, position: float) -> None:
    """A header of any bytes, inserted at the top or anywhere in the mail (then it lands in a part or the body)."""
    seed = SEEDS[index]
    at = 0 if position < 0.5 else int(position * len(seed))
    run_stages(seed[:at] + name.encode() + b": " + value.replace(b"\n", b"\n ") + b"\r\n" + seed[at:])


def test_every_mutation_kind_changes_something() -> None:
    seed = next(s for s in SEEDS if b"boundary=" in s)
    for op in MUTATIONS:
        rng = random.Random(7)
        changed = any(mutate(seed, rng, 1, (op,)) != seed for _ in range(50))
        assert changed, op
