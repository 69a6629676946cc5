"""Error paths a client must see exactly as Kafka reports them."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewPartitions, NewTopic

import kafkautil as ku


def test_create_topic_invalid_requests(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    cases = {
        topic_name + "-zero": (NewTopic(topic_name + "-zero", num_partitions=0, replication_factor=1),
                               {KafkaError.INVALID_PARTITIONS}),
        topic_name + "-rf": (NewTopic(topic_name + "-rf", num_partitions=1, replication_factor=3),
                             {KafkaError.INVALID_REPLICATION_FACTOR}),
        "bad/name": (NewTopic("bad/name", num_partitions=1, replication_factor=1),
                     {KafkaError.TOPIC_EXCEPTION}),
        "x" * 250: (NewTopic("x" * 250, num_partitions=1, replication_factor=1),
                    {KafkaError.TOPIC_EXCEPTION}),
    }
    for name, (nt, codes) in cases.items():
        with pytest.raises(KafkaException) as ei:
            a.create_topics([nt], operation_timeout=30)[name].result(timeout=30)
        assert ei.value.args[0].code() in codes, f"{name[:40]}: {ei.value.args[0]}"
        assert name not in a.list_topics(timeout=10).topics


def test_create_topic_validate_only(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    a.create_topics([NewTopic(topic_name, 2, 1)], validate_only=True,
                    operation_timeout=30)[topic_name].result(timeout=30)
    time.sleep(0.5)
    assert topic_name not in a.list_topics(timeout=10).topics


def test_create_partitions(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    ku.create_topic(bootstrap, topic_name, partitions=1)
    a.create_partitions([NewPartitions(topic_name, 3)], operation_timeout=30)[topic_name].result(timeout=30)
    ku.wait_for_topic(bootstrap, topic_name, 3)
    ku.wait_list_offsets(bootstrap, topic_name, 3)
    ku.produce_all(ku.producer(bootstrap, acks="all"), topic_name, [{"value": b"p2", "partition": 2}])
    [m] = ku.consume_assigned(bootstrap, topic_name, partition=2, count=1)
    assert m.value() == b"p2"
    # shrinking is refused
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(topic_name, 2)], operation_timeout=30)[topic_name].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS


def test_produce_to_missing_partition_fails(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=1)
    p = ku.producer(bootstrap, acks="all", **{"message.timeout.ms": 5000})
    errs = []
    p.produce(topic_name, value=b"x", partition=5, on_delivery=lambda e, m: errs.append(e))
    p.flush(20)
    assert len(errs) == 1 and errs[0] is not None
    assert errs[0].code() in (KafkaError._UNKNOWN_PARTITION, KafkaError._MSG_TIMED_OUT,
                              KafkaError.UNKNOWN_TOPIC_OR_PART)


def test_record_too_large_is_rejected(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, partitions=1, config={"max.message.bytes": "10000"})
    p = ku.producer(bootstrap, acks="all", **{"message.max.bytes": 1_000_000, "message.timeout.ms": 10000})
    errs = []
    p.produce(topic_name, value=b"z" * 50_000, partition=0, on_delivery=lambda e, m: errs.append(e))
    p.flush(30)
    # a batch holding it is rejected whole, so the small record goes in a batch of its own
    p.produce(topic_name, value=b"small", partition=0, on_delivery=lambda e, m: errs.append(e))
    p.flush(30)
    assert len(errs) == 2
    assert errs[0] is not None and errs[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errs
    assert errs[1] is None, errs
    got = ku.consume_assigned(bootstrap, topic_name, count=1)
    assert [m.value() for m in got] == [b"small"]


def test_fetch_out_of_range(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    ku.produce_all(ku.producer(bootstrap, acks="all"), topic_name, [{"value": b"a"}, {"value": b"b"}])
    c = ku.consumer(bootstrap)   # auto.offset.reset=error: the out-of-range error surfaces
    try:
        c.assign([TopicPartition(topic_name, 0, 1000)])
        deadline = time.monotonic() + 30
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() and m.error().code() != KafkaError._PARTITION_EOF:
                err = m.error()
        assert err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET, err
    finally:
        c.close()
