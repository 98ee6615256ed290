"""Consultants answering by mail as they really do, through the daemon (a Maildir, the SMTP sink, SQLite):
replies to maild's mail that is about no single ticket, reply-all, mail that proves nothing. Asserted on
what the SMTP server saw and what the database holds."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.cli.main import main as cli_main
from maild.storage.models import Intake, Ticket
from tests.e2e.test_notifications import _env, run, text_of
from tests.helpers import make_mail


@pytest.fixture
def env(tmp_path: Path, smtp_sink: Any) -> dict[str, Any]:
    """Jan's mail is SUP-1 and Ola's SUP-2; Anna (Polish) and Bob (English) were told of both."""
    env = _env(tmp_path, smtp_sink)
    env["box"].add(make_mail(subject="Awaria wydruku", msgid="<n1@acme.pl>", body="Wydruk faktur nie działa.\n"))
    env["box"].add(make_mail(sender="Ola <ola@acme.pl>", subject="Licencje", msgid="<n2@acme.pl>", body="Ile licencji?\n"))
    run(env)
    env["sink"].wait_for(6)  # two acknowledgements, four notifications
    return env


def reply_to(mail: Any, sender: str, body: str, msgid: str, **headers: str) -> bytes:
    """A reply as a mail client writes it: Re: the subject, to the Reply-To, threaded under ``mail``."""
    return make_mail(sender=sender, subject=f"Re: {mail.parsed['Subject']}", msgid=msgid,
                     to=str(mail.parsed["Reply-To"] or mail.parsed["From"]), body=body,
                     headers={"In-Reply-To": mail.parsed["Message-ID"], "References": mail.parsed["Message-ID"],
                              **headers})


def settled(sink: Any, count: int) -> list[Any]:
    """The sink's mail once ``count`` arrived and nothing more did within half a second."""
    sink.wait_for(count)
    time.sleep(0.5)
    return sink.messages


def test_a_reply_to_the_digest_opens_no_ticket_and_the_consultant_is_told_why(env: dict[str, Any],
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Anna answers her morning digest: "#take" (for which of its tickets?) and, later, a word. Each opened a
    ticket of its own with Anna as the requester ("unverified", the digest's subject) and told every
    consultant of it."""
    assert cli_main(["--config", str(env["path"]), "digest", "--send", "--to", "anna@firma.pl"]) == 0
    run(env)
    digest = settled(env["sink"], 7)[-1]
    assert digest.rcpt_tos == ["anna@firma.pl"] and "SUP-2" in text_of(digest)
    quoted = "\n".join(f"> {line}" for line in text_of(digest).splitlines())
    env["box"].add(reply_to(digest, "Anna Nowak <anna@firma.pl>", f"#take\n\n{quoted}\n", "<g1@firma.pl>"))
    env["box"].add(reply_to(digest, "Anna Nowak <anna@firma.pl>", f"Dzięki, biorę SUP-2.\n\n{quoted}\n", "<g2@firma.pl>"))
    daemon = run(env)
    told = settled(env["sink"], 9)[7:]
    with daemon.sessions() as session:
        tickets = session.scalar(select(func.count()).select_from(Ticket))
        assigned = session.scalars(select(Ticket.assigned_to).order_by(Ticket.id)).all()
        outcomes = {row.dedupe_key: (row.disposition, row.ticket_id) for row in session.scalars(select(Intake))}
    assert tickets == 2 and assigned == [None, None], "no ticket opened, none taken"
    assert outcomes["g1@firma.pl"] == outcomes["g2@firma.pl"] == ("rejected", None), outcomes
    assert [m.rcpt_tos for m in told] == [["anna@firma.pl"], ["anna@firma.pl"]], [m.parsed["Subject"] for m in told]
    for notice in told:
        body = text_of(notice)
        assert "nie dotyczy jednego zgłoszenia" in body and "[SUP-12]" in body, body
        assert notice.parsed["Auto-Submitted"], "an automatic answer: no out-of-office answers it"


def test_commands_written_with_a_space_after_the_hash_are_applied_not_sent_to_the_customer(env: dict[str, Any]) -> None:
    """"# time 30m" (a phone's keyboard, a habit): the line ended the command block, so nothing was booked or
    taken and the customer read "# time 30m" and "# take" above the answer. A "# Heading" is still text."""
    note = next(m for m in env["sink"].messages if m.rcpt_tos == ["anna@firma.pl"] and "[SUP-1]" in str(m.parsed["Subject"]))
    env["box"].add(reply_to(note, "Anna Nowak <anna@firma.pl>", "# time 30m\n#  Take\n\nDzień dobry,\nproszę zrestartować usługę.\n",
                            "<s1@firma.pl>"))
    env["box"].add(reply_to(note, "Anna Nowak <anna@firma.pl>", "# Podsumowanie\nUsługa działa.\n", "<s2@firma.pl>"))
    daemon = run(env)
    relays = [m for m in settled(env["sink"], 8)[6:] if m.rcpt_tos == ["jan@acme.pl"]]
    with daemon.sessions() as session:
        from maild.storage.models import LedgerRow

        ticket = session.get(Ticket, 1)
        booked = session.scalars(select(LedgerRow.minutes)).all()
    assert ticket is not None and ticket.assigned_to == "anna@firma.pl" and booked == [30]
    first, second = (text_of(m) for m in relays)
    assert first.startswith("Dzień dobry,") and "# time" not in first and "Take" not in first, first
    assert second.startswith("# Podsumowanie\r\nUsługa działa."), second


@pytest.mark.parametrize(("sender", "words", "wrong"), [
    ("Bob Kowal <bob@firma.pl>", ("Why: nothing shows the mail is yours", "#away", "support+"),
     ("about -", "[-]", "on the ticket", "reply to the ticket's notification")),
    ("Anna Nowak <anna@firma.pl>", ("Powód: nic nie potwierdza, że wiadomość jest od Ciebie", "#away", "support+"),
     ("w sprawie -", "[-]", "zapisana w zgłoszeniu", "odpowiedz na wiadomość z powiadomieniem")),
], ids=["en", "pl"])
def test_an_unproven_away_mail_is_told_why_without_a_ticket_it_does_not_have(
        env: dict[str, Any], sender: str, words: tuple[str, ...], wrong: tuple[str, ...]) -> None:
    """"#away" sent to the plain support address proves nothing. The notice read "Your mail about - was kept on
    the ticket as an unverified internal note" (there is no ticket) and sent the consultant to "reply to the
    ticket's notification", which cannot carry an absence: it must say to write to the personal address."""
    env["box"].add(make_mail(sender=sender, subject="urlop", msgid="<a1@firma.pl>", body="#away 2026-12-21..2026-12-31\n"))
    daemon = run(env)
    [notice] = settled(env["sink"], 7)[6:]
    with daemon.sessions() as session:
        from maild.storage.models import AbsenceRow

        absences = session.scalar(select(func.count()).select_from(AbsenceRow))
    assert absences == 0 and notice.rcpt_tos == [sender.split("<")[1].rstrip(">")]
    body = f"{notice.parsed['Subject']}\n{text_of(notice)}"
    for word in words:
        assert word in body, body
    for word in wrong:
        assert word not in body, body


def test_a_reply_all_that_reached_the_customer_is_not_relayed_to_them_again(env: dict[str, Any]) -> None:
    """Anna answers her notification with Reply All and adds the customer in Cc, as one answers a colleague:
    the customer has her mail from her own server, and maild relayed it to them a second time. The relay goes
    to the ticket's people her mail did not reach (Ola on SUP-3), and to nobody when it reached them all (SUP-1);
    either way it is the ticket's first answer."""
    env["box"].add(make_mail(subject="Migracja", msgid="<n3@acme.pl>", headers={"Cc": "ola@acme.pl"}))
    run(env)
    mails = settled(env["sink"], 9)

    def note(ref: str) -> Any:
        return next(m for m in mails if m.rcpt_tos == ["anna@firma.pl"] and f"[{ref}]" in str(m.parsed["Subject"]))

    env["box"].add(reply_to(note("SUP-1"), "Anna Nowak <anna@firma.pl>", "Dzień dobry,\nproszę o zrzut ekranu.\n",
                            "<ra1@firma.pl>", Cc="Jan <jan@acme.pl>"))
    env["box"].add(reply_to(note("SUP-3"), "Anna Nowak <anna@firma.pl>", "Dzień dobry,\nmigracja w sobotę.\n",
                            "<ra3@firma.pl>", Cc="jan@acme.pl"))
    daemon = run(env)
    relays = [m for m in settled(env["sink"], 10)[9:] if m.parsed["Auto-Submitted"] is None]
    assert [(m.rcpt_tos, "migracja w sobotę" in text_of(m)) for m in relays] == [(["ola@acme.pl"], True)], \
        [(m.rcpt_tos, m.parsed["Subject"]) for m in relays]
    with daemon.sessions() as session:
        answered = {t.id: (t.first_response_at is not None, t.status) for t in session.scalars(select(Ticket))}
    assert answered[1] == answered[3] == (True, "waiting"), answered


def test_an_iphone_reply_in_polish_reaches_the_customer_without_the_attribution_line(env: dict[str, Any]) -> None:
    """Apple Mail in Polish heads the quote with "Wiadomość napisana przez <who> w dniu <date>, o godz. <time>:";
    the customer got that line under the answer, the notification's sender and maild's address in it."""
    note = next(m for m in env["sink"].messages if m.rcpt_tos == ["anna@firma.pl"] and "[SUP-1]" in str(m.parsed["Subject"]))
    quoted = "\n".join(f"> {line}" for line in text_of(note).splitlines())
    env["box"].add(reply_to(note, "Anna Nowak <anna@firma.pl>",
                            "Proszę sprawdzić teraz.\n\nWysłane z iPhone'a\n\n"
                            f"Wiadomość napisana przez {note.parsed['From']} w dniu 07.12.2026, o godz. 09:10:\n\n{quoted}\n",
                            "<i1@firma.pl>"))
    run(env)
    [relay] = [m for m in settled(env["sink"], 7)[6:] if m.rcpt_tos == ["jan@acme.pl"]]
    assert text_of(relay).startswith("Proszę sprawdzić teraz.\r\n\r\nWysłane z iPhone'a\r\n\r\n--"), text_of(relay)


def test_assign_takes_a_consultants_first_name_as_the_polish_help_promises(env: dict[str, Any]) -> None:
    """The Polish notification's help reads "#assign <e-mail lub imię>" ("e-mail or first name"): Anna's
    "#assign Bob" in a forward to Bob was refused, "no consultant with the e-mail or name 'Bob'" (Bob Kowal)."""
    note = next(m for m in env["sink"].messages if m.rcpt_tos == ["anna@firma.pl"] and "[SUP-1]" in str(m.parsed["Subject"]))
    assert "#assign <e-mail lub imię>" in text_of(note)
    env["box"].add(reply_to(note, "Anna Nowak <anna@firma.pl>", "#assign Bob\n#internal\nBob, zerkniesz na sterownik?\n",
                            "<as1@firma.pl>"))
    daemon = run(env)
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.assigned_to == "bob@firma.pl"


def test_a_ticket_handed_over_by_a_reply_of_commands_only_reaches_its_new_assignee(env: dict[str, Any]) -> None:
    """Anna hands SUP-1 to Bob with "#assign Bob" and nothing else: Bob was not told (a mail of commands only
    notified nobody), so the ticket waited for him unseen until the next morning's digest."""
    note = next(m for m in env["sink"].messages if m.rcpt_tos == ["anna@firma.pl"] and "[SUP-1]" in str(m.parsed["Subject"]))
    env["box"].add(reply_to(note, "Anna Nowak <anna@firma.pl>", "#assign Bob\n#time 5m\n\n-- \nAnna\n", "<h1@firma.pl>"))
    run(env)
    [told] = settled(env["sink"], 7)[6:]
    assert told.rcpt_tos == ["bob@firma.pl"] and "[SUP-1]" in str(told.parsed["Subject"])
    body = text_of(told)
    assert "Assigned:  bob@firma.pl" in body and "#assign Bob" in body and "anna@firma.pl" in body, body


def test_a_ticket_taken_from_a_colleague_is_told_to_the_colleague(env: dict[str, Any]) -> None:
    """Anna takes SUP-1, then Bob takes it from her with "#take" alone: Anna was not told, and went on
    working on a ticket that was no longer hers. Her own "#take" tells nobody (she wrote it)."""
    to_anna = next(m for m in env["sink"].messages if m.rcpt_tos == ["anna@firma.pl"] and "[SUP-1]" in str(m.parsed["Subject"]))
    to_bob = next(m for m in env["sink"].messages if m.rcpt_tos == ["bob@firma.pl"] and "[SUP-1]" in str(m.parsed["Subject"]))
    env["box"].add(reply_to(to_anna, "Anna Nowak <anna@firma.pl>", "#take\n", "<t1@firma.pl>"))
    run(env)
    env["box"].add(reply_to(to_bob, "Bob Kowal <bob@firma.pl>", "#take\n\n-- \nBob\n", "<t2@firma.pl>"))
    daemon = run(env)
    [told] = settled(env["sink"], 7)[6:]
    assert told.rcpt_tos == ["anna@firma.pl"] and "[SUP-1]" in str(told.parsed["Subject"])
    assert "#take" in text_of(told) and "bob@firma.pl" in text_of(told), text_of(told)
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None and ticket.assigned_to == "bob@firma.pl"


@pytest.mark.parametrize(("sender", "told", "wrong"), [
    ("Anna Nowak <anna@firma.pl>", "ze swojej skrzynki służbowej", "odpowiedz na wiadomość z powiadomieniem"),
    ("Bob Kowal <bob@firma.pl>", "from your work mailbox", "reply to the ticket's notification"),
], ids=["pl", "en"])
def test_a_mail_our_server_did_not_authenticate_is_not_told_to_reply_to_the_notification(
        tmp_path: Path, smtp_sink: Any, sender: str, told: str, wrong: str) -> None:
    """With ``trusted_authserv_id`` our server's verdict alone counts: the notice said so ("nothing else
    counts") and then told the consultant to reply to the ticket's notification, which is what they had done."""
    env = _env(tmp_path, smtp_sink, extra='\n[security]\ntrusted_authserv_id = "mx.firma.pl"\n')
    env["box"].add(make_mail(subject="Awaria wydruku", msgid="<n1@acme.pl>"))
    run(env)
    email = sender.split("<")[1].rstrip(">")
    note = next(m for m in settled(env["sink"], 3) if m.rcpt_tos == [email])
    env["box"].add(reply_to(note, sender, "#take\nDzień dobry, sprawdzam.\n", "<u1@firma.pl>",
                            **{"Authentication-Results": "mx.firma.pl; dkim=fail header.d=firma.pl; spf=fail"}))
    run(env)
    [notice] = settled(env["sink"], 4)[3:]
    assert notice.rcpt_tos == [email]
    assert told in text_of(notice) and wrong not in text_of(notice), text_of(notice)


@pytest.mark.parametrize("days", ["2026-12-21 - 2027-01-03", "2026-12-21 2027-01-03", "2026-12-21 – 2027-01-03",
                                  "2026-12-21 .. 2027-01-03"])
def test_away_days_written_with_spaces_around_the_dash_are_the_whole_range(env: dict[str, Any], days: str) -> None:
    """"#away 2026-12-21 - 2027-01-03 urlop" was taken as one day, 21 December, with the note "- 2027-01-03
    urlop", and confirmed: from the 22nd on, Anna counted as present and was given new tickets on holiday."""
    from tests.helpers import consultant_to

    env["box"].add(make_mail(sender="Anna Nowak <anna@firma.pl>", to=consultant_to(env["path"]), subject="urlop",
                             msgid="<w1@firma.pl>", body=f"#away {days} urlop\n"))
    daemon = run(env)
    with daemon.sessions() as session:
        from maild.storage.models import AbsenceRow

        recorded = [(a.start.isoformat(), a.until.isoformat(), a.note) for a in session.scalars(select(AbsenceRow))]
    assert recorded == [("2026-12-21", "2027-01-03", "urlop")], recorded


@pytest.mark.parametrize(("consultant", "sender", "words"), [
    ("anna@firma.pl", "Anna Nowak <anna.nowak@gmail.com>", ("anna.nowak@gmail.com", "anna@firma.pl", "Powód:")),
    ("bob@firma.pl", "Bob <bob.kowal@outlook.com>", ("bob.kowal@outlook.com", "bob@firma.pl", "Why:")),
], ids=["pl", "en"])
def test_an_answer_to_a_notification_from_a_consultants_other_address_is_kept_and_the_consultant_told(
        env: dict[str, Any], consultant: str, sender: str, words: tuple[str, ...]) -> None:
    """Anna answers her notification from her phone's private account: the mail opened a ticket of its own
    (P1 for the quoted "Awaria"), acknowledged to the private address, announced to every consultant, and the
    customer got nothing; nobody told Anna why. Now it is an unverified note on SUP-1 and she is told, in her
    language, that it came from another address than hers."""
    note = next(m for m in env["sink"].messages if m.rcpt_tos == [consultant] and "[SUP-1]" in str(m.parsed["Subject"]))
    env["box"].add(reply_to(note, sender, "#take\nDzień dobry, sprawdzę.\n", "<o1@elsewhere.example>"))
    daemon = run(env)
    [notice] = settled(env["sink"], 7)[6:]
    with daemon.sessions() as session:
        tickets = session.scalar(select(func.count()).select_from(Ticket))
        first = session.get(Ticket, 1)
        outcome = session.scalars(select(Intake).where(Intake.dedupe_key == "o1@elsewhere.example")).one()
        assert first is not None
        taken = first.assigned_to
    assert tickets == 2 and taken is None and (outcome.disposition, outcome.ticket_id) == ("reply", 1)
    assert notice.rcpt_tos == [consultant] and "[SUP-1]" in str(notice.parsed["Subject"])
    for word in words:
        assert word in text_of(notice), text_of(notice)
