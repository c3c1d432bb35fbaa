// A burst of Postgres changes and the unmodified @supabase/realtime-js (2.119.1,
// `ws` as transport): 30 statements inserting 1 000 rows of 1 KB each, in one
// query. A subscriber that keeps reading gets all 30 000 rows in commit order and
// stays connected (it was closed `1008 slow consumer` after ~13 000 rows before
// flow control); one whose socket stops reading is closed within --write-timeout
// of its last progress, and does not make the other lose anything.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Clients, scrapeMetrics, startServer, subscribed, waitFor } from './helpers.mjs'
import { startPostgres } from './postgres.mjs'

let pg
let server
let clients

before(async () => {
  pg = await startPostgres()
  await pg.sql('CREATE TABLE burst (id int PRIMARY KEY, body text); CREATE PUBLICATION supabase_realtime FOR ALL TABLES;')
  server = await startServer({ args: ['--database-url', pg.url, '--write-timeout', '5s'] })
  clients = new Clients(server)
})
after(async () => {
  await clients?.closeAll()
  await server?.stop()
  await pg?.stop()
})

/** A realtime-js client subscribed to the burst's inserts, recording ids and closes. */
async function subscriber(name) {
  const client = clients.make()
  const ids = []
  const channel = client
    .channel(name)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'burst' }, (p) => ids.push(p.new.id))
  await subscribed(channel, 10000)
  const closes = []
  const socket = client.socketAdapter.getSocket() // Phoenix's Socket; its conn is the `ws` WebSocket
  socket.onClose((e) => closes.push(`${e?.code} ${e?.reason}`))
  return { client, socket, ids, closes }
}

describe('a burst of postgres_changes', () => {
  it('reaches a reading subscriber whole and in order; only a subscriber that stopped reading is closed', async () => {
    const reader = await subscriber('burst-reader')
    const stuck = await subscriber('burst-stuck')
    stuck.socket.conn._socket.pause() // reads nothing more from its socket

    let q = ''
    for (let i = 0; i < 30; i++) {
      q += `INSERT INTO burst SELECT g, repeat(md5(g::text), 32) FROM generate_series(${i * 1000 + 1}, ${(i + 1) * 1000}) g;`
    }
    await pg.sql(q)
    await waitFor(
      () => reader.ids.length >= 30000 || reader.closes.length > 0,
      90000,
      () => `30000 rows; the reader has ${reader.ids.length}`
    )
    assert.deepEqual(reader.closes, [], 'the reading subscriber was closed')
    assert.equal(reader.ids.length, 30000)
    assert.ok(reader.ids.every((id, i) => id === i + 1), 'rows out of commit order')

    const m = await scrapeMetrics(server)
    assert.ok(m.get('meshcast_changes_waits_total') > 0, 'no delivery waited: the burst did not need flow control')
    // Reading again, the stuck subscriber finds its connection closed by
    // the server, after what its socket had buffered.
    stuck.socket.conn._socket.resume()
    await waitFor(() => stuck.closes.length > 0, 15000, () => `the stuck subscriber's close (it has ${stuck.ids.length} rows)`)
    assert.ok(stuck.ids.length < 30000, `the stuck subscriber got all ${stuck.ids.length} rows`)
  })
})
