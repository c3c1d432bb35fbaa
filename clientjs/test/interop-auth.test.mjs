// Auth: meshcast started with --jwt-secret, driven by realtime-js and raw frames.
import { after, afterEach, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import {
  Clients,
  RawSocket,
  nowSeconds,
  signJWT,
  startServer,
  subscribed,
  subscribeRecording,
  waitFor,
} from './helpers.mjs'

const SECRET = 'interop-test-secret-at-least-32-bytes-long'

let server
let clients
let sockets = []

before(async () => {
  server = await startServer({ jwtSecret: SECRET })
  clients = new Clients(server)
})
afterEach(async () => {
  for (const s of sockets.splice(0)) s.close()
  await clients.closeAll()
})
after(async () => {
  await clients?.closeAll()
  await server?.stop()
})

let topicSeq = 0
const uniqueName = (what) => `${what}-${process.pid}-${++topicSeq}`

const token = (claims = {}, secret = SECRET) =>
  signJWT({ role: 'anon', exp: nowSeconds() + 3600, iat: nowSeconds(), ...claims }, secret)
const anonKey = () => token()

/** Records the `system` messages a channel receives. */
function systemMessages(channel) {
  const got = []
  channel.on('system', {}, (payload) => got.push(payload))
  return got
}

describe('socket auth (upgrade)', () => {
  async function upgrade(query) {
    const s = new RawSocket(`${server.wsURL}/realtime/v1/websocket?${query}`)
    sockets.push(s)
    return waitFor(
      () => {
        if (s.ws.readyState === 1) throw new Error(`upgrade accepted for ?${query}`)
        return s.upgradeError
      },
      5000,
      () => `upgrade refusal for ?${query}; ${s.describe()}`
    )
  }

  const cases = [
    ['a missing apikey', 'vsn=2.0.0', 'API key is missing'],
    ['an apikey that is not a JWT', 'apikey=not-a-jwt&vsn=2.0.0', 'The token provided is not a valid JWT'],
    ['a JWT signed with another secret', () => `apikey=${token({}, 'some-other-secret-of-enough-length!!')}&vsn=2.0.0`, 'Failed to validate JWT signature'],
    ['an expired JWT', () => `apikey=${token({ exp: nowSeconds() - 60 })}&vsn=2.0.0`, /^Token has expired/],
    ['a JWT without role', () => `apikey=${signJWT({ exp: nowSeconds() + 60 }, SECRET)}&vsn=2.0.0`, 'Fields `role` and `exp` are required in JWT'],
  ]
  for (const [what, query, message] of cases) {
    it(`refuses ${what} with 401 {"error": …}`, async () => {
      const err = await upgrade(typeof query === 'function' ? query() : query)
      assert.equal(err.status, 401, `status for ${what}: ${JSON.stringify(err)}`)
      let body
      assert.doesNotThrow(() => (body = JSON.parse(err.body)), `body is not JSON: ${err.body}`)
      if (message instanceof RegExp) assert.match(body.error, message)
      else assert.equal(body.error, message)
    })
  }

  it('realtime-js with a bad apikey never subscribes and reports CHANNEL_ERROR', async () => {
    const client = clients.make({ apikey: token({}, 'some-other-secret-of-enough-length!!') })
    const rec = subscribeRecording(client.channel(uniqueName('badkey')))
    await waitFor(() => rec.has('CHANNEL_ERROR'), 5000, () => `CHANNEL_ERROR (${rec})`)
    assert.ok(!rec.has('SUBSCRIBED'), `subscribed with a bad apikey: ${rec}`)
  })
})

describe('channel auth', () => {
  it('a valid apikey JWT subscribes', async () => {
    const client = clients.make({ apikey: anonKey() })
    await subscribed(client.channel(uniqueName('valid')))
  })

  it('a valid access token can be refreshed without losing the channel', async () => {
    const client = clients.make({ apikey: anonKey() })
    const name = uniqueName('refresh')
    const channel = client.channel(name, { config: { broadcast: { self: true, ack: true } } })
    const sys = systemMessages(channel)
    const got = []
    channel.on('broadcast', { event: 'after' }, (m) => got.push(m))
    const rec = await subscribed(channel)
    await client.setAuth(token({ role: 'authenticated', sub: 'user-1' }))
    // ack: the reply proves the server handled the access_token push (sent before it) and kept the channel.
    assert.equal(await channel.send({ type: 'broadcast', event: 'after', payload: { ok: true } }), 'ok')
    await waitFor(() => got.length === 1, 5000, 'broadcast after refresh')
    assert.deepEqual(sys, [], `unexpected system messages: ${JSON.stringify(sys)}`)
    assert.deepEqual(rec.statuses, ['SUBSCRIBED'])
  })

  it('an access token that expires while joined closes the channel with "Token has expired"', async () => {
    const client = clients.make({ apikey: anonKey() })
    // exp a few seconds ahead; setAuth(token) is manual mode, so realtime-js never refreshes it.
    await client.setAuth(token({ role: 'authenticated', exp: nowSeconds() + 4 }))
    const name = uniqueName('expiry')
    const channel = client.channel(name)
    const sys = systemMessages(channel)
    const rec = await subscribed(channel)
    await waitFor(() => rec.has('CLOSED'), 15000, () => `CLOSED after token expiry (${rec}; system ${JSON.stringify(sys)})`)
    const expired = sys.find((m) => m.extension === 'system' && m.status === 'error')
    assert.ok(expired, `no system error before close: ${JSON.stringify(sys)}`)
    assert.match(expired.message, /^Token has expired/)
    assert.equal(expired.channel, name)
    assert.equal(channel.state, 'closed')
  })

  it('a private channel without permission is refused with Unauthorized', async () => {
    const client = clients.make({ apikey: anonKey() })
    const name = uniqueName('private')
    const rec = subscribeRecording(client.channel(name, { config: { private: true } }))
    await waitFor(() => rec.has('CHANNEL_ERROR'), 5000, () => `CHANNEL_ERROR (${rec})`)
    assert.ok(!rec.has('SUBSCRIBED'))
    assert.match(rec.errors[0]?.message ?? '', /^Unauthorized/, `join error: ${rec}`)
  })

  it('a private channel with an authenticated access token subscribes', async () => {
    const client = clients.make({ apikey: anonKey() })
    await client.setAuth(token({ role: 'authenticated', sub: 'user-2' }))
    await subscribed(client.channel(uniqueName('private-ok'), { config: { private: true } }))
  })

  it('an invalid access_token push gets a system error, then phx_close', async () => {
    const client = clients.make({ apikey: anonKey() })
    const name = uniqueName('badrefresh')
    const channel = client.channel(name)
    const sys = systemMessages(channel)
    const rec = await subscribed(channel)
    await client.setAuth('not-a-jwt')
    await waitFor(() => rec.has('CLOSED'), 5000, () => `CLOSED after invalid access_token (${rec}; system ${JSON.stringify(sys)})`)
    assert.deepEqual(
      sys.map(({ extension, status, message }) => ({ extension, status, message })),
      [{ extension: 'system', status: 'error', message: 'The token provided is not a valid JWT' }]
    )
  })

  const joinCases = [
    ['not a JWT', () => 'not-a-jwt', 'MalformedJWT: The token provided is not a valid JWT'],
    ['signed with another secret', () => token({}, 'some-other-secret-of-enough-length!!'), 'JwtSignatureError: Failed to validate JWT signature'],
    ['expired', () => token({ exp: nowSeconds() - 30 }), /^InvalidJWTToken: Token has expired \d+ seconds ago$/],
    ['without role', () => signJWT({ exp: nowSeconds() + 60 }, SECRET), 'InvalidJWTToken: Fields `role` and `exp` are required in JWT'],
  ]
  for (const [what, make, reason] of joinCases) {
    it(`raw: a join with an access_token ${what} is refused with its reason`, async () => {
      const s = new RawSocket(`${server.wsURL}/realtime/v1/websocket?apikey=${anonKey()}&vsn=2.0.0`)
      sockets.push(s)
      await s.opened()
      const reply = await s.join(`realtime:${uniqueName('joinauth')}`, '1', {}, { access_token: make() })
      assert.equal(reply[4].status, 'error', JSON.stringify(reply))
      if (reason instanceof RegExp) assert.match(reply[4].response.reason, reason)
      else assert.equal(reply[4].response.reason, reason)
    })
  }

  it('raw: an sb_ access_token means the socket apikey', async () => {
    const s = new RawSocket(`${server.wsURL}/realtime/v1/websocket?apikey=${anonKey()}&vsn=2.0.0`)
    sockets.push(s)
    await s.opened()
    const reply = await s.join(`realtime:${uniqueName('sbkey')}`, '1', {}, { access_token: 'sb_publishable_abc123' })
    assert.equal(reply[4].status, 'ok', JSON.stringify(reply))
  })

  it('raw: access_token is never answered; a bad one closes with ref = join_ref', async () => {
    const s = new RawSocket(`${server.wsURL}/realtime/v1/websocket?apikey=${anonKey()}&vsn=2.0.0`)
    sockets.push(s)
    await s.opened()
    const name = uniqueName('rawtoken')
    const topic = `realtime:${name}`
    const joined = await s.join(topic, '1')
    assert.equal(joined[4].status, 'ok', JSON.stringify(joined))

    s.send(['1', '2', topic, 'access_token', { access_token: token({ role: 'authenticated' }) }])
    s.send(['1', '3', topic, 'access_token', { access_token: null }])
    await s.sync('4')
    assert.deepEqual(s.frames.filter((f) => f[1] === '2' || f[1] === '3'), [], 'access_token must get no reply')
    assert.ok(!s.frames.some((f) => f[3] === 'phx_close'), `valid/null tokens closed the channel: ${s.describe()}`)

    s.send(['1', '5', topic, 'access_token', { access_token: 'garbage' }])
    const close = await s.next((f) => f[3] === 'phx_close', 5000, 'phx_close after a bad token')
    assert.deepEqual(close, ['1', '1', topic, 'phx_close', {}])
    const sysIdx = s.frames.findIndex((f) => f[3] === 'system')
    assert.ok(sysIdx >= 0 && sysIdx < s.frames.indexOf(close), `system error must precede phx_close: ${s.describe()}`)
    const sysFrame = s.frames[sysIdx]
    assert.equal(sysFrame[0], '1')
    assert.equal(sysFrame[1], null)
    assert.deepEqual(sysFrame[4], {
      extension: 'system',
      status: 'error',
      message: 'The token provided is not a valid JWT',
      channel: name,
    })
    assert.ok(!s.frames.some((f) => f[1] === '5'), 'a bad access_token must not be answered either')
  })
})

describe('REST auth', () => {
  const body = (topic) => JSON.stringify({ messages: [{ topic, event: 'e', payload: { n: 1 } }] })

  it('refuses a batch without a valid token with 401 {"message":"Unauthorized"}', async () => {
    const res = await fetch(`${server.httpURL}/api/broadcast`, {
      method: 'POST',
      headers: { apikey: 'not-a-jwt', 'content-type': 'application/json' },
      body: body('x'),
    })
    assert.equal(res.status, 401)
    assert.deepEqual(await res.json(), { message: 'Unauthorized' })
  })

  it('accepts a batch with a Bearer token and delivers it', async () => {
    const name = uniqueName('restauth')
    const channel = clients.make({ apikey: anonKey() }).channel(name)
    const got = []
    channel.on('broadcast', { event: 'e' }, (m) => got.push(m))
    await subscribed(channel)
    const res = await fetch(`${server.httpURL}/realtime/v1/api/broadcast`, {
      method: 'POST',
      headers: { apikey: anonKey(), authorization: `Bearer ${token({ role: 'service_role' })}`, 'content-type': 'application/json' },
      body: body(name),
    })
    await res.arrayBuffer()
    assert.equal(res.status, 202)
    await waitFor(() => got.length === 1, 5000, 'authorized REST broadcast delivery')
    assert.deepEqual(got[0].payload, { n: 1 })
  })
})
