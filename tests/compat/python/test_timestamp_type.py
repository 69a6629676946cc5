"""message.timestamp.type through confluent-kafka, as Kafka answers it.

test_log_append_time_topic_stamps_records_with_the_broker_time
    A topic created with LogAppendTime: records produced with an hour-old timestamp come back
    (delivery reports and consumer) as LOG_APPEND_TIME with the broker's time of the append,
    and offsets_for_times finds them by it. DescribeConfigs shows the setting.
test_create_time_is_the_default
    Without the setting a record keeps the producer's timestamp, as CREATE_TIME.
test_bad_timestamp_type_is_invalid_config
    Creating a topic with a value that is not CreateTime or LogAppendTime fails with
    INVALID_CONFIG.
"""
import time

import pytest
from confluent_kafka import (TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, KafkaError,
                             KafkaException, TopicPartition)
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

import kafkautil as ku

# The broker may run on another clock (KAFKA_BOOTSTRAP): allow this much skew.
SKEW_MS = 5_000


def now_ms():
    return int(time.time() * 1000)


def test_log_append_time_topic_stamps_records_with_the_broker_time(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    a = ku.admin(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = a.describe_configs([res])[res].result(timeout=30)
    assert configs["message.timestamp.type"].value == "LogAppendTime"

    produced_ts = ku.recent_ts()
    reports = []
    p = ku.producer(bootstrap)
    before = now_ms()
    for i in range(10):
        p.produce(topic_name, value=f"v{i}".encode(), partition=0, timestamp=produced_ts + i,
                  on_delivery=lambda err, msg: reports.append((err, msg.timestamp())))
    assert p.flush(60) == 0
    after = now_ms()
    assert len(reports) == 10
    for err, (kind, ts) in reports:
        assert err is None
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before - SKEW_MS <= ts <= after + SKEW_MS, (before, ts, after)

    msgs = ku.consume_assigned(bootstrap, topic_name, 0, 0, count=10)
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(10)]
    stamped = [m.timestamp() for m in msgs]
    for kind, ts in stamped:
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before - SKEW_MS <= ts <= after + SKEW_MS, (before, ts, after)
    # The delivery reports carried the same times the consumer reads.
    assert sorted(ts for _, (_, ts) in reports) == sorted(ts for _, ts in stamped)

    c = ku.consumer(bootstrap)
    try:
        first_time = stamped[0][1]
        found = c.offsets_for_times([TopicPartition(topic_name, 0, first_time)], timeout=30)
        assert found[0].offset == 0
        # Nothing is stamped with the producer's (older) time, so it finds the first record
        # too; one past the last append time finds nothing (-1).
        found = c.offsets_for_times([TopicPartition(topic_name, 0, produced_ts)], timeout=30)
        assert found[0].offset == 0
        last_time = max(ts for _, ts in stamped)
        found = c.offsets_for_times([TopicPartition(topic_name, 0, last_time + 1)], timeout=30)
        assert found[0].offset == -1
    finally:
        c.close()


def test_create_time_is_the_default(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name)
    produced_ts = ku.recent_ts()
    ku.produce_all(ku.producer(bootstrap), topic_name, [{"value": b"x", "timestamp": produced_ts}])
    [m] = ku.consume_assigned(bootstrap, topic_name, 0, 0, count=1)
    assert m.timestamp() == (TIMESTAMP_CREATE_TIME, produced_ts)


def test_bad_timestamp_type_is_invalid_config(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    for bad in ("logappendtime", "Now"):
        futs = a.create_topics([NewTopic(topic_name, 1, 1,
                                         config={"message.timestamp.type": bad})],
                               operation_timeout=30)
        with pytest.raises(KafkaException) as ei:
            futs[topic_name].result(timeout=30)
        assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG, bad
