// Errors the library hands to the caller. Each has a stable `name` to branch on.

/** Largest datagram Chromium sends (`WebTransport.datagrams.maxDatagramSize` in Chromium 148). */
export const MAX_DATAGRAM_BYTES = 1024

/** A transport could not open, or closed. `code`/`reason` follow WebSocket close codes (1006 = no close frame). */
export class TransportError extends Error {
  /** @param {string} message @param {{code?: number, reason?: string, transport?: string, cause?: unknown}} [info] */
  constructor(message, { code = 1006, reason = '', transport, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'TransportError'
    this.code = code
    this.reason = reason
    this.transport = transport
  }
}

/** `sendUnreliable` refused a datagram that would not fit `maxBytes`. Nothing was sent. */
export class DatagramTooLargeError extends RangeError {
  constructor(size, maxBytes) {
    super(`unreliable broadcast of ${size} bytes exceeds the datagram limit of ${maxBytes} bytes (nothing was sent; use send() for large messages)`)
    this.name = 'DatagramTooLargeError'
    this.size = size
    this.maxBytes = maxBytes
  }
}

/** `sendUnreliable` on a channel created without `config.broadcast.unreliable: true`. */
export class UnreliableNotEnabledError extends Error {
  constructor(topic) {
    super(`sendUnreliable on ${topic}: create the channel with config.broadcast.unreliable: true to send datagrams`)
    this.name = 'UnreliableNotEnabledError'
    this.topic = topic
  }
}
