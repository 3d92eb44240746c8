/**
 * The proxy settings as undici's EnvHttpProxyAgent reads them, the one line that tells them
 * (host and port only), a proxy password (masked before anything, never in an error), and which
 * hosts NO_PROXY exempts, request by request through the agent the action installs. That the
 * action's requests really go through it is proved end to end (e2e/proxy.test.ts): Jest runs
 * tests in a context of their own, whose globalThis Node's fetch does not read.
 */
import type { LookupFunction } from 'node:net'
import { request } from 'undici'
import { RequestLog } from '../sandbox/log.js'
import { startForwardProxy, type ForwardProxy } from '../sandbox/proxy.js'
import { Service } from '../sandbox/service.js'
import {
  createProxyAgent,
  describeProxy,
  fetchUsesGlobalDispatcher,
  readProxyConfig,
  useProxyFromEnv
} from '../src/proxy.js'
import { scrub } from '../src/redact.js'

const PROXY = 'http://proxy.corp.example:3128'

describe('readProxyConfig', () => {
  it('is undefined without a proxy variable (undici is then never loaded)', () => {
    expect(readProxyConfig({})).toBeUndefined()
    expect(readProxyConfig({ NO_PROXY: 'localhost', HTTPS_PROXY: '' })).toBeUndefined()
  })

  it('reads the lower-case variable first, even when it is empty', () => {
    const config = readProxyConfig({
      https_proxy: 'http://lower.example:8080',
      HTTPS_PROXY: PROXY,
      HTTP_PROXY: PROXY
    })!
    expect(config.https?.variable).toBe('https_proxy')
    expect(config.https?.url.host).toBe('lower.example:8080')
    expect(config.http?.variable).toBe('HTTP_PROXY')

    // An empty https_proxy hides HTTPS_PROXY; https:// URLs then use HTTP_PROXY (as in undici).
    const hidden = readProxyConfig({ https_proxy: '', HTTPS_PROXY: PROXY, HTTP_PROXY: PROXY })!
    expect(hidden.https?.variable).toBe('HTTP_PROXY')
  })

  it('sends https:// through HTTP_PROXY when HTTPS_PROXY is unset, and http:// direct when only HTTPS_PROXY is set', () => {
    expect(readProxyConfig({ HTTP_PROXY: PROXY })!.https?.variable).toBe('HTTP_PROXY')
    const httpsOnly = readProxyConfig({ HTTPS_PROXY: PROXY })!
    expect(httpsOnly.https?.variable).toBe('HTTPS_PROXY')
    expect(httpsOnly.http).toBeUndefined()
  })

  it('splits NO_PROXY at commas and spaces, in lower case', () => {
    const config = readProxyConfig({
      HTTPS_PROXY: PROXY,
      no_proxy: 'localhost, 127.0.0.1 .GitHub.com,,api.internal:8443'
    })!
    expect(config.noProxyEntries).toEqual([
      'localhost',
      '127.0.0.1',
      '.github.com',
      'api.internal:8443'
    ])
  })

  it.each([
    ['proxy.corp.example:3128', 'is not a proxy URL'],
    ['socks5://proxy.corp.example:1080', 'is not a proxy URL'],
    ['not a url', 'is not a URL'],
    ['http://user:pa55word-secret@proxy.corp.example:99999', 'is not a URL']
  ])('refuses %j, naming the variable and not the value', (value, message) => {
    let error: unknown
    try {
      readProxyConfig({ HTTPS_PROXY: value })
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(Error)
    const text = (error as Error).message
    expect(text).toContain(`HTTPS_PROXY ${message}`)
    expect(text).toContain('expected http://host:port')
    expect(text).not.toContain(value)
  })

  it('masks the password, its decoded form and the Basic credentials before anything else', () => {
    const config = readProxyConfig({
      HTTPS_PROXY: 'http://alice:s3cret%40pa55@proxy.example:8080'
    })!
    expect(config.https?.url.password).toBe('s3cret%40pa55')
    const basic = Buffer.from('alice:s3cret@pa55').toString('base64')
    const printed = scrub(`s3cret%40pa55 s3cret@pa55 ${basic}`)
    expect(printed).not.toContain('pa55')
    expect(printed).not.toContain(basic)
  })

  it('masks an unparsable value that may hold a password, as a whole', () => {
    const value = 'http://bob:another-s3cret@proxy.example:70000'
    expect(() => readProxyConfig({ HTTP_PROXY: value })).toThrow('HTTP_PROXY is not a URL')
    expect(scrub(`value ${value}`)).toBe('value ***')
  })
})

describe('describeProxy', () => {
  const line = (env: NodeJS.ProcessEnv): string => describeProxy(readProxyConfig(env)!)

  it('names host, port and variables, never the credentials', () => {
    const text = line({
      HTTPS_PROXY: 'http://carol:pa55-for-carol@proxy.example:3128',
      HTTP_PROXY: 'http://carol:pa55-for-carol@proxy.example:3128/',
      NO_PROXY: 'localhost,127.0.0.1,.github.com'
    })
    expect(text).toBe(
      'Proxy: requests go through proxy.example:3128 (HTTPS_PROXY, HTTP_PROXY); NO_PROXY exempts: localhost, 127.0.0.1, .github.com.'
    )
    expect(text).not.toContain('carol')
  })

  it('gives the default port of the scheme', () => {
    expect(line({ https_proxy: 'https://proxy.example' })).toBe(
      'Proxy: https:// requests go through proxy.example:443 (https_proxy), http:// requests direct; NO_PROXY exempts: none.'
    )
    expect(line({ HTTP_PROXY: 'http://proxy.example' })).toBe(
      'Proxy: requests go through proxy.example:80 (HTTP_PROXY); NO_PROXY exempts: none.'
    )
  })

  it('tells two proxies apart', () => {
    expect(line({ HTTPS_PROXY: 'http://a.example:1', HTTP_PROXY: 'http://b.example:2' })).toBe(
      'Proxy: https:// requests go through a.example:1 (HTTPS_PROXY), http:// requests through b.example:2 (HTTP_PROXY); NO_PROXY exempts: none.'
    )
  })

  it('says when NO_PROXY=* turns the proxy off', () => {
    expect(line({ HTTPS_PROXY: PROXY, NO_PROXY: '*' })).toBe(
      'Proxy: not used, NO_PROXY=* exempts every host.'
    )
  })
})

describe('useProxyFromEnv', () => {
  it('does nothing without a proxy variable', async () => {
    await expect(useProxyFromEnv({ NO_PROXY: 'localhost' })).resolves.toBeUndefined()
  })

  it('rejects a bad proxy URL before any request, naming the variable', async () => {
    await expect(useProxyFromEnv({ http_proxy: 'proxy:3128' })).rejects.toThrow(
      'http_proxy is not a proxy URL'
    )
  })
})

describe('NO_PROXY, as the agent applies it', () => {
  // Every name leads to 127.0.0.1, for the agent and the proxy alike: real-world names, no network.
  const toLoopback: LookupFunction = (_name, options, callback) => {
    if (options.all) callback(null, [{ address: '127.0.0.1', family: 4 }])
    else callback(null, '127.0.0.1', 4)
  }
  const log = new RequestLog()
  const target = new Service('app', log, () => ({ status: 200, body: 'ok' }))
  let port: number
  let proxy: ForwardProxy

  beforeAll(async () => {
    port = Number(new URL(await target.start()).port)
    proxy = await startForwardProxy({ lookup: toLoopback })
  })

  afterAll(async () => {
    await proxy.stop()
    await target.stop()
  })

  const HOSTS = ['api.github.com', 'github.com', 'api.cloudflare.com', 'localhost', '127.0.0.1']

  /** The hosts (on the target's port) whose requests went direct; every other one was proxied. */
  async function direct(noProxy: string): Promise<string[]> {
    const config = readProxyConfig({
      HTTPS_PROXY: proxy.url,
      HTTP_PROXY: proxy.url,
      NO_PROXY: noProxy.replaceAll('{port}', String(port))
    })!
    const agent = await createProxyAgent(config, { connect: { lookup: toLoopback } })
    const went: string[] = []
    try {
      for (const host of HOSTS) {
        const answer = await request(`http://${host}:${port}/`, { dispatcher: agent })
        expect(await answer.body.text()).toBe('ok')
        const { remotePort } = log.requests().at(-1)!
        const via = proxy.connections.find(c => c.localPort === remotePort)
        if (via) expect(via.target).toBe(`${host}:${port}`)
        else went.push(host)
      }
    } finally {
      await agent.close()
    }
    return went
  }

  it.each([
    ['', []],
    ['.github.com', ['api.github.com']],
    ['*.github.com', ['api.github.com']],
    ['github.com', ['github.com']],
    ['GitHub.com .Cloudflare.com', ['github.com', 'api.cloudflare.com']],
    ['localhost', ['localhost']],
    ['127.0.0.1', ['127.0.0.1']],
    ['127.0.0.1:{port}', ['127.0.0.1']],
    ['127.0.0.1:1,localhost:1', []]
  ])('NO_PROXY=%j sends direct: %j', async (noProxy, expected) => {
    expect(await direct(noProxy)).toEqual(expected)
  })
})

describe('fetchUsesGlobalDispatcher', () => {
  it.each([
    ['6.24.1', true],
    ['7.16.0', true],
    ['7.26.0', true],
    ['7.27.0', false],
    ['7.27.1', false],
    ['7.27.2', true],
    ['7.29.1', true],
    ['8.3.0', false],
    [undefined, false]
  ])('undici %s: %s', (version, expected) => {
    expect(fetchUsesGlobalDispatcher(version)).toBe(expected)
  })

  it('holds for the Node that runs the tests', () => {
    expect(fetchUsesGlobalDispatcher(process.versions.undici)).toBe(true)
  })
})
