#!/usr/bin/env python3
"""Unit tests of the harness itself: the differ, the normalisers and the fixtures.

The self-check (0.6.0 against itself) shows the masks cover 0.6.0's nondeterminism; these show
the masks do not hide what they must not: a rule line in the wrong tier, a different rule, a
gradata answer of 200 to bad input, a rule id in neither format.
"""

import os
import sqlite3
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402
import differences  # noqa: E402
import fixtures  # noqa: E402
import learning  # noqa: E402

RULES = [
    {"rule_id": "A:1", "tier": "RULE", "category": "TONE", "instruction": "TONE: Be brief"},
    {"rule_id": "B:1", "tier": "RULE", "category": "CODE", "instruction": "CODE: Add hints"},
    {"rule_id": "C:1", "tier": "PATTERN", "category": "CODE", "instruction": "CODE: Use pathlib"},
    {"rule_id": "D:1", "tier": "PATTERN", "category": "DOCS", "instruction": "DOCS: Link runbooks"},
]


def injection(*lines):
    return "\n".join(["<brain-rules>", *lines, "</brain-rules>"])


class JsonDiff(unittest.TestCase):
    def test_names_the_path_and_both_values(self):
        found = compare.json_diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}], "c": 0})
        self.assertEqual(found, [("$.a[1].b", 2, 3), ("$.c", "<absent>", 0)])

    def test_reports_key_order_only_when_values_agree(self):
        self.assertEqual(compare.json_diff({"a": 1, "b": 2}, {"b": 2, "a": 1}),
                         [("$ (key order only)", ["a", "b"], ["b", "a"])])

    def test_int_and_float_compare_by_value_but_bool_does_not(self):
        self.assertEqual(compare.json_diff(1, 1.0), [])
        self.assertNotEqual(compare.json_diff(True, 1), [])


class Injection(unittest.TestCase):
    def test_order_inside_a_tier_is_ignored(self):
        a = injection("- TONE: Be brief", "- CODE: Add hints. Use pathlib.", "- DOCS: Link runbooks")
        b = injection("- CODE: Add hints. Use pathlib.", "- TONE: Be brief", "- DOCS: Link runbooks")
        self.assertEqual(differences.canonical_injection(a, RULES),
                         differences.canonical_injection(b, RULES))

    def test_a_rule_line_after_a_pattern_line_is_caught(self):
        good = injection("- TONE: Be brief", "- DOCS: Link runbooks")
        bad = injection("- DOCS: Link runbooks", "- TONE: Be brief")
        self.assertNotEqual(differences.canonical_injection(good, RULES),
                            differences.canonical_injection(bad, RULES))

    def test_a_different_rule_line_is_caught(self):
        a = injection("- TONE: Be brief")
        b = injection("- TONE: Be brief!")
        self.assertNotEqual(differences.canonical_injection(a, RULES),
                            differences.canonical_injection(b, RULES))

    def test_empty_text_stays_empty(self):
        self.assertEqual(differences.canonical_injection("", []), "")


class Recall(unittest.TestCase):
    LINE = "{'rowid': 1, 'text': 'CODE: x', 'fts_rank': 0.3379916797369133, 'session_num': -1}"

    def test_floats_within_nine_digits_agree(self):
        other = self.LINE.replace("0.3379916797369133", "0.33799167973691")
        self.assertEqual(differences.canonical_recall(self.LINE), differences.canonical_recall(other))

    def test_other_text_or_scores_differ(self):
        self.assertNotEqual(differences.canonical_recall(self.LINE),
                            differences.canonical_recall(self.LINE.replace("CODE: x", "CODE: y")))
        self.assertNotEqual(differences.canonical_recall(self.LINE),
                            differences.canonical_recall(self.LINE.replace("0.3379", "0.3378")))


def norm(step, answer, reference, ctx=None):
    return differences.normalise(step, answer, ctx or {"stale_rules": []}, reference)


class Normalisers(unittest.TestCase):
    BAD = {"method": "POST", "path": "/detect", "raw": b"{", "bad": True}

    def test_no_answer_and_a_json_400_are_the_same_refusal(self):
        python = norm(self.BAD, {"status": None, "body": None}, reference=True)
        gradata = norm(self.BAD, {"status": 400, "body": {"error": "invalid JSON", "code": "x"}},
                       reference=False)
        self.assertEqual(python, gradata)

    def test_a_200_to_bad_input_is_not_a_refusal(self):
        python = norm(self.BAD, {"status": None, "body": None}, reference=True)
        gradata = norm(self.BAD, {"status": 200, "body": {"implicit_feedback": {}}}, reference=False)
        self.assertNotEqual(python, gradata)

    def test_no_answer_to_good_input_is_not_masked(self):
        good = {"method": "POST", "path": "/detect", "body": {}}
        self.assertEqual(norm(good, {"status": None, "body": None}, reference=True),
                         {"status": None, "body": None})

    def test_enforce_ids_take_the_apply_form(self):
        step = {"method": "POST", "path": "/enforce-rules", "body": {"content": "x"}}
        desc = "Always add type hints to public Python functions"
        # The apply form of this rule, as brain-spec section 5.2 gives it.
        self.assertEqual(differences.apply_form_id("CODE", desc), "CODE:d5aaa5cd")
        import hashlib
        old = "CODE:" + hashlib.sha256(desc.encode()).hexdigest()[:8]
        answer = {"status": 200, "body": {"violations": [
            {"rule_id": old, "description": desc, "severity": "warn"},
            {"rule_id": "CODE:00000000", "description": desc, "severity": "warn"}], "pass": False}}
        out = norm(step, answer, reference=True)
        self.assertEqual([v["rule_id"] for v in out["body"]["violations"]],
                         ["CODE:d5aaa5cd", "CODE:00000000"])

    def test_ttl_view_applies_to_the_reference_only(self):
        step = {"method": "GET", "path": "/health", "body": None}
        ctx = {"stale_rules": [("DOCS", "Never commit docs")]}
        answer = {"status": 200, "body": {"rules_count": 7}}
        self.assertEqual(norm(step, answer, True, ctx)["body"]["rules_count"], 6)
        self.assertEqual(norm(step, answer, False, ctx)["body"]["rules_count"], 7)

    def test_ttl_view_drops_stale_violations_and_recomputes_pass(self):
        step = {"method": "POST", "path": "/enforce-rules", "body": {"content": "x"}}
        ctx = {"stale_rules": [("DOCS", "Never commit docs")]}
        answer = {"status": 200, "body": {"violations": [
            {"rule_id": "DOCS:1", "description": "Never commit docs", "severity": "warn"}], "pass": False}}
        self.assertEqual(norm(step, answer, True, ctx)["body"], {"violations": [], "pass": True})

    def test_logged_true_without_logging_equals_logged_false(self):
        step = {"method": "POST", "path": "/log-event", "body": {"data": [1]}, "unlogged": True}
        python = norm(step, {"status": 200, "body": {"logged": True}}, reference=True)
        gradata = norm(step, {"status": 200, "body": {"logged": False}}, reference=False)
        self.assertEqual(python, gradata)
        lying = norm(step, {"status": 200, "body": {"logged": True}}, reference=False)
        self.assertNotEqual(python, lying)

    def test_masks_touch_only_their_route(self):
        step = {"method": "POST", "path": "/checkpoint", "body": {}}
        answer = {"status": 200, "body": {"uptime_seconds": 1, "sdk_version": "x"}}
        self.assertEqual(norm(step, answer, True), answer)


class Fixtures(unittest.TestCase):
    def test_fixtures_are_deterministic_and_carry_what_the_scenario_needs(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("small", "large"):
                a, b = os.path.join(tmp, name + "-a"), os.path.join(tmp, name + "-b")
                fixtures.write(name, a)
                fixtures.write(name, b)
                for f in ("lessons.md", "events.jsonl", ".brain_salt"):
                    with open(os.path.join(a, f), "rb") as x, open(os.path.join(b, f), "rb") as y:
                        self.assertEqual(x.read(), y.read(), f"{name}/{f}")
            self.assertEqual(fixtures.stale_rules(os.path.join(tmp, "small-a")),
                             [("DOCS", "Never commit generated reference docs to the repository")])
            with open(os.path.join(tmp, "large-a", "lessons.md"), encoding="utf-8") as f:
                headers = [line for line in f if line.startswith("[")]
            self.assertEqual(len(headers), 1000)
            self.assertGreaterEqual(sum("[RULE:" in h for h in headers), 10)


def lesson(state, category, description, corrections=()):
    head = f"[2026-12-07] [{state}] {category}: {description}\n"
    ids = f"  Corrections: {','.join(map(str, corrections))}\n" if corrections else ""
    return head + "  Fire count: 1 | Sessions since fire: 0 | Misfires: 0\n" + ids + "\n"


class LessonsReduction(unittest.TestCase):
    """lessons.md reduced to decisions: which lesson holds a correction, and states."""

    def test_parse_reads_states_categories_and_correction_ids(self):
        text = "# heading\n\n" + lesson("RULE:0.90", "TONE", "Be brief", [3, 41]) + lesson(
            "INSTINCT", "code", "Use pathlib")
        got = [(x["state"], x["category"], x["description"], x["corrections"])
               for x in learning.parse_lessons(text)]
        self.assertEqual(got, [("RULE", "TONE", "Be brief", [3, 41]),
                               ("INSTINCT", "CODE", "Use pathlib", [])])

    def test_a_multi_line_description_keeps_its_fields(self):
        # 0.6.0 writes an instruction taken from a code diff as it is (brain-spec 3.3).
        text = ("[2026-12-07] [INSTINCT:0.60] CONFIG: Timeout: 30\nretries: 5\n# Never store it\n"
                "  Corrections: 8\n\n" + lesson("PATTERN:0.70", "CODE", "Add hints", [9]))
        got = [(x["category"], x["corrections"]) for x in learning.parse_lessons(text)]
        self.assertEqual(got, [("CONFIG", [8]), ("CODE", [9])])

    def test_the_archive_adds_its_lessons_and_skips_graduation_notes(self):
        with tempfile.TemporaryDirectory() as brain:
            with open(os.path.join(brain, "lessons.md"), "w") as f:
                f.write(lesson("INSTINCT:0.60", "CODE", "Add hints", [2]))
            with open(os.path.join(brain, "lessons-archive.md"), "w") as f:
                f.write("# Lessons Archive\n\n## Graduated 2026-12-07 (auto)\n"
                        "[2026-12-07] CODE: Add hints \u2192 Auto-graduated (confidence 0.95)\n\n"
                        "## Retired 2026-12-07T10:00:00Z\n" + lesson("KILLED:0.00", "TONE", "Be rude"))
            got = [(x["state"], x["archived"]) for x in learning.read_lessons(brain)]
            self.assertEqual(got, [("INSTINCT", False), ("KILLED", True)])

    def parse(self, *blocks):
        return learning.parse_lessons("".join(blocks))

    def test_created_reinforced_and_rewritten_lessons_are_told_apart(self):
        fixture = [lesson("RULE:0.90", "TONE", "Be brief", [41]),
                   lesson("PATTERN:0.70", "CONTENT", "Keep notes short")]
        tracker = learning.Tracker(self.parse(*fixture))
        # Correction 1 (event 5) creates a CODE lesson.
        created = lesson("INSTINCT:0.60", "CODE", "Add hints", [5])
        self.assertEqual(tracker.update(self.parse(*fixture, created), 1, 5), ("c1", True))
        # Correction 2 (event 9) reinforces it: its ids grow, its state moves.
        grown = lesson("PATTERN:0.70", "CODE", "Add hints", [5, 9])
        self.assertEqual(tracker.update(self.parse(*fixture, grown), 2, 9), ("c1", False))
        self.assertEqual(tracker.states()["c1"], "PATTERN")
        # Correction 3 (event 41, an id the fixture's log also used) reinforces the CONTENT
        # lesson and replaces its text, as 0.6.0 does: it is still fixture 1, not a new lesson.
        rewritten = lesson("PATTERN:0.74", "CONTENT", "Keep release notes short and factual", [41])
        self.assertEqual(tracker.update(self.parse(fixture[0], rewritten, grown), 3, 41),
                         ("fixture 1", False))
        self.assertEqual(tracker.states(), {"fixture 0": "RULE", "fixture 1": "PATTERN", "c1": "PATTERN"})
        # An end of session that reorders the file, as 0.6.0's does: the fixture's stale id 41
        # does not tie the two lessons together.
        tracker.update(self.parse(rewritten, fixture[0], grown))
        self.assertEqual(tracker.states(), {"fixture 0": "RULE", "fixture 1": "PATTERN", "c1": "PATTERN"})

    def test_a_vanished_lesson_is_absent_and_a_new_one_with_its_text_is_created(self):
        first = lesson("UNTESTABLE:0.50", "CONTENT", "Avoid hedging", [1])
        tracker = learning.Tracker([])
        self.assertEqual(tracker.update(self.parse(first), 1, 1), ("c1", True))
        self.assertEqual(tracker.update(self.parse()), (None, False))
        self.assertEqual(tracker.states(), {"c1": "absent"})
        again = lesson("INSTINCT:0.60", "CONTENT", "Avoid hedging", [7])
        self.assertEqual(tracker.update(self.parse(again), 2, 7), ("c2", True))

    def test_a_correction_no_lesson_holds_is_neither(self):
        held = lesson("INSTINCT:0.60", "CODE", "Add hints", [5])
        tracker = learning.Tracker(self.parse(held))
        self.assertEqual(tracker.update(self.parse(held), 2, 11), (None, False))

    def test_decisions_name_the_lesson_and_the_changes_of_the_others(self):
        with tempfile.TemporaryDirectory() as brain:
            path = os.path.join(brain, "lessons.md")
            with open(path, "w") as f:
                f.write(lesson("PATTERN:0.70", "TONE", "Be brief"))
            fixtures.create_system_db(os.path.join(brain, "system.db"), [], [])
            files = [lesson("PATTERN:0.70", "TONE", "Be brief") + lesson("INSTINCT:0.60", "CODE", "Hints", [1]),
                     lesson("RULE:0.95", "TONE", "Be brief") + lesson("INSTINCT:0.60", "CODE", "Hints", [1])]

            def call(step):
                # What a daemon does: the CORRECTION event (id 1) of a correction, then the file.
                if step["call"] == "correct":
                    db = sqlite3.connect(os.path.join(brain, "system.db"))
                    db.execute("INSERT INTO events (ts, type) VALUES ('t', 'CORRECTION')")
                    db.commit()
                    db.close()
                with open(path, "w") as f:
                    f.write(files.pop(0))
                return {"status": 200, "body": {}}

            got = learning.decisions(brain, [learning.correct(1, "s", "a.py", "x", "y"),
                                             learning.end("s")], call)
            self.assertEqual(got[0]["decision"], "created c1")
            self.assertEqual((got[0]["category"], got[0]["state"]), ("CODE", "INSTINCT"))
            self.assertEqual(got[0]["others changed"], {})
            self.assertEqual(got[1]["changed"], {"fixture 0": "PATTERN -> RULE"})


class LearningExpected(unittest.TestCase):
    CASE = ("b/empty", 3, "$.decision", "created c3", "reinforced c1")

    def entries(self):
        return [learning.LearningDifference("x", "deliberate", "why", [self.CASE])]

    def test_a_listed_case_is_explained_only_with_both_values(self):
        seen = [("b/empty", 3, "correct #2", "$.decision", "created c3", "reinforced c1")]
        unexplained, explained, unseen = learning.match_expected(seen, self.entries())
        self.assertEqual((unexplained, unseen), ([], []))
        self.assertEqual(explained[0][0], "x")
        other = [("b/empty", 3, "correct #2", "$.decision", "created c3", "created c3 ")]
        unexplained, _, unseen = learning.match_expected(other, self.entries())
        self.assertEqual(len(unexplained), 1)
        self.assertEqual(unseen, [("x", self.CASE)])

    def test_a_listed_case_that_does_not_happen_is_reported(self):
        _, _, unseen = learning.match_expected([], self.entries())
        self.assertEqual(unseen, [("x", self.CASE)])

    def test_every_listed_case_names_a_run_and_a_step_of_the_sequences(self):
        runs = {learning.run_name(s, b): len(steps) for s, b, steps in learning.SEQUENCES}
        for entry in learning.EXPECTED:
            self.assertIn(entry.kind, ("deliberate", "todo"))
            for run, n, path, _, _ in entry.cases:
                self.assertIn(run, runs)
                self.assertTrue(1 <= n <= runs[run], (entry.ident, run, n))
                self.assertTrue(path.startswith("$."), path)


if __name__ == "__main__":
    unittest.main(verbosity=1)
