"""An sla statement says which unused hours expired, so its lines add up for the customer.

A contract's last month (or carry-over past ``rollover_months``) ends hours unused: the statement
read "Miesięczny limit 7 godz. 30 min, Wykorzystane 2 godz. 30 min, Na następny miesiąc 0 min",
five hours gone without a word, in the text and in the HTML part.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from maild.billing.reports import LedgerLine, TicketInfo, build_hours_report
from maild.cli.report import statement_context
from maild.config import BillingSettings, Config
from maild.rules.customers import Contract, Customer
from tests.outbound.test_golden import RENDERER, statement_page

UTC = timezone.utc
ENDING = Contract(id="acme-sla-2026", kind="sla", start=date(2026, 11, 1), end=date(2026, 11, 30),
                  monthly_minutes=450, hourly_rate_cents=25000)


def context(language: str) -> dict[str, Any]:
    customer = Customer(id="acme", name="ACME Sp. z o.o.", language=language, billing_address="faktury@acme.pl",
                        contracts=(ENDING,))
    booked = datetime(2026, 11, 10, 9, tzinfo=UTC)
    lines = [LedgerLine(1, ENDING.id, "acme", 1, 150, False, booked, "incident")]
    tickets = {1: TicketInfo(id=1, ref="SUP-1", subject="Wydruk", customer_id="acme", contract_id=ENDING.id,
                             contract_kind="sla", created_at=booked, reaction_due=None, first_response_at=None)}
    report = build_hours_report("2026-11", ZoneInfo("Europe/Warsaw"), (customer,), lines, tickets, 15)
    cfg = Config.__new__(Config)
    object.__setattr__(cfg, "from_name", "Wsparcie ERP")
    object.__setattr__(cfg, "billing", BillingSettings())
    found = statement_context(cfg, report, report.customers[0])
    found.pop("_headers")
    return found


@pytest.mark.parametrize(("language", "line"), [("pl", "Niewykorzystane, wygasłe:  5 godz."),
                                                 ("en", "Unused, expired:            5 h")])
def test_the_hours_that_expired_unused_are_on_the_statement(language: str, line: str) -> None:
    found = context(language)
    [sla] = found["contracts"]
    assert (sla["allowance_minutes"], sla["total_minutes"], sla["carry_out_minutes"]) == (450, 150, 0)
    _, text = RENDERER.render("statement", language, found)
    assert f"\n  {line}\n" in text, text
    page, _ = statement_page(found, language)
    label = line.split(":")[0]
    assert re.search(rf"<th>{label}</th><td class=\"num\">{line.split(':', 1)[1].strip()}</td>", page), page

    queued_before = {**found, "contracts": [{k: v for k, v in sla.items() if k != "expired_minutes"}]}
    _, text = RENDERER.render("statement", language, queued_before)  # a row queued by the version before
    assert label not in text
