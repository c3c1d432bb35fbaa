// Interop: the unmodified @supabase/realtime-js (2.119.1, `ws` as transport)
// against the real meshcast binary, started without auth (dev mode).
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { Clients, startServer, subscribed, subscribeRecording, waitFor } from './helpers.mjs'

let server
let clients

before(async () => {
  server = await startServer()
  clients = new Clients(server)
})
afterEach(async () => {
  await clients.closeAll()
})
after(async () => {
  await clients?.closeAll()
  await server?.stop()
})

let topicSeq = 0
/** A channel name unique to this run, so tests never see each other's traffic. */
const uniqueName = (what) => `${what}-${process.pid}-${++topicSeq}`

/** Collects the broadcast payloads a channel receives for `event` ('*' = all). */
function collect(channel, event = '*') {
  const got = []
  channel.on('broadcast', { event }, (msg) => got.push(msg))
  return got
}

describe('subscribe', () => {
  it('reaches SUBSCRIBED and the join reply carries postgres_changes: []', async () => {
    const client = clients.make()
    const channel = client.channel(uniqueName('sub'))
    const rec = await subscribed(channel)
    assert.deepEqual(rec.statuses, ['SUBSCRIBED'])
    assert.equal(channel.state, 'joined')
    const resp = channel.joinPush.receivedResp
    assert.equal(resp?.status, 'ok', `join reply: ${JSON.stringify(resp)}`)
    assert.deepEqual(resp.response.postgres_changes, [], `join reply: ${JSON.stringify(resp)}`)
  })

  it('answers heartbeats (heartbeatCallback reports ok)', async () => {
    const beats = []
    const client = clients.make({ heartbeatIntervalMs: 200, heartbeatCallback: (status) => beats.push(status) })
    await subscribed(client.channel(uniqueName('hb')))
    await waitFor(() => beats.filter((b) => b === 'ok').length >= 2, 5000, () => `2 ok heartbeats, got ${JSON.stringify(beats)}`)
    assert.ok(!beats.includes('timeout') && !beats.includes('error'), JSON.stringify(beats))
  })

  it('unsubscribe reports CLOSED and the channel can be joined again', async () => {
    const client = clients.make()
    const name = uniqueName('resub')
    const first = client.channel(name)
    const rec = await subscribed(first)
    assert.equal(await client.removeChannel(first), 'ok')
    await waitFor(() => rec.has('CLOSED'), 5000, () => `CLOSED after removeChannel (${rec})`)
    await subscribed(client.channel(name))
  })
})

describe('broadcast', () => {
  it('self: true delivers the sender its own message', async () => {
    const client = clients.make()
    const channel = client.channel(uniqueName('self'), { config: { broadcast: { self: true } } })
    const got = collect(channel, 'ping')
    await subscribed(channel)
    assert.equal(await channel.send({ type: 'broadcast', event: 'ping', payload: { n: 1 } }), 'ok')
    const msg = await waitFor(() => got[0], 5000, 'own broadcast with self: true')
    assert.equal(msg.type, 'broadcast')
    assert.equal(msg.event, 'ping')
    assert.deepEqual(msg.payload, { n: 1 })
  })

  it('self: false (default) skips the sender but reaches another client', async () => {
    const name = uniqueName('noself')
    const a = clients.make().channel(name, { config: { broadcast: { ack: true } } })
    const b = clients.make().channel(name)
    const gotA = collect(a)
    const gotB = collect(b)
    await subscribed(a)
    await subscribed(b)

    // With ack the reply comes after the server queued the message for local
    // subscribers, so a self-delivery would already be on its way to A.
    assert.equal(await a.send({ type: 'broadcast', event: 'hello', payload: { from: 'a' } }), 'ok')
    await waitFor(() => gotB.find((m) => m.payload?.from === 'a'), 5000, "B receiving A's broadcast")
    // Barrier: once A sees B's later message, A's own would have arrived before it.
    assert.equal(await b.send({ type: 'broadcast', event: 'hello', payload: { from: 'b' } }), 'ok')
    await waitFor(() => gotA.find((m) => m.payload?.from === 'b'), 5000, "A receiving B's broadcast")
    assert.deepEqual(
      gotA.map((m) => m.payload),
      [{ from: 'b' }],
      'sender with self: false must not receive its own broadcast'
    )
  })

  it('ack: true resolves send() with ok once the server replies', async () => {
    const client = clients.make({ timeout: 3000 })
    const channel = client.channel(uniqueName('ack'), { config: { broadcast: { ack: true, self: true } } })
    const got = collect(channel)
    await subscribed(channel)
    // Without a server reply realtime-js resolves 'timed out' after `timeout`.
    const result = await channel.send({ type: 'broadcast', event: 'acked', payload: { n: 7 } })
    assert.equal(result, 'ok', 'send() with ack: true must resolve ok from the server reply')
    await waitFor(() => got.find((m) => m.payload?.n === 7), 5000, 'acked message delivered')
  })

  it('keeps the order of 200 messages from one publisher', async () => {
    const name = uniqueName('order')
    const pub = clients.make().channel(name)
    const sub = clients.make().channel(name)
    const got = collect(sub, 'seq')
    await subscribed(pub)
    await subscribed(sub)
    for (let i = 0; i < 200; i++) {
      await pub.send({ type: 'broadcast', event: 'seq', payload: { i } })
    }
    await waitFor(() => got.length >= 200, 10000, () => `200 messages, got ${got.length}`)
    assert.deepEqual(
      got.map((m) => m.payload.i),
      Array.from({ length: 200 }, (_, i) => i),
      'messages from one publisher must arrive in order, each once'
    )
    // meshcast's recovery positions ride in meta, which realtime-js passes
    // through untouched: one stream, offsets 1..200 in order.
    const pos = got.map((m) => m.meta?.pos)
    assert.ok(pos.every((p) => /^[0-9a-f]{16}:[1-9][0-9]*$/.test(p)), `meta.pos on every message: ${pos.slice(0, 3)}`)
    assert.equal(new Set(pos.map((p) => p.split(':')[0])).size, 1, 'one origin stream')
    assert.deepEqual(pos.map((p) => Number(p.split(':')[1])), Array.from({ length: 200 }, (_, i) => i + 1))
  })

  it('two clients see each other’s messages (sent as binary kind-3 frames)', async () => {
    // Spy on what realtime-js writes, to be sure the binary input path is exercised.
    const sentFrames = []
    class SpyWebSocket extends WebSocket {
      send(data, ...rest) {
        sentFrames.push(data)
        return super.send(data, ...rest)
      }
    }
    const name = uniqueName('pair')
    const a = clients.make({ transport: SpyWebSocket }).channel(name)
    const b = clients.make().channel(name)
    const gotA = collect(a, 'chat')
    const gotB = collect(b, 'chat')
    await subscribed(a)
    await subscribed(b)
    await a.send({ type: 'broadcast', event: 'chat', payload: { text: 'hi from a', n: 1 } })
    await b.send({ type: 'broadcast', event: 'chat', payload: { text: 'hi from b', n: 2 } })
    await waitFor(() => gotB.length >= 1, 5000, "B receiving A's message")
    await waitFor(() => gotA.length >= 1, 5000, "A receiving B's message")
    assert.deepEqual(gotB.map((m) => m.payload), [{ text: 'hi from a', n: 1 }])
    assert.deepEqual(gotA.map((m) => m.payload), [{ text: 'hi from b', n: 2 }])
    // realtime-js's send resolves before the node has the message, so B's may be numbered first.
    assert.match(gotB[0].meta?.pos ?? '', /^[0-9a-f]{16}:[12]$/, 'a kind-4 frame carries meta.pos in its meta JSON')
    assert.notEqual(gotB[0].meta.pos, gotA[0].meta?.pos, 'the two broadcasts have their own positions')
    const kind3 = sentFrames.filter((f) => typeof f !== 'string' && new Uint8Array(f)[0] === 3)
    assert.equal(kind3.length, 1, 'realtime-js should have sent the broadcast as one kind-3 binary frame')
  })

  it('a vsn 1.0.0 client and a 2.0.0 client exchange broadcasts', async () => {
    const name = uniqueName('v1v2')
    const v1 = clients.make({ vsn: '1.0.0' }).channel(name)
    const v2 = clients.make().channel(name)
    const got1 = collect(v1)
    const got2 = collect(v2)
    await subscribed(v1)
    await subscribed(v2)
    await v1.send({ type: 'broadcast', event: 'm', payload: { from: 'v1' } })
    await v2.send({ type: 'broadcast', event: 'm', payload: { from: 'v2', s: 'é✓' } })
    await waitFor(() => got2.length >= 1, 5000, 'v2 client receiving the v1 text broadcast')
    await waitFor(() => got1.length >= 1, 5000, 'v1 client receiving the v2 kind-3 broadcast (as text)')
    assert.deepEqual(got2[0].payload, { from: 'v1' })
    assert.equal(got2[0].event, 'm')
    assert.deepEqual(got1[0].payload, { from: 'v2', s: 'é✓' })
    assert.equal(got1[0].event, 'm')
  })

  it('binary payloads (ArrayBuffer) round-trip over the socket and httpSend()', async () => {
    const name = uniqueName('bin')
    const sender = clients.make().channel(name)
    const receiver = clients.make().channel(name)
    const got = collect(receiver)
    await subscribed(sender)
    await subscribed(receiver)
    await sender.send({ type: 'broadcast', event: 'ws-bytes', payload: new Uint8Array([1, 2, 3]).buffer })
    assert.deepEqual(await sender.httpSend('http-bytes', new Uint8Array([9, 8, 7, 0])), { success: true })
    await waitFor(() => got.length >= 2, 5000, () => `2 binary broadcasts, got ${got.length}`)
    for (const [event, bytes] of [['ws-bytes', [1, 2, 3]], ['http-bytes', [9, 8, 7, 0]]]) {
      const msg = got.find((m) => m.event === event)
      assert.ok(msg, `no ${event} message`)
      assert.ok(msg.payload instanceof ArrayBuffer, `${event} payload should be an ArrayBuffer, got ${typeof msg.payload}`)
      assert.deepEqual([...new Uint8Array(msg.payload)], bytes)
    }
  })

  it('delivers to every event listener regardless of case, and * gets all', async () => {
    const name = uniqueName('events')
    const sender = clients.make().channel(name)
    const receiver = clients.make().channel(name)
    const upper = collect(receiver, 'CamelEvent')
    const all = collect(receiver, '*')
    await subscribed(sender)
    await subscribed(receiver)
    await sender.send({ type: 'broadcast', event: 'camelevent', payload: { k: 1 } })
    await sender.send({ type: 'broadcast', event: 'other', payload: { k: 2 } })
    await waitFor(() => all.length >= 2, 5000, () => `both events on '*', got ${all.length}`)
    assert.deepEqual(all.map((m) => m.event), ['camelevent', 'other'])
    assert.deepEqual(upper.map((m) => m.payload), [{ k: 1 }])
  })
})

describe('REST broadcast', () => {
  async function listener() {
    const name = uniqueName('rest')
    const channel = clients.make().channel(name)
    const got = collect(channel)
    await subscribed(channel)
    return { name, got }
  }

  it('channel.httpSend() answers 202 and reaches a subscriber', async () => {
    const { name, got } = await listener()
    const sender = clients.make().channel(name)
    const result = await sender.httpSend('via-http', { a: 1 })
    assert.deepEqual(result, { success: true })
    const msg = await waitFor(() => got.find((m) => m.event === 'via-http'), 5000, 'httpSend delivery')
    assert.deepEqual(msg.payload, { a: 1 })
  })

  for (const path of ['/api/broadcast', '/realtime/v1/api/broadcast']) {
    it(`POST ${path} {messages:[...]} answers 202 and reaches a subscriber`, async () => {
      const { name, got } = await listener()
      const res = await fetch(`${server.httpURL}${path}?apikey=demo&vsn=2.0.0`, {
        method: 'POST',
        headers: { apikey: 'demo', 'content-type': 'application/json' },
        body: JSON.stringify({
          messages: [
            { topic: name, event: 'batch-1', payload: { path, i: 1 } },
            { topic: name, event: 'batch-2', payload: { path, i: 2 } },
          ],
        }),
      })
      await res.arrayBuffer()
      assert.equal(res.status, 202)
      await waitFor(() => got.length >= 2, 5000, () => `2 batch messages, got ${JSON.stringify(got)}`)
      assert.deepEqual(
        got.map((m) => [m.event, m.payload]),
        [
          ['batch-1', { path, i: 1 }],
          ['batch-2', { path, i: 2 }],
        ]
      )
    })
  }

  it('send() on an unjoined channel falls back to the batch endpoint and is delivered', async () => {
    const { name, got } = await listener()
    const unjoined = clients.make().channel(name)
    const result = await unjoined.send({ type: 'broadcast', event: 'fallback', payload: { via: 'rest' } })
    assert.equal(result, 'ok')
    const msg = await waitFor(() => got.find((m) => m.event === 'fallback'), 5000, 'fallback delivery')
    assert.deepEqual(msg.payload, { via: 'rest' })
  })

  it('answers CORS preflight for browsers', async () => {
    const res = await fetch(`${server.httpURL}/realtime/v1/api/broadcast`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://example.test',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'apikey, authorization, content-type, x-client-info',
      },
    })
    await res.arrayBuffer()
    assert.ok(res.status >= 200 && res.status < 300, `preflight status ${res.status}`)
    assert.equal(res.headers.get('access-control-allow-origin'), '*')
    const allowed = (res.headers.get('access-control-allow-headers') || '').toLowerCase()
    for (const h of ['apikey', 'authorization', 'content-type', 'x-client-info']) {
      assert.ok(allowed.includes(h), `access-control-allow-headers "${allowed}" lacks ${h}`)
    }
  })
})

describe('presence', () => {
  /** A presence-enabled channel with a key, recording sync/join/leave events. */
  function presenceChannel(client, name, key) {
    const channel = client.channel(name, { config: { presence: { key } } })
    const events = { syncs: 0, joins: [], leaves: [] }
    channel
      .on('presence', { event: 'sync' }, () => events.syncs++)
      .on('presence', { event: 'join' }, (e) => events.joins.push(e))
      .on('presence', { event: 'leave' }, (e) => events.leaves.push(e))
    return { channel, events, keys: () => Object.keys(channel.presenceState()).sort() }
  }

  it('two tracked clients both sync to both keys', async () => {
    const name = uniqueName('pres')
    const a = presenceChannel(clients.make(), name, 'alice')
    const b = presenceChannel(clients.make(), name, 'bob')
    await subscribed(a.channel)
    assert.equal(await a.channel.track({ user: 'alice', online_at: new Date().toISOString() }), 'ok')
    await subscribed(b.channel)
    assert.equal(await b.channel.track({ user: 'bob', online_at: new Date().toISOString() }), 'ok')
    for (const [who, p] of [['A', a], ['B', b]]) {
      await waitFor(
        () => p.keys().join() === 'alice,bob',
        5000,
        () => `${who} presence keys alice,bob; have ${JSON.stringify(p.channel.presenceState())}`
      )
      assert.ok(p.events.syncs > 0, `${who} got no presence sync event`)
    }
    const [bobMeta] = a.channel.presenceState().bob
    assert.equal(bobMeta.user, 'bob')
    assert.equal(typeof bobMeta.presence_ref, 'string')
  })

  it('a client that disconnects leaves the others’ presence', async () => {
    const name = uniqueName('presleave')
    const a = presenceChannel(clients.make(), name, 'stayer')
    const bClient = clients.make()
    const b = presenceChannel(bClient, name, 'goner')
    await subscribed(a.channel)
    await subscribed(b.channel)
    await a.channel.track({ user: 'stayer' })
    await b.channel.track({ user: 'goner' })
    await waitFor(() => a.keys().includes('goner'), 5000, 'A seeing goner')

    await bClient.disconnect() // socket closes; the server must send the leave
    const left = await waitFor(
      () => a.events.leaves.find((e) => e.key === 'goner'),
      5000,
      () => `leave for goner at A; A state ${JSON.stringify(a.channel.presenceState())}`
    )
    assert.equal(left.leftPresences[0].user, 'goner')
    assert.deepEqual(a.keys(), ['stayer'])
  })

  it('untrack() removes the key for the others', async () => {
    const name = uniqueName('untrack')
    const a = presenceChannel(clients.make(), name, 'watcher')
    const b = presenceChannel(clients.make(), name, 'shy')
    await subscribed(a.channel)
    await subscribed(b.channel)
    await b.channel.track({ user: 'shy' })
    await waitFor(() => a.keys().includes('shy'), 5000, 'A seeing shy')
    assert.equal(await b.channel.untrack(), 'ok')
    await waitFor(() => a.events.leaves.find((e) => e.key === 'shy'), 5000, 'leave for shy after untrack')
    assert.ok(!a.keys().includes('shy'))
  })

  it('the same key from two clients holds two metas', async () => {
    const name = uniqueName('metas')
    const one = presenceChannel(clients.make(), name, 'shared')
    const two = presenceChannel(clients.make(), name, 'shared')
    await subscribed(one.channel)
    await subscribed(two.channel)
    await one.channel.track({ device: 'phone' })
    await two.channel.track({ device: 'laptop' })
    for (const [who, p] of [['first', one], ['second', two]]) {
      const metas = await waitFor(
        () => p.channel.presenceState().shared?.length === 2 && p.channel.presenceState().shared,
        5000,
        () => `${who} client: key "shared" with 2 metas; have ${JSON.stringify(p.channel.presenceState())}`
      )
      assert.deepEqual(metas.map((m) => m.device).sort(), ['laptop', 'phone'])
      assert.notEqual(metas[0].presence_ref, metas[1].presence_ref, 'each meta needs its own phx_ref')
    }
  })

  it('tracking again updates the meta in one step', async () => {
    const name = uniqueName('update')
    const watcher = presenceChannel(clients.make(), name, 'watcher')
    const mover = presenceChannel(clients.make(), name, 'mover')
    // Record every state of "mover" the watcher's app could see after each sync.
    const seen = []
    watcher.channel.on('presence', { event: 'sync' }, () => {
      seen.push((watcher.channel.presenceState().mover || []).map((m) => m.status))
    })
    await subscribed(watcher.channel)
    await subscribed(mover.channel)
    await mover.channel.track({ status: 'idle' })
    await waitFor(() => watcher.channel.presenceState().mover?.[0]?.status === 'idle', 5000, 'idle')
    const from = seen.length
    assert.equal(await mover.channel.track({ status: 'busy' }), 'ok')
    await waitFor(
      () => watcher.channel.presenceState().mover?.[0]?.status === 'busy',
      5000,
      () => `busy; seen ${JSON.stringify(seen)}`
    )
    assert.equal(watcher.channel.presenceState().mover.length, 1)
    assert.deepEqual(
      seen.slice(from),
      [['busy']],
      'an update must arrive as one presence_diff (join of the new ref + leave of the old)'
    )
  })
})

describe('lifecycle', () => {
  it('removeAllChannels() leaves every channel and closes the socket', async () => {
    const client = clients.make()
    const recs = []
    for (const n of ['x', 'y']) recs.push(subscribeRecording(client.channel(uniqueName(n))))
    await waitFor(() => recs.every((r) => r.has('SUBSCRIBED')), 5000, () => `both SUBSCRIBED: ${recs.join(' | ')}`)
    const results = await client.removeAllChannels()
    assert.deepEqual(results, ['ok', 'ok'])
    await waitFor(() => recs.every((r) => r.has('CLOSED')), 5000, () => `both CLOSED: ${recs.join(' | ')}`)
    await waitFor(() => client.connectionState() === 'closed', 5000, 'socket closed')
  })
})
