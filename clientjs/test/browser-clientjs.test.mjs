// clientjs in a real browser: Debian's Chromium (playwright-core) loads the
// bundle a meshcast node serves and picks its transport: WebTransport first,
// WebSocket fallback. Until the node serves WebTransport (its cert-hash
// endpoint answers 404), the WebTransport test skips itself and the fallback
// tests show the client ends on WebSocket: at once when the node says no, and
// within webtransportTimeoutMs when WebTransport stalls or fails.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { Clients, startServer, subscribed, waitFor } from './helpers.mjs'

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
const haveChromium = existsSync(CHROMIUM)
const skip = haveChromium ? false : `no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`
const TIMEOUT = 15000

let server
let browser
let realtime
let bundlePath
let serverWebTransport = null // the cert-hash answer when the node offers WebTransport

before(async () => {
  if (!haveChromium) return
  server = await startServer()
  realtime = new Clients(server)
  // The route every node will serve; until then the demo file server has it at /meshcast.js.
  bundlePath = (await fetch(`${server.httpURL}/clientjs/meshcast.js`)).ok ? '/clientjs/meshcast.js' : '/meshcast.js'
  const res = await fetch(`${server.httpURL}/realtime/v1/webtransport/cert-hash`)
  if (res.status === 200) serverWebTransport = await res.json()
  else await res.arrayBuffer()
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
})

let seq = 0
const uniqueName = (what) => `${what}-${process.pid}-${++seq}`

/** A page on the node's origin (a secure context: http://127.0.0.1) with the bundle's exports on window.mc. */
async function openPage() {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  page.setDefaultTimeout(TIMEOUT)
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(`${server.httpURL}/healthz`)
  await page.evaluate(async (src) => {
    window.mc = await import(src)
  }, bundlePath)
  return { page, errors, ctx }
}

/**
 * In the page: makes a client and a channel, subscribes, and returns how long
 * SUBSCRIBED took and which transport won. The client is window.client, the channel window.ch,
 * broadcasts received are window.got.
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

/** Serves a stub cert-hash answer to the page (the node has no WebTransport yet) pointing at `url`. Returns a hit counter. */
async function stubCertHash(page, url) {
  const hits = { n: 0 }
  await page.route('**/realtime/v1/webtransport/cert-hash', (route) => {
    hits.n++
    route.fulfill({
      status: 200,
      contentType: 'application/json',
      body: JSON.stringify({ url, hashes: [{ algorithm: 'sha-256', value: randomBytes(32).toString('base64') }], not_after: new Date(Date.now() + 864e5).toISOString() }),
    })
  })
  return hits
}

describe('clientjs in Chromium: WebTransport first, WebSocket fallback', { skip }, () => {
  it('connects over WebTransport with serverCertificateHashes: broadcasts, presence and datagrams', {
    skip: haveChromium && !serverWebTransport ? 'the node answers 404 at /realtime/v1/webtransport/cert-hash (no WebTransport on the server yet)' : false,
  }, async () => {
    const name = uniqueName('wt')
    const a = await openPage()
    const b = await openPage()
    const ra = await connectInPage(a.page, { name, key: 'page-a' })
    const rb = await connectInPage(b.page, { name, key: 'page-b' })
    assert.equal(ra.transport, 'webtransport', ra.logs.join('\n'))
    assert.equal(rb.transport, 'webtransport', rb.logs.join('\n'))
    const rt = realtime.make().channel(name, { config: { presence: { key: 'node' } } })
    const gotRt = []
    rt.on('broadcast', { event: '*' }, (m) => gotRt.push(m))
    rt.on('presence', { event: 'sync' }, () => {})
    await subscribed(rt)
    await rt.track({ who: 'node' })
    await a.page.evaluate(() => window.ch.track({ who: 'a' }))
    await a.page.evaluate(() => window.ch.send({ type: 'broadcast', event: 'chat', payload: { from: 'a' } }))
    await waitFor(() => gotRt.some((m) => m.payload?.from === 'a'), 5000, 'realtime-js gets the WebTransport page’s broadcast')
    await rt.send({ type: 'broadcast', event: 'chat', payload: { from: 'node' } })
    await a.page.waitForFunction(() => window.got.some((m) => m.payload.from === 'node'))
    await waitFor(() => Object.keys(rt.presenceState()).includes('page-a'), 5000, 'realtime-js sees the page’s presence')
    await a.page.waitForFunction(() => Object.keys(window.ch.presenceState()).includes('node'))
    // Datagram cursors from page b reach page a (unreliable: send a few, expect at least one).
    await b.page.evaluate(async () => {
      for (let i = 0; i < 20; i++) await window.ch.sendUnreliable('cursor', { x: i })
    })
    await a.page.waitForFunction(() => window.got.some((m) => m.event === 'cursor'))
    const tooBig = await b.page.evaluate(() => window.ch.sendUnreliable('cursor', { s: 'x'.repeat(2000) }).then(() => 'sent', (e) => `${e.name}: ${e.size}/${e.maxBytes}`))
    assert.match(tooBig, /^DatagramTooLargeError: \d+\/1024$/)
    for (const p of [a, b]) {
      await p.page.evaluate(() => window.client.disconnect())
      assert.deepEqual(p.errors, [])
      await p.ctx.close()
    }
  })

  it('ends on WebSocket well within the timeout when the node offers no WebTransport, and works with realtime-js', async () => {
    if (serverWebTransport) return // covered above once the node serves WebTransport
    const name = uniqueName('ws')
    const { page, errors, ctx } = await openPage()
    const r = await connectInPage(page, { name, key: 'browser' })
    assert.equal(r.hasWebTransport, true, 'Chromium on a secure origin has WebTransport')
    assert.equal(r.transport, 'websocket', r.logs.join('\n'))
    assert.match(r.webtransportDisabled, /node offers no WebTransport .*: 404/)
    assert.ok(r.ms < 1000, `SUBSCRIBED after ${r.ms.toFixed(0)} ms (webtransportTimeoutMs is 3000): ${r.logs.join('\n')}`)

    const rt = realtime.make().channel(name, { config: { presence: { key: 'node' } } })
    const gotRt = []
    rt.on('broadcast', { event: 'chat' }, (m) => gotRt.push(m))
    rt.on('presence', { event: 'sync' }, () => {})
    await subscribed(rt)
    await rt.track({ who: 'node' })
    assert.equal(await page.evaluate(() => window.ch.track({ who: 'browser' })), 'ok')
    assert.equal(await page.evaluate(() => window.ch.send({ type: 'broadcast', event: 'chat', payload: { from: 'browser' } })), 'ok')
    await waitFor(() => gotRt.length === 1, 5000, 'realtime-js gets the page’s broadcast')
    assert.deepEqual(gotRt[0].payload, { from: 'browser' })
    assert.equal(await rt.send({ type: 'broadcast', event: 'chat', payload: { from: 'node' } }), 'ok')
    await page.waitForFunction(() => window.got.some((m) => m.payload.from === 'node'))
    await waitFor(() => Object.keys(rt.presenceState()).includes('browser'), 5000, () => `realtime-js sees the page: ${JSON.stringify(rt.presenceState())}`)
    await page.waitForFunction(() => Object.keys(window.ch.presenceState()).sort().join() === 'browser,node')
    // sendUnreliable on WebSocket is a reliable broadcast; the datagram size limit still applies.
    assert.equal(await page.evaluate(() => window.ch.sendUnreliable('chat', { from: 'browser-unreliable' })), 'ok')
    await waitFor(() => gotRt.length === 2, 5000, 'the WebSocket fallback of sendUnreliable is delivered')
    assert.equal(await page.evaluate(() => window.ch.sendUnreliable('chat', { s: 'x'.repeat(2000) }).then(() => 'sent', (e) => e.name)), 'DatagramTooLargeError')
    await page.evaluate(() => window.client.disconnect())
    assert.deepEqual(errors, [])
    await ctx.close()
  })

  it('falls back to WebSocket after webtransportTimeoutMs when WebTransport stalls, and remembers it', async () => {
    // A UDP socket that swallows every packet: the QUIC handshake never gets an answer.
    const sink = dgram.createSocket('udp4')
    await new Promise((r) => sink.bind(0, '127.0.0.1', r))
    let packets = 0
    sink.on('message', () => packets++)
    const { page, errors, ctx } = await openPage()
    try {
      const hits = await stubCertHash(page, `https://127.0.0.1:${sink.address().port}/realtime/v1/webtransport`)
      const r = await connectInPage(page, { name: uniqueName('stall'), key: 'k', options: { webtransportTimeoutMs: 1000 } })
      assert.equal(r.transport, 'websocket', r.logs.join('\n'))
      assert.ok(packets > 0, 'Chromium did try WebTransport (QUIC packets reached the sink)')
      assert.match(r.webtransportDisabled, /session did not complete within 1000 ms/)
      assert.ok(r.ms >= 990 && r.ms < 2500, `SUBSCRIBED after ${r.ms.toFixed(0)} ms (timeout 1000 ms): ${r.logs.join('\n')}`)
      assert.equal(hits.n, 1)
      // Remembered for the client's lifetime: a reconnect goes straight to WebSocket.
      const again = await page.evaluate(async () => {
        const t0 = performance.now()
        await window.client.disconnect() // channels stay on the client, errored; connect() rejoins them
        window.client.connect()
        while (window.ch.state !== 'joined') await new Promise((r) => setTimeout(r, 10))
        return { ms: performance.now() - t0, transport: window.client.transport }
      })
      assert.equal(again.transport, 'websocket')
      assert.ok(again.ms < 1000, `rejoined after ${again.ms.toFixed(0)} ms`)
      assert.equal(hits.n, 1, 'no second WebTransport attempt')
      await page.evaluate(() => window.client.disconnect())
      assert.deepEqual(errors, [])
    } finally {
      await ctx.close()
      sink.close()
    }
  })

  it('falls back to WebSocket within webtransportTimeoutMs when the WebTransport port is closed', async () => {
    const probe = dgram.createSocket('udp4')
    await new Promise((r) => probe.bind(0, '127.0.0.1', r))
    const closedPort = probe.address().port
    await new Promise((r) => probe.close(r))
    const { page, errors, ctx } = await openPage()
    try {
      await stubCertHash(page, `https://127.0.0.1:${closedPort}/realtime/v1/webtransport`)
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
})
