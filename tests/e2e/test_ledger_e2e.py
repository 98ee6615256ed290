"""The hour ledger end to end: ``#time`` in consultants' replies, the CLI, balances, statements, a real SMTP server.

Mail arrives in a Maildir with chosen arrival times, the daemon runs its cycle
with a controllable clock, and the figures are read back through ``maild
contracts list``, ``maild report hours`` and what the SMTP server received.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.cli import common
from maild.cli.main import main as cli_main
from maild.storage.models import ContractRow, LedgerRow, Ticket
from tests.e2e.test_sla_e2e import World, body, warsaw

CUSTOMERS = """\
[[customers]]
id = "acme"
name = "Acme"
language = "pl"
domains = ["acme.pl"]
billing_address = "faktury@acme.pl"

  [[customers.contracts]]
  id = "acme-sla"
  kind = "sla"
  start = 2026-10-01
  reaction_hours = 24
  monthly_hours = 10
  hourly_rate = 200

[[customers]]
id = "nord"
name = "Nord AS"
language = "en"
addresses = ["kari@nord.no"]
billing_address = "kari@nord.no"

  [[customers.contracts]]
  id = "nord-a"
  kind = "prepaid"
  start = 2026-09-01
  hours = 4
  valid_until = 2026-12-31
  hourly_rate = 200

  [[customers.contracts]]
  id = "nord-b"
  kind = "prepaid"
  start = 2026-10-01
  hours = 4
  valid_until = 2027-03-31
  hourly_rate = 200

[[customers]]
id = "kow"
name = "Kowalski"
language = "pl"
addresses = ["biuro@kowalski.pl"]
billing_address = "biuro@kowalski.pl"

  [[customers.contracts]]
  id = "kow-occ"
  kind = "occasional"
  start = 2020-01-01
  hourly_rate = 250
"""

T = warsaw("2026-11-10 09:00")


@pytest.fixture
def w(tmp_path: Path, smtp_sink: Any) -> World:
    return World(tmp_path, smtp_sink, T, customers=CUSTOMERS)


def consultant_reply(w: World, at: datetime, ref: str, subject: str, commands: str, msgid: str) -> None:
    w.at(at)
    w.mail(sender="Anna Nowak <anna@firma.pl>", subject=f"Re: [{ref}] {subject}", msgid=msgid,
           body=f"{commands}\n\nDzień dobry, odpowiedź konsultanta.\n")
    w.run()


def balances(w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return {c["contract_id"]: c for c in w.cli(capsys, monkeypatch, "contracts", "list", "--json")}


def hours(w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          month: str = "2026-11") -> dict[str, Any]:
    report = w.cli(capsys, monkeypatch, "report", "hours", "--month", month, "--json")
    return {c["contract_id"]: c for cu in report["customers"] for c in cu["contracts"]}


def low_balance_mails(w: World) -> list[Any]:
    return [m for m in w.sink.messages if "running low" in m.parsed["Subject"]]


def test_time_lines_draw_packages_warn_once_fall_back_and_bill(
    w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w.mail(sender="kari@nord.no", subject="Printing question", msgid="<n1@nord.no>")
    w.run()
    [ack] = w.sink.messages
    assert "package has 4 h left and is valid until 31 December 2026" in body(ack) and "nord-a" not in body(ack)
    assert w.ticket(1).contract_id == "nord-a", "the package that expires first"

    consultant_reply(w, T + timedelta(hours=1), "SUP-1", "Printing question", "#time 3h consultation", "<k1@firma.pl>")
    listed = balances(w, capsys, monkeypatch)
    assert (listed["nord-a"]["balance_minutes"], listed["nord-b"]["balance_minutes"]) == (60, 240)
    assert listed["nord-a"]["used_minutes_month"] == 180
    statement = hours(w, capsys, monkeypatch)
    assert (statement["nord-a"]["total_minutes"], statement["nord-a"]["balance_end_minutes"]) == (180, 60)

    # Crosses from package a into package b: split, a is used to the last minute.
    consultant_reply(w, T + timedelta(hours=2), "SUP-1", "Printing question", "#time 2h30m installation",
                     "<k2@firma.pl>")
    assert low_balance_mails(w) == [], "150 min left: above the 1 h threshold"
    consultant_reply(w, T + timedelta(hours=3), "SUP-1", "Printing question", "#time 1h30m", "<k3@firma.pl>")
    [warning] = low_balance_mails(w)
    assert warning.rcpt_tos == ["kari@nord.no"]
    assert "1 h left" in body(warning) and "Nord AS" in body(warning) and "SUP-1" in body(warning)
    consultant_reply(w, T + timedelta(hours=4), "SUP-1", "Printing question", "#time 30m", "<k4@firma.pl>")
    # Used up on the current ticket: the rest is overage, billed at the package's rate.
    consultant_reply(w, T + timedelta(hours=5), "SUP-1", "Printing question", "#time 1h training", "<k5@firma.pl>")
    assert len(low_balance_mails(w)) == 1, "the warning arrives once"

    with w.daemon.sessions() as session:
        rows = session.scalars(select(LedgerRow).order_by(LedgerRow.id)).all()
        assert [(r.contract_id, r.minutes, r.overage, r.scope) for r in rows] == [
            ("nord-a", 180, False, "consultation"),
            ("nord-a", 60, False, "installation"), ("nord-b", 90, False, "installation"),
            # "#time" without a scope books the ticket's scope, guessed from "Printing question"
            ("nord-b", 90, False, "consultation"),
            ("nord-b", 30, False, "consultation"),
            ("nord-b", 30, False, "training"), ("nord-a", 30, True, "training"),
        ]
        assert all(type(r.minutes) is int and r.by == "anna@firma.pl" and r.ticket_id == 1 for r in rows)
        assert rows[0].booked_at == T + timedelta(hours=1) and rows[0].source_message_id == "k1@firma.pl"
        assert rows[-1].booked_at == T + timedelta(hours=5) and rows[-1].source_message_id == "k5@firma.pl"

    listed = balances(w, capsys, monkeypatch)
    assert (listed["nord-a"]["balance_minutes"], listed["nord-b"]["balance_minutes"]) == (0, 0)
    assert listed["nord-a"]["overage_minutes"] == 30

    # A new ticket falls to occasional, and the acknowledgement says why.
    w.at(T + timedelta(hours=6))
    w.mail(sender="kari@nord.no", subject="Another question", msgid="<n2@nord.no>")
    w.run()
    second = w.ticket(2)
    assert (second.contract_kind, second.tier) == ("occasional", 2)
    ack2 = body(w.sink.received_for("kari@nord.no")[-1])
    assert "Your prepaid hour package has been used up, so this request is handled as occasional help" in ack2
    assert "expired" not in ack2 and "nord-b" not in ack2

    statement = hours(w, capsys, monkeypatch)
    a, b = statement["nord-a"], statement["nord-b"]
    assert (a["total_minutes"], a["overage_minutes"], a["billable_minutes"], a["amount"]) == (270, 30, 30, "100,00")
    assert (a["balance_start_minutes"], a["balance_end_minutes"]) == (240, 0)
    assert (b["total_minutes"], b["balance_start_minutes"], b["balance_end_minutes"]) == (240, 240, 0)
    assert b["minutes_by_scope"] == {"installation": 90, "training": 30, "consultation": 120}

    # Statements: queued by the command, sent by the daemon, once per month and customer.
    w.at(warsaw("2026-12-01 08:00"))
    out = w.cli(capsys, monkeypatch, "report", "hours", "--month", "2026-11", "--send")
    assert "statement 2026-11 for nord queued" in out
    w.run()
    [sent] = [m for m in w.sink.messages if m.parsed["Subject"].startswith("Support hours statement for November")]
    assert sent.rcpt_tos == ["kari@nord.no"]
    assert sent.parsed["Subject"] == "Support hours statement for November 2026, Nord AS"
    text = body(sent)
    assert "Net amount:         PLN 100.00" in text and "VAT 23%:            PLN 23.00" in text
    assert "Gross amount:       PLN 123.00" in text
    assert "Prepaid hour package valid until 31 March 2027" in text and "nord-b" not in text
    assert "The package has been used up." in text and "expired" not in text
    assert "Beyond the balance:         30 min" in text and "SUP-1" in text
    acme = [m for m in w.sink.messages if m.rcpt_tos == ["faktury@acme.pl"]]
    assert len(acme) == 1 and acme[0].parsed["Subject"] == "Zestawienie godzin wsparcia za listopad 2026 dla firmy Acme"
    assert "Europe/Warsaw" not in body(acme[0])
    before = len(w.sink.messages)
    out = w.cli(capsys, monkeypatch, "report", "hours", "--month", "2026-11", "--send")
    assert "for nord was already queued; not sent again" in out
    w.run()
    assert len(w.sink.messages) == before


def test_sla_allowance_carry_over_time_add_and_reverse(
    w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    october = warsaw("2026-10-05 10:00")
    w.at(october)
    w.mail(sender="jan@acme.pl", subject="Szkolenie", msgid="<a1@acme.pl>")
    w.run()
    w.at(warsaw("2026-10-20 12:00"))
    out = w.cli(capsys, monkeypatch, "time", "add", "SUP-1", "4h", "--by", "anna@firma.pl", "--scope", "training",
                "--note", "szkolenie on-site")
    assert "entry 1: 4:00 on SUP-1, contract acme-sla" in out
    w.at(T)
    listed = balances(w, capsys, monkeypatch)["acme-sla"]
    assert (listed["carry_over_minutes"], listed["balance_minutes"], listed["used_minutes_month"]) == (360, 960, 0)

    w.mail(sender="jan@acme.pl", subject="Awaria drukarki fiskalnej", msgid="<a2@acme.pl>")
    w.run()
    consultant_reply(w, T + timedelta(hours=1), "SUP-2", "Awaria drukarki fiskalnej", "#time 1h15m incident",
                     "<s1@firma.pl>")
    listed = balances(w, capsys, monkeypatch)["acme-sla"]
    assert (listed["used_minutes_month"], listed["balance_minutes"], listed["overage_minutes"]) == (75, 885, 0)

    # More than the balance: booked, reported as overage, not refused.
    consultant_reply(w, T + timedelta(hours=2), "SUP-2", "Awaria drukarki fiskalnej", "#time 15h development",
                     "<s2@firma.pl>")
    listed = balances(w, capsys, monkeypatch)["acme-sla"]
    assert (listed["used_minutes_month"], listed["balance_minutes"], listed["overage_minutes"]) == (975, -15, 15)
    november = hours(w, capsys, monkeypatch)["acme-sla"]
    assert (november["carry_in_minutes"], november["allowance_minutes"], november["total_minutes"]) == (360, 600, 975)
    assert (november["overage_minutes"], november["billable_minutes"], november["amount"]) == (15, 15, "50,00")
    assert november["carry_out_minutes"] == 0

    # The October entry was a mistake: a reversing entry, never an edit.
    w.at(T + timedelta(hours=3))
    out = w.cli(capsys, monkeypatch, "time", "reverse", "1", "--reason", "booked on the wrong customer")
    assert "reverses entry 1" in out
    with w.daemon.sessions() as session:
        first = session.get(LedgerRow, 1)
        assert first is not None and first.minutes == 240
        reversal = session.scalars(select(LedgerRow).where(LedgerRow.reverses == 1)).one()
        assert (reversal.minutes, reversal.contract_id, reversal.note) == (-240, "acme-sla", "booked on the wrong customer")
    monkeypatch.setattr(common, "clock", w.clock)
    assert cli_main(["--config", str(w.path), "time", "reverse", "1", "--reason", "again"]) == 1
    # Statements are append-only: the credit lands in the month it was booked (November),
    # and October's issued statement does not change.
    listed = balances(w, capsys, monkeypatch)["acme-sla"]
    assert (listed["carry_over_minutes"], listed["used_minutes_month"]) == (360, 735)
    assert (listed["balance_minutes"], listed["overage_minutes"]) == (225, 0)
    assert hours(w, capsys, monkeypatch, "2026-10")["acme-sla"]["total_minutes"] == 240
    assert hours(w, capsys, monkeypatch)["acme-sla"]["amount"] == "0,00"


def test_occasional_is_billed_per_started_quarter_hour(
    w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w.mail(sender="biuro@kowalski.pl", subject="Pytanie", msgid="<o1@kowalski.pl>")
    w.run()
    consultant_reply(w, T + timedelta(hours=1), "SUP-1", "Pytanie", "#time 20m consultation", "<o1@firma.pl>")
    consultant_reply(w, T + timedelta(hours=2), "SUP-1", "Pytanie", "#time 0:05", "<o2@firma.pl>")
    occ = hours(w, capsys, monkeypatch)["kow-occ"]
    assert (occ["total_minutes"], occ["billable_minutes"], occ["amount"]) == (25, 30, "125,00")
    assert balances(w, capsys, monkeypatch)["kow-occ"]["balance_minutes"] is None


def test_time_without_unit_is_refused_naming_the_line(
    w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``#time 2`` was booked as 2 minutes; now nothing is booked and Anna is told which line and why."""
    w.mail(sender="biuro@kowalski.pl", subject="Pytanie", msgid="<u1@kowalski.pl>")
    w.run()
    before = len(w.sink.messages)
    consultant_reply(w, T + timedelta(hours=1), "SUP-1", "Pytanie", "#time 2 konsultacja", "<u1@firma.pl>")
    replies = [m for m in w.sink.messages[before:] if "anna@firma.pl" in m.rcpt_tos]
    assert len(replies) == 1, [m.rcpt_tos for m in w.sink.messages[before:]]
    text = replies[0].parsed.get_body(preferencelist=("plain",)).get_content()
    # Anna reads Polish: the whole mail is Polish, the subject names the tag once
    assert "#time 2 konsultacja" in text and "2 czego? Napisz 2h (godziny) albo 2m (minuty)." in text, text
    assert "what" not in text and "write" not in text
    assert replies[0].parsed["Subject"] == "[SUP-1] Polecenia nie zostały wykonane: Pytanie"
    assert hours(w, capsys, monkeypatch).get("kow-occ", {}).get("total_minutes", 0) == 0


def test_customers_sync_ends_removed_contracts_keeps_history_and_rejects_bad_files(
    w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w.mail(sender="jan@acme.pl", subject="Problem", msgid="<c1@acme.pl>")
    w.run()
    consultant_reply(w, T + timedelta(hours=1), "SUP-1", "Problem", "#time 1h", "<c1@firma.pl>")
    customers_file = w.path.parent / "customers.toml"
    good = customers_file.read_text()
    # The sla contract ends; the customer continues on occasional terms.
    customers_file.write_text(good.replace(
        '  id = "acme-sla"\n  kind = "sla"\n  start = 2026-10-01\n  reaction_hours = 24\n  monthly_hours = 10\n',
        '  id = "acme-occ"\n  kind = "occasional"\n  start = 2026-10-01\n'))
    w.at(T + timedelta(days=1))
    out = w.cli(capsys, monkeypatch, "contracts", "sync")
    assert "1 contracts ended" in out
    listed = balances(w, capsys, monkeypatch)
    assert listed["acme-sla"]["removed"] is True and listed["acme-sla"]["used_minutes_month"] == 60
    assert listed["acme-occ"]["removed"] is False
    with w.daemon.sessions() as session:
        row = session.get(ContractRow, "acme-sla")
        assert row is not None and row.removed_at == T + timedelta(days=1)
        assert session.scalars(select(LedgerRow)).one().contract_id == "acme-sla"

    # Time on the old ticket still books against its contract (now ended).
    out = w.cli(capsys, monkeypatch, "time", "add", "SUP-1", "30m", "--by", "anna@firma.pl")
    assert "contract acme-sla" in out
    assert w.daemon.reload()
    consultant_reply(w, T + timedelta(days=1, hours=1), "SUP-1", "Problem", "#time 45m", "<c2@firma.pl>")
    with w.daemon.sessions() as session:
        assert [r.contract_id for r in session.scalars(select(LedgerRow).order_by(LedgerRow.id))] == ["acme-sla"] * 3
    # New mail from the customer goes to the contract that is in the file now.
    w.mail(sender="jan@acme.pl", subject="Nowa sprawa", msgid="<c3@acme.pl>")
    w.run()
    assert (w.ticket(2).contract_id, w.ticket(2).contract_kind) == ("acme-occ", "occasional")
    assert hours(w, capsys, monkeypatch)["acme-sla"]["total_minutes"] == 135

    # A broken file is rejected whole; the database and the daemon keep the previous state.
    customers_file.write_text(good.replace('kind = "occasional"', 'kind = "sometimes"'))
    monkeypatch.setattr(common, "clock", w.clock)
    capsys.readouterr()
    assert cli_main(["--config", str(w.path), "contracts", "sync"]) == 2
    assert "customers file rejected, database unchanged" in capsys.readouterr().err
    assert not w.daemon.reload()
    with w.daemon.sessions() as session:
        assert session.get(ContractRow, "acme-sla").removed_at is not None  # type: ignore[union-attr]
        assert session.get(ContractRow, "acme-occ").removed_at is None  # type: ignore[union-attr]
        assert session.get(ContractRow, "kow-occ").removed_at is None  # type: ignore[union-attr]
    assert w.daemon.ingestor.ctx.contract("acme-occ") is not None
    w.mail(sender="jan@acme.pl", subject="Jeszcze jedna", msgid="<c4@acme.pl>")
    w.run()
    with w.daemon.sessions() as session:
        assert session.get(Ticket, 3).contract_id == "acme-occ"  # type: ignore[union-attr]


EXPIRING = CUSTOMERS.replace("  valid_until = 2026-12-31\n", "  valid_until = 2026-11-20\n", 1)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_package_with_hours_left_gets_one_expiry_reminder(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = request.getfixturevalue("pg_migrated_url") if backend == "postgresql" else ""
    # nord-a (4 h) expires on 20 November; [packages] expiry_reminder_days = 14 by default.
    w = World(tmp_path, smtp_sink, warsaw("2026-11-05 09:00"), customers=EXPIRING, database_url=url)
    w.run()
    assert [m for m in w.sink.messages if "expire" in m.parsed["Subject"]] == [], "15 days before: not yet"
    w.mail(sender="kari@nord.no", subject="Printing question", msgid="<exp1@nord.no>")
    w.run()
    consultant_reply(w, warsaw("2026-11-05 10:00"), "SUP-1", "Printing question", "#time 1h30m", "<exp2@firma.pl>")
    for day in ("2026-11-06 09:00", "2026-11-06 09:05", "2026-11-12 09:00"):
        w.at(warsaw(day)).run()
    reminders = [m for m in w.sink.messages if "expire" in m.parsed["Subject"]]
    assert len(reminders) == 1, "once per package, whatever the number of sweeps"
    [reminder] = reminders
    assert reminder.rcpt_tos == ["kari@nord.no"]
    assert reminder.parsed["Subject"] == "Your prepaid support hours expire on 20 November 2026"
    text = body(reminder)
    assert "2 h 30 min left" in text and "lapses at the end of that day" in text and "nord-a" not in text
    # nord-b (until March 2027) is not due for one; a package with nothing left gets none
    assert not any("31 March 2027" in m.parsed["Subject"] for m in w.sink.messages)


def test_a_used_up_package_gets_no_expiry_reminder(tmp_path: Path, smtp_sink: Any) -> None:
    w = World(tmp_path, smtp_sink, warsaw("2026-11-05 09:00"), customers=EXPIRING)
    w.mail(sender="kari@nord.no", subject="Big job", msgid="<big@nord.no>")
    w.run()
    consultant_reply(w, warsaw("2026-11-05 10:00"), "SUP-1", "Big job", "#time 8h", "<big2@firma.pl>")  # both packages
    w.at(warsaw("2026-11-10 09:00")).run()
    assert [m for m in w.sink.messages if "expire" in m.parsed["Subject"]] == []
    [used_up] = [m for m in w.sink.messages if "used up" in m.parsed["Subject"]]
    text = body(used_up)
    assert "has been used up" in text and "threshold" not in text and "PLN 200.00 net per hour" in text


def test_scope_is_guessed_changed_with_scope_and_named_on_the_statement(
    w: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w.mail(sender="jan@acme.pl", subject="Prośba o szkolenie z modułu Kadry", msgid="<sc1@acme.pl>")
    w.run()
    assert w.ticket(1).scope == "training"
    assert any("scope training guessed" in r for r in w.ticket(1).reasons)
    shown = w.cli(capsys, monkeypatch, "tickets", "show", "SUP-1", "--json")
    assert shown["scope"] == "training"
    consultant_reply(w, T + timedelta(hours=1), "SUP-1", "Prośba o szkolenie z modułu Kadry",
                     "#zakres rozwój\n#time 1h", "<sc2@firma.pl>")
    consultant_reply(w, T + timedelta(hours=2), "SUP-1", "Prośba o szkolenie z modułu Kadry",
                     "#time 30m szkolenie", "<sc3@firma.pl>")
    assert w.ticket(1).scope == "development"
    w.at(warsaw("2026-12-01 08:00"))
    w.cli(capsys, monkeypatch, "report", "hours", "--month", "2026-11", "--send")
    w.run()
    [statement] = [m for m in w.sink.messages if m.rcpt_tos == ["faktury@acme.pl"]]
    text = body(statement)
    assert "Zakres prac:" in text
    assert "- rozwój (nowe zastosowania, wydruki, raporty): 1 godz." in text and "- szkolenie: 30 min" in text
    assert "development" not in text and "training" not in text


def test_a_prospect_writing_in_english_gets_a_neutral_english_acknowledgement(w: World) -> None:
    # default_language is "pl"; the text is confidently English, and an unknown sender hears no billing terms
    w.mail(sender="John Smith <john@prospect.example>", subject="Question",
           body="Hello, I need help with invoices. Could you send us an offer?\n", msgid="<p1@prospect.example>")
    w.run()
    [ack] = [m for m in w.sink.messages if m.rcpt_tos == ["john@prospect.example"]]
    text = body(ack)
    assert text.startswith("Hello,\n") or text.startswith("Hello,\r\n"), text
    assert "A consultant will read your message and get back to you." in text
    assert "PLN" not in text and "occasional" not in text and "billed" not in text and "John" not in text
    assert w.ticket(1).language == "en"
