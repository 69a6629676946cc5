"""Topic and broker configs through confluent-kafka's AdminClient: alter_configs and
incremental_alter_configs on topics (every kind of value, invalid ones refused with Kafka's
code) and on the broker (dynamic configs applied at once and kept across a restart; read-only
and invalid ones refused with INVALID_REQUEST, as Apache Kafka 4.4 answers; the log cleaner's
dynamic settings). confluent-kafka's ConfigResource refuses an empty name, so the cluster
default (resource "") is tested over the wire in crates/broker/tests/broker_configs.rs."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)

import kafkautil as ku

SET = AlterConfigOpType.SET
DELETE = AlterConfigOpType.DELETE
APPEND = AlterConfigOpType.APPEND
SUBTRACT = AlterConfigOpType.SUBTRACT


def incremental(a, rtype, name, ops):
    r = ConfigResource(rtype, name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
    a.incremental_alter_configs([r])[r].result(timeout=30)


def refused(fn):
    with pytest.raises(KafkaException) as ei:
        fn()
    return ei.value.args[0].code()


def described(a, rtype, name):
    r = ConfigResource(rtype, name)
    return a.describe_configs([r])[r].result(timeout=30)


def test_topic_configs_alter_and_incremental_alter(bootstrap, topic_name):
    a = ku.admin(bootstrap)
    ku.create_topic(bootstrap, topic_name, config={"compression.type": "lz4", "delete.retention.ms": "1000"})
    d = described(a, ResourceType.TOPIC, topic_name)
    assert d["compression.type"].value == "lz4"
    assert d["delete.retention.ms"].value == "1000"
    assert d["max.compaction.lag.ms"].value == "9223372036854775807"

    incremental(a, ResourceType.TOPIC, topic_name, [
        ("min.cleanable.dirty.ratio", "0.25", SET),
        ("message.timestamp.before.max.ms", "60000", SET),
        ("delete.retention.ms", None, DELETE),
        ("cleanup.policy", "compact", APPEND),
        ("leader.replication.throttled.replicas", "*", SET),
    ])
    d = described(a, ResourceType.TOPIC, topic_name)
    assert d["min.cleanable.dirty.ratio"].value == "0.25"
    assert d["message.timestamp.before.max.ms"].value == "60000"
    assert d["delete.retention.ms"].value == "86400000"
    assert d["cleanup.policy"].value == "delete,compact"
    assert d["leader.replication.throttled.replicas"].value == "*"
    incremental(a, ResourceType.TOPIC, topic_name, [("cleanup.policy", "delete", SUBTRACT)])
    assert described(a, ResourceType.TOPIC, topic_name)["cleanup.policy"].value == "compact"

    for key, bad in [("compression.type", "brotli"), ("min.insync.replicas", "0"),
                     ("min.cleanable.dirty.ratio", "2"), ("preallocate", "maybe"),
                     ("no.such.config", "1"), ("message.timestamp.type", "logappendtime")]:
        code = refused(lambda: incremental(a, ResourceType.TOPIC, topic_name, [(key, bad, SET)]))
        assert code == KafkaError.INVALID_CONFIG, (key, bad, code)

    # Legacy AlterConfigs replaces every override.
    r = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.ms": "123456"})
    a.alter_configs([r])[r].result(timeout=30)
    d = described(a, ResourceType.TOPIC, topic_name)
    assert d["retention.ms"].value == "123456"
    assert d["compression.type"].value == "producer"
    assert d["cleanup.policy"].value == "delete"


def test_broker_configs_change_at_runtime_and_survive_a_restart(rill_factory, topic_name):
    r1 = rill_factory()
    bs = r1.start()
    a = ku.admin(bs)
    broker_id = str(next(iter(a.list_topics(timeout=10).brokers)))
    ku.create_topic(bs, topic_name)
    p = ku.producer(bs, acks="all", **{"message.timeout.ms": 10000, "retries": 0})
    big = b"x" * 200_000

    def send(value):
        errors = []
        p.produce(topic_name, value=value, on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        return errors[0]

    assert send(big) is None
    incremental(a, ResourceType.BROKER, broker_id, [("message.max.bytes", "100000", SET)])
    d = described(a, ResourceType.BROKER, broker_id)
    assert d["message.max.bytes"].value == "100000"
    assert d["message.max.bytes"].source == 2  # DYNAMIC_BROKER_CONFIG
    err = send(big)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err

    # Read-only and invalid: INVALID_REQUEST, as Kafka 4.4.
    for key, value in [("node.id", "9"), ("log.dirs", "/tmp"), ("message.max.bytes", "abc"),
                       ("log.retention.ms", "-5")]:
        code = refused(lambda: incremental(a, ResourceType.BROKER, broker_id, [(key, value, SET)]))
        assert code == KafkaError.INVALID_REQUEST, (key, value, code)

    r1.stop()
    bs = r1.start()
    a = ku.admin(bs)
    assert described(a, ResourceType.BROKER, broker_id)["message.max.bytes"].value == "100000"
    p = ku.producer(bs, acks="all", **{"message.timeout.ms": 10000, "retries": 0})
    err = send(big)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err

    r = ConfigResource(ResourceType.BROKER, broker_id, set_config={"log.retention.ms": "3600000"})
    a.alter_configs([r])[r].result(timeout=30)
    d = described(a, ResourceType.BROKER, broker_id)
    assert d["message.max.bytes"].source == 5, "legacy alter replaced the broker's configs"
    t = described(a, ResourceType.TOPIC, topic_name)
    assert t["retention.ms"].value == "3600000"
    assert send(big) is None


def described_until(a, rtype, name, key, value, timeout_s=15):
    """The description once `key` shows `value` (Kafka's broker sees a change when the
    controller's record reaches it, a moment after the call returns; rill at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        d = described(a, rtype, name)
        if d[key].value == value or time.monotonic() > deadline:
            return d
        time.sleep(0.05)


def test_cleaner_settings_on_the_broker(bootstrap):
    """The log cleaner's settings are dynamic broker configs (Kafka 4.4's
    LogCleaner.RECONFIGURABLE_CONFIGS): set and described as DYNAMIC_BROKER_CONFIG, Kafka's
    limits refused with INVALID_REQUEST, replaced by a legacy AlterConfigs, deleted back to the
    default. Leaves the broker as it found it."""
    a = ku.admin(bootstrap)
    broker_id = str(next(iter(a.list_topics(timeout=10).brokers)))
    B = ResourceType.BROKER
    threads, backoff = "log.cleaner.threads", "log.cleaner.backoff.ms"
    d = described(a, B, broker_id)
    assert (d[threads].value, d[threads].source) == ("1", 5)  # DEFAULT_CONFIG
    assert d["log.cleaner.io.max.bytes.per.second"].value == "1.7976931348623157E308"
    assert d["log.cleaner.io.buffer.size"].value == "524288"
    try:
        incremental(a, B, broker_id, [(threads, "2", SET)])
        d = described_until(a, B, broker_id, threads, "2")
        assert (d[threads].value, d[threads].source) == ("2", 2)  # DYNAMIC_BROKER_CONFIG
        for key, bad in [(threads, "5"), (threads, "0"), (backoff, "-1"),
                         ("log.cleaner.io.max.bytes.per.second", "fast")]:
            code = refused(lambda: incremental(a, B, broker_id, [(key, bad, SET)]))
            assert code == KafkaError.INVALID_REQUEST, (key, bad, code)
        # Legacy AlterConfigs replaces the broker's whole dynamic set.
        r = ConfigResource(B, broker_id, set_config={backoff: "1000"})
        a.alter_configs([r])[r].result(timeout=30)
        d = described_until(a, B, broker_id, threads, "1")
        assert (d[backoff].value, d[backoff].source) == ("1000", 2)
        assert (d[threads].value, d[threads].source) == ("1", 5)
    finally:
        incremental(a, B, broker_id, [(threads, None, DELETE), (backoff, None, DELETE)])
    d = described_until(a, B, broker_id, backoff, "15000")
    assert (d[backoff].value, d[backoff].source) == ("15000", 5)


def test_group_configs_alter_and_incremental_alter(bootstrap, topic_name):
    """GROUP resources (Kafka 4.x group configs): set, delete, legacy replace; bad values,
    unknown keys and APPEND refused with INVALID_CONFIG, as Apache Kafka 4.4 answers."""
    a = ku.admin(bootstrap)
    group = "cfg-" + topic_name
    d = described(a, ResourceType.GROUP, group)
    assert d["consumer.session.timeout.ms"].value == "45000"
    assert d["share.auto.offset.reset"].value == "latest"
    assert d["share.isolation.level"].value == "read_uncommitted"

    incremental(a, ResourceType.GROUP, group, [
        ("consumer.session.timeout.ms", "50000", SET),
        ("consumer.heartbeat.interval.ms", "6000", SET),
        ("share.auto.offset.reset", "earliest", SET),
        ("share.isolation.level", "read_committed", SET),
    ])
    d = described(a, ResourceType.GROUP, group)
    assert d["consumer.session.timeout.ms"].value == "50000"
    assert d["consumer.heartbeat.interval.ms"].value == "6000"
    assert d["share.isolation.level"].value == "read_committed"
    incremental(a, ResourceType.GROUP, group, [("consumer.heartbeat.interval.ms", None, DELETE)])
    assert described(a, ResourceType.GROUP, group)["consumer.heartbeat.interval.ms"].value == "5000"

    for key, bad, op in [("consumer.session.timeout.ms", "1000", SET),
                         ("consumer.session.timeout.ms", "abc", SET),
                         ("share.record.lock.duration.ms", "999", SET),
                         ("share.auto.offset.reset", "bogus", SET),
                         ("no.such.config", "1", SET),
                         ("streams.rack.aware.assignment.tags", "a", APPEND)]:
        code = refused(lambda: incremental(a, ResourceType.GROUP, group, [(key, bad, op)]))
        assert code == KafkaError.INVALID_CONFIG, (key, bad, code)
    assert described(a, ResourceType.GROUP, group)["consumer.session.timeout.ms"].value == "50000"

    # Legacy AlterConfigs replaces the group's whole set.
    r = ConfigResource(ResourceType.GROUP, group, set_config={"share.delivery.count.limit": "3"})
    a.alter_configs([r])[r].result(timeout=30)
    d = described(a, ResourceType.GROUP, group)
    assert d["share.delivery.count.limit"].value == "3"
    assert d["consumer.session.timeout.ms"].value == "45000"
    assert d["share.isolation.level"].value == "read_uncommitted"
