"""Transaction benchmark workloads over confluent-kafka (librdkafka), for
scripts/bench-transactions, which runs them against a fresh `rill serve` and against Apache Kafka
and prints the table. Each mode prints one JSON object per result on stdout; every loop is
bounded by a count and a time.

  bench_transactions.py throughput BOOTSTRAP TOPIC RECORDS_PER_TXN DURATION_S MAX_TXNS
      one transactional producer (acks=all), 1 KiB records spread round-robin over the topic's
      partitions, a commit after every RECORDS_PER_TXN records, for DURATION_S or MAX_TXNS
      transactions (after one uncounted warm-up transaction): transactions/s, records/s and the
      time commit_transaction() took (it flushes the transaction's records, then EndTxn).
  latency BOOTSTRAP TOPIC RATE RECORDS_PER_TXN DURATION_S
      a read_committed and a read_uncommitted consumer (one process each, assigned to every
      partition from offset 0, started and caught up before the producer starts), then one
      transactional producer paced at RATE records/s of 1 KiB committing every RECORDS_PER_TXN
      records. Each value starts with the CLOCK_MONOTONIC time (ns) at which the record was due
      by the pacing, so a producer held up by a commit shows as latency; each consumer reports
      p50/p99/max of (receive time - due time) and how many records it got (it must be all).
  consume BOOTSTRAP TOPIC ISOLATION PARTITIONS EXPECTED TIMEOUT_S
      one latency consumer (started by `latency`).
  fsync-probe DIR SECONDS
      the machine's commit limit, as DESIGN.md's table measures it: write 4 KiB + fdatasync,
      repeated (at most 20 000 times or SECONDS) in DIR; p50/p99 in microseconds.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from confluent_kafka import KafkaException, TopicPartition

import kafkautil as ku

RECORD_BYTES = 1024
PARTITIONS = 8
OP_TIMEOUT_S = 60
FSYNC_PROBE_MAX = 20_000
HERE = os.path.dirname(os.path.abspath(__file__))


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def pct(sorted_values, p):
    """The p-th percentile (nearest rank) of an ascending list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def emit(obj):
    print(json.dumps(obj), flush=True)


def txn_producer(bootstrap, name):
    return ku.producer(bootstrap, **{
        "transactional.id": f"bench-{name}-{os.getpid()}", "acks": "all",
        "linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576, "transaction.timeout.ms": 60_000})


def produce(p, topic, value, partition):
    for _ in range(10_000):  # bounded wait for queue space
        try:
            p.produce(topic, value=value, partition=partition)
            return
        except BufferError:
            p.poll(0.01)
    raise RuntimeError("producer queue stayed full")


def one_txn(p, topic, n, payload):
    """n records round-robin over the partitions, then commit; returns the commit's seconds."""
    p.begin_transaction()
    for i in range(n):
        produce(p, topic, payload, i % PARTITIONS)
        if i % 1000 == 999:
            p.poll(0)
    started = time.monotonic()
    p.commit_transaction(OP_TIMEOUT_S)
    return time.monotonic() - started


def throughput(bootstrap, topic, per_txn, duration_s, max_txns):
    payload = b"x" * RECORD_BYTES
    p = txn_producer(bootstrap, f"tput-{per_txn}")
    p.init_transactions(OP_TIMEOUT_S)
    one_txn(p, topic, per_txn, payload)  # warm-up: connections, partitions, first batches
    commits = []
    started = time.monotonic()
    deadline = started + duration_s
    while len(commits) < max_txns and time.monotonic() < deadline:
        commits.append(one_txn(p, topic, per_txn, payload))
    elapsed = time.monotonic() - started
    commits.sort()
    emit({"mode": "throughput", "records_per_txn": per_txn, "txns": len(commits),
          "records": len(commits) * per_txn, "elapsed_s": round(elapsed, 3),
          "txn_per_s": len(commits) / elapsed, "rec_per_s": len(commits) * per_txn / elapsed,
          "commit_ms_p50": 1000 * pct(commits, 50), "commit_ms_p99": 1000 * pct(commits, 99)})


def consume(bootstrap, topic, isolation, partitions, expected, timeout_s):
    c = ku.consumer(bootstrap, **{"isolation.level": isolation, "auto.offset.reset": "earliest",
                                  "fetch.max.bytes": 52_428_800})
    latencies = []
    try:
        c.assign([TopicPartition(topic, part, 0) for part in range(partitions)])
        eof = set()
        ready_deadline = time.monotonic() + 30
        while len(eof) < partitions and time.monotonic() < ready_deadline:
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() and m.error().code() == -191:  # _PARTITION_EOF: caught up
                    eof.add(m.partition())
        print("ready", flush=True)
        deadline = time.monotonic() + timeout_s
        # poll(), not consume(num_messages=...): a batch consume waits for its whole timeout
        # unless the batch fills, which would be measured as latency.
        while len(latencies) < expected and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            t = now_ns()
            if m.error():
                if m.error().code() == -191:
                    continue
                raise KafkaException(m.error())
            latencies.append(t - int.from_bytes(m.value()[:8], "big"))
    finally:
        c.close()
    latencies.sort()
    ms = lambda v: None if v is None else v / 1e6  # noqa: E731
    emit({"mode": "latency", "isolation": isolation, "expected": expected,
          "received": len(latencies), "p50_ms": ms(pct(latencies, 50)),
          "p99_ms": ms(pct(latencies, 99)), "max_ms": ms(latencies[-1] if latencies else None)})


def latency(bootstrap, topic, rate, per_txn, duration_s):
    total = rate * duration_s
    consumers = []
    for isolation in ("read_committed", "read_uncommitted"):
        consumers.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "bench_transactions.py"), "consume", bootstrap,
             topic, isolation, str(PARTITIONS), str(total), str(duration_s + 60)],
            stdout=subprocess.PIPE, text=True))
    for c in consumers:  # each prints "ready" once caught up (bounded by its own 30 s)
        line = c.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a consumer did not start: {line!r}")
    p = txn_producer(bootstrap, "latency")
    p.init_transactions(OP_TIMEOUT_S)
    filler = b"x" * (RECORD_BYTES - 8)
    commits = []
    started = now_ns()
    interval_ns = 1_000_000_000 // rate
    sent = 0
    p.begin_transaction()
    while sent < total:
        due = started + sent * interval_ns
        wait = due - now_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        produce(p, topic, due.to_bytes(8, "big") + filler, sent % PARTITIONS)
        sent += 1
        p.poll(0)
        if sent % per_txn == 0 or sent == total:
            t = time.monotonic()
            p.commit_transaction(OP_TIMEOUT_S)
            commits.append(time.monotonic() - t)
            if sent < total:
                p.begin_transaction()
    produced_s = (now_ns() - started) / 1e9
    commits.sort()
    emit({"mode": "producer", "records": sent, "achieved_rate": sent / produced_s,
          "commit_ms_p50": 1000 * pct(commits, 50), "commit_ms_p99": 1000 * pct(commits, 99)})
    for c in consumers:
        out, _ = c.communicate(timeout=duration_s + 120)
        sys.stdout.write(out)
        sys.stdout.flush()
        if c.returncode != 0:
            raise RuntimeError(f"a consumer failed with {c.returncode}")


def fsync_probe(directory, seconds):
    path = os.path.join(directory, "fsync-probe")
    block = b"\x07" * 4096
    took = []
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        deadline = time.monotonic() + seconds
        while len(took) < FSYNC_PROBE_MAX and time.monotonic() < deadline:
            t = time.monotonic_ns()
            os.pwrite(fd, block, len(took) * len(block))
            os.fdatasync(fd)
            took.append(time.monotonic_ns() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    emit({"mode": "fsync", "count": len(took), "p50_us": pct(took, 50) / 1e3,
          "p99_us": pct(took, 99) / 1e3, "mean_us": statistics.fmean(took) / 1e3})


def main(argv):
    mode, args = argv[1], argv[2:]
    if mode == "throughput":
        throughput(args[0], args[1], int(args[2]), float(args[3]), int(args[4]))
    elif mode == "latency":
        latency(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif mode == "consume":
        consume(args[0], args[1], args[2], int(args[3]), int(args[4]), float(args[5]))
    elif mode == "fsync-probe":
        fsync_probe(args[0], float(args[1]))
    elif mode == "create-topic":
        ku.create_topic(args[0], args[1], partitions=int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
