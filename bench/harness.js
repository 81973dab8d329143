'use strict'
// What the benchmark scripts share: the redis-server each starts on a free
// loopback port (in a temporary directory), the children they own (ended by
// pid when the script exits, however it exits), bounded waits, and what a
// report says about the machine.

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const owned = new Set() // child processes we started; ended by pid on exit
const tmpDirs = new Set()

function cleanup() {
  for (const child of owned) {
    try {
      process.kill(child.pid, 'SIGKILL')
    } catch {}
  }
  owned.clear()
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true })
  tmpDirs.clear()
}

/** Ends every owned child and removes the temporary directories on exit and on SIGINT/SIGTERM/SIGHUP. */
function cleanupOnExit() {
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      cleanup()
      process.exit(130)
    })
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function withTimeout(promise, ms, what) {
  let t
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(t))
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function ping(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    let buf = ''
    const done = (ok) => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(500, () => done(false))
    s.on('error', () => done(false))
    s.on('connect', () => s.write('PING\r\n'))
    s.on('data', (d) => {
      buf += d
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'))
    })
  })
}

/** Starts `bin` (redis-server) on a free loopback port, no persistence; resolves to `{ port, child, dir }`. */
async function startRedis(bin, tmpPrefix = 'cache-adapter-bench-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix))
  tmpDirs.add(dir)
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    if (port === 6379) continue
    const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--logfile', path.join(dir, 'redis.log')], { stdio: 'ignore' })
    owned.add(child)
    let exited = false
    child.on('exit', () => {
      exited = true
      owned.delete(child)
    })
    child.on('error', () => {
      exited = true
    })
    for (let i = 0; i < 100 && !exited; i++) {
      if (await ping(port)) return { port, child, dir }
      await sleep(50)
    }
    if (!exited) process.kill(child.pid, 'SIGKILL')
  }
  throw new Error(`could not start ${bin} on a loopback port (see the log in ${dir})`)
}

async function stopRedis(child) {
  if (!owned.has(child)) return
  const gone = new Promise((r) => child.once('exit', r))
  process.kill(child.pid, 'SIGTERM')
  await Promise.race([gone, sleep(3000)])
  if (owned.has(child)) process.kill(child.pid, 'SIGKILL')
}

/** Runs a script's `main()` (resolving to its exit code) with the cleanup above, on any ending. */
function runMain(main) {
  cleanupOnExit()
  main().then(
    (code) => {
      cleanup()
      process.exit(code)
    },
    (e) => {
      console.error(e && e.stack ? e.stack : e)
      cleanup()
      process.exit(2)
    },
  )
}

/** CPU, cores, memory, kernel, Node and redis-server versions, for a report's header. */
function machineInfo(redisBin) {
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', timeout: 5000 }).trim()
    } catch {
      return null
    }
  }
  let cpu = 'unknown'
  try {
    const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m)
    if (m) cpu = m[1].trim()
  } catch {}
  const rv = sh(redisBin, ['--version']) || ''
  const m = rv.match(/v=(\S+)/)
  return {
    nproc: sh('nproc', []) || String(os.availableParallelism ? os.availableParallelism() : os.cpus().length),
    cpu,
    node: process.version,
    redis: m ? m[1] : rv || 'unknown',
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
  }
}

/** A report's "Machine" section: its heading and the lines every report has (a report adds its own after them). */
function machineSection(machine) {
  return [
    '## Machine',
    '',
    `- CPU: ${machine.cpu}, nproc ${machine.nproc}, ${machine.memGiB} GiB RAM`,
    `- ${machine.kernel}`,
    `- Node ${machine.node}, redis-server ${machine.redis} (same machine, loopback, no persistence)`,
  ]
}

module.exports = { owned, cleanup, cleanupOnExit, runMain, sleep, withTimeout, freePort, ping, startRedis, stopRedis, machineInfo, machineSection }
