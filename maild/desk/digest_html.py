"""The consultants' morning digest as HTML: the queue as a table, the time left coloured by urgency.

``render_digest_html`` takes the rows ``digest.digest_lines`` makes (and the
managers' breaches from ``digest.breaches_on``) and returns the page;
``digest_html_part`` wraps it as an outbox row's ``_headers["html"]`` so the
digest mail goes out as multipart/alternative beside its plain text. No chart,
so nothing here imports matplotlib: the daemon may call it.

Urgency is also written in words in the cell, so the colour is never the only
sign (a colour-blind reader, a client that drops styles).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maild.billing.html import HERE as BASE_TEMPLATES
from maild.billing.html import render
from maild.rules.wording import format_date

TEMPLATES = (Path(__file__).resolve().parent / "html", BASE_TEMPLATES)
SOON_SECONDS = 2 * 3600  # under two hours left: orange
TODAY_SECONDS = 8 * 3600  # within a working day: yellow
# An older digest row's ``left`` (before rows carried ``seconds_left``): "-1h 30m", "2d 3h", or
# since the English digest writes the notifications' units, "1 h 30 min", "2 days 3 h", "45 min".
_LEFT = re.compile(r"^(-)?(?:(\d+)d )?(\d+)h(?: (\d+)m)?$")
_LEFT_WORDS = re.compile(r"^(-)?(?=\d)(?:(\d+) days? ?)?(?:(\d+) h ?)?(?:(\d+) min)?$")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Support queue {day}", "everything": "The whole queue, overdue first, then in queue order.",
        "mine": "Your tickets and the unassigned ones, overdue first, then in queue order.",
        "ticket": "Ticket", "customer_subject": "Customer and subject", "left": "Time left",
        "overdue": "OVERDUE", "soon": "under 2 h", "today": "under 8 h", "later": "later",
        "no_deadline": "no deadline", "age": "age", "yours": "yours", "unassigned": "unassigned",
        "nothing": "Nothing open.", "breaches": "Reaction deadlines breached on {day}",
    },
    "pl": {
        "title": "Kolejka wsparcia {day}", "everything": "Cała kolejka: najpierw przeterminowane, potem według kolejności.",
        "mine": "Twoje zgłoszenia i nieprzypisane: najpierw przeterminowane, potem według kolejności.",
        "ticket": "Zgłoszenie", "customer_subject": "Klient i temat", "left": "Pozostało",
        "overdue": "PO TERMINIE", "soon": "poniżej 2 godz.", "today": "poniżej 8 godz.", "later": "później",
        "no_deadline": "bez terminu", "age": "wiek", "yours": "Twoje", "unassigned": "nieprzypisane",
        "nothing": "Nic otwartego.", "breaches": "Terminy reakcji przekroczone {day}",
    },
}


def seconds_left(row: Mapping[str, Any]) -> int | None:
    """A row's time left in seconds: ``seconds_left`` when the row has it, else read from ``left``."""
    if row.get("seconds_left") is not None:
        return int(row["seconds_left"])
    text = str(row.get("left") or "")
    match = _LEFT.match(text) or _LEFT_WORDS.match(text)
    if match is None:
        return None
    sign, days, hours, minutes = match.groups()
    value = (int(days or 0) * 24 + int(hours or 0)) * 3600 + int(minutes or 0) * 60
    return -value if sign or row.get("overdue") else value


def urgency(row: Mapping[str, Any]) -> str:
    """overdue, soon (< 2 h), today (< 8 h), later, or none (no deadline)."""
    left = seconds_left(row)
    if row.get("overdue") or (left is not None and left <= 0):
        return "overdue"
    if left is None:
        return "none"
    if left < SOON_SECONDS:
        return "soon"
    return "today" if left < TODAY_SECONDS else "later"


def render_digest_html(rows: Sequence[Mapping[str, Any]], *, language: str, day: str, everything: bool,
                       breaches: Sequence[Mapping[str, Any]] = (), previous_day: str = "") -> str:
    lang = language if language in TEXT else "en"
    return render("digest.html", {
        # the days as the text part reads them ("7.12.2026 r." / "7 December 2026"), not ISO
        "lang": lang, "t": TEXT[lang], "day": format_date(day, lang) if day else "", "everything": everything,
        "previous_day": format_date(previous_day, lang) if previous_day else "",
        "rows": [{**row, "urgency": urgency(row)} for row in rows], "breaches": list(breaches),
    }, TEMPLATES)


def digest_html_part(rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """The digest's HTML as an outbox row's ``_headers["html"]`` (no images)."""
    return {"body": render_digest_html(rows, **kwargs), "images": []}
