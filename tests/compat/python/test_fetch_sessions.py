"""Fetch sessions (KIP-227) with real clients over many partitions.

kafka-python keeps an incremental fetch session per broker (its FetchSessionHandler);
librdkafka sends full fetches. Both read 200 partitions; they must read the same records,
and kafka-python must have been running on a session (a nonzero session id, epochs past 1)
while new records kept arriving on a few partitions.
"""
import time

import kafkautil as ku

TOPICS = 2
PARTITIONS = 100
DEADLINE_S = 60


def produce_spread(bootstrap, topics, rounds, start):
    """`rounds` records per partition, values naming topic, partition and sequence."""
    p = ku.producer(bootstrap, acks="all")
    expected = {}
    for t in topics:
        for part in range(PARTITIONS):
            vals = [b"%s-%d-%d" % (t.encode(), part, start + i) for i in range(rounds)]
            ku.produce_all(p, t, [{"value": v, "partition": part} for v in vals], partition=part)
            expected[(t, part)] = vals
    return expected


def kafka_python_consumer(bootstrap, topics):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100)
    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    return c


def poll_until(c, got, want, deadline_s=DEADLINE_S):
    """Polls kafka-python until `got` holds `want` records per partition. Bounded."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for tp, msgs in c.poll(timeout_ms=200, max_records=5000).items():
            got.setdefault((tp.topic, tp.partition), []).extend(m.value for m in msgs)
        if all(len(got.get(k, [])) >= n for k, n in want.items()):
            return
    missing = {k: (len(got.get(k, [])), n) for k, n in want.items() if len(got.get(k, [])) < n}
    raise AssertionError(f"kafka-python fell short on {len(missing)} partitions: "
                         f"{list(missing.items())[:5]}")


def session_state(c):
    """(session id, next epoch) of kafka-python's fetch session with the one broker."""
    handlers = list(c._fetcher._session_handlers.values())
    assert len(handlers) == 1, handlers
    meta = handlers[0].next_metadata
    return meta.session_id, meta.epoch


def librdkafka_read_all(bootstrap, topics, want):
    """librdkafka (full fetches): every record of every partition. Bounded."""
    from confluent_kafka import TopicPartition

    c = ku.consumer(bootstrap, **{"enable.partition.eof": False})
    got = {}
    try:
        c.assign([TopicPartition(t, p, 0) for t in topics for p in range(PARTITIONS)])
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                assert m.error() is None, m.error()
                got.setdefault((m.topic(), m.partition()), []).append(m.value())
            if all(len(got.get(k, [])) >= n for k, n in want.items()):
                break
    finally:
        c.close()
    return got


def test_many_partitions_read_alike_with_and_without_sessions(bootstrap, topic_name):
    topics = [f"{topic_name}-{i}" for i in range(TOPICS)]
    for t in topics:
        ku.create_topic(bootstrap, t, partitions=PARTITIONS)
    expected = produce_spread(bootstrap, topics, rounds=3, start=0)
    c = kafka_python_consumer(bootstrap, topics)
    try:
        got = {}
        poll_until(c, got, {k: len(v) for k, v in expected.items()})
        session_id, epoch = session_state(c)
        assert session_id != 0, "kafka-python got no fetch session"
        # New records on a few partitions while the session runs: only those change.
        more = {}
        p = ku.producer(bootstrap, acks="all")
        for part in (0, 17, 99):
            vals = [b"%s-%d-late-%d" % (topics[1].encode(), part, i) for i in range(5)]
            ku.produce_all(p, topics[1], [{"value": v, "partition": part} for v in vals],
                           partition=part)
            more[(topics[1], part)] = vals
        for k, vals in more.items():
            expected[k] = expected[k] + vals
        poll_until(c, got, {k: len(v) for k, v in expected.items()})
        later_id, later_epoch = session_state(c)
        assert later_id == session_id, "the session was not kept"
        assert later_epoch > max(epoch, 1), "no incremental fetch was sent"
    finally:
        c.close()
    assert got == expected
    assert librdkafka_read_all(bootstrap, topics, {k: len(v) for k, v in expected.items()}) \
        == expected
