// Interop across a cluster: the unmodified @supabase/realtime-js (2.119.1, `ws`
// as transport) connected to different meshcast nodes of a 3-process cluster
// (n1 iad, n2 fra, n3 sin), started without auth (dev mode).
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Clients, startCluster, subscribed, waitFor } from './helpers.mjs'

let cluster
let on = [] // on[i]: the Clients of node i

before(async () => {
  cluster = await startCluster()
  on = cluster.nodes.map((n) => new Clients(n))
})
afterEach(async () => {
  await Promise.all(on.map((c) => c.closeAll()))
})
after(async () => {
  await Promise.all(on.map((c) => c.closeAll()))
  await cluster?.stop()
})

let topicSeq = 0
/** A channel name unique to this run, so tests never see each other's traffic. */
const uniqueName = (what) => `${what}-${process.pid}-${++topicSeq}`

/** A presence-enabled channel with a key, recording broadcasts and presence joins/leaves. */
function member(client, name, key, { ack = false } = {}) {
  const channel = client.channel(name, { config: { presence: { key }, broadcast: { ack } } })
  const got = { broadcasts: [], joins: [], leaves: [] }
  channel
    .on('broadcast', { event: '*' }, (m) => got.broadcasts.push(m))
    .on('presence', { event: 'join' }, (e) => got.joins.push(e))
    .on('presence', { event: 'leave' }, (e) => got.leaves.push(e))
  return { channel, got, keys: () => Object.keys(channel.presenceState()).sort() }
}

/** Waits until `m`'s presence holds exactly `keys`. */
async function presenceIs(m, keys, who) {
  await waitFor(
    () => m.keys().join() === [...keys].sort().join(),
    5000,
    () => `${who} presence keys ${keys}; have ${JSON.stringify(m.channel.presenceState())}`
  )
}

describe('cluster', () => {
  it('broadcasts cross nodes both ways', async () => {
    const name = uniqueName('xbcast')
    const a = member(on[0].make(), name, 'a', { ack: true }) // n1
    const b = member(on[1].make(), name, 'b', { ack: true }) // n2
    const c = member(on[2].make(), name, 'c') // n3, listens only
    await Promise.all([subscribed(a.channel), subscribed(b.channel), subscribed(c.channel)])
    assert.equal(await a.channel.track({ on: 'n1' }), 'ok')
    assert.equal(await b.channel.track({ on: 'n2' }), 'ok')
    // A node sends its presence to the nodes it knows are interested in the
    // topic, and routes broadcasts to the same nodes: once every client sees
    // the others' presence, every node knows every other node's interest.
    await presenceIs(a, ['a', 'b'], 'A@n1')
    await presenceIs(b, ['a', 'b'], 'B@n2')
    await presenceIs(c, ['a', 'b'], 'C@n3')

    assert.equal(await a.channel.send({ type: 'broadcast', event: 'ping', payload: { from: 'n1' } }), 'ok')
    assert.equal(await b.channel.send({ type: 'broadcast', event: 'pong', payload: { from: 'n2' } }), 'ok')
    const fromA = (m) => m.event === 'ping' && m.payload?.from === 'n1'
    const fromB = (m) => m.event === 'pong' && m.payload?.from === 'n2'
    await waitFor(() => b.got.broadcasts.find(fromA), 5000, () => `B@n2 receiving ping from n1; got ${JSON.stringify(b.got.broadcasts)}`)
    await waitFor(() => a.got.broadcasts.find(fromB), 5000, () => `A@n1 receiving pong from n2; got ${JSON.stringify(a.got.broadcasts)}`)
    await waitFor(
      () => c.got.broadcasts.find(fromA) && c.got.broadcasts.find(fromB),
      5000,
      () => `C@n3 receiving both; got ${JSON.stringify(c.got.broadcasts)}`
    )
    const msg = b.got.broadcasts.find(fromA)
    assert.equal(msg.type, 'broadcast')
    assert.deepEqual(msg.payload, { from: 'n1' })
    // self is false: neither sender got its own message, each exactly one.
    assert.deepEqual(a.got.broadcasts.map((m) => m.event), ['pong'])
    assert.deepEqual(b.got.broadcasts.map((m) => m.event), ['ping'])
    assert.deepEqual(c.got.broadcasts.map((m) => m.event).sort(), ['ping', 'pong'])
  })

  it('presence syncs across nodes: both keys on both sides', async () => {
    const name = uniqueName('xpres')
    const alice = member(on[0].make(), name, 'alice') // n1
    const bob = member(on[1].make(), name, 'bob') // n2
    await subscribed(alice.channel)
    assert.equal(await alice.channel.track({ user: 'alice' }), 'ok')
    await subscribed(bob.channel)
    assert.equal(await bob.channel.track({ user: 'bob' }), 'ok')
    await presenceIs(alice, ['alice', 'bob'], 'alice@n1')
    await presenceIs(bob, ['alice', 'bob'], 'bob@n2')

    for (const [who, m, other] of [['alice@n1', alice, 'bob'], ['bob@n2', bob, 'alice']]) {
      const metas = m.channel.presenceState()[other]
      assert.equal(metas.length, 1, `${who}: ${JSON.stringify(metas)}`)
      assert.equal(metas[0].user, other)
      assert.equal(typeof metas[0].presence_ref, 'string')
      assert.ok(m.got.joins.find((e) => e.key === other), `${who} got no join event for ${other}`)
    }
    // Each ref is the owner's: both sides agree on it.
    assert.equal(alice.channel.presenceState().bob[0].presence_ref, bob.channel.presenceState().bob[0].presence_ref)
    assert.equal(alice.channel.presenceState().alice[0].presence_ref, bob.channel.presenceState().alice[0].presence_ref)
  })

  it('a client that disconnects from one node leaves the presence on the other', async () => {
    const name = uniqueName('xleave')
    const stayer = member(on[0].make(), name, 'stayer') // n1
    const gonerClient = on[1].make()
    const goner = member(gonerClient, name, 'goner') // n2
    await subscribed(stayer.channel)
    await subscribed(goner.channel)
    assert.equal(await stayer.channel.track({ user: 'stayer' }), 'ok')
    assert.equal(await goner.channel.track({ user: 'goner' }), 'ok')
    await presenceIs(stayer, ['goner', 'stayer'], 'stayer@n1')

    await gonerClient.disconnect() // the socket closes; n2 must send the leave to n1
    const left = await waitFor(
      () => stayer.got.leaves.find((e) => e.key === 'goner'),
      5000,
      () => `leave of goner at stayer@n1; state ${JSON.stringify(stayer.channel.presenceState())}`
    )
    assert.equal(left.leftPresences[0].user, 'goner')
    assert.deepEqual(stayer.keys(), ['stayer'])
  })
})
