'use strict'
/**
 * A TCP proxy on loopback between adapters and a redis-server, for faults a
 * server cannot make by itself: a path that goes silent while the server is
 * fine (a NAT or load-balancer timeout, a dead VM: sockets stay open, nothing
 * is reset), bytes that arrive long after the client gave up on them (a
 * middlebox that held them), and a failover behind a stable address.
 *
 * `hold(n)` stops forwarding on the connections open now (all, or the oldest
 * `n`, or all but some), in both directions, keeping what arrives; new connections are
 * forwarded as usual. `hold(n, { repliesOnly: true })` lets commands reach
 * the server and holds only its replies: a command that ran, answered late. `release()` delivers what was held, in order, and
 * forwards again. `retarget(port)` sends new connections to another server.
 */
const net = require('node:net')
const { freePort, HOST } = require('./redis')

async function startProxy(targetPort) {
  const links = new Set()
  const state = { target: targetPort, accepted: 0 }
  const server = net.createServer((client) => {
    const n = ++state.accepted
    const upstream = net.connect({ host: HOST, port: state.target })
    const link = { client, upstream, n, held: false, repliesOnly: false, toServer: [], toClient: [] }
    links.add(link)
    client.on('data', (d) => (link.held && !link.repliesOnly ? link.toServer.push(d) : upstream.write(d)))
    upstream.on('data', (d) => (link.held ? link.toClient.push(d) : client.write(d)))
    const end = () => {
      links.delete(link)
      client.destroy()
      upstream.destroy()
    }
    for (const s of [client, upstream]) s.on('error', end).on('close', end)
  })
  const port = await freePort()
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: HOST, port, exclusive: true }, resolve)
  })
  return {
    url: `redis://${HOST}:${port}`,
    /** Connections accepted so far. */
    get accepted() {
      return state.accepted
    },
    /** Connections open and forwarding now. */
    open: () => [...links].filter((l) => !l.held).length,
    /**
     * Silences the open connections (oldest first, at most `n`); returns how
     * many. `except`: local ports of connections to the server (as its
     * `CLIENT LIST` shows them) that keep forwarding.
     */
    hold(n = Infinity, { repliesOnly = false, except = [] } = {}) {
      const open = [...links]
        .filter((l) => !l.held && !except.includes(l.upstream.localPort))
        .sort((a, b) => a.n - b.n)
        .slice(0, n)
      for (const l of open) Object.assign(l, { held: true, repliesOnly })
      return open.length
    },
    /** Delivers what was held, in order, and forwards again. */
    release() {
      for (const l of links) {
        if (!l.held) continue
        l.held = false
        for (const d of l.toServer.splice(0)) l.upstream.write(d)
        for (const d of l.toClient.splice(0)) l.client.write(d)
      }
    },
    retarget(p) {
      state.target = p
    },
    async stop() {
      for (const l of links) {
        l.client.destroy()
        l.upstream.destroy()
      }
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

module.exports = { startProxy }
