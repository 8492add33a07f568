#!/usr/bin/env bash
# Runs the brain routes benchmark (benches/brain.rs): gradata beside the Python daemon of PyPI
# `gradata==0.6.0`, in the same run. It installs what the benchmark needs when it is missing (the
# benchmark itself installs nothing), without reading stdin:
#   - the load generator `wrk` (Debian's `wrk` package);
#   - Python's venv module (Debian's `python3-venv`), then a virtualenv with `gradata==0.6.0` in
#     target/bench-venv, reused when it already holds that version.
# Arguments are passed to `cargo bench`; the environment knobs are described in benches/brain.rs
# (GRADATA_BENCH_QUICK=1 for a short run on the 1,000-lesson brain).
set -euo pipefail
cd "$(dirname "$0")/.."

. benches/prepare.sh
ensure_wrk
ensure_original_daemon
exec cargo bench --bench brain "$@"
