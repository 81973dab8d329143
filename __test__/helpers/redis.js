'use strict'
/**
 * The one helper that owns redis-server processes for `node --test` files.
 *
 * Every server listens on 127.0.0.1 only, on a free port <= 55535 (never
 * 6379), keeps no data on disk and lives in its own temp dir. All servers are
 * tracked and SIGKILLed when the test process exits, so a failing test leaves
 * no orphan. Every wait is bounded.
 */
const { spawn, execFile } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const HOST = '127.0.0.1'
const MAX_PORT = 55535 // cluster bus listens on port + 10000
const READY_TIMEOUT_MS = 5000
const EXIT_TIMEOUT_MS = 5000
const CLI_TIMEOUT_MS = 5000
const CLUSTER_OK_TIMEOUT_MS = 15000

/** @type {Set<RedisServer>} */
const live = new Set()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves true if `promise` settled within `ms`, false otherwise; never leaves a timer behind. */
function settlesWithin(promise, ms) {
  let timer
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  return Promise.race([promise.then(() => true), timeout]).finally(() => clearTimeout(timer))
}

function canListen(port) {
  return new Promise((resolve) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)))
  })
}

function ephemeralPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen({ port: 0, host: HOST, exclusive: true }, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const reserved = new Set() // ports handed out by this process

/**
 * A free TCP port on 127.0.0.1, <= 55535, not 6379. With `bus: true` the
 * cluster bus port (port + 10000) is checked free as well.
 */
async function freePort({ bus = false } = {}) {
  for (let i = 0; i < 200; i++) {
    let port = await ephemeralPort()
    if (port > MAX_PORT) port = 20000 + Math.floor(Math.random() * (MAX_PORT - 20000))
    if (port === 6379 || reserved.has(port)) continue
    if (!(await canListen(port))) continue
    if (bus && !(await canListen(port + 10000))) continue
    reserved.add(port)
    return port
  }
  throw new Error('redis helper: no free port found after 200 attempts')
}

function run(cmd, args, timeoutMs = CLI_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        err.message = `${cmd} ${args.join(' ')} failed: ${err.message}${stderr ? `\n${stderr}` : ''}`
        err.stdout = stdout
        err.stderr = stderr
        reject(err)
      } else {
        resolve(String(stdout).trim())
      }
    })
  })
}

function tail(file, n = 2000) {
  try {
    const s = fs.readFileSync(file, 'utf8')
    return s.slice(-n)
  } catch {
    return '(no log)'
  }
}

class RedisServer {
  constructor(port, dir, opts) {
    this.port = port
    this.dir = dir
    this.host = HOST
    this.tls = opts.tls || null
    this.url = `${this.tls ? 'rediss' : 'redis'}://${HOST}:${port}`
    this._extraArgs = opts.args || []
    this._cliArgs = [...(opts.cliArgs || [])]
    if (this.tls) {
      this._cliArgs.unshift('--tls', '--cacert', this.tls.caFile)
      if (this.tls.clientCertFile) this._cliArgs.push('--cert', this.tls.clientCertFile, '--key', this.tls.clientKeyFile)
    }
    this.logFile = path.join(dir, 'redis.log')
    this.child = null
    this.paused = false
    this.stopped = false
  }

  /** pid of the current process (changes after restart) */
  get pid() {
    return this.child ? this.child.pid : undefined
  }

  _serverArgs() {
    const portArgs = this.tls
      ? [
          '--port', '0',
          '--tls-port', String(this.port),
          '--tls-cert-file', this.tls.certFile,
          '--tls-key-file', this.tls.keyFile,
          '--tls-ca-cert-file', this.tls.caFile,
          '--tls-auth-clients', this.tls.authClients ? 'yes' : 'no',
        ]
      : ['--port', String(this.port)]
    return [
      ...portArgs,
      '--bind', HOST,
      '--save', '',
      '--appendonly', 'no',
      '--dir', this.dir,
      '--logfile', this.logFile,
      '--daemonize', 'no',
      ...this._extraArgs,
    ]
  }

  async _launch() {
    const child = spawn('redis-server', this._serverArgs(), { stdio: 'ignore' })
    this.child = child
    this.paused = false
    child.exitCode_ = null
    child.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        child.exitCode_ = code
        child.exitSignal_ = signal
        child.hasExited = true
        resolve()
      })
      child.once('error', (err) => {
        child.spawnError = err
        child.hasExited = true
        resolve()
      })
    })
    // a forgotten server must not keep the test process alive; 'exit' kills it
    child.unref()
    await this._waitReady(child)
  }

  async _waitReady(child) {
    const deadline = Date.now() + READY_TIMEOUT_MS
    let last = ''
    while (Date.now() < deadline) {
      if (child.hasExited) {
        throw new Error(
          `redis-server on port ${this.port} exited before answering PING ` +
            `(code ${child.exitCode_}, signal ${child.exitSignal_}${child.spawnError ? `, ${child.spawnError.message}` : ''}).\n` +
            `log:\n${tail(this.logFile)}`,
        )
      }
      try {
        last = await run('redis-cli', ['-h', HOST, '-p', String(this.port), ...this._cliArgs, 'ping'], 500)
        if (last === 'PONG') return
      } catch (err) {
        last = err.message
      }
      await sleep(20)
    }
    throw new Error(
      `redis-server on port ${this.port} did not answer PING within ${READY_TIMEOUT_MS} ms (last: ${last}).\nlog:\n${tail(this.logFile)}`,
    )
  }

  /** Run `redis-cli -p port ...args`; resolves to trimmed stdout. */
  cli(...args) {
    return run('redis-cli', ['-h', HOST, '-p', String(this.port), ...this._cliArgs, ...args.map(String)])
  }

  /**
   * The ports of the clients (as this server sees them, which is what a
   * proxy's `except` takes) whose `CLIENT LIST` line passes `keep`.
   */
  async clientPorts(keep) {
    return (await this.cli('client', 'list'))
      .split('\n')
      .filter(keep)
      .map((line) => Number(/ addr=[^ ]*:(\d+) /.exec(line)[1]))
  }

  /** Send `signal` (default SIGKILL) and wait (bounded) for the process to exit. */
  async kill(signal = 'SIGKILL') {
    const child = this.child
    if (!child || child.hasExited) return
    try {
      process.kill(child.pid, signal)
      if (this.paused && signal !== 'SIGKILL') process.kill(child.pid, 'SIGCONT')
    } catch {
      /* already gone */
    }
    this.paused = false
    child.ref()
    try {
      if (!(await settlesWithin(child.exited, EXIT_TIMEOUT_MS))) {
        try {
          process.kill(child.pid, 'SIGKILL')
        } catch {
          /* gone */
        }
        await settlesWithin(child.exited, EXIT_TIMEOUT_MS)
        if (!child.hasExited) throw new Error(`redis-server pid ${child.pid} did not exit after SIGKILL`)
      }
    } finally {
      child.unref()
    }
  }

  /** SIGSTOP: the socket stays open, nothing answers. */
  pause() {
    if (this.child && !this.child.hasExited) {
      process.kill(this.child.pid, 'SIGSTOP')
      this.paused = true
    }
  }

  /** SIGCONT */
  resume() {
    if (this.child && !this.child.hasExited) {
      process.kill(this.child.pid, 'SIGCONT')
      this.paused = false
    }
  }

  /** Kill (if alive) and start again on the same port with empty data; resolves once PING answers. */
  async restart() {
    if (this.stopped) throw new Error('redis helper: restart() after stop()')
    await this.kill('SIGKILL')
    for (const f of ['dump.rdb', 'appendonly.aof']) fs.rmSync(path.join(this.dir, f), { force: true, recursive: true })
    // the port may take a moment to be reusable; retry the launch a few times (bounded)
    let lastErr
    for (let i = 0; i < 5; i++) {
      try {
        await this._launch()
        return
      } catch (err) {
        lastErr = err
        if (this.child && !this.child.hasExited) await this.kill('SIGKILL')
        await sleep(100)
      }
    }
    throw lastErr
  }

  /** Kill and remove the temp dir. Idempotent. */
  async stop() {
    if (this.stopped) return
    this.stopped = true
    try {
      await this.kill('SIGKILL')
    } finally {
      live.delete(this)
      reserved.delete(this.port)
      fs.rmSync(this.dir, { recursive: true, force: true })
    }
  }

  _killSync() {
    try {
      if (this.child && !this.child.hasExited) process.kill(this.child.pid, 'SIGKILL')
    } catch {
      /* gone */
    }
    try {
      fs.rmSync(this.dir, { recursive: true, force: true })
    } catch {
      /* ignore */
    }
  }
}

/**
 * Start a redis-server on 127.0.0.1.
 * opts: { port?, args?: string[] (extra server args), cliArgs?: string[] (extra redis-cli args),
 *         tls?: { certFile, keyFile, caFile, authClients?, clientCertFile?, clientKeyFile? }, bus?: boolean }
 * With `tls`, the server listens with TLS only (--port 0 --tls-port P), url is rediss://, and cli() passes --tls --cacert.
 */
async function startRedis(opts = {}) {
  if (opts.port === 6379) throw new Error('redis helper: port 6379 is reserved for the system Redis')
  // Another process may grab a "free" port between our probe and redis' bind: retry on a new port (bounded).
  const attempts = opts.port ? 1 : 3
  let lastErr
  for (let i = 0; i < attempts; i++) {
    const port = opts.port || (await freePort({ bus: !!opts.bus }))
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `redis-test-${port}-`))
    const server = new RedisServer(port, dir, opts)
    live.add(server)
    try {
      await server._launch()
      return server
    } catch (err) {
      lastErr = err
      await server.stop().catch(() => {})
      if (!/Address already in use/i.test(err.message)) break
    }
  }
  throw lastErr
}

/**
 * Start a Redis Cluster of `n` masters, each with `replicas` replicas, and wait until every node says
 * cluster_state:ok (and, with replicas, until every master has its replicas attached and synced).
 * opts: { replicas?: number (default 0), args?: string[] (extra server args for every node),
 *         nodeTimeoutMs?: number (default 2000) }
 * Returns { nodes, seeds: ['redis://127.0.0.1:p', ...], stop(), masterOf(key), shards() }.
 */
async function startCluster(n = 3, opts = {}) {
  const replicas = opts.replicas || 0
  const nodes = []
  const stop = async () => {
    await Promise.all(nodes.map((s) => s.stop().catch(() => {})))
  }
  const alive = () => nodes.filter((s) => s.child && !s.child.hasExited && !s.stopped)
  /** The live node that serves `key`'s slot as master (asked of any live node). */
  const masterOf = async (key) => {
    for (const node of alive()) {
      try {
        const slot = Number(await node.cli('cluster', 'keyslot', key))
        const owner = await shardOwner(node, slot)
        if (owner) return nodes.find((s) => s.port === owner)
      } catch {
        /* try the next node */
      }
    }
    return undefined
  }
  /** [{ master: port, replicas: [port], slots: [[from, to]] }] as a live node sees it (CLUSTER NODES). */
  const shards = async () => {
    for (const node of alive()) {
      try {
        return parseClusterNodes(await node.cli('cluster', 'nodes'))
      } catch {
        /* try the next node */
      }
    }
    return []
  }
  try {
    for (let i = 0; i < n * (1 + replicas); i++) {
      const port = await freePort({ bus: true })
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `redis-cluster-${port}-`))
      const server = new RedisServer(port, dir, {
        args: [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', path.join(dir, 'nodes.conf'),
          '--cluster-node-timeout', String(opts.nodeTimeoutMs || 2000),
          // A replica starts syncing at once (the default waits 5 s for more replicas to join).
          '--repl-diskless-sync-delay', '0',
          ...(opts.args || []),
        ],
      })
      live.add(server)
      nodes.push(server)
      await server._launch()
    }
    await run(
      'redis-cli',
      ['--cluster', 'create', ...nodes.map((s) => `${HOST}:${s.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'],
      30000,
    )
    const deadline = Date.now() + CLUSTER_OK_TIMEOUT_MS
    for (;;) {
      const infos = await Promise.all(nodes.map((s) => s.cli('cluster', 'info').catch((e) => e.message)))
      const ok = infos.every((info) => /cluster_state:ok/.test(info))
      const attached = ok && (replicas === 0 || (await shards()).every((sh) => sh.replicas.length >= replicas))
      // A replica that never finished its first sync cannot be promoted (its data counts as too old).
      const synced =
        attached &&
        (replicas === 0 ||
          (await Promise.all(nodes.map((s) => s.cli('info', 'replication').catch(() => '')))).every(
            (info) => !/role:slave/.test(info) || /master_link_status:up/.test(info),
          ))
      if (synced) break
      if (Date.now() > deadline) {
        throw new Error(`redis cluster not ok within ${CLUSTER_OK_TIMEOUT_MS} ms:\n${infos.join('\n---\n')}`)
      }
      await sleep(100)
    }
  } catch (err) {
    await stop()
    throw err
  }
  const shardOwner = async (node, slot) => {
    const found = parseClusterNodes(await node.cli('cluster', 'nodes'))
    const shard = found.find((sh) => sh.slots.some(([a, b]) => slot >= a && slot <= b))
    return shard && shard.master
  }
  return { nodes, seeds: nodes.map((s) => s.url), stop, masterOf, shards }
}

/** CLUSTER NODES text → [{ id, master: port, replicas: [port], slots: [[from, to]] }] for live masters with slots. */
function parseClusterNodes(text) {
  const rows = text.split('\n').filter(Boolean).map((line) => {
    const [id, addr, flags, masterId, , , , , ...slots] = line.trim().split(' ')
    const port = Number(addr.split('@')[0].split(':').pop())
    return { id, port, flags: flags.split(','), masterId, slots }
  })
  const up = (r) => !r.flags.includes('fail') && !r.flags.includes('fail?')
  return rows
    .filter((r) => r.flags.includes('master') && up(r) && r.slots.length > 0)
    .map((m) => ({
      id: m.id,
      master: m.port,
      replicas: rows.filter((r) => r.masterId === m.id && up(r)).map((r) => r.port),
      slots: m.slots
        .filter((s) => !s.startsWith('['))
        .map((s) => s.split('-').map(Number))
        .map(([a, b]) => [a, b === undefined ? a : b]),
    }))
}

/**
 * Start Redis Sentinel: one master, `replicas` replicas (default 1) and `sentinels` sentinels (default 3),
 * all on 127.0.0.1, watching the master under `name` (default 'm') with quorum 2,
 * down-after-milliseconds `downAfterMs` (default 1000) and failover-timeout 3000.
 * Resolves once every sentinel knows the master, its replicas and the other sentinels.
 * Returns { master, replicas, sentinels, servers, name, sentinelAddrs: ['127.0.0.1:p', ...],
 *           currentMaster(): port as the sentinels say, stop() }.
 */
async function startSentinel(opts = {}) {
  const name = opts.name || 'm'
  const servers = []
  const stop = async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => {})))
  }
  try {
    const master = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] })
    servers.push(master)
    const replicas = []
    for (let i = 0; i < (opts.replicas ?? 1); i++) {
      const r = await startRedis({ args: ['--replicaof', HOST, String(master.port), '--repl-diskless-sync-delay', '0'] })
      servers.push(r)
      replicas.push(r)
    }
    const sentinels = []
    for (let i = 0; i < (opts.sentinels ?? 3); i++) {
      const port = await freePort()
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `redis-sentinel-${port}-`))
      const conf = path.join(dir, 'sentinel.conf')
      fs.writeFileSync(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          `dir ${dir}`,
          `sentinel monitor ${name} ${HOST} ${master.port} 2`,
          `sentinel down-after-milliseconds ${name} ${opts.downAfterMs || 1000}`,
          `sentinel failover-timeout ${name} 3000`,
          `sentinel parallel-syncs ${name} 1`,
          '',
        ].join('\n'),
      )
      const s = new RedisServer(port, dir, {})
      // A sentinel runs from its (rewritable) config file; the server flags do not apply.
      s._serverArgs = () => [conf, '--sentinel', '--logfile', s.logFile, '--daemonize', 'no']
      live.add(s)
      servers.push(s)
      await s._launch()
      sentinels.push(s)
    }
    const deadline = Date.now() + CLUSTER_OK_TIMEOUT_MS
    for (;;) {
      const views = await Promise.all(
        sentinels.map((s) => s.cli('sentinel', 'master', name).catch((e) => e.message)),
      )
      const field = (view, key) => {
        const lines = view.split('\n')
        const i = lines.indexOf(key)
        return i >= 0 ? Number(lines[i + 1]) : -1
      }
      const ready = views.every(
        (v) => field(v, 'num-slaves') >= replicas.length && field(v, 'num-other-sentinels') >= sentinels.length - 1,
      )
      const synced = await Promise.all(replicas.map((r) => r.cli('info', 'replication').catch(() => '')))
      if (ready && synced.every((info) => /master_link_status:up/.test(info))) break
      if (Date.now() > deadline) throw new Error(`sentinels not ready within ${CLUSTER_OK_TIMEOUT_MS} ms:\n${views.join('\n---\n')}`)
      await sleep(100)
    }
    const currentMaster = async () => {
      for (const s of sentinels) {
        try {
          const [, port] = (await s.cli('sentinel', 'get-master-addr-by-name', name)).split('\n')
          return Number(port)
        } catch {
          /* next sentinel */
        }
      }
      return undefined
    }
    return {
      master,
      replicas,
      sentinels,
      servers,
      name,
      sentinelAddrs: sentinels.map((s) => `${HOST}:${s.port}`),
      currentMaster,
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/**
 * One redis-server for the tests of a file (or of the describe block it is
 * called in): started before them, stopped after. Returns a stand-in that
 * forwards to the server once it runs (`server.url`, `server.cli(...)`...).
 */
function redisForFile(options) {
  const { before, after } = require('node:test')
  let server = null
  before(async () => {
    server = await startRedis(options)
  })
  after(async () => {
    await server?.stop()
  })
  return new Proxy(
    {},
    {
      get(_, name) {
        if (!server) throw new Error(`redisForFile: server.${String(name)} read before the server started`)
        const value = server[name]
        return typeof value === 'function' ? value.bind(server) : value
      },
    },
  )
}

/** Stop every server this process started (for a global after hook). */
async function stopAll() {
  await Promise.all([...live].map((s) => s.stop().catch(() => {})))
}

function killAllSync() {
  for (const s of live) s._killSync()
  live.clear()
}

process.once('exit', killAllSync)
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAllSync()
    process.kill(process.pid, sig)
  })
}

module.exports = { startRedis, redisForFile, startCluster, startSentinel, parseClusterNodes, stopAll, freePort, HOST }
