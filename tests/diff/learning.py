"""What the brain learns: /correct and /end-session sequences, compared by decisions.

The same sequences of the plugin's calls (post-edit's ``/correct`` with ``old_string``,
``new_string``, ``file_path``, ``session_id``; the Stop hook's ``/end-session``) go to both
daemons, each on its own copy of a brain. After every call each side's ``lessons.md`` (and
``lessons-archive.md``, where gradata moves the lessons it retires) is reduced to decisions:

* for a correction: ``created cK`` (a new lesson, named after the correction K that made it),
  ``reinforced X`` (X is a lesson of the fixture, ``fixture N``, by its position in the fixture's
  ``lessons.md``, or ``cK``) or ``neither``, with that lesson's category and state after the call;
  and every other lesson whose state the call changed;
* for an end of session: every lesson whose state changed, and to what.

A lesson is followed from one call to the next by the event ids in its ``Corrections:`` line
(the CORRECTION event of a correction is the newest one in the brain's ``events`` table), else
by its category and text; the wording of the lessons themselves is never compared, only these
decisions. Where gradata decides differently on purpose (docs/compatibility.md), the difference
is a named entry of ``EXPECTED`` below that shows both results; anything else fails.
"""

import json
import os
import re
import shutil
import sqlite3

import compare
import fixtures

HEADER = re.compile(r"\[\d{4}-\d{2}-\d{2}\]\s+\[(\w+)(?::([\d.]*))?\]\s+(\w[\w_/]*?):\s+(.*)")
CORRECTIONS = re.compile(r"^\s*Corrections:\s*(.*)$")
ABSENT = "absent"


def correct(n, session, file_path, old, new):
    return {"call": "correct", "n": n, "body": {"old_string": old, "new_string": new,
                                                  "file_path": file_path, "session_id": session}}


def end(session):
    return {"call": "end-session", "body": {"session_id": session}}


def _sequence_a():
    """~15 mixed corrections over 3 sessions: prose, code, config and front-end files; hedging,
    tone, constraint words, and repeats of the same kind (which should reinforce)."""
    s1, s2, s3 = "learn-a-1", "learn-a-2", "learn-a-3"
    rows = [
        (s1, "notes.md", "We might maybe consider possibly shipping the release on Friday.",
         "We ship the release on Friday."),
        (s1, "email.txt", "Hey team, just wanted to quickly say thanks btw for the help asap!",
         "Dear team, thank you for your help. Kind regards."),
        (s1, "src/app.py", "def load(path):\n    return open(path).read()\n",
         "def load(path):\n    # Always close files: use a context manager.\n"
         "    with open(path) as f:\n        return f.read()\n"),
        (s1, "settings.yaml", "timeout: 30\nretries: 5\n",
         "timeout: 30\nretries: 5\n# Never store passwords in this file.\n"),
        (s1, "status.md", "I think we could perhaps maybe try to fix the login bug soon.",
         "We fix the login bug today."),
        (s2, "report.md", "It might possibly be worth maybe checking the server logs again.",
         "Check the server logs again."),
        (s2, "src/util.py", "def save(path, data):\n    open(path, 'w').write(data)\n",
         "def save(path, data):\n    # Always use a context manager for files.\n"
         "    with open(path, 'w') as f:\n        f.write(data)\n"),
        (s2, "config.toml", "debug = true\n",
         "debug = false\n# You must never enable debug in production.\n"),
        (s2, "reply.txt", "hey, thanks for the update btw, will check it asap",
         "Dear Sam, thank you for the update. I will review it today. Regards"),
        (s2, "site/button.css", ".button { color: red; }", ".button { color: #b00020; }"),
        (s3, "summary.md",
         "The migration, which as everyone knows was planned quite a long time ago by the"
         " platform team after many long discussions in several meetings, finished on Tuesday.",
         "The migration finished on Tuesday."),
        (s3, "readme.md", "This could maybe perhaps be a little bit slow in some cases.",
         "This is slow for large inputs."),
        (s3, "src/db.py", "def query(sql):\n    return run(sql)\n",
         "def query(sql: str) -> list:\n    return run(sql)\n"),
        (s3, "plan.md", "Deploy on Fridays.", "Never deploy on Fridays; always deploy early in the week."),
        (s3, "deploy.yaml", "replicas: 1\n", "replicas: 3\n"),
    ]
    steps, n = [], 0
    for session in (s1, s2, s3):
        for s, path, old, new in rows:
            if s == session:
                n += 1
                steps.append(correct(n, s, path, old, new))
        steps.append(end(session))
    return steps


HEDGED = [
    ("We might maybe ship the beta on Monday.", "We ship the beta on Monday."),
    ("I think we could perhaps try the new cache.", "We try the new cache."),
    ("It might possibly be worth maybe rerunning the job.", "Rerun the job."),
    ("We could maybe perhaps move the standup earlier.", "We move the standup earlier."),
    ("Perhaps we might possibly drop the old endpoint.", "We drop the old endpoint."),
    ("Maybe we could probably merge the branch today.", "We merge the branch today."),
    ("It could perhaps be possible to cut the build time.", "We cut the build time."),
    ("We might maybe want to rename the service.", "We rename the service."),
    ("Possibly we could perhaps archive the old tickets.", "We archive the old tickets."),
    ("I guess we might maybe pin the dependency.", "We pin the dependency."),
]


def _sequence_b():
    """One correction of the same kind per session, each session ended once: a lesson is
    created, reinforced and graduated across ten sessions."""
    steps = []
    for n, (old, new) in enumerate(HEDGED, 1):
        session = f"learn-b-{n}"
        steps.append(correct(n, session, f"notes/day{n}.md", old, new))
        steps.append(end(session))
    return steps


def _sequence_c():
    """The plugin's real pattern: the Stop hook ends the session after every turn, so
    /end-session comes several times with one session_id, between the corrections."""
    steps, n = [], 0
    for s in range(1, 4):
        session = f"learn-c-{s}"
        for old, new in HEDGED[(s - 1) * 2:(s - 1) * 2 + 2]:
            n += 1
            steps.append(correct(n, session, f"notes/turn{n}.md", old, new))
            steps.append(end(session))
        steps.append(end(session))
        steps.append(end(session))
    return steps


def _sequence_d():
    """One correction per session that teaches what lessons of the small brain already say
    (pathlib over os.path, a CODE PATTERN; secrets out of YAML files, a CONFIG RULE): the
    corrections reinforce the fixture's lessons, by their positions."""
    rows = [
        ("src/files.py", "p = os.path.join(root, name)\n",
         "# Always prefer pathlib over os.path for file handling.\np = Path(root) / name\n"),
        ("config/app.yaml", "db_password: hunter2\n",
         "# Never keep secrets in YAML config files; use the vault.\ndb_password: !vault db\n"),
        ("src/paths.py", "base = os.path.dirname(path)\n",
         "# Always prefer pathlib over os.path when handling file paths.\nbase = Path(path).parent\n"),
        ("deploy/values.yaml", "api_key: abc123\n",
         "# Never commit secrets to YAML config files.\napi_key: !vault api\n"),
        ("src/walk.py", "for f in os.listdir(d):\n",
         "# Always prefer pathlib over os.path for file handling in new code.\nfor f in Path(d).iterdir():\n"),
        ("ci/pipeline.yml", "token: t0k3n\n",
         "# Never keep secrets or tokens in YAML config files.\ntoken: !vault ci\n"),
    ]
    steps = []
    for n, (path, old, new) in enumerate(rows, 1):
        session = f"learn-d-{n}"
        steps.append(correct(n, session, path, old, new))
        steps.append(end(session))
    return steps


# (name, brain fixture, steps)
SEQUENCES = [
    ("a-mixed", "empty", _sequence_a()),
    ("a-mixed", "small", _sequence_a()),
    ("b-one-per-session", "empty", _sequence_b()),
    ("c-stop-hook", "small", _sequence_c()),
    ("d-fixture-lessons", "small", _sequence_d()),
]


# ---- lessons.md and the archive, reduced to what the comparison needs ----

def parse_lessons(text):
    """The lessons of a lessons.md (or archive) text, in order: state, category, description,
    the correction event ids. Lines before the first lesson (headings, prose) are skipped. An
    indented line belongs to the lesson above it, even past lines that are no lesson header:
    0.6.0 writes a multi-line description as it is (brain-spec section 3.3), and the lesson's
    fields follow its last line."""
    lessons, current = [], None
    for raw in text.split("\n"):
        m = HEADER.match(raw) if not raw.startswith((" ", "\t")) else None
        if m:
            current = {"state": m.group(1).upper(), "category": m.group(3).upper(),
                       "description": m.group(4).strip(), "corrections": []}
            lessons.append(current)
        elif current is not None and raw.startswith((" ", "\t")):
            c = CORRECTIONS.match(raw)
            if c:
                current["corrections"] = [int(x) for x in re.findall(r"\d+", c.group(1))]
    return lessons


def read_lessons(brain):
    """Every lesson of the brain: lessons.md, then the archive (marked), in file order."""
    out = []
    for name, archived in (("lessons.md", False), ("lessons-archive.md", True)):
        path = os.path.join(brain, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for lesson in parse_lessons(f.read()):
                    out.append(dict(lesson, archived=archived))
    return out


def newest_correction_id(brain):
    path = os.path.join(brain, "system.db")
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT MAX(id) FROM events WHERE type = 'CORRECTION'").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return row[0] if row else None


class Tracker:
    """Follows each lesson of one brain from call to call and names it: ``fixture N`` for the
    N-th lesson of the fixture, ``cK`` for the one correction K created. A lesson no longer
    found in lessons.md nor in the archive is ``absent``."""

    def __init__(self, lessons):
        self.known = [dict(lesson, name=f"fixture {i}") for i, lesson in enumerate(lessons)]
        # The fixture's own correction ids name events of another log: the brain's new events
        # take the same numbers, so they identify nothing.
        self.stale = {n for lesson in lessons for n in lesson["corrections"]}

    def states(self):
        return {lesson["name"]: lesson["state"] for lesson in self.known}

    def update(self, lessons, correction=None, event_id=None):
        """Matches the brain's lessons now to the known ones that were present; returns the name
        of the lesson that newly holds `event_id` and whether the call created it.

        A lesson keeps its name when it shares an older correction id with a known one, else
        when its category and text are those of a known one. A lesson left over that holds the
        call's event id is the one known lesson of its category left over and not KILLED, when
        there is one (0.6.0 replaced its text with a longer instruction, brain-spec section
        6.9 step 9; only a KILLED lesson can vanish in a /correct, as 0.6.0 drops those on
        every write), else a lesson the correction created."""
        present = [i for i, k in enumerate(self.known) if k["state"] != ABSENT]
        matched = {}
        for rule in ("ids", "text"):
            for j, lesson in enumerate(lessons):
                if j in matched:
                    continue
                for i in present:
                    k = self.known[i]
                    if rule == "ids":
                        ids = set(lesson["corrections"]) - {event_id} - self.stale
                        ok = bool(ids & set(k["corrections"]))
                    else:
                        ok = (k["category"], k["description"]) == (lesson["category"], lesson["description"])
                    if ok:
                        matched[j] = i
                        present.remove(i)
                        break
        holder, created = None, False
        for j, lesson in enumerate(lessons):
            if j in matched:
                continue
            holds = event_id is not None and event_id in lesson["corrections"]
            rewritten = [i for i in present if self.known[i]["state"] != "KILLED"
                         and self.known[i]["category"] == lesson["category"]]
            if holds and len(rewritten) == 1:
                matched[j] = rewritten[0]
                present.remove(rewritten[0])
                continue
            name = f"c{correction}" if holds else f"unexplained lesson {len(self.known)}"
            self.known.append(dict(lesson, name=name))
            matched[j] = len(self.known) - 1
            if holds:
                holder, created = name, True
        for j, i in matched.items():
            had = self.known[i]["corrections"]
            if holder is None and event_id is not None and event_id in lessons[j]["corrections"] \
                    and event_id not in had:
                holder = self.known[i]["name"]
            self.known[i].update(lessons[j])
        for i in present:
            self.known[i]["state"] = ABSENT
        return holder, created

    def get(self, name):
        return next(k for k in self.known if k["name"] == name)


def decisions(brain, steps, call):
    """Runs `steps` through `call(step)` on `brain`; returns one decision record per step."""
    tracker = Tracker(read_lessons(brain))
    last_event = newest_correction_id(brain)
    out = []
    for step in steps:
        before = tracker.states()
        answer = call(step)
        if step["call"] == "correct":
            event_id = newest_correction_id(brain)
            if event_id == last_event:
                event_id = None
            last_event = event_id if event_id is not None else last_event
            holder, created = tracker.update(read_lessons(brain), step["n"], event_id)
            if holder is None:
                record = {"decision": "neither"}
            else:
                lesson = tracker.get(holder)
                verb = "created" if created else "reinforced"
                record = {"decision": f"{verb} {holder}", "category": lesson["category"],
                          "state": lesson["state"]}
            if answer is not None and answer.get("status") != 200:
                record["answer"] = answer
            record["others changed"] = _changes(before, tracker.states(),
                                                skip=holder)
            out.append({"step": f"correct #{step['n']} ({step['body']['session_id']},"
                                f" {step['body']['file_path']})", **record})
        else:
            tracker.update(read_lessons(brain))
            record = {"changed": _changes(before, tracker.states())}
            if answer is not None and answer.get("status") != 200:
                record["answer"] = answer
            out.append({"step": f"end-session {step['body']['session_id']}", **record})
    return out


def _changes(before, after, skip=None):
    return {name: f"{before.get(name, 'new')} -> {state}" for name, state in after.items()
            if name != skip and before.get(name) != state and before.get(name) is not None}


# ---- running the sequences against a daemon ----

def play(factory, source, work, tag, steps):
    brain = os.path.join(work, tag)
    shutil.copytree(source, brain, symlinks=True)
    home = os.path.join(work, f"home-{tag}")
    os.makedirs(home, exist_ok=True)
    daemon = factory.start(brain, home, os.path.join(work, f"{tag}.log"))
    try:
        def call(step):
            path = "/correct" if step["call"] == "correct" else "/end-session"
            return daemon.call("POST", path, step["body"]).as_dict()
        return decisions(brain, steps, call)
    finally:
        daemon.stop(daemon.stop_signal)


def run_name(sequence, brain):
    return f"{sequence}/{brain}"


def checked_items():
    """What the comparison counts, for the pass/fail tally: every call of every sequence."""
    return sum(len(steps) for _, _, steps in SEQUENCES)


def record_mismatches(run, left, right):
    """(run, step number, step, path, left value, right value) for each difference."""
    found = []
    for n, (a, b) in enumerate(zip(left, right), 1):
        for path, x, y in compare.json_diff(a, b):
            found.append((run, n, a["step"], path, x, y))
    return found


def vacuity_problems(run, records):
    """What 0.6.0's own decisions must show for the comparison to mean anything."""
    decided = " ".join(r.get("decision", "") for r in records)
    problems = []
    if "created" not in decided or "reinforced" not in decided:
        problems.append("no correction both created and reinforced a lesson")
    if run.startswith("b-") and not any(t[:3] == ["INSTINCT", "PATTERN", "RULE"]
                                        for t in trajectories(records).values()):
        problems.append("no lesson went INSTINCT -> PATTERN -> RULE")
    if run.startswith("b-") and not any("-> RULE" in v for r in records
                                        for v in r.get("changed", {}).values()):
        problems.append("no lesson became a RULE at the end of a session")
    ended = set()
    repeated_sweep = False
    for r in records:
        if r["step"].startswith("end-session"):
            repeated_sweep |= r["step"] in ended and bool(r["changed"])
            ended.add(r["step"])
    if run.startswith("c-") and not repeated_sweep:
        problems.append("no repeated /end-session of one session changed a lesson")
    return problems


def trajectories(records):
    """Each lesson's states in the order the records show them, repeats collapsed."""
    seen = {}

    def note(name, state):
        states = seen.setdefault(name, [])
        if not states or states[-1] != state:
            states.append(state)

    for r in records:
        if r.get("decision", "neither") != "neither":
            note(r["decision"].split(" ", 1)[1], r["state"])
        for name, move in {**r.get("others changed", {}), **r.get("changed", {})}.items():
            old, new = move.split(" -> ")
            note(name, old)
            note(name, new)
    return seen


class Learning:
    """The sequences on fresh copies of their brains: 0.6.0 twice (the self-check), then
    gradata, whose decisions are compared with the first 0.6.0 run."""

    def __init__(self, work):
        self.dir = os.path.join(work, "learning")
        self.records = {}
        self.sources = {}
        for brain in sorted({b for _, b, _ in SEQUENCES}):
            self.sources[brain] = os.path.join(self.dir, "fixtures", brain)
            fixtures.write(brain, self.sources[brain])

    def _play(self, factory, label):
        out = {}
        for sequence, brain, steps in SEQUENCES:
            run = run_name(sequence, brain)
            tag = f"{sequence}-{brain}-{label}"
            out[run] = play(factory, self.sources[brain], self.dir, tag, steps)
            dump(os.path.join(self.dir, f"{tag}.decisions.json"), out[run])
        return out

    def self_check(self, python):
        a, b = self._play(python, "python-a"), self._play(python, "python-b")
        self.records["python"] = a
        found = []
        for run in a:
            for problem in vacuity_problems(run, a[run]):
                found.append(compare.Mismatch(f"learn {run}", "0.6.0 decisions", "sequence", problem,
                                              "expected", "missing"))
            for run_, n, step, path, x, y in record_mismatches(run, a[run], b[run]):
                found.append(compare.Mismatch(f"learn {run_}", f"#{n} {step}", "decisions", path, x, y))
        print(f"-- [learning] {len(SEQUENCES)} sequences of /correct and /end-session against 0.6.0, twice")
        return found

    def versus(self, gradata):
        """gradata's decisions against 0.6.0's: returns the mismatches no entry of EXPECTED
        explains, and every case of EXPECTED that did not happen; prints the explained ones."""
        g = self._play(gradata, "gradata")
        observed = []
        for run, left in self.records["python"].items():
            observed += record_mismatches(run, left, g[run])
        unexplained, explained, unseen = match_expected(observed, EXPECTED)
        found = [compare.Mismatch(f"learn {run}", f"#{n} {step}", "decisions", path, x, y)
                 for run, n, step, path, x, y in unexplained]
        for ident, (run, n, path, x, y) in unseen:
            found.append(compare.Mismatch(f"learn {run}", f"#{n}", f"expected difference {ident}",
                                          path, x, f"not seen: {short_case(observed, run, n, path)}"))
        print_explained(explained)
        if unexplained:
            print("\n   unexplained learning mismatches as cases of EXPECTED (for a listed reason only):")
            for run, n, step, path, x, y in unexplained:
                print(f"        ({run!r}, {n}, {path!r}, {x!r}, {y!r}),  # {step}")
        print("-- [learning] the same sequences against gradata")
        return found


def short_case(observed, run, n, path):
    for r, m, _, p, x, y in observed:
        if (r, m, p) == (run, n, path):
            return f"0.6.0 {x!r}, gradata {y!r}"
    return "the two agree"


def match_expected(observed, expected):
    """Splits the observed mismatches into those no entry explains and those one does (exactly:
    same run, step, path, 0.6.0 value and gradata value); also returns the cases not seen."""
    cases = {}
    for entry in expected:
        for case in entry.cases:
            cases[case] = entry.ident
    unexplained, explained, seen = [], [], set()
    for run, n, step, path, x, y in observed:
        key = (run, n, path, x, y)
        if key in cases:
            explained.append((cases[key], run, n, step, path, x, y))
            seen.add(key)
        else:
            unexplained.append((run, n, step, path, x, y))
    unseen = [(ident, case) for case, ident in cases.items() if case not in seen]
    return unexplained, explained, unseen


def print_explained(explained):
    by = {}
    for ident, *rest in explained:
        by.setdefault(ident, []).append(rest)
    for entry in EXPECTED:
        rows = by.get(entry.ident, [])
        print(f"\n   [{entry.kind}] {entry.ident}: {len(rows)} decision(s) differ as listed: {entry.reason}")
        for run, n, step, path, x, y in rows:
            print(f"      {run} #{n} {step} {path}: 0.6.0 {compare.short(x)} | gradata {compare.short(y)}")


def dump(path, records):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1, ensure_ascii=False)


# ---- where gradata decides differently, and why ----

class LearningDifference:
    """A named difference between 0.6.0's decisions and gradata's: its reason, and each case it
    explains, with both results: (run, step number, JSON path, 0.6.0's value, gradata's)."""

    def __init__(self, ident, kind, reason, cases):
        self.ident, self.kind, self.reason, self.cases = ident, kind, reason, cases


EXPECTED = [
    LearningDifference(
        'tier-moves-at-session-end', 'deliberate',
        '0.6.0 moves a lesson between INSTINCT, PATTERN and RULE inside /correct as soon as '
        'its confidence crosses a threshold (two tiers in one session happen), and every '
        'correction moves the confidence of every lesson (a penalty for those of its category '
        'it does not reinforce, a bonus for the others); gradata moves tiers only in the '
        "session's sweep at /end-session, at most one step per lesson per session "
        '(docs/compatibility.md, /correct and /end-session; brain-spec 8.2, 13 #5)'
        ,[
            ('a-mixed/empty', 2, '$.state', 'PATTERN', 'INSTINCT'),  # correct #2 (learn-a-1, email.txt)
            ('a-mixed/empty', 3, '$.others changed.c1', 'PATTERN -> RULE', '<absent>'),  # correct #3 (learn-a-1, src/app.py)
            ('a-mixed/empty', 5, '$.state', 'RULE', 'INSTINCT'),  # correct #5 (learn-a-1, status.md)
            ('a-mixed/empty', 7, '$.state', 'RULE', 'INSTINCT'),  # correct #6 (learn-a-2, report.md)
            ('a-mixed/empty', 8, '$.state', 'PATTERN', 'INSTINCT'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/empty', 9, '$.others changed.c3', 'PATTERN -> RULE', '<absent>'),  # correct #8 (learn-a-2, config.toml)
            ('a-mixed/empty', 12, '$.changed.c1', '<absent>', 'INSTINCT -> PATTERN'),  # end-session learn-a-2
            ('a-mixed/empty', 14, '$.state', 'RULE', 'PATTERN'),  # correct #12 (learn-a-3, readme.md)
            ('a-mixed/empty', 18, '$.changed.c1', '<absent>', 'PATTERN -> RULE'),  # end-session learn-a-3
            ('a-mixed/small', 2, '$.state', 'PATTERN', 'INSTINCT'),  # correct #2 (learn-a-1, email.txt)
            ('a-mixed/small', 2, '$.others changed.fixture 7', 'PATTERN -> RULE', '<absent>'),  # correct #2 (learn-a-1, email.txt)
            ('a-mixed/small', 2, '$.others changed.fixture 11', 'PATTERN -> RULE', '<absent>'),  # correct #2 (learn-a-1, email.txt)
            ('a-mixed/small', 3, '$.others changed.c1', 'PATTERN -> RULE', '<absent>'),  # correct #3 (learn-a-1, src/app.py)
            ('a-mixed/small', 5, '$.state', 'RULE', 'INSTINCT'),  # correct #5 (learn-a-1, status.md)
            ('a-mixed/small', 7, '$.state', 'RULE', 'INSTINCT'),  # correct #6 (learn-a-2, report.md)
            ('a-mixed/small', 8, '$.state', 'PATTERN', 'INSTINCT'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 9, '$.others changed.c3', 'PATTERN -> RULE', '<absent>'),  # correct #8 (learn-a-2, config.toml)
            ('a-mixed/small', 12, '$.changed.fixture 11', '<absent>', 'PATTERN -> RULE'),  # end-session learn-a-2
            ('a-mixed/small', 12, '$.changed.c1', '<absent>', 'INSTINCT -> PATTERN'),  # end-session learn-a-2
            ('a-mixed/small', 14, '$.state', 'RULE', 'PATTERN'),  # correct #12 (learn-a-3, readme.md)
            ('a-mixed/small', 18, '$.changed.c1', '<absent>', 'PATTERN -> RULE'),  # end-session learn-a-3
            ('b-one-per-session/empty', 3, '$.state', 'PATTERN', 'INSTINCT'),  # correct #2 (learn-b-2, notes/day2.md)
            ('c-stop-hook/small', 3, '$.state', 'PATTERN', 'INSTINCT'),  # correct #2 (learn-c-1, notes/turn2.md)
            ('c-stop-hook/small', 3, '$.others changed.fixture 7', 'PATTERN -> RULE', '<absent>'),  # correct #2 (learn-c-1, notes/turn2.md)
            ('c-stop-hook/small', 3, '$.others changed.fixture 11', 'PATTERN -> RULE', '<absent>'),  # correct #2 (learn-c-1, notes/turn2.md)
            ('c-stop-hook/small', 7, '$.state', 'RULE', 'INSTINCT'),  # correct #3 (learn-c-2, notes/turn3.md)
            ('c-stop-hook/small', 8, '$.changed.fixture 7', '<absent>', 'PATTERN -> RULE'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 11', '<absent>', 'PATTERN -> RULE'),  # end-session learn-c-2
            ('c-stop-hook/small', 9, '$.state', 'RULE', 'INSTINCT'),  # correct #4 (learn-c-2, notes/turn4.md)
            ('c-stop-hook/small', 13, '$.state', 'RULE', 'INSTINCT'),  # correct #5 (learn-c-3, notes/turn5.md)
            ('c-stop-hook/small', 14, '$.changed.c1', '<absent>', 'INSTINCT -> PATTERN'),  # end-session learn-c-3
            ('c-stop-hook/small', 15, '$.state', 'RULE', 'PATTERN'),  # correct #6 (learn-c-3, notes/turn6.md)
            ('d-fixture-lessons/small', 1, '$.others changed.fixture 7', 'PATTERN -> INSTINCT', '<absent>'),  # correct #1 (learn-d-1, src/files.py)
            ('d-fixture-lessons/small', 1, '$.others changed.fixture 8', 'PATTERN -> INSTINCT', '<absent>'),  # correct #1 (learn-d-1, src/files.py)
            ('d-fixture-lessons/small', 1, '$.others changed.fixture 9', 'PATTERN -> INSTINCT', '<absent>'),  # correct #1 (learn-d-1, src/files.py)
            ('d-fixture-lessons/small', 3, '$.others changed.fixture 7', 'INSTINCT -> PATTERN', '<absent>'),  # correct #2 (learn-d-2, config/app.yaml)
            ('d-fixture-lessons/small', 3, '$.others changed.fixture 11', 'PATTERN -> RULE', '<absent>'),  # correct #2 (learn-d-2, config/app.yaml)
            ('d-fixture-lessons/small', 4, '$.changed.fixture 7', '<absent>', 'PATTERN -> RULE'),  # end-session learn-d-2
            ('d-fixture-lessons/small', 4, '$.changed.fixture 11', '<absent>', 'PATTERN -> RULE'),  # end-session learn-d-2
            ('d-fixture-lessons/small', 5, '$.others changed.fixture 7', 'PATTERN -> INSTINCT', '<absent>'),  # correct #3 (learn-d-3, src/paths.py)
            ('d-fixture-lessons/small', 7, '$.others changed.fixture 7', 'INSTINCT -> PATTERN', '<absent>'),  # correct #4 (learn-d-4, deploy/values.yaml)
        ]),
    LearningDifference(
        'aging-per-session', 'deliberate',
        '0.6.0 ages every lesson on every /correct and /end-session and never restarts the '
        'count, so lessons become UNTESTABLE after 8 calls and are deleted 5 sweeps later; '
        'gradata ages once per session and restarts the count of a lesson reinforced or '
        'injected (brain-spec 8.3, 13 #4)'
        ,[
            ('a-mixed/empty', 12, '$.changed.c4', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-a-2
            ('a-mixed/empty', 17, '$.others changed.c8', 'INSTINCT -> UNTESTABLE', '<absent>'),  # correct #15 (learn-a-3, deploy.yaml)
            ('a-mixed/empty', 18, '$.changed.c4', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/empty', 18, '$.changed.c9', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-a-3
            ('a-mixed/empty', 18, '$.changed.c10', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 8, '$.others changed.fixture 9', 'PATTERN -> UNTESTABLE', '<absent>'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 8, '$.others changed.fixture 10', 'PATTERN -> UNTESTABLE', '<absent>'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 8, '$.others changed.fixture 12', 'PATTERN -> UNTESTABLE', '<absent>'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 8, '$.others changed.fixture 13', 'PATTERN -> UNTESTABLE', '<absent>'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 8, '$.others changed.fixture 14', 'INSTINCT -> UNTESTABLE', '<absent>'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 8, '$.others changed.fixture 15', 'INSTINCT -> UNTESTABLE', '<absent>'),  # correct #7 (learn-a-2, src/util.py)
            ('a-mixed/small', 12, '$.changed.fixture 8', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-a-2
            ('a-mixed/small', 12, '$.changed.c4', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-a-2
            ('a-mixed/small', 17, '$.others changed.c8', 'INSTINCT -> UNTESTABLE', '<absent>'),  # correct #15 (learn-a-3, deploy.yaml)
            ('a-mixed/small', 18, '$.changed.fixture 8', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.fixture 9', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.fixture 10', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.fixture 12', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.fixture 13', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.fixture 14', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.fixture 15', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.c4', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.c9', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-a-3
            ('a-mixed/small', 18, '$.changed.c10', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-a-3
            ('b-one-per-session/empty', 8, '$.changed.c1', 'INSTINCT -> UNTESTABLE', 'INSTINCT -> PATTERN'),  # end-session learn-b-4
            ('b-one-per-session/empty', 13, '$.state', 'UNTESTABLE', 'RULE'),  # correct #7 (learn-b-7, notes/day7.md)
            ('b-one-per-session/empty', 14, '$.changed.c1', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-b-7
            ('d-fixture-lessons/small', 8, '$.changed.fixture 7', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 8', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 9', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 10', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 12', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 13', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 14', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 8, '$.changed.fixture 15', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 12, '$.changed.fixture 8', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-d-6
        ]),
    LearningDifference(
        'killed-archived', 'deliberate',
        '0.6.0 drops KILLED lessons from lessons.md on every write; gradata keeps them, '
        'moving those it retires to lessons-archive.md (brain-spec 3.3, 13 #13)'
        ,[
            ('a-mixed/small', 1, '$.others changed.fixture 16', 'KILLED -> absent', '<absent>'),  # correct #1 (learn-a-1, notes.md)
            ('c-stop-hook/small', 1, '$.others changed.fixture 16', 'KILLED -> absent', '<absent>'),  # correct #1 (learn-c-1, notes/turn1.md)
            ('d-fixture-lessons/small', 1, '$.others changed.fixture 16', 'KILLED -> absent', '<absent>'),  # correct #1 (learn-d-1, src/files.py)
        ]),
    LearningDifference(
        'stop-hook-session', 'deliberate',
        "Claude Code's Stop hook ends the session after every turn: 0.6.0 sweeps on every "
        'call, so each turn ages every lesson and idle ones become UNTESTABLE, then vanish, '
        'within one working session; gradata sweeps once per session_id and answers later '
        'calls without changing anything (docs/compatibility.md, What a session is)'
        ,[
            ('c-stop-hook/small', 8, '$.changed.fixture 8', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 9', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 10', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 12', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 13', 'PATTERN -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 14', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 8, '$.changed.fixture 15', 'INSTINCT -> UNTESTABLE', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 12, '$.changed.fixture 8', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-2
            ('c-stop-hook/small', 14, '$.changed.fixture 9', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-3
            ('c-stop-hook/small', 14, '$.changed.fixture 10', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-3
            ('c-stop-hook/small', 14, '$.changed.fixture 12', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-3
            ('c-stop-hook/small', 14, '$.changed.fixture 13', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-3
            ('c-stop-hook/small', 14, '$.changed.fixture 14', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-3
            ('c-stop-hook/small', 14, '$.changed.fixture 15', 'UNTESTABLE -> absent', '<absent>'),  # end-session learn-c-3
        ]),
    LearningDifference(
        'comment-instruction', 'deliberate',
        "a rule the user writes as a code comment ('# Always prefer pathlib ...') fails "
        "0.6.0's check that an instruction starts with a verb or a capital, so its lesson "
        "gets the classifier's summary ('Behavioral/process correction (added: always)') and "
        "reinforces nothing; gradata takes the comment's sentence without its marker, which "
        'reinforces the lesson that says the same (docs/compatibility.md, /correct)'
        ,[
            ('d-fixture-lessons/small', 1, '$.decision', 'created c1', 'reinforced fixture 7'),  # correct #1 (learn-d-1, src/files.py)
            ('d-fixture-lessons/small', 1, '$.state', 'INSTINCT', 'PATTERN'),  # correct #1 (learn-d-1, src/files.py)
            ('d-fixture-lessons/small', 3, '$.decision', 'created c2', 'reinforced fixture 5'),  # correct #2 (learn-d-2, config/app.yaml)
            ('d-fixture-lessons/small', 3, '$.state', 'INSTINCT', 'RULE'),  # correct #2 (learn-d-2, config/app.yaml)
            ('d-fixture-lessons/small', 5, '$.decision', 'reinforced c1', 'reinforced fixture 7'),  # correct #3 (learn-d-3, src/paths.py)
            ('d-fixture-lessons/small', 5, '$.state', 'PATTERN', 'RULE'),  # correct #3 (learn-d-3, src/paths.py)
            ('d-fixture-lessons/small', 6, '$.changed.c1', 'PATTERN -> RULE', '<absent>'),  # end-session learn-d-3
            ('d-fixture-lessons/small', 7, '$.decision', 'reinforced c2', 'reinforced fixture 5'),  # correct #4 (learn-d-4, deploy/values.yaml)
            ('d-fixture-lessons/small', 7, '$.state', 'PATTERN', 'RULE'),  # correct #4 (learn-d-4, deploy/values.yaml)
            ('d-fixture-lessons/small', 8, '$.changed.c2', 'PATTERN -> RULE', '<absent>'),  # end-session learn-d-4
            ('d-fixture-lessons/small', 9, '$.decision', 'reinforced c1', 'reinforced fixture 7'),  # correct #5 (learn-d-5, src/walk.py)
            ('d-fixture-lessons/small', 11, '$.decision', 'reinforced c2', 'reinforced fixture 5'),  # correct #6 (learn-d-6, ci/pipeline.yml)
        ]),
    LearningDifference(
        'convergence-gate', 'deliberate',
        "once a category's corrections per session have converged (brain-spec 9: three "
        "sessions with one correction each), 0.6.0's /correct stops extracting an instruction "
        "and gives the lesson the edit classifier's label ('Content change (cut: ...)', "
        'brain-spec 6.9 step 8); such a label is not a rule a model can follow and matches no '
        'earlier lesson, so 0.6.0 starts a new lesson where gradata, which always extracts the '
        'instruction, reinforces the one the user has been teaching; the later decisions follow '
        'from it (the same lesson graduates in the same session, under its real instruction)'
        ,[
            ('b-one-per-session/empty', 5, '$.decision', 'created c3', 'reinforced c1'),  # correct #3 (learn-b-3, notes/day3.md)
            ('b-one-per-session/empty', 9, '$.decision', 'reinforced c3', 'reinforced c1'),  # correct #5 (learn-b-5, notes/day5.md)
            ('b-one-per-session/empty', 10, '$.changed.c3', 'PATTERN -> RULE', '<absent>'),  # end-session learn-b-5
            ('b-one-per-session/empty', 10, '$.changed.c1', '<absent>', 'PATTERN -> RULE'),  # end-session learn-b-5
            ('b-one-per-session/empty', 11, '$.decision', 'reinforced c3', 'reinforced c1'),  # correct #6 (learn-b-6, notes/day6.md)
            ('b-one-per-session/empty', 15, '$.decision', 'created c8', 'reinforced c1'),  # correct #8 (learn-b-8, notes/day8.md)
            ('b-one-per-session/empty', 15, '$.state', 'INSTINCT', 'RULE'),  # correct #8 (learn-b-8, notes/day8.md)
            ('b-one-per-session/empty', 17, '$.decision', 'reinforced c3', 'reinforced c1'),  # correct #9 (learn-b-9, notes/day9.md)
            ('b-one-per-session/empty', 19, '$.decision', 'reinforced c8', 'reinforced c1'),  # correct #10 (learn-b-10, notes/day10.md)
            ('b-one-per-session/empty', 19, '$.state', 'PATTERN', 'RULE'),  # correct #10 (learn-b-10, notes/day10.md)
            ('b-one-per-session/empty', 20, '$.changed.c8', 'PATTERN -> RULE', '<absent>'),  # end-session learn-b-10
        ]),
]
