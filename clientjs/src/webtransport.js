// The WebTransport transport (browsers): discovery of the node's WebTransport
// URL and certificate hashes, one client-opened bidirectional stream carrying
// length-prefixed Phoenix frames (framing.js), and datagrams for unreliable
// broadcasts.
import { DEFAULT_MAX_INCOMING_FRAME, FrameDecoder, FramingError, OP_BINARY, OP_CLOSE, OP_TEXT, SERVER_MAX_FRAME, decodeClose, encodeBinary, encodeClose, encodeText } from './framing.js'
import { MAX_DATAGRAM_BYTES, TransportError } from './errors.js'
import { redact } from './websocket.js'

/** Why WebTransport was not used on an attempt. `remember` = stick to WebSocket for the client's lifetime. */
export class WebTransportUnavailable extends TransportError {
  constructor(message, { remember, cause } = {}) {
    super(message, { transport: 'webtransport', cause })
    this.name = 'WebTransportUnavailable'
    this.remember = remember
  }
}

function base64Bytes(b64) {
  const bin = atob(b64)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

/**
 * Asks the node for its WebTransport endpoint:
 * `GET <base>/webtransport/cert-hash` answers 200 `{enabled: true, url, hashes: [{algorithm, value: base64}], not_after}`,
 * or 200 `{enabled: false, message}` on a node without WebTransport (older nodes: 404).
 * @param {string} certHashURL
 * @param {{fetch: typeof fetch, signal?: AbortSignal}} opts
 * @returns {Promise<{url: string, serverCertificateHashes: {algorithm: string, value: Uint8Array}[], notAfter?: string}>}
 * @throws {WebTransportUnavailable} remember=true when the node says it has no WebTransport or answers nonsense,
 *   remember=false when the request itself failed (the node may be down: WebSocket would fail too)
 */
export async function discoverWebTransport(certHashURL, { fetch, signal }) {
  let res
  try {
    res = await fetch(certHashURL, { signal, cache: 'no-store', headers: { accept: 'application/json' } })
  } catch (err) {
    throw new WebTransportUnavailable(`GET ${certHashURL} failed: ${err?.message ?? err}`, { remember: false, cause: err })
  }
  const text = await res.text().catch(() => '')
  if (res.status !== 200) {
    let detail = text.slice(0, 200).trim()
    try {
      detail = JSON.parse(text).error ?? detail
    } catch {
      // not JSON: keep the text
    }
    throw new WebTransportUnavailable(`node offers no WebTransport (GET ${certHashURL}: ${res.status} ${detail})`, { remember: true })
  }
  let body
  try {
    body = JSON.parse(text)
  } catch (err) {
    throw new WebTransportUnavailable(`GET ${certHashURL}: answer is not JSON`, { remember: true, cause: err })
  }
  if (body?.enabled === false) {
    throw new WebTransportUnavailable(`node offers no WebTransport (GET ${certHashURL}: ${String(body.message ?? 'off').slice(0, 200)})`, { remember: true })
  }
  if (typeof body?.url !== 'string' || !/^https:\/\//i.test(body.url)) {
    throw new WebTransportUnavailable(`GET ${certHashURL}: answer has no https "url"`, { remember: true })
  }
  const hashes = Array.isArray(body.hashes) ? body.hashes : []
  let serverCertificateHashes
  try {
    serverCertificateHashes = hashes.map((h) => ({ algorithm: String(h.algorithm), value: base64Bytes(String(h.value)) }))
  } catch (err) {
    throw new WebTransportUnavailable(`GET ${certHashURL}: a hash "value" is not base64`, { remember: true, cause: err })
  }
  return { url: body.url, serverCertificateHashes, notAfter: body.not_after }
}

/**
 * One WebTransport session with meshcast's framing. Interface as
 * WebSocketConnection, plus `sendDatagram(bytes)` and `maxDatagramSize`.
 */
export class WebTransportConnection {
  /**
   * @param {string} url the session URL, query (apikey, vsn) included
   * @param {{WebTransport: any, serverCertificateHashes?: {algorithm: string, value: Uint8Array}[], maxFrame?: number, maxIncomingFrame?: number, log?: Function}} opts
   */
  constructor(url, { WebTransport, serverCertificateHashes = [], maxFrame = SERVER_MAX_FRAME, maxIncomingFrame = DEFAULT_MAX_INCOMING_FRAME, log = () => {} }) {
    this.name = 'webtransport'
    this.url = url
    this.WebTransport = WebTransport
    this.hashes = serverCertificateHashes
    this.maxFrame = maxFrame
    this.decoder = new FrameDecoder({ maxFrame: maxIncomingFrame })
    this.log = log
    this.wt = null
    this.writer = null
    this.datagramWriter = null
    this.opened = false
    this.finished = false
    this.remoteClose = null
    this.pendingBytes = 0
    this.onmessage = () => {}
    this.onclose = () => {}
    this.closeWaiters = []
  }

  get bufferedAmount() {
    return this.pendingBytes
  }

  /** The largest datagram this session sends: the browser's limit, at most 1024 bytes. */
  get maxDatagramSize() {
    const m = this.wt?.datagrams?.maxDatagramSize
    return typeof m === 'number' && m > 0 ? Math.min(m, MAX_DATAGRAM_BYTES) : MAX_DATAGRAM_BYTES
  }

  /** Opens the session and its stream. The caller bounds the time (abort() on a deadline). */
  async open() {
    const options = this.hashes.length > 0 ? { serverCertificateHashes: this.hashes } : {}
    let wt
    try {
      wt = new this.WebTransport(this.url, options)
    } catch (err) {
      throw new WebTransportUnavailable(`WebTransport to ${redact(this.url)} could not start: ${err.message}`, { remember: true, cause: err })
    }
    this.wt = wt
    wt.closed.then(
      (info) => this.sessionClosed({ code: info?.closeCode ?? 1005, reason: info?.reason ?? '', wasClean: true }),
      (err) => this.sessionClosed({ code: 1006, reason: err?.message ?? String(err), wasClean: false })
    )
    try {
      await wt.ready
      if (this.finished) throw new Error('closed while opening')
      const stream = await wt.createBidirectionalStream()
      if (this.finished) throw new Error('closed while opening')
      this.writer = stream.writable.getWriter()
      const dg = wt.datagrams
      const writable = typeof dg?.createWritable === 'function' ? dg.createWritable() : dg?.writable
      this.datagramWriter = writable?.getWriter() ?? null
      this.readStream(stream.readable.getReader())
      if (dg?.readable) this.readDatagrams(dg.readable.getReader())
    } catch (err) {
      this.abort()
      throw new WebTransportUnavailable(`WebTransport to ${redact(this.url)} failed: ${err?.message ?? err}`, { remember: true, cause: err })
    }
    this.opened = true
  }

  /**
   * The session ended. The server's close frame may still sit unread in the
   * stream (the session can end before the reader got to it): let the reader
   * drain for a moment, so the app sees the server's code and reason.
   */
  sessionClosed(info) {
    if (this.finished) return
    this.sessionInfo = info
    if (this.readerDone || !this.streamReader) {
      this.finish(this.remoteClose ?? info)
      return
    }
    const timer = setTimeout(() => this.finish(this.remoteClose ?? info), 250)
    this.onReaderDone = () => {
      clearTimeout(timer)
      this.finish(this.remoteClose ?? info)
    }
  }

  async readStream(reader) {
    this.streamReader = reader
    try {
      await this.readFrames(reader)
    } finally {
      this.readerDone = true
      this.onReaderDone?.()
    }
  }

  async readFrames(reader) {
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) {
          if (this.remoteClose || this.finished) return
          if (this.sessionInfo) return // the session ended; sessionClosed reports it
          this.decoder.end()
          this.fail(new FramingError('the server ended the stream without a close frame', 1002))
          return
        }
        for (const { opcode, body } of this.decoder.push(value)) {
          if (this.finished) return
          if (opcode === OP_TEXT) this.onmessage(new TextDecoder('utf-8', { fatal: true }).decode(body), false)
          else if (opcode === OP_BINARY) this.onmessage(body.slice().buffer, false)
          else if (opcode === OP_CLOSE) {
            this.remoteClose = { ...decodeClose(body), wasClean: true }
            this.shutdown()
            return
          }
        }
      }
    } catch (err) {
      if (this.finished || this.sessionInfo) return
      if (err instanceof FramingError || err instanceof TypeError) this.fail(err)
      else this.finish(this.remoteClose ?? { code: 1006, reason: err?.message ?? String(err), wasClean: false })
    }
  }

  async readDatagrams(reader) {
    this.datagramReader = reader
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done || this.finished) return
        this.onmessage(value.slice().buffer, true)
      }
    } catch {
      // the session ended; readStream / closed report it
    }
  }

  /** A framing violation by the server: tell it (close frame) and end. */
  fail(err) {
    this.log('transport', `webtransport protocol error: ${err.message}`)
    this.close(err.code ?? 1002, err.message)
  }

  /** @param {string | Uint8Array} data */
  send(data) {
    if (this.finished || !this.writer) throw new TransportError('WebTransport session is closed', { transport: 'webtransport' })
    const frame = typeof data === 'string' ? encodeText(data, this.maxFrame) : encodeBinary(data, this.maxFrame)
    this.write(frame)
  }

  write(frame) {
    this.pendingBytes += frame.length
    return this.writer.write(frame).then(
      () => (this.pendingBytes -= frame.length),
      (err) => {
        this.pendingBytes -= frame.length
        if (!this.finished) this.finish(this.remoteClose ?? { code: 1006, reason: `stream write failed: ${err?.message ?? err}`, wasClean: false })
      }
    )
  }

  /**
   * Sends one datagram (the caller checked its size).
   * @param {Uint8Array} bytes
   */
  sendDatagram(bytes) {
    if (this.finished || !this.datagramWriter) throw new TransportError('WebTransport session has no datagram writer', { transport: 'webtransport' })
    return this.datagramWriter.write(bytes)
  }

  /** Closes: a close frame on the stream, then the session with the same code. Resolves once closed (at most 2 s). */
  close(code = 1000, reason = '') {
    if (this.finished) return Promise.resolve()
    let flushed = null
    if (!this.remoteClose && this.writer) {
      try {
        flushed = this.write(encodeClose(code, reason))
      } catch {
        // the stream is gone; the session close below still tells the server
      }
    }
    this.localClose = { code, reason, wasClean: true }
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.finish(this.localClose), 2000)
      this.closeWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
      // Let the close frame go out before the session ends.
      const closeSession = () => {
        try {
          this.wt?.close({ closeCode: code, reason: reason.slice(0, 100) })
        } catch {
          // already closed
        }
        this.finish(this.localClose)
      }
      if (flushed) flushed.then(closeSession, closeSession)
      else closeSession()
    })
  }

  /** After the server's close frame: end the session and report its code. */
  shutdown() {
    try {
      this.wt?.close({ closeCode: this.remoteClose.code, reason: this.remoteClose.reason.slice(0, 100) })
    } catch {
      // already closed
    }
    this.finish(this.remoteClose)
  }

  /** Ends at once, without a close frame (stall or failed open). */
  abort() {
    try {
      this.wt?.close({ closeCode: 1000, reason: 'abandoned' })
    } catch {
      // not open yet or already closed
    }
    this.finish({ code: 1006, reason: 'abandoned', wasClean: false })
  }

  finish(info) {
    if (this.finished) return
    this.finished = true
    for (const r of [this.streamReader, this.datagramReader]) r?.cancel().catch(() => {})
    if (this.opened) this.onclose(info)
    for (const w of this.closeWaiters.splice(0)) w()
  }
}
