#!/usr/bin/env bash
# Install Debian's Java 17 runtime for the Spark tests (tests/test_prescreen_spark.py), only when java is missing.
# PySpark starts its JVM from it; Spark 4 needs Java 17 or later.
set -euo pipefail

if command -v java >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "ensure-java: java is missing and neither root nor sudo is available to install it" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends openjdk-17-jre-headless
java -version
