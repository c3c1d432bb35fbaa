// clientjs in a real browser: Debian's Chromium (playwright-core) loads the
// bundle a meshcast node serves at /clientjs/meshcast.js and picks its
// transport: WebTransport first (serverCertificateHashes from the node's
// cert-hash endpoint), WebSocket fallback. Every node here is the real binary:
// one with WebTransport (the default), one with --webtransport-listen off, and
// nodes whose advertised WebTransport address is unreachable (a UDP port that
// swallows packets, a closed one).
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { Clients, scrapeMetrics, startServer, subscribed, waitFor } from './helpers.mjs'

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
const haveChromium = existsSync(CHROMIUM)
const skip = haveChromium ? false : `no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`
const TIMEOUT = 15000
const BUNDLE = '/clientjs/meshcast.js'

let server // WebTransport on (the default)
let browser
let realtime
const extraServers = []

before(async () => {
  if (!haveChromium) return
  server = await startServer()
  realtime = new Clients(server)
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: TIMEOUT,
    // No --disable-quic: WebTransport runs over QUIC.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => {
  await realtime?.closeAll()
  await browser?.close().catch(() => {})
  await server?.stop()
  for (const s of extraServers) await s.stop()
})

let seq = 0
const uniqueName = (what) => `${what}-${process.pid}-${++seq}`

/** Another node, stopped after the suite. */
async function startNode(args) {
  const s = await startServer({ args })
  extraServers.push(s)
  return s
}

/** A page on a node's origin (a secure context: http://127.0.0.1) with the bundle's exports on window.mc. */
async function openPage(node = server) {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  page.setDefaultTimeout(TIMEOUT)
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  // What the browser console shows as errors (a failed request is one),
  // but for /healthz's missing favicon: the test's page, not an app's.
  const consoleErrors = []
  page.on('console', (m) => m.type() === 'error' && !m.location().url?.endsWith('/favicon.ico') && consoleErrors.push(m.text()))
  await page.goto(`${node.httpURL}/healthz`)
  await page.evaluate(async (src) => {
    window.mc = await import(src)
  }, BUNDLE)
  return { page, errors, consoleErrors, ctx }
}

/**
 * In the page: makes a client and a channel, subscribes, and returns how long
 * SUBSCRIBED took and which transport won. The client is window.client, the channel window.ch,
 * broadcasts received are window.got (with `datagram` set for those that came as datagrams).
 */
function connectInPage(page, { name, key, options = {} }) {
  return page.evaluate(
    async ({ name, key, options }) => {
      const logs = []
      const t0 = performance.now()
      const client = new window.mc.MeshcastClient(`${location.origin}/realtime/v1`, {
        apikey: 'demo',
        logger: (kind, msg) => logs.push(`${Math.round(performance.now() - t0)}ms ${kind}: ${msg}`),
        ...options,
      })
      window.client = client
      window.logs = logs
      window.got = []
      const ch = client.channel(name, { config: { broadcast: { unreliable: true }, presence: { key } } })
      window.ch = ch
      ch.on('broadcast', { event: '*' }, (m) => window.got.push({ event: m.event, payload: m.payload }))
      ch.on('presence', { event: 'sync' }, () => {})
      await new Promise((resolve, reject) => ch.subscribe((s, e) => (s === 'SUBSCRIBED' ? resolve() : reject(new Error(`${s}: ${e?.message}`)))))
      return {
        hasWebTransport: typeof WebTransport === 'function',
        ms: performance.now() - t0,
        transport: client.transport,
        webtransportDisabled: client.webtransportDisabled,
        logs,
      }
    },
    { name, key, options }
  )
}

/** Shows realtime-js and the page exchange broadcasts and presence on `name`. */
async function exchangeWithRealtimeJS(page, name, who) {
  const rt = realtime.make().channel(name, { config: { presence: { key: 'node' } } })
  const gotRt = []
  rt.on('broadcast', { event: '*' }, (m) => gotRt.push(m))
  rt.on('presence', { event: 'sync' }, () => {})
  await subscribed(rt)
  await rt.track({ who: 'node' })
  assert.equal(await page.evaluate((who) => window.ch.track({ who }), who), 'ok')
  assert.equal(await page.evaluate((who) => window.ch.send({ type: 'broadcast', event: 'chat', payload: { from: who } }), who), 'ok')
  await waitFor(() => gotRt.some((m) => m.payload?.from === who), 5000, 'realtime-js gets the page’s broadcast')
  assert.equal(await rt.send({ type: 'broadcast', event: 'chat', payload: { from: 'node' } }), 'ok')
  await page.waitForFunction(() => window.got.some((m) => m.payload?.from === 'node'))
  await waitFor(() => Object.keys(rt.presenceState()).includes(who), 5000, () => `realtime-js sees the page: ${JSON.stringify(rt.presenceState())}`)
  await page.waitForFunction((who) => Object.keys(window.ch.presenceState()).sort().join() === [who, 'node'].sort().join(), who)
  return { rt, gotRt }
}

describe('clientjs in Chromium: WebTransport first, WebSocket fallback', { skip }, () => {
  it('connects over WebTransport with serverCertificateHashes: broadcasts and presence with realtime-js, datagram cursors between pages', async () => {
    const hash = await (await fetch(`${server.httpURL}/realtime/v1/webtransport/cert-hash`)).json()
    assert.equal(hash.url, `https://127.0.0.1:${server.port}/realtime/v1/webtransport`)
    assert.equal(hash.hashes.length, 1)
    const name = uniqueName('wt')
    const a = await openPage()
    const b = await openPage()
    const ra = await connectInPage(a.page, { name, key: 'page-a' })
    const rb = await connectInPage(b.page, { name, key: 'page-b' })
    assert.equal(ra.transport, 'webtransport', ra.logs.join('\n'))
    assert.equal(rb.transport, 'webtransport', rb.logs.join('\n'))
    assert.equal(ra.webtransportDisabled, null)
    console.log(`# WebTransport: SUBSCRIBED after ${ra.ms.toFixed(0)} ms (discovery, handshake, stream, join)`)

    const { gotRt } = await exchangeWithRealtimeJS(a.page, name, 'page-a')
    assert.equal(await b.page.evaluate(() => window.ch.track({ who: 'page-b' })), 'ok')
    await b.page.waitForFunction(() => ['node', 'page-a', 'page-b'].every((k) => k in window.ch.presenceState()))
    await a.page.waitForFunction(() => ['node', 'page-a', 'page-b'].every((k) => k in window.ch.presenceState()))

    // Cursors from page b reach page a as datagrams, and realtime-js (a
    // WebSocket) reliably: every one of them, in order.
    const cursors = 20
    await b.page.evaluate(async (n) => {
      for (let i = 0; i < n; i++) await window.ch.sendUnreliable('cursor', { x: i })
    }, cursors)
    await waitFor(() => gotRt.filter((m) => m.event === 'cursor').length === cursors, 5000, 'realtime-js gets every cursor')
    assert.deepEqual(gotRt.filter((m) => m.event === 'cursor').map((m) => m.payload.x), [...Array(cursors).keys()])
    await a.page.waitForFunction(() => window.got.some((m) => m.event === 'cursor'))
    const viaDatagram = await a.page.evaluate(() => window.logs.filter((l) => l.endsWith('broadcast [datagram]')).length)
    assert.ok(viaDatagram > 0, `page a got cursors as datagrams:\n${(await a.page.evaluate(() => window.logs)).slice(-10).join('\n')}`)
    const seen = await a.page.evaluate(() => window.got.filter((m) => m.event === 'cursor').length)
    console.log(`# datagram cursors: page a got ${seen} of ${cursors} (unreliable), realtime-js ${cursors} of ${cursors}`)

    // Over 1024 bytes: refused by the client, never truncated.
    const tooBig = await b.page.evaluate(() => window.ch.sendUnreliable('cursor', { s: 'x'.repeat(2000) }).then(() => 'sent', (e) => `${e.name}: ${e.size}/${e.maxBytes}`))
    assert.match(tooBig, /^DatagramTooLargeError: \d+\/1024$/)
    // Leaving is no error on the node: page a disconnects, page b's tab
    // just closes (its session ends under the node's writes).
    await a.page.evaluate(() => window.client.disconnect())
    await b.page.close()
    let m = new Map()
    await waitFor(async () => (m = await scrapeMetrics(server)).get('meshcast_connections{transport="webtransport"}') === 0, 5000, () => `both sessions closed: ${[...m].filter(([k]) => k.startsWith('meshcast_connections')).join(' ')}`)
    const errs = [...m].filter(([k, v]) => k.startsWith('meshcast_errors_total') && v > 0)
    assert.deepEqual(errs, [], 'a page leaving counts no error')
    for (const p of [a, b]) {
      assert.deepEqual(p.errors, [])
      await p.ctx.close()
    }
  })

  it('ends on WebSocket well within the timeout on a node with --webtransport-listen off, and works with realtime-js', async () => {
    const off = await startNode(['--webtransport-listen', 'off'])
    const name = uniqueName('off')
    const { page, errors, consoleErrors, ctx } = await openPage(off)
    const r = await connectInPage(page, { name, key: 'browser' })
    assert.equal(r.hasWebTransport, true, 'Chromium on a secure origin has WebTransport')
    assert.equal(r.transport, 'websocket', r.logs.join('\n'))
    assert.match(r.webtransportDisabled, /node offers no WebTransport .*: WebTransport is off on this node\)$/)
    assert.deepEqual(consoleErrors, [], 'asking a node without WebTransport is no error in the console')
    assert.ok(r.ms < 1000, `SUBSCRIBED after ${r.ms.toFixed(0)} ms (webtransportTimeoutMs is 3000): ${r.logs.join('\n')}`)
    console.log(`# --webtransport-listen off: on WebSocket after ${r.ms.toFixed(0)} ms`)

    const offRealtime = new Clients(off)
    try {
      const rt = offRealtime.make().channel(name, { config: { presence: { key: 'node' } } })
      const gotRt = []
      rt.on('broadcast', { event: '*' }, (m) => gotRt.push(m))
      rt.on('presence', { event: 'sync' }, () => {})
      await subscribed(rt)
      await rt.track({ who: 'node' })
      assert.equal(await page.evaluate(() => window.ch.track({ who: 'browser' })), 'ok')
      assert.equal(await page.evaluate(() => window.ch.send({ type: 'broadcast', event: 'chat', payload: { from: 'browser' } })), 'ok')
      await waitFor(() => gotRt.length === 1, 5000, 'realtime-js gets the page’s broadcast')
      await waitFor(() => Object.keys(rt.presenceState()).includes('browser'), 5000, 'realtime-js sees the page')
      // sendUnreliable on WebSocket is a reliable broadcast; the datagram size limit still applies.
      assert.equal(await page.evaluate(() => window.ch.sendUnreliable('cursor', { from: 'browser-unreliable' })), 'ok')
      await waitFor(() => gotRt.length === 2, 5000, 'the WebSocket fallback of sendUnreliable is delivered')
      assert.equal(await page.evaluate(() => window.ch.sendUnreliable('chat', { s: 'x'.repeat(2000) }).then(() => 'sent', (e) => e.name)), 'DatagramTooLargeError')
    } finally {
      await offRealtime.closeAll()
    }
    await page.evaluate(() => window.client.disconnect())
    assert.deepEqual(errors, [])
    await ctx.close()
  })

  it('falls back to WebSocket after webtransportTimeoutMs when the node’s WebTransport UDP port is unreachable, and remembers it', async () => {
    // The node advertises a UDP port that swallows every packet: the QUIC
    // handshake never gets an answer (UDP blocked on the way).
    const sink = dgram.createSocket('udp4')
    await new Promise((r) => sink.bind(0, '127.0.0.1', r))
    let packets = 0
    sink.on('message', () => packets++)
    const node = await startNode(['--webtransport-advertise', `127.0.0.1:${sink.address().port}`])
    const { page, errors, ctx } = await openPage(node)
    try {
      const r = await connectInPage(page, { name: uniqueName('stall'), key: 'k', options: { webtransportTimeoutMs: 1000 } })
      assert.equal(r.transport, 'websocket', r.logs.join('\n'))
      assert.ok(packets > 0, 'Chromium did try WebTransport (QUIC packets reached the sink)')
      assert.match(r.webtransportDisabled, /session did not complete within 1000 ms/)
      assert.ok(r.ms >= 990 && r.ms < 2500, `SUBSCRIBED after ${r.ms.toFixed(0)} ms (timeout 1000 ms): ${r.logs.join('\n')}`)
      console.log(`# unreachable WebTransport port: on WebSocket after ${r.ms.toFixed(0)} ms (timeout 1000 ms)`)
      // Remembered for the client's lifetime: a reconnect goes straight to WebSocket.
      const before = packets
      const again = await page.evaluate(async () => {
        const t0 = performance.now()
        await window.client.disconnect() // channels stay on the client, errored; connect() rejoins them
        window.client.connect()
        while (window.ch.state !== 'joined') await new Promise((r) => setTimeout(r, 10))
        return { ms: performance.now() - t0, transport: window.client.transport }
      })
      assert.equal(again.transport, 'websocket')
      assert.ok(again.ms < 1000, `rejoined after ${again.ms.toFixed(0)} ms`)
      assert.equal(packets, before, 'no second WebTransport attempt')
      await page.evaluate(() => window.client.disconnect())
      assert.deepEqual(errors, [])
    } finally {
      await ctx.close()
      sink.close()
    }
  })

  it('falls back to WebSocket within webtransportTimeoutMs when the node’s advertised WebTransport port is closed', async () => {
    const probe = dgram.createSocket('udp4')
    await new Promise((r) => probe.bind(0, '127.0.0.1', r))
    const closedPort = probe.address().port
    await new Promise((r) => probe.close(r))
    const node = await startNode(['--webtransport-advertise', `https://127.0.0.1:${closedPort}/realtime/v1/webtransport`])
    const { page, errors, ctx } = await openPage(node)
    try {
      const r = await connectInPage(page, { name: uniqueName('closed'), key: 'k', options: { webtransportTimeoutMs: 3000 } })
      assert.equal(r.transport, 'websocket', r.logs.join('\n'))
      assert.ok(r.webtransportDisabled, 'remembered')
      assert.ok(r.ms < 3000 + 1500, `SUBSCRIBED after ${r.ms.toFixed(0)} ms: ${r.logs.join('\n')}`)
      console.log(`# closed WebTransport port: on WebSocket after ${r.ms.toFixed(0)} ms (${r.webtransportDisabled})`)
      await page.evaluate(() => window.client.disconnect())
      assert.deepEqual(errors, [])
    } finally {
      await ctx.close()
    }
  })
  it('a tab whose WebTransport session is lost rejoins and recovers what was published meanwhile, once, in order', async () => {
    const name = uniqueName('wtrecover')
    const { page, ctx } = await openPage()
    const pub = realtime.make().channel(name, { config: { broadcast: { ack: true } } })
    await subscribed(pub)
    const send = async (from, to) => {
      for (let n = from; n < to; n++) assert.equal(await pub.send({ type: 'broadcast', event: 'seq', payload: { n } }), 'ok')
    }
    const transport = await page.evaluate(async (name) => {
      const client = new window.mc.MeshcastClient(`${location.origin}/realtime/v1`, { apikey: 'demo', reconnectAfterMs: () => 1000 })
      window.client = client
      window.got = []
      window.subscribed = 0
      const ch = client.channel(name)
      window.ch = ch
      ch.on('broadcast', { event: 'seq' }, (m) => window.got.push(m.payload.n))
      await new Promise((resolve) => ch.subscribe((s) => s === 'SUBSCRIBED' && (window.subscribed++, resolve())))
      return client.transport
    }, name)
    assert.equal(transport, 'webtransport')
    await send(0, 5)
    await page.waitForFunction(() => window.got.length === 5)
    // The session dies under the tab; clientjs reconnects a second later.
    await page.evaluate(() => window.client.conn.wt.close({ closeCode: 0, reason: 'network lost' }))
    await send(5, 15)
    await page.waitForFunction(() => window.subscribed === 2, null, { timeout: TIMEOUT })
    const after = await page.evaluate(() => ({ recovered: window.ch.recovered, transport: window.client.transport }))
    assert.deepEqual(after, { recovered: true, transport: 'webtransport' })
    await send(15, 20)
    await page.waitForFunction(() => window.got.length >= 20)
    assert.deepEqual(await page.evaluate(() => window.got), Array.from({ length: 20 }, (_, i) => i))
    const m = await scrapeMetrics(server)
    assert.ok(m.get('meshcast_recovery_messages_sent_total') >= 10, 'the 10 missed messages came by recovery')
    await ctx.close()
  })
})
