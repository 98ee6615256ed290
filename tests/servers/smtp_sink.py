"""An in-process SMTP server that captures what it receives.

The sink is aiosmtpd running in its own thread on 127.0.0.1, so the code under
test talks real SMTP over a real socket, and the tests assert on what the server
saw (envelope and exact bytes), not on what a mock was called with.

Fault injection is by attribute, settable while the sink runs: `mode` makes every
mail fail temporarily or permanently (at DATA, or at RCPT with `fail_at`),
`reject_rcpt` refuses single recipients, `stall_rcpt` leaves mail to some
recipients unanswered after DATA (a relay that hangs on one mail), `delay_seconds`
slows every mail down, and `stop()` / `start()` take the server
away and bring it back on the same port, dropping open client connections as a
crashed or restarted MTA would. Made with ``pipelining=True`` the sink offers
PIPELINING (RFC 2920) in its EHLO, as Postfix and Exim do (aiosmtpd reads
pipelined commands in turn either way); ``auth_mechanisms`` narrows what AUTH offers.
"""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.common import free_port, make_self_signed_cert, unavailable

Mode = Literal["accept", "tempfail", "permfail"]
Tls = Literal["starttls", "implicit"]

TEMPFAIL_REPLY = "451 4.3.0 Temporarily unavailable (test sink)"
PERMFAIL_REPLY = "550 5.7.1 Message rejected (test sink)"
_REPLY_TEXT = {
    451: "451 4.3.0 Temporarily unavailable (test sink)",
    550: "550 5.1.1 Mailbox unavailable (test sink)",
}


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    parsed: EmailMessage


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP that reports each client connection to the sink.

    A connection counts once it greets (EHLO/HELO): the Controller's own
    start-up probe only reads the banner, and STARTTLS re-greets on the same
    connection, so neither inflates the count the reuse tests rely on.
    """

    def __init__(self, sink: SmtpSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._greeted = False
        self._raw_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw_transport is None:
            self._raw_transport = transport
            self._sink._open.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._open.discard(self)
        super().connection_lost(error)

    def _count_greeting(self) -> None:
        if not self._greeted:
            self._greeted = True
            self._sink._count_connection()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._count_greeting()
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self._count_greeting()
        await super().smtp_HELO(hostname)

    def drop(self) -> None:
        if self._raw_transport is not None:
            self._raw_transport.close()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self._sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        code = self._sink.reject_mail
        if code is not None:
            return _REPLY_TEXT.get(code, f"{code} Sender rejected (test sink)")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        sink = self._sink
        reader = getattr(server, "_reader", None)  # what had arrived behind this RCPT (pipelined commands)
        sink.buffered_at_rcpt.append(bytes(getattr(reader, "_buffer", b"")))
        code = sink.reject_rcpt.get(address.lower())
        if code is not None:
            return _REPLY_TEXT.get(code, f"{code} Recipient rejected (test sink)")
        if sink.fail_at == "rcpt" and sink.mode != "accept":
            return TEMPFAIL_REPLY if sink.mode == "tempfail" else PERMFAIL_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self._sink
        if sink.mode == "tempfail":
            return TEMPFAIL_REPLY
        if sink.mode == "permfail":
            return PERMFAIL_REPLY
        if sink.delay_seconds:
            await asyncio.sleep(sink.delay_seconds)
        if sink.stall_rcpt.intersection(a.lower() for a in envelope.rcpt_tos):
            await asyncio.sleep(sink.stall_seconds)  # the client times out first
            return "451 4.3.0 Stalled (test sink)"
        data = cast(bytes, envelope.original_content)
        parsed = BytesParser(policy=policy.default).parsebytes(data)
        sink._capture(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=data,
                parsed=parsed,
            )
        )
        return "250 2.0.0 Queued (test sink)"


class SmtpSink:
    """A capturing SMTP server; see the module docstring for the knobs."""

    def __init__(
        self,
        *,
        require_auth: tuple[str, str] | None = None,
        tls: Tls | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        pipelining: bool = False,
        auth_mechanisms: tuple[str, ...] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.pipelining = pipelining
        self.auth_mechanisms = auth_mechanisms
        self.reject_mail: int | None = None
        self.buffered_at_rcpt: list[bytes] = []
        self.port = free_port()
        self.mode: Mode = "accept"
        self.fail_at: Literal["data", "rcpt"] = "data"
        self.reject_rcpt: dict[str, int] = {}
        self.stall_rcpt: set[str] = set()  # mail to these goes unanswered after DATA for stall_seconds
        self.stall_seconds = 5.0
        self.delay_seconds = 0.0  # every mail is answered after DATA only after this long (a slow relay)
        self.require_auth = require_auth
        self.tls = tls
        self.cafile = certfile
        self.auth_attempts: list[tuple[str, bool]] = []
        self._server_context: ssl.SSLContext | None = None
        if tls is not None:
            if certfile is None or keyfile is None:
                raise ValueError("a TLS sink needs certfile and keyfile")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self._server_context = ctx
        self._lock = threading.Condition()
        self._messages: list[Received] = []
        self._connections = 0
        self._open: set[_CountingSMTP] = set()
        self._controller: Controller | None = None

    # --- captured state -------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """Client connections that greeted since start-up (or the last clear())."""
        with self._lock:
            return self._connections

    def _capture(self, received: Received) -> None:
        with self._lock:
            self._messages.append(received)
            self._lock.notify_all()

    def _count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink got {len(self._messages)} of {count} messages: "
                        + repr([(m.mail_from, m.rcpt_tos) for m in self._messages])
                    )
                self._lock.wait(left)
            return list(self._messages)

    def received_for(self, address: str) -> list[Received]:
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in m.rcpt_tos)]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._connections = 0

    # --- lifecycle ------------------------------------------------------

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self.require_auth is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.require_auth
        login = auth_data.login.decode("utf-8", "replace")
        ok = login == user and auth_data.password == password.encode()
        with self._lock:
            self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False)

    def _make_controller(self) -> Controller:
        sink = self
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "server_hostname": "sink.test",
            "ident": "maild test sink",
        }
        if self.tls == "implicit":
            kwargs["ssl_context"] = self._server_context
        elif self.tls == "starttls":
            kwargs["tls_context"] = self._server_context
        if self.require_auth is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=False,
            )
            if self.auth_mechanisms is not None:
                kwargs["auth_exclude_mechanism"] = [m for m in ("LOGIN", "PLAIN")
                                                    if m not in self.auth_mechanisms]

        class _Controller(Controller):
            def factory(self) -> SMTP:
                with warnings.catch_warnings():
                    # plain AUTH on loopback is the point of the auth tests
                    warnings.simplefilter("ignore", UserWarning)
                    return _CountingSMTP(sink, self.handler, **self.SMTP_kwargs)

        return _Controller(_Handler(self), **kwargs)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen on the same port as before (a fresh Controller; aiosmtpd's loop dies on stop)."""
        if self._controller is not None:
            return
        controller = self._make_controller()
        # The stopped server's socket can take seconds to be released on a loaded machine.
        deadline = time.monotonic() + 30
        while True:
            try:
                controller.start()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                controller = self._make_controller()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and drop open client connections, as a crashed server would."""
        controller = self._controller
        if controller is None:
            return
        self._controller = None

        async def drop_all() -> None:
            for proto in list(self._open):
                proto.drop()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(drop_all(), controller.loop).result(5)
        except Exception:  # the loop may already be shutting down
            pass
        controller.stop()

    def restart(self) -> None:
        self.stop()
        self.start()


SinkFactory = Callable[..., SmtpSink]


@pytest.fixture(scope="session")
def smtp_sink_cert() -> Iterator[tuple[str, str]]:
    """(certfile, keyfile); the certfile doubles as the client's cafile."""
    directory = Path(tempfile.mkdtemp(prefix="maild-smtp-cert-"))
    try:
        try:
            pair = make_self_signed_cert(directory)
        except subprocess.CalledProcessError as exc:
            unavailable("smtp TLS sink", f"openssl failed: {exc.stderr!r}")
            raise AssertionError("unreachable") from exc
        if pair is None:
            unavailable("smtp TLS sink", "openssl is not installed")
            raise AssertionError("unreachable")
        yield str(pair[0]), str(pair[1])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def smtp_sink_factory(request: pytest.FixtureRequest) -> Iterator[SinkFactory]:
    """Make extra sinks: `smtp_sink_factory(require_auth=("u", "p"), tls="starttls")`.

    A TLS sink pulls in the cert fixture lazily, so plain tests never need openssl.
    """
    sinks: list[SmtpSink] = []

    def make(
        *, require_auth: tuple[str, str] | None = None, tls: Tls | None = None, pipelining: bool = False,
        auth_mechanisms: tuple[str, ...] | None = None,
    ) -> SmtpSink:
        certfile = keyfile = None
        if tls is not None:
            certfile, keyfile = request.getfixturevalue("smtp_sink_cert")
        sink = SmtpSink(require_auth=require_auth, tls=tls, certfile=certfile, keyfile=keyfile,
                        pipelining=pipelining, auth_mechanisms=auth_mechanisms)
        sinks.append(sink)
        sink.start()
        return sink

    try:
        yield make
    finally:
        for sink in sinks:
            sink.stop()


@pytest.fixture
def smtp_sink(smtp_sink_factory: SinkFactory) -> SmtpSink:
    return smtp_sink_factory()


@pytest.fixture
def smtp_tls_sink(smtp_sink_factory: SinkFactory) -> SmtpSink:
    """A sink offering STARTTLS with a self-signed cert; trust it via `.cafile`."""
    return smtp_sink_factory(tls="starttls")
