"""The README's operator path, end to end: install, check, first run as the service.

It follows "Running it as a service": ``maild setup --root`` into a temp root
(what the Install section does on /), the operator's edits to ``maild.toml`` and
the password file, ``maild check`` as root in a shell, then ``maild check`` and
``maild run --once`` as the service would run them: as an unprivileged uid
(``setpriv --reuid/--regid``, the unit's ``UMask=``), with the environment the
unit gives (``CREDENTIALS_DIRECTORY`` with systemd's copy of the credentials,
``STATE_DIRECTORY``, ``CONFIGURATION_DIRECTORY``, no ``HOME``), the command line
taken from the ExecStart= that setup wrote. The mail comes from the private
Dovecot and the acknowledgement goes to the private SMTP sink.

``maild`` is the installed wheel's (``MAILD_INSTALLED``, set by scripts/test.sh),
else this checkout's venv: a file missing from the package fails here.
Where systemd runs as PID 1, a second test starts the unit itself; elsewhere it
is skipped and says so, and the setpriv run is the stand-in.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_mail
from tests.servers.common import unavailable

MAILD = Path(os.environ.get("MAILD_INSTALLED") or Path(sys.executable).parent / "maild")
# the installed wheel must import its own package, not a checkout on PYTHONPATH (which shadows it)
NOT_PASSED = ("PYTHONPATH",) if os.environ.get("MAILD_INSTALLED") else ()
ROOT = Path(__file__).resolve().parents[2]
LIST_PACKAGE = """
import os, pathlib, maild
root = pathlib.Path(maild.__file__).parent
for folder, _, files in os.walk(root, followlinks=True):
    for name in files:
        path = pathlib.Path(folder, name)
        if "__pycache__" not in path.parts:
            print(path.relative_to(root.parent))
"""
SERVICE_USER = "nobody"
CUSTOMER = "jan.kowalski@acme.pl"  # a sender of customers.example.toml


def run(*args: str | Path, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "MAILD_CONFIG", *NOT_PASSED)}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                          env=env if env is not None else base, **kwargs)


def set_key(text: str, section: str, key: str, value: str | int) -> str:
    """The operator's edit: the first ``key = ...`` line of ``[section]`` gets ``value``."""
    start = text.index(f"\n[{section}]\n")
    following = re.search(r"\n\[", text[start + 1:])
    end = len(text) if following is None else start + 1 + following.start()
    block, count = re.subn(rf"(?m)^{key} = .*$", lambda _: f"{key} = {json.dumps(value)}", text[start:end], count=1)
    assert count == 1, f"[{section}] {key} is not in the example config"
    return text[:start] + block + text[end:]


@pytest.fixture
def root() -> Iterator[Path]:
    """A temp root the service uid can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="maild-root-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unit_directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def installed(root: Path, imap_account: Any, smtp_sink: Any) -> Path:
    """``maild setup --root``, then the edits the printed next steps ask for; returns maild.toml."""
    if not MAILD.exists():
        pytest.fail(f"{MAILD} does not exist (pip install -e . or MAILD_INSTALLED)")
    setup = run(MAILD, "setup", "--root", root)
    assert setup.returncode == 0, setup.stderr
    config = root / "etc" / "maild" / "maild.toml"
    assert f"{MAILD} --config {config} check" in setup.stdout, setup.stdout
    text = config.read_text(encoding="utf-8")
    for key, value in (("host", "127.0.0.1"), ("port", imap_account.port), ("security", "none"),
                       ("username", imap_account.username)):
        text = set_key(text, "imap", key, value)
    for key, value in (("host", "127.0.0.1"), ("port", smtp_sink.port), ("security", "none")):
        text = set_key(text, "smtp", key, value)
    text = set_key(text, "storage", "path", str(root / "var" / "lib" / "maild"))
    config.write_text(text, encoding="utf-8")
    (root / "etc" / "maild" / "credentials" / "imap-password").write_text(imap_account.password)
    return config


def test_installed_package_has_every_file_of_the_checkout() -> None:
    """Templates, migrations, examples: a file the wheel leaves out fails here, before an operator finds out.

    (``maild check`` renders the templates that are there, so a missing one would pass it.)
    """
    listed = run(MAILD.parent / "python", "-c", LIST_PACKAGE, cwd="/")
    assert listed.returncode == 0, listed.stderr
    installed = set(listed.stdout.split())
    tracked = run("git", "-C", ROOT, "ls-files", "maild")
    if tracked.returncode != 0:
        pytest.skip(f"not a git checkout: {tracked.stderr.strip()}")
    expected: set[str] = set()
    for name in tracked.stdout.split():
        path = ROOT / name
        if path.is_dir():  # a link to a folder (maild/templates): its files are what ships
            expected.update(f"{name}/{f.relative_to(path)}" for f in path.rglob("*") if f.is_file())
        else:
            expected.add(name)
    assert expected and not expected - installed, sorted(expected - installed)
    print(f"{len(expected)} files of the checkout's maild/ in {MAILD.parent.parent}")


def test_readme_install_then_run_as_the_service_user(root: Path, imap_account: Any, smtp_sink: Any) -> None:
    """Service manager here: setpriv as the stand-in for systemd's DynamicUser (see the systemd test)."""
    if shutil.which("setpriv") is None:
        unavailable("setpriv", "not installed (Debian: util-linux)")
    if os.geteuid() != 0:
        unavailable("setpriv", "switching to the service uid needs root")
    config = installed(root, imap_account, smtp_sink)
    (root / "var" / "lib").mkdir(parents=True, mode=0o755)  # as on any machine: maild creates only its own folder

    as_root = run(MAILD, "--config", config, "check")
    assert as_root.returncode == 0, as_root.stdout + as_root.stderr

    # What systemd does when the unit starts: StateDirectory= owned by the service
    # user, LoadCredential= copies readable by it only, the unit's environment.
    unit = unit_directives(root / "etc" / "systemd" / "system" / "maild.service")
    user = pwd.getpwnam(SERVICE_USER)
    state = root / "var" / "lib" / "maild"
    for path in [state, *state.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    credentials = root / "run" / "credentials" / "maild.service"
    credentials.mkdir(parents=True)
    for entry in unit["LoadCredential"]:
        name, _, source = entry.partition(":")
        shutil.copyfile(root / source.lstrip("/"), credentials / name)
        os.chown(credentials / name, user.pw_uid, user.pw_gid)
        (credentials / name).chmod(0o400)
    os.chown(credentials, user.pw_uid, user.pw_gid)
    credentials.chmod(0o500)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": str(credentials),
           "STATE_DIRECTORY": str(state), "CONFIGURATION_DIRECTORY": str(config.parent)}
    for assignment in unit.get("Environment", []):
        env.update(dict(pair.split("=", 1) for pair in shlex.split(assignment)))
    exec_start = shlex.split(unit["ExecStart"][0].replace("${CONFIGURATION_DIRECTORY}", str(config.parent)))
    assert exec_start[0] == str(MAILD) and exec_start[-1] == "run", exec_start
    umask = int(unit["UMask"][0], 8)
    as_service = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]

    def service(*args: str) -> subprocess.CompletedProcess[str]:
        return run(*as_service, *exec_start[:-1], *args, env=env, preexec_fn=lambda: os.umask(umask))

    check = service("check")
    assert check.returncode == 0, check.stdout + check.stderr
    imap_account.append(make_mail(sender=f"Jan Kowalski <{CUSTOMER}>", subject="Nie działa wydruk",
                                  msgid="<readme-e2e@acme.pl>"))
    once = service("run", "--once")
    assert once.returncode == 0, once.stdout + once.stderr
    assert "Traceback" not in once.stderr, once.stderr
    ack = smtp_sink.wait_for(1)[0]
    assert ack.rcpt_tos == [CUSTOMER]
    assert imap_account.uids("INBOX") == [] and len(imap_account.uids("Processed")) == 1
    assert (state / "maild.db").stat().st_uid == user.pw_uid

    listing = run(MAILD, "--config", config, "tickets", "list", "--json")  # root in a shell again
    assert listing.returncode == 0, listing.stderr
    tickets = json.loads(listing.stdout)
    assert [(t["customer"], t["requester"]) for t in tickets] == [("acme", CUSTOMER)]
    print(f"service manager: setpriv as uid {user.pw_uid} ({SERVICE_USER}); maild: {MAILD}")


def test_readme_install_under_systemd(root: Path, imap_account: Any, smtp_sink: Any) -> None:
    """Start the unit setup wrote under the machine's own systemd (a runtime unit, removed after)."""
    if not Path("/run/systemd/system").is_dir():
        pytest.skip("no systemd running as PID 1 on this machine: the setpriv test stood in for it")
    if os.geteuid() != 0:
        pytest.skip("starting a system unit needs root")
    config = installed(root, imap_account, smtp_sink)
    name = f"maild-e2e-{uuid.uuid4().hex[:8]}"
    etc = Path("/etc") / name
    shutil.copytree(config.parent, etc)
    text = set_key(config.read_text(encoding="utf-8"), "storage", "path", f"/var/lib/{name}")
    (etc / "maild.toml").write_text(text, encoding="utf-8")
    unit_text = (root / "etc" / "systemd" / "system" / "maild.service").read_text(encoding="utf-8")
    unit_text = (unit_text.replace("/etc/maild/credentials/", f"{etc}/credentials/")
                 .replace("ConfigurationDirectory=maild", f"ConfigurationDirectory={name}")
                 .replace("StateDirectory=maild", f"StateDirectory={name}"))
    unit = Path("/run/systemd/system") / f"{name}.service"
    unit.write_text(unit_text, encoding="utf-8")
    imap_account.append(make_mail(sender=f"Jan Kowalski <{CUSTOMER}>", subject="Nie działa wydruk",
                                  msgid="<readme-systemd@acme.pl>"))
    try:
        run("systemctl", "daemon-reload")
        started = run("systemctl", "start", name)
        assert started.returncode == 0, started.stderr + run("journalctl", "-u", name, "-n", "50").stdout
        assert smtp_sink.wait_for(1, timeout=60)[0].rcpt_tos == [CUSTOMER]
        deadline = time.monotonic() + 30
        while imap_account.uids("INBOX") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert imap_account.uids("INBOX") == []
        assert run("systemctl", "is-active", name).stdout.strip() == "active"
    finally:
        run("systemctl", "stop", name)
        unit.unlink(missing_ok=True)
        run("systemctl", "daemon-reload")
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(Path("/var/lib/private") / name, ignore_errors=True)
        Path("/var/lib", name).unlink(missing_ok=True)
    print(f"service manager: systemd (unit {name}); maild: {MAILD}")
