// Reconnect and rejoin delays: jittered exponential backoff, and the small
// retry timer that uses it.

/**
 * Default backoff: attempt n waits a random time in
 * `[nominal * (1 - jitter), nominal]`, nominal = min(maxMs, initialMs * factor^(n-1)).
 * With the defaults: 0.5–1 s, 1–2 s, 2–4 s, 4–8 s, then 5–10 s.
 */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 1000, maxMs: 10000, factor: 2, jitter: 0.5 })

/**
 * Makes a `(tries) => ms` schedule (tries counts from 1) with jittered exponential growth.
 * @param {{initialMs?: number, maxMs?: number, factor?: number, jitter?: number, random?: () => number}} [opts]
 *   jitter in [0, 1]: the share of the nominal delay that is randomised away; random: [0, 1) source (Math.random).
 * @returns {(tries: number) => number}
 */
export function exponentialBackoff({
  initialMs = DEFAULT_BACKOFF.initialMs,
  maxMs = DEFAULT_BACKOFF.maxMs,
  factor = DEFAULT_BACKOFF.factor,
  jitter = DEFAULT_BACKOFF.jitter,
  random = Math.random,
} = {}) {
  if (!(initialMs > 0) || !(maxMs >= initialMs) || !(factor >= 1) || !(jitter >= 0 && jitter <= 1)) {
    throw new RangeError('exponentialBackoff: need initialMs > 0, maxMs >= initialMs, factor >= 1, 0 <= jitter <= 1')
  }
  const schedule = (tries) => {
    const nominal = nominalDelay(tries, { initialMs, maxMs, factor })
    return Math.round(nominal * (1 - jitter * random()))
  }
  schedule.bounds = (tries) => {
    const nominal = nominalDelay(tries, { initialMs, maxMs, factor })
    return [Math.round(nominal * (1 - jitter)), nominal]
  }
  return schedule
}

/** The un-jittered delay of attempt `tries` (from 1). */
export function nominalDelay(tries, { initialMs, maxMs, factor }) {
  return Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, tries - 1)))
}

/**
 * A retry timer: `schedule()` runs `callback` after `delay(tries + 1)` ms and
 * counts the try; `reset()` cancels it and starts the count again.
 */
export class RetryTimer {
  /**
   * @param {() => void} callback
   * @param {(tries: number) => number} delay
   * @param {(ms: number, tries: number) => void} [onSchedule] observer (logging)
   */
  constructor(callback, delay, onSchedule) {
    this.callback = callback
    this.delay = delay
    this.onSchedule = onSchedule
    this.tries = 0
    this.timer = null
  }

  get pending() {
    return this.timer !== null
  }

  reset() {
    this.tries = 0
    this.cancel()
  }

  cancel() {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  schedule() {
    this.cancel()
    const tries = this.tries + 1
    const ms = Math.max(0, Number(this.delay(tries)) || 0)
    this.onSchedule?.(ms, tries)
    this.timer = setTimeout(() => {
      this.timer = null
      this.tries = tries
      this.callback()
    }, ms)
  }
}
