"""What each chart shows, as plain data drawn from the JSON a report prints.

A chart is built from the very object ``report month --json`` prints (and a
statement from the context its plain text is rendered from), never from a query
of its own, so a picture cannot disagree with the numbers. Values keep the
JSON's units (minutes, counts); ``plot`` only scales them for the axis. Every
chart carries its alt text, which says the numbers in words for a reader who
cannot see the picture (and for mail clients that block images).

Pure and free of matplotlib: the daemon may import it; drawing is ``plot``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from maild.rules.kinds import KindRules, rules_of
from maild.rules.scope import scope_name
from maild.rules.wording import (format_date, format_duration, format_local_time, format_month, format_number, plural,
                                 reader_language)

Kind = Literal["bar", "barh"]

# colours readable for the common colour-vision deficiencies (Okabe-Ito)
BLUE, ORANGE, GREEN, VERMILION, SKY, YELLOW, PURPLE, GREY = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#F0E442", "#CC79A7", "#999999")
BAND_COLOURS = (SKY, YELLOW, PURPLE, GREEN, ORANGE, GREY)


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float, ...]
    colour: str


@dataclass(frozen=True)
class Band:
    """Categories marked together (a peak window's days), with the legend's label."""

    label: str
    indices: tuple[int, ...]
    colour: str


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    alt: str
    kind: Kind
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    unit: Literal["count", "minutes", "percent"]
    stacked: bool = False
    bands: tuple[Band, ...] = ()
    muted: tuple[int, ...] = ()  # categories drawn faded (days off)
    notes: tuple[str, ...] = field(default=())  # a label per category shown at the bar's end
    bar_colours: tuple[str, ...] = ()  # per category, overriding the series colour ("" keeps it)


@dataclass(frozen=True)
class StatementWords:
    """What a customer's statement charts say, taken from the statement's words template
    (``templates/<lang>/statement.html``): no customer-facing word is written here."""

    scopes_title: str
    scopes_alt: str
    balance_title: str
    balance_alt: str
    series: Mapping[str, str]  # used, allowance, carried_in, carried, start, end
    scope_names: Mapping[str, str]  # scope key -> its name in the statement's language
    contracts: tuple[str, ...]  # a label per contract of the context, in its order
    notes: tuple[str, ...]  # a note per contract ("ważny do 30.11.2026 r.") or ""


TEXT: dict[str, dict[str, str]] = {
    "en": {
        "sla_title": "SLA reactions by customer", "met": "met", "missed": "missed", "open": "still open",
        "sla_alt": "SLA reactions in {month}: {parts}.", "sla_none": "no SLA tickets",
        "react_title": "First reaction against the deadline (SLA tickets)",
        "react_alt": "Reactions to SLA tickets in {month} by the share of the reaction window used: {parts}.",
        "0-25%": "0-25%", "25-50%": "25-50%", "50-75%": "50-75%", "75-100%": "75-100%", "late": "late",
        "unanswered_missed": "no answer, late", "unanswered_open": "no answer, in time",
        "daily_title": "Tickets per day", "tickets": "tickets",
        "daily_alt": "{total} opened in {month}; busiest day {busiest} ({most}); days off faded{peaks}.",
        "peak_alt": "; peak periods marked above the bars: {names}",
        "backlog_title": "Open tickets by age at {at}", "backlog_alt": "{total} open at {at}: {parts}.",
        "<1d": "< 1 day", "1-3d": "1-3 days", "3-7d": "3-7 days", "7-30d": "7-30 days", ">30d": "> 30 days",
        "allow_title": "SLA hours against the allowance", "available": "allowance + carried over",
        "used": "used", "carried": "carried over to next month",
        "allow_alt": "SLA hours in {month}: {parts}.", "allow_none": "no SLA contracts",
        "prepaid_title": "Prepaid packages", "start": "balance at the start", "end": "balance at the end",
        "prepaid_alt": "Prepaid packages in {month}: {parts}.", "prepaid_none": "no prepaid packages",
        "valid": "valid until {date}",
        "scope_title": "Hours by scope", "scope_alt": "Hours by scope in {month}: {parts}.",
        "scope_none": "no hours booked",
        "cons_title": "Tickets answered per consultant", "answered": "tickets answered", "answered_n": "{n} answered",
        "cons_alt": "Per consultant in {month}: {parts}.", "cons_none": "no consultants",
        "median": "median first response {value}",
    },
    "pl": {
        "sla_title": "Reakcje w ramach SLA według klientów", "met": "w terminie", "missed": "po terminie",
        "open": "jeszcze otwarte",
        "sla_alt": "Reakcje SLA za {month}: {parts}.", "sla_none": "brak zgłoszeń SLA",
        "react_title": "Pierwsza reakcja względem terminu (zgłoszenia SLA)",
        "react_alt": "Reakcje na zgłoszenia SLA za {month} według wykorzystanej części czasu na reakcję: {parts}.",
        "0-25%": "0-25%", "25-50%": "25-50%", "50-75%": "50-75%", "75-100%": "75-100%", "late": "po terminie",
        "unanswered_missed": "bez odp., po terminie", "unanswered_open": "bez odp., w terminie",
        "daily_title": "Zgłoszenia dziennie", "tickets": "zgłoszenia",
        "daily_alt": "Nowe zgłoszenia za {month}: {count}; najwięcej {busiest} ({most}); dni wolne wyblakłe{peaks}.",
        "peak_alt": "; okresy szczytu zaznaczone nad słupkami: {names}",
        "backlog_title": "Otwarte zgłoszenia według wieku na {at}",
        "backlog_alt": "Otwarte zgłoszenia na {at}: {count}; {parts}.",
        "<1d": "< 1 dnia", "1-3d": "1-3 dni", "3-7d": "3-7 dni", "7-30d": "7-30 dni", ">30d": "> 30 dni",
        "allow_title": "Godziny SLA względem puli", "available": "pula + przeniesione", "used": "wykorzystane",
        "carried": "przeniesione na następny miesiąc",
        "allow_alt": "Godziny SLA za {month}: {parts}.", "allow_none": "brak umów SLA",
        "prepaid_title": "Pakiety przedpłacone", "start": "saldo na początku", "end": "saldo na końcu",
        "prepaid_alt": "Pakiety przedpłacone za {month}: {parts}.", "prepaid_none": "brak pakietów",
        "valid": "ważny do {date}",
        "scope_title": "Godziny według zakresu", "scope_alt": "Godziny według zakresu za {month}: {parts}.",
        "scope_none": "brak zaksięgowanych godzin",
        "cons_title": "Zgłoszenia z odpowiedzią według konsultantów", "answered": "zgłoszenia z odpowiedzią",
        "answered_n": "{n} z odpowiedzią",
        "cons_alt": "Według konsultantów za {month}: {parts}.", "cons_none": "brak konsultantów",
        "median": "mediana pierwszej odpowiedzi {value}",
    },
}

def text(language: str) -> dict[str, str]:
    return TEXT.get(language, TEXT["en"])


def value_label(chart: Chart, raw: float, language: str) -> str:
    """The figure written at the end of a bar: hours as the statement's tables write them, else the count
    (``1,234`` in English, as ``wording.format_number``)."""
    if chart.unit == "minutes":
        return hours(raw, language)
    return f"{raw:g}" if reader_language(language) == "pl" else f"{raw:,g}"


def hours(minutes: int | float | None, language: str = "en") -> str:
    """Minutes as ``12 h 5 min`` (en) or ``12 godz. 5 min`` (pl): the templates' ``hm`` filter
    (``wording.format_duration``), so a chart's label reads as the statement's table beside it."""
    if minutes is None:
        return "-"
    return format_duration(int(minutes), language)


def _parts(items: Sequence[tuple[str, str]]) -> str:
    return "; ".join(f"{name} {value}" for name, value in items)


def _customer_label(customer: Mapping[str, Any]) -> str:
    return str(customer.get("name") or customer.get("customer") or "-")


# ------------------------------------------------------------------ the management report


def sla_chart(report: Mapping[str, Any], language: str) -> Chart:
    """Met, missed and still open per sla contract, from ``sla.contracts`` (kind "sla")."""
    t = text(language)
    rows = [c for c in report["sla"]["contracts"] if rules_of(c["kind"]).reaction_deadline]
    names = tuple(f"{c['customer_name']} ({c['contract_id'] or '-'})" for c in rows)
    parts = [(n, f"{format_number(c['met'], language)} {t['met']}, {format_number(c['missed'], language)} "
                 f"{t['missed']}, {format_number(c['open'], language)} {t['open']}") for n, c in zip(names, rows)]
    return Chart(
        key="sla", title=t["sla_title"], kind="barh", unit="count", stacked=True, categories=names,
        series=(Series(t["met"], tuple(c["met"] for c in rows), GREEN),
                Series(t["missed"], tuple(c["missed"] for c in rows), VERMILION),
                Series(t["open"], tuple(c["open"] for c in rows), GREY)),
        alt=t["sla_alt"].format(month=format_month(report["month"], language), parts=_parts(parts) or t["sla_none"]),
    )


def reactions_chart(report: Mapping[str, Any], language: str) -> Chart:
    t = text(language)
    reactions: Mapping[str, int] = report["activity"]["reactions"]
    labels = tuple(t[k] for k in reactions)
    colours = {"late": VERMILION, "unanswered_missed": VERMILION, "unanswered_open": GREY}
    return Chart(
        key="reactions", title=t["react_title"], kind="bar", unit="count", categories=labels,
        series=(Series(t["tickets"], tuple(reactions.values()), BLUE),),
        bar_colours=tuple(colours.get(k, "") for k in reactions),
        alt=t["react_alt"].format(month=format_month(report["month"], language),
                                  parts=_parts([(t[k], format_number(v, language)) for k, v in reactions.items()])),
    )


def daily_chart(report: Mapping[str, Any], language: str) -> Chart:
    t = text(language)
    days = report["activity"]["days"]
    labels = {p["name"]: p["label"] for p in report["activity"]["peaks"]}
    bands = []
    for n, name in enumerate(labels):
        indices = tuple(i for i, d in enumerate(days) if name in d["peaks"])
        bands.append(Band(labels[name], indices, BAND_COLOURS[n % len(BAND_COLOURS)]))
    counts = tuple(d["tickets"] for d in days)
    busiest = max(range(len(days)), key=lambda i: counts[i]) if days else 0
    peaks = t["peak_alt"].format(names=", ".join(labels.values())) if labels else ""
    return Chart(
        key="daily", title=t["daily_title"], kind="bar", unit="count",
        categories=tuple(str(date.fromisoformat(d["date"]).day) for d in days),
        series=(Series(t["tickets"], counts, BLUE),), bands=tuple(bands),
        muted=tuple(i for i, d in enumerate(days) if not d["working"]),
        alt=t["daily_alt"].format(total=plural(sum(counts), "ticket", language), count=sum(counts),
                                  month=format_month(report["month"], language),
                                  busiest=format_date(days[busiest]["date"], language) if days else "-",
                                  most=format_number(counts[busiest] if days else 0, language), peaks=peaks),
    )


def backlog_chart(report: Mapping[str, Any], language: str) -> Chart:
    t = text(language)
    backlog: Mapping[str, int] = report["activity"]["backlog"]
    instant = datetime.fromisoformat(str(report["activity"]["backlog_at"]).replace("Z", "+00:00"))
    at = format_local_time(instant, report["timezone"], language)
    return Chart(
        key="backlog", title=t["backlog_title"].format(at=at), kind="bar", unit="count",
        categories=tuple(t[k] for k in backlog), series=(Series(t["tickets"], tuple(backlog.values()), ORANGE),),
        alt=t["backlog_alt"].format(total=plural(sum(backlog.values()), "ticket", language),
                                    count=sum(backlog.values()), at=at,
                                    parts=_parts([(t[k], format_number(v, language)) for k, v in backlog.items()])),
    )


def _contracts(report: Mapping[str, Any], shown: Callable[[KindRules], bool]
               ) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """The (customer, contract) rows of the hours report whose kind ``shown`` picks."""
    return [(cu, c) for cu in report["hours"]["customers"] for c in cu["contracts"] if shown(rules_of(c["kind"]))]


def allowance_chart(report: Mapping[str, Any], language: str) -> Chart:
    """Per sla contract: allowance plus carry-in (what was available), used, and carried out."""
    t = text(language)
    rows = _contracts(report, lambda kind: kind.monthly_allowance)
    names = tuple(f"{_customer_label(cu)} ({c['contract_id']})" for cu, c in rows)
    available = tuple((c["allowance_minutes"] or 0) + (c["carry_in_minutes"] or 0) for _, c in rows)
    used = tuple(c["total_minutes"] for _, c in rows)
    carried = tuple(c["carry_out_minutes"] or 0 for _, c in rows)
    parts = [(n, f"{t['available']} {hours(a, language)}, {t['used']} {hours(u, language)}, "
                 f"{t['carried']} {hours(k, language)}") for n, a, u, k in zip(names, available, used, carried)]
    return Chart(
        key="allowance", title=t["allow_title"], kind="barh", unit="minutes", categories=names,
        series=(Series(t["available"], available, SKY), Series(t["used"], used, BLUE),
                Series(t["carried"], carried, GREEN)),
        alt=t["allow_alt"].format(month=format_month(report["month"], language), parts=_parts(parts) or t["allow_none"]),
    )


def prepaid_chart(report: Mapping[str, Any], language: str) -> Chart:
    t = text(language)
    rows = _contracts(report, lambda kind: kind.packages)
    names = tuple(f"{_customer_label(cu)} ({c['contract_id']})" for cu, c in rows)
    return _prepaid(rows, names, format_month(report["month"], language), language, key="prepaid", title=t["prepaid_title"],
                    alt=t["prepaid_alt"])


def _prepaid(rows: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], names: tuple[str, ...], month: str,
             language: str, key: str, title: str, alt: str) -> Chart:
    t = text(language)
    start = tuple(c["balance_start_minutes"] or 0 for _, c in rows)
    used = tuple(c["total_minutes"] for _, c in rows)
    end = tuple(c["balance_end_minutes"] or 0 for _, c in rows)
    valid = tuple(t["valid"].format(date=format_date(c["valid_until"], language)) if c["valid_until"] else ""
                  for _, c in rows)
    parts = [(n, f"{t['start']} {hours(s, language)}, {t['used']} {hours(u, language)}, "
                 f"{t['end']} {hours(e, language)}" + (f", {v}" if v else ""))
             for n, s, u, e, v in zip(names, start, used, end, valid)]
    return Chart(
        key=key, title=title, kind="barh", unit="minutes", categories=names,
        series=(Series(t["start"], start, SKY), Series(t["used"], used, BLUE), Series(t["end"], end, GREEN)),
        # a sentence whose last part is a Polish date ("28.02.2027 r.") ends with its period
        notes=valid, alt=alt.format(month=month, parts=_parts(parts) or t["prepaid_none"]).replace("r..", "r."),
    )


def scope_totals(contracts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Minutes per scope over contracts (``minutes_by_scope`` of the hours JSON), largest first."""
    totals: dict[str, int] = defaultdict(int)
    for c in contracts:
        for scope, minutes in c["minutes_by_scope"].items():
            totals[scope] += minutes
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def _scope_chart(totals: Mapping[str, int], month: str, language: str, title: str, key: str,
                 words: StatementWords | None = None) -> Chart:
    """Minutes per scope; the statement's words (``words``) or the managers' (``TEXT``). A scope is
    named by ``rules.scope.NAMES`` in the reader's language (the statement's context carries those
    names too), so a chart calls a scope what the commands' help, the statements and the tables do."""
    t = text(language)
    labels = tuple(words.scope_names.get(s, s) if words else scope_name(s, language) for s in totals)
    alt = words.scopes_alt if words else t["scope_alt"].format(month=month, parts=_parts(
        [(label, hours(m, language)) for label, m in zip(labels, totals.values())]) or t["scope_none"])
    return Chart(
        key=key, title=title, kind="barh", unit="minutes", categories=labels,
        series=(Series(words.series["used"] if words else t["used"], tuple(totals.values()), BLUE),), alt=alt,
    )


def scope_chart(report: Mapping[str, Any], language: str) -> Chart:
    totals = scope_totals([c for cu in report["hours"]["customers"] for c in cu["contracts"]])
    return _scope_chart(totals, format_month(report["month"], language), language, text(language)["scope_title"],
                        "scopes")


def consultants_chart(report: Mapping[str, Any], language: str) -> Chart:
    t = text(language)
    rows = report["activity"]["consultants"]
    names = tuple(str(c["name"]) for c in rows)
    medians = tuple(t["median"].format(value=hours(c["median_first_response_minutes"], language))
                    if c["median_first_response_minutes"] is not None else "" for c in rows)
    return Chart(
        key="consultants", title=t["cons_title"], kind="barh", unit="count", categories=names,
        series=(Series(t["answered"], tuple(c["answered"] for c in rows), BLUE),), notes=medians,
        alt=t["cons_alt"].format(month=format_month(report["month"], language), parts=_parts(
            [(n, t["answered_n"].format(n=plural(c["answered"], "ticket", language)) + (f", {m}" if m else ""))
             for n, c, m in zip(names, rows, medians)])
            or t["cons_none"]),
    )


def month_charts(report: Mapping[str, Any], language: str) -> tuple[Chart, ...]:
    """Every chart of the management report, in the order the report shows them."""
    return tuple(build(report, language) for build in (
        sla_chart, reactions_chart, daily_chart, backlog_chart, allowance_chart, prepaid_chart, scope_chart,
        consultants_chart))


def month_summary(report: Mapping[str, Any]) -> dict[str, int]:
    """The tiles at the top of the month report, added up from the same JSON the sections show."""
    sla = [c for c in report["sla"]["contracts"] if rules_of(c["kind"]).reaction_deadline]
    customers = report["hours"]["customers"]
    return {
        "tickets": int(report["activity"]["tickets"]),
        "sla_met": sum(c["met"] for c in sla),
        "sla_due": sum(c["met"] + c["missed"] for c in sla),
        "breaches": sum(c["missed"] for c in sla),
        "backlog": sum(report["activity"]["backlog"].values()),
        "minutes": sum(cu["total_minutes"] for cu in customers),
        # the statements' net: hours, monthly fees, package prices (a report kept from before has the hours only)
        "amount_cents": sum(cu.get("net_cents", cu["amount_cents"]) for cu in customers),
    }


# ------------------------------------------------------------------ a customer's statement


def statement_charts(context: Mapping[str, Any], words: StatementWords) -> tuple[Chart, ...]:
    """The statement's two charts, from the statement's own context (the plain text's numbers).

    Hours by scope over the customer's contracts, and the balance: for sla the
    allowance, carry-in, use and carry-out, for each prepaid package its balance
    at the start and end with the expiry date. Every word is the template's
    (``words``); a contract is shown by its kind's name, never its id.
    """
    w = words.series
    month = str(context["month"])
    contracts = context["contracts"]
    totals = scope_totals([{"minutes_by_scope": {s["scope"]: s["minutes"] for s in c["scopes"]}}
                           for c in contracts])
    charts = [_scope_chart(totals, month, "", words.scopes_title, "scopes", words)]
    sla = [i for i, c in enumerate(contracts) if rules_of(c["kind"]).monthly_allowance]
    prepaid = [i for i, c in enumerate(contracts) if rules_of(c["kind"]).packages]
    if sla or prepaid:
        series: dict[str, list[int]] = {k: [] for k in ("allowance", "carried_in", "used", "carried")}
        for i in sla:
            c = contracts[i]
            series["allowance"].append(c["allowance_minutes"] or 0)
            series["carried_in"].append(c["carry_in_minutes"] or 0)
            series["used"].append(c["total_minutes"])
            series["carried"].append(c["carry_out_minutes"] or 0)
        for i in prepaid:
            c = contracts[i]
            series["allowance"].append(c["balance_start_minutes"] or 0)
            series["carried_in"].append(0)
            series["used"].append(c["total_minutes"])
            series["carried"].append(c["balance_end_minutes"] or 0)
        first, last = {(True, False): (w["allowance"], w["carried"]), (False, True): (w["start"], w["end"]),
                       (True, True): (f"{w['allowance']} / {w['start']}", f"{w['carried']} / {w['end']}")}[
                           (bool(sla), bool(prepaid))]
        rows = sla + prepaid
        charts.append(Chart(
            key="balance", title=words.balance_title, kind="barh", unit="minutes",
            categories=tuple(words.contracts[i] for i in rows),
            series=tuple(s for s in (
                Series(first, tuple(series["allowance"]), SKY),
                Series(w["carried_in"], tuple(series["carried_in"]), PURPLE),
                Series(w["used"], tuple(series["used"]), BLUE),
                Series(last, tuple(series["carried"]), GREEN)) if s.name != w["carried_in"] or any(s.values)),
            notes=tuple(words.notes[i] for i in rows), alt=words.balance_alt,
        ))
    return tuple(charts)
