'use strict'
/**
 * A TCP proxy on loopback between an adapter and a redis-server, for faults
 * that a server cannot make by itself: a path that goes silent while the
 * server is fine (a NAT or load-balancer timeout), and bytes that arrive long
 * after the client gave up on them (a middlebox that held them).
 *
 * `hold()` stops forwarding on every connection open now, in both directions,
 * keeping what arrives in a buffer (the sockets stay open, as a dead path's do);
 * new connections are forwarded as usual. `release()` delivers what was held
 * and forwards again.
 */
const net = require('node:net')

const HOST = '127.0.0.1'

class Proxy {
  constructor(target) {
    this.target = target
    this.links = new Set()
    this.accepted = 0
    this.server = net.createServer((client) => this._link(client))
  }

  _link(client) {
    this.accepted++
    const upstream = net.connect(this.target.port, this.target.host || HOST)
    const link = { client, upstream, held: false, toServer: [], toClient: [] }
    this.links.add(link)
    const end = () => {
      this.links.delete(link)
      client.destroy()
      upstream.destroy()
    }
    client.on('data', (d) => (link.held ? link.toServer.push(d) : upstream.write(d)))
    upstream.on('data', (d) => (link.held ? link.toClient.push(d) : client.write(d)))
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ port: 0, host: HOST }, () => {
        this.port = this.server.address().port
        this.url = `redis://${HOST}:${this.port}`
        resolve(this)
      })
    })
  }

  /** Silences every connection open now; returns how many. */
  hold() {
    for (const link of this.links) link.held = true
    return this.links.size
  }

  /** Delivers what was held, in order, and forwards again. */
  release() {
    for (const link of this.links) {
      if (!link.held) continue
      link.held = false
      for (const d of link.toServer.splice(0)) link.upstream.write(d)
      for (const d of link.toClient.splice(0)) link.client.write(d)
    }
  }

  close() {
    for (const link of this.links) {
      link.client.destroy()
      link.upstream.destroy()
    }
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** A started proxy to `target` (`{port, host?}`). */
function startProxy(target) {
  return new Proxy(target).listen()
}

module.exports = { startProxy }
