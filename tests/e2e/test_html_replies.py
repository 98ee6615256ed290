"""An HTML-only consultant reply: what the client would not show is not read (issue 12).

Commands quoted in a <blockquote> (how mail clients quote the mail being answered)
are history, not the consultant's; text hidden with display:none is not there.
Each mail carries a visible command too, which must still be applied.
"""
from __future__ import annotations

from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.storage.models import LedgerRow, MessageRow, Ticket
from tests.helpers import consultant_to, deliver, maildir_source, make_mail, write_config


def _html_reply(html: str, msgid: str, to: str = "support@firma.pl") -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"] = "Anna Nowak <anna@firma.pl>", to
    mail["Subject"], mail["Message-ID"] = "Re: [SUP-1] Drukarka", msgid
    mail.set_content(html, subtype="html")
    return mail.as_bytes()


# no attribution line ("... wrote:") that would mark the history by itself
QUOTED = ('<div>#time 30m</div><blockquote type="cite"><div>#status closed</div>'
          "<div>#priority P4 z cytatu</div><div>#time 24h</div></blockquote>")
HIDDEN = ('<div style="display: none !important; max-height: 0">#status closed<br>#time 24h</div>'
          "<div>#time 30m</div><div>Sprawdzone, działa.</div>")


@pytest.mark.parametrize("html", [QUOTED, HIDDEN], ids=["quoted-blockquote", "hidden-text"])
def test_commands_the_reader_does_not_see_are_not_applied(tmp_path: Path, smtp_sink: Any, html: str) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    box = tmp_path / "Maildir"
    deliver(box, make_mail(sender="jan@acme.pl", subject="Drukarka", msgid="<d1@acme.pl>"), datetime.now(timezone.utc))
    Daemon(load_config(config)).run_once()
    deliver(box, _html_reply(html, "<d2@firma.pl>", consultant_to(config)), datetime.now(timezone.utc))
    daemon = Daemon(load_config(config))
    daemon.run_once()
    with daemon.sessions() as session:
        ticket = session.get(Ticket, 1)
        assert ticket is not None
        minutes = [row.minutes for row in session.scalars(select(LedgerRow).where(LedgerRow.ticket_id == 1))]
        assert minutes == [30], "the visible #time was applied, the quoted or hidden one not"
        assert ticket.status != "closed" and ticket.priority != "P4"
        reply = session.scalars(select(MessageRow).where(MessageRow.message_id == "d2@firma.pl")).one()
        assert "#status closed" not in reply.text_new
        if html is QUOTED:
            assert "#status closed" in reply.text_quoted, "kept on the ticket as quoted history"
