// A throwaway PostgreSQL for the postgres_changes interop tests, as wal/pgtest
// starts one for the Go tests: initdb in a temporary directory, wal_level=logical,
// trust authentication on 127.0.0.1 at a free port, durability off. Postgres
// refuses to run as root, so as root the server runs as the `postgres` user in a
// directory that user owns. SQL goes through psql (no npm driver needed).
import { execFile, spawn } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, appendFileSync, rmSync } from 'node:fs'
import { userInfo } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { fatal, freePort, waitFor } from './helpers.mjs'

const run = promisify(execFile)

/** Where Debian's postgresql-15 puts the server binaries, unless $PGTEST_BINDIR says otherwise. */
export const PG_BINDIR = process.env.PGTEST_BINDIR || '/usr/lib/postgresql/15/bin'

/** The uid/gid of the `postgres` user, when running as root (else null). */
async function postgresUser() {
  if (process.getuid() !== 0) return null
  const [{ stdout: uid }, { stdout: gid }] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])])
  return { uid: Number(uid), gid: Number(gid) }
}

/**
 * Starts a server and waits until it accepts connections. Returns
 * { url, port, sql(text), json(text), stop() }: sql runs statements and returns
 * psql's unaligned output; json runs a query of one JSON value and parses it.
 */
export async function startPostgres() {
  for (const bin of ['initdb', 'postgres', 'psql']) {
    if (!existsSync(path.join(PG_BINDIR, bin))) {
      throw new Error(`${bin} not found in ${PG_BINDIR}: install Debian's postgresql-15 (make deps-pg) or set PGTEST_BINDIR`)
    }
  }
  const as = await postgresUser()
  const dir = mkdtempSync('/tmp/mcpg-')
  if (as) chownSync(dir, as.uid, as.gid)
  const data = path.join(dir, 'data')
  const env = { ...process.env, LC_ALL: 'C', TZ: 'UTC' }
  const opts = { cwd: dir, env, ...(as ?? {}) }
  await run(path.join(PG_BINDIR, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '--encoding=UTF8', '--locale=C'], opts)
  const port = await freePort()
  appendFileSync(
    path.join(data, 'postgresql.conf'),
    [
      '',
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${dir}'`,
      'wal_level = logical',
      'max_replication_slots = 20',
      'max_wal_senders = 20',
      'fsync = off',
      'full_page_writes = off',
      "timezone = 'UTC'",
      'log_min_messages = warning',
      '',
    ].join('\n')
  )
  const proc = spawn(path.join(PG_BINDIR, 'postgres'), ['-D', data, '-p', String(port)], { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  const keep = (chunk) => (log = (log + chunk).slice(-8000))
  proc.stdout.on('data', keep)
  proc.stderr.on('data', keep)
  let exited = null
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((exited = { code, signal }))))

  const url = `postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable`
  const psql = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres']
  const pg = {
    url,
    port,
    /** Runs SQL (any number of statements) and returns psql's output. */
    async sql(text) {
      const { stdout } = await run(path.join(PG_BINDIR, 'psql'), [...psql, '-c', text], { env })
      return stdout.trim()
    },
    /** Runs a query returning one JSON value (e.g. to_jsonb(t)) and parses it. */
    async json(text) {
      return JSON.parse(await pg.sql(text))
    },
    output: () => log,
    async stop() {
      if (!exited) {
        proc.kill('SIGQUIT') // immediate shutdown: nothing here is worth keeping
        const timer = setTimeout(() => proc.kill('SIGKILL'), 10000)
        await exit
        clearTimeout(timer)
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
  try {
    await waitFor(
      async () => {
        if (exited) throw fatal(`postgres exited at start: ${JSON.stringify(exited)}\n${log}`)
        return (await pg.sql('SELECT 1')) === '1'
      },
      30000,
      () => `postgres on port ${port} accepting connections (user ${as ? 'postgres' : userInfo().username})\n${log}`,
      { intervalMs: 50, retryErrors: true }
    )
  } catch (err) {
    await pg.stop()
    throw err
  }
  return pg
}
