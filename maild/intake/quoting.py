"""Separate what a person just wrote from the history their client quoted below it.

Tickets store and relay only the new part; the quoted history is already on
the ticket. Recognised, in the forms real clients produce in English, Polish
and German:

* ``>``-quoted lines (and the attribution line above them: "On <date>, <name>
  wrote:", "W dniu <date> <name> pisze:", "<name> napisał(a):", "Dnia ...
  napisał:", Apple Mail's "Wiadomość napisana przez <name> w dniu <date>, o
  godz. <time>:", "Am ... schrieb ...:", wrapped over two lines as Gmail does;
  also the Russian and French verbs, which cost nothing);
* Outlook's unquoted history: "-----Original Message-----" and its Polish and
  German forms, the header block "From: / Sent: / To: / Subject:" ("Od: /
  Wysłano: / Do: / Temat:", "Von: / Gesendet: / An: / Betreff:") and the
  "________________________________" rule above it.

``>``-quoted blocks are cut out wherever they are, so bottom-posted and
interleaved replies keep every line the person wrote. Unquoted history
(Outlook style) has no end marker: everything from its start on is history.
An attribution line followed by unquoted text counts as history only if it
carries a date (a time or a year), so "On Monday I wrote:" in a sentence stays.

Forward markers ("---------- Forwarded message ---------") are deliberately
not history: a customer forwarding an error report to support means the
forwarded text as the request.

Every check looks at a bounded number of lines of bounded length, so a 1 MB
body is split in linear time whatever it contains.
"""
from __future__ import annotations

import re

__all__ = ["split_reply"]

# Attribution and header lines are short; longer lines are body text and are
# not run through the patterns below (this also bounds the work per line).
_MAX_MARKER_LEN = 400
_HEADER_BLOCK_LINES = 8
_LOOKAHEAD_BLANKS = 4

_QUOTED = re.compile(r"[ \t]{0,3}>")

_ATTRIBUTION = re.compile(
    r"""
    ^\s*
    (?: wiadomość\s+napisana\s+przez\s.*:
      | \S.*?
        (?: \b(?:wrote|pisze|napisał(?:\(a\)|a)?|написал(?:\(а\)|а)?|a\s+écrit)\s*:
          | \bschrieb\b.*:
        )
    )\s*$
    """,
    re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTION_OPENER = re.compile(r"\s*(?:On|W\s+dniu|Dnia|Am|Wiadomość\s+napisana)\s", re.IGNORECASE)
_DATED = re.compile(r"[0-9]{1,2}:[0-9]{2}|\b(?:19|20)[0-9]{2}\b")

_ORIGINAL_MESSAGE = re.compile(
    r"""
    \s*-{3,}\s*
    (?: original\s+message | oryginalna\s+wiadomość | wiadomość\s+oryginalna
      | ursprüngliche\s+nachricht | originalnachricht | message\s+d'origine )
    \s*-{3,}\s*
    """,
    re.IGNORECASE | re.VERBOSE,
)
_RULE = re.compile(r"\s*_{20,}\s*")
_HEADER_FROM = re.compile(r"\s*\*?(?:From|Od|Von|De)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"\s*\*?(?:Sent|Date|Wysłano|Data|Gesendet|Datum|Envoyé)\s*:", re.IGNORECASE
)
_HEADER_SUBJECT = re.compile(r"\s*\*?(?:Subject|Temat|Betreff|Objet)\s*:", re.IGNORECASE)


def _short(line: str) -> bool:
    return len(line) <= _MAX_MARKER_LEN


def _next_non_blank(lines: list[str], start: int) -> int | None:
    for index in range(start, min(start + _LOOKAHEAD_BLANKS + 1, len(lines))):
        if lines[index].strip():
            return index
    return None


# Every marker pattern needs one of these in the line, so a body line without them (most lines)
# is not run through the patterns: an attribution and a header line a colon, the "Original
# Message" line three dashes, the rule twenty underscores.
_COLON = ":"
_DASHES = "---"
_UNDERSCORES = "_" * 20


def _attribution_length(lines: list[str], index: int) -> tuple[int, bool]:
    """How many lines (0, 1 or 2) an attribution at ``index`` spans, and whether it is dated."""
    line = lines[index]
    if not _short(line) or not line.strip():
        return 0, False
    colon = _COLON in line
    if colon and _ATTRIBUTION.match(line):
        return 1, _DATED.search(line) is not None
    if index + 1 >= len(lines):
        return 0, False
    following = lines[index + 1]
    if not (colon or _COLON in following):
        return 0, False
    if not following.strip() or not _short(following) or _QUOTED.match(following):
        return 0, False
    if not (_ATTRIBUTION_OPENER.match(line) or _DATED.search(line)):
        return 0, False
    joined = f"{line.rstrip()} {following.strip()}"
    if _ATTRIBUTION.match(joined):
        return 2, _DATED.search(joined) is not None
    return 0, False


def _is_header_block(lines: list[str], index: int) -> bool:
    if not _short(lines[index]) or _COLON not in lines[index] or not _HEADER_FROM.match(lines[index]):
        return False
    sent = subject = False
    for line in lines[index + 1 : index + 1 + _HEADER_BLOCK_LINES]:
        if not _short(line):
            break
        sent = sent or _HEADER_SENT.match(line) is not None
        subject = subject or _HEADER_SUBJECT.match(line) is not None
        if sent and subject:
            return True
    return False


def _starts_unquoted_history(lines: list[str], index: int) -> bool:
    line = lines[index]
    if not _short(line):
        return False
    if _DASHES in line and _ORIGINAL_MESSAGE.fullmatch(line):
        return True
    if _UNDERSCORES in line and _RULE.fullmatch(line):
        following = _next_non_blank(lines, index + 1)
        return following is not None and _HEADER_FROM.match(lines[following]) is not None
    return _is_header_block(lines, index)


def _join_trimmed(lines: list[str]) -> str:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return "\n".join(lines[start:end])


def split_reply(text: str) -> tuple[str, str]:
    """Return (new part, quoted history).

    If no history is recognised the text comes back unchanged as the new part.
    Otherwise blank lines at the edges of both parts are dropped; a signature
    ("-- ") the person wrote above the history stays in the new part.
    """
    lines = [raw.rstrip("\r") for raw in text.split("\n")]
    new: list[str] = []
    quoted: list[str] = []
    index = 0
    count = len(lines)
    while index < count:
        line = lines[index]
        if _QUOTED.match(line):
            end = index
            while end < count and (_QUOTED.match(lines[end]) or not lines[end].strip()):
                end += 1
            quoted.extend(lines[index:end])
            index = end
            continue
        span, dated = _attribution_length(lines, index)
        if span:
            following = _next_non_blank(lines, index + span)
            if following is not None and _QUOTED.match(lines[following]):
                quoted.extend(lines[index:following])
                index = following
                continue
            if dated:
                quoted.extend(lines[index:])
                break
        if _starts_unquoted_history(lines, index):
            quoted.extend(lines[index:])
            break
        new.append(line)
        index += 1
    if not quoted:
        return text, ""
    return _join_trimmed(new), _join_trimmed(quoted)

