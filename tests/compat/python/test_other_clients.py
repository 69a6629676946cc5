"""kafka-python and aiokafka: produce and consume by assignment (no consumer groups)."""
import asyncio
import time

import pytest

import kafkautil as ku


@pytest.mark.parametrize("acks,compression", [(0, None), (1, None), ("all", None), ("all", "gzip")])
def test_kafka_python_produce_consume(bootstrap, topic_name, acks, compression):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    ku.create_topic(bootstrap, topic_name, partitions=2)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=acks, compression_type=compression,
                      linger_ms=5, request_timeout_ms=30000)
    vals = [b"kp-%05d" % i for i in range(500)]
    try:
        futs = [p.send(topic_name, value=v, key=b"k", partition=i % 2,
                       headers=[("n", b"%d" % i)]) for i, v in enumerate(vals)]
        p.flush(timeout=60)
        metas = [f.get(timeout=60) for f in futs]
    finally:
        p.close(timeout=10)
    if acks != 0:
        assert [m.offset for m in metas if m.partition == 0] == list(range(250))
        assert [m.offset for m in metas if m.partition == 1] == list(range(250))

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        tps = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        assert c.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
        # acks=0/1 answer before the records are durable, and rill shows them (the high
        # watermark) once they are: a moment later. Bounded: 10 s.
        deadline = time.monotonic() + 10
        while c.end_offsets(tps) != {tps[0]: 250, tps[1]: 250} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.end_offsets(tps) == {tps[0]: 250, tps[1]: 250}
        c.assign(tps)
        c.seek(tps[0], 0)
        c.seek(tps[1], 100)
        got = {0: [], 1: []}
        for m in c:
            got[m.partition].append(m)
            if len(got[0]) == 250 and len(got[1]) == 150:
                break
        assert [m.value for m in got[0]] == vals[0::2]
        assert [m.value for m in got[1]] == vals[1::2][100:]
        assert [m.offset for m in got[1]] == list(range(100, 250))
        assert all(m.key == b"k" for m in got[0] + got[1])
        assert [m.headers for m in got[0][:2]] == [[("n", b"0")], [("n", b"2")]]
    finally:
        c.close()


def test_kafka_python_offsets_for_times(bootstrap, topic_name):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    ku.create_topic(bootstrap, topic_name)
    base_ts = ku.recent_ts()
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i in range(10):
            p.send(topic_name, value=b"x%d" % i, partition=0, timestamp_ms=base_ts + 1000 * i)
        p.flush(timeout=60)
    finally:
        p.close(timeout=10)
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tp = TopicPartition(topic_name, 0)
        r = c.offsets_for_times({tp: base_ts + 3500})
        assert r[tp].offset == 4 and r[tp].timestamp == base_ts + 4000
        r = c.offsets_for_times({tp: base_ts + 100_000})
        assert r[tp] is None
    finally:
        c.close()


def test_aiokafka_produce_consume(bootstrap, topic_name):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    ku.create_topic(bootstrap, topic_name)
    vals = [b"aio-%05d" % i for i in range(1000)]

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await p.start()
        try:
            futs = [await p.send(topic_name, value=v, key=b"%d" % i, partition=0,
                                 headers=[("h", b"x")]) for i, v in enumerate(vals)]
            metas = await asyncio.wait_for(asyncio.gather(*futs), timeout=60)
        finally:
            await p.stop()
        assert [m.offset for m in metas] == list(range(len(vals)))

        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            tp = TopicPartition(topic_name, 0)
            c.assign([tp])
            assert (await c.end_offsets([tp]))[tp] == len(vals)
            c.seek(tp, 10)
            got = []

            async def drain():
                while len(got) < len(vals) - 10:
                    batch = await c.getmany(tp, timeout_ms=1000)
                    got.extend(batch.get(tp, []))

            await asyncio.wait_for(drain(), timeout=60)
        finally:
            await c.stop()
        assert [m.offset for m in got] == list(range(10, len(vals)))
        assert [m.value for m in got] == vals[10:]
        assert [m.key for m in got] == [b"%d" % i for i in range(10, len(vals))]
        assert all(list(m.headers) == [("h", b"x")] for m in got)

    asyncio.run(run())
