#!/usr/bin/env python3
"""Unit tests of the harness itself: the differ, the normalisers and the fixtures.

The self-check (0.6.0 against itself) shows the masks cover 0.6.0's nondeterminism; these show
the masks do not hide what they must not: a rule line in the wrong tier, a different rule, a
gradata answer of 200 to bad input, a rule id in neither format.
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402
import differences  # noqa: E402
import fixtures  # noqa: E402

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


if __name__ == "__main__":
    unittest.main(verbosity=1)
