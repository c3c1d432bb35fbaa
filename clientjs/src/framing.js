// Framing of Phoenix frames on meshcast's WebTransport stream: each frame is
// `u32 big-endian N` followed by N bytes: `u8 opcode` + body.
//   1 = text   (a UTF-8 Phoenix v2 JSON array)
//   2 = binary (a Phoenix binary frame: kind 3 client -> server, kind 4 server -> client)
//   8 = close  (`u16 big-endian code` + UTF-8 reason; WebSocket close codes)
// N >= 1. The server refuses N above its max frame size (5 MiB + 1 by default).

export const OP_TEXT = 1
export const OP_BINARY = 2
export const OP_CLOSE = 8

/** Largest N the server accepts by default: 5 MiB of body + the opcode byte. */
export const SERVER_MAX_FRAME = 5 * 1024 * 1024 + 1
/** Largest N this client accepts from the server by default (a big presence_state may exceed 5 MiB). */
export const DEFAULT_MAX_INCOMING_FRAME = 64 * 1024 * 1024

const utf8 = new TextEncoder()

/** A framing violation on the WebTransport stream. `code` is the WebSocket close code that fits. */
export class FramingError extends Error {
  constructor(message, code = 1002) {
    super(message)
    this.name = 'FramingError'
    this.code = code
  }
}

/**
 * Encodes one frame: the length prefix, the opcode and the body.
 * @param {number} opcode
 * @param {Uint8Array} body
 * @param {number} [maxFrame] largest N allowed (throws FramingError with code 1009 above it)
 * @returns {Uint8Array}
 */
export function encodeFrame(opcode, body, maxFrame = SERVER_MAX_FRAME) {
  const n = 1 + body.length
  if (n > maxFrame) throw new FramingError(`frame of ${n} bytes exceeds the limit of ${maxFrame}`, 1009)
  const out = new Uint8Array(4 + n)
  new DataView(out.buffer).setUint32(0, n)
  out[4] = opcode
  out.set(body, 5)
  return out
}

/** Encodes a Phoenix text frame (opcode 1). */
export const encodeText = (text, maxFrame) => encodeFrame(OP_TEXT, utf8.encode(text), maxFrame)
/** Encodes a Phoenix binary frame (opcode 2). */
export const encodeBinary = (bytes, maxFrame) => encodeFrame(OP_BINARY, bytes, maxFrame)

/**
 * Encodes a close frame (opcode 8): `u16 code` + UTF-8 reason (cut to 123 bytes, as WebSocket allows).
 * @param {number} code
 * @param {string} [reason]
 */
export function encodeClose(code, reason = '') {
  let r = utf8.encode(reason)
  if (r.length > 123) r = r.subarray(0, 123)
  const body = new Uint8Array(2 + r.length)
  new DataView(body.buffer).setUint16(0, code)
  body.set(r, 2)
  return encodeFrame(OP_CLOSE, body)
}

/**
 * Decodes the body of a close frame.
 * @param {Uint8Array} body
 * @returns {{code: number, reason: string}}
 */
export function decodeClose(body) {
  if (body.length === 0) return { code: 1005, reason: '' }
  if (body.length === 1) throw new FramingError('close frame body of 1 byte (a close code takes 2)')
  const code = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint16(0)
  const reason = new TextDecoder('utf-8', { fatal: false }).decode(body.subarray(2))
  return { code, reason }
}

/**
 * Incremental decoder for the stream: feed it chunks as they arrive (split or
 * merged anyhow), get whole frames back. Throws FramingError on N = 0, N above
 * `maxFrame`, or an unknown opcode; after an error the decoder stays failed.
 */
export class FrameDecoder {
  /** @param {{maxFrame?: number}} [opts] */
  constructor({ maxFrame = DEFAULT_MAX_INCOMING_FRAME } = {}) {
    this.maxFrame = maxFrame
    this.chunks = []
    this.buffered = 0
    this.need = 0 // N of the frame being read, 0 while reading a length prefix
    this.failed = null
  }

  /** Bytes held that do not form a whole frame yet. */
  get pending() {
    return this.buffered
  }

  /**
   * @param {Uint8Array} chunk
   * @returns {{opcode: number, body: Uint8Array}[]} the frames completed by this chunk
   */
  push(chunk) {
    if (this.failed) throw this.failed
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.buffered += chunk.length
    }
    const frames = []
    try {
      for (;;) {
        if (this.need === 0) {
          if (this.buffered < 4) break
          const n = new DataView(this.take(4).buffer).getUint32(0)
          if (n === 0) throw new FramingError('frame length 0 (a frame holds at least its opcode)')
          if (n > this.maxFrame) throw new FramingError(`frame length ${n} exceeds the limit of ${this.maxFrame}`, 1009)
          this.need = n
        }
        if (this.buffered < this.need) break
        const frame = this.take(this.need)
        this.need = 0
        const opcode = frame[0]
        if (opcode !== OP_TEXT && opcode !== OP_BINARY && opcode !== OP_CLOSE) {
          throw new FramingError(`unknown frame opcode ${opcode}`)
        }
        frames.push({ opcode, body: frame.subarray(1) })
      }
    } catch (err) {
      this.failed = err
      throw err
    }
    return frames
  }

  /** Call when the stream ends: throws FramingError if it ended inside a frame. */
  end() {
    if (this.failed) throw this.failed
    if (this.need > 0) {
      throw new FramingError(`stream ended inside a frame: ${this.need} bytes announced, ${this.buffered} received`)
    }
    if (this.buffered > 0) throw new FramingError(`stream ended inside a length prefix (${this.buffered} of 4 bytes)`)
  }

  /** Removes and returns the first `n` buffered bytes as one contiguous array. */
  take(n) {
    const first = this.chunks[0]
    if (first.length === n) {
      this.chunks.shift()
      this.buffered -= n
      return first.byteOffset === 0 && first.buffer.byteLength === n ? first : first.slice()
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n)
      this.buffered -= n
      return first.slice(0, n)
    }
    const out = new Uint8Array(n)
    let off = 0
    while (off < n) {
      const c = this.chunks[0]
      const k = Math.min(c.length, n - off)
      out.set(c.subarray(0, k), off)
      off += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    this.buffered -= n
    return out
  }
}
