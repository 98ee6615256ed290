"""Every HTML maild writes, in a real browser: Debian's chromium, headless.

The month report file, a customer's statement and the consultants' digest are
loaded at 800 px and at 375 px (a phone): no console error, every image loaded
(``naturalWidth > 0``) with its alt text, no element wider than the viewport,
and a full-page screenshot kept under ``test-artifacts/``. The mails are checked
as a mail client shows them: the HTML part of the mail the outbox builds, with
each ``cid:`` image resolved to its inline part.
"""
from __future__ import annotations

import base64
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import select

from maild.config import load_config
from maild.outbound.outbox import Sender, build_mail
from maild.outbound.render import Renderer
from maild.storage.models import OutboxRow
from tests.billing.conftest import Month, month  # noqa: F401 - the generated month, as a fixture here too
from tests.servers.chromium import Browser


def resolved_html(raw: bytes) -> str:
    """The mail's HTML part with every cid: reference replaced by its inline part's bytes;
    fails if a reference has no part."""
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    html = html_part.get_content()
    parts = {str(p["Content-ID"]).strip("<>"): p for p in mail.walk() if p["Content-ID"]}
    referenced = re.findall(r'src="cid:([^"]+)"', html)
    assert referenced and set(referenced) == set(parts), (referenced, list(parts))
    for cid in referenced:
        data = base64.b64encode(parts[cid].get_content()).decode("ascii")
        html = html.replace(f'src="cid:{cid}"', f'src="data:{parts[cid].get_content_type()};base64,{data}"')
    return html


def test_month_report_file_in_the_browser(month: Month, browser: Browser, tmp_path: Path) -> None:
    for language in ("en", "pl"):
        page = tmp_path / f"report-{language}.html"
        code, _, err = month.run("report", "month", "--month", "2026-11", "--html", str(page), "--language", language)
        assert code == 0, err
        assert "cid:" not in page.read_text(encoding="utf-8")  # the file stands alone
        browser.check_page(page.as_uri(), f"month-report-{language}")


def test_statement_and_report_mails_in_the_browser(month: Month, browser: Browser, tmp_path: Path) -> None:
    assert month.run("report", "hours", "--month", "2026-11", "--send")[0] == 0
    assert month.run("report", "month", "--month", "2026-11", "--send")[0] == 0
    cfg = load_config(month.config)
    renderer = Renderer(cfg.templates_path)
    sender = Sender(cfg.from_address, cfg.from_name, "maild-test")
    with month.sessions() as session:
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
    seen = set()
    for row in rows:
        raw = build_mail(row, renderer, sender, None, row.created_at)
        page = tmp_path / f"{row.kind}-{row.id}.html"
        page.write_text(resolved_html(raw), encoding="utf-8")
        name = f"{row.kind}-{row.language}-{row.recipients[0].split('@')[1].split('.')[0]}"
        browser.check_page(page.as_uri(), name)
        seen.add((row.kind, row.language))
    assert seen == {("statement", "pl"), ("statement", "en"), ("month_report", "pl"), ("month_report", "en")}


def test_digest_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    from tests.desk.test_digest_html import HOSTILE, NOW, TEMPLATES, digest_rows

    from maild.desk.digest_html import digest_html_part
    from maild.outbound.outbox import PendingMail

    rows = digest_rows()
    for language in ("en", "pl"):
        context = {"day": "2026-12-04", "rows": rows, "overdue": 1, "everything": True, "previous_day": "2026-12-03",
                   "breaches": [{"ref": "SUP-9", "subject": HOSTILE, "customer": "Acme", "assigned_to": "jan@firma.pl"}],
                   "new_ticket_address": "support+abc@firma.pl",
                   "_headers": {"html": digest_html_part(
                       rows, language=language, day="2026-12-04", everything=True, previous_day="2026-12-03",
                       breaches=[{"ref": "SUP-9", "subject": HOSTILE, "customer": "Acme", "assigned_to": ""}])}}
        row = PendingMail(id=1, kind="digest", ticket_id=None, message_id="digest.1@firma.pl",
                          recipients=["anna@firma.pl"], automatic=True, template="digest", language=language,
                          context=context)
        raw = build_mail(row, Renderer(TEMPLATES), Sender("support@firma.pl", "Wsparcie", "maild"), None, NOW)
        mail = message_from_bytes(raw, policy=policy.default)
        html_part = mail.get_body(preferencelist=("html",))
        assert html_part is not None
        page = tmp_path / f"digest-{language}.html"
        page.write_text(html_part.get_content(), encoding="utf-8")
        browser.check_page(page.as_uri(), f"digest-{language}", expect_images=False)
        colours = browser.driver.execute_script(
            "return Array.from(document.querySelectorAll('tbody tr td.left'))"
            ".map(td => getComputedStyle(td).backgroundColor)")
        assert colours[:4] == ["rgb(213, 94, 0)", "rgb(230, 159, 0)", "rgb(240, 228, 66)", "rgb(217, 239, 230)"]


def test_demo_report_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "maild.cli", "demo", "--dir", str(tmp_path / "demo")],
                            cwd=root, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (page,) = (tmp_path / "demo").glob("report-*.html")
    assert str(page) in result.stdout
    browser.check_page(page.as_uri(), "demo-report")
