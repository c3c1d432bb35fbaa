// Broadcasts from the database (realtime.send, realtime.send_binary,
// realtime.broadcast_changes) and replay, as Supabase's: the unmodified
// @supabase/realtime-js (2.119.1, `ws` as transport) against one meshcast node
// with --database-url and --jwt-secret. The database is the oracle: what a
// subscriber receives is compared with the row of realtime.messages and with
// to_jsonb of the trigger's NEW and OLD.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Clients, nowSeconds, signJWT, startServer, subscribed, waitFor } from './helpers.mjs'
import { startPostgres } from './postgres.mjs'
import { MeshcastClients, RecordingWebSocket, collect, joined, record } from './clientjs-helpers.mjs'
import { startProxy } from './proxy.mjs'

const JWT_SECRET = 'interop-dbcast-secret-with-at-least-32-characters'

const SCHEMA = `
CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TABLE members (user_id uuid, room text, PRIMARY KEY (user_id, room));
GRANT SELECT ON members TO authenticated;
CREATE TABLE todos (id bigserial PRIMARY KEY, owner uuid NOT NULL, title text, done boolean DEFAULT false,
  tags text[], due timestamptz, meta jsonb);
`

// Supabase's docs in small: members read a room's broadcasts; a todo's
// changes go to the private topic of its owner.
const APP = `
CREATE POLICY "members read" ON realtime.messages FOR SELECT TO authenticated USING (
  EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic())
  AND realtime.messages.extension = 'broadcast');
CREATE FUNCTION todos_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM realtime.broadcast_changes('todos:' || coalesce(NEW.owner, OLD.owner)::text, TG_OP, TG_OP,
    TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
  RETURN NULL;
END $$;
CREATE TRIGGER todos_changes AFTER INSERT OR UPDATE OR DELETE ON todos FOR EACH ROW EXECUTE FUNCTION todos_changes();
`

let pg
let server
let clients
let seq = 0

const user = () => `00000000-0000-0000-0000-${String(process.pid % 1000000).padStart(6, '0')}${String(++seq).padStart(6, '0')}`
const token = (sub) => signJWT({ role: 'authenticated', sub, exp: nowSeconds() + 3600, iat: nowSeconds() }, JWT_SECRET)
const room = () => `room-${process.pid}-${++seq}`
const quote = (s) => `'${s.replaceAll("'", "''")}'`

/** A channel of a new client, recording the broadcasts it receives. */
function listen(name, { sub, isPrivate = false, vsn, replay } = {}) {
  const client = clients.make({ apikey: token(sub ?? user()), ...(vsn ? { vsn } : {}) })
  const broadcast = { self: false, ...(replay ? { replay } : {}) }
  const channel = client.channel(name, { config: { private: isPrivate, broadcast } })
  const got = []
  channel.on('broadcast', { event: '*' }, (m) => got.push(m))
  return { channel, got }
}

async function member(name) {
  const sub = user()
  await pg.sql(`INSERT INTO members VALUES ('${sub}', ${quote(name)})`)
  return sub
}

/** The row of realtime.messages with id, as JSON. */
const row = (id) => pg.json(`SELECT to_jsonb(m) FROM realtime.messages m WHERE id = '${id}'`)

before(async () => {
  pg = await startPostgres()
  await pg.sql(SCHEMA)
  server = await startServer({ jwtSecret: JWT_SECRET, args: ['--database-url', pg.url, '--webtransport-listen', 'off'] })
  await pg.sql(APP)
  clients = new Clients(server)
  // The node streams once its slot exists: until a probe arrives, a send may
  // commit before it.
  const probe = listen(room())
  await subscribed(probe.channel)
  await waitFor(
    async () => {
      await pg.sql(`SELECT realtime.send('{}', 'probe', ${quote(probe.channel.subTopic)}, false)`)
      return probe.got.length > 0
    },
    20000,
    'a first broadcast from the database',
    { intervalMs: 300 }
  )
})
afterEach(async () => {
  await clients?.closeAll()
})
after(async () => {
  await clients?.closeAll()
  await server?.stop()
  await pg?.stop()
})

describe('broadcasts from the database', () => {
  it('delivers realtime.send to a public channel as the row has it, with meta.id', async () => {
    const name = room()
    const a = listen(name)
    const b = listen(name)
    await Promise.all([subscribed(a.channel), subscribed(b.channel)])
    await pg.sql(`SELECT realtime.send('{"n": 1, "s": "é\\u00e9\\"x", "deep": {"list": [1, 2.5, null, true]}}'::jsonb, 'ev', ${quote(name)}, false)`)
    await waitFor(() => a.got.length === 1 && b.got.length === 1, 5000, () => `a ${a.got.length}, b ${b.got.length}`)
    const m = a.got[0]
    const r = await row(m.meta.id)
    assert.equal(m.type, 'broadcast')
    assert.equal(m.event, 'ev')
    assert.deepEqual(m.payload, r.payload)
    assert.equal(m.payload.id, m.meta.id) // realtime.send adds the row's id
    assert.deepEqual(m.meta, { pos: m.meta.pos, id: r.id })
    assert.deepEqual(b.got[0], m)
    // meta.pos is the row's place in the change stream: "db:" and its commit's LSN, as Postgres prints it.
    const lsn = (s) => s.split('/').reduce((hi, lo) => (BigInt('0x' + hi) << 32n) | BigInt('0x' + lo))
    const before = await pg.sql('SELECT pg_current_wal_lsn()')
    await pg.sql(`SELECT realtime.send('{}', 'ev2', ${quote(name)}, false)`)
    const after = await pg.sql('SELECT pg_current_wal_lsn()')
    await waitFor(() => a.got.length === 2, 5000, 'the second send')
    const pos = /^db:([0-9A-F]+\/[0-9A-F]+):\d+$/.exec(a.got[1].meta.pos)
    assert.ok(pos, `meta.pos ${a.got[1].meta.pos}`)
    assert.ok(lsn(before) < lsn(pos[1]) && lsn(pos[1]) <= lsn(after), `${pos[1]} within ${before}..${after}`)
  })

  it('delivers realtime.send_binary as bytes to v2 clients and never to v1', async () => {
    const name = room()
    const v2 = listen(name)
    const v1 = listen(name, { vsn: '1.0.0' })
    await Promise.all([subscribed(v2.channel), subscribed(v1.channel)])
    await pg.sql(`SELECT realtime.send_binary('\\x00017f80ff'::bytea, 'bin', ${quote(name)}, false)`)
    await pg.sql(`SELECT realtime.send('{"after": true}', 'marker', ${quote(name)}, false)`)
    await waitFor(() => v2.got.length === 2 && v1.got.length === 1, 5000, () => `v2 ${v2.got.length}, v1 ${v1.got.length}`)
    const [bin, marker] = v2.got
    assert.equal(bin.event, 'bin')
    assert.deepEqual([...new Uint8Array(bin.payload)], [0x00, 0x01, 0x7f, 0x80, 0xff])
    const r = await row(bin.meta.id)
    assert.equal(r.binary_payload, '\\x00017f80ff')
    assert.match(bin.meta.pos, /^db:[0-9A-F]+\/[0-9A-F]+:\d+$/, 'kind-4 meta carries the position too')
    assert.equal(marker.event, 'marker')
    assert.deepEqual(v1.got.map((m) => m.event), ['marker'])
  })

  it('delivers private sends to members only, never to the public channel of the same name', async () => {
    const name = room()
    const sub = await member(name)
    const mine = listen(name, { sub, isPrivate: true })
    const outsider = listen(name) // public namespace
    await Promise.all([subscribed(mine.channel), subscribed(outsider.channel)])
    await pg.sql(`SELECT realtime.send('{"secret": 1}', 'p', ${quote(name)})`) // private by default
    await pg.sql(`SELECT realtime.send('{"open": 1}', 'o', ${quote(name)}, false)`)
    await waitFor(() => mine.got.length === 1 && outsider.got.length === 1, 5000, () => `mine ${mine.got.length}, outsider ${outsider.got.length}`)
    assert.equal(mine.got[0].event, 'p')
    assert.deepEqual(mine.got[0].payload, (await row(mine.got[0].meta.id)).payload)
    assert.equal(outsider.got[0].event, 'o')
  })

  it('delivers realtime.broadcast_changes from a row trigger: record and old_record are to_jsonb of NEW and OLD', async () => {
    const owner = user()
    await pg.sql(`INSERT INTO members VALUES ('${owner}', 'todos:${owner}')`)
    const l = listen(`todos:${owner}`, { sub: owner, isPrivate: true })
    await subscribed(l.channel)
    const id = await pg.sql(
      `INSERT INTO todos (owner, title, tags, due, meta) VALUES ('${owner}', 'buy ''milk''', '{a,"b c"}', '2026-01-02 03:04:05.678+00', '{"x": [1]}') RETURNING id`
    )
    const inserted = await pg.json(`SELECT to_jsonb(t) FROM todos t WHERE id = ${id}`)
    await pg.sql(`UPDATE todos SET done = true, title = NULL WHERE id = ${id}`)
    const updated = await pg.json(`SELECT to_jsonb(t) FROM todos t WHERE id = ${id}`)
    await pg.sql(`DELETE FROM todos WHERE id = ${id}`)
    await waitFor(() => l.got.length === 3, 5000, () => `got ${l.got.length}`)
    assert.deepEqual(l.got.map((m) => m.event), ['INSERT', 'UPDATE', 'DELETE'])
    const [ins, upd, del] = l.got.map((m) => m.payload)
    assert.deepEqual(ins.record, inserted)
    assert.equal(ins.old_record, null)
    assert.deepEqual([ins.operation, ins.table, ins.schema], ['INSERT', 'todos', 'public'])
    assert.deepEqual(upd.record, updated)
    assert.deepEqual(upd.old_record, inserted)
    assert.deepEqual(del.old_record, updated)
    assert.equal(del.record, null)
    for (const m of l.got) assert.deepEqual(m.payload, (await row(m.meta.id)).payload)
  })

  it('refuses a non-member the private topic of a trigger, with Supabase\'s text', async () => {
    const owner = user()
    const stranger = listen(`todos:${owner}`, { isPrivate: true })
    const rec = []
    stranger.channel.subscribe((s, err) => rec.push(err?.message ?? s))
    await waitFor(() => rec.length > 0, 5000, 'a join reply')
    assert.equal(rec[0], `Unauthorized: You do not have permissions to read from this Channel topic: todos:${owner}`)
  })
})

describe('replay', () => {
  /** Sends n private messages to name, one transaction each, and waits until a member got them live. */
  async function sendAll(name, watcher, from, n) {
    for (let i = from; i < from + n; i++) await pg.sql(`SELECT realtime.send('{"i": ${i}}', 'e${i}', ${quote(name)})`)
    await waitFor(() => watcher.got.some((m) => m.payload.i === from + n - 1), 5000, 'the last message live')
  }

  it('replays the newest messages since a time, oldest first, after the join, with meta.replayed; live ones once', async () => {
    const name = room()
    const sub = await member(name)
    const watcher = listen(name, { sub, isPrivate: true })
    await subscribed(watcher.channel)
    const t0 = Date.now() - 1000
    await sendAll(name, watcher, 0, 30)
    await new Promise((r) => setTimeout(r, 20))
    const t1 = Date.now()
    await sendAll(name, watcher, 30, 3)

    const limited = listen(name, { sub, isPrivate: true, replay: { since: t0, limit: 10 } })
    await subscribed(limited.channel)
    await waitFor(() => limited.got.length === 10, 5000, () => `replayed ${limited.got.length}`)
    assert.deepEqual(limited.got.map((m) => m.payload.i), [23, 24, 25, 26, 27, 28, 29, 30, 31, 32])
    for (const m of limited.got) {
      assert.deepEqual(m.meta, { replayed: true, id: m.payload.id })
      assert.equal(m.event, `e${m.payload.i}`)
    }

    const since = listen(name, { sub, isPrivate: true, replay: { since: t1 } })
    const many = listen(name, { sub, isPrivate: true, replay: { since: t0, limit: 100 } })
    await Promise.all([subscribed(since.channel), subscribed(many.channel)])
    await waitFor(() => since.got.length === 3 && many.got.length === 25, 5000, () => `since ${since.got.length}, many ${many.got.length}`)
    assert.deepEqual(since.got.map((m) => m.payload.i), [30, 31, 32])
    assert.deepEqual(many.got.map((m) => m.payload.i), [...Array(25).keys()].map((k) => k + 8))

    // Live after the replay: once, without replayed.
    await sendAll(name, watcher, 33, 1)
    await waitFor(() => limited.got.length === 11, 5000, () => `limited ${limited.got.length}`)
    assert.deepEqual(limited.got[10].meta, { pos: limited.got[10].meta.pos, id: limited.got[10].payload.id })
    await new Promise((r) => setTimeout(r, 200))
    assert.equal(limited.got.length, 11)
  })

  it('clientjs takes the same config, and a rejoin does not deliver a replayed message twice', async () => {
    const name = room()
    const sub = await member(name)
    const watcher = listen(name, { sub, isPrivate: true })
    await subscribed(watcher.channel)
    const t0 = Date.now() - 1000
    await sendAll(name, watcher, 0, 3)
    const mc = new MeshcastClients(server)
    try {
      const c = mc.make({ apikey: token(sub), WebSocket: RecordingWebSocket })
      assert.throws(() => c.channel(name, { config: { broadcast: { replay: { since: t0 } } } }), /replay on public channel/)
      const ch = c.channel(name, { config: { private: true, broadcast: { replay: { since: t0, limit: 2 } } } })
      const got = []
      ch.on('broadcast', { event: '*' }, (m) => got.push(m))
      await joined(ch)
      await waitFor(() => got.length === 2, 5000, () => `clientjs got ${got.length}`)
      assert.deepEqual(got.map((m) => [m.payload.i, m.meta.replayed]), [[1, true], [2, true]])
      // The socket drops; the client rejoins, and the server replays the same two.
      const joins = () => RecordingWebSocket.all.flatMap((w) => w.sent).filter((f) => Array.isArray(f) && f[3] === 'phx_join' && f[2] === `realtime:${name}`).length
      RecordingWebSocket.all.at(-1).terminate()
      await waitFor(() => joins() === 2 && ch.state === 'joined', 10000, 'the rejoin')
      await sendAll(name, watcher, 3, 1)
      await waitFor(() => got.length === 3, 5000, () => `clientjs got ${got.length}`)
      assert.deepEqual(got.map((m) => m.payload.i), [1, 2, 3])
    } finally {
      await mc.closeAll()
    }
  })

  it('refuses replay on public channels and bad params with Supabase\'s texts, and replays nothing a policy hides', async () => {
    const name = room()
    const errs = async (config) => {
      const ch = clients.make({ apikey: token(user()) }).channel(name, { config })
      const rec = []
      ch.subscribe((s, err) => rec.push(err?.message ?? s))
      await waitFor(() => rec.length > 0, 5000, 'a join reply')
      return rec[0]
    }
    // realtime-js refuses replay on a public channel itself; a raw join gets the server's text.
    assert.equal(await errs({ private: true, broadcast: { replay: { since: 'yesterday' } } }), 'UnableToReplayMessages: Replay params are not valid')
    assert.equal(await errs({ private: true, broadcast: { replay: { since: 1, limit: 1.5 } } }), 'UnableToReplayMessages: Replay params are not valid')
    // A non-member may not read the room: the join fails before any replay.
    assert.match(await errs({ private: true, broadcast: { replay: { since: 1 } } }), /^Unauthorized: /)
  })
})

describe('recovery of the database stream ("db")', () => {
  it('a private clientjs subscriber cut off three times while a trigger broadcasts rows gets every row once, in order', async () => {
    const name = room()
    const sub = await member(name)
    await pg.sql(`CREATE TABLE IF NOT EXISTS dbrec_items (n int PRIMARY KEY, room text NOT NULL);
      CREATE OR REPLACE FUNCTION dbrec_items_send() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM realtime.send(jsonb_build_object('n', NEW.n), 'item', NEW.room, true); RETURN NULL; END $$;
      CREATE OR REPLACE TRIGGER dbrec_items_send AFTER INSERT ON dbrec_items FOR EACH ROW EXECUTE FUNCTION dbrec_items_send();`)
    const proxy = await startProxy(server.port)
    const mc = new MeshcastClients(server)
    try {
      const c = mc.make({ apikey: token(sub), url: `${proxy.httpURL}/realtime/v1`, transports: ['websocket'], reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 })
      const ch = c.channel(name, { config: { private: true } })
      const got = []
      ch.on('broadcast', { event: 'item' }, (m) => got.push(m))
      const statuses = []
      ch.subscribe((s) => statuses.push(s))
      await waitFor(() => statuses.includes('SUBSCRIBED'), 5000, 'joined')
      assert.match(ch.positions.db, /^[0-9A-F]+\/[0-9A-F]+:\d+$/, 'the reply gives the db seam')

      let n = 0
      let writing = true
      const writer = (async () => {
        while (writing) {
          await pg.sql(`INSERT INTO dbrec_items VALUES (${n}, ${quote(name)})`)
          n++
          await new Promise((r) => setTimeout(r, 20))
        }
      })()
      const recovered = []
      for (const outage of [1000, 2500, 1500]) {
        const joins = statuses.filter((s) => s === 'SUBSCRIBED').length
        await new Promise((r) => setTimeout(r, 400))
        proxy.cut(outage)
        await waitFor(() => statuses.filter((s) => s === 'SUBSCRIBED').length > joins, outage + 10000, () => `rejoin after ${outage} ms: ${statuses}`)
        recovered.push(ch.recovered)
      }
      await new Promise((r) => setTimeout(r, 300))
      writing = false
      await writer
      // The oracle: the room's rows of realtime.messages, in commit order.
      const rows = await pg.json(`SELECT coalesce(json_agg(id::text ORDER BY (payload->>'n')::int), '[]') FROM realtime.messages WHERE topic = ${quote(name)} AND event = 'item'`)
      assert.equal(rows.length, n)
      await waitFor(() => got.length >= n, 15000, () => `${n} rows, have ${got.length}`)
      await new Promise((r) => setTimeout(r, 200)) // a duplicate would be right behind
      assert.deepEqual(recovered, [true, true, true])
      assert.deepEqual(got.map((m) => m.payload.n), [...Array(n).keys()], 'every row once, in order')
      assert.deepEqual(got.map((m) => m.meta.id), rows)
    } finally {
      await mc.closeAll()
      await proxy.close()
    }
  })

  it("a position older than the change stream's history is an explicit failure, then live", async () => {
    const name = room()
    const sub = await member(name)
    const mc = new MeshcastClients(server)
    try {
      const ch = mc.make({ apikey: token(sub) }).channel(name, { config: { private: true, recover: { broadcast: { db: '0/1:0' } } } })
      const system = []
      ch.on('system', {}, (p) => system.push(p))
      const got = collect(ch, '*')
      const rec = record(ch)
      await waitFor(() => rec.has('SUBSCRIBED'), 5000, () => `joined: ${rec}`)
      assert.equal(ch.recovered, false)
      assert.match(rec.errors[0]?.message ?? '', /recovery failed/)
      const failure = await waitFor(() => system.find((p) => p.extension === 'broadcast'), 5000, () => `the failure among ${JSON.stringify(system)}`)
      assert.equal(failure.status, 'error')
      assert.match(failure.message, /^recovery failed: /)
      await pg.sql(`SELECT realtime.send('{"live": true}', 'after', ${quote(name)}, true)`)
      await waitFor(() => got.length === 1, 5000, 'live after the failure')
      assert.equal(got[0].payload.live, true)
    } finally {
      await mc.closeAll()
    }
  })
})
