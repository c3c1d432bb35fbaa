// The demo page's live table panel in Debian's Chromium (playwright-core),
// against the real binary and a throwaway Postgres set up as `make run-pg` sets
// one up (deploy/local/todos.sql, --demo-todos): rows inserted, updated and
// deleted from one tab or from psql show up in every open tab. On a node without
// a database (`make run`) the panel says so and the rest of the page works; on a
// node with a database but without --demo-todos the panel shows changes and no
// form.
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { startServer } from './helpers.mjs'
import { startPostgres } from './postgres.mjs'

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
const haveChromium = existsSync(CHROMIUM)
const skip = haveChromium ? false : `no chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`
const TIMEOUT = 15000
const TODOS_SQL = readFileSync(new URL('../../deploy/local/todos.sql', import.meta.url), 'utf8')

let pg
let browser
const servers = []

before(async () => {
  if (!haveChromium) return
  pg = await startPostgres()
  await pg.sql(TODOS_SQL)
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: TIMEOUT,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => {
  await browser?.close().catch(() => {})
  for (const s of servers) await s.stop()
  await pg?.stop()
})

async function node(args = []) {
  const s = await startServer({ args })
  servers.push(s)
  return s
}

/** Opens the demo on server in a browser context of its own; collects page errors. */
async function openDemo(server, name) {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  page.setDefaultTimeout(TIMEOUT)
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()))
  await page.goto(`${server.httpURL}/?name=${encodeURIComponent(name)}`)
  await page.locator('#status').filter({ hasText: /^SUBSCRIBED$/ }).waitFor()
  return { page, errors }
}

/** The panel's rows, newest first: [id, title, done]. */
const tableRows = (page) =>
  page.$$eval('#todos tbody tr', (trs) =>
    trs.map((tr) => [Number(tr.dataset.id), tr.querySelector('.title').textContent, tr.dataset.done === 'true'])
  )

/** Waits until the panel of page holds exactly want (newest first). */
async function waitRows(page, want) {
  try {
    await page.waitForFunction(
      (want) =>
        JSON.stringify(
          [...document.querySelectorAll('#todos tbody tr')].map((tr) => [
            Number(tr.dataset.id),
            tr.querySelector('.title').textContent,
            tr.dataset.done === 'true',
          ])
        ) === JSON.stringify(want),
      want,
      { timeout: TIMEOUT }
    )
  } catch (err) {
    assert.fail(`rows ${JSON.stringify(await tableRows(page))}, want ${JSON.stringify(want)}: ${err.message}`)
  }
}

describe('the demo page’s live table', { skip }, () => {
  it('shows every tab the rows inserted, updated and deleted from a tab or from psql', { timeout: 90000 }, async () => {
    const server = await node(['--database-url', pg.url, '--demo-todos'])
    const alice = await openDemo(server, 'alice')
    const bob = await openDemo(server, 'bob')
    const tabs = [alice.page, bob.page]
    const seeded = [
      [2, 'insert a row from psql', false],
      [1, 'try meshcast', false],
    ]
    for (const page of tabs) {
      await page.locator('#table[data-state="live"]').waitFor()
      await waitRows(page, seeded)
      assert.ok(await page.isVisible('#todo-form'), 'the insert form shows with --demo-todos')
    }

    // Alice inserts from the page: both tabs get the row from the change stream.
    await alice.page.fill('#todo-title', 'from alice’s tab')
    await alice.page.press('#todo-title', 'Enter')
    let rows = [[3, 'from alice’s tab', false], ...seeded]
    for (const page of tabs) await waitRows(page, rows)
    assert.equal(await alice.page.inputValue('#todo-title'), '', 'the input is cleared')

    // An insert from psql reaches both.
    await pg.sql("INSERT INTO todos (title) VALUES ('from psql')")
    rows = [[4, 'from psql', false], ...rows]
    for (const page of tabs) await waitRows(page, rows)

    // Bob ticks a row done (an UPDATE); alice sees it.
    await bob.page.check('#todos tr[data-id="1"] .done input')
    rows = rows.map((r) => (r[0] === 1 ? [1, r[1], true] : r))
    for (const page of tabs) await waitRows(page, rows)

    // Alice deletes one (a DELETE); bob sees it go.
    await alice.page.click('#todos tr[data-id="2"] .remove')
    rows = rows.filter((r) => r[0] !== 2)
    for (const page of tabs) await waitRows(page, rows)

    // Each tab lists the changes it received, newest first.
    const events = await bob.page.locator('#todo-events li').allTextContents()
    assert.deepEqual(
      events.map((e) => e.split(' · ')[0]),
      ['DELETE #2', 'UPDATE #1', 'INSERT #4', 'INSERT #3'],
      `bob's events: ${JSON.stringify(events)}`
    )
    assert.ok(events.every((e) => / · \d+ ms after commit$/.test(e)), `latencies: ${JSON.stringify(events)}`)

    // A tab opened now lists the table as it is.
    const carol = await openDemo(server, 'carol')
    await waitRows(carol.page, rows)

    for (const { errors } of [alice, bob, carol]) assert.deepEqual(errors, [], 'page errors')
  })

  it('without a database says so, and the rest of the page works', { timeout: 60000 }, async () => {
    const server = await node()
    const { page, errors } = await openDemo(server, 'dave')
    await page.locator('#table[data-state="off"]').waitFor()
    const note = await page.textContent('#table-note')
    assert.match(note, /No Postgres changes on this node: .*no database.*make run-pg/, note)
    assert.equal(await page.isVisible('#todos'), false, 'no table')
    assert.equal(await page.isVisible('#todo-form'), false, 'no form')
    // Chat still works.
    await page.fill('#message', 'still chatting')
    await page.click('#send')
    await page.locator('#messages li').filter({ hasText: 'still chatting' }).waitFor()
    assert.deepEqual(errors, [], 'page errors')
  })

  it('with a database but without --demo-todos shows the changes and no form', { timeout: 60000 }, async () => {
    // Its own slot: the first test's node still reads the default one.
    const server = await node(['--database-url', pg.url, '--replication-slot', 'demo_plain'])
    const { page, errors } = await openDemo(server, 'erin')
    await page.locator('#table[data-state="live"]').waitFor()
    assert.equal(await page.isVisible('#todo-form'), false, 'no insert form')
    assert.match(await page.textContent('#table-note'), /Insert some with psql/)
    const res = await page.evaluate(async () => (await fetch('/demo/todos', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"title":"x"}' })).status)
    assert.ok(res === 404 || res === 405, `POST /demo/todos without --demo-todos: ${res}`)
    const id = Number(await pg.sql("INSERT INTO todos (title) VALUES ('seen without the endpoint') RETURNING id"))
    await page.locator(`#todos tr[data-id="${id}"]`).filter({ hasText: 'seen without the endpoint' }).waitFor()
    // Chromium logs the 404s of /demo/todos; nothing else may fail.
    assert.deepEqual(errors.filter((e) => !/^Failed to load resource: .* 40[45]/.test(e)), [], 'page errors')
  })
})
