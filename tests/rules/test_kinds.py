"""The contract-kind table: every kind has its one entry, and its terms survive the database."""
from __future__ import annotations

from datetime import date, datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from maild.rules.customers import CONTRACT_KINDS, Contract
from maild.rules.kinds import KINDS, TIER_BY_KIND, TIER_NAMES, contract_from_terms, contract_terms, rules_of


def test_every_kind_has_one_entry_with_its_own_tier() -> None:
    assert set(KINDS) == set(CONTRACT_KINDS)
    assert sorted(TIER_BY_KIND.values()) == list(range(len(KINDS)))
    assert TIER_NAMES == ("sla", "prepaid", "occasional", "unverified")
    assert [k for k in KINDS if KINDS[k].reaction_deadline] == ["sla"]
    assert [k for k in KINDS if KINDS[k].packages] == ["prepaid"]
    assert [k for k in KINDS if KINDS[k].billed_per_unit] == ["occasional"]
    assert rules_of("no-longer-known") is KINDS["occasional"]


@given(
    kind=st.sampled_from(CONTRACT_KINDS),
    rate=st.none() | st.integers(0, 10**7),
    hours=st.none() | st.integers(1, 200),
    clock=st.sampled_from(("calendar", "working_days", "business")),
    minutes=st.none() | st.integers(1, 10**5),
    valid_until=st.none() | st.dates(date(2020, 1, 1), date(2035, 1, 1)),
    unit=st.integers(1, 120),
)
def test_terms_round_trip(kind: str, rate: int | None, hours: int | None, clock: str, minutes: int | None,
                          valid_until: date | None, unit: int) -> None:
    contract = Contract(id="c", kind=kind, start=date(2026, 1, 1), hourly_rate_cents=rate,  # type: ignore[arg-type]
                        reaction_hours=hours, reaction_clock=clock, monthly_minutes=minutes,  # type: ignore[arg-type]
                        package_minutes=minutes, valid_until=valid_until, target_hours=hours, unit_minutes=unit)
    assert contract_from_terms("c", kind, contract.start, None, contract_terms(contract)) == contract


def test_a_removed_contract_ends_on_the_local_day_it_was_removed() -> None:
    contract = Contract(id="c", kind="sla", start=date(2026, 1, 1), monthly_minutes=60)
    removed = datetime(2026, 3, 31, 22, 30, tzinfo=timezone.utc)  # 1 April in Warsaw
    from zoneinfo import ZoneInfo

    rebuilt = contract_from_terms("c", "sla", contract.start, None, contract_terms(contract), removed,
                                  ZoneInfo("Europe/Warsaw"))
    assert rebuilt.end == date(2026, 4, 1)
