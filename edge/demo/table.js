// The demo's live table: postgres_changes of public.todos on channel "todos".
// Every tab shows the table's rows and applies each INSERT, UPDATE and DELETE as
// it arrives, whoever made it (this page, another tab, psql). On make run-pg's
// node, /demo/todos lists the rows and writes them for the page; the page never
// shows what a write returns, only the change that comes back. On a node without
// a database (make run) the panel says so and stays empty.

const ROWS_MAX = 100
const EVENTS_MAX = 12
const API = '/demo/todos'

export function liveTable(client) {
  const $ = (id) => document.getElementById(id)
  const section = $('table')
  const note = $('table-note')
  const form = $('todo-form')
  const titleInput = $('todo-title')
  const table = $('todos')
  const tbody = table.tBodies[0]
  const events = $('todo-events')

  const rows = new Map() // id → row, as to_jsonb gives it
  let writable = false // /demo/todos answers
  // While a listing loads, changes wait here in commit order and are applied
  // on top of it: each carries its whole row (REPLICA IDENTITY FULL), so the
  // last change of a row is its newest version whether or not the listing had
  // it already.
  let waiting = null
  let loads = 0

  function show(state, message) {
    section.dataset.state = state
    note.hidden = !message
    note.replaceChildren(...(message ?? []))
    table.hidden = state !== 'live'
    form.hidden = state !== 'live' || !writable
  }

  const code = (text) => Object.assign(document.createElement('code'), { textContent: text })

  // The server's system message after the join reply says whether the binding
  // is live ("Subscribed to PostgreSQL": every change committed from now on
  // arrives) or why not.
  function onSystem(payload) {
    if (payload?.extension !== 'postgres_changes') return
    if (payload.status === 'ok') {
      load()
      return
    }
    rows.clear()
    render()
    show('off', [
      'No Postgres changes on this node: ',
      String(payload.message ?? 'the subscription failed'),
      '. ',
      code('make run-pg'),
      ' starts a node with a throwaway database and a todos table.',
    ])
  }

  // Lists the rows (again after a rejoin: changes may have been missed while
  // the channel was away).
  async function load() {
    const mine = ++loads
    waiting = []
    let listed = null
    try {
      const res = await fetch(API)
      writable = res.ok
      if (res.ok) listed = await res.json()
    } catch {
      writable = false
    }
    if (mine !== loads) return
    if (listed) {
      rows.clear()
      for (const row of listed) rows.set(row.id, row)
    }
    const changes = waiting
    waiting = null
    for (const c of changes) apply(c)
    render()
    show(
      'live',
      writable
        ? null
        : ['Rows appear as they change. Insert some with ', code('psql'), ' (the insert form needs ', code('make run-pg'), ').']
    )
  }

  function onChange(change) {
    logEvent(change)
    if (waiting) {
      waiting.push(change)
      return
    }
    apply(change)
    render(change.eventType === 'DELETE' ? null : change.new.id)
  }

  function apply({ eventType, new: row, old }) {
    if (eventType === 'DELETE') rows.delete(old.id)
    else rows.set(row.id, row)
  }

  function render(fresh) {
    const ids = [...rows.keys()].sort((a, b) => b - a)
    for (const id of ids.slice(ROWS_MAX)) rows.delete(id)
    tbody.replaceChildren(...ids.slice(0, ROWS_MAX).map((id) => rowElement(rows.get(id), id === fresh)))
  }

  function rowElement(row, fresh) {
    const tr = document.createElement('tr')
    tr.dataset.id = String(row.id)
    tr.dataset.done = String(row.done === true)
    if (fresh) tr.className = 'fresh'
    const cell = (cls, ...children) => {
      const td = document.createElement('td')
      td.className = cls
      td.append(...children)
      return td
    }
    const done = Object.assign(document.createElement('input'), { type: 'checkbox', checked: row.done === true, disabled: !writable })
    done.addEventListener('change', () => write(`${API}/${row.id}`, 'PATCH', { done: done.checked }))
    const remove = Object.assign(document.createElement('button'), { type: 'button', className: 'remove', textContent: '×', title: 'delete', hidden: !writable })
    remove.addEventListener('click', () => write(`${API}/${row.id}`, 'DELETE'))
    const created = row.created_at ? new Date(row.created_at).toLocaleTimeString() : ''
    tr.append(cell('id', String(row.id)), cell('title', String(row.title ?? '')), cell('done', done), cell('created', created), cell('actions', remove))
    return tr
  }

  // One line per change: what it was and how long after its commit it got here.
  function logEvent({ eventType, new: row, old, commit_timestamp }) {
    const id = eventType === 'DELETE' ? old.id : row.id
    const ms = Date.now() - Date.parse(commit_timestamp)
    logLine(`${eventType} #${id}` + (ms >= 0 && ms < 60000 ? ` · ${ms} ms after commit` : ''))
  }

  function logLine(text) {
    const li = document.createElement('li')
    li.textContent = text
    events.prepend(li)
    while (events.children.length > EVENTS_MAX) events.lastElementChild.remove()
  }

  async function write(url, method, body) {
    try {
      const res = await fetch(url, {
        method,
        headers: body ? { 'Content-Type': 'application/json' } : {},
        body: body ? JSON.stringify(body) : undefined,
      })
      if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error ?? res.statusText)
    } catch (err) {
      show('live', [`${method} failed: ${err.message}`])
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const title = titleInput.value.trim()
    if (!title) return
    titleInput.value = ''
    await write(API, 'POST', { title })
  })

  show('joining', ['Connecting…'])
  client
    .channel('todos')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, onChange)
    .on('system', {}, onSystem)
    .subscribe((state) => {
      if (state !== 'SUBSCRIBED' && section.dataset.state === 'live') show('live', ['Reconnecting… (the rows are listed again once back)'])
    })
  return { log: logLine }
}
