"""Exception types shared across stages.

Each carries the fact a person needs to act: the file and key path for config,
the message for mail that cannot be processed.
"""
from __future__ import annotations


class MaildError(Exception):
    """Base of every error maild raises on purpose."""


class ConfigError(MaildError):
    """A config or customers file is unusable; names the file, key path and reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")
