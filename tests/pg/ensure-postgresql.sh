#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the tests that run against PostgreSQL (tests/postgres_server.py), only
# when it is missing. The tests start their own throwaway server (initdb in a temporary folder, a unix socket
# there); they never use or start the cluster that the package may set up as a system service.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
  exit 0
fi

bash "$(dirname "$0")/../apt-install.sh" "ensure-postgresql: initdb" postgresql
compgen -G "/usr/lib/postgresql/*/bin/initdb"
