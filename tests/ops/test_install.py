"""``maild setup``: what it writes, with which modes, and that it never overwrites.

The files come from the package itself (``maild/examples``), so these tests
also fail when an example or the unit is missing from an installation.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from maild.config import load_config
from maild.rules.customers import load_customers
from maild.ops.install import EXAMPLES, SetupError, example, maildir_config, next_steps, run_setup
from maild.intake.mailbox import ImapSettings, MaildirSettings
from tests.servers.common import unavailable

ROOT = Path(__file__).resolve().parents[2]
BIN = Path("/opt/test/bin/maild")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_package_ships_the_repository_examples_and_unit() -> None:
    """One copy of each: the package's examples are the repository's files (links in a checkout)."""
    for shipped, source in (("maild.example.toml", "config/maild.example.toml"),
                            ("customers.example.toml", "config/customers.example.toml"),
                            ("maild.service", "systemd/maild.service"),
                            ("README.md", "README.md")):
        assert (EXAMPLES / shipped).read_bytes() == (ROOT / source).read_bytes(), shipped


def test_setup_writes_config_credentials_and_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o077)  # a strict umask must not leave the config unreadable to the service
    try:
        result = run_setup(tmp_path, maild_bin=BIN)
    finally:
        os.umask(old)
    etc = tmp_path / "etc" / "maild"
    unit = tmp_path / "etc" / "systemd" / "system" / "maild.service"
    assert set(result.written) == {etc / "maild.toml", etc / "customers.toml", unit,
                                   etc / "credentials" / "imap-password", etc / "credentials" / "smtp-password"}
    assert mode(etc) == 0o755 and mode(etc / "maild.toml") == 0o644 and mode(etc / "customers.toml") == 0o644
    assert mode(etc / "credentials") == 0o700
    assert mode(etc / "credentials" / "imap-password") == 0o600
    text = unit.read_text()
    assert f"ExecStart={BIN} --config" in text and "/opt/maild/.venv/bin/maild" not in text
    doc = next(line for line in text.splitlines() if line.startswith("Documentation="))
    assert Path(doc.removeprefix("Documentation=file://")).is_file(), doc

    (etc / "credentials" / "imap-password").write_text("secret")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load_config(etc / "maild.toml")
    assert isinstance(cfg.source, ImapSettings) and cfg.source.password == "secret"
    assert load_customers(cfg.customers_file, cfg.packages)


def test_setup_never_overwrites(tmp_path: Path) -> None:
    run_setup(tmp_path, maild_bin=BIN)
    etc = tmp_path / "etc" / "maild"
    (etc / "maild.toml").write_text("# edited by the operator\n")
    (etc / "credentials" / "imap-password").write_text("secret")
    again = run_setup(tmp_path, maild_bin=Path("/elsewhere/maild"))
    assert again.written == []
    assert (etc / "maild.toml").read_text() == "# edited by the operator\n"
    assert (etc / "credentials" / "imap-password").read_text() == "secret"
    assert "/elsewhere" not in (tmp_path / "etc" / "systemd" / "system" / "maild.service").read_text()


def test_setup_again_on_an_upgrade_asks_only_for_what_is_left_to_do(tmp_path: Path) -> None:
    """``maild setup`` is a step of the README's upgrade; on a configured machine it still said "edit
    maild.toml", "printf '%s' 'the IMAP password' > .../imap-password" (the working password
    overwritten by whoever follows it) and "systemctl enable --now maild" (the running old version kept)."""
    first = run_setup(tmp_path, maild_bin=BIN)
    steps = next_steps(tmp_path, BIN, None, first)
    assert any(s.startswith("edit ") for s in steps) and any("imap-password" in s for s in steps)
    assert "systemctl daemon-reload && systemctl enable --now maild" in steps
    etc = tmp_path / "etc" / "maild"
    (etc / "credentials" / "imap-password").write_text("secret")
    again = next_steps(tmp_path, BIN, None, run_setup(tmp_path, maild_bin=BIN))
    assert not any(s.startswith("edit ") or "imap-password" in s for s in again), again
    assert any("smtp-password" in s for s in again)  # still empty: needed once [smtp] username is set
    assert f"{BIN} --config {etc / 'maild.toml'} check" in again
    assert "systemctl daemon-reload && systemctl restart maild" in again, again


def test_setup_names_an_existing_config_the_service_cannot_read(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "maild"
    etc.mkdir(parents=True, mode=0o750)
    (etc / "maild.toml").write_text("x = 1\n")
    (etc / "maild.toml").chmod(0o640)
    result = run_setup(tmp_path, maild_bin=BIN)
    assert mode(etc) == 0o755  # the README's earlier 0750 kept the dynamic user out
    assert any(str(etc / "maild.toml") in note and "chmod 0644" in note for note in result.notes)


def test_setup_with_maildir(tmp_path: Path) -> None:
    result = run_setup(tmp_path, maildir="/var/mail/support/Maildir", maild_bin=BIN)
    etc = tmp_path / "etc" / "maild"
    dropin = tmp_path / "etc" / "systemd" / "system" / "maild.service.d" / "maildir.conf"
    assert dropin in result.written
    assert "[Service]\n" in dropin.read_text() and "ReadWritePaths=/var/mail/support/Maildir\n" in dropin.read_text()
    cfg = load_config(etc / "maild.toml")
    assert isinstance(cfg.source, MaildirSettings) and cfg.source.path == "/var/mail/support/Maildir"


def test_maildir_under_home_opens_protecthome(tmp_path: Path) -> None:
    run_setup(tmp_path, maildir="/home/support/Maildir", maild_bin=BIN)
    text = (tmp_path / "etc" / "systemd" / "system" / "maild.service.d" / "maildir.conf").read_text()
    assert "ProtectHome=read-only\n" in text and "ReadWritePaths=/home/support/Maildir\n" in text


def test_maildir_config_keeps_every_other_key() -> None:
    original = example("maild.example.toml")
    switched = maildir_config(original, '/srv/mail "x"/Maildir')
    assert '\npath = "/srv/mail \\"x\\"/Maildir"' in switched
    assert "\n[imap]" not in switched and "\n# [imap]" in switched
    assert len(switched.splitlines()) == len(original.splitlines())


def test_setup_refuses_a_relative_maildir(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="absolute"):
        run_setup(tmp_path, maildir="Maildir", maild_bin=BIN)
    assert not (tmp_path / "etc").exists()


def test_written_unit_and_dropin_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd itself reads the unit and the drop-in setup wrote (a bad directive is reported)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze", "not installed (Debian: systemd)")
        return
    maild = shutil.which("maild") or str(Path(sys.executable).parent / "maild")
    run_setup(tmp_path, maildir="/var/mail/support/Maildir", maild_bin=Path(maild))
    units = tmp_path / "etc" / "systemd" / "system"
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    proc = subprocess.run([analyze, "verify", str(units / "maild.service")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0 and "maild.service" not in proc.stderr, proc.stderr
    (units / "maild.service.d" / "maildir.conf").write_text("[Service]\nReadWritePathz=/x\n")
    proc = subprocess.run([analyze, "verify", str(units / "maild.service")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert "ReadWritePathz" in proc.stderr, "the drop-in was not read: this test would prove nothing"
