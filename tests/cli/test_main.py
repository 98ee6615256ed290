"""The ``maild`` entry point itself: --version, and a reader that stops early."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests.helpers import maildir_source, write_config


def maild(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild.cli", *args], text=True, timeout=60,
                          **kwargs)  # type: ignore[call-overload, no-any-return]


def test_version() -> None:
    result = maild("--version", capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"maild {version('maild')}"


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``maild tickets list --json | head``: the reader is gone before maild writes; no traceback."""
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=25)
    for args in (["--config", str(config), "tickets", "list", "--json"], ["--version"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = maild(*args, stdout=write_end, stderr=subprocess.PIPE)
        finally:
            os.close(write_end)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
        assert "Exception ignored" not in result.stderr, result.stderr
        assert result.returncode in (0, 141), args  # 141: 128 + SIGPIPE, as `yes | head` reports


def test_every_command_group_module_is_in_the_parser() -> None:
    """A module under maild/cli/ with register() is a command group; main builds the parser from GROUPS,
    and every command it registers has a handler."""
    import argparse
    import importlib
    import pkgutil

    import maild.cli
    from maild.cli.main import GROUPS, build_parser

    groups = {m for m in (importlib.import_module(f"maild.cli.{info.name}")
                          for info in pkgutil.iter_modules(maild.cli.__path__) if info.name != "__main__")
              if hasattr(m, "register")}
    assert groups == set(GROUPS)

    def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [parser]
        return [leaf for sub in subs for child in sub.choices.values() for leaf in leaves(child)]

    found = leaves(build_parser())
    assert len(found) > 20
    assert all(callable(p.get_default("handler")) and p.get_default("needs") for p in found)


def test_a_group_without_its_command_names_the_commands(capsys: object) -> None:
    """``maild tickets`` said "the following arguments are required: sub", the parser's own name."""
    import pytest

    from maild.cli.main import main

    for group, commands in (("tickets", "{list,show,open}"), ("report", "{hours,sla,month}"), ("db", "{upgrade,backup}")):
        with pytest.raises(SystemExit) as exit_:
            main([group])
        assert exit_.value.code == 2
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert err.endswith(f"maild {group}: error: the following arguments are required: {commands}\n"), err
