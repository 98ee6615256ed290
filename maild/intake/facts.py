"""What the pipeline reads in a mail's words, found in the parse worker.

Screening's out-of-office and challenge patterns, the scope guess and the text's
part of prioritising (urgent words, the peak windows' topic words) depend on the
mail's subject and text alone (and on the config's words), not on the database.
The parse worker finds them right after it parses and splits the mail, on the
other core, so the daemon's main process, which stores the batches and bounds the
reading, does not search every mail's text again (issue 19: about a sixth of its
CPU per mail).

They are a shortcut, never a second source of truth: each is the very function
the stage would call (``text_flags``, ``guess_scope_as_written``, ``text_signals``) on the
same inputs, and the stage calls it itself when the facts are missing (a mail
parsed in process, a split that failed) or were found with other words than the
context's (``ReadingRules.key``).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from maild.config import Config
from maild.rules.peak import PeakWindow
from maild.rules.prioritise import TextSignals, text_signals
from maild.rules.scope import Scope, guess_scope_as_written


# the words of out-of-office answers and of challenge/response systems (``intake.screen``)
_OOO_SUBJECT = re.compile(
    r"^\W*(?:out of (?:the )?office|automatic reply|automatische antwort|auto(?:matic)?[ -]?reply|"
    r"auto[ -]?respon[a-z]*|auto:|automatyczna odpowied[źz]|odpowied[źz] automatyczna|"
    r"nieobecno[śs][ćc]|abwesenheit|i am out of the office|away from (?:the )?office|"
    r"vacation reply|urlaub|r[ée]ponse automatique|absence)"
    r"|\(automatic response\)|\bis out of the office\b|\bout of office autoreply\b",
    re.IGNORECASE,
)
_OOO_BODY = re.compile(
    r"out of (?:the )?office|on (?:annual )?(?:leave|vacation|holiday)|away (?:from|until)|"
    r"currently away|nieobecn|urlop|abwesend|im urlaub|returning (?:on|to the office)",
    re.IGNORECASE,
)
_CHALLENGE_BODY = re.compile(
    r"added to the recipient's allowed list|this account is protected by|"
    r"you are now authorized to post|authorization required to post|add yourself to my guest list|"
    r"your (?:message|email) (?:has been|was) (?:waitlisted|held pending)|"
    r"verify (?:that )?you are a (?:real )?(?:person|human)|please confirm (?:that )?you sent",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TextFlags:
    """What screening reads in a mail's subject and text (not its headers): found once per mail,
    in the parse worker (``text_flags``), so the process that stores the batch does not search again."""

    ooo_subject: bool  # an out-of-office subject
    ooo_body: bool  # out-of-office words at the start of the text (looked for in an auto-reply only)
    challenge: bool  # a challenge/response system's text


def auto_submitted(headers: Mapping[str, str]) -> str | None:
    """The Auto-Submitted keyword (RFC 3834), lower case; None without the header."""
    value = headers.get("auto-submitted")
    return None if value is None else value.split(";", 1)[0].strip().lower()


def text_flags(subject: str, text: str, headers: Mapping[str, str]) -> TextFlags:
    """``headers``: the out-of-office words are looked for in the text of an auto-reply only (the
    one case screening asks), a search as long as the challenge one saved on every other mail."""
    return TextFlags(bool(_OOO_SUBJECT.search(subject)),
                     auto_submitted(headers) == "auto-replied" and bool(_OOO_BODY.search(text[:3000])),
                     bool(_CHALLENGE_BODY.search(text[:5000])))


@dataclass(frozen=True)
class ReadingRules:
    """The config's words the parse worker looks for in each mail; ``key`` names them."""

    urgent_words: tuple[str, ...]
    peak_windows: tuple[PeakWindow, ...]
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        words = repr((self.urgent_words, [(w.name, w.topic_words) for w in self.peak_windows]))
        object.__setattr__(self, "key", hashlib.blake2b(words.encode(), digest_size=12).hexdigest())

    @classmethod
    def of(cls, config: Config) -> ReadingRules:
        return cls(config.support.urgent_words, config.peak_windows)


@dataclass(frozen=True)
class MailFacts:
    """One mail's facts: ``flags`` of its subject, whole text and headers; ``scope``, ``clues`` (the words
    it was guessed from, as the mail wrote them) and ``signals`` of its subject and new text (the split's
    first part), with the rules ``rules_key``."""

    rules_key: str
    flags: TextFlags
    scope: Scope | None
    clues: tuple[str, ...]
    signals: TextSignals

    def for_rules(self, rules: ReadingRules) -> MailFacts | None:
        """These facts if they were found with ``rules``' words, else None (found again by the caller)."""
        return self if self.rules_key == rules.key else None


def mail_facts(subject: str, text: str, new_text: str, headers: Mapping[str, str], rules: ReadingRules) -> MailFacts:
    scope, clues = guess_scope_as_written(subject, new_text)  # in the parse worker, off the main process
    return MailFacts(rules.key, text_flags(subject, text, headers), scope, clues,
                     text_signals(subject, new_text, rules.urgent_words, rules.peak_windows))
