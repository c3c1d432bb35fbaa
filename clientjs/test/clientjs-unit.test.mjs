// clientjs unit tests, no server: the serializer (kind 3 out, kind 4 in), the
// WebTransport stream framing, datagram limits, presence sync, postgres_changes
// dispatch and the backoff schedule.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import WebSocket from 'ws'
import { MeshcastClient, DatagramTooLargeError, UnreliableNotEnabledError, exponentialBackoff, endpointURLs } from '../src/index.js'
import { decode, encode, encodeBroadcastPush, DecodeError } from '../src/serializer.js'
import { FrameDecoder, FramingError, OP_BINARY, OP_CLOSE, OP_TEXT, decodeClose, encodeBinary, encodeClose, encodeFrame, encodeText } from '../src/framing.js'
import { PresenceState, syncDiff, syncState } from '../src/presence.js'
import { BINDING_MISMATCH, bindingMatches, changePayload, comparePos, matchBindingIds } from '../src/postgres.js'
import { RetryTimer, nominalDelay } from '../src/backoff.js'
import { MeshcastChannel } from '../src/channel.js'

const require = createRequire(import.meta.url)
const RealtimeSerializer = require('@supabase/realtime-js/dist/main/lib/serializer.js').default

const hex = (u8) => Buffer.from(u8).toString('hex')
const utf8 = (s) => new TextEncoder().encode(s)
const concat = (...parts) => Buffer.concat(parts.map((p) => Buffer.from(p)))

describe('serializer', () => {
  it('encodes a broadcast push as the kind-3 frame captured from realtime-js (protocol.md §1)', () => {
    const out = encode({ join_ref: '6', ref: '7', topic: 'realtime:room1', event: 'broadcast', payload: { type: 'broadcast', event: 'cursor', payload: { x: 42, s: 'é' } } })
    const cap = concat([3, 1, 1, 14, 6, 0, 1], utf8('6'), utf8('7'), utf8('realtime:room1'), utf8('cursor'), utf8('{"x":42,"s":"é"}'))
    assert.equal(hex(out), hex(cap))
  })

  it('produces the same bytes as realtime-js 2.119.1 for broadcasts (JSON, bytes, persist meta, UTF-8 headers)', () => {
    const rt = new RealtimeSerializer()
    const msgs = [
      { join_ref: '12', ref: '345', topic: 'realtime:ünï', event: 'broadcast', payload: { type: 'broadcast', event: 'é', payload: { a: [1, 2] } } },
      { join_ref: '1', ref: null, topic: 'realtime:r', event: 'broadcast', payload: { type: 'broadcast', event: 'bin', payload: new Uint8Array([0, 1, 255]).buffer } },
      { join_ref: '1', ref: '2', topic: 'realtime:r', event: 'broadcast', payload: { type: 'broadcast', event: 'p', payload: {}, persist: true, extra: 'dropped' } },
      { join_ref: '1', ref: '2', topic: 'realtime:r', event: 'phx_join', payload: { config: {} } },
      { join_ref: null, ref: '9', topic: 'phoenix', event: 'heartbeat', payload: {} },
    ]
    for (const m of msgs) {
      const ours = encode(m)
      const theirs = rt.encode(m, (r) => r)
      if (typeof theirs === 'string') assert.equal(ours, theirs)
      else assert.equal(hex(ours), hex(new Uint8Array(theirs)), JSON.stringify(m.payload))
    }
  })

  it('refuses header strings over 255 bytes with a RangeError', () => {
    assert.throws(() => encodeBroadcastPush({ topic: 'realtime:' + 'x'.repeat(250), event: 'e', payload: {} }), /topic is 259 bytes/)
    assert.throws(() => encodeBroadcastPush({ topic: 't', event: 'é'.repeat(128), payload: {} }), RangeError)
  })

  it('decodes kind 4 (JSON, bytes as ArrayBuffer, meta) into the broadcast realtime-js yields', () => {
    const k4 = (enc, meta, body) => concat([4, 14, 2, meta.length, enc], utf8('realtime:room1'), utf8('ev'), utf8(meta), body)
    assert.deepEqual(decode(k4(1, '', utf8('{"x":1}'))), {
      join_ref: null, ref: null, topic: 'realtime:room1', event: 'broadcast',
      payload: { type: 'broadcast', event: 'ev', payload: { x: 1 } },
    })
    const bin = decode(new Uint8Array(k4(0, '{"id":"m1"}', [9, 8, 7])).buffer)
    assert.ok(bin.payload.payload instanceof ArrayBuffer)
    assert.deepEqual([...new Uint8Array(bin.payload.payload)], [9, 8, 7])
    assert.deepEqual(bin.payload.meta, { id: 'm1' })
    // Same answer as realtime-js's own decoder.
    const rt = new RealtimeSerializer()
    const frame = new Uint8Array(k4(1, '{"id":"m2"}', utf8('{"é":[1]}'))).buffer
    assert.deepEqual(decode(frame), rt.decode(frame, (r) => r))
  })

  it('decodes text arrays and refuses other binary kinds, truncated frames and non-arrays', () => {
    assert.deepEqual(decode('["1","2","realtime:a","phx_reply",{"status":"ok","response":{}}]'), {
      join_ref: '1', ref: '2', topic: 'realtime:a', event: 'phx_reply', payload: { status: 'ok', response: {} },
    })
    assert.throws(() => decode(new Uint8Array([3, 0, 0, 0, 0, 0, 1])), /unknown binary frame kind 3/)
    assert.throws(() => decode(new Uint8Array([4, 20, 1, 0, 1, 65])), DecodeError)
    assert.throws(() => decode(new Uint8Array([4, 0, 0, 0, 7])), /unknown payload encoding 7/)
    assert.throws(() => decode('{"topic":"a"}'), /not a Phoenix v2 array/)
    assert.throws(() => decode('nope'), /not JSON/)
  })
})

describe('WebTransport stream framing', () => {
  const frames = [encodeText('["1","1","realtime:a","phx_join",{}]'), encodeBinary(new Uint8Array([4, 0, 0, 0, 1, 123, 125])), encodeClose(4001, 'bye é')]
  const stream = concat(...frames)

  it('encodes u32 big-endian N, then the opcode and the body', () => {
    assert.equal(hex(encodeFrame(OP_TEXT, utf8('hi'))), '00000003' + '01' + '6869')
    assert.equal(hex(encodeClose(1000, '')), '00000003' + '08' + '03e8')
  })

  const check = (out) => {
    assert.equal(out.length, 3)
    assert.equal(out[0].opcode, OP_TEXT)
    assert.equal(new TextDecoder().decode(out[0].body), '["1","1","realtime:a","phx_join",{}]')
    assert.equal(out[1].opcode, OP_BINARY)
    assert.deepEqual([...out[1].body], [4, 0, 0, 0, 1, 123, 125])
    assert.equal(out[2].opcode, OP_CLOSE)
    assert.deepEqual(decodeClose(out[2].body), { code: 4001, reason: 'bye é' })
  }

  it('decodes frames merged into one chunk', () => {
    const d = new FrameDecoder()
    check(d.push(new Uint8Array(stream)))
    d.end()
  })

  it('decodes frames fed one byte at a time', () => {
    const d = new FrameDecoder()
    const out = []
    for (const b of stream) out.push(...d.push(new Uint8Array([b])))
    check(out)
    assert.equal(d.pending, 0)
  })

  it('decodes frames split at every possible offset into two chunks', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new FrameDecoder()
      check([...d.push(new Uint8Array(stream.subarray(0, cut))), ...d.push(new Uint8Array(stream.subarray(cut)))])
    }
  })

  it('rejects a zero length, a length over the limit, and an unknown opcode; stays failed afterwards', () => {
    const zero = new FrameDecoder()
    assert.throws(() => zero.push(new Uint8Array([0, 0, 0, 0])), (e) => e instanceof FramingError && /length 0/.test(e.message))
    assert.throws(() => zero.push(new Uint8Array(encodeText('x'))), FramingError, 'a failed decoder must not resume')
    const big = new FrameDecoder({ maxFrame: 100 })
    assert.throws(() => big.push(new Uint8Array([0, 0, 0, 101])), (e) => e.code === 1009 && /101 exceeds the limit of 100/.test(e.message))
    // A lying 4 GiB length is refused from the 4-byte prefix alone, before any body arrives.
    assert.throws(() => new FrameDecoder().push(new Uint8Array([0xff, 0xff, 0xff, 0xff])), /4294967295 exceeds/)
    assert.throws(() => new FrameDecoder().push(new Uint8Array([0, 0, 0, 1, 7])), /unknown frame opcode 7/)
  })

  it('reports a stream that ends inside a frame (a length larger than what came)', () => {
    const d = new FrameDecoder()
    assert.deepEqual(d.push(new Uint8Array([0, 0, 0, 10, 1, 65, 66])), [])
    assert.throws(() => d.end(), /ended inside a frame: 10 bytes announced, 3 received/)
    const p = new FrameDecoder()
    p.push(new Uint8Array([0, 0]))
    assert.throws(() => p.end(), /inside a length prefix/)
  })

  it('refuses to encode a frame over the server limit (5 MiB + 1 by default)', () => {
    assert.throws(() => encodeBinary(new Uint8Array(5 * 1024 * 1024 + 1)), (e) => e.code === 1009)
    assert.equal(encodeBinary(new Uint8Array(5 * 1024 * 1024)).length, 4 + 5 * 1024 * 1024 + 1)
  })
})

describe('datagrams (sendUnreliable)', () => {
  const client = () => new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })

  it('refuses a channel that did not opt in with broadcast.unreliable', async () => {
    const ch = client().channel('plain')
    await assert.rejects(ch.sendUnreliable('cursor', { x: 1 }), (e) => e instanceof UnreliableNotEnabledError && /config\.broadcast\.unreliable: true/.test(e.message))
  })

  it('refuses a datagram over 1024 bytes with its size, and sends nothing', async () => {
    const c = client()
    const ch = c.channel('cursors', { config: { broadcast: { unreliable: true } } })
    // header: 7 + join_ref '' + ref '' + 'realtime:cursors' (16) + 'c' (1) = 24 bytes; {"s":"…"} = 8 + n
    const fits = 'a'.repeat(1024 - 24 - 8)
    assert.equal(encodeBroadcastPush({ joinRef: '', ref: '', topic: ch.topic, event: 'c', payload: { s: fits } }).length, 1024)
    await assert.rejects(ch.sendUnreliable('c', { s: fits + 'a' }), (e) => e instanceof DatagramTooLargeError && e.size === 1025 && e.maxBytes === 1024)
    assert.deepEqual(c.sendBuffer, [], 'nothing queued')
    assert.equal(c.connectionState(), 'closed', 'nothing connected')
  })
})

describe('presence sync', () => {
  const meta = (ref, extra = {}) => ({ phx_ref: ref, ...extra })

  it('a state diffed against the local state gives joins and leaves', () => {
    const events = []
    const onJoin = (k, cur, j) => events.push(['join', k, j.metas.map((m) => m.phx_ref)])
    const onLeave = (k, cur, l) => events.push(['leave', k, l.metas.map((m) => m.phx_ref)])
    const s1 = syncState({}, { a: { metas: [meta('1')] }, b: { metas: [meta('2')] } }, onJoin, onLeave)
    assert.deepEqual(events, [['join', 'a', ['1']], ['join', 'b', ['2']]])
    events.length = 0
    const s2 = syncState(s1, { a: { metas: [meta('1'), meta('3')] }, c: { metas: [meta('4')] } }, onJoin, onLeave)
    assert.deepEqual(events.sort(), [['join', 'a', ['3']], ['join', 'c', ['4']], ['leave', 'b', ['2']]].sort())
    assert.deepEqual(Object.keys(s2).sort(), ['a', 'c'])
    assert.deepEqual(s2.a.metas.map((m) => m.phx_ref), ['1', '3'])
  })

  it('a diff applies joins (keeping other metas of the key) then leaves (dropping empty keys)', () => {
    let s = syncDiff({}, { joins: { k: { metas: [meta('1', { v: 1 })] } }, leaves: {} })
    s = syncDiff(s, { joins: { k: { metas: [meta('2', { v: 2 })] } }, leaves: {} })
    assert.deepEqual(s.k.metas.map((m) => m.phx_ref), ['1', '2'])
    // An update: join of the new ref with phx_ref_prev + leave of the old one, in one diff.
    s = syncDiff(s, { joins: { k: { metas: [meta('3', { v: 3, phx_ref_prev: '1' })] } }, leaves: { k: { metas: [meta('1')] } } })
    assert.deepEqual(s.k.metas.map((m) => m.phx_ref), ['2', '3'])
    s = syncDiff(s, { joins: {}, leaves: { k: { metas: [meta('2'), meta('3')] } } })
    assert.deepEqual(Object.keys(s), [])
  })

  it('buffers diffs until the state of the current join, and again after a rejoin', () => {
    let joinRef = '1'
    const events = []
    const p = new PresenceState({ joinRef: () => joinRef, emit: (e) => events.push(e) })
    p.diff({ joins: { b: { metas: [meta('b1')] } }, leaves: {} })
    assert.deepEqual(p.list(), {}, 'a diff before the first state waits')
    assert.deepEqual(events, [])
    p.state({ a: { metas: [meta('a1', { name: 'alice' })] } })
    assert.deepEqual(p.list(), { a: [{ name: 'alice', presence_ref: 'a1' }], b: [{ presence_ref: 'b1' }] })
    assert.deepEqual(events.map((e) => e.event), ['join', 'join', 'sync'])
    assert.deepEqual(events[0], { event: 'join', key: 'a', currentPresences: [], newPresences: [{ name: 'alice', presence_ref: 'a1' }] })

    // Rejoin (new join_ref): diffs wait for the new state, which is diffed against what we had.
    joinRef = '7'
    events.length = 0
    p.diff({ joins: { c: { metas: [meta('c1')] } }, leaves: {} })
    assert.equal(events.length, 0)
    p.state({ a: { metas: [meta('a2', { name: 'alice' })] } }) // alice rejoined with a new ref; b is gone
    const summary = events.map((e) => `${e.event}:${e.key ?? ''}`)
    assert.deepEqual(summary.sort(), ['join:a', 'join:c', 'leave:a', 'leave:b', 'sync:'].sort())
    assert.deepEqual(p.list(), { a: [{ name: 'alice', presence_ref: 'a2' }], c: [{ presence_ref: 'c1' }] })
  })

  it('keeps keys such as __proto__ as ordinary keys', () => {
    const p = new PresenceState({ joinRef: () => '1', emit: () => {} })
    p.state({ ['__proto__']: { metas: [meta('x')] } })
    assert.deepEqual(Object.keys(p.raw), ['__proto__'])
  })
})

describe('postgres_changes dispatch', () => {
  // The frames of protocol.md §2.2 and §5.
  const joinReply = { postgres_changes: [
    { event: 'INSERT', schema: 'public', table: 'todos', id: 30636810 },
    { event: '*', schema: 'public', table: 'todos', filter: 'id=eq.1', id: 8475123 },
  ] }
  const change = { ids: [30636810, 8475123], data: { columns: [{ name: 'id', type: 'int8' }, { name: 'title', type: 'text' }], commit_timestamp: '2024-05-01T10:00:00.123Z', errors: null, record: { id: 1, title: 'a' }, schema: 'public', table: 'todos', type: 'INSERT' } }

  it('matches the join reply to the bindings in order and takes their ids', () => {
    const filters = [{ event: 'INSERT', schema: 'public', table: 'todos' }, { event: '*', schema: 'public', table: 'todos', filter: 'id=eq.1' }]
    assert.deepEqual(matchBindingIds(filters, joinReply.postgres_changes), [30636810, 8475123])
    assert.throws(() => matchBindingIds([filters[1], filters[0]], joinReply.postgres_changes), new RegExp(BINDING_MISMATCH))
    assert.throws(() => matchBindingIds(filters, undefined), new RegExp(BINDING_MISMATCH))
    assert.deepEqual(matchBindingIds([], undefined), [])
  })

  it('fires a listener iff its id is in ids and its event is * or the change type (any case)', () => {
    assert.equal(bindingMatches({ id: 30636810, event: 'INSERT' }, change), true)
    assert.equal(bindingMatches({ id: 8475123, event: '*' }, change), true)
    assert.equal(bindingMatches({ id: 8475123, event: 'insert' }, change), true)
    assert.equal(bindingMatches({ id: 30636810, event: 'UPDATE' }, change), false)
    assert.equal(bindingMatches({ id: 111, event: '*' }, change), false, 'an id not in ids never fires')
    assert.equal(bindingMatches({ id: undefined, event: '*' }, change), false, 'a listener without a server id never fires')
  })

  it('delivers realtime-js’s payload shape for INSERT, UPDATE and DELETE', () => {
    assert.deepEqual(changePayload(change), { schema: 'public', table: 'todos', commit_timestamp: '2024-05-01T10:00:00.123Z', eventType: 'INSERT', new: { id: 1, title: 'a' }, old: {}, errors: null })
    const upd = { ids: [1], data: { ...change.data, type: 'UPDATE', record: { id: '2', title: 'b', done: 't', tags: '{x,y}' }, old_record: { id: 2 }, columns: [...change.data.columns, { name: 'done', type: 'bool' }, { name: 'tags', type: '_text' }] } }
    assert.deepEqual(changePayload(upd), { schema: 'public', table: 'todos', commit_timestamp: change.data.commit_timestamp, eventType: 'UPDATE', new: { id: 2, title: 'b', done: true, tags: ['x', 'y'] }, old: { id: 2 }, errors: null })
    const del = { ids: [1], data: { ...change.data, type: 'DELETE', record: undefined, old_record: { id: 1 } } }
    assert.deepEqual(changePayload(del).new, {})
    assert.deepEqual(changePayload(del).old, { id: 1 })
  })

  it('a channel routes a change frame to exactly the matching listeners', () => {
    const c = new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })
    const ch = new MeshcastChannel('room1', {}, c)
    const got = []
    ch.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => got.push(['insert', p.eventType]))
      .on('postgres_changes', { event: '*', schema: 'public', table: 'todos', filter: 'id=eq.1' }, (p) => got.push(['all', p.new.title]))
      .on('postgres_changes', { event: 'DELETE', schema: 'public', table: 'todos' }, () => got.push(['delete']))
      .on('broadcast', { event: '*' }, () => got.push(['broadcast']))
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [...joinReply.postgres_changes, { event: 'DELETE', schema: 'public', table: 'todos', id: 5 }] })
    assert.equal(ch.state, 'joined')
    ch._trigger('postgres_changes', change, null)
    assert.deepEqual(got, [['insert', 'INSERT'], ['all', 'a']])
    got.length = 0
    ch._trigger('postgres_changes', { ...change, ids: [5] }, null)
    assert.deepEqual(got, [], 'an INSERT with only the DELETE listener’s id fires nothing')
    ch._trigger('postgres_changes', { ids: [5], data: { ...change.data, type: 'DELETE', old_record: { id: 1 } } }, null)
    assert.deepEqual(got, [['delete']])
  })
})

describe('recovery positions', () => {
  const E1 = '00000000000000aa'
  const E2 = '00000000000000bb'
  const bc = (epoch, offset, n) => ({ type: 'broadcast', event: 'e', payload: { n }, meta: { pos: `${epoch}:${offset}` } })

  it('takes the reply\'s vector, drops duplicates, sends the vector on the next join, holds the asked offsets during a recovery', () => {
    const c = new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })
    const ch = new MeshcastChannel('room1', {}, c)
    const got = []
    ch.on('broadcast', { event: '*' }, (m) => got.push(m.payload.n))
    assert.equal(ch._joinPayload().config.recover, undefined, 'the first join asks nothing')
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 4 } } })
    assert.deepEqual(ch.positions, { [E1]: 4 })
    assert.equal(ch.recovered, undefined)
    for (const [e, o, n] of [[E1, 4, 'dup'], [E1, 5, 5], [E2, 1, 'b1'], [E1, 5, 'dup']]) ch._trigger('broadcast', bc(e, o, n), null)
    assert.deepEqual(got, [5, 'b1'])
    assert.deepEqual(ch._joinPayload().config.recover, { broadcast: { [E1]: 5, [E2]: 1 } })

    // A recovery: what was asked stays held until the missed messages are in.
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 7, [E2]: 1 } }, recovered: true })
    assert.equal(ch.recovered, true)
    assert.deepEqual(ch.positions, { [E1]: 5, [E2]: 1 })
    for (const [e, o, n] of [[E1, 6, 6], [E1, 7, 7]]) ch._trigger('broadcast', bc(e, o, n), null)
    assert.deepEqual(got, [5, 'b1', 6, 7])
  })

  it('a failed recovery takes the reply\'s vector and tells the subscribe callback', () => {
    const c = new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })
    const ch = new MeshcastChannel('room1', {}, c)
    const seen = []
    ch.callback = (s, err) => seen.push([s, err?.message])
    ch.positions = { [E1]: 3 }
    ch._joinPayload()
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E2]: 9 } }, recovered: false })
    assert.deepEqual(ch.positions, { [E2]: 9 })
    assert.equal(seen[0][0], 'SUBSCRIBED')
    assert.match(seen[0][1], /^recovery failed/)
  })

  it('keeps the change position from the reply and each change, sends it on the next join, holds the asked one during a recovery', () => {
    const c = new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })
    const ch = new MeshcastChannel('room1', {}, c)
    const got = []
    ch.on('postgres_changes', { event: '*', schema: 'public', table: 't' }, (p) => got.push([p.new.id, p.pos]))
    const change = (id, pos) => ({ ids: [3], data: { type: 'INSERT', schema: 'public', table: 't', columns: [], record: { id } }, pos })
    assert.equal(ch._joinPayload().config.recover, undefined, 'the first join asks nothing')
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [{ event: '*', schema: 'public', table: 't', id: 3 }], positions: { broadcast: {}, postgres_changes: '0/A0:0' } })
    assert.equal(ch.changesPosition, '0/A0:0')
    for (const [id, pos] of [[1, '0/B0:1'], [2, '0/B0:2'], ['old', '0/B0:1'], [3, '1/0:0']]) ch._trigger('postgres_changes', change(id, pos), null)
    assert.deepEqual(got, [[1, '0/B0:1'], [2, '0/B0:2'], [3, '1/0:0']], 'one before the held position is dropped')
    assert.deepEqual(ch._joinPayload().config.recover, { broadcast: {}, postgres_changes: '1/0:0' })

    // Changes recovered, broadcasts not: each extension takes its own answer.
    ch.positions = { [E1]: 4 }
    ch._joinPayload()
    ch.state = 'joining'
    ch._onJoinOk({
      postgres_changes: [{ event: '*', schema: 'public', table: 't', id: 3 }],
      positions: { broadcast: { [E1]: 9 }, postgres_changes: '1/FF:0' },
      recovered: false,
      recovery: { broadcast: false, postgres_changes: true },
    })
    assert.equal(ch.recovered, false)
    assert.equal(ch.changesPosition, '1/0:0', 'held until the recovered changes are in')
    assert.deepEqual(ch.positions, { [E1]: 9 }, 'the failed broadcast recovery goes on from the reply')
    ch._trigger('postgres_changes', change(4, '1/F0:0'), null)
    assert.equal(ch.changesPosition, '1/F0:0')
  })

  it('compares change positions as Postgres orders them', () => {
    assert.equal(comparePos('0/16B3748:3', '0/16B3748:10'), -1)
    assert.equal(comparePos('0/FFFFFFFF:9', '1/0:0'), -1)
    assert.equal(comparePos('1/A:2', '1/A:2'), 0)
    assert.equal(comparePos('0/B0:0', '0/A0:5'), 1)
    assert.equal(comparePos('0/b0:0', '0/A0:5'), null, 'lower-case hex is not how Postgres prints it')
    assert.equal(comparePos('x', '0/A0:5'), null)
  })

  it('tracks the database stream ("db") by change position, sends it on rejoin, drops repeats', () => {
    const c = new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })
    const ch = new MeshcastChannel('room1', {}, c)
    const got = []
    ch.on('broadcast', { event: '*' }, (m) => got.push(m.payload.n))
    const db = (pos, n) => ({ type: 'broadcast', event: 'e', payload: { n }, meta: { pos: `db:${pos}`, id: `id-${n}` } })
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 2, db: '0/FF:0' } } })
    assert.deepEqual(ch.positions, { [E1]: 2, db: '0/FF:0' })
    // A row at the seam is before it; positions compare as numbers (1/0 > 0/FFFFFFFF), then by sequence.
    for (const [pos, n] of [['0/FF:0', 'seam'], ['0/100:0', 1], ['0/100:1', 2], ['0/FFFFFFFF:9', 3], ['1/0:0', 4], ['0/FFFFFFFF:10', 'old']]) {
      ch._trigger('broadcast', db(pos, n), null)
    }
    assert.deepEqual(got, [1, 2, 3, 4])
    assert.deepEqual(ch._joinPayload().config.recover, { broadcast: { [E1]: 2, db: '1/0:0' } })
    // A recovery holds the asked position until the rows come; a failure takes the reply's.
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 2, db: '1/20:0' } }, recovered: true })
    assert.equal(ch.positions.db, '1/0:0')
    ch._trigger('broadcast', db('1/10:0', 5), null)
    assert.deepEqual(got, [1, 2, 3, 4, 5])
    ch._joinPayload()
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 2, db: '1/30:0' } }, recovered: false })
    assert.equal(ch.positions.db, '1/30:0')
    // Broadcast recovered though another extension did not: its rows follow.
    ch._joinPayload()
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 2, db: '1/40:0' } }, recovered: false, recovery: { broadcast: true, postgres_changes: false } })
    assert.equal(ch.positions.db, '1/30:0')
  })

  it('a hole in a held stream rejoins instead of delivering; own self:false sends are no hole', () => {
    const c = new MeshcastClient('http://127.0.0.1:1/realtime/v1', { apikey: 'k', WebSocket })
    const ch = new MeshcastChannel('room1', {}, c)
    const got = []
    ch.on('broadcast', { event: '*' }, (m) => got.push(m.payload.n))
    ch.state = 'joining'
    ch._onJoinOk({ postgres_changes: [], positions: { broadcast: { [E1]: 1 } } })
    ch._unseenOwn = 1 // one send of its own, not echoed (self: false)
    ch._trigger('broadcast', bc(E1, 3, 3), null)
    assert.deepEqual(got, [3], 'offset 2 was its own')
    let rejoined = 0
    ch._rejoin = () => rejoined++
    ch._trigger('broadcast', bc(E1, 5, 5), null)
    assert.deepEqual(got, [3], 'offset 4 is missing: not delivered')
    assert.equal(rejoined, 1)
  })
})

describe('backoff', () => {
  it('grows exponentially up to the cap; jitter takes away at most its share', () => {
    const lo = exponentialBackoff({ initialMs: 100, maxMs: 1000, jitter: 0.5, random: () => 0 })
    const hi = exponentialBackoff({ initialMs: 100, maxMs: 1000, jitter: 0.5, random: () => 0.999999 })
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(lo), [100, 200, 400, 800, 1000, 1000])
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(hi), [50, 100, 200, 400, 500, 500])
    assert.deepEqual(lo.bounds(3), [200, 400])
  })

  it('default schedule: 0.5–1 s, 1–2 s, 2–4 s, 4–8 s, then 5–10 s, and really random', () => {
    const b = exponentialBackoff()
    for (let tries = 1; tries <= 8; tries++) {
      const nominal = nominalDelay(tries, { initialMs: 1000, maxMs: 10000, factor: 2 })
      const samples = Array.from({ length: 200 }, () => b(tries))
      assert.ok(samples.every((ms) => ms >= nominal / 2 && ms <= nominal), `try ${tries}: ${Math.min(...samples)}..${Math.max(...samples)} outside ${nominal / 2}..${nominal}`)
      assert.ok(new Set(samples).size > 50, `try ${tries}: delays are jittered`)
    }
  })

  it('refuses nonsense parameters', () => {
    assert.throws(() => exponentialBackoff({ initialMs: 0 }), RangeError)
    assert.throws(() => exponentialBackoff({ jitter: 2 }), RangeError)
  })

  it('RetryTimer counts tries, reports each delay, and reset() starts over', async () => {
    const seen = []
    let fired = 0
    const t = new RetryTimer(() => fired++, (n) => n, (ms, tries) => seen.push([ms, tries]))
    t.schedule()
    await new Promise((r) => setTimeout(r, 20))
    t.schedule()
    await new Promise((r) => setTimeout(r, 20))
    assert.equal(fired, 2)
    assert.deepEqual(seen, [[1, 1], [2, 2]])
    t.schedule()
    t.reset()
    assert.equal(t.pending, false)
    t.schedule()
    t.cancel()
    assert.deepEqual(seen.at(-1), [1, 1])
  })
})

describe('client options', () => {
  it('takes realtime-js’s endpoints: http(s) or ws(s), with or without /websocket', () => {
    assert.deepEqual(endpointURLs('http://h:4000/realtime/v1'), { socketURL: 'ws://h:4000/realtime/v1/websocket', httpBase: 'http://h:4000/realtime/v1' })
    assert.deepEqual(endpointURLs('wss://h/realtime/v1/'), { socketURL: 'wss://h/realtime/v1/websocket', httpBase: 'https://h/realtime/v1' })
    assert.deepEqual(endpointURLs('https://h/realtime/v1/websocket'), { socketURL: 'wss://h/realtime/v1/websocket', httpBase: 'https://h/realtime/v1' })
    assert.throws(() => endpointURLs('ftp://h'), /http\(s\):\/\/ or ws\(s\):\/\//)
  })

  it('needs an apikey, and a transport that exists in the runtime', () => {
    assert.throws(() => new MeshcastClient('http://h/realtime/v1', { WebSocket }), /API key is required/)
    assert.throws(() => new MeshcastClient('http://h/realtime/v1', { apikey: 'k', transports: ['webtransport'] }), /none of the transports \["webtransport"\] exists/)
    assert.throws(() => new MeshcastClient('http://h/realtime/v1', { apikey: 'k', transports: ['longpoll'] }), /transports must be/)
    const c = new MeshcastClient('http://h/realtime/v1', { apikey: 'k', params: { log_level: 'info' }, WebSocket })
    assert.equal(c.endpointURL(), 'ws://h/realtime/v1/websocket?log_level=info&apikey=k&vsn=2.0.0')
    assert.equal(c.transport, null, 'no transport before connecting')
  })
})

describe('package', () => {
  it('imports as meshcast-client, and index.d.ts declares exactly the runtime exports', async () => {
    const { readFile } = await import('node:fs/promises')
    const mod = await import('meshcast-client')
    assert.equal(mod.MeshcastClient, MeshcastClient)
    assert.equal(mod.default, MeshcastClient)
    const dts = await readFile(new URL('../src/index.d.ts', import.meta.url), 'utf8')
    const declared = [...dts.matchAll(/^export (?:class|const|function) (\w+)/gm)].map((m) => m[1])
    assert.deepEqual([...new Set(declared)].sort(), Object.keys(mod).filter((k) => k !== 'default').sort())
  })

  it('the committed bundle edge/demo/meshcast.js is what `npm run build` makes from src/', async () => {
    const { readFile } = await import('node:fs/promises')
    const { build } = await import('esbuild')
    const { bundleOptions, outfile } = await import('../scripts/bundle-clientjs.mjs')
    const fresh = await build({ ...(await bundleOptions()), write: false })
    const committed = await readFile(outfile, 'utf8')
    assert.ok(committed.startsWith('// Generated by clientjs/scripts/bundle-clientjs.mjs'), 'generated-by banner')
    assert.ok(committed === fresh.outputFiles[0].text, 'edge/demo/meshcast.js is stale: run `npm run build` in clientjs/ and commit it')
  })
})
