"""One consumer-group member as its own OS process, for test_groups.py.

The tests spawn several of these, kill some with SIGKILL (a crash: no LeaveGroup, no final
commit) and stop others with SIGTERM (a clean close: commit, LeaveGroup). Each worker
subscribes to one topic, and for every batch it receives: reports the records on stdout
("processing"), commits the next offsets synchronously, reports the commit. Rebalance
callbacks are reported with the partitions of the event and the worker's whole assignment
after it. One JSON object per line, flushed at once:

  {"ev": "ready"}
  {"ev": "assign"|"revoke"|"lost", "parts": [..], "now": [..], "proto": "EAGER"|"COOPERATIVE"}
  {"ev": "recs", "recs": [[partition, offset, value], ..]}
  {"ev": "commit", "offs": {"partition": next_offset, ..}}
  {"ev": "commit_error", "error": ".."}
  {"ev": "error"|"client_error"|"fatal", "error": ".."}   (confluent: consumer errors, error_cb;
                                                          a fatal consume error ends the worker)
  {"ev": "closed"}

Libraries: confluent (confluent-kafka / librdkafka), kafka-python, aiokafka. Every worker
exits by itself after --max-s seconds (bound), closing its consumer.
"""
import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import time

stop = False


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def on_term(_sig, _frm):
    global stop
    stop = True


def run_confluent(a):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "client.id": a.name,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": 60000,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if a.protocol == "consumer":
        # KIP-848: session and heartbeat are the broker's; the assignor runs on the broker
        conf["group.protocol"] = "consumer"
        if a.strategy:
            conf["group.remote.assignor"] = a.strategy
    else:
        conf["session.timeout.ms"] = a.session_timeout_ms
        conf["heartbeat.interval.ms"] = a.heartbeat_ms
        if a.strategy:
            conf["partition.assignment.strategy"] = a.strategy
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    # client-level errors (transient ones included: a disconnect is one); not asserted on
    conf["error_cb"] = lambda err: emit(ev="fatal" if err.fatal() else "client_error", error=str(err))
    c = Consumer(conf)
    owned = set()
    proto = ("COOPERATIVE" if a.strategy == "cooperative-sticky" or a.protocol == "consumer"
             else "EAGER")

    def on_assign(cons, parts):
        if proto == "COOPERATIVE":
            cons.incremental_assign(parts)
        else:
            cons.assign(parts)
        owned.update(p.partition for p in parts)
        emit(ev="assign", parts=sorted(p.partition for p in parts), now=sorted(owned),
             proto=proto)

    def on_revoke(cons, parts):
        if proto == "COOPERATIVE":
            cons.incremental_unassign(parts)
        else:
            cons.unassign()
        owned.difference_update(p.partition for p in parts)
        emit(ev="revoke", parts=sorted(p.partition for p in parts), now=sorted(owned),
             proto=proto)

    def on_lost(cons, parts):
        owned.difference_update(p.partition for p in parts)
        if proto == "COOPERATIVE":
            cons.incremental_unassign(parts)
        else:
            cons.unassign()
        emit(ev="lost", parts=sorted(p.partition for p in parts), now=sorted(owned),
             proto=proto)

    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    emit(ev="ready")
    deadline = time.monotonic() + a.max_s
    try:
        while not stop and time.monotonic() < deadline:
            msgs = c.consume(num_messages=500, timeout=0.2)
            recs, nxt = [], {}
            for m in msgs:
                if m.error():
                    if m.error().fatal():   # e.g. fenced by a newer static member: stop here
                        emit(ev="fatal", error=str(m.error()))
                        return
                    emit(ev="error", error=str(m.error()))
                    continue
                recs.append([m.partition(), m.offset(), m.value().decode()])
                nxt[m.partition()] = m.offset() + 1
            if not recs:
                continue
            emit(ev="recs", recs=recs)
            try:
                c.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in nxt.items()],
                         asynchronous=False)
                emit(ev="commit", offs={str(p): o for p, o in nxt.items()})
            except KafkaException as e:
                emit(ev="commit_error", error=str(e))
    finally:
        c.close()
        emit(ev="closed")


def run_kafka_python(a):
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import KafkaError

    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, client_id=a.name,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=a.session_timeout_ms,
                      heartbeat_interval_ms=a.heartbeat_ms, max_poll_interval_ms=60000,
                      metadata_max_age_ms=2000, request_timeout_ms=30000)
    owned = set()

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            owned.difference_update(tp.partition for tp in revoked)
            emit(ev="revoke", parts=sorted(tp.partition for tp in revoked), now=sorted(owned),
                 proto="EAGER")

        def on_partitions_assigned(self, assigned):
            owned.update(tp.partition for tp in assigned)
            emit(ev="assign", parts=sorted(tp.partition for tp in assigned), now=sorted(owned),
                 proto="EAGER")

    # Know the topic's partitions before joining. Seen against Kafka 4.1.2: when the group
    # leader joins before it has the topic's metadata, it assigns nothing, rejoins once the
    # metadata arrives, and then sometimes hangs in the leader's assignment step for good
    # (kafka-python 3.0.12 client behaviour, not the broker's).
    meta_deadline = time.monotonic() + 30
    while not c.partitions_for_topic(a.topic) and time.monotonic() < meta_deadline:
        time.sleep(0.1)
    c.subscribe(topics=[a.topic], listener=Listener())
    emit(ev="ready")
    deadline = time.monotonic() + a.max_s
    try:
        while not stop and time.monotonic() < deadline:
            batches = c.poll(timeout_ms=200, max_records=500)
            recs, nxt = [], {}
            for tp, ms in batches.items():
                for m in ms:
                    recs.append([m.partition, m.offset, m.value.decode()])
                    nxt[m.partition] = m.offset + 1
            if not recs:
                continue
            emit(ev="recs", recs=recs)
            try:
                c.commit()   # the positions: exactly the next offsets of what was just processed
                emit(ev="commit", offs={str(p): o for p, o in nxt.items()})
            except KafkaError as e:
                emit(ev="commit_error", error=repr(e))
    finally:
        c.close(autocommit=False)
        emit(ev="closed")


def run_aiokafka(a):
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka.abc import ConsumerRebalanceListener
    from aiokafka.errors import KafkaError

    async def main():
        c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, client_id=a.name,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=a.session_timeout_ms,
                             heartbeat_interval_ms=a.heartbeat_ms, max_poll_interval_ms=60000,
                             metadata_max_age_ms=2000, request_timeout_ms=30000)
        owned = set()

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                owned.difference_update(tp.partition for tp in revoked)
                emit(ev="revoke", parts=sorted(tp.partition for tp in revoked),
                     now=sorted(owned), proto="EAGER")

            async def on_partitions_assigned(self, assigned):
                owned.update(tp.partition for tp in assigned)
                emit(ev="assign", parts=sorted(tp.partition for tp in assigned),
                     now=sorted(owned), proto="EAGER")

        c.subscribe(topics=[a.topic], listener=Listener())
        await c.start()
        emit(ev="ready")
        deadline = time.monotonic() + a.max_s
        try:
            while not stop and time.monotonic() < deadline:
                batches = await c.getmany(timeout_ms=200, max_records=500)
                recs, nxt = [], {}
                for tp, ms in batches.items():
                    for m in ms:
                        recs.append([m.partition, m.offset, m.value.decode()])
                        nxt[m.partition] = m.offset + 1
                if not recs:
                    continue
                emit(ev="recs", recs=recs)
                try:
                    await c.commit()
                    emit(ev="commit", offs={str(p): o for p, o in nxt.items()})
                except KafkaError as e:
                    emit(ev="commit_error", error=repr(e))
        finally:
            await c.stop()
            emit(ev="closed")

    asyncio.run(main())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["confluent", "kafka-python", "aiokafka"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--name", default="worker")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--strategy", default="")
    ap.add_argument("--instance-id", default="")
    # "consumer": KIP-848 (group.protocol=consumer; the broker assigns, with
    # group.remote.assignor when --strategy is given)
    ap.add_argument("--protocol", choices=["classic", "consumer"], default="classic")
    ap.add_argument("--max-s", type=float, default=180)
    a = ap.parse_args()
    if os.environ.get("GROUP_WORKER_LOG"):   # client library logs on stderr (Python clients)
        logging.basicConfig(level=getattr(logging, os.environ["GROUP_WORKER_LOG"].upper()),
                            stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, on_term)
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # stacks on stderr, for diagnosis
    {"confluent": run_confluent, "kafka-python": run_kafka_python, "aiokafka": run_aiokafka}[a.lib](a)


if __name__ == "__main__":
    main()
