'use strict'
// The broker under test: KAFKA_BOOTSTRAP if set (nothing is started), else a fresh
// `rill serve --listen 127.0.0.1:0 --data-dir <temp>` (RILL_BIN, default
// <repo>/target/release/rill) whose "rill listening on 127.0.0.1:PORT" line is awaited.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const READY_RE = /^rill listening on (127\.0\.0\.1:\d+)\s*$/
const READY_TIMEOUT_MS = 30000
const STOP_GRACE_MS = 5000

async function startBroker () {
  if (process.env.KAFKA_BOOTSTRAP) {
    return { bootstrap: process.env.KAFKA_BOOTSTRAP, stop: async () => {} }
  }
  const bin = process.env.RILL_BIN || path.resolve(__dirname, '..', '..', '..', 'target', 'release', 'rill')
  if (!fs.existsSync(bin)) throw new Error(`rill binary not found at ${bin} (build it or set RILL_BIN)`)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-compat-node-'))
  const data = path.join(tmp, 'data')
  fs.mkdirSync(data)
  const errLog = fs.openSync(path.join(tmp, 'rill-stderr.log'), 'a')
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', data],
    { stdio: ['ignore', 'pipe', errLog] })
  const rl = readline.createInterface({ input: child.stdout })
  const bootstrap = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no listening line within ${READY_TIMEOUT_MS} ms; stderr in ${tmp}/rill-stderr.log`)) }, READY_TIMEOUT_MS)
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`rill exited (${code}) before listening; stderr in ${tmp}/rill-stderr.log`)) })
    rl.once('line', (line) => {
      clearTimeout(timer)
      const m = READY_RE.exec(line)
      if (m) resolve(m[1])
      else { child.kill('SIGKILL'); reject(new Error(`unexpected first line ${JSON.stringify(line)}`)) }
    })
  })
  child.removeAllListeners('exit')
  rl.on('line', () => {}) // keep draining stdout
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
    await exited
    clearTimeout(t)
    if (process.env.RILL_COMPAT_LOG_DIR) {
      fs.copyFileSync(path.join(tmp, 'rill-stderr.log'), path.join(process.env.RILL_COMPAT_LOG_DIR, 'node-rill.log'))
    }
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  return { bootstrap, stop }
}

module.exports = { startBroker }
