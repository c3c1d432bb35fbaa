// A channel: join/leave state machine, listeners, pushes and their buffer,
// presence and postgres_changes dispatch. Mirrors realtime-js's RealtimeChannel
// (and the Phoenix Channel under it) with the same status strings.
import { DatagramTooLargeError, MAX_DATAGRAM_BYTES, UnreliableNotEnabledError } from './errors.js'
import { RetryTimer } from './backoff.js'
import { PresenceState } from './presence.js'
import { Push } from './push.js'
import { bindingMatches, changePayload, comparePos, isChange, matchBindingIds } from './postgres.js'
import { encodeBroadcastPush } from './serializer.js'

/** Status strings passed to `subscribe`'s callback, as realtime-js's REALTIME_SUBSCRIBE_STATES. */
export const SUBSCRIBE_STATES = Object.freeze({
  SUBSCRIBED: 'SUBSCRIBED',
  TIMED_OUT: 'TIMED_OUT',
  CLOSED: 'CLOSED',
  CHANNEL_ERROR: 'CHANNEL_ERROR',
})

/** Channel states, as realtime-js's CHANNEL_STATES. */
export const CHANNEL_STATES = Object.freeze({ closed: 'closed', errored: 'errored', joined: 'joined', joining: 'joining', leaving: 'leaving' })

/** Pushes kept while a channel is not joined (as realtime-js); the oldest is failed when more arrive. */
export const MAX_PUSH_BUFFER = 100

/**
 * Turns what a channel error carries (a close {code, reason}, an Error, a
 * string, a server payload) into an Error, with the texts realtime-js uses.
 */
export function channelError(reason) {
  if (reason instanceof Error) return reason
  if (typeof reason === 'string') return new Error(reason)
  if (reason && typeof reason === 'object') {
    if (typeof reason.code === 'number') {
      const detail = reason.reason ? ` (${reason.reason})` : ''
      return new Error(`socket closed: ${reason.code}${detail}`, { cause: reason })
    }
    return new Error('channel error: transport failure', { cause: reason })
  }
  return new Error('channel error: connection lost')
}

const lower = (s) => (typeof s === 'string' ? s.toLowerCase() : s)

/** A channel on a MeshcastClient. Create it with `client.channel(name, {config})`. */
export class MeshcastChannel {
  /**
   * @param {string} name the channel name (the topic is `realtime:<name>`)
   * @param {{config?: object}} params
   * @param {import('./client.js').MeshcastClient} client
   */
  constructor(name, params, client) {
    this.client = client
    this.subTopic = name
    this.topic = `realtime:${name}`
    const config = {
      broadcast: { ack: false, self: false },
      presence: { key: '', enabled: false },
      private: false,
      ...(params?.config ?? {}),
    }
    this.params = { ...(params ?? {}), config }
    this.private = config.private === true
    if (!this.private && config.broadcast?.replay) {
      // As realtime-js: the server refuses it, so fail where the mistake is.
      throw new Error(`tried to use replay on public channel '${this.topic}'. It must be a private channel.`)
    }
    // Database broadcasts (meta.id) seen lately: a rejoin replays again, and
    // what this channel already delivered is not delivered twice.
    this.seenIds = new Set()
    this.state = CHANNEL_STATES.closed
    this.joinedOnce = false
    this.bindings = []
    this.pushBuffer = []
    this.replies = new Map()
    this.callback = null
    this.closedReported = false
    this.joinCount = 0
    this.tracked = undefined
    this.lastSystemError = null
    /**
     * The broadcast positions this channel holds, `{epoch: offset}` (meshcast's
     * recovery): from the join reply's `positions.broadcast` and every message's
     * `meta.pos`. Sent as `config.recover.broadcast` on every rejoin. null until
     * a server that keeps positions answers a join.
     * The database's stream is `db`, a change position ("0/16B3748:3"),
     * from database broadcasts' `meta.pos` "db:<position>".
     * @type {Record<string, number | string> | null}
     */
    this.positions = null
    /**
     * The postgres_changes position this channel holds (meshcast's recovery):
     * the join reply's `positions.postgres_changes`, raised by every change's
     * `pos`. Sent as `config.recover.postgres_changes` on every rejoin. null
     * until a server that keeps positions answers a join with bindings.
     * @type {string | null}
     */
    this.changesPosition = null
    /** The last join's answer to recovery (every extension asked): true, false (the server said it could not), or undefined (not asked). */
    this.recovered = undefined
    this._unseenOwn = 0
    this.timeoutMs = client.timeoutMs
    this.joinPush = new Push(this, 'phx_join', () => this._joinPayload(), this.timeoutMs)
    this.rejoinTimer = new RetryTimer(
      () => {
        if (this.client.isConnected()) this._rejoin()
      },
      client.rejoinAfterMs,
      (ms, tries) => client.log('channel', `rejoin ${this.topic} in ${ms} ms (attempt ${tries})`, { topic: this.topic, delayMs: ms, tries })
    )
    this.presence = new PresenceState({ joinRef: () => this.joinRef, emit: (p) => this._emit('presence', p) })
    this.joinPush
      .receive('ok', (response) => this._onJoinOk(response ?? {}))
      .receive('error', (response) => {
        if (this.state === CHANNEL_STATES.leaving || this.state === CHANNEL_STATES.closed) return
        this.state = CHANNEL_STATES.errored
        const message = (response && typeof response === 'object' ? Object.values(response).join(', ') : String(response ?? '')) || 'error'
        this.client.log('channel', `join ${this.topic} refused: ${message}`, response)
        this._report(SUBSCRIBE_STATES.CHANNEL_ERROR, new Error(message, { cause: response }))
        if (this.client.isConnected()) this.rejoinTimer.schedule()
      })
      .receive('timeout', () => {
        if (this.state !== CHANNEL_STATES.joining) return
        this.client.log('channel', `join ${this.topic} timed out after ${this.joinPush.timeoutMs} ms`)
        // Tell the server to drop the join it may still be working on (old join_ref), then retry later.
        this.client._push({ topic: this.topic, event: 'phx_leave', payload: {}, ref: this.client._makeRef(), join_ref: this.joinRef })
        this.state = CHANNEL_STATES.errored
        this.joinPush.reset()
        this._report(SUBSCRIBE_STATES.TIMED_OUT)
        if (this.client.isConnected()) this.rejoinTimer.schedule()
      })
  }

  /** The join_ref of the current join (a new one on every join and rejoin), or null. */
  get joinRef() {
    return this.joinPush.ref
  }

  /**
   * Listens to `broadcast` (filter `{event}`, `'*'` = all, case-insensitive),
   * `presence` (`{event: 'sync'|'join'|'leave'|'*'}`), `postgres_changes`
   * (`{event, schema, table?, filter?}`) or `system` (`{}`) messages.
   * Presence and postgres_changes listeners must be added before `subscribe()`.
   * @returns {this}
   */
  on(type, filter, callback) {
    const kind = lower(type)
    if (!['broadcast', 'presence', 'postgres_changes', 'system'].includes(kind)) {
      throw new TypeError(`unknown listener type ${JSON.stringify(type)}: use 'broadcast', 'presence', 'postgres_changes' or 'system'`)
    }
    if (typeof callback !== 'function') throw new TypeError('on(type, filter, callback): callback must be a function')
    const joiningOrJoined = this.state === CHANNEL_STATES.joined || this.state === CHANNEL_STATES.joining
    if (joiningOrJoined && (kind === 'presence' || kind === 'postgres_changes')) {
      throw new Error(`cannot add \`${kind}\` callbacks for ${this.topic} after \`subscribe()\`.`)
    }
    const f = { ...(filter ?? {}) }
    if (kind === 'postgres_changes') {
      if (typeof f.filter?.build === 'function') f.filter = f.filter.build()
      const dup = this.bindings.find((b) => b.type === kind && samePgFilter(b.filter, f))
      if (dup) {
        this.client.log('error', `duplicate \`postgres_changes\` binding for ${this.topic} ignored`, f)
        return this
      }
    }
    this.bindings.push({ type: kind, filter: f, callback, id: undefined })
    return this
  }

  /**
   * Joins the channel (connecting the client if needed). `callback(status, err)`
   * gets 'SUBSCRIBED' on every successful (re)join, 'CHANNEL_ERROR' with the
   * reason (join refused, socket lost, server error), 'TIMED_OUT', and 'CLOSED'
   * (with the server's `system` error, if any, when the server closed it).
   * @param {(status: string, err?: Error) => void} [callback]
   * @param {number} [timeoutMs] join timeout (default: the client's timeoutMs)
   * @returns {this}
   */
  subscribe(callback, timeoutMs = this.timeoutMs) {
    if (this.state !== CHANNEL_STATES.closed) return this
    if (this.joinedOnce) {
      throw new Error(`tried to subscribe to ${this.topic} again after it closed; create a new channel with client.channel()`)
    }
    if (!this.client.channels.includes(this)) this.client.channels.push(this)
    this.client.connect()
    this.joinedOnce = true
    this.callback = callback ?? null
    this.joinTimeoutMs = timeoutMs
    this._rejoin()
    return this
  }

  /** The join payload: config (as realtime-js sends it), access_token when the client has one, version. */
  _joinPayload() {
    const { broadcast, presence, private: isPrivate, postgres_changes_options, recover } = this.params.config
    const presenceEnabled = this.bindings.some((b) => b.type === 'presence') || presence?.enabled === true
    const config = {
      broadcast,
      presence: { ...presence, enabled: presenceEnabled },
      postgres_changes: this._pgBindings().map((b) => b.filter),
      private: isPrivate,
      ...(postgres_changes_options ? { postgres_changes_options } : {}),
    }
    // Recovery: what this channel holds, or what the app passed for the first join.
    if (recover) config.recover = { ...recover }
    if (this.positions) config.recover = { ...(config.recover ?? {}), broadcast: { ...this.positions } }
    if (this.changesPosition && config.postgres_changes.length > 0) {
      config.recover = { ...(config.recover ?? {}), postgres_changes: this.changesPosition }
    }
    this._asked = config.recover?.broadcast
    this._askedChanges = config.postgres_changes.length > 0 ? config.recover?.postgres_changes : undefined
    const payload = { config, version: this.client.version }
    if (this.client.accessTokenValue) payload.access_token = this.client.accessTokenValue
    return payload
  }

  _pgBindings() {
    return this.bindings.filter((b) => b.type === 'postgres_changes')
  }

  _rejoin() {
    if (this.state === CHANNEL_STATES.leaving || this.closedReported) return
    this.state = CHANNEL_STATES.joining
    this.joinPush.resend(this.joinTimeoutMs ?? this.timeoutMs)
  }

  _onJoinOk(response) {
    if (this.state !== CHANNEL_STATES.joining) return
    const pg = this._pgBindings()
    let ids
    try {
      ids = matchBindingIds(
        pg.map((b) => b.filter),
        response.postgres_changes
      )
    } catch (err) {
      this.client.log('channel', `${this.topic}: ${err.message}`, err.cause)
      this.state = CHANNEL_STATES.joined
      this.unsubscribe() // reports CLOSED once the leave is answered
      this._report(SUBSCRIBE_STATES.CHANNEL_ERROR, err)
      return
    }
    pg.forEach((b, i) => (b.id = ids[i]))
    this._adoptPositions(response)
    this.state = CHANNEL_STATES.joined
    this.lastSystemError = null
    this.rejoinTimer.reset()
    for (const push of this.pushBuffer.splice(0)) push.send()
    // A rejoin (after a reconnect or a server-side error) lost this client's presence on the server: track it again.
    // An app that re-tracks on SUBSCRIBED itself (the realtime-js idiom) sends the same payload, which the server ignores.
    if (this.joinCount > 0 && this.tracked !== undefined) {
      this._pushEvent('presence', { type: 'presence', event: 'track', payload: this.tracked })
    }
    this.joinCount++
    if (this.client.accessTokenFn) this.client.setAuth().catch((e) => this.client.log('error', 'access token refresh failed', e))
    this._report(SUBSCRIBE_STATES.SUBSCRIBED, this.recovered === false ? new Error('recovery failed: messages or changes sent while this channel was away are missing (see the system event)') : undefined)
  }

  /**
   * Takes the join reply's positions. After a recovery the missed messages
   * follow the reply, so the channel holds what it asked from until they are
   * in (each raises its stream by meta.pos); otherwise it holds the reply's.
   */
  _adoptPositions(response) {
    this.recovered = typeof response.recovered === 'boolean' ? response.recovered : undefined
    // Each extension's own answer (`recovery`), else the reply's one.
    const each = (ext) => (typeof response.recovery?.[ext] === 'boolean' ? response.recovery[ext] : this.recovered)
    const changes = response.positions?.postgres_changes
    if (typeof changes === 'string') {
      const asked = this._askedChanges
      this.changesPosition = typeof asked === 'string' && each('postgres_changes') === true ? asked : changes
    }
    const pos = response.positions?.broadcast
    if (!pos || typeof pos !== 'object') return
    const asked = this._asked ?? {}
    const recovered = each('broadcast') === true
    const held = {}
    for (const [epoch, offset] of Object.entries(pos)) {
      if (epoch === 'db') {
        // The database's stream: a change position, not an offset.
        if (typeof offset === 'string') held.db = recovered && typeof asked.db === 'string' ? asked.db : offset
        continue
      }
      held[epoch] = recovered ? Number(asked[epoch] ?? 0) : Number(offset)
    }
    this.positions = held
  }

  /**
   * Raises the change position by a change's pos. False for a change before
   * the position the channel holds (it had it already). Changes of one
   * position may come as several messages (bindings that differ in columns).
   */
  _noteChange(payload) {
    const pos = payload?.pos
    if (typeof pos !== 'string' || this.changesPosition === null) return true
    const c = comparePos(pos, this.changesPosition)
    if (c === null) return true
    if (c < 0) return false
    this.changesPosition = pos
    return true
  }

  /**
   * Raises the vector by a broadcast's meta.pos. False when the message is not
   * to be delivered: the channel already had it (a duplicate), it is (re)joining
   * with positions (what it missed follows the join reply), or it skips offsets
   * of a stream it holds (a gap on the way: the channel rejoins, and the server
   * sends what is missing or says it cannot).
   */
  _notePosition(payload) {
    const pos = payload?.meta?.pos
    if (typeof pos !== 'string' || this.positions === null) return true
    if (this.state !== CHANNEL_STATES.joined) return false
    if (pos.startsWith('db:')) return this._noteDBPosition(pos.slice(3))
    const i = pos.indexOf(':')
    const epoch = pos.slice(0, i)
    const offset = Number(pos.slice(i + 1))
    if (i !== 16 || !Number.isSafeInteger(offset)) return true
    const held = this.positions[epoch]
    if (held !== undefined && offset <= held) return false
    if (held !== undefined && offset > held + 1 && offset - held - 1 <= this._unseenOwn) {
      this._unseenOwn -= offset - held - 1 // this channel's own sends (self: false)
    } else if (held !== undefined && offset > held + 1) {
      this.client.log('channel', `${this.topic}: offsets ${held + 1}..${offset - 1} of stream ${epoch} did not arrive; rejoining to recover them`)
      this._rejoin()
      return false
    }
    this.positions[epoch] = offset
    return true
  }

  /**
   * Raises the database stream's position ("db") by a database broadcast's
   * meta.pos "db:<LSN>:<seq>". Its positions are not contiguous: a gap
   * cannot be seen, only a repeat (at or before the position held).
   */
  _noteDBPosition(pos) {
    if (comparePos(pos, pos) === null) return true // not a position: deliver it, keep the one held
    const held = this.positions.db
    const c = typeof held === 'string' ? comparePos(pos, held) : null
    if (c !== null && c <= 0) return false
    this.positions.db = pos
    return true
  }

  _report(status, err) {
    if (!this.callback) return
    try {
      this.callback(status, err)
    } catch (e) {
      this.client.log('error', `subscribe callback of ${this.topic} threw`, e)
    }
  }

  /** True when pushes go out now: the client is connected and the channel joined. */
  canPush() {
    return this.client.isConnected() && this.state === CHANNEL_STATES.joined
  }

  /** Makes a push: sent now when joined, else buffered (its timeout runs) until the next join. */
  _pushEvent(event, payload, timeoutMs = this.timeoutMs, opts) {
    if (!this.joinedOnce) {
      throw new Error(`tried to push '${event}' to '${this.topic}' before joining. Use channel.subscribe() before pushing events`)
    }
    const push = new Push(this, event, () => payload, timeoutMs, opts)
    if (this.canPush()) {
      push.send()
    } else {
      push.startTimeout()
      this.pushBuffer.push(push)
      if (this.pushBuffer.length > MAX_PUSH_BUFFER) {
        const dropped = this.pushBuffer.shift()
        this.client.log('channel', `push buffer of ${this.topic} full: dropped the oldest push (${dropped.event})`)
        dropped.trigger('error', { reason: `push buffer full (${MAX_PUSH_BUFFER} pushes waiting for ${this.topic} to join)` })
      }
    }
    return push
  }

  /**
   * Sends a message. For `type: 'broadcast'` it resolves 'ok' at once unless
   * the channel was joined with `broadcast.ack: true`, then 'ok' on the
   * server's reply, 'error', or 'timed out'. While the channel is (re)joining
   * the message waits in a buffer (at most 100). On a channel that was never
   * subscribed, a broadcast goes over REST (POST …/api/broadcast) as in realtime-js.
   * @param {{type: 'broadcast'|'presence', event: string, payload?: any, [key: string]: any}} args
   * @param {{timeout?: number}} [opts]
   * @returns {Promise<'ok'|'timed out'|'error'>}
   */
  async send(args, opts = {}) {
    if (!this.joinedOnce && args.type === 'broadcast') return this._restBroadcast(args, opts)
    const timeout = opts.timeout ?? this.timeoutMs
    const noReply = args.type === 'broadcast' && !this.params.config.broadcast?.ack
    // Without self, this channel's own broadcasts take offsets it never sees: not a gap.
    if (args.type === 'broadcast' && this.params.config.broadcast?.self !== true) this._unseenOwn++
    return new Promise((resolve) => {
      const push = this._pushEvent(args.type, args, timeout, { expectReply: !noReply })
      if (noReply) {
        resolve('ok')
        return
      }
      push
        .receive('ok', () => resolve('ok'))
        .receive('error', () => resolve('error'))
        .receive('timeout', () => resolve('timed out'))
    })
  }

  /**
   * Sends a broadcast as one datagram (latest-wins traffic: cursors, game
   * state) when the client is on WebTransport and the channel is joined; on
   * WebSocket, or while not joined, it falls back to `send()` (reliable).
   * Rejects with UnreliableNotEnabledError unless the channel was created with
   * `config.broadcast.unreliable: true`, and with DatagramTooLargeError when the
   * encoded datagram exceeds 1024 bytes (checked on every transport, so an app
   * tested on WebSocket behaves the same on WebTransport). Resolves 'ok' once
   * the datagram is handed to the browser; delivery is not confirmed.
   * @param {string} event
   * @param {any} payload a JSON value, or bytes (ArrayBuffer / typed array)
   * @returns {Promise<'ok'|'timed out'|'error'>}
   */
  async sendUnreliable(event, payload) {
    if (this.params.config.broadcast?.unreliable !== true) throw new UnreliableNotEnabledError(this.topic)
    if (typeof event !== 'string' || event === '') throw new TypeError('sendUnreliable(event, payload): event must be a non-empty string')
    const conn = this.client.conn
    const max = conn?.name === 'webtransport' ? conn.maxDatagramSize : MAX_DATAGRAM_BYTES
    const bytes = encodeBroadcastPush({ joinRef: this.joinRef ?? '', ref: '', topic: this.topic, event, payload })
    if (bytes.length > max) throw new DatagramTooLargeError(bytes.length, max)
    if (conn?.name === 'webtransport' && this.canPush() && conn.datagramWriter) {
      await conn.sendDatagram(bytes)
      return 'ok'
    }
    return this.send({ type: 'broadcast', event, payload })
  }

  /**
   * Tracks this client's presence with `payload`; resolves on the server's reply.
   * The payload is tracked again by itself after every rejoin (until untrack()).
   */
  track(payload, opts = {}) {
    this.tracked = payload
    return this.send({ type: 'presence', event: 'track', payload }, opts)
  }

  /** Removes this client's presence. */
  untrack(opts = {}) {
    this.tracked = undefined
    return this.send({ type: 'presence', event: 'untrack' }, opts)
  }

  /** `{key: [{presence_ref, ...fields}]}`: who is present, as realtime-js's presenceState(). */
  presenceState() {
    return this.presence.list()
  }

  /**
   * Leaves the channel: 'CLOSED' is reported and the channel is removed from the client.
   * @returns {Promise<'ok'|'timed out'|'error'>}
   */
  unsubscribe(timeoutMs = this.timeoutMs) {
    this.rejoinTimer.reset()
    if (!this.joinedOnce || this.state === CHANNEL_STATES.closed) {
      this._closed()
      return Promise.resolve('ok')
    }
    const wasConnected = this.canPush() || (this.client.isConnected() && this.state === CHANNEL_STATES.joining)
    this.joinPush.cancelTimeout()
    this.state = CHANNEL_STATES.leaving
    const leave = new Push(this, 'phx_leave', () => ({}), timeoutMs)
    return new Promise((resolve) => {
      leave
        .receive('ok', () => {
          this._closed()
          resolve('ok')
        })
        .receive('timeout', () => {
          this._closed()
          resolve('timed out')
        })
        .receive('error', () => {
          this._closed()
          resolve('error')
        })
      if (wasConnected) leave.send()
      else leave.trigger('ok', {})
    })
  }

  /** The channel is closed for good: stop timers, fail waiting pushes, report CLOSED once. */
  _closed(err) {
    if (this.closedReported) return
    this.closedReported = true
    this.state = CHANNEL_STATES.closed
    this.rejoinTimer.reset()
    this.joinPush.destroy()
    this._failPushes('channel closed')
    this.client._remove(this)
    if (this.joinedOnce) this._report(SUBSCRIBE_STATES.CLOSED, err ?? undefined)
  }

  _failPushes(reason) {
    const pushes = [...this.pushBuffer.splice(0), ...this.replies.values()]
    this.replies.clear()
    for (const p of pushes) {
      if (p === this.joinPush) continue
      // A phx_close that overtakes the leave's reply still means the leave worked.
      p.trigger(p.event === 'phx_leave' && reason === 'channel closed' ? 'ok' : 'error', { reason })
    }
  }

  /** The connection is gone (or the server sent phx_error): CHANNEL_ERROR, rejoin when connected. */
  _onError(reason) {
    if (this.state === CHANNEL_STATES.errored || this.state === CHANNEL_STATES.leaving || this.state === CHANNEL_STATES.closed) return
    this.client.log('channel', `error ${this.topic}`, reason)
    if (this.state === CHANNEL_STATES.joining) this.joinPush.reset()
    this.state = CHANNEL_STATES.errored
    this._report(SUBSCRIBE_STATES.CHANNEL_ERROR, channelError(reason))
    if (this.client.isConnected()) this.rejoinTimer.schedule()
  }

  /** Called by the client when a connection opens. */
  _onSocketOpen() {
    this.rejoinTimer.reset()
    if (this.state === CHANNEL_STATES.errored) this._rejoin()
  }

  /**
   * Called by the client on disconnect(): the app ended the connection, which
   * is no error, so a joined or joining channel reports CLOSED (realtime-js
   * 2.119 reports CHANNEL_ERROR "socket closed: 1000" here); then every timer
   * stops. The channel stays on the client: connect() rejoins it.
   */
  _onDisconnect(reason) {
    if (this.state !== CHANNEL_STATES.errored && this.state !== CHANNEL_STATES.leaving && this.state !== CHANNEL_STATES.closed) {
      this.client.log('channel', `disconnected ${this.topic}`, reason)
      if (this.state === CHANNEL_STATES.joining) this.joinPush.reset()
      this.state = CHANNEL_STATES.errored // connect() rejoins errored channels
      if (this.joinedOnce) this._report(SUBSCRIBE_STATES.CLOSED)
    }
    this.rejoinTimer.reset()
    this.joinPush.cancelTimeout()
    this._failPushes('disconnected')
  }

  /** Called by the client when the access token changes. */
  _setAccessToken(token) {
    if (this.state === CHANNEL_STATES.joined && this.client.isConnected()) {
      this._pushEvent('access_token', { access_token: token }, this.timeoutMs, { expectReply: false })
    }
  }

  _awaitReply(push) {
    this.replies.set(push.ref, push)
  }

  _forgetPush(push) {
    if (push.ref !== null && this.replies.get(push.ref) === push) this.replies.delete(push.ref)
  }

  /** A message for this channel (topic and join_ref already checked by the client). */
  _trigger(event, payload, ref) {
    switch (event) {
      case 'phx_reply': {
        const push = this.replies.get(ref)
        if (push) push.trigger(payload?.status, payload?.response)
        return
      }
      case 'phx_close':
        if (ref && ref !== this.joinRef) return
        this._closed(this.lastSystemError)
        return
      case 'phx_error':
        if (ref && ref !== this.joinRef) return
        this._onError(payload)
        return
      case 'presence_state':
        this.presence.state(payload)
        return
      case 'presence_diff':
        this.presence.diff(payload)
        return
      case 'system':
        // A recovery failure leaves the channel joined: it is no reason for a later close.
        if (payload?.status === 'error' && !String(payload.message).startsWith('recovery failed')) {
          this.lastSystemError = new Error(payload.message ?? 'system error', { cause: payload })
        }
        this._emit('system', payload)
        return
      case 'broadcast':
        if (this._seenBefore(payload?.meta)) return
        if (this._notePosition(payload)) this._emit('broadcast', payload)
        return
      default:
        if (isChange(payload) && this._noteChange(payload)) this._emit('postgres_changes', payload)
    }
  }

  /** Whether a database broadcast was delivered already (a replay after a rejoin repeats it); remembers the last 1000 ids. */
  _seenBefore(meta) {
    const id = meta?.id
    if (typeof id !== 'string') return false
    if (this.seenIds.has(id)) return meta.replayed === true
    this.seenIds.add(id)
    if (this.seenIds.size > 1000) this.seenIds.delete(this.seenIds.values().next().value)
    return false
  }

  _emit(type, payload) {
    for (const b of this.bindings.slice()) {
      if (b.type !== type) continue
      let arg = payload
      if (type === 'postgres_changes') {
        if (!bindingMatches({ id: b.id, event: b.filter.event }, payload)) continue
        arg = changePayload(payload)
      } else if (type === 'broadcast' || type === 'presence') {
        const want = lower(b.filter.event)
        if (want !== '*' && want !== lower(payload?.event)) continue
      }
      try {
        b.callback(arg)
      } catch (e) {
        this.client.log('error', `${type} listener of ${this.topic} threw`, e)
      }
    }
  }

  /**
   * Sends one broadcast over REST (`POST …/api/broadcast/{topic}/events/{event}`), joined or not.
   * Resolves `{success: true}` on 202; rejects with the server's error otherwise.
   */
  async httpSend(event, payload, opts = {}) {
    if (payload === undefined || payload === null) throw new Error('Payload is required for httpSend()')
    const binary = payload instanceof ArrayBuffer || ArrayBuffer.isView(payload)
    const url = new URL(`${this.client.httpEndpoint}/${encodeURIComponent(this.subTopic)}/events/${encodeURIComponent(event)}`)
    if (this.private) url.searchParams.set('private', 'true')
    const res = await this.client._fetch(url.href, {
      method: 'POST',
      headers: this.client._restHeaders(binary ? 'application/octet-stream' : 'application/json'),
      body: binary ? payload : JSON.stringify(payload),
    }, opts.timeout ?? this.timeoutMs)
    if (res.status === 202) {
      await res.body?.cancel?.()
      return { success: true }
    }
    let message = res.statusText || `HTTP ${res.status}`
    try {
      const body = await res.json()
      message = body.error || body.message || message
    } catch {
      // not JSON
    }
    throw new Error(message)
  }

  async _restBroadcast(args, opts) {
    try {
      const res = await this.client._fetch(this.client.httpEndpoint, {
        method: 'POST',
        headers: this.client._restHeaders('application/json'),
        body: JSON.stringify({ messages: [{ topic: this.subTopic, event: args.event, payload: args.payload, private: this.private }] }),
      }, opts.timeout ?? this.timeoutMs)
      await res.body?.cancel?.()
      return res.ok ? 'ok' : 'error'
    } catch (err) {
      return err?.name === 'AbortError' || err?.name === 'TimeoutError' ? 'timed out' : 'error'
    }
  }
}

function samePgFilter(a, b) {
  const same = (x, y) => (x ?? undefined) === (y ?? undefined)
  return a?.event === b?.event && same(a?.schema, b?.schema) && same(a?.table, b?.table) && same(a?.filter, b?.filter) && (a?.select?.join() ?? undefined) === (b?.select?.join() ?? undefined)
}

