#!/usr/bin/env bash
# Runs the benchmark suite and collects its figures in one file, target/bench/results.json (the
# format is described in benches/support/results.rs), then renders the page from it when the
# renderer (benches/report.rs) is there.
#
#   benches/run.sh [--quick] [--only NAME]...
#
#   --quick      each benchmark's quick mode (GRADATA_BENCH_QUICK=1): proves that the suite and
#                the renderer work, in a short run; its figures are not to be quoted
#   --only NAME  run only this benchmark (repeatable, or NAME,NAME); the suite, cheap first, is:
#                startup, head_of_line, body_memory, drain, status, backlog, outage, purge, api,
#                brain, soak
#
# It installs what the benchmarks need when it is missing, without reading stdin: the load
# generator wrk (Debian's package), Python's venv module and a virtualenv with PyPI
# gradata==0.6.0, the daemon gradata replaces, in target/bench-venv (as benches/brain.sh does).
# Each benchmark writes target/bench/<NAME>.json; a benchmark that exits non-zero after writing its
# file has missed a target (reported, the run goes on); one that writes no file has failed, and the
# script exits non-zero after the others have run. A quick run, or a run of part of the suite,
# writes only under target/ (the build's target directory: $CARGO_TARGET_DIR when set); a full run
# of the whole suite also regenerates docs/benchmarks.md and its plots.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=(startup head_of_line body_memory drain status backlog outage purge api brain soak)

usage() {
    # The comment at the top of this file.
    sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

quick=false
only=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=true ;;
        --only)
            [[ $# -ge 2 ]] || { echo "--only needs a benchmark name" >&2; exit 2; }
            IFS=, read -r -a names <<<"$2"
            only+=("${names[@]}")
            shift
            ;;
        --only=*)
            IFS=, read -r -a names <<<"${1#--only=}"
            only+=("${names[@]}")
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

selected=()
if [[ ${#only[@]} -eq 0 ]]; then
    selected=("${suite[@]}")
else
    for name in "${only[@]}"; do
        if [[ ! " ${suite[*]} " =~ " ${name} " ]]; then
            echo "unknown benchmark: $name (the suite: ${suite[*]})" >&2
            exit 2
        fi
    done
    # In the suite's order, each once.
    for name in "${suite[@]}"; do
        if [[ " ${only[*]} " =~ " ${name} " ]]; then
            selected+=("$name")
        fi
    done
fi
wants() { [[ " ${selected[*]} " =~ " $1 " ]]; }

target_dir="${CARGO_TARGET_DIR:-target}"
results_dir="$target_dir/bench"
started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ "$commit" != unknown && -n "$(git status --porcelain 2>/dev/null)" ]]; then
    commit="$commit-dirty"
fi

# --- What the suite needs.

. benches/prepare.sh
if wants api || wants brain || wants status || wants outage; then
    ensure_wrk
fi
# The Python daemon gradata replaces, measured beside it.
if wants startup || wants api || wants brain; then
    ensure_original_daemon
fi

# --- The benchmarks, one after the other.

# The capture benchmark (api) also loads at these numbers of connections, for capture against
# concurrency, unless the caller chose others.
if $quick; then
    export GRADATA_BENCH_QUICK=1
    export GRADATA_BENCH_CAPTURE_CLIENTS="${GRADATA_BENCH_CAPTURE_CLIENTS:-16,64}"
else
    export GRADATA_BENCH_CAPTURE_CLIENTS="${GRADATA_BENCH_CAPTURE_CLIENTS:-1,16,64,256}"
fi
mkdir -p "$results_dir"
# Figures of an earlier run must not pass for this one's.
rm -f "$results_dir"/*.json

# Built once, before any runs, so that a benchmark's run is not shared with a build.
build_started=$SECONDS
bench_args=()
for name in "${selected[@]}"; do bench_args+=(--bench "$name"); done
cargo bench --locked "${bench_args[@]}" --no-run
echo "== built in $((SECONDS - build_started)) s" >&2

failed=()
missed=()
for name in "${selected[@]}"; do
    echo "== $name" >&2
    bench_started=$SECONDS
    status=0
    cargo bench --locked --bench "$name" || status=$?
    echo "== $name: exit status $status, $((SECONDS - bench_started)) s" >&2
    if [[ ! -s "$results_dir/$name.json" ]]; then
        failed+=("$name")
    elif [[ $status -ne 0 ]]; then
        missed+=("$name")
    fi
done

# --- One file: the figures of this run, the commit and the machine.

python3 - "$results_dir" "$commit" "$started_at" "$quick" "${selected[@]}" <<'PY'
import json, math, os, platform, sys

results_dir, commit, started_at, quick, *names = sys.argv[1:]

def median(runs):
    s = sorted(runs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

def check(m):
    """A measurement as schema 1 has it, or the reason it is not."""
    keys = {"area", "scenario", "figure", "unit", "series", "params", "runs", "median", "better"}
    if set(m) != keys:
        return f"keys {sorted(m)}"
    if not all(isinstance(m[k], str) and m[k] for k in ("area", "scenario", "figure", "unit", "series")):
        return "a name that is not a non-empty string"
    if m["series"] not in ("gradata", "original", "limit", "target"):
        return f"series {m['series']!r}"
    if m["better"] not in ("higher", "lower"):
        return f"better {m['better']!r}"
    if not isinstance(m["params"], dict):
        return "params not an object"
    runs = m["runs"]
    if not runs or not all(isinstance(r, (int, float)) and math.isfinite(r) for r in runs):
        return f"runs {runs!r}"
    if not math.isclose(m["median"], median(runs), rel_tol=1e-9, abs_tol=1e-12):
        return f"median {m['median']} is not the median of the runs"
    return None

measurements = []
for name in names:
    path = os.path.join(results_dir, name + ".json")
    if not os.path.exists(path):
        continue
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != 1:
        sys.exit(f"{path}: schema {doc.get('schema')!r}, not 1")
    for m in doc["measurements"]:
        problem = check(m)
        if problem:
            sys.exit(f"{path}: {m.get('scenario')} {m.get('figure')} {m.get('series')}: {problem}")
        measurements.append(m)

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

def memory_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None

def os_name():
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except (OSError, AttributeError):
        return platform.system()

doc = {
    "schema": 1,
    "commit": commit,
    "started_at": started_at,
    "quick": quick == "true",
    "machine": {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "os": os_name(),
    },
    "measurements": measurements,
}
out = os.path.join(results_dir, "results.json")
with open(out + ".tmp", "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
os.replace(out + ".tmp", out)
by_scenario = {}
for m in measurements:
    by_scenario[m["scenario"]] = by_scenario.get(m["scenario"], 0) + 1
summary = ", ".join(f"{k} {v}" for k, v in by_scenario.items()) or "none"
print(f"{out}: {len(measurements)} measurements ({summary}), commit {commit}", file=sys.stderr)
PY

# --- The page, when the renderer is there: it reads $GRADATA_BENCH_RESULTS and writes the page
# at $GRADATA_BENCH_PAGE, its plots beside it. A full run of the whole suite regenerates
# docs/benchmarks.md; a quick or partial run (or one where a benchmark failed) proves the renderer
# works on its figures without touching the committed page.

if [[ -f benches/report.rs ]] && grep -q '^name = "report"' Cargo.toml; then
    echo "== report" >&2
    if $quick || [[ ${#only[@]} -gt 0 || ${#failed[@]} -gt 0 ]]; then
        page="$results_dir/page/benchmarks.md"
    else
        page="docs/benchmarks.md"
    fi
    GRADATA_BENCH_RESULTS="$results_dir/results.json" GRADATA_BENCH_PAGE="$page" \
        cargo bench --locked --bench report
else
    echo "== report: benches/report.rs not found, the page is not rendered" >&2
fi

if [[ ${#missed[@]} -gt 0 ]]; then
    echo "targets missed (see each benchmark's output): ${missed[*]}" >&2
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed, no figures: ${failed[*]}" >&2
    exit 1
fi
