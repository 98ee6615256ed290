"""Loop protection: decide whether a message may ever get an automatic answer.

Guarantee 4 of the design ("no mail loops") rests here. An acknowledgement sent
to a vacation responder, a bounce or a mailing list is at best noise and at
worst an endless ping-pong, so every signal a machine leaves on its mail counts
(RFC 3834 ``Auto-Submitted``, ``Precedence``, the Microsoft and list headers,
null return paths, DSNs) and any one of them makes the message ``automatic``.
Erring towards "automatic" costs one missing acknowledgement; erring the other
way can cost a mailbox. Only our own mail coming back is dropped; everything
else is still stored on a ticket.

``sender_authenticated`` answers a different question (may this From address
be believed when matching a customer) from the receiving MTA's
Authentication-Results, never from anything the sender could have written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from maild.intake.facts import TextFlags, auto_submitted, text_flags
from maild.intake.message import InboundMessage

__all__ = ["ScreenSettings", "Screening", "TextFlags", "screen", "sender_authenticated", "text_flags"]

Kind = Literal["human", "autoreply", "bounce", "list", "own"]


@dataclass(frozen=True)
class ScreenSettings:
    own_addresses: frozenset[str]
    marker_header: str = "X-Maild-Origin"
    instance_id: str = ""
    max_age_for_autoreply: timedelta = timedelta(days=3)


@dataclass(frozen=True)
class Screening:
    kind: Kind
    automatic: bool
    out_of_office: bool
    discard: str | None
    reasons: tuple[str, ...]


_DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "postmaster", "post_master", "mail-daemon", "mailerdaemon"})
# "weak-autoreply" (Precedence bulk/junk, X-Auto-Response-Suppress) ranks
# below list headers: list software and notification senders set both.
_KIND_ORDER: tuple[Kind, ...] = ("own", "bounce", "autoreply", "list")
_SUPPRESS_VALUES = frozenset({"all", "oof", "autoreply"})


def _domain(addr: str) -> str:
    return addr.rsplit("@", 1)[-1].strip().strip(">").lower() if "@" in addr else ""


def screen(msg: InboundMessage, settings: ScreenSettings, arrived_at: datetime, now: datetime) -> Screening:
    """Classify one message; ``arrived_at`` and ``now`` are passed in, never read."""
    headers = msg.headers
    flags = msg.facts.flags if msg.facts is not None else text_flags(msg.subject, msg.text, headers)
    reasons: list[str] = []
    kinds: set[str] = set()
    ooo = False

    marker = headers.get(settings.marker_header.lower())
    if marker is not None:
        if not settings.instance_id or marker.strip() == settings.instance_id:
            reason = f"{settings.marker_header}: {marker.strip()[:80]} (our own mail came back)"
            return Screening("own", True, False, reason, (reason,))
        reasons.append(f"{settings.marker_header}: {marker.strip()[:80]} (another maild instance)")
        kinds.add("autoreply")
    if msg.from_addr and msg.from_addr in settings.own_addresses:
        reasons.append(f"From: {msg.from_addr} is our own address")
        kinds.add("own")

    if msg.report is not None:
        reasons.append("delivery report" + (f" (status {msg.report.status})" if msg.report.status else ""))
        kinds.add("bounce")
    elif msg.content_type == "multipart/report":
        reasons.append("Content-Type: multipart/report")
        kinds.add("autoreply")
    local = msg.from_addr.split("@", 1)[0].lower()
    if local in _DAEMON_LOCALPARTS:
        reasons.append(f"sender is {local}")
        kinds.add("bounce")
    if msg.return_path == "":
        reasons.append("Return-Path: <> (null sender)")
        kinds.add("autoreply")

    value = auto_submitted(headers)
    if value is not None:
        if value != "no":
            reasons.append(f"Auto-Submitted: {value[:40]}")
            kinds.add("autoreply")
            if value == "auto-replied" and (flags.ooo_subject or flags.ooo_body):
                ooo = True
    for name in ("x-autoreply", "x-autorespond"):
        if name in headers:
            reasons.append(f"{name}: {headers[name][:40]}")
            kinds.add("autoreply")
            ooo = True
    suppress = headers.get("x-auto-response-suppress")
    if suppress is not None:
        values = {v.strip().lower() for v in re.split(r"[,\s]+", suppress) if v.strip()}
        if values & _SUPPRESS_VALUES:
            reasons.append(f"X-Auto-Response-Suppress: {suppress[:40]}")
            kinds.add("weak-autoreply")
    if headers.get("x-apple-action", "").strip().lower() == "vacation":
        reasons.append("X-Apple-Action: VACATION")
        kinds.add("autoreply")
        ooo = True

    is_list = False
    for name in ("list-id", "list-unsubscribe"):
        if name in headers:
            reasons.append(f"{name} present")
            is_list = True
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        reasons.append(f"Precedence: {precedence}")
        if precedence == "list":
            is_list = True
        else:
            kinds.add("weak-autoreply")
    if is_list:
        kinds.add("list")

    if flags.ooo_subject:
        reasons.append("out-of-office subject")
        kinds.add("autoreply")
        ooo = True
    if flags.challenge:
        reasons.append("challenge/response text")
        kinds.add("autoreply")

    kind: Kind = "human"
    for candidate in _KIND_ORDER:
        if candidate in kinds:
            kind = candidate
            break
    if kind == "human" and "weak-autoreply" in kinds:
        # Bulk precedence or a suppress request without list headers: a
        # machine sent it, but nothing says it is a list.
        kind = "autoreply"
    automatic = kind != "human"

    age = now - arrived_at
    if age > settings.max_age_for_autoreply:
        hours = int(age.total_seconds() // 3600)
        reasons.append(f"arrived {hours} h ago, older than {settings.max_age_for_autoreply} (too late to acknowledge)")
        automatic = True
    return Screening(kind, automatic, ooo and kind in ("autoreply", "list"), None, tuple(reasons))


# --------------------------------------------------------------------------
# Authentication-Results (RFC 8601)
# --------------------------------------------------------------------------

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*([a-z0-9_-]+)\s*=\s*([a-z]+)\b(.*)$", re.IGNORECASE | re.DOTALL)
_PROP = re.compile(r"\b([a-z]+)\.([a-z0-9_-]+)\s*=\s*(\"[^\"]*\"|[^\s;]+)", re.IGNORECASE)


def _strip_comments(value: str) -> str:
    for _ in range(5):
        stripped = _COMMENT.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    return value


def _aligned(a: str, b: str) -> bool:
    """Relaxed alignment without a public-suffix list: same domain, or one is a
    subdomain of the other and the shorter has at least two labels."""
    a, b = a.strip(".").lower(), b.strip(".").lower()
    if not a or not b:
        return False
    if a == b:
        return True
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    return shorter.count(".") >= 1 and longer.endswith("." + shorter)


def _trusted_results(msg: InboundMessage, trusted_authserv_id: str) -> str | None:
    """The topmost Authentication-Results header of our own MTA.

    The receiving MTA prepends its header; anything below it with the same id
    may have been written by the sender, so only the first one counts.
    """
    trusted = trusted_authserv_id.strip().lower()
    for header in msg.headers.get("authentication-results", "").split("\n"):
        cleaned = _strip_comments(header)
        authserv = cleaned.split(";", 1)[0].strip().split()
        if authserv and authserv[0].lower() == trusted:
            return cleaned
    return None


def sender_authenticated(
    msg: InboundMessage, trusted_authserv_id: str, envelope_from: str | None = None
) -> tuple[bool, str]:
    """Whether our own MTA verified the From domain: (verified, reason for the record)."""
    from_domain = _domain(msg.from_addr)
    if not from_domain:
        return False, "no From address"
    if not trusted_authserv_id.strip():
        return False, "no trusted authserv-id configured"
    results = _trusted_results(msg, trusted_authserv_id)
    if results is None:
        return False, f"no Authentication-Results from {trusted_authserv_id}"
    seen: list[str] = []
    for clause in results.split(";")[1:]:
        m = _RESULT.match(clause)
        if m is None:
            continue
        method, result, rest = m.group(1).lower(), m.group(2).lower(), m.group(3)
        props = {f"{p.group(1).lower()}.{p.group(2).lower()}": p.group(3).strip('"') for p in _PROP.finditer(rest)}
        seen.append(f"{method}={result}")
        if result != "pass":
            continue
        if method == "dkim":
            signer = props.get("header.d") or _domain(props.get("header.i", ""))
            if signer and _aligned(signer, from_domain):
                return True, f"dkim=pass header.d={signer} aligned with From {from_domain}"
        elif method == "spf":
            mailfrom = props.get("smtp.mailfrom") or envelope_from or msg.return_path or ""
            spf_domain = _domain(mailfrom) or mailfrom.lower()
            if spf_domain and _aligned(spf_domain, from_domain):
                return True, f"spf=pass smtp.mailfrom={spf_domain} aligned with From {from_domain}"
        elif method == "dmarc":
            header_from = props.get("header.from", "").lower()
            if header_from and _aligned(header_from, from_domain):
                return True, f"dmarc=pass header.from={header_from}"
    summary = ", ".join(seen) if seen else "no results"
    return False, f"{trusted_authserv_id}: {summary}; none passed aligned with From {from_domain}"
