#!/usr/bin/env bash
# Runs the local API throughput benchmark (benches/api.rs). It needs the load generator `wrk`
# (Debian's `wrk` package); this script installs it when it is missing (the benchmark itself
# installs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

. benches/prepare.sh
ensure_wrk
exec cargo bench --bench api "$@"
