"""An operator's ``templates_dir`` copied before a release added templates keeps working.

The operator's folder is searched first, the packaged templates after it: what the
operator changed is used, what their copy lacks comes from the package. The daemon's
snapshot (``load_renderer``) and the statement's HTML words follow the same order.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from maild.billing.html import render_statement, statement_folders, statement_words
from maild.ops.check import SAMPLE_CONTEXTS, sample_context
from maild.outbound.render import load_renderer
from maild.outbound.render import PACKAGED, Renderer, RenderError

ROOT = Path(__file__).resolve().parents[2]
LATER = ("notify_new", "expiry_reminder")  # templates added after an operator's copy


@pytest.fixture
def old_copy(tmp_path: Path) -> Path:
    """An operator's copy of the templates made before ``LATER`` and the statement's HTML existed,
    with the Polish acknowledgement reworded."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    for name in LATER:
        for language in ("pl", "en"):
            (folder / language / f"{name}.txt").unlink()
    for language in ("pl", "en"):
        (folder / language / "statement.html").unlink()
    ack = folder / "pl" / "ack.txt"
    ack.write_text(ack.read_text(encoding="utf-8").replace("Dzień dobry,", "Szanowni Państwo,"), encoding="utf-8")
    return folder


@pytest.mark.parametrize("make", [Renderer, load_renderer], ids=["renderer", "daemon-snapshot"])
def test_missing_templates_come_from_the_package(old_copy: Path, make: Callable[[Path], Renderer]) -> None:
    renderer = make(old_copy)
    for name in LATER:
        for language in ("pl", "en"):
            packaged = Renderer(PACKAGED).render(name, language, sample_context(name, language))
            assert renderer.render(name, language, sample_context(name, language)) == packaged
    # the operator's own wording still wins where they have a template
    _, body = renderer.render("ack", "pl", SAMPLE_CONTEXTS["ack"])
    assert body.startswith("Szanowni Państwo,") and "Dzień dobry" not in body
    assert set(LATER) <= set(renderer.names())


def test_without_the_fallback_the_old_copy_fails(old_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure the fallback prevents (and the message it would give)."""
    monkeypatch.setattr("maild.outbound.render.search_path", lambda path: (path,))
    with pytest.raises(RenderError, match="notify_new.txt not found"):
        Renderer(old_copy).render("notify_new", "pl", sample_context("notify_new", "pl"))


def test_not_overridden_lists_what_the_operator_lacks(old_copy: Path) -> None:
    missing = Renderer(old_copy).not_overridden()
    assert missing == sorted(f"{lang}/{name}" for lang in ("pl", "en")
                             for name in ("expiry_reminder.txt", "notify_new.txt", "statement.html"))
    assert Renderer(PACKAGED).not_overridden() == []
    assert Renderer(ROOT / "templates").not_overridden() == []  # the checkout's folder is the packaged one


def test_statement_html_words_fall_back_too(old_copy: Path) -> None:
    context = SAMPLE_CONTEXTS["statement"]
    folders = statement_folders(old_copy)
    assert folders == (old_copy, PACKAGED)
    for language in ("pl", "en"):
        statement_words(context, language, folders)
        page = render_statement(context, language, [], folders)
        assert ("Dzień dobry," in page) == (language == "pl")


def test_an_operators_statement_words_win(old_copy: Path) -> None:
    words = (ROOT / "templates" / "pl" / "statement.html").read_text(encoding="utf-8")
    (old_copy / "pl" / "statement.html").write_text(words.replace("Z poważaniem,", "Łączymy pozdrowienia,"),
                                                   encoding="utf-8")
    page = render_statement(SAMPLE_CONTEXTS["statement"], "pl", [], statement_folders(old_copy))
    assert "Łączymy pozdrowienia," in page and "Z poważaniem" not in page


def test_a_template_sees_jinjas_globals_and_a_value_of_the_same_name_wins(tmp_path: Path) -> None:
    """``Renderer.render`` makes the context from each template's globals flattened once and
    the mail's values over them, as Jinja2's unshared context does: the globals are there,
    and a value named like one shadows it for that mail only."""
    for language in ("pl", "en"):
        (tmp_path / language).mkdir()
        (tmp_path / language / "probe.txt").write_text(
            "{% block subject %}{{ subject }}{% endblock %}"
            "{% block body %}{{ range(3)|list }} {{ joiner is defined }} {{ namespace }}{% endblock %}",
            encoding="utf-8")
    renderer = load_renderer(tmp_path)
    jinjas = "[0, 1, 2] True <class 'jinja2.utils.Namespace'>\n"
    assert renderer.render("probe", "pl", {"subject": "A"}) == ("A", jinjas)
    assert renderer.render("probe", "pl", {"subject": "B", "namespace": "mine"}) == ("B", "[0, 1, 2] True mine\n")
    assert renderer.render("probe", "pl", {"subject": "C"}) == ("C", jinjas)
    assert renderer.render("probe", "en", {"subject": "D", "namespace": 7}) == ("D", "[0, 1, 2] True 7\n")


def test_a_command_error_queued_before_the_commands_table_was_passed_renders_its_own_list() -> None:
    """Rows queued by earlier versions carry no ``commands``: the mail gives the list it always gave."""
    renderer = Renderer(PACKAGED)
    old = {k: v for k, v in sample_context("command_error", "pl").items() if k != "commands"}
    _, polish = renderer.render("command_error", "pl", old)
    _, english = renderer.render("command_error", "en", old)
    assert "#assign <e-mail lub nazwisko>, #priority P1..P4 <powód>" in polish and "Zakresy: konsultacja" in polish
    assert "#assign <e-mail or name>, #priority P1..P4 <reason>" in english
    _, new = renderer.render("command_error", "pl", sample_context("command_error", "pl"))
    assert "  #customer <id lub e-mail> (w pierwszej linii nowej wiadomości)" in new.splitlines()
    assert "Status i zakres można podać także po angielsku: open, waiting, resolved, closed;" in new


def test_a_snapshot_renders_each_mail_from_what_it_compiled_and_a_live_renderer_reads_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_renderer``'s templates are a snapshot compiled whole: each mail takes its template from
    what was compiled (Jinja2's environment is not asked again, and a file changed on disk since is
    not read); a ``Renderer`` over the folder (``maild check``) still reads the files as they are."""
    for language in ("pl", "en"):
        (tmp_path / language).mkdir()
        (tmp_path / language / "probe.txt").write_text(
            "{% block subject %}S {{ n }}{% endblock %}{% block body %}first {{ n }}{% endblock %}", encoding="utf-8")
    snapshot, live = load_renderer(tmp_path), Renderer(tmp_path)
    assert snapshot.render("probe", "pl", {"n": 1}) == live.render("probe", "pl", {"n": 1}) == ("S 1", "first 1\n")
    (tmp_path / "pl" / "probe.txt").write_text(
        "{% block subject %}S {{ n }}{% endblock %}{% block body %}second {{ n }}{% endblock %}", encoding="utf-8")
    asked: list[str] = []
    for renderer in (snapshot, live):
        original = renderer.env.get_template
        monkeypatch.setattr(renderer.env, "get_template",
                            lambda name, *a, _o=original, **k: asked.append(name) or _o(name, *a, **k))
    assert [snapshot.render("probe", lang, {"n": n}) for lang, n in (("pl", 2), ("en", 3), ("de", 4))] == [
        ("S 2", "first 2\n"), ("S 3", "first 3\n"), ("S 4", "first 4\n")]
    assert asked == []
    assert live.render("probe", "pl", {"n": 5}) == ("S 5", "second 5\n")
    assert asked == ["pl/probe.txt"]


def test_a_process_without_the_desk_renders_a_notification_with_every_commands_help() -> None:
    """The couriers render notifications from rows alone; a daemon whose mailbox is empty never loads
    the desk's command table (``maild.desk.commands``), yet sends what an earlier run queued: the
    built-in commands' help is in ``rules.command_help`` from the start, and is the table's own."""
    import subprocess
    import sys

    from typing import get_args

    from maild.desk.commands import COMMANDS, TicketStatus, help_lines
    from maild.rules.command_help import BUILT_IN, STATUS_WORDS_EN

    assert list(BUILT_IN) == list(COMMANDS), "each command's help lines in rules.command_help.BUILT_IN"
    assert STATUS_WORDS_EN == get_args(TicketStatus), "the help's #status values are the statuses stored"
    script = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from zoneinfo import ZoneInfo\n"
        "from maild.desk.notifications import TicketView, header_block\n"
        "from maild.outbound.render import PACKAGED, Renderer\n"
        "view = TicketView(ref='SUP-1', subject='S', customer_name='Acme', contract_id='c', contract_kind='sla',"
        " tier_name='sla', priority='P3', reasons=(), reaction_due=None, minutes_left=None, assigned_to=None,"
        " requester='jan@acme.pl', status='new')\n"
        "for language in ('pl', 'en'):\n"
        "    context = {**header_block(view, ZoneInfo('Europe/Warsaw'), 'support+t@x.pl', language), 'body': 'B',"
        " 'trimmed': False, 'attached': [], 'named': [], 'event': 'new', 'author': 'jan@acme.pl'}\n"
        "    print(Renderer(PACKAGED).render('notify_new', language, context)[1], end='\\0')\n"
        "assert 'maild.desk.commands' not in sys.modules, 'the desk was loaded'\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    polish, english, _ = out.split("\0")
    assert "  " + ", ".join(help_lines("pl")) + "\n" in polish, polish
    assert "  " + ", ".join(help_lines("en")) + "\n" in english, english
