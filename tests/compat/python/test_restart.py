"""Durability: every message acknowledged with acks=all survives a SIGKILL of the broker.

Only meaningful against rill (the suite must be able to kill and restart the broker on the
same data dir), so it is skipped when KAFKA_BOOTSTRAP is set."""
import threading
import time

import kafkautil as ku


def test_acked_messages_survive_sigkill(rill_factory, topic_name):
    r1 = rill_factory()
    bs = r1.start()
    ku.create_topic(bs, topic_name, partitions=2)
    acked = {0: {}, 1: {}}
    lock = threading.Lock()

    def cb(err, msg):
        if err is None:
            with lock:
                acked[msg.partition()][msg.offset()] = msg.value()

    p = ku.producer(bs, acks="all", **{"linger.ms": 1, "message.timeout.ms": 5000,
                                        "enable.idempotence": False, "retries": 0})
    # phase 1: a fully acknowledged prefix
    for i in range(5000):
        p.produce(topic_name, value=b"pre-%06d" % i, partition=i % 2, on_delivery=cb)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert sum(len(v) for v in acked.values()) == 5000
    # phase 2: keep producing while the broker is killed mid-stream
    stop_at = time.monotonic() + 1.0
    i = 0
    while time.monotonic() < stop_at:
        try:
            p.produce(topic_name, value=b"mid-%06d" % i, partition=i % 2, on_delivery=cb)
        except BufferError:
            pass
        p.poll(0)
        i += 1
    r1.kill()
    p.flush(10)   # whatever was acknowledged before the kill has been counted by now
    del p

    r2 = rill_factory()
    bs2 = r2.start()
    for part in (0, 1):
        with lock:
            want = dict(acked[part])
        hi = max(want) + 1
        got = ku.consume_assigned(bs2, topic_name, partition=part, count=hi, timeout_s=60)
        by_offset = {m.offset(): m.value() for m in got}
        missing = [o for o in want if by_offset.get(o) != want[o]]
        assert not missing, (f"partition {part}: {len(missing)} acknowledged records lost or "
                             f"changed after SIGKILL, first at offset {min(missing)}")
        # offsets stay dense after recovery
        assert sorted(by_offset) == list(range(len(by_offset)))


def test_clean_restart_keeps_topics_configs_and_data(rill_factory, topic_name):
    from confluent_kafka.admin import ConfigResource, ResourceType

    r1 = rill_factory()
    bs = r1.start()
    ku.create_topic(bs, topic_name, partitions=3, config={"retention.ms": "86400000"})
    vals = [b"r-%05d" % i for i in range(3000)]
    ku.produce_all(ku.producer(bs, acks="1", **{"compression.codec": "zstd"}), topic_name,
                   [{"value": v, "partition": i % 3} for i, v in enumerate(vals)])
    r1.stop()   # SIGTERM: a clean shutdown
    assert r1.proc.returncode == 0, f"rill exited {r1.proc.returncode} on SIGTERM"

    bs2 = rill_factory().start()
    ku.wait_for_topic(bs2, topic_name, 3)
    a = ku.admin(bs2)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    assert a.describe_configs([res])[res].result(timeout=30)["retention.ms"].value == "86400000"
    for part in range(3):
        got = ku.consume_assigned(bs2, topic_name, partition=part, count=1000)
        assert [m.value() for m in got] == vals[part::3]
    # and the log goes on at the right offset
    reports = ku.produce_all(ku.producer(bs2, acks="all"), topic_name, [{"value": b"after", "partition": 0}])
    assert reports[0][2] == 1000
