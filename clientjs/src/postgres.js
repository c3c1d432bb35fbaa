// postgres_changes on the client (protocol.md §5): the join reply's bindings
// give each listener its server `id`; a change message fires a listener iff its
// id is in the message's `ids` and its event is `*` or the change's type. The
// app gets realtime-js's shape {schema, table, commit_timestamp, eventType, new, old, errors}.

/** Error text realtime-js reports when the join reply's bindings differ from the client's. */
export const BINDING_MISMATCH = 'mismatch between server and client bindings for postgres changes'

const same = (a, b) => (a ?? undefined) === (b ?? undefined)

/**
 * Matches the join reply's `postgres_changes` to the client's bindings, in
 * order, on event (===), schema, table and filter (null = absent).
 * @param {{event: string, schema?: string, table?: string, filter?: string}[]} filters the client's, in subscribe order
 * @param {any} serverBindings `response.postgres_changes` of the join reply
 * @returns {number[]} the server id of each client binding
 * @throws {Error} BINDING_MISMATCH
 */
export function matchBindingIds(filters, serverBindings) {
  if (filters.length === 0) return []
  if (!Array.isArray(serverBindings)) throw new Error(BINDING_MISMATCH, { cause: { server: serverBindings } })
  return filters.map((f, i) => {
    const s = serverBindings[i]
    if (!s || s.event !== f.event || !same(s.schema, f.schema) || !same(s.table, f.table) || !same(s.filter, f.filter)) {
      throw new Error(BINDING_MISMATCH, { cause: { client: f, server: s ?? null, index: i } })
    }
    return s.id
  })
}

/** True when `payload` is a change message (any payload with a top-level `ids` key, as realtime-js decides). */
export const isChange = (payload) => payload !== null && typeof payload === 'object' && 'ids' in payload

/**
 * Whether a listener fires for a change message.
 * @param {{id?: number|null, event?: string}} binding the listener's server id and event filter
 * @param {{ids?: number[], data?: {type?: string}}} payload
 */
export function bindingMatches(binding, payload) {
  if (binding.id === undefined || binding.id === null) return false
  if (!Array.isArray(payload?.ids) || !payload.ids.includes(binding.id)) return false
  const want = binding.event
  return want === '*' || (typeof want === 'string' && want.toLowerCase() === String(payload.data?.type ?? '').toLowerCase())
}

/**
 * Compares two change positions (`"<LSN>:<seq>"`, the LSN as Postgres prints
 * it, e.g. `"0/16B3748:3"`): negative, 0 or positive; null when either is
 * not one.
 */
export function comparePos(a, b) {
  const x = parsePos(a)
  const y = parsePos(b)
  if (!x || !y) return null
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1
  return 0
}

function parsePos(p) {
  const m = typeof p === 'string' ? /^([0-9A-F]{1,8})\/([0-9A-F]{1,8}):(\d{1,10})$/.exec(p) : null
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), Number(m[3])] : null
}

/**
 * The payload a postgres_changes listener receives, built from a change
 * message's `data` as realtime-js does (values converted by column type),
 * plus its `pos` when the server sent one (meshcast's recovery).
 */
export function changePayload(payload) {
  const d = payload?.data ?? {}
  const out = {
    schema: d.schema,
    table: d.table,
    commit_timestamp: d.commit_timestamp,
    eventType: d.type,
    new: {},
    old: {},
    errors: d.errors,
  }
  if (typeof payload?.pos === 'string') out.pos = payload.pos
  if (d.type === 'INSERT' || d.type === 'UPDATE') out.new = convertChangeData(d.columns, d.record)
  if (d.type === 'UPDATE' || d.type === 'DELETE') out.old = convertChangeData(d.columns, d.old_record)
  return out
}

/** Converts a record's values by their column types, like realtime-js's transformers. */
export function convertChangeData(columns, record) {
  if (!record) return {}
  const out = {}
  for (const name of Object.keys(record)) {
    const type = (columns ?? []).find((c) => c.name === name)?.type
    out[name] = type ? convertCell(type, record[name]) : record[name]
  }
  return out
}

function convertCell(type, value) {
  if (type.charAt(0) === '_') return toArray(value, type.slice(1))
  switch (type) {
    case 'bool':
      return value === 't' ? true : value === 'f' ? false : value
    case 'float4':
    case 'float8':
    case 'int2':
    case 'int4':
    case 'int8':
    case 'numeric':
    case 'oid':
      if (typeof value === 'string') {
        const n = parseFloat(value)
        if (!Number.isNaN(n)) return n
      }
      return value
    case 'json':
    case 'jsonb':
      if (typeof value === 'string') {
        try {
          return JSON.parse(value)
        } catch {
          return value
        }
      }
      return value
    case 'timestamp':
      return typeof value === 'string' ? value.replace(' ', 'T') : value
    default:
      return value
  }
}

function toArray(value, type) {
  if (typeof value !== 'string' || value[0] !== '{' || value[value.length - 1] !== '}') return value
  const inner = value.slice(1, -1)
  let arr
  try {
    arr = JSON.parse('[' + inner + ']')
  } catch {
    arr = inner ? inner.split(',') : []
  }
  return arr.map((v) => convertCell(type, v))
}
