"""Every customer-facing template, in Polish and English, for each contract kind, against
reviewed golden files: a change of wording shows up as a diff of tests/data/golden/.

After changing a template on purpose: ``MAILD_UPDATE_GOLDEN=1 pytest tests/outbound/test_golden.py``,
then read the diff of the golden files as you would read the mail.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from maild.billing.charts import statement_charts, value_label
from maild.billing.html import Image, render_statement, statement_folders, statement_words
from maild.billing.reports import LedgerLine, TicketInfo, build_hours_report
from maild.cli.report import statement_context
from maild.config import BillingSettings, Config
from maild.desk.notifications import TicketView, header_block
from maild.ops.check import SAMPLE_CONTEXTS, sample_context
from maild.outbound.render import Renderer
from maild.rules.customers import Contract, Customer
from maild.rules.peak import default_peak_windows
from maild.rules.wording import NO_SUBJECT

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden"
UPDATE = os.environ.get("MAILD_UPDATE_GOLDEN") == "1"
RENDERER = Renderer(ROOT / "templates")
WARSAW = ZoneInfo("Europe/Warsaw")
UTC = timezone.utc

# Contract ids and the time zone are in the contexts (the code needs them); no mail may show them.
CONTRACT_IDS = ("acme-sla-2026", "nowak-p1", "globex-adhoc")

ACK = {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "from_name": "Wsparcie ERP",
       "audience": "customer", "contract_kind": "sla", "timezone": "Europe/Warsaw",
       "reaction_due": "2026-12-07T14:59:00+00:00", "reaction_hours": 24, "reaction_clock": "working_days",
       "opens": "08:00", "closes": "16:00", "prepaid_left_minutes": 0, "prepaid_valid_until": "",
       "fell_back": "", "fell_back_day": "", "hourly_rate_cents": None, "unit_minutes": 15, "peak_label": "",
       "queue_position": 0, "expected_by": ""}

# the packaged window's own label: a change of its wording shows in the golden files too
VAT_WINDOW = next(w for w in default_peak_windows() if w.name == "vat_jpk")

ACKS: dict[str, dict[str, Any]] = {
    "sla": ACK,
    "sla-business": {**ACK, "reaction_clock": "business", "reaction_hours": 8},
    "sla-calendar": {**ACK, "reaction_clock": "calendar", "reaction_hours": 1},
    "prepaid": {**ACK, "contract_kind": "prepaid", "reaction_due": "", "prepaid_left_minutes": 390,
                "prepaid_valid_until": "2027-01-31", "queue_position": 4, "expected_by": "2026-12-09",
                "peak_label": {language: VAT_WINDOW.label_for(language) for language in ("pl", "en")}},
    "occasional": {**ACK, "contract_kind": "occasional", "reaction_due": "", "hourly_rate_cents": 25000,
                   "queue_position": 12, "expected_by": ""},
    "occasional-used-up": {**ACK, "contract_kind": "occasional", "reaction_due": "", "fell_back": "used_up",
                           "hourly_rate_cents": 25000},
    "occasional-expired": {**ACK, "contract_kind": "occasional", "reaction_due": "", "fell_back": "expired",
                           "fell_back_day": "2026-11-30", "hourly_rate_cents": 25000},
    "unverified": {**ACK, "audience": "unverified", "contract_kind": "", "reaction_due": ""},
    "stranger": {**ACK, "audience": "stranger", "contract_kind": "", "reaction_due": ""},
}


CONTRACTS = {
    "sla": Contract(id="acme-sla-2026", kind="sla", start=date(2026, 1, 1), monthly_minutes=480,
                    hourly_rate_cents=25000, monthly_fee_cents=150000, reaction_hours=24),
    "prepaid": Contract(id="nowak-p1", kind="prepaid", start=date(2026, 11, 1), package_minutes=600,
                        valid_until=date(2026, 11, 30), price_cents=240000, hourly_rate_cents=28000),
    "occasional": Contract(id="globex-adhoc", kind="occasional", start=date(2025, 6, 1), hourly_rate_cents=32000),
}
STATEMENT_KINDS = ("sla", "prepaid", "occasional", "several")


def _statement(kind: str, language: str) -> dict[str, Any]:
    """A statement context built the way `report hours --send` builds it, for one contract kind
    ("several": a customer with a service contract and a package, each with a ticket)."""
    contracts = (CONTRACTS["sla"], CONTRACTS["prepaid"]) if kind == "several" else (CONTRACTS[kind],)
    customer = Customer(id="acme", name="ACME Sp. z o.o.", language=language, billing_address="faktury@acme.pl",
                        contracts=contracts)
    booked = datetime(2026, 11, 10, 9, tzinfo=UTC)
    first, last = contracts[0], contracts[-1]
    lines = [
        LedgerLine(1, first.id, "acme", 1, 570 if first.kind == "sla" else 45, False, booked, "incident"),
        LedgerLine(2, last.id, "acme", 2, 90, False, booked, "development"),
    ]
    tickets = {n: TicketInfo(id=n, ref=f"SUP-{n}", subject=s, customer_id="acme", contract_id=c.id,
                             contract_kind=c.kind, created_at=booked, reaction_due=None, first_response_at=None)
               for n, s, c in ((1, "Nie działa wydruk faktury", first), (2, "Nowy raport sprzedaży", last))}
    report = build_hours_report("2026-11", WARSAW, (customer,), lines, tickets, 15)
    [hours] = report.customers
    cfg = Config.__new__(Config)
    object.__setattr__(cfg, "from_name", "Wsparcie ERP")
    object.__setattr__(cfg, "billing", BillingSettings())
    context = statement_context(cfg, report, hours)
    context.pop("_headers")
    return context


def _localized(context: dict[str, Any], language: str) -> dict[str, Any]:
    return {k: (v[language] if isinstance(v, dict) and set(v) == {"pl", "en"} else v) for k, v in context.items()}


CASES: list[tuple[str, str, dict[str, Any]]] = [
    *(("ack", kind, context) for kind, context in ACKS.items()),
    *(("statement", kind, {"pl": _statement(kind, "pl"), "en": _statement(kind, "en")})
      for kind in STATEMENT_KINDS),
    ("resolved", "any", {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "requester_name": "Jan Kowalski",
                         "reopen_days": 7, "from_name": "Wsparcie ERP"}),
    ("relay", "any", {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "consultant": "Anna Nowak",
                      "body": "Dzień dobry,\n\nproszę sprawdzić ustawienia drukarki.\n"}),
    ("low_balance", "prepaid", {"ref": "SUP-12", "customer_name": "Biuro Rachunkowe Nowak", "left_minutes": 45,
                                "valid_until": "2027-01-31", "rate_cents": 28000, "from_name": "Wsparcie ERP"}),
    ("low_balance", "prepaid-used-up", {"ref": "SUP-12", "customer_name": "Biuro Rachunkowe Nowak",
                                        "left_minutes": 0, "valid_until": "", "rate_cents": None,
                                        "from_name": "Wsparcie ERP"}),
    ("expiry_reminder", "prepaid", {"customer_name": "Biuro Rachunkowe Nowak", "left_minutes": 150,
                                    "valid_until": "2026-12-31", "from_name": "Wsparcie ERP"}),
    # whole hours: "3 godz." ends the sentence without a second full stop
    ("expiry_reminder", "prepaid-hours", {"customer_name": "Biuro Rachunkowe Nowak", "left_minutes": 180,
                                          "valid_until": "2026-12-31", "from_name": "Wsparcie ERP"}),
]


@pytest.mark.parametrize(("template", "kind", "context"), CASES, ids=[f"{t}-{k}" for t, k, _ in CASES])
@pytest.mark.parametrize("language", ["pl", "en"])
def test_customer_mail_matches_its_reviewed_golden_file(template: str, kind: str, context: dict[str, Any],
                                                        language: str) -> None:
    if set(context) == {"pl", "en"}:
        context = context[language]
    subject, body = RENDERER.render(template, language, _localized(context, language))
    text = f"Subject: {subject}\n\n{body}"
    path = GOLDEN / f"{template}.{kind}.{language}.txt"
    _golden(path, text)
    assert_reads_right(text, language)
    if language == "pl" and template != "relay":
        assert body.startswith("Dzień dobry,\n")
    if language == "en" and body.startswith("Hello,\n\n"):
        assert body[len("Hello,\n\n")].isupper(), "an English sentence after the greeting starts with a capital"


def assert_reads_right(text: str, language: str) -> None:
    """What no customer mail may contain, in either part."""
    assert "Europe/" not in text and "Warsaw" not in text
    for contract_id in CONTRACT_IDS:
        assert contract_id not in text
    assert "{{" not in text and "None" not in text
    assert not re.search(r"\([^()]*\(", text), "parentheses inside parentheses"
    assert ".." not in text, "a date ending in 'r.' then a full stop"
    if language == "pl":
        assert not re.search(r"\d %", text), "Polish writes 80%"
        assert "doraźn" not in text, "the offer's term is pomoc okazjonalna"
    else:
        assert "pomoc" not in text and "godz." not in text


def _golden(path: Path, text: str) -> None:
    if UPDATE or not path.exists():
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path.relative_to(ROOT)} did not exist; written now: review it and commit it")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path.relative_to(ROOT)}"


# A consultant's notification of a new ticket: the ticket's reasons as every version stored them
# (English), the header block worded in the consultant's language.
NOTIFY_VIEW = TicketView(
    ref="SUP-12", subject="Nie działa wydruk faktury", customer_name="Acme", contract_id="acme-sla-2026",
    contract_kind="sla", tier_name="sla", priority="P1", reasons=(), minutes_left=390, assigned_to=None,
    reaction_due=datetime(2026, 12, 7, 14, 59, tzinfo=UTC), requester="jan@acme.pl", status="new")
NOTIFY_REASONS = {
    "p1": ("P1", "P1: urgent words 'nie działa', 'pilne'"),
    "p2": ("P2", "P2: peak period vat_jpk, topic 'JPK'"),
    "p3": ("P3", "P3: routine"),
    "p4": ("P4", "P4: automatic mail"),
    "unverified": ("P3", "P3: routine"),
}


@pytest.mark.parametrize("case", sorted(NOTIFY_REASONS))
@pytest.mark.parametrize("language", ["pl", "en"])
def test_consultant_notification_matches_its_reviewed_golden_file(case: str, language: str) -> None:
    priority, reason = NOTIFY_REASONS[case]
    view = replace(NOTIFY_VIEW, priority=priority,
                   reasons=("known customer acme (sla)", "tier sla: sla contract", reason, "no ticket matched: new ticket"))
    if case == "unverified":  # a stranger: no contract, billed as occasional work, the last tier
        view = replace(view, contract_id="", contract_kind="occasional", tier_name="unverified", minutes_left=None,
                       reaction_due=None, customer_name="")
    context = header_block(view, WARSAW, "support+k7q2@firma.pl", language, default_peak_windows())
    context.update(body="Wydruk faktury nie działa od rana.\n", trimmed=False, attached=[], named=[], event="new",
                   author="jan@acme.pl")
    subject, body = RENDERER.render("notify_new", language, context)
    _golden(GOLDEN / f"notify_new.{case}.{language}.txt", f"Subject: {subject}\n\n{body}")
    queue = next(line for line in body.splitlines() if line.startswith(("  Kolejka:", "  Queue:")))
    assert queue.count(priority) == 1 and " - " in queue, "the priority, then its reason"
    if language == "pl":
        assert not re.search(r"urgent|routine|automatic|peak|topic|words|unverified|occasional", body), body


class VisibleText(HTMLParser):
    """A page's text as a reader sees it: a line per heading, paragraph and table row (cells
    joined by " | "), and every image's alt text (what a reader without images gets)."""

    BLOCKS = {"h1", "h2", "p", "tr", "figure", "title", "br"}

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "style":
            self.skip = True
        if tag in ("td", "th") and self.current:
            self.current.append(" | ")
        if tag == "img":
            self.lines.append(f"[{dict(attrs).get('alt')}]")
        if tag == "br":
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self.skip = False
        if tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.skip and data.strip():
            self.current.append(" ".join(data.split()))

    def _flush(self) -> None:
        line = "".join(self.current).strip()
        if line:
            self.lines.append(line)
        self.current = []


def visible_text(page: str) -> str:
    parser = VisibleText()
    parser.feed(page)
    parser.close()
    return "\n".join(parser.lines) + "\n"


def statement_page(context: dict[str, Any], language: str) -> tuple[str, str]:
    """The statement's HTML part as ``report hours --send`` renders it, charts not drawn (their
    ``src`` is a placeholder), and the words drawn into the charts, one line per chart."""
    folders = statement_folders(None)
    charts = statement_charts(context, statement_words(context, language, folders))
    images = [Image(key=c.key, src=f"cid:{c.key}", alt=c.alt, title=c.title, width=600, height=300) for c in charts]
    page = render_statement(context, language, images, folders)
    drawn = [f"{c.key}: {c.title} | legend: {', '.join(s.name for s in c.series)} | bars: "
             f"{', '.join(c.categories)}" + (f" | notes: {', '.join(n for n in c.notes if n)}" if any(c.notes) else "")
             + f" | values: {'; '.join(', '.join(value_label(c, v, language) for v in s.values if v) for s in c.series)}"
             for c in charts]
    return page, "\n".join(drawn) + "\n"


@pytest.mark.parametrize("kind", STATEMENT_KINDS)
@pytest.mark.parametrize("language", ["pl", "en"])
def test_statement_html_matches_its_reviewed_golden_file(kind: str, language: str) -> None:
    """The HTML part (its <main>), what a reader sees of it, and what its charts say."""
    page, drawn = statement_page(_statement(kind, language), language)
    main = page[page.index("<main>"):page.index("</main>") + len("</main>")]
    seen = visible_text(page)
    _golden(GOLDEN / f"statement_html.{kind}.{language}.html", main + "\n")
    _golden(GOLDEN / f"statement_html.{kind}.{language}.txt", f"{seen}\nDrawn in the charts:\n{drawn}")
    assert_reads_right(seen + drawn, language)
    assert f'<html lang="{language}">' in page
    first = seen.splitlines()
    assert first[2] == ("Dzień dobry," if language == "pl" else "Hello,"), first[:3]


MONEY = {"pl": re.compile(r"-?\d{1,3}(?: \d{3})*,\d{2} zł"), "en": re.compile(r"-?PLN \d{1,3}(?:,\d{3})*\.\d{2}")}


@pytest.mark.parametrize("kind", STATEMENT_KINDS)
@pytest.mark.parametrize("language", ["pl", "en"])
def test_statement_html_shows_the_figures_of_the_text_statement(kind: str, language: str) -> None:
    """Net, VAT and gross, fees, rates and amounts: the same figures, as often, in both parts."""
    context = _statement(kind, language)
    _, body = RENDERER.render("statement", language, context)
    seen = visible_text(statement_page(context, language)[0])
    money = MONEY[language]
    assert Counter(money.findall(seen)) == Counter(money.findall(body)) != Counter()
    label = {"pl": ("Kwota netto", "VAT 23%", "Kwota brutto"), "en": ("Net amount", "VAT 23%", "Gross amount")}
    figures = [context["net_cents"], context["vat_cents"], context["gross_cents"]]
    assert context["gross_cents"] == context["net_cents"] + context["vat_cents"] > 0
    for name, cents in zip(label[language], figures):
        shown = RENDERER.env.filters["money"](cents, language)
        assert re.search(rf"^{re.escape(name)}:\s+{re.escape(shown)}$", body, re.M), (name, shown)
        assert f"{name} | {shown}\n" in seen, (name, shown)


def test_every_customer_facing_template_has_golden_files() -> None:
    customer_facing = {"ack", "statement", "resolved", "relay", "low_balance", "expiry_reminder"}
    assert {template for template, _, _ in CASES} == customer_facing
    for template in customer_facing:
        for language in ("pl", "en"):
            assert list(GOLDEN.glob(f"{template}.*.{language}.txt")), (template, language)
    for kind in STATEMENT_KINDS:  # the statement's HTML part
        for language in ("pl", "en"):
            assert (GOLDEN / f"statement_html.{kind}.{language}.html").exists(), (kind, language)


def _without_subject(value: Any) -> Any:
    """``value`` with every ``subject`` in it the one a ticket stores for a mail that had none."""
    if isinstance(value, dict):
        return {k: NO_SUBJECT if k == "subject" else _without_subject(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_subject(v) for v in value]
    return value


@pytest.mark.parametrize("template", sorted(SAMPLE_CONTEXTS))
def test_a_ticket_without_a_subject_reads_bez_tematu_in_polish(template: str) -> None:
    """A Polish customer's ack read "[SUP-1] (no subject)"; every Polish mail that shows a subject
    shows "(bez tematu)", the English ones as stored."""
    context = _without_subject(sample_context(template, "pl"))
    subject, body = RENDERER.render(template, "pl", context)
    assert NO_SUBJECT not in subject + body
    if "subject" in str(context):
        assert "(bez tematu)" in subject + body, (template, subject, body)
    english_subject, english_body = RENDERER.render(template, "en", _without_subject(sample_context(template, "en")))
    assert "(bez tematu)" not in english_subject + english_body


@pytest.mark.parametrize("language", ["pl", "en"])
def test_a_sender_without_a_name_is_named_once(language: str) -> None:
    """A stranger's notification read "od jan@acme.pl <jan@acme.pl>"."""
    context = {**sample_context("notify_reply", language), "customer": "jan@acme.pl", "author": "jan@acme.pl"}
    _, body = RENDERER.render("notify_reply", language, context)
    assert "jan@acme.pl <jan@acme.pl>" not in body and "jan@acme.pl " in body
    _, named = RENDERER.render("notify_reply", language, {**context, "customer": "Acme"})
    assert "Acme <jan@acme.pl> " in named


# The managers' alerts, with the context the daemon queues (problems -> plan_alerts -> AlertMail.context):
# a problem detected at 19:41 UTC, the last fetch at 19:10 UTC, read in Warsaw's time.
ALERT_AT = datetime(2026, 12, 6, 19, 41, tzinfo=UTC)


def _alert_contexts() -> dict[str, dict[str, Any]]:
    from datetime import timedelta

    from maild.ops.health import Health, plan_alerts, problems

    health = Health(now=ALERT_AT, last_fetch_at=ALERT_AT - timedelta(minutes=31), outbox_depth=3,
                    oldest_unsent=ALERT_AT - timedelta(minutes=75), quarantined=0, open_tickets=0, nearest_due=())
    found = problems(health, timedelta(minutes=30), timedelta(minutes=30), ALERT_AT - timedelta(hours=1))
    raised, alerted = plan_alerts(found, {}, ALERT_AT)
    over, _ = plan_alerts({}, alerted, ALERT_AT + timedelta(hours=2))
    return {f"{m.key}{'-recovered' if m.recovered else ''}": m.context("Europe/Warsaw") for m in raised + over}


ALERTS = _alert_contexts()


@pytest.mark.parametrize("case", sorted(ALERTS))
@pytest.mark.parametrize("language", ["pl", "en"])
def test_manager_alert_matches_its_reviewed_golden_file(case: str, language: str) -> None:
    """Times in the business zone and the manager's words (an alert read "Od: 2026-12-06T19:10:03+00:00")."""
    subject, body = RENDERER.render("alert", language, ALERTS[case])
    text = f"Subject: {subject}\n\n{body}"
    _golden(GOLDEN / f"alert.{case}.{language}.txt", text)
    assert "T19:" not in text and "+00:00" not in text and "Europe/" not in text, text
    assert ("20:41" in text) and ("niedzieli 6.12.2026 r." in text if language == "pl" else "Sunday 6 December 2026" in text)
    if language == "pl":
        assert not re.search(r"mailbox|outgoing|fetch|unsent|limit \d", text), text


def test_an_alert_names_its_problem_from_one_table() -> None:
    """The subject and the body name the problem alike, from wording's table; an alert queued
    with a key this version does not know (or none) names it as it was queued."""
    from maild.rules.wording import format_problem

    for language in ("pl", "en"):
        for key in ("fetch", "outbox"):
            subject, body = RENDERER.render("alert", language, ALERTS[key])
            name = format_problem(key, language)
            assert subject.endswith(f": {name}") and f": {name}.\n" in body
        unknown = {**ALERTS["fetch"], "key": "disk", "what": "disk space", "detail": "disk 95% full"}
        subject, body = RENDERER.render("alert", language, unknown)
        assert subject.endswith(": disk space") and "disk 95% full" in body


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_statements_name_the_kinds_from_wordings_one_table(language: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text statement, its HTML part and the words drawn in its charts take a kind's name from
    ``wording.kind_name`` (the table the Polish notifications read too), not from words of their own."""
    from maild.rules import wording

    monkeypatch.setitem(wording._KINDS, "prepaid", ("abonament godzinowy", "hour bundle"))
    monkeypatch.setitem(wording._KINDS, "sla", ("umowa utrzymaniowa", "maintenance agreement"))
    context = _statement("several", language)
    _, body = RENDERER.render("statement", language, context)
    page, drawn = statement_page(context, language)
    seen = visible_text(page)
    bundle, agreement = (("Abonament godzinowy", "Umowa utrzymaniowa") if language == "pl"
                         else ("Hour bundle", "Maintenance agreement"))
    for text in (body, seen, drawn):
        assert bundle in text and agreement in text, text
        assert not re.search("Pakiet godzin|Umowa serwisowa|Prepaid hour package|Service contract", text), text


# A consultant's bounce notice, with the context intake queues from a delivery report.
BOUNCES: dict[str, dict[str, Any]] = {
    "no-mailbox": {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "failed": ["jan@acme.pl"],
                   "status": "5.1.1", "permanent": True,
                   "diagnostic": "smtp; 550 5.1.1 <jan@acme.pl>: Recipient address rejected: User unknown"},
    "mailbox-full-delayed": {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "failed": ["jan@acme.pl"],
                             "status": "4.2.2", "permanent": False, "diagnostic": ""},
    "no-code": {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "failed": ["jan@acme.pl"],
                "status": "", "permanent": True, "diagnostic": "550 Requested action not taken: mailbox unavailable"},
}


@pytest.mark.parametrize("case", sorted(BOUNCES))
@pytest.mark.parametrize("language", ["pl", "en"])
def test_bounce_notice_matches_its_reviewed_golden_file(case: str, language: str) -> None:
    """The status code explained in the reader's words; the server's reply labelled as such and as it was sent."""
    context = BOUNCES[case]
    subject, body = RENDERER.render("bounce_notice", language, context)
    _golden(GOLDEN / f"bounce_notice.{case}.{language}.txt", f"Subject: {subject}\n\n{body}")
    if context["diagnostic"]:
        label = ("Odpowiedź serwera pocztowego (w oryginalnym brzmieniu):" if language == "pl"
                 else "The mail server's reply, as it was sent:")
        assert f"{label}\n  {context['diagnostic']}\n" in body, body
    if context["status"]:
        from maild.rules.delivery_status import explain_status

        assert f"{context['status']} – {explain_status(context['status'], language)}\n" in body, body
    if language == "pl":
        assert not re.search(r"mailbox|permanent|temporary|failure|Server", body.replace(context["diagnostic"], ""))


@pytest.mark.parametrize("language", ["pl", "en"])
def test_a_consultants_priority_and_reason_show_in_the_next_notification(language: str) -> None:
    """``#priority P2 <reason>`` was kept in the ticket's events only; the next notification of the
    ticket (a reply's too) shows who set it and why, the reason as written."""
    from maild.rules.reasons import with_priority_set

    reasons = with_priority_set(("tier sla: sla contract", "P1: urgent words 'Awaria'"), "P2", "anna@firma.pl",
                                "obejście działa")
    view = replace(NOTIFY_VIEW, priority="P2", reasons=tuple(reasons), status="open")
    context = header_block(view, WARSAW, "support+k7q2@firma.pl", language, default_peak_windows())
    context.update(body="Nadal nie działa.\n", trimmed=False, attached=[], named=[], event="follow_up",
                   author="jan@acme.pl")
    _, body = RENDERER.render("notify_reply", language, context)
    expected = {"pl": "  Kolejka:    SLA P2 - nadany przez anna@firma.pl, powód: „obejście działa”\n  Status:     otwarte\n",
                "en": "  Queue:     SLA P2 - set by anna@firma.pl, reason: “obejście działa”\n  Status:    open\n"}
    assert expected[language] in body, body


@pytest.mark.parametrize(("language", "day", "breached", "subject"), [
    ("pl", "2.01.2026 r.", "1.01.2026 r.", "Kolejka zgłoszeń 2.01.2026 r. – 1 zgłoszenie, 1 po terminie"),
    ("en", "2 January 2026", "1 January 2026", "Support queue 2 January 2026: 1 ticket, 1 overdue")])
def test_the_digest_names_its_days_as_its_reader_writes_them(language: str, day: str, breached: str,
                                                              subject: str) -> None:
    """Both parts of the digest read "Kolejka zgłoszeń 2026-01-02" in Polish; the days as the reader writes them."""
    from maild.desk.digest_html import render_digest_html

    context = sample_context("digest", language)
    rendered, body = RENDERER.render("digest", language, context)
    page = render_digest_html(context["rows"], language=language, day=context["day"], everything=True,
                              breaches=context["breaches"], previous_day=context["previous_day"])
    assert rendered == subject
    for part in (body, visible_text(page)):
        assert day in part and breached in part and "2026-01-0" not in part, part


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_month_report_mail_names_its_month_and_zone_in_the_managers_words(language: str) -> None:
    """The English month report read "Support report 2026-01 (times in Europe/Warsaw)"."""
    subject, body = RENDERER.render("month_report", language, SAMPLE_CONTEXTS["month_report"])
    month, zone = ("styczeń 2026", "(czas polski)") if language == "pl" else ("January 2026", "(Polish time)")
    for text in (subject, body):
        assert month in text and "2026-01" not in text and "Europe/" not in text, text
    assert zone in body, body


@pytest.mark.parametrize("language", ["pl", "en"])
def test_refused_commands_mail_matches_its_reviewed_golden_file(language: str) -> None:
    """The refused-commands mail as the intake queues it: its help listed the English scope words
    to a Polish consultant ("#scope consultation|installation|..."); each reader's words now, and
    the other language's named as taken too."""
    from maild.desk.commands import parse_commands
    from maild.intake.pipeline import _command_error_context, _error_rows

    parsed = parse_commands("#time 1h szkolenie\n#scope gotowanie\n#status później\nDzień dobry,\n")
    context = _command_error_context(language, "SUP-12", "Nie działa wydruk faktury", _error_rows(parsed.errors))
    subject, body = RENDERER.render("command_error", language, context)
    _golden(GOLDEN / f"command_error.scope.{language}.txt", f"Subject: {subject}\n\n{body}")
    polish, english = "konsultacja|instalacja|szkolenie|problem|rozwój", "consultation|installation|training"
    assert (polish if language == "pl" else english) in body
    assert (english if language == "pl" else polish) not in body


def _authorities() -> dict[str, Any]:
    """check_authority's verdict for each proof it can decide by, as the intake gets them."""
    from maild.desk.authority import check_authority, token_address

    support, token = "support@firma.pl", "k7q2abcd"
    ask = dict(authserv_configured=False, auth_passed=False, auth_reason="", references=(),
               sent_to_consultant=set(), recipients=("support@firma.pl",), support_address=support, token=token)
    verdicts = [check_authority(**{**ask, "authserv_configured": True, "auth_passed": True,  # type: ignore[arg-type]
                                   "auth_reason": "dkim=pass header.d=firma.pl"}),
                check_authority(**{**ask, "authserv_configured": True,  # type: ignore[arg-type]
                                   "auth_reason": "dkim=fail header.d=firma.pl"}),
                check_authority(**{**ask, "references": ("<n1@firma.pl>",),  # type: ignore[arg-type]
                                   "sent_to_consultant": {"<n1@firma.pl>"}}),
                check_authority(**{**ask, "recipients": (token_address(support, token),)}),  # type: ignore[arg-type]
                check_authority(**ask)]  # type: ignore[arg-type]
    return {v.code: v for v in verdicts}


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_authority_notice_words_every_reason_code_in_the_readers_language(language: str) -> None:
    """The Polish notice gave the English log line ("Powód: answers maild's mail <...> to this
    consultant") for any code but the two it worded: every code the verdict carries has its words."""
    from typing import get_args

    from maild.desk.authority import AuthorityCode

    verdicts = _authorities()
    assert set(verdicts) == set(get_args(AuthorityCode)), "a proof without a case here"
    for code, verdict in verdicts.items():
        context = {"ref": "SUP-12", "subject": "Nie działa wydruk faktury", "reason": verdict.reason,
                   "reason_code": verdict.code, "detail": verdict.detail, "new_ticket_address": "support+k7q2@firma.pl"}
        subject, body = RENDERER.render("authority_notice", language, context)
        _golden(GOLDEN / f"authority_notice.{code}.{language}.txt", f"Subject: {subject}\n\n{body}")
        why = body.split("Powód: " if language == "pl" else "Why: ", 1)[1].split("\n\n", 1)[0]
        assert verdict.reason not in body and why.strip(), (code, body)
        if language == "pl":
            assert not re.search(r"\b(?:mail|our|server|personal|address|sender|answers)\b", why), (code, why)
        # a row an earlier version queued (no code, no detail) reads the same words for its reason
        old = {k: v for k, v in context.items() if k not in ("reason_code", "detail")}
        if code in ("no_proof", "not_authenticated"):
            _, old_body = RENDERER.render("authority_notice", language, old)
            assert verdict.reason not in old_body and why.split(" (")[0].split(";")[0] in old_body, old_body


@pytest.mark.parametrize(("language", "skipped", "line"), [
    ("pl", [1], "(Wcześniejszy poziom eskalacji 1 minął, gdy maild nie działał lub wsparcie było nieczynne; "
                "ta jedna wiadomość go zastępuje.)"),
    ("pl", [1, 2, 3], "(Wcześniejsze poziomy eskalacji 1, 2 i 3 minęły, gdy maild nie działał lub wsparcie było "
                      "nieczynne; ta jedna wiadomość je zastępuje.)"),
    ("en", [1], "(Earlier escalation level 1 was passed while maild was not running or support was closed; "
                "this one mail replaces it.)"),
    ("en", [1, 2], "(Earlier escalation levels 1 and 2 were passed while maild was not running or support was "
                   "closed; this one mail replaces them.)"),
])
def test_an_escalation_names_the_levels_it_replaces_in_number(language: str, skipped: list[int], line: str) -> None:
    """One level passed read "Wcześniejsze poziomy eskalacji 1 minęły" / "Earlier escalation levels 1 were"."""
    _, body = RENDERER.render("escalation", language, {**sample_context("escalation", language), "skipped": skipped,
                                                       "level": len(skipped) + 1, "levels": 4})
    assert line in body.splitlines(), body


# The managers' month report mail, text part: the figures of ``report month --send`` (``mail_context``),
# a month big enough for thousands.
MONTH_REPORT = {"month": "2026-11", "timezone": "Europe/Warsaw", "from_name": "Wsparcie ERP",
                "summary": {"tickets": 1488, "sla_met": 466, "sla_due": 759, "breaches": 293, "backlog": 1112,
                            "minutes": 83_905, "amount_cents": 28_284_417},
                "sla": [{"customer_name": "ACME Sp. z o.o.", "contract_id": "acme-sla-2026", "met": 1253, "due": 1408,
                         "missed_refs": ["SUP-887", "SUP-889"]}]}


@pytest.mark.parametrize("language", ["pl", "en"])
def test_month_report_text_matches_its_reviewed_golden_file(language: str) -> None:
    """The English text part read "Tickets opened: 1488", "Hours booked: 1398 h 25 min": counts and
    hours now have a comma between thousands in English; the Polish part is as it was."""
    subject, body = RENDERER.render("month_report", language, MONTH_REPORT)
    _golden(GOLDEN / f"month_report.big.{language}.txt", f"Subject: {subject}\n\n{body}")
    if language == "en":
        assert "1,488" in body and "1,398 h 25 min" in body and "1,253 of 1,408 in time" in body, body
