'use strict'
/**
 * Auth and secrets: password-only AUTH and ACL users against this file's own
 * redis-servers; wrong credentials leave the adapter serving from memory and
 * unhealthy; and no password or URL credential ever shows in stats, health,
 * metrics, errors, events, warnings or output.
 *
 * The secret search runs its scenarios in a child process (this same file,
 * with SECRETS_CHILD set) so that everything the adapter and Node print to
 * stdout/stderr, native code included, is searched too.
 *
 * Every wait is bounded; adapters are closed and servers stopped in finally/after.
 */
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const util = require('node:util')

const CHILD = process.env.SECRETS_CHILD
delete process.env.SECRETS_CHILD
require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')
const { sleep, guard, until } = require('./helpers/wait')

const HOST = '127.0.0.1'
const CONNECT_WAIT_MS = 10000
const CHILD_TIMEOUT_MS = 120000
/** How long an adapter with wrong credentials is watched to see that it stays in memory mode. */
const STAY_MS = 1200
/** Quick failure handling, so that every scenario sees several failed probes. */
const FAST = { commandTimeoutMs: 250, connectTimeoutMs: 1000, breakerFailures: 1, breakerCooldownMs: 150 }
const AUTH_FAILURE = /auth|WRONGPASS|NOAUTH/i

const enc = encodeURIComponent

if (CHILD) {
  runScenarios(JSON.parse(CHILD)).then(
    (code) => {
      process.exitCode = code
    },
    (e) => {
      process.stdout.write(`SECRETS-CHILD-CRASHED ${util.inspect(e)}\n`)
      process.exitCode = 3
    },
  )
} else {
  defineTests()
}

async function closeAll(adapters) {
  for (const a of adapters.splice(0)) await guard(a.close(), 5000, 'close').catch(() => {})
}

function defineTests() {
  const { startRedis } = require('./helpers/redis')
  const token = () => crypto.randomBytes(6).toString('hex')
  // Distinctive secrets, each with its own random token: a token found in any
  // output means (a part of) a secret leaked.
  const tokens = { pw: token(), acl: token(), wrong: token(), wrongAcl: token() }
  const secrets = {
    /** requirepass of `pwServer` and `stopServer`. */
    password: `S3cr3t-${tokens.pw}`,
    /** alice's password: characters that must be percent-encoded in a URL. */
    aclPassword: `Al1ce@p:ss/w%rd#${tokens.acl}?&x y`,
    wrong: `Wr0ng-${tokens.wrong}`,
    wrongAcl: `N0t@alice/${tokens.wrongAcl}%`,
  }
  const aclArgs = ['--user', 'alice', 'on', `>${secrets.aclPassword}`, '~*', '&*', '+@all', '--user', 'default', 'off']
  const aclCli = ['--user', 'alice', '--pass', secrets.aclPassword, '--no-auth-warning']
  const pwCli = ['-a', secrets.password, '--no-auth-warning']

  let pwServer
  let aclServer
  let stopServer
  let dir
  const adapters = []

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cache-secrets-test-'))
    pwServer = await startRedis({ args: ['--requirepass', secrets.password], cliArgs: pwCli })
    aclServer = await startRedis({ args: aclArgs, cliArgs: aclCli })
    stopServer = await startRedis({ args: ['--requirepass', secrets.password], cliArgs: pwCli })
  })

  after(async () => {
    await closeAll(adapters)
    for (const s of [pwServer, aclServer, stopServer]) await s?.stop()
    if (dir) fs.rmSync(dir, { recursive: true, force: true })
  })

  function open(options) {
    const a = new CacheAdapter({ keyPrefix: 'secrets', ...FAST, ...options })
    adapters.push(a)
    return a
  }

  /** The adapter reaches Redis: a write lands there, and health is healthy. */
  async function assertServedByRedis(a, server, key) {
    await until(() => a.mode === 'redis', CONNECT_WAIT_MS, `${key}: mode redis`)
    assert.equal(await a.set(key, { via: key }), true)
    assert.deepEqual(await a.get(key), { via: key })
    assert.equal(await server.cli('exists', `secrets:kv:${key}`), '1', `${key} reached Redis`)
    const health = await a.healthCheck()
    assert.equal(health.redis.status, 'healthy', JSON.stringify(health.redis))
    assert.equal(health.status, 'healthy')
  }

  test('password-only AUTH: the password option, a redis://:pw@ URL and REDIS_PASSWORD', async () => {
    try {
      await assertServedByRedis(open({ port: pwServer.port, password: secrets.password }), pwServer, 'by-option')
      await assertServedByRedis(open({ url: `redis://:${enc(secrets.password)}@${HOST}:${pwServer.port}` }), pwServer, 'by-url')
      process.env.REDIS_PASSWORD = secrets.password
      let fromEnv
      try {
        fromEnv = open({ port: pwServer.port })
      } finally {
        delete process.env.REDIS_PASSWORD
      }
      await assertServedByRedis(fromEnv, pwServer, 'by-env')
    } finally {
      await closeAll(adapters)
    }
  })

  test('ACL user: username + password options and a redis://user:pass@ URL', async () => {
    try {
      // The default user is off on this server: only alice gets in.
      const a = open({ port: aclServer.port, username: 'alice', password: secrets.aclPassword })
      await assertServedByRedis(a, aclServer, 'acl-by-option')
      const b = open({ url: `redis://alice:${enc(secrets.aclPassword)}@${HOST}:${aclServer.port}/0` })
      await assertServedByRedis(b, aclServer, 'acl-by-url')
      const clients = await aclServer.cli('client', 'list')
      assert.ok(clients.split('\n').filter((l) => / user=alice /.test(l)).length >= 3, clients)
    } finally {
      await closeAll(adapters)
    }
  })

  test('wrong password, no password, wrong user: serves from memory, health unhealthy with the auth failure', async () => {
    const cases = [
      ['wrong password', { port: pwServer.port, password: secrets.wrong }, pwServer],
      ['no password', { port: pwServer.port }, pwServer],
      ['wrong ACL password', { url: `redis://alice:${enc(secrets.wrongAcl)}@${HOST}:${aclServer.port}` }, aclServer],
      ['wrong ACL user', { port: aclServer.port, username: 'mallory', password: secrets.aclPassword }, aclServer],
    ]
    try {
      for (const [what, options, server] of cases) {
        const a = open(options)
        const modes = []
        a.on('modeChange', (e) => modes.push(e))
        const key = `denied-${what.replace(/ /g, '-')}`
        // Several probes fail with the auth error; none lets the adapter into Redis.
        await until(async () => AUTH_FAILURE.test((await a.getStats()).cache.lastError || ''), CONNECT_WAIT_MS, `${what}: lastError`)
        assert.equal(await a.set(key, { kept: what }), true)
        assert.deepEqual(await a.get(key), { kept: what })
        await sleep(STAY_MS)
        assert.equal(a.mode, 'memory', what)
        assert.deepEqual(modes, [], `${what}: never switched to redis`)
        const health = await a.healthCheck()
        assert.equal(health.redis.status, 'unhealthy', `${what}: ${JSON.stringify(health.redis)}`)
        assert.match(health.redis.error, AUTH_FAILURE, what)
        assert.equal(health.status, 'degraded', what)
        assert.equal(health.adapter.mode, 'memory', what)
        assert.notEqual(health.cache.breaker.state, 'closed', what)
        assert.deepEqual(await a.get(key), { kept: what }, `${what}: still served from memory`)
        assert.equal(await server.cli('exists', `secrets:kv:${key}`), '0', `${what}: nothing reached Redis`)
        await a.close()
      }
    } finally {
      await closeAll(adapters)
    }
  })

  /** Waits (bounded) until the adapter is in memory mode because Redis refused its credentials. */
  async function assertRefused(a, key) {
    await until(async () => {
      await a.set(key, 1)
      return a.mode === 'memory' && AUTH_FAILURE.test((await a.getStats()).cache.lastError || '')
    }, CONNECT_WAIT_MS, `${key}: memory mode with the auth failure`)
    const health = await a.healthCheck()
    assert.equal(health.redis.status, 'unhealthy', JSON.stringify(health.redis))
    assert.match(health.redis.error, AUTH_FAILURE)
    assert.equal(health.status, 'degraded')
    assert.equal(await a.get(key), 1)
  }

  /** Once Redis accepts the password, a probe gets through and what memory kept is replayed. */
  async function assertRecovered(a, server, key) {
    await until(() => a.mode === 'redis', CONNECT_WAIT_MS, `${key}: back to redis`)
    const exists = () => server.cli('-a', secrets.password, 'exists', `secrets:kv:${key}`)
    await until(async () => (await exists()) === '1', CONNECT_WAIT_MS, `${key}: replayed`)
    assert.equal((await a.healthCheck()).redis.status, 'healthy')
  }

  test('credentials Redis accepts only later: memory until then, then Redis, with the writes replayed', async () => {
    const other = `0ther-${token()}`
    let server
    try {
      server = await startRedis({ args: ['--requirepass', other], cliArgs: ['-a', other, '--no-auth-warning'] })
      const a = open({ url: `redis://:${enc(secrets.password)}@${HOST}:${server.port}` })
      await assertRefused(a, 'before-accepted')
      await server.cli('config', 'set', 'requirepass', secrets.password)
      await assertRecovered(a, server, 'before-accepted')
    } finally {
      await closeAll(adapters)
      await server?.stop()
    }
  })

  /** A server whose password changes under a connected adapter, whose connections are then cut. */
  async function rotatedUnder() {
    const rotated = `R0tated-${token()}`
    const server = await startRedis({ args: ['--requirepass', secrets.password], cliArgs: pwCli })
    const a = open({ url: `redis://:${enc(secrets.password)}@${HOST}:${server.port}` })
    await assertServedByRedis(a, server, 'before-rotation')
    await server.cli('config', 'set', 'requirepass', rotated)
    // (redis-cli takes the last -a it is given)
    await server.cli('-a', rotated, 'client', 'kill', 'type', 'normal', 'skipme', 'yes')
    return { a, server, rotated }
  }

  test('a password changed on the server: the adapter serves from memory, health unhealthy', async () => {
    let server
    try {
      let a
      ;({ a, server } = await rotatedUnder())
      await assertRefused(a, 'after-rotation')
    } finally {
      await closeAll(adapters)
      await server?.stop()
    }
  })

  // redis-rs's ConnectionManager keeps a reconnect that failed on AUTH as its
  // connection for good (it reconnects after I/O errors only), so the pool
  // never recovers; the pool (src/tiers/redis.rs) must replace such connections.
  test('a password changed on the server and back: the adapter returns to Redis', async () => {
    let server
    try {
      let a
      let rotated
      ;({ a, server, rotated } = await rotatedUnder())
      await assertRefused(a, 'rotated-back')
      await server.cli('-a', rotated, 'config', 'set', 'requirepass', secrets.password)
      await assertRecovered(a, server, 'rotated-back')
    } finally {
      await closeAll(adapters)
      await server?.stop()
    }
  })

  test('no password or URL credential appears in stats, health, metrics, errors, events, warnings or output', async () => {
    const garbageCa = path.join(dir, 'garbage-ca.pem')
    fs.writeFileSync(garbageCa, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n')
    const config = {
      secrets,
      pwPort: pwServer.port,
      aclPort: aclServer.port,
      stopPort: stopServer.port,
      stopPid: stopServer.pid,
      missingCa: path.join(dir, 'no-such-dir', 'ca.pem'),
      garbageCa,
    }
    let out
    try {
      out = await new Promise((resolve) => {
        execFile(
          process.execPath,
          [__filename],
          {
            env: { ...process.env, SECRETS_CHILD: JSON.stringify(config) },
            timeout: CHILD_TIMEOUT_MS,
            killSignal: 'SIGKILL',
            maxBuffer: 64 * 1024 * 1024,
          },
          (error, stdout, stderr) => resolve({ error, stdout: String(stdout), stderr: String(stderr) }),
        )
      })
    } finally {
      // The child resumes the server itself; this is for a child that died while it was stopped.
      try {
        process.kill(stopServer.pid, 'SIGCONT')
      } catch {
        /* gone */
      }
    }
    const line = out.stdout.split('\n').find((l) => l.startsWith('SECRETS-REPORT '))
    assert.ok(line, `the child reported (exit: ${out.error && out.error.message})\nstdout:\n${out.stdout.slice(-3000)}\nstderr:\n${out.stderr.slice(-3000)}`)
    const report = JSON.parse(line.slice('SECRETS-REPORT '.length))

    // The search itself: every secret, its URL-encoded form, every user:pass@
    // credential, and each secret's random token (a part of a secret is a leak too).
    const needles = new Map()
    for (const [name, s] of Object.entries(secrets)) {
      needles.set(`${name} (raw)`, s)
      needles.set(`${name} (URL-encoded)`, enc(s))
    }
    needles.set('credential :password@', `:${enc(secrets.password)}@`)
    needles.set('credential alice:aclPassword@', `alice:${enc(secrets.aclPassword)}@`)
    needles.set('credential mallory:aclPassword@', `mallory:${enc(secrets.aclPassword)}@`)
    for (const [name, t] of Object.entries(tokens)) needles.set(`token of ${name}`, t)
    const leaks = []
    for (const [name, needle] of needles) {
      for (const item of report.items) {
        if (item.text.includes(needle)) leaks.push(`${name} in ${item.where}: ${item.text.slice(0, 400)}`)
      }
      if (out.stdout.includes(needle)) leaks.push(`${name} on stdout`)
      if (out.stderr.includes(needle)) leaks.push(`${name} on stderr: ${out.stderr.slice(0, 400)}`)
    }
    assert.deepEqual(leaks, [], 'secrets leaked')

    // The search looked at real material: each provocation produced what it should.
    assert.deepEqual(report.failures, [], 'scenario failures')
    assert.equal(out.error, null, `child exit: ${out.error && out.error.message}\nstderr:\n${out.stderr.slice(-3000)}`)
    const kinds = (w) => report.items.filter((i) => i.where.startsWith(w))
    assert.ok(kinds('construct').length >= 16, 'construction errors collected')
    assert.ok(kinds('closed').filter((i) => /closed/.test(i.text)).length >= 4, 'closed-adapter errors collected')
    for (const scenario of ['bad-password', 'bad-url-password', 'bad-acl-url', 'wrong-user', 'env-password', 'tls-plain', 'tls-missing-ca', 'tls-garbage-ca', 'cluster-seed', 'no-such-host', 'timeout']) {
      assert.ok(kinds(`${scenario} health`).length >= 1, `${scenario}: health collected`)
      assert.ok(kinds(`${scenario} stats`).length >= 1, `${scenario}: stats collected`)
      assert.ok(kinds(`${scenario} metrics`).length >= 1, `${scenario}: metrics collected`)
    }
    assert.ok(kinds('timeout modeChange').length >= 2, 'modeChange events of the timeout scenario')
    assert.ok(kinds('timeout health').some((i) => /timed out/.test(i.text)), 'a health check timed out')
    assert.ok(kinds('bad-password health').some((i) => AUTH_FAILURE.test(i.text)), 'the auth failure is in health')
  })
}

// The child: provokes every failure and collects everything a caller, a
// listener or a log could see; prints it as one `SECRETS-REPORT <json>` line.
async function runScenarios(cfg) {
  const { secrets } = cfg
  const items = []
  const failures = []
  const add = (where, text) => items.push({ where, text: String(text) })
  const adapters = []

  function errorText(e) {
    if (!(e instanceof Error)) return `non-error: ${util.inspect(e)}`
    const own = {}
    for (const k of Object.getOwnPropertyNames(e)) own[k] = String(e[k])
    return JSON.stringify({ message: e.message, stack: e.stack, own, string: String(e), inspect: util.inspect(e, { showHidden: true }) })
  }
  process.on('warning', (w) => add('warning', errorText(w)))

  function open(label, options) {
    const a = new CacheAdapter({
      keyPrefix: 'secrets-leak',
      ...FAST,
      ...options,
      onModeChange: (e) => add(`${label} onModeChange`, JSON.stringify(e)),
    })
    a.on('modeChange', (e) => add(`${label} modeChange`, JSON.stringify(e)))
    adapters.push(a)
    return a
  }

  /** Every call a caller makes; rejections are collected. */
  async function exercise(label, a) {
    const calls = [
      () => a.set(`${label}-k`, { v: 1 }),
      () => a.get(`${label}-k`),
      () => a.setConversationContext('org', '+15550001', [{ role: 'user', content: 'hi' }]),
      () => a.getConversationContext('org', '+15550001'),
      () => a.increment(`${label}-n`),
      () => a.hset(`${label}-h`, 'f', 1),
      () => a.getOrLoad(`${label}-load`, async () => ({ loaded: true })),
      () => a.clearOrganizationCache('org'),
    ]
    for (const call of calls) {
      try {
        await guard(call(), 10000, `${label} call`)
      } catch (e) {
        add(`${label} error`, errorText(e))
      }
    }
  }

  async function snapshot(label, a) {
    try {
      add(`${label} health`, JSON.stringify(await guard(a.healthCheck(), 10000, 'healthCheck')))
      add(`${label} stats`, JSON.stringify(await a.getStats()))
      add(`${label} metrics`, await a.metrics())
      add(`${label} inspect`, util.inspect(a, { depth: 6, showHidden: true }))
    } catch (e) {
      add(`${label} snapshot error`, errorText(e))
    }
  }

  const lastError = async (a) => (await a.getStats()).cache.lastError
  /** Waits (bounded) until a few probes have failed, so the reason is a real one. */
  async function settle(label, a) {
    try {
      await until(async () => !/^connecting$/.test((await lastError(a)) || 'connecting'), CONNECT_WAIT_MS, `${label}: a failure`)
      await sleep(500)
    } catch (e) {
      failures.push(`${label}: ${e.message}`)
    }
  }

  // 1. Bad credentials, given every way they can be given.
  const bad = [
    ['bad-password', { port: cfg.pwPort, password: secrets.wrong }],
    ['bad-url-password', { url: `redis://:${enc(secrets.wrong)}@${HOST}:${cfg.pwPort}` }],
    ['bad-acl-url', { url: `redis://alice:${enc(secrets.wrongAcl)}@${HOST}:${cfg.aclPort}/0` }],
    ['wrong-user', { url: `redis://mallory:${enc(secrets.aclPassword)}@${HOST}:${cfg.aclPort}` }],
  ]
  for (const [label, options] of bad) {
    const a = open(label, options)
    await settle(label, a)
    await exercise(label, a)
    await snapshot(label, a)
    const health = await a.healthCheck()
    if (health.redis.status !== 'unhealthy' || !AUTH_FAILURE.test(health.redis.error)) {
      failures.push(`${label}: health ${health.redis.status} ${health.redis.error}`)
    }
  }
  process.env.REDIS_PASSWORD = secrets.wrong
  try {
    const a = open('env-password', { port: cfg.pwPort })
    delete process.env.REDIS_PASSWORD
    await settle('env-password', a)
    await exercise('env-password', a)
    await snapshot('env-password', a)
  } finally {
    delete process.env.REDIS_PASSWORD
  }

  // 2. TLS, cluster and DNS failures, with credentials in the URL.
  const unreachable = [
    ['tls-plain', { url: `rediss://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}` }],
    ['tls-missing-ca', { url: `rediss://alice:${enc(secrets.aclPassword)}@${HOST}:${cfg.aclPort}`, tls: { caFile: cfg.missingCa } }],
    ['tls-garbage-ca', { url: `rediss://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}`, tls: { caFile: cfg.garbageCa } }],
    // a cluster seed URL with credentials, to a server that is no cluster member
    ['cluster-seed', { clusterNodes: [`redis://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}`] }],
    ['no-such-host', { url: `redis://alice:${enc(secrets.aclPassword)}@no-such-host.invalid:6390` }],
  ]
  for (const [label, options] of unreachable) {
    const a = open(label, options)
    await settle(label, a)
    await exercise(label, a)
    await snapshot(label, a)
  }

  // 3. Timeouts: a connected adapter whose Redis stops answering (SIGSTOP).
  {
    const a = open('timeout', { url: `redis://:${enc(secrets.password)}@${HOST}:${cfg.stopPort}` })
    try {
      await until(() => a.mode === 'redis', CONNECT_WAIT_MS, 'timeout: connected')
      await a.set('timeout-before', 1)
      process.kill(cfg.stopPid, 'SIGSTOP')
      await snapshot('timeout', a) // the health PING times out while the breaker is closed
      await exercise('timeout', a)
      await until(() => a.mode === 'memory', CONNECT_WAIT_MS, 'timeout: memory mode')
      await sleep(600) // failed probes
      await snapshot('timeout', a)
    } catch (e) {
      failures.push(`timeout: ${e.message}`)
    } finally {
      process.kill(cfg.stopPid, 'SIGCONT')
    }
    try {
      await until(() => a.mode === 'redis', CONNECT_WAIT_MS, 'timeout: back to redis')
      await snapshot('timeout after', a)
    } catch (e) {
      failures.push(e.message)
    }
  }

  // 4. A closed adapter.
  {
    const a = open('closed', { url: `redis://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}` })
    await until(() => a.mode === 'redis', CONNECT_WAIT_MS, 'closed: connected').catch((e) => failures.push(e.message))
    await a.close()
    await exercise('closed', a)
    await snapshot('closed', a)
    await a.close()
  }

  // 5. Construction errors, each with credentials somewhere in its options.
  const construct = [
    ['string options', `redis://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}`],
    ['invalid port', { url: `redis://:${enc(secrets.password)}@${HOST}:notaport` }],
    ['invalid db', { url: `redis://alice:${enc(secrets.aclPassword)}@${HOST}:${cfg.aclPort}/notadb` }],
    ['unencoded specials', { url: `redis://alice:${secrets.aclPassword}@${HOST}:${cfg.aclPort}` }],
    ['unencoded specials, no host', { url: `redis://alice:${secrets.aclPassword}` }],
    ['no host', { url: `redis://:${secrets.password}` }],
    ['unknown option', { url: `redis://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}`, bogus: 1 }],
    ['bad port option', { url: `redis://:${enc(secrets.password)}@${HOST}`, port: 'x' }],
    ['missing scheme', { url: `${secrets.password}@${HOST}:${cfg.pwPort}` }],
    ['unsupported scheme', { url: `http://:${enc(secrets.password)}@${HOST}:${cfg.pwPort}` }],
    ['password as scheme', { url: `${secrets.password}://${HOST}` }],
    ['bad pool size', { password: secrets.password, poolSize: 0 }],
    ['password as an option name', { password: secrets.password, [secrets.password]: 1 }],
    ['bad password type', { url: `redis://:${enc(secrets.password)}@${HOST}`, password: 42 }],
    ['bad cluster node', { clusterNodes: [`redis://:${enc(secrets.password)}@${HOST}:nope`] }],
    ['bad tls', { url: `rediss://:${enc(secrets.password)}@${HOST}`, tls: 'yes' }],
  ]
  for (const [what, options] of construct) {
    try {
      const a = new CacheAdapter(options)
      adapters.push(a)
      // 'unencoded specials' may be accepted; a rejected one must not leak either
      add(`construct accepted ${what}`, JSON.stringify(await a.getStats()))
    } catch (e) {
      add(`construct ${what}`, errorText(e))
    }
  }
  process.env.REDIS_URL = `redis://:${enc(secrets.password)}@${HOST}:bad`
  try {
    new CacheAdapter({}) // eslint-disable-line no-new
  } catch (e) {
    add('construct REDIS_URL', errorText(e))
  } finally {
    delete process.env.REDIS_URL
  }

  for (const a of adapters) await guard(a.close(), 5000, 'close').catch((e) => add('close error', errorText(e)))
  process.stdout.write(`SECRETS-REPORT ${JSON.stringify({ items, failures })}\n`)
  return 0
}
