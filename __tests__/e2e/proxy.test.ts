/**
 * End to end behind a proxy, as on a self-hosted runner of a corporate network: the bundled action
 * with HTTPS_PROXY and HTTP_PROXY naming the sandbox's proxy (sandbox/proxy.ts), which asks for
 * credentials, and NO_PROXY as a runner might set it plus the sample app: `localhost`,
 * `.github.com` and `127.0.0.1:<app port>`. Every simulator listens on 127.0.0.1, which the agent
 * does not exempt by itself and which `localhost` does not name (NO_PROXY matches host names, not
 * addresses), so only the app's host:port entry sends requests direct.
 *
 * The proof is by port: the proxy records the local port of every connection it opened, and each
 * simulator records the client's port of every request. A request of the action to Cloudflare,
 * GitHub or R2 must have come from one of those connections, opened to that simulator; a smoke
 * check of the app must not. The app's own R2 reads (it runs in this process and reads its object
 * on every health check) are not the action's: they carry `x-sandbox-client-address`, and are set
 * apart.
 */
import { randomBytes } from 'node:crypto'
import { startSandbox, type Sandbox } from '../../sandbox/index.js'
import { CLIENT_ADDRESS_HEADER } from '../../sandbox/app.js'
import type { RequestEntry } from '../../sandbox/log.js'
import { startForwardProxy, type ForwardProxy } from '../../sandbox/proxy.js'
import { findLeaks, runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  expectNoLeaks,
  expectOneLiveToken,
  journalText,
  mutationList,
  nextRunInputs
} from './scenario.js'

const USERNAME = 'rotation-runner'
const PASSWORD = `pw-${randomBytes(12).toString('base64url')}`
const basic = (password: string): string =>
  Buffer.from(`${USERNAME}:${password}`).toString('base64')

/** A proxy URL with credentials in it, as a runner's environment would carry it. */
const proxyUrl = (proxy: ForwardProxy, password: string): string =>
  `http://${USERNAME}:${encodeURIComponent(password)}@127.0.0.1:${proxy.port}`

/** Every form of a password that must not be printed: itself, URL-encoded, in the Basic header. */
const passwordForms = (password: string): string[] => [
  password,
  encodeURIComponent(password),
  basic(password)
]

let sb: Sandbox
let proxy: ForwardProxy
let appHost: string
let result: ActionResult

/** host:port of each simulator the action must reach through the proxy. */
let proxiedHosts: Record<'cloudflare' | 'github' | 'r2', string>

const describeEntry = (e: RequestEntry): string =>
  `${e.service} ${e.method} ${e.path.split('?')[0]} (port ${e.remotePort})`

const isAppsOwnRead = (e: RequestEntry): boolean =>
  e.service === 'r2' && e.headers[CLIENT_ADDRESS_HEADER] !== undefined

beforeAll(async () => {
  sb = await startSandbox()
  proxy = await startForwardProxy({ credentials: { username: USERNAME, password: PASSWORD } })
  appHost = new URL(sb.appUrl).host
  proxiedHosts = {
    cloudflare: new URL(sb.cloudflareApiUrl).host,
    github: new URL(sb.githubApiUrl).host,
    r2: new URL(sb.r2Endpoint).host
  }
  result = await runAction(sb, sandboxInputs(sb), {
    env: {
      HTTPS_PROXY: proxyUrl(proxy, PASSWORD),
      HTTP_PROXY: proxyUrl(proxy, PASSWORD),
      NO_PROXY: `localhost,.github.com,${appHost}`
    }
  })
})

afterAll(async () => {
  await proxy?.stop()
  await sb?.stop()
})

describe('a rotation behind an authenticating proxy', () => {
  it('rotates', () => {
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expectOneLiveToken(sb)
  })

  it('says once that a proxy is used: host and port, and what NO_PROXY exempts', () => {
    const lines = result.stdout.split('\n').filter(line => line.startsWith('Proxy:'))
    expect(lines).toEqual([
      `Proxy: requests go through 127.0.0.1:${proxy.port} (HTTPS_PROXY, HTTP_PROXY); NO_PROXY exempts: localhost, .github.com, ${appHost}.`
    ])
  })

  it('sent every request to Cloudflare, GitHub and R2 through the proxy, each through a connection to its host', () => {
    const byPort = new Map(proxy.connections.map(c => [c.localPort, c]))
    const actions = sb.log.requests().filter(e => e.service !== 'app' && !isAppsOwnRead(e))
    for (const service of ['cloudflare', 'github', 'r2'] as const) {
      expect(actions.filter(e => e.service === service).length).toBeGreaterThan(0)
    }
    const direct = actions.filter(e => {
      const connection = byPort.get(e.remotePort ?? -1)
      return connection?.target !== proxiedHosts[e.service as keyof typeof proxiedHosts]
    })
    expect(direct.map(describeEntry)).toEqual([])
    // Authenticated at once: the credentials go with the first CONNECT, no 407 round trip.
    expect(proxy.refusals).toEqual([])
  })

  it('sent the smoke checks of the NO_PROXY host direct', () => {
    const ports = proxy.localPorts()
    const smoke = sb.log.requests({ service: 'app' })
    expect(smoke.length).toBeGreaterThan(0)
    expect(smoke.filter(e => e.headers['x-smoke-check'] !== 'r2-token-rotation')).toEqual([])
    expect(smoke.filter(e => ports.has(e.remotePort ?? -1)).map(describeEntry)).toEqual([])
    expect(proxy.connections.filter(c => c.target === appHost)).toEqual([])
  })

  it('set apart only the app’s own R2 reads, which never passed the proxy', () => {
    const ports = proxy.localPorts()
    const reads = sb.log.requests({ service: 'r2' }).filter(isAppsOwnRead)
    expect(reads.length).toBeGreaterThan(0)
    expect(reads.filter(e => ports.has(e.remotePort ?? -1)).map(describeEntry)).toEqual([])
  })

  it('never printed the proxy password', () => {
    expectNoLeaks(sb, [result])
    expect(findLeaks(result, passwordForms(PASSWORD), [journalText(sb)])).toEqual([])
    // Masked for the runner before anything was sent.
    const masks = result.stdout.split('\n').filter(l => l.startsWith('::add-mask::'))
    expect(masks).toEqual(expect.arrayContaining([`::add-mask::${PASSWORD}`]))
  })
})

describe('a proxy that refuses the credentials', () => {
  const WRONG = `wrong-${randomBytes(12).toString('base64url')}`
  let refused: ActionResult
  let before: number

  beforeAll(async () => {
    before = sb.log.entries.length > 0 ? sb.log.entries.at(-1)!.seq : 0
    proxy.refusals.length = 0
    refused = await runAction(sb, nextRunInputs(sb), {
      env: { HTTPS_PROXY: proxyUrl(proxy, WRONG), HTTP_PROXY: proxyUrl(proxy, WRONG) }
    })
  })

  it('fails the step, saying the proxy answered 407, changes nothing and never prints the password', () => {
    expect(refused.exitCode).toBe(1)
    expect(refused.outputs.result).toBe('failed')
    expect(refused.stdout).toMatch(/^::error::.*Proxy response \(407\)/m)
    expect(proxy.refusals.length).toBeGreaterThan(0)
    expect(proxy.refusals.every(r => r.status === 407)).toBe(true)
    expect(mutationList(sb, {}, before)).toEqual([])
    expect(findLeaks(refused, passwordForms(WRONG))).toEqual([])
    expectNoLeaks(sb, [refused])
  })
})
