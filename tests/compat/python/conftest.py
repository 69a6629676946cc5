"""Fixtures shared by the Python compat suite.

The suite talks to a real broker. By default it starts a fresh `rill serve` on a
loopback port with a temp data dir (RILL_BIN, default <repo>/target/release/rill);
when KAFKA_BOOTSTRAP is set it uses that address and starts nothing (that is how
the suite is validated against Apache Kafka).
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
READY_RE = re.compile(r"^rill listening on (127\.0\.0\.1:\d+)\s*$")
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


class RillProcess:
    """One `rill serve` process on a data dir that outlives restarts."""

    def __init__(self, data_dir: str, extra_args=()):
        self.bin = os.environ.get("RILL_BIN", str(REPO / "target" / "release" / "rill"))
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.proc = None
        self.bootstrap = None
        self.log_path = Path(data_dir).parent / "rill-stderr.log"

    def start(self) -> str:
        if not os.path.exists(self.bin):
            raise RuntimeError(f"rill binary not found at {self.bin} (build it or set RILL_BIN)")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        found = {}

        def read_ready():
            line = self.proc.stdout.readline().decode(errors="replace")
            found["line"] = line
            # keep draining stdout so the broker never blocks on a full pipe
            for _ in iter(self.proc.stdout.readline, b""):
                pass

        threading.Thread(target=read_ready, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "line" not in found and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        line = found.get("line", "")
        m = READY_RE.match(line)
        if not m:
            self.kill()
            raise RuntimeError(
                f"rill did not print its listening line within {READY_TIMEOUT_S}s "
                f"(got {line!r}; exit={self.proc.returncode}); stderr in {self.log_path}")
        self.bootstrap = m.group(1)
        return self.bootstrap

    def kill(self):
        """SIGKILL: a crash, nothing flushed by the broker on the way out."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        """SIGTERM, then SIGKILL after a grace period."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
        keep_log(self.log_path)


def keep_log(path):
    """Append rill's stderr to $RILL_COMPAT_LOG_DIR/python-rill.log (set by scripts/test)."""
    d = os.environ.get("RILL_COMPAT_LOG_DIR")
    if d and os.path.exists(path):
        with open(path, "rb") as src, open(os.path.join(d, "python-rill.log"), "ab") as dst:
            shutil.copyfileobj(src, dst)
        os.truncate(path, 0)


def external_bootstrap():
    return os.environ.get("KAFKA_BOOTSTRAP") or None


@pytest.fixture(scope="session")
def bootstrap():
    ext = external_bootstrap()
    if ext:
        yield ext
        return
    tmp = tempfile.mkdtemp(prefix="rill-compat-py-")
    rill = RillProcess(os.path.join(tmp, "data"))
    os.makedirs(rill.data_dir)
    try:
        yield rill.start()
    finally:
        rill.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def rill_factory():
    """For tests that crash and restart the broker: a private rill on its own data dir."""
    if external_bootstrap():
        pytest.skip("needs to kill and restart the broker; only meaningful against rill")
    tmp = tempfile.mkdtemp(prefix="rill-compat-py-restart-")
    procs = []

    def make(extra_args=()):
        r = RillProcess(os.path.join(tmp, "data"), extra_args)
        os.makedirs(r.data_dir, exist_ok=True)
        procs.append(r)
        return r

    yield make
    for r in procs:
        r.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def topic_name(request):
    safe = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60]
    return f"py-{safe}-{uuid.uuid4().hex[:8]}"
