#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs
# (venv, pip packages, dovecot-imapd, postgresql), then runs mypy and pytest.
# Tests start their own private Dovecot, SMTP and PostgreSQL on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
.venv/bin/python -m mypy maild
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
