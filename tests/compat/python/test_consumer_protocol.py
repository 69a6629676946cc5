"""KIP-848 consumer groups (group.protocol=consumer) with librdkafka, each member its own OS
process (group_worker.py --protocol consumer), so a member can be killed with SIGKILL.

- three members split 6 partitions 2/2/2 (the broker's uniform assignor); one is SIGKILLed and
  its partitions move to the others after the session timeout; a fourth joins and gets a share;
  every produced record is processed at least once, and a moved partition resumes from the
  committed offset (none skipped);
- group.remote.assignor=range: contiguous ranges per member;
- AdminClient: the group is listed as a CONSUMER-type group and described with its members
  and assignments (ConsumerGroupDescribe); `rill group describe --json` shows the group and
  member epochs and the target assignment (rill only);
- a mixed group (Kafka 4's online migration): a classic librdkafka member joins a consumer group
  with a KIP-848 member and the two split the partitions, no partition ever owned by both at
  once (from their rebalance callbacks); when the KIP-848 member leaves the group is classic
  again and the classic member takes every partition. Checked against Kafka 4.4 as well.

Against rill the broker runs with group.consumer.session.timeout.ms 6000 and heartbeat interval
1000 (a private broker); against KAFKA_BOOTSTRAP, Kafka's defaults (45 s, 5 s) apply.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from confluent_kafka import ConsumerGroupType

import kafkautil as ku
from conftest import RillProcess, external_bootstrap
from groupkit import Worker, split_kill_rebalance_join, stop_all, wait_split, wait_until


@pytest.fixture(scope="module")
def kip848():
    """(bootstrap, session timeout in ms) of a broker for KIP-848 groups."""
    ext = external_bootstrap()
    if ext:
        yield ext, 45000
        return
    tmp = tempfile.mkdtemp(prefix="rill-compat-py-kip848-")
    rill = RillProcess(os.path.join(tmp, "data"),
                       ["--group-consumer-session-timeout-ms", "6000",
                        "--group-consumer-heartbeat-interval-ms", "1000"])
    os.makedirs(rill.data_dir)
    try:
        yield rill.start(), 6000
    finally:
        rill.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def worker(bootstrap, group, topic, name, **opts):
    return Worker("confluent", bootstrap, group, topic, name, protocol="consumer", **opts)


def test_kip848_split_kill_rebalance_join(kip848, topic_name):
    bootstrap, session_ms = kip848
    group = "g848-" + topic_name
    survivors = split_kill_rebalance_join(
        bootstrap, topic_name, group, lambda name: worker(bootstrap, group, topic_name, name),
        session_s=session_ms / 1000, split_timeout_s=60)
    # KIP-848 members never lose everything at once: a survivor kept its partitions
    for w in survivors:
        assert not w.of("lost"), w.describe()


def test_kip848_range_assignor(kip848, topic_name):
    bootstrap, _ = kip848
    ku.create_topic(bootstrap, topic_name, partitions=4)
    group = "g848r-" + topic_name
    ws = [worker(bootstrap, group, topic_name, f"r{i}", strategy="range") for i in range(2)]
    try:
        split = wait_split(ws, 4, exact=2, timeout_s=60)
        assert sorted(split) == [[0, 1], [2, 3]], split
    finally:
        stop_all(ws)


def test_kip848_admin_list_and_describe(kip848, topic_name):
    bootstrap, _ = kip848
    ku.create_topic(bootstrap, topic_name, partitions=3)
    group = "g848a-" + topic_name
    ws = [worker(bootstrap, group, topic_name, "a0")]
    try:
        wait_split(ws, 3, exact=3, timeout_s=60)
        a = ku.admin(bootstrap)
        listed = a.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(30)
        mine = [g for g in listed.valid if g.group_id == group]
        assert mine and mine[0].type == ConsumerGroupType.CONSUMER, listed.valid
        classic = a.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(30)
        assert group not in {g.group_id for g in classic.valid}
        d = a.describe_consumer_groups([group])[group].result(30)
        assert d.type == ConsumerGroupType.CONSUMER
        assert len(d.members) == 1
        got = sorted(tp.partition for tp in d.members[0].assignment.topic_partitions)
        assert got == [0, 1, 2]
        if not external_bootstrap():
            # `rill group describe` shows the epochs and each member's target assignment
            o = subprocess.run([RillProcess("").bin, "group", "describe", group, "--json",
                                "--bootstrap-server", bootstrap],
                               capture_output=True, text=True, timeout=60)
            assert o.returncode == 0, o.stderr
            j = json.loads(o.stdout)
            assert j["group_epoch"] >= 1 and j["assignment_epoch"] == j["group_epoch"], j
            [m] = j["members"]
            assert m["member_epoch"] == j["group_epoch"], j
            assert m["target_assignment"] == [{"topic": topic_name, "partitions": [0, 1, 2]}], j
            assert m["assignment"] == m["target_assignment"], j
    finally:
        stop_all(ws)


def never_owned_twice(workers):
    """Replays the workers' assign / revoke / lost events in receipt order: a partition is
    never assigned to one while another owns it."""
    changes = sorted((e["t"], w.name, e["ev"], e["parts"]) for w in workers
                     for e in w.snapshot()[0] if e["ev"] in ("assign", "revoke", "lost"))
    owner = {}
    for _, name, ev, parts in changes:
        for p in parts:
            if ev == "assign":
                held = owner.setdefault(p, name)
                assert held == name, f"partition {p} assigned to {name} while {held} owned it"
            elif owner.get(p) == name:
                del owner[p]


def group_type(bootstrap, group):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups().result(timeout=30)
    for g in listed.valid:
        if g.group_id == group:
            return g.type
    return None


def test_kip848_mixed_group_with_a_classic_member(kip848, topic_name):
    bootstrap, session_ms = kip848
    ku.create_topic(bootstrap, topic_name, partitions=4)
    group = "g848m-" + topic_name
    n0 = worker(bootstrap, group, topic_name, "n0")
    ws = [n0]
    try:
        wait_split(ws, 4, exact=4, timeout_s=60)
        c0 = Worker("confluent", bootstrap, group, topic_name, "c0", protocol="classic",
                    session_timeout_ms=6000)
        ws.append(c0)
        wait_split(ws, 4, exact=2, timeout_s=90)
        assert group_type(bootstrap, group) == ConsumerGroupType.CONSUMER
        n0.stop()
        # The last KIP-848 member left: a classic group again, its member takes everything.
        wait_split([c0], 4, exact=4, timeout_s=session_ms / 1000 + 60)
        wait_until(lambda: group_type(bootstrap, group) == ConsumerGroupType.CLASSIC, 30,
                   "the group back to classic", ws)
        never_owned_twice(ws)
    finally:
        stop_all(ws)
