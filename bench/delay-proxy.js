'use strict'
// A TCP proxy on loopback that adds a fixed round-trip time between every
// client and Redis, so that the benchmark compares clients on a hosted
// Redis's round trip rather than loopback's. run.js forks it with
// `[targetPort, rttMs]`; it answers `{port}` over IPC once it listens.
//
// Node's timers count whole milliseconds, so the RTT is split into whole
// milliseconds: requests wait ceil(rtt / 2), replies floor(rtt / 2) (at
// `--rtt-ms 1`: 1 ms on the way in, none on the way back; the round trip is
// what a request/reply client sees). Chunks keep their order: timers of one
// delay fire in the order they were set.

const net = require('node:net')

const [targetPort, rttMs] = process.argv.slice(2).map(Number)
const toServerMs = Math.ceil(rttMs / 2)
const toClientMs = Math.floor(rttMs / 2)

function pipeDelayed(from, to, ms) {
  from.on('data', (chunk) => {
    if (ms <= 0) to.write(chunk)
    else setTimeout(() => to.destroyed || to.write(chunk), ms)
  })
  const end = () => (ms <= 0 ? to.destroy() : setTimeout(() => to.destroy(), ms))
  from.on('end', end)
  from.on('close', end)
  from.on('error', () => {})
}

const server = net.createServer((client) => {
  client.setNoDelay(true)
  const upstream = net.connect({ port: targetPort, host: '127.0.0.1' })
  upstream.setNoDelay(true)
  pipeDelayed(client, upstream, toServerMs)
  pipeDelayed(upstream, client, toClientMs)
})
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
process.on('disconnect', () => process.exit(0)) // run.js went away: do not linger
