"""Starting, calling and stopping the two daemons under comparison.

Both run in the same fixed environment (brain-spec section 12: PYTHONHASHSEED=0, the same time
zone, none of the variables that decide an event's ``platform_source``), on loopback ports
picked free, each on its own copy of a brain.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import time

STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0


def base_env(home):
    """The environment both daemons share; nothing is inherited but PATH."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    """What a daemon answered: a status and a parsed JSON body, or no answer at all.

    ``status`` is None when the connection closed without a response (what 0.6.0 does on bad
    input), a string saying why when there was no connection or the answer timed out, else the
    HTTP status; ``body`` is the parsed JSON, or ``{"<text>": ...}`` when the body is not JSON."""

    def __init__(self, status, body):
        self.status = status
        self.body = body

    def as_dict(self):
        return {"status": self.status, "body": self.body}


def call(port, method, path, body=None, raw=None):
    """One request on a fresh connection (0.6.0 speaks HTTP/1.0 and closes after each answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
        except OSError as err:
            return Response(f"no connection: {err.__class__.__name__}", None)
        try:
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
            return Response(None, None)
        except OSError as err:  # a timeout: the daemon hangs on this request
            return Response(f"no answer: {err.__class__.__name__}", None)
        try:
            parsed = json.loads(data.decode("utf-8")) if data else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = {"<text>": data.decode("utf-8", "replace")[:300]}
        return Response(resp.status, parsed)
    finally:
        conn.close()


class Daemon:
    """A running daemon: its process, port and the brain copy it serves."""

    def __init__(self, name, argv, env, brain, port, log_path, cwd):
        self.name = name
        self.brain = brain
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                raise DaemonExited(f"{self.name} exited with {self.proc.returncode} at startup; "
                                   f"log: {self.log_path}\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.05)  # polling a port that is not open yet: nothing to wait on
        self.stop()
        raise RuntimeError(f"{self.name} not answering on port {self.port} after "
                           f"{STARTUP_TIMEOUT:.0f} s; log: {self.log_path}\n{self.log_tail()}")

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def call(self, method, path, body=None, raw=None):
        return call(self.port, method, path, body, raw)

    def stop(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_on_free_port(make, attempts=3):
    """Starts a daemon on a port picked free; another process may take that port before the
    daemon binds it, so a daemon that exits at startup is tried again on a new port."""
    for attempt in range(attempts):
        try:
            return make(free_port())
        except DaemonExited:
            if attempt == attempts - 1:
                raise


class DaemonExited(RuntimeError):
    pass


class PythonDaemon:
    """Factory for 0.6.0 daemons. It ignores SIGTERM (its handler deadlocks), so it is killed."""

    label = "python 0.6.0"

    def __init__(self, python):
        self.python = python

    def start(self, brain, home, log_path):
        def make(port):
            argv = [self.python, "-m", "gradata.daemon", "--brain-dir", brain, "--port", str(port)]
            return Daemon("python", argv, base_env(home), brain, port, log_path,
                          cwd=os.path.dirname(brain))
        d = start_on_free_port(make)
        d.stop_signal = signal.SIGKILL
        return d


class GradataDaemon:
    """Factory for gradata daemons: no API key, sync off, no config file, brain = data dir."""

    label = "gradata"

    def __init__(self, binary):
        self.binary = binary

    def start(self, brain, home, log_path):
        d = start_on_free_port(lambda port: self._make(brain, home, log_path, port))
        d.stop_signal = signal.SIGTERM
        return d

    def _make(self, brain, home, log_path, port):
        env = base_env(home)
        env.update({
            "GRADATA_CONFIG": "",
            "GRADATA_DATA_DIR": brain,
            "GRADATA_LISTEN": f"127.0.0.1:{port}",
            "GRADATA_SYNC_ENABLED": "false",
            "GRADATA_SYNC_API_KEY_FILE": os.path.join(home, "no-such-key"),
            "GRADATA_LOG_FORMAT": "text",
        })
        return Daemon("gradata", [self.binary, "serve"], env, brain, port, log_path,
                      cwd=os.path.dirname(brain))
