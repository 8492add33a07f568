#!/usr/bin/env bash
# Runs the local API throughput benchmark (benches/api.rs). It needs the load generator `wrk`
# (Debian's `wrk` package) and the Python daemon 0.6.0 it is measured beside (a virtualenv under
# target/); this script installs them when they are missing (the benchmark itself installs
# nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

. benches/prepare.sh
ensure_wrk
ensure_original_daemon
exec cargo bench --bench api "$@"
