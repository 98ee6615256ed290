"""The command line: ``maild --config PATH <command>``.

Exit codes: 0 done, 1 a check or an operation failed, 2 bad usage or config.
Human output is tables; ``--json`` output is the stable shape documented in the
README, times in ISO-8601 UTC.

Each command group is a module of its own that registers its commands
(``register(commands)``, see ``common.Commands``); this module builds the
parser from ``GROUPS``, loads what a command needs and turns errors into exit
codes. Building the parser imports only the groups' modules, which import what
a handler needs when it runs (SQLAlchemy, Jinja2, the mail clients), so a
command starts with its own imports only (``bench/startup.py``;
``tests/cli/test_startup_imports.py`` holds it). A new group is a module plus one entry in ``GROUPS``.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from maild.cli import (
    consultants,
    contracts,
    database,
    demo,
    desk_cli,
    erasure,
    ledger,
    month,
    quarantine,
    report,
    service,
    setup,
    storage,
    tickets,
)
from maild import installed_version
from maild.cli.common import Commands, Failure, UsageError
from maild.errors import ConfigError, MaildError

DEFAULT_CONFIG = "/etc/maild/maild.toml"
GROUPS = (service, tickets, desk_cli, contracts, report, month, ledger, quarantine, storage, erasure, database, consultants, setup,
          demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maild", description="Support mailbox -> prioritised, SLA-clocked ticket queue.")
    p.add_argument("--config", help=f"config file (default: $MAILD_CONFIG or {DEFAULT_CONFIG})")
    p.add_argument("--version", action=_Version, help="show the version and exit")
    commands = Commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"), main)
    for group in GROUPS:
        group.register(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``maild`` script; a reader that stops early (``| head``) ends the command quietly."""
    _skip_the_collection_at_exit()
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python would report the failed flush of stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a program the signal ended


_EXIT_HOOKED = False


def _skip_the_collection_at_exit() -> None:
    """At exit the interpreter runs one more garbage collection over every object still alive: a
    command's modules, classes, mapped tables and parser, 50-75 ms of a 0.25-0.4 s command
    (bench/README, eighth session). An ending process needs none of it. maild closes what it
    holds itself (``with`` blocks, the daemon's ``_let_go``), logging flushes its handlers in its
    own exit hook, and Python does not promise finalizers at exit anyway. ``gc.freeze`` in an
    exit hook takes those objects out of that last collection's sight."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _EXIT_HOOKED = True


class _Version(argparse.Action):
    """``--version``; the installed version is looked up only when asked for (a scan of the
    installed packages' metadata, which every other command would pay for at start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser._print_message(f"maild {version()}\n", sys.stdout)  # as argparse's own "version" action
        parser.exit()


def version() -> str:
    return installed_version("maild", missing="unknown (not installed)")


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.needs == "nothing":
        return int(args.handler(args))
    # what a command needs is imported when it runs: ``--version`` and ``--help`` stay instant
    from maild.config import load_config
    from maild.ops.logs import setup_logging

    path = args.config or os.environ.get("MAILD_CONFIG") or DEFAULT_CONFIG
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"maild: config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        if args.needs == "config":
            return int(args.handler(cfg, args))
        if args.needs == "engine":
            from maild.storage.db import open_engine

            return int(args.handler(cfg, open_engine(cfg.database_url), args))
        from maild.storage.db import open_database

        # a command's transaction must not fail for the daemon's commit between its read and its write
        return int(args.handler(cfg, open_database(cfg.database_url, take_the_write_lock=True), args))
    except Failure as exc:
        print(f"maild: {exc.message}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"maild: config error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return 2
    except MaildError as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
