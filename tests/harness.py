"""What the Python test suites of `finerank serve` (tests/acceptance, tests/reliability) share: a
server process they start, kill and restart, and a tally of named checks that keeps going after a
failure and reports at the end. Their run.sh scripts put this folder on PYTHONPATH."""
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

API_KEY = "acceptance-key"
# Four optimizer steps and short inputs make a fine-tune take about a minute on a CPU; a 4 MB body
# limit leaves room for 10,001 short documents and makes an oversized body cheap to send.
# A 10 s job lease lets a job that a killed server held on PostgreSQL go back to the queue soon.
SERVER_FLAGS = ["--max-train-steps", "4", "--train-max-length", "128", "--max-body-bytes", "4000000",
                "--api-key", API_KEY, "--job-lease", "10s"]


# Servers still running when a script ends (a check failed before it stopped them) are killed.
_started = []


@atexit.register
def _kill_leftovers():
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`finerank serve` on a free port over `data_dir`, logging to `log`, with `flags` (the
    acceptance suite's by default) and `env` added to a copy of the environment without any
    FINERANK_* variable. Under scripts/postgres.sh (FINERANK_TEST_DATABASE_URL set), the server
    keeps its metadata in that PostgreSQL database instead of SQLite."""

    def __init__(self, binary, data_dir, log, flags=SERVER_FLAGS, env=None):
        self.binary, self.data_dir, self.log_path, self.flags = binary, data_dir, log, list(flags)
        self.env = dict(env or {})
        self.proc = None
        self.url = None

    def start(self, timeout=180):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = open(self.log_path, "a")
        cmd = [self.binary, "--device", "cpu", "serve", "--data-dir", self.data_dir, "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINERANK_")}
        if os.environ.get("FINERANK_TEST_DATABASE_URL"):
            env["FINERANK_DATABASE_URL"] = os.environ["FINERANK_TEST_DATABASE_URL"]
        env.update(self.env)
        self.proc = subprocess.Popen(cmd + self.flags, stdout=log, stderr=log, env=env)
        _started.append(self.proc)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"finerank serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError(f"finerank serve did not answer /health within {timeout}s; see {self.log_path}")

    def stop(self):
        """SIGTERM, as an init system stops it; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self):
        """SIGKILL: no chance to clean up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def rss_bytes(self):
        """The process's resident memory."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def get(self, path, key=API_KEY):
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


class Checks:
    """Named checks; a failed one is reported with its traceback and the rest still run."""

    def __init__(self, suite):
        self.suite, self.passed, self.failed, self.skipped = suite, 0, [], []

    @contextlib.contextmanager
    def check(self, name):
        started = time.time()
        try:
            yield
        except Exception:  # noqa: BLE001 - every failure is reported, none stops the run
            self.failed.append(name)
            print(f"FAIL {self.suite}: {name}\n{traceback.format_exc()}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {self.suite}: {name} ({time.time() - started:.1f}s)", flush=True)

    def skip(self, names, reason):
        """Checks this machine cannot run, each said on its own `SKIP` line so that the run's
        totals count them instead of passing in silence."""
        for name in names:
            self.skipped.append(name)
            print(f"SKIP {self.suite}: {name} ({reason})", flush=True)

    def finish(self):
        print(f"{self.suite}: {self.passed} passed, {len(self.failed)} failed, "
              f"{len(self.skipped)} skipped", flush=True)
        sys.exit(1 if self.failed else 0)


def wait_until(fetch, done, timeout, interval=2.0):
    """Calls `fetch` until `done(result)`, returning the result; raises after `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        if time.time() > deadline:
            raise TimeoutError(f"still not done after {timeout}s: {result}")
        time.sleep(interval)
