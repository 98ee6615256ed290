"""#customer and `maild tickets open` (SQLite and PostgreSQL), and the morning digest with a
fixed clock across a weekend and a holiday, with catch-up. Asserted on the database and on
what the SMTP server saw."""
from __future__ import annotations

import mailbox
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.cli.main import main as cli_main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Intake, LedgerRow, OutboxRow, Ticket
from tests.e2e.test_notifications import text_of
from tests.helpers import Clock, consultant_to, maildir_source, make_mail, write_config

UTC = timezone.utc
EVERY_DAY = ('\n[calendar]\nworking_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
             'holidays_country = ""\n'
             # no automatic assignment: a new ticket goes to every present consultant
             '\n[assignment]\nmode = "none"\n')


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> dict[str, Any]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    # no morning digest: every day is a working day here, so after 08:00 Warsaw time the managers'
    # digest would join the mail these tests count
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url,
                        notifications='digest_at = ""', extra=EVERY_DAY)
    return {"path": path, "box": mailbox.Maildir(tmp_path / "Maildir", create=True), "sink": smtp_sink,
            "tmp": tmp_path}


def run(env: dict[str, Any]) -> Daemon:
    daemon = Daemon(load_config(env["path"]), lambda: datetime.now(UTC))
    daemon.run_once()
    return daemon


def test_customer_command_opens_a_ticket_on_the_customers_behalf(env: dict[str, Any]) -> None:
    sink, box = env["sink"], env["box"]
    box.add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="Telefon: drukarka nie drukuje",
                      msgid="<ph1@firma.pl>", to=consultant_to(env["path"]),
                      body="#customer nord\n#time 15m consultation\n\nKari called: the printer prints blank pages.\n"))
    daemon = run(env)
    mails = sink.wait_for(2)
    by = {m.rcpt_tos[0]: m for m in mails}
    assert set(by) == {"kari@nord.no", "anna@firma.pl"}
    assert "As discussed with our consultant" in text_of(by["kari@nord.no"])
    assert "[SUP-1]" in str(by["anna@firma.pl"].parsed["Subject"]), "the consultant has a mail to answer"
    with daemon.sessions() as session:
        t = session.get(Ticket, 1)
        assert t is not None
        assert (t.customer_id, t.contract_id, t.requester, t.assigned_to) == ("nord", "nord-p4", "kari@nord.no",
                                                                             "anna@firma.pl")
        [entry] = session.scalars(select(LedgerRow)).all()
        assert (entry.minutes, entry.contract_id, entry.by) == (15, "nord-p4", "anna@firma.pl")

    # an unknown customer: an error reply naming the line, no ticket
    box.add(make_mail(sender="anna@firma.pl", subject="Telefon", msgid="<ph2@firma.pl>", to=consultant_to(env["path"]),
                      body="#customer nobody-such\n\nA call.\n"))
    # no proof (the plain support address, no reference): refused, told how
    box.add(make_mail(sender="anna@firma.pl", subject="Telefon 2", msgid="<ph3@firma.pl>",
                      body="#customer kow\n\nA call.\n"))
    daemon = run(env)
    later = sink.wait_for(4)[2:]
    texts = {str(m.parsed["Subject"]): text_of(m) for m in later}
    error = next(v for k, v in texts.items() if "Telefon" in k and "line 1" in v or "linia 1" in v)
    assert "#customer nobody-such" in error and "nobody-such" in error
    [notice] = [v for k, v in texts.items() if "Nie zastosowano" in k]
    assert "Powód: nic nie potwierdza, że wiadomość jest od Ciebie" in notice, notice
    with daemon.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert set(session.scalars(select(Intake.disposition).where(Intake.dedupe_key.like("%ph%")))) == {
            "ticket", "rejected"}


def test_tickets_open_from_the_command_line(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    body = env["tmp"] / "call.txt"
    body.write_text("Jan zadzwonił: JPK się nie generuje.\n", encoding="utf-8")
    config = str(env["path"])
    assert cli_main(["--config", config, "tickets", "open", "--customer", "jan@acme.pl", "--subject", "JPK",
                     "--by", "anna@firma.pl", "--body-file", str(body)]) == 0
    assert "opened SUP-1, assigned to anna@firma.pl" in capsys.readouterr().out
    assert cli_main(["--config", config, "tickets", "open", "--customer", "kow", "--subject", "Lista płac",
                     "--no-ack"]) == 0
    assert cli_main(["--config", config, "tickets", "open", "--customer", "nikt", "--subject", "x"]) == 2
    assert "no customer with the id or e-mail address 'nikt'" in capsys.readouterr().err
    assert cli_main(["--config", config, "tickets", "open", "--customer", "kow", "--subject", "x",
                     "--by", "obcy@x.pl"]) == 2
    daemon = run(env)
    sink = env["sink"]
    mails = sink.wait_for(3)
    assert sorted(r for m in mails for r in m.rcpt_tos) == ["anna@firma.pl", "anna@firma.pl", "jan@acme.pl"]
    with daemon.sessions() as session:
        t1, t2 = session.get(Ticket, 1), session.get(Ticket, 2)
        assert t1 is not None and t2 is not None
        assert (t1.contract_id, t1.assigned_to, t1.verified, t1.reaction_due is not None) == (
            "acme-sla", "anna@firma.pl", True, True)
        assert (t2.customer_id, t2.requester, t2.assigned_to) == ("kow", "biuro@kowalski.pl", None)
        acks = session.scalars(select(OutboxRow.recipients).where(OutboxRow.kind == "ack")).all()
        assert acks == [["jan@acme.pl"]], "--no-ack: no acknowledgement"


# ---------------------------------------------------------------- digest

def warsaw_utc(text: str) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Warsaw")).astimezone(UTC)


def test_digest_on_working_days_after_digest_at_once_with_catch_up(tmp_path: Path, smtp_sink: Any,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, notifications="")
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(make_mail(subject="Pilne: awaria", msgid="<d1@acme.pl>"))
    box.add(make_mail(sender="kari@nord.no", subject="Question", msgid="<d2@nord.no>"))
    clock = Clock(warsaw_utc("2026-12-06 09:00"))  # a Sunday

    def cycle() -> list[tuple[str, str]]:
        Daemon(load_config(path), clock).run_once()
        return [(m.rcpt_tos[0], str(m.parsed["Subject"])) for m in smtp_sink.messages
                if "Kolejka" in str(m.parsed["Subject"]) or "queue" in str(m.parsed["Subject"])]

    assert cycle() == [], "no digest on a Sunday"
    clock.now = warsaw_utc("2026-12-07 07:59")
    assert cycle() == [], "not before digest_at"
    clock.now = warsaw_utc("2026-12-07 11:30")  # the daemon was down at 08:00: it catches up
    digests = cycle()
    assert sorted(to for to, _ in digests) == ["anna@firma.pl", "szef@firma.pl"]
    anna = next(m for m in smtp_sink.messages if m.rcpt_tos == ["anna@firma.pl"] and "Kolejka" in str(m.parsed["Subject"]))
    text = text_of(anna)
    assert "SUP-1" in text and "SUP-2" in text and text.index("SUP-1") < text.index("SUP-2"), "queue order"
    assert anna.parsed.get_body(("html",)) is not None, "with its HTML part"
    clock.now = warsaw_utc("2026-12-07 15:00")
    assert len(cycle()) == 2, "once per person and day"
    clock.now = warsaw_utc("2026-12-24 09:00")  # Wigilia, a public holiday in Poland since 2025
    assert len(cycle()) == 2
    clock.now = warsaw_utc("2026-12-28 08:05")
    assert len(cycle()) == 4
    capsys.readouterr()
    assert cli_main(["--config", str(path), "digest", "--to", "szef@firma.pl"]) == 0
    printed = capsys.readouterr().out
    assert "To: szef@firma.pl" in printed and "SUP-1" in printed and "SUP-2" in printed
    assert cli_main(["--config", str(path), "digest", "--to", "nobody@firma.pl"]) == 2
    sent = len(smtp_sink.messages)
    assert cli_main(["--config", str(path), "digest", "--to", "anna@firma.pl", "--send"]) == 0
    assert "digest for anna@firma.pl queued" in capsys.readouterr().out
    cycle()  # the daemon sends what the command queued
    (again,) = [m for m in smtp_sink.messages[sent:] if "Kolejka" in str(m.parsed["Subject"])]
    assert again.rcpt_tos == ["anna@firma.pl"] and "SUP-1" in text_of(again)
