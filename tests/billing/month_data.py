"""A generated month of support: customers of every kind, tickets every day, answers, booked hours.

Written straight into the database (the rows maild itself writes), from a seeded
random generator, so a test can ask for "a month" and check the reports' and
charts' figures against each other without running a daemon for weeks. One
customer's name and some subjects are hostile HTML, for the escaping tests.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from maild.storage.models import LedgerRow, MessageRow, Ticket

UTC = timezone.utc
MONTH = "2026-11"
MONTH_START = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November 00:00 in Warsaw
MONTH_END = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'

CUSTOMERS = f"""
[[customers]]
id = "acme"
name = "Acme Produkcja Sp. z o.o."
language = "pl"
domains = ["acme.example"]
billing_address = "faktury@acme.example"

  [[customers.contracts]]
  id = "acme-sla"
  kind = "sla"
  start = 2026-01-01
  reaction_hours = 24
  monthly_hours = 10
  hourly_rate = 180.00

[[customers]]
id = "evil"
name = '{HOSTILE} Sp. j.'
language = "en"
domains = ["evil.example"]
billing_address = "billing@evil.example"

  [[customers.contracts]]
  id = "evil-sla"
  kind = "sla"
  start = 2026-06-01
  reaction_hours = 8
  monthly_hours = 4
  hourly_rate = 200.00

[[customers]]
id = "nordlys"
name = "Nordlys Trading AS"
language = "en"
domains = ["nordlys.example"]
billing_address = "finance@nordlys.example"

  [[customers.contracts]]
  id = "nordlys-10h"
  kind = "prepaid"
  start = 2026-09-01
  hours = 10
  valid_until = 2027-02-28
  hourly_rate = 200.00

  [[customers.contracts]]
  id = "nordlys-4h"
  kind = "prepaid"
  start = 2026-10-01
  hours = 4
  valid_until = 2026-12-31
  hourly_rate = 200.00

[[customers]]
id = "kowalski"
name = "Biuro Rachunkowe Kowalski"
language = "pl"
domains = ["kowalski.example"]
billing_address = "biuro@kowalski.example"

  [[customers.contracts]]
  id = "kowalski-ad-hoc"
  kind = "occasional"
  start = 2025-01-01
  hourly_rate = 250.00
"""

CONSULTANTS = """
[[consultants]]
email = "anna@firma.pl"
name = "Anna Nowak"

[[consultants]]
email = "jan@firma.pl"
name = "Jan Kowal"

[[consultants]]
email = "szef@firma.pl"
name = "Piotr Szef"
role = "manager"
language = "pl"

[[consultants]]
email = "boss@firma.pl"
name = "Maria Boss"
role = "manager"
language = "en"
"""

CONFIG = """
customers_file = "customers.toml"

[storage]
path = "{storage}"

[maildir]
path = "{maildir}"

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from_address = "support@firma.pl"
from_name = "Wsparcie Firma"

[support]
address = "support@firma.pl"
ticket_prefix = "SUP"
""" + CONSULTANTS

CUSTOMER_KINDS = [("acme", "acme-sla", "sla", 24), ("evil", "evil-sla", "sla", 8),
                  ("nordlys", "nordlys-10h", "prepaid", None), ("kowalski", "kowalski-ad-hoc", "occasional", None)]
SCOPES = ["consultation", "installation", "training", "incident", "development", None]
SUBJECTS = ["Awaria wydruku faktur", "JPK_VAT nie przechodzi walidacji", "Lista płac: nowy składnik",
            "Import wyciągu bankowego", HOSTILE + " subject", "Pytanie o licencję"]


# what the intake keeps of a consultant's answer (the text without the command block), and of a mail of
# commands only: nothing, or the signature below them
ANSWER = "Dzień dobry,\nproszę zainstalować poprawkę.\n\n-- \nKonsultant"
COMMANDS_ONLY = ("", "-- \nKonsultant\nFirma")


@dataclass(frozen=True)
class Generated:
    tickets: int
    answers: int
    ledger_rows: int


def write_files(directory: Path, database_url: str = "") -> Path:
    """The config and customers file of the generated month; returns the config's path.

    Without ``database_url`` the database is SQLite under the storage path.
    """
    (directory / "Maildir").mkdir(exist_ok=True)
    (directory / "customers.toml").write_text(CUSTOMERS, encoding="utf-8")
    config = directory / "maild.toml"
    text = CONFIG.format(storage=directory / "storage", maildir=directory / "Maildir")
    if database_url:
        text = text.replace("[maildir]", f'[database]\nurl = "{database_url}"\n\n[maildir]', 1)
    config.write_text(text, encoding="utf-8")
    return config


def generate(sessions: sessionmaker[Session], seed: int = 18, history_days: int = 18, scale: int = 1) -> Generated:
    """Tickets from ``history_days`` before November to its end (Warsaw), answered, resolved and booked
    at random; 2-9 a working day and 0-2 a weekend day, times ``scale``.

    Expects the customers synced (``maild contracts sync``) first.
    """
    rng = random.Random(seed)
    consultants = ["anna@firma.pl", "jan@firma.pl"]
    tickets = answers = rows = 0
    with sessions() as session, session.begin():
        day = MONTH_START - timedelta(days=history_days)
        number = 0
        while day < MONTH_END:
            weekday = day.astimezone(timezone(timedelta(hours=1))).weekday()
            for _ in range((rng.randint(0, 2) if weekday >= 5 else rng.randint(2, 9)) * scale):
                number += 1
                customer, contract, kind, reaction = rng.choice(CUSTOMER_KINDS)
                created = day + timedelta(minutes=rng.randint(0, 24 * 60 - 1))
                due = created + timedelta(hours=reaction) if reaction else None
                answered = None
                if rng.random() < 0.85:
                    answered = created + timedelta(minutes=rng.randint(5, int((reaction or 24) * 60 * 1.4)))
                    if answered > NOW:
                        answered = None
                resolved = None
                if answered is not None and rng.random() < 0.7:
                    resolved = answered + timedelta(hours=rng.randint(1, 200))
                    if resolved > NOW:
                        resolved = None
                subject = rng.choice(SUBJECTS)
                session.add(Ticket(
                    id=number, subject=subject, customer_id=customer, contract_id=contract, contract_kind=kind,
                    requester=f"user{number}@{customer}.example", created_at=created, updated_at=created,
                    status="resolved" if resolved else ("waiting" if answered else "open"),
                    reaction_due=due, first_response_at=answered, resolved_at=resolved,
                    verified=True, tier={"sla": 0, "prepaid": 1, "occasional": 2}[kind],
                ))
                tickets += 1
                if answered is not None:
                    who = rng.choice(consultants)
                    if rng.random() < 0.2:  # an internal note first never counts as the answer
                        session.add(MessageRow(ticket_id=number, direction="in", role="consultant",
                                               from_addr=consultants[0], date=answered - timedelta(minutes=3),
                                               subject=f"Re: {subject}", internal=True))
                    session.add(MessageRow(ticket_id=number, direction="in", role="consultant", from_addr=who,
                                           date=answered, subject=f"Re: {subject}", text_new=ANSWER))
                    # the answer as relayed to the customer, from the support address (the desk's relay row)
                    session.add(MessageRow(ticket_id=number, direction="out", role="consultant",
                                           from_addr="support@firma.pl", date=answered + timedelta(seconds=1),
                                           subject=f"Re: {subject}"))
                    answers += 1
                    if rng.random() < 0.3:
                        later = answered + timedelta(hours=rng.randint(1, 72))
                        session.add(MessageRow(ticket_id=number, direction="in", role="consultant",
                                               from_addr=rng.choice(consultants), date=later, subject=f"Re: {subject}",
                                               text_new=ANSWER))
                        answers += 1
                    if number % 5 == 0:
                        # the other consultant's mail of commands only (or commands and a signature): booked
                        # or taken, the customer told nothing, never an answer (the intake keeps its text
                        # without the commands: nothing, or the signature)
                        other = next(c for c in consultants if c != who)
                        session.add(MessageRow(ticket_id=number, direction="in", role="consultant", from_addr=other,
                                               date=answered + timedelta(minutes=5), subject=f"Re: {subject}",
                                               text_new=COMMANDS_ONLY[number % 2]))
                    booked_count = rng.randint(1, 3) if kind != "prepaid" else int(rng.random() < 0.4)
                    for n in range(booked_count):
                        session.add(LedgerRow(
                            contract_id=contract, customer_id=customer, ticket_id=number,
                            minutes=rng.choice([15, 20, 30, 45, 60, 90]) if kind != "prepaid" else rng.choice([15, 30]),
                            overage=False, booked_at=answered + timedelta(minutes=10 * n), by=who,
                            scope=rng.choice(SCOPES), note="", source_message_id=None,
                        ))
                        rows += 1
            session.flush()  # tables in dependency order: a day's tickets before their messages and ledger rows
            day += timedelta(days=1)
    return Generated(tickets=tickets, answers=answers, ledger_rows=rows)


Runner = Callable[..., tuple[int, str, str]]
