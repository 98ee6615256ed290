"""``report month``: its JSON is the other reports' JSON, its charts are that JSON, its HTML escapes.

A generated month (``month_data``) is reported through ``maild.cli.main`` as an
operator would; the numbers in every chart are checked against what
``report hours --json`` and ``report sla --json`` print and against counts taken
straight from the database.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from maild.billing.charts import hours as hours_text
from maild.billing.charts import month_charts, scope_totals, statement_charts
from maild.billing.html import statement_folders, statement_words
from maild.billing.month import REACTION_BUCKETS, MonthTicket, build_backlog, build_reactions
from maild.billing.reports import TicketInfo, build_sla_report
from maild.storage.models import MessageRow, OutboxRow, Ticket
from tests.billing.conftest import Month
from tests.billing.month_data import HOSTILE, MONTH, MONTH_END, MONTH_START, NOW

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")


def cli_json(month: Month, *argv: str) -> dict:  # type: ignore[type-arg]
    code, out, err = month.run(*argv)
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_month_json_holds_the_other_reports_json_verbatim(month: Month) -> None:
    data = cli_json(month, "report", "month", "--month", MONTH, "--json")
    assert data["hours"] == cli_json(month, "report", "hours", "--month", MONTH, "--json")
    assert data["sla"] == cli_json(month, "report", "sla", "--month", MONTH, "--json")
    assert data["month"] == MONTH and data["timezone"] == "Europe/Warsaw"


def test_chart_data_is_the_json(month: Month) -> None:
    """Every chart's numbers against the JSON (and the JSON's against the database)."""
    data = cli_json(month, "report", "month", "--month", MONTH, "--json")
    hours = cli_json(month, "report", "hours", "--month", MONTH, "--json")
    sla = cli_json(month, "report", "sla", "--month", MONTH, "--json")
    charts = {c.key: c for c in month_charts(data, "en")}
    assert set(charts) == {"sla", "reactions", "daily", "backlog", "allowance", "prepaid", "scopes", "consultants"}
    values = {key: {s.name: list(s.values) for s in chart.series} for key, chart in charts.items()}

    sla_rows = [c for c in sla["contracts"] if c["kind"] == "sla"]
    assert len(sla_rows) == 2
    assert values["sla"] == {"met": [c["met"] for c in sla_rows], "missed": [c["missed"] for c in sla_rows],
                             "still open": [c["open"] for c in sla_rows]}

    reactions = dict(zip(REACTION_BUCKETS, values["reactions"]["tickets"]))
    assert sum(reactions[b] for b in ("0-25%", "25-50%", "50-75%", "75-100%")) == sum(c["met"] for c in sla_rows)
    assert reactions["late"] + reactions["unanswered_missed"] == sum(c["missed"] for c in sla_rows)
    assert reactions["unanswered_open"] == sum(c["open"] for c in sla_rows)

    with month.sessions() as session:
        created = list(session.scalars(select(Ticket.created_at)))
        tickets = list(session.scalars(select(Ticket)))
        all_answers = answers = list(session.scalars(select(MessageRow).where(MessageRow.internal.is_(False))))
    per_day = Counter(at.astimezone(WARSAW).date().day for at in created if MONTH_START <= at < MONTH_END)
    assert values["daily"]["tickets"] == [per_day.get(day, 0) for day in range(1, 31)]
    assert sum(values["daily"]["tickets"]) == data["activity"]["tickets"] > 50
    daily = charts["daily"]
    assert [int(c) for c in daily.categories] == list(range(1, 31))
    assert {daily.categories[i] for i in daily.muted} >= {"1", "7", "8", "11", "14", "15"}  # weekends, 11 Nov
    vat = next(b for b in daily.bands if "VAT" in b.label)
    assert [int(daily.categories[i]) for i in vat.indices] == list(range(18, 26))

    open_at_end = [t for t in tickets if t.created_at < MONTH_END
                   and (t.resolved_at is None or t.resolved_at >= MONTH_END)]
    assert sum(values["backlog"]["tickets"]) == len(open_at_end) == sum(data["activity"]["backlog"].values())

    sla_contracts = [c for cu in hours["customers"] for c in cu["contracts"] if c["kind"] == "sla"]
    assert values["allowance"]["used"] == [c["total_minutes"] for c in sla_contracts]
    assert values["allowance"]["allowance + carried over"] == [
        c["allowance_minutes"] + c["carry_in_minutes"] for c in sla_contracts]
    assert values["allowance"]["carried over to next month"] == [c["carry_out_minutes"] for c in sla_contracts]
    prepaid = [c for cu in hours["customers"] for c in cu["contracts"] if c["kind"] == "prepaid"]
    assert values["prepaid"]["balance at the end"] == [c["balance_end_minutes"] for c in prepaid]
    from maild.rules.wording import format_date
    assert charts["prepaid"].notes == tuple(f"valid until {format_date(c['valid_until'], 'en')}" for c in prepaid)

    all_contracts = [c for cu in hours["customers"] for c in cu["contracts"]]
    assert sum(values["scopes"]["used"]) == sum(c["total_minutes"] for c in all_contracts) > 0

    # the answers consultants gave; each relayed one was listed again under the support address, and a
    # mail of commands only (its text nothing or a signature) counted as one
    answers = [m for m in answers if m.direction == "out" or (m.text_new and not m.text_new.startswith("--"))]
    assert len(answers) < len(all_answers)
    in_month = [m for m in answers if m.role == "consultant" and m.direction == "in" and MONTH_START <= m.date < MONTH_END]
    answered = {who: len({m.ticket_id for m in in_month if m.from_addr == who}) for who in ("anna@firma.pl",
                                                                                          "jan@firma.pl")}
    by_name = dict(zip(charts["consultants"].categories, values["consultants"]["tickets answered"]))
    assert by_name == {"Anna Nowak": answered["anna@firma.pl"], "Jan Kowal": answered["jan@firma.pl"],
                       "Maria Boss": 0, "Piotr Szef": 0}
    # median first response: the first answer (not a note) of each ticket first answered in the month
    first: dict[int, MessageRow] = {}
    for m in sorted((m for m in answers if m.role == "consultant"), key=lambda m: m.id):
        first.setdefault(m.ticket_id or 0, m)
    created_at = {t.id: t for t in tickets}
    waits: dict[str, list[int]] = {"anna@firma.pl": [], "jan@firma.pl": []}
    for ticket_id, m in first.items():
        ticket = created_at[ticket_id]
        if ticket.first_response_at is not None and MONTH_START <= ticket.first_response_at < MONTH_END:
            waits[m.from_addr].append(int((ticket.first_response_at - ticket.created_at).total_seconds()) // 60)
    for row in data["activity"]["consultants"]:
        if row["email"] in waits:
            ordered = sorted(waits[row["email"]])
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
            assert (row["first_responses"], row["median_first_response_minutes"]) == (len(ordered), median)
            assert f"median first response {hours_text(median)}" in charts["consultants"].notes


def test_statement_charts_are_the_statement_numbers(month: Month) -> None:
    """The statement's charts come from the context its plain text is rendered from."""
    from maild.cli.report import statement_context
    from maild.config import load_config
    from maild.billing import reports
    from maild.rules.customers import load_customers

    cfg = load_config(month.config)
    with month.sessions() as session:
        report = reports.hours_report(session, load_customers(cfg.customers_file, cfg.packages), MONTH, WARSAW, "SUP")
    hours = cli_json(month, "report", "hours", "--month", MONTH, "--json")
    for customer, expected in zip(report.customers, hours["customers"]):
        context = statement_context(cfg, report, customer)
        words = statement_words(context, customer.language, statement_folders())
        charts = {c.key: c for c in statement_charts(context, words)}
        used = dict(zip(charts["scopes"].categories, charts["scopes"].series[0].values))
        assert sum(used.values()) == expected["total_minutes"]
        assert list(scope_totals(expected["contracts"]).values()) == list(used.values())
        kinds = [c["kind"] for c in expected["contracts"]]
        if "sla" in kinds or "prepaid" in kinds:
            balance = charts["balance"]
            rows = [c for c in expected["contracts"] if c["kind"] in ("sla", "prepaid")]
            assert list(balance.series[-2].values) == [c["total_minutes"] for c in rows]
            ends = [c["carry_out_minutes"] if c["kind"] == "sla" else c["balance_end_minutes"] for c in rows]
            assert list(balance.series[-1].values) == ends
            carried_in = [c["carry_in_minutes"] or 0 for c in rows if c["kind"] == "sla"]
            assert len(balance.series) == (4 if any(carried_in) else 3)
            ids = {c["contract_id"] for c in expected["contracts"]} - {None, ""}
            assert not any(i in text for i in ids for text in (*balance.categories, balance.alt, balance.title)), \
                "a customer is shown contract kinds, never contract ids"
        else:
            assert "balance" not in charts


# ------------------------------------------------------------------ escaping


class Markup(HTMLParser):
    """Every element and attribute of a page, to find anything a name or subject could have added."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs


def assert_escaped(html: str) -> None:
    page = Markup()
    page.feed(html)
    assert "script" not in page.tags
    assert not [name for name, _ in page.attributes if name.startswith("on")]
    assert all(value is None or not value.startswith("x") for name, value in page.attributes if name == "src")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # shown as text, not dropped


def test_month_report_html_escapes_names_and_subjects(month: Month, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, out, _ = month.run("report", "month", "--month", MONTH, "--html", str(page))
    assert code == 0 and str(page) in out
    html = page.read_text(encoding="utf-8")
    assert_escaped(html)
    assert html.count("<img ") == 8 and "data:image/png;base64," in html and "cid:" not in html
    assert 'alt=""' not in html
    # the month and the zone in the manager's words ("Wsparcie w 2026-11 ... czas w strefie Europe/Warsaw")
    from maild.rules.wording import format_month
    assert f"<h1>Wsparcie za {format_month(MONTH, 'pl')}</h1>" in html and "Godziny w raporcie: czas polski." in html


@pytest.mark.parametrize(("language", "meta"), [
    ("pl", "Wsparcie. Wygenerowano 1.12.2026 r., godz. 07:05. Godziny w raporcie: czas polski."),
    ("en", "Wsparcie. Generated 1 December 2026, 07:05. Times in the report: Polish time.")])
def test_month_report_html_gives_its_generation_time_in_the_business_zone(month: Month, language: str,
                                                                         meta: str) -> None:
    """It read "Wygenerowano 2026-12-01 06:05 UTC" beside "Godziny w raporcie: czas polski"."""
    from maild.billing.pages import month_report_html

    data = cli_json(month, "report", "month", "--month", MONTH, "--json", "--language", language)
    html, _ = month_report_html(data, language, "Wsparcie", datetime(2026, 12, 1, 6, 5, tzinfo=UTC))
    assert f'<p class="meta">{meta}</p>' in html, html[:2000]
    assert "UTC" not in html


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_month_charts_read_in_the_managers_words(month: Month, language: str) -> None:
    """The charts' texts (what a reader without images gets) read "Reakcje SLA w 2026-11",
    "97 zgłoszeń otwartych ... najwięcej 2026-11-03", "1 zgłoszenia z odpowiedzią", "ważny do
    2026-11-30", and the consultants were listed with the support address the answers are relayed
    from, each answer counted twice."""
    import re

    from maild.rules.wording import format_month

    data = cli_json(month, "report", "month", "--month", MONTH, "--json", "--language", language)
    assert "support@firma.pl" not in {c["email"] for c in data["activity"]["consultants"]}
    alts = " ".join(chart.alt + " " + " ".join(chart.notes) for chart in month_charts(data, language))
    assert not re.search(r"\d{4}-\d\d", alts), alts
    assert format_month(MONTH, language) in alts
    if language == "pl":
        assert not re.search(r"\b(?:[234]|\d*[02-9][234]) zgłoszeń|\b1 zgłoszenia|\b(?:[05-9]|1\d) zgłoszenia", alts), alts
        assert " w listopad" not in alts and "r.." not in alts
    else:
        assert not re.search(r"\b1 tickets\b", alts), alts


def test_statement_html_escapes_names_and_subjects(month: Month) -> None:
    from email import message_from_bytes, policy

    from maild.config import load_config
    from maild.outbound.outbox import Sender, build_mail
    from maild.outbound.render import Renderer

    assert month.run("report", "hours", "--month", MONTH, "--send")[0] == 0
    cfg = load_config(month.config)
    with month.sessions() as session:
        row = session.scalar(select(OutboxRow).where(OutboxRow.dedupe_key == f"statement:{MONTH}:evil"))
        assert row is not None
        raw = build_mail(row, Renderer(cfg.templates_path), Sender(cfg.from_address, cfg.from_name, "t"), None, NOW)
    mail = message_from_bytes(raw, policy=policy.default)
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert_escaped(html)
    assert "onerror=alert(1)&gt;" in html  # the subject, in the ticket table


# ------------------------------------------------------------------ mail shape and sending once


def test_statement_is_multipart_alternative_with_inline_charts(month: Month) -> None:
    from email import message_from_bytes, policy

    from maild.config import load_config
    from maild.outbound.outbox import Sender, build_mail
    from maild.outbound.render import Renderer

    assert month.run("report", "hours", "--month", MONTH, "--send")[0] == 0
    cfg = load_config(month.config)
    renderer = Renderer(cfg.templates_path)
    with month.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).where(OutboxRow.kind == "statement")))
        raws = [(row, build_mail(row, renderer, Sender(cfg.from_address, cfg.from_name, "t"), None, NOW))
                for row in rows]
    assert len(raws) == 4
    for row, raw in raws:
        mail = message_from_bytes(raw, policy=policy.default)
        assert mail.get_content_type() == "multipart/alternative"
        plain, related = mail.get_payload()  # type: ignore[misc]
        assert plain.get_content_type() == "text/plain"
        _, body = renderer.render("statement", row.language, {k: v for k, v in row.context.items() if k != "_headers"})
        assert plain.get_content().replace("\r\n", "\n") == body  # the plain text is kept as it was
        assert related.get_content_type() == "multipart/related"
        html, *images = related.get_payload()
        assert html.get_content_type() == "text/html"
        text = html.get_content()
        for image in images:
            assert image.get_content_type() == "image/png"
            assert image.get_content().startswith(b"\x89PNG")
            assert f'src="cid:{image["Content-ID"].strip("<>")}"' in text
        assert text.count("<img ") == len(images) == (2 if row.context["customer_id"] != "kowalski" else 1)
        assert 'alt=""' not in text
        assert ("Państwa godziny" in text) == (row.language == "pl")
        assert mail["Auto-Submitted"] == "auto-generated"


def test_a_month_not_ended_is_not_sent_to_the_managers(month: Month) -> None:
    """``--send`` mails a month once: December sent on 2 December was December's report for good, and
    the catch-up, which starts after the last month sent, never sent the whole month."""
    code, out, err = month.run("report", "month", "--month", "2026-12", "--send")
    assert (code, out) == (2, "")
    assert "2026-12 has not ended" in err and "from 2027-01-01" in err, err
    code, out, _ = month.run("report", "month", "--send", now=datetime(2027, 1, 4, 9, 0, tzinfo=UTC))
    assert code == 0 and out.count("report 2026-12 for") == 2, out


def test_month_report_goes_to_each_manager_once_and_catches_up(month: Month) -> None:
    code, out, _ = month.run("report", "month", "--send")  # no --month: the month that ended
    assert code == 0
    assert out.count(f"report {MONTH} for") == 2 and "queued" in out
    code, out, _ = month.run("report", "month", "--month", MONTH, "--send")
    assert code == 0 and out.count("already queued; not sent again") == 2
    code, out, _ = month.run("report", "month", "--send")
    assert code == 0 and "already sent" in out
    # the timer was off for two months: both are sent, each once
    later = datetime(2027, 2, 3, 9, 0, tzinfo=UTC)
    code, out, _ = month.run("report", "month", "--send", now=later)
    assert code == 0
    assert out.count("report 2026-12 for") == 2 and out.count("report 2027-01 for") == 2
    with month.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).where(OutboxRow.kind == "month_report")))
    keys = sorted(r.dedupe_key for r in rows)
    assert keys == sorted(f"month_report:{m}:{who}" for m in ("2026-11", "2026-12", "2027-01")
                          for who in ("szef@firma.pl", "boss@firma.pl"))
    languages = {r.recipients[0]: r.language for r in rows}
    assert languages == {"szef@firma.pl": "pl", "boss@firma.pl": "en"}
    assert all(r.context["_headers"]["html"]["images"] for r in rows)
    # the Polish manager reads the month and the time zone in Polish ("za 2026-12 (czas według strefy Europe/Warsaw)")
    from maild.outbound.render import Renderer

    [szef] = [r for r in rows if r.recipients == ["szef@firma.pl"] and r.dedupe_key.endswith(f"2026-12:{r.recipients[0]}")]
    subject, body = Renderer(Path(__file__).resolve().parents[2] / "templates").render(
        "month_report", "pl", {k: v for k, v in szef.context.items() if not k.startswith("_")})
    assert subject == "Raport wsparcia za grudzień 2026" and "raport wsparcia za grudzień 2026 (czas polski)" in body


@pytest.mark.parametrize("argv, message", [
    (["report", "month"], "give --month"),
    (["report", "month", "--html", "x.html"], "give --month"),
    (["report", "month", "--month", "2026-13"], "2026-13"),
    (["report", "month", "--month", "2026-11", "--html", "/nonexistent/dir/r.html"], "/nonexistent/dir/r.html"),
])
def test_month_usage_errors_name_the_problem(month: Month, argv: list[str], message: str) -> None:
    code, _, err = month.run(*argv)
    assert code in (1, 2) and message in err and "Traceback" not in err
    assert code == (1 if "nonexistent" in message else 2)


def test_daemon_and_cli_start_without_matplotlib() -> None:
    """matplotlib is the report path's alone: the daemon's start-up and memory stay as they were."""
    probe = ("import sys; import maild.ops.daemon, maild.cli.main, maild.cli.report, maild.outbound.outbox; "
             "print('matplotlib' in sys.modules); import maild.billing.pages; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["False", "True"]


# ------------------------------------------------------------------ pure rules


_instants = st.integers(min_value=0, max_value=60 * 24 * 40).map(
    lambda m: datetime(2026, 10, 25, tzinfo=UTC) + timedelta(minutes=m))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_instants, st.integers(0, 60 * 48), st.one_of(st.none(), st.integers(0, 60 * 72)),
                          st.sampled_from(["sla", "prepaid", "occasional"])), max_size=40), _instants)
def test_reaction_buckets_count_what_the_sla_report_counts(
        rows: list[tuple[datetime, int, int | None, str]], now: datetime) -> None:
    month = "2026-11"
    infos, tickets = [], []
    for n, (created, window, answer, kind) in enumerate(rows):
        due = created + timedelta(minutes=window) if kind == "sla" else None
        answered = created + timedelta(minutes=answer) if answer is not None else None
        infos.append(TicketInfo(id=n, ref=f"SUP-{n}", subject="", customer_id="c", contract_id="k",
                                contract_kind=kind, created_at=created, reaction_due=due, first_response_at=answered))
        tickets.append(MonthTicket(id=n, customer_id="c", contract_kind=kind, created_at=created, reaction_due=due,
                                   first_response_at=answered))
    buckets = dict(build_reactions(month, WARSAW, tickets, now))
    report = [c for c in build_sla_report(month, WARSAW, infos, {}, now).contracts if c.kind == "sla"]
    assert sum(buckets[b] for b in ("0-25%", "25-50%", "50-75%", "75-100%")) == sum(c.met for c in report)
    assert buckets["late"] + buckets["unanswered_missed"] == sum(c.missed for c in report)
    assert buckets["unanswered_open"] == sum(c.open for c in report)


@given(st.lists(st.integers(min_value=0, max_value=60 * 24 * 90), max_size=50))
def test_backlog_buckets_hold_every_open_ticket_once(ages: list[int]) -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    backlog = dict(build_backlog([at - timedelta(minutes=a) for a in ages], at))
    assert sum(backlog.values()) == len(ages)
    assert backlog["<1d"] == sum(1 for a in ages if a < 24 * 60)
    assert backlog[">30d"] == sum(1 for a in ages if a >= 30 * 24 * 60)



def test_charts_leave_the_outbox_row_once_the_mail_is_sent(month: Month, smtp_sink: Any) -> None:
    """A statement's or report's PNG charts ride in the row only until the relay has the mail:
    the customer gets every image, and the sent row keeps each one's sha256 and size, not its bytes."""
    import base64
    import dataclasses
    import hashlib
    from email import message_from_bytes, policy

    from maild.config import load_config
    from maild.outbound.outbox import Outbox, Sender
    from maild.outbound.render import Renderer

    assert month.run("report", "hours", "--month", MONTH, "--send")[0] == 0
    assert month.run("report", "month", "--month", MONTH, "--send")[0] == 0
    cfg = load_config(month.config)
    with month.sessions() as session:
        queued = {row.id: row.context for row in session.scalars(select(OutboxRow))}
    images = {i: c["_headers"]["html"]["images"] for i, c in queued.items()}
    assert all(images.values()) and len(images) == 6
    outbox = Outbox(month.sessions, Renderer(cfg.templates_path), dataclasses.replace(cfg.smtp, port=smtp_sink.port),
                    Sender(cfg.from_address, cfg.from_name, "t"), clock=lambda: NOW)
    assert outbox.drain().sent == 6
    sent_images = {}
    for received in smtp_sink.wait_for(6):
        mail = message_from_bytes(received.data, policy=policy.default)
        for part in mail.walk():
            if part["Content-ID"]:
                sent_images[str(part["Content-ID"]).strip("<>")] = part.get_content()
    with month.sessions() as session:
        rows = {row.id: row for row in session.scalars(select(OutboxRow))}
    for row_id, before in images.items():
        row = rows[row_id]
        assert row.status == "sent"
        after = row.context["_headers"]["html"]["images"]
        assert len(json.dumps(row.context)) < len(json.dumps(queued[row_id])) - 10_000
        assert row.context["_headers"]["html"]["body"] == queued[row_id]["_headers"]["html"]["body"]
        for kept, image in zip(after, before):
            png = base64.b64decode(image["data"])
            assert "data" not in kept and kept["cid"] == image["cid"]
            assert (kept["sha256"], kept["size"]) == (hashlib.sha256(png).hexdigest(), len(png))
            assert sent_images[image["cid"]] == png  # what went out is what was queued


@pytest.mark.parametrize("language", ["pl", "en"])
def test_a_statement_charts_legend_stays_inside_the_image(language: str) -> None:
    """The balance chart's legend has two columns; "na następny miesiąc / saldo końcowe" ran
    past the 720 px image's right edge until long names were wrapped."""
    from maild.billing.charts import statement_charts
    from maild.billing.html import statement_folders, statement_words
    from maild.billing.plot import draw
    from tests.outbound.test_golden import _statement

    context = _statement("several", language)
    for chart in statement_charts(context, statement_words(context, language, statement_folders(None))):
        figure = draw(chart, language)
        renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
        width, height = figure.bbox.width, figure.bbox.height
        for legend in figure.axes[0].get_children():
            if type(legend).__name__ == "Legend":
                box = legend.get_window_extent(renderer)
                assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, (chart.key, box)


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_scope_charts_name_scopes_as_rules_scope_does(month: Month, language: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The managers' "hours by scope" chart read "awarie", "szkolenia", "bez zakresu" / "incidents",
    "unspecified" where everything else (``rules.scope.NAMES``: the commands' help, the statements)
    says "rozwiązanie problemu", "szkolenie", "bez określonego zakresu" / "problem", "not specified".
    One table: a name changed there is the name in both charts and their alt texts."""
    from maild.rules import scope
    from maild.rules.scope import scope_name

    data = cli_json(month, "report", "month", "--month", MONTH, "--json", "--language", language)
    [chart] = [c for c in month_charts(data, language) if c.key == "scopes"]
    totals = scope_totals([c for cu in data["hours"]["customers"] for c in cu["contracts"]])
    assert "unspecified" in totals and "incident" in totals
    assert chart.categories == tuple(scope.NAMES[key][language] for key in totals)
    for key, minutes in totals.items():
        assert f"{scope_name(key, language)} {hours_text(minutes, language)}" in chart.alt, chart.alt

    renamed = {key: {**names, language: f"{key} renamed"} for key, names in scope.NAMES.items()}
    monkeypatch.setattr(scope, "NAMES", renamed)
    [chart] = [c for c in month_charts(data, language) if c.key == "scopes"]
    assert chart.categories == tuple(f"{key} renamed" for key in totals)
    context = {"month": MONTH, "contracts": [{"kind": "occasional", "scopes": [
        {"scope": key, "name": scope_name(key, language), "minutes": m} for key, m in totals.items()]}]}
    words = statement_words(context, language, statement_folders())
    assert statement_charts(context, words)[0].categories == chart.categories


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_month_report_writes_money_and_numbers_as_its_reader_does(month: Month, language: str) -> None:
    """The English report wrote its money and shares the Polish way: "21728,33 to invoice (PLN)",
    "8520,00 PLN" beside an overage, "66 %". English now reads "PLN 21,728.33 to invoice", "PLN 8,520.00",
    "66%" (``wording.format_money``, the English statements' form; counts "1,488"); the Polish report is
    what it was, which its golden file (written by the code before this change) holds."""
    import re

    from maild.billing.charts import month_summary
    from maild.billing.pages import month_report_html
    from maild.rules.wording import format_amount, format_money
    from tests.outbound.test_golden import GOLDEN, VisibleText, _golden

    class ReportText(VisibleText):
        """The page's text with each summary tile on a line of its own, its figure apart from its words."""

        BLOCKS = VisibleText.BLOCKS | {"li"}

        def handle_endtag(self, tag: str) -> None:
            if tag == "b":
                self.current.append(" ")
            super().handle_endtag(tag)

    data = cli_json(month, "report", "month", "--month", MONTH, "--json", "--language", language)
    page, _ = month_report_html(data, language, "Wsparcie", datetime(2026, 12, 1, 6, 5, tzinfo=UTC))
    parser = ReportText()
    parser.feed(page)
    parser.close()
    text = "\n".join(parser.lines) + "\n"
    _golden(GOLDEN / f"month_report_html.{language}.txt", text)
    summary = month_summary(data)
    overages = [c["amount_cents"] for cu in data["hours"]["customers"] for c in cu["contracts"]
                if c["amount"] and c["kind"] == "sla"]
    assert summary["amount_cents"] > 1_000_00 and overages  # thousands to group
    if language == "en":
        assert f"\n{format_money(summary['amount_cents'], 'en')} to invoice\n" in text, text
        for cents in overages:
            assert f"{format_money(cents, 'en')}\n" in text, text
        assert not re.search(r"\d,\d\d(?!\d)|\d %|PLN\)|\d PLN", text), text
    else:
        assert f"\n{format_amount(summary['amount_cents'])} do faktury (PLN)\n" in text, text
        for cents in overages:
            assert f"{format_amount(cents)} PLN\n" in text, text


def test_a_bars_count_reads_as_its_reader_writes_it() -> None:
    """The figure at a bar's end: "1234" in Polish as before, "1,234" in English, as the tables beside it."""
    from maild.billing.charts import Chart, value_label

    chart = Chart(key="consultants", title="", alt="", kind="barh", categories=("Anna",), series=(), unit="count")
    assert (value_label(chart, 1234, "pl"), value_label(chart, 1234, "en"), value_label(chart, 12, "en")) == (
        "1234", "1,234", "12")


@pytest.mark.parametrize("language", ["pl", "en"])
def test_an_hours_axis_is_written_in_the_readers_units(language: str) -> None:
    """The statement's "hours by scope" axis read "0.0 0.5 1.0 1.5 2.0 2.5 3.0", fractions of an hour with a
    decimal point and no unit, beside bars labelled "2 godz. 30 min"; a Polish reader writes 2,5. The
    ticks are now whole hours (or minutes under an hour and a half) in the bars' own words."""
    from maild.billing.charts import statement_charts
    from maild.billing.html import statement_folders, statement_words
    from maild.billing.plot import draw
    from maild.rules.wording import format_duration
    from tests.outbound.test_golden import _statement

    context = _statement("several", language)
    for minutes in (150, 50, 9000):
        context["contracts"][0]["scopes"] = [{"scope": "incident", "name": "x", "minutes": minutes}]
        [chart] = [c for c in statement_charts(context, statement_words(context, language, statement_folders(None)))
                   if c.key == "scopes"]
        figure = draw(chart, language)
        figure.canvas.draw()
        labels = [t.get_text() for t in figure.axes[0].get_xticklabels() if t.get_text()]
        assert labels[0] == "0" and len(labels) >= 3, labels
        assert all(label == format_duration(round(float(t) * 60), language)
                   for label, t in zip(labels[1:], figure.axes[0].get_xticks()[1:])), labels
