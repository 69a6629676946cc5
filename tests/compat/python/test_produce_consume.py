"""Produce and consume by assignment with confluent-kafka (librdkafka)."""
import os
import random
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME, TopicPartition

import kafkautil as ku


def values(n, prefix=b"v"):
    return [prefix + b"-%06d-" % i + b"x" * (i % 50) for i in range(n)]


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_acks(bootstrap, topic_name, acks):
    ku.create_topic(bootstrap, topic_name)
    vals = values(200)
    p = ku.producer(bootstrap, acks=acks)
    reports = ku.produce_all(p, topic_name, [{"value": v} for v in vals])
    if acks != "0":
        # with acks the broker reports the offsets it assigned: 0..n-1, in order
        assert [o for _, _, o in reports] == list(range(len(vals)))
    got = ku.consume_assigned(bootstrap, topic_name, count=len(vals))
    assert [m.value() for m in got] == vals
    assert [m.offset() for m in got] == list(range(len(vals)))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_produce_compressed(bootstrap, topic_name, codec):
    ku.create_topic(bootstrap, topic_name)
    vals = values(2000)
    p = ku.producer(bootstrap, **{"compression.codec": codec, "acks": "all", "linger.ms": 20})
    reports = ku.produce_all(p, topic_name, [{"value": v, "key": b"k%d" % i} for i, v in enumerate(vals)])
    assert [o for _, _, o in reports] == list(range(len(vals)))
    got = ku.consume_assigned(bootstrap, topic_name, count=len(vals))
    assert [m.value() for m in got] == vals
    assert [m.key() for m in got] == [b"k%d" % i for i in range(len(vals))]
    assert [m.offset() for m in got] == list(range(len(vals)))
    # a consumer that starts in the middle of a compressed batch gets exactly from there
    mid = ku.consume_assigned(bootstrap, topic_name, offset=1234, count=len(vals) - 1234)
    assert [m.offset() for m in mid] == list(range(1234, len(vals)))
    assert [m.value() for m in mid] == vals[1234:]


def test_keys_headers_timestamps_nulls(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    base_ts = ku.recent_ts()
    recs = [
        {"value": b"plain"},
        {"value": b"with-key", "key": b"the-key"},
        {"value": None, "key": b"tombstone"},
        {"value": b"", "key": b""},
        {"value": b"hdrs", "headers": [("h1", b"one"), ("h2", b""), ("h1", b"dup"), ("nul", None)]},
        {"value": b"ts", "timestamp": base_ts},
        {"value": b"\x00\xff" * 1000, "key": bytes(range(256)), "timestamp": base_ts + 1},
    ]
    p = ku.producer(bootstrap, acks="all")
    ku.produce_all(p, topic_name, recs)
    got = ku.consume_assigned(bootstrap, topic_name, count=len(recs))
    assert len(got) == len(recs)
    for r, m in zip(recs, got):
        assert m.value() == r["value"]
        assert m.key() == r.get("key")
    assert got[2].value() is None
    assert got[3].value() == b"" and got[3].key() == b""
    assert got[4].headers() == [("h1", b"one"), ("h2", b""), ("h1", b"dup"), ("nul", None)]
    assert got[0].headers() is None
    assert got[5].timestamp() == (TIMESTAMP_CREATE_TIME, base_ts)
    assert got[6].timestamp() == (TIMESTAMP_CREATE_TIME, base_ts + 1)
    now_ms = int(time.time() * 1000)
    ts_type, ts = got[0].timestamp()
    assert ts_type == TIMESTAMP_CREATE_TIME and abs(ts - now_ms) < 120_000


def test_consume_from_beginning_and_offset(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    vals = values(300)
    ku.produce_all(ku.producer(bootstrap, acks="1"), topic_name, [{"value": v} for v in vals])
    got = ku.consume_assigned(bootstrap, topic_name, offset=OFFSET_BEGINNING, count=300)
    assert [m.value() for m in got] == vals
    got = ku.consume_assigned(bootstrap, topic_name, offset=137, count=300 - 137)
    assert [m.offset() for m in got] == list(range(137, 300))
    assert [m.value() for m in got] == vals[137:]
    # at the end: nothing more, partition EOF reached
    got = ku.consume_assigned(bootstrap, topic_name, offset=300)
    assert got == []


def test_consume_from_end_sees_only_new(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    p = ku.producer(bootstrap, acks="all")
    ku.produce_all(p, topic_name, [{"value": b"old-%d" % i} for i in range(10)])
    c = ku.consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        deadline = time.monotonic() + 30
        # wait for the consumer to settle on the end offset before producing more
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() and m.error().code() == -191:
                break
        ku.produce_all(p, topic_name, [{"value": b"new-%d" % i} for i in range(5)])
        got = []
        while len(got) < 5 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
        assert [m.value() for m in got] == [b"new-%d" % i for i in range(5)]
        assert [m.offset() for m in got] == list(range(10, 15))
    finally:
        c.close()


def test_watermarks_and_offsets_for_times(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    base_ts = ku.recent_ts()
    n = 20
    recs = [{"value": b"t%d" % i, "timestamp": base_ts + i * 1000} for i in range(n)]
    ku.produce_all(ku.producer(bootstrap, acks="all"), topic_name, recs)
    c = ku.consumer(bootstrap)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=30, cached=False)
        assert (lo, hi) == (0, n)

        def lookup(ts):
            [tp] = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=30)
            assert tp.error is None
            return tp.offset

        assert lookup(base_ts) == 0
        assert lookup(base_ts - 10_000) == 0             # before the first: first offset
        assert lookup(base_ts + 5000) == 5               # exact match
        assert lookup(base_ts + 5500) == 6               # first with timestamp >= target
        assert lookup(base_ts + (n - 1) * 1000) == n - 1
        assert lookup(base_ts + n * 1000) == -1          # after the last: none (OFFSET_END)
    finally:
        c.close()


def test_watermarks_empty_topic(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=2)
    c = ku.consumer(bootstrap)
    try:
        for part in (0, 1):
            assert c.get_watermark_offsets(TopicPartition(topic_name, part), timeout=30, cached=False) == (0, 0)
    finally:
        c.close()


def test_ordering_per_partition(bootstrap, topic_name):
    parts = 3
    ku.create_topic(bootstrap, topic_name, partitions=parts)
    p = ku.producer(bootstrap, acks="all", **{"max.in.flight.requests.per.connection": 5,
                                              "enable.idempotence": False})
    per_part = 2000
    recs = [{"value": b"%d:%06d" % (i % parts, i // parts), "partition": i % parts}
            for i in range(per_part * parts)]
    ku.produce_all(p, topic_name, recs)
    for part in range(parts):
        got = ku.consume_assigned(bootstrap, topic_name, partition=part, count=per_part)
        assert [m.value() for m in got] == [b"%d:%06d" % (part, j) for j in range(per_part)]
        assert [m.offset() for m in got] == list(range(per_part))


def test_100k_round_trip_exact_bytes(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    rng = random.Random(42)
    n = 100_000
    # random sizes 0..1000 bytes, random content (incompressible), some keys
    vals = [rng.randbytes(rng.randint(0, 1000)) for _ in range(n)]
    keys = [rng.randbytes(8) if i % 3 == 0 else None for i in range(n)]
    p = ku.producer(bootstrap, acks="all", **{"linger.ms": 10, "batch.size": 1_000_000,
                                              "queue.buffering.max.messages": 200_000})
    ku.produce_all(p, topic_name, [{"value": v, "key": k} for v, k in zip(vals, keys)])
    got = ku.consume_assigned(bootstrap, topic_name, count=n, timeout_s=120,
                              **{"fetch.max.bytes": 8 * 1024 * 1024})
    assert len(got) == n
    assert [m.offset() for m in got] == list(range(n))
    bad = [i for i, m in enumerate(got) if m.value() != vals[i] or m.key() != keys[i]]
    assert not bad, f"{len(bad)} records differ, first at offset {bad[0]}"
