// Compiled by `npm run typecheck` (tsc --noEmit): the declarations describe the API as used.
// In Node < 22 this would be `WebSocket` from the ws package; the DOM one has the same shape.
import MeshcastDefault, {
  DatagramTooLargeError,
  MeshcastClient,
  SUBSCRIBE_STATES,
  exponentialBackoff,
  type PostgresChangesPayload,
  type SubscribeStatus,
  type TransportName,
} from 'meshcast-client'

const client: MeshcastClient = new MeshcastDefault('https://example.test/realtime/v1', {
  apikey: 'key',
  WebSocket,
  transports: ['webtransport', 'websocket'],
  webtransportTimeoutMs: 2000,
  reconnectAfterMs: exponentialBackoff({ initialMs: 500, maxMs: 8000 }),
  accessToken: async () => 'jwt',
  logger: (kind, msg, data) => console.log(kind, msg, data),
})
const t: TransportName | null = client.transport

type Todo = { id: number; title: string }
const room = client
  .channel('room1', { config: { broadcast: { self: true, ack: true, unreliable: true }, presence: { key: 'alice' } } })
  .on('broadcast', { event: 'chat' }, (m) => console.log(m.event, m.payload, m.meta?.unreliable))
  .on('presence', { event: 'sync' }, () => console.log(room.presenceState()))
  .on<{ name: string }>('presence', { event: 'join' }, ({ key, newPresences }) => console.log(key, newPresences[0].name, newPresences[0].presence_ref))
  .on('presence', { event: 'leave' }, ({ leftPresences }) => console.log(leftPresences.length))
  .on<Todo>('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p: PostgresChangesPayload<Todo>) => console.log(p.new.title, p.eventType))
  .on('system', {}, (p) => console.log(p.extension, p.status, p.message))
  .subscribe(async (status: SubscribeStatus, err?: Error) => {
    if (status === SUBSCRIBED_LITERAL) {
      const r: 'ok' | 'timed out' | 'error' = await room.send({ type: 'broadcast', event: 'chat', payload: { text: 'hi' } })
      await room.track({ name: 'alice' })
      try {
        await room.sendUnreliable('cursor', { x: 1, y: 2 })
      } catch (e) {
        if (e instanceof DatagramTooLargeError) console.log(e.size, e.maxBytes)
      }
      console.log(r)
    } else if (status === 'CHANNEL_ERROR') {
      console.error(err?.message)
    }
  })
const SUBSCRIBED_LITERAL: 'SUBSCRIBED' = SUBSCRIBE_STATES.SUBSCRIBED

async function later() {
  await client.setAuth('new-token')
  await room.untrack()
  await room.unsubscribe()
  const done: 'ok' = await client.disconnect()
  console.log(done, t)
}
void later

// @ts-expect-error: unknown listener types are refused
room.on('nope', {}, () => {})
// @ts-expect-error: transports are 'webtransport' | 'websocket'
new MeshcastClient('http://h/realtime/v1', { apikey: 'k', transports: ['longpoll'] })
