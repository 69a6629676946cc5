"""Test side of group_worker.py: spawn members as OS processes, collect their events, wait on
conditions (bounded), and check at-least-once processing."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "group_worker.py"


class Worker:
    """One group_worker.py process. Events (dicts, with "t" = monotonic receipt time) are kept
    in order; `owned` is the worker's current assignment from its last rebalance event."""

    def __init__(self, lib, bootstrap, group, topic, name, **opts):
        args = [sys.executable, str(WORKER), "--lib", lib, "--bootstrap", bootstrap,
                "--group", group, "--topic", topic, "--name", name]
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.name = name
        self.lock = threading.Lock()
        self.events = []
        self.owned = set()
        self.stderr_path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                        f"group-worker-{os.getpid()}-{name}-{time.time_ns()}.log")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, cwd=str(HERE))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["t"] = time.monotonic()
            with self.lock:
                self.events.append(ev)
                if "now" in ev:
                    self.owned = set(ev["now"])

    def snapshot(self):
        with self.lock:
            return list(self.events), set(self.owned)

    def of(self, kind):
        with self.lock:
            return [e for e in self.events if e["ev"] == kind]

    def records(self):
        """(partition, offset, value, receipt time) of everything this worker processed."""
        with self.lock:
            return [(p, o, v, e["t"]) for e in self.events if e["ev"] == "recs"
                    for p, o, v in e["recs"]]

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL: no LeaveGroup, no final commit."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s=20):
        """SIGTERM: the worker closes its consumer (LeaveGroup); SIGKILL if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=5)
        self._stderr.close()
        if not os.environ.get("GROUP_WORKER_LOG"):   # kept for debugging when logs were asked for
            try:
                os.unlink(self.stderr_path)
            except OSError:
                pass

    def stderr_tail(self, n=4000):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def describe(self):
        evs, owned = self.snapshot()
        kinds = [e["ev"] for e in evs if e["ev"] not in ("recs", "commit")]
        return (f"{self.name}: alive={self.alive()} owned={sorted(owned)} events={kinds[-12:]} "
                f"stderr:\n{self.stderr_tail()}")


def dump_stacks(workers):
    """Ask live workers for their Python stacks (faulthandler on SIGUSR1, to their stderr)."""
    for w in workers:
        if w.alive():
            w.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)


def wait_until(cond, timeout_s, what, workers=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    detail = "\n".join(w.describe() for w in workers)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{detail}")


def split_ok(workers, partitions, exact=None):
    """Every worker owns something (exactly `exact` partitions if given), the assignments are
    disjoint, and together they cover all partitions."""
    owned = [w.snapshot()[1] for w in workers]
    if any(not o for o in owned):
        return False
    if exact is not None and any(len(o) != exact for o in owned):
        return False
    total = sum(len(o) for o in owned)
    union = set().union(*owned)
    return total == len(union) and union == set(range(partitions))


def wait_split(workers, partitions, timeout_s=45, exact=None, settle_s=1.0):
    """Wait for a split (see split_ok) that holds for settle_s (no rebalance in flight)."""
    deadline = time.monotonic() + timeout_s
    since = None
    while time.monotonic() < deadline:
        dead = [w.name for w in workers if not w.alive()]
        if dead:
            raise AssertionError(f"workers {dead} exited\n" + "\n".join(w.describe() for w in workers))
        if split_ok(workers, partitions, exact):
            since = since or time.monotonic()
            if time.monotonic() - since >= settle_s:
                return [sorted(w.snapshot()[1]) for w in workers]
        else:
            since = None
        time.sleep(0.1)
    dump_stacks(workers)
    detail = "\n".join(w.describe() for w in workers)
    raise AssertionError(f"no stable split of {partitions} partitions among "
                         f"{[w.name for w in workers]} in {timeout_s}s\n{detail}")


def processed(workers):
    """{(partition, offset): value} over all workers."""
    out = {}
    for w in workers:
        for p, o, v, _ in w.records():
            out[(p, o)] = v
    return out


def wait_processed(workers, produced, timeout_s=60):
    """produced: {(partition, offset): value}. Wait until every one was processed by someone."""
    def done():
        got = processed(workers)
        return all(k in got for k in produced)

    try:
        wait_until(done, timeout_s, "every produced record processed", workers)
    except AssertionError:
        got = processed(workers)
        missing = sorted(k for k in produced if k not in got)
        raise AssertionError(f"{len(missing)} of {len(produced)} produced records never processed, "
                             f"first {missing[:10]}\n" + "\n".join(w.describe() for w in workers))
    got = processed(workers)
    wrong = [k for k in produced if got[k] != produced[k]]
    assert not wrong, f"records with other values than produced: {wrong[:10]}"


def stop_all(workers):
    for w in workers:
        try:
            w.stop()
        except Exception:  # noqa: BLE001 - cleanup must reach every worker
            w.kill()
