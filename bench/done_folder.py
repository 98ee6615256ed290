#!/usr/bin/env python3
"""What moving a done mail costs by the size of the folder it goes to (the Maildir source's done folder).

    python3 bench/done_folder.py [--files 272000] [--mails 2000] [--rounds 3] [--dir /tmp/maild-bench]

Makes a folder holding ``--files`` empty files (the one done folder every mail ever
read went to until the eleventh session) and an empty one (a month's subfolder), then,
``--rounds`` times, moves ``--mails`` freshly written 3 KB files into each the way
``MaildirSource._move`` does (an existence check, then ``os.rename``): CPU and wall per
mail. The folders were just made, so their blocks are in the cache: the figures are a
warm folder's; a folder whose blocks have left the cache reads them from disk.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def move_all(names: list[Path], dest_dir: Path) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    for path in names:
        dest = dest_dir / f"{path.name}:2,"
        if dest.exists():
            dest = dest_dir / f"{path.name}.dup:2,"
        os.rename(path, dest)
    return (time.process_time() - c0) / len(names), (time.perf_counter() - w0) / len(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=272000)
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=os.environ.get("BENCH_ROOT", "/tmp/maild-bench"))
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="done-folder-", dir=args.dir))
    try:
        big, month, src = base / "big" / "cur", base / "month" / "cur", base / "src"
        for folder in (big, month, src):
            folder.mkdir(parents=True)
        for i in range(args.files):
            (big / f"{1600000000 + i}.M{i}P1Q1.host:2,").touch()
        for r in range(args.rounds):
            for label, folder in ((f"{args.files}-file folder", big), ("month's folder", month)):
                names = []
                for i in range(args.mails):
                    path = src / f"{1700000000 + i}.M{i}P2Q{r}{label[0]}.host"
                    path.write_bytes(b"x" * 3000)
                    names.append(path)
                os.sync()
                cpu, wall = move_all(names, folder)
                print(f"round {r + 1}: into the {label}: check and rename per mail, CPU {cpu * 1e6:.1f} µs, "
                      f"wall {wall * 1e6:.1f} µs", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
