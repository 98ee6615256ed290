"""HTML mail body -> readable plain text.

Consultants read tickets as text and replies are quoted as text, so an HTML-only
mail must become something a person can read: paragraphs stay paragraphs, list
items get a bullet, and a link keeps its target when the visible text hides it
(a "click here" link then shows where it really goes). What a mail client would
not show is not shown here either: text hidden with ``display:none`` (and its
kin) is dropped, and a ``<blockquote>`` (how Gmail, Apple Mail and Thunderbird
quote the mail being answered) comes out ``>``-quoted, so that ``split_reply``
files it as quoted history and a consultant's commands are read only from what
the consultant wrote.

The standard library's ``html.parser`` was the first choice, but on Python 3.11
it is quadratic on unclosed constructs (``"<!--" * 200_000`` took minutes), and
mail is hostile input. So this is a small tokenizer of its own, built on
``str.find`` and anchored regexes. Linear time is kept by three rules: every scan
either consumes what it read or ends the parse; a search that found nothing is
not repeated (``_Ahead``); and no step looks back over more than a bounded tail
of the output. Memory is bounded too: the input is cut at a multiple of the
output cap, output stops growing at the cap, and small pieces of output are
joined as they pile up.
"""
from __future__ import annotations

import html as _html
import re

__all__ = ["html_to_text"]

_BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "ul", "ol", "dl", "dt", "dd",
    "blockquote", "pre", "address", "form", "fieldset", "hr", "center", "body", "html",
    "caption", "figure", "figcaption",
})
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "pre", "hr"})
# Elements that have no content and no end tag: hiding one hides nothing after it.
_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                        "param", "source", "track", "wbr"})
# Hidden elements a browser ends without their end tag: at the start of one of
# these, or at the end of one of those that contain them.
_ENDED_BY_OPEN = {"li": frozenset({"li"}), "dt": frozenset({"dt", "dd"}), "dd": frozenset({"dt", "dd"}),
                  "td": frozenset({"td", "th", "tr"}), "th": frozenset({"td", "th", "tr"}),
                  "tr": frozenset({"tr"}), "option": frozenset({"option"}), "p": _BLOCK_TAGS}
_ENDED_BY_CLOSE = {"li": frozenset({"ul", "ol"}), "dt": frozenset({"dl"}), "dd": frozenset({"dl"}),
                   "td": frozenset({"tr", "table"}), "th": frozenset({"tr", "table"}),
                   "tr": frozenset({"table"}), "option": frozenset({"select"}), "p": _BLOCK_TAGS}
# Elements whose content is never shown; their end is searched for directly.
_RAW_SKIP_TAGS = frozenset({"script", "style", "title", "textarea", "xmp", "noscript", "template"})
_RAW_END = {tag: re.compile(r"</" + tag + r"\b[^>]*>", re.IGNORECASE) for tag in _RAW_SKIP_TAGS}
_HEAD_END = re.compile(r"</head\s*>|<body\b", re.IGNORECASE)
_SPACE_RE = re.compile(r"[ \t\r\n\f\v\u00a0\u200b\u200c\u200d\ufeff]+")
_MANY_BLANK_RE = re.compile(r"\n{3,}")
_TAG_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9:_-]*+")
# Quote-aware end of a tag; the alternatives are disjoint, so a failed match
# costs one pass over what it read.
_TAG_END_RE = re.compile(r"""(?:[^"'>]++|"[^"]*+"|'[^']*+')*+>""")
# An attribute name starts only where no name character precedes it, so that a
# long run of name characters without "=" is read once, not once per position.
_ATTR_RE = re.compile(r"""(?<![-a-zA-Z0-9_:.])([a-zA-Z_:][-a-zA-Z0-9_:.]*+)\s*+=\s*+("[^"]*+"|'[^']*+'|[^\s"'>]++)""")
_BOOLEAN_HIDDEN_RE = re.compile(r"""(?:^|[\s"'])hidden(?:\s|=|$)""", re.IGNORECASE)
_HIDDEN_STYLE_RE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all", re.IGNORECASE)
# Private-use characters that mark where a blockquote starts and ends until the
# lines are known; the same characters in the mail's own text are dropped.
_QUOTE_OPEN, _QUOTE_CLOSE = "\ue000", "\ue001"
_MARKERS = str.maketrans("", "", _QUOTE_OPEN + _QUOTE_CLOSE)
_SPACE_BEFORE = frozenset({"", " ", "\n", "\t"})
_INPUT_FACTOR = 4
_MAX_QUOTE_MARKS = 8
_JOIN_EVERY = 512
# The visible text of a link is compared with its target; text longer than this
# beyond the target's length is certainly not the target spelled out.
_SHOWN_SLACK = 256


class _Collector:
    """Text pieces with a running size, so output stops growing at the cap.

    Pieces are joined every ``_JOIN_EVERY`` emits (each character is joined once),
    so markup made of tiny fragments does not cost an object per fragment.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chunks: list[str] = []
        self.pieces: list[str] = []
        self.size = 0
        self.full = False

    def emit(self, text: str) -> None:
        if self.full or not text:
            return
        self.pieces.append(text)
        self.size += len(text)
        if self.size >= self.max_chars:
            self.full = True
        if len(self.pieces) >= _JOIN_EVERY:
            self.chunks.append("".join(self.pieces))
            self.pieces.clear()

    def last_char(self) -> str:
        if self.pieces:
            return self.pieces[-1][-1]
        return self.chunks[-1][-1] if self.chunks else ""

    def tail(self, count: int) -> str:
        """The last ``count`` characters; costs O(count), whatever was emitted before."""
        if count <= 0:
            return ""
        found: list[str] = []
        need = count
        for part in (*reversed(self.pieces), *reversed(self.chunks)):
            if len(part) >= need:
                found.append(part[len(part) - need:])
                break
            found.append(part)
            need -= len(part)
        return "".join(reversed(found))

    def text(self) -> str:
        return "".join(self.chunks) + "".join(self.pieces)


class _Ahead:
    """The next match of a pattern at or after a position, found at most once per
    stretch of input: a search that found nothing is never repeated further on."""

    def __init__(self, pattern: re.Pattern[str], src: str) -> None:
        self.pattern = pattern
        self.src = src
        self.found: re.Match[str] | None = None
        self.searched_from = -1  # nothing matches in src[searched_from:] when found is None

    def next(self, pos: int) -> re.Match[str] | None:
        if self.searched_from >= 0 and pos >= self.searched_from and (
                self.found is None or self.found.start() >= pos):
            return self.found
        self.found = self.pattern.search(self.src, pos)
        self.searched_from = pos
        return self.found


def _attrs(tag_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in _ATTR_RE.finditer(tag_text):
        value = m.group(2)
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        found.setdefault(m.group(1).lower(), _html.unescape(value))
    return found


def _hidden(tag_text: str) -> bool:
    """Whether a tag's attributes hide it: ``display:none``, ``visibility:hidden``,
    Outlook's ``mso-hide:all`` in its style, or the ``hidden`` attribute."""
    lowered = tag_text.lower()
    if "hid" not in lowered and "none" not in lowered:
        return False
    attrs = _attrs(tag_text)
    if _HIDDEN_STYLE_RE.search(attrs.get("style", "")):
        return True
    if "hidden" in attrs:
        return True
    # a bare ``hidden`` outside any quoted value
    return _BOOLEAN_HIDDEN_RE.search(re.sub(r""""[^"]*+"|'[^']*+'""", " ", tag_text)) is not None


def _link_suffix(href: str, shown: str | None) -> str:
    """What follows a link's text: its target, unless the text already shows it.

    ``shown`` is None when the text is too long to be the target spelled out.
    """
    href = href.strip()
    if not href or href.startswith(("#", "cid:")) or href.lower().startswith("javascript:"):
        return ""
    if shown is None:
        return f" <{href}>"
    target = href[7:] if href.lower().startswith("mailto:") else href
    if not shown:
        return href
    if shown in (href, target) or shown.rstrip("/") == target.rstrip("/"):
        return ""
    return f" <{href}>"


def _quote_lines(text: str) -> str:
    """Turn the blockquote markers into ``> `` at the start of each line they cover."""
    if _QUOTE_OPEN not in text:
        return text.replace(_QUOTE_CLOSE, "")
    lines: list[str] = []
    depth = 0
    for line in text.split("\n"):
        deepest = depth
        if _QUOTE_OPEN in line or _QUOTE_CLOSE in line:
            for char in line:
                if char == _QUOTE_OPEN:
                    depth += 1
                    deepest = max(deepest, depth)
                elif char == _QUOTE_CLOSE:
                    depth = max(0, depth - 1)
            line = line.translate(_MARKERS)
        if deepest and line.strip():
            line = ">" * min(deepest, _MAX_QUOTE_MARKS) + " " + line.lstrip(" ")
        lines.append(line)
    return "\n".join(lines)


def _tidy(text: str) -> str:
    lines = [line.rstrip(" \t") for line in _quote_lines(text).split("\n")]
    return _MANY_BLANK_RE.sub("\n\n", "\n".join(lines)).strip("\n")


def html_to_text(html: str, max_chars: int = 1_000_000) -> str:
    """Readable text of an HTML document, at most ``max_chars`` characters.

    The input is cut at a multiple of ``max_chars`` before parsing: markup is
    rarely more than a few times the text it carries, and the cut keeps the time
    proportional to what we are willing to return rather than to what was sent.
    """
    if max_chars <= 0:
        return ""
    src = html[: max_chars * _INPUT_FACTOR]
    if _QUOTE_OPEN in src or _QUOTE_CLOSE in src:
        src = src.translate(_MARKERS)
    out = _Collector(max_chars)
    head_end = _Ahead(_HEAD_END, src)
    # the link whose text is being read: (target, output size where its text began);
    # as in a browser, an <a> inside an open one ends that one first
    link: tuple[str, int] | None = None
    hidden_tag = ""  # the element whose content is hidden, while inside it
    hidden_depth = 0
    pre_depth = 0
    quotes_trusted = True
    pos = 0
    n = len(src)
    while pos < n and not out.full:
        lt = src.find("<", pos)
        if lt < 0:
            lt = n
        if lt > pos and not hidden_depth:
            chunk = src[pos:lt]
            if "&" in chunk:
                chunk = _html.unescape(chunk).translate(_MARKERS)
            if not pre_depth:
                chunk = _SPACE_RE.sub(" ", chunk)
                if out.last_char() in _SPACE_BEFORE:
                    chunk = chunk.lstrip(" ")
            out.emit(chunk)
        if lt >= n:
            break
        if src.startswith("<!--", lt):
            end = src.find("-->", lt + 4)
            if end < 0:
                break
            pos = end + 3
            continue
        nxt = src[lt + 1: lt + 2]
        if nxt in ("!", "?"):
            end = src.find(">", lt + 2)
            if end < 0:
                break
            pos = end + 1
            continue
        closing = nxt == "/"
        name_match = _TAG_NAME_RE.match(src, lt + 2 if closing else lt + 1)
        if name_match is None:
            if not hidden_depth:
                out.emit("<")
            pos = lt + 1
            continue
        end_match = _TAG_END_RE.match(src, name_match.end()) if quotes_trusted else None
        if end_match is not None:
            tag_end = end_match.end()
        else:
            # Unbalanced quotes somewhere ahead: stop trusting quotes, so the
            # failed scan is never repeated for each later tag.
            quotes_trusted = False
            gt = src.find(">", name_match.end())
            if gt < 0:
                break
            tag_end = gt + 1
        tag = name_match.group(0).lower()
        tag_text = src[name_match.end(): tag_end - 1]
        pos = tag_end
        self_closing = tag_text.rstrip().endswith("/")
        if not closing and tag in _RAW_SKIP_TAGS and not self_closing:
            close = _RAW_END[tag].search(src, pos)
            if close is None:
                break
            pos = close.end()
            continue
        if hidden_depth:
            own_end = False
            if tag == hidden_tag and closing:
                hidden_depth -= 1
                own_end = not hidden_depth
            elif hidden_depth == 1 and tag in (_ENDED_BY_CLOSE if closing else _ENDED_BY_OPEN).get(hidden_tag, ()):
                hidden_depth = 0  # a browser ends the hidden element here; this tag is read below
            elif tag == hidden_tag and not self_closing:
                hidden_depth += 1
            if hidden_depth:
                continue
            hidden_tag = ""
            if own_end:
                continue
        if closing:
            if tag == "a" and link is not None:
                out.emit(_link_text_end(out, link))
                link = None
            elif tag == "pre":
                pre_depth = max(0, pre_depth - 1)
                out.emit("\n\n")
            elif tag == "blockquote":
                out.emit("\n\n" + _QUOTE_CLOSE)
            elif tag in _PARAGRAPH_TAGS:
                out.emit("\n\n")
            elif tag in _BLOCK_TAGS:
                out.emit("\n")
            continue
        if tag == "head":
            close_head = head_end.next(pos)
            if close_head is not None:
                pos = close_head.start()
            continue
        if tag_text and tag not in _VOID_TAGS and not self_closing and _hidden(tag_text):
            hidden_tag, hidden_depth = tag, 1
            if tag in _BLOCK_TAGS:
                out.emit("\n")
            continue
        if tag == "br":
            out.emit("\n")
        elif tag == "li":
            out.emit("\n* ")
        elif tag in ("td", "th"):
            out.emit("\t")
        elif tag == "pre":
            pre_depth += 1
            out.emit("\n\n")
        elif tag == "blockquote":
            out.emit("\n\n" + _QUOTE_OPEN)
        elif tag in _PARAGRAPH_TAGS:
            out.emit("\n\n")
        elif tag in _BLOCK_TAGS:
            out.emit("\n")
        elif tag == "img":
            if not (tag_text and _hidden(tag_text)):
                alt = _attrs(tag_text).get("alt", "")
                alt = _SPACE_RE.sub(" ", alt).strip()
                if alt:
                    out.emit(f"[{alt}]")
        elif tag == "a" and not self_closing:
            if link is not None:
                out.emit(_link_text_end(out, link))
                link = None
            href = _attrs(tag_text).get("href")
            if href is not None:
                link = (href, out.size)
    return _tidy(out.text())[:max_chars]


def _link_text_end(out: _Collector, link: tuple[str, int]) -> str:
    href, start = link
    length = out.size - start
    if length > len(href) + _SHOWN_SLACK:
        suffix = _link_suffix(href, None)
    else:
        suffix = _link_suffix(href, _SPACE_RE.sub(" ", out.tail(length).translate(_MARKERS)).strip())
    return suffix[1:] if suffix[:1] == " " and out.last_char() in _SPACE_BEFORE else suffix
