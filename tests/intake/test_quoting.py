"""split_reply on real replies from the clients our customers use.

Samples live in tests/data/replies (sources and licences in MANIFEST.tsv);
the stdlib parser extracts the text part so these tests do not depend on
maild.message.
"""
from __future__ import annotations

import email
import re
import sys
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.intake import quoting
from maild.intake.quoting import split_reply

REPLIES = Path(__file__).parents[1] / "data" / "replies"


def plain_text(name: str) -> str:
    message = email.message_from_bytes((REPLIES / name).read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("plain",))
    assert part is not None, name
    content = part.get_content()
    assert isinstance(content, str)
    return content


@pytest.mark.parametrize(
    ("sample", "new", "history_starts"),
    [
        ("talon-gmail.eml", "Hello", "On Mon, Apr 2, 2012 at 6:26 PM, Megan One <xxx@gmail.com> wrote:"),
        ("talon-apple_mail.eml", "Hello", "On Apr 3, 2012, at 4:19 PM, bob wrote:"),
        ("talon-apple_mail_2.eml", "Hello", "> On 22 Aug 2015, at 19:21, Adam Renberg"),
        ("talon-iphone.eml", "Hello\n\nSent from my iPhone", "On Apr 3, 2012, at 4:19 PM, bob"),
        ("talon-hotmail.eml", "Hello", "> Subject: Test"),
        ("talon-outlook.eml", "Hello", "From: xxx@xxx.mailgun.org [mailto:xxx@xxx.mailgun.org]\nSent:"),
        ("talon-aol.eml", "Hello", "-----Original Message-----\nFrom: bob <bob@example.com>"),
        ("talon-yahoo.eml", "Hello", "----- Original Message -----\nFrom:"),
        (
            "php-imap-issue-412.eml",
            "Here is my reply to your reply.\n\nTony Marston",
            "From: gmx@tonymarston.co.uk<mailto:gmx@tonymarston.co.uk>\nSent: 31 May 2023 17:46",
        ),
        (
            "outlook365-underscore.eml",
            "Thanks, the report shows data again.\n\nMark",
            "________________________________\nFrom: Support <support@example.com>\nSent:",
        ),
        (
            "pl-outlook-odp.eml",
            "Dzień dobry,\n\nnadal nie drukuje się faktura korygująca, numer FK/2025/11/004.\n"
            "Proszę o pilny kontakt.\n\nPozdrawiam\nKrzysztof Wójcik\nGlobex Sp. z o.o.",
            "Od: Wsparcie <support@example.com>\nWysłano: poniedziałek, 3 listopada 2025 18:15",
        ),
        (
            "pl-outlook-oryginalna.eml",
            "Dziękuję, import przeszedł poprawnie.\n-- \nAnna Nowak\nGłówna księgowa",
            "-----Oryginalna wiadomość-----\nOd: Wsparcie",
        ),
        (
            "pl-gmail-napisal.eml",
            "Dzień dobry,\n\naktualizacja zakończona, wszystko działa. Dziękuję za pomoc!\n\nJan",
            "czw., 6 lis 2025 o 09:41 Wsparcie ERP <support@example.com>\nnapisał(a):\n\n> Dzień dobry,",
        ),
        (
            "pl-webmail-dnia.eml",
            "Proszę o fakturę na nowy adres.",
            "Dnia 7 listopada 2025 15:20 Wsparcie ERP <support@example.com> napisał(a):",
        ),
        (
            "de-apple-mail-am-schrieb.eml",
            "Danke, das hat funktioniert.\n\nViele Grüße\nHans",
            "> Am 11.11.2025 um 09:14 schrieb Wsparcie ERP <support@example.com>:",
        ),
        (
            "de-outlook-ursprungliche.eml",
            "Zur Info an den Kollegen.",
            "-----Ursprüngliche Nachricht-----\nVon: Wsparcie ERP",
        ),
    ],
)
def test_top_posted_reply_keeps_only_the_new_text(sample: str, new: str, history_starts: str) -> None:
    got_new, history = split_reply(plain_text(sample))
    assert got_new == new
    assert history.startswith(history_starts)


def test_thunderbird_bottom_post_keeps_text_below_the_quote() -> None:
    got_new, history = split_reply(plain_text("talon-thunderbird.eml"))
    assert got_new == "Hello"
    assert history == "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi "


def test_gmail_bottom_post_from_a_mailing_list() -> None:
    got_new, history = split_reply(plain_text("mu-gmail-1220863087.12663_23.eml"))
    assert got_new.startswith("See http://en.wikipedia.org/wiki/Okay#Etymology")
    assert got_new.endswith("Juanma")
    assert history.startswith("On Wed, Aug 6, 2008 at 22:38, Juanma <juanma_bellon@yahoo.es> wrote:\n\n> For all")
    assert "Okay#Etymology" not in history


def test_polish_thunderbird_signature_below_the_quote_stays_new() -> None:
    got_new, history = split_reply(plain_text("pl-thunderbird-w-dniu.eml"))
    assert got_new == "Pasuje nam wtorek o 10:00.\n\n-- \nPiotr Zieliński\nBiuro Rachunkowe Zieliński"
    assert history.startswith("W dniu 7.11.2025 o 11:02, Wsparcie ERP pisze:\n> Proponujemy")
    assert "> -- " in history


def test_gmail_attribution_wrapped_over_two_lines_in_english() -> None:
    text = (
        "Works now, thanks.\n\nOn Thu, Nov 6, 2025 at 9:41 AM Support Team <support@example.com>\n"
        "wrote:\n\n> Please try again.\n"
    )
    assert split_reply(text) == (
        "Works now, thanks.",
        "On Thu, Nov 6, 2025 at 9:41 AM Support Team <support@example.com>\nwrote:\n\n> Please try again.",
    )


def test_napisal_a_attribution_without_date_needs_a_quote_below() -> None:
    text = "Marek napisał(a):\n> czy faktura wyszła?\nTak, wyszła wczoraj."
    assert split_reply(text) == ("Tak, wyszła wczoraj.", "Marek napisał(a):\n> czy faktura wyszła?")


def test_german_thunderbird_attribution_with_unquoted_history() -> None:
    text = "Erledigt.\n\nAm 11.11.2025 um 09:14 schrieb Support:\nBitte Update installieren.\n"
    assert split_reply(text) == ("Erledigt.", "Am 11.11.2025 um 09:14 schrieb Support:\nBitte Update installieren.")


def test_polish_outlook_header_block_with_bold_markers_from_html() -> None:
    text = (
        "Dziękuję.\n\n*Od:* Wsparcie <support@example.com>\n*Wysłano:* wtorek, 4 listopada 2025 16:20\n"
        "*Do:* Anna\n*Temat:* Re: Import\n\nTreść.\n"
    )
    got_new, history = split_reply(text)
    assert got_new == "Dziękuję."
    assert history.startswith("*Od:* Wsparcie")


def test_unrecognised_text_is_all_new_and_unchanged() -> None:
    text = "Dzień dobry,\r\nproszę o pomoc.\r\n\r\nOn Monday I wrote: nothing.\r\n"
    assert split_reply(text) == (text, "")


def test_sentences_that_look_like_markers_are_not_history() -> None:
    text = (
        "On Monday we wrote:\nthe plan below.\n"
        "From: the accounting team\nwe need the JPK file.\n"
        "______________________________\nThat line was a divider.\n"
    )
    assert split_reply(text) == (text, "")


def test_pasted_headers_without_sent_and_subject_are_not_history() -> None:
    text = "Dostaję błąd:\nOd: system\nKod: 500\n"
    assert split_reply(text) == (text, "")


def test_signature_delimiter_stays_with_the_new_part() -> None:
    text = "Thanks\n-- \nJane Doe\nACME\n\n-----Original Message-----\nFrom: x\n"
    got_new, history = split_reply(text)
    assert got_new == "Thanks\n-- \nJane Doe\nACME"
    assert history == "-----Original Message-----\nFrom: x"


def test_interleaved_answers_keep_every_own_line() -> None:
    text = "> Question one?\nAnswer one.\n> Question two?\nAnswer two.\n"
    assert split_reply(text) == ("Answer one.\nAnswer two.", "> Question one?\n> Question two?")


def test_crlf_line_ends_do_not_hide_markers() -> None:
    text = "Ok.\r\n\r\n-----Original Message-----\r\nFrom: x\r\n"
    assert split_reply(text) == ("Ok.", "-----Original Message-----\nFrom: x")


class _Cost:
    """A deterministic measure of what ``split_reply`` does: the functions it calls (Python and C,
    counted by ``sys.setprofile``) and the characters it hands to the module's regular expressions.

    Every loop in ``quoting`` calls at least one function per step, and every pattern's work is
    bounded by the text it is given (lines over ``_MAX_MARKER_LEN`` never reach the costly ones), so
    the two counts grow with the work done, whatever else the machine is running.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.regex_chars = 0
        for name, value in vars(quoting).items():
            if isinstance(value, re.Pattern):
                monkeypatch.setattr(quoting, name, _CountingPattern(value, self))

    def measure(self, text: str) -> tuple[int, int]:
        self.calls = self.regex_chars = 0

        def profile(frame: object, event: str, arg: object) -> None:
            if event in ("call", "c_call"):
                self.calls += 1

        sys.setprofile(profile)
        try:
            split_reply(text)
        finally:
            sys.setprofile(None)
        return self.calls, self.regex_chars


class _CountingPattern:
    def __init__(self, pattern: re.Pattern[str], cost: _Cost) -> None:
        self.pattern = pattern
        self.cost = cost

    def match(self, text: str) -> re.Match[str] | None:
        self.cost.regex_chars += len(text)
        return self.pattern.match(text)

    def search(self, text: str) -> re.Match[str] | None:
        self.cost.regex_chars += len(text)
        return self.pattern.search(text)

    def fullmatch(self, text: str) -> re.Match[str] | None:
        self.cost.regex_chars += len(text)
        return self.pattern.fullmatch(text)


@pytest.mark.parametrize(
    ("unit", "repeat"),
    [
        ("a", 1_000_000),
        ("On 1 " + "x " * 30 + "\n", 30_000),
        ("From: a\n" * 8 + "\n", 10_000),
        ("> q\n\n", 100_000),
        ("W dniu 1.1.2025 " + "pisze " * 60 + "\n", 2_500),
        ("_" * 30 + "\n\n\n\n", 50_000),
    ],
    ids=["one-line", "attribution-openers", "from-lines", "quote-blocks", "verb-heavy", "rules"],
)
def test_one_megabyte_is_split_in_linear_time(unit: str, repeat: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten times the text costs at most about ten times the work (a quadratic split costs a hundred
    times), counted in calls and in characters given to patterns, never in seconds."""
    cost = _Cost(monkeypatch)
    small_calls, small_chars = cost.measure(unit * (repeat // 10))
    calls, chars = cost.measure(unit * repeat)
    assert calls <= 11 * small_calls + 100, (calls, small_calls)
    assert chars <= 11 * small_chars + 100, (chars, small_chars)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("> \nOnwrote:-_FromSent,1:2Ąż\r@")), max_size=300))
def test_every_line_is_kept_in_one_part_or_the_other(text: str) -> None:
    got_new, history = split_reply(text)
    if not history:
        assert got_new == text
        return
    kept = [line for line in (got_new + "\n" + history).split("\n") if line.strip()]
    original = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    assert sorted(kept) == sorted(original)


_MARKER_LINES = [
    "On Mon, 1 Jan 2024 at 10:00, Jan Kowalski <jan@acme.pl> wrote:", "On Monday Jan", "wrote:",
    "W dniu 2024-01-01 o 10:00, Jan pisze:", "Jan Kowalski napisał(a):", "Dnia 1.01.2024 Jan", "napisał:",
    "Am 01.01.2024 schrieb Hans:", "-----Original Message-----", "----- Oryginalna wiadomość -----",
    "From: Jan <jan@acme.pl>", "*Od:* Jan", "Sent: Monday", "Wysłano: poniedziałek", "Subject: Faktura",
    "Temat: x", "To: support", "_" * 32, "> quoted", ">> deeper", "", " ", "\r", "Dzień dobry,", "-- ",
    "Pozdrawiam", "12:30", "2024", "a: b", "x" * 450 + " wrote:",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_MARKER_LINES),
                          st.text(alphabet=st.sampled_from(list("> :-_onwrteOdFmSuj1:2Ąż\r")), max_size=30)),
                max_size=30))
def test_the_patterns_run_only_on_lines_that_can_match_them(lines: list[str]) -> None:
    """A line without a colon, three dashes or twenty underscores is not run through the marker
    patterns; the split is the one every pattern on every line gives."""
    text = "\n".join(lines)
    fast = split_reply(text)
    saved = quoting._COLON, quoting._DASHES, quoting._UNDERSCORES
    quoting._COLON = quoting._DASHES = quoting._UNDERSCORES = ""  # "" is in every line: no line skipped
    try:
        assert fast == split_reply(text)
    finally:
        quoting._COLON, quoting._DASHES, quoting._UNDERSCORES = saved

