"""Topic administration through confluent-kafka AdminClient and kafka-python KafkaAdminClient."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

import kafkautil as ku


def wait_gone(a, name, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if name not in a.list_topics(timeout=10).topics:
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {name} still listed {timeout_s}s after delete")


def test_confluent_create_describe_delete(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    ku.create_topic(bootstrap, topic_name, partitions=3)

    md = a.list_topics(timeout=10)
    assert topic_name in md.topics
    assert sorted(md.topics[topic_name].partitions) == [0, 1, 2]
    assert len(md.brokers) >= 1
    for p in md.topics[topic_name].partitions.values():
        assert p.leader in md.brokers
        assert p.replicas == [p.leader]

    desc = a.describe_topics(TopicCollection([topic_name]))[topic_name].result(timeout=30)
    assert desc.name == topic_name
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert not desc.is_internal

    # creating it again is an error, and the error is TOPIC_ALREADY_EXISTS
    futs = a.create_topics([NewTopic(topic_name, 3, 1)], operation_timeout=30)
    with pytest.raises(KafkaException) as ei:
        futs[topic_name].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    a.delete_topics([topic_name], operation_timeout=30)[topic_name].result(timeout=30)
    wait_gone(a, topic_name)


def test_confluent_create_with_config_and_describe_configs(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    ku.create_topic(bootstrap, topic_name, partitions=1,
                    config={"retention.ms": "3600000", "cleanup.policy": "delete"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    cfg = a.describe_configs([res])[res].result(timeout=30)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["cleanup.policy"].value == "delete"
    a.delete_topics([topic_name], operation_timeout=30)[topic_name].result(timeout=30)


def test_confluent_delete_unknown_topic_fails(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    with pytest.raises(KafkaException) as ei:
        a.delete_topics([topic_name], operation_timeout=30)[topic_name].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_kafka_python_admin(bootstrap, topic_name):
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    from kafka.errors import TopicAlreadyExistsError

    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        a.create_topics([KNewTopic(topic_name, num_partitions=2, replication_factor=1)])
        deadline = time.monotonic() + 30
        while topic_name not in a.list_topics():
            assert time.monotonic() < deadline, "created topic never listed"
            time.sleep(0.2)
        [d] = a.describe_topics([topic_name])
        assert d["name"] == topic_name
        assert d["error_code"] == 0
        assert sorted(p["partition_index"] for p in d["partitions"]) == [0, 1]

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([KNewTopic(topic_name, num_partitions=2, replication_factor=1)])

        a.delete_topics([topic_name])
        deadline = time.monotonic() + 30
        while topic_name in a.list_topics():
            assert time.monotonic() < deadline, "deleted topic still listed"
            time.sleep(0.2)
    finally:
        a.close()
