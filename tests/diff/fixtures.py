"""Brain fixtures for the differential tests, written from scratch on every run.

Three brains, each a plain directory laid out as brain-spec section 2 describes:

* ``empty``: nothing at all, the state of a brand-new install;
* ``small``: about fifteen lessons in every state, scoped lessons, a RULE nobody has fired for
  fifty-odd sessions (the TTL view), near-duplicates in one category, ``never`` rules for
  enforcement, a fixed ``.brain_salt``, and a ``system.db`` whose ``events`` table and
  ``brain_fts`` index already hold a few corrections (what the Python SDK leaves behind);
* ``large``: one thousand lessons drawn from a seeded generator, with the same kinds of lines.

Everything is deterministic: the same call writes the same bytes, so two copies of a fixture
are interchangeable and a rerun compares with the previous one.
"""

import json
import os
import random
import sqlite3

SALT = "5f0c" * 16

# The lessons of the small brain. Each entry: header fields, then the continuation lines.
SMALL_LESSONS = [
    ("2026-03-02", "RULE:0.94", "TONE", "Never open client emails with small talk",
     ["Root cause: user deleted greeting paragraphs",
      "Fire count: 12 | Sessions since fire: 1 | Misfires: 0",
      "Corrections: 41,57"]),
    ("2026-03-05", "RULE:0.92", "CODE", "Always add type hints to public Python functions",
     ["Fire count: 7 | Sessions since fire: 2 | Misfires: 1"]),
    ("2026-03-07", "RULE:0.90", "FORMAT", "Never wrap short answers in markdown headers",
     ["Fire count: 5 | Sessions since fire: 0 | Misfires: 0"]),
    ("2026-03-09", "RULE:0.95", "STYLE",
     "Never use em dashes in client emails; use commas or periods",
     ["Fire count: 20 | Sessions since fire: 3 | Misfires: 2"]),
    # TTL-stale: 63 sessions without firing, so /apply-rules treats it as a PATTERN.
    ("2026-01-10", "RULE:0.91", "DOCS", "Never commit generated reference docs to the repository",
     ["Fire count: 4 | Sessions since fire: 63 | Misfires: 0"]),
    ("2026-03-12", "RULE:0.93", "CONFIG", "Keep secrets out of YAML config files",
     ["Fire count: 6 | Sessions since fire: 1 | Misfires: 0",
      'Scope: {"task_type": "config"}']),
    # A low-confidence RULE: there is no confidence floor, it is still eligible.
    ("2026-03-13", "RULE:0.30", "SECURITY", "Never paste access tokens into logs",
     ["Fire count: 1 | Sessions since fire: 4 | Misfires: 3"]),
    # Near-duplicates in CODE: the second shares more than 85 % of the first's words.
    ("2026-03-14", "PATTERN:0.71", "CODE", "Prefer pathlib over os.path for file handling",
     ["Fire count: 4 | Sessions since fire: 0 | Misfires: 1"]),
    ("2026-03-15", "PATTERN:0.74", "CODE", "Prefer pathlib over os.path when handling file paths",
     ["Fire count: 2 | Sessions since fire: 1 | Misfires: 0"]),
    ("2026-03-16", "PATTERN:0.66", "CODE", "Return explicit error types instead of strings",
     []),
    ("2026-03-18", "PATTERN:0.80", "ACCURACY", "Double-check numbers against the source before quoting them",
     ['Scope: {"task_type": "research"}']),
    ("2026-03-19", "PATTERN:0.65", "EMAIL", "Keep follow-up emails under five sentences",
     ['Scope: {"task_type": "email", "stakes": "normal"}',
      "Fire count: 3 | Sessions since fire: 2 | Misfires: 0"]),
    ("2026-03-20", "PATTERN:0.70", "PROCESS", "Run the test suite before declaring a fix done",
     ['Scope: {"agent_type": "reviewer"}']),
    ("2026-03-21", "PATTERN", "ACCURACY", "Cite the file and line when quoting code",
     ["Scope: {not json"]),
    ("2026-03-22", "INSTINCT:0.55", "DOCS", "Link the runbook in incident summaries", []),
    ("2026-03-23", "INSTINCT", "TESTING", "Name tests after the behaviour they check", []),
    ("2026-02-01", "KILLED:0.00", "TONE", "Always start replies with an apology",
     ["Kill reason: zero_confidence: contradicted three times"]),
]

# Corrections already indexed for recall (what /correct leaves in brain_fts), as
# (category, summary, final text, embed date).
SMALL_CORRECTIONS = [
    ("CODE", "Content change (added: pathlib)", "use pathlib.Path for the config loader", "2026-03-14"),
    ("CODE", "Content change (added: hints)", "def load_config(path: Path) -> dict: add type hints", "2026-03-05"),
    ("TONE", "Content change (cut: weather)", "Hi Dana, the renewal quote is attached.", "2026-03-02"),
    ("CONFIG", "Content change (cut: password)", "password moved from settings.yaml to the vault", "2026-03-12"),
    ("STYLE", "Content change (cut: dashes)", "The release is ready, and the notes are below.", "2026-03-09"),
    ("PROCESS", "Content change (added: linter)", "run the linter and the test suite before merging", "2026-03-20"),
]


def lesson_text(lessons, heading="# Team brain: lessons"):
    """lessons.md text for a list of (date, state, category, description, extra lines)."""
    out = [heading] if heading else []
    for date, state, category, description, extra in lessons:
        out.append(f"[{date}] [{state}] {category}: {description}")
        out.extend("  " + line for line in extra)
        out.append("")
    return "\n".join(out) + "\n"


def create_system_db(path, events, corrections):
    """A system.db as the Python SDK leaves it: the events table and the recall index."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        PRAGMA journal_mode=WAL;
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, session INTEGER,
            type TEXT NOT NULL, source TEXT, data_json TEXT, tags_json TEXT,
            valid_from TEXT, valid_until TEXT, scope TEXT DEFAULT 'local');
        CREATE INDEX idx_events_session ON events(session);
        CREATE INDEX idx_events_type ON events(type);
        CREATE INDEX idx_events_session_type ON events(session, type);
        CREATE TABLE brain_fts_content (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT, file_type TEXT, text TEXT, embed_date TEXT);
        CREATE VIRTUAL TABLE brain_fts USING fts5(
            source, file_type, text, embed_date,
            content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');
        """
    )
    for ts, session, etype, source, data, tags in events:
        db.execute(
            "INSERT INTO events (ts, session, type, source, data_json, tags_json, valid_from)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ts, session, etype, source, json.dumps(data), json.dumps(tags), ts),
        )
    for category, summary, final, date in corrections:
        text = f"{category}: {summary} - {final}"
        cur = db.execute(
            "INSERT INTO brain_fts_content (source, file_type, text, embed_date) VALUES (?, ?, ?, ?)",
            ("corrections", "correction", text, date),
        )
        db.execute(
            "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date) VALUES (?, ?, ?, ?, ?)",
            (cur.lastrowid, "corrections", "correction", text, date),
        )
    db.commit()
    # Fold the WAL back so the fixture is one file that copies cleanly.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()


def correction_events(corrections, first_session):
    """CORRECTION events matching the indexed corrections, one session each."""
    events = []
    for n, (category, summary, final, date) in enumerate(corrections):
        ts = f"{date}T10:{n % 60:02d}:00.000000+00:00"
        data = {"category": category, "severity": "minor", "summary": summary,
                "final_text": final, "platform_source": "claude-code"}
        events.append((ts, first_session + n, "CORRECTION", "brain.correct", data,
                       [f"category:{category}", "severity:minor"]))
    return events


def write_events_jsonl(path, events):
    with open(path, "w", encoding="utf-8") as f:
        for ts, session, etype, source, data, tags in events:
            f.write(json.dumps({"ts": ts, "session": session, "type": etype, "source": source,
                                "data": data, "tags": tags, "valid_from": ts,
                                "valid_until": None}, ensure_ascii=False) + "\n")


def write_small(brain):
    with open(os.path.join(brain, "lessons.md"), "w", encoding="utf-8") as f:
        f.write(lesson_text(SMALL_LESSONS))
    with open(os.path.join(brain, ".brain_salt"), "w") as f:
        f.write(SALT)
    events = correction_events(SMALL_CORRECTIONS, first_session=7)
    create_system_db(os.path.join(brain, "system.db"), events, SMALL_CORRECTIONS)
    write_events_jsonl(os.path.join(brain, "events.jsonl"), events)


# Vocabulary for the large brain: enough variety that merges and dedup happen but stay rare.
CATEGORIES = ["CODE", "TONE", "STYLE", "FORMAT", "DOCS", "CONFIG", "SECURITY", "PROCESS",
              "ACCURACY", "EMAIL", "TESTING", "DATA", "FRONTEND", "RELEASE", "REVIEW", "INFRA"]
VERBS = ["Always", "Never", "Prefer", "Avoid", "Keep", "Check", "Document", "Use", "Remove", "Name"]
OBJECTS = ["error messages", "config keys", "client emails", "release notes", "log lines",
           "test names", "public functions", "YAML files", "migration scripts", "dashboards",
           "commit messages", "API responses", "feature flags", "docstrings", "SQL queries",
           "environment variables", "markdown headers", "status pages", "retry loops", "timeouts"]
QUALIFIERS = ["in production code", "before a release", "for new contributors", "when in doubt",
              "in code review", "on every pull request", "for external readers", "in incident notes",
              "with a short reason", "without jargon", "after each deploy", "in the changelog"]
TASKS = ["code", "email", "config", "research", "document", "call"]
AGENTS = ["reviewer", "planner", "general"]


def large_lessons(count=1000, seed=22):
    rng = random.Random(seed)
    lessons = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.08:
            state = f"RULE:{rng.choice(['0.90', '0.92', '0.95', '0.97', '0.35'])}"
        elif roll < 0.40:
            state = f"PATTERN:{rng.uniform(0.6, 0.89):.2f}"
        elif roll < 0.85:
            state = f"INSTINCT:{rng.uniform(0.3, 0.6):.2f}"
        elif roll < 0.92:
            state = "UNTESTABLE:0.10"
        else:
            state = "KILLED:0.00"
        category = rng.choice(CATEGORIES)
        description = (f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(QUALIFIERS)}"
                       f" (case {n})")
        extra = []
        fires = rng.randrange(0, 15)
        misfires = rng.randrange(0, 4)
        idle = rng.choice([0, 1, 2, 3, 5, 8, 12, 50, 70]) if state.startswith("RULE") else rng.randrange(0, 8)
        if fires or misfires or idle:
            extra.append(f"Fire count: {fires} | Sessions since fire: {idle} | Misfires: {misfires}")
        scope_roll = rng.random()
        if scope_roll < 0.15:
            extra.append(json_scope({"task_type": rng.choice(TASKS)}))
        elif scope_roll < 0.22:
            extra.append(json_scope({"agent_type": rng.choice(AGENTS)}))
        elif scope_roll < 0.25:
            extra.append(json_scope({"task_type": rng.choice(TASKS), "stakes": "high"}))
        if state.startswith("KILLED"):
            extra.append("Kill reason: zero_confidence: generated")
        month = 1 + n % 9
        day = 1 + n % 28
        lessons.append((f"2026-{month:02d}-{day:02d}", state, category, description, extra))
    return lessons


def json_scope(scope):
    return "Scope: " + json.dumps(scope)


def large_corrections(count=60, seed=23):
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        category = rng.choice(CATEGORIES)
        final = f"{rng.choice(VERBS).lower()} the {rng.choice(OBJECTS)} {rng.choice(QUALIFIERS)}"
        rows.append((category, f"Content change (added: {final.split()[2]})", final,
                     f"2026-{1 + n % 9:02d}-{1 + n % 28:02d}"))
    return rows


def write_large(brain):
    with open(os.path.join(brain, "lessons.md"), "w", encoding="utf-8") as f:
        f.write(lesson_text(large_lessons(), heading=None))
    with open(os.path.join(brain, ".brain_salt"), "w") as f:
        f.write(SALT[::-1])
    corrections = large_corrections()
    events = correction_events(corrections, first_session=1)
    create_system_db(os.path.join(brain, "system.db"), events, corrections)
    write_events_jsonl(os.path.join(brain, "events.jsonl"), events)


WRITERS = {"empty": lambda brain: None, "small": write_small, "large": write_large}


def write(name, brain):
    """Writes fixture `name` into the (new, empty) directory `brain`."""
    os.makedirs(brain)
    WRITERS[name](brain)


def stale_rules(brain):
    """(category, description) of the RULE lessons in `brain` idle for 50 sessions or more.

    The harness needs these to apply the TTL view that gradata extends to /health and
    /enforce-rules (a listed difference)."""
    import re
    path = os.path.join(brain, "lessons.md")
    if not os.path.exists(path):
        return []
    header = re.compile(r"\[\d{4}-\d{2}-\d{2}\]\s+\[(\w+)(?::[\d.]*)?\]\s+(\w[\w_/]*?):\s+(.+)")
    counters = re.compile(r"Sessions\s+since\s+fire:\s*(\d+)")
    stale, current = [], None
    with open(path, encoding="utf-8") as f:
        for raw in f.read().split("\n"):
            m = header.match(raw.strip())
            if m:
                current = (m.group(1).upper(), m.group(2).upper(), m.group(3).strip())
                continue
            if current and raw.startswith("  "):
                c = counters.search(raw)
                if c and current[0] == "RULE" and int(c.group(1)) >= 50:
                    stale.append((current[1], current[2]))
            else:
                current = None
    return stale
