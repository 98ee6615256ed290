"""Helpers shared by the private-server fixtures."""
from __future__ import annotations

import os
import socket

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, why: str) -> None:
    """Skip locally, fail under CI: a missing server must never pass CI silently."""
    message = f"{what} unavailable: {why}"
    if under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
