// Private channels decided by the app's row level security policies on
// realtime.messages (Supabase's Realtime Authorization): the unmodified
// @supabase/realtime-js (2.119.1, `ws` as transport) against one meshcast node
// with --database-url and --jwt-secret, and a membership table whose rows say
// what each user may read and write in a room.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Clients, nowSeconds, signJWT, startServer, subscribed, subscribeRecording, waitFor } from './helpers.mjs'
import { startPostgres } from './postgres.mjs'

const JWT_SECRET = 'interop-private-secret-with-at-least-32-characters'

// Supabase's setup in small: its roles, auth.uid(), and the membership table.
const SCHEMA = `
CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;
CREATE TABLE members (user_id uuid, room text, reads text[], writes text[], PRIMARY KEY (user_id, room));
GRANT SELECT ON members TO authenticated;
`

// The policies an app writes on realtime.messages (which the node creates).
const POLICIES = `
CREATE POLICY "members read" ON realtime.messages FOR SELECT TO authenticated USING (
  EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()
    AND realtime.messages.extension = ANY (m.reads)));
CREATE POLICY "members write" ON realtime.messages FOR INSERT TO authenticated WITH CHECK (
  EXISTS (SELECT 1 FROM members m WHERE m.user_id = auth.uid() AND m.room = realtime.topic()
    AND realtime.messages.extension = ANY (m.writes)));
`

let pg
let server
let clients
let seq = 0

const user = () => `00000000-0000-0000-0000-${String(process.pid % 1000000).padStart(6, '0')}${String(++seq).padStart(6, '0')}`
const token = (sub) => signJWT({ role: 'authenticated', sub, exp: nowSeconds() + 3600, iat: nowSeconds() }, JWT_SECRET)
const room = () => `room-${process.pid}-${++seq}`

/** A user of room: a row with what they may read and write (none: no row), and a client. */
async function member(name, reads, writes) {
  const sub = user()
  if (reads) await pg.sql(`INSERT INTO members VALUES ('${sub}', '${name}', '{${reads}}', '{${writes}}')`)
  const client = clients.make({ apikey: token(sub) })
  const channel = client.channel(name, { config: { private: true, broadcast: { self: false, ack: true } } })
  const got = []
  channel.on('broadcast', { event: '*' }, (m) => got.push(m.event))
  const system = []
  channel.on('system', {}, (m) => system.push(m))
  // A presence listener: realtime-js then joins with presence enabled, and
  // the join asks to read presence too (joining needs one of the two).
  channel.on('presence', { event: 'sync' }, () => {})
  return { sub, client, channel, got, system }
}

before(async () => {
  pg = await startPostgres()
  await pg.sql(SCHEMA)
  // The node makes the realtime schema before it serves.
  server = await startServer({ jwtSecret: JWT_SECRET, args: ['--database-url', pg.url, '--webtransport-listen', 'off'] })
  await pg.sql(POLICIES)
  clients = new Clients(server)
})
afterEach(async () => {
  await clients?.closeAll()
})
after(async () => {
  await clients?.closeAll()
  await server?.stop()
  await pg?.stop()
})

describe('private channels decided by the policies on realtime.messages', () => {
  it('joins a member and refuses anyone else with Supabase\'s text', async () => {
    const name = room()
    const ok = await member(name, 'broadcast', '')
    await subscribed(ok.channel)
    const no = await member(name)
    const rec = subscribeRecording(no.channel)
    await waitFor(() => rec.has('CHANNEL_ERROR'), 5000, () => `CHANNEL_ERROR (${rec})`)
    assert.equal(rec.errors[0]?.message, `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`)
  })

  it('delivers what a member may write to those who may read, and nothing a member may not write', async () => {
    const name = room()
    const writer = await member(name, 'broadcast,presence', 'broadcast,presence')
    const reader = await member(name, 'broadcast,presence', '')
    const blind = await member(name, 'presence', 'broadcast') // may not read broadcasts
    await Promise.all([subscribed(writer.channel), subscribed(reader.channel), subscribed(blind.channel)])

    // Denied: dropped without a reply, so an ack sender times out.
    assert.equal(await reader.channel.send({ type: 'broadcast', event: 'denied', payload: {} }, { timeout: 1000 }), 'timed out')
    assert.equal(await writer.channel.send({ type: 'broadcast', event: 'allowed', payload: {} }), 'ok')
    assert.equal(await blind.channel.send({ type: 'broadcast', event: 'unseen', payload: {} }), 'ok')
    await waitFor(() => reader.got.includes('unseen'), 5000, () => `reader got ${reader.got}`)
    // One node writes a socket's frames in order: once the reader has the
    // last message, it has everything sent before it.
    assert.deepEqual(reader.got, ['allowed', 'unseen'])
    await waitFor(() => writer.got.includes('unseen'), 5000, () => `writer got ${writer.got}`)
    assert.deepEqual(writer.got, ['unseen'])
    assert.deepEqual(blind.got, [])

    // Presence: a track needs presence write.
    assert.equal(await reader.channel.track({ who: 'reader' }), 'error')
    assert.equal(await writer.channel.track({ who: 'writer' }), 'ok')
    await waitFor(() => Object.keys(reader.channel.presenceState()).length === 1, 5000, 'the writer in the reader\'s presence')
    assert.deepEqual(Object.values(reader.channel.presenceState())[0].map((m) => m.who), ['writer'])
  })

  it('sends over REST only what the token may write', async () => {
    const name = room()
    const writer = await member(name, 'broadcast', 'broadcast')
    const reader = await member(name, 'broadcast', '')
    await Promise.all([subscribed(writer.channel), subscribed(reader.channel)])
    writer.client.setAuth(token(writer.sub))
    reader.client.setAuth(token(reader.sub))
    await assert.rejects(reader.channel.httpSend('rest-denied', {}), /Unauthorized/)
    assert.deepEqual(await writer.channel.httpSend('rest-allowed', {}), { success: true })
    await waitFor(() => reader.got.includes('rest-allowed'), 5000, () => `reader got ${reader.got}`)
    assert.deepEqual(reader.got, ['rest-allowed'])
  })

  it('closes the channel when setAuth finds the membership revoked', async () => {
    const name = room()
    const m = await member(name, 'broadcast', 'broadcast')
    const rec = await subscribed(m.channel)
    await pg.sql(`DELETE FROM members WHERE user_id = '${m.sub}'`)
    await m.client.setAuth(signJWT({ role: 'authenticated', sub: m.sub, exp: nowSeconds() + 7200, iat: nowSeconds() }, JWT_SECRET))
    await waitFor(() => rec.has('CLOSED'), 5000, () => `CLOSED (${rec}); system ${JSON.stringify(m.system)}`)
    assert.deepEqual(
      m.system.map((s) => [s.status, s.message]),
      [['error', `You no longer have permission to read from this Channel topic: ${name}`]]
    )
  })
})
