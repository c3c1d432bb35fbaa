// Phoenix Channels v2 serializer, as realtime-js 2.119 speaks it (protocol.md §1):
// text frames are JSON arrays [join_ref, ref, topic, event, payload]; a
// broadcast push goes out as binary kind 3 (client -> server); the server's
// binary kind 4 comes back in as a `broadcast` event.

/** Binary kind of a client broadcast push (client -> server). */
export const KIND_PUSH = 3
/** Binary kind of a server broadcast (server -> client). */
export const KIND_BROADCAST = 4
/** `enc` byte: the payload is raw bytes. */
export const ENC_BYTES = 0
/** `enc` byte: the payload is UTF-8 JSON. */
export const ENC_JSON = 1

/** Payload keys that travel as kind-3 `meta` (the rest of the push payload is dropped), as in realtime-js. */
export const META_KEYS = ['persist']

const utf8 = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/** True for an ArrayBuffer or any typed array / DataView. */
export function isBytes(value) {
  return value instanceof ArrayBuffer || ArrayBuffer.isView(value) || value?.constructor?.name === 'ArrayBuffer'
}

function bytesOf(value) {
  if (value instanceof Uint8Array) return value
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
  return new Uint8Array(value)
}

/**
 * Encodes a kind-3 broadcast push:
 * `u8 3, u8 len join_ref, u8 len ref, u8 len topic, u8 len event, u8 len meta, u8 enc`
 * then join_ref, ref, topic, event, meta and the payload (JSON, or bytes with enc 0).
 * Throws a RangeError when a header string is longer than 255 UTF-8 bytes.
 * @param {{joinRef?: string|null, ref?: string|null, topic: string, event: string, meta?: object|null, payload?: any}} push
 * @returns {Uint8Array}
 */
export function encodeBroadcastPush({ joinRef, ref, topic, event, meta, payload }) {
  const fields = [
    ['join_ref', utf8.encode(joinRef ?? '')],
    ['ref', utf8.encode(ref ?? '')],
    ['topic', utf8.encode(topic)],
    ['event', utf8.encode(event)],
    ['meta', utf8.encode(meta && Object.keys(meta).length > 0 ? JSON.stringify(meta) : '')],
  ]
  for (const [name, bytes] of fields) {
    if (bytes.length > 255) throw new RangeError(`broadcast ${name} is ${bytes.length} bytes; at most 255 fit a binary frame`)
  }
  const binary = isBytes(payload)
  const body = binary ? bytesOf(payload) : utf8.encode(JSON.stringify(payload ?? {}))
  const headerLen = 7 + fields.reduce((n, [, b]) => n + b.length, 0)
  const out = new Uint8Array(headerLen + body.length)
  out[0] = KIND_PUSH
  fields.forEach(([, b], i) => (out[1 + i] = b.length))
  out[6] = binary ? ENC_BYTES : ENC_JSON
  let off = 7
  for (const [, b] of fields) {
    out.set(b, off)
    off += b.length
  }
  out.set(body, off)
  return out
}

/**
 * Encodes an outgoing message the way realtime-js does: a `broadcast` push
 * whose payload has a string `event` becomes binary kind 3 (the push payload's
 * `payload` is the user payload, `persist` goes to meta, other keys such as
 * `type` are dropped); everything else is a JSON text array.
 * @param {{join_ref?: string|null, ref?: string|null, topic: string, event: string, payload: any}} msg
 * @returns {string | Uint8Array}
 */
export function encode(msg) {
  const p = msg.payload
  if (msg.event === 'broadcast' && p && !isBytes(p) && typeof p.event === 'string') {
    const meta = {}
    for (const k of META_KEYS) if (k in p) meta[k] = p[k]
    return encodeBroadcastPush({ joinRef: msg.join_ref, ref: msg.ref, topic: msg.topic, event: p.event, meta, payload: p.payload })
  }
  return JSON.stringify([msg.join_ref ?? null, msg.ref ?? null, msg.topic, msg.event, msg.payload])
}

/** An error decoding a frame from the server. */
export class DecodeError extends Error {
  constructor(message, options) {
    super(message, options)
    this.name = 'DecodeError'
  }
}

/**
 * Decodes a kind-4 server broadcast into the message realtime-js yields:
 * `{join_ref: null, ref: null, topic, event: 'broadcast', payload: {type: 'broadcast', event, payload, meta?}}`;
 * an enc-0 payload is an ArrayBuffer.
 * @param {Uint8Array} buf
 */
export function decodeBroadcast(buf) {
  if (buf.length < 5) throw new DecodeError(`kind-4 frame of ${buf.length} bytes is shorter than its 5-byte header`)
  const [topicLen, eventLen, metaLen, enc] = [buf[1], buf[2], buf[3], buf[4]]
  let off = 5
  if (off + topicLen + eventLen + metaLen > buf.length) {
    throw new DecodeError(`kind-4 frame of ${buf.length} bytes announces ${5 + topicLen + eventLen + metaLen} header bytes`)
  }
  const take = (n) => {
    const s = utf8Decoder.decode(buf.subarray(off, off + n))
    off += n
    return s
  }
  const topic = take(topicLen)
  const event = take(eventLen)
  const meta = take(metaLen)
  const rest = buf.subarray(off)
  let payload
  if (enc === ENC_JSON) payload = JSON.parse(utf8Decoder.decode(rest))
  else if (enc === ENC_BYTES) payload = rest.slice().buffer
  else throw new DecodeError(`kind-4 frame has unknown payload encoding ${enc}`)
  const data = { type: 'broadcast', event, payload }
  if (metaLen > 0) data.meta = JSON.parse(meta)
  return { join_ref: null, ref: null, topic, event: 'broadcast', payload: data }
}

/**
 * Decodes a frame from the server: a JSON text array, or a binary kind-4
 * broadcast (an ArrayBuffer or Uint8Array). Throws DecodeError on anything
 * else (realtime-js throws on other binary kinds too).
 * @param {string | ArrayBuffer | Uint8Array} data
 * @returns {{join_ref: string|null, ref: string|null, topic: string, event: string, payload: any}}
 */
export function decode(data) {
  if (typeof data === 'string') {
    let arr
    try {
      arr = JSON.parse(data)
    } catch (err) {
      throw new DecodeError(`text frame is not JSON: ${err.message}`, { cause: err })
    }
    if (!Array.isArray(arr) || arr.length !== 5 || typeof arr[2] !== 'string' || typeof arr[3] !== 'string') {
      throw new DecodeError('text frame is not a Phoenix v2 array [join_ref, ref, topic, event, payload]')
    }
    const [join_ref, ref, topic, event, payload] = arr
    return { join_ref, ref, topic, event, payload }
  }
  if (!isBytes(data)) throw new DecodeError(`frame of type ${typeof data} is neither text nor binary`)
  const buf = bytesOf(data)
  if (buf.length === 0) throw new DecodeError('empty binary frame')
  if (buf[0] !== KIND_BROADCAST) throw new DecodeError(`unknown binary frame kind ${buf[0]} (only kind 4 comes from the server)`)
  try {
    return decodeBroadcast(buf)
  } catch (err) {
    if (err instanceof DecodeError) throw err
    throw new DecodeError(`bad kind-4 frame: ${err.message}`, { cause: err })
  }
}
