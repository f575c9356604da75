#!/usr/bin/env bash
# Create .venv and install popstack with its test dependencies, from scratch.
# Needs only Python 3.11+ and pip; installs Debian's python3-venv if venv is missing,
# and Debian's chromium for the runbook tests if /usr/bin/chromium is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: $python has no working venv module; installing python3-venv"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    "$python" -m venv .venv
  fi
fi
# The runbook's HTML tests render it in Debian's Chromium (tests/test_runbook.py).
# Only those tests need it, so a failed install warns instead of stopping here.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: /usr/bin/chromium is missing; installing chromium"
  if ! { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; then
    echo "bootstrap: warning: installing chromium failed; tests/test_runbook.py needs" \
      "/usr/bin/chromium (run \`apt-get install -y chromium\` as root)" >&2
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "bootstrap: installed popstack into .venv ($(.venv/bin/python --version))"
