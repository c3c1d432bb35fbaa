// The demo's private room "vip" and the todos trigger's broadcasts, on make
// run-pg's node (a JWT secret, demo-private.sql). The room is a private
// channel: the node asks the app's policy on realtime.messages, which lets in
// the names listed in room_members (the button adds or removes this tab's
// name). A member's join replays the room's last 10 messages sent from SQL
// (realtime.send, meta.replayed). The todos table's trigger calls
// realtime.broadcast_changes on the private topic "todos-changes": each change shows up
// in the table panel's list beside its postgres_changes.

const ROOM = 'vip'
const MESSAGES_MAX = 50

export function privateRoom(client, userName) {
  const $ = (id) => document.getElementById(id)
  const section = $('room')
  const status = $('room-status')
  const button = $('room-membership')
  const list = $('room-messages')
  const form = $('room-form')
  const input = $('room-text')
  section.hidden = false
  let channel = null
  let member = false

  function add(text, cls) {
    const li = document.createElement('li')
    li.textContent = text
    if (cls) li.className = cls
    list.append(li)
    while (list.children.length > MESSAGES_MAX) list.firstElementChild.remove()
    list.scrollTop = list.scrollHeight
  }

  function join() {
    const old = channel
    channel = null
    old?.unsubscribe()
    const ch = client.channel(ROOM, {
      config: { private: true, broadcast: { self: true, replay: { since: Date.now() - 3600_000, limit: 10 } } },
    })
    channel = ch
    ch.on('broadcast', { event: 'chat' }, ({ payload, meta }) => {
      if (ch === channel) add(`${payload?.user ?? '?'}: ${payload?.text ?? ''}`, meta?.replayed ? 'replayed' : '')
    }).subscribe((state, err) => {
      if (ch !== channel) return
      member = state === 'SUBSCRIBED'
      status.textContent = member ? 'member: you read and write the room' : `${state}${err ? `: ${err.message}` : ''}`
      status.dataset.state = state
      button.textContent = member ? 'Leave the room' : 'Become a member'
      form.hidden = !member
    })
  }

  button.addEventListener('click', async () => {
    await fetch('/demo/todos/members', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: userName(), room: ROOM, member: !member }),
    })
    list.replaceChildren()
    join() // the policy decides at join
  })
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const text = input.value.trim()
    if (!text || !channel) return
    input.value = ''
    await channel.send({ type: 'broadcast', event: 'chat', payload: { user: userName(), text } })
  })
  join()
  return { rejoin: join }
}

// The trigger's realtime.broadcast_changes on the private topic "todos-changes".
export function todosBroadcasts(client, log) {
  client
    .channel('todos-changes', { config: { private: true } })
    .on('broadcast', { event: '*' }, ({ event, payload, meta }) => {
      const row = payload?.record ?? payload?.old_record ?? {}
      log(`broadcast_changes ${event} #${row.id ?? '?'} (realtime.messages ${String(meta?.id ?? '').slice(0, 8)}…)`)
    })
    .subscribe()
}
