"""Small bounded helpers over confluent-kafka used by several tests."""
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

OP_TIMEOUT_S = 30


def recent_ts():
    """An hour ago in ms, whole seconds. Explicit record timestamps must be recent: a broker
    deletes records older than retention.ms (7 days by default), Kafka at its next check."""
    return int(time.time()) * 1000 - 3_600_000


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap, name, partitions=1, config=None):
    a = admin(bootstrap)
    futs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                     config=config or {})], operation_timeout=OP_TIMEOUT_S)
    futs[name].result(timeout=OP_TIMEOUT_S)
    wait_for_topic(bootstrap, name, partitions)
    wait_list_offsets(bootstrap, name, partitions)
    return name


def wait_list_offsets(bootstrap, name, partitions, timeout_s=OP_TIMEOUT_S):
    """Metadata can name a leader before that leader serves the partition; an acks=0 produce
    sent in that window is silently dropped (acks=0 semantics). Wait until ListOffsets answers."""
    c = consumer(bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        for part in range(partitions):
            while True:
                try:
                    c.get_watermark_offsets(TopicPartition(name, part), timeout=5, cached=False)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
    finally:
        c.close()


def wait_for_topic(bootstrap, name, partitions, timeout_s=OP_TIMEOUT_S):
    """Metadata can lag topic creation by a moment; poll it, bounded."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = a.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values()):
            return md
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not visible with {partitions} partitions in {timeout_s}s")


def producer(bootstrap, **conf):
    c = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    c.update(conf)
    return Producer(c)


def produce_all(p, topic, records, partition=0):
    """records: iterable of dicts with value/key/headers/timestamp. Returns delivery reports
    in send order as (err, partition, offset). Fails on any delivery error."""
    reports = []

    def cb(err, msg):
        reports.append((err, msg.partition(), msg.offset()))

    n = 0
    for r in records:
        kw = {"value": r.get("value"), "partition": r.get("partition", partition), "on_delivery": cb}
        for f in ("key", "headers", "timestamp"):
            if r.get(f) is not None:
                kw[f] = r[f]
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 10000 == 0:
            p.poll(0)
    left = p.flush(OP_TIMEOUT_S * 2)
    assert left == 0, f"{left} messages not delivered in time"
    errs = [e for e, _, _ in reports if e is not None]
    assert not errs, f"delivery errors: {errs[:5]}"
    assert len(reports) == n
    return reports


def consumer(bootstrap, **conf):
    # librdkafka insists on a group.id even for assign(); nothing here joins or commits.
    c = {"bootstrap.servers": bootstrap, "group.id": "rill-compat-assign-only",
         "enable.auto.commit": False, "enable.auto.offset.store": False,
         "auto.offset.reset": "error", "enable.partition.eof": True}
    c.update(conf)
    return Consumer(c)


def consume_assigned(bootstrap, topic, partition=0, offset=0, count=None, timeout_s=60, **conf):
    """assign()+consume from `offset` until `count` messages or partition EOF. Bounded."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        out = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = c.consume(num_messages=10000, timeout=0.5)
            eof = False
            for m in batch:
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        eof = True
                        continue
                    raise KafkaException(m.error())
                out.append(m)
            if count is not None and len(out) >= count:
                break
            if count is None and eof:
                break
        else:
            raise AssertionError(f"timed out after {len(out)} messages (wanted {count})")
        return out
    finally:
        c.close()
