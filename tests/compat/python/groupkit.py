"""Test side of group_worker.py: spawn members as OS processes, collect their events, wait on
conditions (bounded), and check at-least-once processing; produce numbered records and read a
group's committed offsets; and the kill/rebalance/join scenario every group protocol passes
(test_groups.py for the classic protocol, test_consumer_protocol.py for KIP-848)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions

import kafkautil as ku

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


def produce(bootstrap, topic, tag, n, partitions):
    """n records round-robin over the partitions; returns {(partition, offset): value}."""
    p = ku.producer(bootstrap, acks="all")
    out, errs = {}, []

    def cb(err, msg):
        if err is not None:
            errs.append(err)
        else:
            out[(msg.partition(), msg.offset())] = msg.value().decode()

    for i in range(n):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=i % partitions, on_delivery=cb)
    assert p.flush(60) == 0, "records not delivered in 60 s"
    assert not errs, errs[:5]
    assert len(out) == n
    return out


def group_offsets(bootstrap, group):
    """{partition: committed offset} from the AdminClient (OffsetFetch)."""
    a = ku.admin(bootstrap)
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                        request_timeout=30)[group].result(timeout=30)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def wait_group_offsets(bootstrap, group, want, timeout_s=30):
    last = {}

    def ok():
        nonlocal last
        last = group_offsets(bootstrap, group)
        return last == want

    try:
        wait_until(ok, timeout_s, "committed offsets")
    except AssertionError:
        raise AssertionError(f"group {group}: committed offsets {last}, wanted {want}")


def end_offsets(produced, partitions):
    return {p: 1 + max(o for (pp, o) in produced if pp == p) for p in range(partitions)}


def first_offset_after(workers, partition, t):
    """Lowest offset of `partition` processed by any of `workers` after monotonic time t."""
    offs = [o for w in workers for p, o, _, tr in w.records() if p == partition and tr > t]
    return min(offs) if offs else None


def split_kill_rebalance_join(bootstrap, topic, group, worker, session_s, split_timeout_s):
    """The scenario both group protocols must pass, with `worker(name)` making a member of
    `group` on `topic` (6 partitions): three members split the partitions 2/2/2; one is
    SIGKILLed and its partitions move to the others within the session timeout (plus 10 s);
    a moved partition resumes from the committed offset (not before the last commit seen, not
    past what the victim processed); a fourth member joins and gets a share; every produced
    record is processed at least once, and the group's final offsets are the end offsets."""
    ku.create_topic(bootstrap, topic, partitions=6)
    produced = produce(bootstrap, topic, "a", 600, 6)
    ws = [worker(f"c{i}") for i in range(3)]
    try:
        split = wait_split(ws, 6, exact=2, timeout_s=split_timeout_s)
        wait_processed(ws, produced)
        victim, survivors = ws[0], ws[1:]
        victim_parts = set(victim.snapshot()[1])
        assert len(victim_parts) == 2, split
        time.sleep(0.5)   # the victim's last commit is out; then crash it
        victim.kill()
        t_kill = time.monotonic()
        # what the group knew when the victim died: commits and processing per partition
        committed_before = {p: 0 for p in range(6)}
        processed_max = {p: -1 for p in range(6)}
        for w in ws:
            for e in w.of("commit"):
                for p, o in e["offs"].items():
                    committed_before[int(p)] = max(committed_before[int(p)], o)
            for p, o, _, _ in w.records():
                processed_max[p] = max(processed_max[p], o)
        produced.update(produce(bootstrap, topic, "b", 300, 6))

        wait_split(survivors, 6, exact=3, timeout_s=max(45, session_s + 30))
        moved_after_s = min(e["t"] for w in survivors for e in w.of("assign")
                            if e["t"] > t_kill and victim_parts & set(e["parts"])) - t_kill
        print(f"victim's partitions {sorted(victim_parts)} reassigned {moved_after_s:.1f}s after SIGKILL")
        assert moved_after_s < session_s + 10, moved_after_s
        wait_processed(ws, produced)
        for p in victim_parts:
            first = first_offset_after(survivors, p, t_kill)
            assert first is not None, f"partition {p} never consumed after the kill"
            # a commit may have landed without being reported
            assert committed_before[p] <= first <= processed_max[p] + 1, (
                f"partition {p}: resumed at {first}, committed {committed_before[p]}, "
                f"processed up to {processed_max[p]}")

        joiner = worker("c3")
        ws.append(joiner)
        wait_split(survivors + [joiner], 6, exact=2, timeout_s=split_timeout_s)
        produced.update(produce(bootstrap, topic, "c", 300, 6))
        wait_processed(ws, produced)
        assert {p for p, _, v, _ in joiner.records() if v.startswith("c-")} == joiner.snapshot()[1]
    finally:
        stop_all(ws)
    errs = [e for w in ws for e in w.of("error")]
    assert not errs, errs[:5]
    wait_group_offsets(bootstrap, group, end_offsets(produced, 6))
    return survivors
