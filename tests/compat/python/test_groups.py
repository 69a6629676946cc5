"""Consumer groups (classic protocol) with real clients, each member its own OS process
(group_worker.py), so a member can be killed with SIGKILL.

- confluent-kafka: three members split 6 partitions, one is SIGKILLed and its partitions move
  to the others after the session timeout (6000 ms, the broker minimum), a fourth joins and gets
  a share; every produced record is processed at least once, and a moved partition resumes from
  the committed offset (not before it, not after what was processed).
- cooperative-sticky (librdkafka): a second member joins; the first loses some partitions by
  incremental revoke, never all of them.
- static membership (group.instance.id): a member (follower or leader) SIGKILLed and restarted
  within its session timeout gets its partitions back, and the other member sees no
  revoke/assign.
- AdminClient: list/describe groups (members, assignments), list offsets, delete
  (NON_EMPTY_GROUP while members remain, then success on the empty group).
- kafka-python and aiokafka: two members split the partitions, process and commit, leave; a new
  member resumes exactly at the committed offsets.
- kcat -G (balanced consumer): consumes everything, then resumes from its commits.
- mixed librdkafka + aiokafka group: the broker selects the protocol every member supports.
- a static member is fenced (FENCED_INSTANCE_ID) by a newer process with the same instance id.
- committed offsets survive a SIGKILL of the broker, for a closed consumer and for a live
  group whose broker restarts on the same port (rill only; classic and KIP-848 members).
"""
import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             TopicPartition)

import kafkautil as ku
from groupkit import (Worker, group_offsets, produce, split_kill_rebalance_join, stop_all,
                      wait_group_offsets, wait_processed, wait_split, wait_until)

SESSION_TIMEOUT_MS = 6000


def test_confluent_split_kill_rebalance_join(bootstrap, topic_name):
    def worker(name):
        return Worker("confluent", bootstrap, "g-" + topic_name, topic_name, name,
                      session_timeout_ms=SESSION_TIMEOUT_MS)

    # the session timeout, plus a rejoin round: heartbeat interval, JoinGroup, SyncGroup
    split_kill_rebalance_join(bootstrap, topic_name, "g-" + topic_name, worker,
                              session_s=SESSION_TIMEOUT_MS / 1000, split_timeout_s=45)


def test_confluent_cooperative_sticky_incremental(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=6)
    group = "g-" + topic_name
    produced = produce(bootstrap, topic_name, "a", 300, 6)
    opts = dict(session_timeout_ms=SESSION_TIMEOUT_MS, strategy="cooperative-sticky")
    first = Worker("confluent", bootstrap, group, topic_name, "coop0", **opts)
    ws = [first]
    try:
        wait_split([first], 6)
        wait_processed([first], produced)
        n_before = len(first.snapshot()[0])
        second = Worker("confluent", bootstrap, group, topic_name, "coop1", **opts)
        ws.append(second)
        split = wait_split(ws, 6, exact=3)
        evs = [e for e in first.snapshot()[0][n_before:] if "now" in e]
        assert all(e["proto"] == "COOPERATIVE" for e in evs), evs
        assert all(e["now"] for e in evs), f"first member lost all its partitions: {evs}"
        revoked = {p for e in evs if e["ev"] == "revoke" for p in e["parts"]}
        assert revoked == set(range(6)) - set(split[0]), (revoked, split)
        assert not [e for e in evs if e["ev"] == "lost"], evs
        # the joiner's assignment came incrementally, only the revoked partitions
        got = {p for e in second.of("assign") for p in e["parts"]}
        assert got == set(split[1]) == revoked
        assert not second.of("revoke")
        more = produce(bootstrap, topic_name, "b", 120, 6)
        produced.update(more)
        wait_processed(ws, produced)
        for w, parts in zip(ws, split):
            assert {p for p, _, v, _ in w.records() if v.startswith("b-")} == set(parts)
    finally:
        stop_all(ws)


@pytest.mark.parametrize("which", ["follower", "leader"])
def test_confluent_static_membership_restart(bootstrap, topic_name, which):
    """Static member SIGKILLed and restarted within its session timeout (the group's follower,
    or its leader): it gets its partitions back and the other member sees no rebalance."""
    ku.create_topic(bootstrap, topic_name, partitions=6)
    group = "g-" + topic_name
    session_ms = 10000
    produced = produce(bootstrap, topic_name, "a", 120, 6)

    def observer_worker():
        return Worker("confluent", bootstrap, group, topic_name, "static-b",
                      instance_id="static-b", session_timeout_ms=session_ms)

    def member_worker():
        return Worker("confluent", bootstrap, group, topic_name, "static-a",
                      instance_id="static-a", session_timeout_ms=session_ms)

    # the first to join is the group leader
    first = observer_worker() if which == "follower" else member_worker()
    ws = [first]
    try:
        wait_split([first], 6)
        second = member_worker() if which == "follower" else observer_worker()
        ws.append(second)
        observer, member = (first, second) if which == "follower" else (second, first)
        ws = [observer, member]
        split = wait_split(ws, 6, exact=3)
        wait_processed(ws, produced)
        kept = set(member.snapshot()[1])
        n_obs = len(observer.snapshot()[0])
        member.kill()
        t_kill = time.monotonic()
        restarted = Worker("confluent", bootstrap, group, topic_name, "static-a2",
                           instance_id="static-a", session_timeout_ms=session_ms)
        ws.append(restarted)
        wait_until(lambda: restarted.snapshot()[1] == kept, 30,
                   f"restarted static member to get {sorted(kept)} back", ws)
        back_after_s = time.monotonic() - t_kill
        assert back_after_s < session_ms / 1000, f"took {back_after_s:.1f}s"
        # hold on for more than a few heartbeat intervals: a rebalance would show by now
        time.sleep(3)
        assert restarted.snapshot()[1] == kept
        churn = [e for e in observer.snapshot()[0][n_obs:] if e["ev"] in ("assign", "revoke", "lost")]
        assert not churn, f"the other member saw a rebalance during the restart: {churn}"
        assert observer.snapshot()[1] == set(split[0])
        more = produce(bootstrap, topic_name, "b", 60, 6)
        produced.update(more)
        wait_processed(ws, produced)
        assert {p for p, _, v, _ in restarted.records() if v.startswith("b-")} == kept
        # the restarted member resumed from its predecessor's commits: no record of "a" twice
        # unless the predecessor died between processing and committing
        a_again = [(p, o) for p, o, v, _ in restarted.records() if v.startswith("a-")]
        assert len(a_again) <= 6 * 500, a_again
    finally:
        stop_all(ws)


def test_admin_list_describe_offsets_delete(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=6)
    group = "g-" + topic_name
    produced = produce(bootstrap, topic_name, "a", 120, 6)
    names = ["adm0", "adm1"]
    ws = [Worker("confluent", bootstrap, group, topic_name, n,
                 session_timeout_ms=SESSION_TIMEOUT_MS) for n in names]
    a = ku.admin(bootstrap)
    try:
        wait_split(ws, 6, exact=3)
        wait_processed(ws, produced)
        wait_group_offsets(bootstrap, group, {p: 20 for p in range(6)})

        listing = a.list_consumer_groups(request_timeout=30).result(timeout=30)
        mine = [g for g in listing.valid if g.group_id == group]
        assert len(mine) == 1, [g.group_id for g in listing.valid]
        assert not mine[0].is_simple_consumer_group
        assert mine[0].state.name == "STABLE", mine[0].state

        desc = a.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
        assert desc.group_id == group
        assert desc.state.name == "STABLE"
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor == "range"
        assert sorted(m.client_id for m in desc.members) == names
        by_client = {m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
                     for m in desc.members}
        for w in ws:
            assert by_client[w.name] == {(topic_name, p) for p in w.snapshot()[1]}
        assert all(m.member_id and m.host for m in desc.members)

        offs = a.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, 1),
                                                  TopicPartition(topic_name, 4)])],
            request_timeout=30)[group].result(timeout=30)
        assert [(tp.topic, tp.partition, tp.offset) for tp in offs.topic_partitions] == [
            (topic_name, 1, 20), (topic_name, 4, 20)]

        fut = a.delete_consumer_groups([group], request_timeout=30)[group]
        with pytest.raises(KafkaException) as ei:
            fut.result(timeout=30)
        assert ei.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, ei.value
    finally:
        stop_all(ws)

    def empty():
        d = a.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
        return d.state.name == "EMPTY" and not d.members

    wait_until(empty, 30, "group empty after its members left")
    assert group_offsets(bootstrap, group) == {p: 20 for p in range(6)}  # kept while empty
    a.delete_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
    listing = a.list_consumer_groups(request_timeout=30).result(timeout=30)
    assert group not in [g.group_id for g in listing.valid]
    assert all(o < 0 for o in group_offsets(bootstrap, group).values())
    fut = a.delete_consumer_groups([group], request_timeout=30)[group]
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, ei.value


@pytest.mark.parametrize("lib", ["kafka-python", "aiokafka"])
def test_join_split_commit_resume(bootstrap, topic_name, lib):
    ku.create_topic(bootstrap, topic_name, partitions=6)
    group = "g-" + topic_name
    produced = produce(bootstrap, topic_name, "a", 300, 6)
    ws = [Worker(lib, bootstrap, group, topic_name, f"{lib}-{i}",
                 session_timeout_ms=SESSION_TIMEOUT_MS) for i in range(2)]
    everyone = list(ws)
    try:
        try:
            wait_split(ws, 6, exact=3, timeout_s=25 if lib == "kafka-python" else 45)
        except AssertionError as e:
            # kafka-python 3.0.12 sometimes hangs for good in a rebalance (its coordinator
            # lookup never completes; seen in about 1 run of 10 against Apache Kafka 4.1.2 as
            # well). That is the client's bug: replace the stuck member once, and go on.
            stuck = [w for w in ws if w.alive() and not w.snapshot()[1]]
            if lib != "kafka-python" or len(stuck) != 1:
                raise
            print(f"replacing stuck kafka-python member {stuck[0].name}:\n{e}")
            stuck[0].kill()
            repl = Worker(lib, bootstrap, group, topic_name, stuck[0].name + "-again",
                          session_timeout_ms=SESSION_TIMEOUT_MS)
            ws[ws.index(stuck[0])] = repl
            everyone.append(repl)
            wait_split(ws, 6, exact=3)
        wait_processed(everyone, produced)
    finally:
        stop_all(everyone)
    assert all(w.of("closed") for w in ws), [w.describe() for w in ws]
    wait_group_offsets(bootstrap, group, {p: 50 for p in range(6)})
    more = produce(bootstrap, topic_name, "b", 60, 6)
    resumer = Worker(lib, bootstrap, group, topic_name, f"{lib}-resume",
                     session_timeout_ms=SESSION_TIMEOUT_MS)
    try:
        wait_split([resumer], 6)
        wait_processed([resumer], more)
        time.sleep(0.5)
    finally:
        stop_all([resumer])
    got = sorted((p, o) for p, o, _, _ in resumer.records())
    assert got == sorted(more), f"resumed with {got[:8]}..., wanted exactly the new records"
    wait_group_offsets(bootstrap, group, {p: 60 for p in range(6)})


def test_kcat_balanced_consumer(bootstrap, topic_name):
    kcat = shutil.which("kcat")
    if not kcat:
        pytest.skip("kcat not installed")
    ku.create_topic(bootstrap, topic_name, partitions=2)
    group = "g-" + topic_name
    first = produce(bootstrap, topic_name, "a", 100, 2)

    def run_kcat():
        out = subprocess.run(
            ["timeout", "60", kcat, "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
             "-X", f"session.timeout.ms={SESSION_TIMEOUT_MS}", "-X", "heartbeat.interval.ms=1000",
             "-e", "-q", "-f", "%p %o %s\\n", topic_name],
            capture_output=True, timeout=90)
        assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
        got = {}
        for line in out.stdout.decode().splitlines():
            p, o, v = line.split(" ", 2)
            got[(int(p), int(o))] = v
        return got

    assert run_kcat() == first
    assert group_offsets(bootstrap, group) == {0: 50, 1: 50}
    second = produce(bootstrap, topic_name, "b", 20, 2)
    assert run_kcat() == second   # resumed from the committed offsets
    assert group_offsets(bootstrap, group) == {0: 60, 1: 60}


def test_committed_offsets_survive_broker_sigkill(rill_factory, topic_name):
    r1 = rill_factory()
    bs = r1.start()
    ku.create_topic(bs, topic_name, partitions=3)
    group = "g-" + topic_name
    produce(bs, topic_name, "a", 90, 3)
    want = {0: 15, 1: 20, 2: 25}

    def member(bootstrap):
        return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 1000})

    c = member(bs)
    try:
        c.subscribe([topic_name])
        seen = set()
        deadline = time.monotonic() + 60
        while len(seen) < 90 and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                if not m.error():
                    seen.add((m.partition(), m.offset()))
        assert len(seen) == 90
        c.commit(offsets=[TopicPartition(topic_name, p, o) for p, o in want.items()],
                 asynchronous=False)
        got = c.committed([TopicPartition(topic_name, p) for p in want], timeout=30)
        assert {tp.partition: tp.offset for tp in got} == want
    finally:
        c.close()
    r1.kill()

    r2 = rill_factory()
    bs2 = r2.start()
    assert group_offsets(bs2, group) == want
    c = member(bs2)
    try:
        c.subscribe([topic_name])
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < 30 and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                if not m.error():
                    seen.append((m.partition(), m.offset()))
        firsts = {p: min(o for pp, o in seen if pp == p) for p in (0, 1, 2)}
        assert firsts == want, seen[:10]
        assert sorted(seen) == sorted([(0, o) for o in range(15, 30)] + [(1, o) for o in range(20, 30)]
                                      + [(2, o) for o in range(25, 30)])
    finally:
        c.close()


def test_mixed_clients_one_group_common_protocol(bootstrap, topic_name):
    """Two librdkafka members (offering range, roundrobin) and one aiokafka member (offering
    roundrobin only) in one group: the broker must pick the protocol every member supports
    (roundrobin), not the most preferred one, and the three split the partitions."""
    ku.create_topic(bootstrap, topic_name, partitions=6)
    group = "g-" + topic_name
    produced = produce(bootstrap, topic_name, "a", 300, 6)
    ws = [Worker("confluent", bootstrap, group, topic_name, "mix-c0", session_timeout_ms=SESSION_TIMEOUT_MS),
          Worker("confluent", bootstrap, group, topic_name, "mix-c1", session_timeout_ms=SESSION_TIMEOUT_MS),
          Worker("aiokafka", bootstrap, group, topic_name, "mix-aio", session_timeout_ms=SESSION_TIMEOUT_MS)]
    try:
        wait_split(ws, 6, exact=2)
        wait_processed(ws, produced)
        a = ku.admin(bootstrap)
        desc = a.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
        assert desc.partition_assignor == "roundrobin", desc.partition_assignor
        assert sorted(m.client_id for m in desc.members) == ["mix-aio", "mix-c0", "mix-c1"]
    finally:
        stop_all(ws)
    wait_group_offsets(bootstrap, group, {p: 50 for p in range(6)})


def test_confluent_static_member_fenced_by_newer_instance(bootstrap, topic_name):
    """A second process with the same group.instance.id while the first is still alive: the
    newcomer takes over the first one's partitions without a rebalance of the others, and the
    first is fenced (FENCED_INSTANCE_ID, a fatal error in librdkafka)."""
    ku.create_topic(bootstrap, topic_name, partitions=4)
    group = "g-" + topic_name
    session_ms = 10000
    observer = Worker("confluent", bootstrap, group, topic_name, "obs",
                      instance_id="obs", session_timeout_ms=session_ms)
    ws = [observer]
    try:
        wait_split([observer], 4)
        old = Worker("confluent", bootstrap, group, topic_name, "dup-old",
                     instance_id="dup", session_timeout_ms=session_ms)
        ws.append(old)
        split = wait_split([observer, old], 4, exact=2)
        n_obs = len(observer.snapshot()[0])
        new = Worker("confluent", bootstrap, group, topic_name, "dup-new",
                     instance_id="dup", session_timeout_ms=session_ms)
        ws.append(new)
        wait_until(lambda: new.snapshot()[1] == set(split[1]), 30,
                   f"the newer instance to own {split[1]}", ws)
        def fenced():
            evs = old.of("fatal") + old.of("error") + old.of("client_error")
            return [e for e in evs if "fenced" in e["error"].lower()]

        wait_until(fenced, 30, "the older instance to be told it is fenced", ws)
        time.sleep(2)
        churn = [e for e in observer.snapshot()[0][n_obs:] if e["ev"] in ("assign", "revoke", "lost")]
        assert not churn, f"the other member saw a rebalance: {churn}"
        more = produce(bootstrap, topic_name, "b", 40, 4)
        wait_processed([observer, new], more)
    finally:
        stop_all(ws)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_rill_at(bin_path, data_dir, port, log_path, attempts=20):
    """`rill serve` on a fixed loopback port (so that live clients reconnect after a restart);
    retries while the port is still held by the killed process. Returns the Popen."""
    import re
    import threading
    for _ in range(attempts):
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([bin_path, "serve", "--listen", f"127.0.0.1:{port}",
                                     "--data-dir", data_dir],
                                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        first = {}

        def read():
            first["line"] = proc.stdout.readline().decode(errors="replace")
            for _ in iter(proc.stdout.readline, b""):
                pass

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while "line" not in first and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if re.match(rf"^rill listening on 127\.0\.0\.1:{port}\s*$", first.get("line", "")):
            return proc
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        time.sleep(0.5)
    with open(log_path, "rb") as f:
        tail = f.read()[-2000:].decode(errors="replace")
    raise AssertionError(f"rill did not start on port {port}: {tail}")


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_live_group_survives_broker_sigkill(tmp_path, topic_name, protocol):
    """rill only: two confluent-kafka members consume and commit; the broker is SIGKILLed and
    restarted on the same data dir and port while they run (classic protocol, and KIP-848's
    group.protocol=consumer, whose members come back at their member epochs). They carry on (reconnect, rejoin if
    asked), no partition goes back below the last commit reported before the crash, every
    record (before, and after the restart) is processed, and the final commits are the log end
    offsets."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("kills and restarts the broker; only meaningful against rill")
    from conftest import REPO
    bin_path = os.environ.get("RILL_BIN", str(REPO / "target" / "release" / "rill"))
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    log_path = str(tmp_path / "rill-stderr.log")
    port = _free_port()
    bs = f"127.0.0.1:{port}"
    rill = _start_rill_at(bin_path, data_dir, port, log_path)
    ws = []
    try:
        ku.create_topic(bs, topic_name, partitions=6)
        group = "g-" + topic_name
        produced = produce(bs, topic_name, "a", 600, 6)
        ws = [Worker("confluent", bs, group, topic_name, f"crash{i}",
                     session_timeout_ms=SESSION_TIMEOUT_MS, protocol=protocol) for i in range(2)]
        wait_split(ws, 6, exact=3)
        wait_processed(ws, produced)
        time.sleep(0.5)
        committed_before = {p: 0 for p in range(6)}
        for w in ws:
            for e in w.of("commit"):
                for p, o in e["offs"].items():
                    committed_before[int(p)] = max(committed_before[int(p)], o)
        assert committed_before == {p: 100 for p in range(6)}, committed_before
        rill.kill()
        rill.wait(timeout=10)
        t_restart = time.monotonic()
        rill = _start_rill_at(bin_path, data_dir, port, log_path)
        # nothing new to consume yet, so nothing new committed: OffsetFetch shows the old commits
        assert group_offsets(bs, group) == committed_before
        produced.update(produce(bs, topic_name, "b", 300, 6))
        wait_split(ws, 6, exact=3, timeout_s=60)
        wait_processed(ws, produced, timeout_s=90)
        churn = [(w.name, e["ev"], e["parts"]) for w in ws for e in w.snapshot()[0]
                 if e["t"] > t_restart and e["ev"] in ("assign", "revoke", "lost")]
        fails = [(w.name, e["error"][:80]) for w in ws for e in w.snapshot()[0]
                 if e["t"] > t_restart and e["ev"] in ("commit_error", "client_error")]
        print(f"after the broker restart: rebalance events {churn}, client/commit errors {fails[:6]}")
        for p in range(6):
            after = [o for w in ws for pp, o, _, t in w.records() if pp == p and t > t_restart]
            assert after and min(after) >= committed_before[p], (
                f"partition {p}: after the restart consumed from {min(after) if after else None}, "
                f"committed before the crash {committed_before[p]}")
    finally:
        stop_all(ws)
    try:
        wait_group_offsets(bs, group, {p: 150 for p in range(6)})
    finally:
        if rill.poll() is None:
            rill.terminate()
            try:
                rill.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rill.kill()
        d = os.environ.get("RILL_COMPAT_LOG_DIR")
        if d:
            with open(log_path, "rb") as src, open(os.path.join(d, "python-rill.log"), "ab") as dst:
                shutil.copyfileobj(src, dst)
