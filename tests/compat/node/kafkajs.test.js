'use strict'
// kafkajs against a real broker. kafkajs consumers only work inside a consumer group, and
// groups are not in scope yet, so records are read back with a raw Fetch through kafkajs's own
// protocol layer (its internal Cluster/Broker), by assignment: topic, partition, offset.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { Kafka, logLevel, CompressionTypes } = require('kafkajs')
const { startBroker } = require('./broker')

let broker
let kafka
let admin

const uniqueTopic = (p) => `node-${p}-${crypto.randomBytes(4).toString('hex')}`

before(async () => {
  broker = await startBroker()
  kafka = new Kafka({
    clientId: 'rill-compat-node',
    brokers: [broker.bootstrap],
    logLevel: logLevel.NOTHING,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
  })
  admin = kafka.admin()
  await admin.connect()
})

after(async () => {
  if (admin) await admin.disconnect()
  if (broker) await broker.stop()
})

async function createTopic (topic, numPartitions, configEntries = []) {
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions, replicationFactor: 1, configEntries }],
    waitForLeaders: true,
    timeout: 30000,
  })
  assert.equal(created, true)
  // wait until every partition answers ListOffsets (leader really serving it)
  const deadline = Date.now() + 30000
  for (;;) {
    try {
      const offs = await admin.fetchTopicOffsets(topic)
      if (offs.length === numPartitions) return
    } catch (e) {
      if (Date.now() > deadline) throw e
    }
    if (Date.now() > deadline) throw new Error(`topic ${topic} not serving in 30 s`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

// Raw fetch by assignment through kafkajs's protocol layer. Bounded: 60 s.
async function rawConsume (topic, partition, fromOffset, count) {
  const createCluster = Object.getOwnPropertySymbols(kafka)
    .find((s) => s.description === 'private:Kafka:createCluster')
  const cluster = kafka[createCluster]({ allowAutoTopicCreation: false, isolationLevel: 0 })
  await cluster.connect()
  try {
    await cluster.addTargetTopic(topic)
    const leaderId = cluster.findTopicPartitionMetadata(topic).find((p) => p.partitionId === partition).leader
    const leader = await cluster.findBroker({ nodeId: String(leaderId) })
    const out = []
    let offset = BigInt(fromOffset)
    const deadline = Date.now() + 60000
    while (out.length < count) {
      if (Date.now() > deadline) throw new Error(`raw fetch: ${out.length} of ${count} records in 60 s`)
      const resp = await leader.fetch({
        replicaId: -1,
        isolationLevel: 0,
        maxWaitTime: 500,
        minBytes: 1,
        maxBytes: 10485760,
        topics: [{ topic, partitions: [{ partition, fetchOffset: offset.toString(), maxBytes: 10485760 }] }],
      })
      const p = resp.responses[0].partitions[0]
      assert.equal(p.errorCode, 0, `fetch error code ${p.errorCode}`)
      for (const m of p.messages) {
        if (BigInt(m.offset) < offset) continue // batch may start before the requested offset
        out.push(m)
        offset = BigInt(m.offset) + 1n
      }
    }
    return out.slice(0, count)
  } finally {
    await cluster.disconnect()
  }
}

test('admin: create, describe, list, describe configs, delete topics', async () => {
  const topic = uniqueTopic('admin')
  await createTopic(topic, 3, [{ name: 'retention.ms', value: '3600000' }])

  assert.ok((await admin.listTopics()).includes(topic))
  const md = await admin.fetchTopicMetadata({ topics: [topic] })
  assert.equal(md.topics.length, 1)
  assert.equal(md.topics[0].name, topic)
  assert.deepEqual(md.topics[0].partitions.map((p) => p.partitionId).sort(), [0, 1, 2])
  for (const p of md.topics[0].partitions) {
    assert.ok(p.leader >= 0)
    assert.deepEqual(p.replicas, [p.leader])
  }
  const cluster = await admin.describeCluster()
  assert.ok(cluster.brokers.length >= 1)

  const cfg = await admin.describeConfigs({ resources: [{ type: 2 /* TOPIC */, name: topic, configNames: ['retention.ms'] }], includeSynonyms: false })
  const entry = cfg.resources[0].configEntries.find((e) => e.configName === 'retention.ms')
  assert.equal(entry.configValue, '3600000')

  // duplicate create returns false (TOPIC_ALREADY_EXISTS is tolerated by kafkajs)
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], timeout: 30000 }), false)

  await admin.deleteTopics({ topics: [topic], timeout: 30000 })
  const deadline = Date.now() + 30000
  while ((await admin.listTopics()).includes(topic)) {
    assert.ok(Date.now() < deadline, 'deleted topic still listed after 30 s')
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
})

for (const [name, acks, compression] of [
  ['acks0', 0, CompressionTypes.None],
  ['acks1', 1, CompressionTypes.None],
  ['acksAll', -1, CompressionTypes.None],
  ['gzip', -1, CompressionTypes.GZIP],
]) {
  test(`produce ${name}, offsets, raw consume by assignment`, async () => {
    const topic = uniqueTopic(name)
    await createTopic(topic, 2)
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    const n = 400
    // recent: records older than retention.ms (7 days) may be deleted by the broker
    const base = Math.floor(Date.now() / 1000) * 1000 - 3600000
    const msgs = (part) => Array.from({ length: n / 2 }, (_, j) => ({
      partition: part,
      key: j % 4 === 0 ? null : `k${part}-${j}`,
      value: j % 9 === 0 ? null : Buffer.from(`v${part}-${j}-` + 'z'.repeat(j % 60)),
      headers: { idx: String(j) },
      timestamp: String(base + j * 10),
    }))
    try {
      // several sends: several batches per partition
      for (let chunk = 0; chunk < 4; chunk++) {
        const res = await producer.sendBatch({
          acks,
          compression,
          timeout: 30000,
          topicMessages: [{ topic, messages: [0, 1].flatMap((p) => msgs(p).slice(chunk * 50, chunk * 50 + 50)) }],
        })
        if (acks !== 0) {
          for (const r of res) {
            assert.equal(r.errorCode, 0)
            assert.equal(r.baseOffset, String(chunk * 50))
          }
        }
      }
    } finally {
      await producer.disconnect()
    }

    // offsets: earliest/latest (fetchTopicOffsets) and by timestamp
    let offs
    const deadline = Date.now() + 30000
    do { // acks=0 returns before the broker wrote; wait (bounded) for the high watermark
      offs = await admin.fetchTopicOffsets(topic)
      if (offs.every((o) => o.high === String(n / 2))) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    } while (Date.now() < deadline)
    assert.deepEqual(offs.map((o) => [o.partition, o.low, o.high]).sort(),
      [[0, '0', String(n / 2)], [1, '0', String(n / 2)]])
    const byTs = await admin.fetchTopicOffsetsByTimestamp(topic, base + 555)
    assert.deepEqual(byTs.map((o) => [o.partition, o.offset]).sort(), [[0, '56'], [1, '56']])

    for (const part of [0, 1]) {
      const want = msgs(part)
      const got = await rawConsume(topic, part, 0, n / 2)
      got.forEach((m, j) => {
        assert.equal(m.offset, String(j))
        assert.equal(m.timestamp, want[j].timestamp)
        if (want[j].key === null) assert.equal(m.key, null)
        else assert.equal(m.key.toString(), want[j].key)
        if (want[j].value === null) assert.equal(m.value, null)
        else assert.deepEqual(m.value, want[j].value)
        assert.equal(m.headers.idx.toString(), String(j))
      })
    }
    const mid = await rawConsume(topic, 1, 123, n / 2 - 123)
    assert.equal(mid[0].offset, '123')
    assert.equal(mid.at(-1).offset, String(n / 2 - 1))
  })
}
