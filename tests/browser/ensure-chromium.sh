#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/test_sandbox_browser.py), only when it is missing.
# Playwright drives this system browser; it never downloads one of its own.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

bash "$(dirname "$0")/../apt-install.sh" "ensure-chromium: $CHROMIUM" chromium fonts-dejavu-core
"$CHROMIUM" --version
