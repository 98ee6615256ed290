"""The TOML config: read once, checked whole, returned as frozen dataclasses.

Every key is documented with its default in ``config/maild.example.toml``. A
bad value stops maild before it does anything, with the file, the key path and
the reason (``ConfigError``). Unknown keys are errors too: a typo must not fall
back to a default silently. Stage settings (calendar, screen, thread, ...) are
the stages' own dataclasses, built here so the stages never read files.
"""
from __future__ import annotations

import difflib
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from maild.rules.calendar import CalendarSettings
from maild.rules.customers import PackageSettings
from maild.errors import ConfigError
from maild.rules.assignment import MODES
from maild.rules.assignment import Mode as AssignmentMode
from maild.rules.presence import Absence, AbsenceError, parse_weekdays
from maild.rules.peak import PeakWindow, default_peak_windows, windows_from_config
from maild.rules.sla import EscalationConfigError, EscalationSettings, escalation_levels

DEFAULT_URGENT_WORDS: tuple[str, ...] = (
    "pilne", "pilny", "pilna", "pilnie", "awaria", "nie działa", "nie dziala", "krytyczn",
    "zatrzymana produkcja", "stoi produkcja", "urgent", "asap", "critical", "emergency",
    "not working", "system down", "outage",
)
WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
Role = Literal["consultant", "manager"]


Security = Literal["tls", "starttls", "none"]


# The settings of the mail source, the parser and the relay live here, not in
# their modules, so loading the config imports neither imapclient nor the SMTP client.

@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: Literal["tls", "starttls", "none"]
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    done_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    idle: bool = True
    poll_seconds: int = 60
    timeout_seconds: int = 30
    # well under the 29 min RFC 2177 limit and typical NAT idle timeouts
    idle_renew_seconds: int = 540
    # an extra CA for self-signed servers; the system CAs are trusted either way
    cafile: str | None = None


@dataclass(frozen=True)
class MaildirSettings:
    path: str
    done_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    poll_seconds: int = 5


@dataclass(frozen=True)
class ParseLimits:
    max_message_bytes: int = 25 * 1024 * 1024
    max_attachments: int = 100
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_parts: int = 1000
    max_depth: int = 20
    max_header_bytes: int = 256 * 1024
    max_text_chars: int = 1_000_000


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: int = 30
    cafile: str | None = None
    local_hostname: str | None = None


@dataclass(frozen=True)
class Consultant:
    email: str
    name: str
    role: Role = "consultant"
    language: str = "pl"
    # None: the business calendar's working days.
    days: frozenset[int] | None = None
    away: tuple[Absence, ...] = ()


@dataclass(frozen=True)
class SupportSettings:
    address: str
    ticket_prefix: str = "SUP"
    default_language: str = "pl"
    urgent_words: tuple[str, ...] = DEFAULT_URGENT_WORDS
    reopen_days: int = 7
    close_after_days: int = 7
    max_auto_replies_per_hour: int = 5
    # plus-addresses of one mailbox (victim+1@, victim+2@) and many mailboxes of one
    # domain: a forged From must not make us mail a victim or a domain without end
    max_auto_replies_per_domain_per_hour: int = 30
    autoreply_max_age: timedelta = timedelta(days=3)
    instance_id: str = "maild"
    # a new ticket's participants (copied on every answer): a customer mail with 998
    # recipients made the next answer go to 999 addresses
    max_participants: int = 10
    # the #time lines of one mail together: 5,000 lines booked 120,000 h
    max_time_per_mail_minutes: int = 24 * 60


@dataclass(frozen=True)
class LedgerSettings:
    low_balance_minutes: int = 60
    occasional_unit_minutes: int = 15
    # one mail per package that still has hours this many days before it expires
    expiry_reminder_days: int = 14


@dataclass(frozen=True)
class BillingSettings:
    """Money on statements: VAT on top of net amounts, and the rate for hours no contract prices."""

    vat_percent: int = 23
    occasional_hourly_rate_cents: int | None = None


@dataclass(frozen=True)
class RetentionSettings:
    """How long closed tickets keep their raw mail and their texts; 0 keeps them forever (the default)."""

    raw_mail_months: int = 0
    closed_ticket_years: int = 0


@dataclass(frozen=True)
class HealthSettings:
    fetch_stale: timedelta = timedelta(minutes=30)
    outbox_stale: timedelta = timedelta(minutes=30)


@dataclass(frozen=True)
class DaemonSettings:
    """The loop's pacing: how often a full cycle runs, how fast it backs off a fault."""

    cycle_seconds: int = 60
    # A backlog is worked in slices of about this long, reading, sweeping and
    # sending in turn: a 100,000-mail backlog after an outage neither holds the
    # first customer's acknowledgement nor starves escalations, and a slow relay
    # with a long outbox does not keep the mailbox from being read.
    slice_seconds: int = 30
    retry_min_seconds: int = 1
    retry_max_seconds: int = 60
    smtp_retry_base_seconds: int = 30
    # On PostgreSQL, how soon another daemon reads the mailbox when its reader is
    # gone: a standby tries the mailbox lock at least this often, and the lock's
    # database session is dropped by the server this long after the reader's
    # host went silent (TCP keepalive), not the kernel's two hours.
    takeover_seconds: int = 10
    # While a backlog is read, a forked courier sends the committed outbox rows
    # (maild/outbound/courier.py), so the cycle takes about the longer of reading and
    # sending instead of their sum; on PostgreSQL (SQLite has one writer at a time: there the courier
    # sends a rest under outbound.courier.SQLITE_TWO_AFTER_READING_FROM mails before the reading's end,
    # and two couriers send a larger one, from SQLITE_COURIERS_FROM mails).
    send_while_reading: bool = True


@dataclass(frozen=True)
class NotificationSettings:
    """Mail to consultants: which events, the morning digest, how much attachment travels."""

    enabled: bool = True
    new_ticket: bool = True
    customer_reply: bool = True
    digest_at: time | None = time(8)
    managers_get_new: bool = False
    attach_max_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True)
class AssignmentSettings:
    """Who gets a new ticket when nobody types ``#assign``."""

    mode: AssignmentMode = "least_loaded"


@dataclass(frozen=True)
class Config:
    path: Path
    database_url: str
    storage_path: Path
    source: ImapSettings | MaildirSettings
    smtp: SmtpSettings
    from_address: str
    from_name: str
    support: SupportSettings
    consultants: tuple[Consultant, ...]
    customers_file: Path
    calendar: CalendarSettings
    escalation: EscalationSettings
    peak_windows: tuple[PeakWindow, ...]
    packages: PackageSettings
    ledger: LedgerSettings
    limits: ParseLimits
    trusted_authserv_id: str | None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_listen: str | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    batch_size: int = 500
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    assignment: AssignmentSettings = field(default_factory=AssignmentSettings)
    # a message still being parsed after this long has its parse worker killed
    # (the attempt counts; quarantined after three)
    parse_timeout_seconds: int = 30
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    # a customers file that would remove more than this share of the customers is
    # refused (a truncated file marked every contract removed); see contracts sync
    customers_max_removed_percent: int = 20
    # (key, file) of every password: its own file, or this config for an inline one;
    # ``secret_warnings`` says which of them others can read
    secret_files: tuple[tuple[str, Path], ...] = ()

    @property
    def consultant_emails(self) -> frozenset[str]:
        return frozenset(c.email for c in self.consultants)

    @property
    def managers(self) -> tuple[Consultant, ...]:
        return tuple(c for c in self.consultants if c.role == "manager")

    templates_dir: Path | None = None

    @property
    def templates_path(self) -> Path:
        """``templates_dir`` when set (an operator's own wording), else the bundled templates."""
        return self.templates_dir or Path(__file__).resolve().parent / "templates"


class _Section:
    """Typed access to one TOML table that remembers which keys were read."""

    def __init__(self, file: str, prefix: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, prefix, f"must be a table, not {type(data).__name__}")
        self.file, self.prefix, self.data = file, prefix, data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), reason)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if required:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.error(name, f"must be a number, not {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(name, f"must be {names}, not {type(value).__name__} {value!r}")
        return value

    def text(self, name: str, default: str | None = None, required: bool = False) -> str:
        value = self.get(name, str, default, required)
        return value  # type: ignore[no-any-return]

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value: int = self.get(name, int, default)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self.error(name, f"must be {bound}, not {value}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        return bool(self.get(name, bool, default))

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(self.file, f"{self.key(name)}[{i}]", f"must be a string, not {item!r}")
        return tuple(value)

    def secret(self, name: str, base_dir: Path, required: bool) -> str | None:
        """``name``, ``name_file`` or ``name_env``: exactly one; the value never appears in errors."""
        given = [k for k in (name, f"{name}_file", f"{name}_env") if k in self.data]
        self.seen.update((name, f"{name}_file", f"{name}_env"))
        if len(given) > 1:
            raise self.error(name, f"set only one of {', '.join(given)}")
        if not given:
            if required:
                raise self.error(name, f"is required (as {name}, {name}_file or {name}_env)")
            return None
        key = given[0]
        raw = self.data[key]
        if not isinstance(raw, str) or not raw:
            raise self.error(key, "must be a non-empty string")
        if key.endswith("_file"):
            path = _resolve_path(raw, base_dir)
            try:
                secret = path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise self.error(key, f"cannot read {path}: {exc.strerror}") from None
            if not secret:  # as ``maild setup`` leaves it
                raise self.error(key, f"{path} is empty: write the password into it "
                                      f"(printf '%s' 'the password' > {path}; chmod 0600 {path})")
            return secret
        if key.endswith("_env"):
            if raw not in os.environ:
                raise self.error(key, f"environment variable {raw} is not set")
            if not os.environ[raw]:
                raise self.error(key, f"environment variable {raw} is empty")
            return os.environ[raw]
        return raw

    def done(self) -> None:
        """Refuse a key nobody read, naming the keys this table takes (every key read is one)."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], f"unknown key{_did_you_mean(unknown[0], self.seen)} "
                                         f"(allowed here: {', '.join(sorted(self.seen))})")


# The top level of maild.toml: its tables and its plain keys. Checked before any
# table is read, so a misspelt table ([smtpp]) is named as such instead of being
# reported as the correct table's first missing required key.
TOP_SECTIONS: tuple[str, ...] = (
    "storage", "database", "imap", "maildir", "smtp", "support", "consultants", "calendar", "escalation",
    "peak", "packages", "billing", "limits", "security", "logging", "metrics", "health", "daemon", "notifications", "assignment",
    "retention",
)
TOP_KEYS: tuple[str, ...] = ("customers_file", "customers_max_removed_percent", "templates_dir", "batch_size")


def _did_you_mean(name: str, choices: set[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _weekdays(c: _Section, name: str) -> frozenset[int] | None:
    """A consultant's own working days, ``["mon", "tue", ...]``; absent means the calendar's."""
    if name not in c.data:
        c.seen.add(name)
        return None
    try:
        return parse_weekdays(c.strings(name))
    except AbsenceError as exc:
        raise c.error(name, str(exc)) from exc


def _absences(c: _Section, name: str) -> tuple[Absence, ...]:
    """``away = [{ from = 2026-12-21, until = 2027-01-03, note = "..." }]`` (dates inclusive)."""
    out = []
    for i, raw in enumerate(c.get(name, list, [])):
        entry = _Section(c.file, f"{c.key(name)}[{i}]", raw)
        start, until = entry.get("from", date, required=True), entry.get("until", date, required=True)
        if isinstance(start, datetime) or isinstance(until, datetime):
            raise entry.error("from", "give dates (2026-12-21), not times")
        try:
            out.append(Absence(start, until, entry.text("note", ""), "config"))
        except AbsenceError as exc:
            raise entry.error("until", str(exc)) from exc
        entry.done()
    return tuple(out)


def _check_top_level(file: str, data: dict[str, Any]) -> None:
    for name in sorted(set(data) - set(TOP_SECTIONS) - set(TOP_KEYS)):
        value = data[name]
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            shown = f"[{name}]" if isinstance(value, dict) else f"[[{name}]]"
            close = difflib.get_close_matches(name, TOP_SECTIONS, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(file, shown, f"unknown section{hint} (sections: {', '.join(TOP_SECTIONS)})")
        raise ConfigError(file, name, f"unknown key{_did_you_mean(name, TOP_KEYS)} (allowed at the top, before "
                                      f"any [section]: {', '.join(TOP_KEYS)})")


CREDENTIALS_VARIABLE = "CREDENTIALS_DIRECTORY"
CREDENTIALS_FALLBACK = "credentials"
_CREDENTIALS_REF = re.compile(r"\$(?:CREDENTIALS_DIRECTORY\b|\{CREDENTIALS_DIRECTORY\})")


def credentials_directory(base_dir: Path) -> Path:
    """Where ``$CREDENTIALS_DIRECTORY`` points: systemd's copy under the unit, else ``credentials/`` by the config.

    The unit hands the daemon its passwords with ``LoadCredential=``, which sets
    the variable; an operator's shell (``maild check``, ``db upgrade``) does not
    have it, and reads the same files from where ``LoadCredential=`` takes them:
    the ``credentials`` folder next to the config file.
    """
    given = os.environ.get(CREDENTIALS_VARIABLE)
    return Path(given) if given else base_dir / CREDENTIALS_FALLBACK


def _resolve_path(value: str, base_dir: Path) -> Path:
    """Relative paths are relative to the config file; ``$CREDENTIALS_DIRECTORY``, other variables and ``~`` expand."""
    value = _CREDENTIALS_REF.sub(lambda _: str(credentials_directory(base_dir)), value)
    expanded = os.path.expandvars(os.path.expanduser(value))
    path = Path(expanded)
    return path if path.is_absolute() else (base_dir / path)


def _email(section: _Section, name: str, value: str) -> str:
    if not EMAIL_RE.match(value):
        raise section.error(name, f"not an e-mail address: {value!r}")
    return value.lower()


def _clock(section: _Section, name: str, default: time) -> time:
    value = section.text(name, default.strftime("%H:%M"))
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise section.error(name, f"must be a time like \"08:00\", not {value!r}") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    cfg_path = Path(path)
    file = str(cfg_path)
    try:
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    return parse_config(data, cfg_path)


def parse_config(data: dict[str, Any], cfg_path: Path) -> Config:
    """The whole config, section by section (one small parser each, below), in the order
    a first error is reported; every key a section does not know is an error (``done``)."""
    file = str(cfg_path)
    base = cfg_path.resolve().parent
    _check_top_level(file, data)
    top = _Section(file, "", data)
    storage_path = _storage_path(top, file, base)
    url = _database_url(top, file, storage_path)
    source = _source(data, top, file, base)
    smtp, from_address, from_name = _smtp(top, file, base)
    support = _support(top, file)
    consultants = _consultants(top, file, support)
    customers_file = _resolve_path(top.text("customers_file", "customers.toml"), base)
    customers_max_removed_percent = top.integer("customers_max_removed_percent", 20, 0, 100)
    templates_text = top.text("templates_dir", "")
    templates_dir = _resolve_path(templates_text, base) if templates_text else None
    if templates_dir is not None and not (templates_dir / "en").is_dir():
        raise top.error("templates_dir", f"{templates_dir} has no en/ folder of templates")
    calendar = _calendar(top, file)
    escalation = _escalation_section(top, file)
    windows = _peak(top, file)
    packages, ledger = _packages(top, file)
    billing = _billing(top, file)
    limits, parse_timeout = _limits(top, file)
    assignment = _assignment(top, file)
    notifications = _notifications(top, file, limits)
    authserv = _security(top, file)
    log_level, log_format = _logging(top, file)
    listen = _metrics(top, file)
    health = _health(top, file)
    retention = _retention(top, file)
    daemon = _daemon(top, file)
    batch_size = top.integer("batch_size", 500, 1, 10000)
    top.done()

    return Config(
        path=cfg_path, database_url=url, storage_path=storage_path, source=source, smtp=smtp,
        from_address=from_address, from_name=from_name, support=support,
        consultants=tuple(consultants), customers_file=customers_file,
        customers_max_removed_percent=customers_max_removed_percent, secret_files=_secret_files(data, base, cfg_path),
        calendar=calendar,
        escalation=escalation, peak_windows=windows, packages=packages, ledger=ledger,
        limits=limits, trusted_authserv_id=authserv, log_level=log_level,
        log_format=log_format,  # type: ignore[arg-type]
        metrics_listen=listen, health=health, batch_size=batch_size,
        templates_dir=templates_dir, daemon=daemon, notifications=notifications, assignment=assignment,
        billing=billing,
        parse_timeout_seconds=parse_timeout,
        retention=retention,
    )


# ------------------------------------------------------------------ one parser per section


def _storage_path(top: _Section, file: str, base: Path) -> Path:
    storage = _Section(file, "storage", top.get("storage", dict, {}))
    storage_path = _resolve_path(storage.text("path", "/var/lib/maild"), base)
    storage.done()
    return storage_path


def _database_url(top: _Section, file: str, storage_path: Path) -> str:
    database = _Section(file, "database", top.get("database", dict, {}))
    url = database.text("url", "") or f"sqlite:///{storage_path / 'maild.db'}"
    database.done()
    _usable_database(database, url)
    return url


def _usable_database(database: _Section, url: str) -> None:
    """SQLite, or PostgreSQL through psycopg (3), whose COPY and prepared marks maild uses: another
    URL, or a PostgreSQL one without the driver installed, ended each command in a traceback."""
    scheme = url.partition("://")[0] if "://" in url else ""
    backend, _, driver = scheme.partition("+")
    if backend == "sqlite":
        return
    if backend != "postgresql":
        raise database.error("url", "maild keeps its data in SQLite (leave url empty, or "
                                    "\"sqlite:////var/lib/maild/maild.db\") or PostgreSQL "
                                    f"(\"postgresql+psycopg://maild@localhost/maild\"), not {scheme or url!r}")
    if driver != "psycopg":
        raise database.error("url", f"PostgreSQL through the psycopg driver: write {'postgresql+psycopg://'!r} "
                                    f"instead of {scheme + '://'!r}")
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        raise database.error("url", "PostgreSQL needs the psycopg driver, which is not installed: "
                                    f"{sys.prefix}/bin/pip install 'maild[postgres]' (with the extras you "
                                    "installed, e.g. 'maild[metrics,postgres]')")


def _source(data: dict[str, Any], top: _Section, file: str, base: Path) -> ImapSettings | MaildirSettings:
    has_imap, has_maildir = "imap" in data, "maildir" in data
    if has_imap == has_maildir:
        raise ConfigError(file, "imap", "configure exactly one source: [imap] or [maildir]")
    source: ImapSettings | MaildirSettings
    if has_imap:
        imap = _Section(file, "imap", top.get("imap", dict))
        security = imap.choice("security", ("tls", "starttls", "none"), "tls")
        source = ImapSettings(
            host=imap.text("host", required=True),
            port=imap.integer("port", 993 if security == "tls" else 143, 1, 65535),
            security=security,  # type: ignore[arg-type]
            username=imap.text("username", required=True),
            password=imap.secret("password", base, required=True) or "",
            folder=imap.text("folder", "INBOX"),
            done_folder=imap.text("done_folder", "Processed"),
            quarantine_folder=imap.text("quarantine_folder", "Quarantine"),
            idle=imap.flag("idle", True),
            poll_seconds=imap.integer("poll_seconds", 60, 1),
            timeout_seconds=imap.integer("timeout_seconds", 30, 1),
            idle_renew_seconds=imap.integer("idle_renew_seconds", 540, 30, 1740),
            cafile=_opt_path(imap, "cafile", base),
        )
        if source.folder in (source.done_folder, source.quarantine_folder):
            raise imap.error("done_folder", "must differ from folder, or processed mail would be read again")
        imap.done()
    else:
        maildir = _Section(file, "maildir", top.get("maildir", dict))
        source = MaildirSettings(
            path=str(_resolve_path(maildir.text("path", required=True), base)),
            done_folder=maildir.text("done_folder", "Processed"),
            quarantine_folder=maildir.text("quarantine_folder", "Quarantine"),
            poll_seconds=maildir.integer("poll_seconds", 5, 1),
        )
        maildir.done()
    return source


def _smtp(top: _Section, file: str, base: Path) -> tuple[SmtpSettings, str, str]:
    smtp_s = _Section(file, "smtp", top.get("smtp", dict, {}))
    smtp_security = smtp_s.choice("security", ("tls", "starttls", "none"), "starttls")
    username = smtp_s.text("username", None)
    smtp = SmtpSettings(
        host=smtp_s.text("host", required=True),
        port=smtp_s.integer("port", {"tls": 465, "starttls": 587, "none": 25}[smtp_security], 1, 65535),
        security=smtp_security,  # type: ignore[arg-type]
        username=username,
        password=smtp_s.secret("password", base, required=username is not None),
        timeout_seconds=smtp_s.integer("timeout_seconds", 30, 1),
        cafile=_opt_path(smtp_s, "cafile", base),
    )
    from_address = _email(smtp_s, "from_address", smtp_s.text("from_address", required=True))
    from_name = smtp_s.text("from_name", "Support")
    smtp_s.done()
    return smtp, from_address, from_name


def _support(top: _Section, file: str) -> SupportSettings:
    sup = _Section(file, "support", top.get("support", dict))
    prefix = sup.text("ticket_prefix", "SUP")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,15}", prefix):
        raise sup.error("ticket_prefix", f"must be letters and digits, starting with a letter, up to 16: {prefix!r}")
    language = sup.choice("default_language", ("pl", "en"), "pl")
    support = SupportSettings(
        address=_email(sup, "address", sup.text("address", required=True)),
        ticket_prefix=prefix.upper(),
        default_language=language,
        urgent_words=tuple(w.casefold() for w in sup.strings("urgent_words", DEFAULT_URGENT_WORDS)),
        reopen_days=sup.integer("reopen_days", 7, 0),
        close_after_days=sup.integer("close_after_days", 7, 0),
        max_auto_replies_per_hour=sup.integer("max_auto_replies_per_hour", 5, 0),
        max_auto_replies_per_domain_per_hour=sup.integer("max_auto_replies_per_domain_per_hour", 30, 0),
        max_participants=sup.integer("max_participants", 10, 1, 1000),
        max_time_per_mail_minutes=sup.integer("max_time_per_mail_hours", 24, 1, 24 * 366) * 60,
        autoreply_max_age=timedelta(days=sup.integer("autoreply_max_age_days", 3, 0)),
        instance_id=sup.text("instance_id", "maild"),
    )
    sup.done()
    return support


def _consultants(top: _Section, file: str, support: SupportSettings) -> tuple[Consultant, ...]:
    consultants = []
    raw_consultants = top.get("consultants", list, [])
    seen_emails: set[str] = set()
    for i, raw in enumerate(raw_consultants):
        c = _Section(file, f"consultants[{i}]", raw)
        email = _email(c, "email", c.text("email", required=True))
        if email in seen_emails:
            raise c.error("email", f"{email} is listed twice")
        if email == support.address:
            raise c.error("email", "a consultant cannot use the support address")
        seen_emails.add(email)
        consultants.append(Consultant(
            email=email,
            name=c.text("name", email),
            role=c.choice("role", ("consultant", "manager"), "consultant"),  # type: ignore[arg-type]
            language=c.choice("language", ("pl", "en"), support.default_language),
            days=_weekdays(c, "days"),
            away=_absences(c, "away"),
        ))
        c.done()
    return tuple(consultants)


def _calendar(top: _Section, file: str) -> CalendarSettings:
    cal = _Section(file, "calendar", top.get("calendar", dict, {}))
    days = cal.strings("working_days", ("mon", "tue", "wed", "thu", "fri"))
    for i, d in enumerate(days):
        if d.lower() not in WEEKDAYS:
            raise ConfigError(file, f"calendar.working_days[{i}]", f"must be one of {', '.join(WEEKDAYS)}, not {d!r}")
    calendar = CalendarSettings(
        timezone=cal.text("timezone", "Europe/Warsaw"),
        working_days=tuple(sorted({WEEKDAYS[d.lower()] for d in days})),
        opens=_clock(cal, "opens", time(8)),
        closes=_clock(cal, "closes", time(16)),
        holidays_country=cal.text("holidays_country", "PL") or None,
        holidays_subdiv=cal.text("holidays_subdiv", None),
        closed_days=_dates(cal, "closed_days"),
        open_days=_dates(cal, "open_days"),
    )
    cal.done()
    _check_calendar(file, calendar)
    return calendar


def _escalation_section(top: _Section, file: str) -> EscalationSettings:
    esc = _Section(file, "escalation", top.get("escalation", dict, {}))
    thresholds = esc.get("thresholds", list, [0.5, 0.8, 1.0])
    recipients = esc.strings("recipients", ("consultants", "managers", "managers+breach"))
    outside_hours: Literal["hold", "send"] = esc.choice("outside_hours", ("hold", "send"), "hold")  # type: ignore[assignment]
    escalation = replace(_escalation(file, thresholds, recipients), outside_hours=outside_hours)
    esc.done()
    return escalation


def _peak(top: _Section, file: str) -> tuple[PeakWindow, ...]:
    peak = _Section(file, "peak", top.get("peak", dict, {}))
    if peak.flag("enabled", True):
        raw_windows = peak.get("windows", list, None)
        try:
            windows = default_peak_windows() if raw_windows is None else windows_from_config(raw_windows)
        except ValueError as exc:
            raise _stage_error(file, "peak.windows", exc) from None
    else:
        peak.seen.add("windows")
        windows = ()
    peak.done()
    return tuple(windows)


def _packages(top: _Section, file: str) -> tuple[PackageSettings, LedgerSettings]:
    pk = _Section(file, "packages", top.get("packages", dict, {}))
    sizes = pk.get("sizes", list, [4, 7, 10, 15])
    validity = pk.get("validity_months", dict, {"4": 3, "7": 4, "10": 6, "15": 12})
    try:
        packages = PackageSettings(
            sizes_hours=tuple(int(s) for s in sizes),
            validity_months={int(k): int(v) for k, v in validity.items()},
        )
    except (TypeError, ValueError):
        raise pk.error("validity_months", "sizes and months must be whole numbers, e.g. { 4 = 3, 7 = 4 }") from None
    for size in packages.sizes_hours:
        if size not in packages.validity_months:
            raise pk.error("validity_months", f"no validity given for the {size} h package")
    ledger = LedgerSettings(
        low_balance_minutes=_minutes(pk, "low_balance_hours", Decimal(1)),
        occasional_unit_minutes=pk.integer("occasional_unit_minutes", 15, 1, 600),
        expiry_reminder_days=pk.integer("expiry_reminder_days", 14, 0, 366),
    )
    pk.done()
    return packages, ledger


def _billing(top: _Section, file: str) -> BillingSettings:
    bl = _Section(file, "billing", top.get("billing", dict, {}))
    rate_text = bl.get("occasional_hourly_rate", (int, float), None)
    billing = BillingSettings(
        vat_percent=bl.integer("vat_percent", 23, 0, 100),
        occasional_hourly_rate_cents=None if rate_text is None else _grosze(bl, "occasional_hourly_rate", rate_text),
    )
    bl.done()
    return billing


def _limits(top: _Section, file: str) -> tuple[ParseLimits, int]:
    lim = _Section(file, "limits", top.get("limits", dict, {}))
    max_mb = lim.integer("max_message_mb", 25, 1, 2048)
    limits = ParseLimits(
        max_message_bytes=max_mb * 1024 * 1024,
        max_attachments=lim.integer("max_attachments", 100, 0),
        max_attachment_bytes=lim.integer("max_attachment_mb", max_mb, 1, 2048) * 1024 * 1024,
    )
    parse_timeout = lim.integer("parse_timeout_seconds", 30, 1, 3600)
    lim.done()
    return limits, parse_timeout


def _assignment(top: _Section, file: str) -> AssignmentSettings:
    asg = _Section(file, "assignment", top.get("assignment", dict, {}))
    assignment = AssignmentSettings(mode=asg.choice("mode", MODES, "least_loaded"))  # type: ignore[arg-type]
    asg.done()
    return assignment


def _notifications(top: _Section, file: str, limits: ParseLimits) -> NotificationSettings:
    nt = _Section(file, "notifications", top.get("notifications", dict, {}))
    digest_text = nt.text("digest_at", "08:00")
    digest_at = _clock(nt, "digest_at", time(8)) if digest_text else None
    notifications = NotificationSettings(
        enabled=nt.flag("enabled", True),
        new_ticket=nt.flag("new_ticket", True),
        customer_reply=nt.flag("customer_reply", True),
        digest_at=digest_at,
        managers_get_new=nt.flag("managers_get_new", False),
        attach_max_bytes=nt.integer("attach_max_mb", limits.max_attachment_bytes // (1024 * 1024), 0, 2048)
        * 1024 * 1024,
    )
    nt.done()
    return notifications


def _security(top: _Section, file: str) -> str | None:
    sec = _Section(file, "security", top.get("security", dict, {}))
    authserv = sec.text("trusted_authserv_id", "") or None
    sec.done()
    return authserv


def _logging(top: _Section, file: str) -> tuple[str, str]:
    lg = _Section(file, "logging", top.get("logging", dict, {}))
    log_level = lg.choice("level", ("debug", "info", "warning", "error"), "info")
    log_format = lg.choice("format", ("text", "json"), "text")
    lg.done()
    return log_level, log_format


def _metrics(top: _Section, file: str) -> str | None:
    mt = _Section(file, "metrics", top.get("metrics", dict, {}))
    listen = mt.text("listen", "") or None
    if listen is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", listen):
        raise mt.error("listen", f"must be host:port like \"127.0.0.1:9464\", not {listen!r}")
    mt.done()
    return listen


def _health(top: _Section, file: str) -> HealthSettings:
    hl = _Section(file, "health", top.get("health", dict, {}))
    health = HealthSettings(
        fetch_stale=timedelta(minutes=hl.integer("fetch_stale_minutes", 30, 1)),
        outbox_stale=timedelta(minutes=hl.integer("outbox_stale_minutes", 30, 1)),
    )
    hl.done()
    return health


def _retention(top: _Section, file: str) -> RetentionSettings:
    rt = _Section(file, "retention", top.get("retention", dict, {}))
    retention = RetentionSettings(
        raw_mail_months=rt.integer("raw_mail_months", 0, 0, 1200),
        closed_ticket_years=rt.integer("closed_ticket_years", 0, 0, 100),
    )
    rt.done()
    return retention


def _daemon(top: _Section, file: str) -> DaemonSettings:
    dm = _Section(file, "daemon", top.get("daemon", dict, {}))
    retry_min = dm.integer("retry_min_seconds", 1, 1, 3600)
    daemon = DaemonSettings(
        cycle_seconds=dm.integer("cycle_seconds", 60, 1, 3600),
        slice_seconds=dm.integer("slice_seconds", 30, 1, 3600),
        retry_min_seconds=retry_min,
        retry_max_seconds=dm.integer("retry_max_seconds", 60, retry_min, 3600),
        smtp_retry_base_seconds=dm.integer("smtp_retry_base_seconds", 30, 1, 3600),
        takeover_seconds=dm.integer("takeover_seconds", 10, 2, 300),
        send_while_reading=dm.flag("send_while_reading", True),
    )
    dm.done()
    return daemon


def _grosze(section: _Section, name: str, value: int | float) -> int:
    """A money amount as exact grosze: 250.50 -> 25050; more than two decimals is refused."""
    scaled = Decimal(str(value)) * 100
    if scaled < 0 or scaled != scaled.to_integral_value():
        raise section.error(name, f"must be an amount in PLN with at most 2 decimals, not {value!r}")
    return int(scaled)


def _secret_files(data: dict[str, Any], base: Path, cfg_path: Path) -> tuple[tuple[str, Path], ...]:
    """Where each password the config uses is kept (already checked by ``secret``)."""
    found: list[tuple[str, Path]] = []
    for table in ("imap", "smtp"):
        section = data.get(table)
        if not isinstance(section, dict):
            continue
        if isinstance(section.get("password_file"), str):
            found.append((f"{table}.password_file", _resolve_path(section["password_file"], base)))
        elif isinstance(section.get("password"), str):
            found.append((f"{table}.password", cfg_path))
    return tuple(found)


def secret_warnings(cfg: Config) -> list[str]:
    """One line per password that users other than its owner can read (as ssh refuses a
    private key others can read): the password file, or the config holding it inline."""
    warnings: list[str] = []
    for key, path in cfg.secret_files:
        inline = not key.endswith("_file")
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue  # an unreadable file was already a config error
        if mode & 0o077:
            what = "the password is inline in the config" if inline else "the password file"
            warnings.append(f"{key}: {what} {path} is readable by others (mode {mode:04o}); chmod 0600 {path}"
                            + (" or move the password to password_file" if inline else ""))
    return warnings


def _opt_path(section: _Section, name: str, base: Path) -> str | None:
    value = section.text(name, None)
    return None if value is None else str(_resolve_path(value, base))


def _dates(section: _Section, name: str) -> tuple[date, ...]:
    values = section.get(name, list, [])
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, date):
            raise ConfigError(section.file, f"{section.key(name)}[{i}]", f"must be a TOML date like 2026-12-31, not {v!r}")
        out.append(v)
    return tuple(out)


def _minutes(section: _Section, name: str, default: Decimal) -> int:
    value = section.get(name, (int, float), None)
    hours = default if value is None else Decimal(str(value))
    minutes = hours * 60
    if minutes != minutes.to_integral_value() or minutes < 0:
        raise section.error(name, f"must be a non-negative number of whole minutes, not {value!r} h")
    return int(minutes)


def _check_calendar(file: str, settings: CalendarSettings) -> None:
    """The calendar's own checks; the holiday settings are checked where a calendar is built
    (``desk.context.DeskContext.for_config``, ``maild check``), so that reading a config does not
    load every country's holiday tables."""
    from maild.rules.calendar import CalendarError, check_settings

    try:
        check_settings(settings)
    except CalendarError as exc:
        raise _stage_error(file, "calendar", exc) from None


def _stage_error(file: str, key: str, exc: Exception) -> ConfigError:
    """A stage's own check as a ConfigError; the stage already names the key ("calendar.timezone: ...").

    Prefixing ``key`` again gave "calendar: calendar.timezone: ...".
    """
    named, sep, reason = str(exc).partition(": ")
    section = key.split(".")[0]
    if sep and (named == section or named.startswith((f"{section}.", f"{section}["))):
        return ConfigError(file, named, reason)
    return ConfigError(file, key, str(exc))


def _escalation(file: str, thresholds: list[Any], recipients: tuple[str, ...]) -> EscalationSettings:
    try:
        return escalation_levels(thresholds, recipients)
    except EscalationConfigError as exc:
        raise _stage_error(file, "escalation", exc) from None
