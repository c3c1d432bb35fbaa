// MeshcastClient: one connection to a meshcast node (WebTransport or
// WebSocket), heartbeats, reconnects with jittered exponential backoff, the
// send buffer while connecting, and routing of frames to channels.
import { RetryTimer, exponentialBackoff } from './backoff.js'
import { MeshcastChannel } from './channel.js'
import { TransportError } from './errors.js'
import { SERVER_MAX_FRAME } from './framing.js'
import { decode, encode } from './serializer.js'
import { WebSocketConnection, redact } from './websocket.js'
import { WebTransportConnection, WebTransportUnavailable, discoverWebTransport } from './webtransport.js'

/** The library version (sent as `version` in join payloads). */
export const VERSION = '0.1.0'

/** Defaults of the client options. */
export const DEFAULTS = Object.freeze({
  transports: Object.freeze(['webtransport', 'websocket']),
  timeoutMs: 10000,
  heartbeatIntervalMs: 25000,
  webtransportTimeoutMs: 3000,
})

const TRANSPORT_NAMES = ['webtransport', 'websocket']

/**
 * The socket URL and HTTP base of an endpoint such as `http(s)://host:port/realtime/v1`
 * or `ws(s)://…` (a trailing `/websocket` is dropped; a path-only endpoint is resolved
 * against `location` in a browser).
 * @param {string} endpoint
 * @returns {{socketURL: string, httpBase: string}}
 */
export function endpointURLs(endpoint) {
  let url
  try {
    url = new URL(endpoint, globalThis.location?.href)
  } catch (err) {
    throw new TypeError(`MeshcastClient: endpoint ${JSON.stringify(endpoint)} is not a URL`, { cause: err })
  }
  const scheme = url.protocol.replace(':', '').toLowerCase()
  const secure = scheme === 'https' || scheme === 'wss'
  if (!['http', 'https', 'ws', 'wss'].includes(scheme)) {
    throw new TypeError(`MeshcastClient: endpoint must be http(s):// or ws(s)://, got ${url.protocol}`)
  }
  const path = url.pathname.replace(/\/+$/, '').replace(/\/websocket$/i, '')
  return {
    socketURL: `${secure ? 'wss' : 'ws'}://${url.host}${path}/websocket`,
    httpBase: `${secure ? 'https' : 'http'}://${url.host}${path}`,
  }
}

/**
 * A client of a meshcast node, API close to realtime-js's RealtimeClient.
 * It connects on the first `channel().subscribe()` (or `connect()`), over
 * WebTransport when the runtime has it and the node offers it, else WebSocket.
 */
export class MeshcastClient {
  /**
   * @param {string} endpoint `http(s)://host:port/realtime/v1` or `ws(s)://host:port/realtime/v1`
   * @param {import('./index.js').MeshcastClientOptions} [options]
   */
  constructor(endpoint, options = {}) {
    const params = { ...(options.params ?? {}) }
    if (options.apikey) params.apikey = options.apikey
    if (!params.apikey) throw new Error('MeshcastClient: an API key is required (options.apikey or options.params.apikey)')
    if (options.logLevel) params.log_level = options.logLevel
    this.params = params
    this.apiKey = params.apikey
    this.version = `meshcast-client/${VERSION}`
    const { socketURL, httpBase } = endpointURLs(endpoint)
    this.endPoint = socketURL
    this.httpBase = httpBase
    this.httpEndpoint = `${httpBase}/api/broadcast`
    this.timeoutMs = options.timeoutMs ?? options.timeout ?? DEFAULTS.timeoutMs
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs
    this.webtransportTimeoutMs = options.webtransportTimeoutMs ?? DEFAULTS.webtransportTimeoutMs
    this.reconnectAfterMs = options.reconnectAfterMs ?? exponentialBackoff()
    this.rejoinAfterMs = options.rejoinAfterMs ?? exponentialBackoff()
    this.maxFrameBytes = options.maxFrameBytes ?? SERVER_MAX_FRAME
    this.logger = options.logger ?? null
    this.WebSocket = options.WebSocket ?? options.transport ?? globalThis.WebSocket
    this.WebTransport = options.WebTransport ?? globalThis.WebTransport
    const f = options.fetch ?? globalThis.fetch
    this.fetchImpl = f ? (...args) => f(...args) : null
    this.accessTokenFn = typeof options.accessToken === 'function' ? options.accessToken : null
    this.accessTokenValue = typeof options.accessToken === 'string' ? options.accessToken : null

    const transports = options.transports ?? DEFAULTS.transports
    if (!Array.isArray(transports) || transports.length === 0 || transports.some((t) => !TRANSPORT_NAMES.includes(t))) {
      throw new TypeError(`MeshcastClient: transports must be a non-empty list of ${TRANSPORT_NAMES.map((t) => `'${t}'`).join(', ')}`)
    }
    this.transports = [...new Set(transports)]
    const usable = this.transports.filter((t) => (t === 'websocket' ? !!this.WebSocket : !!this.WebTransport))
    if (usable.length === 0) {
      throw new Error(
        `MeshcastClient: none of the transports ${JSON.stringify(this.transports)} exists in this runtime` +
          (this.transports.includes('websocket') ? ' (in Node < 22 pass a WebSocket constructor, e.g. `WebSocket` from the ws package)' : '')
      )
    }

    /** @type {MeshcastChannel[]} */
    this.channels = []
    this.sendBuffer = []
    this.ref = 0
    this.conn = null
    this.pendingConn = null
    this.cancelAttempt = null
    this.state = 'closed'
    this.lastTransport = null
    this.manualClose = true
    this.connectClock = 0
    /** Why WebTransport is off for this client's lifetime (null while it may be tried). */
    this.webtransportDisabled = null
    this.heartbeatTimer = null
    this.heartbeatTimeoutTimer = null
    this.pendingHeartbeatRef = null
    this.reconnectTimer = new RetryTimer(
      () => this._connectNow(),
      this.reconnectAfterMs,
      (ms, tries) => this.log('transport', `reconnecting in ${ms} ms (attempt ${tries})`, { delayMs: ms, tries })
    )
  }

  /** The transport of the current connection: 'webtransport' | 'websocket'; null before the first connection and after disconnect(). */
  get transport() {
    return this.lastTransport
  }

  log(kind, msg, data) {
    if (!this.logger) return
    try {
      this.logger(kind, msg, data)
    } catch {
      // a logger must not break the client
    }
  }

  /** 'connecting' | 'open' | 'closing' | 'closed' */
  connectionState() {
    return this.state
  }

  isConnected() {
    return this.state === 'open'
  }

  /** The WebSocket URL, query included. */
  endpointURL() {
    return appendQuery(this.endPoint, this._query())
  }

  _query() {
    return { ...this.params, vsn: '2.0.0' }
  }

  /**
   * Creates (or returns the existing) channel `name`.
   * @param {string} name
   * @param {{config?: object}} [params]
   */
  channel(name, params = { config: {} }) {
    const topic = `realtime:${name}`
    const existing = this.channels.find((c) => c.topic === topic)
    if (existing) return existing
    const ch = new MeshcastChannel(name, params, this)
    this.channels.push(ch)
    return ch
  }

  getChannels() {
    return this.channels.slice()
  }

  /** Unsubscribes `channel` and forgets it. */
  removeChannel(channel) {
    return channel.unsubscribe()
  }

  /** Unsubscribes every channel, then disconnects. */
  async removeAllChannels() {
    const out = await Promise.all(this.channels.slice().map((c) => c.unsubscribe()))
    await this.disconnect()
    return out
  }

  _remove(channel) {
    this.channels = this.channels.filter((c) => c !== channel)
  }

  /** Connects (channels call this on subscribe). No-op while connecting or connected. */
  connect() {
    if (this.state === 'connecting' || this.state === 'open') return
    this.manualClose = false
    this.reconnectTimer.cancel()
    if (this.accessTokenFn && this.accessTokenValue === null) this.setAuth().catch((e) => this.log('error', 'accessToken() failed', e))
    this._connectNow()
  }

  _connectNow() {
    if (this.manualClose) return
    const clock = ++this.connectClock
    this.state = 'connecting'
    this.log('transport', 'connecting', { attempt: this.reconnectTimer.tries + 1 })
    this._openTransport(clock).then(
      (conn) => {
        this.pendingConn = null
        if (clock !== this.connectClock) {
          conn.close(1000, 'superseded')
          return
        }
        this.conn = conn
        conn.onmessage = (data, datagram) => this._onMessage(data, datagram)
        conn.onclose = (info) => this._onConnClose(conn, info)
        this._onConnOpen(conn)
      },
      (err) => {
        this.pendingConn = null
        if (clock !== this.connectClock) return
        this.log('transport', `connect failed: ${err.message}`, err)
        this._onConnClose(null, { code: err.code ?? 1006, reason: err.reason || err.message, error: err })
      }
    )
  }

  /** The transports to try now, in order. */
  _candidates() {
    return this.transports.filter((t) => (t === 'websocket' ? !!this.WebSocket : !!this.WebTransport && !this.webtransportDisabled))
  }

  async _openTransport(clock) {
    let lastError = null
    const candidates = this._candidates()
    if (candidates.length === 0) {
      throw new TransportError(`no transport left to try (WebTransport: ${this.webtransportDisabled})`)
    }
    for (let i = 0; i < candidates.length; i++) {
      const name = candidates[i]
      if (clock !== this.connectClock) throw new TransportError('connect superseded')
      if (name === 'websocket') {
        const conn = new WebSocketConnection(this.endpointURL(), { WebSocket: this.WebSocket, openTimeoutMs: this.timeoutMs })
        this.pendingConn = conn
        await conn.open()
        return conn
      }
      const started = Date.now()
      try {
        const conn = await this._openWebTransport(clock)
        this.log('transport', `WebTransport open after ${Date.now() - started} ms`)
        return conn
      } catch (err) {
        lastError = err
        const fallbackLeft = candidates.slice(i + 1).includes('websocket')
        if (err.remember && fallbackLeft) {
          this.webtransportDisabled = err.message
          this.log('transport', `WebTransport not used, WebSocket from now on for this client: ${err.message}`, err)
        } else {
          this.log('transport', `WebTransport attempt failed after ${Date.now() - started} ms: ${err.message}`, err)
        }
      }
    }
    throw lastError
  }

  /** Discovery + session + stream, all within webtransportTimeoutMs. */
  async _openWebTransport(clock) {
    const ms = this.webtransportTimeoutMs
    const abort = new AbortController()
    let phase = 'discovery'
    let conn = null
    let timer = null
    const attempt = (async () => {
      const found = await discoverWebTransport(`${this.httpBase}/webtransport/cert-hash`, { fetch: this.fetchImpl, signal: abort.signal })
      if (clock !== this.connectClock) throw new TransportError('connect superseded')
      phase = 'session'
      conn = new WebTransportConnection(appendQuery(found.url, this._query()), {
        WebTransport: this.WebTransport,
        serverCertificateHashes: found.serverCertificateHashes,
        maxFrame: this.maxFrameBytes,
        log: (kind, msg, data) => this.log(kind, msg, data),
      })
      this.pendingConn = conn
      await conn.open()
      return conn
    })()
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => {
        const remember = phase === 'session'
        reject(new WebTransportUnavailable(`WebTransport ${phase === 'session' ? 'session' : 'discovery'} did not complete within ${ms} ms`, { remember }))
      }, ms)
      // disconnect() ends the attempt at once: no timer or request outlives it.
      this.cancelAttempt = () => reject(new TransportError('connect cancelled by disconnect()'))
    })
    try {
      return await Promise.race([attempt, deadline])
    } catch (err) {
      abort.abort()
      conn?.abort()
      attempt.catch(() => {})
      throw err
    } finally {
      clearTimeout(timer)
      this.cancelAttempt = null
    }
  }

  _onConnOpen(conn) {
    this.state = 'open'
    this.lastTransport = conn.name
    this.log('transport', `connected over ${conn.name} to ${redact(conn.url)}`)
    this.reconnectTimer.reset()
    for (const data of this.sendBuffer.splice(0)) conn.send(data)
    this._resetHeartbeat()
    for (const ch of this.channels.slice()) ch._onSocketOpen()
  }

  _onConnClose(conn, info) {
    if (conn && conn !== this.conn) return
    this.conn = null
    this.state = 'closed'
    this.sendBuffer = []
    this._clearHeartbeats()
    this.log('transport', `closed: ${info.code}${info.reason ? ` ${info.reason}` : ''}`, info)
    const reason = info.error ?? { code: info.code, reason: info.reason }
    for (const ch of this.channels.slice()) ch._onError(reason)
    if (!this.manualClose) this.reconnectTimer.schedule()
  }

  /**
   * Closes the connection and stops every timer: pushes still waiting resolve
   * 'error', joined channels report CLOSED (an intentional close is no
   * error; realtime-js 2.119 reports CHANNEL_ERROR here) and stay on the
   * client (connect() rejoins them). Resolves once the transport is closed.
   * @returns {Promise<'ok'>}
   */
  async disconnect(code = 1000, reason = '') {
    this.manualClose = true
    const clock = ++this.connectClock
    this.reconnectTimer.reset()
    this._clearHeartbeats()
    this.cancelAttempt?.()
    const conns = [this.conn, this.pendingConn].filter(Boolean)
    this.conn = null
    this.pendingConn = null
    this.sendBuffer = []
    const wasOpen = this.state === 'open'
    this.state = conns.length > 0 ? 'closing' : 'closed'
    for (const ch of this.channels.slice()) ch._onDisconnect({ code, reason: wasOpen ? reason : 'disconnected before the connection opened' })
    await Promise.all(conns.map((c) => (c.opened || !c.abort ? c.close(code, reason) : c.abort())))
    if (clock === this.connectClock) {
      this.state = 'closed'
      this.lastTransport = null
    }
    return 'ok'
  }

  _makeRef() {
    this.ref = this.ref >= Number.MAX_SAFE_INTEGER ? 1 : this.ref + 1
    return String(this.ref)
  }

  /** Encodes and sends a message now, or keeps it until the connection opens. */
  _push(msg) {
    const data = encode(msg)
    this.log('push', `${msg.topic} ${msg.event} (${msg.join_ref}, ${msg.ref})`, msg.payload)
    if (this.state === 'open' && this.conn) this.conn.send(data)
    else this.sendBuffer.push(data)
  }

  _clearHeartbeats() {
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer)
    if (this.heartbeatTimeoutTimer !== null) clearTimeout(this.heartbeatTimeoutTimer)
    this.heartbeatTimer = this.heartbeatTimeoutTimer = null
    this.pendingHeartbeatRef = null
  }

  _resetHeartbeat() {
    this._clearHeartbeats()
    this.heartbeatTimer = setTimeout(() => this._sendHeartbeat(), this.heartbeatIntervalMs)
  }

  _sendHeartbeat() {
    this.heartbeatTimer = null
    if (!this.isConnected()) return
    if (this.pendingHeartbeatRef) return this._heartbeatTimeout()
    this.pendingHeartbeatRef = this._makeRef()
    this._push({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: this.pendingHeartbeatRef, join_ref: null })
    this.heartbeatTimeoutTimer = setTimeout(() => this._heartbeatTimeout(), this.heartbeatIntervalMs)
    if (this.accessTokenFn) this.setAuth().catch((e) => this.log('error', 'accessToken() failed', e))
  }

  _heartbeatTimeout() {
    if (!this.pendingHeartbeatRef) return
    const conn = this.conn
    this.log('transport', 'heartbeat timeout: closing and reconnecting')
    this._onConnClose(conn, { code: 1000, reason: 'heartbeat timeout', error: new Error('heartbeat timeout') })
    conn?.close(1000, 'heartbeat timeout')
  }

  _onMessage(data, datagram) {
    let msg
    try {
      msg = decode(data)
    } catch (err) {
      this.log('error', `dropped a frame from the server: ${err.message}`, err)
      return
    }
    const { topic, event, payload, ref, join_ref } = msg
    if (ref && ref === this.pendingHeartbeatRef) {
      if (this.heartbeatTimeoutTimer !== null) clearTimeout(this.heartbeatTimeoutTimer)
      this.heartbeatTimeoutTimer = null
      this.pendingHeartbeatRef = null
      this.heartbeatTimer = setTimeout(() => this._sendHeartbeat(), this.heartbeatIntervalMs)
    }
    this.log('receive', `${payload?.status ?? ''} ${topic} ${event}${ref ? ` (${ref})` : ''}${datagram ? ' [datagram]' : ''}`.trim(), payload)
    for (const ch of this.channels.slice()) {
      if (ch.topic !== topic) continue
      if (join_ref && join_ref !== ch.joinRef) continue
      ch._trigger(event, payload, ref)
    }
  }

  /**
   * Sets the access token sent with joins and, when it changed, pushes it
   * (`access_token`) to every joined channel. Without an argument it asks the
   * `accessToken` callback option for a fresh one.
   * @param {string|null} [token]
   */
  async setAuth(token = null) {
    let value = token
    if (value === null && this.accessTokenFn) {
      try {
        value = await this.accessTokenFn()
      } catch (err) {
        this.log('error', 'accessToken() failed; keeping the current token', err)
        value = this.accessTokenValue
      }
    }
    if (value === null || value === undefined) value = this.accessTokenValue
    if (value === this.accessTokenValue) return
    this.accessTokenValue = value
    for (const ch of this.channels.slice()) ch._setAccessToken(value)
  }

  _restHeaders(contentType) {
    const h = { apikey: this.apiKey, 'Content-Type': contentType }
    if (this.accessTokenValue) h.Authorization = `Bearer ${this.accessTokenValue}`
    return h
  }

  async _fetch(url, init, timeoutMs) {
    if (!this.fetchImpl) throw new Error('no fetch in this runtime: pass options.fetch')
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), timeoutMs)
    try {
      return await this.fetchImpl(url, { ...init, signal: ac.signal })
    } finally {
      clearTimeout(timer)
    }
  }
}

/** `url` with `query`'s entries added to its query string. */
export function appendQuery(url, query) {
  const u = new URL(url)
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) u.searchParams.set(k, String(v))
  return u.href
}
