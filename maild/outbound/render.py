"""Jinja2 over ``templates/``: every mail maild writes, in Polish and English.

A template is ``templates/<lang>/<name>.txt`` with a ``subject`` and a ``body``
block. The environment is sandboxed and values from mail are data, never
template code: a subject like ``{{ 7*7 }}`` is printed as written.

An operator's ``templates_dir`` is searched first and the packaged templates
after it: a folder copied before a release added a template (``notify_new``,
``expiry_reminder``, ...) keeps working, with the packaged wording for what it
lacks; ``maild check`` lists those.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import re
import sys
from pathlib import Path
from typing import Any

from jinja2 import (DictLoader, Environment, FileSystemLoader, StrictUndefined, Template, TemplateError,
                    TemplateNotFound)
from jinja2 import __version__ as jinja2_version
from jinja2.bccache import Bucket, FileSystemBytecodeCache
from jinja2.sandbox import ImmutableSandboxedEnvironment

from maild.errors import MaildError
from maild.outbound.template_files import PACKAGED as PACKAGED
from maild.outbound.template_files import TemplateFileError, compiled_before, mark_compiled, read_sources
from maild.outbound.template_files import cache_folder as cache_folder
from maild.outbound.template_files import search_path as search_path
from maild.storage.blobs import StorageError, make_private_dir
from maild.rules.delivery_status import explain_status
from maild.rules.command_help import NOTIFICATION_TEMPLATES, notification_values
from maild.rules.wording import (
    format_date,
    format_deadline,
    format_duration,
    format_kind,
    format_money,
    format_number,
    format_month,
    format_percent,
    format_problem,
    format_status,
    format_subject,
    format_tier,
    format_weekday_date,
    format_zone,
    kind_name,
    plural,
)

log = logging.getLogger("maild.render")
LANGUAGES = ("pl", "en")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class RenderError(MaildError):
    """A template is missing or broken; names the template and language."""


def one_line(value: object, limit: int = 200) -> str:
    """Text safe for a header or a single display line: no CR/LF/NUL, capped."""
    text = str(value)
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        # no control character and no whitespace but single inner spaces: already one line
        return text if len(text) <= limit else text[: limit - 1] + "…"
    text = _CONTROL.sub(" ", text.replace("\r", " ").replace("\n", " "))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_lines(text: str, lines: int = 6, width: int = 400) -> str:
    kept = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()][:lines]
    return "\n".join(_CONTROL.sub("", ln)[:width] for ln in kept)


def hours_minutes(minutes: int, language: str = "pl") -> str:
    """A duration without zero parts (``45 min``, ``8 godz.``, ``1 h 30 min``)."""
    return format_duration(minutes, language)


def add_wording_filters(env: Environment) -> None:
    """The filters every customer-facing template formats values with (text mail and HTML alike)."""
    env.filters["one_line"] = one_line
    env.filters["first_lines"] = first_lines
    env.filters["hm"] = hours_minutes
    # {{ n|plural("day", "pl") }}, {{ d|date("pl") }}, {{ due|deadline("pl", timezone) }},
    # {{ "2026-12"|month("pl") }}, {{ cents|money("pl") }}, {{ 80|percent("pl") }}, {{ "waiting"|status("pl") }}
    env.filters["plural"] = plural
    env.filters["date"] = format_date
    env.filters["weekday_date"] = format_weekday_date
    env.filters["deadline"] = lambda value, language, tz: format_deadline(value, tz, language)
    env.filters["month"] = format_month
    env.filters["money"] = format_money
    env.filters["percent"] = format_percent
    env.filters["number"] = format_number  # {{ 1234|number("en") }}: "1,234"; "1234" in Polish
    env.filters["status"] = format_status
    env.filters["kind"] = format_kind  # {{ "prepaid"|kind("pl") }}, {{ "unverified"|tier("pl") }}
    env.filters["tier"] = format_tier
    env.filters["kind_name"] = kind_name  # {{ "sla"|kind_name("en") }}: "service contract" (the statements')
    env.filters["problem"] = format_problem  # {{ "fetch"|problem("pl") }}: an alert's problem
    env.filters["delivery_status"] = explain_status  # {{ "5.2.2"|delivery_status("pl") }}: a bounce's code
    env.filters["zone"] = format_zone  # {{ timezone|zone("pl") }}: "czas polski" for Europe/Warsaw
    env.filters["subject"] = format_subject  # {{ subject|subject("pl") }}: "(no subject)" -> "(bez tematu)"


class Renderer:
    def __init__(self, templates_path: Path) -> None:
        self.path = templates_path
        self.folders = search_path(templates_path)
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader([str(f) for f in self.folders]),
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html")),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        add_wording_filters(self.env)
        # each template's globals as one plain dict (``render``), made at its first mail (maild sets
        # the environment's globals here and never changes them)
        self._globals: dict[str, tuple[Template, dict[str, Any]]] = {}
        # the templates are a snapshot compiled whole (``load_renderer``): each is looked up in
        # ``_globals`` and not asked of the environment again per mail
        self._snapshot = False

    def render(self, name: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
        """(subject, body) of template ``name`` in ``language`` (falls back to English).

        A consultant notification (``NOTIFICATION_TEMPLATES``) is rendered with the commands' help
        and the reply marker of the reader's ``language`` under its context: the same in every
        notification, they are not stored with each (a row queued before, which has them, is
        rendered with its own)."""
        notification = name in NOTIFICATION_TEMPLATES
        lang = language if language in LANGUAGES else "en"
        name = f"{lang}/{name}.txt"
        known = self._globals.get(name) if self._snapshot else None
        if known is None:
            try:
                template = self.env.get_template(name)
            except TemplateNotFound:
                raise RenderError(f"template {name} not found under {' or '.join(map(str, self.folders))}") from None
            except TemplateError as exc:
                raise RenderError(f"template {name} in {self.origin(name)}: {exc}") from None
            known = self._globals.get(name)
            if known is None or known[0] is not template:  # a template loaded anew has globals of its own
                known = self._globals[name] = (template, dict(template.globals))
        template = known[0]
        try:
            # the context as Jinja2 makes it unshared (its globals, then the values over them), from
            # the globals flattened once: unshared, it reads a ChainMap of them into a new dict per mail
            under = {**known[1], **notification_values(language)} if notification else known[1]
            ctx = template.new_context({**under, **context}, shared=True)
            subject = "".join(template.blocks["subject"](ctx))
            body = "".join(template.blocks["body"](ctx))
        except KeyError as exc:
            raise RenderError(f"template {name} in {self.origin(name)}: missing block {exc}") from None
        except TemplateError as exc:
            raise RenderError(f"template {name} in {self.origin(name)}: {exc}") from None
        return one_line(subject, 900), body.strip() + "\n"

    def names(self) -> list[str]:
        """Every mail template, the operator's and the packaged ones."""
        return sorted({p.stem for folder in self.folders for p in (folder / "en").glob("*.txt")})

    def sources(self) -> dict[str, str]:
        """``lang/name.txt`` -> its text, each from the first folder that has it (a snapshot)."""
        try:
            return read_sources(self.folders)
        except TemplateFileError as exc:
            raise RenderError(str(exc)) from None

    def not_overridden(self) -> list[str]:
        """The packaged templates the operator's folder lacks (``pl/notify_new.txt``, ...): these
        mails go out in the packaged wording. Empty when the packaged folder is the one in use."""
        if len(self.folders) == 1:
            return []
        own = {f"{p.parent.name}/{p.name}" for p in self.path.glob("*/*") if p.suffix in (".txt", ".html")}
        packaged = {f"{p.parent.name}/{p.name}" for p in PACKAGED.glob("*/*") if p.suffix in (".txt", ".html")}
        return sorted(packaged - own)

    def origin(self, name: str) -> Path:
        """The folder ``name`` (``pl/ack.txt``) is read from: the operator's when it has one."""
        return next((f for f in self.folders if (f / name).is_file()), self.folders[-1])


class CompiledTemplates(FileSystemBytecodeCache):
    """Compiled templates kept between starts (``<storage>/cache/templates``, ``cache_folder``).

    Compiling the 32 templates was a fifth of ``run --once``'s start-up; a
    template whose source, Jinja2, Python and environment settings are those it
    was compiled with is loaded instead (Jinja2 checks a checksum of the source,
    salted here with the rest). Only a template that compiled is ever stored, so
    a broken edit is still refused at start and on reload. A cache that cannot be
    read or written is passed over: templates are then compiled as before.
    ``write=False`` (``maild check``) only reads what the daemon stored: a check
    run as another user (root) must not leave files the daemon cannot read.
    """

    def __init__(self, directory: Path, env: Environment, write: bool = True) -> None:
        if write:
            make_private_dir(directory)
        self._write = write
        super().__init__(str(directory), "%s.j2c")
        self._salt = repr((jinja2_version, sys.version_info[:3], type(env).__qualname__, env.trim_blocks,
                           env.lstrip_blocks, env.keep_trailing_newline, env.block_start_string,
                           env.variable_start_string, env.comment_start_string, env.line_statement_prefix,
                           env.newline_sequence, sorted(env.filters), sorted(env.tests)))

    def get_source_checksum(self, source: str) -> str:
        return hashlib.sha256(f"{self._salt}\0{source}".encode()).hexdigest()

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except (OSError, ValueError, EOFError, TypeError, pickle.UnpicklingError) as exc:  # damaged: compile anew
            log.debug("template cache %s: %s", bucket.key, exc)
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        if not self._write:
            return
        try:
            super().dump_bytecode(bucket)
        except OSError as exc:  # a full or read-only disk costs the next start a compile, nothing more
            log.debug("template cache %s not written: %s", bucket.key, exc)


def load_renderer(path: Path, cache: Path | None = None, sources: dict[str, str] | None = None) -> Renderer:
    """A renderer over a snapshot of the templates, each one compiled.

    Jinja2 would re-read a changed file by itself; reading them all once makes a
    SIGHUP the only moment templates change, and a broken edit (a syntax error, a
    missing subject or body block) is refused whole. ``maild check`` goes further
    and renders each with sample values. ``cache``: a folder for ``CompiledTemplates``,
    where the snapshot is then marked compiled (``template_files.compiled_before``).
    ``sources``: the snapshot, when it was read before (``template_files.read_sources``). A snapshot
    marked compiled in ``cache`` is not compiled or loaded here: each template is loaded from the
    cache at its first ``render``.
    """
    renderer = Renderer(path)
    if sources is None:
        sources = renderer.sources()  # the operator's folder over the packaged templates
    renderer.env.loader = DictLoader(sources)
    if cache is not None:
        try:
            renderer.env.bytecode_cache = CompiledTemplates(cache, renderer.env)
        except (OSError, StorageError) as exc:
            log.warning("templates are compiled at each start: no cache folder %s: %s", cache, exc)
            cache = None
    if cache is not None and compiled_before(cache, sources):
        # this very snapshot compiled whole before: each template is loaded from the cache with its
        # first mail (a courier sending acknowledgements loads 2 of the 32)
        renderer._snapshot = True
        return renderer
    for name in sources:
        try:
            template = renderer.env.get_template(name)
        except TemplateError as exc:
            raise RenderError(f"template {name}: {exc}") from None
        missing = {"subject", "body"} - set(template.blocks)
        if missing:
            raise RenderError(f"template {name}: no {' or '.join(sorted(missing))} block")
        renderer._globals[name] = (template, dict(template.globals))
    # Jinja2 would look each mail's template up in its cache and ask the loader whether the snapshot's
    # source changed (``get_template``, ~7 us a mail in a courier): it cannot, the loader is this snapshot
    renderer._snapshot = True
    if cache is not None:
        mark_compiled(cache, sources)
    return renderer
