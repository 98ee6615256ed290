"""A first start compiles the templates in a process of its own, while the rest of the start goes on.

On a new installation (or after an edit, or an upgrade of Jinja2 or ``render.py``) the 32
templates' compile was the longest part of ``Daemon(cfg)``, alone on one core beside the
customers' sync. ``outbound.compile_aside`` forks it; the start waits for its answer before
it ends, so a broken edit is still refused by ``Daemon(cfg)``, naming the template, and a compile
that gives no answer is done in the daemon's process as before.
"""
from __future__ import annotations

import mailbox
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from maild.config import ConfigError, load_config
from maild.ops import daemon as daemon_module
from maild.ops.daemon import Daemon
from maild.outbound.render import RenderError
from maild.outbound.compile_aside import CompileAside
from maild.outbound.template_files import cache_folder, compiled_before, read_sources, search_path
from tests.helpers import Clock, count_compiles, maildir_source, write_config

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=timezone.utc)

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture()
def config_path(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    mailbox.Maildir(tmp_path / "Maildir", create=True)
    return write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=1, top=f'templates_dir = "{templates}"',
                        compiled=False)


def _started(path: Path) -> Daemon:
    daemon = Daemon(load_config(path), Clock(T0))
    daemon.release_run_lock()
    return daemon


def _snapshot_marked(path: Path) -> bool:
    cfg = load_config(path)
    return compiled_before(cache_folder(cfg.storage_path), read_sources(search_path(cfg.templates_path)))


def test_a_first_start_compiles_the_templates_in_another_process(config_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = count_compiles(monkeypatch)
    daemon = _started(config_path)
    assert compiled == []  # none in the daemon's process
    assert _snapshot_marked(config_path)  # and the snapshot compiled whole into the cache
    assert "renderer" not in daemon.__dict__  # loaded from the cache with the first mail, as after a restart
    subject, body = daemon.renderer.render("ack", "en", _ack_context())
    assert compiled == [] and "SUP-7" in subject and body


def test_a_broken_edit_still_refuses_the_first_start_naming_the_template(config_path: Path) -> None:
    templates = load_config(config_path).templates_path
    (templates / "pl" / "notify_new.txt").write_text("{% block subject %}{{ ref }{% endblock %}", encoding="utf-8")
    with pytest.raises(RenderError, match="pl/notify_new.txt"):
        _started(config_path)
    assert not _snapshot_marked(config_path)
    (templates / "pl" / "notify_new.txt").write_text("{% block subject %}{{ ref }}{% endblock %}", encoding="utf-8")
    with pytest.raises(RenderError, match="pl/notify_new.txt: no body block"):
        _started(config_path)


def _silent(templates_path: Path, cache: Path, sources: dict[str, str]) -> CompileAside:
    """A compiling process that ends without an answer (killed, crashed)."""
    answer_r, answer_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(9)
    os.close(answer_w)
    return CompileAside(pid, answer_r)


def test_a_compile_that_gives_no_answer_is_done_by_the_daemon(config_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(daemon_module, "compile_aside", _silent)
    compiled = count_compiles(monkeypatch)
    daemon = _started(config_path)
    assert "compiling them here" in caplog.text
    assert len(compiled) == len(list((ROOT / "templates").glob("*/*.txt")))
    assert "renderer" in daemon.__dict__ and _snapshot_marked(config_path)
    templates = load_config(config_path).templates_path
    (templates / "en" / "ack.txt").write_text("{% block subject %}{{ broken {% endblock %}", encoding="utf-8")
    with pytest.raises(RenderError, match="en/ack.txt"):  # refused all the same
        _started(config_path)


def test_a_start_that_fails_after_the_fork_leaves_no_process_behind(config_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[CompileAside] = []
    real = daemon_module.compile_aside

    def recorded(*args: Any) -> CompileAside | None:
        aside = real(*args)
        assert aside is not None and aside.pid is not None
        started.append(CompileAside(aside.pid, -1))
        return aside

    monkeypatch.setattr(daemon_module, "compile_aside", recorded)
    load_config(config_path).customers_file.write_text("[[customers]]\nid = \n", encoding="utf-8")
    with pytest.raises(ConfigError):
        _started(config_path)
    assert len(started) == 1
    pid = started[0].pid
    assert pid is not None
    with pytest.raises(ChildProcessError):  # reaped: neither running nor a zombie of ours
        os.waitpid(pid, os.WNOHANG)


def _ack_context() -> dict[str, Any]:
    from maild.ops.check import sample_context

    context = sample_context("ack", "en")
    context["ref"] = "SUP-7"
    return context


@pytest.mark.parametrize("compiling", [True, False])
def test_while_the_compile_runs_the_daemon_builds_what_its_first_batch_needs(
        config_path: Path, monkeypatch: pytest.MonkeyPatch, compiling: bool) -> None:
    """The daemon would wait idle for the compile: it builds the intake pipeline meanwhile (after the
    mailbox login before), and only while the compile runs (an answer already there: nothing)."""
    monkeypatch.setattr(CompileAside, "answered", lambda self: not compiling)
    daemon = _started(config_path)
    assert ("ingestor" in daemon.__dict__) is compiling
    assert _snapshot_marked(config_path)
