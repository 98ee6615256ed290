"""An honest guess at when a ticket without a deadline will be answered.

``prepaid`` and ``occasional`` help carries no reaction promise: the offer says
the date depends on the consultants' availability. What maild can say is where
the ticket stands in the queue and, from how fast the team answered over the
last 30 days and who is present on the coming working days, the day by which an
answer is likely. It is an estimate, worded as one, and never given for ``sla``
tickets (they have a deadline) or when there is too little history to go on.

Pure: the desk counts the history and the presence, this module does the sum.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from statistics import median

__all__ = ["MIN_DAYS", "MIN_ANSWERED", "handling_rate", "expected_by"]

# Below this much history a rate is noise: no estimate rather than a wrong one.
MIN_DAYS = 5
MIN_ANSWERED = 10
# Past this many coming days the queue is not a place a date can be read from.
HORIZON_DAYS = 60


def handling_rate(answered_per_day: Mapping[date, int], present_per_day: Mapping[date, int]) -> float | None:
    """Median tickets first-answered per present consultant per working day.

    ``present_per_day`` holds the working days of the period (days nobody was
    present are left out: they say nothing about the rate); ``answered_per_day``
    the number of tickets that got their first answer on each day. The median
    over days keeps one heroic (or idle) day from moving the estimate.
    """
    days = [d for d, n in present_per_day.items() if n > 0]
    answered = sum(answered_per_day.get(d, 0) for d in days)
    if len(days) < MIN_DAYS or answered < MIN_ANSWERED:
        return None
    rate = median(answered_per_day.get(d, 0) / present_per_day[d] for d in days)
    return rate if rate > 0 else None


def expected_by(position: int, coming: Sequence[tuple[date, int]], rate: float | None,
                overtaking_per_day: float = 0.0) -> date | None:
    """The first coming day by whose end ``position`` tickets are likely answered.

    ``position`` is the ticket's 1-based place in the queue (it counts itself);
    ``coming`` lists the coming working days (today first, if it is one) with
    the number of consultants present on each; ``overtaking_per_day`` is how
    many tickets that will rank ahead of this one (a higher tier or priority)
    arrive on a working day: they take their share of each day's answers first.
    None when there is no rate or the queue reaches past the horizon.
    """
    if rate is None or rate <= 0 or position < 1:
        return None
    done = 0.0
    for day, present in list(coming)[:HORIZON_DAYS]:
        done += max(0.0, present * rate - overtaking_per_day)
        # A fraction of a ticket is not an answer: round the day's capacity down
        # once it is more than a whole ticket, so the date errs late, not early.
        if math.floor(done + 1e-9) >= position:
            return day
    return None
