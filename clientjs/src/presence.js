// Presence sync (protocol.md §4 "Client sync"), the algorithm of Phoenix's
// Presence that realtime-js uses: a `presence_state` is diffed against the
// local state; a `presence_diff` applies joins, then leaves; diffs that arrive
// before the current join's first state are buffered and applied after it.

const clone = (v) => JSON.parse(JSON.stringify(v))

/** Copies `obj` into a prototype-free object (presence keys may be "__proto__"). */
function nullProto(obj) {
  const out = Object.create(null)
  for (const k of Object.getOwnPropertyNames(obj ?? {})) out[k] = obj[k]
  return out
}

/**
 * Applies a server state snapshot to `state`: keys and metas missing from the
 * snapshot leave, new ones join. Calls onJoin(key, current, joined) and
 * onLeave(key, current, left). Returns the new state (the input is not changed).
 * @param {Record<string, {metas: object[]}>} state
 * @param {Record<string, {metas: object[]}>} snapshot
 */
export function syncState(state, snapshot, onJoin, onLeave) {
  const current = nullProto(clone(state))
  const next = nullProto(clone(snapshot))
  const joins = Object.create(null)
  const leaves = Object.create(null)
  for (const key of Object.getOwnPropertyNames(current)) {
    if (!next[key]) leaves[key] = current[key]
  }
  for (const key of Object.getOwnPropertyNames(next)) {
    const now = next[key]
    const before = current[key]
    if (!before) {
      joins[key] = now
      continue
    }
    const nowRefs = now.metas.map((m) => m.phx_ref)
    const beforeRefs = before.metas.map((m) => m.phx_ref)
    const joined = now.metas.filter((m) => !beforeRefs.includes(m.phx_ref))
    const left = before.metas.filter((m) => !nowRefs.includes(m.phx_ref))
    if (joined.length > 0) joins[key] = { ...now, metas: joined }
    if (left.length > 0) leaves[key] = { ...clone(before), metas: left }
  }
  return syncDiff(current, { joins, leaves }, onJoin, onLeave)
}

/**
 * Applies a `presence_diff` to `state`: each joined key's metas are replaced by
 * the join's (metas of the key whose refs are not in the join are kept, first);
 * then leaves remove metas by `phx_ref` and drop keys left empty.
 * Returns the new state.
 */
export function syncDiff(state, diff, onJoin = () => {}, onLeave = () => {}) {
  const out = nullProto(state)
  const { joins = {}, leaves = {} } = clone(diff ?? {})
  for (const key of Object.getOwnPropertyNames(joins)) {
    const before = out[key]
    out[key] = clone(joins[key])
    if (before) {
      const joinedRefs = out[key].metas.map((m) => m.phx_ref)
      out[key].metas.unshift(...before.metas.filter((m) => !joinedRefs.includes(m.phx_ref)))
    }
    onJoin(key, before, joins[key])
  }
  for (const key of Object.getOwnPropertyNames(leaves)) {
    const before = out[key]
    if (!before) continue
    const gone = leaves[key].metas.map((m) => m.phx_ref)
    before.metas = before.metas.filter((m) => !gone.includes(m.phx_ref))
    onLeave(key, before, leaves[key])
    if (before.metas.length === 0) delete out[key]
  }
  return out
}

/** One meta as the app sees it: `phx_ref` renamed `presence_ref`, `phx_ref_prev` dropped. */
function appMetas(entry) {
  return (entry?.metas ?? []).map((meta) => {
    const out = Object.defineProperties({}, Object.getOwnPropertyDescriptors(meta))
    out.presence_ref = out.phx_ref
    delete out.phx_ref
    delete out.phx_ref_prev
    return out
  })
}

/**
 * The presence state of one channel. `joinRef()` returns the channel's current
 * join_ref; `emit(payload)` receives `{event: 'join'|'leave', key, currentPresences,
 * newPresences|leftPresences}` and `{event: 'sync'}` like realtime-js's presence listeners.
 */
export class PresenceState {
  /** @param {{joinRef: () => string|null, emit: (payload: object) => void}} opts */
  constructor({ joinRef, emit }) {
    this.joinRef = joinRef
    this.emit = emit
    this.raw = Object.create(null)
    this.pending = []
    this.syncedJoinRef = null
  }

  /** True while diffs must wait: no state yet for the channel's current join. */
  get waitingForState() {
    return this.syncedJoinRef === null || this.syncedJoinRef !== this.joinRef()
  }

  onJoin = (key, current, joined) => {
    this.emit({ event: 'join', key, currentPresences: appMetas(current), newPresences: appMetas(joined) })
  }

  onLeave = (key, current, left) => {
    this.emit({ event: 'leave', key, currentPresences: appMetas(current), leftPresences: appMetas(left) })
  }

  /** Handles a `presence_state` payload. */
  state(snapshot) {
    this.syncedJoinRef = this.joinRef()
    this.raw = syncState(this.raw, snapshot ?? {}, this.onJoin, this.onLeave)
    for (const diff of this.pending.splice(0)) this.raw = syncDiff(this.raw, diff, this.onJoin, this.onLeave)
    this.emit({ event: 'sync' })
  }

  /** Handles a `presence_diff` payload. */
  diff(diff) {
    if (this.waitingForState) {
      this.pending.push(diff)
      return
    }
    this.raw = syncDiff(this.raw, diff, this.onJoin, this.onLeave)
    this.emit({ event: 'sync' })
  }

  /** `{key: [{presence_ref, ...fields}]}`, as realtime-js's `presenceState()`. */
  list() {
    const out = {}
    for (const key of Object.getOwnPropertyNames(this.raw)) out[key] = appMetas(this.raw[key])
    return out
  }
}
