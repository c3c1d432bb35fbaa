// A push: one message to the server that may get a `phx_reply` with its ref,
// or time out. Mirrors Phoenix's Push, with the receive hooks realtime-js uses.

/**
 * @typedef {'ok' | 'error' | 'timeout'} PushStatus
 */

export class Push {
  /**
   * @param {import('./channel.js').MeshcastChannel} channel
   * @param {string} event
   * @param {() => any} payload
   * @param {number} timeoutMs
   * @param {{expectReply?: boolean}} [opts] expectReply=false: the server sends no reply (broadcast without ack,
   *   access_token), so no timeout is armed and nothing waits
   */
  constructor(channel, event, payload, timeoutMs, { expectReply = true } = {}) {
    this.expectReply = expectReply
    this.channel = channel
    this.event = event
    this.payload = payload
    this.timeoutMs = timeoutMs
    this.ref = null
    this.received = null // {status, response}
    this.hooks = []
    this.timer = null
    this.sent = false
  }

  /** Registers `callback(response)` for a reply status ('ok' | 'error' | 'timeout'); runs at once if already received. */
  receive(status, callback) {
    if (this.received?.status === status) callback(this.received.response)
    this.hooks.push({ status, callback })
    return this
  }

  /** Sends (or re-sends) with a new ref and a fresh timeout. */
  send() {
    if (this.received?.status === 'timeout') return
    this.startTimeout()
    this.sent = true
    this.channel.client._push({
      topic: this.channel.topic,
      event: this.event,
      payload: this.payload(),
      ref: this.ref,
      join_ref: this.channel.joinRef,
    })
  }

  /** Forgets the last reply and sends again with `timeoutMs`. */
  resend(timeoutMs = this.timeoutMs) {
    this.timeoutMs = timeoutMs
    this.reset()
    this.send()
  }

  /** Takes a new ref and starts the reply timeout (also for pushes waiting in a buffer). */
  startTimeout() {
    this.cancelTimeout()
    this.channel._forgetPush(this)
    this.ref = this.channel.client._makeRef()
    if (!this.expectReply) return
    this.channel._awaitReply(this)
    this.timer = setTimeout(() => this.trigger('timeout', {}), this.timeoutMs)
  }

  cancelTimeout() {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  reset() {
    this.channel._forgetPush(this)
    this.cancelTimeout()
    this.ref = null
    this.received = null
    this.sent = false
  }

  /** Stops waiting: no hook runs afterwards. */
  destroy() {
    this.channel._forgetPush(this)
    this.cancelTimeout()
  }

  /** Delivers a reply (or a local outcome) to the hooks. */
  trigger(status, response) {
    this.channel._forgetPush(this)
    this.cancelTimeout()
    this.received = { status, response }
    for (const h of this.hooks.slice()) if (h.status === status) h.callback(response)
  }
}
