"""The stages' facts found in the parse worker (``intake.facts``): on every mail of the
corpus they decide what the stages decide from the text themselves; the worker sends them
with each parsed mail while it keeps ahead of the main process; facts found with other words
than the daemon's are found again; and the reading's first batches are small, so the worker
starts at once."""
from __future__ import annotations

import mailbox
import time
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from maild.config import DEFAULT_URGENT_WORDS, load_config
from maild.intake import parsing
from maild.intake.facts import MailFacts, ReadingRules, mail_facts
from maild.intake.mailbox import FetchedMail, MaildirSource, plan_batches
from maild.intake.message import InboundMessage, ParseLimits
from maild.intake.parsing import ParseAhead, parse_one
from maild.intake.screen import ScreenSettings, screen
from maild.ops.daemon import FIRST_BATCH, Daemon
from maild.rules.peak import default_peak_windows
from maild.rules.prioritise import TextSignals, prioritise
from maild.rules.scope import clue_words, guess_scope
from maild.storage.models import Ticket
from tests.helpers import make_mail, maildir_source, write_config

UTC = timezone.utc
DATA = Path(__file__).parents[1] / "data"
RULES = ReadingRules(tuple(w.casefold() for w in DEFAULT_URGENT_WORDS), default_peak_windows())
# days with other peak windows active (payroll; ZUS, KSeF, year end; VAT, ZUS, PIT in January)
DAYS = (date(2026, 12, 6), date(2026, 12, 15), date(2027, 1, 20), date(2027, 3, 30))


def _corpus() -> list[bytes]:
    paths = [p for p in sorted((DATA / "corpus" / "mail").rglob("*")) if p.is_file()]
    return [p.read_bytes() for p in (*paths, *sorted((DATA / "eml").glob("*.eml")))]


def test_the_workers_facts_decide_as_the_stages_do_on_every_mail_of_the_corpus() -> None:
    settings = ScreenSettings(own_addresses=frozenset({"support@firma.pl"}))
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    with_facts = 0
    for raw in _corpus():
        msg = parse_one(raw, ParseLimits(), rules=RULES)
        if not isinstance(msg, InboundMessage):
            continue
        assert msg.facts is not None and msg.reply_split is not None, msg.subject
        with_facts += 1
        bare = replace(msg, facts=None)
        for arrived in (now, now - timedelta(days=5)):
            assert screen(msg, settings, arrived, now) == screen(bare, settings, arrived, now)
        new_text = msg.reply_split[0]
        scope, clues = guess_scope(msg.subject, new_text)
        assert (msg.facts.scope, msg.facts.clues) == (scope, clue_words(msg.subject, new_text, clues))
        for day in DAYS:
            for automatic in (False, True):
                asked = dict(kind="prepaid", verified=True, subject=msg.subject, text=new_text, automatic=automatic,
                             urgent_words=RULES.urgent_words, peak_windows=RULES.peak_windows, day=day)
                assert prioritise(**asked, signals=msg.facts.signals) == prioritise(**asked)  # type: ignore[arg-type]
    assert with_facts > 100


@given(st.text(max_size=300), st.text(max_size=80),
       st.sampled_from([None, "auto-replied", "Auto-Replied; x", "no", "auto-generated"]))
def test_out_of_office_and_challenge_words_found_once_screen_the_same(text: str, subject: str,
                                                                      submitted: str | None) -> None:
    headers = {"auto-submitted": submitted} if submitted is not None else {}
    raw = make_mail(subject="x", body="x\n", headers={"Auto-Submitted": submitted} if submitted else None)
    msg = parse_one(raw, ParseLimits())
    assert isinstance(msg, InboundMessage)
    msg = replace(msg, subject=subject, text=text, headers=headers)
    facts = mail_facts(subject, text, text, headers, RULES)
    settings = ScreenSettings(own_addresses=frozenset({"support@firma.pl"}))
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert screen(replace(msg, facts=facts), settings, now, now) == screen(msg, settings, now, now)


def test_the_parse_worker_sends_each_mails_facts() -> None:
    now = datetime.now(UTC)
    raws = [make_mail(subject="PILNE: awaria", body="Nie działa wydruk JPK.\n", msgid="<f1@acme.pl>"),
            make_mail(subject="Out of office", body="I am on annual leave.\n", msgid="<f2@acme.pl>",
                      headers={"Auto-Submitted": "auto-replied"})]
    mails = [FetchedMail(f"f:{i}", raw, now, len(raw)) for i, raw in enumerate(raws)]
    ahead = ParseAhead(ParseLimits(), rules=RULES)
    try:
        parsed = ahead.result(ahead.submit(mails), mails)
    finally:
        ahead.close()
    for msg in parsed:
        assert isinstance(msg, InboundMessage) and msg.reply_split is not None
        assert msg.facts == mail_facts(msg.subject, msg.text, msg.reply_split[0], msg.headers, RULES)
    first, second = parsed
    assert isinstance(first, InboundMessage) and isinstance(second, InboundMessage)
    assert first.facts is not None and first.facts.signals.urgent == ("PILNE", "awaria", "Nie działa")  # as the mail wrote them
    assert first.facts.signals.peak_topics == {"JPK"} and first.facts.scope == "incident"
    assert second.facts is not None and second.facts.flags.ooo_subject and second.facts.flags.ooo_body
    plain = ParseAhead(ParseLimits())  # no rules: parsed and split, the facts left to the stages
    try:
        assert all(isinstance(m, InboundMessage) and m.facts is None for m in plain.result(plain.submit(mails), mails))
    finally:
        plain.close()


def test_facts_found_with_other_words_are_found_again(tmp_path: Path, smtp_sink: object) -> None:
    """The pipeline takes a mail's urgent words from the worker's facts when they were found
    with the daemon's own words, and looks again when they were not."""
    path = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)  # type: ignore[attr-defined]
    daemon = Daemon(load_config(path))
    try:
        now = datetime.now(UTC)
        raws = [make_mail(subject="Faktura", body="Zwykła sprawa.\n", msgid=f"<o{i}@acme.pl>") for i in range(2)]
        mails = [FetchedMail(f"o:{i}", raw, now, len(raw)) for i, raw in enumerate(raws)]
        rules = daemon.ingestor.ctx.reading
        other = ReadingRules(("zwykła",), rules.peak_windows)
        parsed = []
        for mail, words in zip(mails, (rules, other)):
            msg = parse_one(mail.raw, ParseLimits(), rules=words)
            assert isinstance(msg, InboundMessage) and msg.facts is not None
            # the worker's word for it: "pilne" (with the daemon's words: taken as found)
            forged = replace(msg.facts, signals=TextSignals(("pilne",), frozenset()))
            parsed.append(replace(msg, facts=forged))
        daemon.ingestor.ingest_batch(mails, parsed)
        with daemon.sessions() as session:
            rows = session.execute(select(Ticket.subject, Ticket.priority).order_by(Ticket.id)).all()
        assert [priority for _, priority in rows] == ["P1", "P3"]
        assert isinstance(parsed[1].facts, MailFacts) and parsed[1].facts.for_rules(rules) is None
    finally:
        daemon.parse_ahead.close()
        daemon.source.close()


@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=80), st.integers(min_value=1, max_value=40),
       st.integers(min_value=1, max_value=12000), st.integers(min_value=1, max_value=50))
def test_the_first_batches_grow_from_the_first_count(sizes: list[int], max_count: int, max_bytes: int,
                                                     first: int) -> None:
    batches = plan_batches(list(enumerate(sizes)), max_count, max_bytes, first)
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    cap = min(first, max_count)
    for b in batches:
        assert 1 <= len(b) <= cap
        assert len(b) == 1 or sum(sizes[i] for i in b) <= max_bytes
        cap = min(cap * 2, max_count)
    if max_bytes >= 5000 * max_count and batches:  # the count alone bounds them: each as big as allowed
        assert len(batches[0]) == min(first, max_count, len(sizes))


@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=200), st.integers(min_value=1, max_value=60),
       st.integers(min_value=1, max_value=60000), st.integers(min_value=1, max_value=50))
def test_the_last_batches_shrink_back_to_the_first_count(sizes: list[int], max_count: int, max_bytes: int,
                                                         first: int) -> None:
    """The daemon stores the last batch with its worker idle: a plan of several batches ends
    with one of at most twice the first count, each within the bounds, a few batches more."""
    batches = plan_batches(list(enumerate(sizes)), max_count, max_bytes, first)
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    if len(batches) > 1:
        assert len(batches[-1]) <= 2 * first
    untapered = plan_batches(list(enumerate(sizes)), max_count, max_bytes, None)
    assert all(len(b) <= max_count and (len(b) == 1 or sum(sizes[i] for i in b) <= max_bytes) for b in batches)
    assert len(batches) <= len(untapered) + 2 * len(bin(max_count))


def test_a_reading_starts_with_a_small_batch(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for i in range(FIRST_BATCH * 4):
        box.add(make_mail(msgid=f"<r{i}@acme.pl>"))
    from maild.config import MaildirSettings

    source = MaildirSource(MaildirSettings(path=str(tmp_path / "Maildir")))
    try:
        sizes = [len(b) for b in source.batches(max_count=500, first_count=FIRST_BATCH)]
    finally:
        source.close()
    assert sizes == [FIRST_BATCH, 2 * FIRST_BATCH, FIRST_BATCH]


def test_the_worker_leaves_the_facts_to_the_stages_while_the_main_process_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch not parsed when its result is asked for (the main process waits: the worker
    bounds the reading) sends the next one without facts; a batch ready when asked brings them back."""
    real = parsing.parse_message

    def slow(raw: bytes, limits: ParseLimits = ParseLimits(), size: int | None = None) -> InboundMessage:
        if b"slow-one" in raw:
            time.sleep(0.5)
        return real(raw, limits, size)

    monkeypatch.setattr(parsing, "parse_message", slow)  # before the fork: the worker has it
    now = datetime.now(UTC)

    def batch(tag: str, subject: str) -> list[FetchedMail]:
        raws = [make_mail(subject=subject, msgid=f"<{tag}{i}@acme.pl>") for i in range(3)]
        return [FetchedMail(f"{tag}:{i}", raw, now, len(raw)) for i, raw in enumerate(raws)]

    a, b, c = batch("a", "slow-one pilne"), batch("b", "pilne"), batch("c", "pilne")
    ahead = ParseAhead(ParseLimits(), rules=RULES)
    try:
        first, second = ahead.submit(a), ahead.submit(b)
        with_a = ahead.result(first, a)  # asked at once: the main process waits for it
        time.sleep(1.0)  # the main process stores a while the worker parses b
        with_b = ahead.result(second, b)  # ready when asked
        with_c = ahead.result(ahead.submit(c), c)
    finally:
        ahead.close()
    has = [[isinstance(m, InboundMessage) and m.facts is not None for m in parsed] for parsed in (with_a, with_b, with_c)]
    assert has == [[True] * 3, [False] * 3, [True] * 3]
