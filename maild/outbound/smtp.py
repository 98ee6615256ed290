"""Hand rendered mail to the SMTP relay and say what became of it.

This is the only module that speaks SMTP. The outbox needs one answer per mail
that it can store and act on: `sent` (mark the row done), `retry` (back off and
try later: the relay was unreachable, timed out, or answered 4xx) or `failed`
(5xx: retrying cannot help, record the reply for a person). Those per-mail
outcomes are returned, never raised, so one bad recipient cannot stop the
queue. What is raised instead is a fault of the whole relay set-up
(credentials refused, TLS impossible), which no amount of retrying single mails
would cure and which ops must hear about.

One connection is kept open and reused for the whole drain: at hundreds of
mails a minute the TCP + TLS + AUTH handshake would otherwise dominate.

The client is maild's own, on an asyncio protocol, rather than aiosmtplib
(used until the seventh session): sending is the daemon's hottest loop after
ingest, and aiosmtplib spent 0.25 ms of CPU a mail where this needs about a
third of it (an email-address parser run over every MAIL and RCPT address,
regexes over the whole message, a ``wait_for`` per reply; ``bench/README.md``,
seventh session). It speaks what maild needs and nothing more: EHLO, STARTTLS
or implicit TLS, AUTH PLAIN and LOGIN, SIZE, 8BITMIME and SMTPUTF8 as
parameters, PIPELINING (RFC 2920) when the relay offers it, RSET and QUIT. And
it can hold a mail's final "." back (``send``'s ``before_end``): the relay has
the whole message but has not accepted it, so the outbox's one-mail-at-a-time
window starts there instead of before the DATA command.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from maild.config import Security as Security
from maild.config import SmtpSettings as SmtpSettings
from maild.errors import MaildError

log = logging.getLogger("maild.smtp")

BeforeData = Callable[[], Awaitable[None]]
Outcome = Literal["sent", "retry", "failed"]

# Addresses go verbatim into MAIL FROM / RCPT TO; anything that could end the
# command line or the <...> bracket is refused before it reaches the wire.
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
_QUIT_TIMEOUT_SECONDS = 5.0
_LINE_ENDS = re.compile(rb"\r\n?|\n")
_MAX_REPLY_LINE = 8192  # a server that sends more without a line end is not speaking SMTP


@dataclass(frozen=True)
class Envelope:
    """One mail to hand over; `message` is already rendered (CRLF or LF line ends)."""

    mail_from: str
    recipients: tuple[str, ...]
    message: bytes
    message_id: str | None = None  # for the log line; else read from the message's header


@dataclass(frozen=True)
class Delivery:
    """What the relay did with one mail.

    `reply` is the server's code and text (or our description of a connection
    fault) for the outbox row. `refused` holds the recipients the server turned
    away while it accepted the mail for others; their reply keeps its code, so a
    caller can tell a 4xx (worth resending to that address) from a 5xx.
    """

    outcome: Outcome
    reply: str
    refused: dict[str, str] = field(default_factory=dict)
    # The relay took the connection and then went silent on this mail: maybe the
    # relay, maybe the mail (a size it chokes on); the outbox tells them apart
    # by how often the same mail does it.
    timed_out: bool = False


class SmtpError(MaildError):
    """The relay cannot be used at all (unreachable at check, TLS impossible, ...)."""


class SmtpAuthError(SmtpError):
    """The relay refused our credentials; the message names the user, never the password."""


class SmtpUnavailable(SmtpError):
    """The relay could not be reached for a mail: not the mail's fault, so the
    outbox stops and the daemon backs off as a whole, keeping the queue's order."""


class _Disconnected(Exception):
    """The connection broke mid-conversation; the caller decides whether to reconnect."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TimedOut(Exception):
    """The relay did not answer within ``timeout_seconds``."""


class _Refused(Exception):
    """The relay answered a command with a code other than the one that lets it go on."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def _reply(code: int, text: str) -> str:
    return f"{code} {' '.join(text.split())}".strip()


def _classify(code: int) -> Outcome:
    return "failed" if 500 <= code < 600 else "retry"


def _message_id(message: bytes) -> str:
    """The Message-ID from the header block, so log lines can be matched to outbox rows."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return "<no message-id>"
    return found.group(1).decode("ascii", "replace").strip() or "<no message-id>"


def _needs_smtputf8(envelope: Envelope) -> bool:
    return not all(a.isascii() for a in (envelope.mail_from, *envelope.recipients))


def _invalid_envelope(envelope: Envelope) -> str | None:
    if not envelope.recipients:
        return "no recipients"
    if _UNSAFE_ADDRESS.search(envelope.mail_from):
        return f"unsafe sender address {envelope.mail_from!r}"
    for address in envelope.recipients:
        if not address or _UNSAFE_ADDRESS.search(address):
            return f"unsafe recipient address {address!r}"
    return None


def wire_data(message: bytes) -> bytes:
    """The message as the DATA phase carries it, without the final ".": CRLF line ends
    (a bare CR or LF becomes one), a dot doubled at the start of a line (RFC 5321
    4.5.2), and a CRLF at the end. Checks by counting first: maild's own mail is
    already CRLF, so the common case copies nothing."""
    crlf = message.count(b"\r\n")
    if crlf != message.count(b"\n") or crlf != message.count(b"\r"):
        message = _LINE_ENDS.sub(b"\r\n", message)
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message


def _extensions(ehlo: str) -> dict[str, str]:
    """EHLO's keywords (lower case) and their parameters; the first line is the greeting.
    An old-style ``AUTH=LOGIN PLAIN`` line counts as the AUTH keyword."""
    found: dict[str, str] = {}
    for line in ehlo.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        keyword = keyword.lower()
        if keyword.startswith("auth="):
            keyword, params = "auth", f"{keyword[5:]} {params}".strip()
        if keyword:
            found[keyword] = params
    return found


class _Wire(asyncio.Protocol):
    """One connection's socket: replies are parsed as the bytes arrive and queued
    until asked for, so pipelined commands' replies are read in turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.lines: list[str] = []  # the lines of a multi-line reply so far
        self.replies: deque[tuple[int, str]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: str | None = None  # why the connection ended, once it has
        self.paused: asyncio.Future[None] | None = None  # the kernel's send buffer is full

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > _MAX_REPLY_LINE:
                    self._fail("a reply line without an end")
                break
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[:end + 1]
            code = line[:3]
            if len(code) != 3 or not code.isdigit() or line[3:4] not in (b"", b" ", b"-"):
                self._fail(f"not an SMTP reply: {line[:80]!r}")
                return
            self.lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] == b"-":
                continue
            self.replies.append((int(code), "\n".join(self.lines)))
            self.lines = []
        if self.replies:
            self._wake()

    def _fail(self, why: str) -> None:
        self.lost = why
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = f"closed by the server ({exc})" if exc else "closed by the server"
        self._wake()
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)

    def pause_writing(self) -> None:
        self.paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.paused = None

    def write(self, data: bytes) -> None:
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise _Disconnected(self.lost or "connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the kernel's send buffer is full (a large message)."""
        while self.paused is not None and self.lost is None:
            await self.paused

    async def reply(self, timeout: float) -> tuple[int, str]:
        """The next reply: (code, text with its lines joined by newlines)."""
        if not self.replies:
            if self.lost is not None:
                raise _Disconnected(self.lost)
            waiter = self.waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self.waiter = None
            if not self.replies:
                raise _Disconnected(self.lost or "connection closed")
        return self.replies.popleft()

    async def command(self, line: str, timeout: float, expect: int, encoding: str = "ascii") -> str:
        """Send one command and return its reply's text; another code raises ``_Refused``."""
        self.write(line.encode(encoding) + b"\r\n")
        code, text = await self.reply(timeout)
        if code != expect:
            raise _Refused(code, text)
        return text

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = self.lost or "closed"


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_TimedOut())


@dataclass
class _Session:
    wire: _Wire
    banner: str
    extensions: dict[str, str]

    @property
    def open(self) -> bool:
        return self.wire.lost is None


class SmtpSender:
    """Sends mail over one lazily opened, reused connection.

    Use as `async with SmtpSender(settings) as sender: await sender.send(...)`.
    Calls are serialised: SMTP is one conversation at a time per connection.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        if settings.security not in ("tls", "starttls", "none"):
            raise ValueError(f"smtp security must be tls, starttls or none, not {settings.security!r}")
        if (settings.username is None) != (settings.password is None):
            raise ValueError("smtp username and password must be given together")
        if settings.local_hostname is not None and (
                not settings.local_hostname.strip()
                or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in settings.local_hostname.strip())):
            raise ValueError(f"smtp local_hostname {settings.local_hostname!r} must be one word")
        self._settings = settings
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._tls_context: ssl.SSLContext | None = None
        self._hostname = settings.local_hostname.strip() if settings.local_hostname else None

    @property
    def _where(self) -> str:
        s = self._settings
        return f"{s.host}:{s.port}"

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Say QUIT if the connection is still up; never raises, the mail is already handed over."""
        async with self._lock:
            session, self._session = self._session, None
            if session is not None:
                await self._quit(session)

    async def _quit(self, session: _Session) -> None:
        if session.open:
            try:
                session.wire.write(b"QUIT\r\n")
                await session.wire.reply(_QUIT_TIMEOUT_SECONDS)
            except (_Disconnected, _TimedOut, OSError):
                pass
        session.wire.close()

    # --- connection -----------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context(cafile=self._settings.cafile)
        return self._tls_context

    async def _open(self) -> _Session:
        """Connect, greet, secure and authenticate.

        Transport faults come back as `_Disconnected` (worth a retry later);
        set-up faults that retrying cannot fix are raised as SmtpError.
        """
        s = self._settings
        timeout = float(s.timeout_seconds)
        loop = asyncio.get_running_loop()
        wire: _Wire | None = None
        try:
            if self._hostname is None:
                self._hostname = await asyncio.to_thread(socket.getfqdn)
            implicit = s.security == "tls"
            _, opened = await asyncio.wait_for(loop.create_connection(
                lambda: _Wire(loop), s.host, s.port, ssl=self._context() if implicit else None,
                server_hostname=s.host if implicit else None), timeout)
            wire = opened
            code, banner = await opened.reply(timeout)
            if code != 220:
                raise _Refused(code, banner)
            extensions = _extensions(await opened.command(f"EHLO {self._hostname}", timeout, 250))
            if s.security == "starttls":
                if "starttls" not in extensions:
                    raise SmtpError(
                        f"smtp server {self._where} does not offer STARTTLS, which "
                        "security = \"starttls\" requires; use \"tls\" for port 465 "
                        "or \"none\" only on a trusted network"
                    )
                await opened.command("STARTTLS", timeout, 220)
                assert opened.transport is not None
                opened.transport = await asyncio.wait_for(loop.start_tls(
                    opened.transport, opened, self._context(), server_hostname=s.host), timeout)
                extensions = _extensions(await opened.command(f"EHLO {self._hostname}", timeout, 250))
            session = _Session(opened, banner, extensions)
            if s.username is not None and s.password is not None:
                await self._login(session, s.username, s.password, timeout)
        except BaseException as exc:
            if wire is not None:
                wire.close()
            if isinstance(exc, (SmtpError, _Disconnected)):
                raise
            if isinstance(exc, ssl.SSLError):
                raise SmtpError(f"TLS with smtp server {self._where} failed: {exc}") from exc
            if isinstance(exc, (_TimedOut, asyncio.TimeoutError, TimeoutError)):
                raise _Disconnected(f"timed out talking to {self._where}: {exc}") from exc
            if isinstance(exc, _Refused):
                # a 4xx banner or EHLO is the server saying "not now"
                raise _Disconnected(f"{self._where} refused the session: {_reply(exc.code, exc.text)}") from exc
            if isinstance(exc, OSError):
                if isinstance(exc.__cause__, ssl.SSLError):
                    raise SmtpError(f"TLS with smtp server {self._where} failed: {exc.__cause__}") from exc
                raise _Disconnected(f"cannot talk to {self._where}: {exc}") from exc
            raise
        return session

    async def _login(self, session: _Session, username: str, password: str, timeout: float) -> None:
        """AUTH PLAIN, else AUTH LOGIN (RFC 4616, the LOGIN draft): whichever the relay offers."""
        if "auth" not in session.extensions:
            raise SmtpError(
                f"smtp server {self._where} does not offer AUTH but a username is configured"
            )
        offered = session.extensions["auth"].upper().split()
        wire = session.wire

        def b64(text: str) -> str:
            return base64.b64encode(text.encode("utf-8")).decode("ascii")

        try:
            if "PLAIN" in offered:
                await wire.command(f"AUTH PLAIN {b64(chr(0) + username + chr(0) + password)}", timeout, 235)
            elif "LOGIN" in offered:
                await wire.command("AUTH LOGIN", timeout, 334)
                await wire.command(b64(username), timeout, 334)
                await wire.command(b64(password), timeout, 235)
            else:
                raise SmtpError(f"smtp server {self._where} offers AUTH {' '.join(offered) or '(nothing)'}; "
                                "maild speaks PLAIN and LOGIN")
        except _Refused as exc:
            if 400 <= exc.code < 500:
                raise _Disconnected(
                    f"{self._where} deferred AUTH for {username!r}: {_reply(exc.code, exc.text)}"
                ) from None
            raise SmtpAuthError(
                f"smtp server {self._where} refused the credentials of {username!r}: "
                f"{_reply(exc.code, exc.text)}"
            ) from None

    @property
    def connected(self) -> bool:
        """Whether a session is open now; false after a send that could not reach the relay."""
        return self._session is not None and self._session.open

    @property
    def pipelining(self) -> bool:
        """Whether the open session's relay offered PIPELINING (RFC 2920)."""
        return self._session is not None and "pipelining" in self._session.extensions

    def _drop(self) -> None:
        if self._session is not None:
            self._session.wire.close()
            self._session = None

    async def check(self) -> str:
        """Prove the relay works with these settings, for `maild check`.

        Opens its own connection (and says QUIT) so that it reflects what a fresh
        daemon would see, not a connection kept from earlier sends.
        """
        try:
            session = await self._open()
        except _Disconnected as exc:
            raise SmtpError(f"smtp server {self._where}: {exc.reason}") from None
        try:
            extensions = ", ".join(sorted(e.upper() for e in session.extensions))
        finally:
            await self._quit(session)
        s = self._settings
        who = f"authenticated as {s.username}" if s.username else "no AUTH"
        first_line = session.banner.splitlines()[0] if session.banner else ""
        return f"{self._where} ({s.security}, {who}): {first_line}; EHLO: {extensions}"

    # --- sending --------------------------------------------------------

    async def send(self, envelope: Envelope, before_end: BeforeData | None = None) -> Delivery:
        """Deliver one mail; per-mail outcomes are returned, relay set-up faults raised.

        ``before_end`` is awaited once the relay took a recipient and has the whole
        message but its final "." (possibly more than once if the connection is
        re-opened): until that "." the relay cannot have accepted the mail, so the
        outbox takes its one-mail-at-a-time turn there.
        """
        async with self._lock:
            problem = _invalid_envelope(envelope)
            if problem is not None:
                delivery = Delivery("failed", f"not sent: {problem}")
            else:
                delivery = await self._send_with_reconnect(envelope, before_end)
        self._log(envelope, delivery)
        return delivery

    async def _send_with_reconnect(self, envelope: Envelope, before_end: BeforeData | None) -> Delivery:
        reused = self.connected
        try:
            return await self._transaction(envelope, before_end)
        except _Disconnected as exc:
            self._drop()
            if not reused:
                return Delivery("retry", exc.reason)
            log.info("kept connection to %s went stale (%s); reconnecting", self._where, exc.reason)
        try:
            return await self._transaction(envelope, before_end)
        except _Disconnected as exc:
            self._drop()
            return Delivery("retry", exc.reason)

    async def _transaction(self, envelope: Envelope, before_end: BeforeData | None) -> Delivery:
        if self._session is None or not self._session.open:
            self._drop()
            self._session = await self._open()
        session = self._session
        try:
            return await self._mail_rcpt_data(session, envelope, before_end)
        except _TimedOut:
            self._drop()
            return Delivery("retry", f"timed out talking to {self._where}: no reply within "
                                     f"{self._settings.timeout_seconds} s", timed_out=True)
        except OSError as exc:
            raise _Disconnected(f"connection to {self._where} lost: {exc}") from exc
        except _Refused as exc:
            if exc.code == 421:  # the server is closing this session
                self._drop()
            else:
                await self._reset(session)
            return Delivery(_classify(exc.code), _reply(exc.code, exc.text))

    async def _mail_rcpt_data(self, session: _Session, envelope: Envelope,
                              before_end: BeforeData | None = None) -> Delivery:
        extensions = session.extensions
        options = ""
        encoding = "ascii"
        if _needs_smtputf8(envelope):
            if "smtputf8" not in extensions:
                return Delivery(
                    "failed", f"not sent: {self._where} does not offer SMTPUTF8 for a non-ASCII address"
                )
            options += " SMTPUTF8"
            encoding = "utf-8"
        if "size" in extensions:
            options += f" SIZE={len(envelope.message)}"
        if "8bitmime" in extensions and not envelope.message.isascii():
            options += " BODY=8BITMIME"
        wire = session.wire
        timeout = float(self._settings.timeout_seconds)
        commands = [f"MAIL FROM:<{envelope.mail_from}>{options}\r\n".encode(encoding)]
        commands += [f"RCPT TO:<{address}>\r\n".encode(encoding) for address in envelope.recipients]
        pipelined = "pipelining" in extensions
        if pipelined:  # RFC 2920: MAIL, every RCPT and DATA in one write, the replies read in turn
            wire.write(b"".join(commands) + b"DATA\r\n")
        else:
            wire.write(commands[0])
        code, text = await wire.reply(timeout)
        if code != 250:
            if pipelined:
                await self._skip_replies(wire, len(envelope.recipients), timeout)
            raise _Refused(code, text)
        refused: dict[str, str] = {}
        for i, address in enumerate(envelope.recipients):
            if not pipelined:
                wire.write(commands[1 + i])
            code, text = await wire.reply(timeout)
            if code == 421:
                raise _Refused(code, text)
            if code not in (250, 251):
                refused[address] = _reply(code, text)
        if not pipelined:
            if len(refused) == len(envelope.recipients):
                code, text = 554, ""
            else:
                wire.write(b"DATA\r\n")
                code, text = await wire.reply(timeout)
        else:
            code, text = await wire.reply(timeout)
        if len(refused) == len(envelope.recipients):
            if code == 354:  # a pipelined DATA the relay took although it has no recipient: end it empty
                wire.write(b".\r\n")
                await wire.reply(timeout)
            await self._reset(session)
            # one temporary refusal makes the whole mail worth another try
            temporary = [r for r in refused.values() if not r.startswith("5")]
            if temporary:
                return Delivery("retry", temporary[0], refused)
            return Delivery("failed", next(iter(refused.values())), refused)
        if code != 354:
            raise _Refused(code, text)
        wire.write(wire_data(envelope.message))
        await wire.drain()
        if before_end is not None:
            await before_end()
        wire.write(b".\r\n")
        code, text = await wire.reply(timeout)
        if code != 250:
            raise _Refused(code, text)
        return Delivery("sent", _reply(code, text), refused)

    @staticmethod
    async def _skip_replies(wire: _Wire, recipients: int, timeout: float) -> None:
        """After a refused pipelined MAIL: read the RCPT and DATA replies that follow it
        (a DATA the relay took anyway is ended empty)."""
        for _ in range(recipients):
            await wire.reply(timeout)
        code, _ = await wire.reply(timeout)
        if code == 354:
            wire.write(b".\r\n")
            await wire.reply(timeout)

    async def _reset(self, session: _Session) -> None:
        """RSET so the kept connection starts the next mail clean; a broken one is dropped."""
        try:
            await session.wire.command("RSET", float(self._settings.timeout_seconds), 250)
        except (_Disconnected, _TimedOut, _Refused, OSError):
            self._drop()

    def _log(self, envelope: Envelope, delivery: Delivery) -> None:
        level = logging.INFO if delivery.outcome == "sent" else logging.WARNING
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s to %d recipient(s)%s via %s: %s",
                envelope.message_id or _message_id(envelope.message),
                delivery.outcome,
                len(envelope.recipients),
                f", {len(delivery.refused)} refused" if delivery.refused else "",
                self._where,
                delivery.reply,
            )
