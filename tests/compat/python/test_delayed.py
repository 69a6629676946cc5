"""Delayed delivery (rill.delivery.delayed.enable) through confluent-kafka. Rill only: Apache
Kafka has no delayed delivery, so these skip under KAFKA_BOOTSTRAP.

test_delay_headers_deliver_no_earlier_than_due_and_in_due_order
    Records produced with rill-delay-ms / rill-deliver-at headers reach a plain consumer no
    earlier than due, in due-time order, each once, with the rill-delayed-* headers added and
    the producer's own headers kept; DescribeConfigs shows the topic setting.
test_garbage_delay_header_fails_the_batch_with_invalid_record
    A non-decimal rill-delay-ms fails the produce with INVALID_RECORD (the delivery report's
    error) and nothing is delivered.
test_idempotent_producer_with_delays
    confluent-kafka's idempotent producer (its default with enable.idempotence) produces
    delayed records; each is delivered once.
test_a_cancel_before_the_due_time_stops_delivery
    A rill-delay-cancel record naming a waiting record's rill-delay-id stops its delivery.
"""
import time

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import ConfigResource, ResourceType

import kafkautil as ku
from conftest import external_bootstrap

pytestmark = pytest.mark.skipif(external_bootstrap() is not None,
                                reason="delayed delivery is a rill feature")

DELAYED = {"rill.delivery.delayed.enable": "true"}


def now_ms():
    return int(time.time() * 1000)


def headers_of(msg):
    return {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}


def test_delay_headers_deliver_no_earlier_than_due_and_in_due_order(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, config=DELAYED)
    a = ku.admin(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = a.describe_configs([res])[res].result(timeout=30)
    assert configs["rill.delivery.delayed.enable"].value == "true"

    p = ku.producer(bootstrap)
    sent = {}
    reports = []
    delays = [900, 100, 500, 300, 700, 0]
    for i, d in enumerate(delays):
        sent[f"d{i}"] = now_ms() + d
        p.produce(topic_name, key=f"k{i}".encode(), value=f"d{i}".encode(), partition=0,
                  headers=[("rill-delay-ms", str(d).encode()), ("mine", b"x")],
                  on_delivery=lambda err, msg: reports.append(err))
    at = now_ms() + 400
    sent["at"] = at
    p.produce(topic_name, value=b"at", partition=0,
              headers=[("rill-deliver-at", str(at).encode())],
              on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(60) == 0
    assert reports == [None] * 7

    msgs = ku.consume_assigned(bootstrap, topic_name, 0, 0, count=7)
    got = [m.value().decode() for m in msgs]
    assert sorted(got) == sorted(sent), got
    previous = 0
    for m in msgs:
        h = headers_of(m)
        due = int(h["rill-delayed-deliver-at"])
        assert due >= previous, "due-time order"
        previous = due
        value = m.value().decode()
        # Sent before `sent` was computed, so the broker's due time is at or after it... give
        # or take the produce's own latency, which only makes the due time later.
        assert due >= sent[value] - 50, (value, due, sent[value])
        assert m.timestamp()[1] >= due, (value, m.timestamp(), due)
        assert "rill-delayed-produce-timestamp" in h
        assert "rill-delayed-source" in h
        if value != "at":
            assert h["mine"] == "x"
    assert got[0] == "d5" and got[-1] == "d0", got


def test_garbage_delay_header_fails_the_batch_with_invalid_record(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, config=DELAYED)
    p = ku.producer(bootstrap, **{"retries": 0})
    reports = []
    p.produce(topic_name, value=b"bad", partition=0, headers=[("rill-delay-ms", b"soon")],
              on_delivery=lambda err, msg: reports.append(err))
    p.flush(60)
    assert len(reports) == 1
    assert reports[0] is not None
    assert reports[0].code() == KafkaError.INVALID_RECORD, reports[0]
    time.sleep(0.3)
    assert ku.consume_assigned(bootstrap, topic_name, 0, 0, count=None, timeout_s=2) == []


def test_idempotent_producer_with_delays(bootstrap, topic_name):
    ku.create_topic(bootstrap, topic_name, config=DELAYED)
    p = ku.producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 5})
    n = 500
    for i in range(n):
        p.produce(topic_name, value=f"v{i}".encode(), partition=0,
                  headers=[("rill-delay-ms", str((i * 7919) % 800).encode())])
    assert p.flush(60) == 0
    msgs = ku.consume_assigned(bootstrap, topic_name, 0, 0, count=n)
    values = [m.value().decode() for m in msgs]
    assert sorted(values) == sorted(f"v{i}" for i in range(n))
    dues = [int(headers_of(m)["rill-delayed-deliver-at"]) for m in msgs]
    assert dues == sorted(dues)


def test_a_cancel_before_the_due_time_stops_delivery(bootstrap, topic_name):
    """A record with rill-delay-id, cancelled by a rill-delay-cancel record before it is due,
    is never delivered; its neighbour without a cancel is, and the cancel itself is not."""
    ku.create_topic(bootstrap, topic_name, config=DELAYED)
    p = ku.producer(bootstrap)
    reports = []
    p.produce(topic_name, value=b"cancelled", partition=0,
              headers=[("rill-delay-ms", b"1500"), ("rill-delay-id", b"order-42")],
              on_delivery=lambda err, msg: reports.append(err))
    p.produce(topic_name, value=b"kept", partition=0,
              headers=[("rill-delay-ms", b"1500"), ("rill-delay-id", b"order-43")],
              on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(60) == 0
    p.produce(topic_name, value=b"", partition=0, headers=[("rill-delay-cancel", b"order-42")],
              on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(60) == 0
    assert reports == [None] * 3
    # Both were due at the same time: once "kept" is in, the other would be too.
    first = ku.consume_assigned(bootstrap, topic_name, 0, 0, count=1, timeout_s=30)
    assert [m.value().decode() for m in first] == ["kept"]
    time.sleep(0.5)
    msgs = ku.consume_assigned(bootstrap, topic_name, 0, 0, count=None, timeout_s=10)
    assert [m.value().decode() for m in msgs] == ["kept"]
