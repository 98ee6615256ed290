"""Who hears of what, the notification's header block, attachments under the limit, the reply marker."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.config import Consultant
from maild.desk.notifications import (
    REPLY_MARKER,
    NotifyAttachment,
    TicketView,
    cut_at_marker,
    dedupe_key,
    follow_up_recipients,
    header_block,
    new_ticket_recipients,
    note_recipients,
    split_attachments,
)
from maild.rules.peak import default_peak_windows

NOW = datetime(2026, 12, 7, 9, tzinfo=timezone.utc)
ANNA = Consultant("anna@firma.pl", "Anna")
BOB = Consultant("bob@firma.pl", "Bob", language="en")
BOSS = Consultant("szef@firma.pl", "Szef", role="manager")
TEAM = (ANNA, BOB, BOSS)


def emails(people: tuple[Consultant, ...]) -> list[str]:
    return [p.email for p in people]


def test_a_new_ticket_goes_to_its_assignee_or_every_present_consultant() -> None:
    assert emails(new_ticket_recipients(TEAM, None, NOW)) == ["anna@firma.pl", "bob@firma.pl"]
    assert emails(new_ticket_recipients(TEAM, "BOB@firma.pl", NOW)) == ["bob@firma.pl"]
    assert emails(new_ticket_recipients(TEAM, None, NOW, managers_get_new=True)) == [
        "anna@firma.pl", "bob@firma.pl", "szef@firma.pl"]
    assert emails(new_ticket_recipients(TEAM, "anna@firma.pl", NOW, exclude="anna@firma.pl")) == []
    # nobody at work (a weekend, everyone away): the managers hear of it
    assert emails(new_ticket_recipients(TEAM, None, NOW, present=[])) == ["szef@firma.pl"]
    assert emails(new_ticket_recipients(TEAM, None, NOW, present=[BOB])) == ["bob@firma.pl"]


def test_a_follow_up_goes_to_the_assignee_only_while_assigned() -> None:
    assert emails(follow_up_recipients(TEAM, "anna@firma.pl", NOW)) == ["anna@firma.pl"]
    assert emails(follow_up_recipients(TEAM, None, NOW)) == ["anna@firma.pl", "bob@firma.pl"]
    # an assignee who is no longer a consultant: the ticket counts as unassigned
    assert emails(follow_up_recipients(TEAM, "gone@firma.pl", NOW)) == ["anna@firma.pl", "bob@firma.pl"]


def test_a_note_goes_to_the_watchers_but_never_its_author() -> None:
    assert emails(note_recipients(TEAM, "anna@firma.pl", ["bob@firma.pl", "jan@klient.pl", "anna@firma.pl"],
                                  "bob@firma.pl")) == ["anna@firma.pl"]
    assert emails(note_recipients(TEAM, None, ["szef@firma.pl"], "anna@firma.pl")) == ["szef@firma.pl"]


def test_dedupe_keys_differ_per_event_and_recipient_and_fit_the_column() -> None:
    keys = {dedupe_key(e, 7, "m1", r) for e in ("new", "follow_up", "answer", "note")
            for r in ("anna@firma.pl", "bob@firma.pl")}
    assert len(keys) == 8
    assert len(dedupe_key("new", 7, "x" * 1000, "anna@firma.pl")) == 400


@given(sizes=st.lists(st.integers(0, 100), max_size=10), limit=st.integers(0, 300))
def test_attachments_travel_up_to_the_limit_and_the_rest_are_named(sizes: list[int], limit: int) -> None:
    atts = [NotifyAttachment(f"f{i}", "application/pdf", s, f"{i:064d}") for i, s in enumerate(sizes)]
    attached, named = split_attachments(atts, limit)
    assert sum(a["size"] for a in attached) <= limit
    assert sorted(a["filename"] for a in attached + named) == sorted(a.filename for a in atts)
    assert all(n["size"] + sum(a["size"] for a in attached) > limit or n["size"] > limit for n in named)


def test_the_header_block_shows_the_deadline_in_local_time() -> None:
    view = TicketView(ref="SUP-7", subject="Awaria", customer_name="Acme", contract_id="acme-sla",
                      contract_kind="sla", tier_name="sla", priority="P1", reasons=("urgent word 'awaria'",),
                      reaction_due=datetime(2026, 7, 1, 10, tzinfo=timezone.utc), minutes_left=90,
                      assigned_to=None, requester="jan@acme.pl", status="new")
    block = header_block(view, ZoneInfo("Europe/Warsaw"), "support+tok@firma.pl")
    assert block["due_local"] == "1 July 2026, 12:00"
    assert block["customer"] == "Acme" and block["minutes_left"] == 90
    assert block["new_ticket_address"] == "support+tok@firma.pl"


@pytest.mark.parametrize("language", ["pl", "en"])
def test_a_notification_is_rendered_with_its_readers_command_help_and_the_marker(language: str) -> None:
    """The header block carries neither the commands' help nor the reply marker (the same in every
    notification of a language, they were ~400 bytes of each outbox row): the renderer gives a
    notification those of its reader's language, and a context that has them (a row queued before)
    renders the same mail."""
    from maild.desk.commands import help_lines
    from maild.outbound.render import PACKAGED, Renderer

    view = TicketView(ref="SUP-7", subject="Awaria", customer_name="Acme", contract_id="acme-sla",
                      contract_kind="sla", tier_name="sla", priority="P1", reasons=(), reaction_due=None,
                      minutes_left=90, assigned_to=None, requester="jan@acme.pl", status="new")
    block = header_block(view, ZoneInfo("Europe/Warsaw"), "support+tok@firma.pl", language)
    assert "commands" not in block and "marker" not in block
    renderer = Renderer(PACKAGED)
    for template in ("notify_new", "notify_reply"):
        context = {**block, "body": "Tekst.", "trimmed": False, "attached": [], "named": [], "event": "follow_up",
                   "author": "jan@acme.pl"}
        _, body = renderer.render(template, language, context)
        assert body.startswith(REPLY_MARKER + "\n")
        assert ", ".join(help_lines(language)) in body.replace("\n  ", " "), body
        stored = {**context, "commands": help_lines(language), "marker": REPLY_MARKER}
        assert renderer.render(template, language, stored) == renderer.render(template, language, context)


def _view(priority: str, *reasons: str) -> TicketView:
    return TicketView(ref="SUP-7", subject="JPK", customer_name="Acme", contract_id="acme-sla",
                      contract_kind="sla", tier_name="sla", priority=priority,
                      reasons=("known customer acme (sla)", "tier sla: sla contract", *reasons),
                      reaction_due=None, minutes_left=90, assigned_to=None, requester="jan@acme.pl", status="new")


def test_the_header_block_gives_the_prioritys_reason_in_the_consultants_language() -> None:
    warsaw, windows = ZoneInfo("Europe/Warsaw"), default_peak_windows()
    urgent = _view("P1", "P1: urgent words 'pilne', 'awaria'")
    assert header_block(urgent, warsaw, "a", "pl", windows)["reasons"] == [
        "w wiadomości pilne słowa: „pilne”, „awaria”"]
    assert header_block(urgent, warsaw, "a", "en", windows)["reasons"] == ["urgent words: “pilne”, “awaria”"]
    peak = _view("P2", "P2: peak period year_end, topic 'zamknięcie roku'")
    assert header_block(peak, warsaw, "a", "pl", windows)["reasons"] == [
        "temat „zamknięcie roku” w okresie szczytu: zamknięcie roku"]
    assert header_block(peak, warsaw, "a", "en", windows)["reasons"] == [
        "topic “zamknięcie roku” in a peak period: year-end closing"]
    assert header_block(_view("P3", "P3: routine"), warsaw, "a", "pl", windows)["reasons"] == ["zwykła sprawa"]
    # a long period's label is cut, the topic is not
    [vat] = header_block(_view("P2", "P2: peak period zus, topic 'ZUS', 'składka'"), warsaw, "a", "pl",
                         windows)["reasons"]
    assert vat.startswith("temat „ZUS”, „składka” w okresie szczytu: deklaracje") and len(vat) == 96
    # a consultant's #priority P1 on a ticket maild ranked P3: maild's P3 line no longer explains it
    assert header_block(_view("P1", "P3: routine"), warsaw, "a", "pl", windows)["reasons"] == []
    # a consultant's own words read as written
    assert header_block(_view("P1", "P1: produkcja stoi"), warsaw, "a", "en", windows)["reasons"] == [
        "produkcja stoi"]


def test_cut_at_marker_keeps_only_what_the_consultant_wrote() -> None:
    assert cut_at_marker(f"Done, see attached.\n\n{REPLY_MARKER}\nNew ticket SUP-1\n...") == "Done, see attached.\n"
    assert cut_at_marker(f"Done.\n> {REPLY_MARKER}\n> header") == "Done.\n"
    assert cut_at_marker("No marker here.\n") == "No marker here.\n"
