"""The digest's HTML part: urgency colours, escaping, and the mail it makes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from maild.desk.digest import DigestTicket, digest_lines, left_text
from maild.desk.digest_html import digest_html_part, render_digest_html, seconds_left, urgency
from maild.outbound.outbox import PendingMail, Sender, build_mail
from maild.outbound.render import Renderer

UTC = timezone.utc
NOW = datetime(2026, 12, 4, 7, 0, tzinfo=UTC)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def queue() -> list[DigestTicket]:
    def ticket(n: int, due_minutes: int | None, assigned: str | None = None, customer: str = "Acme",
               subject: str = "Awaria wydruku") -> DigestTicket:
        due = NOW + timedelta(minutes=due_minutes) if due_minutes is not None else None
        return DigestTicket(ref=f"SUP-{n}", subject=subject, customer=customer, tier="sla", priority="P1",
                            status="open", assigned_to=assigned, created_at=NOW - timedelta(hours=n),
                            reaction_due=due, breached_at=None)

    return [ticket(1, -90), ticket(2, 45, "anna@firma.pl"), ticket(3, 5 * 60), ticket(4, 3 * 24 * 60),
            ticket(5, None, customer=HOSTILE + " Sp. j.", subject=HOSTILE)]


def digest_rows() -> list[dict[str, Any]]:
    return digest_lines(queue(), NOW, who="anna@firma.pl", everything=True)


def test_time_left_is_coloured_by_urgency() -> None:
    rows = digest_rows()
    assert [urgency(r) for r in rows] == ["overdue", "soon", "today", "later", "none"]
    html = render_digest_html(rows, language="en", day="2026-12-04", everything=True)
    classes = [c for c in ("overdue", "soon", "today", "later", "none") if f'<tr class="{c}">' in html]
    assert classes == ["overdue", "soon", "today", "later", "none"]
    assert "OVERDUE 1 h 30 min" in html  # the urgency in words as well as in colour
    assert "Kolejka wsparcia" in render_digest_html(rows, language="pl", day="2026-12-04", everything=False)


@given(st.integers(min_value=-10 * 24 * 3600, max_value=10 * 24 * 3600))
def test_time_left_read_back_from_the_text_row(seconds: int) -> None:
    """A row without ``seconds_left`` (an older digest) is placed from its ``left`` text, which keeps
    minutes below a day and hours above."""
    row = {"left": left_text(seconds), "overdue": seconds <= 0}
    read = seconds_left(row)
    # as the English digest wrote it before it took the notifications' units
    minutes = abs(seconds) // 60
    days, hours = divmod(minutes // 60, 24)
    old = f"{days}d {hours}h" if days else f"{hours}h {minutes % 60:02d}m"
    old_read = seconds_left({"left": ("-" if seconds < 0 else "") + old, "overdue": seconds <= 0})
    assert old_read is not None and abs(old_read - seconds) < (3600 if abs(seconds) >= 24 * 3600 else 60)
    assert read is not None
    assert abs(read - seconds) < (3600 if abs(seconds) >= 24 * 3600 else 60)
    if all(abs(abs(seconds) - edge) >= 3600 for edge in (0, 2 * 3600, 8 * 3600)):
        assert urgency(row) == urgency({**row, "seconds_left": seconds})


class Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs


def test_customer_names_and_subjects_are_escaped() -> None:
    html = render_digest_html(digest_rows(), language="en", day="2026-12-04", everything=True,
                              breaches=[{"ref": "SUP-9", "subject": HOSTILE, "customer": HOSTILE, "assigned_to": ""}],
                              previous_day="2026-12-03")
    page = Markup()
    page.feed(html)
    assert "script" not in page.tags and "img" not in page.tags
    assert not [name for name, _ in page.attributes if name.startswith("on")]
    assert html.count("&lt;script&gt;alert(2)&lt;/script&gt;") == 4  # name and subject, in the queue and breaches


def test_digest_mail_is_multipart_alternative() -> None:
    rows = digest_rows()
    context = {"day": "2026-12-04", "rows": rows, "overdue": 1, "everything": True, "breaches": [],
               "previous_day": "2026-12-03", "new_ticket_address": "support+abc@firma.pl",
               "_headers": {"html": digest_html_part(rows, language="en", day="2026-12-04", everything=True)}}
    row = PendingMail(id=1, kind="digest", ticket_id=None, message_id="digest.1@firma.pl",
                      recipients=["anna@firma.pl"], automatic=True, template="digest", language="en", context=context)
    raw = build_mail(row, Renderer(TEMPLATES), Sender("support@firma.pl", "Wsparcie", "maild"), None, NOW)
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail.get_content_type() == "multipart/alternative"
    plain, html = mail.get_payload()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain" and "SUP-1" in plain.get_content()
    assert html.get_content_type() == "text/html" and '<tr class="overdue">' in html.get_content()


def test_a_polish_digest_names_the_statuses_in_polish_in_both_parts() -> None:
    rows = [{**row, "status": status} for row, status in zip(digest_rows(), ("new", "open", "waiting", "open", "new"))]
    context = {"day": "2026-12-04", "rows": rows, "overdue": 1, "everything": True, "breaches": [],
               "previous_day": "2026-12-03", "new_ticket_address": "support+abc@firma.pl"}
    _, text = Renderer(TEMPLATES).render("digest", "pl", context)
    html = render_digest_html(rows, language="pl", day="2026-12-04", everything=True)
    for part in (text, html):
        assert "czeka na klienta" in part and "otwarte" in part and "nowe" in part
        assert not any(f" {word} " in part or f"· {word}<" in part for word in ("new", "open", "waiting"))
    english = render_digest_html(rows, language="en", day="2026-12-04", everything=True)
    assert "· waiting<" in english and "czeka" not in english



def test_a_polish_digest_names_the_tiers_in_polish_in_both_parts() -> None:
    tiers = ("sla", "prepaid", "occasional", "unverified", "prepaid")
    rows = [{**row, "tier": tier} for row, tier in zip(digest_rows(), tiers)]
    context = {"day": "2026-12-04", "rows": rows, "overdue": 1, "everything": True, "breaches": [],
               "previous_day": "2026-12-03", "new_ticket_address": "support+abc@firma.pl"}
    _, text = Renderer(TEMPLATES).render("digest", "pl", context)
    html = render_digest_html(rows, language="pl", day="2026-12-04", everything=True)
    for part in (text, html):
        assert all(word in part for word in ("SLA P1", "pakiet P1", "okazjonalne P1", "niezweryfikowane P1")), part
        assert not any(word in part for word in ("prepaid", "occasional", "unverified"))
    english = render_digest_html(rows, language="en", day="2026-12-04", everything=True)
    assert "prepaid P1" in english and "pakiet" not in english
