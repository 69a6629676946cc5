"""confluent-kafka's ShareConsumer (KIP-932, a preview in librdkafka 2.16): four share
consumers on a one-partition topic share 10 000 records, each accepted exactly once across
them; every tenth record is released on its first delivery and accepted on its second, with
the delivery count the client reports. The same scenario as the Java ShareGroupsTest.

The group starts at the latest offset (share.auto.offset.reset's default), so warm-up records
are produced until a consumer sees one; from then on every record is in the share-partition.
"""
import threading
import time

from confluent_kafka import AcknowledgeType, ShareConsumer

from kafkautil import create_topic, producer

RECORDS = 10_000
CONSUMERS = 4


def test_four_share_consumers_share_one_partition(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    group = "share-" + topic_name
    lock = threading.Lock()
    accepted = {}  # key -> (consumer, delivery count) of its one acceptance
    released = {}  # key -> releases
    duplicates = []
    errors = []
    warm = threading.Event()
    stop = threading.Event()

    def run(cid):
        try:
            c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                               "share.acknowledgement.mode": "explicit"})
            c.subscribe([topic_name])
            while not stop.is_set():
                msgs = c.poll(0.2)
                for m in msgs:
                    if m.error():
                        errors.append(f"consumer {cid}: {m.error()}")
                        continue
                    key = m.key().decode()
                    count = m.delivery_count()
                    if key == "w":
                        warm.set()
                        c.acknowledge(m, AcknowledgeType.ACCEPT)
                        continue
                    if int(key) % 10 == 0 and count == 1:
                        with lock:
                            released[key] = released.get(key, 0) + 1
                        c.acknowledge(m, AcknowledgeType.RELEASE)
                        continue
                    with lock:
                        if key in accepted:
                            duplicates.append((key, accepted[key], (cid, count)))
                        else:
                            accepted[key] = (cid, count)
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
                if msgs:
                    c.commit_sync(30)
            c.close()
        except Exception as e:  # reported below; a thread's exception is otherwise lost
            errors.append(f"consumer {cid}: {e!r}")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CONSUMERS)]
    for t in threads:
        t.start()
    p = producer(bootstrap, **{"linger.ms": 5})
    deadline = time.monotonic() + 60
    while not warm.is_set():
        assert time.monotonic() < deadline, f"no consumer received a warm-up record in 60 s: {errors}"
        p.produce(topic_name, key=b"w", value=b"warm-up")
        p.flush(10)
        time.sleep(0.2)
    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic_name, key=str(i).encode(), value=f"v{i}".encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0
    deadline = time.monotonic() + 180
    while len(accepted) < RECORDS and not duplicates and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(60)
    assert not duplicates, f"accepted twice: {duplicates[:5]}"
    assert len(accepted) == RECORDS, f"{len(accepted)} accepted; errors: {errors[:5]}"
    for i in range(RECORDS):
        key = str(i)
        _, count = accepted[key]
        if i % 10 == 0:
            assert released.get(key) == 1, f"record {i} released once"
            assert count == 2, f"record {i} accepted on its second delivery"
        else:
            assert count == 1, f"record {i} accepted on its first delivery"
    busy = {cid for cid, _ in accepted.values()}
    assert len(busy) >= 2, f"records spread over consumers: {busy}"
