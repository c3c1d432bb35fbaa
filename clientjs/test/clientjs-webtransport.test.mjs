// clientjs's WebTransport code path in Node, against the real server through
// a bridge (test/fixtures/webtransport-bridge.mjs: a WebTransport test double
// whose stream and datagrams are relayed to the server's WebSocket; Node 20
// has no WebTransport, so the bridge stands in for the browser's, and the
// node runs with --webtransport-listen off). Proves the client side of the
// contract: discovery, serverCertificateHashes, the length-prefixed stream
// framing both ways, datagrams (kind 3 out, kind 4 in), close frames, framing
// errors, and the fallback rules. The server side of WebTransport is tested
// with Go clients (edge) and with Chromium (browser-clientjs.test.mjs).
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Clients, startServer, subscribed, waitFor } from './helpers.mjs'
import { MeshcastClients, collect, joined, record, uniqueName } from './clientjs-helpers.mjs'
import { bridgedWebTransport, discoveryFetch } from './fixtures/webtransport-bridge.mjs'
import { OP_BINARY, OP_CLOSE, OP_TEXT, decodeClose } from '../src/framing.js'

let server
let clients
let realtime
const hash = randomBytes(32)

before(async () => {
  server = await startServer({ args: ['--webtransport-listen', 'off'] })
  clients = new MeshcastClients(server)
  realtime = new Clients(server)
})
afterEach(async () => {
  await clients.closeAll()
  await realtime.closeAll()
})
after(async () => {
  await server?.stop()
})

/** A client whose runtime "has" WebTransport (the bridge) and whose node "offers" it (stubbed discovery). */
function wtClient({ datagramEvents = [], answer, ...opts } = {}) {
  const WT = bridgedWebTransport({ wsBase: server.wsURL, datagramEvents })
  const fetch = discoveryFetch(answer ?? { url: `https://127.0.0.1:${server.port}/realtime/v1/webtransport`, hashes: [{ algorithm: 'sha-256', value: hash.toString('base64') }], not_after: '2099-01-01T00:00:00Z' })
  const c = clients.make({ WebTransport: WT, fetch, ...opts })
  return { c, WT, fetch }
}

describe('WebTransport (bridged)', () => {
  it('discovers the session URL and hashes, joins, broadcasts and tracks over the framed stream', async () => {
    const { c, WT, fetch } = wtClient()
    const name = uniqueName('wt')
    const ch = c.channel(name, { config: { broadcast: { self: true, ack: true }, presence: { key: 'wt' } } })
    ch.on('presence', { event: 'sync' }, () => {})
    const got = collect(ch, 'chat')
    await joined(ch)
    assert.equal(c.transport, 'webtransport')
    assert.deepEqual(fetch.calls, [`${server.httpURL}/realtime/v1/webtransport/cert-hash`])
    const [s] = WT.sessions
    assert.equal(s.url, `https://127.0.0.1:${server.port}/realtime/v1/webtransport?apikey=demo&vsn=2.0.0`)
    assert.equal(s.options.serverCertificateHashes.length, 1)
    assert.equal(s.options.serverCertificateHashes[0].algorithm, 'sha-256')
    assert.deepEqual(Buffer.from(s.options.serverCertificateHashes[0].value), hash, 'the base64 hash is decoded to its 32 bytes')

    const rt = realtime.make().channel(name, { config: { presence: { key: 'rt' } } })
    const gotRt = collect(rt, 'chat')
    rt.on('presence', { event: 'sync' }, () => {})
    await subscribed(rt)
    assert.equal(await ch.send({ type: 'broadcast', event: 'chat', payload: { via: 'wt', s: 'é'.repeat(5000) } }), 'ok')
    await waitFor(() => got.length === 1 && gotRt.length === 1, 5000, 'self and realtime-js get the broadcast')
    assert.equal(gotRt[0].payload.via, 'wt')
    await rt.send({ type: 'broadcast', event: 'chat', payload: { via: 'rt' } })
    await waitFor(() => got.length === 2, 5000, 'the realtime-js broadcast arrives over the stream')
    await ch.track({ who: 'wt' })
    await rt.track({ who: 'rt' })
    await waitFor(() => Object.keys(ch.presenceState()).sort().join() === 'rt,wt' && Object.keys(rt.presenceState()).length === 2, 5000, 'presence both ways')
    // On the stream: text frames (opcode 1) for joins and presence, binary (opcode 2, kind 3) for the broadcast.
    assert.ok(s.toServer.some((f) => f.opcode === OP_TEXT && JSON.parse(new TextDecoder().decode(f.body))[3] === 'phx_join'))
    const bin = s.toServer.filter((f) => f.opcode === OP_BINARY)
    assert.equal(bin.length, 1)
    assert.equal(bin[0].body[0], 3)
  })

  it('sendUnreliable sends one kind-3 datagram (current join_ref, empty ref and meta, JSON); kind-4 datagrams dispatch to listeners', async () => {
    const { c, WT } = wtClient({ datagramEvents: ['cursor'] })
    const name = uniqueName('dg')
    const cfg = { config: { broadcast: { unreliable: true } } }
    const ch = c.channel(name, cfg)
    const got = collect(ch, 'cursor')
    await joined(ch)
    const other = wtClient({ datagramEvents: ['cursor'] })
    const ch2 = other.c.channel(name, cfg)
    const got2 = collect(ch2, 'cursor')
    await joined(ch2)
    const rt = realtime.make().channel(name)
    const gotRt = collect(rt, 'cursor')
    await subscribed(rt)

    assert.equal(await ch.sendUnreliable('cursor', { x: 3, y: 4 }), 'ok')
    const [s] = WT.sessions
    assert.equal(s.datagramsSent.length, 1, 'one datagram')
    const d = Buffer.from(s.datagramsSent[0])
    const jr = Buffer.from(ch.joinRef)
    assert.deepEqual([...d.subarray(0, 7)], [3, jr.length, 0, Buffer.byteLength(ch.topic), 6, 0, 1])
    assert.equal(d.subarray(7 + jr.length).toString(), `${ch.topic}cursor{"x":3,"y":4}`)
    assert.equal(s.toServer.filter((f) => f.opcode === OP_BINARY).length, 0, 'nothing on the stream')
    // The other WebTransport client gets it as a datagram, realtime-js over its WebSocket.
    await waitFor(() => got2.length === 1 && gotRt.length === 1, 5000, 'delivered to both')
    assert.deepEqual(got2[0].payload, { x: 3, y: 4 })
    assert.equal(got.length, 0, 'self: false')
    await assert.rejects(ch.sendUnreliable('cursor', { big: 'x'.repeat(1100) }), { name: 'DatagramTooLargeError', maxBytes: 1024 })
    assert.equal(s.datagramsSent.length, 1, 'the oversized one was not sent')
  })

  it('a server close reaches the app as the opcode-8 code and reason, then the client reconnects over WebTransport', async () => {
    const { c, WT } = wtClient({ reconnectAfterMs: () => 20 })
    const ch = c.channel(uniqueName('close'))
    const rec = await joined(ch)
    WT.sessions[0].injectToServer('this is not JSON') // the server closes 1003 with its reason
    await waitFor(() => rec.count('SUBSCRIBED') === 2, 5000, () => `rejoined (${rec})`)
    const err = rec.errors[rec.statuses.indexOf('CHANNEL_ERROR')]
    assert.match(err.message, /^socket closed: 1003 \(.+\)$/, err.message)
    assert.equal(WT.sessions.length, 2)
    assert.equal(c.transport, 'webtransport', 'a server close is no reason to give up WebTransport')
  })

  it('a lying length prefix from the server: the client sends close 1002 with the reason and reconnects', async () => {
    const { c, WT } = wtClient({ reconnectAfterMs: () => 20 })
    const ch = c.channel(uniqueName('lying'))
    const rec = await joined(ch)
    const [s] = WT.sessions
    s.injectToClient(new Uint8Array([0, 0, 0, 0]))
    await waitFor(() => rec.count('SUBSCRIBED') === 2, 5000, () => `rejoined (${rec})`)
    const close = s.toServer.find((f) => f.opcode === OP_CLOSE)
    assert.deepEqual(decodeClose(close.body), { code: 1002, reason: 'frame length 0 (a frame holds at least its opcode)' })
    assert.match(rec.errors[rec.statuses.indexOf('CHANNEL_ERROR')].message, /socket closed: 1002 \(frame length 0/)
  })

  it('disconnect() sends close 1000 on the stream and leaves the client on no transport', async () => {
    const { c, WT } = wtClient()
    await joined(c.channel(uniqueName('bye')))
    await c.disconnect()
    const close = WT.sessions[0].toServer.find((f) => f.opcode === OP_CLOSE)
    assert.deepEqual(decodeClose(close.body), { code: 1000, reason: '' })
    assert.equal(c.transport, null)
  })
})

describe('fallback rules', () => {
  const stalled = (created) =>
    class StalledWebTransport {
      constructor(url) {
        created.push(url)
        this.ready = new Promise(() => {})
        this.closed = new Promise(() => {})
      }
      close() {}
    }

  it('a stalled WebTransport falls back after webtransportTimeoutMs, and later connects skip it', async () => {
    const created = []
    const fetch = discoveryFetch({ url: 'https://127.0.0.1:9/realtime/v1/webtransport', hashes: [] })
    const c = clients.make({ WebTransport: stalled(created), fetch, webtransportTimeoutMs: 300 })
    const ch = c.channel(uniqueName('stall'))
    const t0 = performance.now()
    const rec = await joined(ch)
    const ms = performance.now() - t0
    assert.equal(c.transport, 'websocket')
    assert.ok(ms >= 295 && ms < 1500, `SUBSCRIBED after ${ms.toFixed(0)} ms`)
    assert.match(c.webtransportDisabled, /session did not complete within 300 ms/)
    await c.disconnect()
    c.connect()
    await waitFor(() => rec.count('SUBSCRIBED') === 2, 5000, () => `rejoined (${rec})`)
    assert.equal(created.length, 1, 'no second WebTransport attempt in this client’s lifetime')
    assert.equal(fetch.calls.length, 1)
  })

  it('a WebTransport that fails at once falls back at once', async () => {
    class Refused {
      constructor() {
        this.ready = Promise.reject(new Error('Opening handshake failed.'))
        this.closed = Promise.reject(new Error('Opening handshake failed.'))
        this.ready.catch(() => {})
        this.closed.catch(() => {})
      }
      close() {}
    }
    const c = clients.make({ WebTransport: Refused, fetch: discoveryFetch({ url: 'https://127.0.0.1:9/x', hashes: [] }) })
    const t0 = performance.now()
    await joined(c.channel(uniqueName('refused')))
    assert.equal(c.transport, 'websocket')
    assert.ok(performance.now() - t0 < 500)
    assert.match(c.webtransportDisabled, /Opening handshake failed/)
  })

  it('a node without WebTransport means WebSocket for this client (an old node\'s 404 too); a failed discovery request is not remembered', async () => {
    const created = []
    const off = clients.make({ WebTransport: stalled(created) }) // the real node: 200 {"enabled":false,…}
    await joined(off.channel(uniqueName('off')))
    assert.equal(off.transport, 'websocket')
    assert.match(off.webtransportDisabled, /^node offers no WebTransport \(GET .*\/webtransport\/cert-hash: WebTransport is off on this node\)$/)
    assert.equal(created.length, 0)

    const old = clients.make({ WebTransport: stalled(created), fetch: discoveryFetch({ error: 'WebTransport is off on this node' }, 404) })
    await joined(old.channel(uniqueName('old')))
    assert.equal(old.transport, 'websocket')
    assert.match(old.webtransportDisabled, /: 404 WebTransport is off on this node\)$/)
    assert.equal(created.length, 0)

    const down = clients.make({ WebTransport: stalled(created), fetch: discoveryFetch(new TypeError('fetch failed')) })
    await joined(down.channel(uniqueName('down')))
    assert.equal(down.transport, 'websocket')
    assert.equal(down.webtransportDisabled, null, 'the next connect tries WebTransport again')
  })

  it('transports: [\'websocket\'] never looks for WebTransport; [\'webtransport\'] alone retries it instead of falling back', async () => {
    const created = []
    const fetch = discoveryFetch({ url: 'https://127.0.0.1:9/x', hashes: [] })
    const ws = clients.make({ WebTransport: stalled(created), fetch, transports: ['websocket'] })
    await joined(ws.channel(uniqueName('wsonly')))
    assert.equal(created.length, 0)
    assert.equal(fetch.calls.length, 0)

    const wt = clients.make({ WebTransport: stalled(created), fetch, transports: ['webtransport'], webtransportTimeoutMs: 100, reconnectAfterMs: () => 10 })
    const rec = record(wt.channel(uniqueName('wtonly')))
    await waitFor(() => created.length >= 2, 5000, 'a second WebTransport attempt')
    assert.equal(wt.webtransportDisabled, null)
    assert.deepEqual(rec.statuses, ['CHANNEL_ERROR'])
  })
})
