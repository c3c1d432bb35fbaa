// meshcast demo on clientjs (the bundle every node serves at /clientjs/meshcast.js):
// chat (broadcast "chat"), who's online (presence) and live cursors (sendUnreliable
// "cursor": one datagram per move over WebTransport, a reliable broadcast over
// WebSocket) on channel "lobby". The header shows the transport clientjs picked.
// table.js adds the live table of Postgres changes, on the same client.
import { MeshcastClient } from '/clientjs/meshcast.js'
import { liveTable } from './table.js'
import { privateRoom, todosBroadcasts } from './room.js'

const $ = (id) => document.getElementById(id)
const nameInput = $('name')
const messageInput = $('message')
const sendButton = $('send')
const messages = $('messages')
const online = $('online')
const status = $('status')
const transport = $('transport')
const board = $('cursors')

const MAX_MESSAGES = 200
const CURSOR_TTL_MS = 5000

// ?name=alice picks the name; otherwise a random guest name.
nameInput.value =
  new URLSearchParams(location.search).get('name') || `guest-${1000 + Math.floor(Math.random() * 9000)}`

// make run-pg's node has a JWT secret and signs a token for the name typed
// here (/demo/todos/token, demo only); a node without auth accepts any apikey.
async function tokenFor(user) {
  try {
    const res = await fetch(`/demo/todos/token?user=${encodeURIComponent(user)}`)
    if (res.status === 200) return (await res.json()).token
  } catch {}
  return null
}
const token = await tokenFor(nameInput.value)
const client = new MeshcastClient(`${location.origin}/realtime/v1`, { apikey: token ?? 'demo' })

let channel = null
let name = ''

function setStatus(state, err) {
  status.textContent = state
  status.dataset.state = state
  status.title = err ? String(err.message || err) : ''
  sendButton.disabled = state !== 'SUBSCRIBED'
  transport.textContent = client.transport ?? '…'
  transport.dataset.transport = client.transport ?? ''
  transport.title = client.webtransportDisabled ? `WebTransport off: ${client.webtransportDisabled}` : 'the transport clientjs picked'
}

function addMessage({ user, text }) {
  const li = document.createElement('li')
  const who = document.createElement('span')
  who.className = 'user'
  who.textContent = String(user ?? '?')
  const what = document.createElement('span')
  what.className = 'text'
  what.textContent = String(text ?? '')
  li.append(who, what)
  messages.append(li)
  while (messages.children.length > MAX_MESSAGES) messages.firstElementChild.remove()
  messages.scrollTop = messages.scrollHeight
}

function renderOnline(ch) {
  const users = Object.keys(ch.presenceState()).sort()
  online.replaceChildren(
    ...users.map((user) => {
      const li = document.createElement('li')
      li.textContent = user
      return li
    })
  )
  // Cursors of people who left go with them.
  for (const el of board.querySelectorAll('.cursor')) if (!users.includes(el.dataset.user)) el.remove()
}

// Others' cursors: one labelled dot per user, at a position relative to the board.
function moveCursor({ user, x, y }) {
  if (typeof user !== 'string' || user === name || !Number.isFinite(x) || !Number.isFinite(y)) return
  let el = [...board.querySelectorAll('.cursor')].find((c) => c.dataset.user === user)
  if (!el) {
    el = document.createElement('div')
    el.className = 'cursor'
    el.dataset.user = user
    el.textContent = user
    board.append(el)
  }
  el.style.left = `${Math.min(1, Math.max(0, x)) * 100}%`
  el.style.top = `${Math.min(1, Math.max(0, y)) * 100}%`
  el.dataset.seen = String(Date.now())
}

setInterval(() => {
  for (const el of board.querySelectorAll('.cursor')) if (Date.now() - Number(el.dataset.seen) > CURSOR_TTL_MS) el.remove()
}, 1000)

// Latest wins: at most one datagram per animation frame, with the newest position.
let pending = null
board.addEventListener('pointermove', (e) => {
  const r = board.getBoundingClientRect()
  const first = pending === null
  pending = { x: (e.clientX - r.left) / r.width, y: (e.clientY - r.top) / r.height }
  if (!first) return
  requestAnimationFrame(() => {
    const p = pending
    pending = null
    if (channel?.state === 'joined') channel.sendUnreliable('cursor', { user: name, x: +p.x.toFixed(4), y: +p.y.toFixed(4) }).catch(() => {})
  })
})

// One presence entry per name, so (re)join the channel whenever the name changes.
function join(newName) {
  name = newName
  const ch = client.channel('lobby', {
    config: { broadcast: { self: true, unreliable: true }, presence: { key: name } },
  })
  channel = ch
  ch.on('broadcast', { event: 'chat' }, ({ payload }) => addMessage(payload))
    .on('broadcast', { event: 'cursor' }, ({ payload }) => ch === channel && moveCursor(payload))
    .on('presence', { event: 'sync' }, () => ch === channel && renderOnline(ch))
    .subscribe(async (state, err) => {
      if (ch !== channel) return
      setStatus(state, err)
      if (state === 'SUBSCRIBED') {
        await ch.track({ user: name, online_at: new Date().toISOString() })
      }
    })
}

async function rename() {
  const newName = nameInput.value.trim()
  if (!newName || newName === name) {
    nameInput.value = name
    return
  }
  const old = channel
  channel = null
  setStatus('JOINING')
  online.replaceChildren()
  await old.unsubscribe()
  if (token) {
    // A new name is another user: its own token, its own membership.
    const next = await tokenFor(newName)
    if (next) await client.setAuth(next)
    room?.rejoin()
  }
  join(newName)
}

nameInput.addEventListener('change', rename)

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault()
  const text = messageInput.value.trim()
  if (!text || !channel) return
  messageInput.value = ''
  await channel.send({ type: 'broadcast', event: 'chat', payload: { user: name, text } })
})

join(nameInput.value)
const table = liveTable(client)
const room = token ? privateRoom(client, () => name) : null
if (token) todosBroadcasts(client, table.log)
