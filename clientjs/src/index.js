// meshcast-client: a client for meshcast (and any Phoenix Channels v2 /
// Supabase Realtime server): WebTransport first, WebSocket fallback,
// datagrams for unreliable broadcasts. API close to @supabase/realtime-js.
export { MeshcastClient, DEFAULTS, VERSION, endpointURLs } from './client.js'
export { MeshcastChannel, SUBSCRIBE_STATES, CHANNEL_STATES, MAX_PUSH_BUFFER } from './channel.js'
export { TransportError, DatagramTooLargeError, UnreliableNotEnabledError, MAX_DATAGRAM_BYTES } from './errors.js'
export { WebTransportUnavailable } from './webtransport.js'
export { exponentialBackoff, DEFAULT_BACKOFF } from './backoff.js'
export { MeshcastClient as default } from './client.js'
