// The WebSocket transport: the browser's WebSocket, or a constructor passed in
// (e.g. `ws` in Node), behind the small connection interface the client uses.
import { TransportError } from './errors.js'

/**
 * One WebSocket connection. `open()` resolves once it is open, or rejects with
 * a TransportError; afterwards `onmessage(data)` gets each frame (string or
 * ArrayBuffer) and `onclose({code, reason, wasClean})` runs once.
 */
export class WebSocketConnection {
  /** @param {string} url @param {{WebSocket: any, openTimeoutMs: number}} opts */
  constructor(url, { WebSocket, openTimeoutMs }) {
    this.name = 'websocket'
    this.url = url
    this.WebSocket = WebSocket
    this.openTimeoutMs = openTimeoutMs
    this.ws = null
    this.opened = false
    this.finished = false
    this.closeWaiters = []
    this.onmessage = () => {}
    this.onclose = () => {}
  }

  get bufferedAmount() {
    return this.ws?.bufferedAmount ?? 0
  }

  open() {
    return new Promise((resolve, reject) => {
      let lastError
      let ws
      try {
        ws = new this.WebSocket(this.url)
      } catch (err) {
        reject(new TransportError(`WebSocket to ${redact(this.url)} could not start: ${err.message}`, { transport: 'websocket', cause: err }))
        return
      }
      this.ws = ws
      ws.binaryType = 'arraybuffer'
      let timer = setTimeout(() => {
        timer = null
        lastError = new Error(`not open within ${this.openTimeoutMs} ms`)
        abort(ws)
        this.finish({ code: 1006, reason: lastError.message, wasClean: false })
      }, this.openTimeoutMs)
      const stopTimer = () => {
        if (timer !== null) clearTimeout(timer)
        timer = null
      }
      this.rejectOpen = (info) => {
        stopTimer()
        const why = lastError?.message ? `: ${lastError.message}` : info.reason ? `: ${info.reason}` : ''
        reject(new TransportError(`WebSocket to ${redact(this.url)} failed (close ${info.code})${why}`, { ...info, transport: 'websocket', cause: lastError }))
      }
      ws.onopen = () => {
        stopTimer()
        this.opened = true
        resolve()
      }
      ws.onerror = (ev) => {
        lastError = ev?.error ?? (ev?.message ? new Error(ev.message) : lastError)
      }
      ws.onmessage = (ev) => this.onmessage(ev.data, false)
      ws.onclose = (ev) => this.finish({ code: ev.code ?? 1006, reason: ev.reason ?? '', wasClean: !!ev.wasClean })
    })
  }

  finish(info) {
    if (this.finished) return
    this.finished = true
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null
      this.ws.onerror = () => {}
    }
    if (!this.opened) this.rejectOpen?.(info)
    else this.onclose(info)
    for (const w of this.closeWaiters.splice(0)) w()
  }

  /** @param {string | Uint8Array} data */
  send(data) {
    this.ws.send(data)
  }

  /** Closes with `code`/`reason`; resolves once closed (or after 2 s). */
  close(code = 1000, reason = '') {
    if (this.finished || !this.ws) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        abort(this.ws)
        this.finish({ code, reason, wasClean: false })
      }, 2000)
      this.closeWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
      try {
        if (this.ws.readyState === 0) abort(this.ws)
        else this.ws.close(code, reason)
      } catch {
        abort(this.ws)
      }
      if (this.ws.readyState === 3) this.finish({ code, reason, wasClean: true })
    })
  }
}

function abort(ws) {
  try {
    if (typeof ws.terminate === 'function') ws.terminate()
    else ws.close()
  } catch {
    // already closed
  }
}

/** The URL without its query (the apikey stays out of error messages and logs). */
export function redact(url) {
  const i = url.indexOf('?')
  return i < 0 ? url : url.slice(0, i)
}
