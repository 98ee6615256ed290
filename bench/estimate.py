"""How good is the acknowledgement's "likely answered by" date? A replayed month of generated traffic.

    .venv/bin/python bench/estimate.py [--seed N] [--consultants 4] [--per-day 25] [--capacity 7]

A deterministic simulation on a real SQLite database, through maild's own code
(``maild.desk.team.Team``: presence, the 30-day handling rate, ``expected_by``):

- working days of the Polish business calendar; tickets arrive between 07:00 and
  17:00 local (sla 25 %, prepaid 40 %, occasional 35 %; P1 10 %, P2 10 %);
- each present consultant answers a Poisson-distributed number of tickets a day
  (mean ``--capacity``), in queue order (tier, priority, age), so sla tickets
  arriving later still overtake the prepaid ones: the hard case for an estimate;
- one consultant is away for a week in the measured month (config ``away``);
- 30 days of warm-up give the estimate its history; every prepaid and occasional
  ticket of the next 30 days gets its queue position and ``expected_by`` at
  arrival, as the acknowledgement would.

Prints the share answered by their estimate and the median distance between the
estimate and the actual answer in working days (target: >= 80 %, <= 2).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select  # noqa: E402

from maild.config import load_config  # noqa: E402
from maild.desk.team import Team  # noqa: E402
from maild.storage.db import open_database  # noqa: E402
from maild.storage.models import Event, Ticket  # noqa: E402
from maild.storage.store import OPEN_STATUSES, queue_order  # noqa: E402

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")
TIER = {"sla": 0, "prepaid": 1, "occasional": 2}


def poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def config_text(tmp: Path, consultants: int, away_from: date) -> str:
    people = "\n".join(
        f'[[consultants]]\nemail = "c{i}@firma.pl"\nname = "C{i}"\n'
        + (f'away = [{{ from = {away_from.isoformat()}, until = {(away_from + timedelta(days=6)).isoformat()} }}]\n'
           if i == 0 else "")
        for i in range(consultants))
    (tmp / "customers.toml").write_text("", encoding="utf-8")
    return f"""customers_file = "customers.toml"
[storage]
path = "{tmp / 'var'}"
[maildir]
path = "{tmp / 'Maildir'}"
[smtp]
host = "127.0.0.1"
security = "none"
from_address = "support@firma.pl"
[support]
address = "support@firma.pl"
{people}
[[consultants]]
email = "szef@firma.pl"
name = "Szef"
role = "manager"
"""


def local(d: date, hour: float) -> datetime:
    return datetime.combine(d, time(0), WARSAW).astimezone(UTC) + timedelta(hours=hour)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--consultants", type=int, default=4)
    ap.add_argument("--per-day", type=float, default=25.0, help="mean tickets arriving per working day")
    ap.add_argument("--capacity", type=float, default=7.0, help="mean first answers per consultant per day")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    start = date(2026, 9, 1)
    measured_from, measured_until = start + timedelta(days=30), start + timedelta(days=60)
    tmp = Path(tempfile.mkdtemp(prefix="maild-estimate-"))
    cfg_path = tmp / "maild.toml"
    cfg_path.write_text(config_text(tmp, args.consultants, measured_from + timedelta(days=10)), encoding="utf-8")
    cfg = load_config(cfg_path)
    sessions = open_database(cfg.database_url)
    predictions: dict[int, tuple[date, int]] = {}
    answered_on: dict[int, date] = {}
    next_id = 0
    with sessions() as s:
        team = Team(s, cfg)
        cal = team.calendar
        day = start
        while day < measured_until + timedelta(days=40):
            if cal.is_business_day(day):
                arrivals = poisson(rng, args.per_day) if day < measured_until else 0
                times = sorted(rng.uniform(7, 17) for _ in range(arrivals))
                rate_today = team.handling_rate(local(day, 7))
                for hour in times:
                    next_id += 1
                    at = local(day, hour)
                    kind = rng.choices(["sla", "prepaid", "occasional"], [25, 40, 35])[0]
                    prio = rng.choices(["P1", "P2", "P3"], [10, 10, 80])[0]
                    ticket = Ticket(id=next_id, subject="t", status="new", contract_kind=kind, verified=True,
                                    tier=TIER[kind], priority=prio, created_at=at, updated_at=at,
                                    reaction_due=at + timedelta(hours=24) if kind == "sla" else None)
                    s.add(ticket)
                    s.flush()
                    if kind != "sla" and measured_from <= day < measured_until:
                        ranks = s.scalars(select(Ticket.id).where(Ticket.status.in_(OPEN_STATUSES))
                                          .order_by(*queue_order())).all()
                        position = ranks.index(next_id) + 1
                        guess = team.expected_by(position, at, rate_today, tier=TIER[kind], priority=prio)
                        if guess is not None:
                            predictions[next_id] = (guess, position)
                # the day's work, in queue order
                present = team.present(local(day, 12))
                capacity = sum(poisson(rng, args.capacity) for _ in present)
                todo = s.scalars(select(Ticket).where(Ticket.status.in_(OPEN_STATUSES))
                                 .order_by(*queue_order()).limit(capacity)).all()
                for ticket in todo:
                    when = max(ticket.created_at, local(day, 8)) + timedelta(minutes=rng.uniform(5, 240))
                    when = min(when, local(day, 23.9))
                    ticket.status, ticket.first_response_at = "resolved", when
                    s.add(Event(ticket_id=ticket.id, kind="first_response", at=when,
                                actor=rng.choice(present).email if present else "x", detail={}))
                    answered_on[ticket.id] = when.astimezone(WARSAW).date()
                s.flush()
            day += timedelta(days=1)
        s.commit()

        def working_days_between(a: date, b: date) -> int:
            sign, lo, hi = (1, a, b) if a <= b else (-1, b, a)
            return sign * sum(1 for i in range((hi - lo).days) if cal.is_business_day(lo + timedelta(days=i + 1)))

    measured = [(tid, guess, pos) for tid, (guess, pos) in predictions.items()]
    met = [tid for tid, guess, _ in measured if tid in answered_on and answered_on[tid] <= guess]
    late_by = [working_days_between(answered_on[tid], guess) for tid, guess, _ in measured if tid in answered_on]
    unanswered = sum(1 for tid, _, _ in measured if tid not in answered_on)
    share = len(met) / len(measured) if measured else 0.0
    print(f"tickets estimated: {len(measured)} (prepaid and occasional, {measured_from}..{measured_until}); "
          f"never answered: {unanswered}")
    print(f"answered by their estimate: {share:.1%}  (target >= 80%)")
    if late_by:
        print(f"estimate minus actual answer, working days: median {statistics.median(late_by):+.1f}, "
              f"p10 {sorted(late_by)[len(late_by) // 10]:+d}, p90 {sorted(late_by)[len(late_by) * 9 // 10]:+d}  "
              f"(target: median <= +2)")
        print(f"queue position at arrival: median {statistics.median(p for _, _, p in measured):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
