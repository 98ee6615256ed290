"""``maild setup [--root DIR] [--maildir PATH]``: a machine's config, credentials folder and unit.

It runs before any config exists (``needs="nothing"``).
What it writes and with which modes: ``maild.ops.install``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maild.cli.common import Commands


def register(commands: Commands) -> None:
    p = commands.add("setup", help="write /etc/maild (config, customers, credentials folder) and the systemd "
                                   "unit; never overwrites a file", handler=run, needs="nothing")
    p.add_argument("--root", default="/", help="write under this folder instead of / (default: /)")
    p.add_argument("--maildir", metavar="PATH",
                   help="a local Maildir as the mail source (absolute path; the unit gets a ReadWritePaths= "
                        "drop-in for it)")


def run(args: argparse.Namespace) -> int:
    from maild.ops.install import SetupError, installed_maild, next_steps, run_setup

    root = Path(args.root)
    maild_bin = installed_maild()
    try:
        result = run_setup(root, args.maildir, maild_bin)
    except SetupError as exc:
        print(f"maild: setup: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"maild: setup: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    for path in result.written:
        print(f"wrote {path}")
    for path in result.kept:
        print(f"kept  {path} (exists; not overwritten)")
    for note in result.notes:
        print(f"note: {note}")
    print("\nnext:")
    for step in next_steps(root, maild_bin, args.maildir, result):
        print(f"  {step}")
    return 0
