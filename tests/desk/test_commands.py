"""Consultant commands at the top of a reply, and the durations they log."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.desk.commands import (
    ScopeCommand,
    TakeCommand,
    MAX_ENTRY_MINUTES,
    AssignCommand,
    CommandError,
    DurationError,
    InternalCommand,
    ParsedCommands,
    PriorityCommand,
    StatusCommand,
    TimeCommand,
    VerifyCommand,
    parse_commands,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("1h30m", 90),
        ("1h 30m", 90),
        ("1 h 30 min", 90),
        ("1h30", 90),
        ("1H30M", 90),
        ("90m", 90),
        ("90min", 90),
        ("90 minutes", 90),
        ("1.5h", 90),
        ("1,5h", 90),
        ("1.25h", 75),
        ("0,1h", 6),
        ("2h", 120),
        ("2 hours", 120),
        ("1hr", 60),
        ("2 godz.", 120),
        ("2godz 15min", 135),
        ("0:45", 45),
        ("1:05", 65),
        ("24h", 24 * 60),
        ("1h05", 65),
    ],
)
def test_valid_durations(text: str, minutes: int) -> None:
    result = parse_duration(text)
    assert result == minutes
    assert type(result) is int


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("abc", "not a duration"),
        ("", "not a duration"),
        ("1.5", "1.5 what? write 1.5h or 1.5m"),
        ("2", "2 what? write 2h or 2m"),
        (" 45 ", "45 what? write 45h or 45m"),
        ("1,5", "1,5 what? write 1,5h or 1,5m"),
        ("h", "not a duration"),
        ("1h 2h", "not a duration"),
        ("30m 1h", "not a duration"),
        ("0:75", "not a duration"),
        ("1h75", "not a duration"),
        ("-30m", "not a duration"),
        ("1e3m", "not a duration"),
        ("１h", "not a duration"),
        ("0.01h", "0.6 minutes"),
        ("1.5m", "1.5 minutes"),
        ("0h", "at least 1 minute"),
        ("0:00", "at least 1 minute"),
        ("25h", "more than 24 h"),
        ("90h", "more than 24 h"),
        ("9" * 40, "not a duration"),
    ],
)
def test_invalid_durations_say_why(text: str, says: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(text)
    assert says in raised.value.reason
    assert raised.value.text == text


minutes_strategy = st.integers(min_value=1, max_value=MAX_ENTRY_MINUTES)


def _decimal_hours(minutes: int) -> str | None:
    hours = Fraction(minutes, 60)
    for places in range(0, 4):
        scaled = hours * 10**places
        if scaled.denominator == 1:
            whole, frac = divmod(int(scaled), 10**places)
            return f"{whole}.{frac:0{places}d}h" if places else f"{whole}h"
    return None


FORMATS = {
    "minutes": lambda m: f"{m}m",
    "min": lambda m: f"{m} min",
    "clock": lambda m: f"{m // 60}:{m % 60:02d}",
    "h+m": lambda m: f"{m // 60}h{m % 60}m",
    "h m spaced": lambda m: f"{m // 60}h {m % 60}m",
    "h+bare": lambda m: f"{m // 60}h{m % 60:02d}",
}


@given(minutes=minutes_strategy, style=st.sampled_from(sorted(FORMATS)))
def test_formatted_minutes_parse_back(minutes: int, style: str) -> None:
    assert parse_duration(FORMATS[style](minutes)) == minutes


@given(number=st.integers(min_value=0, max_value=999999))
def test_a_number_without_unit_is_never_booked(number: int) -> None:
    """``#time 2`` meant 2 hours more often than 2 minutes: refused, naming both readings."""
    with pytest.raises(DurationError) as raised:
        parse_duration(str(number))
    assert raised.value.reason == f"{number} what? write {number}h or {number}m"


@given(minutes=minutes_strategy, comma=st.booleans())
def test_decimal_hours_parse_back_when_exact(minutes: int, comma: bool) -> None:
    text = _decimal_hours(minutes)
    if text is None:
        return
    if comma:
        text = text.replace(".", ",")
    assert parse_duration(text) == minutes


@given(hundredths=st.integers(min_value=1, max_value=2400))
def test_decimal_hours_never_round(hundredths: int) -> None:
    text = f"{hundredths // 100}.{hundredths % 100:02d}h"
    exact = Fraction(hundredths, 100) * 60
    if exact.denominator == 1:
        assert parse_duration(text) == exact
    else:
        with pytest.raises(DurationError):
            parse_duration(text)


def test_each_command() -> None:
    parsed = parse_commands(
        "#time 1h30m installation wdrożenie wersji 2025.4\n"
        "#status waiting\n"
        "#assign Anna Nowak\n"
        "#priority P1 customer's production is down\n"
        "#internal\n"
        "#verify\n"
        "\n"
        "Dzień dobry,\n"
        "proszę o zrzut ekranu.\n"
    )
    assert parsed == ParsedCommands(
        commands=(
            TimeCommand(90, "installation", "wdrożenie wersji 2025.4"),
            StatusCommand("waiting"),
            AssignCommand("Anna Nowak"),
            PriorityCommand("P1", "customer's production is down"),
            InternalCommand(),
            VerifyCommand(),
        ),
        body="Dzień dobry,\nproszę o zrzut ekranu.\n",
        errors=(),
    )


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("#time 45m", TimeCommand(45, None, "")),
        ("#time 1h 30m training payroll module", TimeCommand(90, "training", "payroll module")),
        ("#time 1 h 30 min call with the CFO", TimeCommand(90, None, "call with the CFO")),
        ("#time 2h 3 users trained", TimeCommand(120, None, "3 users trained")),
        ("#time 0:45 Incident", TimeCommand(45, "incident", "")),
        ("#TIME 15m consultation", TimeCommand(15, "consultation", "")),
        ("#czas 1,5h szkolenie kadry", TimeCommand(90, "training", "kadry")),
        ("#czas 2h rozwój nowy wydruk", TimeCommand(120, "development", "nowy wydruk")),
        ("#status Resolved", StatusCommand("resolved")),
        ("#assign jan.kowalski@example.com", AssignCommand("jan.kowalski@example.com")),
        ("#przypisz  Łukasz   Żak ", AssignCommand("Łukasz Żak")),
        ("#priority p2", PriorityCommand("P2", "")),
        ("#priorytet P1 stoi produkcja", PriorityCommand("P1", "stoi produkcja")),
        ("#wewnętrzne", InternalCommand()),
        ("#potwierdź", VerifyCommand()),
        # as a phone or a hurried hand writes them: read once more without the colon and the full stop
        ("#take.", TakeCommand()),
        ("#status: resolved", StatusCommand("resolved")),
        ("#status resolved.", StatusCommand("resolved")),
        ("#time 30m.", TimeCommand(30, None, "")),
        ("#time 1h payroll module.", TimeCommand(60, None, "payroll module.")),
    ],
)
def test_command_forms(line: str, command: object) -> None:
    parsed = parse_commands(line + "\nbody")
    assert parsed.errors == ()
    assert parsed.commands == (command,)
    assert parsed.body == "body"


def test_errors_carry_line_numbers_and_reasons() -> None:
    text = (
        "\n"
        "#time 1h\n"
        "#foo bar\n"
        "#time abc\n"
        "#status maybe\n"
        "#priority P9 urgent\n"
        "#assign\n"
        "#internal please\n"
        "#time 0.01h\n"
        "Body.\n"
    )
    parsed = parse_commands(text)
    assert parsed.commands == (TimeCommand(60, None, ""),)
    assert [(e.line_no, e.line) for e in parsed.errors] == [
        (3, "#foo bar"),
        (4, "#time abc"),
        (5, "#status maybe"),
        (6, "#priority P9 urgent"),
        (7, "#assign"),
        (8, "#internal please"),
        (9, "#time 0.01h"),
    ]
    reasons = [e.reason for e in parsed.errors]
    assert "unknown command #foo" in reasons[0]
    assert "'abc'" in reasons[1] and "not a duration" in reasons[1]
    assert "open, waiting, resolved, closed" in reasons[2]
    assert "P1, P2, P3, P4" in reasons[3]
    assert "address or name" in reasons[4]
    assert "takes nothing" in reasons[5]
    assert "whole minutes" in reasons[6]
    assert parsed.body == "Body.\n"


def test_conflicting_single_use_commands_are_errors() -> None:
    parsed = parse_commands("#status resolved\n#status open\n#time 1h\n#time 30m\n")
    assert parsed.commands == (StatusCommand("resolved"), TimeCommand(60, None, ""), TimeCommand(30, None, ""))
    assert parsed.errors == (CommandError(2, "#status open", "#status given twice; keep one"),)


def test_blank_lines_before_and_between_commands() -> None:
    parsed = parse_commands("\r\n\n#time 30m\r\n\n#status resolved\n\nDziękuję,\nJan")
    assert parsed.commands == (TimeCommand(30, None, ""), StatusCommand("resolved"))
    assert parsed.body == "Dziękuję,\nJan"
    assert parsed.errors == ()


def test_later_hash_lines_are_text() -> None:
    text = "#time 20m\nHello,\n#1 of my questions: the VAT report\n#status resolved\n"
    parsed = parse_commands(text)
    assert parsed.commands == (TimeCommand(20, None, ""),)
    assert parsed.body == "Hello,\n#1 of my questions: the VAT report\n#status resolved\n"


@pytest.mark.parametrize("text", ["#1 of my questions\n#time 1h\n", "# Summary\n", "## notes", "Hi\n#time 1h", ""])
def test_text_without_a_command_block_is_unchanged(text: str) -> None:
    assert parse_commands(text) == ParsedCommands((), text, ())


def test_commands_only_leave_an_empty_body() -> None:
    assert parse_commands("#time 1h\n#status closed\n").body == ""


@given(st.text(max_size=200))
def test_any_text_parses_without_raising_and_keeps_non_command_lines(text: str) -> None:
    parsed = parse_commands(text)
    assert parsed.body in text
    assert len(parsed.commands) + len(parsed.errors) <= text.count("#")


def test_the_command_table_is_the_one_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command registered once is parsed (under each of its names), listed in the help
    lines and named in the "unknown command" reply; a name taken twice is refused."""
    from dataclasses import dataclass

    from maild.desk import commands

    monkeypatch.setattr(commands, "COMMANDS", dict(commands.COMMANDS))
    monkeypatch.setattr(commands, "_BY_NAME", dict(commands._BY_NAME))
    from maild.rules import command_help

    monkeypatch.setattr(command_help, "_HELP", dict(command_help._HELP))
    monkeypatch.setattr(command_help, "_MADE", {})
    assert parse_commands("#nope\n").errors[0].reason == (
        "unknown command #nope; known: #time, #status, #assign, #priority, #scope, #internal, #verify, #away, #back, "
        "#take, #customer")

    @dataclass(frozen=True)
    class Wave(commands.Command):
        pass

    commands.register(commands.CommandSpec("wave", ("machaj",), "#wave", lambda _, args: Wave()))
    assert parse_commands("#machaj\nhi\n").commands == (Wave(),)
    assert commands.help_lines()[-1] == "#wave"
    assert command_help.notification_values("pl")["commands"][-1] == "#wave", "the notifications list it too"
    assert parse_commands("#nope\n").errors[0].reason.endswith("#customer, #wave")
    # #take assigns the sender; #customer only opens new tickets, so on a reply it is refused
    take = parse_commands("#take\n#customer acme\nText")
    assert [type(c).__name__ for c in take.commands] == ["TakeCommand", "CustomerCommand"]
    assert take.commands[1].check(None) is not None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="#czas is registered twice"):
        commands.register(commands.CommandSpec("clock", ("czas",), "#clock", lambda _, args: Wave()))


@pytest.mark.parametrize(
    ("line", "scope"),
    [("#scope szkolenie", "training"), ("#zakres rozwój", "development"), ("#scope problem", "incident"),
     ("#scope training", "training")],
)
def test_scope_command_takes_either_language(line: str, scope: str) -> None:
    parsed = parse_commands(f"{line}\nTekst.")
    assert parsed.errors == ()
    assert parsed.commands == (ScopeCommand(scope),)  # type: ignore[arg-type]


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_help_shows_the_readers_scope_words_and_every_one_is_taken(language: str) -> None:
    """A Polish consultant's help read "#scope consultation|installation|...": each language's words
    now, and every word either help shows works from anyone, with #scope, #zakres and after #time,
    storing the scope's key."""
    from maild.desk.commands import help_lines
    from maild.rules.scope import SCOPES, keywords

    line = next(h for h in help_lines(language) if h.startswith("#scope "))
    words = line.removeprefix("#scope ").split("|")
    assert words == list(keywords(language)), line
    expected = {"pl": ["konsultacja", "instalacja", "szkolenie", "problem", "rozwój"],
                "en": ["consultation", "installation", "training", "problem", "development"]}
    assert words == expected[language]
    for other in ("pl", "en"):  # the other language's words are taken too, whoever writes them
        for word, scope in zip(keywords(other), SCOPES):
            for text in (f"#scope {word}", f"#zakres {word.upper()}"):
                assert parse_commands(f"{text}\nTekst.").commands == (ScopeCommand(scope),), text
            assert parse_commands(f"#time 1h {word} notatka\n").commands == (TimeCommand(60, scope, "notatka"),)


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_help_shows_the_readers_status_words_and_every_one_is_taken(language: str) -> None:
    """The Polish help listed "#status open|waiting|resolved|closed"; the Polish words now, and a
    status is taken in either language (and without Polish letters) from anyone."""
    from maild.desk.commands import StatusCommand, help_lines

    line = next(h for h in help_lines(language) if h.startswith("#status "))
    expected = {"pl": "#status otwarte|czeka|rozwiązane|zamknięte", "en": "#status open|waiting|resolved|closed"}
    assert line == expected[language]
    statuses = ("open", "waiting", "resolved", "closed")
    for words in (expected["pl"], expected["en"], "#status otwarte|czeka|rozwiazane|zamkniete"):
        for word, status in zip(words.removeprefix("#status ").split("|"), statuses, strict=True):
            assert parse_commands(f"#status {word.upper()}\nTekst.").commands == (StatusCommand(status),), word
    assert [e.code for e in parse_commands("#status otwarty\n").errors] == ["status_choice"]


def test_time_scope_in_polish() -> None:
    parsed = parse_commands("#time 1h szkolenie z JPK\n")
    assert parsed.commands == (TimeCommand(60, "training", "z JPK"),)


def test_errors_carry_a_code_for_the_consultants_language() -> None:
    parsed = parse_commands("#time 2\n#scope gotowanie\n#status later\n#frobnicate\n")
    assert [(e.line_no, e.code) for e in parsed.errors] == [
        (1, "bare_number"), (2, "scope_choice"), (3, "status_choice"), (4, "unknown_command")]
    assert dict(parsed.errors[0].params)["number"] == "2"


def test_away_and_back_parse() -> None:
    from datetime import date

    from maild.desk.commands import AwayCommand, BackCommand, help_lines

    parsed = parse_commands("#away 2026-12-21..2027-01-03 urlop\n")
    assert parsed.commands == (AwayCommand(date(2026, 12, 21), date(2027, 1, 3), "urlop"),)
    assert parse_commands("#urlop 2026-12-21\n").commands == (AwayCommand(date(2026, 12, 21), date(2026, 12, 21), ""),)
    assert parse_commands("#back\n").commands == (BackCommand(),)
    assert "#back" in help_lines()
    for bad, words in (("#away\n", "needs the days"), ("#away 2026-12-24..2026-12-20\n", "before"),
                       ("#away jutro\n", "not a date"), ("#back now\n", "nothing")):
        [error] = parse_commands(bad).errors
        assert words in error.reason and error.line_no == 1, error


def test_assign_finds_a_first_name_or_local_part_only_when_one_consultant_has_it() -> None:
    from types import SimpleNamespace

    from maild.config import Consultant
    from maild.desk.context import DeskContext

    team = [Consultant("anna@firma.pl", "Anna Nowak"), Consultant("a.kowal@firma.pl", "Anna Kowal"),
            Consultant("bob@firma.pl", "Bob Kowal")]
    ctx = SimpleNamespace(config=SimpleNamespace(consultants=team))
    found = {who: DeskContext.find_consultant(ctx, who) for who in  # type: ignore[arg-type]
             ("Bob", "bob", "BOB@firma.pl", "anna kowal", "a.kowal", "Anna", "Kowal", "")}
    assert found == {"Bob": "bob@firma.pl", "bob": "bob@firma.pl", "BOB@firma.pl": "bob@firma.pl",
                     "anna kowal": "a.kowal@firma.pl", "a.kowal": "a.kowal@firma.pl",
                     "Anna": None, "Kowal": None, "": None}
