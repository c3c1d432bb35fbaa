// clientjs against the real meshcast binary, over WebSocket (`ws` in Node):
// broadcast, presence, mixed with the unmodified realtime-js, errors, token
// refresh, heartbeats, restart with backoff and rejoin, and no leftovers after
// disconnect().
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { exponentialBackoff } from '../src/index.js'
import { Clients, nowSeconds, signJWT, startServer, subscribed, waitFor } from './helpers.mjs'
import { MeshcastClients, RecordingWebSocket, collect, joined, record, uniqueName } from './clientjs-helpers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const SECRET = 'clientjs-test-secret-at-least-32-bytes-long'
const token = (claims = {}) => signJWT({ role: 'anon', exp: nowSeconds() + 3600, iat: nowSeconds(), ...claims }, SECRET)

let server
let clients
let realtime

before(async () => {
  server = await startServer()
  clients = new MeshcastClients(server)
  realtime = new Clients(server)
})
afterEach(async () => {
  await clients.closeAll()
  await realtime.closeAll()
})
after(async () => {
  await clients?.closeAll()
  await realtime?.closeAll()
  await server?.stop()
})

describe('broadcast', () => {
  it('joins, sends with ack (resolves ok on the reply) and self, as kind-3 binary frames', async () => {
    const c = clients.make({ WebSocket: RecordingWebSocket })
    const ch = c.channel(uniqueName('ack'), { config: { broadcast: { self: true, ack: true } } })
    const got = collect(ch, 'ping')
    const rec = await joined(ch)
    assert.equal(c.transport, 'websocket', 'Node has no WebTransport: WebSocket')
    assert.equal(await ch.send({ type: 'broadcast', event: 'ping', payload: { n: 1, s: 'é' } }), 'ok')
    const msg = await waitFor(() => got[0], 5000, 'own broadcast with self: true')
    assert.match(msg.meta?.pos ?? '', /^[0-9a-f]{16}:1$/, 'meta.pos: the first message of this node on the channel')
    delete msg.meta
    assert.deepEqual(msg, { type: 'broadcast', event: 'ping', payload: { n: 1, s: 'é' } })
    const sentBinary = c.conn.ws.sent.filter((f) => Buffer.isBuffer(f))
    assert.equal(sentBinary.length, 1, 'the broadcast went out as one binary frame')
    assert.equal(sentBinary[0][0], 3, 'kind 3')
    assert.deepEqual(rec.statuses, ['SUBSCRIBED'])
  })

  it('without ack, send resolves ok at once; the other client gets it and the sender does not', async () => {
    const name = uniqueName('noack')
    const a = clients.make().channel(name)
    const b = clients.make().channel(name)
    const gotA = collect(a)
    const gotB = collect(b, 'hello')
    await joined(a)
    await joined(b)
    assert.equal(await a.send({ type: 'broadcast', event: 'Hello', payload: { from: 'a' } }), 'ok')
    await waitFor(() => gotB.length === 1, 5000, 'b gets a’s broadcast (event names match case-insensitively)')
    assert.deepEqual(gotB[0].payload, { from: 'a' })
    // Everything the server sends a before the reply to b's ack'ed send... is simply nothing for a:
    assert.equal(gotA.length, 0, 'self: false')
  })

  it('a send before SUBSCRIBED waits in the push buffer and is delivered after the join', async () => {
    const name = uniqueName('buffer')
    const b = clients.make().channel(name)
    const got = collect(b)
    await joined(b)
    const a = clients.make().channel(name, { config: { broadcast: { ack: true } } })
    const rec = record(a)
    const sent = a.send({ type: 'broadcast', event: 'early', payload: { n: 1 } })
    assert.equal(a.state, 'joining')
    assert.equal(await sent, 'ok')
    await waitFor(() => got.length === 1, 5000, 'the buffered broadcast arrives')
    assert.ok(rec.has('SUBSCRIBED'))
  })

  it('send on a channel that was never subscribed goes over REST, like realtime-js', async () => {
    const name = uniqueName('rest')
    const b = clients.make().channel(name)
    const got = collect(b)
    await joined(b)
    const c = clients.make()
    assert.equal(await c.channel(name).send({ type: 'broadcast', event: 'viaRest', payload: { r: 1 } }), 'ok')
    await waitFor(() => got.length === 1, 5000, 'REST broadcast delivered')
    assert.equal(c.connectionState(), 'closed', 'no socket was opened for it')
    assert.deepEqual(await c.channel(name).httpSend('single', { s: 1 }), { success: true })
    await waitFor(() => got.some((m) => m.event === 'single'), 5000, 'httpSend delivered')
  })

  it('sendUnreliable on WebSocket falls back to a reliable broadcast', async () => {
    const name = uniqueName('unreliable')
    const cfg = { config: { broadcast: { unreliable: true } } }
    const a = clients.make().channel(name, cfg)
    const b = clients.make().channel(name, cfg)
    const got = collect(b, 'cursor')
    await joined(a)
    await joined(b)
    assert.equal(await a.sendUnreliable('cursor', { x: 1, y: 2 }), 'ok')
    await waitFor(() => got.length === 1, 5000, 'cursor event over the WebSocket fallback')
    assert.deepEqual(got[0].payload, { x: 1, y: 2 })
  })
})

describe('presence', () => {
  it('track, sync, join and leave across two clients', async () => {
    const name = uniqueName('presence')
    const events = { a: [], b: [] }
    const mk = (key, who) => {
      const ch = clients.make().channel(name, { config: { presence: { key } } })
      ch.on('presence', { event: 'join' }, (p) => events[who].push(['join', p.key, p.newPresences.map((m) => m.name)]))
        .on('presence', { event: 'leave' }, (p) => events[who].push(['leave', p.key, p.leftPresences.map((m) => m.name)]))
        .on('presence', { event: 'sync' }, () => events[who].push(['sync']))
      return ch
    }
    const a = mk('alice', 'a')
    const b = mk('bob', 'b')
    await joined(a)
    await joined(b)
    assert.equal(await a.track({ name: 'alice' }), 'ok')
    assert.equal(await b.track({ name: 'bob' }), 'ok')
    const keys = (ch) => Object.keys(ch.presenceState()).sort().join(',')
    await waitFor(() => keys(a) === 'alice,bob' && keys(b) === 'alice,bob', 5000, () => `both keys on both sides: a=${keys(a)} b=${keys(b)}`)
    const [meta] = a.presenceState().bob
    assert.equal(meta.name, 'bob')
    assert.equal(typeof meta.presence_ref, 'string')
    assert.ok(!('phx_ref' in meta))
    assert.ok(events.a.some((e) => e[0] === 'join' && e[1] === 'bob' && e[2][0] === 'bob'), JSON.stringify(events.a))
    assert.ok(events.a.some((e) => e[0] === 'sync'))

    assert.equal(await b.untrack(), 'ok')
    await waitFor(() => keys(a) === 'alice', 5000, () => `bob left after untrack: ${keys(a)}`)
    assert.ok(events.a.some((e) => e[0] === 'leave' && e[1] === 'bob'), JSON.stringify(events.a))

    assert.equal(await b.track({ name: 'bob', again: true }), 'ok')
    await waitFor(() => keys(a) === 'alice,bob', 5000, 'bob back')
    await b.client.disconnect()
    await waitFor(() => keys(a) === 'alice', 5000, () => `bob gone after disconnect: ${keys(a)}`)
  })
})

describe('mixed with realtime-js', () => {
  it('clientjs and realtime-js on one channel exchange broadcasts and see each other’s presence', async () => {
    const name = uniqueName('mixed')
    const mc = clients.make().channel(name, { config: { presence: { key: 'mesh' } } })
    const rt = realtime.make().channel(name, { config: { presence: { key: 'supa' } } })
    const gotMc = collect(mc, 'chat')
    const gotRt = []
    rt.on('broadcast', { event: 'chat' }, (m) => gotRt.push(m))
    rt.on('presence', { event: 'sync' }, () => {})
    mc.on('presence', { event: 'sync' }, () => {})
    await joined(mc)
    await subscribed(rt)
    await mc.track({ client: 'clientjs' })
    await rt.track({ client: 'realtime-js' })
    assert.equal(await mc.send({ type: 'broadcast', event: 'chat', payload: { text: 'from clientjs' } }), 'ok')
    assert.equal(await rt.send({ type: 'broadcast', event: 'chat', payload: { text: 'from realtime-js' } }), 'ok')
    await waitFor(() => gotRt.length === 1 && gotMc.length === 1, 5000, () => `one message each way: rt=${JSON.stringify(gotRt)} mc=${JSON.stringify(gotMc)}`)
    assert.deepEqual(gotRt[0].payload, { text: 'from clientjs' })
    assert.deepEqual(gotMc[0].payload, { text: 'from realtime-js' })
    const view = (state) => Object.fromEntries(Object.entries(state).map(([k, metas]) => [k, metas.map((m) => m.client)]))
    await waitFor(
      () => JSON.stringify(view(mc.presenceState())) === JSON.stringify(view(rt.presenceState())) && Object.keys(rt.presenceState()).length === 2,
      5000,
      () => `same presence on both: mc=${JSON.stringify(mc.presenceState())} rt=${JSON.stringify(rt.presenceState())}`
    )
    assert.deepEqual(view(mc.presenceState()), { mesh: ['clientjs'], supa: ['realtime-js'] })
  })
})

describe('heartbeats', () => {
  it('a heartbeat without reply closes the connection (heartbeat timeout) and reconnects and rejoins', async () => {
    // A TCP relay to the server that can freeze the connections it carries (a stalled network path).
    const pairs = []
    const relay = net.createServer((down) => {
      const up = net.connect(server.port, '127.0.0.1')
      const pair = { down, up, frozen: false }
      pairs.push(pair)
      down.on('data', (d) => pair.frozen || up.write(d))
      up.on('data', (d) => pair.frozen || down.write(d))
      const end = () => {
        down.destroy()
        up.destroy()
      }
      down.on('error', end).on('close', end)
      up.on('error', end).on('close', end)
    })
    await new Promise((r) => relay.listen(0, '127.0.0.1', r))
    try {
      const c = clients.make({ url: `http://127.0.0.1:${relay.address().port}/realtime/v1`, heartbeatIntervalMs: 150, reconnectAfterMs: () => 50 })
      const ch = c.channel(uniqueName('hb'))
      const rec = await joined(ch)
      const firstJoinRef = ch.joinRef
      await waitFor(() => c.logs.some(([k, m]) => k === 'receive' && /phoenix phx_reply/.test(m)), 5000, 'a heartbeat reply')
      for (const p of pairs) p.frozen = true
      await waitFor(() => rec.count('SUBSCRIBED') === 2, 10000, () => `rejoined after the stall (${rec})`)
      assert.ok(c.logs.some(([, m]) => /heartbeat timeout/.test(m)), 'logged the heartbeat timeout')
      const err = rec.errors[rec.statuses.indexOf('CHANNEL_ERROR')]
      assert.equal(err?.message, 'heartbeat timeout')
      assert.notEqual(ch.joinRef, firstJoinRef, 'the rejoin has a new join_ref')
      assert.equal(pairs.length, 2, 'over a second TCP connection')
    } finally {
      for (const p of pairs) p.down.destroy()
      relay.close()
    }
  })
})

describe('restart', () => {
  it('after the server restarts: jittered exponential backoff, every channel rejoins, presence resyncs', async () => {
    const node = await startServer()
    const mine = new MeshcastClients(node)
    try {
      const schedules = { a: [], b: [] }
      const backoff = exponentialBackoff({ initialMs: 100, maxMs: 800, jitter: 0.5 })
      const mk = (who) =>
        mine.make({
          reconnectAfterMs: (tries) => {
            const ms = backoff(tries)
            schedules[who].push({ tries, ms })
            return ms
          },
        })
      const a = mk('a')
      const b = mk('b')
      const name = uniqueName('restart')
      const chA = a.channel(name, { config: { presence: { key: 'alice' } } })
      const chB = b.channel(name, { config: { presence: { key: 'bob' } } })
      const other = b.channel(uniqueName('second'))
      for (const ch of [chA, chB]) ch.on('presence', { event: 'sync' }, () => {})
      const gotB = collect(chB, 'after')
      const recA = await joined(chA)
      const recB = await joined(chB)
      const recOther = await joined(other)
      await chA.track({ who: 'alice' })
      await chB.track({ who: 'bob' })
      const keys = (ch) => Object.keys(ch.presenceState()).sort().join(',')
      await waitFor(() => keys(chA) === 'alice,bob' && keys(chB) === 'alice,bob', 5000, 'presence before the restart')
      const refsBefore = [chA.joinRef, chB.joinRef, other.joinRef]

      await node.stop()
      // Let a few reconnect attempts fail against the closed port, so the backoff grows.
      await waitFor(() => schedules.a.length >= 3 && schedules.b.length >= 3, 10000, () => `3 reconnect attempts each: ${JSON.stringify(schedules)}`)
      assert.equal(a.connectionState() === 'open', false)
      const restarted = await startServer({ port: node.port })
      try {
        await waitFor(() => recA.count('SUBSCRIBED') === 2 && recB.count('SUBSCRIBED') === 2 && recOther.count('SUBSCRIBED') === 2, 10000, () => `all rejoined: a ${recA} b ${recB} other ${recOther}`)
        assert.ok(recA.has('CHANNEL_ERROR') && recB.has('CHANNEL_ERROR'), 'the outage was reported')
        assert.deepEqual([chA.joinRef, chB.joinRef, other.joinRef].map((r, i) => r !== refsBefore[i]), [true, true, true], 'new join_refs')

        // Presence resyncs: each client tracks its payload again after the rejoin, and the new state
        // (diffed against the old local state) plus the diffs after it give both keys, once each.
        await waitFor(() => keys(chA) === 'alice,bob' && keys(chB) === 'alice,bob', 5000, () => `presence after the restart: a=${keys(chA)} b=${keys(chB)}`)
        assert.deepEqual(chA.presenceState().bob.map((m) => m.who), ['bob'])
        assert.deepEqual(chB.presenceState().alice.map((m) => m.who), ['alice'])
        assert.equal(await chA.send({ type: 'broadcast', event: 'after', payload: { ok: 1 } }), 'ok')
        await waitFor(() => gotB.length === 1, 5000, 'broadcast after the restart')

        // The schedule: tries count up from 1 after the drop, each delay within its jittered bounds,
        // nominal doubling up to the cap, jitter actually applied, and each attempt waited its delay.
        for (const who of ['a', 'b']) {
          const s = schedules[who]
          s.forEach(({ tries, ms }, i) => {
            assert.equal(tries, i + 1, `${who}: tries ${JSON.stringify(s)}`)
            const [lo, hi] = backoff.bounds(tries)
            assert.ok(ms >= lo && ms <= hi, `${who} try ${tries}: ${ms} ms outside [${lo}, ${hi}]`)
          })
          assert.deepEqual(s.slice(0, 4).map(({ tries }) => backoff.bounds(tries)[1]), [100, 200, 400, 800].slice(0, Math.min(4, s.length)))
        }
        const all = [...schedules.a, ...schedules.b]
        assert.ok(all.some(({ tries, ms }) => ms !== backoff.bounds(tries)[1]), `jitter applied: ${JSON.stringify(all)}`)
        const client = a
        const logs = client.logs.filter(([k, m]) => k === 'transport' && /^(reconnecting in|connecting$)/.test(m))
        let waits = 0
        for (let i = 0; i < logs.length - 1; i++) {
          const [, m, data, at] = logs[i]
          if (!m.startsWith('reconnecting in')) continue
          const next = logs.slice(i + 1).find(([, n]) => n === 'connecting')
          assert.ok(next, 'an attempt follows each schedule')
          assert.ok(next[3] - at >= data.delayMs - 2, `attempt ${data.tries} started ${(next[3] - at).toFixed(1)} ms after scheduling, before its ${data.delayMs} ms delay`)
          waits++
        }
        assert.ok(waits >= 3)
      } finally {
        await mine.closeAll()
        await restarted.stop()
      }
    } finally {
      await mine.closeAll()
      await node.stop()
    }
  })
})

describe('errors reach the caller', () => {
  let authNode
  let authClients
  before(async () => {
    authNode = await startServer({ jwtSecret: SECRET })
    authClients = new MeshcastClients(authNode)
  })
  afterEach(() => authClients.closeAll())
  after(async () => {
    await authClients?.closeAll()
    await authNode?.stop()
  })

  it('a refused join reports CHANNEL_ERROR with the server’s reason, and retries with backoff', async () => {
    const c = authClients.make({ apikey: token(), rejoinAfterMs: () => 50 })
    const name = uniqueName('private')
    const rec = record(c.channel(name, { config: { private: true } }))
    await waitFor(() => rec.count('CHANNEL_ERROR') >= 2, 5000, () => `two refusals (${rec})`)
    assert.equal(rec.errors[0].message, `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`)
    assert.deepEqual(rec.errors[0].cause, { reason: rec.errors[0].message })
    assert.ok(!rec.has('SUBSCRIBED'))
  })

  it('an empty topic name is refused with TopicNameRequired', async () => {
    const rec = record(authClients.make({ apikey: token() }).channel(''))
    await waitFor(() => rec.has('CHANNEL_ERROR'), 5000, () => `refusal (${rec})`)
    assert.equal(rec.errors[0].message, 'TopicNameRequired: You must provide a topic name')
  })

  it('a refused upgrade (bad apikey) reports CHANNEL_ERROR once and keeps retrying', async () => {
    const c = authClients.make({ apikey: 'not-a-jwt', reconnectAfterMs: () => 50 })
    const rec = record(c.channel(uniqueName('badkey')))
    const failures = () => c.logs.filter(([, m]) => m.startsWith('connect failed')).length
    await waitFor(() => failures() >= 3, 5000, () => `three failed attempts (${rec})`)
    assert.deepEqual(rec.statuses, ['CHANNEL_ERROR'], 'one report per outage, as realtime-js')
    assert.match(rec.errors[0].message, /WebSocket to ws:\/\/127\.0\.0\.1:\d+\/realtime\/v1\/websocket failed \(close 1006\): Unexpected server response: 401/)
    assert.ok(!rec.errors[0].message.includes('not-a-jwt'), 'the apikey stays out of error messages')
  })

  it('setAuth refreshes the token: the channel outlives the first token’s expiry', async () => {
    const c = authClients.make({ apikey: token(), accessToken: token({ role: 'authenticated', exp: nowSeconds() + 2 }), WebSocket: RecordingWebSocket })
    const ch = c.channel(uniqueName('refresh'), { config: { private: true, broadcast: { self: true, ack: true } } })
    const sys = []
    ch.on('system', {}, (p) => sys.push(p))
    const got = collect(ch)
    const rec = await joined(ch)
    const fresh = token({ role: 'authenticated', sub: 'u1' })
    await c.setAuth(fresh)
    const pushed = c.conn.ws.sent.find((f) => Array.isArray(f) && f[3] === 'access_token')
    assert.deepEqual(pushed?.slice(2), [ch.topic, 'access_token', { access_token: fresh }])
    assert.equal(pushed[0], ch.joinRef)
    const firstExp = (nowSeconds() + 3) * 1000
    // The server closes a channel whose token expired; wait past the first token's exp, then check it is still joined.
    await waitFor(() => Date.now() > firstExp + 1000 || rec.has('CLOSED'), 8000, 'the first token’s expiry')
    assert.deepEqual(rec.statuses, ['SUBSCRIBED'], `still joined after the first token expired (system: ${JSON.stringify(sys)})`)
    assert.equal(await ch.send({ type: 'broadcast', event: 'still', payload: {} }), 'ok')
    await waitFor(() => got.length === 1, 5000, 'broadcast after the refresh')
  })

  it('a bad token from setAuth: system error, then CLOSED with that error and no rejoin', async () => {
    const c = authClients.make({ apikey: token(), rejoinAfterMs: () => 20 })
    const ch = c.channel(uniqueName('badrefresh'))
    const sys = []
    ch.on('system', {}, (p) => sys.push(p))
    const rec = await joined(ch)
    await c.setAuth('not-a-jwt')
    await waitFor(() => rec.has('CLOSED'), 5000, () => `CLOSED (${rec})`)
    assert.deepEqual(sys.map((m) => m.message), ['The token provided is not a valid JWT'])
    assert.equal(rec.errors[rec.statuses.indexOf('CLOSED')]?.message, 'The token provided is not a valid JWT')
    assert.equal(ch.state, 'closed')
    assert.ok(!c.getChannels().includes(ch), 'removed from the client')
    assert.equal(ch.rejoinTimer.pending, false, 'no rejoin scheduled')
    assert.throws(() => ch.subscribe(), /create a new channel/)
    // A new channel of that name (with a good token again) works on the same connection.
    await c.setAuth(token())
    await joined(c.channel(ch.subTopic))
  })
})

describe('disconnect', () => {
  // realtime-js is the oracle: whatever it reports to the subscribe
  // callback when the app ends the connection or the channels, clientjs
  // reports the same, statuses and messages.
  it('reports CLOSED, not an error, to the subscribe callback on disconnect()', async () => {
    // realtime-js 2.119.1 reports CHANNEL_ERROR "socket closed: 1000" here;
    // an app that ends its own connection is told the channel closed.
    const c = clients.make()
    const ch = c.channel(uniqueName('end-disconnect'))
    const rec = record(ch)
    await waitFor(() => rec.has('SUBSCRIBED'), 5000, () => `SUBSCRIBED (${rec})`)
    await c.disconnect()
    await waitFor(() => rec.statuses.length >= 2, 5000, () => `a status after disconnect() (${rec})`)
    assert.deepEqual(rec.statuses, ['SUBSCRIBED', 'CLOSED'])
    await c.connect()
    await waitFor(() => rec.statuses.length >= 3, 5000, () => `rejoined after connect() (${rec})`)
    assert.equal(rec.statuses[2], 'SUBSCRIBED')
  })

  for (const end of ['removeAllChannels', 'unsubscribe']) {
    it(`reports to the subscribe callback what realtime-js reports on ${end}()`, async () => {
      const run = async (client) => {
        const ch = client.channel(uniqueName(`end-${end}`))
        const rec = record(ch)
        await waitFor(() => rec.has('SUBSCRIBED'), 5000, () => `SUBSCRIBED (${rec})`)
        await (end === 'unsubscribe' ? ch.unsubscribe() : client[end]())
        await waitFor(() => rec.statuses.length >= 2, 5000, () => `a status after ${end}() (${rec})`)
        return rec.statuses.map((s, i) => [s, rec.errors[i]?.message ?? null])
      }
      const want = await run(realtime.make())
      const got = await run(clients.make())
      assert.deepEqual(got, want)
    })
  }

  for (const mode of ['joined', 'stalled-webtransport']) {
  it(`leaves no timers or sockets: a Node process exits by itself right after disconnect() (${mode})`, async () => {
    const child = spawn(process.execPath, [path.join(here, 'fixtures/disconnect-exits.mjs'), `${server.httpURL}/realtime/v1`, mode], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const started = Date.now()
    const code = await new Promise((resolve) => child.on('exit', resolve))
    assert.equal(code, 0, out)
    const report = JSON.parse(out.trim().split('\n').at(-1))
    assert.deepEqual(report.resources, [], `handles left after disconnect(): ${JSON.stringify(report.resources)}`)
    assert.ok(report.subscribed && report.tracked && report.sent, out)
    assert.ok(Date.now() - started < 10000)
  })
  }
})
