"""Helpers shared by the private-server fixtures."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

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


def make_self_signed_cert(directory: Path, name: str = "cert") -> tuple[Path, Path] | None:
    """Self-signed cert for 127.0.0.1 and localhost that is also its own CA file; None without openssl."""
    if shutil.which("openssl") is None:
        return None
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key
