"""Compiled templates are kept between starts, and a broken edit is still refused.

``load_renderer`` with a cache folder loads each template compiled at an earlier
start when its source (and Jinja2, Python, the environment's settings) are the
same; anything else is compiled, and only what compiled is kept.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from maild.ops.check import SAMPLE_CONTEXTS, sample_context
from maild.outbound.render import load_renderer
from maild.outbound.render import RenderError
from tests.helpers import count_compiles

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def templates(tmp_path: Path) -> Path:
    path = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", path)
    return path


def _render_all(templates: Path, cache: Path | None) -> dict[tuple[str, str], tuple[str, str]]:
    renderer = load_renderer(templates, cache)
    return {(name, lang): renderer.render(name, lang, sample_context(name, lang))
            for name in renderer.names() for lang in ("pl", "en")}


def test_a_second_start_compiles_nothing_and_renders_the_same(templates: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    plain = _render_all(templates, None)
    compiled = count_compiles(monkeypatch)
    assert _render_all(templates, cache) == plain
    assert len(compiled) == len(list(templates.glob("*/*.txt")))  # the first start compiles each once
    compiled.clear()
    assert _render_all(templates, cache) == plain
    assert compiled == []


def test_an_edited_template_is_compiled_again_and_a_broken_one_refused(templates: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    load_renderer(templates, cache)
    ack = templates / "en" / "ack.txt"
    ack.write_text(ack.read_text(encoding="utf-8").replace("{% block subject %}", "{% block subject %}NEW "),
                   encoding="utf-8")
    compiled = count_compiles(monkeypatch)
    renderer = load_renderer(templates, cache)
    assert compiled == ["en/ack.txt"]
    assert renderer.render("ack", "en", SAMPLE_CONTEXTS["ack"])[0].startswith("NEW ")
    ack.write_text("{% block subject %}{{ ref }{% endblock %}{% block body %}{% endblock %}", encoding="utf-8")
    with pytest.raises(RenderError, match="en/ack.txt"):
        load_renderer(templates, cache)


def test_a_damaged_or_unwritable_cache_only_costs_a_compile(templates: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    plain = _render_all(templates, None)
    load_renderer(templates, cache)
    for file in cache.iterdir():
        file.write_bytes(file.read_bytes()[:40])  # cut short: the magic is there, the code is not
    compiled = count_compiles(monkeypatch)
    assert _render_all(templates, cache) == plain
    assert len(compiled) == len(list(templates.glob("*/*.txt")))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be", encoding="utf-8")
    assert _render_all(templates, blocked / "templates") == plain


def test_check_reads_what_the_daemon_compiled_and_writes_nothing(templates: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``maild check`` renders every template from the daemon's compiled copies (no compile after a
    daemon start), compiles what has none, and leaves the cache folder as it found it: run as root, it
    must not create files the daemon's user cannot read."""
    from types import SimpleNamespace

    from maild.ops.check import check_templates, compiled_renderer
    from maild.outbound.render import cache_folder

    cfg: Any = SimpleNamespace(templates_path=templates, storage_path=tmp_path / "var")
    compiled = count_compiles(monkeypatch)
    assert "templates" in check_templates(compiled_renderer(cfg))
    assert len(compiled) >= len(list(templates.glob("*/*.txt")))  # before any daemon: compiled, as before
    assert not (tmp_path / "var").exists()
    load_renderer(templates, cache_folder(cfg.storage_path))  # a daemon starts
    stored = sorted(p.name for p in cache_folder(cfg.storage_path).iterdir())
    compiled.clear()
    assert "templates" in check_templates(compiled_renderer(cfg))
    assert [name for name in compiled if name.endswith(".txt")] == []
    assert sorted(p.name for p in cache_folder(cfg.storage_path).iterdir()) == stored


def test_a_snapshot_compiled_before_loads_only_the_templates_it_renders(templates: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A courier sending acknowledgements renders 2 of the 32 templates: a snapshot that compiled whole
    before (``verified``) loads each from the cache with its first mail, not all of them at load."""
    from maild.outbound.render import CompiledTemplates

    cache = tmp_path / "cache"
    plain = _render_all(templates, None)
    load_renderer(templates, cache)  # the first start: every template compiled, the snapshot marked
    loaded: list[str] = []
    original = CompiledTemplates.get_bucket

    def counting(self: CompiledTemplates, environment: Any, name: str, *args: Any) -> Any:
        loaded.append(name)
        return original(self, environment, name, *args)

    monkeypatch.setattr(CompiledTemplates, "get_bucket", counting)
    compiled = count_compiles(monkeypatch)
    renderer = load_renderer(templates, cache)
    assert loaded == []
    assert renderer.render("ack", "en", sample_context("ack", "en")) == plain[("ack", "en")]
    assert renderer.render("ack", "en", sample_context("ack", "en")) == plain[("ack", "en")]
    assert loaded == ["en/ack.txt"] and compiled == []
    assert _render_all(templates, cache) == plain
    ack = templates / "en" / "ack.txt"
    ack.write_text("{% block subject %}{{ ref }{% endblock %}{% block body %}{% endblock %}", encoding="utf-8")
    with pytest.raises(RenderError, match="en/ack.txt"):  # an edit is a snapshot not compiled before
        load_renderer(templates, cache)
