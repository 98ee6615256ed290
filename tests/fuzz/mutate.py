"""Mutations of real mail and the stages they are fed through, shared by the
hypothesis test (tests/test_fuzz.py), the long run (bench/fuzz.py) and the
atheris target (tests/fuzz/fuzz_parse.py).

The stages are parse -> screen -> Authentication-Results check -> thread (with a
stub lookup): the pure part of the ingest pipeline, where hostile bytes first
meet our code. ``run_stages`` raises only if a stage lets an exception escape.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from maild.intake.message import ParseLimits, UnparsableMessage, parse_message
from maild.intake.screen import ScreenSettings, screen, sender_authenticated
from maild.intake.thread import ThreadSettings, TicketFacts, decide_thread

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus" / "mail"
EML = Path(__file__).resolve().parent.parent / "data" / "eml"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SCREEN = ScreenSettings(own_addresses=frozenset({"support@firma.pl"}), instance_id="fuzz")
THREAD = ThreadSettings(ticket_prefix="SUP", support_addresses=frozenset({"support@firma.pl"}))
# Small limits so that the limit paths are exercised, not only the happy ones.
LIMITS = ParseLimits(max_message_bytes=512 * 1024, max_attachments=5, max_attachment_bytes=256 * 1024,
                     max_parts=200, max_depth=8, max_header_bytes=64 * 1024, max_text_chars=100_000)
SEEDS_MAX_BYTES = 300 * 1024

MUTATIONS = ("flip", "truncate", "duplicate_header", "damage_boundary", "insert", "delete", "splice",
             "crlf", "nul", "high_bytes", "repeat")


def load_seeds(max_bytes: int = SEEDS_MAX_BYTES) -> list[bytes]:
    """Corpus and hand-written .eml files, small enough to mutate quickly."""
    seeds = []
    for root in (CORPUS, EML):
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.stat().st_size <= max_bytes:
                seeds.append(path.read_bytes())
    return seeds


class ParserBug(AssertionError):
    """The parser's last line of defence fired: an exception inside it."""


class StubLookup:
    """Every ticket number and Message-ID exists; which ticket depends on the input."""

    def by_number(self, number: int) -> TicketFacts | None:
        if number % 3 == 0:
            return None
        return TicketFacts(ticket_id=number, number=number, customer_id="acme" if number % 2 else None,
                           status=("open", "waiting", "resolved", "closed")[number % 4],
                           resolved_at=NOW - timedelta(days=number % 20), participants=frozenset({"jan@acme.pl"}))

    def by_message_ids(self, message_ids: Sequence[str]) -> TicketFacts | None:
        if not message_ids:
            return None
        n = sum(len(m) for m in message_ids)
        return None if n % 5 == 0 else self.by_number(n % 1000 + 1)


def mutate(data: bytes, rng: random.Random, steps: int = 0, ops: Sequence[str] = MUTATIONS) -> bytes:
    """Apply ``steps`` (default 1-4) random mutations of the kinds in ``ops``."""
    buf = bytearray(data)
    for _ in range(steps or rng.randint(1, 4)):
        op = rng.choice(ops)
        n = len(buf)
        if op == "flip" and n:
            for _ in range(rng.randint(1, 16)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == "truncate" and n:
            del buf[rng.randrange(n):]
        elif op == "duplicate_header":
            end = buf.find(b"\n\n")
            head = buf[: end if end > 0 else min(n, 2000)]
            lines = [ln for ln in bytes(head).split(b"\n") if b":" in ln]
            if lines:
                line = rng.choice(lines)
                copies = line + b"\n"
                if rng.random() < 0.3:
                    copies *= rng.randint(2, 200)
                at = rng.randint(0, len(head))
                buf[at:at] = copies
        elif op == "damage_boundary":
            import re as _re
            bounds = _re.findall(rb'boundary="?([^";\r\n]+)', bytes(buf[:100_000]), flags=_re.IGNORECASE)
            if bounds:
                b = rng.choice(bounds)
                choice = rng.randrange(4)
                if choice == 0:  # remove every closing delimiter
                    buf = bytearray(bytes(buf).replace(b"--" + b + b"--", b""))
                elif choice == 1:  # change the boundary in the header only
                    buf = bytearray(bytes(buf).replace(b, b + b"X", 1))
                elif choice == 2:  # nest: reuse the boundary inside a part
                    i = bytes(buf).find(b"--" + b)
                    if i >= 0:
                        buf[i:i] = b"--" + b + b"\nContent-Type: multipart/mixed; boundary=\"" + b + b"\"\n\n"
                else:  # cut a delimiter in half
                    i = bytes(buf).find(b"--" + b)
                    if i >= 0:
                        del buf[i + 2: i + 2 + len(b) // 2]
        elif op == "insert" and n:
            i = rng.randrange(n + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == "delete" and n:
            i = rng.randrange(n)
            del buf[i: i + rng.randint(1, 512)]
        elif op == "splice" and n > 2:
            i, j = sorted(rng.sample(range(n), 2))
            chunk = bytes(buf[i:j][:4096])
            k = rng.randrange(n)
            buf[k:k] = chunk
        elif op == "crlf":
            buf = bytearray(bytes(buf).replace(b"\r\n", b"\n") if rng.random() < 0.5 else bytes(buf).replace(b"\n", b"\r\n"))
        elif op == "nul" and n:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(n)] = 0
        elif op == "high_bytes" and n:
            end = buf.find(b"\n\n")
            limit = end if end > 0 else n
            for _ in range(rng.randint(1, 32)):
                buf[rng.randrange(max(limit, 1))] = rng.randrange(0x80, 0x100)
        elif op == "repeat" and n:
            i = rng.randrange(n)
            buf[i:i] = bytes(buf[i: i + rng.randint(1, 64)]) * rng.randint(2, 500)
    return bytes(buf)


def run_stages(raw: bytes) -> str:
    """Parse, screen, authenticate and thread one message; an escaping exception is a finding.

    ``parse_message`` hands a message to mail-parser when its own parser
    raises, and turns a failure of both into ``UnparsableMessage`` (the last
    lines of defence: such mail still gets a ticket or a quarantine record).
    Neither should ever be needed, so here both count as findings: a bug in
    our parser.
    """
    try:
        msg = parse_message(raw, LIMITS)
    except UnparsableMessage as exc:
        raise ParserBug(exc.reason) from exc
    if "ParsedByMailParserFallback" in msg.defects:
        raise ParserBug(msg.notes[0] if msg.notes else "our parser failed; mail-parser fallback used")
    screening = screen(msg, SCREEN, NOW - timedelta(hours=1), NOW)
    sender_authenticated(msg, "mx.firma.pl", msg.return_path or None)
    decision = decide_thread(
        subject=msg.subject, from_addr=msg.from_addr, recipients=(*msg.to, *msg.cc),
        in_reply_to=msg.in_reply_to, references=msg.references, sender_customer_id="acme",
        sender_is_consultant=False, lookup=StubLookup(), settings=THREAD, now=NOW,
    )
    return f"{screening.kind}/{decision.rule}"
