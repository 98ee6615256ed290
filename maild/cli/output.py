"""How the CLI prints: aligned tables for people, JSON and CSV for programs.

JSON times are ISO-8601 UTC with a ``Z``; the shapes are documented in the README.
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any


def iso(value: datetime | None) -> str | None:
    """UTC, to the second: ``2026-11-27T08:15:00Z`` (the README's JSON shape; no microseconds)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def local(value: datetime | None, tz: tzinfo, empty: str = "-") -> str:
    """For people: the business time zone, to the minute, with its abbreviation (``2026-12-07 15:59 CET``)."""
    if value is None:
        return empty
    moment = value.astimezone(tz)
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()}"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def print_json_stream(items: Iterable[Any]) -> None:
    """A JSON array written item by item, byte for byte what ``print_json`` writes for the whole list.

    A list of every open ticket never has to exist in memory at once.
    """
    out = sys.stdout
    first = True
    for item in items:
        text = json.dumps(item, ensure_ascii=False, indent=2)
        out.write(("[\n" if first else ",\n") + "\n".join("  " + line for line in text.split("\n")))
        first = False
    out.write("[]\n" if first else "\n]\n")


def short_local(value: datetime | None, tz: tzinfo, zone: str | None) -> str:
    """A list cell: ``7.12 15:59``; the abbreviation only when it is not ``zone`` (the header's)."""
    if value is None:
        return "-"
    moment = value.astimezone(tz)
    text = f"{moment.day}.{moment.month:02d} {moment:%H:%M}"
    return text if moment.tzname() == zone else f"{text} {moment.tzname()}"


def fit(text: str, width: int) -> str:
    """``text`` in ``width`` characters, a cut marked with ``…``."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def terminal_width() -> int:
    """The terminal's width; 80 when the output is not a terminal (a pipe, a file, the journal)."""
    import shutil  # (and its compression modules) only when a table is printed

    return shutil.get_terminal_size((80, 24)).columns


def _widths(headers: Sequence[str], cells: Sequence[Sequence[str]], shrink: Sequence[tuple[int, int]],
            width: int | None, sep: str) -> list[int]:
    """Each column as wide as its widest cell, then the ``shrink`` columns cut, in order, to fit ``width``."""
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    if shrink:
        excess = sum(widths) + len(sep) * (len(widths) - 1) - (width or terminal_width())
        for i, narrowest in shrink:
            cut = min(max(excess, 0), widths[i] - max(len(headers[i]), narrowest))
            if cut > 0:
                widths[i] -= cut
                excess -= cut
    return widths


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                shrink: Sequence[tuple[int, int]] = (), width: int | None = None, sep: str = "  ") -> None:
    """Aligned columns; ``shrink``: (column, narrowest) steps, in order, cutting with ``…`` to fit ``width``."""
    print_table_stream(headers, [rows], shrink=shrink, width=width, sep=sep)


def print_table_stream(headers: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]], *,
                       shrink: Sequence[tuple[int, int]] = (), width: int | None = None, sep: str = "  ") -> None:
    """``print_table`` for rows that come in chunks: the first chunk sets the widths, later cells are cut to them."""
    widths: list[int] | None = None
    for rows in chunks:
        cells = [[("" if c is None else str(c)) for c in row] for row in rows]
        if widths is None:
            widths = _widths(headers, cells, shrink, width, sep)
            print(sep.join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
        for row in cells:
            print(sep.join(fit(c, w).ljust(w) for c, w in zip(row, widths)).rstrip())
    if widths is None:
        print(sep.join(headers).rstrip())


def print_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([["" if c is None else c for c in row] for row in rows])
