"""Log compaction through confluent-kafka: a compacted topic keeps each key's latest value,
refuses keyless records (INVALID_RECORD) and DeleteRecords (POLICY_VIOLATION), as Kafka does.

test_compacted_topic_keeps_latest_value_per_key
    100 000 updates over 1 000 keys; after the broker's own cleaner threads have run, a
    consumer from the beginning ends with each key's latest value, offsets only increase, and
    the partition's log files are at least 10x smaller. Needs the data directory, so it runs
    against rill only.
test_keyless_record_into_compacted_topic_is_invalid_record
test_delete_records_on_compact_only_topic_is_policy_violation
"""
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import kafkautil as ku

KEYS = 1000
UPDATES = 100_000
CLEAN_TIMEOUT_S = 120


def log_bytes(log_dir: Path) -> int:
    return sum(f.stat().st_size for f in log_dir.glob("*.log"))


def test_compacted_topic_keeps_latest_value_per_key(rill_factory, topic_name):
    rill = rill_factory()
    bootstrap = rill.start()
    ku.create_topic(bootstrap, topic_name, partitions=1, config={
        "cleanup.policy": "compact",
        "segment.bytes": "65536",
        "min.cleanable.dirty.ratio": "0.01",
    })
    latest = {}
    records = []
    for i in range(UPDATES):
        key = f"key-{i % KEYS}".encode()
        value = f"value-{i}-{'x' * (i % 17)}".encode()
        latest[key] = value
        records.append({"key": key, "value": value})
    ku.produce_all(ku.producer(bootstrap, **{"batch.num.messages": 1000}), topic_name, records)
    log_dir = Path(rill.data_dir) / f"{topic_name}-0"
    before = log_bytes(log_dir)
    assert before > 2_000_000, before
    # The cleaner runs on its own: recovery point checkpoint (10 s), then its next pass
    # (log.cleaner.backoff.ms, 15 s).
    deadline = time.monotonic() + CLEAN_TIMEOUT_S
    while log_bytes(log_dir) * 10 > before:
        assert time.monotonic() < deadline, \
            f"log still {log_bytes(log_dir)} bytes of {before} after {CLEAN_TIMEOUT_S}s"
        time.sleep(1)
    after = log_bytes(log_dir)

    seen = {}
    last_offset = -1
    for m in ku.consume_assigned(bootstrap, topic_name, 0, 0, timeout_s=60):
        assert m.offset() > last_offset
        last_offset = m.offset()
        seen[m.key()] = m.value()
    assert seen == latest
    assert last_offset == UPDATES - 1, "the last record (active segment) is never removed"
    print(f"log {before} -> {after} bytes ({before / after:.1f}x smaller)")


def test_keyless_record_into_compacted_topic_is_invalid_record(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=1, config={"cleanup.policy": "compact"})
    p = ku.producer(bootstrap, retries=0)
    reports = []
    p.produce(topic_name, value=b"no key", partition=0,
              on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0
    assert reports and reports[0] is not None
    assert reports[0].code() == KafkaError.INVALID_RECORD, reports[0]
    # With a key it is accepted.
    ku.produce_all(p, topic_name, [{"key": b"k", "value": b"v"}])


def test_delete_records_on_compact_only_topic_is_policy_violation(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=1, config={"cleanup.policy": "compact"})
    ku.produce_all(ku.producer(bootstrap), topic_name,
                   [{"key": b"k%d" % i, "value": b"v"} for i in range(10)])
    a = ku.admin(bootstrap)
    futs = a.delete_records([TopicPartition(topic_name, 0, 5)])
    with pytest.raises(KafkaException) as ei:
        list(futs.values())[0].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.POLICY_VIOLATION
