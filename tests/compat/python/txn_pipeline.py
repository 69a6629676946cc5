"""A consume-transform-produce pipeline as its own OS process, for test_transactions.py.

It reads topic A by assignment (all partitions, from the group's committed offsets, with
read_committed so that the committed-offset fetch waits for pending transactional offsets),
and in one transaction per batch writes each record's transform to the same partition of
topic B and commits the consumed offsets with `send_offsets_to_transaction`. The test
SIGKILLs it mid-run (a crash: the open transaction is left behind) and starts it again with
the same transactional.id, whose `init_transactions` must abort what the killed one left
open. One JSON object per line on stdout, flushed at once:

  {"ev": "ready"}                                   (init_transactions done)
  {"ev": "sent", "n": N}     records of the open transaction produced and flushed (in B's log)
  {"ev": "committed", "n": N, "total": T}           (T: records committed by this process)
  {"ev": "done", "total": T}                        (positions reached A's end offsets)
  {"ev": "error", "error": ".."}

Bounded: exits after --max-s seconds whatever happens.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def transform(value: bytes) -> bytes:
    return b"T(" + value.upper() + b")"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("source")
    ap.add_argument("sink")
    ap.add_argument("partitions", type=int)
    ap.add_argument("group")
    ap.add_argument("txn_id")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--pause-ms", type=int, default=30,
                    help="sleep between flushing a transaction's records and committing it")
    ap.add_argument("--max-s", type=float, default=90)
    a = ap.parse_args()
    t_end = time.monotonic() + a.max_s

    c = Consumer({
        "bootstrap.servers": a.bootstrap, "group.id": a.group,
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        "enable.partition.eof": False,
    })
    p = Producer({
        "bootstrap.servers": a.bootstrap, "transactional.id": a.txn_id,
        "transaction.timeout.ms": 60000, "linger.ms": 5,
    })
    try:
        p.init_transactions(30)
        parts = [TopicPartition(a.source, i) for i in range(a.partitions)]
        committed = c.committed(parts, timeout=60)
        # own positions (A is written without transactions, so its offsets are dense and the
        # next offset to read is last + 1)
        pos = {tp.partition: (tp.offset if tp.offset >= 0 else 0) for tp in committed}
        c.assign([TopicPartition(a.source, i, pos[i]) for i in range(a.partitions)])
        ends = {}
        for i in range(a.partitions):
            _, hi = c.get_watermark_offsets(TopicPartition(a.source, i), timeout=30, cached=False)
            ends[i] = hi
        emit(ev="ready")
        total = 0
        while time.monotonic() < t_end:
            msgs = c.consume(num_messages=a.batch, timeout=0.5)
            msgs = [m for m in msgs if m.error() is None]
            if not msgs:
                if all(pos[i] >= ends[i] for i in range(a.partitions)):
                    emit(ev="done", total=total)
                    return 0
                continue
            p.begin_transaction()
            for m in msgs:
                p.produce(a.sink, key=m.key(), value=transform(m.value()), partition=m.partition())
                pos[m.partition()] = m.offset() + 1
            left = p.flush(30)
            if left:
                raise RuntimeError(f"{left} records of the transaction not delivered")
            emit(ev="sent", n=len(msgs))
            time.sleep(a.pause_ms / 1000)
            offsets = [TopicPartition(a.source, i, o) for i, o in sorted(pos.items())]
            p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30)
            p.commit_transaction(30)
            total += len(msgs)
            emit(ev="committed", n=len(msgs), total=total)
        emit(ev="error", error=f"not done within {a.max_s} s")
        return 1
    except KafkaException as e:
        emit(ev="error", error=str(e))
        return 1
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
