/**
 * The sandbox's forwarding proxy: CONNECT tunnels and absolute-form requests reach the target,
 * each connection it opened is recorded with the local port the target sees as the client's, and
 * with credentials it answers 407 to a request without them.
 */
import http from 'node:http'
import net from 'node:net'
import { RequestLog } from '../sandbox/log.js'
import { startForwardProxy, type ForwardProxy } from '../sandbox/proxy.js'
import { Service } from '../sandbox/service.js'

const CREDENTIALS = { username: 'runner', password: 'proxy-secret-1' }
const AUTH = `Basic ${Buffer.from('runner:proxy-secret-1').toString('base64')}`

let log: RequestLog
let target: Service
let targetHost: string
let proxy: ForwardProxy

beforeEach(async () => {
  log = new RequestLog()
  target = new Service('app', log, () => ({ status: 200, body: 'hello' }))
  targetHost = new URL(await target.start()).host
  proxy = await startForwardProxy({ credentials: CREDENTIALS })
})

afterEach(async () => {
  await proxy.stop()
  await target.stop()
})

/**
 * GET /hello through a CONNECT tunnel (`Connection: close`, so the answer ends when the target
 * closes); resolves with the status line of the CONNECT and the raw answer through the tunnel.
 */
function throughTunnel(authorization?: string): Promise<{ connect: string; answer: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxy.port, '127.0.0.1')
    let text = ''
    let connect: string | undefined
    socket.setEncoding('utf8')
    socket.on('error', reject)
    socket.on('data', chunk => {
      text += chunk
      if (connect !== undefined || !text.includes('\r\n\r\n')) return
      connect = text.slice(0, text.indexOf('\r\n'))
      text = text.slice(text.indexOf('\r\n\r\n') + 4)
      if (connect.includes(' 200 ')) {
        socket.write(`GET /hello HTTP/1.1\r\nHost: ${targetHost}\r\nConnection: close\r\n\r\n`)
      }
    })
    socket.on('close', () => resolve({ connect: connect ?? '', answer: text }))
    const auth = authorization ? `Proxy-Authorization: ${authorization}\r\n` : ''
    socket.write(`CONNECT ${targetHost} HTTP/1.1\r\nHost: ${targetHost}\r\n${auth}\r\n`)
  })
}

function absoluteForm(authorization?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port: proxy.port,
        path: `http://${targetHost}/hello`,
        headers: authorization ? { 'proxy-authorization': authorization } : {},
        agent: false
      },
      res => {
        let body = ''
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      }
    )
    req.on('error', reject)
  })
}

it('tunnels a CONNECT and records the port the target saw', async () => {
  const { connect, answer } = await throughTunnel(AUTH)
  expect(connect).toBe('HTTP/1.1 200 Connection Established')
  expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
  expect(answer).toContain('hello')
  const [request] = log.requests()
  expect(proxy.connections).toEqual([
    expect.objectContaining({ kind: 'tunnel', target: targetHost, localPort: request!.remotePort })
  ])
})

it('forwards an absolute-form request, without the proxy credentials, and records its port', async () => {
  expect(await absoluteForm(AUTH)).toEqual({ status: 200, body: 'hello' })
  const [request] = log.requests()
  expect(request!.path).toBe('/hello')
  expect(request!.headers['proxy-authorization']).toBeUndefined()
  expect(proxy.connections).toEqual([
    expect.objectContaining({ kind: 'forward', target: targetHost, localPort: request!.remotePort })
  ])
})

it('answers 407 without the right credentials, and opens nothing', async () => {
  expect((await throughTunnel()).connect).toBe('HTTP/1.1 407 Proxy Authentication Required')
  expect((await absoluteForm('Basic d3Jvbmc6d3Jvbmc=')).status).toBe(407)
  expect(proxy.refusals.map(r => [r.kind, r.status])).toEqual([
    ['tunnel', 407],
    ['forward', 407]
  ])
  expect(proxy.connections).toEqual([])
  expect(log.requests()).toEqual([])
})
