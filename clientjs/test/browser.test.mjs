// Browser end-to-end: Debian's chromium (driven by playwright-core) opens the demo
// page served by the real meshcast binary, as two people in two browser contexts.
// The demo runs on clientjs: WebTransport (with the node's pinned certificate
// hash), chat, who's online, and live cursors over datagrams; its live table
// panel runs against a throwaway Postgres set up as `make run-pg` sets one up
// (deploy/local/todos.sql, --demo-todos).
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

let server
let browser

before(async () => {
  if (!haveChromium) return
  server = await startServer()
  // playwright gives every launch() a fresh temporary --user-data-dir (and refuses
  // one in args), removed again on close.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: TIMEOUT,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
})

after(async () => {
  await browser?.close().catch(() => {})
  await server?.stop()
})

/** Opens the demo as `name` in its own browser context (on node, default the suite's server); collects page errors. */
async function openDemo(name, node = server) {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  page.setDefaultTimeout(TIMEOUT)
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()))
  const res = await page.goto(`${node.httpURL}/?name=${encodeURIComponent(name)}`)
  assert.equal(res.status(), 200, 'GET / must serve the demo page')
  await page.locator('#status').filter({ hasText: /^SUBSCRIBED$/ }).waitFor()
  assert.equal(await page.textContent('#transport'), 'webtransport', 'the demo shows the transport clientjs picked')
  return { page, errors }
}

const onlineNames = (page) => page.locator('#online li').allTextContents()

it('two people chat and see each other online', { skip, timeout: 60000 }, async () => {
  const alice = await openDemo('alice')
  const bob = await openDemo('bob')

  assert.equal(await alice.page.inputValue('#name'), 'alice')
  assert.equal(await bob.page.inputValue('#name'), 'bob')

  // Both names appear in both online lists.
  for (const { page } of [alice, bob]) {
    await page.waitForFunction(
      () => {
        const names = [...document.querySelectorAll('#online li')].map((li) => li.textContent.trim())
        return names.includes('alice') && names.includes('bob')
      },
      null,
      { timeout: TIMEOUT }
    )
  }
  assert.deepEqual((await onlineNames(alice.page)).sort(), ['alice', 'bob'])

  // A chat line from alice shows up at bob (and, with self: true, at alice).
  const line = `hello from alice ${Date.now()}`
  await alice.page.fill('#message', line)
  await alice.page.click('#send')
  for (const { page } of [bob, alice]) {
    await page.locator('#messages li').filter({ hasText: line }).waitFor()
  }
  const bobLines = await bob.page.locator('#messages li').allTextContents()
  assert.ok(bobLines.some((t) => t.includes('alice') && t.includes(line)), `bob's messages: ${JSON.stringify(bobLines)}`)
  assert.equal(await alice.page.inputValue('#message'), '', 'the input is cleared after sending')

  // Bob answers with Enter.
  await bob.page.fill('#message', 'hi alice')
  await bob.page.press('#message', 'Enter')
  await alice.page.locator('#messages li').filter({ hasText: 'hi alice' }).waitFor()

  // Alice moves her pointer over the cursors board: bob sees her cursor,
  // carried by datagrams. Moves repeat until it shows (datagrams may be lost).
  const box = await alice.page.locator('#cursors').boundingBox()
  const aliceAtBob = bob.page.locator('#cursors .cursor[data-user="alice"]')
  for (let i = 0; (await aliceAtBob.count()) === 0; i++) {
    assert.ok(i < 50, 'alice\'s cursor never reached bob')
    await alice.page.mouse.move(box.x + box.width * (0.2 + (i % 5) * 0.1), box.y + box.height * 0.5, { steps: 3 })
    await bob.page.waitForTimeout(50)
  }
  await aliceAtBob.waitFor()
  assert.equal(await alice.page.locator('#cursors .cursor').count(), 0, 'one\'s own cursor is not drawn')

  // Renaming rejoins under the new presence key.
  await bob.page.fill('#name', 'robert')
  await bob.page.press('#name', 'Enter')
  await alice.page.waitForFunction(
    () => {
      const names = [...document.querySelectorAll('#online li')].map((li) => li.textContent.trim())
      return names.includes('robert') && !names.includes('bob')
    },
    null,
    { timeout: TIMEOUT }
  )

  // Bob leaves: alice's list drops him.
  await bob.page.close()
  await alice.page.waitForFunction(
    () => ![...document.querySelectorAll('#online li')].some((li) => li.textContent.trim() === 'robert'),
    null,
    { timeout: TIMEOUT }
  )

  assert.deepEqual(alice.errors, [], 'alice page errors')
  assert.deepEqual(bob.errors, [], 'bob page errors')
})

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

describe('the live table panel', { skip }, () => {
  let pg
  const servers = []
  before(async () => {
    if (!haveChromium) return
    pg = await startPostgres()
    await pg.sql(readFileSync(new URL('../../deploy/local/todos.sql', import.meta.url), 'utf8'))
  })
  after(async () => {
    for (const s of servers) await s.stop()
    await pg?.stop()
  })
  async function node(args = []) {
    const s = await startServer({ args })
    servers.push(s)
    return s
  }

  it('shows every tab the rows inserted, updated and deleted from a tab or from psql', { timeout: 90000 }, async () => {
    const server = await node(['--database-url', pg.url, '--demo-todos'])
    const alice = await openDemo('alice', server)
    const bob = await openDemo('bob', server)
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
    const carol = await openDemo('carol', server)
    await waitRows(carol.page, rows)

    for (const { errors } of [alice, bob, carol]) assert.deepEqual(errors, [], 'page errors')
  })

  it('without a database says so, and the rest of the page works', { timeout: 60000 }, async () => {
    const { page, errors } = await openDemo('dave') // the suite's node: no --database-url
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
    const { page, errors } = await openDemo('erin', server)
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
