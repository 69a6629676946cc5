#!/usr/bin/env python3
"""Records the seed corpus of the fuzz targets from real client traffic.

Runs `rill serve` behind a recording proxy (the broker advertises the proxy, so clients keep
talking through it), drives real clients through it (kcat with every codec, rill's own
client, and confluent-kafka from tests/compat/python/.venv when present), then writes:
  corpus/request/          each request frame a client sent (size prefix included)
  corpus/record_batch/     each stored record batch (what producers sent, every codec)
  corpus/segment_recovery/ the segment files (two zero bytes = no index, then the log)
  corpus/offsets_replay/   __consumer_offsets segments (mode byte 1, then the log)
  corpus/topic_registry/   the registry file
Usage: fuzz/capture.py (from the repository root, after `cargo build --release`).
"""
import hashlib, os, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RILL = os.path.join(ROOT, "target/release/rill")
CORPUS = os.path.join(ROOT, "fuzz/corpus")
MAX_SEED_BYTES = 64 << 10


def save(kind, data):
    if not data or len(data) > MAX_SEED_BYTES:
        return
    d = os.path.join(CORPUS, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pump(src, dst, record):
    buf = b""
    try:
        while True:
            chunk = src.recv(65536)
            if not chunk:
                break
            dst.sendall(chunk)
            if record:
                buf += chunk
                while len(buf) >= 4:
                    n = int.from_bytes(buf[:4], "big")
                    if len(buf) < 4 + n:
                        break
                    save("request", buf[: 4 + n])
                    buf = buf[4 + n :]
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(listener, broker_port):
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", broker_port))
        threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()


def run(args, stdin=None):
    subprocess.run(args, input=stdin, timeout=60, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    data_dir = tempfile.mkdtemp(prefix="rill-capture-")
    broker_port, proxy_port = free_port(), free_port()
    boot = f"127.0.0.1:{proxy_port}"
    broker = subprocess.Popen(
        [RILL, "serve", "--listen", f"127.0.0.1:{broker_port}", "--data-dir", data_dir,
         "--no-metrics", "--advertised-listeners", boot],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    broker.stdout.readline()  # the readiness line
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", proxy_port))
    listener.listen()
    threading.Thread(target=proxy, args=(listener, broker_port), daemon=True).start()
    try:
        lines = "".join(f"key-{i}:value-{i} " + "x" * (i * 7) + "\n" for i in range(40)).encode()
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
            topic = f"kcat-{codec}"
            run(["kcat", "-b", boot, "-P", "-t", topic, "-z", codec, "-K", ":",
                 "-X", "topic.metadata.refresh.interval.ms=1000"], stdin=lines)
            run(["kcat", "-b", boot, "-C", "-t", topic, "-o", "beginning", "-e", "-q"])
            run(["kcat", "-b", boot, "-Q", "-t", f"{topic}:0:1"])
        run([RILL, "topic", "create", "rill-t", "--partitions", "2", "--bootstrap-server", boot])
        run([RILL, "produce", "rill-t", "-K", ":", "-H", "h=1", "--compression", "zstd", "--bootstrap-server", boot], stdin=lines)
        run([RILL, "consume", "rill-t", "--group", "g1", "--bootstrap-server", boot,
             "--from-beginning", "-n", "20", "--timeout-ms", "5000"])
        run([RILL, "group", "describe", "g1", "--bootstrap-server", boot])
        run([RILL, "topic", "describe", "rill-t", "--bootstrap-server", boot])
        py = os.path.join(ROOT, "tests/compat/python/.venv/bin/python")
        if os.path.exists(py):
            run([py, "-c", CONFLUENT.replace("BOOT", boot)])
        time.sleep(1)
    finally:
        broker.terminate()
        broker.wait(timeout=30)
    for entry in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, entry)
        if entry == "rill-topics.meta":
            save("topic_registry", open(path, "rb").read())
        if not os.path.isdir(path):
            continue
        for name in os.listdir(path):
            if not name.endswith(".log"):
                continue
            log = open(os.path.join(path, name), "rb").read()
            if entry.startswith("__consumer_offsets"):
                save("offsets_replay", b"\x01" + log)
            else:
                save("segment_recovery", b"\x00\x00" + log)
            at = 0
            while at + 12 <= len(log):
                n = int.from_bytes(log[at + 8 : at + 12], "big")
                if n <= 0:
                    break
                save("record_batch", log[at : at + 12 + n])
                at += 12 + n
    shutil.rmtree(data_dir, ignore_errors=True)


CONFLUENT = """
from confluent_kafka import Producer, Consumer
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({'bootstrap.servers': 'BOOT'})
for f in a.create_topics([NewTopic('py-t', 1, 1)]).values():
    try: f.result()
    except Exception: pass
for codec in ['gzip', 'snappy', 'lz4', 'zstd']:
    p = Producer({'bootstrap.servers': 'BOOT', 'compression.type': codec, 'enable.idempotence': True})
    for i in range(20):
        p.produce('py-t', key=b'k%d' % i, value=b'v' * i, headers={'h': b'1'})
    p.flush(10)
c = Consumer({'bootstrap.servers': 'BOOT', 'group.id': 'pyg', 'auto.offset.reset': 'earliest'})
c.subscribe(['py-t'])
n = 0
for _ in range(50):
    m = c.poll(0.2)
    if m is not None and not m.error():
        n += 1
        if n >= 40: break
c.commit(asynchronous=False)
c.close()
"""

if __name__ == "__main__":
    sys.exit(main())
