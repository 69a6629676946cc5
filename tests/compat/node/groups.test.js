'use strict'
// kafkajs consumers in a consumer group (kafkajs consumes only in groups, so this is where its
// consumer is tested): two members split 6 partitions 3/3, process every record and commit
// after each batch, leave; a new member of the same group resumes exactly at the committed
// offsets. Every wait is bounded.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { Kafka, logLevel } = require('kafkajs')
const { startBroker } = require('./broker')

const PARTITIONS = 6
let broker
let kafka
let admin

before(async () => {
  broker = await startBroker()
  kafka = new Kafka({
    clientId: 'rill-compat-node-groups',
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitUntil (cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

async function createTopic (topic) {
  assert.equal(await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true, timeout: 30000,
  }), true)
  await waitUntil(async () => {
    try { return (await admin.fetchTopicOffsets(topic)).length === PARTITIONS } catch { return false }
  }, 30000, `topic ${topic} serving`)
}

// n records round-robin over the partitions; returns Map "p:o" -> value
async function produce (topic, tag, n) {
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const out = new Map()
  try {
    for (let p = 0; p < PARTITIONS; p++) {
      const values = []
      for (let i = p; i < n; i += PARTITIONS) values.push(`${tag}-${i}`)
      const [meta] = await producer.send({ topic, acks: -1, messages: values.map((value) => ({ partition: p, value })) })
      values.forEach((v, k) => out.set(`${p}:${BigInt(meta.baseOffset) + BigInt(k)}`, v))
    }
  } finally {
    await producer.disconnect()
  }
  return out
}

// One group member: records what it processes, commits after each batch.
async function member (name, groupId, topic) {
  const m = { name, owned: new Set(), recs: new Map(), events: [], commitErrors: [] }
  m.consumer = kafka.consumer({
    groupId,
    sessionTimeout: 6000,
    heartbeatInterval: 1000,
    rebalanceTimeout: 30000,
    maxWaitTimeInMs: 500,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
  })
  const c = m.consumer
  c.on(c.events.GROUP_JOIN, (e) => {
    m.owned = new Set(e.payload.memberAssignment[topic] || [])
    m.events.push(`join[${[...m.owned].sort()}]`)
  })
  c.on(c.events.REBALANCING, () => { m.owned = new Set(); m.events.push('rebalancing') })
  await c.connect()
  await c.subscribe({ topic, fromBeginning: true })
  await c.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return
      for (const msg of batch.messages) m.recs.set(`${batch.partition}:${msg.offset}`, msg.value.toString())
      const last = batch.messages[batch.messages.length - 1].offset
      try {
        await c.commitOffsets([{ topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() }])
      } catch (e) {
        m.commitErrors.push(String(e)) // redelivered later: at least once
      }
    },
  })
  m.describe = () => `${name}: owned=[${[...m.owned].sort()}] events=${m.events.slice(-10)} records=${m.recs.size} commitErrors=${m.commitErrors.slice(0, 3)}`
  return m
}

async function waitSplit (ms, each) {
  let since = 0
  await waitUntil(() => {
    const union = new Set()
    let ok = true
    for (const m of ms) {
      ok = ok && m.owned.size === each
      for (const p of m.owned) { ok = ok && !union.has(p); union.add(p) }
    }
    ok = ok && union.size === PARTITIONS
    if (!ok) { since = 0; return false }
    since = since || Date.now()
    return Date.now() - since >= 1000
  }, 45000, `a stable split ${each} each:\n${ms.map((m) => m.describe()).join('\n')}`).catch((e) => {
    throw new Error(`${e.message}\nnow:\n${ms.map((m) => m.describe()).join('\n')}`)
  })
}

async function waitProcessed (ms, want) {
  const missing = () => [...want.keys()].filter((k) => !ms.some((m) => m.recs.has(k)))
  await waitUntil(() => missing().length === 0, 60000, 'every record processed').catch((e) => {
    throw new Error(`${e.message}: ${missing().length} of ${want.size} missing, e.g. ${missing()[0]}\n${ms.map((m) => m.describe()).join('\n')}`)
  })
  for (const [k, v] of want) {
    const m = ms.find((x) => x.recs.has(k))
    assert.equal(m.recs.get(k), v, `record ${k}`)
  }
}

async function committed (groupId, topic) {
  const res = await admin.fetchOffsets({ groupId, topics: [topic] })
  const out = {}
  for (const p of res[0].partitions) out[p.partition] = Number(p.offset)
  return out
}

async function waitCommitted (groupId, topic, each) {
  const want = {}
  for (let p = 0; p < PARTITIONS; p++) want[p] = each
  let got
  await waitUntil(async () => { got = await committed(groupId, topic); return JSON.stringify(got) === JSON.stringify(want) },
    30000, 'committed offsets').catch((e) => { throw new Error(`${e.message}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`) })
}

test('kafkajs group: two members split, process, commit; a new member resumes at the commits', { timeout: 180000 }, async () => {
  const topic = `node-groups-${crypto.randomBytes(4).toString('hex')}`
  const groupId = `g-${topic}`
  await createTopic(topic)
  const first = await produce(topic, 'a', 300)

  const ms = [await member('kjs-0', groupId, topic), await member('kjs-1', groupId, topic)]
  try {
    await waitSplit(ms, 3)
    await waitProcessed(ms, first)
  } finally {
    for (const m of ms) await m.consumer.disconnect()
  }
  await waitCommitted(groupId, topic, 50)
  const { groups } = await admin.describeGroups([groupId])
  assert.equal(groups[0].state, 'Empty')
  assert.equal(groups[0].members.length, 0)

  const second = await produce(topic, 'b', 60)
  const r = await member('kjs-resume', groupId, topic)
  try {
    await waitSplit([r], PARTITIONS)
    await waitProcessed([r], second)
    await sleep(500)
  } finally {
    await r.consumer.disconnect()
  }
  const extra = [...r.recs.keys()].filter((k) => !second.has(k))
  assert.deepEqual(extra, [], 'the resumed member processed records committed before it joined')
  await waitCommitted(groupId, topic, 60)
})
