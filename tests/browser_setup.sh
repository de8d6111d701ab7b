#!/usr/bin/env bash
# What the browser tests need, set up the way `make install` sets up Python packages: Debian's
# chromium when it is missing and we are root. Without root, one line says what to run; the two
# browser tests then skip with that hint (under CI=true they fail instead).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the run report's browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "chromium is missing: run 'sudo apt-get install chromium' for the report's two browser tests (they skip until then)"
fi
