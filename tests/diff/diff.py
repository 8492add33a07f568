#!/usr/bin/env python3
"""Differential test: gradata against the Python Gradata daemon 0.6.0 on the same brains.

    python3 tests/diff/diff.py --python VENV/bin/python --gradata target/debug/gradata

1. self-check: 0.6.0 against itself (two copies of each brain, two processes). It must come out
   clean: that shows the masks cover exactly 0.6.0's nondeterminism and that the harness is
   deterministic. A mismatch here is a harness bug and stops the run;
2. gradata against 0.6.0 on the same brains: every answer and the files the routes changed;
3. the plugin's session replay (replay.py), against both daemons;
4. what the brain learns (learning.py): sequences of /correct and /end-session, compared by
   decisions (which lesson a correction creates or reinforces, which lessons change state).

Every mismatch is printed with its brain, request, JSON path and the two values; the exit
status is non-zero if any mismatch is not covered by differences.py.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import daemons  # noqa: E402
import differences  # noqa: E402
import fixtures  # noqa: E402
import learning  # noqa: E402
import replay  # noqa: E402
from compare import Mismatch, compare_files, json_diff, request_text, short  # noqa: E402
import scenario  # noqa: E402

BRAINS = ["empty", "small", "large"]


# ---- one run of the scenario against one daemon ----

def run_scenario(factory, brain, work, tag):
    home = os.path.join(work, f"home-{tag}")
    os.makedirs(home, exist_ok=True)
    daemon = factory.start(brain, home, os.path.join(work, f"{tag}.log"))
    answers = []
    try:
        for step in scenario.STEPS:
            resp = daemon.call(step["method"], step["path"], step.get("body"), step.get("raw"))
            answers.append(resp.as_dict())
    finally:
        daemon.stop(daemon.stop_signal)
    with open(os.path.join(work, f"{tag}.answers.json"), "w", encoding="utf-8") as f:
        json.dump([{"request": f"{differences.route_of(s)} {request_text(s)}", "answer": a}
                   for s, a in zip(scenario.STEPS, answers)], f, indent=1, ensure_ascii=False)
    return answers


def compare_answers(brain_name, ctx, left, right, right_is_reference):
    found = []
    for n, (step, a, b) in enumerate(zip(scenario.STEPS, left, right), 1):
        na = differences.normalise(step, a, ctx, reference=True)
        nb = differences.normalise(step, b, ctx, reference=right_is_reference)
        for path, x, y in json_diff(na, nb):
            found.append(Mismatch(brain_name, f"#{n} {differences.route_of(step)}",
                                  request_text(step), path, x, y))
    return found


def copy_brain(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    return dst


def report(title, mismatches, left_label, right_label):
    """Prints every mismatch: where, the request, the JSON path, both values."""
    print(f"\n== {title}: {len(mismatches)} mismatch(es)")
    for m in mismatches:
        print(f"MISMATCH [{m.brain}] {m.where}  request: {m.request}")
        print(f"    path: {m.path}")
        print(f"    {left_label:>13}: {short(m.left)}")
        print(f"    {right_label:>13}: {short(m.right)}")


def summary_by_route(mismatches):
    counts = {}
    for m in mismatches:
        route = m.where.split(" ", 1)[1] if m.where.startswith("#") else m.where
        counts[(m.brain, route)] = counts.get((m.brain, route), 0) + 1
    for (brain, route), n in sorted(counts.items()):
        print(f"    [{brain}] {route}: {n}")


def tally(mismatches, brains, learned):
    """(passed, failed): each request of each brain, each compared file, each replayed hook,
    each call of the learning sequences."""
    total = (len(brains) * (len(scenario.STEPS) + 3) + replay.CHECKED_ITEMS
             + (learning.checked_items() if learned else 0))
    failed = len({(m.brain, m.where, m.request) for m in mismatches})
    return total - failed, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--python", required=True, help="python of the venv holding gradata==0.6.0")
    parser.add_argument("--gradata", required=True, help="the gradata binary")
    parser.add_argument("--work", help="keep the brains and logs here (default: a temp dir, removed)")
    parser.add_argument("--self-check-only", action="store_true")
    parser.add_argument("--brains", default=",".join(BRAINS))
    parser.add_argument("--drop-difference", action="append", default=[], metavar="ID",
                        help="compare without this entry of differences.py or of learning.py's"
                             " EXPECTED (to see what it hides)")
    parser.add_argument("--skip-learning", action="store_true",
                        help="leave out the /correct and /end-session sequences (learning.py)")
    args = parser.parse_args()
    known = {d.ident for d in differences.DIFFERENCES} | {d.ident for d in learning.EXPECTED}
    unknown = set(args.drop_difference) - known
    if unknown:
        parser.error(f"no such difference: {', '.join(sorted(unknown))}")
    differences.DIFFERENCES[:] = [d for d in differences.DIFFERENCES if d.ident not in args.drop_difference]
    learning.EXPECTED[:] = [d for d in learning.EXPECTED if d.ident not in args.drop_difference]

    started = time.monotonic()
    work = args.work or tempfile.mkdtemp(prefix="gradata-diff.")
    os.makedirs(work, exist_ok=True)
    python = daemons.PythonDaemon(os.path.abspath(args.python))
    gradata = daemons.GradataDaemon(os.path.abspath(args.gradata))
    brains = [b for b in args.brains.split(",") if b]

    print("== deliberate and nondeterministic differences applied (tests/diff/differences.py)")
    print(differences.table())

    self_check, versus = [], []
    ok = False
    try:
        # 1. 0.6.0 against itself, on every brain and the replay: must be clean.
        prepared = []
        for name in brains:
            source = os.path.join(work, "fixtures", name)
            fixtures.write(name, source)
            ctx = {"stale_rules": fixtures.stale_rules(source)}
            py_a = copy_brain(source, os.path.join(work, name, "python-a"))
            py_b = copy_brain(source, os.path.join(work, name, "python-b"))
            t = time.monotonic()
            answers_a = run_scenario(python, py_a, work, f"{name}-python-a")
            answers_b = run_scenario(python, py_b, work, f"{name}-python-b")
            self_check += compare_answers(name, ctx, answers_a, answers_b, right_is_reference=True)
            self_check += compare_files(name, py_a, py_b)
            print(f"-- [{name}] 0.6.0 twice: {len(scenario.STEPS)} requests each,"
                  f" {time.monotonic() - t:.1f} s")
            prepared.append((name, source, ctx, py_a, answers_a))
        session = replay.Replay(work)
        self_check += session.self_check(python)
        learned = None if args.skip_learning else learning.Learning(work)
        if learned:
            self_check += learned.self_check(python)
        report("self-check: 0.6.0 against itself", self_check, "python run 1", "python run 2")
        if self_check:
            print("\nFAIL: 0.6.0 does not compare clean with itself: the masks or the harness are wrong")
            return 2
        if args.self_check_only:
            ok = True
            return 0

        # 2. gradata against 0.6.0's first run, then the replay.
        for name, source, ctx, py_a, answers_a in prepared:
            gr = copy_brain(source, os.path.join(work, name, "gradata"))
            t = time.monotonic()
            answers_g = run_scenario(gradata, gr, work, f"{name}-gradata")
            versus += compare_answers(name, ctx, answers_a, answers_g, right_is_reference=False)
            versus += compare_files(name, py_a, gr)
            print(f"-- [{name}] gradata: {time.monotonic() - t:.1f} s")
        versus += session.versus(gradata)
        if learned:
            versus += learned.versus(gradata)

        notes = [m for m in versus if m.key_order_only()]
        versus = [m for m in versus if not m.key_order_only()]
        if notes:
            report("notes: same values, keys in another order (not a failure)", notes,
                   "python 0.6.0", "gradata")
        report("gradata against 0.6.0", versus, "python 0.6.0", "gradata")
        if versus:
            print("\nmismatches by brain and route:")
            summary_by_route(versus)
        passed, failed = tally(versus, brains, learned is not None)
        print(f"\ndiff: {passed} passed, {failed} failed")
        ok = not versus
        return 0 if ok else 1
    finally:
        elapsed = time.monotonic() - started
        print(f"\ndifferential run: {elapsed:.1f} s; work dir {work}"
              + ("" if args.work else " (removed)" if ok else " (kept for inspection)"))
        if not args.work and ok:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
