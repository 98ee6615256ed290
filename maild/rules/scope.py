"""Scope of work: the five services of the offer, their Polish and English names, and a guess.

The stored value is the English key (``training``); consultants may write either
language's name (``#time 1h szkolenie``, ``#scope rozwój``), customers read the name
in their language on statements. A new ticket gets a scope guessed from its text,
which a consultant changes with ``#scope`` when the guess is wrong.

Pure: text in, a scope out.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal, get_args

from maild.rules.peak import fold_marks
from maild.rules.wording import reader_language

Scope = Literal["consultation", "installation", "training", "incident", "development"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
UNSPECIFIED = "unspecified"

NAMES: dict[str, dict[str, str]] = {
    "consultation": {"pl": "konsultacja", "en": "consultation"},
    "installation": {"pl": "instalacja", "en": "installation"},
    "training": {"pl": "szkolenie", "en": "training"},
    "incident": {"pl": "rozwiązanie problemu", "en": "problem"},
    "development": {"pl": "rozwój (nowe zastosowania, wydruki, raporty)", "en": "development"},
    UNSPECIFIED: {"pl": "bez określonego zakresu", "en": "not specified"},
}

# Words a consultant may write for a scope, in either language, with or without Polish letters.
_ALIASES: dict[str, Scope] = {
    **{scope: scope for scope in SCOPES},
    "konsultacja": "consultation",
    "instalacja": "installation", "install": "installation",
    "szkolenie": "training",
    "problem": "incident", "rozwiązanie": "incident", "rozwiazanie": "incident", "incydent": "incident",
    "awaria": "incident",
    "rozwój": "development", "rozwoj": "development",
}


# The one word per scope the commands' help shows, in the reader's language (a Polish consultant read
# the English "#scope consultation|installation|..."): ``parse_scope`` takes both languages' words
# from anyone, and the scope stored is the key.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "pl": ("konsultacja", "instalacja", "szkolenie", "problem", "rozwój"),
    "en": ("consultation", "installation", "training", "problem", "development"),
}


def keywords(language: str = "en") -> tuple[str, ...]:
    """The scopes' command words in ``language``, in ``SCOPES``' order."""
    return KEYWORDS[reader_language(language)]


def parse_scope(word: str) -> Scope | None:
    """The scope a consultant's word names (``szkolenie`` -> ``training``), or None."""
    return _ALIASES.get(word.strip().casefold())


def scope_name(scope: str | None, language: str = "pl") -> str:
    """The scope's name in ``language``; an unknown stored value is shown as it is."""
    names = NAMES.get(scope or UNSPECIFIED)
    if names is None:
        return str(scope)
    return names[reader_language(language)]


def known_words() -> str:
    """The names a consultant may write, for an error message."""
    return ", ".join(f"{NAMES[s]['pl'].split(' (')[0]}/{s}" for s in SCOPES)


# Word stems, case- and diacritic-folded, that point at a scope; the scope with most hits wins,
# ties in the order below (a problem report that mentions a new printout is a problem first).
_CLUES: tuple[tuple[Scope, tuple[str, ...]], ...] = (
    ("incident", ("blad", "bledu", "bledy", "awari", "nie dziala", "nie dzialaja", "nie mozna", "nie moge",
                  "zawiesza", "wywala", "error", "bug", "crash", "not working", "fails", "failed", "broken")),
    ("installation", ("instalac", "zainstal", "aktualizac", "zaktualiz", "nowa wersj", "nowej wersji", "upgrade",
                      "install", "update", "migracj")),
    ("training", ("szkolen", "przeszkol", "instruktaz", "training", "workshop", "warsztat")),
    ("development", ("nowy wydruk", "nowego wydruku", "wydruk", "raport", "zestawieni", "nowe zastosowan",
                     "rozbudow", "dodatek", "modyfikacj", "report", "printout", "new feature", "customi")),
    ("consultation", ("pytanie", "jak ", "czy mozna", "prosze o informacj", "konsultac", "doradz", "question",
                      "how do", "how to", "advice")),
)


def _fold(text: str) -> str:
    # case and marks folded as the peak windows' topic words are (a table per character, not
    # NFKD over the whole text: the marks it would reorder are all dropped), blanks made single
    return " ".join(fold_marks(text).split())


def guess_scope(subject: str, text: str) -> tuple[Scope | None, tuple[str, ...]]:
    """The scope the mail is most likely about and the clues found; (None, ()) with no clue.

    The subject counts twice: it is what the customer chose to say first.
    """
    head = _fold(subject)
    body = _fold(text[:2000])
    best: tuple[int, Scope | None, tuple[str, ...]] = (0, None, ())
    for scope, clues in _CLUES:
        found: list[str] = []
        score = 0
        for clue in clues:
            if clue in head:
                score += 2
            elif clue in body:
                score += 1
            else:
                continue
            found.append(clue.strip())
        if score > best[0]:
            best = (score, scope, tuple(found))
    return best[1], best[2]


@lru_cache(maxsize=1)
def _folds_to() -> dict[str, str]:
    """Each folded letter with every Latin character that folds to it ("l": "lLłŁ..."): a clue is
    found in the folded text, its word is read back from the text as written."""
    into: dict[str, str] = {}
    for code in range(0x20, 0x250):
        ch = chr(code)
        folded = fold_marks(ch)
        if len(folded) == 1 and folded != ch:
            into[folded] = into.get(folded, folded) + ch
    return into


@lru_cache(maxsize=256)
def _clue_pattern(clue: str) -> re.Pattern[str]:
    """A clue as the mail may have written it: any case and marks, any blanks between its words,
    with the rest of the words it begins or ends in; a clue's trailing blank ("jak ") stays a
    word's end."""
    into = _folds_to()
    parts: list[str] = []
    body = clue.rstrip()
    for ch in body:
        if ch.isspace():
            parts.append(r"\s+")
        elif ch in into:
            parts.append("[" + re.escape(into[ch]) + "]")
        else:
            parts.append(re.escape(ch))
    end = r"(?=\s)" if body != clue else r"\w*"
    return re.compile(r"\w*" + "".join(parts) + end)


def clue_words(subject: str, text: str, clues: Sequence[str]) -> tuple[str, ...]:
    """``guess_scope``'s clues as the mail wrote them ("Błąd", "awaria", "nie działa", not the
    stems "blad", "awari", "nie dziala"): the whole words each clue was found in, the subject
    first as the guess reads it, once whatever their case. A clue not found again (a character
    folded into two) is given as the clue."""
    found: dict[str, str] = {}
    body = text[:2000]
    for clue in clues:
        pattern = _clue_pattern(clue)
        match = pattern.search(subject) or pattern.search(body)
        written = " ".join(match.group(0).split()) if match is not None else clue.strip()
        found.setdefault(written.casefold(), written)
    # "wydruk" inside "Nowy wydruk" is the same place read twice
    return tuple(w for key, w in found.items() if not any(key != other and key in other for other in found))


def guess_scope_as_written(subject: str, text: str) -> tuple[Scope | None, tuple[str, ...]]:
    """``guess_scope`` with its clues as the mail wrote them (``clue_words``): what a ticket's reason
    names, found in the parse worker (``intake.facts``) or, for a mail without facts, by the pipeline."""
    scope, clues = guess_scope(subject, text)
    return scope, clue_words(subject, text, clues)
