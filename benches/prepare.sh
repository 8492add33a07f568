# What the benchmarks need, installed when missing and without reading stdin. Sourced by
# benches/run.sh, benches/brain.sh and benches/api.sh; the benchmarks themselves install nothing.

apt_install() {
    if [[ "$(id -u)" -eq 0 ]]; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" </dev/null
    else
        sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" </dev/null
    fi
}

# The load generator wrk (Debian's package), unless $WRK names one.
ensure_wrk() {
    if [[ -z "${WRK:-}" ]] && ! command -v wrk >/dev/null 2>&1; then
        echo "wrk not found; installing Debian's wrk package" >&2
        apt_install wrk
    fi
}

# A virtualenv with PyPI gradata==0.6.0, the daemon gradata replaces (in $GRADATA_BENCH_VENV,
# default target/bench-venv; reused when it already holds that version), and
# GRADATA_BENCH_PYTHON exported as its Python.
ensure_original_daemon() {
    local venv="${GRADATA_BENCH_VENV:-target/bench-venv}"
    local python="$venv/bin/python"
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
    GRADATA_BENCH_PYTHON="$(cd "$venv" && pwd)/bin/python"
    export GRADATA_BENCH_PYTHON
}
