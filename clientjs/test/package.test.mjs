// The package as an app installs it: `npm pack` (what `make clientjs-pack`
// runs) makes a tarball of src/ (types included) and the README; installed
// into an empty app, it imports as 'meshcast-client' in Node 20 (with `ws`
// passed as WebSocket, as its README says) and subscribes on the real
// binary. (Its types resolve through the same "exports" in `npm run
// typecheck`.)
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { VERSION } from '../src/index.js'
import { startServer } from './helpers.mjs'

const run = promisify(execFile)
const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(await readFile(path.join(pkgDir, 'package.json'), 'utf8'))

let server
let tmp
before(async () => {
  server = await startServer({ args: ['--webtransport-listen', 'off'] })
  tmp = await mkdtemp(path.join(os.tmpdir(), 'meshcast-client-pkg-'))
})
after(async () => {
  await server?.stop()
  if (tmp) await rm(tmp, { recursive: true, force: true })
})

describe('package', () => {
  it('packs, installs into an app, imports as meshcast-client, and subscribes', { timeout: 60000 }, async () => {
    assert.equal(pkg.name, 'meshcast-client')
    assert.equal(pkg.private, undefined, 'publishable')
    assert.equal(VERSION, pkg.version, 'src/client.js VERSION is package.json\'s version')

    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: pkgDir })
    const [packed] = JSON.parse(stdout)
    assert.equal(packed.filename, `meshcast-client-${pkg.version}.tgz`)
    const files = packed.files.map((f) => f.path).sort()
    assert.ok(files.includes('src/index.js') && files.includes('src/index.d.ts') && files.includes('README.md'), files.join(' '))
    assert.deepEqual(files.filter((f) => !f.startsWith('src/') && f !== 'README.md' && f !== 'package.json'), [], 'only src/, the README and package.json')

    const app = path.join(tmp, 'app')
    await run('mkdir', ['-p', app])
    await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }))
    await run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(tmp, packed.filename)], { cwd: app })
    // ws, which a Node 20 app installs next to it; here the copy the tests use.
    await symlink(path.join(pkgDir, 'node_modules', 'ws'), path.join(app, 'node_modules', 'ws'), 'dir')

    await writeFile(
      path.join(app, 'main.mjs'),
      `import WebSocket from 'ws'
import { MeshcastClient, VERSION } from 'meshcast-client'
const client = new MeshcastClient(process.argv[2], { apikey: 'any', WebSocket })
client.channel('room1').subscribe(async (status) => {
  console.log(VERSION, client.transport, status)
  if (status === 'SUBSCRIBED') await client.disconnect()
})
`
    )
    const out = await run(process.execPath, ['main.mjs', `${server.httpURL}/realtime/v1`], { cwd: app, timeout: 15000 })
    assert.equal(out.stdout.split('\n')[0], `${pkg.version} websocket SUBSCRIBED`, out.stdout + out.stderr)
  })
})
