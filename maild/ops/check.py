"""``maild check``: the config, and every server and path it names, one line each.

Exit 1 on any failure. A database that does not exist yet is fine: it will be
created on the first run.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url

from maild.storage.blobs import BlobStore
from maild.config import Config, secret_warnings
from maild.rules.customers import Customer, load_customers, removals_refused
from maild.rules.kinds import KINDS, rules_of
from maild.rules.wording import format_money
from maild.storage.db import make_engine, migration_state, safe_url
from maild.errors import MaildError
from maild.intake.mailbox import ImapSettings, open_source
from maild.outbound.render import LANGUAGES, CompiledTemplates, Renderer, RenderError, cache_folder
from maild.outbound.smtp import SmtpSender

SAMPLE_CONTEXTS: dict[str, dict[str, Any]] = {
    "ack": {"ref": "SUP-1", "subject": "Test", "from_name": "Support", "audience": "customer", "contract_kind": "sla",
            "on_behalf": True,
            "timezone": "Europe/Warsaw", "reaction_due": "2026-01-02T10:00:00+00:00", "reaction_hours": 24,
            "reaction_clock": "working_days", "opens": "08:00", "closes": "16:00", "prepaid_left_minutes": 90,
            "prepaid_valid_until": "2026-06-30", "fell_back": "", "fell_back_day": "", "hourly_rate_cents": 20000,
            "unit_minutes": 15, "peak_label": "JPK", "queue_position": 4, "expected_by": "2026-12-07"},
    "relay": {"ref": "SUP-1", "subject": "Test", "body": "Answer", "consultant": "Anna"},
    "resolved": {"ref": "SUP-1", "subject": "Test", "requester_name": "Jan", "reopen_days": 7, "from_name": "Support"},
    "escalation": {"ref": "SUP-1", "subject": "Test", "level": 2, "levels": 3, "percent": 80, "skipped": [1],
                   "breach": False, "customer": "Acme", "contract_id": "c-1", "requester": "jan@acme.pl",
                   "timezone": "Europe/Warsaw", "excerpt": "Hello", "assigned_to": ""},
    "command_error": {"ref": "SUP-1", "subject": "Test",
                      "errors": [{"line_no": 1, "line": "#foo", "reason": "?", "code": "unknown_command",
                                  "params": {"name": "foo", "known": "#time"}}]},
    "low_balance": {"ref": "SUP-1", "customer_name": "Acme", "left_minutes": 45, "valid_until": "2026-06-30",
                    "rate_cents": 25000, "from_name": "Support"},
    "expiry_reminder": {"customer_name": "Acme", "left_minutes": 180, "valid_until": "2026-06-30",
                        "from_name": "Support"},
    "bounce_notice": {"ref": "SUP-1", "subject": "Test", "failed": ["x@y.pl"], "status": "5.1.1",
                      "permanent": True, "diagnostic": "user unknown"},
    # the header block (header_block's, below) and what the notifier adds to it
    "notify_new": {"event": "new", "author": "jan@acme.pl", "body": "Hello", "trimmed": True,
                   "attached": [{"filename": "a.pdf", "size": 1}], "named": [{"filename": "b.iso", "size": 9}]},
    "notify_reply": {"author": "jan@acme.pl", "event": "follow_up", "body": "More", "trimmed": False, "attached": [],
                     "named": []},
    "digest": {"day": "2026-01-02", "everything": True, "overdue": 1, "previous_day": "2026-01-01",
               "new_ticket_address": "support+t@x.pl",
               "rows": [{"ref": "SUP-1", "tier": "sla", "priority": "P1", "status": "open",
                         "overdue": True, "mine": False, "assigned_to": "", "customer": "Acme", "subject": "Test"}],
               "breaches": [{"ref": "SUP-1", "customer": "Acme", "subject": "Test", "assigned_to": ""}],
               "absences": [{"name": "Anna", "email": "anna@x.pl", "from": "2026-01-02", "until": "2026-01-09",
                             "note": "urlop"}], "nobody_present": True},
    "authority_notice": {"ref": "SUP-1", "subject": "Test", "reason_code": "no_proof", "detail": "",
                         "reason": "no proof: neither a reply to maild's mail to this consultant nor the consultant's "
                                   "personal address", "new_ticket_address": "support+t@x.pl"},
    "presence_confirm": {"subject": "#away", "done": [{"what": "away", "start": "2026-12-21", "until": "2027-01-03"},
                                                      {"what": "back", "start": "2026-12-07", "until": ""}]},
    "month_report": {"month": "2026-01", "timezone": "Europe/Warsaw", "from_name": "Support",
                     "summary": {"tickets": 3, "sla_met": 1, "sla_due": 2, "breaches": 1, "backlog": 1,
                                 "minutes": 90},
                     "sla": [{"customer_name": "Acme", "contract_id": "c-1", "met": 1, "due": 2,
                              "missed_refs": ["SUP-2"]}]},
    "alert": {"what": "mailbox fetch", "detail": "IMAP down", "since": "2026-01-01T00:40+00:00", "recovered": False,
              "key": "fetch", "figures": {"last": "2026-01-01T00:00+00:00", "limit": 30}, "timezone": "Europe/Warsaw"},
    "statement": {"month": "2026-01", "timezone": "Europe/Warsaw", "customer_name": "Acme", "customer_id": "acme",
                  "total_minutes": 90, "amount": "300,00", "from_name": "Support", "net_cents": 30000,
                  "vat_cents": 6900, "gross_cents": 36900, "vat_percent": 23,
                  "contracts": [{"contract_id": f"c-{kind}", "kind": kind, "total_minutes": 90,
                                 "allowance_minutes": 600, "carry_in_minutes": 0, "carry_out_minutes": 510,
                                 "balance_start_minutes": 240, "balance_end_minutes": 150,
                                 "valid_until": "2026-06-30", "overage_minutes": 15, "billable_minutes": 15,
                                 "amount": "50,00", "amount_cents": 5000, "fee_cents": 25000, "rate_cents": 20000,
                                 "lapsed_minutes": 0, "scopes": [{"scope": "consultation", "name": "konsultacja", "minutes": 90}],
                                 "tickets": [{"ref": "SUP-1", "subject": "Test", "minutes": 90}]}
                                for kind in KINDS]},  # every kind's statement lines are rendered
}

# The values the daemon words for its reader, made by the functions it calls, so the render test sees
# the shapes a mail gets ("2.01.2026 r., godz. 11:00", a reason in the reader's words), not ISO text:
# a deadline at 10:00 UTC read an hour before, in Warsaw.
_DUE = datetime(2026, 1, 2, 10, 0, tzinfo=timezone.utc)
_NOW = _DUE - timedelta(hours=1)
_TZ = "Europe/Warsaw"


def _worded(name: str, language: str) -> dict[str, Any]:
    from maild.desk.commands import help_lines
    from maild.desk.digest import age_text, left_text
    from maild.desk.notifications import TicketView, header_block
    from maild.rules.sla import time_left_text
    from maild.rules.wording import format_local_time

    if name in ("notify_new", "notify_reply"):
        new = name == "notify_new"
        kind = next(rules.name for rules in KINDS.values() if rules.reaction_deadline)  # a deadline to word
        view = TicketView(ref="SUP-1", subject="Test", customer_name="Acme", contract_id="c-1", contract_kind=kind,
                          tier_name=kind, priority="P1",
                          reasons=("P1: urgent words 'Awaria'",) if new else ("P1: set by anna@x.pl, reason 'pilne'",),
                          reaction_due=_DUE if new else None, minutes_left=90 if new else None,
                          assigned_to=None if new else "anna@x.pl", requester="jan@acme.pl",
                          status="new" if new else "open")
        return header_block(view, ZoneInfo(_TZ), "support+t@x.pl", language)
    if name == "escalation":
        return {"due_local": format_local_time(_DUE, _TZ, language), "time_left": time_left_text(_DUE, _NOW, language)}
    if name == "command_error":
        return {"commands": help_lines(language)}
    if name == "digest":
        row = SAMPLE_CONTEXTS["digest"]["rows"][0]
        return {"rows": [{**row, "age": age_text(3600, language), "left": left_text(-600, language)}]}
    return {}


def sample_context(name: str, language: str) -> dict[str, Any]:
    """What ``maild check`` renders template ``name`` with for a reader of ``language``: the sample
    values with those the daemon words for that reader."""
    return {**SAMPLE_CONTEXTS.get(name, {}), **_worded(name, language)}


def _line(ok: bool | None, what: str, detail: str) -> bool:
    """One line per check, whatever the library's message looked like (libpq's span several)."""
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    print(f"{mark} {what}: {' '.join(detail.split())}")
    return ok is not False


def _info(what: str, detail: str) -> None:
    """A fact the operator may want to know that needs no action (never fails the check)."""
    print(f"info {what}: {' '.join(detail.split())}")


def _attempt(what: str, action: Callable[[], str]) -> bool:
    try:
        return _line(True, what, action())
    except (MaildError, OSError) as exc:
        return _line(False, what, str(exc))
    except Exception as exc:  # a check must report, whatever the library raised
        return _line(False, what, f"{type(exc).__name__}: {exc}")


def check_templates(renderer: Renderer, storage_path: Path | None = None) -> str:
    """Every mail template in both languages, and the statement's HTML words, rendered with
    sample values: a template that would fail when its mail is due fails here, by name.
    ``storage_path``: where the statement's compiled templates are kept (``check_statement_html``)."""
    names = renderer.names()
    for name in names:
        for language in LANGUAGES:
            try:
                renderer.render(name, language, sample_context(name, language))
            except RenderError as exc:
                raise RenderError(f"{exc} (rendered with maild check's sample values; this mail would "
                                  "fail the same way when it is due)") from None
    statement_pages = check_statement_html(renderer.path, storage_path)
    return f"{len(names)} templates{statement_pages} render in {', '.join(LANGUAGES)}"


def compiled_renderer(cfg: Config) -> Renderer:
    """The templates as the daemon loads them (a snapshot of the files), with the compiled copies the
    daemon keeps read where they match the sources (``CompiledTemplates``, never written here):
    compiling the 32 templates was a third of ``check``. Every template is still rendered."""
    from jinja2 import DictLoader

    renderer = Renderer(cfg.templates_path)
    renderer.env.loader = DictLoader(renderer.sources())
    renderer.env.bytecode_cache = CompiledTemplates(cache_folder(cfg.storage_path), renderer.env, write=False)
    return renderer


def check_statement_html(templates: Path, storage_path: Path | None = None) -> str:
    """The statement's HTML words (``<lang>/statement.html``) with the sample statement, no charts
    drawn (that needs matplotlib, which ``check`` does not load). With ``storage_path`` the compiled
    templates are kept there (``billing.html.keep_compiled``), written only when the storage folder
    is this user's: a check run as root leaves no file the daemon could not replace."""
    from maild.billing.html import keep_compiled, render_statement, statement_cache, statement_folders, statement_words

    folders = statement_folders(templates)
    if storage_path is not None:
        keep_compiled(folders, statement_cache(storage_path), write=_owned(storage_path))
    for language in LANGUAGES:
        try:
            statement_words(SAMPLE_CONTEXTS["statement"], language, folders)
            render_statement(SAMPLE_CONTEXTS["statement"], language, [], folders)
        except MaildError as exc:
            raise RenderError(f"{exc} (rendered with maild check's sample statement; the statements' "
                              "HTML part would fail the same way)") from None
    return " and the statement's HTML part"


def _owned(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.geteuid()
    except OSError:
        return False


def not_overridden(renderer: Renderer) -> str | None:
    """The templates an operator's ``templates_dir`` lacks, which go out in the packaged wording."""
    missing = renderer.not_overridden()
    if not missing:
        return None
    return (f"{renderer.path} does not override {len(missing)} templates, the packaged wording is used for: "
            f"{', '.join(missing)} (copy them from the packaged templates to change their wording)")


def run_checks(cfg: Config) -> int:
    ok = _line(True, "config", str(cfg.path))
    ok &= _attempt("calendar", lambda: _calendar(cfg))
    ok &= _attempt("customers", lambda: _customers(cfg))
    ok &= _attempt("storage", lambda: _storage(cfg))
    ok &= _attempt("database", lambda: _database(cfg))
    ok &= _attempt("templates", lambda: check_templates(compiled_renderer(cfg), cfg.storage_path))
    fallback = not_overridden(Renderer(cfg.templates_path))
    if fallback:
        _info("templates_dir", fallback)
    ok &= _attempt("mailbox", lambda: _mailbox(cfg))
    ok &= _attempt("smtp", lambda: asyncio.run(SmtpSender(cfg.smtp).check()))
    if not cfg.trusted_authserv_id:
        _line(None, "security", "[security] trusted_authserv_id is not set: the From header alone decides a "
              "sender's contract (spoofable)")
        if cfg.consultants:
            _line(None, "consultants", f"{len(cfg.consultants)} consultants are configured and [security] "
                  "trusted_authserv_id is not set: our server's DKIM/SPF verdict cannot back a consultant's "
                  "mail, so only replies to maild's own mail to them count; set it to your receiving "
                  "server's authserv-id")
    for warning in secret_warnings(cfg):
        _line(None, "secrets", warning)
    try:
        customers = load_customers(cfg.customers_file, cfg.packages)
    except MaildError:
        customers = ()
    for warning in rate_warnings(customers, cfg.billing.occasional_hourly_rate_cents):
        _line(None, "rates", warning)
    if cfg.billing.occasional_hourly_rate_cents is None:
        _line(None, "billing", "[billing] occasional_hourly_rate is not set: hours booked on unknown senders' "
              "tickets, and those no contract or customer's occasional_hourly_rate prices, are listed on the "
              "statements and reports at no price; set it to bill them")
    for warning in preference_warnings(customers, cfg):
        _line(None, "assignment", warning)
    return 0 if ok else 1


def preference_warnings(customers: Sequence[Customer], cfg: Config) -> list[str]:
    """Customers whose preferred ``consultant`` can never get their tickets: assignment passes over
    an address that is not a [[consultants]] entry of role "consultant" (managers are never assigned)."""
    assignable = {c.email.lower() for c in cfg.consultants if c.role == "consultant"}
    return [f"customer {c.id}: consultant = {c.consultant!r} in {cfg.customers_file} is not a [[consultants]] "
            f"entry with role \"consultant\" in {cfg.path}; their tickets are assigned by [assignment] mode"
            for c in customers if c.consultant and c.consultant.lower() not in assignable]


def rate_warnings(customers: Sequence[Customer], default_rate_cents: int | None) -> list[str]:
    """Occasional rates that undercut a package: buying hours would cost more than not buying them.

    The rate compared is the one that applies once the packages are used up: the
    package's own ``hourly_rate``, else the customer's ``occasional_hourly_rate``, else
    ``[billing] occasional_hourly_rate``.
    """
    warnings = []
    for customer in customers:
        fallback = customer.occasional_hourly_rate_cents
        fallback = default_rate_cents if fallback is None else fallback
        for contract in customer.contracts:
            if not rules_of(contract.kind).packages or not contract.price_cents or not contract.package_minutes:
                continue
            per_hour = contract.price_cents * 60 // contract.package_minutes
            rate = contract.hourly_rate_cents if contract.hourly_rate_cents is not None else fallback
            if rate is None:
                warnings.append(f"customer {customer.id}: no occasional rate for the hours after package "
                                f"{contract.id} (set [billing] occasional_hourly_rate or the customer's)")
            elif rate < per_hour:
                warnings.append(f"customer {customer.id}: occasional rate {format_money(rate, 'pl')} an hour is "
                                f"below package {contract.id}'s {format_money(per_hour, 'pl')} an hour")
    return warnings


def _calendar(cfg: Config) -> str:
    """The holiday settings, which loading the config leaves to whoever builds a calendar."""
    from maild.rules.calendar import BusinessCalendar
    from maild.storage.holiday_file import HolidayFile, holidays_file

    settings = cfg.calendar
    # the holidays the daemon kept for these settings and this version of the library were the
    # library's answer to them (read only: a check run as root leaves no file behind)
    BusinessCalendar(settings, HolidayFile(holidays_file(cfg.storage_path), write=False))
    holidays = (f"public holidays of {settings.holidays_country}"
                + (f"-{settings.holidays_subdiv}" if settings.holidays_subdiv else "")
                if settings.holidays_country else "no public holidays")
    return f"{settings.timezone}, {settings.opens:%H:%M}-{settings.closes:%H:%M}, {holidays}"


def _customers(cfg: Config) -> str:
    """The file as the daemon's start reads it: loaded, and held against the customers the database
    has (``removals_refused``), so a file the start would refuse fails here too."""
    customers = load_customers(cfg.customers_file, cfg.packages)
    refused = removals_refused(_active_customers(cfg), customers, cfg.customers_max_removed_percent,
                               str(cfg.customers_file))
    if refused is not None:
        raise refused
    return f"{len(customers)} customers in {cfg.customers_file}"


def _active_customers(cfg: Config) -> set[str]:
    """The active customers in the database; none when it does not exist yet, is not migrated or cannot
    be reached (the database line says which)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(cfg.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return set()
    try:
        engine = make_engine(cfg.database_url)
    except MaildError:
        return set()
    try:
        with engine.connect() as conn:  # plain SQL: the tables' module costs a check ~50 ms of CPU to import
            return set(conn.scalars(text("SELECT id FROM customers WHERE active")))
    except SQLAlchemyError:  # no such table yet: the first run migrates it
        return set()
    finally:
        engine.dispose()


def _storage(cfg: Config) -> str:
    BlobStore(cfg.storage_path, durable=False).check_writable()
    return f"{cfg.storage_path} is writable"


def _database(cfg: Config) -> str:
    url = make_url(cfg.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return f"{safe_url(cfg.database_url)} does not exist yet; it will be created on first use"
    current, head = migration_state(make_engine(cfg.database_url))
    state = "up to date" if current == head else f"at {current or 'empty'}, will migrate to {head}"
    return f"{safe_url(cfg.database_url)} reachable, schema {state}"


def _mailbox(cfg: Config) -> str:
    source = open_source(cfg.source)
    try:
        source.connect()
        caps = source.capabilities()
    finally:
        source.close()
    offered = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in sorted(caps.items()))
    if isinstance(cfg.source, ImapSettings):
        s = cfg.source
        return f"{s.username}@{s.host}:{s.port} ({s.security}), folder {s.folder}; {offered}"
    return f"Maildir {cfg.source.path}; {offered}"
