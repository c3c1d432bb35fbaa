// Test helpers: run the real meshcast binary, wait on conditions with deadlines,
// make HS256 JWTs, and talk raw Phoenix frames over `ws`. No dependencies beyond
// node:* and the packages in package.json.
import { spawn } from 'node:child_process'
import { createHmac } from 'node:crypto'
import dgram from 'node:dgram'
import { existsSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { RealtimeClient } from '@supabase/realtime-js'

const here = path.dirname(fileURLToPath(import.meta.url))

/** Path of the server under test: $MESHCAST_BIN or <repo>/bin/meshcast. */
export const MESHCAST_BIN = process.env.MESHCAST_BIN || path.resolve(here, '../../bin/meshcast')

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `predicate` (sync or async) until it returns a truthy value, and returns
 * that value. Throws after `timeoutMs` with `message` (a string or a function
 * returning one, so the failure can show the state it was waiting on).
 * An error thrown by the predicate fails at once, unless `retryErrors` is set
 * (then it is retried until the deadline, e.g. connection refused while a
 * server starts). Use `fatal()` to stop early even then.
 */
export async function waitFor(predicate, timeoutMs = 5000, message = 'condition', { intervalMs = 10, retryErrors = false } = {}) {
  const deadline = Date.now() + timeoutMs
  let lastError
  for (;;) {
    try {
      const value = await predicate()
      if (value) return value
    } catch (err) {
      if (!retryErrors || err.fatal) throw err
      lastError = err
    }
    if (Date.now() >= deadline) {
      const what = typeof message === 'function' ? message() : message
      const err = new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
      if (lastError) err.cause = lastError
      throw err
    }
    await delay(intervalMs)
  }
}

/** An error that stops `waitFor` at once, even with `retryErrors`. */
export function fatal(message) {
  const err = new Error(message)
  err.fatal = true
  return err
}

/**
 * Returns a port that was free a moment ago on 127.0.0.1 for both TCP and UDP
 * (meshcast serves WebTransport on the UDP port of its --listen port).
 */
export async function freePort() {
  const { port, release } = await reservePort()
  await release()
  return port
}

/**
 * Starts meshcast on a free loopback port and waits until GET /healthz answers 200.
 * Options: jwtSecret (adds --jwt-secret), args (extra flags), readyTimeoutMs,
 * port (the client port; default a free one).
 * Returns { port, httpURL, wsURL, realtimeURL, proc, output(), stop(), kill() }.
 */
export async function startServer({ jwtSecret, args = [], readyTimeoutMs = 10000, port: wantPort } = {}) {
  if (!existsSync(MESHCAST_BIN)) {
    throw new Error(
      `meshcast binary not found at ${MESHCAST_BIN}; build it with ` +
        '`go build -o bin/meshcast ./cmd/meshcast` or set MESHCAST_BIN'
    )
  }
  const port = wantPort ?? (await freePort())
  const argv = ['--listen', `127.0.0.1:${port}`, ...(jwtSecret ? ['--jwt-secret', jwtSecret] : []), ...args]
  const proc = spawn(MESHCAST_BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'] })

  // Keep the tail of the server's output for failure messages.
  let log = ''
  const keep = (chunk) => {
    log = (log + chunk.toString()).slice(-20000)
    if (process.env.MESHCAST_LOG) process.stderr.write(chunk)
  }
  proc.stdout.on('data', keep)
  proc.stderr.on('data', keep)
  let exited = null
  const exit = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exited = { code, signal }
      resolve(exited)
    })
    proc.on('error', (err) => {
      exited = { error: err }
      resolve(exited)
    })
  })

  const httpURL = `http://127.0.0.1:${port}`
  const server = {
    port,
    proc,
    httpURL,
    wsURL: `ws://127.0.0.1:${port}`,
    /** The endpoint realtime-js is given (it appends /websocket). */
    realtimeURL: `ws://127.0.0.1:${port}/realtime/v1`,
    output: () => log,
    async stop() {
      if (exited) return exited
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
      const result = await exit
      clearTimeout(timer)
      return result
    },
    /** kill -9, and wait for the exit. */
    async kill() {
      if (exited) return exited
      proc.kill('SIGKILL')
      return exit
    },
  }

  try {
    await waitFor(
      async () => {
        if (exited) throw fatal(`meshcast exited early: ${JSON.stringify(exited)}\n${log}`)
        const res = await fetch(`${httpURL}/healthz`, { signal: AbortSignal.timeout(1000) })
        await res.arrayBuffer()
        return res.status === 200
      },
      readyTimeoutMs,
      () => `GET /healthz == 200 from ${MESHCAST_BIN} ${argv.join(' ')}\n--- server output ---\n${log}`,
      { intervalMs: 50, retryErrors: true }
    )
  } catch (err) {
    await server.stop()
    throw err
  }
  return server
}

/**
 * Reserves a loopback port that is free for both TCP and UDP (memberlist binds
 * both on its gossip port). The port stays held until `release()`, so several
 * reservations never return the same port.
 */
async function reservePort() {
  for (let tries = 0; tries < 50; tries++) {
    const tcp = net.createServer()
    await new Promise((resolve, reject) => {
      tcp.once('error', reject)
      tcp.listen(0, '127.0.0.1', resolve)
    })
    const { port } = tcp.address()
    const udp = dgram.createSocket('udp4')
    const bound = await new Promise((resolve) => {
      udp.once('error', () => resolve(false))
      udp.bind(port, '127.0.0.1', () => resolve(true))
    })
    if (bound) {
      const release = () =>
        Promise.all([new Promise((r) => tcp.close(() => r())), new Promise((r) => udp.close(() => r()))])
      return { port, release }
    }
    udp.close()
    await new Promise((r) => tcp.close(() => r()))
  }
  throw new Error('no port free for both TCP and UDP')
}

/** GET /metrics of a server as a Map: series (e.g. `meshcast_mesh_members`, or with labels) -> number. */
export async function scrapeMetrics(server) {
  const res = await fetch(`${server.httpURL}/metrics`, { signal: AbortSignal.timeout(2000) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${text}`)
  const out = new Map()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    if (i > 0) out.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return out
}

/**
 * Starts a cluster of meshcast processes on loopback: n1 (the seed), n2, n3…,
 * one region each, fast failure detection, and waits until every node counts
 * all members and has its mesh connection to every other node up.
 * Options: size, regions, secret (--cluster-secret), probeInterval
 * (--gossip-probe-interval), args (extra flags for every node), jwtSecret,
 * readyTimeoutMs.
 * Returns { nodes, stop() }; each node is a startServer() result plus
 * { name, region, id } (id = the node ID from its "mesh started" log line).
 */
export async function startCluster({
  size = 3,
  regions = ['iad', 'fra', 'sin'],
  secret = 'interop-cluster-secret',
  probeInterval = '200ms',
  args = [],
  jwtSecret,
  readyTimeoutMs = 15000,
} = {}) {
  const ports = []
  for (let i = 0; i < size; i++) {
    ports.push({ http: await reservePort(), gossip: await reservePort(), mesh: await reservePort() })
  }
  await Promise.all(ports.flatMap((p) => [p.http.release(), p.gossip.release(), p.mesh.release()]))
  const seed = `127.0.0.1:${ports[0].gossip.port}`
  const nodes = []
  const stop = () => Promise.all(nodes.map((n) => n.stop()))
  try {
    for (let i = 0; i < size; i++) {
      const name = `n${i + 1}`
      const region = regions[i % regions.length]
      const server = await startServer({
        jwtSecret,
        readyTimeoutMs,
        port: ports[i].http.port,
        args: [
          '--name', name,
          '--region', region,
          '--gossip-addr', `127.0.0.1:${ports[i].gossip.port}`,
          '--mesh-addr', `127.0.0.1:${ports[i].mesh.port}`,
          '--cluster-secret', secret,
          '--gossip-probe-interval', probeInterval,
          ...(i > 0 ? ['--join', seed] : []),
          ...args,
        ],
      })
      nodes.push(Object.assign(server, { name, region, id: server.output().match(/msg="mesh started" node=(\S+)/)?.[1] }))
    }
    let last = ''
    await waitFor(
      async () => {
        const states = await Promise.all(nodes.map(scrapeMetrics))
        last = states.map((m, i) => `${nodes[i].name}: members=${m.get('meshcast_mesh_members')} peers_connected=${m.get('meshcast_mesh_peers_connected')}`).join('; ')
        return states.every((m) => m.get('meshcast_mesh_members') === size && m.get('meshcast_mesh_peers_connected') === size - 1)
      },
      readyTimeoutMs,
      () => `a ${size}-node cluster with every mesh peer connected (${last})\n` + nodes.map((n) => `--- ${n.name} ---\n${n.output()}`).join('\n'),
      { intervalMs: 50, retryErrors: true }
    )
  } catch (err) {
    await stop()
    throw err
  }
  return { nodes, stop }
}

const b64url = (buf) => Buffer.from(buf).toString('base64url')

/** Signs `claims` as an HS256 JWT with `secret`. */
export function signJWT(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`
  const sig = createHmac('sha256', secret).update(input).digest()
  return `${input}.${b64url(sig)}`
}

/** Seconds since the epoch, for `exp`. */
export const nowSeconds = () => Math.floor(Date.now() / 1000)

/**
 * Tracks realtime-js clients made by a test so they can all be disconnected
 * afterwards (a connected client's timers would keep the test process alive).
 */
export class Clients {
  constructor(server) {
    this.server = server
    this.all = []
  }

  /** A RealtimeClient on the server's /realtime/v1 using `ws` as transport. */
  make({ apikey = 'demo', ...opts } = {}) {
    const client = new RealtimeClient(this.server.realtimeURL, {
      transport: WebSocket,
      params: { apikey },
      timeout: 5000,
      // Keep reconnect attempts from piling up if a test leaves a socket refused.
      reconnectAfterMs: () => 500,
      logger: () => {},
      ...opts,
    })
    this.all.push(client)
    return client
  }

  async closeAll() {
    const clients = this.all.splice(0)
    await Promise.all(
      clients.map(async (c) => {
        for (const ch of c.getChannels()) ch.teardown()
        c.channels = []
        await Promise.race([c.disconnect(), delay(2000)])
      })
    )
  }
}

/**
 * Subscribes `channel` and records every status it reports. Returns the record:
 * { statuses: ['SUBSCRIBED', ...], errors: [Error...], has(status) }.
 */
export function subscribeRecording(channel) {
  const rec = {
    statuses: [],
    errors: [],
    has: (s) => rec.statuses.includes(s),
    toString: () => `statuses=${JSON.stringify(rec.statuses)} errors=${JSON.stringify(rec.errors.map((e) => e?.message))}`,
  }
  channel.subscribe((status, err) => {
    rec.statuses.push(status)
    if (err) rec.errors.push(err)
  })
  return rec
}

/** Subscribes and waits for SUBSCRIBED; fails early on CHANNEL_ERROR / TIMED_OUT / CLOSED. */
export async function subscribed(channel, timeoutMs = 5000) {
  const rec = subscribeRecording(channel)
  await waitFor(
    () => {
      if (rec.has('SUBSCRIBED')) return true
      const bad = rec.statuses.find((s) => s !== 'SUBSCRIBED')
      if (bad) throw new Error(`channel ${channel.topic} reported ${bad}: ${rec}`)
      return false
    },
    timeoutMs,
    () => `${channel.topic} SUBSCRIBED (${rec})`
  )
  return rec
}

/**
 * A raw Phoenix socket over `ws`, for protocol details realtime-js hides.
 * Every decoded frame is appended to `frames` (text frames parsed as JSON,
 * binary frames as { binary: Buffer, decoded? }).
 */
export class RawSocket {
  static async open(url, timeoutMs = 5000) {
    const raw = new RawSocket(url)
    await raw.opened(timeoutMs)
    return raw
  }

  constructor(url) {
    this.url = url
    this.frames = []
    this.closed = null
    this.upgradeError = null
    this.ws = new WebSocket(url)
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.frames.push({ binary: Buffer.from(data), decoded: decodeKind4(Buffer.from(data)) })
        return
      }
      const text = data.toString()
      try {
        this.frames.push(JSON.parse(text))
      } catch {
        this.frames.push({ unparsed: text })
      }
    })
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() }
    })
    this.ws.on('unexpected-response', (req, res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => {
        this.upgradeError = { status: res.statusCode, body }
        this.closed ??= { code: 1006, reason: 'upgrade refused' }
        req.destroy()
      })
      res.on('error', () => {})
    })
    this.ws.on('error', (err) => {
      this.error = err
    })
  }

  async opened(timeoutMs = 5000) {
    await waitFor(
      () => {
        if (this.ws.readyState === WebSocket.OPEN) return true
        if (this.upgradeError) throw new Error(`upgrade refused: ${JSON.stringify(this.upgradeError)}`)
        if (this.closed) throw new Error(`socket closed before open: ${JSON.stringify(this.closed)}`)
        return false
      },
      timeoutMs,
      `WebSocket open ${this.url}`
    )
  }

  /** Sends a JS value as a JSON text frame, or a Buffer as a binary frame, or a string verbatim. */
  send(frame) {
    if (Buffer.isBuffer(frame) || typeof frame === 'string') this.ws.send(frame)
    else this.ws.send(JSON.stringify(frame))
  }

  /** Waits for a received frame matching `match` (a predicate) and returns it. */
  async next(match, timeoutMs = 5000, what = 'a matching frame') {
    return waitFor(
      () => this.frames.find(match),
      timeoutMs,
      () => `${what} on ${this.url}; got ${this.describe()}`
    )
  }

  /** Waits for the v2 reply to `ref` on `topic`. */
  reply(topic, ref, timeoutMs = 5000) {
    return this.next(
      (f) => Array.isArray(f) && f[1] === ref && f[2] === topic && f[3] === 'phx_reply',
      timeoutMs,
      `phx_reply ref=${ref} topic=${topic}`
    )
  }

  /** Sends a v2 phx_join and returns the reply frame. */
  async join(topic, joinRef, config = {}, extra = {}) {
    this.send([joinRef, joinRef, topic, 'phx_join', { config: joinConfig(config), ...extra }])
    return this.reply(topic, joinRef)
  }

  /** Round-trips a heartbeat: everything the server wrote before its reply is in `frames` afterwards. */
  async sync(ref, timeoutMs = 5000) {
    this.send([null, ref, 'phoenix', 'heartbeat', {}])
    return this.reply('phoenix', ref, timeoutMs)
  }

  describe() {
    const shown = this.frames.slice(-12).map((f) => (f.binary ? `<binary ${f.binary.toString('hex')}>` : JSON.stringify(f)))
    return `[${shown.join(', ')}]${this.closed ? ` closed=${JSON.stringify(this.closed)}` : ''}`
  }

  close() {
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate()
    else this.ws.close()
  }
}

/** A full join config the way realtime-js 2.119 sends it, with overrides per sub-object. */
export function joinConfig({ broadcast = {}, presence = {}, postgres_changes = [], private: isPrivate = false } = {}) {
  return {
    broadcast: { ack: false, self: false, ...broadcast },
    presence: { key: '', enabled: false, ...presence },
    postgres_changes,
    private: isPrivate,
  }
}

/** Encodes a realtime-js kind-3 (client -> server) binary broadcast push with a JSON payload. */
export function encodeKind3({ joinRef, ref, topic, event, payload, meta = '' }) {
  const parts = [joinRef ?? '', ref ?? '', topic, event, meta].map((s) => Buffer.from(s, 'utf8'))
  const body = Buffer.from(JSON.stringify(payload), 'utf8')
  const header = Buffer.from([3, ...parts.map((p) => p.length), 1])
  return Buffer.concat([header, ...parts, body])
}

/** Decodes a kind-4 (server -> client) binary broadcast, or returns null for anything else. */
export function decodeKind4(buf) {
  if (buf.length < 5 || buf[0] !== 4) return null
  const [topicLen, eventLen, metaLen, enc] = [buf[1], buf[2], buf[3], buf[4]]
  let off = 5
  const take = (n) => {
    const s = buf.subarray(off, off + n).toString('utf8')
    off += n
    return s
  }
  const topic = take(topicLen)
  const event = take(eventLen)
  const meta = take(metaLen)
  const rest = buf.subarray(off)
  return {
    topic,
    event,
    meta: meta ? JSON.parse(meta) : undefined,
    payload: enc === 1 ? JSON.parse(rest.toString('utf8')) : rest,
  }
}

/**
 * Normalises a broadcast delivery, text (v2 array) or kind-4 binary, to
 * { topic, event, payload } or null when the frame isn't a broadcast.
 */
export function broadcastOf(frame) {
  if (frame?.decoded) return { topic: frame.decoded.topic, event: frame.decoded.event, payload: frame.decoded.payload }
  if (Array.isArray(frame) && frame[3] === 'broadcast') {
    return { topic: frame[2], event: frame[4]?.event, payload: frame[4]?.payload }
  }
  return null
}
