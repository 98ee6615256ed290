"""What a drain of the outbox did: a plain result, importable without the outbox.

The daemon counts every cycle's sending in one of these, also a cycle that found
nothing due and so never loaded the outbox (its SMTP client, the ORM, the
templates): an idle ``run --once`` costs its start-up and no more.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DrainResult:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    more_due: bool = False  # the time budget ran out with mail still due

    def add(self, other: DrainResult) -> None:
        """Count ``other``'s mail and errors in this result; ``more_due`` stays this one's."""
        self.sent += other.sent
        self.retry += other.retry
        self.failed += other.failed
        self.errors.extend(other.errors)
