/**
 * A forwarding HTTP proxy on 127.0.0.1, as a corporate network puts in front of a self-hosted
 * runner. It takes CONNECT tunnels (undici's ProxyAgent tunnels every request, http:// ones
 * included) and absolute-form requests (`GET http://host:port/path`, what curl and most other
 * clients send for an http:// URL).
 *
 * It records every connection it opened to a target: the target's host:port and the local port
 * of the socket. A simulator sees that port as the client's (`RequestEntry.remotePort`), so a test
 * can tell, request by request, which ones came through the proxy.
 *
 * With `credentials`, it asks for Basic authentication (407 and `Proxy-Authenticate`) as an
 * authenticating proxy does, and refuses a request without the right ones.
 */
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'

export interface ProxiedConnection {
  /** `tunnel` for CONNECT, `forward` for an absolute-form request. */
  kind: 'tunnel' | 'forward'
  /** host:port the proxy connected to. */
  target: string
  /** The local port of the proxy's socket to the target: the simulator's `remotePort`. */
  localPort: number
  at: number
}

export interface ProxyRefusal {
  kind: 'tunnel' | 'forward'
  target: string
  /** 407: no or wrong credentials; 400: not a target the proxy understands; 502: unreachable. */
  status: 400 | 407 | 502
  at: number
}

export interface ForwardProxy {
  /** `http://127.0.0.1:<port>` (no credentials in it). */
  url: string
  port: number
  readonly connections: ProxiedConnection[]
  readonly refusals: ProxyRefusal[]
  /** The local ports of every connection to a target: match them with `RequestEntry.remotePort`. */
  localPorts(): Set<number>
  stop(): Promise<void>
}

export interface ForwardProxyOptions {
  credentials?: { username: string; password: string }
  /** Resolves a target's host name (tests name hosts such as api.github.com that lead to 127.0.0.1). */
  lookup?: net.LookupFunction
}

/** host and port of a CONNECT target (`host:port`, `[::1]:port`); undefined when malformed. */
function parseAuthority(authority: string): { host: string; port: number } | undefined {
  try {
    const url = new URL(`http://${authority}`)
    const port = Number(url.port)
    if (!port || url.pathname !== '/' || url.username) return undefined
    return { host: url.hostname.replace(/^\[|\]$/g, ''), port }
  } catch {
    return undefined
  }
}

export async function startForwardProxy(options: ForwardProxyOptions = {}): Promise<ForwardProxy> {
  const connections: ProxiedConnection[] = []
  const refusals: ProxyRefusal[] = []
  const sockets = new Set<net.Socket>()
  const track = (socket: net.Socket): void => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  }
  const expected = options.credentials
    ? `Basic ${Buffer.from(`${options.credentials.username}:${options.credentials.password}`).toString('base64')}`
    : undefined
  const authorized = (req: http.IncomingMessage): boolean =>
    expected === undefined || req.headers['proxy-authorization'] === expected
  const refuse = (kind: ProxyRefusal['kind'], target: string, status: ProxyRefusal['status']) =>
    refusals.push({ kind, target, status, at: Date.now() })

  const server = http.createServer((req, res) => {
    let target: URL
    try {
      target = new URL(req.url ?? '')
    } catch {
      target = new URL('invalid:')
    }
    if (target.protocol !== 'http:') {
      refuse('forward', req.url ?? '', 400)
      res.writeHead(400).end('absolute-form http:// request expected')
      return
    }
    if (!authorized(req)) {
      refuse('forward', target.host, 407)
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="sandbox"' }).end()
      return
    }
    const headers = { ...req.headers }
    delete headers['proxy-authorization']
    delete headers['proxy-connection']
    const port = Number(target.port || 80)
    const upstream = http.request(
      {
        host: target.hostname.replace(/^\[|\]$/g, ''),
        port,
        method: req.method,
        path: target.pathname + target.search,
        headers,
        agent: false,
        lookup: options.lookup
      },
      answer => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      }
    )
    upstream.on('socket', socket => {
      track(socket)
      socket.once('connect', () =>
        connections.push({
          kind: 'forward',
          target: `${target.hostname}:${port}`,
          localPort: socket.localPort!,
          at: Date.now()
        })
      )
    })
    upstream.on('error', () => {
      refuse('forward', `${target.hostname}:${port}`, 502)
      if (!res.headersSent) res.writeHead(502).end()
      else res.destroy()
    })
    req.pipe(upstream)
  })

  server.on('connection', track)
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const authority = req.url ?? ''
    client.on('error', () => undefined)
    const target = parseAuthority(authority)
    if (!target) {
      refuse('tunnel', authority, 400)
      client.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
      return
    }
    if (!authorized(req)) {
      refuse('tunnel', authority, 407)
      client.end(
        'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="sandbox"\r\nContent-Length: 0\r\n\r\n'
      )
      return
    }
    const upstream = net.connect({ port: target.port, host: target.host, lookup: options.lookup })
    track(upstream)
    let connected = false
    upstream.once('connect', () => {
      connected = true
      // Recorded before the tunnel opens, so before the target can see a request through it.
      connections.push({
        kind: 'tunnel',
        target: `${target.host}:${target.port}`,
        localPort: upstream.localPort!,
        at: Date.now()
      })
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    upstream.on('error', () => {
      if (connected) {
        client.destroy()
        return
      }
      refuse('tunnel', authority, 502)
      client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n')
    })
    client.on('close', () => upstream.destroy())
  })

  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connections,
    refusals,
    localPorts: () => new Set(connections.map(c => c.localPort)),
    async stop() {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
