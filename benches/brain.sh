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

apt_install() {
    if [[ "$(id -u)" -eq 0 ]]; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" </dev/null
    else
        sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" </dev/null
    fi
}

if [[ -z "${WRK:-}" ]] && ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found; installing Debian's wrk package" >&2
    apt_install wrk
fi

venv="${GRADATA_BENCH_VENV:-target/bench-venv}"
python="$venv/bin/python"
if ! "$python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("gradata") != "0.6.0")' 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        echo "Python's venv module not found; installing Debian's python3-venv package" >&2
        apt_install python3-venv
    fi
    echo "creating $venv with gradata==0.6.0 from PyPI" >&2
    # Created, or reused as it is: pip replaces another version of gradata in it.
    python3 -m venv "$venv"
    "$python" -m pip install --quiet --disable-pip-version-check --no-input 'gradata==0.6.0'
fi

export GRADATA_BENCH_PYTHON="$(cd "$venv" && pwd)/bin/python"
exec cargo bench --bench brain "$@"
