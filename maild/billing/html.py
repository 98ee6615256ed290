"""HTML for the people who would rather look than read: the month report, statements, the digest.

Jinja2 with autoescape on for every template, in the same sandbox as the mail
templates: a customer name or subject such as ``"><img onerror=...>`` is text on
the page, never markup. The layouts are maild's own (``billing/html/`` and the
folders callers name), not the operator's ``templates_dir``: they carry what the
browser tests check (nothing wider than a phone's screen, every image with its
alt text).

The customer's statement takes every word from ``templates/<lang>/statement.html``
(a file of macros and labels, looked up in the operator's ``templates_dir`` first),
so a translator edits templates only; the managers' month report keeps its words
here (``TEXT``).

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

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from maild.billing.charts import StatementWords, hours, scope_totals
from maild.errors import MaildError
from maild.outbound.render import PACKAGED, CompiledTemplates, add_wording_filters, search_path
from maild.storage.blobs import StorageError
from maild.rules.wording import (format_amount, format_date, format_money, format_month, format_number, format_status,
                                 format_subject, format_tier, format_zone, reader_language)

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


def percent(part: int, whole: int, language: str = "pl") -> str:
    """A share of the month report: "66 %" as the Polish report writes it, "66%" in English (and as
    ``wording.format_percent`` writes it in the mails)."""
    if whole <= 0:
        return "-"
    return f"{100 * part / whole:.0f}{' %' if reader_language(language) == 'pl' else '%'}"


def report_money(cents: int, language: str = "pl") -> str:
    """Grosze in the month report: the Polish report's figure ``21728,33`` beside its "(PLN)" label
    (``TEXT``'s ``currency``), as it always read; the English one ``PLN 21,728.33`` (``format_money``,
    the English statements' form), its label empty. It read "21728,33 to invoice (PLN)"."""
    return format_amount(cents) if reader_language(language) == "pl" else format_money(cents, language)


@lru_cache(maxsize=8)
def environment(folders: tuple[Path, ...] = (HERE,)) -> ImmutableSandboxedEnvironment:
    """The HTML templates under ``folders`` (the first that has a name wins; ``base.html`` is
    here), autoescape everywhere, an undefined name an error."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(f) for f in folders]), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["hours"] = hours
    env.filters["money"] = report_money  # {{ cents|money(lang) }}
    env.filters["number"] = format_number  # {{ count|number(lang) }}: "1,234" in English
    env.filters["percent"] = percent
    env.filters["status"] = format_status
    env.filters["tier"] = format_tier
    env.filters["subject"] = format_subject
    env.filters["month"] = format_month  # the month report's "grudzień 2026", its zone "czas polski"
    env.filters["zone"] = format_zone
    env.filters["date"] = format_date  # a package's "ważny do 28.02.2027 r.", as the charts' notes
    return env


def render(name: str, context: Mapping[str, Any], folders: tuple[Path, ...] = (HERE,)) -> str:
    return environment(folders).get_template(name).render(dict(context))


class StatementTemplateError(MaildError):
    """The statement's words file (``<lang>/statement.html``) is missing or broken; names it."""


@lru_cache(maxsize=8)
def customer_environment(folders: tuple[Path, ...]) -> ImmutableSandboxedEnvironment:
    """The customer's pages: the layouts here, the words from ``folders`` (the operator's
    templates, then the packaged ones), with the filters of the mail templates (``|hm("pl")``,
    ``|money("pl")``, ...) so both parts of a statement format values alike."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(HERE), *(str(f) for f in folders)]), autoescape=True,
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    add_wording_filters(env)
    return env


def statement_cache(storage_path: Path) -> Path:
    """Where the statement's compiled templates are kept (``keep_compiled``): a folder of their own,
    as their environment escapes everything and the mail templates' only ``.html``."""
    return storage_path / "cache" / "statement"


def keep_compiled(folders: tuple[Path, ...], cache: Path, write: bool) -> None:
    """Compile the statement's templates under ``folders`` once and keep them in ``cache``
    (``CompiledTemplates``: a template is loaded from there only when its source, Jinja2, Python
    and the environment are those it was compiled with). Compiling the layout and the words of
    both languages was a fifth of ``maild check``. ``write=False``: only read what is there."""
    env = customer_environment(folders)
    try:
        env.bytecode_cache = CompiledTemplates(cache, env, write=write)
    except (OSError, StorageError):
        pass  # compiled each time, as before


def statement_folders(templates: Path | None = None) -> tuple[Path, ...]:
    """Where a statement's words are looked up: the operator's ``templates_dir``, then the packaged."""
    return search_path(templates or PACKAGED)


def _plain(value: object) -> str:
    """A macro's output as plain text (for a PNG or an attribute the page escapes again)."""
    return Markup(str(value)).unescape() if isinstance(value, Markup) else str(value)


def statement_words(context: Mapping[str, Any], language: str, folders: tuple[Path, ...]) -> StatementWords:
    """What the statement's charts say, from ``<lang>/statement.html``: titles, legends,
    one label and note per contract, and the alt texts with the numbers."""
    name = f"{language}/statement.html"
    try:
        words = customer_environment(folders).get_template(name).module
        chart: Mapping[str, str] = getattr(words, "chart")
        contracts = context["contracts"]
        names = {s["scope"]: s["name"] for c in contracts for s in c["scopes"]}
        totals = scope_totals([{"minutes_by_scope": {s["scope"]: s["minutes"] for s in c["scopes"]}}
                               for c in contracts])
        return StatementWords(
            scopes_title=_plain(chart["scopes_title"]), balance_title=_plain(chart["balance_title"]),
            series={k: _plain(chart[k]) for k in ("used", "allowance", "carried_in", "carried", "start", "end")},
            scope_names=names,
            contracts=tuple(_plain(getattr(words, "chart_contract")(c)) for c in contracts),
            notes=tuple(_plain(getattr(words, "chart_note")(c)) for c in contracts),
            scopes_alt=_plain(getattr(words, "scopes_alt")(
                context, [{"scope": k, "name": names.get(k, k), "minutes": m} for k, m in totals.items()])),
            balance_alt=_plain(getattr(words, "balance_alt")(context)),
        )
    except (TemplateError, KeyError, AttributeError, TypeError) as exc:
        raise StatementTemplateError(f"template {name} (under {' or '.join(map(str, folders))}): "
                                     f"{type(exc).__name__}: {exc}") from None


def render_statement(context: Mapping[str, Any], language: str, images: list[Image],
                     folders: tuple[Path, ...]) -> str:
    """The statement page: the layout here with the words of ``<lang>/statement.html``."""
    try:
        return customer_environment(folders).get_template("statement.html").render(
            {"s": {k: v for k, v in context.items() if not k.startswith("_")}, "lang": language, "images": images})
    except TemplateError as exc:
        raise StatementTemplateError(f"template {language}/statement.html (under "
                                     f"{' or '.join(map(str, folders))}): {type(exc).__name__}: {exc}") from None


# The month report goes to the managers only ([[managers]] in maild.toml), never to a
# customer: its words stay here, in both languages, next to the layout that uses them.
TEXT: dict[str, dict[str, str]] = {
    "en": {
        "report_title": "Support in {month}", "generated": "Generated {at}. Times in the report: {tz}.",
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
        "currency": "",  # the English figures carry it: "PLN 21,728.33"
    },
    "pl": {
        "report_title": "Wsparcie za {month}", "generated": "Wygenerowano {at}. Godziny w raporcie: {tz}.",
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
