"""``maild consultants list|away|back``: who is at work, and a sick day without editing the config.

An absence recorded here lives in the database and counts together with the
``away`` lists of the config file; the daemon sees it at its next cycle (no
reload needed): new tickets go to the others, and the absent consultant's open
tickets are reassigned.
"""
from __future__ import annotations

import argparse
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from maild.cli.common import Commands, UsageError
from maild.cli.output import print_json, print_table

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from maild.config import Config
    from maild.desk.team import MemberStats, Team

UTC = timezone.utc


class ConsultantsUsageError(UsageError):
    """A bad date or address on the command line (exit 2)."""


def register(commands: Commands) -> None:
    group = commands.group("consultants", "consultants: presence, absences, load")
    ls = commands.add_to(group, "list", run, help="each consultant: present today, next absence, open tickets, "
                                                   "answers and median first response in the last 30 days",
                         needs="engine")
    ls.add_argument("--json", action="store_true")
    away = commands.add_to(group, "away", run, help="record an absence (dates inclusive, local time)", needs="engine")
    away.add_argument("email")
    away.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD")
    away.add_argument("--until", required=True, metavar="YYYY-MM-DD")
    away.add_argument("--note", default="")
    back = commands.add_to(group, "back", run, help="end a recorded absence from today on", needs="engine")
    back.add_argument("email")


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConsultantsUsageError(f"{option} {text!r}: give a date as YYYY-MM-DD") from None


def run(cfg: Config, engine: Engine, args: argparse.Namespace, now: datetime | None = None) -> int:
    """On a Connection: the team reads and writes ``tables`` in Core (no ORM); a change is one
    transaction, begun IMMEDIATE on SQLite as the command line's sessions are (``db.sessions_for``)."""
    from maild.desk.context import business_calendar
    from maild.desk.team import Team, TeamError

    at = now or datetime.now(UTC)
    calendar = business_calendar(cfg, write=False)  # the daemon's kept holidays
    try:
        if args.sub == "away":
            start, until = _date(args.start, "--from"), _date(args.until, "--until")
            if until < start:
                raise ConsultantsUsageError(f"--until {until.isoformat()} is before --from {start.isoformat()}")
            with engine.execution_options(maild_immediate=True).begin() as conn:
                team = Team(conn, cfg, calendar)
                team.record_absence(args.email, start, until, args.note, "maild-cli", at)
            print(f"{team.consultant(args.email).email} away {start.isoformat()}..{until.isoformat()}")
            return 0
        if args.sub == "back":
            with engine.execution_options(maild_immediate=True).begin() as conn:
                team = Team(conn, cfg, calendar)
                ended = team.end_absence(args.email, at, "maild-cli")
            print(f"{team.consultant(args.email).email} back ({ended} recorded absence(s) ended)")
            return 0
        with engine.connect() as conn:
            return _list(Team(conn, cfg, calendar), at, args.json)
    except TeamError as exc:
        raise ConsultantsUsageError(str(exc)) from exc


def _list(team: Team, at: datetime, as_json: bool) -> int:
    stats = team.stats(at)
    if as_json:
        data: list[dict[str, Any]] = [{
            "email": m.consultant.email,
            "name": m.consultant.name,
            "role": m.consultant.role,
            "language": m.consultant.language,
            "present": m.present,
            "next_absence": None if m.next_absence is None else {
                "from": m.next_absence.start.isoformat(), "until": m.next_absence.until.isoformat(),
                "note": m.next_absence.note, "source": m.next_absence.source},
            "open_assigned": m.open_assigned,
            "answered_30d": m.answered_30d,
            "median_first_response_minutes": m.median_first_response_minutes,
        } for m in stats]
        print_json(data)
        return 0
    print_table(
        ["email", "role", "lang", "present", "next absence", "open", "answered 30d", "median 1st answer"],
        [[m.consultant.email, m.consultant.role, m.consultant.language, _present(m),
          m.next_absence.describe() if m.next_absence else "-", m.open_assigned, m.answered_30d,
          "-" if m.median_first_response_minutes is None else _minutes(m.median_first_response_minutes)]
         for m in stats])
    return 0


def _present(member: MemberStats) -> str:
    """"yes"/"no" for a consultant; "-" for a manager, whom the team never counts present (managers are
    never assigned): "no" read as a manager on leave."""
    if member.consultant.role != "consultant":
        return "-"
    return "yes" if member.present else "no"


def _minutes(total: int) -> str:
    hours, minutes = divmod(total, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
