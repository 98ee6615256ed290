"""`maild check` and `maild run` on secrets others can read, and on consultants without a trusted authserv-id."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from maild.cli.main import main
from tests.helpers import maildir_source, write_config


pytestmark = pytest.mark.usefixtures("restore_logging")


def warnings(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    main(["--config", str(config), "check"])
    found: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("warn"):
            name, _, detail = line[5:].partition(": ")
            found.setdefault(name, []).append(detail)
    return found


def config_with(tmp_path: Path, smtp_sink: Any, secret: str, security: str = "") -> Path:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port, extra=security)
    # the SMTP login joins the [smtp] table write_config wrote
    text = config.read_text(encoding="utf-8").replace('from_name = "Wsparcie"\n',
                                                       f'from_name = "Wsparcie"\nusername = "support@firma.pl"\n'
                                                       f'{secret}\n')
    config.write_text(text, encoding="utf-8")
    return config


def test_a_password_file_others_can_read_is_warned_about(tmp_path: Path, smtp_sink: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret", encoding="utf-8")
    config = config_with(tmp_path, smtp_sink, f'password_file = "{secret}"')
    os.chmod(secret, 0o644)
    [line] = warnings(config, capsys)["secrets"]
    assert "smtp.password_file" in line and str(secret) in line and "0644" in line and "chmod 0600" in line
    assert "s3cret" not in line
    os.chmod(secret, 0o600)
    assert "secrets" not in warnings(config, capsys)


def test_an_inline_password_in_a_config_others_can_read_is_warned_about(tmp_path: Path, smtp_sink: Any,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with(tmp_path, smtp_sink, 'password = "s3cret"')
    os.chmod(config, 0o640)
    [line] = warnings(config, capsys)["secrets"]
    assert "smtp.password" in line and "inline" in line and str(config) in line and "password_file" in line
    os.chmod(config, 0o600)
    assert "secrets" not in warnings(config, capsys)


def test_run_warns_too(tmp_path: Path, smtp_sink: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with(tmp_path, smtp_sink, 'password = "s3cret"')
    os.chmod(config, 0o644)
    main(["--config", str(config), "run", "--once"])
    err = capsys.readouterr().err
    assert "smtp.password: the password is inline in the config" in err and "s3cret" not in err


def test_consultants_without_a_trusted_authserv_id_are_warned_about(tmp_path: Path, smtp_sink: Any,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port)
    [line] = warnings(config, capsys)["consultants"]
    assert "2 consultants" in line and "trusted_authserv_id" in line
    config = write_config(tmp_path, source=maildir_source(tmp_path), smtp_port=smtp_sink.port,
                          extra='\n[security]\ntrusted_authserv_id = "mx.firma.pl"\n')
    assert "consultants" not in warnings(config, capsys)
