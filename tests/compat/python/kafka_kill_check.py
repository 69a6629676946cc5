"""Runs one of the rill-only broker-crash tests against Apache Kafka, which it SIGKILLs and
restarts on the same data dir, to check the test itself (what Kafka does is the reference).

The tests take pytest's `rill_factory` fixture: each call makes a broker process on one
shared data dir, with start() -> bootstrap and kill() (SIGKILL). This stands in a factory
whose first broker is the Kafka already started by `scripts/kafka-local start` and whose
later ones restart that Kafka's JVM on the same run dir (kafka-local would wipe it).

  KAFKA_PORT=29192 KAFKA_RUN_DIR=/tmp/k scripts/kafka-local start
  KAFKA_PORT=29192 KAFKA_RUN_DIR=/tmp/k tests/compat/python/.venv/bin/python \
      tests/compat/python/kafka_kill_check.py test_transactions test_transactions_across_a_broker_sigkill
  KAFKA_PORT=29192 KAFKA_RUN_DIR=/tmp/k scripts/kafka-local stop

KILL_DELAY_S (default 0) delays each kill, to tell apart what happens in a window.
"""
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

RUN = Path(os.environ.get("KAFKA_RUN_DIR") or Path.home() / ".cache/rill/kafka-run")
PORT = int(os.environ.get("KAFKA_PORT", "19092"))
HOME = Path(os.environ.get("RILL_CACHE") or Path.home() / ".cache/rill") / "kafka-4.4.0"


def _port_open():
    try:
        socket.create_connection(("127.0.0.1", PORT), 0.5).close()
        return True
    except OSError:
        return False


class _Kafka:
    def __init__(self, restart):
        self.restart = restart

    def start(self):
        if self.restart:
            with open(RUN / "kafka.log", "ab") as log:
                p = subprocess.Popen(
                    ["java", "-Xms1G", "-Xmx1G", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                     f"-Dlog4j2.configurationFile={HOME}/log4j2.properties", "-cp", f"{HOME}/lib/*",
                     "kafka.Kafka", str(RUN / "server.properties")],
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
            (RUN / "pid").write_text(str(p.pid))
            deadline = time.monotonic() + 60
            while not _port_open():
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError(f"Kafka did not come back; see {RUN / 'kafka.log'}")
                time.sleep(0.1)
            time.sleep(2)   # let it register with its controller, as kafka-local does
        return f"127.0.0.1:{PORT}"

    def kill(self):
        time.sleep(float(os.environ.get("KILL_DELAY_S", "0")))
        pid = int((RUN / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _port_open() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self):
        pass


def main():
    module, test = sys.argv[1], sys.argv[2]
    if not _port_open():
        sys.exit(f"no Kafka on 127.0.0.1:{PORT}: start it with scripts/kafka-local start")
    sys.path.insert(0, str(Path(__file__).parent))
    fn = getattr(importlib.import_module(module), test)
    made = []

    def factory(extra_args=()):
        made.append(_Kafka(restart=bool(made)))
        return made[-1]

    fn(factory, f"py-killcheck-{uuid.uuid4().hex[:8]}")
    print(f"{test}: passed against Kafka ({len(made)} broker lifetimes)")


if __name__ == "__main__":
    main()
