"""Every difference the comparison tolerates, in one place.

Two kinds:

* ``nondeterministic``: what 0.6.0 does not reproduce even against itself (brain-spec section 12):
  these masks are what makes the Python-against-Python self-check come out clean;
* ``deliberate``: where gradata departs from 0.6.0 on purpose (brain-spec section 13 fixes);
  docs/compatibility.md lists the same entries for users.

Each entry is a normaliser, never a skipped route: it rewrites one field of an answer (or of a
file) into a form both daemons must then agree on exactly. ``applies_to`` says whose answers it
rewrites: ``both``, or ``reference`` (0.6.0's answer is turned into what gradata should say; in
the self-check both sides are the reference, so it runs on both).
"""

import ast
import hashlib

MASKED = "<masked>"
REFUSED = {"status": "refused", "body": "<refused: no answer from 0.6.0, a JSON 400 from gradata>"}


class Difference:
    def __init__(self, ident, kind, routes, path, reason, applies_to, fn):
        self.ident = ident
        self.kind = kind
        self.routes = routes.split(", ")
        self.path = path
        self.reason = reason
        self.applies_to = applies_to
        self.fn = fn


# ---- normalisers: fn(step, answer, ctx) -> answer; answer is {"status": .., "body": ..} ----

def _body_key(key, value=MASKED):
    def fn(step, answer, ctx):
        body = answer.get("body")
        if isinstance(body, dict) and key in body:
            body = dict(body)
            body[key] = value
            answer = dict(answer, body=body)
        return answer
    return fn


def canonical_injection(text, rules):
    """injection_text with the in-tier order taken out: header and footer exactly, the set of
    rule lines, and whether some split puts every line before it in the RULE tier and every line
    after it in the PATTERN tier (a merged line may belong to either tier of its members)."""
    if not isinstance(text, str) or not text:
        return text
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    middle = lines[1:-1]
    tier_of = {}
    tiers_of_category = {}
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, dict):
            tier_of[rule.get("instruction")] = rule.get("tier")
            tiers_of_category.setdefault(rule.get("category"), set()).add(rule.get("tier"))

    def candidates(line):
        instruction = line[2:] if line.startswith("- ") else line
        if instruction in tier_of:
            return {tier_of[instruction]}
        return tiers_of_category.get(instruction.split(":", 1)[0], set())

    cands = [candidates(line) for line in middle]
    tiers_ordered = any(
        all("RULE" in c for c in cands[:cut]) and all("PATTERN" in c for c in cands[cut:])
        for cut in range(len(middle) + 1)
    )
    return {"first line": lines[0], "last line": lines[-1],
            "rule lines (order within a tier ignored)": sorted(middle),
            "RULE block before PATTERN block": tiers_ordered}


def _injection(step, answer, ctx):
    body = answer.get("body")
    if isinstance(body, dict) and "injection_text" in body:
        body = dict(body)
        body["injection_text"] = canonical_injection(body["injection_text"], body.get("rules"))
        answer = dict(answer, body=body)
    return answer


def _round_floats(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_floats(v) for v in value]
    return value


def canonical_recall(context):
    """brain-recall's context: one Python dict repr per line, compared as values with floats to
    nine significant digits (bm25 may differ in the last bits between SQLite builds)."""
    if not isinstance(context, str) or not context:
        return context
    out = []
    for line in context.split("\n"):
        try:
            out.append(_round_floats(ast.literal_eval(line)))
        except (ValueError, SyntaxError):
            out.append({"<unparsed line>": line})
    return out


def _recall(step, answer, ctx):
    body = answer.get("body")
    if isinstance(body, dict) and "context" in body:
        answer = dict(answer, body=dict(body, context=canonical_recall(body["context"])))
    return answer


def _refused_reference(step, answer, ctx):
    if step.get("bad") and answer.get("status") is None:
        return dict(REFUSED)
    return answer


def _refused_any(step, answer, ctx):
    body = answer.get("body")
    if (step.get("bad") and answer.get("status") == 400 and isinstance(body, dict)
            and isinstance(body.get("error"), str) and body["error"]):
        return dict(REFUSED)
    return answer


def _unlogged_reference(step, answer, ctx):
    if step.get("unlogged") and answer.get("status") == 200 and answer.get("body") == {"logged": True}:
        return dict(REFUSED)
    return answer


def _unlogged_any(step, answer, ctx):
    if step.get("unlogged") and answer.get("status") == 200 and answer.get("body") == {"logged": False}:
        return dict(REFUSED)
    return _refused_any(dict(step, bad=True), answer, ctx) if step.get("unlogged") else answer


def _drop_keys(*keys):
    def fn(step, answer, ctx):
        body = answer.get("body")
        if isinstance(body, dict) and any(k in body for k in keys):
            answer = dict(answer, body={k: v for k, v in body.items() if k not in keys})
        return answer
    return fn


def _unknown_route(step, answer, ctx):
    body = answer.get("body")
    if answer.get("status") in (404, 405) and isinstance(body, dict) and isinstance(body.get("error"), str):
        return {"status": "404 or 405", "body": "<an error naming the path or method>"}
    return answer


def apply_form_id(category, description):
    digest = hashlib.sha256(f"{category}:{description}".encode("utf-8")).hexdigest()[:8]
    return f"{category}:{digest}"


def _enforce_ids(step, answer, ctx):
    body = answer.get("body")
    if not (isinstance(body, dict) and isinstance(body.get("violations"), list)):
        return answer
    fixed = []
    for v in body["violations"]:
        if isinstance(v, dict) and isinstance(v.get("rule_id"), str) and ":" in v["rule_id"]:
            category = v["rule_id"].split(":", 1)[0]
            description = v.get("description", "")
            old = f"{category}:{hashlib.sha256(description.encode('utf-8')).hexdigest()[:8]}"
            if v["rule_id"] == old:
                v = dict(v, rule_id=apply_form_id(category, description))
        fixed.append(v)
    return dict(answer, body=dict(body, violations=fixed))


def _health_ttl(step, answer, ctx):
    body = answer.get("body")
    if isinstance(body, dict) and isinstance(body.get("rules_count"), int):
        answer = dict(answer, body=dict(body, rules_count=body["rules_count"] - len(ctx["stale_rules"])))
    return answer


def _enforce_ttl(step, answer, ctx):
    body = answer.get("body")
    if not (isinstance(body, dict) and isinstance(body.get("violations"), list)):
        return answer
    stale = {d for _, d in ctx["stale_rules"]}
    kept = [v for v in body["violations"] if not (isinstance(v, dict) and v.get("description") in stale)]
    return dict(answer, body=dict(body, violations=kept, **{"pass": not kept}))


def _duration(step, answer, ctx):
    body = answer.get("body")
    duration = body.get("duration_ms") if isinstance(body, dict) else None
    if isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0:
        answer = dict(answer, body=dict(body, duration_ms="<a whole number of milliseconds>"))
    return answer


def _string_tasks_reference(step, answer, ctx):
    body = answer.get("body")
    tasks = step.get("body", {}).get("tasks") if step.get("string_tasks") else None
    if (isinstance(tasks, str) and answer.get("status") == 200 and isinstance(body, dict)
            and body.get("completed") == [] and body.get("failed") == list(tasks)):
        return dict(REFUSED)
    return answer


POST_ROUTES = ["/apply-rules", "/detect", "/enforce-rules", "/tag-delta", "/brain-recall",
               "/checkpoint", "/log-event", "/maintain"]
ALL_POSTS = ", ".join("POST " + r for r in POST_ROUTES)

DIFFERENCES = [
    Difference("uptime", "nondeterministic", "GET /health", "$.uptime_seconds",
               "time since start", "both", _body_key("uptime_seconds")),
    Difference("brain-dir", "nondeterministic", "GET /health", "$.brain_dir",
               "each daemon serves its own copy of the brain", "both", _body_key("brain_dir")),
    Difference("sdk-version", "deliberate", "GET /health", "$.sdk_version",
               "0.6.0 reports a stale \"0.5.0\"; gradata reports its own version", "both",
               _body_key("sdk_version")),
    Difference("health-extra-fields", "deliberate", "GET /health",
               "$.version, $.data_dir, $.queue, $.sync, $.writes",
               "gradata's own health fields (outbox, sync state) come beside 0.6.0's", "both",
               _drop_keys("version", "data_dir", "queue", "sync", "writes")),
    Difference("ttl-health", "deliberate", "GET /health", "$.rules_count",
               "RULEs idle for 50 sessions or more are not counted as RULEs (0.6.0 applies that TTL"
               " view only in /apply-rules)", "reference", _health_ttl),
    Difference("in-tier-order", "nondeterministic", "POST /apply-rules", "$.injection_text",
               "0.6.0 orders the lines inside a tier at random per process; gradata uses a fixed"
               " order: header, footer, the set of lines and the RULE-then-PATTERN blocks compare",
               "both", _injection),
    Difference("recall-floats", "nondeterministic", "POST /brain-recall", "$.context",
               "bm25 scores compared to nine significant digits, as values, not as repr text",
               "both", _recall),
    Difference("enforce-rule-id", "deliberate", "POST /enforce-rules", "$.violations[*].rule_id",
               "one rule id format: 0.6.0 hashes the description alone here, gradata uses"
               " /apply-rules' CATEGORY:sha256(\"CATEGORY:description\")", "reference", _enforce_ids),
    Difference("ttl-enforce", "deliberate", "POST /enforce-rules", "$.violations, $.pass",
               "RULEs idle for 50 sessions or more are not enforced, as they are not injected",
               "reference", _enforce_ttl),
    Difference("bad-input-400", "deliberate", ALL_POSTS, "$",
               "bad input (invalid JSON, a non-object body, a field of the wrong type): 0.6.0 closes"
               " the connection without an answer, gradata answers 400 {\"error\": ...}",
               "reference", _refused_reference),
    Difference("bad-input-400-shape", "deliberate", ALL_POSTS, "$",
               "the text of a 400's error message is gradata's own", "both", _refused_any),
    Difference("outbox-fields", "deliberate", "POST /log-event, POST /checkpoint",
               "$.event_id, $.queued",
               "gradata also names the event it queued for the cloud, and says whether the outbox"
               " took it", "both", _drop_keys("event_id", "queued")),
    Difference("recall-structured", "deliberate", "POST /brain-recall", "$.relevant_corrections",
               "0.6.0 always answers []; gradata lists the recalled hits as objects (the context"
               " text is compared exactly)", "both", _body_key("relevant_corrections")),
    Difference("unknown-route", "deliberate", "GET /nope, POST /health", "$",
               "a path that does not exist is a 404 and a known path with the wrong method a 405,"
               " each with gradata's JSON error; 0.6.0 answers 404 {\"error\": \"not found\"} to both",
               "both", _unknown_route),
    Difference("logged-false", "deliberate", "POST /log-event", "$.logged",
               "0.6.0 says logged: true when it logged nothing (non-object data, non-string"
               " event_type); gradata says logged: false, or refuses the input with a 400",
               "reference", _unlogged_reference),
    Difference("logged-false-shape", "deliberate", "POST /log-event", "$.logged",
               "logged: false and a 400 are both an honest refusal", "both", _unlogged_any),
    Difference("maintain-duration", "nondeterministic", "POST /maintain", "$.duration_ms",
               "wall time of the tasks; compared as a whole number of milliseconds", "both",
               _duration),
    Difference("maintain-string-tasks", "deliberate", "POST /maintain", "$",
               "0.6.0 runs each character of a string `tasks` as a task name, all failed; gradata"
               " refuses it with 400 {\"error\": ...}", "reference", _string_tasks_reference),
]

# Masks on the files the routes change (brain-spec section 12, side effects).
FILE_MASKS = [
    ("events table", "ts, valid_from", "times of writing"),
    ("events.jsonl", "ts, valid_from", "times of writing"),
]


def route_of(step):
    return f"{step['method']} {step['path']}"


def normalise(step, answer, ctx, reference):
    """Applies every difference that concerns this step's route to one answer."""
    route = route_of(step)
    for d in DIFFERENCES:
        if route not in d.routes:
            continue
        if d.applies_to == "reference" and not reference:
            continue
        answer = d.fn(step, answer, ctx)
    return answer


def table():
    """The list as text, for the report and README."""
    rows = []
    for d in DIFFERENCES:
        routes = "every POST route" if d.routes == ALL_POSTS.split(", ") else ", ".join(d.routes)
        rows.append(f"  [{d.kind}] {d.ident}: {routes} {d.path} ({d.applies_to}): {d.reason}")
    rows.append("  [tolerated] key order: objects whose keys differ only in order are printed as"
                " notes, not failures (JSON objects are unordered; the plugin parses every answer)")
    for name, fields, why in FILE_MASKS:
        rows.append(f"  [nondeterministic] {name}: {fields} masked: {why}")
    return "\n".join(rows)
