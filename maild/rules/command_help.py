"""What every consultant notification of a language says alike: the commands' help line and the reply marker.

The commands themselves (their parsers, what they do to a ticket) are the desk's
(``maild.desk.commands``); their help, in Polish and English, is data kept here, below
both the desk and the outbound mail, so that a notification gets it when it is rendered
(``outbound.render``: ``NOTIFICATION_TEMPLATES``) instead of carrying it in its outbox row.
Queued into every notification's stored context it was ~360 bytes of JSON a row, the same
in each (half of a working day's 17,426 mails per 10,000 read): made, copied into the
database, WAL-logged twice (the insert and the sent mark) and parsed back per mail.

A command registered later (``desk.commands.register``) adds its help here (``add``);
the built-in ones are here from the start, so a process that renders notifications
without ever loading the desk (a daemon whose mailbox is empty, draining rows an earlier
run queued) has their help.
"""
from __future__ import annotations

from maild.rules.scope import keywords
from maild.rules.wording import reader_language

__all__ = ["REPLY_MARKER", "STATUS_WORDS_EN", "STATUS_WORDS_PL", "NOTIFICATION_TEMPLATES", "BUILT_IN", "add",
           "help_lines", "notification_values"]

# The first line of every notification body. A consultant's client quotes the
# notification below the reply; whatever a client fails to mark as quoted, this
# line still ends the consultant's own text, so the header block and the
# customer's text never travel back to the customer.
REPLY_MARKER = "## ------ reply above this line / odpowiedz nad tą linią ------ ##"

# The ticket statuses as ``#status`` takes them: the stored keys (``desk.commands.TicketStatus``, which a
# test holds equal) and their Polish words, as a Polish mail names them ("otwarte", "czeka na klienta": one
# word here), in the same order: the Polish help lists them, and a status is taken in either language.
STATUS_WORDS_EN: tuple[str, ...] = ("open", "waiting", "resolved", "closed")
STATUS_WORDS_PL: tuple[str, ...] = ("otwarte", "czeka", "rozwiązane", "zamknięte")

# The templates rendered with ``notification_values`` under their context (a row's own values win:
# rows queued before carried them).
NOTIFICATION_TEMPLATES = frozenset({"notify_new", "notify_reply"})

# The built-in commands' help, in the commands' order: (English, Polish). The command names and their
# fixed values stay as they are written in either language, the placeholders and notes are translated.
BUILT_IN: dict[str, tuple[str, str]] = {
    "time": ("#time 1h30m [scope] [note]", "#time 1h30m [zakres] [notatka]"),
    "status": ("#status " + "|".join(STATUS_WORDS_EN), "#status " + "|".join(STATUS_WORDS_PL)),
    "assign": ("#assign <e-mail or name>", "#assign <e-mail lub imię>"),
    "priority": ("#priority P1..P4 <reason>", "#priority P1..P4 <powód>"),
    "scope": ("#scope " + "|".join(keywords("en")), "#scope " + "|".join(keywords("pl"))),
    "internal": ("#internal", "#internal"),
    "verify": ("#verify", "#verify"),
    "away": ("#away 2026-12-21..2027-01-03 [note]", "#away 2026-12-21..2027-01-03 [notatka]"),
    "back": ("#back", "#back"),
    "take": ("#take", "#take"),
    "customer": ("#customer <id or e-mail> (first line of a new mail)",
                 "#customer <id lub e-mail> (w pierwszej linii nowej wiadomości)"),
}

_HELP: dict[str, tuple[str, str]] = dict(BUILT_IN)
# per language: the lines, and the values a notification is rendered with (made again after ``add``)
_MADE: dict[str, tuple[list[str], dict[str, object]]] = {}


def add(name: str, english: str, polish: str = "") -> None:
    """A registered command's help (``desk.commands.register``), listed after those before it."""
    _HELP[name] = (english, polish or english)
    _MADE.clear()


def _made(language: str) -> tuple[list[str], dict[str, object]]:
    made = _MADE.get(language)
    if made is None:
        polish = reader_language(language) == "pl"
        lines = [polish_line if polish else english for english, polish_line in _HELP.values()]
        made = _MADE[language] = (lines, {"commands": lines, "marker": REPLY_MARKER})
    return made


def help_lines(language: str = "en") -> list[str]:
    """One line per command, in the commands' order, in the reader's ``language`` (a new list)."""
    return list(_made(language)[0])


def notification_values(language: str) -> dict[str, object]:
    """The values a consultant notification in ``language`` is rendered with under its own: the commands'
    help lines (``commands``) and the reply marker (``marker``). Shared: not to be changed."""
    return _made(language)[1]
