"""The month report and the customer statement as HTML with their charts drawn.

This is the report path: it imports ``plot`` and so matplotlib, and only the
report commands (and ``maild demo``) import it. What it renders comes from the
JSON objects the commands print (``report month --json``) and from the
statement's own context, through ``charts``; nothing here queries the database.

A page for a file carries its charts as ``data:`` URIs (one self-contained
file); a page for a mail names them ``cid:`` and returns the PNG parts the mail
must carry, each with its Content-ID.
"""
from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from maild.billing.charts import Chart, month_charts, month_summary, statement_charts
from maild.billing.html import (Image, InlineImage, data_uri, png_size, render, render_statement, statement_folders,
                                statement_words, text)
from maild.billing.plot import WIDTH_PX, render_png
from maild.rules.kinds import rules_of
from maild.rules.wording import format_local_time

_CID_SAFE = re.compile(r"[^A-Za-z0-9.-]+")
# a statement is read in a mail client, often on a phone: narrower charts shrink less there
MAIL_WIDTH_PX = 600


def draw(charts: Sequence[Chart], language: str, *, inline: bool, domain: str = "maild.invalid",
         tag: str = "", width_px: int = WIDTH_PX) -> tuple[list[Image], list[InlineImage]]:
    """Each chart drawn once; as data URIs, or as ``cid:`` references plus the parts to attach."""
    images: list[Image] = []
    parts: list[InlineImage] = []
    token = secrets.token_hex(6)
    for chart in charts:
        png = render_png(chart, language, width_px)
        width, height = png_size(png)
        if inline:
            name = _CID_SAFE.sub("-", f"{chart.key}.{tag}.{token}").strip("-.")
            cid = f"{name}@{_CID_SAFE.sub('-', domain)}"
            parts.append(InlineImage(cid=cid, png=png, filename=f"{chart.key}.png"))
            src = f"cid:{cid}"
        else:
            src = data_uri(png)
        images.append(Image(key=chart.key, src=src, alt=chart.alt, title=chart.title, width=width, height=height))
    return images, parts


def month_report_html(report: Mapping[str, Any], language: str, from_name: str, generated_at: datetime, *,
                      inline: bool = False, domain: str = "maild.invalid") -> tuple[str, list[InlineImage]]:
    """The management report for ``report`` (the object ``report month --json`` prints)."""
    images, parts = draw(month_charts(report, language), language, inline=inline, domain=domain,
                         tag=f"report-{report['month']}")
    customers = report["hours"]["customers"]
    html = render("month_report.html", {
        "lang": language, "t": text(language), "r": report, "from_name": from_name,
        # in the business time zone and the reader's words, as the report's other times ("2026-12-01 06:05 UTC")
        "generated_at": format_local_time(generated_at, report["timezone"], language),
        "summary": month_summary(report),
        "images": {image.key: image for image in images},
        "sla_rows": [(cu, c) for cu in customers for c in cu["contracts"] if rules_of(c["kind"]).monthly_allowance],
        "prepaid_rows": [(cu, c) for cu in customers for c in cu["contracts"] if rules_of(c["kind"]).packages],
    })
    return html, parts


def statement_html(context: Mapping[str, Any], language: str, *, inline: bool = True,
                   domain: str = "maild.invalid", templates: Path | None = None) -> tuple[str, list[InlineImage]]:
    """A customer's statement as HTML, from the context its plain text is rendered from.

    The words come from ``<lang>/statement.html`` in ``templates`` (the operator's
    ``templates_dir``) or, where that lacks it, the packaged templates.
    """
    lang = language if language in ("pl", "en") else "en"
    folders = statement_folders(templates)
    words = statement_words(context, lang, folders)
    images, parts = draw(statement_charts(context, words), lang, inline=inline, domain=domain,
                         tag=f"statement-{context['month']}-{context.get('customer_id') or ''}",
                         width_px=MAIL_WIDTH_PX)
    return render_statement(context, lang, images, folders), parts


def html_part(html: str, parts: Sequence[InlineImage]) -> dict[str, Any]:
    """What an outbox row's ``_headers["html"]`` holds: the HTML and its images, plain JSON.

    The outbox builds the multipart/alternative mail from it without drawing
    anything, so the daemon never imports matplotlib.
    """
    return {"body": html, "images": [
        {"cid": p.cid, "filename": p.filename, "content_type": "image/png",
         "data": base64.b64encode(p.png).decode("ascii")} for p in parts]}
