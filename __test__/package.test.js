'use strict'
/**
 * The package as a user gets it: `npm pack` the repo, install the tarball into
 * a fresh Node project (no network needed: the package has no dependencies),
 * then use it from CommonJS and from ESM. Needs the native binary built first
 * (`npm run build`).
 */
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { freePort } = require('./helpers/redis')

const ROOT = path.resolve(__dirname, '..')
const PKG = require('../package.json')
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const NPM_TIMEOUT_MS = 120_000
const NODE_TIMEOUT_MS = 30_000

/** The environment without npm's lifecycle variables, so that the nested npm behaves as if run by hand. */
function cleanEnv() {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v
  // the consumer must not talk to any Redis of this machine
  for (const k of ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_ENABLED', 'USE_REDIS']) delete env[k]
  return env
}

function run(cmd, args, { cwd, timeout }) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout, killSignal: 'SIGKILL', env: cleanEnv(), maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `killed after ${timeout} ms (did not finish or did not exit)` : err.message
        reject(new Error(`${cmd} ${args.join(' ')} in ${cwd}: ${why}\nstdout:\n${stdout}\nstderr:\n${stderr}`))
      } else {
        resolve({ stdout: String(stdout), stderr: String(stderr) })
      }
    })
  })
}

/** The last line of stdout, as JSON. */
function lastJson(stdout) {
  const lines = stdout.trim().split('\n')
  return JSON.parse(lines[lines.length - 1])
}

let tmp
let tarball
let packedFiles
let project

before(async () => {
  const binaries = fs.readdirSync(ROOT).filter((f) => f.endsWith('.node'))
  assert.ok(binaries.length > 0, `no *.node binary in ${ROOT}: run \`npm run build\` before this test`)
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'package-test-'))
  const packDir = path.join(tmp, 'pack')
  fs.mkdirSync(packDir)
  // --ignore-scripts: packing must not rebuild anything; the binary is already there
  const { stdout } = await run(NPM, ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir], { cwd: ROOT, timeout: NPM_TIMEOUT_MS })
  const [info] = JSON.parse(stdout)
  tarball = path.join(packDir, info.filename)
  packedFiles = info.files.map((f) => f.path)
  assert.ok(fs.existsSync(tarball), `npm pack did not write ${tarball}`)

  project = path.join(tmp, 'consumer')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }, null, 2))
  await run(NPM, ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline', '--loglevel', 'error'], { cwd: project, timeout: NPM_TIMEOUT_MS })
})

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

test('the tarball holds the binary, the loader and the types, and nothing of the build tree', () => {
  assert.ok(packedFiles.some((f) => /^[^/]+\.node$/.test(f)), `no .node binary in ${packedFiles.join(', ')}`)
  for (const f of ['package.json', PKG.main, PKG.types]) assert.ok(packedFiles.includes(f), `${f} missing from the tarball`)
  for (const f of packedFiles) assert.doesNotMatch(f, /^(target|node_modules|__test__|\.git)\//, `${f} should not be packed`)
  const installed = path.join(project, 'node_modules', PKG.name)
  assert.ok(fs.readdirSync(installed).some((f) => f.endsWith('.node')), 'binary missing after install')
  assert.match(fs.readFileSync(path.join(installed, PKG.types), 'utf8'), /CacheAdapter/)
})

test('require() from CommonJS', { timeout: NODE_TIMEOUT_MS + 5000 }, async () => {
  fs.writeFileSync(
    path.join(project, 'cjs.js'),
    `'use strict'
const { CacheAdapter } = require('${PKG.name}')
;(async () => {
  const adapter = new CacheAdapter({ enabled: false })
  const stored = await adapter.set('greeting', { hello: 'cjs', n: 1, list: [1, 'two', null] })
  const value = await adapter.get('greeting')
  const stats = await adapter.getStats()
  await adapter.close()
  console.log(JSON.stringify({ stored, value, mode: stats.cache.mode, resolved: require.resolve('${PKG.name}') }))
})().catch((err) => { console.error(err); process.exit(1) })
`,
  )
  const { stdout } = await run(process.execPath, ['cjs.js'], { cwd: project, timeout: NODE_TIMEOUT_MS })
  const out = lastJson(stdout)
  assert.equal(out.stored, true)
  assert.deepEqual(out.value, { hello: 'cjs', n: 1, list: [1, 'two', null] })
  assert.equal(out.mode, 'memory')
  assert.ok(out.resolved.startsWith(path.join(project, 'node_modules')), `resolved the repo, not the installed copy: ${out.resolved}`)
})

test('import from ESM (.mjs)', { timeout: NODE_TIMEOUT_MS + 5000 }, async () => {
  fs.writeFileSync(
    path.join(project, 'esm.mjs'),
    `import { CacheAdapter } from '${PKG.name}'
import { fileURLToPath } from 'node:url'
const adapter = new CacheAdapter({ enabled: false })
const stored = await adapter.set('greeting', { hello: 'esm' })
const value = await adapter.get('greeting')
await adapter.close()
console.log(JSON.stringify({ stored, value, resolved: fileURLToPath(import.meta.resolve('${PKG.name}')) }))
`,
  )
  const { stdout } = await run(process.execPath, ['esm.mjs'], { cwd: project, timeout: NODE_TIMEOUT_MS })
  const out = lastJson(stdout)
  assert.equal(out.stored, true)
  assert.deepEqual(out.value, { hello: 'esm' })
  assert.ok(out.resolved.startsWith(path.join(project, 'node_modules')), `resolved the repo, not the installed copy: ${out.resolved}`)
})

test('adapters that are never closed do not keep the process alive', { timeout: NODE_TIMEOUT_MS + 5000 }, async () => {
  const deadPort = await freePort() // nobody listens there
  fs.writeFileSync(
    path.join(project, 'open.js'),
    `'use strict'
const { CacheAdapter } = require('${PKG.name}')
const memoryOnly = new CacheAdapter({ enabled: false })
const unreachable = new CacheAdapter({ url: 'redis://127.0.0.1:${deadPort}' })
Promise.all([memoryOnly.set('k', 1), unreachable.set('k', 2)])
  .then(() => Promise.all([memoryOnly.get('k'), unreachable.get('k')]))
  .then((values) => console.log(JSON.stringify({ values })))
`,
  )
  const started = Date.now()
  const { stdout } = await run(process.execPath, ['open.js'], { cwd: project, timeout: NODE_TIMEOUT_MS })
  assert.deepEqual(lastJson(stdout), { values: [1, 2] })
  assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms to exit`)
})
