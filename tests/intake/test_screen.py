"""Loop protection rules, one test per rule, and Authentication-Results checks."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from maild.intake.message import InboundMessage, parse_message
from maild.intake.screen import ScreenSettings, Screening, screen, sender_authenticated

EML = Path(__file__).parents[1] / "data" / "eml"
NOW = datetime(2024, 11, 4, 12, 0, tzinfo=timezone.utc)
SETTINGS = ScreenSettings(own_addresses=frozenset({"support@example.com"}), instance_id="instance-a")


def mail(extra: str = "", *, sender: str = "Jan <jan@firma.pl>", subject: str = "Faktura nie działa",
         body: str = "Dzień dobry, proszę o pomoc.\n", content_type: str = "text/plain; charset=utf-8") -> InboundMessage:
    head = (f"From: {sender}\nTo: support@example.com\nSubject: {subject}\nMessage-ID: <m1@firma.pl>\n"
            f"Content-Type: {content_type}\n{extra}").strip("\n").replace("\n", "\r\n")
    return parse_message(head.encode() + b"\r\n\r\n" + body.encode())


def run(msg: InboundMessage, arrived_at: datetime = NOW) -> Screening:
    return screen(msg, SETTINGS, arrived_at, NOW)


def test_plain_human_mail() -> None:
    result = run(mail())
    assert result == Screening("human", False, False, None, ())


@pytest.mark.parametrize("value", ["auto-replied", "auto-generated", "auto-notified; owner-email=x@y"])
def test_auto_submitted(value: str) -> None:
    result = run(mail(f"Auto-Submitted: {value}"))
    assert result.automatic and result.kind == "autoreply"
    assert any("Auto-Submitted" in r for r in result.reasons)


def test_auto_submitted_no_is_human() -> None:
    assert not run(mail("Auto-Submitted: no")).automatic


@pytest.mark.parametrize("value", ["bulk", "junk", "List"])
def test_precedence(value: str) -> None:
    result = run(mail(f"Precedence: {value}"))
    assert result.automatic
    assert result.kind == ("list" if value == "List" else "autoreply")


def test_precedence_normal_is_human() -> None:
    assert not run(mail("Precedence: first-class")).automatic


@pytest.mark.parametrize("header", ["List-Id: <erp-users.lists.example>", "List-Unsubscribe: <mailto:u@lists.example>"])
def test_list_headers(header: str) -> None:
    result = run(mail(header))
    assert result.automatic and result.kind == "list" and not result.out_of_office


@pytest.mark.parametrize("header", ["X-Autoreply: yes", "X-Autorespond: Vacation"])
def test_x_autoreply_headers_mean_out_of_office(header: str) -> None:
    result = run(mail(header))
    assert result.automatic and result.kind == "autoreply" and result.out_of_office


@pytest.mark.parametrize(("value", "automatic"), [("All", True), ("DR, OOF, AutoReply", True), ("OOF", True),
                                                  ("DR, NDR", False)])
def test_x_auto_response_suppress(value: str, automatic: bool) -> None:
    assert run(mail(f"X-Auto-Response-Suppress: {value}")).automatic is automatic


@pytest.mark.parametrize("value", ["<>", "< >"])
def test_null_return_path(value: str) -> None:
    result = run(mail(f"Return-Path: {value}"))
    assert result.automatic
    assert any("Return-Path" in r for r in result.reasons)


def test_real_return_path_is_human() -> None:
    assert not run(mail("Return-Path: <jan@firma.pl>")).automatic


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.example.com", "Mail System <PostMaster@firma.pl>"])
def test_daemon_senders(sender: str) -> None:
    result = run(mail(sender=sender, subject="hello", body="hi\n"))
    assert result.automatic and result.kind == "bounce"


def test_dsn_is_bounce() -> None:
    result = run(parse_message((EML / "dsn-permanent.eml").read_bytes()))
    assert result.kind == "bounce" and result.automatic and not result.out_of_office


def test_non_standard_ndr_is_bounce() -> None:
    result = run(parse_message((EML / "ndr-qmail-plain.eml").read_bytes()))
    assert result.kind == "bounce" and result.automatic


def test_disposition_notification_is_automatic() -> None:
    body = ("--R\r\nContent-Type: text/plain\r\n\r\nYour message was displayed.\r\n--R\r\n"
            "Content-Type: message/disposition-notification\r\n\r\nFinal-Recipient: rfc822; jan@firma.pl\r\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--R--\r\n")
    msg = mail(content_type="multipart/report; report-type=disposition-notification; boundary=R",
               subject="Read: faktura", body=body)
    result = run(msg)
    assert result.automatic and result.kind == "autoreply"
    assert msg.report is None


def test_own_marker_is_discarded() -> None:
    result = run(parse_message((EML / "own-loop.eml").read_bytes()))
    assert result.kind == "own" and result.automatic
    assert result.discard is not None and "X-Maild-Origin" in result.discard


def test_other_instance_marker_is_automatic_not_discarded() -> None:
    result = run(mail("X-Maild-Origin: instance-b"))
    assert result.automatic and result.discard is None


def test_from_own_address_is_never_answered() -> None:
    result = run(mail(sender="Support <Support@Example.com>"))
    assert result.kind == "own" and result.automatic and result.discard is None


def test_old_mail_is_not_acknowledged_but_stays_human() -> None:
    result = run(mail(), arrived_at=NOW - timedelta(days=4))
    assert result.kind == "human" and result.automatic
    assert any("too late" in r for r in result.reasons)
    assert not run(mail(), arrived_at=NOW - timedelta(days=2)).automatic


@pytest.mark.parametrize("subject", [
    "Out of Office: faktura", "Automatic reply: faktura", "Autoreply: faktura", "Auto reply: x",
    "Odpowiedź automatyczna: faktura", "[Automatyczna odpowiedź] faktura", "Nieobecność w biurze",
    "Abwesenheitsnotiz: Rechnung", "Automatische Antwort: Rechnung", "I am out of the office until Monday",
    "AUTO: John Smith is out of the office (returning 05/01/2025)", "Re: faktura (Automatic Response)",
])
def test_out_of_office_subjects(subject: str) -> None:
    result = run(mail(subject=subject))
    assert result.automatic and result.out_of_office and result.kind == "autoreply"


@pytest.mark.parametrize("subject", ["Re: Out of Office settings in the ERP", "Pytanie o nieobecności w module kadr",
                                     "Fwd: Automatic reply rules"])
def test_subjects_that_only_mention_absence_are_human(subject: str) -> None:
    assert not run(mail(subject=subject)).automatic


@pytest.mark.parametrize("name", ["ooo-pl-exchange.eml", "ooo-de.eml", "ooo-en-lotus.eml"])
def test_out_of_office_files(name: str) -> None:
    result = run(parse_message((EML / name).read_bytes()))
    assert result.out_of_office and result.automatic


def test_auto_replied_with_absence_text_is_out_of_office() -> None:
    result = run(mail("Auto-Submitted: auto-replied", subject="Re: faktura", body="I am on vacation until Monday.\n"))
    assert result.out_of_office


def test_auto_replied_ticket_ack_is_not_out_of_office() -> None:
    result = run(mail("Auto-Submitted: auto-replied", subject="[#123] received", body="We got your request.\n"))
    assert result.automatic and not result.out_of_office


def test_challenge_response_text() -> None:
    body = ("This account is protected by Bluebottle. Please click on the following link to have your "
            "address added to the recipient's allowed list.\n")
    assert run(mail(subject="RE: faktura", body=body)).automatic


# --------------------------------------------------------------------------
# Authentication-Results
# --------------------------------------------------------------------------

MX = "mx.example.com"


def auth(results: str, sender: str = "jan@firma.pl", extra: str = "") -> InboundMessage:
    lines = "".join(f"Authentication-Results: {r}\n" for r in results.split("\n"))
    return mail(lines + extra, sender=sender)


def test_dkim_pass_aligned() -> None:
    ok, reason = sender_authenticated(auth(f"{MX}; dkim=pass (2048-bit key) header.d=firma.pl header.s=s1"), MX)
    assert ok and "dkim=pass" in reason


def test_dkim_pass_org_domain_alignment() -> None:
    assert sender_authenticated(auth(f"{MX}; dkim=pass header.d=mail.firma.pl"), MX)[0]
    assert sender_authenticated(auth(f"{MX}; dkim=pass header.i=@firma.pl"), MX, None)[0]


def test_dkim_pass_unaligned() -> None:
    ok, reason = sender_authenticated(auth(f"{MX}; dkim=pass header.d=sendgrid.net"), MX)
    assert not ok and "dkim=pass" in reason


def test_dkim_pass_on_public_suffix_does_not_align() -> None:
    assert not sender_authenticated(auth(f"{MX}; dkim=pass header.d=pl"), MX)[0]


def test_other_authserv_id_is_ignored() -> None:
    ok, reason = sender_authenticated(auth("evil.example; dkim=pass header.d=firma.pl"), MX)
    assert not ok and "no Authentication-Results" in reason


def test_only_the_topmost_trusted_header_counts() -> None:
    forged_below = f"{MX}; dkim=fail header.d=firma.pl\n{MX}; dkim=pass header.d=firma.pl"
    assert not sender_authenticated(auth(forged_below), MX)[0]


def test_spf_pass_with_matching_mailfrom() -> None:
    ok, reason = sender_authenticated(auth(f"{MX} 1; spf=pass (sender SPF authorized) smtp.mailfrom=bounce@firma.pl"), MX)
    assert ok and "spf=pass" in reason


def test_spf_pass_with_foreign_mailfrom() -> None:
    assert not sender_authenticated(auth(f"{MX}; spf=pass smtp.mailfrom=bounces@mailchimp.example"), MX)[0]


def test_spf_pass_uses_envelope_from_when_no_mailfrom_property() -> None:
    assert sender_authenticated(auth(f"{MX}; spf=pass"), MX, envelope_from="x@firma.pl")[0]


def test_fail_results() -> None:
    ok, reason = sender_authenticated(auth(f"{MX}; dkim=fail header.d=firma.pl; spf=softfail smtp.mailfrom=firma.pl"), MX)
    assert not ok and "dkim=fail" in reason and "spf=softfail" in reason


def test_dmarc_pass() -> None:
    assert sender_authenticated(auth(f"{MX}; dmarc=pass header.from=firma.pl"), MX)[0]


def test_no_from_address() -> None:
    ok, reason = sender_authenticated(auth(f"{MX}; dkim=pass header.d=firma.pl", sender="undisclosed"), MX)
    assert not ok
