"""Broker behaviour a client relies on beyond the wire format: long-poll wake-up on append and
concurrent producers on one partition (the grouped-fsync path for acks=all)."""
import threading
import time

from confluent_kafka import OFFSET_END, TopicPartition

import kafkautil as ku


def test_long_poll_wakes_on_append(bootstrap, topic_name):
    """A fetch parked with a long max wait must return as soon as a record is appended,
    not when the wait expires."""
    ku.create_topic(bootstrap, topic_name)
    c = ku.consumer(bootstrap, **{"fetch.wait.max.ms": 5000, "fetch.min.bytes": 1})
    p = ku.producer(bootstrap, acks="1", **{"linger.ms": 0})
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:   # settle: position resolved, fetch parked
            m = c.poll(0.2)
            if m is not None and m.error() and m.error().code() == -191:
                break
        time.sleep(1.0)
        latencies = []
        for i in range(5):
            sent = time.monotonic()
            p.produce(topic_name, value=b"wake-%d" % i, partition=0)
            p.flush(10)
            got = None
            while got is None and time.monotonic() - sent < 15:
                m = c.poll(0.05)
                if m is not None and not m.error():
                    got = m
            assert got is not None and got.value() == b"wake-%d" % i
            latencies.append(time.monotonic() - sent)
            time.sleep(0.5)
        # a broker that only answers when fetch.wait.max.ms (5 s) expires fails this
        assert max(latencies) < 2.0, f"fetch did not wake on append: latencies {latencies}"
    finally:
        c.close()


def test_concurrent_producers_one_partition(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    producers, per = 4, 2500
    results = [None] * producers
    errors = []

    def run(k):
        try:
            p = ku.producer(bootstrap, acks="all", **{"linger.ms": 1})
            results[k] = ku.produce_all(p, topic_name, [{"value": b"%d:%05d" % (k, i)} for i in range(per)])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    offsets = sorted(o for r in results for _, _, o in r)
    assert offsets == list(range(producers * per)), "offsets not unique and dense"
    got = ku.consume_assigned(bootstrap, topic_name, count=producers * per)
    seen = {k: [] for k in range(producers)}
    for m in got:
        k, i = m.value().split(b":")
        seen[int(k)].append(int(i))
    for k in range(producers):
        assert seen[k] == list(range(per)), f"producer {k}: order or content differs"
