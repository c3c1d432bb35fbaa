// meshcast demo: chat (broadcast event "chat") and who's online (presence) on
// channel "lobby", using the unmodified @supabase/realtime-js bundled beside it.
import { RealtimeClient } from './realtime-js.mjs'

const $ = (id) => document.getElementById(id)
const nameInput = $('name')
const messageInput = $('message')
const sendButton = $('send')
const messages = $('messages')
const online = $('online')
const status = $('status')

const MAX_MESSAGES = 200

// ?name=alice picks the name; otherwise a random guest name.
nameInput.value =
  new URLSearchParams(location.search).get('name') || `guest-${1000 + Math.floor(Math.random() * 9000)}`

// The dev server runs without auth, so any apikey is accepted.
const client = new RealtimeClient(location.origin.replace(/^http/, 'ws') + '/realtime/v1', {
  params: { apikey: 'demo' },
})

let channel = null
let name = ''

function setStatus(state, err) {
  status.textContent = state
  status.dataset.state = state
  status.title = err ? String(err.message || err) : ''
  sendButton.disabled = state !== 'SUBSCRIBED'
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
}

// One presence entry per name, so (re)join the channel whenever the name changes.
function join(newName) {
  name = newName
  const ch = client.channel('lobby', {
    config: { broadcast: { self: true }, presence: { key: name } },
  })
  channel = ch
  ch.on('broadcast', { event: 'chat' }, ({ payload }) => addMessage(payload))
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
  await client.removeChannel(old)
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
