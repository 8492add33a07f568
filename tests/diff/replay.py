"""A whole plugin session, replayed in the order the plugin's hooks make their calls.

The calls and what each hook shows the user are described in tests/diff/README.md. Here each
hook is reduced to the requests it sends and to what it prints from the answers (its stdout,
which Claude Code adds to the model's context, and its stderr lines, which the user sees). The
"user view" of a session against gradata must equal the one against 0.6.0, with the in-tier
order of injected rules and the listed differences normalised as in differences.py; and the
brain's event log must be filled the same way.

The replay also checks that 0.6.0's own view is not empty (rules injected, a violation warned,
context recalled, events logged), so a broken fixture cannot make the comparison pass vacuously.
"""

import os
import re
import shutil

import compare
import differences
import fixtures

SESSION = "replay-0001"
# What the replay compares, for the pass/fail count: the hooks' views and the three files.
CHECKED_ITEMS = 8 + 3
EDIT_PATH = "src/config.py"
EDIT_OLD = "def load(path):\n    return open(path).read()\n"
EDIT_NEW = ('def load_config(path: Path) -> dict:\n'
            '    """Load the YAML config with pathlib."""\n'
            '    log.debug("token=%s", token)  # paste tokens into logs while debugging\n'
            '    return yaml.safe_load(path.read_text())\n')


# The words that make the prompt hook follow /apply-rules with /detect (it checks them itself,
# case-insensitively, as whole words).
PUSHBACK = re.compile(r"\b(that's wrong|not right|stop doing|don't|you forgot|you missed)\b", re.I)


def user_prompt(daemon, prompt):
    """The prompt hook: nothing for prompts under 5 characters; rules; /detect on pushback."""
    if len(prompt) < 5:
        return {"skipped": True}
    answer = daemon.call("POST", "/apply-rules", {"prompt": prompt, "session_id": SESSION})
    shown = _injection_view(answer)
    if PUSHBACK.search(prompt):
        shown["detect answer"] = daemon.call("POST", "/detect",
                                             {"user_message": prompt, "session_id": SESSION})
    return shown


class Client:
    """The plugin's view of the daemon: the parsed JSON of an answer, or nothing (no answer, or
    not JSON), after the normalisers of differences.py (so the TTL view, the rule-id format and
    the in-tier order are handled exactly as in the request scenario)."""

    def __init__(self, daemon, ctx, reference):
        self.daemon, self.ctx, self.reference = daemon, ctx, reference

    def call(self, method, path, body=None):
        step = {"method": method, "path": path, "body": body}
        answer = differences.normalise(step, self.daemon.call(method, path, body).as_dict(),
                                       self.ctx, self.reference)
        parsed = answer.get("body")
        return parsed if answer.get("status") is not None and isinstance(parsed, dict) else None


def session(daemon):
    """Runs the session through a Client; returns the user view: one entry per hook, in order."""
    view = []

    def hook(name, shown):
        view.append({"hook": name, **shown})

    # SessionStart: the status skill's health probe, then rules for an empty prompt (3 s).
    health = daemon.call("GET", "/health")
    start = daemon.call("POST", "/apply-rules", {"prompt": "", "session_id": SESSION})
    hook("session-start", _injection_view(start, banner=True, health=health))

    # UserPromptSubmit, a coding prompt (500 ms): rules only, no pushback words.
    hook("user-prompt", user_prompt(
        daemon, "Fix the bug in src/config.py and load the YAML config with pathlib"))

    # PreToolUse on an Edit (500 ms each, in parallel in the plugin): recall and enforcement.
    recall = daemon.call("POST", "/brain-recall", {
        "file_path": EDIT_PATH, "content_preview": EDIT_NEW[:500], "session_id": SESSION})
    enforce = daemon.call("POST", "/enforce-rules", {
        "content": EDIT_NEW, "file_path": EDIT_PATH, "session_id": SESSION})
    hook("pre-tool", {
        "stdout (recalled context)": recall.get("context") if isinstance(recall, dict) else None,
        "stderr (violation warnings)": [
            f"[gradata] Rule violation: {v.get('description')}"
            for v in (enforce.get("violations") or [] if isinstance(enforce, dict) else [])
            if isinstance(v, dict)],
    })

    # PostToolUse: the edit's category and tags, then the log events the plugin sends for a
    # commit, a finished sub-agent and a failing MCP tool (500 ms each; answers unused).
    tags = daemon.call("POST", "/tag-delta", {
        "file_path": EDIT_PATH, "old_content": EDIT_OLD, "new_content": EDIT_NEW})
    logged = []
    for event_type, data in (
            ("commit", {"command": "git commit -m 'load config with pathlib'"}),
            ("agent_complete", {"agent_type": "general-purpose", "description": "find callers",
                                "output_length": 812}),
            ("tool_failure", {"tool": "mcp__tracker__create", "error": "timeout after 30s"})):
        logged.append(daemon.call("POST", "/log-event", {
            "event_type": event_type, "data": data, "session_id": SESSION}))
    hook("post-tool", {"tag-delta answer": tags, "log-event answers": logged})

    # UserPromptSubmit with pushback: rules, then /detect since the message matches the
    # hook's own pushback words; then a prompt too short to send anything.
    hook("user-prompt (pushback)", user_prompt(
        daemon, "That's wrong, you forgot the tests. Make sure the config loader is covered"))
    hook("user-prompt (short)", user_prompt(daemon, "ok"))

    # PreCompact (2 s): a checkpoint; the hook reports pending lessons when there are some.
    cp = daemon.call("POST", "/checkpoint", {"session_id": SESSION, "reason": "pre_compact"})
    pending = cp.get("pending_lessons") if isinstance(cp, dict) else None
    hook("pre-compact", {"stderr": [f"[gradata] Checkpoint: {pending} pending lessons saved"]
                         if isinstance(pending, int) and pending > 0 else []})

    # What the status skill shows at the end: the session is known to the daemon.
    health = daemon.call("GET", "/health")
    hook("status", {"active_sessions": health.get("active_sessions") if isinstance(health, dict) else None})
    return view


def _injection_view(answer, banner=False, health=None):
    rules = answer.get("rules") if isinstance(answer, dict) else None
    text = answer.get("injection_text") if isinstance(answer, dict) else None
    shown = {"stdout (injected rules)": text or ""}
    if banner:
        if answer is None:
            shown["stderr"] = ["[gradata] Daemon not available"]
        else:
            shown["stderr"] = [f"[gradata] Injecting {len(rules or [])} rules"]
        if isinstance(health, dict):
            shown["health counts"] = {k: health.get(k) for k in ("rules_count", "lessons_count")}
    return shown


def vacuity_problems(view, events_added):
    """What must be there in 0.6.0's own session for the comparison to mean anything."""
    by = {v["hook"]: v for v in view}
    problems = []
    if by["session-start"].get("stderr") in (None, ["[gradata] Injecting 0 rules"]):
        problems.append("no rules injected at session start")
    if not by["pre-tool"]["stderr (violation warnings)"]:
        problems.append("no violation warned before the edit")
    if not by["pre-tool"]["stdout (recalled context)"]:
        problems.append("no context recalled before the edit")
    types = {e.get("type") for e in events_added}
    if "detect answer" not in by["user-prompt (pushback)"]:
        problems.append("the pushback prompt did not reach /detect")
    for wanted in ("IMPLICIT_FEEDBACK", "COMMIT", "AGENT_COMPLETE", "TOOL_FAILURE", "CHECKPOINT"):
        if wanted not in types:
            problems.append(f"no {wanted} event in the brain's log")
    return problems


class Replay:
    """The session on copies of the small brain: 0.6.0 twice (the self-check), then gradata."""

    def __init__(self, work):
        self.dir = os.path.join(work, "replay")
        self.source = os.path.join(self.dir, "fixture")
        fixtures.write("small", self.source)
        self.ctx = {"stale_rules": fixtures.stale_rules(self.source)}
        self.views = {}

    def _play(self, tag, factory):
        brain = os.path.join(self.dir, tag)
        shutil.copytree(self.source, brain)
        home = os.path.join(self.dir, f"home-{tag}")
        os.makedirs(home)
        daemon = factory.start(brain, home, os.path.join(self.dir, f"{tag}.log"))
        try:
            self.views[tag] = session(Client(daemon, self.ctx, reference=tag != "gradata"))
        finally:
            daemon.stop(daemon.stop_signal)
        return brain

    def self_check(self, python):
        """0.6.0 twice: the views and event logs must agree, and must not be empty."""
        a, b = self._play("python-a", python), self._play("python-b", python)
        found = []
        added = compare.events_rows(a)[len(compare.events_rows(self.source)):]
        for problem in vacuity_problems(self.views["python-a"], added):
            found.append(compare.Mismatch("replay", "0.6.0 session", "fixture", problem,
                                          "expected", "missing"))
        found += view_mismatches(self.views["python-a"], self.views["python-b"])
        found += compare.compare_files("replay", a, b, "event log")
        print("-- [replay] one plugin session against 0.6.0, twice")
        return found

    def versus(self, gradata):
        """gradata against the first 0.6.0 session."""
        g = self._play("gradata", gradata)
        found = view_mismatches(self.views["python-a"], self.views["gradata"])
        found += compare.compare_files("replay", os.path.join(self.dir, "python-a"), g, "event log")
        print("-- [replay] one plugin session against gradata")
        return found


def view_mismatches(left, right):
    """The differences between two user views, each named after the hook it belongs to."""
    found = []
    for n, (a, b) in enumerate(zip(left, right)):
        for path, x, y in compare.json_diff(a, b):
            found.append(compare.Mismatch("replay", "user view", f"hook {a['hook']}",
                                          f"$[{n}]{path[1:]}", x, y))
    return found
