"""Commands a consultant writes at the top of a reply: ``#time 1h30m``, ``#status resolved``...

Only a block of ``#word`` lines at the very start of the body counts (blank
lines may precede or separate them); the first other line ends the block, so a
later "#1 of my questions" is text for the customer, never a command. "# word"
with a space after the hash is a command when the word is a command's name
("# time 30m"), else text ("# Summary"). Anything
in the block that is not a valid command becomes a ``CommandError`` with its
line number: the pipeline then applies none of the commands and tells the
consultant, because acting on half a block (time logged, status not changed)
is worse than acting on none.

Polish aliases exist for the command names (``#czas``, ``#priorytet``...)
and scopes (``szkolenie``, ``instalacja``...), since our consultants write
Polish as often as English.

Each command is one unit, registered once in ``COMMANDS``: its names, its help
line, how its arguments are parsed and how it is applied (through the
``TicketDesk``). The "unknown command" reply lists the table. A new command
is a dataclass with ``apply`` (and ``check`` if it needs the config), its help
lines in ``rules.command_help.BUILT_IN`` (the notifications are rendered with
them where the desk is not loaded) plus one ``register(...)`` call; see the
README, "The pipeline".

Durations are whole minutes (``rules.duration``).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from maild.rules import command_help
from maild.rules.command_help import STATUS_WORDS_PL
from maild.rules.duration import MAX_ENTRY_MINUTES, DurationError, parse_duration
from maild.rules.scope import Scope, known_words, parse_scope
from maild.rules.presence import AbsenceError, parse_range

if TYPE_CHECKING:  # the table and its help need no desk and no ORM (``maild check`` renders the help)
    from maild.desk.context import DeskContext
    from maild.desk.desk import TicketDesk
    from maild.storage.models import Ticket

log = logging.getLogger("maild.commands")

__all__ = [
    "Scope",
    "TicketStatus",
    "Priority",
    "TimeCommand",
    "StatusCommand",
    "AssignCommand",
    "PriorityCommand",
    "InternalCommand",
    "VerifyCommand",
    "AwayCommand",
    "BackCommand",
    "PRESENCE_COMMANDS",
    "TakeCommand",
    "CustomerCommand",
    "Command",
    "Applying",
    "CommandSpec",
    "COMMANDS",
    "Malformed",
    "register",
    "help_lines",
    "CommandError",
    "ParsedCommands",
    "DurationError",
    "MAX_ENTRY_MINUTES",
    "parse_duration",
    "parse_commands",
]

TicketStatus = Literal["open", "waiting", "resolved", "closed"]
Priority = Literal["P1", "P2", "P3", "P4"]



@dataclass(frozen=True)
class Applying:
    """What a command acts with: the desk, the ticket, who wrote it and when."""

    desk: TicketDesk
    ticket: Ticket
    actor: str
    at: datetime  # when the consultant's mail arrived
    now: datetime
    source_message_id: str | None


class Command:
    """One consultant command, parsed; subclasses are frozen dataclasses."""

    sets_status: ClassVar[bool] = False  # the mail's own status change is not overridden
    internal: ClassVar[bool] = False  # the mail is a note for colleagues, not relayed

    check_code: ClassVar[str] = ""  # names check()'s refusal for the error mail's wording

    def check(self, ctx: DeskContext) -> str | None:
        """Why this command cannot be applied (what only the config knows), or None."""
        return None

    def check_params(self) -> tuple[tuple[str, str], ...]:
        """The values check()'s refusal quotes, for the error mail."""
        return ()

    def apply(self, run: Applying) -> None:
        """Change the ticket through the desk."""


@dataclass(frozen=True)
class TimeCommand(Command):
    minutes: int
    scope: Scope | None
    note: str

    def apply(self, run: Applying) -> None:
        run.desk.book_time(run.ticket, self.minutes, run.actor, self.scope, self.note, run.source_message_id, run.at)


@dataclass(frozen=True)
class StatusCommand(Command):
    status: TicketStatus
    sets_status: ClassVar[bool] = True

    def apply(self, run: Applying) -> None:
        run.desk.set_status(run.ticket, self.status, run.actor, run.at, run.now)


@dataclass(frozen=True)
class AssignCommand(Command):
    """``who`` as written (address or name); matched to a consultant by ``check``/``apply``."""

    who: str
    check_code: ClassVar[str] = "no_consultant"

    def check(self, ctx: DeskContext) -> str | None:
        if ctx.find_consultant(self.who) is None:
            return f"no consultant, or more than one, with the e-mail, name or first name {self.who!r}: write the e-mail"
        return None

    def check_params(self) -> tuple[tuple[str, str], ...]:
        return (("who", self.who),)

    def apply(self, run: Applying) -> None:
        to = run.desk.ctx.find_consultant(self.who)
        if to is not None:
            run.desk.assign(run.ticket, to, run.actor, run.at)


@dataclass(frozen=True)
class PriorityCommand(Command):
    priority: Priority
    reason: str

    def apply(self, run: Applying) -> None:
        run.desk.set_priority(run.ticket, self.priority, self.reason, run.actor, run.at)


@dataclass(frozen=True)
class ScopeCommand(Command):
    """The ticket's scope of work, when the guess from its text was wrong."""

    scope: Scope

    def apply(self, run: Applying) -> None:
        run.desk.set_scope(run.ticket, self.scope, run.actor, run.at)


@dataclass(frozen=True)
class InternalCommand(Command):
    """The reply is a note for colleagues and must not be relayed to the customer."""

    internal: ClassVar[bool] = True


@dataclass(frozen=True)
class VerifyCommand(Command):
    """The consultant vouches for an unverified sender."""

    def apply(self, run: Applying) -> None:
        run.desk.verify(run.ticket, run.actor, run.at)


@dataclass(frozen=True)
class TakeCommand(Command):
    """Assign the ticket to whoever sent the mail."""

    def apply(self, run: Applying) -> None:
        run.desk.assign(run.ticket, run.actor, run.actor, run.at)


@dataclass(frozen=True)
class CustomerCommand(Command):
    """Open a new ticket on behalf of a customer (id or address as written): a phone
    call, a conversation. Only in a new mail: intake opens the ticket, so on an
    existing ticket it is refused (``check``) and never applied."""

    who: str
    on_ticket: bool = True  # parsed in a reply on a ticket, where it cannot act

    def check(self, ctx: DeskContext) -> str | None:
        if self.on_ticket:
            return "#customer opens a new ticket: send it as a new mail to the support address, not as a reply"
        return None


@dataclass(frozen=True)
class CommandError:
    """A command line refused. ``reason`` is English (logs, the intake record); ``code`` and
    ``params`` let the error mail say it in the consultant's language (templates/*/command_error.txt)."""

    line_no: int  # 1-based, in the text given to parse_commands
    line: str
    reason: str
    code: str = field(default="", compare=False)
    params: tuple[tuple[str, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ParsedCommands:
    commands: tuple[Command, ...]
    body: str  # the text without the command block: what the customer gets
    errors: tuple[CommandError, ...]
    # (line number, line) of each command, for an error found when it is checked
    lines: tuple[tuple[int, str], ...] = field(default=(), compare=False)

    def check(self, ctx: DeskContext) -> tuple[CommandError, ...]:
        """The parse errors and what the config refuses (an unknown consultant), in line order."""
        found = list(self.errors)
        cap = ctx.config.support.max_time_per_mail_minutes
        booked = 0
        for command, (line_no, line) in zip(self.commands, self.lines):
            reason = command.check(ctx)
            if reason is not None:
                found.append(CommandError(line_no, line, reason, command.check_code, command.check_params()))
            if isinstance(command, TimeCommand):
                booked += command.minutes
                if booked > cap >= booked - command.minutes:  # named once, at the line that crosses it
                    found.append(CommandError(line_no, line, (
                        f"the #time lines of one mail may book at most {_hours(cap)} h together "
                        f"([support] max_time_per_mail_hours); this line brings them past it. "
                        f"Nothing of this mail was booked; book longer work with 'maild time add'"),
                        "time_per_mail", (("hours", _hours(cap)),)))
        return tuple(sorted(found, key=lambda e: e.line_no))


def _hours(minutes: int) -> str:
    return f"{minutes // 60}" if minutes % 60 == 0 else f"{minutes / 60:g}"


# "# time 30m": a space after the hash (a phone's keyboard, a habit) is taken when a command's name follows,
# so "# Podsumowanie" (a heading) stays text; a line that starts with a non-breaking space (HTML) too.
_COMMAND_LINE = re.compile(r"[ \t\u00a0]*#(?P<gap>[ \t\u00a0]*)(?P<name>[^\W\d_][\w-]*)(?P<args>.*)", re.DOTALL)

_STATUSES: tuple[TicketStatus, ...] = get_args(TicketStatus)
# The statuses' Polish words (``rules.command_help``, in _STATUSES' order): a status is taken in either
# language from anyone (with or without Polish letters); the key is stored.
_STATUS_WORDS: dict[str, TicketStatus] = {
    **{s: s for s in _STATUSES}, **dict(zip(STATUS_WORDS_PL, _STATUSES)),
    "rozwiazane": "resolved", "zamkniete": "closed"}
_PRIORITIES: tuple[Priority, ...] = get_args(Priority)

# "#time 1h 30m installation" has a duration of two words; no valid duration
# is longer than four ("1 h 30 min").
_MAX_DURATION_WORDS = 4


@dataclass(frozen=True)
class AwayCommand(Command):
    """``#away 2026-12-21..2027-01-03 [note]``: the sender is away those days (inclusive).

    About the sender, not the ticket: usually a mail of its own to the support
    address (intake answers it with a confirmation); in a ticket reply it is
    recorded as well.
    """

    start: date
    until: date
    note: str

    def apply(self, run: Applying) -> None:
        run.desk.team.record_absence(run.actor, self.start, self.until, self.note, run.actor, run.now)


@dataclass(frozen=True)
class BackCommand(Command):
    """``#back``: the sender's recorded absence ends today."""

    def apply(self, run: Applying) -> None:
        from maild.desk.team import TeamError  # the desk has it loaded; ``maild check`` renders the help without it

        try:
            run.desk.team.end_absence(run.actor, run.now, run.actor)
        except TeamError as exc:
            log.warning("%s #back not applied: %s", run.actor, exc)


PRESENCE_COMMANDS = (AwayCommand, BackCommand)


class Malformed(Exception):
    """A command line a parser refuses; ``reason`` (English) for the record, ``code`` and
    ``params`` for the error reply in the consultant's language."""

    def __init__(self, reason: str, code: str = "", params: tuple[tuple[str, str], ...] = (), **named: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.params = params + tuple(sorted(named.items()))


# Two dates with spaces or a dash between them ("2026-12-21 - 2027-01-03", "2026-12-21 2027-01-03") are the
# range: taken as the first date alone, the rest the note, they recorded one day of a fortnight's holiday.
_AWAY_DAYS = re.compile(r"\s*(\d{4}-\d{2}-\d{2})\s*(?:\.\.|-|–|—)?\s*(\d{4}-\d{2}-\d{2})(?=\s|$)(.*)", re.DOTALL)


def _parse_away(args: str) -> AwayCommand:
    both = _AWAY_DAYS.match(args)
    words = [f"{both[1]}..{both[2]}", both[3]] if both else args.split(maxsplit=1)
    if not words:
        raise Malformed("#away needs the days, e.g. #away 2026-12-21..2027-01-03 (both inclusive)",
                        "away_needs_days")
    try:
        start, until = parse_range(words[0])
    except AbsenceError as error:
        raise Malformed(f"#away: {error}", "away_range", text=words[0]) from None
    return AwayCommand(start, until, words[1].strip() if len(words) > 1 else "")


def _parse_time(args: str) -> TimeCommand:
    words = args.split()
    if not words:
        raise Malformed("#time needs a duration, e.g. #time 1h30m installation note", "time_needs_duration")
    first_error: DurationError | None = None
    for count in range(min(_MAX_DURATION_WORDS, len(words)), 0, -1):
        try:
            minutes = parse_duration(" ".join(words[:count]))
        except DurationError as error:
            first_error = error if count == 1 else first_error
            continue
        rest = words[count:]
        scope: Scope | None = parse_scope(rest[0]) if rest else None
        if scope is not None:
            rest = rest[1:]
        return TimeCommand(minutes=minutes, scope=scope, note=" ".join(rest))
    assert first_error is not None
    raise Malformed(f"#time: {first_error}", first_error.code, first_error.params, text=first_error.text)


def _parse_status(args: str) -> StatusCommand:
    words = args.split()
    status = _STATUS_WORDS.get(words[0].casefold()) if len(words) == 1 else None
    if status is None:
        raise Malformed(f"#status takes one of: {', '.join(_STATUSES)}", "status_choice",
                        choices="|".join(_STATUSES))
    return StatusCommand(status)


def _parse_priority(args: str) -> PriorityCommand:
    words = args.split(maxsplit=1)
    if not words or words[0].upper() not in _PRIORITIES:
        raise Malformed(
            f"#priority takes one of {', '.join(_PRIORITIES)} (P1 most urgent), then an optional reason",
            "priority_choice",
        )
    priority = _PRIORITIES[_PRIORITIES.index(words[0].upper())]
    return PriorityCommand(priority, reason=words[1].strip() if len(words) > 1 else "")


def _parse_scope(args: str) -> ScopeCommand:
    words = args.split()
    scope = parse_scope(words[0]) if len(words) == 1 else None
    if scope is None:
        raise Malformed(f"#scope takes one of: {known_words()}", "scope_choice", choices=known_words())
    return ScopeCommand(scope)


def _parse_assign(args: str) -> AssignCommand:
    who = " ".join(args.split())
    if not who:
        raise Malformed("#assign needs a consultant's address or name", "assign_needs_who")
    return AssignCommand(who)


def _parse_customer(args: str) -> CustomerCommand:
    who = " ".join(args.split())
    if not who:
        raise Malformed("#customer needs the customer's id or e-mail address")
    return CustomerCommand(who)


def _no_arguments(command: Command) -> Callable[[str, str], Command]:
    def parse(written: str, args: str) -> Command:
        if args.strip():
            raise Malformed(f"#{written} takes nothing after it", "no_arguments", name=written)
        return command
    return parse


@dataclass(frozen=True)
class CommandSpec:
    """One consultant command: its names, its help line, its parser (written name, arguments)."""

    name: str
    aliases: tuple[str, ...]
    help: str
    parse: Callable[[str, str], Command]
    once: bool = False  # given twice in one mail is an error
    help_pl: str = ""  # the help line in a Polish notification, where its words are not the command's own


COMMANDS: dict[str, CommandSpec] = {}
_BY_NAME: dict[str, CommandSpec] = {}


def register(spec: CommandSpec) -> CommandSpec:
    """Add a command to the table: its names are recognised, its help line listed."""
    for name in (spec.name, *spec.aliases):
        if name in _BY_NAME:
            raise ValueError(f"#{name} is registered twice")
        _BY_NAME[name] = spec
    COMMANDS[spec.name] = spec
    command_help.add(spec.name, spec.help, spec.help_pl)
    return spec


def help_lines(language: str = "en") -> list[str]:
    """One line per command, in table order, in the reader's ``language`` (``rules.command_help``:
    the notifications are rendered with the same lines)."""
    return command_help.help_lines(language)


def _built_in(name: str, aliases: tuple[str, ...], parse: Callable[[str, str], Command],
              once: bool = False) -> CommandSpec:
    """A built-in command's spec, its help lines those ``rules.command_help`` holds for it."""
    english, polish = command_help.BUILT_IN[name]
    return CommandSpec(name, aliases, english, parse, once=once, help_pl=polish)


register(_built_in("time", ("czas",), lambda _, args: _parse_time(args)))
register(_built_in("status", (), lambda _, args: _parse_status(args), once=True))
register(_built_in("assign", ("przypisz",), lambda _, args: _parse_assign(args), once=True))
register(_built_in("priority", ("priorytet",), lambda _, args: _parse_priority(args), once=True))
register(_built_in("scope", ("zakres",), lambda _, args: _parse_scope(args), once=True))
register(_built_in("internal", ("wewnętrzne", "wewnetrzne"), _no_arguments(InternalCommand())))
register(_built_in("verify", ("potwierdź", "potwierdz"), _no_arguments(VerifyCommand())))
register(_built_in("away", ("nieobecny", "nieobecna", "urlop"), lambda _, args: _parse_away(args), once=True))
register(_built_in("back", ("jestem", "powrót", "powrot"), _no_arguments(BackCommand()), once=True))
register(_built_in("take", ("biorę", "biore"), _no_arguments(TakeCommand()), once=True))
register(_built_in("customer", ("klient",), lambda _, args: _parse_customer(args), once=True))


def _parse_one(name: str, args: str) -> tuple[Command, CommandSpec]:
    spec = _BY_NAME.get(name.lower())
    if spec is None:
        known = ", ".join(f"#{n}" for n in COMMANDS)
        raise Malformed(f"unknown command #{name}; known: {known}", "unknown_command", name=name, known=known)
    return spec.parse(name, args), spec


def _parse_as_written(name: str, args: str) -> tuple[Command, CommandSpec]:
    """A phone ends a line with a full stop (``#take.``) and people write ``#status: resolved``: a line
    refused as written is read once more without the colon after the name and the full stop at the end.
    Only what was refused is read again, so a note keeps its full stop (``#time 1h payroll module.``)."""
    try:
        return _parse_one(name, args)
    except Malformed as error:
        plain = args.removeprefix(":").rstrip()
        plain = plain.removesuffix(".")
        if plain == args:
            raise
        try:
            return _parse_one(name, plain)
        except Malformed:
            raise error from None


def parse_commands(text: str) -> ParsedCommands:
    """Split the command block off the top of a consultant's reply.

    Give it the new part of the reply (see ``maild.quoting.split_reply``):
    quoted history is never scanned for commands anyway, but line numbers in
    errors then match what the consultant wrote.
    """
    lines = text.split("\n")
    commands: list[Command] = []
    lines_of: list[tuple[int, str]] = []
    errors: list[CommandError] = []
    body_start = len(lines)
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        match = _COMMAND_LINE.fullmatch(line)
        if match is None or (match["gap"] and match["name"].lower() not in _BY_NAME):
            body_start = index
            break
        try:
            command, spec = _parse_as_written(match["name"], match["args"])
        except Malformed as error:
            errors.append(CommandError(index + 1, line, error.reason, error.code, error.params))
            continue
        if spec.once and any(type(c) is type(command) for c in commands):
            errors.append(
                CommandError(index + 1, line, f"#{match['name']} given twice; keep one", "twice",
                             (("name", match["name"]),))
            )
            continue
        commands.append(command)
        lines_of.append((index + 1, line))
    if not any(line.strip() for line in lines[:body_start]):
        return ParsedCommands((), text, ())
    body = "\n".join(lines[body_start:])
    return ParsedCommands(tuple(commands), body, tuple(errors), tuple(lines_of))
