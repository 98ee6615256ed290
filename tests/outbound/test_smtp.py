"""SmtpSender against a real in-process SMTP server (the sink).

Every assertion is about what the server saw or what the sender reported for
the outbox, because those are the two things the outbox relies on.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from maild.outbound.smtp import (
    Delivery,
    Envelope,
    SmtpAuthError,
    SmtpError,
    SmtpSender,
    SmtpSettings,
)
from tests.servers.smtp_sink import SinkFactory, SmtpSink

T = TypeVar("T")

MESSAGE = (
    b"From: Support <support@example.test>\r\n"
    b"To: Customer <customer@example.test>\r\n"
    b"Subject: [#T-1] We received your request\r\n"
    b"Message-ID: <ack-1@maild.test>\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line that starts with a dot must survive dot-stuffing\r\n"
    b"\r\n"
    b"-- \r\n"
    b"Support\r\n"
)


def run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


def settings_for(sink: SmtpSink, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": sink.host,
        "port": sink.port,
        "security": "none",
        "timeout_seconds": 5,
        "local_hostname": "maild.test",
    }
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def envelope(*recipients: str, message: bytes = MESSAGE) -> Envelope:
    return Envelope(
        mail_from="support@example.test",
        recipients=recipients or ("customer@example.test",),
        message=message,
    )


async def send_all(settings: SmtpSettings, *envelopes: Envelope) -> list[Delivery]:
    async with SmtpSender(settings) as sender:
        return [await sender.send(e) for e in envelopes]


def test_sent_mail_reaches_the_server_byte_for_byte(smtp_sink: SmtpSink) -> None:
    [delivery] = run(send_all(settings_for(smtp_sink), envelope("a@example.test", "b@example.test")))

    assert delivery.outcome == "sent"
    assert delivery.reply.startswith("250 ")
    assert delivery.refused == {}
    [got] = smtp_sink.wait_for(1)
    assert got.mail_from == "support@example.test"
    assert got.rcpt_tos == ["a@example.test", "b@example.test"]
    assert got.data == MESSAGE
    assert got.parsed["Message-ID"] == "<ack-1@maild.test>"


def test_lf_only_message_goes_out_with_crlf(smtp_sink: SmtpSink) -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    [delivery] = run(send_all(settings_for(smtp_sink), envelope(message=lf)))

    assert delivery.outcome == "sent"
    assert smtp_sink.wait_for(1)[0].data == MESSAGE


@pytest.mark.parametrize("fail_at", ["data", "rcpt"])
def test_temporary_failure_is_retry(smtp_sink: SmtpSink, fail_at: str) -> None:
    smtp_sink.mode = "tempfail"
    smtp_sink.fail_at = fail_at  # type: ignore[assignment]

    [delivery] = run(send_all(settings_for(smtp_sink), envelope()))

    assert delivery.outcome == "retry"
    assert delivery.reply.startswith("451 ")
    assert smtp_sink.messages == []


@pytest.mark.parametrize("fail_at", ["data", "rcpt"])
def test_permanent_failure_is_failed_with_the_reply(smtp_sink: SmtpSink, fail_at: str) -> None:
    smtp_sink.mode = "permfail"
    smtp_sink.fail_at = fail_at  # type: ignore[assignment]

    [delivery] = run(send_all(settings_for(smtp_sink), envelope()))

    assert delivery.outcome == "failed"
    assert "550 5.7.1 Message rejected (test sink)" in delivery.reply


def test_failure_leaves_the_connection_usable_for_the_next_mail(smtp_sink: SmtpSink) -> None:
    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            smtp_sink.mode = "permfail"
            first = await sender.send(envelope())
            smtp_sink.mode = "accept"
            second = await sender.send(envelope("next@example.test"))
            return [first, second]

    first, second = run(scenario())

    assert (first.outcome, second.outcome) == ("failed", "sent")
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [["next@example.test"]]
    assert smtp_sink.connections == 1


def test_server_down_is_retry_and_recovers_when_it_is_back(smtp_sink: SmtpSink) -> None:
    smtp_sink.stop()

    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            down = await sender.send(envelope())
            smtp_sink.start()
            back = await sender.send(envelope())
            return [down, back]

    down, back = run(scenario())

    assert down.outcome == "retry"
    assert f"{smtp_sink.host}:{smtp_sink.port}" in down.reply
    assert back.outcome == "sent"
    assert len(smtp_sink.wait_for(1)) == 1


def test_one_connection_serves_many_mails(smtp_sink: SmtpSink) -> None:
    deliveries = run(
        send_all(settings_for(smtp_sink), *(envelope(f"c{i}@example.test") for i in range(5)))
    )

    assert [d.outcome for d in deliveries] == ["sent"] * 5
    assert len(smtp_sink.wait_for(5)) == 5
    assert smtp_sink.connections == 1


def test_stale_connection_is_reopened_once(smtp_sink: SmtpSink) -> None:
    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            first = await sender.send(envelope("one@example.test"))
            await asyncio.to_thread(smtp_sink.restart)
            second = await sender.send(envelope("two@example.test"))
            return [first, second]

    first, second = run(scenario())

    assert (first.outcome, second.outcome) == ("sent", "sent")
    assert [m.rcpt_tos for m in smtp_sink.wait_for(2)] == [["one@example.test"], ["two@example.test"]]
    assert smtp_sink.connections == 2


def test_stale_connection_noticed_only_on_write_is_reopened(
    smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    """The server dies between sends while the client has not yet seen the FIN."""

    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            first = await sender.send(envelope("one@example.test"))
            smtp_sink.restart()  # blocking on purpose: the client's loop cannot see the close
            second = await sender.send(envelope("two@example.test"))
            return [first, second]

    with caplog.at_level(logging.INFO, logger="maild.smtp"):
        first, second = run(scenario())

    assert (first.outcome, second.outcome) == ("sent", "sent")
    assert len(smtp_sink.wait_for(2)) == 2
    assert "went stale" in caplog.text


def test_partial_recipient_refusal_is_sent_with_refused(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject_rcpt = {"gone@example.test": 550}

    [delivery] = run(
        send_all(settings_for(smtp_sink), envelope("ok@example.test", "gone@example.test"))
    )

    assert delivery.outcome == "sent"
    assert list(delivery.refused) == ["gone@example.test"]
    assert delivery.refused["gone@example.test"].startswith("550 ")
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [["ok@example.test"]]
    assert smtp_sink.received_for("gone@example.test") == []


@pytest.mark.parametrize(("codes", "outcome"), [((550, 550), "failed"), ((550, 451), "retry")])
def test_all_recipients_refused(smtp_sink: SmtpSink, codes: tuple[int, int], outcome: str) -> None:
    smtp_sink.reject_rcpt = {"x@example.test": codes[0], "y@example.test": codes[1]}

    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            refused = await sender.send(envelope("x@example.test", "y@example.test"))
            after = await sender.send(envelope("z@example.test"))
            return [refused, after]

    refused, after = run(scenario())

    assert refused.outcome == outcome
    assert refused.reply.startswith("550 " if outcome == "failed" else "451 ")
    assert set(refused.refused) == {"x@example.test", "y@example.test"}
    assert after.outcome == "sent"
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [["z@example.test"]]


def test_unsafe_address_is_failed_without_touching_the_server(smtp_sink: SmtpSink) -> None:
    [delivery] = run(
        send_all(settings_for(smtp_sink), envelope("a@example.test>\r\nRCPT TO:<evil@example.test"))
    )

    assert delivery.outcome == "failed"
    assert smtp_sink.connections == 0


def test_auth_with_good_credentials(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory(require_auth=("maild", "s3cret-pw"))
    settings = settings_for(sink, username="maild", password="s3cret-pw")

    async def scenario() -> tuple[str, Delivery]:
        async with SmtpSender(settings) as sender:
            return await sender.check(), await sender.send(envelope())

    summary, delivery = run(scenario())

    assert "authenticated as maild" in summary
    assert "AUTH" in summary
    assert delivery.outcome == "sent"
    assert sink.auth_attempts == [("maild", True), ("maild", True)]


def test_auth_is_required_by_the_sink(smtp_sink_factory: SinkFactory) -> None:
    """Guards the fixture: without AUTH the sink must refuse, or the test above proves nothing."""
    sink = smtp_sink_factory(require_auth=("maild", "s3cret-pw"))

    [delivery] = run(send_all(settings_for(sink), envelope()))

    assert delivery.outcome == "failed"
    assert sink.messages == []


def test_bad_credentials_raise_auth_error_without_the_password(
    smtp_sink_factory: SinkFactory,
) -> None:
    sink = smtp_sink_factory(require_auth=("maild", "s3cret-pw"))
    settings = settings_for(sink, username="maild", password="wrong-pw-123")

    async def check() -> str:
        return await SmtpSender(settings).check()

    async def send() -> Delivery:
        async with SmtpSender(settings) as sender:
            return await sender.send(envelope())

    with pytest.raises(SmtpAuthError) as checked:
        run(check())
    with pytest.raises(SmtpAuthError) as sent:
        run(send())

    for exc in (checked.value, sent.value):
        assert "maild" in str(exc)
        assert "wrong-pw-123" not in str(exc)
    assert "wrong-pw-123" not in repr(settings)
    assert sink.messages == []


def test_starttls_with_the_test_ca(smtp_tls_sink: SmtpSink) -> None:
    settings = settings_for(smtp_tls_sink, security="starttls", cafile=smtp_tls_sink.cafile)

    async def scenario() -> tuple[str, Delivery]:
        async with SmtpSender(settings) as sender:
            return await sender.check(), await sender.send(envelope())

    summary, delivery = run(scenario())

    assert "STARTTLS" not in summary.split("EHLO:")[1]  # extensions listed after the upgrade
    assert delivery.outcome == "sent"
    assert smtp_tls_sink.wait_for(1)[0].data == MESSAGE


def test_starttls_rejects_an_untrusted_certificate(smtp_tls_sink: SmtpSink) -> None:
    settings = settings_for(smtp_tls_sink, security="starttls")  # system CAs only

    with pytest.raises(SmtpError, match="TLS"):
        run(SmtpSender(settings).check())
    with pytest.raises(SmtpError, match="TLS"):
        run(send_all(settings, envelope()))
    assert smtp_tls_sink.messages == []


def test_starttls_required_but_not_offered(smtp_sink: SmtpSink) -> None:
    settings = settings_for(smtp_sink, security="starttls")

    with pytest.raises(SmtpError, match="does not offer STARTTLS"):
        run(send_all(settings, envelope()))
    assert smtp_sink.messages == []


def test_implicit_tls(smtp_sink_factory: SinkFactory) -> None:
    sink = smtp_sink_factory(tls="implicit")
    settings = settings_for(sink, security="tls", cafile=sink.cafile)

    [delivery] = run(send_all(settings, envelope()))

    assert delivery.outcome == "sent"
    assert sink.wait_for(1)[0].data == MESSAGE


def test_check_reports_unreachable_server(smtp_sink: SmtpSink) -> None:
    smtp_sink.stop()

    with pytest.raises(SmtpError, match=str(smtp_sink.port)):
        run(SmtpSender(settings_for(smtp_sink)).check())


def test_log_line_names_message_id_and_count_but_no_body_or_secret(
    smtp_sink_factory: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = smtp_sink_factory(require_auth=("maild", "s3cret-pw"))
    settings = settings_for(sink, username="maild", password="s3cret-pw")
    sink.reject_rcpt = {"gone@example.test": 550}

    with caplog.at_level(logging.DEBUG, logger="maild.smtp"):
        run(send_all(settings, envelope("a@example.test", "gone@example.test")))

    lines = [r.getMessage() for r in caplog.records if r.name == "maild.smtp"]
    assert len(lines) == 1
    assert "<ack-1@maild.test> sent to 2 recipient(s), 1 refused" in lines[0]
    assert "s3cret-pw" not in caplog.text
    assert "dot-stuffing" not in caplog.text


def test_before_data_runs_after_the_recipients_and_before_the_message(smtp_sink: SmtpSink) -> None:
    """The outbox's hook for "only one connection at a time has data in flight": it is
    awaited once the server took a recipient and before the message goes out, and
    not at all when every recipient was refused (nothing will be sent)."""
    smtp_sink.reject_rcpt = {"gone@example.test": 550}
    seen: list[int] = []

    async def before_data() -> None:
        seen.append(len(smtp_sink.messages))

    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            refused = await sender.send(envelope("gone@example.test"), before_data)
            first = await sender.send(envelope("a@example.test", "gone@example.test"), before_data)
            second = await sender.send(envelope("b@example.test"), before_data)
            return [refused, first, second]

    outcomes = [d.outcome for d in run(scenario())]
    assert outcomes == ["failed", "sent", "sent"]
    assert seen == [0, 1], "once per mail sent, each time before the server had it"
    assert [m.rcpt_tos for m in smtp_sink.wait_for(2)] == [["a@example.test"], ["b@example.test"]]


def test_refusals_at_each_step_leave_the_connection_usable(smtp_sink_factory: SinkFactory) -> None:
    """A refusal at RCPT (some or all recipients), at MAIL and at DATA, 4xx and 5xx, each maps to the
    outcome the outbox acts on, and the next mail goes over the same connection."""
    sink = smtp_sink_factory()

    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(sink)) as sender:
            out = []
            sink.reject_rcpt = {"gone@example.test": 550, "later@example.test": 451}
            out.append(await sender.send(envelope("ok@example.test", "gone@example.test")))
            out.append(await sender.send(envelope("gone@example.test")))
            out.append(await sender.send(envelope("gone@example.test", "later@example.test")))
            sink.reject_mail = 451
            out.append(await sender.send(envelope("ok@example.test")))
            sink.reject_mail = 550
            out.append(await sender.send(envelope("ok@example.test")))
            sink.reject_mail = None
            sink.mode = "permfail"
            out.append(await sender.send(envelope("ok@example.test")))
            sink.mode = "tempfail"
            out.append(await sender.send(envelope("ok@example.test")))
            sink.mode = "accept"
            out.append(await sender.send(envelope("last@example.test")))
            return out

    partial, all_gone, one_later, mail_4xx, mail_5xx, data_5xx, data_4xx, last = run(scenario())

    assert (partial.outcome, list(partial.refused)) == ("sent", ["gone@example.test"])
    assert (all_gone.outcome, all_gone.reply[:4]) == ("failed", "550 ")
    assert (one_later.outcome, one_later.reply[:4]) == ("retry", "451 ")
    assert (mail_4xx.outcome, mail_4xx.reply[:4]) == ("retry", "451 ")
    assert (mail_5xx.outcome, mail_5xx.reply[:4]) == ("failed", "550 ")
    assert data_5xx.outcome == "failed" and "550 5.7.1" in data_5xx.reply
    assert data_4xx.outcome == "retry" and data_4xx.reply.startswith("451 ")
    assert last.outcome == "sent"
    assert [m.rcpt_tos for m in sink.wait_for(2)] == [["ok@example.test"], ["last@example.test"]]
    assert sink.connections == 1, "every refusal left the connection usable"


def test_auth_login_when_plain_is_not_offered(smtp_sink_factory: SinkFactory) -> None:
    """A relay that offers only AUTH LOGIN is logged in to, for the check and for sending."""
    sink = smtp_sink_factory(require_auth=("maild", "s3cret-pw"), auth_mechanisms=("LOGIN",))
    settings = settings_for(sink, username="maild", password="s3cret-pw")

    async def scenario() -> tuple[str, Delivery]:
        async with SmtpSender(settings) as sender:
            return await sender.check(), await sender.send(envelope())

    summary, delivery = run(scenario())

    assert "AUTH" in summary and "PLAIN" not in summary
    assert delivery.outcome == "sent"
    assert sink.auth_attempts == [("maild", True), ("maild", True)]


def test_silent_relay_times_out_as_retry_and_drops_the_connection(smtp_sink: SmtpSink) -> None:
    """A relay that goes silent on a mail: retry, marked as timed out, and the next mail on a new connection."""
    smtp_sink.stall_rcpt = {"slow@example.test"}
    smtp_sink.stall_seconds = 3.0

    async def scenario() -> tuple[Delivery, bool, Delivery]:
        async with SmtpSender(settings_for(smtp_sink, timeout_seconds=1)) as sender:
            stalled = await sender.send(envelope("slow@example.test"))
            connected = sender.connected
            return stalled, connected, await sender.send(envelope("fast@example.test"))

    stalled, connected, fast = run(scenario())

    assert (stalled.outcome, stalled.timed_out, connected) == ("retry", True, False)
    assert fast.outcome == "sent"


async def _command_lines(send: Callable[[int], Awaitable[None]]) -> list[bytes]:
    """The command lines a client writes to a relay that accepts everything (loopback, this loop)."""
    lines: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 recorder ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 queued\r\n")
                continue
            lines.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-recorder\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"DATA":
                in_data = True
                writer.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        await send(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
    return lines


def test_mail_and_rcpt_lines_are_aiosmtplibs_own() -> None:
    """MAIL and RCPT go through aiosmtplib's execute_command with its own address quoting
    done once per address (``_quoted``): the lines on the wire are the ones its ``mail`` and
    ``rcpt`` write, for plain addresses, one its parser rewrites (a comment), a non-ASCII
    one (SMTPUTF8), and a second mail to the same addresses (the cached quoting)."""
    import aiosmtplib

    recipients = ("customer@example.test", "jan(biuro)@acme.pl", "zoë@przykład.pl")
    message = MESSAGE.replace(b"Hello", "Dzień dobry".encode())

    async def ours(port: int) -> None:
        settings = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=5,
                                local_hostname="maild.test")
        async with SmtpSender(settings) as sender:
            for _ in range(2):
                assert (await sender.send(Envelope("support@example.test", recipients, message))).outcome == "sent"

    async def theirs(port: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="maild.test", start_tls=False)
        await client.connect()
        await client.ehlo()
        for _ in range(2):
            await client.mail("support@example.test", options=["SMTPUTF8", f"SIZE={len(message)}", "BODY=8BITMIME"],
                              encoding="utf-8")
            for address in recipients:
                await client.rcpt(address, encoding="utf-8")
            await client.data(message)
        await client.quit()

    ours_lines = asyncio.run(_command_lines(ours))
    theirs_lines = asyncio.run(_command_lines(theirs))
    assert [line for line in ours_lines if line[:4] in (b"MAIL", b"RCPT")] == \
        [line for line in theirs_lines if line[:4] in (b"MAIL", b"RCPT")]
    assert b"RCPT TO:<jan@acme.pl>\r\n" in ours_lines  # the parser's rewrite, kept
    assert sum(line.startswith(b"MAIL FROM:<support@example.test> SMTPUTF8") for line in ours_lines) == 2
