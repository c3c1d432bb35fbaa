// Type declarations of meshcast-client (hand-written; checked by `npm run typecheck`
// against test/types/usage.ts).

export type TransportName = 'webtransport' | 'websocket'
export type SubscribeStatus = 'SUBSCRIBED' | 'TIMED_OUT' | 'CLOSED' | 'CHANNEL_ERROR'
export type ChannelState = 'closed' | 'errored' | 'joined' | 'joining' | 'leaving'
export type ConnectionState = 'connecting' | 'open' | 'closing' | 'closed'
export type SendResponse = 'ok' | 'timed out' | 'error'
export type Logger = (kind: string, msg: string, data?: unknown) => void

/** A WebSocket constructor (the browser's, or e.g. `WebSocket` from the `ws` package in Node). */
export interface WebSocketConstructorLike {
  new (url: string | URL, protocols?: string | string[]): any
}

/** A WebTransport constructor (the browser's `WebTransport`). */
export interface WebTransportConstructorLike {
  new (url: string | URL, options?: { serverCertificateHashes?: { algorithm: string; value: BufferSource }[] }): any
}

export interface MeshcastClientOptions {
  /** API key, sent as `?apikey=`; same as `params.apikey`. One of the two is required. */
  apikey?: string
  /** Extra query parameters of the connection (`apikey`, `log_level`, …). */
  params?: Record<string, string>
  /** Transports to try, in order (default `['webtransport', 'websocket']`); unusable ones are skipped. */
  transports?: TransportName[]
  /** A token sent as `access_token` with joins (string), or a callback asked on connect, after joins and at every heartbeat. */
  accessToken?: string | (() => Promise<string | null>)
  /** Heartbeat period; a heartbeat unanswered by the next one closes and reconnects. Default 25000. */
  heartbeatIntervalMs?: number
  /** Push and join timeout, and the WebSocket open timeout. Default 10000. */
  timeoutMs?: number
  /** realtime-js's name for `timeoutMs`. */
  timeout?: number
  /** Time for WebTransport discovery + session + stream before falling back to WebSocket. Default 3000. */
  webtransportTimeoutMs?: number
  /** Delay before reconnect attempt `tries` (from 1). Default: exponentialBackoff() (0.5–1 s, 1–2 s, 2–4 s, 4–8 s, then 5–10 s). */
  reconnectAfterMs?: (tries: number) => number
  /** Delay before rejoining a channel after a refused or timed-out join or a server error. Default: exponentialBackoff(). */
  rejoinAfterMs?: (tries: number) => number
  /** Largest frame sent on the WebTransport stream (N of the length prefix). Default 5 MiB + 1, the server's default. */
  maxFrameBytes?: number
  /** `(kind, msg, data)`, as realtime-js's logger. */
  logger?: Logger
  /** Sent as `log_level` in the query. */
  logLevel?: string
  /** WebSocket constructor (Node < 22: pass `WebSocket` from `ws`). Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructorLike
  /** realtime-js's name for `WebSocket`. */
  transport?: WebSocketConstructorLike
  /** WebTransport constructor. Default `globalThis.WebTransport`. */
  WebTransport?: WebTransportConstructorLike
  /** fetch, for WebTransport discovery and REST broadcasts. Default `globalThis.fetch`. */
  fetch?: typeof fetch
}

export interface BroadcastConfig {
  /** Receive own broadcasts. Default false. */
  self?: boolean
  /** The server replies to each send; send() resolves on the reply. Default false. */
  ack?: boolean
  /** Allow sendUnreliable() (datagrams on WebTransport). Default false. */
  unreliable?: boolean
  /**
   * Private channels only (a public one throws, as realtime-js): after the join, the newest `limit` (1-25,
   * default 25) broadcasts the database sent since `since` (epoch ms), oldest first, with `meta.replayed`.
   * A rejoin replays again; what the channel delivered already is not delivered twice.
   */
  replay?: { since: number; limit?: number }
  replication_ready?: boolean
}

export interface ChannelConfig {
  broadcast?: BroadcastConfig
  presence?: { key?: string; enabled?: boolean }
  private?: boolean
  postgres_changes_options?: { wait?: boolean; timeout?: number }
  /** meshcast recovery: positions to recover from on the first join (the client sends its own on every rejoin). */
  recover?: { broadcast?: Record<string, number | string>; postgres_changes?: string }
}

export interface ChannelOptions {
  config?: ChannelConfig
}

export interface BroadcastMessage<T = any> {
  type: 'broadcast'
  event: string
  payload: T
  /** `pos` is the message's stream position, `"<epoch>:<offset>"` (meshcast recovery). */
  meta?: { id?: string; pos?: string; replayed?: boolean; unreliable?: boolean; [key: string]: unknown }
}

export type Presence<T extends Record<string, any> = {}> = { presence_ref: string } & T
export type PresenceState<T extends Record<string, any> = {}> = { [key: string]: Presence<T>[] }

export interface PresenceJoinPayload<T extends Record<string, any> = {}> {
  event: 'join'
  key: string
  currentPresences: Presence<T>[]
  newPresences: Presence<T>[]
}

export interface PresenceLeavePayload<T extends Record<string, any> = {}> {
  event: 'leave'
  key: string
  currentPresences: Presence<T>[]
  leftPresences: Presence<T>[]
}

export type PostgresChangeEvent = '*' | 'INSERT' | 'UPDATE' | 'DELETE'

export interface PostgresChangesFilter {
  event: PostgresChangeEvent
  schema: string
  table?: string
  filter?: string | { build(): string }
  select?: string[]
}

export interface PostgresChangesPayload<T extends Record<string, any> = Record<string, any>> {
  schema: string
  table: string
  commit_timestamp: string
  eventType: 'INSERT' | 'UPDATE' | 'DELETE'
  new: Partial<T>
  old: Partial<T>
  errors: string | string[] | null
  /** The change's position, `"<LSN>:<seq>"` (meshcast recovery). */
  pos?: string
}

export interface SystemPayload {
  extension: 'system' | 'postgres_changes' | 'broadcast' | (string & {})
  status: 'ok' | 'error' | (string & {})
  message: string
  channel?: string
}

export class MeshcastChannel {
  readonly topic: string
  readonly subTopic: string
  readonly state: ChannelState
  readonly joinRef: string | null
  readonly client: MeshcastClient
  readonly params: { config: ChannelConfig }
  readonly private: boolean
  /** Broadcast positions this channel holds, `{epoch: offset}`, and `db`: the database's stream's change position (a string); sent as `config.recover.broadcast` on every rejoin. null until a server with recovery answers. */
  readonly positions: Record<string, number | string> | null
  /** The postgres_changes position this channel holds, `"<LSN>:<seq>"`; sent as `config.recover.postgres_changes` on every rejoin. null until a server with recovery answers a join with bindings. */
  readonly changesPosition: string | null
  /** The last join's answer to recovery (broadcasts and changes): true, false (something was missed; a `system` event says why), undefined when not asked. */
  readonly recovered: boolean | undefined

  on(type: 'broadcast', filter: { event: string }, callback: (message: BroadcastMessage) => void): this
  on(type: 'presence', filter: { event: 'sync' }, callback: (payload: { event: 'sync' }) => void): this
  on<T extends Record<string, any> = {}>(type: 'presence', filter: { event: 'join' }, callback: (payload: PresenceJoinPayload<T>) => void): this
  on<T extends Record<string, any> = {}>(type: 'presence', filter: { event: 'leave' }, callback: (payload: PresenceLeavePayload<T>) => void): this
  on<T extends Record<string, any> = {}>(type: 'presence', filter: { event: '*' }, callback: (payload: PresenceJoinPayload<T> | PresenceLeavePayload<T> | { event: 'sync' }) => void): this
  on<T extends Record<string, any> = Record<string, any>>(type: 'postgres_changes', filter: PostgresChangesFilter, callback: (payload: PostgresChangesPayload<T>) => void): this
  on(type: 'system', filter: {}, callback: (payload: SystemPayload) => void): this

  /** Joins; `callback(status, err)` gets SUBSCRIBED on every (re)join (with an error when recovery failed), CHANNEL_ERROR / TIMED_OUT with the reason, CLOSED. */
  subscribe(callback?: (status: SubscribeStatus, err?: Error) => void, timeoutMs?: number): this
  send(args: { type: 'broadcast' | 'presence'; event: string; payload?: any; [key: string]: any }, opts?: { timeout?: number }): Promise<SendResponse>
  /** One datagram on WebTransport, a reliable broadcast on WebSocket. Rejects with DatagramTooLargeError (> 1024 bytes encoded) or UnreliableNotEnabledError. */
  sendUnreliable(event: string, payload: any): Promise<SendResponse>
  httpSend(event: string, payload: any, opts?: { timeout?: number }): Promise<{ success: true }>
  track(payload: Record<string, any>, opts?: { timeout?: number }): Promise<SendResponse>
  untrack(opts?: { timeout?: number }): Promise<SendResponse>
  presenceState<T extends Record<string, any> = {}>(): PresenceState<T>
  unsubscribe(timeoutMs?: number): Promise<SendResponse>
  canPush(): boolean
}

export class MeshcastClient {
  constructor(endpoint: string, options?: MeshcastClientOptions)
  /** The transport of the current connection; null before the first one opens and after disconnect(). */
  readonly transport: TransportName | null
  /** Why WebTransport is off for this client's lifetime, or null. */
  readonly webtransportDisabled: string | null
  readonly accessTokenValue: string | null
  readonly timeoutMs: number
  readonly heartbeatIntervalMs: number
  readonly webtransportTimeoutMs: number
  channel(name: string, params?: ChannelOptions): MeshcastChannel
  getChannels(): MeshcastChannel[]
  removeChannel(channel: MeshcastChannel): Promise<SendResponse>
  removeAllChannels(): Promise<SendResponse[]>
  connect(): void
  disconnect(code?: number, reason?: string): Promise<'ok'>
  setAuth(token?: string | null): Promise<void>
  isConnected(): boolean
  connectionState(): ConnectionState
  endpointURL(): string
}

export default MeshcastClient

export const VERSION: string
export const DEFAULTS: Readonly<{ transports: readonly TransportName[]; timeoutMs: number; heartbeatIntervalMs: number; webtransportTimeoutMs: number }>
export const SUBSCRIBE_STATES: Readonly<{ SUBSCRIBED: 'SUBSCRIBED'; TIMED_OUT: 'TIMED_OUT'; CLOSED: 'CLOSED'; CHANNEL_ERROR: 'CHANNEL_ERROR' }>
export const CHANNEL_STATES: Readonly<{ closed: 'closed'; errored: 'errored'; joined: 'joined'; joining: 'joining'; leaving: 'leaving' }>
export const MAX_PUSH_BUFFER: number
export const MAX_DATAGRAM_BYTES: number
export const DEFAULT_BACKOFF: Readonly<{ initialMs: number; maxMs: number; factor: number; jitter: number }>

export function endpointURLs(endpoint: string): { socketURL: string; httpBase: string }

export interface BackoffSchedule {
  (tries: number): number
  /** [lowest, highest] delay of attempt `tries`. */
  bounds(tries: number): [number, number]
}
export function exponentialBackoff(opts?: { initialMs?: number; maxMs?: number; factor?: number; jitter?: number; random?: () => number }): BackoffSchedule

export class TransportError extends Error {
  code: number
  reason: string
  transport?: TransportName
}
export class WebTransportUnavailable extends TransportError {
  /** True when the client stays on WebSocket for its lifetime because of it. */
  remember: boolean
}
export class DatagramTooLargeError extends RangeError {
  size: number
  maxBytes: number
}
export class UnreliableNotEnabledError extends Error {
  topic: string
}
