// Wire-level checks with raw `ws` frames, for protocol details that realtime-js
// hides but depends on (shared/protocol.md is the reference).
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import {
  RawSocket,
  broadcastOf,
  encodeKind3,
  joinConfig,
  startServer,
  waitFor,
} from './helpers.mjs'

let server
let sockets = []

const MAX_PAYLOAD = 64 * 1024

before(async () => {
  // A small payload limit so the oversize case needs no megabytes of test data.
  server = await startServer({ args: ['--max-payload-bytes', String(MAX_PAYLOAD)] })
})
afterEach(() => {
  for (const s of sockets.splice(0)) s.close()
})
after(async () => {
  await server?.stop()
})

/** Opens a raw socket; `query` defaults to what realtime-js 2.119 sends. */
async function open(query = 'apikey=demo&vsn=2.0.0', path = '/realtime/v1/websocket') {
  const s = new RawSocket(`${server.wsURL}${path}${query === null ? '' : `?${query}`}`)
  sockets.push(s)
  await s.opened()
  return s
}

let topicSeq = 0
const uniqueName = (what) => `${what}-${process.pid}-${++topicSeq}`

const OK_EMPTY = { status: 'ok', response: {} }

/** Every frame a v2 client gets must be a JSON array or a kind-4 binary frame. */
function assertV2Frames(s) {
  for (const f of s.frames) {
    assert.ok(Array.isArray(f) || f.decoded, `v2 client got a frame that is neither an array nor kind 4: ${JSON.stringify(f)}`)
  }
}

describe('connection', () => {
  it('replies to heartbeats with [null,ref,"phoenix","phx_reply",{"status":"ok","response":{}}]', async () => {
    const s = await open()
    s.send([null, '1', 'phoenix', 'heartbeat', {}])
    const reply = await s.reply('phoenix', '1')
    assert.deepEqual(reply, [null, '1', 'phoenix', 'phx_reply', OK_EMPTY])
  })

  it('serves the native Supabase path /socket/websocket too', async () => {
    const s = await open('apikey=demo&vsn=2.0.0', '/socket/websocket')
    const reply = await s.sync('9')
    assert.deepEqual(reply, [null, '9', 'phoenix', 'phx_reply', OK_EMPTY])
  })

  it('speaks vsn=1.0.0 with JSON object frames', async () => {
    const s = await open('apikey=demo&vsn=1.0.0')
    s.send({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '1' })
    const hb = await s.next((f) => f.ref === '1', 5000, 'v1 heartbeat reply')
    assert.ok(!Array.isArray(hb), `v1 reply must be an object: ${JSON.stringify(hb)}`)
    assert.equal(hb.topic, 'phoenix')
    assert.equal(hb.event, 'phx_reply')
    assert.deepEqual(hb.payload, OK_EMPTY)

    const topic = `realtime:${uniqueName('v1')}`
    s.send({ topic, event: 'phx_join', payload: { config: joinConfig() }, ref: '2', join_ref: '2' })
    const join = await s.next((f) => f.ref === '2', 5000, 'v1 join reply')
    assert.equal(join.topic, topic)
    assert.equal(join.event, 'phx_reply')
    assert.equal(join.payload.status, 'ok', JSON.stringify(join))
    assert.deepEqual(join.payload.response.postgres_changes, [])
    for (const f of s.frames) assert.ok(!Array.isArray(f) && !f.binary, `v1 got a non-object frame: ${JSON.stringify(f)}`)
  })

  it('treats a missing vsn as 1.0.0', async () => {
    const s = await open('apikey=demo')
    s.send({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '1' })
    const hb = await s.next((f) => f.ref === '1', 5000, 'heartbeat reply without vsn')
    assert.ok(!Array.isArray(hb), `expected a v1 object frame, got ${JSON.stringify(hb)}`)
    assert.deepEqual(hb.payload, OK_EMPTY)
  })

  it('refuses an unknown vsn with 403', async () => {
    const s = new RawSocket(`${server.wsURL}/realtime/v1/websocket?apikey=demo&vsn=3.0.0`)
    sockets.push(s)
    const err = await waitFor(() => s.upgradeError, 5000, () => `upgrade refusal; socket state ${s.describe()}`)
    assert.equal(err.status, 403)
  })

  it('survives a malformed text frame: stays usable or closes cleanly', async () => {
    const s = await open()
    s.send('this is not json{')
    s.send([null, '2', 'phoenix', 'heartbeat', {}])
    const outcome = await waitFor(
      () => s.frames.find((f) => Array.isArray(f) && f[1] === '2') || s.closed,
      5000,
      () => `heartbeat reply or close after bad JSON; got ${s.describe()}`
    )
    if (Array.isArray(outcome)) {
      assert.deepEqual(outcome, [null, '2', 'phoenix', 'phx_reply', OK_EMPTY])
    } else {
      assert.notEqual(outcome.code, 1006, `socket dropped without a close frame: ${JSON.stringify(outcome)}`)
    }
  })

  it('survives an unknown binary frame: stays usable or closes cleanly', async () => {
    const s = await open()
    s.send(Buffer.from([9, 1, 2, 3, 255]))
    s.send([null, '2', 'phoenix', 'heartbeat', {}])
    const outcome = await waitFor(
      () => s.frames.find((f) => Array.isArray(f) && f[1] === '2') || s.closed,
      5000,
      () => `heartbeat reply or close after garbage binary; got ${s.describe()}`
    )
    if (!Array.isArray(outcome)) {
      assert.notEqual(outcome.code, 1006, `socket dropped without a close frame: ${JSON.stringify(outcome)}`)
    }
  })
})

describe('channels', () => {
  it('join reply is ok with postgres_changes: [] and the same join_ref/ref', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('join')}`
    const reply = await s.join(topic, '1')
    assert.equal(reply[0], '1')
    assert.equal(reply[1], '1')
    assert.equal(reply[4].status, 'ok', JSON.stringify(reply))
    assert.deepEqual(reply[4].response.postgres_changes, [])
    assertV2Frames(s)
  })

  it('sends presence_state after a join with presence enabled', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('pstate')}`
    await s.join(topic, '1', { presence: { key: 'k1', enabled: true } })
    const state = await s.next((f) => f[2] === topic && f[3] === 'presence_state', 5000, 'presence_state')
    assert.deepEqual(state, ['1', null, topic, 'presence_state', {}])
  })

  it('answers a topic without the realtime: prefix with "unmatched topic"', async () => {
    const s = await open()
    const reply = await s.join('room:lobby', '1')
    assert.deepEqual(reply, ['1', '1', 'room:lobby', 'phx_reply', { status: 'error', response: { reason: 'unmatched topic' } }])
  })

  it('answers an empty topic name with TopicNameRequired', async () => {
    const s = await open()
    const reply = await s.join('realtime:', '1')
    assert.deepEqual(reply[4], {
      status: 'error',
      response: { reason: 'TopicNameRequired: You must provide a topic name' },
    })
  })

  it('answers a push on a topic that is not joined with "unmatched topic"', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('nojoin')}`
    s.send([null, '3', topic, 'broadcast', { type: 'broadcast', event: 'e', payload: {} }])
    const reply = await s.reply(topic, '3')
    assert.deepEqual(reply[4], { status: 'error', response: { reason: 'unmatched topic' } })
  })

  it('phx_leave gets an ok reply, then phx_close with ref = join_ref', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('leave')}`
    await s.join(topic, '1')
    s.send(['1', '2', topic, 'phx_leave', {}])
    const close = await s.next((f) => f[2] === topic && f[3] === 'phx_close', 5000, 'phx_close')
    assert.deepEqual(close, ['1', '1', topic, 'phx_close', {}])
    const replyIdx = s.frames.findIndex((f) => f[1] === '2' && f[3] === 'phx_reply')
    assert.ok(replyIdx >= 0, `no reply to phx_leave: ${s.describe()}`)
    assert.deepEqual(s.frames[replyIdx], ['1', '2', topic, 'phx_reply', OK_EMPTY])
    assert.ok(replyIdx < s.frames.indexOf(close), `phx_close came before the leave reply: ${s.describe()}`)
  })

  it('phx_leave on a channel that is not joined still replies ok', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('leave2')}`
    s.send(['5', '6', topic, 'phx_leave', {}])
    const reply = await s.reply(topic, '6')
    assert.deepEqual(reply[4], OK_EMPTY)
  })

  it('a duplicate join closes the old join_ref, then joins', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('dup')}`
    await s.join(topic, '1')
    const second = await s.join(topic, '3')
    assert.equal(second[4].status, 'ok', JSON.stringify(second))
    const closeIdx = s.frames.findIndex((f) => f[2] === topic && f[3] === 'phx_close')
    assert.ok(closeIdx >= 0, `no phx_close for the old join: ${s.describe()}`)
    assert.deepEqual(s.frames[closeIdx], ['1', '1', topic, 'phx_close', {}])
    assert.ok(closeIdx < s.frames.indexOf(second), 'the old join must be closed before the new reply')
  })

  it('accepts "true" strings for booleans in the join config', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('strbool')}`
    const reply = await s.join(topic, '1', { broadcast: { self: 'true', ack: 'true' } })
    assert.equal(reply[4].status, 'ok', JSON.stringify(reply))
    s.send(encodeKind3({ joinRef: '1', ref: '2', topic, event: 'e', payload: { n: 1 } }))
    assert.deepEqual(await s.reply(topic, '2'), ['1', '2', topic, 'phx_reply', OK_EMPTY], 'ack: "true" must ack')
    await s.next((f) => broadcastOf(f)?.event === 'e', 5000, 'self: "true" echo')
  })

  it('ignores unknown events on a joined channel: no reply, still joined', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('unknown')}`
    await s.join(topic, '1', { broadcast: { self: true } })
    s.send(['1', '2', topic, 'no_such_event', { x: 1 }])
    await s.sync('3')
    assert.deepEqual(s.frames.filter((f) => f[1] === '2' || f[3] === 'phx_close' || f[3] === 'phx_error'), [], s.describe())
    s.send(encodeKind3({ joinRef: '1', ref: '4', topic, event: 'still', payload: {} }))
    await s.next((f) => broadcastOf(f)?.event === 'still', 5000, 'broadcast after an unknown event')
  })

  it('joins postgres_changes bindings on a node without a database, then says why they get nothing', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('pg')}`
    const reply = await s.join(topic, '1', {
      postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'todos' }],
    })
    // Supabase never refuses a join for its config: the bindings are echoed, and
    // a system message carries the subscription error.
    assert.equal(reply[4].status, 'ok', `expected an ok reply, got ${JSON.stringify(reply)}`)
    assert.deepEqual(reply[4].response.postgres_changes.map(({ id, ...b }) => b), [{ event: 'INSERT', schema: 'public', table: 'todos' }])
    const sys = await s.next((f) => f[2] === topic && f[3] === 'system', 5000, 'the postgres_changes system message')
    assert.equal(sys[0], '1')
    assert.equal(sys[4].extension, 'postgres_changes')
    assert.equal(sys[4].status, 'error')
    assert.match(sys[4].message, /--database-url/)
  })
})

describe('broadcast frames', () => {
  async function pair(config = {}) {
    const name = uniqueName('bc')
    const topic = `realtime:${name}`
    const a = await open()
    const b = await open()
    assert.equal((await a.join(topic, '1', config))[4].status, 'ok')
    assert.equal((await b.join(topic, '1'))[4].status, 'ok')
    return { topic, a, b }
  }

  it('kind 3 in reaches the other subscriber (text array or kind 4), not the sender', async () => {
    const { topic, a, b } = await pair({ broadcast: { ack: true } })
    a.send(encodeKind3({ joinRef: '1', ref: '2', topic, event: 'cursor', payload: { x: 42, s: 'é' } }))
    const ack = await a.reply(topic, '2')
    assert.deepEqual(ack, ['1', '2', topic, 'phx_reply', OK_EMPTY])
    const got = await b.next((f) => broadcastOf(f)?.event === 'cursor', 5000, 'broadcast at B')
    assert.deepEqual(broadcastOf(got), { topic, event: 'cursor', payload: { x: 42, s: 'é' } })
    if (Array.isArray(got)) {
      assert.deepEqual(got, [null, null, topic, 'broadcast', { type: 'broadcast', event: 'cursor', payload: { x: 42, s: 'é' } }])
    }
    await a.sync('3')
    assert.equal(a.frames.filter((f) => broadcastOf(f)).length, 0, `sender got its own broadcast: ${a.describe()}`)
    assertV2Frames(a)
    assertV2Frames(b)
  })

  it('self: true echoes a kind-3 broadcast to the sender', async () => {
    const name = uniqueName('self')
    const topic = `realtime:${name}`
    const a = await open()
    await a.join(topic, '1', { broadcast: { self: true } })
    a.send(encodeKind3({ joinRef: '1', ref: '2', topic, event: 'echo', payload: { n: 1 } }))
    const got = await a.next((f) => broadcastOf(f)?.event === 'echo', 5000, 'own broadcast')
    assert.deepEqual(broadcastOf(got).payload, { n: 1 })
  })

  it('text broadcast pushes (v1-style payload) are delivered too', async () => {
    const { topic, a, b } = await pair()
    a.send(['1', '2', topic, 'broadcast', { type: 'broadcast', event: 'e', payload: { a: 1 } }])
    const got = await b.next((f) => broadcastOf(f)?.event === 'e', 5000, 'text broadcast at B')
    assert.deepEqual(broadcastOf(got).payload, { a: 1 })
  })

  it('without ack a broadcast gets no reply', async () => {
    const { topic, a } = await pair()
    a.send(encodeKind3({ joinRef: '1', ref: '2', topic, event: 'quiet', payload: {} }))
    await a.sync('3') // frames are handled in order: a reply to "2" would come first
    const replies = a.frames.filter((f) => Array.isArray(f) && f[1] === '2')
    assert.deepEqual(replies, [], 'broadcast without ack must not be answered')
  })

  it('an oversized broadcast is dropped and, with ack, answered payload_size_exceeded', async () => {
    const { topic, a, b } = await pair({ broadcast: { ack: true } })
    a.send(encodeKind3({ joinRef: '1', ref: '2', topic, event: 'big', payload: { blob: 'x'.repeat(MAX_PAYLOAD + 1024) } }))
    const reply = await a.reply(topic, '2')
    assert.deepEqual(reply[4], { status: 'error', response: 'payload_size_exceeded' })
    a.send(encodeKind3({ joinRef: '1', ref: '3', topic, event: 'small', payload: {} }))
    await b.next((f) => broadcastOf(f)?.event === 'small', 5000, 'the next, small broadcast')
    assert.ok(!b.frames.some((f) => broadcastOf(f)?.event === 'big'), 'the oversized broadcast was delivered')
  })

  it('REST bytes reach v2 subscribers as kind 4 (enc 0) and never v1 subscribers', async () => {
    const name = uniqueName('bytes')
    const topic = `realtime:${name}`
    const v2 = await open()
    const v1 = await open('apikey=demo&vsn=1.0.0')
    await v2.join(topic, '1')
    v1.send({ topic, event: 'phx_join', payload: { config: joinConfig() }, ref: '1', join_ref: '1' })
    await v1.next((f) => f.ref === '1' && f.event === 'phx_reply', 5000, 'v1 join reply')
    const bytes = Buffer.from([0, 1, 2, 250, 255])
    const res = await fetch(`${server.httpURL}/realtime/v1/api/broadcast/${encodeURIComponent(name)}/events/raw`, {
      method: 'POST',
      headers: { apikey: 'demo', 'content-type': 'application/octet-stream' },
      body: bytes,
    })
    await res.arrayBuffer()
    assert.equal(res.status, 202)
    const got = await v2.next((f) => f.decoded?.event === 'raw', 5000, 'kind-4 binary broadcast at the v2 client')
    assert.equal(got.decoded.topic, topic)
    assert.deepEqual(Buffer.from(got.decoded.payload), bytes)
    assert.equal(got.binary[4], 0, 'enc must be 0 (bytes)')
    // A JSON message after it is a barrier for the v1 client.
    const res2 = await fetch(`${server.httpURL}/api/broadcast`, {
      method: 'POST',
      headers: { apikey: 'demo', 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic: name, event: 'after', payload: {} }] }),
    })
    await res2.arrayBuffer()
    await v1.next((f) => f.event === 'broadcast' && f.payload?.event === 'after', 5000, 'JSON broadcast at v1')
    assert.ok(!v1.frames.some((f) => f.binary || f.payload?.event === 'raw'), `v1 got raw bytes: ${v1.describe()}`)
  })

  it('public and private channels of one name do not share messages', async (t) => {
    const name = uniqueName('ns')
    const topic = `realtime:${name}`
    const pub = await open()
    const priv = await open()
    await pub.join(topic, '1')
    const privReply = await priv.join(topic, '1', { private: true })
    if (privReply[4].status !== 'ok') {
      t.skip(`private join refused in dev mode (${JSON.stringify(privReply[4])}); nothing to leak into`)
      return
    }
    const sender = await open()
    await sender.join(topic, '1', { broadcast: { ack: true } })
    sender.send(encodeKind3({ joinRef: '1', ref: '2', topic, event: 'pub-only', payload: {} }))
    await sender.reply(topic, '2')
    await pub.next((f) => broadcastOf(f)?.event === 'pub-only', 5000, 'public delivery')
    await priv.sync('9')
    assert.equal(priv.frames.filter((f) => broadcastOf(f)).length, 0, `private subscriber got a public message: ${priv.describe()}`)
  })
})

describe('presence frames', () => {
  it('track is answered ok and the tracker gets the presence_diff', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('ptrack')}`
    await s.join(topic, '1', { presence: { key: 'k1', enabled: true } })
    s.send(['1', '2', topic, 'presence', { type: 'presence', event: 'track', payload: { online_at: 'now' } }])
    const reply = await s.reply(topic, '2')
    assert.deepEqual(reply[4], OK_EMPTY)
    const diff = await s.next((f) => f[3] === 'presence_diff', 5000, 'presence_diff for own track')
    assert.ok(diff[0] === null || diff[0] === '1', `presence_diff join_ref must be null or current: ${JSON.stringify(diff)}`)
    const { joins, leaves } = diff[4]
    assert.deepEqual(leaves, {})
    assert.deepEqual(Object.keys(joins), ['k1'])
    assert.equal(joins.k1.metas.length, 1)
    const [meta] = joins.k1.metas
    assert.equal(meta.online_at, 'now')
    assert.equal(typeof meta.phx_ref, 'string')
  })

  it('rejects a non-object track payload', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('pbad')}`
    await s.join(topic, '1', { presence: { key: 'k1', enabled: true } })
    s.send(['1', '2', topic, 'presence', { type: 'presence', event: 'track', payload: 'nope' }])
    const reply = await s.reply(topic, '2')
    assert.deepEqual(reply[4], {
      status: 'error',
      response: { reason: 'Presence track payload must be a map' },
    })
  })

  it('a presence push without event is an ok no-op; an unknown event is an error', async () => {
    const s = await open()
    const topic = `realtime:${uniqueName('pevent')}`
    await s.join(topic, '1', { presence: { key: 'k1', enabled: true } })
    s.send(['1', '2', topic, 'presence', { type: 'presence' }])
    assert.deepEqual((await s.reply(topic, '2'))[4], OK_EMPTY)
    s.send(['1', '3', topic, 'presence', { type: 'presence', event: 'dance', payload: {} }])
    assert.deepEqual((await s.reply(topic, '3'))[4], { status: 'error', response: {} })
    await s.sync('4')
    assert.ok(!s.frames.some((f) => f[3] === 'presence_diff'), `no-op pushes changed presence: ${s.describe()}`)
  })

  it('an empty presence key gets a server-made key, one per join', async () => {
    const topic = `realtime:${uniqueName('pkey')}`
    const watcher = await open()
    await watcher.join(topic, '1', { presence: { enabled: true } })
    for (const ref of ['7', '8']) {
      const s = await open()
      await s.join(topic, '1', { presence: { key: '', enabled: true } })
      s.send(['1', ref, topic, 'presence', { type: 'presence', event: 'track', payload: { ref } }])
      await s.reply(topic, ref)
    }
    const keys = await waitFor(
      () => {
        const k = new Set(watcher.frames.filter((f) => f[3] === 'presence_diff').flatMap((f) => Object.keys(f[4].joins)))
        return k.size >= 2 && [...k]
      },
      5000,
      () => `two generated keys; got ${watcher.describe()}`
    )
    assert.equal(keys.length, 2)
    for (const k of keys) assert.ok(k.length > 0, 'a generated key must not be empty')
  })

  it('a closed socket sends leaves to the others', async () => {
    const topic = `realtime:${uniqueName('pgone')}`
    const watcher = await open()
    await watcher.join(topic, '1', { presence: { key: 'w', enabled: true } })
    const goner = await open()
    await goner.join(topic, '1', { presence: { key: 'g', enabled: true } })
    goner.send(['1', '2', topic, 'presence', { type: 'presence', event: 'track', payload: { n: 1 } }])
    await goner.reply(topic, '2')
    const join = await watcher.next((f) => f[3] === 'presence_diff' && f[4].joins?.g, 5000, 'join of g')
    const ref = join[4].joins.g.metas[0].phx_ref
    goner.ws.terminate()
    const leave = await watcher.next((f) => f[3] === 'presence_diff' && f[4].leaves?.g, 5000, 'leave of g')
    assert.equal(leave[4].leaves.g.metas[0].phx_ref, ref, 'the leave must carry the exact phx_ref it removes')
  })
})
