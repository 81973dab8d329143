'use strict'
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { execFile } = require('node:child_process')
const { startRedis } = require('./helpers/redis')

let server

before(async () => {
  server = await startRedis()
})

after(async () => {
  await server?.stop()
})

function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function pingWithin(port, ms) {
  return new Promise((resolve) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'ping'], { timeout: ms, killSignal: 'SIGKILL' }, (err, stdout) =>
      resolve(err ? null : String(stdout).trim()),
    )
  })
}

test('startRedis returns a usable server description', async () => {
  assert.ok(Number.isInteger(server.port) && server.port > 0 && server.port <= 55535)
  assert.notEqual(server.port, 6379)
  assert.equal(server.url, `redis://127.0.0.1:${server.port}`)
  assert.ok(Number.isInteger(server.pid) && alive(server.pid))
  assert.ok(fs.existsSync(server.dir))
  assert.equal(await server.cli('ping'), 'PONG')
})

test('cli SET/GET round trip', async () => {
  assert.equal(await server.cli('set', 'helper:k', 'hello world'), 'OK')
  assert.equal(await server.cli('get', 'helper:k'), 'hello world')
  assert.equal(await server.cli('dbsize'), '1')
})

test('pause makes the server unresponsive, resume brings it back', async () => {
  server.pause()
  try {
    assert.equal(await pingWithin(server.port, 300), null)
  } finally {
    server.resume()
  }
  assert.equal(await server.cli('ping'), 'PONG')
  assert.equal(await server.cli('get', 'helper:k'), 'hello world')
})

test('kill then restart on the same port with empty data', async () => {
  const { port } = server
  const oldPid = server.pid
  await server.kill()
  assert.equal(alive(oldPid), false)
  assert.equal(await pingWithin(port, 1000), null)
  await server.restart()
  assert.equal(server.port, port)
  assert.notEqual(server.pid, oldPid)
  assert.equal(await server.cli('ping'), 'PONG')
  assert.equal(await server.cli('dbsize'), '0')
})

test('restart of a live server, and kill with SIGTERM', async () => {
  await server.cli('set', 'x', '1')
  const pid1 = server.pid
  await server.restart()
  assert.equal(alive(pid1), false)
  assert.equal(await server.cli('dbsize'), '0')
  const pid2 = server.pid
  await server.kill('SIGTERM')
  assert.equal(alive(pid2), false)
  await server.restart()
  assert.equal(await server.cli('ping'), 'PONG')
})

test('stop kills, removes the dir and is idempotent', async () => {
  const s = await startRedis()
  const { pid, dir } = s
  assert.notEqual(s.port, server.port)
  await s.stop()
  await s.stop()
  assert.equal(alive(pid), false)
  assert.equal(fs.existsSync(dir), false)
})

test('a paused server can still be stopped', async () => {
  const s = await startRedis()
  const { pid } = s
  s.pause()
  await s.stop()
  assert.equal(alive(pid), false)
})

test('startRedis fails clearly on bad args', async () => {
  await assert.rejects(startRedis({ args: ['--no-such-option', 'x'] }), /exited before answering PING/)
})
