"""What every command group shares: the registry the groups add their commands to,
the errors that set the exit code, the clock, and small argument helpers.

A command group is one module under ``maild/cli/`` with ``register(commands)``;
``main.GROUPS`` lists the modules. ``commands.add`` adds a top-level command,
``commands.group`` a command with subcommands (shared: two modules may add to
``report``), ``commands.add_to`` one subcommand. ``needs`` says what the handler
is given: ``"database"`` (config, ORM sessions, args), ``"engine"`` (config, the
SQLAlchemy Engine, args: a command that reads through ``storage.queries`` and
``storage.tables`` and never loads the ORM, a third of its start-up),
``"config"`` (config, args) or ``"nothing"`` (args; for commands that run before
a config exists).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Literal, TypeAlias
from zoneinfo import ZoneInfo

from maild.errors import MaildError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from maild.config import Config
    from maild.rules.customers import Customer

Handler: TypeAlias = "Callable[[Config, sessionmaker[Session], argparse.Namespace], int]"
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Needs = Literal["database", "engine", "config", "nothing"]
UTC = timezone.utc


class UsageError(MaildError):
    """Bad command-line input: a clear message and exit 2, never a traceback."""


class Failure(MaildError):
    """An operation refused with a reason for the person at the terminal, and its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Commands:
    """The command line as the groups register it; ``entry`` is the ``maild`` command itself
    (the demo runs commands through it)."""

    def __init__(self, sub: SubParsers, entry: Callable[[Sequence[str]], int]) -> None:
        self.sub = sub
        self.entry = entry
        self._groups: dict[str, SubParsers] = {}

    def add(self, name: str, help: str, handler: Callable[..., int], needs: Needs = "database"
            ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.sub.add_parser(name, help=help)
        parser.set_defaults(handler=handler, needs=needs)
        return parser

    def group(self, name: str, help: str) -> SubParsers:
        if name not in self._groups:
            self._groups[name] = self.sub.add_parser(name, help=help).add_subparsers(dest="sub", required=True)
        return self._groups[name]

    def add_to(self, group: SubParsers, name: str, handler: Callable[..., int], help: str | None = None,
               needs: Needs = "database") -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = (group.add_parser(name, help=help) if help is not None
                                           else group.add_parser(name))
        parser.set_defaults(handler=handler, needs=needs)
        # the group's commands name it in the usage and in "the following arguments are required: ..."
        # (else argparse names the attribute it keeps the choice in, "sub")
        group.metavar = "{" + ",".join(group.choices) + "}"
        return parser


def _utcnow() -> datetime:
    return datetime.now(UTC)


# Tests replace this to put "this month" and "due by now" where they need them.
clock: Callable[[], datetime] = _utcnow


def row_id(text: str) -> int:
    """An argparse type for a record number (quarantine id, ledger entry): a bad or
    out-of-range one is a usage error (exit 2) before the database sees it."""
    from maild.storage.queries import MAX_ROW_ID

    value = text.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or not 1 <= int(value) <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a record number (a whole number from 1 to "
                                         f"{MAX_ROW_ID})")
    return int(value)


def ticket_number(cfg: Config, ref: str) -> int:
    """The ticket number a reference given on the command line names; UsageError when none."""
    from maild.storage.queries import MAX_ROW_ID, parse_ticket_ref

    number = parse_ticket_ref(ref, cfg.support.ticket_prefix)
    if number is None:
        prefix = cfg.support.ticket_prefix
        raise UsageError(f"{ref!r} is not a ticket reference (write {prefix}-12, {prefix}-<n> with n from 1 to "
                         f"{MAX_ROW_ID})")
    return number


def iso_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def hm(minutes: int | None) -> str:
    if minutes is None:
        return "-"
    sign = "-" if minutes < 0 else ""
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h}:{m:02d}"


def money(cents: int | None) -> str:
    from maild.rules.wording import format_amount

    return "-" if cents is None else format_amount(cents)


def customers_of(cfg: Config) -> tuple[Customer, ...]:
    from maild.rules.customers import load_customers

    return load_customers(cfg.customers_file, cfg.packages)


def tz_of(cfg: Config) -> ZoneInfo:
    return ZoneInfo(cfg.calendar.timezone)


# Balances are carried month by month up to the month asked for: a month far in
# the future ("9998-12") kept the command busy for more than ten minutes.
MONTHS_AHEAD = 12


def month_arg(text: str, tz: ZoneInfo) -> str:
    """A --month value (YYYY-MM), at most ``MONTHS_AHEAD`` months ahead; Failure (exit 2) otherwise."""
    from maild.billing import reports
    from maild.billing.reports import ReportError

    try:
        start, _ = reports.month_bounds(text, tz)
    except ReportError as exc:
        raise Failure(str(exc), 2) from None
    today = clock().astimezone(tz)
    latest = (today.year * 12 + today.month - 1) + MONTHS_AHEAD
    if start.astimezone(tz).year * 12 + start.astimezone(tz).month - 1 > latest:
        raise Failure(f"month {text} is more than {MONTHS_AHEAD} months ahead; give a month up to "
                      f"{latest // 12:04d}-{latest % 12 + 1:02d}", 2)
    return text


def ended_month(month: str, tz: ZoneInfo, command: str) -> None:
    """``--send`` of ``month`` (a valid ``month_arg``): Failure (exit 2) while the month runs.

    A month is mailed once (the dedupe key): one sent before its end would be the month's
    mail for good, the days after the sending never in it."""
    from maild.billing import reports

    _, end = reports.month_bounds(month, tz)
    if clock() < end:
        first = end.astimezone(tz).date().isoformat()
        raise Failure(f"{command} --send: {month} has not ended yet; it is mailed once, so send it "
                      f"from {first} on (without --send: the figures so far)", 2)
