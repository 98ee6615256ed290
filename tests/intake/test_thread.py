"""Threading decisions over real reply headers and a store double."""
from __future__ import annotations

import email
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import policy
from email.utils import getaddresses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.intake.thread import (
    ThreadDecision,
    ThreadSettings,
    TicketFacts,
    clean_subject,
    decide_thread,
    find_tag_numbers,
    ticket_tag,
)

REPLIES = Path(__file__).parents[1] / "data" / "replies"
NOW = datetime(2025, 11, 14, 12, 0, tzinfo=timezone.utc)
SETTINGS = ThreadSettings(support_addresses=frozenset({"Support@Example.com"}))


@dataclass
class Store:
    """The store as threading sees it: tickets by number and Message-IDs by ticket."""

    tickets: dict[int, TicketFacts] = field(default_factory=dict)
    message_ids: dict[str, int] = field(default_factory=dict)
    asked_ids: list[tuple[str, ...]] = field(default_factory=list)

    def add(
        self,
        number: int,
        customer_id: str | None,
        *,
        status: str = "open",
        resolved_at: datetime | None = None,
        participants: Sequence[str] = (),
        message_ids: Sequence[str] = (),
    ) -> TicketFacts:
        ticket = TicketFacts(
            ticket_id=1000 + number,
            number=number,
            customer_id=customer_id,
            status=status,
            resolved_at=resolved_at,
            participants=frozenset(participants),
        )
        self.tickets[number] = ticket
        for message_id in message_ids:
            self.message_ids[message_id] = number
        return ticket

    def by_number(self, number: int) -> TicketFacts | None:
        return self.tickets.get(number)

    def by_message_ids(self, message_ids: Sequence[str]) -> TicketFacts | None:
        self.asked_ids.append(tuple(message_ids))
        numbers = [self.message_ids[i] for i in message_ids if i in self.message_ids]
        if not numbers:
            return None
        return max((self.tickets[n] for n in numbers), key=lambda t: t.ticket_id)


@dataclass(frozen=True)
class Headers:
    subject: str
    from_addr: str
    recipients: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    raw: email.message.Message


def _ids(value: object) -> tuple[str, ...]:
    return tuple(re.findall(r"<([^<>\s]+)>", str(value or "")))


def headers(name: str) -> Headers:
    message = email.message_from_bytes((REPLIES / name).read_bytes(), policy=policy.default)
    addresses = getaddresses([str(message.get("to", "")), str(message.get("cc", ""))])
    return Headers(
        subject=str(message["subject"]),
        from_addr=getaddresses([str(message["from"])])[0][1].lower(),
        recipients=tuple(a.lower() for _, a in addresses if a),
        in_reply_to=_ids(message.get("in-reply-to")),
        references=_ids(message.get("references")),
        raw=message,
    )


def decide(
    h: Headers,
    store: Store,
    *,
    customer: str | None,
    consultant: bool = False,
    subject: str | None = None,
    recipients: Sequence[str] | None = None,
    in_reply_to: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    from_addr: str | None = None,
    now: datetime = NOW,
) -> ThreadDecision:
    return decide_thread(
        subject=h.subject if subject is None else subject,
        from_addr=h.from_addr if from_addr is None else from_addr,
        recipients=h.recipients if recipients is None else recipients,
        in_reply_to=h.in_reply_to if in_reply_to is None else in_reply_to,
        references=h.references if references is None else references,
        sender_customer_id=customer,
        sender_is_consultant=consultant,
        lookup=store,
        settings=SETTINGS,
        now=now,
    )


BLANK = Headers("", "someone@example.org", (), (), (), email.message.Message())


# --- each rule on real reply headers -------------------------------------------------


def test_outlook_re_with_thread_index_joins_by_in_reply_to() -> None:
    h = headers("php-imap-issue-412.eml")
    assert h.raw["thread-index"] and h.subject == "RE: TEST MESSAGE"
    store = Store()
    ticket = store.add(12, "marston", message_ids=["944a7d16fcb607628f358cdd0f5ba8c0@tonymarston.co.uk"])
    decision = decide(h, store, customer="marston")
    assert decision == ThreadDecision(ticket, "references", False, None, decision.reasons)
    assert decision.reasons[-1] == "references of SUP-12: joins SUP-12 (open)"


def test_gmail_reply_joins_by_an_old_id_deep_in_references() -> None:
    h = headers("mu-gmail-1220863087.12663_23.eml")
    assert h.raw["message-id"].endswith("@mail.gmail.com>")
    store = Store()
    ticket = store.add(7, "emacs", message_ids=["mailman.15123.1216681940.18990.help-gnu-emacs@gnu.org"])
    decision = decide(h, store, customer="emacs")
    assert (decision.ticket, decision.rule) == (ticket, "references")
    assert store.asked_ids[0][0] == "mailman.15123.1216681940.18990.help-gnu-emacs@gnu.org"
    assert store.asked_ids[0][-1] == "200808062238.15634.juanma_bellon@yahoo.es"
    assert len(store.asked_ids[0]) == len(set(store.asked_ids[0])) == 4


def test_thunderbird_reply_joins_by_in_reply_to() -> None:
    h = headers("ruby-mail-raw_email_reply.eml")
    assert "Thunderbird" in h.raw["user-agent"]
    store = Store()
    ticket = store.add(3, None, participants=[h.from_addr], message_ids=["348F04F142D69C21-291E56D292BC@xxxx.net"])
    assert decide(h, store, customer=None).ticket == ticket


def test_apple_mail_reply_joins_by_in_reply_to() -> None:
    h = headers("talon-apple_mail_2.eml")
    store = Store()
    ticket = store.add(4, "tictail", message_ids=list(h.in_reply_to))
    decision = decide(h, store, customer="tictail")
    assert (decision.ticket, decision.rule) == (ticket, "references")


def test_polish_outlook_odp_joins_by_tag() -> None:
    h = headers("pl-outlook-odp.eml")
    assert h.subject.startswith("ODP: [SUP-42]") and h.raw["thread-index"]
    store = Store()
    ticket = store.add(42, "globex")
    decision = decide(h, store, customer="globex")
    assert (decision.ticket, decision.rule, decision.reopen) == (ticket, "tag", False)
    assert clean_subject(h.subject, "SUP") == "Błąd wydruku faktury korygującej"


def test_outlook365_tag_joins_and_does_not_need_the_references() -> None:
    h = headers("outlook365-underscore.eml")
    store = Store()
    ticket = store.add(88, "initech")
    decision = decide(h, store, customer="initech")
    assert (decision.ticket, decision.rule) == (ticket, "tag")
    assert store.asked_ids == []


def test_polish_thunderbird_plus_address_joins() -> None:
    h = headers("pl-thunderbird-w-dniu.eml")
    assert h.recipients == ("support+sup-61@example.com",)
    store = Store()
    ticket = store.add(61, "zielinski")
    decision = decide(h, store, customer="zielinski")
    assert (decision.ticket, decision.rule) == (ticket, "plus")
    assert "recipient support+sup-61@example.com: joins SUP-61 (open)" in decision.reasons


@pytest.mark.parametrize(
    "recipient",
    ["support+61@example.com", "SUPPORT+SUP-61@EXAMPLE.COM", "  support+sup-61@example.com "],
)
def test_plus_address_forms(recipient: str) -> None:
    store = Store()
    ticket = store.add(61, "zielinski")
    assert decide(BLANK, store, customer="zielinski", recipients=[recipient]).ticket == ticket


@pytest.mark.parametrize(
    "recipient",
    ["sales+SUP-61@example.com", "support+SUP-61@example.org", "support+SUP-61x@example.com", "support+XYZ-61@example.com"],
)
def test_plus_address_on_other_mailboxes_or_details_is_ignored(recipient: str) -> None:
    store = Store()
    store.add(61, "zielinski")
    decision = decide(BLANK, store, customer="zielinski", recipients=[recipient])
    assert (decision.ticket, decision.rule) == (None, "new")


# --- precedence ---------------------------------------------------------------------


def _three_tickets() -> tuple[Store, TicketFacts, TicketFacts, TicketFacts]:
    store = Store()
    tagged = store.add(42, "globex")
    referenced = store.add(43, "globex", message_ids=["maild.ack-42.1730700100@example.com"])
    plus = store.add(44, "globex")
    return store, tagged, referenced, plus


def test_tag_beats_references_beats_plus() -> None:
    h = headers("pl-outlook-odp.eml")
    store, tagged, referenced, plus = _three_tickets()
    to = [*h.recipients, "support+SUP-44@example.com"]
    assert decide(h, store, customer="globex", recipients=to).ticket == tagged
    no_tag = decide(h, store, customer="globex", recipients=to, subject="ODP: Błąd wydruku")
    assert (no_tag.ticket, no_tag.rule) == (referenced, "references")
    plus_only = decide(h, store, customer="globex", recipients=to, subject="ODP: x", in_reply_to=(), references=())
    assert (plus_only.ticket, plus_only.rule) == (plus, "plus")


def test_tag_naming_no_ticket_falls_back_to_references() -> None:
    h = headers("pl-outlook-odp.eml")
    store = Store()
    ticket = store.add(43, "globex", message_ids=["maild.ticket-42.1730700000@example.com"])
    decision = decide(h, store, customer="globex")
    assert (decision.ticket, decision.rule) == (ticket, "references")
    assert decision.reasons[0] == "tag SUP-42 names no ticket"


def test_first_existing_of_several_tags_wins() -> None:
    store = Store()
    ticket = store.add(9, "acme")
    decision = decide(BLANK, store, customer="acme", subject="Re: [SUP-8] [sup-9] [SUP-10]")
    assert decision.ticket == ticket


# --- who may join -------------------------------------------------------------------


def test_cross_customer_tag_is_refused_not_linked_with_reason() -> None:
    h = headers("pl-outlook-odp.eml")
    store = Store()
    store.add(42, "acme", participants=["boss@acme.pl"])
    decision = decide(h, store, customer="globex", in_reply_to=(), references=())
    assert (decision.ticket, decision.rule, decision.reopen, decision.link_to) == (None, "new", False, None)
    assert decision.reasons[0] == (
        "tag SUP-42 names a ticket of customer acme; sender k.wojcik@globex.pl is customer globex "
        "and not on the thread: not joined, not linked"
    )


def test_cross_customer_reference_is_refused() -> None:
    h = headers("talon-apple_mail_2.eml")
    store = Store()
    store.add(4, "acme", message_ids=list(h.in_reply_to))
    decision = decide(h, store, customer="globex")
    assert (decision.ticket, decision.link_to) == (None, None)
    assert "references of SUP-4 names a ticket of customer acme" in decision.reasons[0]


def test_refused_tag_still_lets_own_references_join() -> None:
    h = headers("pl-outlook-odp.eml")
    store = Store()
    store.add(42, "acme")
    own = store.add(50, "globex", message_ids=["maild.ack-42.1730700100@example.com"])
    decision = decide(h, store, customer="globex")
    assert (decision.ticket, decision.rule) == (own, "references")
    assert "names a ticket of customer acme" in decision.reasons[0]


def test_unknown_sender_joins_own_unverified_ticket_via_participants() -> None:
    store = Store()
    ticket = store.add(70, None, participants=["Nowy.Klient@Gmail.com"])
    decision = decide(BLANK, store, customer=None, subject="Re: [SUP-70] pytanie", from_addr="nowy.klient@gmail.com")
    assert (decision.ticket, decision.rule) == (ticket, "tag")


def test_unknown_sender_not_on_the_thread_gets_a_new_ticket() -> None:
    store = Store()
    store.add(70, None, participants=["nowy.klient@gmail.com"])
    decision = decide(BLANK, store, customer=None, subject="Re: [SUP-70] pytanie", from_addr="obcy@gmail.com")
    assert (decision.ticket, decision.link_to) == (None, None)
    assert "sender obcy@gmail.com is no customer" in decision.reasons[0]


def test_cc_participant_of_another_customer_joins() -> None:
    store = Store()
    ticket = store.add(71, "acme", participants=["auditor@kancelaria.pl"])
    decision = decide(BLANK, store, customer="kancelaria", subject="RE: [SUP-71]", from_addr="auditor@kancelaria.pl")
    assert decision.ticket == ticket


def test_consultant_joins_any_customers_ticket() -> None:
    store = Store()
    ticket = store.add(72, "acme")
    decision = decide(BLANK, store, customer=None, consultant=True, subject="Re: [SUP-72]", from_addr="jan@example.com")
    assert decision.ticket == ticket


# --- resolved and closed tickets ----------------------------------------------------


@pytest.mark.parametrize("status", ["resolved", "closed"])
@pytest.mark.parametrize("age", [timedelta(hours=2), timedelta(days=3), timedelta(days=7)])
def test_customer_reply_within_window_reopens(status: str, age: timedelta) -> None:
    store = Store()
    ticket = store.add(80, "acme", status=status, resolved_at=NOW - age)
    decision = decide(BLANK, store, customer="acme", subject="Re: [SUP-80] Raport")
    assert (decision.ticket, decision.reopen, decision.link_to) == (ticket, True, None)
    assert "reopened" in decision.reasons[-1]


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_customer_reply_after_window_opens_new_linked_ticket(status: str) -> None:
    h = headers("outlook365-underscore.eml")
    store = Store()
    old = store.add(88, "initech", status=status, resolved_at=NOW - timedelta(days=7, seconds=1))
    decision = decide(h, store, customer="initech")
    assert (decision.ticket, decision.rule, decision.reopen, decision.link_to) == (None, "new", False, old.ticket_id)
    assert decision.reasons[-1] == (
        f"tag SUP-88: SUP-88 {status} 7 d ago, after the 7 d reopen window: new ticket linked to SUP-88"
    )


def test_reopen_window_is_configurable() -> None:
    store = Store()
    store.add(81, "acme", status="resolved", resolved_at=NOW - timedelta(days=2))
    short = ThreadSettings(support_addresses=frozenset(), reopen_window=timedelta(days=1))
    decision = decide_thread(
        subject="[SUP-81]", from_addr="a@acme.pl", recipients=(), in_reply_to=(), references=(),
        sender_customer_id="acme", sender_is_consultant=False, lookup=store, settings=short, now=NOW,
    )
    assert (decision.ticket, decision.link_to) == (None, 1081)


def test_consultant_mail_joins_closed_ticket_without_reopening() -> None:
    store = Store()
    ticket = store.add(82, "acme", status="closed", resolved_at=NOW - timedelta(days=90))
    decision = decide(BLANK, store, customer=None, consultant=True, subject="Re: [SUP-82]")
    assert (decision.ticket, decision.reopen, decision.link_to) == (ticket, False, None)
    assert decision.reasons[-1] == "tag SUP-82: consultant mail joins closed SUP-82 without reopening it"


def test_nothing_matches_new_ticket() -> None:
    h = headers("talon-gmail.eml")
    decision = decide(h, Store(), customer="acme")
    assert decision == ThreadDecision(None, "new", False, None, ("no ticket matched: new ticket",))


# --- tags and subjects --------------------------------------------------------------


def test_ticket_tag_and_find() -> None:
    assert ticket_tag("SUP", 12) == "[SUP-12]"
    assert find_tag_numbers("Re: problem [sup-12] i [SUP-7] oraz [SUP-12]", "SUP") == (12, 7)
    assert find_tag_numbers("[SUP-12x] [XSUP-3] SUP-4 [SUP- 5] [SUP-]", "SUP") == ()
    assert find_tag_numbers("[SUP-٣]", "SUP") == ()
    assert find_tag_numbers("[HD-0042]", "HD") == (42,)


@pytest.mark.parametrize(
    ("subject", "clean"),
    [
        ("Re: Test", "Test"),
        ("RE: TEST MESSAGE", "TEST MESSAGE"),
        ("RE: RE: Odp: Faktura", "Faktura"),
        ("Odp.: Re: Import JPK_V7M", "Import JPK_V7M"),
        ("ODP: [SUP-42] Błąd wydruku", "Błąd wydruku"),
        ("AW: Re: Schnittstelle DATEV", "Schnittstelle DATEV"),
        ("WG: Schnittstelle", "Schnittstelle"),
        ("Fwd: FW: Fw: PD: umowa", "umowa"),
        ("Re[2]: Re(3): Pytanie", "Pytanie"),
        ("Re : Question", "Question"),
        ("[SUP-12] Re: [SUP-12] RE:   Wydruk   faktury ", "Wydruk faktury"),
        ("Re: Raport [SUP-12]", "Raport"),
        ("Rejestracja: nowa firma", "Rejestracja: nowa firma"),
        ("Pdf: nie otwiera się", "Pdf: nie otwiera się"),
        ("Re: [rt-users] HTML mails", "[rt-users] HTML mails"),
        ("Re:", ""),
        ("", ""),
    ],
)
def test_clean_subject(subject: str, clean: str) -> None:
    assert clean_subject(subject, "SUP") == clean


subjects = st.lists(
    st.one_of(
        st.sampled_from(["Re:", "RE: ", "Odp:", "Odp.:", "AW:", "Fwd:", "[SUP-1]", "[sup-22]", "[SUP-", "]", "SUP-3", "[", " ", "\t", "Re[2]:", "ſ", "１"]),
        st.text(max_size=5),
    ),
    max_size=12,
).map("".join)


@given(subjects)
def test_clean_subject_is_idempotent_and_drops_our_tag(subject: str) -> None:
    once = clean_subject(subject, "SUP")
    assert clean_subject(once, "SUP") == once
    assert find_tag_numbers(once, "SUP") == ()
    assert not re.search(r"\[sup-[0-9]+\]", once, re.IGNORECASE | re.ASCII)


def test_settings_reject_a_prefix_that_would_break_tags() -> None:
    with pytest.raises(ValueError, match="ticket_prefix"):
        ThreadSettings(support_addresses=frozenset(), ticket_prefix="S]P")
    assert ThreadSettings(support_addresses=frozenset({" Support@Example.COM "})).support_addresses == {"support@example.com"}
