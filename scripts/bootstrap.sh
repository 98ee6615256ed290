#!/usr/bin/env bash
# Prepare a fresh Debian machine for maild: a venv with the package and, with
# --test, the servers the test suite starts privately (Dovecot, PostgreSQL);
# --bench, those and Postfix's smtp-sink for `bench/backlog.py --sink postfix`.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0 want_bench=0
case "${1:-}" in
    --test) want_test=1 ;;
    --bench) want_test=1 want_bench=1 ;;
esac

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # Package postinst scripts would start the system services; we never use
    # them (tests run private instances), so keep them from starting.
    local added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    # One line on the terminal; apt's own output goes to a log, shown only on failure.
    local log="${TMPDIR:-/tmp}/maild-apt.log" failed=0
    echo "bootstrap: installing Debian packages: ${missing[*]} (log: $log)" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } > "$log" 2>&1 || failed=1
    [ "$added_policy" = 1 ] && $sudo rm -f /usr/sbin/policy-rc.d
    if [ "$failed" = 1 ]; then
        cat "$log" >&2
        echo "bootstrap: apt-get failed installing ${missing[*]}" >&2
        exit 1
    fi
    return 0
}

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; "$PY" -m venv .venv; }
fi

if [ "$want_test" = 1 ]; then
    apt_install dovecot-imapd postgresql openssl chromium chromium-driver fonts-dejavu-core
fi
if [ "$want_bench" = 1 ]; then
    # smtp-sink comes with Postfix; "No configuration" writes no main.cf, so no mail server is set up
    echo "postfix postfix/main_mailer_type select No configuration" | \
        { [ "$(id -u)" -ne 0 ] && sudo debconf-set-selections || debconf-set-selections; }
    apt_install postfix
fi
if [ "$want_test" = 1 ]; then
    stamp=.venv/.installed-test
    extras=".[test]"
else
    stamp=.venv/.installed
    extras="."
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing maild and its dependencies into .venv (log: .venv/pip.log)" >&2
    { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e "$extras"; } > .venv/pip.log 2>&1 \
        || { cat .venv/pip.log >&2; exit 1; }
    touch "$stamp"
fi
