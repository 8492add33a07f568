#!/usr/bin/env python3
"""Clients of gradata's local API for the end-to-end tests, run inside the test container.

    clients.py probe OUT            one GET /health, timed: connect, answer (CLOCK_MONOTONIC)
    clients.py load DIR THREADS     keep-alive writers until DIR/stop exists or the server leaves
    clients.py slow-post OUT GO     a POST whose body is finished only once the file GO exists
    clients.py poll DIR             GET /health on a new connection each time until DIR/stop

Each writes its result as JSON (OUT, or DIR/result.json) and signals progress through files, so
the calling script waits on conditions, never on sleeps.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time

HOST, PORT = "127.0.0.1", 8765


def write_json(path, value):
    with open(path + ".tmp", "w") as out:
        json.dump(value, out)
    os.rename(path + ".tmp", path)


def probe(out):
    """Connects first (the marker OUT.connected says so), then asks; both moments recorded."""
    conn = http.client.HTTPConnection(HOST, PORT, timeout=120)
    conn.connect()
    connected = time.monotonic()
    open(out + ".connected", "w").close()
    conn.request("GET", "/health")
    response = conn.getresponse()
    body = response.read()
    answered = time.monotonic()
    write_json(out, {"connected": connected, "answered": answered, "status": response.status,
                     "body": json.loads(body)})


def load(directory, threads):
    """Writers posting one event per request, each on its own keep-alive connection.

    Every acknowledged event_id goes to DIR/accepted-N. A writer stops at the first error or
    when the server announces it closes the connection, so it never reconnects (which would
    socket-activate a new instance behind the test's back).
    """
    stop = os.path.join(directory, "stop")
    counts = {"accepted": 0, "refused": 0, "closed": 0, "errors": 0}
    lock = threading.Lock()

    def writer(n):
        conn = http.client.HTTPConnection(HOST, PORT, timeout=60)
        seq = 0
        with open(os.path.join(directory, f"accepted-{n}"), "w") as accepted:
            while not os.path.exists(stop):
                seq += 1
                event_id = f"s6-{n}-{seq}"
                body = json.dumps({"kind": "event", "event_id": event_id, "data": {"seq": seq}})
                try:
                    conn.request("POST", "/v1/events", body,
                                 {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    with lock:
                        counts["errors"] += 1
                    return
                if 200 <= response.status < 300:
                    accepted.write(event_id + "\n")
                    accepted.flush()
                    with lock:
                        counts["accepted"] += 1
                else:
                    with lock:
                        counts["refused"] += 1
                    return
                if response.will_close:
                    with lock:
                        counts["closed"] += 1
                    return

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    write_json(os.path.join(directory, "result.json"), counts)


def slow_post(out, go):
    """Sends the headers and half the body, waits for GO, then sends the rest."""
    body = json.dumps({"kind": "event", "event_id": "s6-slow", "data": {"slow": True}}).encode()
    sock = socket.create_connection((HOST, PORT), timeout=60)
    head = (f"POST /v1/events HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:10])
    open(out + ".sent", "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    sock.sendall(body[10:])
    response = http.client.HTTPResponse(sock)
    response.begin()
    answer = response.read()
    write_json(out, {"status": response.status, "body": answer.decode(errors="replace")})


def poll(directory):
    """Counts answered and failed GET /health requests, one new connection each."""
    stop = os.path.join(directory, "stop")
    counts = {"ok": 0, "failed": 0}
    while not os.path.exists(stop):
        try:
            conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            conn.close()
            counts["ok" if response.status == 200 else "failed"] += 1
        except (OSError, http.client.HTTPException):
            counts["failed"] += 1
        if counts["ok"] == 1:
            open(os.path.join(directory, "started"), "w").close()
    write_json(os.path.join(directory, "result.json"), counts)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "probe":
        probe(args[0])
    elif command == "load":
        load(args[0], int(args[1]))
    elif command == "slow-post":
        slow_post(args[0], args[1])
    elif command == "poll":
        poll(args[0])
    else:
        sys.exit(f"unknown command {command}")
