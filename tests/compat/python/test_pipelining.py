"""Connection pipelining with librdkafka: an idempotent acks=all producer with
max.in.flight=5 and linger.ms=0 keeps several Produce requests in flight on one connection
while earlier ones wait for their group-commit sync. The broker must start them in request
order (no sequence errors, every record once, in order) and answer them in request order;
its /metrics must show that requests were indeed started behind unanswered ones.

Reads the broker's own /metrics, so it runs against rill only (skipped with KAFKA_BOOTSTRAP)."""
import re
import socket
import threading
import urllib.request

import kafkautil as ku

RECORDS = 20_000
PARTITIONS = 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(i):
    return b"p-%06d-" % i + b"y" * 200


def _pipelined_requests(metrics_address):
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^rill_pipelined_requests_total (\d+)$", text, re.M)
    assert m, "rill_pipelined_requests_total missing from /metrics"
    return int(m.group(1))


def test_pipelined_idempotent_acks_all_producer_keeps_order(rill_factory, topic_name):
    metrics_address = f"127.0.0.1:{_free_port()}"
    rill = rill_factory(["--metrics-listen", metrics_address])
    bootstrap = rill.start()
    ku.create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    p = ku.producer(bootstrap, **{
        "enable.idempotence": True, "acks": "all",
        "max.in.flight.requests.per.connection": 5, "linger.ms": 0,
        "message.timeout.ms": 120_000,
    })
    before = _pipelined_requests(metrics_address)
    errors, delivered = [], []
    lock = threading.Lock()

    def cb(err, msg):
        with lock:
            if err is not None:
                errors.append(str(err))
            else:
                delivered.append(msg.partition())

    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic_name, value=_value(i), partition=i % PARTITIONS, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 100 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    assert not errors, errors[:5]
    assert len(delivered) == RECORDS
    for part in range(PARTITIONS):
        want = [_value(i) for i in range(part, RECORDS, PARTITIONS)]
        got = [m.value() for m in ku.consume_assigned(bootstrap, topic_name, partition=part,
                                                      count=None, timeout_s=60)]
        assert got == want, f"partition {part}: {len(got)} records, expected {len(want)}"
    pipelined = _pipelined_requests(metrics_address) - before
    assert pipelined > 0, "no Produce request was started behind an unanswered one"
