// Recovery (issue 18) with clientjs over WebSocket, through a TCP proxy the
// test controls: a publisher sends sequence-numbered broadcasts at a steady
// rate while the subscriber's connection is cut, or its node is killed -9;
// every message must arrive exactly once, in order. And the explicit failure
// when a single node restarted.
import { after, afterEach, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Clients, scrapeMetrics, startCluster, startServer, waitFor } from './helpers.mjs'
import { MeshcastClients, collect, joined, record, uniqueName } from './clientjs-helpers.mjs'
import { startProxy } from './proxy.mjs'

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const fast = { reconnectAfterMs: () => 100, rejoinAfterMs: () => 100 }

let cleanup = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})
after(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

/** Publishes {n} on channel every intervalMs until stop(); ack'd, so each is accepted before the next. */
function steadyPublisher(channel, intervalMs) {
  let n = 0
  let running = true
  const done = (async () => {
    while (running) {
      const r = await channel.send({ type: 'broadcast', event: 'seq', payload: { n } })
      assert.equal(r, 'ok', `publish ${n}`)
      n++
      await delay(intervalMs)
    }
  })()
  return {
    sent: () => n,
    async stop() {
      running = false
      await done
      return n
    },
  }
}

/** Waits until got holds 0..sent-1, then checks exactly once and in order. */
async function allOnceInOrder(got, sent, what) {
  await waitFor(() => got.length >= sent, 15000, () => `${what}: ${sent} messages, have ${got.length}`)
  await delay(200) // a duplicate would be right behind
  const ns = got.map((m) => m.payload.n)
  const want = Array.from({ length: sent }, (_, i) => i)
  if (JSON.stringify(ns) !== JSON.stringify(want)) {
    const seen = new Map()
    for (const n of ns) seen.set(n, (seen.get(n) ?? 0) + 1)
    const missing = want.filter((n) => !seen.has(n))
    const dups = [...seen].filter(([, c]) => c > 1).map(([n]) => n)
    assert.fail(`${what}: ${ns.length} messages for ${sent} sent; missing ${missing.slice(0, 10)}, duplicated ${dups.slice(0, 10)}`)
  }
}

describe('recovery', () => {
  it('a subscriber cut off three times gets every message once, in order', async () => {
    const server = await startServer()
    cleanup.push(() => server.stop())
    const proxy = await startProxy(server.port)
    cleanup.push(() => proxy.close())
    const clients = new MeshcastClients(server)
    cleanup.push(() => clients.closeAll())
    const name = uniqueName('cut')
    const pubCh = clients.make().channel(name, { config: { broadcast: { ack: true } } })
    await joined(pubCh)
    const sub = clients.make({ url: `${proxy.httpURL}/realtime/v1`, transports: ['websocket'], ...fast })
    const subCh = sub.channel(name)
    const got = collect(subCh, 'seq')
    const rec = record(subCh)
    await waitFor(() => rec.has('SUBSCRIBED'), 5000, 'subscriber joined')

    const pub = steadyPublisher(pubCh, 20)
    for (const outage of [1000, 2500, 1500]) {
      const before = rec.count('SUBSCRIBED')
      await delay(400)
      proxy.cut(outage)
      await waitFor(() => rec.count('SUBSCRIBED') > before, outage + 5000, () => `rejoin after a ${outage} ms outage (${rec})`)
      assert.equal(subCh.recovered, true, `rejoin after a ${outage} ms outage recovered`)
    }
    await delay(300)
    const sent = await pub.stop()
    await allOnceInOrder(got, sent, 'subscriber')
  })

  it('a subscriber whose node is killed -9 recovers on another node', async () => {
    const cluster = await startCluster({ size: 3 })
    cleanup.push(() => cluster.stop())
    const [n1, n2, n3] = cluster.nodes
    const proxy = await startProxy(n2.port)
    cleanup.push(() => proxy.close())
    const clients = new MeshcastClients(n1)
    cleanup.push(() => clients.closeAll())
    const name = uniqueName('kill')
    const pubCh = clients.make().channel(name, { config: { broadcast: { ack: true } } })
    await joined(pubCh)
    const subCh = clients.make({ url: `${proxy.httpURL}/realtime/v1`, transports: ['websocket'], ...fast }).channel(name)
    const got = collect(subCh, 'seq')
    const rec = record(subCh)
    await waitFor(() => rec.has('SUBSCRIBED'), 5000, 'subscriber joined on n2')

    const pub = steadyPublisher(pubCh, 20)
    await waitFor(() => got.length >= 20, 5000, 'subscriber receiving on n2')
    proxy.retarget(n3.port)
    proxy.cut(500)
    await n2.kill()
    await waitFor(() => rec.count('SUBSCRIBED') >= 2, 15000, () => `rejoin on n3 (${rec})`)
    assert.equal(subCh.recovered, true, 'the rejoin on n3 recovered what n2 had not sent')
    const m = await scrapeMetrics(n3)
    assert.ok(m.get('meshcast_recovery_fetches_total{result="ok"}') >= 1, 'n3 fetched the missed range from n1')
    await delay(500)
    const sent = await pub.stop()
    await allOnceInOrder(got, sent, 'subscriber moved from n2 to n3')
  })

  it('a restarted single node says recovery failed, then goes on live', async () => {
    const server = await startServer()
    cleanup.push(() => server.stop())
    const proxy = await startProxy(server.port)
    cleanup.push(() => proxy.close())
    const clients = new MeshcastClients(server)
    cleanup.push(() => clients.closeAll())
    const name = uniqueName('restart')
    const pubCh = clients.make().channel(name, { config: { broadcast: { ack: true } } })
    await joined(pubCh)
    const subCh = clients.make({ url: `${proxy.httpURL}/realtime/v1`, transports: ['websocket'], ...fast }).channel(name)
    const got = collect(subCh, 'seq')
    const system = []
    subCh.on('system', {}, (p) => system.push(p))
    const rec = record(subCh)
    await waitFor(() => rec.has('SUBSCRIBED'), 5000, 'subscriber joined')
    assert.equal(await pubCh.send({ type: 'broadcast', event: 'seq', payload: { n: 0 } }), 'ok')
    await waitFor(() => got.length === 1, 5000, 'first message')

    // The node restarts on the same port: a new epoch, its history gone.
    await server.stop()
    const again = await startServer({ port: server.port })
    cleanup.push(() => again.stop())
    await waitFor(() => rec.count('SUBSCRIBED') >= 2, 15000, () => `rejoin after the restart (${rec})`)
    assert.equal(subCh.recovered, false)
    // (The node's shutdown notice came first: extension "system".)
    const failure = await waitFor(() => system.find((p) => p.extension === 'broadcast'), 5000, () => `the recovery failure among ${JSON.stringify(system)}`)
    assert.equal(failure.status, 'error')
    assert.equal(failure.channel, name)
    assert.match(failure.message, /^recovery failed: no live node holds stream [0-9a-f]{16}$/)
    assert.match(rec.errors.at(-1)?.message ?? '', /recovery failed/, 'the subscribe callback sees it too')

    const pub2 = new MeshcastClients(again)
    cleanup.push(() => pub2.closeAll())
    const p2 = pub2.make().channel(name, { config: { broadcast: { ack: true } } })
    await joined(p2)
    assert.equal(await p2.send({ type: 'broadcast', event: 'seq', payload: { n: 1 } }), 'ok')
    await waitFor(() => got.length === 2, 5000, 'live after the failure')
    assert.deepEqual(got.map((m) => m.payload.n), [0, 1])
  })
})

describe('recovery with realtime-js by hand', () => {
  it('config.broadcast.recover, kept from meta.pos, recovers what a cut connection missed', async () => {
    const server = await startServer()
    cleanup.push(() => server.stop())
    const proxy = await startProxy(server.port)
    cleanup.push(() => proxy.close())
    const rt = new Clients({ realtimeURL: `ws://127.0.0.1:${proxy.port}/realtime/v1` })
    cleanup.push(() => rt.closeAll())
    const pubs = new MeshcastClients(server)
    cleanup.push(() => pubs.closeAll())
    const name = uniqueName('byhand')
    const pub = pubs.make().channel(name, { config: { broadcast: { ack: true } } })
    await joined(pub)

    // The README's recipe: the vector lives in the broadcast config object,
    // which realtime-js sends as it is on every (re)join.
    const vector = {}
    const sub = rt.make().channel(name, { config: { broadcast: { recover: vector } } })
    const got = []
    sub.on('broadcast', { event: 'seq' }, (m) => {
      const [epoch, offset] = m.meta.pos.split(':')
      vector[epoch] = Math.max(vector[epoch] ?? 0, Number(offset))
      got.push(m.payload.n)
    })
    const statuses = []
    sub.subscribe((s) => statuses.push(s))
    await waitFor(() => statuses.includes('SUBSCRIBED'), 5000, 'realtime-js joined')
    for (let n = 0; n < 3; n++) assert.equal(await pub.send({ type: 'broadcast', event: 'seq', payload: { n } }), 'ok')
    await waitFor(() => got.length === 3, 5000, 'first three')
    proxy.cut(1500)
    for (let n = 3; n < 8; n++) assert.equal(await pub.send({ type: 'broadcast', event: 'seq', payload: { n } }), 'ok')
    await waitFor(() => statuses.filter((s) => s === 'SUBSCRIBED').length >= 2, 10000, () => `realtime-js rejoined: ${statuses}`)
    assert.equal(await pub.send({ type: 'broadcast', event: 'seq', payload: { n: 8 } }), 'ok')
    await waitFor(() => got.length >= 9, 5000, () => `nine messages, have ${got}`)
    await delay(200)
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8])
  })
})
