"""Commands a consultant writes at the top of a reply: ``#time 1h30m``, ``#status resolved``...

Only a block of ``#word`` lines at the very start of the body counts (blank
lines may precede or separate them); the first other line ends the block, so a
later "#1 of my questions" is text for the customer, never a command. Anything
in the block that is not a valid command becomes a ``CommandError`` with its
line number: the pipeline then applies none of the commands and tells the
consultant, because acting on half a block (time logged, status not changed)
is worse than acting on none.

Polish aliases exist for the command names (``#czas``, ``#priorytet``...)
and scopes (``szkolenie``, ``instalacja``...), since our consultants write
Polish as often as English.

Durations are whole minutes, parsed with ``Fraction`` so "1,25h" is exactly
75 and "0.01h" (36 seconds) is refused instead of rounded. A number without
a unit is refused ("2 what? write 2h or 2m"): "#time 2" was meant as 2 hours
as often as 2 minutes, and a wrong guess bills the customer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, TypeAlias, get_args

from maild.errors import MaildError

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
    "Command",
    "CommandError",
    "ParsedCommands",
    "DurationError",
    "MAX_ENTRY_MINUTES",
    "parse_duration",
    "parse_commands",
]

Scope = Literal["consultation", "installation", "training", "incident", "development"]
TicketStatus = Literal["open", "waiting", "resolved", "closed"]
Priority = Literal["P1", "P2", "P3", "P4"]

# One entry longer than a day is almost always a wrong unit ("90h" for "90m");
# multi-day work is logged day by day, which also keeps monthly statements right.
MAX_ENTRY_MINUTES = 24 * 60


@dataclass(frozen=True)
class TimeCommand:
    minutes: int
    scope: Scope | None
    note: str


@dataclass(frozen=True)
class StatusCommand:
    status: TicketStatus


@dataclass(frozen=True)
class AssignCommand:
    """``who`` as written (address or name); matching it to a consultant is the store's job."""

    who: str


@dataclass(frozen=True)
class PriorityCommand:
    priority: Priority
    reason: str


@dataclass(frozen=True)
class InternalCommand:
    """The reply is a note for colleagues and must not be relayed to the customer."""


@dataclass(frozen=True)
class VerifyCommand:
    """The consultant vouches for an unverified sender."""


Command: TypeAlias = (
    TimeCommand | StatusCommand | AssignCommand | PriorityCommand | InternalCommand | VerifyCommand
)


@dataclass(frozen=True)
class CommandError:
    line_no: int  # 1-based, in the text given to parse_commands
    line: str
    reason: str


@dataclass(frozen=True)
class ParsedCommands:
    commands: tuple[Command, ...]
    body: str  # the text without the command block: what the customer gets
    errors: tuple[CommandError, ...]


class DurationError(MaildError, ValueError):
    """A duration a consultant wrote that we cannot log; says what was wrong."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r}: {reason}")


_NUM = r"[0-9]{1,6}(?:[.,][0-9]{1,6})?"
_HOURS_UNIT = r"(?:h|hr|hrs|hours?|godz\.?|godzin[ay]?|g)"
_MINUTES_UNIT = r"(?:m|min\.?|mins|minutes?|minut[ay]?)"
_DURATION = re.compile(
    rf"""
    (?:
        (?P<clock_h>[0-9]{{1,4}}):(?P<clock_m>[0-5][0-9])            # 1:30
      | (?P<h>{_NUM})\s*{_HOURS_UNIT}
        (?: (?P<h_bare_m>[0-5]?[0-9])                                 # 1h30
          | \s*(?P<h_m>{_NUM})\s*{_MINUTES_UNIT} )?                  # 1h 30m
      | (?P<m>{_NUM})\s*{_MINUTES_UNIT}                              # 90m
    )
    """,
    re.IGNORECASE | re.ASCII | re.VERBOSE,
)


_BARE_NUMBER = re.compile(_NUM, re.ASCII)


def _number(text: str) -> Fraction:
    return Fraction(text.replace(",", "."))


def parse_duration(text: str) -> int:
    """Whole minutes in ``text``; raises ``DurationError`` with a reason a consultant understands."""
    stripped = text.strip()
    if _BARE_NUMBER.fullmatch(stripped):
        # "#time 2" was booked as 2 minutes when 2 hours were meant: a number needs its unit.
        raise DurationError(text, f"{stripped} what? write {stripped}h or {stripped}m")
    match = _DURATION.fullmatch(stripped)
    if match is None:
        raise DurationError(
            text, "not a duration; write e.g. 1h30m, 1h 30m, 90m, 1.5h, 1,5h or 0:45"
        )
    groups = match.groupdict()
    if groups["clock_h"] is not None:
        total = Fraction(int(groups["clock_h"]) * 60 + int(groups["clock_m"]))
    elif groups["h"] is not None:
        total = _number(groups["h"]) * 60
        if groups["h_bare_m"] is not None:
            total += int(groups["h_bare_m"])
        elif groups["h_m"] is not None:
            total += _number(groups["h_m"])
    else:
        total = _number(groups["m"])
    if total.denominator != 1:
        raise DurationError(
            text, f"that is {float(total):g} minutes; time is logged in whole minutes"
        )
    minutes = int(total)
    if minutes <= 0:
        raise DurationError(text, "a time entry must be at least 1 minute")
    if minutes > MAX_ENTRY_MINUTES:
        raise DurationError(
            text,
            f"more than {MAX_ENTRY_MINUTES // 60} h in one entry; check the unit or log each day separately",
        )
    return minutes


_COMMAND_LINE = re.compile(r"[ \t]*#(?P<name>[^\W\d_][\w-]*)(?P<args>.*)", re.DOTALL)

_NAMES: dict[str, str] = {
    "time": "time", "czas": "time",
    "status": "status",
    "assign": "assign", "przypisz": "assign",
    "priority": "priority", "priorytet": "priority",
    "internal": "internal", "wewnętrzne": "internal", "wewnetrzne": "internal",
    "verify": "verify", "potwierdź": "verify", "potwierdz": "verify",
}  # fmt: skip

_SCOPES: dict[str, Scope] = {
    **{scope: scope for scope in get_args(Scope)},
    "konsultacja": "consultation",
    "instalacja": "installation",
    "szkolenie": "training",
    "incydent": "incident", "awaria": "incident",
    "rozwój": "development", "rozwoj": "development",
}  # fmt: skip

_STATUSES: tuple[TicketStatus, ...] = get_args(TicketStatus)
_PRIORITIES: tuple[Priority, ...] = get_args(Priority)

# "#time 1h 30m installation" has a duration of two words; no valid duration
# is longer than four ("1 h 30 min").
_MAX_DURATION_WORDS = 4


class _Malformed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_time(args: str) -> TimeCommand:
    words = args.split()
    if not words:
        raise _Malformed("#time needs a duration, e.g. #time 1h30m installation note")
    first_error: DurationError | None = None
    for count in range(min(_MAX_DURATION_WORDS, len(words)), 0, -1):
        try:
            minutes = parse_duration(" ".join(words[:count]))
        except DurationError as error:
            first_error = error if count == 1 else first_error
            continue
        rest = words[count:]
        scope: Scope | None = None
        if rest and rest[0].lower() in _SCOPES:
            scope = _SCOPES[rest[0].lower()]
            rest = rest[1:]
        return TimeCommand(minutes=minutes, scope=scope, note=" ".join(rest))
    assert first_error is not None
    raise _Malformed(f"#time: {first_error}")


def _parse_status(args: str) -> StatusCommand:
    words = args.split()
    if len(words) != 1 or words[0].lower() not in _STATUSES:
        raise _Malformed(f"#status takes one of: {', '.join(_STATUSES)}")
    status = _STATUSES[_STATUSES.index(words[0].lower())]
    return StatusCommand(status)


def _parse_priority(args: str) -> PriorityCommand:
    words = args.split(maxsplit=1)
    if not words or words[0].upper() not in _PRIORITIES:
        raise _Malformed(
            f"#priority takes one of {', '.join(_PRIORITIES)} (P1 most urgent), then an optional reason"
        )
    priority = _PRIORITIES[_PRIORITIES.index(words[0].upper())]
    return PriorityCommand(priority, reason=words[1].strip() if len(words) > 1 else "")


def _parse_assign(args: str) -> AssignCommand:
    who = " ".join(args.split())
    if not who:
        raise _Malformed("#assign needs a consultant's address or name")
    return AssignCommand(who)


def _parse_one(name: str, args: str) -> Command:
    canonical = _NAMES.get(name.lower())
    if canonical is None:
        raise _Malformed(
            f"unknown command #{name}; known: #time, #status, #assign, #priority, #internal, #verify"
        )
    if canonical == "time":
        return _parse_time(args)
    if canonical == "status":
        return _parse_status(args)
    if canonical == "priority":
        return _parse_priority(args)
    if canonical == "assign":
        return _parse_assign(args)
    if args.strip():
        raise _Malformed(f"#{name} takes nothing after it")
    return InternalCommand() if canonical == "internal" else VerifyCommand()


_SINGLE_USE = (StatusCommand, PriorityCommand, AssignCommand)


def parse_commands(text: str) -> ParsedCommands:
    """Split the command block off the top of a consultant's reply.

    Give it the new part of the reply (see ``maild.quoting.split_reply``):
    quoted history is never scanned for commands anyway, but line numbers in
    errors then match what the consultant wrote.
    """
    lines = text.split("\n")
    commands: list[Command] = []
    errors: list[CommandError] = []
    body_start = len(lines)
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        match = _COMMAND_LINE.fullmatch(line)
        if match is None:
            body_start = index
            break
        try:
            command = _parse_one(match["name"], match["args"])
        except _Malformed as error:
            errors.append(CommandError(index + 1, line, error.reason))
            continue
        if isinstance(command, _SINGLE_USE) and any(type(c) is type(command) for c in commands):
            errors.append(
                CommandError(index + 1, line, f"#{match['name']} given twice; keep one")
            )
            continue
        commands.append(command)
    if not any(line.strip() for line in lines[:body_start]):
        return ParsedCommands((), text, ())
    body = "\n".join(lines[body_start:])
    return ParsedCommands(tuple(commands), body, tuple(errors))
