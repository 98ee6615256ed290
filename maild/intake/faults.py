"""The intake's faults of the machine, importable without the parser.

The daemon retries a cycle with backoff on these; it names them in its list of
faults before any mail has come, when the parse worker and the mail parser are
not loaded yet (an idle ``run --once`` never loads them).
"""
from __future__ import annotations

from maild.errors import MaildError


class ParseWorkerError(MaildError):
    """No parse worker could be started (fork failed): the machine's trouble, not a
    message's; the batch is left on the server and retried with backoff."""
