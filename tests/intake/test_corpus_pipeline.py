"""The whole real-world corpus through the whole pipeline: Maildir -> Daemon.run_once -> SQLite + SMTP.

Every file must end with exactly one recorded outcome (a ticket, a reply on a
ticket, a discard with its reason, or a quarantine record with its reason), and
no exception may escape the cycle. The counts per outcome and per MANIFEST
category are printed (run with ``-s``). Polish subjects and sender names in
iso-8859-2, windows-1250, encoded words, raw 8-bit and a mislabelled charset
must be stored as correct Unicode.
"""
from __future__ import annotations

import collections
import csv
import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from maild.config import load_config
from maild.ops.daemon import CycleReport, Daemon
from maild.storage.models import Intake, MessageRow, QuarantineRow, Ticket
from tests.helpers import maildir_source, write_config
from tests.servers.smtp_sink import SmtpSink

DATA = Path(__file__).parents[1] / "data"
CORPUS = DATA / "corpus"
EML = DATA / "eml"


@dataclass
class Run:
    daemon: Daemon
    report: CycleReport
    files: dict[str, str]  # Maildir unique name -> corpus-relative path
    categories: dict[str, str]
    sink: SmtpSink


def _manifest() -> dict[str, str]:
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        return {row["path"]: row["category"] for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("corpus")
    sink = SmtpSink()
    sink.start()
    try:
        config = write_config(tmp, source=maildir_source(tmp), smtp_port=sink.port)
        box = mailbox.Maildir(tmp / "Maildir", create=True)
        files: dict[str, str] = {}
        for path in sorted((CORPUS / "mail").rglob("*")):
            if path.is_file():
                files[box.add(path.read_bytes())] = path.relative_to(CORPUS).as_posix()
        for path in sorted(EML.glob("hdr-*.eml")):
            files[box.add(path.read_bytes())] = "eml/" + path.name
        daemon = Daemon(load_config(config))
        report = daemon.run_once()  # arrival is the Maildir name's timestamp: now
        yield Run(daemon, report, files, _manifest(), sink)
    finally:
        sink.stop()


def _outcomes(run: Run) -> dict[str, list[tuple[str, str]]]:
    """Corpus path -> every (disposition, reason) recorded for it, from the intake and quarantine tables."""
    found: dict[str, list[tuple[str, str]]] = {rel: [] for rel in run.files.values()}
    with run.daemon.sessions() as session:
        for intake in session.scalars(select(Intake)):
            found[run.files[intake.source_key.removeprefix("maildir:")]].append((intake.disposition, intake.reason))
        for q in session.scalars(select(QuarantineRow)):
            rel = run.files[q.source_key.removeprefix("maildir:")]
            if ("quarantine", q.reason) not in found[rel]:  # parsed mail also has its intake row
                found[rel].append(("quarantine", q.reason))
    return found


def test_every_corpus_message_has_exactly_one_recorded_outcome(corpus_run: Run) -> None:
    outcomes = _outcomes(corpus_run)
    assert len([r for r in outcomes if r.startswith("mail/")]) == 200
    assert set(corpus_run.categories) <= set(outcomes)
    not_one = {rel: found for rel, found in outcomes.items() if len(found) != 1}
    assert not not_one, f"files without exactly one outcome: {not_one}"
    allowed = {"ticket", "reply", "discard", "quarantine", "bounce"}
    for rel, [(disposition, reason)] in outcomes.items():
        assert disposition in allowed, rel
        if disposition in ("discard", "quarantine"):
            assert reason.strip(), f"{rel}: {disposition} without a reason"
    assert "retry" not in corpus_run.report.ingested, "a corpus message failed processing"
    assert not list(mailbox.Maildir(corpus_run.daemon.config.source.path).keys()), "inbox left non-empty"  # type: ignore[union-attr]

    per_outcome = collections.Counter(found[0][0] for found in outcomes.values())
    table: collections.Counter[tuple[str, str]] = collections.Counter()
    for rel, [(disposition, _)] in outcomes.items():
        table[(corpus_run.categories.get(rel, "eml"), disposition)] += 1
    print(f"\ncorpus through the pipeline: {dict(sorted(per_outcome.items()))}; "
          f"cycle: {corpus_run.report.summary()}")
    print("category      outcome     count")
    for (category, disposition), count in sorted(table.items()):
        print(f"{category:13} {disposition:11} {count:5}")
    # Every ticket-creating message is stored with its text; bounces about mail we
    # never sent are discarded with a reason, not turned into customer tickets.
    for rel, [(disposition, reason)] in outcomes.items():
        if corpus_run.categories.get(rel) == "bounce":
            assert disposition == "discard" and "delivery report" in reason, (rel, disposition, reason)


def test_no_acknowledgement_to_automatic_corpus_mail(corpus_run: Run) -> None:
    """Acks only go to people: no bounce or auto-reply sender of the corpus got one."""
    with corpus_run.daemon.sessions() as session:
        by_source = {i.source_key.removeprefix("maildir:"): i for i in session.scalars(select(Intake))}
        automatic_senders: set[str] = set()
        for unique, rel in corpus_run.files.items():
            intake = by_source.get(unique)
            if corpus_run.categories.get(rel) in ("bounce", "autoreply") and intake and intake.message_row_id:
                row = session.get(MessageRow, intake.message_row_id)
                assert row is not None
                automatic_senders.add(row.from_addr)
    received = {r for m in corpus_run.sink.messages for r in m.rcpt_tos}
    assert not (automatic_senders & received), automatic_senders & received
    for message in corpus_run.sink.messages:
        assert message.parsed["Auto-Submitted"] in ("auto-replied", "auto-generated")


POLISH = {
    "eml/hdr-iso-8859-2-words.eml": ("Zażółć gęślą jaźń - faktura", "Łukasz Żółkiewski"),
    "eml/hdr-windows-1250-b.eml": ("Błąd wydruku – źle liczy ŚWIADCZENIA", "Paweł Świątek"),
    "eml/hdr-mislabelled-cp1250-as-iso-8859-2.eml": ("Wyświetla się źle kwota", "Jarosław Źródło"),
    "eml/hdr-raw-8bit-cp1250.eml": ("Ważne: świadectwo pracy się nie drukuje", "Małgorzata Śląska"),
}


def test_polish_subjects_and_names_stored_as_unicode(corpus_run: Run) -> None:
    with corpus_run.daemon.sessions() as session:
        by_source = {i.source_key.removeprefix("maildir:"): i for i in session.scalars(select(Intake))}
        rows: dict[str, tuple[str, str, Ticket | None]] = {}
        for unique, rel in corpus_run.files.items():
            intake = by_source[unique]
            if intake.message_row_id is None:
                continue
            row = session.get(MessageRow, intake.message_row_id)
            assert row is not None
            ticket = session.get(Ticket, intake.ticket_id) if intake.ticket_id else None
            rows[rel] = (row.subject, row.from_name, ticket)
        for rel, (subject, name) in POLISH.items():
            stored_subject, stored_name, ticket = rows[rel]
            assert (stored_subject, stored_name) == (subject, name), rel
            assert ticket is not None and ticket.subject == subject and ticket.requester_name == name
        # Polish samples of the real corpus: no replacement characters, the letters intact.
        subject, _, _ = rows["mail/php-mime-mail-parser/issue212"]
        assert subject.startswith("Automatyczna odpowiedź")
        for rel in ("mail/bounceparser/polish-autoreply.msg", "mail/redmine/gmail-iso8859-2.eml",
                    "mail/roundcube/filename.eml", "mail/php-imap/issue-511.eml"):
            if rel in rows:
                subject, name, _ = rows[rel]
                assert "\ufffd" not in subject + name, rel
