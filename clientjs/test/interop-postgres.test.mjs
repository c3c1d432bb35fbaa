// postgres_changes interop: the unmodified @supabase/realtime-js (2.119.1, `ws` as
// transport) against a 3-process meshcast cluster streaming a throwaway Postgres
// (wal_level=logical), with the client on a node that is NOT the database's owner,
// so every change crosses the mesh. --jwt-secret is on: clients are `anon` or
// `authenticated` users, and the database (to_jsonb, its policies) is the oracle.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Clients, nowSeconds, scrapeMetrics, signJWT, startCluster, subscribed, waitFor } from './helpers.mjs'
import { startPostgres } from './postgres.mjs'

const JWT_SECRET = 'interop-postgres-secret-with-at-least-32-characters'
const ALICE = 'a0000000-0000-0000-0000-000000000001'
const BOB = 'b0000000-0000-0000-0000-000000000002'

// Supabase's setup in small: the anon and authenticated roles, auth.uid() as
// Supabase defines it, a public table, and a table whose rows only their owner
// may read.
const SCHEMA = `
CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE todos (id int8 PRIMARY KEY, title text, done bool, n numeric, tags text[], meta jsonb,
  at timestamptz, day date, m mood, prio int4);
GRANT SELECT ON todos TO anon, authenticated;
CREATE TABLE notes (id int8 PRIMARY KEY, user_id uuid NOT NULL, body text);
ALTER TABLE notes REPLICA IDENTITY FULL;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner ON notes FOR SELECT TO authenticated USING (user_id = auth.uid());
GRANT SELECT ON notes TO authenticated;
CREATE PUBLICATION supabase_realtime FOR ALL TABLES;
`

let pg
let cluster
let owner // the node running the WAL reader
let node // the node the clients use: not the owner
let clients

const token = (role, sub) => signJWT({ role, ...(sub ? { sub } : {}), exp: nowSeconds() + 3600 }, JWT_SECRET)
const client = (role = 'anon', sub) => clients.make({ apikey: token(role, sub) })
/** The row as Postgres's to_jsonb gives it, parsed. */
const row = (table, id) => pg.json(`SELECT to_jsonb(r) FROM ${table} r WHERE id = ${id}`)

let seq = 0
const uniqueName = (what) => `${what}-${process.pid}-${++seq}`

before(async () => {
  pg = await startPostgres()
  await pg.sql(SCHEMA)
  cluster = await startCluster({ jwtSecret: JWT_SECRET, args: ['--database-url', pg.url] })
  let last = ''
  await waitFor(
    async () => {
      const owners = []
      for (const n of cluster.nodes) if ((await scrapeMetrics(n)).get('meshcast_wal_owner') === 1) owners.push(n)
      last = owners.map((n) => n.name).join(',')
      if (owners.length !== 1) return false
      owner = owners[0]
      return true
    },
    15000,
    () => `exactly one node with meshcast_wal_owner 1 (have [${last}])`
  )
  node = cluster.nodes.find((n) => n !== owner)
  clients = new Clients(node)
})
afterEach(async () => {
  await clients?.closeAll()
})
after(async () => {
  await clients?.closeAll()
  await cluster?.stop()
  await pg?.stop()
})

/** A channel with postgres_changes listeners, each recording its payloads. */
function listen(c, name, filters) {
  const channel = c.channel(name)
  const got = filters.map(() => [])
  filters.forEach((f, i) => channel.on('postgres_changes', f, (p) => got[i].push(p)))
  const system = []
  channel.on('system', {}, (p) => system.push(p))
  return { channel, got, system }
}

/** What realtime-js hands a postgres_changes listener, checked for Supabase's shape. */
function assertShape(p, eventType, table) {
  assert.deepEqual(Object.keys(p).sort(), ['commit_timestamp', 'errors', 'eventType', 'new', 'old', 'schema', 'table'])
  assert.equal(p.eventType, eventType)
  assert.equal(p.schema, 'public')
  assert.equal(p.table, table)
  assert.equal(p.errors, null)
  assert.match(p.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  assert.ok(Math.abs(Date.parse(p.commit_timestamp) - Date.now()) < 60000, `commit_timestamp ${p.commit_timestamp}`)
}

describe('postgres_changes on a node that is not the owner', () => {
  it('delivers INSERT, UPDATE and DELETE as realtime-js expects, values as to_jsonb', async () => {
    const { channel, got } = listen(client(), uniqueName('shapes'), [{ event: '*', schema: 'public', table: 'todos', filter: 'id=eq.1' }])
    await subscribed(channel)
    await pg.sql(`INSERT INTO todos VALUES (1, 'a "quoted" é 😀', false, 12.50, '{x,"y z",NULL}', '{"k": [1, {"n": null}]}',
      '2024-05-01 12:00:00.123456+02', '2024-02-29', 'happy', 7)`)
    await waitFor(() => got[0].length === 1, 5000, () => `the insert; got ${JSON.stringify(got[0])}`)
    assertShape(got[0][0], 'INSERT', 'todos')
    assert.deepEqual(got[0][0].new, await row('todos', 1))
    assert.deepEqual(got[0][0].old, {})

    await pg.sql(`UPDATE todos SET done = true, n = 'NaN', tags = '{}', meta = 'null', at = 'infinity' WHERE id = 1`)
    await waitFor(() => got[0].length === 2, 5000, () => `the update; got ${JSON.stringify(got[0])}`)
    assertShape(got[0][1], 'UPDATE', 'todos')
    assert.deepEqual(got[0][1].new, await row('todos', 1))
    assert.deepEqual(got[0][1].old, { id: 1 }) // the default replica identity: the key

    await pg.sql('DELETE FROM todos WHERE id = 1')
    await waitFor(() => got[0].length === 3, 5000, () => `the delete; got ${JSON.stringify(got[0])}`)
    assertShape(got[0][2], 'DELETE', 'todos')
    assert.deepEqual(got[0][2].new, {})
    assert.deepEqual(got[0][2].old, { id: 1 })
  })

  it('fires each listener of a channel by the ids of its bindings, with eq, in and gt filters', async () => {
    const { channel, got } = listen(client(), uniqueName('ids'), [
      { event: 'INSERT', schema: 'public', table: 'todos', filter: 'prio=gt.5' },
      { event: 'INSERT', schema: 'public', table: 'todos', filter: 'title=in.(x,"y, z")' },
      { event: '*', schema: 'public', table: 'todos' },
      { event: 'UPDATE', schema: 'public', table: 'todos', filter: 'id=eq.102' },
    ])
    await subscribed(channel)
    await pg.sql(`INSERT INTO todos (id, title, prio) VALUES (101, 'x', 9);
      INSERT INTO todos (id, title, prio) VALUES (102, 'q', 1);
      INSERT INTO todos (id, title, prio) VALUES (103, 'y, z', 6);
      UPDATE todos SET prio = 2 WHERE id = 102;
      UPDATE todos SET prio = 3 WHERE id = 101;
      DELETE FROM todos WHERE id = 103`)
    // The * listener sees all six; realtime-js dispatches a message to every
    // listener at once, so once it has the last one the others are final.
    await waitFor(() => got[2].length === 6, 5000, () => `six changes for the * listener; got ${JSON.stringify(got[2])}`)
    const summary = (ps) => ps.map((p) => `${p.eventType} ${p.new.id ?? p.old.id}`)
    assert.deepEqual(summary(got[0]), ['INSERT 101', 'INSERT 103'])
    assert.deepEqual(summary(got[1]), ['INSERT 101', 'INSERT 103'])
    assert.deepEqual(summary(got[2]), ['INSERT 101', 'INSERT 102', 'INSERT 103', 'UPDATE 102', 'UPDATE 101', 'DELETE 103'])
    assert.deepEqual(summary(got[3]), ['UPDATE 102'])
    assert.deepEqual(got[3][0].new, { id: 102, title: 'q', done: null, n: null, tags: null, meta: null, at: null, day: null, m: null, prio: 2 })
  })

  it('delivers an insert issued the moment SUBSCRIBED fires', async () => {
    const c = client()
    for (let k = 0; k < 5; k++) {
      const id = 200 + k
      // A new filter each time: a new subscription that must reach the owner
      // before the client is told SUBSCRIBED.
      const { channel, got } = listen(c, uniqueName('race'), [{ event: 'INSERT', schema: 'public', table: 'todos', filter: `id=eq.${id}` }])
      const fired = {}
      channel.subscribe((status) => {
        if (status === 'SUBSCRIBED') fired.insert = pg.sql(`INSERT INTO todos (id, title) VALUES (${id}, 'right away')`)
      })
      await waitFor(() => 'insert' in fired, 10000, `SUBSCRIBED (round ${k})`)
      await fired.insert
      await waitFor(() => got[0].length === 1, 5000, `the insert committed at SUBSCRIBED (round ${k})`)
      assert.equal(got[0][0].new.id, id)
    }
  })

  it('stops a removed channel\'s changes', async () => {
    const c = client()
    const kept = listen(c, uniqueName('kept'), [{ event: 'INSERT', schema: 'public', table: 'todos', filter: 'title=eq.remove-test' }])
    const removed = listen(c, uniqueName('removed'), [{ event: 'INSERT', schema: 'public', table: 'todos', filter: 'title=eq.remove-test' }])
    await Promise.all([subscribed(kept.channel), subscribed(removed.channel)])
    await pg.sql(`INSERT INTO todos (id, title) VALUES (300, 'remove-test')`)
    await waitFor(() => kept.got[0].length === 1 && removed.got[0].length === 1, 5000, 'the first insert on both channels')
    assert.equal(await c.removeChannel(removed.channel), 'ok')
    await pg.sql(`INSERT INTO todos (id, title) VALUES (301, 'remove-test')`)
    // Both channels share the socket and the server writes in commit order:
    // once the kept one has the second insert, the removed one would have too.
    await waitFor(() => kept.got[0].length === 2, 5000, 'the second insert on the kept channel')
    assert.deepEqual(removed.got[0].map((p) => p.new.id), [300])
  })

  it('filters by row-level security with each user\'s claims, and follows setAuth', async () => {
    const alice = client('authenticated', ALICE)
    const bob = client('authenticated', BOB)
    const notes = [{ event: '*', schema: 'public', table: 'notes' }]
    const a = listen(alice, uniqueName('notes'), notes)
    const b = listen(bob, uniqueName('notes'), notes)
    await Promise.all([subscribed(a.channel), subscribed(b.channel)])
    await pg.sql(`INSERT INTO notes VALUES (1, '${ALICE}', 'alice 1'); INSERT INTO notes VALUES (2, '${BOB}', 'bob 1');
      INSERT INTO notes VALUES (3, '${ALICE}', 'alice 2')`)
    const bodies = (x) => x.got[0].map((p) => `${p.eventType} ${p.new.body ?? JSON.stringify(p.old)}`)
    // Visibility is checked against the row as it is then: let the inserts
    // be checked before the delete.
    await waitFor(() => a.got[0].length === 2 && b.got[0].length === 1, 5000, () => `alice ${bodies(a)}, bob ${bodies(b)}`)
    assert.deepEqual(a.got[0][0].new, await row('notes', 1))
    await pg.sql('DELETE FROM notes WHERE id = 1')
    await waitFor(() => a.got[0].length === 3 && b.got[0].length === 2, 5000, () => `the delete: alice ${bodies(a)}, bob ${bodies(b)}`)
    // A delete on an RLS table is not checked and carries only the key, as in Supabase.
    assert.deepEqual(bodies(a), ['INSERT alice 1', 'INSERT alice 2', 'DELETE {"id":1}'])
    assert.deepEqual(bodies(b), ['INSERT bob 1', 'DELETE {"id":1}'])

    // setAuth with bob's token: alice's channel now sees bob's rows, not hers.
    await alice.setAuth(token('authenticated', BOB))
    await waitFor(
      () => a.system.filter((m) => m.message === 'Subscribed to PostgreSQL').length === 2,
      5000,
      () => `Subscribed to PostgreSQL again after setAuth; system ${JSON.stringify(a.system)}`
    )
    await pg.sql(`INSERT INTO notes VALUES (4, '${ALICE}', 'alice 3'); INSERT INTO notes VALUES (5, '${BOB}', 'bob 2')`)
    await waitFor(() => b.got[0].length === 3, 5000, () => `bob's insert; bob ${bodies(b)}`)
    await waitFor(() => a.got[0].length === 4, 5000, () => `bob's insert on alice's channel; alice ${bodies(a)}`)
    assert.deepEqual(bodies(a).slice(3), ['INSERT bob 2'])
  })

  it('refuses at join a binding on a table the role may not select, with Supabase\'s text', async () => {
    const { channel, got, system } = listen(client('anon'), uniqueName('refused'), [{ event: '*', schema: 'public', table: 'notes' }])
    await subscribed(channel) // Supabase never refuses the join itself
    const m = await waitFor(() => system.find((s) => s.extension === 'postgres_changes'), 5000, () => `a system message; got ${JSON.stringify(system)}`)
    assert.equal(m.status, 'error')
    assert.equal(
      m.message,
      'Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: ' +
        '[event: *, schema: public, table: notes, filters: [], select: nil]. ' +
        'Exception: ERROR 42501 (insufficient_privilege) permission denied for table notes'
    )
    assert.deepEqual(got[0], [])
  })
})
