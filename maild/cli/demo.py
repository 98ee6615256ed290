"""``maild demo``: the whole flow on embedded defaults, nothing to install or configure.

SQLite, a local Maildir seeded with sample mail, and an in-process SMTP server
on loopback that captures what maild sends. It runs two cycles: customers write,
then a consultant answers the notification maild sent her, from her mail client
(quoting it, with ``#time`` and ``#status`` on top); it prints the queue, one
acknowledgement, the consultant's notification and the relayed answer.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from maild.cli.common import Commands

CUSTOMERS = """\
[[customers]]
id = "acme"
name = "Acme Produkcja Sp. z o.o."
language = "pl"
domains = ["acme.example"]

  [[customers.contracts]]
  id = "acme-sla-2026"
  kind = "sla"
  start = 2026-01-01
  reaction_hours = 24
  monthly_hours = 10
  hourly_rate = 180.00

[[customers]]
id = "nordlys"
name = "Nordlys Trading AS"
language = "en"
addresses = ["finance@nordlys.example"]

  [[customers.contracts]]
  id = "nordlys-prepaid-10h"
  kind = "prepaid"
  start = 2026-09-01
  hours = 10
  hourly_rate = 200.00

[[customers]]
id = "kowalski"
name = "Biuro Rachunkowe Kowalski"
language = "pl"
addresses = ["biuro@kowalski.example"]

  [[customers.contracts]]
  id = "kowalski-ad-hoc"
  kind = "occasional"
  start = 2025-01-01
  hourly_rate = 250.00
"""

CONFIG = """\
customers_file = "customers.toml"

[storage]
path = "{dir}/var"

[maildir]
path = "{dir}/Maildir"

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
from_address = "support@consultancy.example"
from_name = "Consultancy Support"

[support]
address = "support@consultancy.example"
ticket_prefix = "SUP"

[[consultants]]
email = "anna@consultancy.example"
name = "Anna Nowak"
role = "consultant"

[[consultants]]
email = "piotr@consultancy.example"
name = "Piotr Zieliński"
role = "manager"

# every day a working day, no public holidays: the demo's consultant is at work
# whenever it runs (new tickets go to the consultants present)
[calendar]
working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
holidays_country = ""

[logging]
level = "warning"
"""

SAMPLES: list[tuple[str, str, str, str]] = [
    ("Jan Wiśniewski <jan@acme.example>", "Pilne: awaria wydruku faktur",
     "Dzień dobry,\nod rana nie działa wydruk faktur sprzedaży, system zgłasza błąd.\nProszę o pilną pomoc.\n", "pl"),
    ("Kari Nordmann <finance@nordlys.example>", "New VAT report layout",
     "Hello,\ncould you prepare the new layout of our VAT report before the 25th?\nThanks, Kari\n", "en"),
    ("Biuro Kowalski <biuro@kowalski.example>", "Pytanie o listę płac",
     "Dzień dobry,\njak dodać nowy składnik do listy płac w wersji 2026?\nPozdrawiam\n", "pl"),
    ("Nieznany Nadawca <someone@unknown.example>", "Zapytanie ofertowe",
     "Dzień dobry, prosimy o ofertę wdrożenia.\n", "pl"),
    ("Mail Delivery System <MAILER-DAEMON@mx.example>", "Undelivered Mail Returned to Sender",
     "This is the mail system. Your message could not be delivered.\n", "en"),
]


def _mail(sender: str, subject: str, body: str, headers: dict[str, str] | None = None,
          to: str = "support@consultancy.example") -> bytes:
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain="demo.example")
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


class _Capture:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(envelope)
        return "250 OK"


def run_demo(cli_main: Callable[[Sequence[str]], int], workdir: Path | None = None) -> int:
    """``cli_main`` is the ``maild`` command the demo runs its commands with."""
    import mailbox
    import shlex
    import socket
    import tempfile
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    from maild.config import load_config
    from maild.ops.daemon import Daemon

    base = workdir or Path(tempfile.mkdtemp(prefix="maild-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    capture = _Capture()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        (base / "customers.toml").write_text(CUSTOMERS, encoding="utf-8")
        (base / "maild.toml").write_text(CONFIG.format(dir=base, port=port), encoding="utf-8")
        box = mailbox.Maildir(base / "Maildir", create=True)
        for sender, subject, body, _lang in SAMPLES:
            extra = {"Auto-Submitted": "auto-replied"} if "MAILER-DAEMON" in sender else None
            box.add(_mail(sender, subject, body, extra))
        print(f"maild demo in {base}\n")
        print(f"1. {len(SAMPLES)} mails arrive in the support Maildir; maild run --once:")
        config = load_config(base / "maild.toml")
        report = Daemon(config).run_once()
        print(f"   {report.summary()}\n")
        print("2. The queue (maild tickets list):")
        cli_main(["--config", str(base / "maild.toml"), "tickets", "list"])
        _wait_for(capture, 1)
        ack = next((m for m in capture.mails if b"[SUP-1]" in m.content), capture.mails[0])
        print(f"\n3. One acknowledgement, as the SMTP server received it (to {', '.join(ack.rcpt_tos)}):\n")
        print(_show(ack))

        notice = next(m for m in capture.mails if "anna@consultancy.example" in m.rcpt_tos and b"[SUP-1]" in m.content)
        print(f"\n4. Consultant Anna gets the new ticket in her mailbox (to {', '.join(notice.rcpt_tos)}):\n")
        print(_show(notice))

        before = len(capture.mails)
        note = message_from_bytes(notice.content, policy=policy.default)
        quoted = "\n".join(f"> {line}" for line in _text(note).splitlines())
        box.add(_mail("Anna Nowak <anna@consultancy.example>", f"Re: {note['Subject']}",
                      "#time 1h30m incident\n#status resolved\n\nDzień dobry,\nwydruk działa ponownie: "
                      "poprawiliśmy definicję wzorca faktury.\n\nPozdrawiam\nAnna\n\n"
                      f"W dniu {note['Date']} {note['From']} pisze:\n{quoted}\n",
                      headers={"In-Reply-To": note["Message-ID"],
                               "References": f"{note['References'] or ''} {note['Message-ID']}".strip()},
                      to=str(note["Reply-To"] or "support@consultancy.example")))
        print("\n5. Anna presses Reply in her mail client, writes '#time 1h30m incident' and '#status resolved'"
              " above the quoted notification; maild run --once:")
        report = Daemon(config).run_once()
        print(f"   {report.summary()}\n")
        _wait_for(capture, before + 1)
        relay = next(m for m in capture.mails[before:] if b"Auto-Submitted" not in m.content)
        print("6. The customer receives only her answer, from the support address"
              f" (to {', '.join(relay.rcpt_tos)}):\n")
        print(_show(relay))
        print("\n7. The ticket now (maild tickets show SUP-1):\n")
        cli_main(["--config", str(base / "maild.toml"), "tickets", "show", "SUP-1"])
        month = datetime.now(timezone.utc).astimezone(ZoneInfo(config.calendar.timezone)).strftime("%Y-%m")
        page = base / f"report-{month}.html"
        print(f"\n8. The month at a glance, with charts (maild report month --month {month} --html FILE):")
        cli_main(["--config", str(base / "maild.toml"), "report", "month", "--month", month, "--html", str(page)])
        print(f"   open it in a browser: {page.as_uri()}")
        print(f"\nEverything is in {base}: maild.toml, customers.toml, var/maild.db, Maildir/.")
        print(f"Try: {_maild_command()} --config {shlex.quote(str(base / 'maild.toml'))} tickets list --json")
    finally:
        controller.stop()
    return 0


def _maild_command() -> str:
    """The hint names the ``maild`` this demo ran from: ``scripts/demo.sh`` puts none on PATH."""
    import shlex

    beside = Path(sys.executable).parent / "maild"
    if beside.exists():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m maild.cli"


def _show(envelope: Any) -> str:
    """The mail as a person reads it: decoded headers and text, not the wire form."""
    import textwrap
    from email import message_from_bytes, policy

    msg = message_from_bytes(envelope.content, policy=policy.default)
    lines = [f"{name}: {msg[name]}" for name in ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "In-Reply-To",
                                                  "Auto-Submitted") if msg[name]]
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return textwrap.indent("\n".join(lines) + "\n\n" + text.strip(), "   | ")


def _text(msg: Any) -> str:
    body = msg.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""


def _wait_for(capture: _Capture, count: int, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while len(capture.mails) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def register(commands: Commands) -> None:
    def handler(args: argparse.Namespace) -> int:
        from maild.ops.logs import setup_logging

        setup_logging("warning")
        return run_demo(commands.entry, Path(args.dir) if args.dir else None)

    demo = commands.add("demo", help="a self-contained first look (SQLite, Maildir, in-process SMTP)",
                        handler=handler, needs="nothing")
    demo.add_argument("--dir", help="work directory (default: a new temporary one)")
