"""html_to_text: hostile markup in linear time, hidden text dropped, blockquotes quoted."""
from __future__ import annotations

import html
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.intake.htmltext import html_to_text
from maild.intake.quoting import split_reply

# Each was quadratic (or worse) in an earlier html_to_text: the nested links took
# 18.7 s at 250 KB, the heads 12 s at 234 KB, the attribute run hours at 1 MB.
HOSTILE = {
    "nested unclosed links, 1 MB": '<a href="x">' * 64000 + "y" + "</a>" * 64000,
    "repeated head without its end": "<head>" * 40000,
    "an attribute name of 1 MB": "<img " + "a" * 1_000_000 + ">",
    "a link whose text is 1 MB": '<a href="x">' + "y " * 500_000 + "</a>",
    "250,000 attributes": "<a " + "a=b " * 250_000 + ">",
    "nested hidden elements": '<div style="display:none">' * 100_000 + "x",
    "nested blockquotes": "<blockquote>" * 100_000 + "x<br>" * 100_000,
    "unclosed quotes in tags": '<a title="' * 100_000,
    "end tags only": "</a></blockquote></div>" * 50_000,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_markup_is_read_in_bounded_time_and_output(name: str) -> None:
    source = HOSTILE[name]
    started = time.process_time()
    text = html_to_text(source)
    spent = time.process_time() - started
    assert len(text) <= 1_000_000
    # CPU seconds, generous for a loaded 2-core machine: the quadratic versions
    # needed minutes to hours here; linear ones need well under a second.
    assert spent < 20, f"{name}: {spent:.1f} s of CPU"


def test_nested_links_keep_the_text_and_the_last_target() -> None:
    text = html_to_text('<a href="x">' * 64000 + "y" + "</a>" * 64000)
    assert text.endswith("y <x>")
    assert set(text[:-5]) == {"x"}, "an empty link shows its target, as before"


def test_repeated_heads_hide_nothing_after_them() -> None:
    assert html_to_text("<head>" * 40000 + "<p>visible</p>") == "visible"
    assert html_to_text("<head><title>t</title></head><body><p>body</p></body>") == "body"


def test_link_text_that_spells_the_target_is_not_repeated() -> None:
    assert html_to_text('<a href="https://example.com/">https://example.com</a>') == "https://example.com"
    assert html_to_text('<a href="https://example.com/">here</a>') == "here <https://example.com/>"
    long_text = "word " * 200
    assert html_to_text(f'<a href="https://e.pl">{long_text}</a>').endswith("word <https://e.pl>")
    # a link opened inside an open link ends that one first, as in a browser
    assert html_to_text('<a href="u1">one<a href="u2">two</a>') == "one <u1>two <u2>"


@pytest.mark.parametrize("markup", [
    '<span style="display:none">SECRET</span>',
    '<span style="DISPLAY: None !important">SECRET</span>',
    '<div style="color:red; visibility: hidden">SECRET</div>',
    '<div style="mso-hide:all">SECRET</div>',
    "<div hidden>SECRET</div>",
    '<p hidden="hidden">SECRET</p>',
    '<div style="display:none"><div>SECRET</div><p>SECRET</p>SECRET</div>',
    '<table><tr><td style="display:none">SECRET<td>x</tr></table>',
    '<span style="display:none"><script>"</span>"</script>SECRET</span>',
    '<img style="display:none" alt="SECRET">',
])
def test_hidden_text_is_dropped(markup: str) -> None:
    text = html_to_text(f"<p>before</p>{markup}<p>after</p>")
    assert "SECRET" not in text
    assert text.startswith("before") and text.endswith("after"), text


@pytest.mark.parametrize("markup", [
    '<span style="border:none">shown</span>',
    '<div class="hidden-xs">shown</div>',
    '<div data-hidden="1">shown</div>',
    '<div title="display:none">shown</div>',
    '<p hidden>gone<p>shown',
    '<ul><li hidden>gone<li>shown</ul>',
    '<div style="display:none">gone</div>shown',
])
def test_what_is_not_hidden_stays(markup: str) -> None:
    text = html_to_text(markup)
    assert "shown" in text and "gone" not in text


def test_blockquote_comes_out_quoted_and_split_reply_files_it_as_history() -> None:
    html_reply = ("<div>#time 30m\nDone.</div><div class=\"gmail_quote\"><div>On Mon, 23 Nov 2026 at 10:00, "
                  "Jan &lt;jan@acme.pl&gt; wrote:</div><blockquote class=\"gmail_quote\">"
                  "<div>#status closed</div><div>#time 24h</div><blockquote>older</blockquote></blockquote></div>")
    text = html_to_text(html_reply)
    assert "> #status closed" in text and ">> older" in text
    new, quoted = split_reply(text)
    assert new == "#time 30m Done."
    assert "#status closed" in quoted and "#time 24h" in quoted and "older" in quoted


def test_quote_markers_in_the_mail_itself_are_dropped() -> None:
    assert html_to_text("a\ue000b&#xe001;c") == "abc"


@settings(max_examples=200, deadline=None)
@given(new=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Co")), min_size=1, max_size=40),
       quoted=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Co")), max_size=40),
                       min_size=1, max_size=5),
       depth=st.integers(min_value=1, max_value=12))
def test_whatever_a_blockquote_holds_is_history(new: str, quoted: list[str], depth: int) -> None:
    new_text = html_to_text(f"<p>{html.escape(new)}</p>")
    body = "".join(f"<div>{html.escape(line)}</div>" for line in quoted)
    text = html_to_text(f"<p>{html.escape(new)}</p>" + "<blockquote>" * depth + body + "</blockquote>" * depth)
    assert split_reply(text)[0] == split_reply(new_text)[0] if new_text.strip() else True
    for line in text.splitlines():
        if line.strip() and line not in new_text.splitlines():
            assert line.startswith(">"), (line, text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "<a href='x'>", "</a>", "<head>", "</head>", "<blockquote>", "</blockquote>", "<div hidden>", "</div>",
    "<p>", "</p>", "<span style='display:none'>", "</span>", "<pre>", "</pre>", "<li>", "<br>", "text", " ",
    "&amp;", "<img alt='i'>", "<!--", "-->", "<script>", "</script>", '"', "<", ">", "\ue000",
]), max_size=200), st.integers(min_value=1, max_value=300))
def test_any_mix_of_markup_gives_capped_text_without_markers(parts: list[str], cap: int) -> None:
    text = html_to_text("".join(parts), max_chars=cap)
    assert len(text) <= cap
    assert "\ue000" not in text and "\ue001" not in text
