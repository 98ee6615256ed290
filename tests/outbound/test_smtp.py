"""SmtpSender against a real in-process SMTP server (the sink).

Every assertion is about what the server saw or what the sender reported for
the outbox, because those are the two things the outbox relies on.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from maild.outbound.smtp import (
    BeforeDot,
    Delivery,
    Envelope,
    SmtpAuthError,
    SmtpError,
    SmtpSender,
    SmtpSettings,
    wire_data,
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


def test_before_dot_is_not_awaited_when_every_recipient_is_refused(smtp_sink: SmtpSink) -> None:
    """The outbox's hook for "only one connection at a time has a mail the relay may have
    accepted": awaited once per mail that goes out, before the relay has it, and not at all
    when every recipient was refused (nothing will be sent)."""
    smtp_sink.reject_rcpt = {"gone@example.test": 550}
    seen: list[int] = []

    async def before_dot() -> None:
        seen.append(len(smtp_sink.messages))

    async def scenario() -> list[Delivery]:
        async with SmtpSender(settings_for(smtp_sink)) as sender:
            refused = await sender.send(envelope("gone@example.test"), before_dot)
            first = await sender.send(envelope("a@example.test", "gone@example.test"), before_dot)
            second = await sender.send(envelope("b@example.test"), before_dot)
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


def test_the_reply_timeout_is_per_reply_and_not_over_the_wait_for_the_turn() -> None:
    """``timeout_seconds`` bounds each reply, as aiosmtplib's own per-command timeout did: four
    replies each near the limit, and a wait for the outbox's turn longer than it, still send the
    mail; a "." answered later than the limit after the turn is a timeout (retry, the connection
    dropped, aiosmtplib's words), and the next mail goes out on a new connection."""
    limit = 0.3

    async def scenario() -> tuple[Delivery, Delivery, bool, Delivery, _Recorder]:
        async with _Recorder(pause=0.3 * limit, dot_pauses=[0.0, 1.2 * limit]) as relay:
            async with SmtpSender(SmtpSettings(host="127.0.0.1", port=relay.port, security="none",
                                               timeout_seconds=limit)) as sender:  # type: ignore[arg-type]
                async def slow_turn() -> None:
                    await asyncio.sleep(1.3 * limit)

                patient = await sender.send(envelope(), slow_turn)
                late = await sender.send(envelope(), slow_turn)
                connected = sender.connected
                again = await sender.send(envelope())
        return patient, late, connected, again, relay

    patient, late, connected, again, relay = run(scenario())

    assert patient.outcome == "sent"
    assert (late.outcome, late.timed_out, connected) == ("retry", True, False)
    assert late.reply.endswith("Timed out waiting for server response")
    assert again.outcome == "sent" and len(relay.streams) == 2


class _Recorder:
    """A loopback relay that keeps every byte each connection sent it, to compare what
    maild and aiosmtplib itself put on the wire and to see what had arrived when.

    ``after_dot``: the replies to each message's final "." in turn (then 250); "drop"
    closes the connection when a message's first line arrives, before its ".".
    ``pause``: seconds before each reply to MAIL, RCPT, DATA and a "."; ``dot_pauses``: more
    seconds before the replies to the first "."s in turn (a relay slow to take a message)."""

    def __init__(self, after_dot: Sequence[str] = (), pause: float = 0.0, dot_pauses: Sequence[float] = ()) -> None:
        self.streams: list[bytearray] = []
        self.pause = pause
        self.dot_pauses = list(dot_pauses)
        self.commands: list[bytes] = []  # every connection's command lines, outside DATA
        self.after_dot = list(after_dot)
        self.dots = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Recorder:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = bytearray()
        self.streams.append(stream)
        writer.write(b"220 recorder ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            stream.extend(line)
            if in_data:
                if self.after_dot[:1] == ["drop"]:
                    self.after_dot.pop(0)
                    break
                if line == b".\r\n":
                    in_data = False
                    self.dots += 1
                    reply = self.after_dot.pop(0) if self.after_dot else "250 queued"
                    await asyncio.sleep(self.pause + (self.dot_pauses.pop(0) if self.dot_pauses else 0.0))
                    writer.write(reply.encode() + b"\r\n")
                    if reply.startswith("421"):
                        await writer.drain()
                        break
                continue
            self.commands.append(line)
            verb = line[:4].upper()
            if verb in (b"MAIL", b"RCPT", b"DATA"):
                await asyncio.sleep(self.pause)
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


async def _command_lines(send: Callable[[int], Awaitable[None]]) -> list[bytes]:
    """The command lines a client writes to a relay that accepts everything (loopback, this loop)."""
    async with _Recorder() as relay:
        await send(relay.port)
    return relay.commands


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


def _recorder_settings(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=5, local_hostname="maild.test")


# messages whose line ends and leading dots aiosmtplib's data() rewrites
AWKWARD = [
    MESSAGE,
    b".starts with a dot\n..two\r\n.\r\nlone dot line above\rbare CR\r\r\nno final line end",
    "Zażółć gęślą jaźń\n.\n".encode(),
    b"",
    b".",
    b"\r",
    b"\n.\n",
]


def test_the_data_phase_on_the_wire_is_aiosmtplibs_own() -> None:
    """Every byte of a conversation, DATA phase included, is what aiosmtplib's own
    ``mail``/``rcpt``/``data`` write, for messages with bare LF and CR, leading dots, a lone
    "." line, no final line end, 8-bit text, an empty one: DATA, the message (``wire_data``)
    and its "." only split in time, never in bytes."""
    import aiosmtplib

    async def conversation(ours: bool) -> bytes:
        async with _Recorder() as relay:
            if ours:
                async with SmtpSender(_recorder_settings(relay.port)) as sender:
                    for message in AWKWARD:
                        delivery = await sender.send(Envelope("support@example.test", ("a@example.test",), message))
                        assert delivery.outcome == "sent", delivery
            else:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, local_hostname="maild.test",
                                         start_tls=False)
                await client.connect()
                await client.ehlo()
                for message in AWKWARD:
                    options = [f"SIZE={len(message)}"] + ([] if message.isascii() else ["BODY=8BITMIME"])
                    await client.mail("support@example.test", options=options)
                    await client.rcpt("a@example.test")
                    await client.data(message)
                await client.quit()
            assert relay.dots == len(AWKWARD)
            [stream] = relay.streams
            return bytes(stream)

    ours, theirs = asyncio.run(conversation(True)), asyncio.run(conversation(False))
    assert ours.count(b"\r\nDATA\r\n") == len(AWKWARD)
    assert ours == theirs


_WIRE_PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\xc5\xbc", b"\r\n.\r\n"])


@given(st.lists(_WIRE_PIECES | st.binary(max_size=8), max_size=30).map(b"".join))
def test_wire_data_is_what_aiosmtplib_writes_for_any_bytes(message: bytes) -> None:
    """``wire_data`` against aiosmtplib's own preparation in ``execute_data_command``:
    ``normalize_message_line_endings`` and then ``PERIOD_REGEX``, for any bytes."""
    assert wire_data(message) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))


def test_before_dot_comes_with_the_whole_message_on_the_wire_and_its_dot_held_back() -> None:
    """The outbox's turn is taken in ``before_dot``: by then the relay has read the DATA
    command and the whole message, and not the final "." (until which it cannot accept
    the mail); the "." and its reply follow the hook."""
    seen: list[tuple[bool, int]] = []

    async def scenario() -> None:
        async with _Recorder() as relay:

            async def before_dot() -> None:
                expected = b"DATA\r\n" + wire_data(AWKWARD[1])
                for _ in range(500):  # the relay's reads run on this loop
                    if relay.streams and relay.streams[0].endswith(expected):
                        break
                    await asyncio.sleep(0.01)
                seen.append((relay.streams[0].endswith(expected), relay.dots))

            async with SmtpSender(_recorder_settings(relay.port)) as sender:
                delivery = await sender.send(Envelope("support@example.test", ("a@example.test",), AWKWARD[1]),
                                             before_dot)
            assert delivery.outcome == "sent" and relay.dots == 1

    asyncio.run(scenario())
    assert seen == [(True, 0)], "the message had arrived whole, its final dot had not"


def test_replies_after_the_final_dot_4xx_5xx_and_421() -> None:
    """What the relay answers after the "." maps as ``data()``'s SMTPDataError did: 4xx retry
    and 5xx failed on the same connection (after RSET), 421 retry with the connection
    closed, the next mail on a new one."""

    async def scenario() -> tuple[list[Delivery], int, bool]:
        async with _Recorder(after_dot=["451 4.3.0 later", "554 5.6.0 no", "421 4.3.2 closing"]) as relay:
            async with SmtpSender(_recorder_settings(relay.port)) as sender:
                out = [await sender.send(envelope("a@example.test"))]
                out.append(await sender.send(envelope("a@example.test")))
                out.append(await sender.send(envelope("a@example.test")))
                closed = not sender.connected
                out.append(await sender.send(envelope("a@example.test")))
            return out, len(relay.streams), closed

    (later, no, closing, last), connections, closed = asyncio.run(scenario())
    assert (later.outcome, later.reply) == ("retry", "451 4.3.0 later")
    assert (no.outcome, no.reply) == ("failed", "554 5.6.0 no")
    assert (closing.outcome, closing.reply, closed) == ("retry", "421 4.3.2 closing", True)
    assert last.outcome == "sent" and connections == 2


def test_relay_gone_mid_message_is_sent_again_on_a_new_connection() -> None:
    """A relay that closes the connection while the message comes in, before its ".", has
    not accepted the mail: on a kept connection the sender reconnects once and sends it
    whole; on a fresh one the mail is a retry, the relay noted unreachable."""

    async def scenario() -> tuple[Delivery, Delivery, Delivery, bool, list[bytes]]:
        async with _Recorder(after_dot=["250 first"]) as relay:
            async with SmtpSender(_recorder_settings(relay.port)) as sender:
                first = await sender.send(envelope("a@example.test"))
                relay.after_dot = ["drop"]
                again = await sender.send(envelope("b@example.test"))
            async with SmtpSender(_recorder_settings(relay.port)) as sender:
                relay.after_dot = ["drop"]
                fresh = await sender.send(envelope("c@example.test"))
                connected = sender.connected
            return first, again, fresh, connected, [bytes(s) for s in relay.streams]

    first, again, fresh, connected, streams = asyncio.run(scenario())
    assert (first.outcome, again.outcome, again.reply) == ("sent", "sent", "250 queued")
    assert (fresh.outcome, connected) == ("retry", False)
    assert "lost" in fresh.reply or "EOF" in fresh.reply or "Connection" in fresh.reply, fresh.reply
    assert len(streams) == 3
    assert streams[1].endswith(b"RCPT TO:<b@example.test>\r\n" + b"DATA\r\n" + wire_data(MESSAGE) + b".\r\n" +
                               b"QUIT\r\n"), "the whole mail on the second connection"


def test_a_25_mb_message_goes_out_whole() -> None:
    """A message of SIZE's usual limit (25 MB, base64 lines) written before the turn: far more
    than the socket takes at once, the transport keeps the rest and sends it on; the relay
    gets every byte and one "."."""
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    big = MESSAGE + line * (25_000_000 // len(line))
    calls: list[int] = []

    async def scenario() -> tuple[Delivery, bytes]:
        async with _Recorder() as relay:
            async def before_dot() -> None:
                calls.append(relay.dots)

            async with SmtpSender(_recorder_settings(relay.port)) as sender:
                delivery = await sender.send(Envelope("support@example.test", ("a@example.test",), big), before_dot)
            return delivery, bytes(relay.streams[0])

    delivery, stream = asyncio.run(scenario())
    assert delivery.outcome == "sent" and calls == [0]
    assert stream.endswith(b"DATA\r\n" + wire_data(big) + b".\r\nQUIT\r\n")
