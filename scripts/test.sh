#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs
# (venv, pip packages, dovecot-imapd, postgresql), then runs mypy and pytest (in two workers).
# Tests start their own private Dovecot, SMTP and PostgreSQL on 127.0.0.1.
#
# Before pytest it builds the sdist and wheel (python -m build) and installs the
# wheel into a venv of its own under a temp dir: the install tests
# (tests/e2e/test_operator_path.py) run that installation's `maild`, so a
# template, migration or example missing from the package fails here.
# MAILD_TEST_NO_WHEEL=1 skips the build (the install tests then use .venv's maild).
# The wheel is installed without PYTHONPATH: with a checkout on it (its maild.egg-info), pip
# takes maild as already installed and puts only its dependencies into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
.venv/bin/python -m mypy maild

if [ "${MAILD_TEST_NO_WHEEL:-}" != 1 ]; then
    work=$(mktemp -d -t maild-wheel.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    chmod 0755 "$work"   # the install test runs the installed maild as an unprivileged uid
    echo "test: building sdist and wheel, installing the wheel into $work/venv (log: $work/build.log)" >&2
    { .venv/bin/python -m build --outdir "$work/dist" . \
        && .venv/bin/python -m venv "$work/venv" \
        && env -u PYTHONPATH "$work/venv/bin/pip" install -q "$work"/dist/maild-*.whl; } > "$work/build.log" 2>&1 \
        || { cat "$work/build.log" >&2; echo "test: building or installing the wheel failed" >&2; exit 1; }
    ls "$work"/dist/maild-*.tar.gz > /dev/null
    export MAILD_INSTALLED="$work/venv/bin/maild"
fi
status=0
# Two workers (pytest-xdist): most of the suite's time is its servers' and daemons' waiting, and every
# server fixture is private to its worker (a free port, a temp dir). MAILD_TEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${MAILD_TEST_WORKERS:-2}" "$@" || status=$?
exit "$status"
