"""Raw message bytes -> ``InboundMessage``: the one place mail is parsed.

Every later stage (screening, threading, contracts, storage) works on the plain
values here, so this module has to turn *any* byte sequence from a mailbox into
something usable: a ticket must still be created for a mail with a broken MIME
tree, a lying charset or a 40 MB attachment, and nothing may hang on hostile
input. Limits therefore drop parts (and say so in ``notes``) instead of failing.

Parsing uses the standard library's ``email`` feed parser with the ``compat32``
policy and our own header decoding. mail-parser was measured first (it wraps the
same parser): on the bench set (2,000 generated support mails, 5-200 KB) it
managed about 1,700 msgs/s for a full parse, while the structure-only parse
here plus our own decoding runs at several thousand per second, keeps
attachments as exact bytes instead of re-encoded text, and lets limits act
before a part is decoded. ``policy.default`` was slower still (~1,000/s) and
raises on some real-world headers (see the corpus README).
"""
from __future__ import annotations

import binascii
import codecs
import functools
import hashlib
import importlib.util
import logging
import mimetypes
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy as _policy
from email.errors import MessageError
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from io import BytesIO
from typing import TYPE_CHECKING, Any

from maild.config import ParseLimits as ParseLimits
from maild.errors import MaildError
from maild.intake.htmltext import html_to_text

if TYPE_CHECKING:
    from maild.intake.facts import MailFacts

__all__ = [
    "Attachment",
    "DeliveryReport",
    "InboundMessage",
    "ParseLimits",
    "UnparsableMessage",
    "decode_bytes",
    "decode_header_words",
    "normalise_message_id",
    "parse_message",
]

log = logging.getLogger("maild.parse")


class UnparsableMessage(MaildError):
    """The bytes could not be turned into a message at all; goes to quarantine."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Attachment:
    """One stored part. ``filename`` is for display only, never a path."""

    filename: str
    content_type: str
    data: bytes
    size: int
    sha256: str
    inline: bool
    content_id: str | None


@dataclass(frozen=True)
class DeliveryReport:
    """Facts from a bounce: which of our mails failed, for whom, and for good or not."""

    original_message_id: str | None
    recipients: tuple[str, ...]
    status: str | None
    permanent: bool
    diagnostic: str


@dataclass(frozen=True)
class InboundMessage:
    message_id: str | None
    raw_sha256: str
    size: int
    dedupe_key: str
    subject: str
    from_addr: str
    from_name: str
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    return_path: str | None
    date_header: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    headers: Mapping[str, str]
    content_type: str
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    report: DeliveryReport | None
    language: str | None
    defects: tuple[str, ...]
    notes: tuple[str, ...]
    # (new text, quoted history), when whoever parsed the message also split it
    # (the pipeline does so in its parse worker, off the critical path).
    reply_split: tuple[str, str] | None = None
    # what the stages read in its words, found with the split (``intake.facts``)
    facts: MailFacts | None = None


# --------------------------------------------------------------------------
# text decoding
# --------------------------------------------------------------------------

_MAX_HEADER_VALUE = 16 * 1024
_MAX_ADDRESSES = 500
_MAX_IDS = 100
_MAX_DEFECTS = 50
_SUBJECT_CAP = 998
_NAME_CAP = 200
_FILENAME_CAP = 150
_DIAGNOSTIC_CAP = 1000

# Single-byte charsets Polish mail is written in and mislabelled between.
_AMBIGUOUS = frozenset({"iso8859-2", "cp1250", "iso8859-1", "cp1252", "ascii", "iso8859-15"})
_CP1250_TELLS = re.compile("[\u0080-\u009f\u00b1\u00b6\u00a6\u00ac\u02c7]")
_CHARSET_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "x-user-defined": "",
    "default": "",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso8859-8",
    "x-mac-cyrillic": "mac-cyrillic",
    "windows-874": "cp874",
    "ansi_x3.4-1968": "ascii",
    "cp-1250": "cp1250",
    "win-1250": "cp1250",
}


def _codec(charset: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None if unusable."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    if not label:
        return None
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _tells(text: str) -> int:
    """Characters that betray a cp1250/iso-8859-2 mix-up (C1 controls, ±¶¦¬ˇ)."""
    return len(_CP1250_TELLS.findall(text))


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text bytes by their declared charset, falling back sanely.

    Order: declared, UTF-8, windows-1250, iso-8859-2. Polish mail is routinely
    labelled iso-8859-2 while written in windows-1250 (and the reverse), and
    both decode without error, so between those two the candidate showing fewer
    tell-tale characters wins. Valid UTF-8 with 8-bit bytes beats any
    single-byte label: random Latin text almost never is valid UTF-8.
    """
    if data.isascii():
        return data.decode("ascii")
    declared = _codec(charset)
    if declared is not None and declared not in _AMBIGUOUS:
        try:
            return data.decode(declared)
        except (UnicodeDecodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    candidates: list[str] = []
    for name in (declared, "cp1250", "iso8859-2"):
        if name is None or name in candidates or name in ("ascii", "utf-8"):
            continue
        candidates.append(name)
    best: str | None = None
    best_tells = 0
    for name in candidates:
        try:
            text = data.decode(name)
        except (UnicodeDecodeError, LookupError, ValueError):
            continue
        score = _tells(text)
        if best is None or score < best_tells:
            best, best_tells = text, score
        if score == 0:
            break
    if best is not None:
        return best
    return data.decode("iso8859-2")


_ENCODED_WORD = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?([^?]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NON_BASE64 = re.compile(r"[^A-Za-z0-9+/]")


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in ("b", "B"):
        compact = _NON_BASE64.sub("", text)
        compact += "=" * (-len(compact) % 4)
        try:
            return binascii.a2b_base64(compact)
        except (binascii.Error, ValueError):
            return text.encode("utf-8", "surrogateescape")
    raw = text.replace("_", " ").encode("utf-8", "surrogateescape")
    return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def _unescape_8bit(value: str) -> str:
    """Header text from the compat32 parser keeps raw 8-bit bytes as surrogates."""
    if value.isascii() or not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def decode_header_words(value: str) -> str:
    """RFC 2047 decoding that tolerates what real mail does.

    Adjacent encoded words in one charset are joined as bytes before decoding,
    because clients split multi-byte characters across words; unknown charsets
    and broken base64 fall back rather than fail.
    """
    value = _unescape_8bit(value[:_MAX_HEADER_VALUE])
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = b""
    pending_charset: str | None = None
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        between = value[pos:m.start()]
        charset = m.group(1).split("*", 1)[0]
        if between and (between.strip() or pending_charset is None):
            if pending:
                out.append(decode_bytes(pending, pending_charset))
                pending = b""
            out.append(between)
            pending_charset = None
        if pending and charset.lower() != (pending_charset or "").lower():
            out.append(decode_bytes(pending, pending_charset))
            pending = b""
        pending_charset = charset
        pending += _word_bytes(m.group(2), m.group(3))
        pos = m.end()
    if pending:
        out.append(decode_bytes(pending, pending_charset))
    out.append(value[pos:])
    return "".join(out)


_UNSAFE_CHARS = re.compile("[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff\ufffe\uffff]")
_SPACES = re.compile(r"\s+")


def _one_line(text: str, cap: int) -> str:
    """Safe single line: controls and bidi overrides become spaces, runs collapse."""
    return _SPACES.sub(" ", _UNSAFE_CHARS.sub(" ", text)).strip()[:cap]


_TEXT_CONTROLS = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffe\uffff]")


def _clean_text(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _TEXT_CONTROLS.sub("", text)


# --------------------------------------------------------------------------
# ids, addresses, dates
# --------------------------------------------------------------------------

_ANGLE_ID = re.compile(r"<\s*([^<>\s]{1,990})\s*>")
_BARE_ID = re.compile(r"[^<>\s\"(),;]{1,990}@[^<>\s\"(),;]{1,990}")


def normalise_message_id(value: str | None) -> str | None:
    """``<local@domain>`` -> ``local@domain``; None when absent or not an id.

    Case is kept: ids are compared literally, and this one function produces
    both sides of every comparison.
    """
    if not value:
        return None
    ids = _ids(value, 1)
    return ids[0] if ids else None


def _valid_id(candidate: str) -> bool:
    return "@" in candidate and not _UNSAFE_CHARS.search(candidate) and len(candidate) <= 990


def _ids(value: str, limit: int) -> tuple[str, ...]:
    value = _unescape_8bit(value[:_MAX_HEADER_VALUE * 4])
    found = [m.group(1) for m in _ANGLE_ID.finditer(value)]
    if not found:
        found = _BARE_ID.findall(value)
    ids: list[str] = []
    seen: set[str] = set()
    for candidate in found:
        candidate = candidate.strip()
        if _valid_id(candidate) and candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    if len(ids) > limit:
        # The root and the latest parents carry the thread; the middle can go.
        ids = ids[:1] + ids[-(limit - 1):] if limit > 1 else ids[:1]
    return tuple(ids)


def _clean_addr(addr: str) -> str:
    addr = _UNSAFE_CHARS.sub("", addr).strip().strip("<>").strip().lower()
    return addr if " " not in addr else addr.replace(" ", "")


_ADDRESSES_CACHED_UP_TO = 1024  # characters of a field's values together


def _addresses(values: list[str]) -> tuple[tuple[str, str], ...]:
    """(display name, clean address) pairs of a field's values, at most ``_MAX_ADDRESSES``.

    A backlog repeats its address fields (support@ in every To, a customer's From
    in each of their mails), and ``getaddresses`` was a tenth of a parse: short
    values are parsed once per process.
    """
    if not values:
        return ()
    key = tuple(values[:20])
    if sum(len(v) for v in key) <= _ADDRESSES_CACHED_UP_TO:
        return _addresses_of(key)
    return _parse_addresses(key)


@functools.lru_cache(maxsize=4096)
def _addresses_of(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return _parse_addresses(values)


def _parse_addresses(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    joined = [_unescape_8bit(v[:_MAX_HEADER_VALUE * 4]) for v in values]
    try:
        pairs = getaddresses(joined)
    except (ValueError, IndexError, TypeError, RecursionError):
        # Deeply nested groups or comments: salvage the addr-specs by pattern.
        pairs = [("", m.group(1)) for v in joined for m in _ADDR_IN_TEXT.finditer(v)]
    result: list[tuple[str, str]] = []
    for name, addr in pairs[:_MAX_ADDRESSES]:
        clean = _clean_addr(addr)
        if clean:
            result.append((name, clean))
    return tuple(result)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(_one_line(_unescape_8bit(value), 200))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------
# headers kept for later stages
# --------------------------------------------------------------------------

_KEPT_HEADERS = frozenset({
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "list-post", "list-help",
    "x-autoreply", "x-autorespond", "x-auto-response-suppress", "x-autogenerated",
    "x-maild-ticket", "x-maild-origin", "authentication-results", "received-spf",
    "content-language", "x-mailer", "user-agent", "thread-index", "thread-topic",
    "sender", "x-original-to", "delivered-to", "x-failed-recipients", "x-loop",
    "x-spam-flag", "x-spam-status", "importance", "priority", "x-priority", "x-msmail-priority",
    "organization", "x-apple-action", "x-report-abuse", "feedback-id",
})
_JOINED_HEADERS = frozenset({"authentication-results", "received-spf"})
_MAX_KEPT_VALUE = 8 * 1024


def _kept_headers(msg: Message) -> Mapping[str, str]:
    kept: dict[str, str] = {}
    for name, value in _raw_items(msg)[:5000]:
        lname = name.strip().lower()
        if lname not in _KEPT_HEADERS and not lname.startswith(("x-ms-exchange-", "x-maild-")):
            continue
        if not isinstance(value, str):
            value = str(value)
        text = _one_line(decode_header_words(value), _MAX_KEPT_VALUE)
        if lname in kept:
            if lname in _JOINED_HEADERS:
                kept[lname] = kept[lname] + "\n" + text
            continue
        kept[lname] = text
    return types.MappingProxyType(kept)


# --------------------------------------------------------------------------
# MIME walk
# --------------------------------------------------------------------------

def _header_section_end(raw: bytes) -> int:
    """Offset just past the blank line ending the top header block, or -1."""
    candidates = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    if not candidates:
        return -1
    i = min(candidates)
    return i + (2 if raw[i:i + 2] == b"\n\n" else 3)


_BODY_WITHOUT_BLANK_LINE = re.compile(rb"(?:^|\n)(?![ \t])[^\r\n:]*(?:\r?\n|$)")


def _cap_headers(raw: bytes, limit: int, notes: list[str]) -> bytes:
    end = _header_section_end(raw)
    header_len = end if end >= 0 else len(raw)
    if header_len <= limit:
        return raw
    if _BODY_WITHOUT_BLANK_LINE.search(raw, 0, limit) is not None:
        return raw  # a non-header line starts the body early; the parser copes
    cut = raw.rfind(b"\n", 0, limit)
    cut = cut + 1 if cut > 0 else limit
    body = raw[end:] if end >= 0 else b""
    notes.append(f"header section ({header_len} bytes) cut to {cut} bytes: over max_header_bytes")
    return raw[:cut] + b"\n" + body


def _safe_filename(name: str, content_type: str, index: int) -> str:
    """A name a person can read; separators, controls and bidi tricks removed."""
    name = _one_line(decode_header_words(name), 1000) if name else ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = name.replace(":", "_").strip(" .")
    if len(name) > _FILENAME_CAP:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            name = stem[: _FILENAME_CAP - len(ext) - 1] + "." + ext
        else:
            name = name[:_FILENAME_CAP]
    if not name:
        ext = mimetypes.guess_extension(content_type, strict=False) or ".bin"
        name = f"part-{index}{ext}"
    return name


def _payload(part: Message) -> Any:
    """The parsed payload: a list of parts, a string, or "" when compat32 balks."""
    try:
        return part.get_payload()
    except (ValueError, TypeError, IndexError, LookupError):
        return ""


def _payload_bytes(part: Message, blobs: _Blobs | None = None) -> bytes:
    if blobs is not None and blobs.holds(part):
        decoded = blobs.decoded(part)
        if decoded is not None:
            return decoded
        blobs.materialise(part)
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, binascii.Error, AssertionError):
        data = None
    if isinstance(data, bytes):
        return data
    raw = _payload(part)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _estimated_size(part: Message, blobs: _Blobs | None = None) -> int:
    if blobs is not None and blobs.holds(part):
        length = blobs.length(part)
        cte = (_first(part, "content-transfer-encoding") or "").strip().lower()
        return length * 3 // 4 if cte == "base64" else length
    raw = _payload(part)
    if not isinstance(raw, str):
        return 0
    cte = (_first(part, "content-transfer-encoding") or "").strip().lower()
    return len(raw) * 3 // 4 if cte == "base64" else len(raw)


class _SteadyGenerator(BytesGenerator):
    """The stdlib's generator, except for the boundary it must invent for a multipart whose own is blank (a
    forwarded message with ``boundary=" "``): drawn at random, it made the stored .eml attachment's bytes and
    hash differ on every parse of the same mail (a retry stored a second copy). Derived from the parts' text
    instead, under the same rule that it must not occur in that text."""

    @classmethod
    def _make_boundary(cls, text: bytes | str | None = None) -> str:
        body = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text or b""
        boundary = "=" * 15 + hashlib.sha256(body).hexdigest()[:19] + "=="
        candidate, counter = boundary, 0
        while re.search(b"^--" + re.escape(candidate.encode("ascii")) + b"(--)?$", body, re.MULTILINE):
            candidate, counter = f"{boundary}.{counter}", counter + 1
        return candidate


def _flatten(msg: Message) -> bytes:
    buf = BytesIO()
    try:
        _SteadyGenerator(buf, mangle_from_=False, maxheaderlen=0).flatten(msg)
    except (MessageError, ValueError, TypeError, LookupError, AttributeError, UnicodeError, RecursionError):
        return b""
    return buf.getvalue()


_MISSING: Any = object()
_PARAMS_CACHED_UP_TO = 512  # characters of a field's value: longer ones are parsed each time


@functools.lru_cache(maxsize=2048)
def _params_of(value: str) -> tuple[tuple[str, Any], ...]:
    """``Message.get_params()`` of a MIME field with this value, parsed once per distinct value.

    The same Content-Type and Content-Disposition values recur from mail to mail,
    and each ``get_param`` parsed the field again (about 7 % of a parse).
    """
    scratch = Message()
    scratch["content-type"] = value
    return tuple(scratch.get_params(header="content-type") or ())


def _param(part: Message, name: str, header: str = "content-type", failobj: Any = None) -> Any:
    """``part.get_param(name, failobj, header)``; a field with 8-bit bytes, or a long one, is the
    stdlib's own (it reads those through a ``Header``)."""
    value = _first(part, header)
    if value is None:
        return failobj
    if not value.isascii() or len(value) > _PARAMS_CACHED_UP_TO:
        return part.get_param(name, failobj, header)
    for key, param in _params_of(value):
        if key.lower() == name:
            return param
    return failobj


def _charset(part: Message) -> str | None:
    try:
        value = _param(part, "charset")
    except (ValueError, TypeError, IndexError):
        return None
    if isinstance(value, tuple):
        value = value[2]
    return str(value) if value else None


def _filename(part: Message) -> str:
    """``part.get_filename() or part.get_param("name")``, from the cached parameters."""
    try:
        name = _param(part, "filename", "content-disposition", _MISSING)
        if name is _MISSING:
            name = _param(part, "name", "content-type", _MISSING)
        name = "" if name is _MISSING else collapse_rfc2231_value(name).strip()
        name = name or _param(part, "name") or ""
    except (ValueError, TypeError, IndexError, LookupError, UnicodeError):
        return ""
    if isinstance(name, tuple):
        name = str(name[2])
    return str(name)


def _disposition(part: Message) -> str | None:
    value = _first(part, "content-disposition")
    if value is None:
        return None
    return str(value).split(";", 1)[0].strip().lower() or None


def _content_type(part: Message) -> str:
    """``part.get_content_type()``."""
    value = _first(part, "content-type")
    if value is None or not value.isascii():
        try:
            return part.get_content_type()
        except (ValueError, TypeError, IndexError):
            return "text/plain"
    ctype = value.partition(";")[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


@dataclass
class _Walk:
    """Mutable state of one message walk; never leaves this module."""

    limits: ParseLimits
    notes: list[str]
    defects: list[str]
    plain: list[str]
    html: list[str]
    text_chars: int = 0
    attachments: list[Attachment] | None = None
    status_blocks: list[str] | None = None
    original_headers: list[Message] | None = None
    skipped_attachments: int = 0
    truncated: bool = False
    blobs: _Blobs | None = None

    def defect(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < _MAX_DEFECTS:
            self.defects.append(text)


def _part_defects(walk: _Walk, part: Message) -> None:
    for defect in getattr(part, "defects", ())[:10]:
        walk.defect(type(defect).__name__)


def _status_text(part: Message, blobs: _Blobs | None) -> str:
    payload = _payload(part)
    if isinstance(payload, list):
        blocks = []
        for block in payload:
            if isinstance(block, Message):
                blocks.append("\n".join(f"{k}: {_unescape_8bit(v)}" for k, v in _raw_items(block)))
        return "\n\n".join(blocks)
    if isinstance(payload, str):
        return decode_bytes(_payload_bytes(part, blobs), _charset(part))
    return ""


def _walk_parts(root: Message, walk: _Walk) -> None:
    limits = walk.limits
    attachments: list[Attachment] = []
    walk.attachments = attachments
    walk.status_blocks = []
    walk.original_headers = []
    stack: list[tuple[Message, int]] = [(root, 0)]
    count = 0
    depth_noted = False
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > limits.max_parts:
            walk.notes.append(f"MIME parts after the first {limits.max_parts} not read: over max_parts")
            break
        if depth > limits.max_depth:
            if not depth_noted:
                walk.notes.append(f"MIME parts nested deeper than {limits.max_depth} levels not read: over max_depth")
                depth_noted = True
            continue
        _part_defects(walk, part)
        ctype = _content_type(part)
        # as parsed: get_payload() would decode an 8-bit leaf with its charset only to be told it is no list
        payload = _raw_payload(part)
        if ctype == "message/delivery-status" or ctype == "message/global-delivery-status":
            walk.status_blocks.append(_status_text(part, walk.blobs))
            continue
        if ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            text = decode_bytes(_payload_bytes(part, walk.blobs), _charset(part))
            walk.original_headers.append(HeaderParser().parsestr(text, headersonly=True))
            continue
        if ctype in ("message/rfc822", "message/global") and isinstance(payload, list):
            inner = payload[0] if payload and isinstance(payload[0], Message) else None
            if inner is not None:
                walk.original_headers.append(inner)
                if walk.blobs is not None:
                    walk.blobs.materialise_tree(inner)  # the generator reads every payload
                _add_attachment(walk, attachments, part, ctype, _flatten(inner), "message/rfc822", inner)
            continue
        if isinstance(payload, list):
            for child in reversed(payload):
                if isinstance(child, Message):
                    stack.append((child, depth + 1))
            continue
        disposition = _disposition(part)
        filename = _filename(part)
        if ctype.startswith("multipart/"):
            # A multipart without a usable boundary: its body is all we have.
            walk.defect("MultipartWithoutParts")
            ctype = "text/plain"
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            if walk.text_chars >= limits.max_text_chars:
                continue
            text = _clean_text(decode_bytes(_payload_bytes(part, walk.blobs), _charset(part)))
            walk.text_chars += len(text)
            (walk.plain if ctype == "text/plain" else walk.html).append(text)
            continue
        _add_attachment(walk, attachments, part, ctype, None, ctype, None)


def _add_attachment(
    walk: _Walk,
    attachments: list[Attachment],
    part: Message,
    ctype: str,
    data: bytes | None,
    stored_type: str,
    inner: Message | None,
) -> None:
    limits = walk.limits
    index = len(attachments) + walk.skipped_attachments + 1
    filename = _filename(part)
    if not filename and inner is not None:
        subject = _one_line(decode_header_words(_first(inner, "subject") or ""), 80)
        filename = (subject or "message") + ".eml"
    display = _safe_filename(filename, stored_type, index)
    if walk.truncated:
        walk.skipped_attachments += 1
        walk.notes.append(f"attachment '{display}' not stored: message was cut at max_message_bytes")
        return
    if len(attachments) >= limits.max_attachments:
        walk.skipped_attachments += 1
        if walk.skipped_attachments == 1:
            walk.notes.append(f"attachments after the first {limits.max_attachments} not stored: over max_attachments")
        return
    if data is None:
        estimated = _estimated_size(part, walk.blobs)
        if estimated > limits.max_attachment_bytes * 1.05 + 1024:
            walk.skipped_attachments += 1
            walk.notes.append(
                f"attachment '{display}' (~{estimated // (1024 * 1024)} MB) not stored: over max_attachment_bytes"
            )
            return
        data = _payload_bytes(part, walk.blobs)
    if len(data) > limits.max_attachment_bytes:
        walk.skipped_attachments += 1
        walk.notes.append(
            f"attachment '{display}' ({len(data) // (1024 * 1024)} MB) not stored: over max_attachment_bytes"
        )
        return
    content_id = _first(part, "content-id")
    cid = _one_line(_unescape_8bit(str(content_id)), 250).strip("<> ") if content_id else None
    attachments.append(Attachment(
        filename=display,
        content_type=stored_type,
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        inline=_disposition(part) == "inline",
        content_id=cid or None,
    ))


# --------------------------------------------------------------------------
# delivery reports
# --------------------------------------------------------------------------

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


def _status_fields(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.replace("\r\n", "\n").split("\n")[:5000]:
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[:1] in (" ", "\t") and last is not None:
            current[last] += " " + line.strip()
            continue
        m = _FIELD_RE.match(line)
        if m is None:
            continue
        last = m.group(1).lower()
        if last in current and last in ("final-recipient", "original-recipient", "reporting-mta", "action"):
            # A missing blank line between groups: start a new recipient block.
            blocks.append(current)
            current = {}
        current[last] = m.group(2).strip()
    if current:
        blocks.append(current)
    return blocks


def _typed_value(value: str) -> str:
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


_QUOTED_MESSAGE_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _original_id(walk: _Walk, text: str) -> str | None:
    for headers in walk.original_headers or []:
        msgid = normalise_message_id(_first(headers, "message-id"))
        if msgid:
            return msgid
    m = _QUOTED_MESSAGE_ID.search(text[:200_000])
    return normalise_message_id(m.group(1)) if m else None


def _dsn_report(walk: _Walk, text: str) -> DeliveryReport | None:
    blocks = [b for t in walk.status_blocks or [] for b in _status_fields(t)]
    recipients: list[str] = []
    statuses: list[str] = []
    actions: list[str] = []
    diagnostics: list[str] = []
    for block in blocks:
        rcpt = block.get("final-recipient") or block.get("original-recipient")
        if rcpt:
            addr = _clean_addr(_typed_value(rcpt))
            if addr and addr not in recipients:
                recipients.append(addr)
        if "status" in block:
            m = _STATUS_RE.search(block["status"])
            if m:
                statuses.append(m.group(0))
        if "action" in block:
            actions.append(block["action"].strip().lower())
        if "diagnostic-code" in block:
            diagnostics.append(_typed_value(block["diagnostic-code"]))
    if not blocks:
        return None
    failed_status = next((s for s in statuses if s.startswith("5")), None)
    status = failed_status or (statuses[0] if statuses else None)
    permanent = failed_status is not None or ("failed" in actions and not any(s.startswith("4") for s in statuses))
    if actions and all(a in ("delayed", "relayed", "delivered", "expanded") for a in actions):
        permanent = False
    return DeliveryReport(
        original_message_id=_original_id(walk, text),
        recipients=tuple(recipients[:_MAX_ADDRESSES]),
        status=status,
        permanent=permanent,
        diagnostic=_one_line(" | ".join(diagnostics), _DIAGNOSTIC_CAP),
    )


_NDR_SENDER = re.compile(r"^(mailer-daemon|postmaster|post_master|mail-daemon|mailerdaemon)@", re.IGNORECASE)
_NDR_SUBJECT = re.compile(
    r"undeliver|undelivered mail|returned mail|delivery status notification|failure notice|"
    r"mail delivery fail|delivery fail|could not send message|non remis|unzustellbar|"
    r"niedostarcz|nie można dostarczyć|nie mozna dostarczyc|mail system error|delayed mail|"
    r"non delivery|nondeliverable|bounce notification|delivery error|message not delivered|"
    r"не доставлено|nicht zugestellt|zwrot poczty",
    re.IGNORECASE,
)
_NDR_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|was not delivered|not be delivered|"
    r"permanent(?:ly)? (?:fatal )?error|delivery to the following recipients? failed|"
    r"user unknown|unknown user|no such user|mailbox unavailable|does not exist|"
    r"recipient address rejected|delivery has failed|undeliverable|"
    r"message could not be sent|has not yet been delivered|will retry|delivery failed|"
    r"failed permanently|not a valid user|returning message to sender|delivery problem|"
    r"nie istnieje|niedostępne|niedostepne|adresat nieznany",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"will (?:be )?retr|has not yet been delivered|still being retried|delayed|"
    r"temporar|warning: could not send|will continue trying|could not send message for past",
    re.IGNORECASE,
)
_SMTP_5XX = re.compile(r"(?<!\d)5[0-5]\d(?:[ -]|$)", re.MULTILINE)
_HEADERISH = re.compile(r"^[ \t>]*([A-Za-z][A-Za-z0-9-]*)[ \t]*:")
_RECIPIENT_FIELDS = frozenset({"to", "final-recipient", "original-recipient", "recipient", "x-failed-recipients"})
_ADDR_IN_TEXT = re.compile(r"<?([A-Za-z0-9._%+=/'-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24})>?")


def _guessed_report(
    subject: str, from_addr: str, return_path: str | None, text: str, walk: _Walk, declared: bool
) -> DeliveryReport | None:
    """A non-standard NDR (qmail, Exchange 5.5, Domino, Exim text, ...).

    ``declared`` is a multipart/report of delivery-status whose status part was
    missing or unreadable: it is a bounce whatever its text says.
    """
    sender_like = bool(_NDR_SENDER.match(from_addr)) or return_path == ""
    subject_like = bool(_NDR_SUBJECT.search(subject))
    if not (declared or sender_like or subject_like):
        return None
    head = text[:20_000]
    body_like = bool(_NDR_BODY.search(head))
    if not (declared or (sender_like and (subject_like or body_like)) or (subject_like and body_like)):
        return None
    recipients: list[str] = []
    for line in head.split("\n")[:400]:
        if "@" not in line:
            continue
        field = _HEADERISH.match(line)
        if field is not None and field.group(1).lower() not in _RECIPIENT_FIELDS:
            continue
        for m in _ADDR_IN_TEXT.finditer(line):
            addr = m.group(1).lower()
            if "=" in addr.split("@", 1)[0][:20] and "." in addr.split("=", 1)[0]:
                continue  # smtp.mailfrom=... from pasted Authentication-Results
            if addr != from_addr and not _NDR_SENDER.match(addr) and addr not in recipients:
                recipients.append(addr)
        if len(recipients) >= 20:
            break
    found_status = _STATUS_RE.search(head)
    status = found_status.group(0) if found_status else None
    transient = bool(_TRANSIENT.search(subject)) or bool(_TRANSIENT.search(head[:5000]))
    if status is not None:
        permanent = status.startswith("5")
    else:
        permanent = not transient
    diagnostic = ""
    smtp = _SMTP_5XX.search(head)
    if smtp is not None:
        line_start = head.rfind("\n", 0, smtp.start()) + 1
        line_end = head.find("\n", smtp.start())
        diagnostic = head[line_start: line_end if line_end >= 0 else len(head)]
    return DeliveryReport(
        original_message_id=_original_id(walk, text),
        recipients=tuple(recipients[:5]),
        status=status,
        permanent=permanent,
        diagnostic=_one_line(diagnostic, _DIAGNOSTIC_CAP),
    )


# --------------------------------------------------------------------------
# language
# --------------------------------------------------------------------------

_PL_LETTERS = re.compile("[ąćęłńśźżĄĆĘŁŃŚŹŻ]")
_FOREIGN_LETTERS = re.compile("[ěřůťďňĚŘŮŤĎŇäöüßÄÖÜőűéèêàç]")
_WORD = re.compile(r"[^\W\d_]+")
_PL_WORDS = frozenset({
    "nie", "się", "jest", "dzień", "dobry", "proszę", "prosze", "pozdrawiam", "dziękuję", "dziekuje",
    "że", "oraz", "czy", "jak", "mam", "mamy", "problem", "faktura", "faktury", "witam", "program",
    "jestem", "będzie", "bedzie", "można", "mozna", "przy", "od", "do", "na", "po", "za", "ale",
    "tak", "już", "juz", "tylko", "bardzo", "jeszcze", "panie", "pani", "temat", "wiadomość",
})
_EN_WORDS = frozenset({
    "the", "and", "is", "are", "please", "thanks", "thank", "regards", "hello", "you", "to", "of",
    "we", "have", "with", "for", "this", "that", "it", "not", "can", "will", "our", "your", "be",
    "hi", "dear", "issue", "would", "could", "from",
    # what a stranger asking for an offer writes ("i", "a" and "do" are Polish words too)
    "need", "help", "my", "me", "an", "looking", "send", "buy", "price", "pricing", "quote", "offer",
    "invoice", "invoices", "good", "morning", "best", "kind", "want", "question", "about", "what", "when",
    "how", "why", "does", "know", "there", "some", "any", "company", "interested", "licence", "license",
})


def guess_language(subject: str, text: str) -> str | None:
    """"pl" or "en" when the evidence is clear; None otherwise (answer in the default)."""
    sample = subject + "\n" + text[:4000]
    words = _WORD.findall(sample.lower())[:800]
    pl_words = sum(1 for w in words if w in _PL_WORDS)
    en_words = sum(1 for w in words if w in _EN_WORDS)
    pl_letters = len(_PL_LETTERS.findall(sample))
    foreign = len(_FOREIGN_LETTERS.findall(sample))
    pl_score = pl_words + min(pl_letters, 20) * 0.5
    if foreign > pl_letters and foreign >= 3:
        return None
    if pl_score >= 3 and pl_score > en_words:
        return "pl"
    if en_words >= 3 and en_words > pl_score * 1.5:
        return "en"
    return None


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------

def _raw_items(msg: Message) -> list[tuple[str, str]]:
    """Header fields as parsed, raw 8-bit bytes still surrogate-escaped.

    ``Message.get`` under compat32 turns 8-bit values into ``Header`` objects
    whose ``str()`` is U+FFFD soup; the raw value lets our fallbacks decode it.
    """
    return [(str(k), v if isinstance(v, str) else str(v)) for k, v in msg.raw_items()]


def _first(msg: Message, name: str) -> str | None:
    name = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == name:
            return value if isinstance(value, str) else str(value)
    return None


def _all(msg: Message, name: str) -> list[str]:
    name = name.lower()
    return [value for key, value in _raw_items(msg) if key.lower() == name]


class _Fields:
    """A message's header fields by lower-cased name, in order: ``_first`` and ``_all`` of many
    names from one pass over the fields instead of one pass (and copy) per name."""

    def __init__(self, msg: Message) -> None:
        self._by_name: dict[str, list[str]] = {}
        for key, value in _raw_items(msg):
            self._by_name.setdefault(key.lower(), []).append(value)

    def first(self, name: str) -> str | None:
        found = self._by_name.get(name.lower())
        return found[0] if found else None

    def all(self, name: str) -> list[str]:
        return list(self._by_name.get(name.lower(), ()))


_ANGLE = re.compile(r"<([^<>]*)>")


def _return_path(msg: Message) -> str | None:
    value = _first(msg, "return-path")
    if value is None:
        return None
    value = _unescape_8bit(value).strip()
    m = _ANGLE.search(value)
    inner = m.group(1) if m else value
    return _clean_addr(inner)


# --------------------------------------------------------------------------
# big messages: long body runs kept out of the feed parser
# --------------------------------------------------------------------------

# The stdlib parser holds a big message several times over: the whole message
# as a str, a StringIO copy of it at 4 bytes a character, a list of one str per
# line and the joined payload; decoding a base64 part adds the payload again as
# bytes, its lines and their join. A 24 MB message with one attachment took a
# process from 46 to 265 MB. So every run of body lines of at least
# _BLOB_MIN_BYTES is replaced in the parser's input by a one-line token, and the
# part whose payload is that token is decoded later straight from the raw bytes.
# That is also the cheaper path for an ordinary mail with an attachment: the feed
# parser's per-line loop was half of a parse, mostly over base64 lines (2,000
# bench mails: 487,791 lines through it, 100,925 with the tokens). A message
# shorter than _BLOB_MESSAGE_BYTES cannot hold such a run and is parsed plainly.
_BLOB_MIN_BYTES = 8 * 1024
_BLOB_MESSAGE_BYTES = _BLOB_MIN_BYTES
_FEED_CHUNK = 64 * 1024

# A line the feed parser can only ever treat as body text, whatever state it is
# in: not blank, not a header field or continuation (its headerRE), not a
# "From " envelope line, not a boundary or close delimiter (those start "--").
# Replacing a run of such lines by one such line changes no parsing decision;
# the run's last line break stays outside the token, because the parser strips
# the break before a boundary. The last line of the message may lack a break.
# A base64 line is such a line on its face (no colon, space or "-"); trying that
# shape first scans a 25 MB attachment in a third of the time the general test
# takes (tests/test_message_memory.py holds the two to the same runs).
_BODY_RUN = re.compile(
    rb"^(?:[A-Za-z0-9+/=]+(?:\r\n|\n|\r|\Z)"
    rb"|(?![\x21-\x39\x3b-\x7e]*:|From )[^\r\n \t-][^\r\n]*(?:\r\n|\r|\n|\Z))+",
    re.MULTILINE,
)
# What the stdlib's strict base64 check accepts once CR and LF are removed.
_BASE64_SHAPE = re.compile(rb"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")
_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


def _raw_payload(msg: Message) -> object:
    """The payload as parsed; ``get_payload()`` would decode 8-bit text with errors="replace"."""
    return getattr(msg, "_payload", None)


class _Blobs:
    """Raw spans left out of the parse, and the leaf parts whose payload is one.

    A held part's payload is ``before + <span> + after``; its decoded bytes are
    what ``Message.get_payload(decode=True)`` would return, computed from the
    raw bytes without building the payload string. Anything unusual is put
    back into the part (``materialise``) and left to the stdlib.
    """

    def __init__(self, work: bytes, spans: list[tuple[int, int]], token: re.Pattern[str]) -> None:
        self.work = work
        self.spans = spans
        self.token = token
        self.held: dict[int, tuple[Message, str, int, str]] = {}

    def text(self, index: int) -> str:
        start, end = self.spans[index]
        return str(memoryview(self.work)[start:end], "ascii", "surrogateescape")

    def restore(self, value: str) -> str:
        return self.token.sub(lambda m: self.text(int(m.group(1))), value)

    def adopt(self, root: Message) -> None:
        """Hold every leaf whose payload has one token; put the rest back."""
        stack = [root]
        while stack:
            msg = stack.pop()
            for attr in ("preamble", "epilogue"):
                value = getattr(msg, attr, None)
                if isinstance(value, str) and self.token.search(value):
                    setattr(msg, attr, self.restore(value))
            payload = _raw_payload(msg)
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
                continue
            if not isinstance(payload, str):
                continue
            found = list(self.token.finditer(payload))
            if len(found) == 1:
                m = found[0]
                self.held[id(msg)] = (msg, payload[: m.start()], int(m.group(1)), payload[m.end():])
            elif found:
                msg.set_payload(self.restore(payload))

    def holds(self, part: Message) -> bool:
        entry = self.held.get(id(part))
        return entry is not None and entry[0] is part

    def length(self, part: Message) -> int:
        """Length of the payload string the stdlib would hold."""
        _, before, index, after = self.held[id(part)]
        start, end = self.spans[index]
        return len(before) + (end - start) + len(after)

    def materialise(self, part: Message) -> None:
        entry = self.held.pop(id(part), None)
        if entry is not None:
            _, before, index, after = entry
            part.set_payload(before + self.text(index) + after)

    def materialise_tree(self, root: Message) -> None:
        stack = [root]
        while stack:
            msg = stack.pop()
            self.materialise(msg)
            payload = _raw_payload(msg)
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))

    def decoded(self, part: Message) -> bytes | None:
        """``get_payload(decode=True)`` of a held part, or None to let the stdlib do it."""
        _, before, index, after = self.held[id(part)]
        start, end = self.spans[index]
        view = memoryview(self.work)[start:end]
        cte = str(part.get("content-transfer-encoding", "")).lower()
        if cte == "base64":
            if before.strip("\r\n") or after.strip("\r\n"):
                return None
            return self._base64(start, end)
        if cte in _UU_ENCODINGS:
            return None
        data = view if not before and not after else b"".join(
            (before.encode("ascii", "surrogateescape"), view, after.encode("ascii", "surrogateescape"))
        )
        if cte == "quoted-printable":
            return binascii.a2b_qp(data)
        return bytes(data)

    def _base64(self, start: int, end: int) -> bytes | None:
        """The stdlib's ``decode_b`` on the joined lines, where that needs no copy.

        Well-formed input (alphabet, then at most two '=', length a multiple of
        4 without CR/LF) passes its strict check, and the lenient decoder
        skipping CR/LF gives the same bytes; input failing the strict check
        goes to the lenient decoder there too. Missing padding or a lenient
        failure: None, and the stdlib decodes it.
        """
        work = self.work
        view = memoryview(work)[start:end]
        if _BASE64_SHAPE.fullmatch(work, start, end):
            length = end - start - work.count(b"\r", start, end) - work.count(b"\n", start, end)
            if length % 4:
                return None
        try:
            return binascii.a2b_base64(view)
        except binascii.Error:
            return None


_BOUNDARY_PATTERN_HEAD = "(?P<sep>"
_BOUNDARY_PATTERN_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_BOUNDARY_TAIL = re.compile(_BOUNDARY_PATTERN_TAIL[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _BoundaryLine:
    """The feed parser's boundary pattern for one boundary, without compiling it.

    For each multipart the feed parser compiles ``(?P<sep>`` + the escaped
    delimiter + a fixed tail, and only ever calls ``match`` on a line and reads
    the ``end`` and ``linesep`` groups. Every boundary is new, so each compile
    missed ``re``'s cache: 665 compiles for 2,000 bench mails, about 6 % of a
    parse. The delimiter is a literal, so the line must start with it and the
    tail (compiled once) must match from there, which is what the whole pattern
    matches.
    """

    __slots__ = ("_delimiter", "_length")

    def __init__(self, delimiter: str) -> None:
        self._delimiter = delimiter
        self._length = len(delimiter)

    def match(self, line: str) -> re.Match[str] | None:
        if line.startswith(self._delimiter):
            return _BOUNDARY_TAIL.match(line, self._length)
        return None


class _FeedParserRe:
    """The ``re`` the private feed parser sees: the real one, but the boundary pattern
    becomes a ``_BoundaryLine``."""

    escape = staticmethod(re.escape)

    @staticmethod
    def compile(pattern: str, flags: int = 0) -> re.Pattern[str] | _BoundaryLine:
        if (not flags and isinstance(pattern, str) and pattern.startswith(_BOUNDARY_PATTERN_HEAD)
                and pattern.endswith(_BOUNDARY_PATTERN_TAIL)):
            escaped = pattern[len(_BOUNDARY_PATTERN_HEAD):-len(_BOUNDARY_PATTERN_TAIL)]
            return _BoundaryLine(_ESCAPED.sub(r"\1", escaped))
        return re.compile(pattern, flags)


def _private_feedparser() -> types.ModuleType:
    """The standard library's ``email.feedparser`` loaded once more for this module
    alone, its ``re`` replaced by ``_FeedParserRe``: the same code and the same
    ``Message`` objects, and no other user of the stdlib parser is touched."""
    spec = importlib.util.find_spec("email.feedparser")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.re = _FeedParserRe  # type: ignore[attr-defined]
    return module


_feedparser = _private_feedparser()
FeedParser = _feedparser.FeedParser


def _token_prefix() -> str:
    return "MAILDBLOB" + os.urandom(8).hex() + "x"


def _token_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"(\d+)")


# One random prefix for the process, so its pattern is compiled once (a new one per
# message cost a regex compile each); a message that happens to hold it gets its own.
_TOKEN_PREFIX = _token_prefix()
_TOKEN = _token_pattern(_TOKEN_PREFIX)


def _parse_runs_as_tokens(work: bytes) -> tuple[Message, bool, _Blobs | None]:
    """The feed parser over ``work`` with long body runs replaced by tokens: every parse's path (a
    message too short to hold such a run is fed as it is)."""
    prefix, token = _TOKEN_PREFIX, _TOKEN
    spans: list[tuple[int, int]] = []
    if len(work) >= _BLOB_MESSAGE_BYTES:
        while work.find(prefix.encode("ascii")) >= 0:
            prefix = _token_prefix()
            token = _token_pattern(prefix)
        for m in _BODY_RUN.finditer(work):
            start, end = m.span()
            if end - start < _BLOB_MIN_BYTES:
                continue
            if work[end - 1:end] == b"\n":
                end -= 2 if work[end - 2:end] == b"\r\n" else 1
            elif work[end - 1:end] == b"\r":
                end -= 1
            spans.append((start, end))
    parser = FeedParser(policy=_policy.compat32)
    view = memoryview(work)
    pos = 0
    for index, (start, end) in enumerate(spans + [(len(work), len(work))]):
        for chunk in range(pos, start, _FEED_CHUNK):
            parser.feed(str(view[chunk:min(chunk + _FEED_CHUNK, start)], "ascii", "surrogateescape"))
        if index < len(spans):
            parser.feed(f"{prefix}{index}")
        pos = end
    msg = parser.close()
    if not spans:
        return msg, True, None
    blobs = _Blobs(work, spans, token)
    blobs.adopt(msg)
    return msg, True, blobs


def _parse_tree(work: bytes, defects: list[str], notes: list[str]) -> tuple[Message, bool, _Blobs | None]:
    """Full parse, or headers only when the MIME tree is too deep for the parser."""
    try:
        return _parse_runs_as_tokens(work)
    except RecursionError:
        notes.append("MIME structure nested too deeply for the parser: body not read")
        defects.append("MimeNestingTooDeep")
        return BytesHeaderParser(policy=_policy.compat32).parsebytes(work), False, None


def parse_message(raw: bytes, limits: ParseLimits = ParseLimits(), size: int | None = None) -> InboundMessage:
    """Parse one raw message. Never raises except ``UnparsableMessage``.

    ``size``: the whole message's size when ``raw`` is only its start (the mailbox
    fetched no more than ``max_message_bytes`` of a bigger mail).
    """
    try:
        return _parse(bytes(raw), limits, size)
    except UnparsableMessage:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the last line of defence for guarantee 6: hostile input is just input
        log.warning("parser failed on %d-byte message: %s; trying mail-parser", len(raw), type(exc).__name__)
        try:
            return _second_opinion(bytes(raw), limits, f"{type(exc).__name__}: {exc}"[:300])
        except Exception as second:  # mail-parser may fail in its own ways on the same bytes
            raise UnparsableMessage(
                f"parser failed: {type(exc).__name__}: {exc}; mail-parser: {type(second).__name__}"[:500]
            ) from exc


def _second_opinion(raw: bytes, limits: ParseLimits, why: str) -> InboundMessage:
    """The user's chosen parser, mail-parser, as a second opinion when ours fails.

    The fast path is our own decoding over the standard library (mail-parser
    re-encodes attachments as text and has no limits before decoding, and is
    slower); a message that breaks it still deserves a ticket with its sender,
    subject and text rather than a quarantine record.
    """
    import mailparser

    work = raw[: limits.max_message_bytes]
    parsed = mailparser.parse_from_bytes(work)
    raw_sha = hashlib.sha256(raw).hexdigest()
    senders = [(str(n), _clean_addr(str(a))) for n, a in (parsed.from_ or []) if a]
    from_name, from_addr = senders[0] if senders else ("", "")
    subject = _one_line(str(parsed.subject or ""), 998)
    text = "\n".join(str(t) for t in parsed.text_plain) or html_to_text("\n".join(str(t) for t in parsed.text_html))
    text = _clean_text(text)[: limits.max_text_chars]
    message_id = normalise_message_id(str(parsed.message_id or ""))
    return InboundMessage(
        message_id=message_id, raw_sha256=raw_sha, size=len(raw),
        dedupe_key=message_id if message_id else "sha256:" + raw_sha,
        subject=subject, from_addr=from_addr, from_name=_one_line(from_name, 200),
        reply_to=(), to=tuple(_clean_addr(str(a)) for _, a in (parsed.to or []) if a),
        cc=tuple(_clean_addr(str(a)) for _, a in (parsed.cc or []) if a), return_path=None, date_header=None,
        in_reply_to=_ids(str(parsed.in_reply_to or ""), _MAX_IDS), references=_ids(str(parsed.references or ""), _MAX_IDS),
        headers={}, content_type="text/plain", text=text, html=None, attachments=(), report=None,
        language=guess_language(subject, text), defects=("ParsedByMailParserFallback",),
        notes=(f"parsed by mail-parser after our parser failed ({why}); attachments not extracted",),
    )


def _parse(raw: bytes, limits: ParseLimits, size: int | None = None) -> InboundMessage:
    raw_sha = hashlib.sha256(raw).hexdigest()
    notes: list[str] = []
    defects: list[str] = []
    work = raw
    truncated = False
    whole = max(size or 0, len(raw))
    if whole > len(raw):
        truncated = True
        work = raw[: limits.max_message_bytes]
        notes.append(
            f"message ({whole // (1024 * 1024)} MB) over max_message_bytes: only the first "
            f"{len(raw) // (1024 * 1024)} MB fetched and read, attachments not stored"
        )
    elif len(raw) > limits.max_message_bytes:
        truncated = True
        work = raw[: limits.max_message_bytes]
        notes.append(
            f"message ({len(raw) // (1024 * 1024)} MB) over max_message_bytes: only the first "
            f"{limits.max_message_bytes // (1024 * 1024)} MB read, attachments not stored"
        )
    work = _cap_headers(work, limits.max_header_bytes, notes)
    msg, complete, blobs = _parse_tree(work, defects, notes)
    del work  # a lazy part keeps its own reference to the bytes it needs

    walk = _Walk(limits=limits, notes=notes, defects=defects, plain=[], html=[], truncated=truncated, blobs=blobs)
    if complete:
        _walk_parts(msg, walk)
    else:
        _part_defects(walk, msg)
    walk.blobs = blobs = None  # decoded parts are in walk.attachments; let the raw spans go

    fields = _Fields(msg)
    message_id = normalise_message_id(fields.first("message-id"))
    subject = _one_line(decode_header_words(fields.first("subject") or ""), _SUBJECT_CAP)
    from_pairs = _addresses(fields.all("from"))
    from_name, from_addr = from_pairs[0] if from_pairs else ("", "")
    from_name = _one_line(decode_header_words(from_name), _NAME_CAP)

    html_text = "\n\n".join(walk.html) if walk.html else None
    if walk.plain:
        text = "\n\n".join(walk.plain)
    elif html_text is not None:
        text = html_to_text(html_text, limits.max_text_chars)
    else:
        text = _preamble_text(msg) if complete else ""
    if len(text) > limits.max_text_chars:
        notes.append(f"text ({len(text)} characters) cut to max_text_chars ({limits.max_text_chars})")
        text = text[: limits.max_text_chars]
    if html_text is not None and len(html_text) > limits.max_text_chars:
        html_text = html_text[: limits.max_text_chars]

    content_type = _content_type(msg)
    return_path = _return_path(msg)
    report: DeliveryReport | None = None
    if walk.status_blocks:
        report = _dsn_report(walk, text)
    if report is None:
        report_type = _report_type(msg) if content_type == "multipart/report" else ""
        if report_type in ("", "delivery-status"):
            report = _guessed_report(subject, from_addr, return_path, text, walk, report_type == "delivery-status")

    return InboundMessage(
        message_id=message_id,
        raw_sha256=raw_sha,
        size=whole,
        dedupe_key=message_id if message_id else "sha256:" + raw_sha,
        subject=subject,
        from_addr=from_addr,
        from_name=from_name,
        reply_to=tuple(a for _, a in _addresses(fields.all("reply-to"))),
        to=tuple(a for _, a in _addresses(fields.all("to"))),
        cc=tuple(a for _, a in _addresses(fields.all("cc"))),
        return_path=return_path,
        date_header=_date(fields.first("date")),
        in_reply_to=_ids(" ".join(fields.all("in-reply-to")), _MAX_IDS),
        references=_ids(" ".join(fields.all("references")), _MAX_IDS),
        headers=_kept_headers(msg),
        content_type=content_type,
        text=text,
        html=html_text,
        attachments=tuple(walk.attachments or ()),
        report=report,
        language=guess_language(subject, text),
        defects=tuple(defects),
        notes=tuple(notes),
    )


def _preamble_text(msg: Message) -> str:
    """Text some bouncers put before the first boundary, when no part holds any."""
    preamble = msg.preamble if isinstance(msg.preamble, str) else ""
    text = _clean_text(_unescape_8bit(preamble[:1_000_000])).strip()
    if text.lower().startswith("this is a multi-part message in mime format") and len(text) < 80:
        return ""
    return text


def _report_type(msg: Message) -> str:
    try:
        value = _param(msg, "report-type")
    except (ValueError, TypeError, IndexError):
        return ""
    if isinstance(value, tuple):
        value = value[2]
    return str(value or "").strip().lower()

