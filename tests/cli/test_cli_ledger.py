"""The ledger and report commands end to end: real config files, SQLite, ``maild.cli.main``."""
from __future__ import annotations

import json
from email import message_from_bytes, policy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maild.cli import common
from maild.cli import report as report_cli
from maild.cli.main import main
from maild.storage.db import open_database
from maild.storage.models import ContractRow, LedgerRow, OutboxRow, Ticket
from maild.outbound.outbox import Sender, build_mail
from maild.outbound.render import Renderer

UTC = timezone.utc
NOW = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 2, 8, 0, tzinfo=UTC)  # January has ended: its statements may go

CUSTOMERS = """
[[customers]]
id = "acme"
name = "ACME Sp. z o.o."
language = "pl"
domains = ["acme.pl"]
billing_address = "faktury@acme.pl"

  [[customers.contracts]]
  id = "acme-sla"
  kind = "sla"
  start = 2026-01-01
  monthly_hours = 2
  hourly_rate = 200

[[customers]]
id = "nowak"
name = "Biuro Nowak"
language = "en"
addresses = ["anna@nowak-biuro.pl"]
billing_address = "anna@nowak-biuro.pl"

  [[customers.contracts]]
  id = "nowak-p"
  kind = "prepaid"
  start = 2026-01-01
  hours = 4
  hourly_rate = 280

[[customers]]
id = "globex"
name = "Globex"
language = "en"
addresses = ["it@globex.example.com"]

  [[customers.contracts]]
  id = "globex-adhoc"
  kind = "occasional"
  start = 2025-06-01
  hourly_rate = 320
"""

CONFIG = """
customers_file = "customers.toml"

[storage]
path = "{storage}"

[maildir]
path = "{maildir}"

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from_address = "support@firma.pl"
from_name = "Wsparcie Firma"

[support]
address = "support@firma.pl"
ticket_prefix = "SUP"

[[consultants]]
email = "ewa@firma.pl"
name = "Ewa"
"""


@dataclass
class Env:
    config: Path
    customers: Path
    sessions: sessionmaker[Session]
    run: Callable[..., tuple[int, str, str]]


@pytest.fixture()
def env(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    storage = tmp_path / "storage"
    (tmp_path / "Maildir").mkdir()
    customers = tmp_path / "customers.toml"
    customers.write_text(CUSTOMERS, encoding="utf-8")
    config = tmp_path / "maild.toml"
    config.write_text(CONFIG.format(storage=storage, maildir=tmp_path / "Maildir"), encoding="utf-8")
    clock = {"now": NOW}
    monkeypatch.setattr(common, "clock", lambda: clock["now"])

    def run(*argv: str, now: datetime | None = None) -> tuple[int, str, str]:
        clock["now"] = now or NOW
        capsys.readouterr()
        code = main(["--config", str(config), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("contracts", "sync")[0] == 0
    sessions = open_database(f"sqlite:///{storage / 'maild.db'}")
    with sessions() as session, session.begin():
        for number, customer, contract, kind in [(1, "acme", "acme-sla", "sla"), (2, "nowak", "nowak-p", "prepaid"),
                                                 (3, "globex", "globex-adhoc", "occasional")]:
            created = NOW - timedelta(days=1)
            session.add(Ticket(
                id=number, subject=f"Problem {number}", customer_id=customer, contract_id=contract,
                contract_kind=kind, requester=f"someone@{customer}.example", created_at=created,
                updated_at=created, status="open",
                reaction_due=created + timedelta(hours=24) if kind == "sla" else None,
                first_response_at=created + timedelta(hours=3) if kind == "sla" else None,
            ))
    yield Env(config, customers, sessions, run)
    sessions.kw["bind"].dispose()


def ledger(env: Env) -> list[LedgerRow]:
    with env.sessions() as session:
        return list(session.scalars(select(LedgerRow).order_by(LedgerRow.id)))


# ------------------------------------------------------------------ contracts sync


def test_sync_imports_contracts_and_a_bad_file_changes_nothing(env: Env) -> None:
    with env.sessions() as session:
        assert {r.id for r in session.scalars(select(ContractRow))} == {"acme-sla", "nowak-p", "globex-adhoc"}
    env.customers.write_text(CUSTOMERS.replace('kind = "occasional"', 'kind = "sometimes"'), encoding="utf-8")
    code, _, err = env.run("contracts", "sync")
    assert code == 2
    assert "customers.toml" in err and "customers[2].contracts[0].kind" in err
    with env.sessions() as session:
        assert all(r.removed_at is None for r in session.scalars(select(ContractRow)))
    env.customers.write_text(CUSTOMERS.split("[[customers]]\nid = \"globex\"")[0], encoding="utf-8")
    code, _, err = env.run("contracts", "sync")  # one customer of three: more than 20 %
    assert code == 1 and "would remove 1 of the 3 customers" in err
    code, out, _ = env.run("contracts", "sync", "--allow-removals")
    assert code == 0 and "1 contracts ended" in out
    with env.sessions() as session:
        gone = session.get(ContractRow, "globex-adhoc")
        assert gone is not None and gone.removed_at is not None


# ------------------------------------------------------------------ time add / reverse


def test_time_add_books_on_the_tickets_contract(env: Env) -> None:
    code, out, _ = env.run("time", "add", "SUP-1", "1h30m", "--by", "Ewa@Firma.pl", "--scope", "training",
                           "--note", "szkolenie z JPK")
    assert code == 0
    (row,) = ledger(env)
    assert f"entry {row.id}:" in out
    assert (row.contract_id, row.customer_id, row.ticket_id, row.minutes) == ("acme-sla", "acme", 1, 90)
    assert (row.by, row.scope, row.note, row.overage, row.booked_at) == (
        "ewa@firma.pl", "training", "szkolenie z JPK", False, NOW)


def test_time_add_takes_a_polish_scope_name(env: Env) -> None:
    code, _, _ = env.run("time", "add", "SUP-1", "1h", "--by", "ewa@firma.pl", "--scope", "szkolenie")
    assert code == 0
    (row,) = ledger(env)
    assert row.scope == "training"
    with pytest.raises(SystemExit) as refused:  # argparse: usage and the reason on stderr, exit 2
        env.run("time", "add", "SUP-1", "1h", "--by", "ewa@firma.pl", "--scope", "gotowanie")
    assert refused.value.code == 2


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["SUP-99", "1h", "--by", "ewa@firma.pl"], 1, "no ticket SUP-99"),
        (["SUP-1", "1h", "--by", "mallory@evil.example"], 2, "not a configured consultant"),
        (["SUP-1", "1,25m", "--by", "ewa@firma.pl"], 2, "whole minutes"),
        (["SUP-1", "soon", "--by", "ewa@firma.pl"], 2, "not a duration"),
        (["SUP-1", "2", "--by", "ewa@firma.pl"], 2, "'2': 2 what? write 2h or 2m"),
    ],
)
def test_time_add_refusals(env: Env, argv: list[str], code: int, message: str) -> None:
    got, _, err = env.run("time", "add", *argv)
    assert (got, message in err) == (code, True), err
    assert ledger(env) == []


def test_prepaid_crossing_zero_becomes_overage(env: Env) -> None:
    assert env.run("time", "add", "SUP-2", "3h", "--by", "ewa@firma.pl")[0] == 0
    code, out, _ = env.run("time", "add", "SUP-2", "2h", "--by", "ewa@firma.pl")
    assert code == 0 and "(overage)" in out
    assert [(r.minutes, r.overage) for r in ledger(env)] == [(180, False), (60, False), (60, True)]
    code, out, _ = env.run("contracts", "list", "--json")
    prepaid = next(c for c in json.loads(out) if c["contract_id"] == "nowak-p")
    assert (prepaid["balance_minutes"], prepaid["used_minutes_month"], prepaid["overage_minutes"]) == (0, 300, 60)


def _aborted_first(monkeypatch: pytest.MonkeyPatch, times: int, method: str = "book_time") -> list[int]:
    """The desk's booking (or reversal) writes its rows, then PostgreSQL's deadlock verdict arrives
    (``times`` times)."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from maild.desk.desk import TicketDesk

    calls: list[int] = []
    original = getattr(TicketDesk, method)

    def aborted(self: TicketDesk, *args: Any, **kwargs: Any) -> Any:
        written = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) <= times:
            raise OperationalError("SELECT ... FOR NO KEY UPDATE", {}, psycopg.errors.DeadlockDetected("deadlock detected"))
        return written

    monkeypatch.setattr(TicketDesk, method, aborted)
    return calls


def test_time_add_runs_its_transaction_again_when_the_database_picks_it_as_a_deadlock_victim(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _aborted_first(monkeypatch, 2)
    code, out, err = env.run("time", "add", "SUP-2", "3h", "--by", "ewa@firma.pl")
    assert (code, len(calls)) == (0, 3), err
    assert "SQLSTATE 40P01" in err and "attempt 2/4" in err
    (row,) = ledger(env)  # the aborted attempts' rows were rolled back
    assert (row.minutes, row.overage) == (180, False) and f"entry {row.id}:" in out


def test_time_add_gives_up_after_its_attempts_with_a_message_and_nothing_booked(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _aborted_first(monkeypatch, 99)
    code, out, err = env.run("time", "add", "SUP-2", "3h", "--by", "ewa@firma.pl")
    assert (code, len(calls), out) == (1, 4, "")
    assert "aborted it 4 times" in err and "nothing was stored" in err and "Traceback" not in err
    assert ledger(env) == []


def test_time_add_waits_for_the_daemons_write_instead_of_failing_on_it(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: a command's transaction reads, the daemon commits a batch, the command writes. From
    a deferred transaction's snapshot SQLite refuses that write at once ("database is locked", no
    busy wait), and the operator got a traceback. The command's transaction now holds the write
    lock from its BEGIN: the daemon's commit waits for it (here: gives up after 0.2 s) instead."""
    import sqlite3

    from maild.desk.desk import TicketDesk

    original = TicketDesk.book_time
    daemon: list[str] = []

    def book_time(self: TicketDesk, *args: Any, **kwargs: Any) -> list[LedgerRow]:
        # between the command's read of the ticket and its booking, the daemon commits
        other = sqlite3.connect(env.config.parent / "storage" / "maild.db", timeout=0.2, isolation_level=None)
        try:
            other.execute("UPDATE tickets SET updated_at = updated_at WHERE id = 3")
            daemon.append("committed")
        except sqlite3.OperationalError as exc:
            daemon.append(str(exc))
        finally:
            other.close()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TicketDesk, "book_time", book_time)
    code, out, err = env.run("time", "add", "SUP-2", "3h", "--by", "ewa@firma.pl")
    assert (code, daemon) == (0, ["database is locked"]), err
    (row,) = ledger(env)
    assert row.minutes == 180 and f"entry {row.id}:" in out


def test_reverse_once_and_never_a_reversal(env: Env) -> None:
    env.run("time", "add", "SUP-1", "90m", "--by", "ewa@firma.pl", "--scope", "incident")
    (entry,) = ledger(env)
    code, out, _ = env.run("time", "reverse", str(entry.id), "--reason", "wrong ticket", "--by", "ewa@firma.pl")
    assert code == 0
    original, reversal = ledger(env)
    assert f"entry {reversal.id}: reverses entry {entry.id}" in out
    assert (reversal.minutes, reversal.reverses, reversal.contract_id, reversal.ticket_id) == (
        -90, entry.id, "acme-sla", 1)
    assert (reversal.overage, reversal.scope, reversal.note, reversal.by) == (
        False, "incident", "wrong ticket", "ewa@firma.pl")
    code, _, err = env.run("time", "reverse", str(entry.id), "--reason", "again")
    assert code == 1 and f"already reversed by entry {reversal.id}" in err
    code, _, err = env.run("time", "reverse", str(reversal.id), "--reason", "undo")
    assert code == 1 and "itself a reversal" in err
    code, _, err = env.run("time", "reverse", "999", "--reason", "x")
    assert code == 1 and "no ledger entry 999" in err
    assert len(ledger(env)) == 2


def test_time_reverse_runs_its_transaction_again_when_the_database_picks_it_as_a_deadlock_victim(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.run("time", "add", "SUP-2", "3h", "--by", "ewa@firma.pl")
    (entry,) = ledger(env)
    calls = _aborted_first(monkeypatch, 2, "reverse_time")
    code, out, err = env.run("time", "reverse", str(entry.id), "--reason", "wrong ticket")
    assert (code, len(calls)) == (0, 3), err
    assert "SQLSTATE 40P01" in err and "attempt 2/4" in err
    original, reversal = ledger(env)  # one reversal: the aborted attempts' rows were rolled back
    assert (reversal.minutes, reversal.reverses) == (-180, entry.id) and f"entry {reversal.id}:" in out


def test_reversing_an_overage_entry_keeps_the_flag(env: Env) -> None:
    env.run("time", "add", "SUP-2", "5h", "--by", "ewa@firma.pl")
    overage = next(r for r in ledger(env) if r.overage)
    assert env.run("time", "reverse", str(overage.id), "--reason", "goodwill")[0] == 0
    reversal = ledger(env)[-1]
    assert (reversal.minutes, reversal.overage, reversal.contract_id) == (-60, True, "nowak-p")


# ------------------------------------------------------------------ contracts list


def test_contracts_list_json_shape(env: Env) -> None:
    env.run("time", "add", "SUP-1", "2h30m", "--by", "ewa@firma.pl")
    code, out, _ = env.run("contracts", "list", "--json")
    assert code == 0
    data = {c["contract_id"]: c for c in json.loads(out)}
    required = {"customer", "contract_id", "kind", "used_minutes_month", "balance_minutes", "carry_over_minutes",
                "valid_until", "overage_minutes"}
    assert all(required <= set(c) for c in data.values())
    sla = data["acme-sla"]
    assert (sla["customer"], sla["kind"], sla["used_minutes_month"], sla["balance_minutes"],
            sla["carry_over_minutes"], sla["overage_minutes"], sla["valid_until"]) == (
        "acme", "sla", 150, -30, 0, 30, None)
    assert data["nowak-p"]["valid_until"] == "2026-03-31"
    assert data["nowak-p"]["balance_minutes"] == 240
    assert data["globex-adhoc"]["balance_minutes"] is None
    february = {c["contract_id"]: c for c in json.loads(env.run(
        "contracts", "list", "--json", now=datetime(2026, 2, 10, tzinfo=UTC))[1])}
    assert (february["acme-sla"]["used_minutes_month"], february["acme-sla"]["carry_over_minutes"],
            february["acme-sla"]["balance_minutes"]) == (0, 0, 120)
    code, out, _ = env.run("contracts", "list")
    assert code == 0 and "acme-sla" in out and "2:30" in out


# ------------------------------------------------------------------ report hours


def book_month(env: Env) -> None:
    env.run("time", "add", "SUP-1", "2h30m", "--by", "ewa@firma.pl", "--scope", "consultation")
    env.run("time", "add", "SUP-3", "20m", "--by", "ewa@firma.pl")
    # 00:15 on 1 February in Warsaw: February's, although UTC still says January
    env.run("time", "add", "SUP-1", "1h", "--by", "ewa@firma.pl", now=datetime(2026, 1, 31, 23, 15, tzinfo=UTC))


def test_report_hours_json(env: Env) -> None:
    book_month(env)
    code, out, _ = env.run("report", "hours", "--month", "2026-01", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["month"], data["timezone"]) == ("2026-01", "Europe/Warsaw")
    customers = {c["customer"]: c for c in data["customers"]}
    (sla,) = customers["acme"]["contracts"]
    assert (sla["total_minutes"], sla["carry_in_minutes"], sla["carry_out_minutes"], sla["overage_minutes"]) == (
        150, 0, 0, 30)
    assert (sla["amount_cents"], sla["amount"]) == (10000, "100,00")
    assert sla["minutes_by_scope"] == {"consultation": 150}
    assert [(t["ref"], t["total_minutes"]) for t in sla["tickets"]] == [("SUP-1", 150)]
    (adhoc,) = customers["globex"]["contracts"]
    assert (adhoc["total_minutes"], adhoc["billable_minutes"], adhoc["amount"]) == (20, 30, "160,00")
    assert customers["acme"]["amount"] == "100,00"
    feb = json.loads(env.run("report", "hours", "--month", "2026-02", "--json")[1])
    (feb_sla,) = next(c for c in feb["customers"] if c["customer"] == "acme")["contracts"]
    assert (feb_sla["total_minutes"], feb_sla["carry_in_minutes"], feb_sla["overage_minutes"]) == (60, 0, 0)


def test_the_month_to_invoice_counts_the_monthly_fees(env: Env) -> None:
    """acme's statement for the month reads "Kwota netto 1 500,00 zł" (its sla contract's monthly fee),
    while the managers' month report said "600,00 do faktury (PLN)" and ``report hours`` "to bill
    0,00": both added up the hours only, so whoever invoiced from them left out the fees."""
    from maild.billing.charts import month_summary

    env.customers.write_text(CUSTOMERS.replace("  monthly_hours = 2\n", "  monthly_hours = 2\n  monthly_fee = 1500\n"),
                             encoding="utf-8")
    assert env.run("contracts", "sync")[0] == 0
    book_month(env)
    data = json.loads(env.run("report", "hours", "--month", "2026-01", "--json")[1])
    acme = next(c for c in data["customers"] if c["customer"] == "acme")
    assert (acme["amount_cents"], acme["fees_cents"], acme["net_cents"]) == (10000, 150000, 160000)
    code, out, _ = env.run("report", "hours", "--month", "2026-01")
    assert code == 0 and "ACME Sp. z o.o. [acme]: 2:30, to bill 1600,00 (fees 1500,00)" in out, out
    month = json.loads(env.run("report", "month", "--month", "2026-01", "--json")[1])
    assert month_summary(month)["amount_cents"] == sum(c["net_cents"] for c in month["hours"]["customers"])
    assert month_summary(month)["amount_cents"] == 160000 + 16000  # acme, and globex's 20 min as 30


def test_report_hours_csv_and_table(env: Env) -> None:
    book_month(env)
    code, out, _ = env.run("report", "hours", "--month", "2026-01", "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ",".join(report_cli.HOURS_CSV)
    assert "2026-01,acme,acme-sla,sla,SUP-1,consultation,150,,,,," in lines
    assert "2026-01,acme,acme-sla,sla,,,150,30,30,0,0,\"100,00\"" in lines
    code, out, _ = env.run("report", "hours", "--month", "2026-01")
    assert code == 0 and "ACME Sp. z o.o." in out and "100,00" in out


@pytest.mark.parametrize("month", ["2026-13", "01-2026", "styczeń"])
def test_report_bad_month_exits_2(env: Env, month: str) -> None:
    for report in ("hours", "sla"):
        code, out, err = env.run("report", report, "--month", month, "--json")
        assert (code, out) == (2, "")
        assert "YYYY-MM" in err


def test_send_queues_each_statement_once(env: Env) -> None:
    book_month(env)
    env.run("time", "add", "SUP-2", "1h", "--by", "ewa@firma.pl")
    code, out, _ = env.run("report", "hours", "--month", "2026-01", "--send", now=FEBRUARY)
    assert code == 0
    assert "statement 2026-01 for acme queued" in out and "statement 2026-01 for nowak queued" in out
    with env.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).where(OutboxRow.kind == "statement").order_by(OutboxRow.id)))
    assert {(r.dedupe_key, tuple(r.recipients), r.language, r.template, r.automatic) for r in rows} == {
        ("statement:2026-01:acme", ("faktury@acme.pl",), "pl", "statement", True),
        ("statement:2026-01:nowak", ("anna@nowak-biuro.pl",), "en", "statement", True),
    }, "globex has no billing address"
    code, out, _ = env.run("report", "hours", "--month", "2026-01", "--send", now=FEBRUARY)
    assert code == 0 and "already queued; not sent again" in out and " queued\n" not in out
    with env.sessions() as session:
        assert len(list(session.scalars(select(OutboxRow).where(OutboxRow.kind == "statement")))) == 2
    renderer = Renderer(Path(__file__).resolve().parents[2] / "templates")
    acme = next(r for r in rows if r.dedupe_key.endswith("acme"))
    raw = build_mail(acme, renderer, Sender("support@firma.pl", "Support", "maild"), None, NOW)
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Subject"] == "Zestawienie godzin wsparcia za styczeń 2026 dla firmy ACME Sp. z o.o."
    assert (mail["To"], mail["Auto-Submitted"]) == ("faktury@acme.pl", "auto-generated")
    assert "Wsparcie Firma" in mail["From"]
    assert mail.get_content_type() == "multipart/alternative"  # the plain text, and HTML with charts
    body = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Kwota netto:        100,00 zł" in body and "SUP-1" in body and "2 godz. 30 min" in body
    nowak = next(r for r in rows if r.dedupe_key.endswith("nowak"))
    subject, body = renderer.render("statement", "en", {k: v for k, v in nowak.context.items() if k != "_headers"})
    assert "Biuro Nowak" in subject and "Balance at the end:         3 h" in body


def test_a_month_not_ended_is_not_sent(env: Env) -> None:
    """A statement goes to each customer once per month: one sent on 20 January for January (an
    operator trying ``--send`` out) was the customer's January statement for good, its last eleven
    days never billed. The figures so far print without ``--send``; the month is sent once it ended."""
    book_month(env)
    code, out, err = env.run("report", "hours", "--month", "2026-01", "--send")
    assert (code, out) == (2, "")
    assert "2026-01 has not ended" in err and "from 2026-02-01" in err, err
    with env.sessions() as session:
        assert list(session.scalars(select(OutboxRow).where(OutboxRow.kind == "statement"))) == []
    assert env.run("report", "hours", "--month", "2026-01")[0] == 0
    code, out, _ = env.run("report", "hours", "--month", "2026-01", "--send",
                           now=datetime(2026, 1, 31, 23, 0, tzinfo=UTC))  # 1 February 00:00 in Warsaw
    assert code == 0 and "statement 2026-01 for acme queued" in out


# ------------------------------------------------------------------ report sla


def test_report_sla_json_and_csv(env: Env) -> None:
    code, out, _ = env.run("report", "sla", "--month", "2026-01", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["month"] == "2026-01"
    (row,) = data["contracts"]
    assert (row["customer"], row["contract_id"], row["tickets"], row["met"], row["missed"], row["open"]) == (
        "acme", "acme-sla", 1, 1, 0, 0)
    assert (row["median_reaction_minutes"], row["worst_reaction_minutes"]) == (180, 180)
    code, out, _ = env.run("report", "sla", "--month", "2026-01", "--csv")
    assert out.splitlines() == [",".join(report_cli.SLA_CSV), "2026-01,acme,acme-sla,1,1,0,0,180,180"]
