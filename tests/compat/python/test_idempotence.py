"""Idempotent producers under faults: confluent-kafka (librdkafka) produces through a proxy
that cuts connections at random, and across a broker SIGKILL; the log must hold each record
exactly once, in order.

Needs the broker to advertise the proxy (`--advertised-listeners`), so it runs against rill
only (skipped with KAFKA_BOOTSTRAP)."""
import threading
import time

import kafkautil as ku
from faultproxy import CuttingProxy

RECORDS = 20_000
PAD = b"x" * 100


def _value(i):
    return b"r-%06d-" % i + PAD


def _idempotent_producer(address):
    return ku.producer(address, **{
        "enable.idempotence": True, "acks": "all",
        "max.in.flight.requests.per.connection": 5, "linger.ms": 2,
        "batch.num.messages": 200, "message.timeout.ms": 120_000,
        "retry.backoff.ms": 20, "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100,
        "socket.connection.setup.timeout.ms": 5000,
    })


def _produce(p, topic, partitions, errors, delivered, hooks=None):
    lock = threading.Lock()

    def cb(err, msg):
        with lock:
            if err is not None:
                errors.append(str(err))
            else:
                delivered.append((msg.partition(), msg.value()))

    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic, value=_value(i), partition=i % partitions, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 200 == 0:
            p.poll(0)
        if hooks and i in hooks:
            hooks[i]()


def _check_exactly_once(bootstrap, topic, partitions):
    for part in range(partitions):
        want = [_value(i) for i in range(part, RECORDS, partitions)]
        got = ku.consume_assigned(bootstrap, topic, partition=part, count=None,
                                  timeout_s=60)
        values = [m.value() for m in got]
        dups = len(values) - len(set(values))
        assert dups == 0, f"partition {part}: {dups} records stored twice"
        assert values == want, (f"partition {part}: {len(values)} records, expected {len(want)}, "
                                f"first difference at index "
                                f"{next((i for i, (a, b) in enumerate(zip(values, want)) if a != b), min(len(values), len(want)))}")


def test_idempotent_producer_through_connection_cuts(rill_factory, topic_name):
    proxy = CuttingProxy(seed=1234, min_bytes=5_000, max_bytes=100_000)
    try:
        rill = rill_factory(["--advertised-listeners", proxy.address])
        direct = rill.start()
        proxy.upstream = int(direct.rsplit(":", 1)[1])
        ku.create_topic(direct, topic_name, partitions=2)
        p = _idempotent_producer(proxy.address)
        errors, delivered = [], []
        proxy.cutting = True
        _produce(p, topic_name, 2, errors, delivered)
        deadline = time.monotonic() + 120
        while len(p) > 0 and time.monotonic() < deadline:
            p.poll(0.1)
        proxy.cutting = False
        assert p.flush(30) == 0
        assert not errors, errors[:5]
        assert len(delivered) == RECORDS
        assert proxy.cuts >= 3, f"only {proxy.cuts} cuts: the test did not exercise retries"
        _check_exactly_once(proxy.address, topic_name, 2)
    finally:
        proxy.stop()


def test_retries_after_a_broker_sigkill_are_still_duplicates(rill_factory, topic_name):
    """The broker is SIGKILLed three times in the middle of the stream and restarted on the
    same data dir; the producer's in-flight batches, some already stored by the killed
    process, are retried to the new one, which must recognise them from its rebuilt producer
    state."""
    proxy = CuttingProxy(seed=99)
    try:
        current = [rill_factory(["--advertised-listeners", proxy.address])]
        direct = current[0].start()
        proxy.upstream = int(direct.rsplit(":", 1)[1])
        ku.create_topic(direct, topic_name, partitions=1)
        p = _idempotent_producer(proxy.address)
        errors, delivered = [], []
        kills = []

        def kill_and_restart():
            current[0].kill()
            proxy.drop_all()
            current[0] = rill_factory(["--advertised-listeners", proxy.address])
            proxy.upstream = int(current[0].start().rsplit(":", 1)[1])
            kills.append(len(delivered))

        hooks = {RECORDS * k // 4: kill_and_restart for k in (1, 2, 3)}
        _produce(p, topic_name, 1, errors, delivered, hooks)
        assert p.flush(120) == 0
        assert len(kills) == 3
        assert not errors, errors[:5]
        assert len(delivered) == RECORDS
        _check_exactly_once(proxy.address, topic_name, 1)
    finally:
        proxy.stop()
