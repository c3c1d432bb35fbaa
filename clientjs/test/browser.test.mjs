// Browser end-to-end: Debian's chromium (driven by playwright-core) opens the demo
// page served by the real meshcast binary, as two people in two browser contexts.
// The demo runs on clientjs: WebTransport (with the node's pinned certificate
// hash), chat, who's online, and live cursors over datagrams.
import { after, before, it } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { startServer } from './helpers.mjs'

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

/** Opens the demo as `name` in its own browser context; collects page errors. */
async function openDemo(name) {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  page.setDefaultTimeout(TIMEOUT)
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()))
  const res = await page.goto(`${server.httpURL}/?name=${encodeURIComponent(name)}`)
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
