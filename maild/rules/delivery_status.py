"""What a delivery report's status code means, in the words of the consultant who reads it.

A bounce notice shows the enhanced status code (RFC 3463: ``class.subject.detail``, e.g.
``5.1.1``) and the relay's own diagnostic text, which stays as the relay wrote it; this table
adds a short explanation in the reader's language: the class (2 success, 4 a temporary
failure the sending side may retry, 5 a permanent one), then the detail when it is one of the
common ones, else the subject (the part of the path that failed).

Pure: a code in, a sentence out; "" for anything that is not such a code.
"""
from __future__ import annotations

import re

from maild.rules.wording import reader_language

_CODE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")

# (Polish, English)
_CLASSES = {
    "2": ("doręczono", "delivered"),
    "4": ("błąd przejściowy", "temporary failure"),
    "5": ("błąd trwały", "permanent failure"),
}
# RFC 3463 section 3: the subject says which part of the delivery failed
_SUBJECTS = {
    "0": ("przyczyna nieokreślona", "cause not specified"),
    "1": ("problem z adresem odbiorcy", "a problem with the recipient's address"),
    "2": ("problem ze skrzynką odbiorcy", "a problem with the recipient's mailbox"),
    "3": ("problem z serwerem pocztowym odbiorcy", "a problem with the receiving mail system"),
    "4": ("problem z siecią lub trasą do serwera odbiorcy", "a network or routing problem"),
    "5": ("błąd w rozmowie serwerów pocztowych", "a mail protocol error"),
    "6": ("problem z treścią lub formatem wiadomości", "a problem with the message's content or format"),
    "7": ("odmowa ze względów bezpieczeństwa lub zasad serwera", "refused for security or policy reasons"),
}
# the details a consultant meets most (RFC 3463 section 3; 1.10 from RFC 7505)
_DETAILS = {
    "1.1": ("nie ma takiej skrzynki (adres odbiorcy nie istnieje)",
            "no such mailbox (the recipient's address does not exist)"),
    "1.2": ("domena odbiorcy nie istnieje lub nie przyjmuje poczty",
            "the recipient's domain does not exist or takes no mail"),
    "1.3": ("adres odbiorcy jest błędnie zapisany", "the recipient's address is malformed"),
    "1.6": ("skrzynka odbiorcy została przeniesiona", "the recipient's mailbox has moved"),
    "1.10": ("domena odbiorcy nie przyjmuje poczty", "the recipient's domain takes no mail"),
    "2.1": ("skrzynka odbiorcy jest wyłączona", "the recipient's mailbox is disabled"),
    "2.2": ("skrzynka odbiorcy jest pełna", "the recipient's mailbox is full"),
    "2.3": ("wiadomość jest za duża dla skrzynki odbiorcy", "the mail is too large for the recipient's mailbox"),
    "3.4": ("wiadomość jest za duża dla serwera odbiorcy", "the mail is too large for the receiving system"),
    "4.1": ("serwer odbiorcy nie odpowiada", "the receiving server does not answer"),
    "4.4": ("nie da się ustalić drogi do serwera odbiorcy", "no route to the receiving server"),
    "4.7": ("minął czas na doręczenie, serwer przestał ponawiać próby",
            "the time allowed for delivery ran out, the server stopped retrying"),
    "7.1": ("serwer odbiorcy odmówił przyjęcia wiadomości ze względu na swoje zasady",
            "the receiving server refused the mail by its policy"),
}


def explain_status(code: str, language: str = "pl") -> str:
    """``5.2.2`` -> ``błąd trwały: skrzynka odbiorcy jest pełna`` / ``permanent failure: the recipient's
    mailbox is full``; an unknown detail is explained by its subject, a code of no known class by nothing."""
    found = _CODE.fullmatch(code.strip())
    if found is None:
        return ""
    kind, subject, detail = found.groups()
    at = 0 if reader_language(language) == "pl" else 1
    named = _DETAILS.get(f"{subject}.{detail}") or _SUBJECTS.get(subject)
    return _CLASSES[kind][at] + (f": {named[at]}" if named else "")
