#!/usr/bin/env python3
"""html_to_text on hostile markup: time and peak memory per input, median of runs.

    .venv/bin/python bench/hostile_html.py [--runs 3]

Each input is one that an earlier html_to_text handled in quadratic time (or
worse): 1 MB of nested unclosed links took minutes, 40,000 <head> tags 12 s at
234 KB, a 1 MB attribute name hours. Printed per input: its size, the median
(min-max) CPU seconds of html_to_text, the peak memory it allocated (tracemalloc,
a separate run), and the size of the text it returned.

Then the two inputs of issue 12 as HTML-only mails through the pipeline: a fresh
Maildir and SQLite database per run, one ``Daemon.ingest_all()`` (fetch, parse in
the worker, store the ticket, queue its acknowledgement; start-up not included),
its wall time and the CPU seconds of maild and its parse worker together.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
from datetime import datetime, timezone
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maild.config import load_config  # noqa: E402
from maild.intake.htmltext import html_to_text  # noqa: E402
from maild.ops.daemon import Daemon  # noqa: E402
from tests.helpers import deliver, maildir_source, write_config  # noqa: E402

MAILS = {
    "1 MB of nested unclosed links": '<a href="x">' * 64000 + "y" + "</a>" * 64000,
    '"<head>" * 40000': "<head>" * 40000,
}

INPUTS = {
    "nested unclosed links (issue 12)": '<a href="x">' * 64000 + "y" + "</a>" * 64000,
    "40,000 <head> without </head> (issue 12)": "<head>" * 40000,
    "a 1 MB attribute name": "<img " + "a" * 1_000_000 + ">",
    "a link whose text is 1 MB": '<a href="x">' + "y " * 500_000 + "</a>",
    "250,000 attributes in one tag": "<a " + "a=b " * 250_000 + ">",
    "100,000 nested hidden divs": '<div style="display:none">' * 100_000 + "x",
    "100,000 nested blockquotes": "<blockquote>" * 100_000 + "x<br>" * 100_000,
    "4 MB of tiny tags (the input cap)": "<b>xy</b>" * 450_000,
    "ordinary newsletter, 1 MB": ('<table><tr><td style="padding:4px"><a href="https://example.com/p/1">'
                                  "Produkt</a> <span>opis produktu, cena 12,50 zł</span></td></tr></table>") * 7000,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"== html_to_text on hostile markup ==  nproc {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, runs {args.runs}")
    print(f"{'input':45} {'size':>9} {'CPU s median (min-max)':>24} {'peak alloc':>11} {'text':>9}")
    for name, html in INPUTS.items():
        times = []
        for _ in range(args.runs):
            started = time.process_time()
            text = html_to_text(html)
            times.append(time.process_time() - started)
        tracemalloc.start()
        html_to_text(html)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{name:45} {len(html) / 1e6:7.2f}MB {statistics.median(times):10.2f} "
              f"({min(times):.2f}-{max(times):.2f}) {'':6} {peak / 1e6:8.1f}MB {len(text) / 1e6:7.2f}MB")
    through_the_pipeline(args.runs)


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def through_the_pipeline(runs: int) -> None:
    print(f"\n{'HTML-only mail, one ingest_all()':45} {'wall s median (min-max)':>24} {'CPU s (maild + worker)':>24}")
    for name, html in MAILS.items():
        walls, cpus = [], []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="maild-bench-html-") as tmp:
                root = Path(tmp)
                config = write_config(root, source=maildir_source(root), smtp_port=9,
                                      compiled=False)  # templates compiled at the start, outside the timing
                raw = ("From: jan@acme.pl\r\nTo: support@firma.pl\r\nSubject: html\r\nMessage-ID: <h@acme.pl>\r\n"
                       "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()
                deliver(root / "Maildir", raw, datetime.now(timezone.utc))
                daemon = Daemon(load_config(config))
                cpu, started = _cpu(), time.perf_counter()
                counts = daemon.ingest_all()
                daemon.parse_ahead.close()  # reaped, so its CPU time is counted
                walls.append(time.perf_counter() - started)
                cpus.append(_cpu() - cpu)
                daemon.source.close()
                daemon.mailbox_lock.release()
                assert counts == {"ticket": 1}, counts
        print(f"{name:45} {statistics.median(walls):10.2f} ({min(walls):.2f}-{max(walls):.2f}) {'':5} "
              f"{statistics.median(cpus):10.2f} ({min(cpus):.2f}-{max(cpus):.2f})")


if __name__ == "__main__":
    main()
