"""aiosmtpd handlers for the benchmarks' sinks in a process of their own (``python -m aiosmtpd -c``).

``PipeliningSink`` drops the mail as ``aiosmtpd.handlers.Sink`` does and adds
PIPELINING (RFC 2920) to its EHLO, as Postfix and Exim offer it; aiosmtpd reads
pipelined commands in turn either way, so only what the client may do changes.
"""
from __future__ import annotations

from typing import Any


class PipeliningSink:
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"
