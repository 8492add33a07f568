#!/usr/bin/env python3
"""The Gradata ingest API as the end-to-end tests need it, run inside the test container.

Listens on 127.0.0.1:9999. Every POST other than /control is one delivered event: it waits the
configured latency, answers the configured status, and, for a 2xx, records the event by its
Idempotency-Key. HTTP/1.1 keep-alive, one thread per connection, like a real server behind a
load balancer as far as gradata can tell.

    POST /control {"latency_ms": 10, "status": 200, "reset": true}   change behaviour
    GET  /stats                                                      counters, as JSON
    GET  /ids?prefix=P                                               delivered ids, one per line

Times are CLOCK_MONOTONIC seconds, the clock systemd's *TimestampMonotonic properties use.
"""
import http.server
import json
import threading
import time
import urllib.parse

LOCK = threading.Lock()
SETTINGS = {"latency_ms": 10, "status": 200}
STATE = {}


def reset():
    STATE.update(posts=0, ids=set(), auth=set(), paths={}, last_delivery=0.0, in_flight=0)


reset()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/control":
            change = json.loads(body or b"{}")
            with LOCK:
                if change.pop("reset", False):
                    reset()
                SETTINGS.update(change)
            self.reply(200, json.dumps(SETTINGS))
            return
        with LOCK:
            latency, status = SETTINGS["latency_ms"], SETTINGS["status"]
            STATE["in_flight"] += 1
        time.sleep(latency / 1000)
        with LOCK:
            STATE["in_flight"] -= 1
            STATE["posts"] += 1
            STATE["auth"].add(self.headers.get("Authorization", "-"))
            STATE["paths"][self.path] = STATE["paths"].get(self.path, 0) + 1
            if 200 <= status < 300:
                STATE["ids"].add(self.headers.get("Idempotency-Key", ""))
                STATE["last_delivery"] = time.monotonic()
        if status == 503:
            self.send_response(status)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.reply(status, '{"ok": true}' if status < 300 else '{"error": "test"}')

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/stats":
            with LOCK:
                stats = {
                    "posts": STATE["posts"],
                    "delivered": len(STATE["ids"]),
                    "auth": sorted(STATE["auth"]),
                    "paths": STATE["paths"],
                    "last_delivery": STATE["last_delivery"],
                    "in_flight": STATE["in_flight"],
                }
            self.reply(200, json.dumps(stats))
        elif url.path == "/ids":
            prefix = urllib.parse.parse_qs(url.query).get("prefix", [""])[0]
            with LOCK:
                ids = sorted(i for i in STATE["ids"] if i.startswith(prefix))
            self.reply(200, "".join(i + "\n" for i in ids), "text/plain")
        else:
            self.reply(404, '{"error": "not found"}')


server = http.server.ThreadingHTTPServer(("127.0.0.1", 9999), Handler)
server.daemon_threads = True
server.serve_forever()
