"""Delayed delivery benchmark with confluent-kafka against a fresh `rill serve` (run by
scripts/bench-delayed). Prints one line per figure:

- produce throughput (acks=all, 100-byte values) into a plain topic and into a delay-enabled
  one (records with rill-delay-ms=0, so both end in the partition), and their ratio: the plain
  topic is the limit measured in the same run;
- lateness (arrival at a plain consumer minus the record's due time) at RATE delayed records/s
  with delays of 200..2000 ms: p50, p99, max, and the earliest (negative would be early);
- broker RSS before and after storing PENDING records due in an hour (waiting, in the delay
  log), with the in-memory window the broker reports.

usage: bench_delayed.py RILL_BIN  (env: RECORDS, RATE, LATENCY_S, PENDING)
"""
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

RECORDS = int(os.environ.get("RECORDS", "200000"))
RATE = int(os.environ.get("RATE", "1000"))
LATENCY_S = int(os.environ.get("LATENCY_S", "20"))
PENDING = int(os.environ.get("PENDING", "1000000"))


def now_ms():
    return int(time.time() * 1000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(rill_bin, data_dir, metrics):
    proc = subprocess.Popen([rill_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                             "--metrics-listen", metrics], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    m = re.match(r"^rill listening on (\S+)", line)
    if not m:
        raise RuntimeError(f"rill did not start: {line!r}")
    threading.Thread(target=lambda: [None for _ in iter(proc.stdout.readline, b"")],
                     daemon=True).start()
    return proc, m.group(1)


def create(bs, name, config):
    admin = AdminClient({"bootstrap.servers": bs})
    fs = admin.create_topics([NewTopic(name, 1, 1, config=config)])
    fs[name].result(timeout=30)


def producer(bs):
    return Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 5,
                     "batch.size": 65536, "queue.buffering.max.messages": 1000000})


def throughput(bs, topic, n, headers):
    p = producer(bs)
    value = b"x" * 100
    started = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, partition=0, headers=headers)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    return n / (time.monotonic() - started)


def metric(metrics, name, topic):
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'topic="{topic}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def lateness(bs, topic, rate, seconds, delayed=True):
    """Arrival minus due time (delayed) or minus send time (plain: the end-to-end latency of
    an undelayed record, the floor delayed delivery stands on: durable append and fetch)."""
    total = rate * seconds
    late = []
    c = Consumer({"bootstrap.servers": bs, "group.id": "bench-delayed", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, 0, 0)])
    done = threading.Event()

    def consume():
        deadline = time.monotonic() + seconds + 30
        # One message per poll, stamped as it is returned: consume(num_messages=N) waits for
        # N messages or its timeout, so at low rates every arrival would carry that wait.
        while len(late) < total and time.monotonic() < deadline:
            m = c.poll(0.05)
            if m is None or m.error():
                continue
            arrived = now_ms()
            if delayed:
                due = int(dict(m.headers())["rill-delayed-deliver-at"])
            else:
                due = int(m.value())
            late.append(arrived - due)
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    p = producer(bs)
    started = time.monotonic()
    rng = random.Random(7)
    for i in range(total):
        target = started + i / rate
        pause = target - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if delayed:
            p.produce(topic, value=b"v", partition=0,
                      headers=[("rill-delay-ms", str(rng.randint(200, 2000)).encode())])
        else:
            p.produce(topic, value=str(now_ms()).encode(), partition=0)
        p.poll(0)
    p.flush(60)
    done.wait(seconds + 60)
    t.join()
    c.close()
    late.sort()
    if not late:
        return None
    pick = lambda q: late[min(len(late) - 1, int(q * len(late)))]
    return {"count": len(late), "p50": pick(0.5), "p99": pick(0.99), "max": late[-1],
            "min": late[0]}


def main():
    rill_bin = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="rill-bench-delayed-") as tmp:
        metrics = f"127.0.0.1:{free_port()}"
        proc, bs = start(rill_bin, os.path.join(tmp, "data"), metrics)
        try:
            create(bs, "plain", {})
            create(bs, "plain-latency", {})
            create(bs, "delayed", {"rill.delivery.delayed.enable": "true"})
            create(bs, "late", {"rill.delivery.delayed.enable": "true"})
            create(bs, "pending", {"rill.delivery.delayed.enable": "true"})
            plain = throughput(bs, "plain", RECORDS, [])
            delayed = throughput(bs, "delayed", RECORDS, [("rill-delay-ms", b"0")])
            print(f"produce, plain topic:         {plain:10.0f} records/s (the limit)")
            print(f"produce, delay-enabled topic: {delayed:10.0f} records/s "
                  f"({delayed / plain:.2f} of plain)")
            base = lateness(bs, "plain-latency", RATE, LATENCY_S, delayed=False)
            print(f"end-to-end latency of plain records at {RATE}/s (the floor): {base} ms")
            r = lateness(bs, "late", RATE, LATENCY_S)
            print(f"lateness at {RATE} delayed records/s for {LATENCY_S}s: {r} ms")
            before = rss_kib(proc.pid)
            throughput(bs, "pending", PENDING, [("rill-delay-ms", b"3600000")])
            waiting = metric(metrics, "rill_delayed_pending_records", "pending")
            in_memory = metric(metrics, "rill_delayed_in_memory_records", "pending")
            after = rss_kib(proc.pid)
            print(f"RSS with {int(waiting or 0)} pending delayed records "
                  f"({int(in_memory or 0)} in memory): {after / 1024:.0f} MiB "
                  f"(before: {before / 1024:.0f} MiB)")
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
