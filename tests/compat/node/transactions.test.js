'use strict'
// kafkajs transactions: a transactional producer (producer.transaction()) commits some
// transactions and aborts others across 3 partitions; a group consumer at kafkajs's default
// (readUncommitted: false) sees exactly the committed records, in order per partition, and one
// with readUncommitted: true sees every record, with no control record among them. kafkajs
// consumes only in groups, so each reader is a one-member group of its own. Every wait is
// bounded.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { Kafka, logLevel } = require('kafkajs')
const { startBroker } = require('./broker')

const PARTITIONS = 3
let broker
let kafka
let admin

before(async () => {
  broker = await startBroker()
  kafka = new Kafka({
    clientId: 'rill-compat-node-txn',
    brokers: [broker.bootstrap],
    logLevel: logLevel.NOTHING,
    requestTimeout: 30000,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
  })
  admin = kafka.admin()
  await admin.connect()
})

after(async () => {
  if (admin) await admin.disconnect()
  if (broker) await broker.stop()
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const unique = (p) => `node-${p}-${crypto.randomBytes(4).toString('hex')}`

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

// Reads the whole topic in a one-member group of its own until `want` records per partition
// have come, then keeps reading for another second to catch any record beyond them.
async function readAll (topic, readUncommitted, want) {
  const consumer = kafka.consumer({
    groupId: unique('txn-reader'),
    readUncommitted,
    sessionTimeout: 6000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 200,
  })
  const got = Array.from({ length: PARTITIONS }, () => [])
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        got[partition].push(message.value === null ? null : message.value.toString())
      },
    })
    await waitUntil(() => got.every((vs, p) => vs.length >= want[p].length), 60000,
      `${readUncommitted ? 'read_uncommitted' : 'read_committed'} records`)
    await sleep(1000)
  } finally {
    await consumer.disconnect()
  }
  return got
}

test('transactions: commit and abort across 3 partitions, read committed and uncommitted', async () => {
  const topic = unique('txn')
  await createTopic(topic)
  const producer = kafka.producer({
    transactionalId: unique('txn-id'),
    idempotent: true,
    maxInFlightRequests: 1,
    transactionTimeout: 60000,
    allowAutoTopicCreation: false,
  })
  await producer.connect()
  const committed = Array.from({ length: PARTITIONS }, () => [])
  const all = Array.from({ length: PARTITIONS }, () => [])
  let aborted = 0
  try {
    for (let t = 0; t < 12; t++) {
      const abort = t % 3 === 2
      const tag = `${abort ? 'abort' : 'commit'}${String(t).padStart(2, '0')}`
      const txn = await producer.transaction()
      const messages = []
      for (let i = 0; i < 4 + t; i++) {
        for (let p = 0; p < PARTITIONS; p++) {
          messages.push({ partition: p, key: tag, value: `${tag}-p${p}-${String(i).padStart(3, '0')}` })
        }
      }
      // acknowledged before the end of the transaction: aborted records really are in the log
      await txn.send({ topic, acks: -1, messages })
      if (abort) {
        await txn.abort()
        aborted++
      } else {
        await txn.commit()
      }
      for (const m of messages) {
        all[m.partition].push(m.value)
        if (!abort) committed[m.partition].push(m.value)
      }
    }
  } finally {
    await producer.disconnect()
  }
  assert.equal(aborted, 4)

  const gotCommitted = await readAll(topic, false, committed)
  const gotAll = await readAll(topic, true, all)
  for (let p = 0; p < PARTITIONS; p++) {
    assert.deepEqual(gotCommitted[p], committed[p], `read_committed, partition ${p}`)
    assert.deepEqual(gotAll[p], all[p], `read_uncommitted, partition ${p}`)
  }
  // one marker per transaction takes an offset (the last one may follow the abort's answer by
  // a moment, in Kafka too)
  const highs = async () => (await admin.fetchTopicOffsets(topic))
    .sort((a, b) => a.partition - b.partition).map((o) => Number(o.high))
  const want = all.map((vs) => vs.length + 12)
  const deadline = Date.now() + 15000
  let got = await highs()
  while (JSON.stringify(got) !== JSON.stringify(want) && Date.now() < deadline) {
    await sleep(200)
    got = await highs()
  }
  assert.deepEqual(got, want, 'high watermarks')
})

test('transactions: a second producer with the same transactional id fences the first', async () => {
  const topic = unique('txn-fence')
  await createTopic(topic)
  const transactionalId = unique('txn-fence-id')
  const opts = { transactionalId, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 60000, allowAutoTopicCreation: false }
  const p1 = kafka.producer(opts)
  const p2 = kafka.producer(opts)
  await p1.connect()
  await p2.connect()
  const msgs = (tag, n) => Array.from({ length: n * PARTITIONS }, (_, i) => ({ partition: i % PARTITIONS, value: `${tag}-${i}` }))
  try {
    const t1 = await p1.transaction()
    const zombie = msgs('zombie', 2)
    await t1.send({ topic, acks: -1, messages: zombie })
    const t2 = await p2.transaction() // InitProducerId: bumps the epoch and aborts t1
    const winner = msgs('winner', 3)
    await t2.send({ topic, acks: -1, messages: winner })
    await t2.commit()
    const err = await t1.commit().then(() => null, (e) => e)
    assert.ok(err, 'the fenced producer committed')
    // kafkajs sends EndTxn v1: Kafka answers a fenced producer with INVALID_PRODUCER_EPOCH
    // there (PRODUCER_FENCED exists from EndTxn v2 on, KIP-588)
    assert.equal(err.type, 'INVALID_PRODUCER_EPOCH', `commit of the fenced producer: ${err}`)

    const want = (ms) => Array.from({ length: PARTITIONS }, (_, p) => ms.filter((m) => m.partition === p).map((m) => m.value))
    const gotCommitted = await readAll(topic, false, want(winner))
    const gotAll = await readAll(topic, true, want([...zombie, ...winner]))
    for (let p = 0; p < PARTITIONS; p++) {
      assert.deepEqual(gotCommitted[p], want(winner)[p], `read_committed, partition ${p}`)
      assert.deepEqual(gotAll[p], want([...zombie, ...winner])[p], `read_uncommitted, partition ${p}`)
    }
  } finally {
    await p1.disconnect()
    await p2.disconnect()
  }
})
