"""Every customer-facing template, in Polish and English, for each contract kind, against
reviewed golden files: a change of wording shows up as a diff of tests/data/golden/.

After changing a template on purpose: ``MAILD_UPDATE_GOLDEN=1 pytest tests/outbound/test_golden.py``,
then read the diff of the golden files as you would read the mail.
"""
from __future__ import annotations

import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from maild.billing.reports import LedgerLine, TicketInfo, build_hours_report
from maild.cli.report import statement_context
from maild.config import BillingSettings, Config
from maild.outbound.render import Renderer
from maild.rules.customers import Contract, Customer

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

ACKS: dict[str, dict[str, Any]] = {
    "sla": ACK,
    "sla-business": {**ACK, "reaction_clock": "business", "reaction_hours": 8},
    "sla-calendar": {**ACK, "reaction_clock": "calendar", "reaction_hours": 1},
    "prepaid": {**ACK, "contract_kind": "prepaid", "reaction_due": "", "prepaid_left_minutes": 390,
                "prepaid_valid_until": "2027-01-31", "queue_position": 4, "expected_by": "2026-12-09",
                "peak_label": {"pl": "miesięczne rozliczenie VAT / JPK (termin 25.)",
                               "en": "monthly VAT / JPK filing (due on the 25th)"}},
    "occasional": {**ACK, "contract_kind": "occasional", "reaction_due": "", "hourly_rate_cents": 25000,
                   "queue_position": 12, "expected_by": ""},
    "occasional-used-up": {**ACK, "contract_kind": "occasional", "reaction_due": "", "fell_back": "used_up",
                           "hourly_rate_cents": 25000},
    "occasional-expired": {**ACK, "contract_kind": "occasional", "reaction_due": "", "fell_back": "expired",
                           "fell_back_day": "2026-11-30", "hourly_rate_cents": 25000},
    "unverified": {**ACK, "audience": "unverified", "contract_kind": "", "reaction_due": ""},
    "stranger": {**ACK, "audience": "stranger", "contract_kind": "", "reaction_due": ""},
}


def _statement(kind: str, language: str) -> dict[str, Any]:
    """A statement context built the way `report hours --send` builds it, for one contract kind."""
    contract = {
        "sla": Contract(id="acme-sla-2026", kind="sla", start=date(2026, 1, 1), monthly_minutes=480,
                        hourly_rate_cents=25000, monthly_fee_cents=150000, reaction_hours=24),
        "prepaid": Contract(id="nowak-p1", kind="prepaid", start=date(2026, 11, 1), package_minutes=600,
                            valid_until=date(2026, 11, 30), price_cents=240000, hourly_rate_cents=28000),
        "occasional": Contract(id="globex-adhoc", kind="occasional", start=date(2025, 6, 1), hourly_rate_cents=32000),
    }[kind]
    customer = Customer(id="acme", name="ACME Sp. z o.o.", language=language, billing_address="faktury@acme.pl",
                        contracts=(contract,))
    booked = datetime(2026, 11, 10, 9, tzinfo=UTC)
    lines = [
        LedgerLine(1, contract.id, "acme", 1, 570 if kind == "sla" else 45, False, booked, "incident"),
        LedgerLine(2, contract.id, "acme", 2, 90, False, booked, "development"),
    ]
    tickets = {n: TicketInfo(id=n, ref=f"SUP-{n}", subject=s, customer_id="acme", contract_id=contract.id,
                             contract_kind=kind, created_at=booked, reaction_due=None, first_response_at=None)
               for n, s in ((1, "Nie działa wydruk faktury"), (2, "Nowy raport sprzedaży"))}
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
      for kind in ("sla", "prepaid", "occasional")),
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
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path.relative_to(ROOT)} did not exist; written now: review it and commit it")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path.relative_to(ROOT)}"
    # what no customer mail may contain
    assert "Europe/" not in text and "Warsaw" not in text
    for contract_id in CONTRACT_IDS:
        assert contract_id not in text
    assert "{{" not in text and "None" not in text
    assert ".." not in text, "a date ending in 'r.' then a full stop"
    if language == "pl":
        assert not re.search(r"\d %", text), "Polish writes 80%"
        assert "doraźn" not in text, "the offer's term is pomoc okazjonalna"
        if template != "relay":
            assert body.startswith("Dzień dobry,\n")
    else:
        assert "pomoc" not in text and "godz." not in text


def test_every_customer_facing_template_has_golden_files() -> None:
    customer_facing = {"ack", "statement", "resolved", "relay", "low_balance", "expiry_reminder"}
    assert {template for template, _, _ in CASES} == customer_facing
    for template in customer_facing:
        for language in ("pl", "en"):
            assert list(GOLDEN.glob(f"{template}.*.{language}.txt")), (template, language)
