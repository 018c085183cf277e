#!/usr/bin/env bash
# Install Debian's Java 17 runtime for the Spark tests (tests/test_prescreen_spark.py), only when java is missing.
# PySpark starts its JVM from it; Spark 4 needs Java 17 or later.
set -euo pipefail

if command -v java >/dev/null 2>&1; then
  exit 0
fi

bash "$(dirname "$0")/../apt-install.sh" "ensure-java: java" openjdk-17-jre-headless
java -version
