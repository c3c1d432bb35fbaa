// Helpers for the clientjs suites: make MeshcastClients on a test server (Node:
// the `ws` package as WebSocket) and tear them down, record subscribe statuses,
// see the frames a client sends.
import WebSocket from 'ws'
import { MeshcastClient } from '../src/index.js'
import { waitFor } from './helpers.mjs'

/** A `ws` WebSocket that keeps every frame it sends in `RecordingWebSocket.sent` (per instance: `this.sent`). */
export class RecordingWebSocket extends WebSocket {
  static all = []
  constructor(...args) {
    super(...args)
    this.sent = []
    RecordingWebSocket.all.push(this)
  }
  send(data, ...rest) {
    this.sent.push(typeof data === 'string' ? JSON.parse(data) : Buffer.from(data))
    return super.send(data, ...rest)
  }
}

/** Makes clientjs clients for `server` and disconnects them all afterwards. */
export class MeshcastClients {
  constructor(server) {
    this.server = server
    this.all = []
  }

  /** A MeshcastClient on server's /realtime/v1; `logs` collects [kind, msg, data, time]. */
  make({ apikey = 'demo', url, ...opts } = {}) {
    const logs = []
    const client = new MeshcastClient(url ?? `${this.server.httpURL}/realtime/v1`, {
      apikey,
      WebSocket,
      timeoutMs: 5000,
      logger: (kind, msg, data) => logs.push([kind, msg, data, performance.now()]),
      ...opts,
    })
    client.logs = logs
    this.all.push(client)
    return client
  }

  async closeAll() {
    await Promise.all(this.all.splice(0).map((c) => c.disconnect()))
  }
}

/** Subscribes and records statuses: {statuses, errors, has(s), count(s)}. */
export function record(channel) {
  const rec = {
    statuses: [],
    errors: [],
    has: (s) => rec.statuses.includes(s),
    count: (s) => rec.statuses.filter((x) => x === s).length,
    toString: () => `statuses=${JSON.stringify(rec.statuses)} errors=${JSON.stringify(rec.errors.map((e) => e?.message))}`,
  }
  channel.subscribe((status, err) => {
    rec.statuses.push(status)
    rec.errors.push(err ?? null)
  })
  return rec
}

/** Subscribes and waits for SUBSCRIBED; fails at once on any other status. */
export async function joined(channel, timeoutMs = 5000) {
  const rec = record(channel)
  await waitFor(
    () => {
      if (rec.has('SUBSCRIBED')) return true
      const bad = rec.statuses.find((s) => s !== 'SUBSCRIBED')
      if (bad) throw new Error(`${channel.topic} reported ${bad}: ${rec}`)
      return false
    },
    timeoutMs,
    () => `${channel.topic} SUBSCRIBED (${rec})`
  )
  return rec
}

/** Collects the broadcast messages a channel gets for `event`. */
export function collect(channel, event = '*') {
  const got = []
  channel.on('broadcast', { event }, (m) => got.push(m))
  return got
}

let seq = 0
/** A channel name unique to this run. */
export const uniqueName = (what) => `${what}-${process.pid}-${++seq}`
