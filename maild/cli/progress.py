"""Progress of long work, for a person at a terminal; nothing in the journal, a pipe or cron.

tqdm draws the bar (on stderr, so ``--json`` output stays clean) and computes
the rate and the time left. Without a terminal on stderr, which is the case
under systemd (the journal) and in cron, there is no bar and tqdm is not even
imported (a sixth of a quiet ``run --once``'s start-up).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


class Progress:
    """``progress(done, total)`` from a loop; ``total`` may grow (new mail arrives) or be unknown (None)."""

    def __init__(self, what: str, unit: str) -> None:
        self._unit = unit
        self._bar: tqdm[Any] | None = None
        self._logs = contextlib.ExitStack()
        if not _terminal(sys.stderr):
            return
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar: tqdm[Any] = tqdm(desc=what, unit=f" {unit}", file=sys.stderr, disable=None, leave=False,
                                 dynamic_ncols=True)
        self._bar = bar
        if not bar.disable:
            # log lines (also on stderr) print above the bar instead of through it
            self._logs.enter_context(logging_redirect_tqdm([logging.getLogger("maild")]))

    @property
    def shown(self) -> bool:
        return self._bar is not None and not self._bar.disable

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None or self._bar.disable:
            return
        grown = total is not None and total != self._bar.total
        if total is not None:
            self._bar.total = total
            self._bar.set_postfix_str(f"{max(total - done, 0)} {self._unit} left", refresh=False)
        self._bar.update(done - self._bar.n)
        if grown:
            self._bar.refresh()  # a new total is drawn at once, whatever tqdm's redraw interval

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._logs.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _terminal(stream: object) -> bool:
    """Whether ``stream`` is a terminal (tqdm's own test for ``disable=None``)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
