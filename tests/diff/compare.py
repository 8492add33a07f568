"""Comparison helpers shared by the request scenario and the session replay: a JSON differ that
names the path of each difference, and readers for the files the brain routes change."""

import json
import os
import sqlite3

import differences

SHOW = 240  # characters of a value or request shown in the report
# Marks a difference in the order of an object's keys only. JSON objects are unordered and the
# plugin parses every answer, so these are reported as notes and do not fail the run.
KEY_ORDER = " (key order only)"


def short(value):
    """A value as one line of JSON, cut to SHOW characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOW else text[:SHOW] + f"... ({len(text)} chars)"


def json_diff(a, b, path="$"):
    """The (path, a value, b value) triples where two JSON values differ."""
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                        and not isinstance(a, bool) and not isinstance(b, bool)):
        return [(path, a, b)]
    if isinstance(a, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            if key not in b:
                out.append((f"{path}.{key}", a[key], "<absent>"))
            elif key not in a:
                out.append((f"{path}.{key}", "<absent>", b[key]))
            else:
                out.extend(json_diff(a[key], b[key], f"{path}.{key}"))
        if not out and list(a) != list(b):
            out.append((f"{path}{KEY_ORDER}", list(a), list(b)))
        return out
    if isinstance(a, list):
        out = []
        for i in range(max(len(a), len(b))):
            if i >= len(a):
                out.append((f"{path}[{i}]", "<absent>", b[i]))
            elif i >= len(b):
                out.append((f"{path}[{i}]", a[i], "<absent>"))
            else:
                out.extend(json_diff(a[i], b[i], f"{path}[{i}]"))
        return out
    return [] if a == b else [(path, a, b)]


class Mismatch:
    def __init__(self, brain, where, request, path, left, right):
        self.brain, self.where, self.request = brain, where, request
        self.path, self.left, self.right = path, left, right

    def key_order_only(self):
        return self.path.endswith(KEY_ORDER)


def request_text(step):
    if "raw" in step:
        return f"raw body {step['raw']!r}"
    return short(step.get("body")) if step.get("body") is not None else "(no body)"


# ---- what the routes left on disk ----

def events_rows(brain):
    path = os.path.join(brain, "system.db")
    if not os.path.exists(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        has = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone()
        if not has:
            return []
        rows = db.execute("SELECT id, session, type, source, data_json, tags_json, valid_until"
                          " FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    out = []
    for rid, session, etype, source, data, tags, valid_until in rows:
        out.append({"id": rid, "session": session, "type": etype, "source": source,
                    "data": _loads(data), "tags": _loads(tags), "valid_until": valid_until})
    return out


def _loads(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"<not json>": text}


def events_jsonl(brain):
    path = os.path.join(brain, "events.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = _loads(line)
            if isinstance(record, dict):
                record = dict(record)
                for key in ("ts", "valid_from"):
                    if key in record:
                        record[key] = differences.MASKED
            out.append(record)
    return out


def lessons_bytes(brain):
    path = os.path.join(brain, "lessons.md")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def compare_files(brain_name, left_dir, right_dir, where="files"):
    found = []
    a, b = lessons_bytes(left_dir), lessons_bytes(right_dir)
    if a != b:
        found.append(Mismatch(brain_name, where, "lessons.md", "(bytes)",
                              None if a is None else f"{len(a)} bytes",
                              None if b is None else f"{len(b)} bytes"))
    for name, read in (("events table", events_rows), ("events.jsonl", events_jsonl)):
        for path, x, y in json_diff(read(left_dir), read(right_dir)):
            found.append(Mismatch(brain_name, where, name, path, x, y))
    return found
