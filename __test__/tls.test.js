'use strict'
/**
 * TLS: the adapter against this file's own TLS-only redis-servers, with a
 * self-signed CA, a server certificate for 127.0.0.1 and localhost, and a
 * client certificate (mutual TLS), all made here with openssl.
 *
 * Every wait is bounded; adapters are closed and servers stopped in
 * finally/after.
 */
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startRedis } = require('./helpers/redis')
const { sleep, guard, until } = require('./helpers/wait')

require('./helpers/env').isolateFromEnvironment()

const { CacheAdapter } = require('..')

const OPENSSL_TIMEOUT_MS = 15000
const CONNECT_WAIT_MS = 10000
/** How long a non-connecting adapter is watched to make sure it stays in memory mode. */
const STAY_MS = 1500


async function closeAll(adapters) {
  for (const a of adapters) await guard(a.close(), 5000, 'close').catch(() => {})
}

let dir
let files
/** TLS server, no client certificate required. */
let server
/** TLS server that requires a client certificate (--tls-auth-clients yes). */
let mtlsServer

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, timeout: OPENSSL_TIMEOUT_MS, killSignal: 'SIGKILL', stdio: 'pipe' })
}

function makeCerts() {
  const f = (n) => path.join(dir, n)
  files = {
    caFile: f('ca.crt'),
    caKey: f('ca.key'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
  }
  // CA
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
    '-subj', '/CN=cache-adapter test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', files.caKey, '-out', files.caFile)
  /** A leaf certificate signed by the CA, with the given usage (and names). */
  const issue = (name, subject, usage, keyFile, certFile) => {
    fs.writeFileSync(f(`${name}.ext`), ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...usage, ''].join('\n'))
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-subj', subject, '-keyout', keyFile, '-out', f(`${name}.csr`))
    openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', files.caFile, '-CAkey', files.caKey, '-CAcreateserial',
      '-days', '2', '-sha256', '-extfile', f(`${name}.ext`), '-out', certFile)
  }
  // server certificate: 127.0.0.1 and localhost
  issue('server', '/CN=localhost', ['extendedKeyUsage=serverAuth', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], files.serverKey, files.serverCert)
  issue('client', '/CN=cache-adapter test client', ['extendedKeyUsage=clientAuth'], files.clientKey, files.clientCert)
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cache-tls-test-'))
  makeCerts()
  server = await startRedis({
    tls: { certFile: files.serverCert, keyFile: files.serverKey, caFile: files.caFile },
  })
  mtlsServer = await startRedis({
    tls: {
      certFile: files.serverCert,
      keyFile: files.serverKey,
      caFile: files.caFile,
      authClients: 'yes',
      clientCertFile: files.clientCert,
      clientKeyFile: files.clientKey,
    },
  })
})

after(async () => {
  await Promise.all([server, mtlsServer].filter(Boolean).map((s) => s.stop().catch(() => {})))
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

/** Fast options for adapters that are expected NOT to connect. */
const FAST = { connectTimeoutMs: 500, commandTimeoutMs: 250, breakerCooldownMs: 300 }

/** Asserts the adapter keeps serving from memory (never reaches 'redis') for STAY_MS, then returns its health. */
async function assertStaysInMemory(adapter, what) {
  const deadline = Date.now() + STAY_MS
  while (Date.now() < deadline) {
    assert.equal(adapter.mode, 'memory', `${what}: adapter must stay in memory mode`)
    await sleep(50)
  }
  const health = await guard(adapter.healthCheck(), 5000, `${what}: healthCheck`)
  assert.equal(adapter.mode, 'memory', `${what}: adapter must stay in memory mode`)
  assert.equal(health.redis.status, 'unhealthy', `${what}: ${JSON.stringify(health.redis)}`)
  assert.equal(typeof health.redis.error, 'string', `${what}: redis.error must be a string: ${JSON.stringify(health.redis)}`)
  assert.ok(health.redis.error.length > 0)
  // calls still work, from memory
  assert.equal(await guard(adapter.set('k', { v: 1 }, 60), 3000, 'set'), true)
  assert.deepEqual(await guard(adapter.get('k'), 3000, 'get'), { v: 1 })
  assert.equal(await guard(adapter.setConversationContext('org', '+1 555 0100', [{ role: 'user', content: 'hi' }]), 3000, 'setCtx'), true)
  assert.deepEqual(await guard(adapter.getConversationContext('org', '15550100'), 3000, 'getCtx'), [{ role: 'user', content: 'hi' }])
  assert.equal(adapter.mode, 'memory')
  return health
}

test('rediss:// with the CA file connects, round-trips and writes into the TLS server', async () => {
  const adapters = []
  try {
    assert.match(server.url, /^rediss:\/\/127\.0\.0\.1:\d+$/)
    const adapter = new CacheAdapter({ url: server.url, tls: { caFile: files.caFile }, keyPrefix: 'tls' })
    adapters.push(adapter)
    await until(() => adapter.mode === 'redis', CONNECT_WAIT_MS, "mode 'redis' over TLS")

    const value = { hello: 'tls', n: 42, list: [1, 2, 3] }
    assert.equal(await guard(adapter.set('secure', value, 60), 3000, 'set'), true)
    assert.deepEqual(await guard(adapter.get('secure'), 3000, 'get'), value)
    const messages = [{ role: 'user', content: 'over TLS' }, { role: 'assistant', content: 'yes' }]
    assert.equal(await guard(adapter.setConversationContext('org1', '+1 (555) 010-0200', messages), 3000, 'setCtx'), true)
    assert.deepEqual(await guard(adapter.getConversationContext('org1', '15550100200'), 3000, 'getCtx'), messages)

    const health = await guard(adapter.healthCheck(), 5000, 'healthCheck')
    assert.equal(health.redis.status, 'healthy', JSON.stringify(health.redis))
    assert.equal(health.adapter.mode, 'redis')

    // really in that server (redis-cli over TLS)
    assert.equal(await server.cli('exists', 'tls:kv:secure'), '1')
    assert.equal(adapter.mode, 'redis')
  } finally {
    await closeAll(adapters)
  }
})

test('localhost also verifies (certificate has DNS:localhost)', async () => {
  const adapters = []
  try {
    const adapter = new CacheAdapter({
      url: `rediss://localhost:${server.port}`,
      tls: { caFile: files.caFile },
      keyPrefix: 'tls-localhost',
    })
    adapters.push(adapter)
    await until(() => adapter.mode === 'redis', CONNECT_WAIT_MS, "mode 'redis' via localhost")
    assert.equal(await guard(adapter.set('x', 1, 60), 3000, 'set'), true)
    assert.equal(await server.cli('exists', 'tls-localhost:kv:x'), '1')
  } finally {
    await closeAll(adapters)
  }
})

test('rediss:// without the CA: system roots do not trust the test CA, adapter stays in memory', async () => {
  const adapters = []
  try {
    let adapter
    assert.doesNotThrow(() => {
      adapter = new CacheAdapter({ url: server.url, keyPrefix: 'tls-noca', ...FAST })
    })
    adapters.push(adapter)
    const health = await assertStaysInMemory(adapter, 'no CA')
    assert.match(health.redis.error, /certificate|tls|issuer|unknown ?ca/i, `error should mention certificates/TLS: ${health.redis.error}`)
    assert.equal(health.adapter.status, 'degraded')
    // nothing reached the server
    assert.equal(await server.cli('exists', 'tls-noca:kv:k'), '0')
  } finally {
    await closeAll(adapters)
  }
})

test('mutual TLS: a client certificate is required by the server', async (t) => {
  await t.test('with caFile, certFile, keyFile: connects', async () => {
    const adapters = []
    try {
      const adapter = new CacheAdapter({
        url: mtlsServer.url,
        tls: { caFile: files.caFile, certFile: files.clientCert, keyFile: files.clientKey },
        keyPrefix: 'mtls',
      })
      adapters.push(adapter)
      await until(() => adapter.mode === 'redis', CONNECT_WAIT_MS, "mode 'redis' with mutual TLS")
      assert.equal(await guard(adapter.set('m', { ok: true }, 60), 3000, 'set'), true)
      assert.deepEqual(await guard(adapter.get('m'), 3000, 'get'), { ok: true })
      const health = await guard(adapter.healthCheck(), 5000, 'healthCheck')
      assert.equal(health.redis.status, 'healthy', JSON.stringify(health.redis))
      assert.equal(await mtlsServer.cli('exists', 'mtls:kv:m'), '1')
    } finally {
      await closeAll(adapters)
    }
  })

  await t.test('without a client certificate: stays in memory', async () => {
    const adapters = []
    try {
      let adapter
      assert.doesNotThrow(() => {
        adapter = new CacheAdapter({ url: mtlsServer.url, tls: { caFile: files.caFile }, keyPrefix: 'mtls-nocert', ...FAST })
      })
      adapters.push(adapter)
      await assertStaysInMemory(adapter, 'mTLS without client cert')
      assert.equal(await mtlsServer.cli('exists', 'mtls-nocert:kv:k'), '0')
    } finally {
      await closeAll(adapters)
    }
  })
})

test('bad tls options', async (t) => {
  await t.test("tls: 'yes' is a TypeError naming options.tls", () => {
    assert.throws(
      () => new CacheAdapter({ url: server.url, tls: 'yes', keyPrefix: 'tls-bad' }),
      (err) => err instanceof TypeError && /options\.tls/.test(err.message),
    )
  })

  await t.test('tls.caFile of a missing file: constructs, reports unhealthy naming the file', async () => {
    const adapters = []
    const missing = '/nonexistent'
    assert.equal(fs.existsSync(missing), false)
    try {
      let adapter
      assert.doesNotThrow(() => {
        adapter = new CacheAdapter({ url: server.url, tls: { caFile: missing }, keyPrefix: 'tls-missing', ...FAST })
      })
      adapters.push(adapter)
      const health = await assertStaysInMemory(adapter, 'missing caFile')
      assert.ok(health.redis.error.includes(missing), `error should name ${missing}: ${health.redis.error}`)
    } finally {
      await closeAll(adapters)
    }
  })
})
