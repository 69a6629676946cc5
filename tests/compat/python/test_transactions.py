"""Transactions with confluent-kafka (librdkafka): commit and abort across partitions seen by
read_committed and read_uncommitted consumers, an open transaction holding read_committed
readers at the last stable offset, fencing by a second producer with the same
transactional.id, the broker aborting a transaction left open past its timeout, a
consume-transform-produce pipeline (txn_pipeline.py, its own process) SIGKILLed several times
mid-transaction whose output is still exactly once, and (rill only) a broker SIGKILL right
after a commit with another transaction open.

librdkafka's consumers default to isolation.level=read_committed; every read here names its
isolation level explicitly."""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import kafkautil as ku

PARTITIONS = 3
HERE = os.path.dirname(os.path.abspath(__file__))
COMMITTED = {"isolation.level": "read_committed"}
UNCOMMITTED = {"isolation.level": "read_uncommitted"}


def _txn_producer(bootstrap, txn_id, **conf):
    c = {"transactional.id": txn_id, "transaction.timeout.ms": 60000, "linger.ms": 5}
    c.update(conf)
    return ku.producer(bootstrap, **c)


def _values(bootstrap, topic, partition, conf):
    return [m.value() for m in ku.consume_assigned(bootstrap, topic, partition=partition,
                                                   timeout_s=60, **conf)]


def _values_once(bootstrap, topic, partition, conf, want, timeout_s=15):
    """_values, read again until it equals `want` or `timeout_s` has passed; returns the last
    read. A commit returns once the coordinator has logged its decision; the markers that move
    the last stable offset follow (in Kafka too), so read_committed may lag a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = _values(bootstrap, topic, partition, conf)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _watermarks_once(bootstrap, topic, partition, want, timeout_s=15):
    """(low, high) read_uncommitted, again until it equals `want` or the time is up (the last
    marker may follow the commit or abort by a moment)."""
    c = ku.consumer(bootstrap, **UNCOMMITTED)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            got = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                          cached=False)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.2)
    finally:
        c.close()


def _produce_txn(p, topic, tag, per_partition):
    """One batch of records in the current transaction, `per_partition` on each partition.
    Returns {partition: [values]} in send order."""
    sent = {part: [] for part in range(PARTITIONS)}
    for i in range(per_partition):
        for part in range(PARTITIONS):
            v = f"{tag}-p{part}-{i:03d}".encode()
            p.produce(topic, key=tag.encode(), value=v, partition=part)
            sent[part].append(v)
    return sent


def test_commit_and_abort_read_committed_and_uncommitted(bootstrap, topic_name):
    """12 transactions over 3 partitions, every third one aborted (the last one among them, so
    that the log ends with an abort marker), each flushed before its end so that aborted records
    really are in the log. read_committed sees exactly the committed records, in order per
    partition; read_uncommitted sees every record in send order and no control record."""
    ku.create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    p = _txn_producer(bootstrap, f"py-txn-{uuid.uuid4().hex[:8]}")
    p.init_transactions(30)
    committed = {part: [] for part in range(PARTITIONS)}
    everything = {part: [] for part in range(PARTITIONS)}
    aborted = 0
    for t in range(12):
        abort = t % 3 == 2
        p.begin_transaction()
        sent = _produce_txn(p, topic_name, f"{'abort' if abort else 'commit'}{t:02d}", 5 + t)
        assert p.flush(30) == 0
        if abort:
            p.abort_transaction(30)
            aborted += 1
        else:
            p.commit_transaction(30)
        for part, vs in sent.items():
            everything[part] += vs
            if not abort:
                committed[part] += vs
    assert aborted == 4
    for part in range(PARTITIONS):
        got_c = _values_once(bootstrap, topic_name, part, COMMITTED, committed[part])
        assert got_c == committed[part], f"read_committed, partition {part}"
        assert not [v for v in got_c if v.startswith(b"abort")]
        got_u = _values(bootstrap, topic_name, part, UNCOMMITTED)
        assert got_u == everything[part], f"read_uncommitted, partition {part}"
    # the markers take offsets: 12 markers per partition beyond the data records
    for part in range(PARTITIONS):
        want = (0, len(everything[part]) + 12)
        assert _watermarks_once(bootstrap, topic_name, part, want) == want, f"partition {part}"


def test_open_transaction_holds_read_committed_at_the_last_stable_offset(bootstrap, topic_name):
    """Committed records, then an open transaction, then a record from a plain producer: a
    read_committed reader stops before the open transaction (the last stable offset) and does
    not see the later plain record either; a read_uncommitted reader sees everything. Once the
    transaction commits, read_committed sees all of it in log order."""
    ku.create_topic(bootstrap, topic_name, partitions=1)
    p = _txn_producer(bootstrap, f"py-lso-{uuid.uuid4().hex[:8]}")
    p.init_transactions(30)
    p.begin_transaction()
    first = [b"c1-%d" % i for i in range(3)]
    for v in first:
        p.produce(topic_name, value=v, partition=0)
    p.commit_transaction(30)

    p.begin_transaction()
    pending = [b"open-%d" % i for i in range(4)]
    for v in pending:
        p.produce(topic_name, value=v, partition=0)
    assert p.flush(30) == 0
    plain = ku.producer(bootstrap, **{"enable.idempotence": False, "acks": "all"})
    ku.produce_all(plain, topic_name, [{"value": b"plain-after"}])

    assert _values_once(bootstrap, topic_name, 0, COMMITTED, first) == first
    assert _values(bootstrap, topic_name, 0, UNCOMMITTED) == first + pending + [b"plain-after"]

    p.commit_transaction(30)
    want = first + pending + [b"plain-after"]
    assert _values_once(bootstrap, topic_name, 0, COMMITTED, want) == want


def _is_fenced(err):
    return err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                          KafkaError.INVALID_PRODUCER_EPOCH)


def test_second_producer_with_same_transactional_id_fences_the_first(bootstrap, topic_name):
    """Producer 1 opens a transaction and writes to all 3 partitions; producer 2 with the same
    transactional.id initializes (this aborts producer 1's transaction) and commits its own.
    Producer 1's next commit fails with a fatal fencing error, and read_committed shows only
    producer 2's records."""
    ku.create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    txn_id = f"py-fence-{uuid.uuid4().hex[:8]}"
    p1 = _txn_producer(bootstrap, txn_id)
    p1.init_transactions(30)
    p1.begin_transaction()
    zombie = _produce_txn(p1, topic_name, "zombie", 4)
    assert p1.flush(30) == 0

    p2 = _txn_producer(bootstrap, txn_id)
    p2.init_transactions(30)
    p2.begin_transaction()
    winner = _produce_txn(p2, topic_name, "winner", 3)
    p2.commit_transaction(30)

    with pytest.raises(KafkaException) as ei:
        for part in range(PARTITIONS):
            p1.produce(topic_name, value=b"zombie-late", partition=part)
        p1.flush(30)
        p1.commit_transaction(30)
    err = ei.value.args[0]
    assert _is_fenced(err) and err.fatal(), f"expected a fatal fencing error, got {err!r}"

    for part in range(PARTITIONS):
        assert _values_once(bootstrap, topic_name, part, COMMITTED, winner[part]) == winner[part]
        got_u = _values(bootstrap, topic_name, part, UNCOMMITTED)
        assert got_u[:len(zombie[part])] == zombie[part]
        assert b"zombie-late" not in got_u, "a fenced producer's record was stored"



def test_transaction_timeout_aborts_an_abandoned_transaction(bootstrap, topic_name):
    """A producer opens a transaction with transaction.timeout.ms=3000, writes to 3 partitions
    and then does nothing. The broker aborts it once the timeout has passed (Kafka checks every
    10 s): read_committed readers move past it (a plain record written after it becomes
    visible) and never see its records, and the producer's late commit fails fenced (the abort
    bumped its epoch)."""
    ku.create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    p = _txn_producer(bootstrap, f"py-timeout-{uuid.uuid4().hex[:8]}",
                      **{"transaction.timeout.ms": 3000})
    p.init_transactions(30)
    p.begin_transaction()
    _produce_txn(p, topic_name, "abandoned", 3)
    assert p.flush(30) == 0
    plain = ku.producer(bootstrap, **{"enable.idempotence": False, "acks": "all"})
    ku.produce_all(plain, topic_name, [{"value": b"plain-%d" % part, "partition": part}
                                       for part in range(PARTITIONS)])
    assert _values(bootstrap, topic_name, 0, COMMITTED) == [], "visible before the timeout"
    deadline = time.monotonic() + 45
    for part in range(PARTITIONS):
        while True:
            got = _values(bootstrap, topic_name, part, COMMITTED)
            if got or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == [b"plain-%d" % part], f"partition {part}: read_committed shows {got}"
    with pytest.raises(KafkaException) as ei:
        p.commit_transaction(30)
    err = ei.value.args[0]
    # Kafka bumps the epoch when it aborts on timeout: the late commit is fenced (librdkafka:
    # fatal _FENCED)
    assert _is_fenced(err) and err.fatal(), f"late commit of a timed-out transaction: {err!r}"


class _Pipeline:
    """One txn_pipeline.py process and its events."""

    def __init__(self, bootstrap, source, sink, group, txn_id, pause_ms):
        self.stderr = tempfile.NamedTemporaryFile(prefix="txn-pipeline-", suffix=".log",
                                                  delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "txn_pipeline.py"), bootstrap, source, sink,
             str(PARTITIONS), group, txn_id, "--pause-ms", str(pause_ms), "--max-s", "90"],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.events = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()
        with self.cond:
            self.events.append({"ev": "exit"})
            self.cond.notify_all()

    def wait_for(self, pred, timeout_s):
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                    if e["ev"] in ("error", "exit"):
                        raise AssertionError(f"pipeline stopped: {e}; stderr: {self.stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"pipeline: nothing matching within {timeout_s} s; "
                                         f"events {self.events[-5:]}")
                self.cond.wait(left)

    def count(self, kind):
        with self.cond:
            return sum(1 for e in self.events if e["ev"] == kind)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        self.stderr.close()
        os.unlink(self.stderr.name)

    def stderr_tail(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()[-3000:].decode(errors="replace")


def test_consume_transform_produce_exactly_once_across_sigkills(bootstrap, topic_name):
    """3000 records on 3 partitions of A. The pipeline process is SIGKILLed 3 times, each time
    right after it flushed a transaction's records to B and before it committed (so B's log
    holds records of transactions that never commit), and started again with the same
    transactional.id and group. Finally B, read_committed, holds the transform of every record
    of A exactly once, in A's order per partition; read_uncommitted shows the abandoned
    transactions' records too, so the kills did land mid-transaction; the group's committed
    offsets on A are A's end offsets."""
    src, sink = topic_name + "-a", topic_name + "-b"
    ku.create_topic(bootstrap, src, partitions=PARTITIONS)
    ku.create_topic(bootstrap, sink, partitions=PARTITIONS)
    n = 3000
    records = [{"value": b"rec-%05d" % i, "key": b"k%d" % (i % 7), "partition": i % PARTITIONS}
               for i in range(n)]
    ku.produce_all(ku.producer(bootstrap, acks="all"), src, records)
    group = f"py-ctp-{uuid.uuid4().hex[:8]}"
    txn_id = f"py-ctp-{uuid.uuid4().hex[:8]}"

    kills = 0
    for round_ in range(3):
        pipe = _Pipeline(bootstrap, src, sink, group, txn_id, pause_ms=30)
        try:
            # let it commit a few transactions, then kill it inside the next one
            commits = 2 + round_
            pipe.wait_for(lambda e: e["ev"] == "committed" and e["total"] > 0
                          and pipe.count("committed") >= commits, 60)
            sent_before = pipe.count("sent")
            pipe.wait_for(lambda e: pipe.count("sent") > sent_before, 30)
            pipe.kill()
            kills += 1
        finally:
            pipe.close()
    assert kills == 3
    pipe = _Pipeline(bootstrap, src, sink, group, txn_id, pause_ms=0)
    try:
        pipe.wait_for(lambda e: e["ev"] == "done", 90)
    finally:
        pipe.close()

    for part in range(PARTITIONS):
        want = [b"T(" + r["value"].upper() + b")" for r in records if r["partition"] == part]
        got = _values_once(bootstrap, sink, part, COMMITTED, want)
        dups = len(got) - len(set(got))
        assert dups == 0, f"partition {part}: {dups} transformed records twice"
        assert got == want, f"partition {part}: {len(got)} records, expected {len(want)}"
    everything = sum(len(_values(bootstrap, sink, part, UNCOMMITTED)) for part in range(PARTITIONS))
    assert everything > n, "no abandoned transaction in B's log: the kills missed"
    # the offsets committed inside the transactions are the group's: A's end offsets
    c = ku.consumer(bootstrap, **{"group.id": group, **COMMITTED})
    try:
        got = {tp.partition: tp.offset for tp in c.committed(
            [TopicPartition(src, part) for part in range(PARTITIONS)], timeout=30)}
    finally:
        c.close()
    assert got == {part: n // PARTITIONS for part in range(PARTITIONS)}, f"committed offsets {got}"


def test_transactions_across_a_broker_sigkill(rill_factory, topic_name):
    """rill only (kills and restarts the broker). The broker is SIGKILLed the moment a commit
    returns (EndTxn answered once the decision is durable, markers possibly not all written:
    between the prepare and complete phases) while a second producer's transaction is still
    open. After a restart on the same data dir the committed transaction is complete on every
    partition, the open one is aborted when its 5 s timeout expires, and read_committed readers
    are not stuck: a plain record written after the restart becomes visible behind them."""
    r1 = rill_factory()
    bs = r1.start()
    ku.create_topic(bs, topic_name, partitions=PARTITIONS)
    done = _txn_producer(bs, f"py-kill-done-{uuid.uuid4().hex[:8]}")
    done.init_transactions(30)
    done.begin_transaction()
    first = _produce_txn(done, topic_name, "first", 3)
    done.commit_transaction(30)

    hanging = _txn_producer(bs, f"py-kill-open-{uuid.uuid4().hex[:8]}",
                            **{"transaction.timeout.ms": 5000})
    hanging.init_transactions(30)
    hanging.begin_transaction()
    _produce_txn(hanging, topic_name, "open", 2)
    assert hanging.flush(30) == 0

    done.begin_transaction()
    second = _produce_txn(done, topic_name, "second", 4)
    done.commit_transaction(30)
    r1.kill()
    del done, hanging

    r2 = rill_factory()
    bs2 = r2.start()
    plain = ku.producer(bs2, **{"enable.idempotence": False, "acks": "all"})
    ku.produce_all(plain, topic_name, [{"value": b"plain-%d" % part, "partition": part}
                                       for part in range(PARTITIONS)])
    deadline = time.monotonic() + 60
    for part in range(PARTITIONS):
        want = first[part] + second[part] + [b"plain-%d" % part]
        while True:
            got = _values(bs2, topic_name, part, COMMITTED)
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == want, (f"partition {part}: read_committed after the restart shows "
                             f"{len(got)} records {got[-3:]}, want {len(want)} ending {want[-3:]}")
