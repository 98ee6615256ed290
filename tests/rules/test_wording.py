"""Numbers, dates, durations and money as customers read them, in Polish and English."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.rules.wording import (
    format_date,
    format_deadline,
    format_duration,
    format_money,
    format_month,
    format_percent,
    format_status,
    plural,
    polish_plural_form,
)

UTC = timezone.utc


@pytest.mark.parametrize(
    ("n", "noun", "text"),
    [
        (1, "day", "1 dzień"), (2, "day", "2 dni"), (5, "day", "5 dni"),
        (1, "hour", "1 godzina"), (2, "hour", "2 godziny"), (4, "hour", "4 godziny"), (5, "hour", "5 godzin"),
        (12, "hour", "12 godzin"), (13, "hour", "13 godzin"), (14, "hour", "14 godzin"), (22, "hour", "22 godziny"),
        (21, "hour", "21 godzin"), (0, "hour", "0 godzin"), (112, "hour", "112 godzin"), (104, "hour", "104 godziny"),
        (1, "working_day", "1 dzień roboczy"), (3, "working_day", "3 dni robocze"), (14, "day", "14 dni"),
        (2, "ticket", "2 zgłoszenia"), (25, "ticket", "25 zgłoszeń"),
    ],
)
def test_polish_plural_forms(n: int, noun: str, text: str) -> None:
    assert plural(n, noun, "pl") == text


@pytest.mark.parametrize(("n", "text"), [(1, "1 day"), (0, "0 days"), (2, "2 days"), (21, "21 days")])
def test_english_plural_forms(n: int, text: str) -> None:
    assert plural(n, "day", "en") == text


def test_unknown_noun_is_refused() -> None:
    with pytest.raises(ValueError, match="no plural forms"):
        plural(2, "cow")


@given(st.integers(min_value=0, max_value=10**6))
def test_polish_plural_depends_only_on_the_last_two_digits(n: int) -> None:
    form = polish_plural_form(n)
    if n == 1:
        assert form == 0
    elif n % 10 in (2, 3, 4) and not 12 <= n % 100 <= 14:
        assert form == 1
    else:
        assert form == 2
    if n > 100:
        assert form == polish_plural_form(n % 100 + 100)


@pytest.mark.parametrize(
    ("value", "pl", "en"),
    [
        (date(2026, 12, 7), "7.12.2026 r.", "7 December 2026"),
        ("2026-01-31", "31.01.2026 r.", "31 January 2026"),
    ],
)
def test_dates(value: date | str, pl: str, en: str) -> None:
    assert format_date(value, "pl") == pl
    assert format_date(value, "en") == en


def test_months_by_name() -> None:
    assert format_month("2026-12", "pl") == "grudzień 2026"
    assert format_month("2026-02", "en") == "February 2026"


def test_deadline_as_a_customer_reads_it() -> None:
    due = datetime(2026, 12, 7, 14, 59, tzinfo=UTC)
    assert format_deadline(due, "Europe/Warsaw", "pl") == "poniedziałku 7.12.2026 r., godz. 15:59"
    assert format_deadline(due, "Europe/Warsaw", "en") == "Monday 7 December 2026, 15:59 (Polish time)"
    assert format_deadline("2026-12-07T14:59:00Z", "Europe/Warsaw", "pl").startswith("poniedziałku")
    # elsewhere the offset is given, never the tz database name
    assert format_deadline(due, "Europe/London", "en") == "Monday 7 December 2026, 14:59 (UTC+00:00)"
    assert "London" not in format_deadline(due, "Europe/London", "pl")


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_deadlines_never_name_the_zone(moment: datetime) -> None:
    for language in ("pl", "en"):
        text = format_deadline(moment, "Europe/Warsaw", language)
        assert "Europe" not in text and "Warsaw" not in text


@pytest.mark.parametrize(
    ("minutes", "pl", "en"),
    [(45, "45 min", "45 min"), (480, "8 godz.", "8 h"), (90, "1 godz. 30 min", "1 h 30 min"), (0, "0 min", "0 min"),
     (-75, "-1 godz. 15 min", "-1 h 15 min"), (74_130, "1235 godz. 30 min", "1,235 h 30 min"),
     (-60_000_000, "-1000000 godz.", "-1,000,000 h")],
)
def test_durations_without_zero_parts(minutes: int, pl: str, en: str) -> None:
    assert format_duration(minutes, "pl") == pl
    assert format_duration(minutes, "en") == en


@given(st.integers(min_value=-10**7, max_value=10**7))
def test_durations_read_back_to_the_minutes(minutes: int) -> None:
    text = format_duration(minutes, "en")
    sign = -1 if text.startswith("-") else 1
    total = 0
    words = text.lstrip("-").split()
    for number, unit in zip(words[::2], words[1::2]):
        total += int(number.replace(",", "")) * (60 if unit == "h" else 1)
    assert sign * total == minutes
    if minutes:
        assert " 0 " not in f" {text} "  # no zero part


@pytest.mark.parametrize(
    ("cents", "pl", "en"),
    [(25000, "250,00 zł", "PLN 250.00"), (5, "0,05 zł", "PLN 0.05"), (123456789, "1 234 567,89 zł", "PLN 1,234,567.89"),
     (-30750, "-307,50 zł", "-PLN 307.50")],
)
def test_money(cents: int, pl: str, en: str) -> None:
    assert format_money(cents, "pl") == pl
    assert format_money(cents, "en") == en


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_money_reads_back_to_the_grosze(cents: int) -> None:
    pl = format_money(cents, "pl")
    assert int(pl.removesuffix(" zł").replace(" ", "").replace(",", "")) == cents
    en = format_money(cents, "en")
    assert int(en.replace("PLN ", "").replace(",", "").replace(".", "")) == cents


@pytest.mark.parametrize(("n", "pl", "en"), [(0, "0", "0"), (999, "999", "999"), (1488, "1488", "1,488"),
                                             (-1234567, "-1234567", "-1,234,567")])
def test_numbers_as_their_reader_writes_them(n: int, pl: str, en: str) -> None:
    """An English report read "1488 tickets opened", "1398 h": a count or an hour figure has a comma
    between thousands in English; Polish keeps the figures as every Polish text wrote them."""
    from maild.rules.wording import format_number

    assert (format_number(n, "pl"), format_number(n, "en")) == (pl, en)
    assert plural(n, "ticket", "en") == f"{en} {'ticket' if abs(n) == 1 else 'tickets'}"
    assert plural(n, "ticket", "pl").startswith(f"{pl} ")


def test_percent_has_no_space() -> None:
    assert format_percent(80, "pl") == "80%"


def test_a_status_reads_polish_in_polish_mail_and_as_the_command_keyword_in_english() -> None:
    assert [format_status(s, "pl") for s in ("new", "open", "waiting", "resolved", "closed")] == [
        "nowe", "otwarte", "czeka na klienta", "rozwiązane", "zamknięte"]
    assert [format_status(s, "en") for s in ("new", "waiting")] == ["new", "waiting"]
    assert format_status("merged", "pl") == "merged"  # unknown: as stored, never an error in a mail


def test_every_kind_and_tier_has_a_name_in_both_languages() -> None:
    """A consultant's notification and digest name the contract's kind and the queue tier in words
    ("Umowa: acme (pakiet godzin)", "Kolejka: niezweryfikowane P3", "Contract:  acme-sla (service
    contract)", "Queue: SLA P1"); the English ones read the customers file's keyword before
    ("Contract:  acme-sla (sla)", "Queue: sla P1"). A new kind without its names fails here."""
    from maild.rules.kinds import TIER_NAMES
    from maild.rules.records import CONTRACT_KINDS
    from maild.rules.wording import format_kind, format_tier

    for kind in CONTRACT_KINDS:
        assert format_kind(kind, "pl") != kind and format_kind(kind, "en") != kind
    for tier in TIER_NAMES:
        assert format_tier(tier, "pl") != tier
    assert format_kind("prepaid", "pl") == "pakiet godzin" and format_tier("unverified", "pl") == "niezweryfikowane"
    assert [format_kind(k, "en") for k in ("sla", "prepaid", "occasional")] == [
        "service contract", "prepaid hour package", "occasional help"]
    assert [format_tier(t, "en") for t in TIER_NAMES] == ["SLA", "prepaid", "occasional", "unverified"]
    assert format_kind("custom", "pl") == "custom", "a kind this module does not know reads as stored"
    assert format_tier("custom", "en") == "custom"


def test_every_kind_has_one_name_per_language_for_customers_and_consultants() -> None:
    """The statements (text and HTML) and the notifications name a kind from the same table."""
    from maild.rules.records import CONTRACT_KINDS
    from maild.rules.wording import format_kind, kind_name

    for language in ("pl", "en"):
        for kind in CONTRACT_KINDS:
            assert kind_name(kind, language) == format_kind(kind, language) != kind
    assert kind_name("sla", "en") == "service contract" and kind_name("occasional", "pl-PL") == "pomoc okazjonalna"
    assert kind_name("retainer", "en") == "retainer", "a kind this module does not know reads as stored"


def test_a_consultants_deadline_reads_as_a_date_and_a_time_not_iso() -> None:
    """The notifications and escalations read "Termin: 2026-12-07 15:59"; the customers' date form,
    without the weekday in the genitive that follows "do"."""
    from maild.rules.wording import format_local_time

    due = datetime(2026, 12, 7, 14, 59, tzinfo=UTC)
    assert format_local_time(due, "Europe/Warsaw", "pl") == "7.12.2026 r., godz. 15:59"
    assert format_local_time(due.isoformat(), "Europe/Warsaw", "en") == "7 December 2026, 15:59"
    assert format_deadline(due, "Europe/Warsaw", "pl") == "poniedziałku " + format_local_time(due, "Europe/Warsaw", "pl")


def test_an_alerts_problem_is_named_in_the_readers_words() -> None:
    from maild.rules.wording import format_problem

    assert [format_problem(k, "pl") for k in ("fetch", "outbox")] == ["pobieranie poczty", "wysyłka poczty"]
    assert [format_problem(k, "en") for k in ("fetch", "outbox")] == ["mailbox fetch", "outgoing mail"]
    assert format_problem("disk", "pl") == "", "unknown: the template names it as queued"
    assert plural(1, "mail", "en") == "1 mail" and plural(5, "mail", "pl") == "5 wiadomości"


def test_the_business_zone_is_named_in_the_readers_words() -> None:
    from maild.rules.wording import format_zone

    assert format_zone("Europe/Warsaw", "pl") == "czas polski" and format_zone("Europe/Warsaw", "en") == "Polish time"
    assert format_zone("Europe/London", "pl") == "Europe/London", "another zone by its name"
