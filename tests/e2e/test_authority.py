"""Issue #12.1: a consultant's address in From buys nothing without proof. The four attacks
(a forged consultant's commands and attachment, a forged manager resolving, a forged #verify,
a forged requester adding a Cc), each with our server's authentication results passing and
failing, with and without a valid reference, on SQLite and PostgreSQL. Asserted on the
database and on what the SMTP server saw."""
from __future__ import annotations

import mailbox
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import Event, LedgerRow, Ticket
from tests.e2e.test_notifications import EVERY_DAY, text_of, with_file
from tests.helpers import consultant_to, maildir_source, make_mail, write_config

UTC = timezone.utc
PASS = "mx.firma.pl; dkim=pass header.d={domain}; spf=pass smtp.mailfrom={domain}"
FAIL = "mx.firma.pl; dkim=fail header.d={domain}; spf=fail smtp.mailfrom={domain}"
# mode: (trusted_authserv_id set, the forged mail's results, a valid reference, acts?)
MODES = {
    "no-proof": (False, None, False, False),
    "reference": (False, None, True, True),
    "auth-pass": (True, PASS, False, True),
    "auth-fail-with-reference": (True, FAIL, True, False),
}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
@pytest.mark.parametrize("mode", list(MODES))
def test_four_attacks(mode: str, db: str, request: pytest.FixtureRequest, tmp_path: Path, smtp_sink: Any) -> None:
    authserv, results, reference, acts = MODES[mode]
    url = request.getfixturevalue("pg_migrated_url") if db == "postgresql" else ""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, database_url=url,
                        notifications="managers_get_new = true", extra=EVERY_DAY,
                        top='[security]\ntrusted_authserv_id = "mx.firma.pl"\n' if authserv else "")
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)

    def run() -> Daemon:
        daemon = Daemon(load_config(path), lambda: datetime.now(UTC))
        daemon.run_once()
        return daemon

    def customer(sender: str, subject: str, msgid: str, **kw: Any) -> bytes:
        domain = sender.split("@")[1]
        return make_mail(sender=sender, subject=subject, msgid=msgid,
                         headers={"Authentication-Results": PASS.format(domain=domain), **kw.pop("headers", {})},
                         **kw)

    box.add(customer("kari@nord.no", "Printer", "<a1@nord.no>"))
    box.add(customer("jan@acme.pl", "Faktura", "<b1@acme.pl>"))
    box.add(make_mail(sender="obcy@nieznany.pl", subject="Oferta", msgid="<c1@nieznany.pl>"))
    run()
    first = smtp_sink.wait_for(2 + 3 + 3)  # acks to kari and jan; anna and szef told of each ticket

    def sent(to: str, ref: str, kind: str = "notify") -> str:
        for m in first:
            if to in m.rcpt_tos and f"[{ref}]" in str(m.parsed["Subject"]) and \
                    (kind == "ack" or "Nowe zgłoszenie" in m.parsed.get_body(("plain",)).get_content()):
                return str(m.parsed["Message-ID"])
        raise AssertionError(f"no {kind} to {to} on {ref}")

    def forged(sender: str, subject: str, msgid: str, body: str, ref_id: str, **kw: Any) -> bytes:
        headers: dict[str, str] = dict(kw.pop("headers", {}))
        if reference:
            headers.update({"In-Reply-To": ref_id, "References": ref_id})
        if results:
            headers["Authentication-Results"] = results.format(domain=sender.split("@")[1])
        return make_mail(sender=sender, subject=subject, msgid=msgid, body=body, headers=headers, **kw)

    # 1. a consultant's commands and an .exe on the prepaid ticket
    box.add(with_file(forged("anna@firma.pl", "Re: [SUP-1] Printer", "<x1@evil.example>",
                             "#time 24h\n#status closed\n#priority P4\n#assign szef@firma.pl\n\nRun the attached tool.",
                             sent("anna@firma.pl", "SUP-1")), "tool.exe", b"MZ\x90\x00evil", "application", "octet-stream"))
    # 2. the manager resolving the sla ticket
    box.add(forged("szef@firma.pl", "Re: [SUP-2] Faktura", "<x2@evil.example>", "#status resolved\n\nDone.",
                   sent("szef@firma.pl", "SUP-2")))
    # 3. #verify for a stranger's ticket
    box.add(forged("anna@firma.pl", "Re: [SUP-3] Oferta", "<x3@evil.example>",
                   "#verify\n#priority P1\n#internal\nKnown customer.", sent("anna@firma.pl", "SUP-3")))
    # 4. the requester adding someone in Cc (an address of the customer's own domain: another
    #    domain is never added by a customer's mail anyway)
    box.add(forged("jan@acme.pl", "Re: [SUP-2] Faktura", "<x4@evil.example>", "Please copy my colleague.",
                   sent("jan@acme.pl", "SUP-2", "ack"), headers={"Cc": "intruder@acme.pl"}))
    daemon = run()
    # the consultant's genuine answer on SUP-2 afterwards: who does the customer's thread reach?
    box.add(make_mail(sender="anna@firma.pl", subject="Re: [SUP-2] Faktura", msgid="<real@firma.pl>",
                      body="Poprawiona faktura w systemie.", to=consultant_to(path),
                      headers={"Authentication-Results": PASS.format(domain="firma.pl")} if authserv else None))
    daemon = run()
    mails = smtp_sink.messages
    with daemon.sessions() as session:
        t1, t2, t3 = (session.get(Ticket, n) for n in (1, 2, 3))
        assert t1 is not None and t2 is not None and t3 is not None
        booked = session.scalar(select(func.coalesce(func.sum(LedgerRow.minutes), 0)))
        refused = session.scalar(select(func.count()).select_from(Event)
                                 .where(Event.kind == "unverified_consultant_mail"))
    to_kari = [m for m in smtp_sink.received_for("kari@nord.no") if b"Run the attached tool" in m.data]
    resolved_mail = [m for m in smtp_sink.received_for("jan@acme.pl") if "Rozwiązane" in str(m.parsed["Subject"])
                     or "rozwiązane" in str(m.parsed["Subject"]).lower()]
    if acts:
        assert booked == 24 * 60 and t1.status == "closed" and t1.priority == "P4"
        assert t1.assigned_to == "szef@firma.pl"
        [relay] = to_kari
        assert [a.get_filename() for a in relay.parsed.iter_attachments()] == ["tool.exe"]
        assert t2.status in ("resolved", "waiting") and resolved_mail
        assert t3.verified and t3.priority == "P1"
        assert "intruder@acme.pl" in (t2.participants or [])
        assert refused == 0
    else:
        assert booked == 0, "nothing booked"
        assert t1.status != "closed" and t1.priority != "P4" and t1.assigned_to != "szef@firma.pl"
        assert to_kari == [], "neither the text nor the .exe reached the customer"
        assert t2.resolved_at is None and resolved_mail == [], "the customer got no 'resolved' mail"
        assert not t3.verified and t3.priority != "P1", "the stranger's ticket stays unverified"
        assert "intruder@acme.pl" not in (t2.participants or [])
        assert not smtp_sink.received_for("intruder@acme.pl"), "the intruder is copied on nothing"
        assert refused == 3
        notices = [m for m in mails if "Nie zastosowano" in str(m.parsed["Subject"])]
        assert sorted(r for m in notices for r in m.rcpt_tos) == ["anna@firma.pl", "anna@firma.pl", "szef@firma.pl"]
        # why, in the consultant's language (Polish here): which proof was missing, never maild's English log line
        why = ("nasz serwer pocztowy nie potwierdził nadawcy (mx.firma.pl: " if authserv
               else "nic nie potwierdza, że wiadomość jest od Ciebie")
        for notice in notices:
            assert f"Powód: {why}" in text_of(notice), text_of(notice)
            assert "no proof" not in text_of(notice) and "not authenticated" not in text_of(notice)
    # the genuine answer reached the customer in every case
    assert any(b"Poprawiona faktura" in m.data for m in smtp_sink.received_for("jan@acme.pl"))
