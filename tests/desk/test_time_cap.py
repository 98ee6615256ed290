"""The #time lines of one mail together may book at most [support] max_time_per_mail_hours.

5,000 lines of "#time 24h" booked 120,000 h; each line alone was valid. The
check refuses the whole mail (the pipeline then applies none of its commands
and sends the consultant the error reply) and names the line that crosses it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.config import load_config
from maild.desk.commands import parse_commands
from maild.desk.context import DeskContext
from tests.helpers import maildir_source, write_config


def context(tmp: Path, hours: int | None = None) -> DeskContext:
    extra = "" if hours is None else f"max_time_per_mail_hours = {hours}\n"
    config = write_config(tmp, source=maildir_source(tmp), smtp_port=25)
    text = config.read_text(encoding="utf-8").replace('ticket_prefix = "SUP"\n', f'ticket_prefix = "SUP"\n{extra}')
    config.write_text(text, encoding="utf-8")
    return DeskContext.for_config(load_config(config), ())


def test_the_default_is_24_hours_and_the_crossing_line_is_named(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert ctx.config.support.max_time_per_mail_minutes == 24 * 60
    within = parse_commands("#time 8h\n#time 8h\n#time 8h\nDone.\n")
    assert within.check(ctx) == ()
    [error] = parse_commands("#time 8h\n#time 8h\n#time 8h\n#time 1m\n#status resolved\n").check(ctx)
    assert error.line_no == 4 and error.line == "#time 1m" and "24 h" in error.reason
    assert "max_time_per_mail_hours" in error.reason


def test_five_thousand_lines_are_refused_once(tmp_path: Path) -> None:
    errors = parse_commands("#time 24h\n" * 5000 + "text\n").check(context(tmp_path))
    assert [e.line_no for e in errors] == [2]


@pytest.fixture(scope="module")
def with_cap(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], DeskContext]:
    made: dict[int, DeskContext] = {}

    def get(hours: int) -> DeskContext:
        if hours not in made:
            made[hours] = context(tmp_path_factory.mktemp(f"cap{hours}"), hours)
        return made[hours]
    return get


@settings(max_examples=200, deadline=None)
@given(minutes=st.lists(st.integers(min_value=1, max_value=24 * 60), max_size=40),
       cap_hours=st.integers(min_value=1, max_value=48))
def test_refused_exactly_when_the_sum_passes_the_cap(with_cap: Callable[[int], DeskContext], minutes: list[int],
                                                     cap_hours: int) -> None:
    parsed = parse_commands("".join(f"#time {m}m\n" for m in minutes) + "text\n")
    errors = parsed.check(with_cap(cap_hours))
    assert bool(errors) == (sum(minutes) > cap_hours * 60)
    if errors:
        crossing = next(i for i in range(len(minutes)) if sum(minutes[: i + 1]) > cap_hours * 60)
        assert [e.line_no for e in errors] == [crossing + 1]
