#!/usr/bin/env bash
# A first look at maild on a fresh Debian machine: installs the package into a
# venv and runs `maild demo` (SQLite, a local Maildir, an in-process SMTP server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/maild demo "$@"
