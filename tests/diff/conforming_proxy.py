#!/usr/bin/env python3
"""A stand-in for gradata that the harness must find clean: 0.6.0 with the listed fixes.

    tests/diff/conforming_proxy.py serve     (started by diff.py in place of the gradata binary)

It takes gradata's environment (GRADATA_DATA_DIR, GRADATA_LISTEN), runs the Python daemon 0.6.0
of target/diff-venv on that brain on a port of its own, and answers every request by forwarding
it and then applying, in our own words, the deliberate differences of differences.py: a JSON 400
for input 0.6.0 drops, its own sdk_version, the TTL view in /health and /enforce-rules, one rule
id format, logged: false when nothing was logged, a 400 for a string `tasks` in /maintain.
Everything else, files included, is 0.6.0's.

So a run against it checks the harness end to end: the reference-side rewrites of
differences.py and an implementation that makes those fixes meet exactly. It is not gradata and
proves nothing about gradata.
"""

import hashlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import daemons  # noqa: E402
import fixtures  # noqa: E402

PYTHON = os.path.join(HERE, "..", "..", "target", "diff-venv", "bin", "python")


def apply_form(category, description):
    return f"{category}:{hashlib.sha256(f'{category}:{description}'.encode()).hexdigest()[:8]}"


class Proxy(http.server.BaseHTTPRequestHandler):
    upstream_port = 0
    brain = ""

    def log_message(self, *args):
        pass

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        resp = daemons.call(self.upstream_port, self.command, self.path,
                            raw=raw if self.command != "GET" else None)
        if resp.status is None:
            return self._send(400, {"error": "invalid request"})
        body = resp.body
        stale = fixtures.stale_rules(self.brain)
        if self.path == "/health" and isinstance(body, dict) and "rules_count" in body:
            body["sdk_version"] = "conforming-proxy"
            body["rules_count"] -= len(stale)
        elif self.path == "/enforce-rules" and isinstance(body, dict) and "violations" in body:
            stale_descriptions = {d for _, d in stale}
            kept = []
            for v in body["violations"]:
                if v["description"] in stale_descriptions:
                    continue
                kept.append(dict(v, rule_id=apply_form(v["rule_id"].split(":")[0], v["description"])))
            body["violations"], body["pass"] = kept, not kept
        elif self.path == "/log-event":
            request = json.loads(raw) if raw else {}
            data, event_type = request.get("data"), request.get("event_type", "unknown")
            if (data and not isinstance(data, dict)) or not isinstance(event_type, str):
                body = {"logged": False}
        elif self.path == "/maintain":
            request = json.loads(raw) if raw else {}
            if isinstance(request.get("tasks"), str):
                return self._send(400, {"error": "tasks must be a list of task names"})
        return self._send(resp.status, body)

    def _send(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _forward


def main():
    if sys.argv[1:] == ["--version"]:
        print("conforming-proxy")
        return
    brain = os.environ["GRADATA_DATA_DIR"]
    host, port = os.environ["GRADATA_LISTEN"].rsplit(":", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADATA_")}
    upstream = daemons.free_port()
    child = subprocess.Popen([os.path.abspath(PYTHON), "-m", "gradata.daemon", "--brain-dir", brain,
                              "--port", str(upstream)], env=env, stdin=subprocess.DEVNULL)

    def stop(*_):
        child.kill()
        child.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    # Wait for 0.6.0 before listening, so the harness's readiness probe means both are up.
    deadline = time.monotonic() + daemons.STARTUP_TIMEOUT
    while not isinstance(daemons.call(upstream, "GET", "/health").status, int):
        if time.monotonic() > deadline or child.poll() is not None:
            stop()
        time.sleep(0.05)  # polling a port that is not open yet: nothing to wait on
    Proxy.upstream_port, Proxy.brain = upstream, brain
    server = http.server.ThreadingHTTPServer((host, int(port)), Proxy)
    server.serve_forever()


if __name__ == "__main__":
    main()
