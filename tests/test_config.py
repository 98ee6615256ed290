"""Config loading: the documented example loads; bad values name file, key and reason."""
from __future__ import annotations

import shutil
from datetime import time, timedelta
from pathlib import Path

import pytest

from maild.config import Config, load_config
from maild.errors import ConfigError
from maild.intake.mailbox import ImapSettings, MaildirSettings

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads_with_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "imap-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    shutil.copy(ROOT / "config" / "maild.example.toml", tmp_path / "maild.toml")
    cfg = load_config(tmp_path / "maild.toml")
    assert isinstance(cfg.source, ImapSettings)
    assert cfg.source.password == "s3cret"
    assert "s3cret" not in repr(cfg.source)
    assert cfg.calendar.opens == time(8) and cfg.calendar.closes == time(16)
    assert [lvl.permille for lvl in cfg.escalation.levels] == [500, 800, 1000]
    assert cfg.escalation.outside_hours == "hold"
    assert cfg.support.autoreply_max_age == timedelta(days=3)
    assert cfg.database_url == "sqlite:////var/lib/maild/maild.db"
    assert cfg.customers_file == tmp_path / "customers.toml"
    assert len(cfg.peak_windows) == 14
    assert [c.role for c in cfg.consultants] == ["consultant", "manager"]


BASE = """
[maildir]
path = "Maildir"
[smtp]
host = "127.0.0.1"
security = "none"
from_address = "support@firma.pl"
[support]
address = "support@firma.pl"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "maild.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_minimal_config_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE)
    assert isinstance(cfg.source, MaildirSettings)  # type: ignore[attr-defined]
    assert cfg.smtp.port == 25  # type: ignore[attr-defined]
    assert cfg.support.ticket_prefix == "SUP"  # type: ignore[attr-defined]
    assert cfg.daemon.takeover_seconds == 10  # type: ignore[attr-defined]
    assert load(tmp_path, BASE + "[daemon]\ntakeover_seconds = 3\n").daemon.takeover_seconds == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ('[imap]\nhost="x"\nusername="u"\npassword="p"\n', "imap", "exactly one"),
        ("[support2]\nx=1\n", "[support2]", "unknown section"),
        ("batch_size = 0\n", "batch_size", "between 1"),
        ('[calendar]\nopens = "8 o\'clock"\n', "calendar.opens", "time like"),
        ('[calendar]\nworking_days = ["mon", "fun"]\n', "calendar.working_days[1]", "must be one of"),
        ('[calendar]\ntimezone = "Mars/Olympus"\n', "calendar.timezone", "unknown time zone"),
        ("[escalation]\nthresholds = [0.8, 0.5, 1.0]\n", "escalation.thresholds[1]", "must rise"),
        ('[logging]\nformat = "xml"\n', "logging.format", "must be one of"),
        ('[escalation]\noutside_hours = "later"\n', "escalation.outside_hours", "must be one of"),
        ('[metrics]\nlisten = "9464"\n', "metrics.listen", "host:port"),
        ("[packages]\nsizes = [4, 5]\n", "packages.validity_months", "5 h"),
        ('[[consultants]]\nemail = "not-an-address"\n', "consultants[0].email", "not an e-mail"),
        ('[[consultants]]\nemail = "support@firma.pl"\n', "consultants[0].email", "support address"),
        ("[daemon]\ntakeover_seconds = 1\n", "daemon.takeover_seconds", "between 2 and 300"),
        ("[daemon]\ntakeover_seconds = 301\n", "daemon.takeover_seconds", "between 2 and 300"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, BASE + extra if extra.startswith("[") else extra + BASE)
    assert info.value.key == key, str(info.value)
    assert reason in info.value.reason, str(info.value)
    assert str(tmp_path / "maild.toml") in str(info.value)


def test_escalation_outside_hours_send_is_kept(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE + '[escalation]\noutside_hours = "send"\n')
    assert cfg.escalation.outside_hours == "send"  # type: ignore[attr-defined]
    assert load(tmp_path, BASE).escalation.outside_hours == "hold"  # type: ignore[attr-defined]


def test_secret_sources_are_exclusive_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imap = BASE.replace('[maildir]\npath = "Maildir"\n', '[imap]\nhost = "h"\nusername = "u"\n')
    with pytest.raises(ConfigError, match=r"imap.password: is required"):
        load(tmp_path, imap)
    with pytest.raises(ConfigError, match="set only one"):
        load(tmp_path, imap.replace('username = "u"\n', 'username = "u"\npassword = "a"\npassword_env = "B"\n'))
    with pytest.raises(ConfigError, match="MAILD_NOPE is not set") as info:
        load(tmp_path, imap.replace('username = "u"\n', 'username = "u"\npassword_env = "MAILD_NOPE"\n'))
    assert info.value.key == "imap.password_env"
    monkeypatch.setenv("MAILD_PW", "from-env")
    cfg = load(tmp_path, imap.replace('username = "u"\n', 'username = "u"\npassword_env = "MAILD_PW"\n'))
    assert cfg.source.password == "from-env"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path, imap.replace('username = "u"\n', 'username = "u"\npassword_file = "missing"\n'))


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path, "[smtp\nhost=")


def test_misspelt_section_is_named_not_reported_as_a_missing_key(tmp_path: Path) -> None:
    """``[smtpp]`` used to surface as "smtp.host: is required", sending the operator to the wrong table."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, BASE.replace("[smtp]", "[smtpp]"))
    assert info.value.key == "[smtpp]"
    assert "unknown section" in info.value.reason and "did you mean [smtp]?" in info.value.reason
    assert "smtp.host" not in str(info.value)


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, BASE.replace('host = "127.0.0.1"', 'hots = "127.0.0.1"\nhost = "127.0.0.1"'))
    assert info.value.key == "smtp.hots"
    assert "did you mean 'host'?" in info.value.reason
    allowed = info.value.reason.split("allowed here: ", 1)[1]
    for key in ("host", "port", "security", "username", "password_file", "from_address", "cafile"):
        assert key in allowed
    with pytest.raises(ConfigError) as top:
        load(tmp_path, "batch_sise = 10\n" + BASE)
    assert top.value.key == "batch_sise" and "batch_size" in top.value.reason


def test_no_doubled_key_prefix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, BASE + '[calendar]\ntimezone = "Mars/Olympus"\n')
    message = str(info.value)
    assert message.count("calendar.timezone") == 1 and "calendar: calendar" not in message, message
    with pytest.raises(ConfigError) as peak:
        load(tmp_path, BASE + '[peak]\nwindows = [{name = "x", bogus = 1}]\n')
    assert peak.value.key == "peak.windows[0].bogus", str(peak.value)
    assert "peak.windows: peak" not in str(peak.value)


def test_credentials_fall_back_to_the_folder_next_to_the_config(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd the README's ``$CREDENTIALS_DIRECTORY/imap-password`` is read from ``credentials/``."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "imap-password").write_text("from-folder\n")
    imap = BASE.replace('[maildir]\npath = "Maildir"\n',
                        '[imap]\nhost = "h"\nusername = "u"\npassword_file = "$CREDENTIALS_DIRECTORY/imap-password"\n')
    assert load(tmp_path, imap).source.password == "from-folder"  # type: ignore[attr-defined]
    braces = imap.replace("$CREDENTIALS_DIRECTORY", "${CREDENTIALS_DIRECTORY}")
    assert load(tmp_path, braces).source.password == "from-folder"  # type: ignore[attr-defined]
    systemd = tmp_path / "run-credentials"
    systemd.mkdir()
    (systemd / "imap-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(systemd))
    assert load(tmp_path, imap).source.password == "from-systemd"  # type: ignore[attr-defined]
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    (tmp_path / "credentials" / "imap-password").unlink()
    with pytest.raises(ConfigError) as info:
        load(tmp_path, imap)
    assert str(tmp_path / "credentials" / "imap-password") in info.value.reason


def test_customers_example_names_real_config_keys() -> None:
    """The customers example points at [packages] keys that maild.toml accepts."""
    import re
    import tomllib

    text = (ROOT / "config" / "customers.example.toml").read_text(encoding="utf-8")
    packages = tomllib.loads((ROOT / "config" / "maild.example.toml").read_text(encoding="utf-8"))["packages"]
    named = re.findall(r"\[packages\] (\w+)", text)
    assert named and all(name in packages for name in named), named


def test_notification_keys_and_their_defaults(tmp_path: Path) -> None:
    from maild.config import Config

    cfg = load(tmp_path, BASE + "[limits]\nmax_attachment_mb = 7\n")
    assert isinstance(cfg, Config)
    n = cfg.notifications
    assert (n.enabled, n.new_ticket, n.customer_reply, n.managers_get_new) == (True, True, True, False)
    assert n.digest_at == time(8) and n.attach_max_bytes == 7 * 1024 * 1024
    cfg = load(tmp_path, BASE + '[notifications]\ndigest_at = ""\nattach_max_mb = 2\nmanagers_get_new = true\n')
    assert isinstance(cfg, Config)
    assert cfg.notifications.digest_at is None and cfg.notifications.attach_max_bytes == 2 * 1024 * 1024
    with pytest.raises(ConfigError, match="notifications.digest_at"):
        load(tmp_path, BASE + '[notifications]\ndigest_at = "8am"\n')


def _cfg_with(tmp_path: Path, snippet: str) -> Config:
    path = tmp_path / "maild.toml"
    path.write_text(BASE + snippet, encoding="utf-8")
    return load_config(path)


def test_consultant_presence_and_assignment_keys(tmp_path: Path) -> None:
    from datetime import date

    cfg = _cfg_with(tmp_path, '''
[[consultants]]
email = "ola@firma.pl"
name = "Ola"
days = ["mon", "tue", "wed", "thu"]
away = [{ from = 2026-12-21, until = 2027-01-03, note = "urlop" }]

[assignment]
mode = "round_robin"
''')
    ola = cfg.consultants[0]
    assert ola.days == frozenset({0, 1, 2, 3})
    assert ola.away[0].start == date(2026, 12, 21) and ola.away[0].until == date(2027, 1, 3)
    assert ola.away[0].note == "urlop"
    assert cfg.assignment.mode == "round_robin"


@pytest.mark.parametrize("snippet, key, reason", [
    ('days = ["mon", "fryday"]', "consultants[0].days", "not a weekday"),
    ('away = [{ from = 2027-01-03, until = 2026-12-21 }]', "consultants[0].away[0].until", "before it starts"),
    ('away = [{ from = 2026-12-21 }]', "consultants[0].away[0].until", "is required"),
    ('away = [{ from = 2026-12-21, until = 2026-12-22, why = "x" }]', "consultants[0].away[0]", "why"),
])
def test_bad_presence_keys_are_named(tmp_path: Path, snippet: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg_with(tmp_path, f'''
[[consultants]]
email = "ola@firma.pl"
{snippet}
''')
    assert key in str(err.value) and reason in str(err.value)


def test_bad_assignment_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="assignment.mode"):
        _cfg_with(tmp_path, '[assignment]\nmode = "random"\n')


def test_an_empty_password_file_says_to_write_the_password(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``maild setup`` writes the password files empty; one left so read as the password "", and the
    operator's first ``maild check`` said only "[AUTHENTICATIONFAILED] Authentication failed"."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "imap-password").write_text("")
    imap = BASE.replace('[maildir]\npath = "Maildir"\n',
                        '[imap]\nhost = "h"\nusername = "u"\npassword_file = "$CREDENTIALS_DIRECTORY/imap-password"\n')
    with pytest.raises(ConfigError) as info:
        load(tmp_path, imap)
    assert info.value.key == "imap.password_file"
    assert "is empty" in info.value.reason and "printf" in info.value.reason, info.value.reason
    monkeypatch.setenv("MAILD_PW", "")
    with pytest.raises(ConfigError, match="MAILD_PW is empty"):
        load(tmp_path, imap.replace('password_file = "$CREDENTIALS_DIRECTORY/imap-password"', 'password_env = "MAILD_PW"'))


def test_a_database_url_maild_cannot_use_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mysql://``, or PostgreSQL without the psycopg driver (``pip install 'maild[metrics]'``, the README's
    install line, leaves it out), ended every command in a traceback ending "No module named 'psycopg'"."""
    import importlib.util

    def with_url(url: str) -> str:
        return BASE + f'[database]\nurl = "{url}"\n'

    for url, said in (("mysql://maild@db/maild", "SQLite"), ("postgresql://maild@db/maild", "postgresql+psycopg://"),
                      ("not a url", "SQLite")):
        with pytest.raises(ConfigError) as info:
            load(tmp_path, with_url(url))
        assert info.value.key == "database.url" and said in info.value.reason, info.value.reason
    assert load(tmp_path, with_url("postgresql+psycopg://maild@db/maild")).database_url.endswith("@db/maild")  # type: ignore[attr-defined]
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else found(name, *a))
    with pytest.raises(ConfigError) as missing:
        load(tmp_path, with_url("postgresql+psycopg://maild@db/maild"))
    assert "maild[postgres]" in missing.value.reason, missing.value.reason
