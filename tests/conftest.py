"""Shared fixtures. Server fixtures live in tests/servers/, one module per server."""
pytest_plugins = [
    "tests.servers.dovecot",
    "tests.servers.smtp_sink",
    "tests.servers.postgres",
    "tests.servers.chromium",
]
