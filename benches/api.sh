#!/usr/bin/env bash
# Runs the local API throughput benchmark (benches/api.rs). It needs the load generator `oha`;
# this script installs it with cargo when it is missing (the benchmark itself installs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${OHA:-}" ]]; then
    if command -v oha >/dev/null 2>&1; then
        OHA="$(command -v oha)"
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/oha" ]]; then
        OHA="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
    else
        echo "oha not found; installing it with cargo (a few minutes)" >&2
        cargo install --locked oha
        OHA="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
    fi
fi
export OHA
exec cargo bench --bench api "$@"
