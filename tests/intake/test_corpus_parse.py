"""Every real-world corpus message parses and screens; bounces and auto-replies are caught.

Counts per MANIFEST category and screening kind are printed (run with ``-s``);
the misses are listed by name instead of being hidden in a percentage.
"""
from __future__ import annotations

import collections
import csv
from datetime import datetime, timezone
from pathlib import Path

import pytest

from maild.intake.message import InboundMessage, UnparsableMessage, parse_message
from maild.intake.screen import ScreenSettings, Screening, screen

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SETTINGS = ScreenSettings(own_addresses=frozenset({"support@example.com"}), instance_id="test")


def _manifest() -> dict[str, str]:
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        return {row["path"]: row["category"] for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[str, InboundMessage | None, Screening | None]]:
    categories = _manifest()
    found: dict[str, tuple[str, InboundMessage | None, Screening | None]] = {}
    for path in sorted((CORPUS / "mail").rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(CORPUS).as_posix()
        try:
            msg = parse_message(path.read_bytes())
        except UnparsableMessage:
            found[rel] = (categories.get(rel, "?"), None, None)
            continue
        found[rel] = (categories.get(rel, "?"), msg, screen(msg, SETTINGS, NOW, NOW))
    return found


def test_manifest_and_files_agree(results: dict[str, tuple[str, InboundMessage | None, Screening | None]]) -> None:
    assert set(results) == set(_manifest())
    assert len(results) == 200


def test_every_message_parses_and_screens(
    results: dict[str, tuple[str, InboundMessage | None, Screening | None]],
) -> None:
    unparsable = [rel for rel, (_, msg, _) in results.items() if msg is None]
    # Quarantine is allowed by the design, but none of this corpus needs it.
    assert unparsable == []
    table: collections.Counter[tuple[str, str]] = collections.Counter()
    for category, _, screening in results.values():
        assert screening is not None
        table[(category, screening.kind + ("/automatic" if screening.automatic else ""))] += 1
    print("\ncategory      kind                 count")
    for (category, kind), count in sorted(table.items()):
        print(f"{category:13} {kind:20} {count:5}")


def test_bounces_are_classified_bounce(results: dict[str, tuple[str, InboundMessage | None, Screening | None]]) -> None:
    bounces = {rel: s for rel, (cat, _, s) in results.items() if cat == "bounce"}
    misses = sorted(rel for rel, s in bounces.items() if s is None or s.kind != "bounce" or not s.automatic)
    print(f"\nbounce: {len(bounces) - len(misses)}/{len(bounces)} classified bounce; misses: {misses}")
    assert not misses


def test_bounces_mostly_carry_a_delivery_report(
    results: dict[str, tuple[str, InboundMessage | None, Screening | None]],
) -> None:
    bounces = {rel: m for rel, (cat, m, _) in results.items() if cat == "bounce"}
    without = sorted(rel for rel, m in bounces.items() if m is None or m.report is None)
    print(f"\nbounce without DeliveryReport: {without}")
    assert len(without) <= 1


def test_autoreplies_are_automatic(results: dict[str, tuple[str, InboundMessage | None, Screening | None]]) -> None:
    replies = {rel: s for rel, (cat, _, s) in results.items() if cat == "autoreply"}
    misses = sorted(rel for rel, s in replies.items() if s is None or not s.automatic)
    print(f"\nautoreply: {len(replies) - len(misses)}/{len(replies)} automatic; misses: {misses}")
    assert not misses


def test_people_are_mostly_human(results: dict[str, tuple[str, InboundMessage | None, Screening | None]]) -> None:
    """Person-written categories must rarely be taken for machines (a missed acknowledgement)."""
    people = {rel: (m, s) for rel, (cat, m, s) in results.items() if cat in ("plain", "reply", "forward", "attachment", "charset", "html")}
    machine = sorted(rel for rel, (m, s) in people.items()
                     if s is not None and s.automatic and m is not None
                     and "list-id" not in m.headers and "precedence" not in m.headers)
    print(f"\nperson-written mail taken as automatic without list/precedence headers: {machine}")
    assert not machine


def test_polish_corpus_samples_decode_cleanly(
    results: dict[str, tuple[str, InboundMessage | None, Screening | None]],
) -> None:
    for rel in ("mail/bounceparser/polish-autoreply.msg", "mail/redmine/gmail-iso8859-2.eml",
                "mail/php-mime-mail-parser/issue212"):
        _, msg, _ = results[rel]
        assert msg is not None
        assert "\ufffd" not in msg.text and "\ufffd" not in msg.subject
    _, ooo, screening = results["mail/php-mime-mail-parser/issue212"]
    assert ooo is not None and screening is not None
    assert ooo.subject.startswith("Automatyczna odpowiedź")
    assert screening.out_of_office
    _, named, _ = results["mail/roundcube/filename.eml"]
    assert named is not None
    assert any("żółć" in a.filename for a in named.attachments)
