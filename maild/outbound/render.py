"""Jinja2 over ``templates/``: every mail maild writes, in Polish and English.

A template is ``templates/<lang>/<name>.txt`` with a ``subject`` and a ``body``
block. The environment is sandboxed and values from mail are data, never
template code: a subject like ``{{ 7*7 }}`` is printed as written.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from maild.errors import MaildError
from maild.rules.wording import (
    format_date,
    format_deadline,
    format_duration,
    format_money,
    format_month,
    format_percent,
    format_weekday_date,
    plural,
)

LANGUAGES = ("pl", "en")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class RenderError(MaildError):
    """A template is missing or broken; names the template and language."""


def one_line(value: object, limit: int = 200) -> str:
    """Text safe for a header or a single display line: no CR/LF/NUL, capped."""
    text = _CONTROL.sub(" ", str(value).replace("\r", " ").replace("\n", " "))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_lines(text: str, lines: int = 6, width: int = 400) -> str:
    kept = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()][:lines]
    return "\n".join(_CONTROL.sub("", ln)[:width] for ln in kept)


def hours_minutes(minutes: int, language: str = "pl") -> str:
    """A duration without zero parts (``45 min``, ``8 godz.``, ``1 h 30 min``)."""
    return format_duration(minutes, language)


class Renderer:
    def __init__(self, templates_path: Path) -> None:
        from jinja2 import FileSystemLoader

        self.path = templates_path
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(templates_path)),
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html")),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["one_line"] = one_line
        self.env.filters["first_lines"] = first_lines
        self.env.filters["hm"] = hours_minutes
        # {{ n|plural("day", "pl") }}, {{ d|date("pl") }}, {{ due|deadline("pl", timezone) }},
        # {{ "2026-12"|month("pl") }}, {{ cents|money("pl") }}, {{ 80|percent("pl") }}
        self.env.filters["plural"] = plural
        self.env.filters["date"] = format_date
        self.env.filters["weekday_date"] = format_weekday_date
        self.env.filters["deadline"] = lambda value, language, tz: format_deadline(value, tz, language)
        self.env.filters["month"] = format_month
        self.env.filters["money"] = format_money
        self.env.filters["percent"] = format_percent

    def render(self, name: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
        """(subject, body) of template ``name`` in ``language`` (falls back to English)."""
        lang = language if language in LANGUAGES else "en"
        try:
            template = self.env.get_template(f"{lang}/{name}.txt")
        except TemplateNotFound:
            raise RenderError(f"template {lang}/{name}.txt not found under {self.path}") from None
        except TemplateError as exc:
            raise RenderError(f"template {lang}/{name}.txt: {exc}") from None
        try:
            ctx = template.new_context(dict(context))
            subject = "".join(template.blocks["subject"](ctx))
            body = "".join(template.blocks["body"](ctx))
        except KeyError as exc:
            raise RenderError(f"template {lang}/{name}.txt: missing block {exc}") from None
        except TemplateError as exc:
            raise RenderError(f"template {lang}/{name}.txt: {exc}") from None
        return one_line(subject, 900), body.strip() + "\n"

    def names(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "en").glob("*.txt"))
