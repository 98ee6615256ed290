"""Building real config files and mail for tests."""
from __future__ import annotations

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


def write_config(tmp: Path, *, source: str, smtp_port: int, extra: str = "", top: str = "",
                 customers: str = CUSTOMERS, database_url: str = "", notifications: str = "enabled = false") -> Path:
    """A complete config in ``tmp``; ``source`` is the [imap] or [maildir] table text.

    Consultants' notifications are off unless asked for (``notifications``: the
    [notifications] table's text): most tests count the mail a customer gets."""
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
