"""HTML for the people who would rather look than read: the month report, statements, the digest.

Jinja2 with autoescape on for every template, in the same sandbox as the mail
templates: a customer name or subject such as ``"><img onerror=...>`` is text on
the page, never markup. The templates are maild's own (``billing/html/`` and the
folders callers name), not the operator's ``templates_dir``: they carry the
layout the browser tests check (nothing wider than a phone's screen, every
image with its alt text).

Images are given as ``Image`` values whose ``src`` is a ``data:`` URI (a
self-contained file) or a ``cid:`` reference (a mail's inline part); the
template does not know which.
"""
from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from maild.billing.charts import hours
from maild.billing.reports import format_money

HERE = Path(__file__).resolve().parent / "html"


@dataclass(frozen=True)
class Image:
    """A chart as a page shows it."""

    key: str
    src: str
    alt: str
    title: str
    width: int
    height: int


@dataclass(frozen=True)
class InlineImage:
    """A chart as a mail carries it: a related part named by its Content-ID."""

    cid: str
    png: bytes
    filename: str


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (no image library needed)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def percent(part: int, whole: int) -> str:
    return "-" if whole <= 0 else f"{100 * part / whole:.0f} %"


@lru_cache(maxsize=8)
def environment(folders: tuple[Path, ...] = (HERE,)) -> ImmutableSandboxedEnvironment:
    """The HTML templates under ``folders`` (the first that has a name wins; ``base.html`` is
    here), autoescape everywhere, an undefined name an error."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(f) for f in folders]), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["hours"] = hours
    env.filters["money"] = format_money
    env.filters["percent"] = percent
    return env


def render(name: str, context: Mapping[str, Any], folders: tuple[Path, ...] = (HERE,)) -> str:
    return environment(folders).get_template(name).render(dict(context))


TEXT: dict[str, dict[str, str]] = {
    "en": {
        "report_title": "Support in {month}", "generated": "Generated {at} UTC; times in {tz}.",
        "tickets": "tickets opened", "sla_met": "SLA reactions in time", "breaches": "SLA breaches",
        "backlog": "open at the month's end", "hours": "hours booked", "to_bill": "to invoice",
        "sla": "SLA attainment", "customer": "Customer", "contract": "Contract", "met": "In time",
        "due": "Due", "attainment": "Attained", "median": "Median reaction", "breached": "Breached",
        "none": "none", "target": "target (prepaid, not a promise)",
        "reactions": "Reaction time against the deadline", "daily": "Tickets per working day",
        "daily_note": "Days off are faded; the strips above the bars are the peak periods, one row each.",
        "backlog_title": "Open backlog by age", "allowance": "Hours against the allowance",
        "allow_col": "Allowance", "carry_in": "Carried in", "used": "Used", "carry_out": "Carried out",
        "overage": "Beyond", "amount": "Amount", "prepaid": "Prepaid balances", "start": "At start",
        "end": "At end", "valid": "Valid until", "scopes": "Hours by scope", "scope": "Scope",
        "consultants": "Per consultant", "consultant": "Consultant", "answered": "Tickets answered",
        "firsts": "First answers", "median_first": "Median first response", "no_rows": "Nothing this month.",
        "currency": "PLN",
    },
    "pl": {
        "report_title": "Wsparcie w {month}", "generated": "Wygenerowano {at} UTC; czas w strefie {tz}.",
        "tickets": "nowych zgłoszeń", "sla_met": "reakcji SLA w terminie", "breaches": "naruszeń SLA",
        "backlog": "otwartych na koniec miesiąca", "hours": "zaksięgowanych godzin", "to_bill": "do faktury",
        "sla": "Dotrzymanie SLA", "customer": "Klient", "contract": "Umowa", "met": "W terminie",
        "due": "Wymagane", "attainment": "Dotrzymane", "median": "Mediana reakcji", "breached": "Naruszone",
        "none": "brak", "target": "cel (pakiet, nie zobowiązanie)",
        "reactions": "Czas reakcji względem terminu", "daily": "Zgłoszenia w dniach roboczych",
        "daily_note": "Dni wolne są wyblakłe; paski nad słupkami to okresy szczytu, każdy w swoim wierszu.",
        "backlog_title": "Zaległe zgłoszenia według wieku", "allowance": "Godziny względem puli",
        "allow_col": "Pula", "carry_in": "Przeniesione", "used": "Wykorzystane", "carry_out": "Na kolejny",
        "overage": "Ponad pulę", "amount": "Kwota", "prepaid": "Salda pakietów", "start": "Na początku",
        "end": "Na końcu", "valid": "Ważny do", "scopes": "Godziny według zakresu", "scope": "Zakres",
        "consultants": "Według konsultantów", "consultant": "Konsultant", "answered": "Zgłoszenia z odpowiedzią",
        "firsts": "Pierwsze odpowiedzi", "median_first": "Mediana pierwszej odpowiedzi",
        "no_rows": "Nic w tym miesiącu.", "currency": "PLN",
    },
}


def text(language: str) -> dict[str, str]:
    return TEXT.get(language, TEXT["en"])


STATEMENT_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Support hours {month}: {customer}",
        "intro": "The statement of support hours of {customer} for {month}.",
        "total": "total time", "to_bill": "PLN net to invoice", "sla": "Service contract",
        "prepaid": "Prepaid hour package (valid until {date})", "occasional": "Occasional help",
        "allowance": "Monthly allowance", "carry_in": "Carried over from before", "used": "Used this month",
        "carry_out": "Carried over to next month", "start": "Balance at the start", "end": "Balance at the end",
        "worked": "Time worked", "overage": "Beyond the balance", "billed": "Billed", "currency": "PLN",
        "ticket": "Ticket", "subject": "Subject", "time": "Time",
        "questions": "If you have any questions about this statement, please reply to this message.",
        "regards": "Kind regards,",
    },
    "pl": {
        "title": "Zestawienie godzin wsparcia {month}: {customer}",
        "intro": "Zestawienie godzin wsparcia dla firmy {customer} za {month}.",
        "total": "łączny czas", "to_bill": "zł netto do zafakturowania", "sla": "Umowa serwisowa",
        "prepaid": "Pakiet godzin (ważny do {date})", "occasional": "Pomoc okazjonalna",
        "allowance": "Miesięczny limit", "carry_in": "Z poprzednich miesięcy", "used": "Wykorzystane w miesiącu",
        "carry_out": "Przechodzi na kolejny", "start": "Saldo na początek", "end": "Saldo na koniec",
        "worked": "Czas pracy", "overage": "Ponad saldo", "billed": "Do rozliczenia", "currency": "zł",
        "ticket": "Zgłoszenie", "subject": "Temat", "time": "Czas",
        "questions": "W razie pytań dotyczących zestawienia prosimy odpowiedzieć na tę wiadomość.",
        "regards": "Z poważaniem",
    },
}
