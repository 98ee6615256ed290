"""Which customer and contract a sender's mail falls under on a given day."""
from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.contracts import CustomerIndex, DuplicateClaim, resolve
from maild.rules.customers import Contract, Customer

DAY = date(2026, 3, 10)


def sla(cid: str = "acme-sla", end: date | None = None) -> Contract:
    return Contract(id=cid, kind="sla", start=date(2026, 1, 1), end=end, monthly_minutes=480, reaction_hours=24)


def prepaid(cid: str, valid_until: date, start: date = date(2026, 1, 1)) -> Contract:
    return Contract(id=cid, kind="prepaid", start=start, package_minutes=240, valid_until=valid_until)


def occasional(cid: str = "occ") -> Contract:
    return Contract(id=cid, kind="occasional", start=date(2025, 1, 1), hourly_rate_cents=20000)


def customer(cid: str, *contracts: Contract, addresses: tuple[str, ...] = (), domains: tuple[str, ...] = ()) -> Customer:
    return Customer(id=cid, name=cid.upper(), addresses=addresses, domains=domains, contracts=contracts)


def left(**minutes: int) -> Callable[[str], int]:
    return lambda contract_id: minutes.get(contract_id.replace("-", "_"), 0)


ACME = customer("acme", sla(), domains=("acme.pl",))
SUBSIDIARY = customer("acme-krakow", occasional("krk-occ"), domains=("krakow.acme.pl",))
JAN = customer("jan-private", occasional("jan-occ"), addresses=("jan@acme.pl",))
INDEX = CustomerIndex([ACME, SUBSIDIARY, JAN])


def test_exact_address_beats_domain() -> None:
    assert INDEX.customer_for("jan@acme.pl") is JAN
    assert INDEX.customer_for("ewa@acme.pl") is ACME


def test_subdomains_match_and_most_specific_domain_wins() -> None:
    assert INDEX.customer_for("ewa@mail.acme.pl") is ACME
    assert INDEX.customer_for("ewa@krakow.acme.pl") is SUBSIDIARY
    assert INDEX.customer_for("ewa@biuro.krakow.acme.pl") is SUBSIDIARY


def test_lookalike_domains_do_not_match() -> None:
    assert INDEX.customer_for("ewa@notacme.pl") is None
    assert INDEX.customer_for("ewa@acme.pl.evil.com") is None
    assert INDEX.customer_for("not an address") is None


@given(st.sampled_from(["jan@acme.pl", "ewa@krakow.acme.pl", "x@acme.pl"]), st.data())
def test_lookup_ignores_case_and_angle_brackets(address: str, data: st.DataObject) -> None:
    mixed = "".join(c.upper() if data.draw(st.booleans()) else c for c in address)
    assert INDEX.customer_for(f" <{mixed}> ") is INDEX.customer_for(address) is not None


def test_two_customers_claiming_one_domain_is_refused() -> None:
    with pytest.raises(DuplicateClaim, match="acme.pl"):
        CustomerIndex([ACME, customer("other", domains=("ACME.pl",))])


def test_sla_comes_first() -> None:
    acme = customer(
        "acme", occasional(), prepaid("acme-p1", date(2026, 12, 31)), sla(), domains=("acme.pl",)
    )
    result = resolve("Ewa@Acme.pl", CustomerIndex([acme]), DAY, left(acme_p1=100))
    assert (result.kind, result.contract, result.verified) == ("sla", acme.contracts[2], True)
    assert result.reason == "domain acme.pl (ewa@acme.pl) -> customer acme, contract acme-sla (sla)"
    assert result.fell_back_from is None


def test_prepaid_with_hours_before_occasional_and_expiring_first() -> None:
    later = prepaid("acme-p2", date(2026, 12, 31))
    sooner = prepaid("acme-p1", date(2026, 6, 30))
    acme = customer("acme", occasional(), later, sooner, addresses=("jan@acme.pl",))
    index = CustomerIndex([acme])
    result = resolve("jan@acme.pl", index, DAY, left(acme_p1=30, acme_p2=240))
    assert (result.kind, result.contract) == ("prepaid", sooner)
    assert result.reason == "address jan@acme.pl -> customer acme, contract acme-p1 (prepaid)"
    assert resolve("jan@acme.pl", index, DAY, left(acme_p2=240)).contract == later


def test_sla_outside_its_dates_does_not_apply() -> None:
    ended = sla(end=date(2026, 2, 28))
    acme = customer("acme", ended, occasional(), addresses=("jan@acme.pl",))
    result = resolve("jan@acme.pl", CustomerIndex([acme]), DAY, left())
    assert result.kind == "occasional"
    assert resolve("jan@acme.pl", CustomerIndex([acme]), date(2026, 2, 28), left()).kind == "sla"


def test_used_up_prepaid_falls_back_to_occasional() -> None:
    acme = customer("acme", prepaid("acme-p1", date(2026, 12, 31)), occasional(), addresses=("jan@acme.pl",))
    result = resolve("jan@acme.pl", CustomerIndex([acme]), DAY, left(acme_p1=0))
    assert (result.kind, result.contract, result.fell_back_from) == ("occasional", acme.contracts[1], "acme-p1")
    assert "prepaid acme-p1 used up" in result.reason
    assert (result.fell_back_why, result.fell_back_package) == ("used_up", acme.contracts[0])


def test_expired_prepaid_falls_back_even_with_minutes_left() -> None:
    acme = customer("acme", prepaid("acme-p1", date(2026, 3, 9)), addresses=("jan@acme.pl",))
    index = CustomerIndex([acme])
    assert resolve("jan@acme.pl", index, date(2026, 3, 9), left(acme_p1=60)).kind == "prepaid"
    result = resolve("jan@acme.pl", index, DAY, left(acme_p1=60))
    assert (result.kind, result.contract, result.verified) == ("occasional", None, True)
    assert result.fell_back_from == "acme-p1"
    assert "prepaid acme-p1 expired 2026-03-09" in result.reason
    assert result.fell_back_why == "expired", "expired, not 'used up or expired'"
    assert "no active contract" in result.reason


def test_package_not_yet_started_is_not_used_nor_reported() -> None:
    future = prepaid("acme-p9", date(2026, 12, 31), start=date(2026, 4, 1))
    acme = customer("acme", future, occasional(), addresses=("jan@acme.pl",))
    result = resolve("jan@acme.pl", CustomerIndex([acme]), DAY, left(acme_p9=240))
    assert (result.kind, result.fell_back_from) == ("occasional", None)


def test_known_customer_without_contract_is_verified_occasional() -> None:
    acme = customer("acme", addresses=("jan@acme.pl",))
    result = resolve("jan@acme.pl", CustomerIndex([acme]), DAY, left())
    assert (result.customer, result.contract, result.kind, result.verified) == (acme, None, "occasional", True)
    assert "no active contract" in result.reason


def test_unknown_sender_is_unverified_occasional() -> None:
    result = resolve("someone@example.com", INDEX, DAY, left())
    assert (result.customer, result.contract, result.kind, result.verified) == (None, None, "occasional", False)
    assert "someone@example.com" in result.reason and "unverified" in result.reason


@given(st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 12, 31)), st.integers(0, 300), st.integers(0, 300))
def test_choice_order_holds_on_any_day(day: date, left_p1: int, left_p2: int) -> None:
    """Whatever the day and balances, the pick is the first usable of sla > prepaid > occasional."""
    contracts = (
        sla(end=date(2026, 6, 30)),
        prepaid("acme-p1", date(2026, 9, 30)),
        prepaid("acme-p2", date(2027, 3, 31), start=date(2026, 5, 1)),
        occasional(),
    )
    acme = customer("acme", *contracts, addresses=("jan@acme.pl",))
    balances = {"acme-p1": left_p1, "acme-p2": left_p2}
    result = resolve("jan@acme.pl", CustomerIndex([acme]), day, balances.__getitem__)
    usable_prepaid = [c for c in contracts[1:3] if c.active_on(day) and balances[c.id] > 0]
    expected: Contract | None
    if contracts[0].active_on(day):
        expected = contracts[0]
    elif usable_prepaid:
        expected = usable_prepaid[0]
    else:
        expected = contracts[3] if contracts[3].active_on(day) else None
    assert result.contract == expected
    assert result.kind == (expected.kind if expected else "occasional")


_ADDRESS_PARTS = st.sampled_from(["jan", "JAN", "ola", "a+b", "x", "", " ", "<", ">", "@", ".", "acme", "pl",
                                  "krakow", "Acme", "ACME", "acme.pl.", "ąę", "..", "-"])


@given(st.lists(st.lists(_ADDRESS_PARTS, max_size=6).map("".join), max_size=30), st.booleans())
def test_remembered_lookups_answer_as_a_fresh_lookup(addresses: list[str], full: bool) -> None:
    """The index keeps its answer per address as given (a batch asks for a sender three times);
    each answer, asked again, with the memory cleared when full, is the one a fresh lookup gives."""
    import maild.rules.contracts as contracts

    index = CustomerIndex([ACME, SUBSIDIARY, JAN])
    saved = contracts._MATCHED_KEPT
    contracts._MATCHED_KEPT = 2 if full else saved
    try:
        for address in addresses + addresses:
            assert index._match(address) == index._match_now(address)
            assert index.customer_for(address) is index._match_now(address)[0]
        assert len(index._matched) <= contracts._MATCHED_KEPT
    finally:
        contracts._MATCHED_KEPT = saved
