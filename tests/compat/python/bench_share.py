"""Share group benchmark (run by scripts/bench-share): confluent-kafka ShareConsumers (the
KIP-932 preview in librdkafka 2.16, threads of one process) on a one-partition topic, with 1,
4 and 16 consumers. Each run produces RECORDS 100-byte records at full speed while the
consumers accept them (explicit acknowledgement, commit_sync after each poll), and prints one
JSON line: records/s from the first produce to the last confirmed acceptance, and produce-to-
accept latency p50 / p99 / max (record CreateTime to the commit_sync that confirmed its
acceptance). The same client and workload against whichever broker BOOTSTRAP names, so rill
and Kafka 4.4 are compared on equal terms.

usage: bench_share.py BOOTSTRAP LABEL   (env: RECORDS, default 20000; CONSUMERS, default 1,4,16)
"""
import json
import os
import sys
import threading
import time
import uuid

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

RECORDS = int(os.environ.get("RECORDS", "20000"))
CONSUMERS = [int(c) for c in os.environ.get("CONSUMERS", "1,4,16").split(",")]
RUN_TIMEOUT_S = 300


def now_ms():
    return time.time() * 1000.0


def setup(bootstrap, topic, group):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    r = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([r])[r].result(30)


def run(bootstrap, label, consumers):
    topic = f"bench-share-{uuid.uuid4().hex[:8]}"
    group = "g-" + topic
    setup(bootstrap, topic, group)
    lock = threading.Lock()
    latencies = []
    last_accept = [0.0]
    stop = threading.Event()
    errors = []

    def consume(cid):
        try:
            c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                               "share.acknowledgement.mode": "explicit"})
            c.subscribe([topic])
            while not stop.is_set():
                msgs = c.poll(0.1)
                stamps = []
                for m in msgs:
                    if m.error():
                        continue
                    stamps.append(m.timestamp()[1])
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
                if not msgs:
                    continue
                c.commit_sync(30)
                done = now_ms()
                with lock:
                    latencies.extend(done - t for t in stamps)
                    last_accept[0] = done
            c.close()
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(consumers)]
    for t in threads:
        t.start()
    time.sleep(2)  # let the members join before the clock starts
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    value = b"x" * 100
    first_produce = now_ms()
    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(120)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        with lock:
            if len(latencies) >= RECORDS:
                break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    with lock:
        got = sorted(latencies)
        elapsed_s = (last_accept[0] - first_produce) / 1000.0
    pct = lambda q: round(got[min(len(got) - 1, int(q * len(got)))], 1) if got else None
    print(json.dumps({
        "broker": label, "consumers": consumers, "records": RECORDS, "accepted": len(got),
        "records_per_s": round(len(got) / elapsed_s) if elapsed_s > 0 else None,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(got[-1], 1) if got else None,
        "errors": errors[:3],
    }), flush=True)


def main():
    bootstrap, label = sys.argv[1], sys.argv[2]
    for n in CONSUMERS:
        run(bootstrap, label, n)


if __name__ == "__main__":
    main()
