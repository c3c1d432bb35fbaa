// A TCP proxy a test controls: it forwards loopback connections to a target
// port, can cut every connection and refuse new ones for a while (a network
// outage, as a phone switching networks sees it), and can be pointed at
// another port (the client's node died; its load balancer sends it elsewhere).
import net from 'node:net'

export async function startProxy(targetPort) {
  const live = new Set()
  let target = targetPort
  let downUntil = 0
  const server = net.createServer((client) => {
    if (Date.now() < downUntil) {
      client.destroy()
      return
    }
    const upstream = net.connect(target, '127.0.0.1')
    const pair = { client, upstream }
    live.add(pair)
    const end = () => {
      live.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = server.address().port
  return {
    port,
    httpURL: `http://127.0.0.1:${port}`,
    /** Cuts every connection at once and refuses new ones for ms. */
    cut(ms) {
      downUntil = Date.now() + ms
      for (const { client, upstream } of live) {
        client.destroy()
        upstream.destroy()
      }
      live.clear()
    },
    /** Sends new connections to another port. */
    retarget(p) {
      target = p
    },
    connections: () => live.size,
    close() {
      for (const { client, upstream } of live) {
        client.destroy()
        upstream.destroy()
      }
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}
