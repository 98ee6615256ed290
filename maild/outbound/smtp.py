"""Hand rendered mail to the SMTP relay and say what became of it.

This is the only module that speaks SMTP (it alone imports aiosmtplib). The
outbox needs one answer per mail that it can store and act on: `sent` (mark the
row done), `retry` (back off and try later: the relay was unreachable, timed
out, or answered 4xx) or `failed` (5xx: retrying cannot help, record the reply
for a person). Those per-mail outcomes are returned, never raised, so one bad
recipient cannot stop the queue. What is raised instead is a fault of the whole
relay set-up (credentials refused, TLS impossible), which no amount of retrying
single mails would cure and which ops must hear about.

One connection is kept open and reused for the whole drain: at hundreds of
mails a minute the TCP + TLS + AUTH handshake would otherwise dominate.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import LINE_ENDINGS_REGEX

from maild.config import Security as Security
from maild.config import SmtpSettings as SmtpSettings
from maild.errors import MaildError

log = logging.getLogger("maild.smtp")

BeforeDot = Callable[[], Awaitable[None]]
Outcome = Literal["sent", "retry", "failed"]

# Addresses go verbatim into MAIL FROM / RCPT TO; anything that could end the
# command line or the <...> bracket is refused before it reaches the wire.
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
_QUIT_TIMEOUT_SECONDS = 5.0


@functools.lru_cache(maxsize=4096)
def _quoted(address: str) -> str:
    """aiosmtplib's own ``<address>`` for MAIL and RCPT, once per address.

    ``SMTP.mail`` and ``SMTP.rcpt`` run ``email.utils.parseaddr`` over the address
    at every call: a tenth of the drain's CPU, for the one sender address and
    the few hundred recipients a backlog's mail goes to. The same function's
    result is sent, so the commands are byte for byte what ``mail``/``rcpt`` write.
    """
    return quote_address(address)


@dataclass(frozen=True)
class Envelope:
    """One mail to hand over; `message` is already rendered (CRLF or LF line ends)."""

    mail_from: str
    recipients: tuple[str, ...]
    message: bytes
    message_id: str | None = None  # for the log line; else read from the message's header
    # the message as it goes on the wire, ``wire_data(message)``, when the caller has it: the
    # outbox knows it of the text mail it composes (``outbox._wire_form``), and a 100 KB
    # attachment's mail is not searched three times over for what cannot be in it
    wire: bytes | None = None


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


def wire_data(message: bytes) -> bytes:
    """The message as aiosmtplib's ``data()`` puts it on the wire, without the final ".":
    CRLF line ends (a bare CR or LF becomes one), a dot doubled at the start of a line
    (RFC 5321 4.5.2) and a CRLF at the end (its ``normalize_message_line_endings`` and
    ``PERIOD_REGEX``; a hypothesis test holds the two equal for any bytes).

    It counts and searches before it copies: maild's own mail is CRLF already and seldom
    has a line starting with a dot, so the common case returns the message itself, where
    the two regular expressions copied it twice (4 against 12 us for 1.5 KB, 144 against
    456 us for 60 KB, bench/README.md seventh session)."""
    crlf = message.count(b"\r\n")
    if crlf != message.count(b"\n") or crlf != message.count(b"\r"):
        message = LINE_ENDINGS_REGEX.sub(b"\r\n", message)  # aiosmtplib's own: CRLF, bare LF or bare CR
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message


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


class _Replies:
    """A mail's commands through aiosmtplib's ``execute_command``, each reply awaited under the
    mail's ``asyncio.timeout``, which ends the wait once a reply is ``timeout`` seconds late.

    ``execute_command`` with its own timeout awaits each reply through ``asyncio.wait_for``: a
    future, a timer and a callback per reply, and an extra turn of the event loop before the
    reply is seen (four replies a mail). Here a command only notes when it was sent; one timer
    per mail looks when it is due whether the reply awaited then was asked for ``timeout``
    seconds ago, and sets itself again for when it would be if not. The limit is the same, per
    reply; a reply that does not come in time raises what aiosmtplib raises
    (``SMTPReadTimeoutError``, ``_mail_rcpt_data``), and the connection is dropped, as
    aiosmtplib closes it then. Between ``idle()`` and the next command (the wait for
    the outbox's turn before the final ".") no reply is awaited and nothing times out."""

    __slots__ = ("client", "_deadline", "_timeout", "_loop", "_since", "_timer")

    def __init__(self, client: aiosmtplib.SMTP, deadline: asyncio.Timeout, timeout: float) -> None:
        self.client = client
        self._deadline = deadline
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the command whose reply is awaited was sent
        self._timer = self._loop.call_at(self._loop.time() + timeout, self._check)

    def command(self, *args: bytes) -> Awaitable[SMTPResponse]:
        self._since = self._loop.time()
        return self.client.execute_command(*args, timeout=None)

    def idle(self) -> None:
        """No reply is awaited until the next command: nothing times out meanwhile."""
        self._since = None

    def _check(self) -> None:
        now = self._loop.time()
        due = now + self._timeout if self._since is None else self._since + self._timeout
        if due <= now:
            self._deadline.reschedule(now)  # asyncio.timeout cancels the wait and raises TimeoutError
        else:
            self._timer = self._loop.call_at(due, self._check)

    def close(self) -> None:
        self._timer.cancel()


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
        self._settings = settings
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self._tls_context: ssl.SSLContext | None = None

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
            client, self._client = self._client, None
            if client is None:
                return
            if client.is_connected:
                try:
                    await client.quit(timeout=_QUIT_TIMEOUT_SECONDS)
                except (SMTPException, OSError):
                    pass
            client.close()

    # --- connection -----------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context(cafile=self._settings.cafile)
        return self._tls_context

    async def _open(self) -> tuple[aiosmtplib.SMTP, str]:
        """Connect, greet, secure and authenticate; returns the client and the banner.

        Transport faults come back as `_Disconnected` (worth a retry later);
        set-up faults that retrying cannot fix are raised as SmtpError.
        """
        s = self._settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout_seconds,
            local_hostname=s.local_hostname,
            use_tls=s.security == "tls",
            start_tls=False,
            tls_context=self._context() if s.security != "none" else None,
        )
        try:
            greeting = await client.connect()
            await client.ehlo()
            if s.security == "starttls":
                if not client.supports_extension("starttls"):
                    raise SmtpError(
                        f"smtp server {self._where} does not offer STARTTLS, which "
                        "security = \"starttls\" requires; use \"tls\" for port 465 "
                        "or \"none\" only on a trusted network"
                    )
                await client.starttls()
                await client.ehlo()
            if s.username is not None and s.password is not None:
                await self._login(client, s.username, s.password)
        except (SmtpError, _Disconnected):
            client.close()
            raise
        except ssl.SSLError as exc:
            client.close()
            raise SmtpError(f"TLS with smtp server {self._where} failed: {exc}") from exc
        except (SMTPTimeoutError, asyncio.TimeoutError, TimeoutError) as exc:
            client.close()
            raise _Disconnected(f"timed out talking to {self._where}: {exc}") from exc
        except SMTPResponseException as exc:
            client.close()
            # a 4xx banner or EHLO is the server saying "not now"
            raise _Disconnected(f"{self._where} refused the session: {_reply(exc.code, exc.message)}") from exc
        except (SMTPException, OSError) as exc:
            client.close()
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError):
                raise SmtpError(f"TLS with smtp server {self._where} failed: {cause}") from exc
            raise _Disconnected(f"cannot talk to {self._where}: {exc}") from exc
        return client, greeting.message

    async def _login(self, client: aiosmtplib.SMTP, username: str, password: str) -> None:
        if not client.supports_extension("auth"):
            raise SmtpError(
                f"smtp server {self._where} does not offer AUTH but a username is configured"
            )
        try:
            await client.login(username, password)
        except SMTPAuthenticationError as exc:
            if 400 <= exc.code < 500:
                raise _Disconnected(
                    f"{self._where} deferred AUTH for {username!r}: {_reply(exc.code, exc.message)}"
                ) from None
            raise SmtpAuthError(
                f"smtp server {self._where} refused the credentials of {username!r}: "
                f"{_reply(exc.code, exc.message)}"
            ) from None

    @property
    def connected(self) -> bool:
        """Whether a session is open now; false after a send that could not reach the relay."""
        return self._client is not None and self._client.is_connected

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def check(self) -> str:
        """Prove the relay works with these settings, for `maild check`.

        Opens its own connection (and says QUIT) so that it reflects what a fresh
        daemon would see, not a connection kept from earlier sends.
        """
        try:
            client, banner = await self._open()
        except _Disconnected as exc:
            raise SmtpError(f"smtp server {self._where}: {exc.reason}") from None
        try:
            extensions = ", ".join(sorted(e.upper() for e in client.esmtp_extensions))
        finally:
            try:
                await client.quit(timeout=_QUIT_TIMEOUT_SECONDS)
            except (SMTPException, OSError):
                client.close()
        s = self._settings
        who = f"authenticated as {s.username}" if s.username else "no AUTH"
        first_line = banner.splitlines()[0] if banner else ""
        return f"{self._where} ({s.security}, {who}): {first_line}; EHLO: {extensions}"

    # --- sending --------------------------------------------------------

    async def send(self, envelope: Envelope, before_dot: BeforeDot | None = None, logged: bool = True) -> Delivery:
        """Deliver one mail; per-mail outcomes are returned, relay set-up faults raised.

        ``before_dot`` is awaited once the message is written (after DATA's 354) and
        before its final ".", possibly more than once if the connection is
        re-opened. Until the "." the relay cannot have accepted the mail; the outbox
        takes its turn there, so that only one of several connections (and
        couriers) at a time can have a mail the relay accepted but the outbox has
        not yet marked sent, while the others build, address and write theirs.
        ``logged=False``: the caller logs the outcome (``log_delivery``) once it has
        recorded it, outside that turn.
        """
        async with self._lock:
            problem = _invalid_envelope(envelope)
            if problem is not None:
                delivery = Delivery("failed", f"not sent: {problem}")
            else:
                delivery = await self._send_with_reconnect(envelope, before_dot)
        if logged:
            self.log_delivery(envelope, delivery)
        return delivery

    async def _send_with_reconnect(self, envelope: Envelope, before_dot: BeforeDot | None) -> Delivery:
        reused = self._client is not None and self._client.is_connected
        try:
            return await self._transaction(envelope, before_dot)
        except _Disconnected as exc:
            self._drop()
            if not reused:
                return Delivery("retry", exc.reason)
            log.info("kept connection to %s went stale (%s); reconnecting", self._where, exc.reason)
        try:
            return await self._transaction(envelope, before_dot)
        except _Disconnected as exc:
            self._drop()
            return Delivery("retry", exc.reason)

    async def _transaction(self, envelope: Envelope, before_dot: BeforeDot | None) -> Delivery:
        if self._client is None or not self._client.is_connected:
            self._drop()
            self._client, _ = await self._open()
        client = self._client
        try:
            return await self._mail_rcpt_data(client, envelope, before_dot)
        except (SMTPServerDisconnected, ConnectionError) as exc:
            raise _Disconnected(f"connection to {self._where} lost: {exc}") from exc
        except (SMTPTimeoutError, asyncio.TimeoutError, TimeoutError) as exc:
            self._drop()
            return Delivery("retry", f"timed out talking to {self._where}: {exc}", timed_out=True)
        except SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing this session
                self._drop()
            else:
                await self._reset(client)
            return Delivery(_classify(exc.code), _reply(exc.code, exc.message))

    async def _mail_rcpt_data(self, client: aiosmtplib.SMTP, envelope: Envelope,
                              before_dot: BeforeDot | None = None) -> Delivery:
        options: list[str] = []
        encoding = "ascii"
        if _needs_smtputf8(envelope):
            if not client.supports_extension("smtputf8"):
                return Delivery(
                    "failed", f"not sent: {self._where} does not offer SMTPUTF8 for a non-ASCII address"
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if client.supports_extension("size"):
            options.append(f"SIZE={len(envelope.message)}")
        if client.supports_extension("8bitmime") and not envelope.message.isascii():
            options.append("BODY=8BITMIME")

        try:
            async with asyncio.timeout(None) as deadline:
                replies = _Replies(client, deadline, self._settings.timeout_seconds)
                try:
                    return await self._conversation(replies, envelope, encoding, options, before_dot)
                finally:
                    replies.close()
        except TimeoutError as exc:
            if isinstance(exc, SMTPTimeoutError):
                raise
            # the words aiosmtplib's own reply timeout raises, for the outbox row and the log
            raise SMTPReadTimeoutError("Timed out waiting for server response") from exc

    async def _conversation(self, replies: _Replies, envelope: Envelope, encoding: str, options: list[str],
                            before_dot: BeforeDot | None) -> Delivery:
        client = replies.client
        # SMTP.mail and SMTP.rcpt, their address quoted once (``_quoted``): the same
        # commands through aiosmtplib's own execute_command, the same errors
        response = await replies.command(b"MAIL", b"FROM:" + _quoted(envelope.mail_from).encode(encoding),
                                         *(option.encode("ascii") for option in options))
        if response.code != SMTPStatus.completed:
            raise SMTPSenderRefused(response.code, response.message, envelope.mail_from)
        refused: dict[str, str] = {}
        for address in envelope.recipients:
            response = await replies.command(b"RCPT", b"TO:" + _quoted(address).encode(encoding))
            if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                if response.code == 421:
                    raise SMTPRecipientRefused(response.code, response.message, address)
                refused[address] = _reply(response.code, response.message)
        if len(refused) == len(envelope.recipients):
            replies.idle()  # RSET has aiosmtplib's own timeout
            await self._reset(client)
            # one temporary refusal makes the whole mail worth another try
            temporary = [r for r in refused.values() if not r.startswith("5")]
            if temporary:
                return Delivery("retry", temporary[0], refused)
            return Delivery("failed", next(iter(refused.values())), refused)
        response = await self._data(replies, envelope, before_dot)
        return Delivery("sent", _reply(response.code, response.message), refused)

    @staticmethod
    async def _data(replies: _Replies, envelope: Envelope, before_dot: BeforeDot | None) -> SMTPResponse:
        """SMTP.data() in two steps, through aiosmtplib's public surfaces: DATA and its 354
        (``execute_command``), the message as ``data()`` would write it (``wire_data``, or
        ``envelope.wire`` when the caller has it) on the client's protocol, then
        ``before_dot``, then the final "." and its reply (``execute_command`` again: its
        command lock, reply pairing, and the connection closed on a lost connection or a
        421, as ``data()`` does; the reply's timeout is ``_Replies``').

        ``data()`` writes the message and its "." in one call; split, the relay's
        handling of the message comes after ``before_dot``, and the outbox's turn
        spans only the ".", the reply and the mark. The write is not awaited (nor
        is it in ``data()``): the transport sends what the socket takes and keeps
        the rest, which goes out while ``before_dot`` waits or before the "."; the
        "."'s reply timeout covers that rest, as ``data()``'s covers the whole message.
        ``before_dot`` itself (the wait for the turn) is not the relay's to answer
        and has no timeout. A relay that drops the connection before the "." has not
        accepted the mail: the write or the "." raises SMTPServerDisconnected (retried
        once on a new connection, as any lost connection)."""
        start = await replies.command(b"DATA")
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        client = replies.client
        protocol = client.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        protocol.write(envelope.wire if envelope.wire is not None else wire_data(envelope.message))
        if before_dot is not None:
            replies.idle()
            await before_dot()
        response = await replies.command(b".")
        if response.code != SMTPStatus.completed:
            raise SMTPDataError(response.code, response.message)
        return response

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """RSET so the kept connection starts the next mail clean; a broken one is dropped."""
        try:
            await client.rset()
        except (SMTPException, OSError):
            self._drop()

    def log_delivery(self, envelope: Envelope, delivery: Delivery) -> None:
        """The outcome's log line: message id, outcome, recipients, relay, reply."""
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
