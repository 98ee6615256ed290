"""Hostile mail through the whole pipeline (issue 12, "also found"), on SQLite and PostgreSQL."""
from __future__ import annotations

import mailbox
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.desk.commands import help_lines
from maild.ops.daemon import Daemon
from maild.storage.models import Intake, Ticket
from tests.helpers import consultant_to, maildir_source, make_mail, write_config

UTC = timezone.utc


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> Iterator[dict[str, Any]]:
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else ""
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    yield {"tmp": tmp_path, "url": url, "box": box, "sink": smtp_sink}


def configure(env: dict[str, Any], extra: str = "", top: str = "", customers: str | None = None) -> Path:
    kwargs: dict[str, Any] = {} if customers is None else {"customers": customers}
    return write_config(env["tmp"], source=maildir_source(env["tmp"]), smtp_port=env["sink"].port,
                        database_url=env["url"], extra=extra, top=top, migrated=True, **kwargs)


def run(config: Path, clock: Callable[[], datetime] | None = None) -> Daemon:
    daemon = Daemon(load_config(config), clock or (lambda: datetime.now(UTC)))
    daemon.run_once()
    return daemon


def test_a_ticket_number_beyond_the_database_in_a_subject_is_a_new_ticket(env: dict[str, Any]) -> None:
    """[SUP-999999999999] made PostgreSQL refuse the lookup (INTEGER ids): the mail failed
    every attempt and went to quarantine instead of becoming a ticket."""
    config = configure(env)
    env["box"].add(make_mail(subject="[SUP-999999999999] [SUP-2147483648] hello", msgid="<big@acme.pl>"))
    daemon = run(config)
    with daemon.sessions() as session:
        assert session.scalars(select(Intake.disposition)).all() == ["ticket"]
        assert session.scalars(select(Ticket.id)).all() == [1]


AUTHSERV = '\n[security]\ntrusted_authserv_id = "mx.firma.pl"\n'


def passed(domain: str) -> dict[str, str]:
    return {"Authentication-Results": f"mx.firma.pl; dkim=pass header.d={domain}; spf=pass smtp.mailfrom={domain}"}


def failed(domain: str) -> dict[str, str]:
    return {"Authentication-Results": f"mx.firma.pl; dkim=fail header.d={domain}; spf=fail smtp.mailfrom={domain}"}


def test_time_lines_past_the_cap_of_one_mail_book_nothing_and_get_an_error_reply(env: dict[str, Any]) -> None:
    from maild.storage.models import LedgerRow, OutboxRow

    config = configure(env, extra=AUTHSERV)
    env["box"].add(make_mail(subject="Awaria", msgid="<t1@acme.pl>", headers=passed("acme.pl")))
    run(config)
    body = "#time 1h\n" * 25 + "\nDużo pracy.\n"  # each line valid, 25 h together
    env["box"].add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-1] Awaria", msgid="<t2@firma.pl>",
                             body=body, headers={**passed("firma.pl"), "In-Reply-To": "<t1@acme.pl>"}))
    daemon = run(config)
    with daemon.sessions() as session:
        assert session.scalars(select(LedgerRow)).all() == []
        [error] = session.scalars(select(OutboxRow).where(OutboxRow.kind == "command_error")).all()
        assert error.recipients == ["anna@firma.pl"]
        assert session.scalars(select(Intake.disposition).where(Intake.dedupe_key.like("%t2@firma.pl%"))).all() \
            == ["rejected"]
    [reply] = [m for m in env["sink"].messages if m.rcpt_tos == ["anna@firma.pl"]]
    text = reply.parsed.get_body(("plain",)).get_content()
    assert "24" in text and "#time 1h" in text
    # the commands as the notifications list them, in Anna's language (the mail had its own shorter list)
    lines = [line.rstrip() for line in text.splitlines()]
    assert all(f"  {line}" in lines for line in help_lines("pl")), text
    assert "#customer <id lub e-mail>" in text and "<e-mail lub nazwisko>" not in text
    assert not [m for m in env["sink"].messages if "Dużo pracy" in str(m.parsed)], "nothing relayed"


def test_a_new_ticket_takes_at_most_ten_participants_of_the_customers_domain(env: dict[str, Any]) -> None:
    config = configure(env)
    cc = ", ".join([f"kolega{i}@acme.pl" for i in range(20)] + [f"obcy{i}@gdzie-indziej.example" for i in range(978)])
    env["box"].add(make_mail(subject="Wszyscy", msgid="<p1@acme.pl>", headers={"Cc": cc}))
    daemon = run(config)
    with daemon.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert len(ticket.participants) == 10
        assert ticket.participants[0] == "jan@acme.pl"
        assert all(a.endswith("@acme.pl") for a in ticket.participants)
    env["box"].add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject="Re: [SUP-1] Wszyscy",
                             msgid="<p2@firma.pl>", body="Odpowiedź.\n", to=consultant_to(config)))
    run(config)
    [relay] = [m for m in env["sink"].messages if "Odpowiedź" in m.parsed.get_body(("plain",)).get_content()]
    assert len(relay.rcpt_tos) == 10


def test_an_unverified_reply_adds_no_participant(env: dict[str, Any]) -> None:
    config = configure(env, extra=AUTHSERV)
    env["box"].add(make_mail(subject="Faktura", msgid="<u1@acme.pl>", headers=passed("acme.pl")))
    run(config)
    # forged: our server says the acme.pl signature failed
    env["box"].add(make_mail(subject="Re: [SUP-1] Faktura", msgid="<u2@acme.pl>",
                             headers={**failed("acme.pl"), "Cc": "attacker@acme.pl, evil@zle.example"}))
    # genuine: a colleague of the same domain joins
    env["box"].add(make_mail(subject="Re: [SUP-1] Faktura", msgid="<u3@acme.pl>",
                             headers={**passed("acme.pl"), "Cc": "ola@acme.pl, ktos@zle.example"}))
    daemon = run(config)
    with daemon.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.participants == ["jan@acme.pl", "ola@acme.pl"]


def test_the_acknowledgement_limit_counts_plus_addresses_and_case_as_one(env: dict[str, Any]) -> None:
    config = configure(env)
    for i in range(20):
        env["box"].add(make_mail(sender=f"Victim+{i}@Ofiara.example", subject=f"Spam {i}", msgid=f"<v{i}@x>"))
    run(config)
    acks = [m for m in env["sink"].messages]
    assert len(acks) == 5, [m.rcpt_tos for m in acks]


def test_the_acknowledgements_to_one_domain_are_capped(env: dict[str, Any]) -> None:
    config = configure(env, extra="")
    text = config.read_text(encoding="utf-8").replace('ticket_prefix = "SUP"\n',
                                                      'ticket_prefix = "SUP"\nmax_auto_replies_per_domain_per_hour = 7\n')
    config.write_text(text, encoding="utf-8")
    for i in range(12):
        env["box"].add(make_mail(sender=f"osoba{i}@duza-firma.example", subject=f"Pytanie {i}", msgid=f"<d{i}@x>"))
    for i in range(9):  # a customer's own people are not held by the domain limit
        env["box"].add(make_mail(sender=f"pracownik{i}@acme.pl", subject=f"Klient {i}", msgid=f"<c{i}@x>"))
    daemon = run(config)
    domains = sorted(m.rcpt_tos[0].rpartition("@")[2] for m in env["sink"].messages)
    assert domains == ["acme.pl"] * 9 + ["duza-firma.example"] * 7
    with daemon.sessions() as session:
        assert len(session.scalars(select(Ticket)).all()) == 21, "every mail is still a ticket"


def test_an_unverified_senders_acknowledgement_quotes_no_name_and_80_characters(env: dict[str, Any]) -> None:
    config = configure(env)
    lure = "Twoje konto zostało zablokowane, zaloguj się na http://bank.zle.example/odblokuj aby je odblokować dziś"
    env["box"].add(make_mail(sender="Bank Polski Bezpieczeństwo <ofiara@poczta.example>", subject=lure, msgid="<f1@x>"))
    env["box"].add(make_mail(sender="Jan Kowalski <jan@acme.pl>", subject=lure, msgid="<f2@x>"))
    run(config)
    by_rcpt = {m.rcpt_tos[0]: m for m in env["sink"].messages}
    stranger, customer = by_rcpt["ofiara@poczta.example"], by_rcpt["jan@acme.pl"]
    raw = stranger.parsed.as_string()
    assert "Bank Polski" not in raw and "Bezpiecze" not in raw
    assert lure[:80].rstrip() in stranger.parsed["Subject"] and "odblokować dziś" not in stranger.parsed["Subject"]
    assert "odblokować dziś" not in stranger.parsed.get_body(("plain",)).get_content()
    assert customer.parsed["Subject"].endswith(lure), "a known customer's subject is quoted whole"


def test_the_resolved_mail_to_an_unverified_sender_names_no_one(env: dict[str, Any]) -> None:
    config = configure(env, extra=AUTHSERV)
    env["box"].add(make_mail(sender="Bank Polski Bezpieczeństwo <ofiara@poczta.example>", subject="Pytanie",
                             msgid="<r1@x>"))
    env["box"].add(make_mail(sender="Jan Kowalski <jan@acme.pl>", subject="Faktura", msgid="<r2@x>",
                             headers=passed("acme.pl")))
    run(config)
    for ref, msgid in (("SUP-1", "<r3@firma.pl>"), ("SUP-2", "<r4@firma.pl>")):
        env["box"].add(make_mail(sender="Anna Nowak <anna@firma.pl>", subject=f"Re: [{ref}] x", msgid=msgid,
                                 body="#status resolved\n\nGotowe.\n", headers=passed("firma.pl")))
    run(config)
    resolved = {m.rcpt_tos[0]: m.parsed.get_body(("plain",)).get_content() for m in env["sink"].messages
                if "SUP-" in m.parsed["Subject"] and m.parsed["Auto-Submitted"] and "Gotowe" not in str(m.parsed)
                and m.parsed["In-Reply-To"] is None}
    assert "Bank" not in resolved["ofiara@poczta.example"] and "jan@acme.pl" in resolved


def test_replies_in_one_batch_find_their_tickets_and_prove_themselves_by_what_was_sent(env: dict[str, Any]) -> None:
    """The batch looks up what its mail refers to once (``DeskThreadLookup.prefetch``, the stored
    outbox rows): a reply joins the highest ticket it refers to, and adds a Cc only when it answers
    maild's mail to its sender."""
    from maild.storage.models import Event, OutboxRow

    config = configure(env)
    env["box"].add(make_mail(subject="Faktura", msgid="<a1@acme.pl>"))
    run(config)
    env["box"].add(make_mail(subject="Umowa", msgid="<a2@acme.pl>"))
    daemon = run(config)
    with daemon.sessions() as session:
        ack1 = session.scalars(select(OutboxRow.message_id).where(OutboxRow.ticket_id == 1)).one()
    env["box"].add(make_mail(subject="Pytanie", msgid="<r1@acme.pl>", headers={
        "In-Reply-To": "<a2@acme.pl>", "References": "<a1@acme.pl> <a2@acme.pl>", "Cc": "ola@acme.pl"}))
    env["box"].add(make_mail(subject="Dziękuję", msgid="<r2@acme.pl>", headers={
        "In-Reply-To": f"<{ack1}>", "Cc": "ola@acme.pl"}))
    env["box"].add(make_mail(sender="ewa@acme.pl", subject="Ja też", msgid="<r3@acme.pl>", headers={
        "In-Reply-To": f"<{ack1}>", "Cc": "kasia@acme.pl"}))
    env["box"].add(make_mail(subject="Nowe", msgid="<r4@acme.pl>", headers={"In-Reply-To": "<nope@acme.pl>"}))
    from sqlalchemy import event

    daemon = Daemon(load_config(config))
    lookups: list[str] = []  # by Message-ID, of stored messages and outbox rows
    event.listen(daemon.sessions.kw["bind"], "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: lookups.append(statement.split("FROM")[1].split()[0])
                 if re.search(r"\.message_id IN", statement) else None)
    daemon.run_once()
    assert sorted(lookups) == ["messages", "outbox"], "one of each for the batch, none per reply"
    with daemon.sessions() as session:
        by_key = {i.dedupe_key: (i.disposition, i.ticket_id) for i in session.scalars(select(Intake))}
        assert by_key["r1@acme.pl"] == ("reply", 2)
        assert by_key["r2@acme.pl"] == ("reply", 1)
        assert by_key["r3@acme.pl"] == ("reply", 1)
        assert by_key["r4@acme.pl"] == ("ticket", 3)
        t1, t2 = session.get(Ticket, 1), session.get(Ticket, 2)
        assert t1 is not None and t2 is not None
        assert t1.participants == ["jan@acme.pl", "ola@acme.pl"]  # r2 answers the acknowledgement to jan
        assert t2.participants == ["jan@acme.pl"]  # r1 refers only to the customer's own mail
        refused = {(e.ticket_id, tuple(e.detail["addresses"])) for e in session.scalars(
            select(Event).where(Event.kind == "participants_refused"))}
        assert refused == {(2, ("ola@acme.pl",)), (1, ("ewa@acme.pl", "kasia@acme.pl"))}
        t3 = session.get(Ticket, 3)
        assert t3 is not None and any("none of 1 referenced Message-IDs is ours" in r for r in t3.reasons)


def test_a_reply_to_our_acknowledgement_is_proven_and_only_our_message_ids_are_looked_up(env: dict[str, Any]) -> None:
    """Without a trusted server, a customer's reply proves itself by answering maild's mail to its sender:
    its colleague in Cc joins. The outbox holds only maild's own Message-IDs, so a batch asks it for
    those alone: a batch whose mail refers only to the customers' own asks it nothing (on PostgreSQL each
    such lookup read the whole outbox while a new database had no statistics)."""
    from sqlalchemy import event

    from maild.storage.models import OutboxRow

    config = configure(env)
    env["box"].add(make_mail(subject="Drukarka", msgid="<a1@acme.pl>"))
    daemon = run(config)
    with daemon.sessions() as session:
        [ack] = session.scalars(select(OutboxRow.message_id).where(OutboxRow.recipients.is_not(None),
                                                                   OutboxRow.kind == "ack")).all()
    assert ack.startswith("maild.")

    def lookups(mails: list[bytes]) -> list[Any]:
        for raw in mails:
            env["box"].add(raw)
        daemon = Daemon(load_config(config), lambda: datetime.now(UTC))
        seen: list[Any] = []
        event.listen(daemon.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: seen.append(params)
                     if re.search(r"FROM outbox\s+WHERE outbox.message_id IN", statement) else None)
        daemon.run_once()
        return seen

    # the customers' own references only: the outbox is not asked
    assert lookups([make_mail(subject="Re: Drukarka", msgid="<a2@acme.pl>",
                              headers={"In-Reply-To": "<a1@acme.pl>", "References": "<a0@acme.pl> <a1@acme.pl>"})]) == []
    # a reply to our acknowledgement, with a colleague in Cc and the customer's own mail among its references
    [params] = lookups([make_mail(subject="Re: [SUP-1] Drukarka", msgid="<a3@acme.pl>",
                                  headers={"In-Reply-To": f"<{ack}>", "References": f"<a1@acme.pl> <{ack}>",
                                           "Cc": "ola@acme.pl"})])
    values = list(params.values()) if isinstance(params, dict) else list(params)
    assert ack in values and "a1@acme.pl" not in values, values
    with daemon.sessions() as session:
        assert session.scalars(select(Ticket.participants)).one() == ["jan@acme.pl", "ola@acme.pl"]
