"""Shared fixtures. Server fixtures live in tests/servers/, one module per server."""
import logging
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.servers.dovecot",
    "tests.servers.smtp_sink",
    "tests.servers.postgres",
    "tests.servers.chromium",
]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`maild.cli.main` points the maild logger at the test's captured stderr; put it back after,
    so a later test's caplog still sees maild's records."""
    logger = logging.getLogger("maild")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
