"""How numbers, dates, durations and money read in customer mail, in Polish and English.

Templates hold every sentence; this module only formats the values inside them, so
that "2 dni", "7.12.2026 r.", "45 min" and "250,00 zł" come out the same in every mail.
Polish plural forms come from one place (``plural``): Polish has three (1 dzień,
2-4 dni, 5 dni; but 22 dni and 12 dni), and getting them wrong is what makes
generated text read as machine-made.

Pure: values in, text out; the time zone is passed in, never read from a config.
"""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

LANGUAGES = ("pl", "en")

# Nouns a template counts, with their forms: (one, few, many) for Polish, (one, other) for English.
_NOUNS: dict[str, tuple[tuple[str, str, str], tuple[str, str]]] = {
    "day": (("dzień", "dni", "dni"), ("day", "days")),
    "working_day": (("dzień roboczy", "dni robocze", "dni roboczych"), ("working day", "working days")),
    "hour": (("godzina", "godziny", "godzin"), ("hour", "hours")),
    "minute": (("minuta", "minuty", "minut"), ("minute", "minutes")),
    "month": (("miesiąc", "miesiące", "miesięcy"), ("month", "months")),
    "ticket": (("zgłoszenie", "zgłoszenia", "zgłoszeń"), ("ticket", "tickets")),
    "package": (("pakiet", "pakiety", "pakietów"), ("package", "packages")),
    "mail": (("wiadomość", "wiadomości", "wiadomości"), ("mail", "mails")),
}

_MONTHS_PL = ("styczeń", "luty", "marzec", "kwiecień", "maj", "czerwiec", "lipiec", "sierpień", "wrzesień",
              "październik", "listopad", "grudzień")
_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")
# "do poniedziałku": a deadline names the day in the genitive.
_WEEKDAYS_PL_GENITIVE = ("poniedziałku", "wtorku", "środy", "czwartku", "piątku", "soboty", "niedzieli")
_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def reader_language(language: str) -> str:
    """``pl-PL`` -> ``pl``; anything that is not Polish reads English."""
    return "pl" if language.lower().startswith("pl") else "en"


def polish_plural_form(n: int) -> int:
    """Index of the Polish plural form for ``n``: 0 (1), 1 (2-4, 22-24, ... but not 12-14), 2 (the rest)."""
    n = abs(n)
    if n == 1:
        return 0
    if n % 10 in (2, 3, 4) and n % 100 not in (12, 13, 14):
        return 1
    return 2


def plural(n: int, noun: str, language: str = "pl") -> str:
    """``n`` with the right form of ``noun`` (a key of the noun table): 5 -> "5 dni", 1 -> "1 day"."""
    try:
        polish, english = _NOUNS[noun]
    except KeyError:
        raise ValueError(f"no plural forms for {noun!r}; known: {', '.join(sorted(_NOUNS))}") from None
    if reader_language(language) == "pl":
        return f"{n} {polish[polish_plural_form(n)]}"
    return f"{format_number(n, language)} {english[0] if abs(n) == 1 else english[1]}"


def format_date(day: date | str, language: str = "pl") -> str:
    """7.12.2026 r. / 7 December 2026 (a date or its ISO text, as stored in outbox contexts)."""
    if isinstance(day, str):
        day = date.fromisoformat(day[:10])
    if reader_language(language) == "pl":
        return f"{day.day}.{day.month:02d}.{day.year} r."
    return f"{day.day} {_MONTHS_EN[day.month - 1]} {day.year}"


def format_weekday_date(day: date | str, language: str = "pl") -> str:
    """After "do"/"by": "poniedziałku 7.12.2026 r." / "Monday 7 December 2026"."""
    if isinstance(day, str):
        day = date.fromisoformat(day[:10])
    if reader_language(language) == "pl":
        return f"{_WEEKDAYS_PL_GENITIVE[day.weekday()]} {format_date(day, 'pl')}"
    return f"{_WEEKDAYS_EN[day.weekday()]} {format_date(day, 'en')}"


def format_month(month: str, language: str = "pl") -> str:
    """"2026-12" -> "grudzień 2026" / "December 2026" (after "za" the nominative is right)."""
    year, number = int(month[:4]), int(month[5:7])
    names = _MONTHS_PL if reader_language(language) == "pl" else _MONTHS_EN
    return f"{names[number - 1]} {year}"


def zone_phrase(tz: str) -> str:
    """The time zone as a customer reads it: never a tz database name.

    "(Polish time)" for Warsaw; otherwise the deadline's UTC offset is given by
    ``format_deadline`` itself.
    """
    return "Polish time" if tz == "Europe/Warsaw" else ""


def _local(moment: datetime | str, tz: str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"a deadline must be tz-aware, got {moment.isoformat()}")
    return moment.astimezone(ZoneInfo(tz))


def _date_and_clock(local: datetime, language: str) -> str:
    clock = f"{local.hour:02d}:{local.minute:02d}"
    if reader_language(language) == "pl":
        return f"{format_date(local.date(), 'pl')}, godz. {clock}"
    return f"{format_date(local.date(), 'en')}, {clock}"


def format_local_time(moment: datetime | str, tz: str, language: str = "pl") -> str:
    """A moment in the business time zone after a label ("Termin: 7.12.2026 r., godz. 15:59" /
    "Deadline: 7 December 2026, 15:59"), the zone named beside it (``format_zone``): what a
    consultant's notification and escalation show, which read "2026-12-07 15:59" before."""
    return _date_and_clock(_local(moment, tz), language)


def format_deadline(moment: datetime | str, tz: str, language: str = "pl") -> str:
    """A deadline as a customer reads it, in the business time zone.

    pl: ``poniedziałku 7.12.2026 r., godz. 15:59`` (after "do"); en: ``Monday 7 December 2026,
    15:59 (Polish time)`` (after "by"). Outside Warsaw the UTC offset replaces "Polish time".
    """
    local = _local(moment, tz)
    when = _date_and_clock(local, language)
    if reader_language(language) == "pl":
        where = "" if tz == "Europe/Warsaw" else f" (UTC{local.strftime('%z')[:3]}:{local.strftime('%z')[3:]})"
        return f"{_WEEKDAYS_PL_GENITIVE[local.weekday()]} {when}{where}"
    zone = zone_phrase(tz) or f"UTC{local.strftime('%z')[:3]}:{local.strftime('%z')[3:]}"
    return f"{_WEEKDAYS_EN[local.weekday()]} {when} ({zone})"


def format_number(n: int, language: str = "pl") -> str:
    """A count as its reader writes it: ``1234`` in Polish (as every Polish text wrote it so far),
    ``1,234`` in English (a comma between thousands, as the English money ``PLN 1,234.50``)."""
    return str(n) if reader_language(language) == "pl" else f"{int(n):,}"


def format_duration(minutes: int, language: str = "pl") -> str:
    """Whole minutes without zero parts: 45 min, 8 godz., 1 godz. 30 min / 45 min, 8 h, 1 h 30 min
    (1,234 h in English, as its other numbers)."""
    sign = "-" if minutes < 0 else ""
    hours, rest = divmod(abs(int(minutes)), 60)
    unit = "godz." if reader_language(language) == "pl" else "h"
    whole = format_number(hours, language)
    if hours and rest:
        return f"{sign}{whole} {unit} {rest} min"
    if hours:
        return f"{sign}{whole} {unit}"
    return f"{sign}{rest} min"


def _group(whole: int, separator: str) -> str:
    text = str(whole)
    groups = []
    while len(text) > 3:
        groups.append(text[-3:])
        text = text[:-3]
    groups.append(text)
    return separator.join(reversed(groups))


def format_amount(cents: int) -> str:
    """Grosze as Polish invoices write them: ``12345`` -> ``"123,45"`` (the reports' figures)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole},{part:02d}"


def format_money(cents: int, language: str = "pl") -> str:
    """Grosze as a customer reads them: 1 250,00 zł / PLN 1,250.00 (the currency's code before the
    figure, a comma between thousands, a point before the grosze: how English invoices write zloty)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(int(cents)), 100)
    if reader_language(language) == "pl":
        return f"{sign}{_group(whole, ' ')},{part:02d} zł"
    return f"{sign}PLN {_group(whole, ',')}.{part:02d}"


# A ticket's status as a consultant reads it in a mail. The English words are the
# ``#status`` command's own keywords; Polish mail names them in Polish.
_STATUSES_PL = {"new": "nowe", "open": "otwarte", "waiting": "czeka na klienta", "resolved": "rozwiązane",
                "closed": "zamknięte"}


def format_status(status: str, language: str = "pl") -> str:
    """``waiting`` -> ``czeka na klienta``; a status this module does not know reads as stored."""
    return _STATUSES_PL.get(status, status) if reader_language(language) == "pl" else status


def format_percent(value: int, language: str = "pl") -> str:
    """80% in both languages (Polish typography here writes it without a space too)."""
    return f"{value}%"


# A contract's kind by its name in the reader's words (Polish, English): the one table for the
# consultants' notifications and the customers' statements, text and HTML (both languages,
# capitalised there: "Umowa serwisowa"). An English consultant read the customers file's keyword
# ("Contract:  acme-sla (sla)") where a Polish one read "umowa serwisowa". A queue tier as a
# consultant reads it (a tier is named after its first kind, the last one "unverified"); in English
# only the sla tier differs from its keyword: "SLA P1", as a person writes it, not "sla P1".
_KINDS = {"sla": ("umowa serwisowa", "service contract"), "prepaid": ("pakiet godzin", "prepaid hour package"),
          "occasional": ("pomoc okazjonalna", "occasional help")}
_TIERS = {"sla": ("SLA", "SLA"), "prepaid": ("pakiet", "prepaid"), "occasional": ("okazjonalne", "occasional"),
          "unverified": ("niezweryfikowane", "unverified")}


def kind_name(kind: str, language: str = "pl") -> str:
    """``prepaid`` -> ``pakiet godzin`` / ``prepaid hour package``: a contract's kind as a customer
    reads it; a kind this module does not know reads as stored (a new kind's name is added here)."""
    names = _KINDS.get(kind)
    if names is None:
        return kind
    return names[0] if reader_language(language) == "pl" else names[1]


def format_kind(kind: str, language: str = "pl") -> str:
    """``prepaid`` -> ``pakiet godzin`` / ``prepaid hour package`` for a consultant: the customers'
    name of the kind (``kind_name``), so a consultant and the customer's statement say the same."""
    return kind_name(kind, language)


def format_tier(tier: str, language: str = "pl") -> str:
    """``unverified`` -> ``niezweryfikowane``, ``sla`` -> ``SLA`` (the queue line: "Kolejka: pakiet P2",
    "Queue: SLA P1"); a tier this module does not know reads as stored."""
    names = _TIERS.get(tier)
    if names is None:
        return tier
    return names[0] if reader_language(language) == "pl" else names[1]


# A ticket whose first mail had no subject stores this one (English: ``tickets show`` and the
# English mail show it as stored); a Polish reader reads it in Polish.
NO_SUBJECT = "(no subject)"


def format_subject(subject: str, language: str = "pl") -> str:
    """A ticket's subject as stored, except ``(no subject)``: ``(bez tematu)`` in Polish."""
    return "(bez tematu)" if subject == NO_SUBJECT and reader_language(language) == "pl" else subject


def format_zone(tz: str, language: str = "pl") -> str:
    """The business time zone after a consultant's local time: "czas polski" / "Polish time" for
    Warsaw (a Polish consultant read "(Europe/Warsaw)"), else its tz database name."""
    if tz != "Europe/Warsaw":
        return tz
    return "czas polski" if reader_language(language) == "pl" else "Polish time"


# The health problems a manager's alert names (``maild.ops.health``'s keys), in Polish and English:
# the alert's subject and body, and the log's English name, take them from here.
_PROBLEMS = {"fetch": ("pobieranie poczty", "mailbox fetch"), "outbox": ("wysyłka poczty", "outgoing mail")}


def format_problem(key: str, language: str = "pl") -> str:
    """``fetch`` -> ``pobieranie poczty`` / ``mailbox fetch``; "" for a key this module does not know
    (an alert queued by another version: its template falls back to the name it was queued with)."""
    names = _PROBLEMS.get(key)
    if names is None:
        return ""
    return names[0] if reader_language(language) == "pl" else names[1]
