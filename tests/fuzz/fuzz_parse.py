#!/usr/bin/env python3
"""atheris (libFuzzer) target: any bytes through parse, screen, authentication check and thread.

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_parse.py -atheris_runs=200000 [corpus-dir ...]

With no directory given it starts from the real-world corpus and the .eml
files. Coverage-guided, so it finds its own way into the MIME walk; not part of
the pytest run (atheris is optional and not in the project's dependencies).
A finding is any exception escaping ``run_stages``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from tests.fuzz.mutate import load_seeds, run_stages  # noqa: E402


def test_one_input(data: bytes) -> None:
    run_stages(data)


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        seed_dir = Path(tempfile.mkdtemp(prefix="maild-fuzz-"))
        for i, seed in enumerate(load_seeds()):
            (seed_dir / f"seed-{i:04d}").write_bytes(seed)
        argv.append(str(seed_dir))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
