"""Peak periods end to end: queue order and acknowledgements during and outside a window.

2026-11-20 lies in the monthly VAT/JPK window (days 18-25) of the Polish
defaults; 2026-11-05 lies in no default window.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_sla_e2e import World, body, warsaw

IN_WINDOW = warsaw("2026-11-20 10:00")
OUTSIDE = warsaw("2026-07-28 10:00")  # a day in no default window


def deliver_mix(w: World) -> None:
    """Five new tickets a minute apart: sla, prepaid x2, occasional x2; one of each paying kind on topic."""
    w.mail(sender="ola@acme.pl", subject="Pytanie o raport", msgid="<s1@acme.pl>")
    w.at(w.clock.now + timedelta(minutes=1))
    w.mail(sender="kari@nord.no", subject="Question about printouts", msgid="<p1@nord.no>")
    w.at(w.clock.now + timedelta(minutes=1))
    w.mail(sender="kari@nord.no", subject="JPK_V7M export fails", msgid="<p2@nord.no>",
           body="The JPK file for November is empty.\n")
    w.at(w.clock.now + timedelta(minutes=1))
    w.mail(sender="biuro@kowalski.pl", subject="Deklaracja VAT", msgid="<o1@kowalski.pl>",
           body="Nie generuje się deklaracja VAT-7.\n")
    w.at(w.clock.now + timedelta(minutes=1))
    w.mail(sender="biuro@kowalski.pl", subject="Zmiana hasła", msgid="<o2@kowalski.pl>")


def queue(w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    listed = w.cli(capsys, monkeypatch, "tickets", "list", "--json")
    return [(t["subject"], t["priority"], t["peak"]) for t in listed]


def test_peak_topic_ranks_above_routine_within_the_tier_and_acks_warn(
    tmp_path: Path, smtp_sink: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(tmp_path, smtp_sink, IN_WINDOW)
    deliver_mix(w)
    w.run()
    assert queue(w, capsys, monkeypatch) == [
        ("Pytanie o raport", "P3", None),  # sla first, even routine, even in a peak period
        ("JPK_V7M export fails", "P2", "vat_jpk"),
        ("Question about printouts", "P3", None),
        ("Deklaracja VAT", "P2", "vat_jpk"),
        ("Zmiana hasła", "P3", None),
    ]
    acks = {m.parsed["Subject"]: body(m) for m in smtp_sink.messages}
    assert len(acks) == 5
    busy_en = "This is a busy period"
    busy_pl = "Trwa okres wzmożonej liczby zgłoszeń"
    # the notice names the period the ticket is about, and only that one
    assert "This is a busy period – monthly VAT / JPK filing (due on the 25th) – so" in acks["[SUP-3] JPK_V7M export fails"]
    assert busy_en not in acks["[SUP-2] Question about printouts"], "a routine topic: no period is named"
    assert busy_pl in acks["[SUP-4] Deklaracja VAT"] and "VAT / JPK" in acks["[SUP-4] Deklaracja VAT"]
    assert busy_pl not in acks["[SUP-5] Zmiana hasła"]
    assert busy_pl not in acks["[SUP-1] Pytanie o raport"], "sla customers are served first: no warning"
    assert "zareagujemy na zgłoszenie do" in acks["[SUP-1] Pytanie o raport"]


def test_the_notice_names_the_window_the_ticket_is_about(tmp_path: Path, smtp_sink: Any) -> None:
    # 9 December 2026: payroll (to the 10th) and ZUS (8th-20th) are both active.
    w = World(tmp_path, smtp_sink, warsaw("2026-12-09 10:00"))
    w.mail(sender="kari@nord.no", subject="Lista płac za listopad się nie nalicza", msgid="<pay@nord.no>")
    w.mail(sender="kari@nord.no", subject="Składki ZUS w deklaracji DRA", msgid="<zus@nord.no>")
    w.run()
    acks = {m.parsed["Subject"]: body(m) for m in smtp_sink.messages}
    payroll = acks["[SUP-1] Lista płac za listopad się nie nalicza"]
    assert "monthly payroll (wages due by the 10th)" in payroll and "ZUS" not in payroll and "VAT" not in payroll
    assert "social insurance (ZUS)" in acks["[SUP-2] Składki ZUS w deklaracji DRA"]


def test_outside_a_window_topic_words_change_nothing(
    tmp_path: Path, smtp_sink: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(tmp_path, smtp_sink, OUTSIDE)
    deliver_mix(w)
    w.run()
    order = queue(w, capsys, monkeypatch)
    assert [p for _, p, _ in order] == ["P3"] * 5
    assert [s for s, _, _ in order] == ["Pytanie o raport", "Question about printouts", "JPK_V7M export fails",
                                        "Deklaracja VAT", "Zmiana hasła"], "then by age"
    for m in smtp_sink.messages:
        text = body(m)
        assert "busy period" not in text and "wzmożonej" not in text


def test_the_priority_is_fixed_at_arrival(
    tmp_path: Path, smtp_sink: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The day before the window opens, a JPK question is routine; it keeps that rank
    # when the window opens, while a new one that day ranks above it.
    w = World(tmp_path, smtp_sink, warsaw("2026-11-17 23:30"))
    w.mail(sender="kari@nord.no", subject="JPK question", msgid="<j1@nord.no>")
    w.run()
    w.at(warsaw("2026-11-18 00:30"))
    w.mail(sender="kari@nord.no", subject="JPK question again", msgid="<j2@nord.no>")
    w.mail(sender="kari@nord.no", subject="Something else", msgid="<j3@nord.no>")
    w.at(w.clock.now + timedelta(minutes=1)).run()
    assert queue(w, capsys, monkeypatch) == [
        ("JPK question again", "P2", "vat_jpk"), ("JPK question", "P3", None), ("Something else", "P3", None)]
