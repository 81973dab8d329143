'use strict'
/**
 * `native-cache-adapter doctor` (bin/doctor.js), run as an operator runs it,
 * in a child process, against this file's own redis-servers in good and bad
 * configurations: healthy, noeviction, wrong or missing password, nothing
 * listening, a read-only replica, old-layout keys, TLS, a cluster.
 *
 * The child gets an explicit environment without any name the adapter reads
 * (so the developer's REDIS_URL cannot steer it); every run is bounded.
 */
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startRedis, startCluster, freePort, stopAll } = require('./helpers/redis')
const { CACHE_ENVIRONMENT, isolateFromEnvironment } = require('./helpers/env')
const { until } = require('./helpers/wait')

isolateFromEnvironment()

const { CacheAdapter } = require('..')

const BIN = path.join(__dirname, '..', 'bin', 'doctor.js')
/** One doctor run: a few hundred PINGs and a SCAN, on a shared 2-core machine. */
const RUN_TIMEOUT_MS = 30_000
const EXPECTED = [
  'config', 'reachability', 'tls', 'auth', 'latency', 'server', 'cluster',
  'maxmemory', 'maxmemory-policy', 'persistence', 'round-trip', 'old-layout',
]

/** This process's environment without anything the adapter reads, plus `extra`. */
function childEnv(extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (!CACHE_ENVIRONMENT.includes(k) && k !== 'NODE_ENV') env[k] = v
  }
  return { ...env, ...extra }
}

/** Runs `node bin/doctor.js doctor ...args`; resolves to its exit code, output and duration. */
function doctor(args, env = {}) {
  const t0 = Date.now()
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, 'doctor', ...args],
      { env: childEnv(env), timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 8 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && err.killed) {
          reject(new Error(`doctor ${args.join(' ')} did not finish within ${RUN_TIMEOUT_MS} ms\n${stdout}`))
          return
        }
        resolve({ code: err ? err.code : 0, stdout: String(stdout), stderr: String(stderr), ms: Date.now() - t0 })
      },
    )
  })
}

/** The report lines, by check name: {status: 'PASS'|'WARN'|'FAIL', detail}. */
function lines(stdout) {
  const checks = {}
  for (const line of stdout.split('\n')) {
    const m = /^(PASS|WARN|FAIL) {2}(\S+) +(.*)$/.exec(line)
    if (m) checks[m[2]] = { status: m[1], detail: m[3] }
  }
  return checks
}

function explain(run) {
  return `exit ${run.code}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`
}

after(async () => {
  await stopAll()
})

let healthy
before(async () => {
  healthy = await startRedis({ args: ['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru'] })
})

test('a healthy server: every check passes or warns, exit 0, one aligned line each', async () => {
  const run = await doctor(['--url', healthy.url])
  assert.equal(run.code, 0, explain(run))
  const checks = lines(run.stdout)
  assert.deepEqual(Object.keys(checks), EXPECTED, explain(run))
  for (const [name, c] of Object.entries(checks)) assert.notEqual(c.status, 'FAIL', `${name}: ${c.detail}`)
  assert.equal(checks.reachability.status, 'PASS')
  assert.match(checks.latency.detail, /^p50 [\d.]+ ms, p99 [\d.]+ ms over 300 PINGs/)
  assert.match(checks.server.detail, /^Redis \d+\.\d+/)
  assert.equal(checks.maxmemory.status, 'PASS')
  assert.match(checks.maxmemory.detail, /^64\.0 MiB limit/)
  assert.equal(checks['maxmemory-policy'].status, 'PASS')
  assert.equal(checks['round-trip'].status, 'PASS')
  assert.equal(checks['old-layout'].status, 'PASS')
  assert.match(checks.config.detail, new RegExp(`^127\\.0\\.0\\.1:${healthy.port} db 0, key prefix jack:dev,`))
  // The round trip cleaned up after itself.
  assert.equal(await healthy.cli('--scan', '--pattern', 'jack:dev:doctor:*'), '')
  // Aligned: the detail column starts at the same offset on every line.
  const offsets = run.stdout.split('\n').filter((l) => /^(PASS|WARN|FAIL) /.test(l))
    .map((l) => l.length - l.slice(6).replace(/^\S+ +/, '').length)
  assert.equal(new Set(offsets).size, 1, run.stdout)
})

test('--json: the same checks for machines, with ok and the target', async () => {
  const run = await doctor(['--json'], { REDIS_URL: healthy.url })
  assert.equal(run.code, 0, explain(run))
  const report = JSON.parse(run.stdout)
  assert.equal(report.ok, true)
  assert.equal(report.target, `127.0.0.1:${healthy.port}`)
  assert.deepEqual(report.checks.map((c) => c.name), EXPECTED)
  for (const c of report.checks) {
    assert.deepEqual(Object.keys(c), ['name', 'status', 'detail'])
    assert.ok(['pass', 'warn'].includes(c.status), `${c.name}: ${c.status} ${c.detail}`)
  }
})

test('noeviction with a maxmemory warns on the policy line; no limit warns on maxmemory', async () => {
  const server = await startRedis({ args: ['--maxmemory', '32mb', '--maxmemory-policy', 'noeviction'] })
  try {
    let run = await doctor(['--url', server.url])
    assert.equal(run.code, 0, explain(run))
    let checks = lines(run.stdout)
    assert.equal(checks['maxmemory-policy'].status, 'WARN', explain(run))
    assert.match(checks['maxmemory-policy'].detail, /^noeviction with a maxmemory limit/)
    assert.equal(checks.maxmemory.status, 'PASS')

    await server.cli('config', 'set', 'maxmemory', '0')
    await server.cli('config', 'set', 'maxmemory-policy', 'allkeys-lfu')
    run = await doctor(['--url', server.url])
    checks = lines(run.stdout)
    assert.equal(checks.maxmemory.status, 'WARN', explain(run))
    assert.match(checks.maxmemory.detail, /^no limit/)
    assert.equal(checks['maxmemory-policy'].status, 'PASS')
  } finally {
    await server.stop()
  }
})

test('persistence is reported; an fsync on every write warns', async () => {
  const server = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always', '--save', '3600 1'] })
  try {
    const run = await doctor(['--url', server.url])
    const checks = lines(run.stdout)
    assert.equal(checks.persistence.status, 'WARN', explain(run))
    assert.match(checks.persistence.detail, /^RDB snapshots \(save 3600 1\), AOF on \(appendfsync always\)/)
  } finally {
    await server.stop()
  }
})

test('a wrong password fails auth, exits non-zero, and is never printed', async () => {
  const right = 'right-Secret-4711'
  const wrong = 'wrong-Secret-0815'
  const server = await startRedis({ args: ['--requirepass', right], cliArgs: ['--no-auth-warning', '-a', right] })
  try {
    const runs = [
      await doctor(['--url', `redis://:${wrong}@127.0.0.1:${server.port}`]),
      await doctor(['--json'], { REDIS_URL: `redis://default:${wrong}@127.0.0.1:${server.port}` }),
      await doctor([], { REDIS_PORT: String(server.port), REDIS_PASSWORD: wrong }),
    ]
    for (const run of runs) {
      assert.equal(run.code, 1, explain(run))
      const text = run.stdout + run.stderr
      assert.ok(!text.includes(wrong) && !text.includes(right), `a password was printed:\n${text}`)
    }
    assert.equal(lines(runs[0].stdout).auth.status, 'FAIL', explain(runs[0]))
    assert.equal(lines(runs[2].stdout).auth.status, 'FAIL', explain(runs[2]))
    const report = JSON.parse(runs[1].stdout)
    assert.equal(report.ok, false)
    assert.equal(report.checks.find((c) => c.name === 'auth').status, 'fail')

    // No password at all: the server's NOAUTH is an auth failure too.
    const none = await doctor(['--url', server.url])
    assert.equal(none.code, 1, explain(none))
    assert.equal(lines(none.stdout).auth.status, 'FAIL', explain(none))
    assert.match(lines(none.stdout).auth.detail, /NOAUTH/)

    // The right one passes, and is not printed either.
    const ok = await doctor([], { REDIS_URL: server.url, REDIS_PASSWORD: right })
    assert.equal(ok.code, 0, explain(ok))
    assert.equal(lines(ok.stdout).auth.status, 'PASS')
    assert.match(lines(ok.stdout).config.detail, /password set/)
    assert.ok(!(ok.stdout + ok.stderr).includes(right), ok.stdout)
  } finally {
    await server.stop()
  }
})

test('nearCache on: a near-cache line; an ACL that refuses CLIENT TRACKING warns, naming why', async () => {
  const run = await doctor(['--url', healthy.url, '--options', '{"nearCache":true}'])
  assert.equal(run.code, 0, explain(run))
  const near = lines(run.stdout)['near-cache']
  assert.equal(near?.status, 'PASS', explain(run))
  assert.match(near.detail, /client tracking of jack:dev: allowed on 1 master\(s\); the link's heartbeat is ROLE/)

  const server = await startRedis()
  try {
    await server.cli('acl', 'setuser', 'app', 'on', '>app-secret', '~*', '&*', '+@all', '-client|tracking')
    const refused = await doctor(['--url', `redis://app:app-secret@127.0.0.1:${server.port}`, '--options', '{"nearCache":true}'])
    assert.equal(refused.code, 0, explain(refused))
    const line = lines(refused.stdout)['near-cache']
    assert.equal(line?.status, 'WARN', explain(refused))
    assert.match(line.detail, /would stay bypassed .*CLIENT TRACKING refused: NOPERM/)
    assert.doesNotMatch(refused.stdout, /app-secret/)
  } finally {
    await server.stop()
  }
})

test('nothing listening: reachability fails quickly, exit non-zero', async () => {
  const port = await freePort()
  const run = await doctor(['--url', `redis://:not-shown-pw@127.0.0.1:${port}`])
  assert.equal(run.code, 1, explain(run))
  const checks = lines(run.stdout)
  assert.equal(checks.reachability.status, 'FAIL', explain(run))
  assert.match(checks.reachability.detail, new RegExp(`127\\.0\\.0\\.1:${port}: .*refused`, 'i'))
  assert.ok(run.ms < 10_000, `took ${run.ms} ms`)
  assert.ok(!run.stdout.includes('not-shown-pw'))
})

test('a read-only replica: the write round trip fails', async () => {
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(healthy.port)] })
  try {
    const run = await doctor(['--url', replica.url])
    assert.equal(run.code, 1, explain(run))
    const checks = lines(run.stdout)
    assert.equal(checks['round-trip'].status, 'FAIL', explain(run))
    assert.match(checks['round-trip'].detail, /^SET refused: READONLY/)
    assert.equal(checks.server.status, 'WARN')
    assert.match(checks.server.detail, new RegExp(`replica of 127\\.0\\.0\\.1:${healthy.port}`))
  } finally {
    await replica.stop()
  }
})

test('keys of the old adapter\'s layout are counted by kind; this adapter\'s own are not', async () => {
  const server = await startRedis()
  let adapter
  try {
    // What the old adapter wrote under `jack:prod:` (NODE_ENV=production).
    await server.cli('set', 'jack:prod:phoneToLead:15551234567', '"lead-1"', 'EX', '300')
    await server.cli('set', 'jack:prod:phoneToLead:15557654321', '"lead-2"', 'EX', '300')
    await server.cli('set', 'jack:prod:leadToPhone:lead-1', '"+1 555 123 4567"', 'EX', '300')
    await server.cli('hset', 'jack:prod:conversationContexts', 'org-1:15551234567', '[]')
    // This adapter's keys under the same prefix.
    adapter = new CacheAdapter({ url: server.url, keyPrefix: 'jack:prod' })
    for (let i = 0; i < 100 && adapter.mode !== 'redis'; i++) await new Promise((r) => setTimeout(r, 20))
    await adapter.setConversationContext('org-1', '+15551234567', ['hi'])
    await adapter.setPhoneToLeadMapping('+15551234567', 'lead-1')
    await adapter.set('phoneToLead:x', 1)
    await adapter.setOrganizationData(null, 'x')

    const run = await doctor(['--url', server.url], { NODE_ENV: 'production' })
    assert.equal(run.code, 0, explain(run))
    const old = lines(run.stdout)['old-layout']
    assert.equal(old.status, 'WARN', explain(run))
    assert.match(old.detail, /^4 keys not in this adapter's layout/)
    assert.match(old.detail, /phoneToLead 2, conversationContexts 1, leadToPhone 1/)
    // The hash has no TTL: it never goes away by itself.
    assert.match(old.detail, /1 of 4 sampled have no TTL/)

    // The prefix follows the environment as the adapter's does: under jack:dev there is nothing.
    const dev = await doctor(['--url', server.url])
    assert.equal(lines(dev.stdout)['old-layout'].status, 'PASS', explain(dev))
    // And --key-prefix wins over it.
    const flagged = await doctor(['--url', server.url, '--key-prefix', 'jack:prod'])
    assert.match(lines(flagged.stdout)['old-layout'].detail, /^4 keys/, explain(flagged))
  } finally {
    await adapter?.close()
    await server.stop()
  }
})

test('Redis disabled: says so and exits 0', async () => {
  for (const env of [{ REDIS_ENABLED: 'false' }, { USE_REDIS: 'false', REDIS_URL: 'redis://127.0.0.1:1' }]) {
    const run = await doctor([], env)
    assert.equal(run.code, 0, explain(run))
    const checks = lines(run.stdout)
    assert.deepEqual(Object.keys(checks), ['redis'])
    assert.equal(checks.redis.status, 'WARN')
    assert.match(checks.redis.detail, /^disabled/)
  }
})

test('usage: --help, bad flags and bad options', async () => {
  const help = await doctor(['--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /^Usage: native-cache-adapter doctor/)
  const unknown = await doctor(['--nope'])
  assert.equal(unknown.code, 2)
  assert.match(unknown.stderr, /unknown option --nope/)
  const noValue = await doctor(['--url'])
  assert.equal(noValue.code, 2)
  const bad = await doctor(['--options', '{"port": "x"}'])
  assert.equal(bad.code, 1, explain(bad))
  assert.equal(lines(bad.stdout).config.status, 'FAIL')
  assert.match(lines(bad.stdout).config.detail, /options\.port must be a number/)
  const badEnv = await doctor([], { REDIS_PORT: 'abc' })
  assert.equal(badEnv.code, 1, explain(badEnv))
  assert.match(lines(badEnv.stdout).config.detail, /REDIS_PORT must be a number/)
})

test('an older setup\'s REDIS_POOL_SIZE=10: the config line warns what it costs, exit 0', async () => {
  const run = await doctor(['--url', healthy.url], { REDIS_POOL_SIZE: '10' })
  assert.equal(run.code, 0, explain(run))
  const { config } = lines(run.stdout)
  assert.equal(config.status, 'WARN', explain(run))
  assert.match(config.detail, /poolSize 10 \(REDIS_POOL_SIZE\) splits every batch into up to 10 pipelines/)
  const plain = lines((await doctor(['--url', healthy.url])).stdout).config
  assert.equal(plain.status, 'PASS')
  assert.match(plain.detail, /poolSize 1,/)
})

test('TLS: the handshake is reported; a TLS server without TLS, or an unknown CA, fails', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'doctor-tls-'))
  const f = (n) => path.join(dir, n)
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, timeout: 15_000, killSignal: 'SIGKILL', stdio: 'pipe' })
  let server
  try {
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', '/CN=doctor test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout', f('ca.key'), '-out', f('ca.crt'))
    fs.writeFileSync(f('server.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
      'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n')
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-subj', '/CN=localhost', '-keyout', f('server.key'), '-out', f('server.csr'))
    openssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '2', '-sha256', '-extfile', f('server.ext'), '-out', f('server.crt'))
    server = await startRedis({ tls: { certFile: f('server.crt'), keyFile: f('server.key'), caFile: f('ca.crt') } })
    const url = `rediss://127.0.0.1:${server.port}`

    const good = await doctor(['--url', url, '--options', JSON.stringify({ tls: { caFile: f('ca.crt') } })])
    assert.equal(good.code, 0, explain(good))
    assert.equal(lines(good.stdout).tls.status, 'PASS')
    assert.match(lines(good.stdout).tls.detail, /^in use; the handshake succeeded \(server verified against caFile\)/)

    const plain = await doctor(['--url', `redis://127.0.0.1:${server.port}`])
    assert.equal(plain.code, 1, explain(plain))
    assert.equal(lines(plain.stdout).reachability.status, 'FAIL', explain(plain))
    assert.match(lines(plain.stdout).reachability.detail, /TLS-only server\?/)

    const unknownCa = await doctor(['--url', url])
    assert.equal(unknownCa.code, 1, explain(unknownCa))
    assert.equal(lines(unknownCa.stdout).tls.status, 'FAIL', explain(unknownCa))
    assert.match(lines(unknownCa.stdout).tls.detail, /^TLS connection failed/)
  } finally {
    await server?.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a cluster: cluster state and slot coverage pass; every primary is inspected', async () => {
  const cluster = await startCluster(3)
  try {
    const run = await doctor(['--cluster-nodes', cluster.seeds.join(',')])
    assert.equal(run.code, 0, explain(run))
    const checks = lines(run.stdout)
    assert.deepEqual(Object.keys(checks), EXPECTED)
    for (const [name, c] of Object.entries(checks)) assert.notEqual(c.status, 'FAIL', `${name}: ${c.detail}`)
    assert.equal(checks.cluster.status, 'PASS', explain(run))
    assert.match(checks.cluster.detail, /^cluster_state ok, 16384\/16384 slots assigned, 16384 ok, 0 pfail, 0 fail; 3 primaries/)
    assert.match(checks.server.detail, /\(all 3 servers\)$/)
    assert.equal(checks['round-trip'].status, 'PASS')
    const withNear = lines((await doctor(['--cluster-nodes', cluster.seeds.join(','), '--options', '{"nearCache":true}'])).stdout)
    assert.match(withNear['near-cache']?.detail ?? '', /allowed on 3 master\(s\)/, 'the near cache is checked on every master')

    // Old keys on every node are found: SCAN runs on each primary.
    for (let i = 0; i < 30; i++) {
      await cluster.nodes[0].cli('-c', 'set', `jack:dev:phoneToLead:${1000 + i}`, '"x"', 'EX', '300')
    }
    const perNode = await Promise.all(cluster.nodes.map((n) => n.cli('dbsize')))
    assert.ok(perNode.filter((n) => Number(n) > 0).length >= 2, `old keys on several nodes: ${perNode}`)
    const found = await doctor(['--cluster-nodes', cluster.seeds.join(',')])
    assert.match(lines(found.stdout)['old-layout'].detail, /^30 keys not in this adapter's layout/, explain(found))

    // A primary down: once the others agree the cluster is not ok, the doctor fails it (bounded).
    await cluster.nodes[2].kill()
    await until(async () => /cluster_state:fail/.test(await cluster.nodes[0].cli('cluster', 'info')), 20_000, 'cluster_state:fail', 100)
    const down = await doctor(['--cluster-nodes', cluster.seeds.join(',')])
    assert.equal(down.code, 1, explain(down))
    assert.equal(lines(down.stdout).cluster.status, 'FAIL', explain(down))
  } finally {
    await cluster.stop()
  }
})
