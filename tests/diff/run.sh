#!/usr/bin/env bash
# Differential tests: gradata against the Python Gradata daemon 0.6.0 (PyPI gradata==0.6.0).
#
#   bash tests/diff/run.sh [diff.py options, e.g. --self-check-only or --work DIR]
#
# 1. a virtualenv with gradata==0.6.0 in target/diff-venv (reused when it already has it);
# 2. the gradata binary: $GRADATA_BIN if set, else `cargo build --locked` (debug);
# 3. the harness's own unit tests (test_harness.py), and one run of diff.py against
#    conforming_proxy.py (0.6.0 with the listed fixes), which must compare clean;
# 4. diff.py: 0.6.0 against itself first (must be clean), then gradata against 0.6.0, then the
#    plugin's session replay. Exit status non-zero on any mismatch not in differences.py.
#
# Runs without standard input; installs python3-venv with apt-get when venv is missing.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
cd "$(dirname "$0")/../.."

venv=target/diff-venv
want=0.6.0

ensure_venv_module() {
    if python3 -c 'import ensurepip, venv' 2>/dev/null; then
        return
    fi
    echo "diff: python3 venv support is missing; installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv </dev/null
}

installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("gradata"))' 2>/dev/null || true
}

if [[ ! -x $venv/bin/python || $(installed_version) != "$want" ]]; then
    ensure_venv_module
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "gradata==$want"
fi
echo "diff: python daemon: gradata $(installed_version) in $venv"

if [[ -n ${GRADATA_BIN:-} ]]; then
    bin=$GRADATA_BIN
else
    cargo build --locked --quiet
    bin=target/debug/gradata
fi
echo "diff: gradata binary: $bin ($("$bin" --version))"

python3 tests/diff/test_harness.py
if ! python3 tests/diff/diff.py --python "$venv/bin/python" --gradata tests/diff/conforming_proxy.py \
        --brains small --skip-learning >target/diff-harness-check.log 2>&1; then
    cat target/diff-harness-check.log
    echo "diff: the harness finds mismatches in 0.6.0 with the listed fixes: differences.py is wrong"
    exit 2
fi
echo "diff: harness check: 0.6.0 with the listed fixes compares clean"
exec python3 tests/diff/diff.py --python "$venv/bin/python" --gradata "$bin" "$@"
