#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the tests that run against PostgreSQL (tests/postgres_server.py), only
# when it is missing. The tests start their own throwaway server (initdb in a temporary folder, a unix socket
# there); they never use or start the cluster that the package may set up as a system service.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "ensure-postgresql: initdb is missing and neither root nor sudo is available to install postgresql" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends postgresql
compgen -G "/usr/lib/postgresql/*/bin/initdb"
