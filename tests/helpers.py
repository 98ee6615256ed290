"""Building real config files and mail for tests."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

CUSTOMERS = """\
[[customers]]
id = "acme"
name = "Acme"
language = "pl"
domains = ["acme.pl"]
billing_address = "faktury@acme.pl"

  [[customers.contracts]]
  id = "acme-sla"
  kind = "sla"
  start = 2020-01-01
  reaction_hours = 24
  monthly_hours = 10
  hourly_rate = 200

[[customers]]
id = "nord"
name = "Nord AS"
language = "en"
addresses = ["kari@nord.no"]
billing_address = "kari@nord.no"

  [[customers.contracts]]
  id = "nord-p4"
  kind = "prepaid"
  start = 2020-01-01
  hours = 4
  valid_until = 2099-12-31
  hourly_rate = 200

[[customers]]
id = "kow"
name = "Kowalski"
language = "pl"
addresses = ["biuro@kowalski.pl"]

  [[customers.contracts]]
  id = "kow-occ"
  kind = "occasional"
  start = 2020-01-01
  hourly_rate = 250
"""


_compiled_templates: Path | None = None


def compiled_templates() -> Path:
    """The packaged templates compiled once per test process: a template cache as a daemon leaves it.

    Compiling the 32 templates costs ~0.13 s of CPU, and each test starts from a fresh storage
    folder, so every test that starts a daemon paid it (a few hundred of them)."""
    global _compiled_templates
    if _compiled_templates is None:
        from maild.outbound.render import load_renderer
        from maild.outbound.template_files import PACKAGED, read_sources, search_path

        folder = Path(tempfile.mkdtemp(prefix="maild-test-templates-"))
        atexit.register(shutil.rmtree, folder, True)
        load_renderer(PACKAGED, folder / "templates", read_sources(search_path(PACKAGED)))
        _compiled_templates = folder / "templates"
    return _compiled_templates


def seed_template_cache(storage: Path) -> None:
    """Give a new storage folder the compiled packaged templates, as a restarted daemon finds them.

    The daemon then loads them instead of compiling them (``template_files.compiled_before``, the
    bytecode cache): what a start after the first does in production. A test with templates of its own
    has another digest and compiles them; tests/ops/test_template_cache.py tests the cache itself,
    on folders of its own. Folders made 0700, as maild makes them (``make_private_dir``)."""
    from maild.outbound.template_files import cache_folder

    target = cache_folder(storage)
    for folder in (storage, target.parent):
        folder.mkdir(mode=0o700)
    shutil.copytree(compiled_templates(), target)


_migrated_sqlite: Path | None = None


def migrated_sqlite() -> Path:
    """A SQLite database migrated to the schema's head once per test process, as maild's first open
    leaves it (``open_engine``: the same pragmas, the same migrations); closed, so its WAL is gone."""
    global _migrated_sqlite
    if _migrated_sqlite is None:
        from maild.storage.db import open_engine

        folder = Path(tempfile.mkdtemp(prefix="maild-test-schema-"))
        atexit.register(shutil.rmtree, folder, True)
        open_engine(f"sqlite:///{folder / 'maild.db'}").dispose()
        _migrated_sqlite = folder / "maild.db"
    return _migrated_sqlite


def write_config(tmp: Path, *, source: str, smtp_port: int, extra: str = "", top: str = "",
                 customers: str = CUSTOMERS, database_url: str = "", notifications: str = "enabled = false",
                 compiled: bool = True, migrated: bool = False) -> Path:
    """A complete config in ``tmp``; ``source`` is the [imap] or [maildir] table text.

    Consultants' notifications are off unless asked for (``notifications``: the
    [notifications] table's text): most tests count the mail a customer gets.
    ``compiled``: the storage folder ``tmp/var`` starts with the packaged templates compiled
    (``seed_template_cache``); false leaves ``tmp/var`` to the test (it is not made).
    ``migrated``: the SQLite database in ``tmp/var`` (no ``database_url``) starts at the schema's head,
    a copy of ``migrated_sqlite`` (0600, as ``create_private`` makes it) instead of ~0.05 s of migrations
    per test, for tests whose claim is not the first open (tests/storage/test_migrations.py has those)."""
    (tmp / "customers.toml").write_text(customers, encoding="utf-8")
    text = f"""\
customers_file = "customers.toml"
{top}

[storage]
path = "{tmp / 'var'}"

[database]
url = "{database_url}"

{source}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from_address = "support@firma.pl"
from_name = "Wsparcie"

[support]
address = "support@firma.pl"
ticket_prefix = "SUP"

[[consultants]]
email = "anna@firma.pl"
name = "Anna Nowak"
role = "consultant"

[[consultants]]
email = "szef@firma.pl"
name = "Szef"
role = "manager"

[notifications]
{notifications}
{extra}
"""
    path = tmp / "maild.toml"
    path.write_text(text, encoding="utf-8")
    if compiled and not (tmp / "var").exists():
        seed_template_cache(tmp / "var")
    database = tmp / "var" / "maild.db"
    if migrated and not database_url and not database.exists():  # a config written again keeps its database
        (tmp / "var").mkdir(mode=0o700, exist_ok=True)
        shutil.copyfile(migrated_sqlite(), database)
        database.chmod(0o600)
    return path


def maildir_source(tmp: Path) -> str:
    return f'[maildir]\npath = "{tmp / "Maildir"}"\n'


def make_mail(sender: str = "Jan <jan@acme.pl>", subject: str = "Problem z fakturą", body: str = "Proszę o pomoc z wydrukiem faktury.\n",
              msgid: str | None = "<m1@acme.pl>", to: str = "support@firma.pl", date: datetime | None = None,
              headers: dict[str, Any] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(timezone.utc))
    if msgid:
        msg["Message-ID"] = msgid
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


def consultant_to(config_path: Path, email: str = "anna@firma.pl") -> str:
    """The consultant's personal support address (``support+<token>@...``), as maild
    shows it in every notification: mail to it proves it is the consultant's."""
    from maild.config import load_config
    from maild.desk.notifier import Notifier
    from maild.rules.calendar import BusinessCalendar
    from maild.storage.db import open_database

    cfg = load_config(config_path)
    cfg.storage_path.mkdir(parents=True, exist_ok=True)
    sessions = open_database(cfg.database_url)
    notifier = Notifier(cfg, BusinessCalendar(cfg.calendar).tz)
    notifier.load(sessions)
    with sessions() as session:
        return notifier.personal_address(session, email)


_deliveries = 0


# Anna's replies to SUP-1 (Jan's question) and SUP-2 (Ola's outage): commands alone, commands above a signature,
# an answer under commands (Message-ID: (subject, body)).
ANNAS_REPLIES = {
    "<k1@firma.pl>": ("Re: [SUP-1] Pytanie o licencję", "#take\n#time 1h30m\n"),
    "<k2@firma.pl>": ("Re: [SUP-1] Pytanie o licencję", "#time 15m consultation\n\n-- \nAnna Nowak\nFirma\n"),
    "<k3@firma.pl>": ("Re: [SUP-2] Awaria wydruku", "#time 30m\n\nDzień dobry,\nproszę zainstalować poprawkę.\n"),
}


def two_tickets_answered_by_anna(env: dict[str, Any], run: Any, replies: dict[str, tuple[str, str]]) -> None:
    """Jan's and Ola's mails become SUP-1 and SUP-2 (one ``run``), then each of ``replies`` arrives from Anna's
    address to her personal support address and is taken in by a ``run`` of its own."""
    env["box"].add(make_mail(subject="Pytanie o licencję", msgid="<q1@acme.pl>"))
    env["box"].add(make_mail(subject="Awaria wydruku", msgid="<q2@acme.pl>", sender="Ola <ola@acme.pl>"))
    run(env)
    env["sink"].wait_for(2)  # the two acknowledgements
    personal = consultant_to(env["path"])
    for msgid, (subject, body) in replies.items():
        env["box"].add(make_mail(to=personal, sender="Anna Nowak <anna@firma.pl>", subject=subject, msgid=msgid,
                                 body=body))
        run(env)


def deliver(maildir: Path, raw: bytes, at: datetime) -> Path:
    """Deliver into a Maildir as an MDA would, with the delivery time ``at`` in the unique name."""
    global _deliveries
    _deliveries += 1
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    seconds = int(at.timestamp())
    # zero-padded: mail delivered in the same second is read in name order ("P10" sorted before "P9")
    name = f"{seconds}.M{at.microsecond:06d}P{_deliveries:08d}Q{_deliveries:08d}.test"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(raw)
    target = maildir / "new" / name
    tmp.rename(target)
    return target


class Clock:
    """A clock the test moves: pass it where maild takes ``clock``."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def spawn_maild(config: Path, *args: str, log: Path, env: dict[str, str], **popen: Any) -> Any:
    """``python -m maild.cli --config CONFIG ARGS`` with its stderr in ``log``, not a pipe: a test that polls
    the sink or the mailbox while the daemon runs reads nothing until it ends, and a pipe holds 64 KB of log
    lines, after which the daemon and its forked courier block in write(2) (a faster reading fills it
    sooner: the cpu helper's tickets-by-one-INSERT branch found it, twelfth session)."""
    import subprocess
    import sys

    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "maild.cli", "--config", str(config), *args],
                                env=env, stdout=subprocess.DEVNULL, stderr=err, **popen)


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a ``spawn_maild`` log, for an assertion's message."""
    return log.read_bytes()[-chars:].decode(errors="replace") if log.exists() else ""


def count_compiles(monkeypatch: Any) -> list[str]:
    """The names of the templates Jinja2 compiles in this process from now on (a forked process
    counts in its own copy)."""
    from jinja2 import Environment

    compiled: list[str] = []
    original = Environment.compile

    def counting(self: Environment, source: str, name: str | None = None, *args: object, **kwargs: object) -> object:
        compiled.append(str(name))
        return original(self, source, name, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Environment, "compile", counting)
    return compiled
