"""The request sequence sent to both daemons, the same for every brain.

Each step: method, path, and a JSON body (or ``raw`` bytes). ``bad`` marks input 0.6.0 cannot
handle (it drops the connection; gradata refuses it with a 400); ``unlogged`` marks a
/log-event that 0.6.0 acknowledges without logging anything. Inputs that only exercise a
deliberate fix of 0.6.0's matching (the /detect phrase boundary, brain-spec section 13 #21)
are left to gradata's own tests: here they would compare a fix, not a port.
"""

from differences import POST_ROUTES


def post(path, body, **flags):
    return dict(method="POST", path=path, body=body, **flags)


def get(path):
    return dict(method="GET", path=path, body=None)


EMAIL_PROMPT = "draft a follow-up email to the prospect about the renewal"
CODE_PROMPT = "Write a Python function that loads the YAML config"

STEPS = [
    get("/health"),
    # /apply-rules: empty request, the session-start call, prompts of every mode and task type.
    post("/apply-rules", {}),
    post("/apply-rules", {"prompt": "", "session_id": "sess-a"}),
    post("/apply-rules", {"prompt": CODE_PROMPT, "session_id": "sess-a",
                          "context": {"task_type": "code"}}),
    post("/apply-rules", {"prompt": EMAIL_PROMPT, "session_id": "sess-a"}),
    post("/apply-rules", {"prompt": "fix the bug in src/lib.rs, the API endpoint returns 500",
                          "session_id": "sess-b", "context": {"agent_type": "reviewer"}}),
    post("/apply-rules", {"prompt": "hello there", "context": {"agent_type": "reviewer"}}),
    post("/apply-rules", {"prompt": "update the docker settings in .env and the CI/CD yaml",
                          "context": {"task_type": "config"}}),
    post("/apply-rules", {"prompt": "research and compare the three vendors' pricing",
                          "session_id": "sess-c"}),
    post("/apply-rules", {"prompt": "explain the architecture in the README guide",
                          "context": {"task_type": "document", "agent_type": "planner"}}),
    post("/apply-rules", {"prompt": None, "session_id": "sess-a"}),
    # /detect: signals of every kind, none, with and without a session.
    post("/detect", {"user_message": "Are you sure? That's wrong, you forgot to check the totals. "
                                     "Make sure the numbers add up.",
                     "session_id": "sess-a", "recent_fired_rules": ["CODE:d5aaa5cd"]}),
    post("/detect", {"user_message": "looks good, thanks"}),
    post("/detect", {"user_message": "what about the tests? did you check src/ and fix the bug?",
                     "session_id": "sess-b"}),
    post("/detect", {"user_message": "I feel like this is off. Is that right? Like I said, "
                                     "remember to reply to the email"}),
    post("/detect", {}),
    # /enforce-rules: violations of several rules, the stale rule, none, empty.
    post("/enforce-rules", {"content": "Use em dashes and markdown headers; commit generated "
                                       "reference docs; paste tokens into logs"}),
    post("/enforce-rules", {"content": "plain prose, nothing to see"}),
    post("/enforce-rules", {"content": ""}),
    post("/enforce-rules", {"content": "open client emails with small talk about the weather"}),
    # /tag-delta: each tag and category rule.
    post("/tag-delta", {"file_path": "src/app.ts", "old_content": "a\n",
                        "new_content": "a\nimport x from 'x'\ntest('x')\n// fix bug\nb\n"}),
    post("/tag-delta", {"file_path": "cfg/app.yaml", "old_content": "a\nb\nc\nd\n", "new_content": "a\n"}),
    post("/tag-delta", {"file_path": "Makefile", "old_content": "x", "new_content": "y"}),
    post("/tag-delta", {"file_path": "notes.md", "old_content": "", "new_content": "new"}),
    post("/tag-delta", {"file_path": "x.env", "old_content": "old", "new_content": ""}),
    post("/tag-delta", {"file_path": ".env", "old_content": "same", "new_content": "same"}),
    post("/tag-delta", {}),
    # /brain-recall: each query mode, and nothing to search.
    post("/brain-recall", {"file_path": "src/config.py", "content_preview": "pathlib config loader"}),
    post("/brain-recall", {"content_preview": "linter"}),
    post("/brain-recall", {"content_preview": "how do we handle the password in settings"}),
    post("/brain-recall", {"content_preview": "\"renewal quote\""}),
    post("/brain-recall", {"content_preview": "Review the Release notes before merging"}),
    post("/brain-recall", {"content_preview": "   "}),
    post("/brain-recall", {}),
    # /checkpoint and /log-event: what lands in the event log.
    post("/checkpoint", {"session_id": "sess-a", "reason": "pre_compact"}),
    post("/checkpoint", {}),
    post("/log-event", {"event_type": "commit", "data": {"command": "git commit -m 'x'"},
                        "session_id": "sess-a"}),
    post("/log-event", {"event_type": "agent_complete",
                        "data": {"agent_type": "general-purpose", "description": "search",
                                 "output_length": 1200}}),
    post("/log-event", {"event_type": "correction", "data": {"category": "tone"}}),
    post("/log-event", {"event_type": "Delta_Tag", "data": {"prospect": "acme", "channel": "email"}}),
    post("/log-event", {"event_type": "output", "data": {"output_type": "Email Draft"}}),
    post("/log-event", {}),
    post("/log-event", {"event_type": "x", "data": [1, 2]}, unlogged=True),
    post("/log-event", {"event_type": 5, "data": {}}, unlogged=True),
    # /maintain: the Stop hook's call, every task with an unknown one, the default; then recall
    # again, which gradata's index rebuild (0.6.0 rebuilds nothing) must leave as it was.
    post("/maintain", {"tasks": ["manifest", "patterns"]}),
    post("/maintain", {"tasks": ["fts_rebuild", "bogus", "patterns", "manifest"]}),
    post("/maintain", {}),
    post("/maintain", {"tasks": []}),
    post("/brain-recall", {"content_preview": "linter"}),
    post("/brain-recall", {"file_path": "src/config.py", "content_preview": "pathlib config loader"}),
]

# Bad input, per route: invalid JSON and a non-object body everywhere, then wrong field types.
for route in POST_ROUTES:
    STEPS.append(dict(method="POST", path=route, raw=b"{not json", bad=True))
    STEPS.append(dict(method="POST", path=route, raw=b"[1, 2]", bad=True))
STEPS += [
    post("/apply-rules", {"prompt": 5}, bad=True),
    post("/apply-rules", {"prompt": "x", "context": "code"}, bad=True),
    post("/detect", {"user_message": 5}, bad=True),
    post("/enforce-rules", {"content": 5}, bad=True),
    post("/tag-delta", {"file_path": 5}, bad=True),
    post("/brain-recall", {"content_preview": 5}, bad=True),
    # 0.6.0 runs each character of a string as a task name (all fail); gradata refuses it.
    post("/maintain", {"tasks": "manifest"}, bad=True, string_tasks=True),
    # Unknown paths and methods answer alike.
    get("/nope"),
    post("/health", {}),
    get("/health"),
]
