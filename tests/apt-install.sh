#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or through sudo: `apt-install.sh WHAT PACKAGE...`, where WHAT
# names what is missing in the error message. Called by the ensure-*.sh scripts only when their tool is missing.
set -euo pipefail

what=$1
shift
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "$what is missing and neither root nor sudo is available to install $*" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "$@"
