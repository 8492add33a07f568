#!/usr/bin/env bash
# Runs the local API throughput benchmark (benches/api.rs). It needs the load generator `wrk`
# (Debian's `wrk` package); this script installs it when it is missing (the benchmark itself
# installs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${WRK:-}" ]] && ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found; installing Debian's wrk package" >&2
    if [[ "$(id -u)" -eq 0 ]]; then
        apt-get update && apt-get install -y wrk
    else
        sudo apt-get update && sudo apt-get install -y wrk
    fi
fi
exec cargo bench --bench api "$@"
