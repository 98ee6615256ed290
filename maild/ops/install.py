"""``maild setup``: the files the README's Install section used to copy by hand.

The examples, the unit and the README ship inside the package (``maild/examples``),
so ``pip install maild`` alone is enough to set up a machine. Setup never
overwrites a file that exists: an operator's edited config survives a second
run. It sets the modes that let the service read its config under
``DynamicUser=yes`` (a uid that exists only while the unit runs, so group
ownership cannot be arranged beforehand):

* ``/etc/maild`` 0755, ``maild.toml`` and ``customers.toml`` 0644: no secret is
  in them, and the dynamic user must read them.
* ``/etc/maild/credentials`` 0700, its files 0600, owned by root: systemd reads
  them as root for ``LoadCredential=`` and hands the daemon its own copy;
  admin commands in a root shell read them directly (``$CREDENTIALS_DIRECTORY``
  falls back to this folder, see ``config.credentials_directory``).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CREDENTIALS_FALLBACK
from ..errors import MaildError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UNIT_NAME = "maild.service"
SHIPPED_EXEC = "/opt/maild/.venv/bin/maild"
SHIPPED_DOC = "file:///opt/maild/.venv/lib/python3.11/site-packages/maild/examples/README.md"
CREDENTIALS = ("imap-password", "smtp-password")
# Paths that ProtectHome= hides; a Maildir under them needs them read-only instead of absent.
HOME_PATHS = ("/home", "/root", "/run/user")


class SetupError(MaildError):
    """Setup cannot write what it must (a shipped file missing, a path that is not a folder)."""


@dataclass
class SetupResult:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def example(name: str) -> str:
    """A file shipped in ``maild/examples``; a missing one is a broken install, named."""
    path = EXAMPLES / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"{path}: {exc.strerror}; this maild installation is incomplete, reinstall it") from None


def maildir_config(text: str, maildir: str) -> str:
    """The example config with ``[imap]`` commented out and ``[maildir]`` in its place, at ``maildir``."""
    lines = text.splitlines(keepends=True)
    try:
        imap = lines.index("[imap]\n")
        start = lines.index("# [maildir]\n")
    except ValueError:
        raise SetupError("the shipped example config has no [imap] / # [maildir] blocks to switch") from None
    end = start
    while end < len(lines) and lines[end].startswith("#"):
        end += 1
    out = lines[:imap]
    out += [line if not line.strip() or line.startswith("#") else f"# {line}" for line in lines[imap:start]]
    for line in lines[start:end]:
        line = line[2:] if line.startswith("# ") else line
        if line.startswith("path ="):
            line = re.sub(r'"[^"]*"', lambda _: _toml_string(maildir), line, count=1)
        out.append(line)
    out += lines[end:]
    return "".join(out)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(maild_bin: Path) -> str:
    """The shipped unit, pointing at this installation's ``maild`` and its README."""
    text = example(UNIT_NAME)
    if SHIPPED_EXEC not in text or SHIPPED_DOC not in text:
        raise SetupError(f"the shipped {UNIT_NAME} has no ExecStart={SHIPPED_EXEC} / Documentation= to adapt")
    return text.replace(SHIPPED_EXEC, str(maild_bin)).replace(SHIPPED_DOC, (EXAMPLES / "README.md").as_uri())


def maildir_dropin(maildir: str) -> str:
    """The unit's sandbox makes every path read-only (``ProtectSystem=strict``); maild moves mail in the Maildir."""
    lines = [
        "# Written by `maild setup --maildir`: maild reads and moves mail in this Maildir,",
        "# which ProtectSystem=strict would keep read-only.",
        "[Service]",
        f"ReadWritePaths={maildir}",
    ]
    if any(maildir == p or maildir.startswith(p + "/") for p in HOME_PATHS):
        lines.insert(3, "# ProtectHome=yes hides home folders entirely; read-only lets ReadWritePaths= open this one.")
        lines.insert(4, "ProtectHome=read-only")
    lines += [
        "# The service runs as a dynamic user: it reaches the Maildir through its group.",
        "# Make the folders group-writable (chmod -R g+rwX; chmod g+s on the folders).",
    ]
    try:
        gid = os.stat(maildir).st_gid
    except OSError:
        gid = 0
    if gid:
        import grp

        try:
            lines.append(f"Group={grp.getgrgid(gid).gr_name}")
        except KeyError:
            lines.append(f"Group={gid}")
    else:
        lines.append("#Group=mail")
    return "\n".join(lines) + "\n"


def installed_maild() -> Path:
    """This installation's ``maild`` script (next to the interpreter in a venv), for the unit's ExecStart."""
    beside = Path(sys.executable).parent / "maild"
    if beside.exists():
        return beside
    found = shutil.which("maild")
    return Path(found) if found else Path(SHIPPED_EXEC)


def _write_new(path: Path, text: str, mode: int, result: SetupResult) -> None:
    """Create ``path`` with ``mode`` (umask or not); an existing file is kept as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        result.kept.append(path)
        if mode & 0o004 and not path.stat().st_mode & 0o004:
            result.notes.append(f"{path} is not world-readable: the service's dynamic user cannot read it "
                                f"(chmod 0644 {path})")
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)
    result.written.append(path)


def _directory(path: Path, mode: int) -> None:
    if path.exists() and not path.is_dir():
        raise SetupError(f"{path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def run_setup(root: Path, maildir: str | None = None, maild_bin: Path | None = None) -> SetupResult:
    """Write the config, credentials folder, unit (and Maildir drop-in) under ``root``."""
    if maildir is not None and not maildir.startswith("/"):
        raise SetupError(f"--maildir must be an absolute path (the service does not run in this folder): {maildir}")
    maild_bin = maild_bin or installed_maild()
    result = SetupResult()
    etc = root / "etc" / "maild"
    credentials = etc / CREDENTIALS_FALLBACK
    config = example("maild.example.toml")
    if maildir is not None:
        config = maildir_config(config, maildir)
    customers = example("customers.example.toml")
    unit = unit_text(maild_bin)

    _directory(etc, 0o755)
    _directory(credentials, 0o700)
    _write_new(etc / "maild.toml", config, 0o644, result)
    _write_new(etc / "customers.toml", customers, 0o644, result)
    for name in CREDENTIALS:
        _write_new(credentials / name, "", 0o600, result)
    systemd = root / "etc" / "systemd" / "system"
    systemd.mkdir(parents=True, exist_ok=True)
    _write_new(systemd / UNIT_NAME, unit, 0o644, result)
    if maildir is not None:
        dropins = systemd / f"{UNIT_NAME}.d"
        dropins.mkdir(exist_ok=True)
        _write_new(dropins / "maildir.conf", maildir_dropin(maildir), 0o644, result)
    return result


def next_steps(root: Path, maild_bin: Path, maildir: str | None, result: SetupResult | None = None) -> list[str]:
    """What is left to do after ``run_setup`` (its ``result``): the files it wrote to edit, the password
    files still empty, the check, and starting the service (restarting it when the unit was there:
    ``maild setup`` is a step of an upgrade, which must not have a working password overwritten)."""
    etc = root / "etc" / "maild"
    cfg = etc / "maild.toml"
    credentials = etc / CREDENTIALS_FALLBACK
    written = set(result.written) if result is not None else {cfg, etc / "customers.toml"}
    source = "[maildir] path" if maildir else "[imap] host, username"
    steps = []
    if cfg in written:
        steps.append(f"edit {cfg}: {source}; [smtp] host, from_address; [support] address; [[consultants]]")
    if etc / "customers.toml" in written:
        steps.append(f"edit {etc / 'customers.toml'}: your customers and their contracts")
    if maildir is None and _empty(credentials / "imap-password"):
        steps.append(f"printf '%s' 'the IMAP password' > {credentials / 'imap-password'}")
    if _empty(credentials / "smtp-password"):
        steps.append(f"printf '%s' 'the SMTP password' > {credentials / 'smtp-password'}"
                     "   # when [smtp] username is set")
    unit = root / "etc" / "systemd" / "system" / "maild.service"
    steps += [
        f"{maild_bin} --config {cfg} check",
        "systemctl daemon-reload && systemctl "
        + ("enable --now maild" if result is None or unit in written else "restart maild"),
        "systemctl status maild",
    ]
    return steps


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return True
