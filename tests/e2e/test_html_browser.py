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
