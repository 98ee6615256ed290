"""HTML mail body -> readable plain text.

Consultants read tickets as text and replies are quoted as text, so an HTML-only
mail must become something a person can read: paragraphs stay paragraphs, list
items get a bullet, and a link keeps its target when the visible text hides it
(a "click here" link then shows where it really goes).

The standard library's ``html.parser`` was the first choice, but on Python 3.11
it is quadratic on unclosed constructs (``"<!--" * 200_000`` took minutes), and
mail is hostile input. So this is a small tokenizer of its own, built on
``str.find`` and one anchored regex, where every scan either consumes what it
read or ends the parse: linear time, and the output is capped as it grows.
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
# Elements whose content is never shown; their end is searched for directly.
_RAW_SKIP_TAGS = frozenset({"script", "style", "title", "textarea", "xmp", "noscript", "template"})
_RAW_END = {tag: re.compile(r"</" + tag + r"\b[^>]*>", re.IGNORECASE) for tag in _RAW_SKIP_TAGS}
_HEAD_END = re.compile(r"</head\s*>|<body\b", re.IGNORECASE)
_SPACE_RE = re.compile(r"[ \t\r\n\f\v\u00a0\u200b\u200c\u200d\ufeff]+")
_MANY_BLANK_RE = re.compile(r"\n{3,}")
_TAG_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9:_-]*")
# Quote-aware end of a tag; the alternatives are disjoint, so a failed match
# costs one pass over what it read.
_TAG_END_RE = re.compile(r"""(?:[^"'>]++|"[^"]*+"|'[^']*+')*+>""")
_ATTR_RE = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""")
_INPUT_FACTOR = 4


class _Collector:
    """Text pieces with a running size, so output stops growing at the cap."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
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


def _attrs(tag_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in _ATTR_RE.finditer(tag_text):
        value = m.group(2)
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        found.setdefault(m.group(1).lower(), _html.unescape(value))
    return found


def _link_suffix(href: str, shown: str) -> str:
    href = href.strip()
    if not href or href.startswith(("#", "cid:")) or href.lower().startswith("javascript:"):
        return ""
    target = href[7:] if href.lower().startswith("mailto:") else href
    if not shown:
        return href
    if shown in (href, target) or shown.rstrip("/") == target.rstrip("/"):
        return ""
    return f" <{href}>"


def _tidy(text: str) -> str:
    lines = [line.rstrip(" \t") for line in text.split("\n")]
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
    out = _Collector(max_chars)
    links: list[tuple[str, int]] = []
    pre_depth = 0
    quotes_trusted = True
    pos = 0
    n = len(src)
    while pos < n and not out.full:
        lt = src.find("<", pos)
        if lt < 0:
            lt = n
        if lt > pos:
            chunk = _html.unescape(src[pos:lt])
            if not pre_depth:
                chunk = _SPACE_RE.sub(" ", chunk)
                if not out.pieces or out.pieces[-1][-1:] in (" ", "\n", "\t"):
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
        if closing:
            if tag == "a" and links:
                href, start = links.pop()
                shown = _SPACE_RE.sub(" ", "".join(out.pieces[start:])).strip()
                out.emit(_link_suffix(href, shown))
            elif tag == "pre":
                pre_depth = max(0, pre_depth - 1)
                out.emit("\n\n")
            elif tag in _PARAGRAPH_TAGS:
                out.emit("\n\n")
            elif tag in _BLOCK_TAGS:
                out.emit("\n")
            continue
        if tag in _RAW_SKIP_TAGS and not tag_text.rstrip().endswith("/"):
            close = _RAW_END[tag].search(src, pos)
            if close is None:
                break
            pos = close.end()
            continue
        if tag == "head":
            close_head = _HEAD_END.search(src, pos)
            if close_head is not None:
                pos = close_head.start()
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
        elif tag in _PARAGRAPH_TAGS:
            out.emit("\n\n")
        elif tag in _BLOCK_TAGS:
            out.emit("\n")
        elif tag == "img":
            alt = _attrs(tag_text).get("alt", "")
            alt = _SPACE_RE.sub(" ", alt).strip()
            if alt:
                out.emit(f"[{alt}]")
        elif tag == "a" and not tag_text.rstrip().endswith("/"):
            link = _attrs(tag_text).get("href")
            if link is not None:
                links.append((link, len(out.pieces)))
    return _tidy("".join(out.pieces))[:max_chars]
