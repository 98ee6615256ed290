"""The templates compiled by a forked process while the daemon's start goes on.

On a new installation's first start (and after an edit of a template, or an upgrade of
Jinja2 or ``render.py``) the daemon compiles its 32 templates (``render.load_renderer``) to
refuse a broken edit at start: ~0.19 s with Jinja2's import, the longest part of the start,
alone on one core beside the customers' sync and the calendar. ``compile_aside`` forks a
process for it before the daemon opens its database or starts a thread; the daemon goes on
with the rest of its start and waits for the answer before the start ends, so a broken edit
still refuses the start, naming the template.
"""
from __future__ import annotations

import os
from pathlib import Path

from maild.outbound.forked import die_with_parent

# the longest a start waits for the compiling process's answer before it compiles itself (the
# compile takes ~0.2 s; a process that does not answer in this time is taken as hung)
WAIT_SECONDS = 60.0


class CompileAside:
    """A forked process compiling a snapshot into the cache (``load_renderer``) while the daemon starts.

    ``wait`` returns None when it compiled (and marked the snapshot: ``compiled_before``), the
    error a ``RenderError`` would carry when a template is broken, and raises ``ChildProcessError``
    when the process gave no answer in time (killed, crashed, hung): the caller then compiles itself."""

    def __init__(self, pid: int, answer: int) -> None:
        self.pid: int | None = pid
        self._answer = answer

    def answered(self) -> bool:
        """Whether the process has answered (or ended): ``wait`` would not wait."""
        return self._answer_within(0.0)

    def _answer_within(self, timeout: float) -> bool:
        """Whether the answer (or the pipe's end) comes within ``timeout`` seconds."""
        import select

        poller = select.poll()
        poller.register(self._answer, select.POLLIN | select.POLLHUP)
        return bool(poller.poll(int(timeout * 1000)))

    def wait(self, timeout: float = WAIT_SECONDS) -> str | None:
        if not self._answer_within(timeout):
            self.abandon()
            raise ChildProcessError(f"the templates' compile gave no answer in {timeout:.0f} s")
        with open(self._answer, "rb") as stream:
            answer = stream.read()
        pid, self.pid = self.pid, None
        assert pid is not None
        _, status = os.waitpid(pid, 0)
        if status != 0 or not answer.startswith((b"ok", b"broken ")):
            raise ChildProcessError(f"the templates' compile ended without an answer (status {status})")
        return None if answer == b"ok" else answer[len(b"broken "):].decode("utf-8", "replace")

    def abandon(self) -> None:
        """The start failed on the way (or the compile hangs): end the process, reap it."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        import signal

        os.close(self._answer)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def compile_aside(templates_path: Path, cache: Path, sources: dict[str, str]) -> CompileAside | None:
    """Fork a process that compiles ``sources`` into ``cache`` and answers through a pipe; None when
    no process can be forked (the caller compiles itself). Called before the daemon opens its
    database or starts a thread: the child carries no connection or lock of it, and touches none."""
    answer_r, answer_w = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(answer_r)
        os.close(answer_w)
        return None
    if pid == 0:  # the compiling process; never returns into the caller
        code = 0
        try:
            os.close(answer_r)
            die_with_parent(parent)
            from maild.outbound.render import RenderError, load_renderer

            try:
                load_renderer(templates_path, cache, sources)
                answer = b"ok"
            except RenderError as exc:
                answer = b"broken " + str(exc).encode("utf-8", "replace")
            with open(answer_w, "wb") as out:
                out.write(answer)
        except BaseException:  # nothing may escape into a copy of the daemon's stack
            code = 70
        finally:
            os._exit(code)
    os.close(answer_w)
    return CompileAside(pid, answer_r)
