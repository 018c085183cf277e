#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/test_sandbox_browser.py), only when it is missing.
# Playwright drives this system browser; it never downloads one of its own.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "ensure-chromium: $CHROMIUM is missing and neither root nor sudo is available to install it" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version
