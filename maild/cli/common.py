"""What every command group shares: its errors (exit codes) and the handler signature."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from maild.config import Config
from maild.errors import MaildError

Handler = Callable[[Config, sessionmaker[Session], argparse.Namespace], int]


class UsageError(MaildError):
    """Bad command-line input: a clear message and exit 2, never a traceback."""


class Failure(MaildError):
    """An operation refused with a reason for the person at the terminal, and its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
