/**
 * TokenApi against the Cloudflare simulator (sandbox/cloudflare.ts), which validates every request
 * and answer against the OpenAPI excerpt, and against a bare local server for what the simulator
 * does not do: hang (timeouts), echo a token back in an error message (redaction).
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { CloudflareSim, PERMISSION_GROUPS } from '../sandbox/cloudflare.js'
import { RequestLog } from '../sandbox/log.js'
import {
  CloudflareApiError,
  TokenApi,
  clonePolicies,
  resolveCurrentToken,
  sameCondition,
  samePolicies,
  type TokenPolicy
} from '../src/cloudflare/tokens.js'
import { scaledClock } from '../src/backoff.js'

const ACCOUNT = '0123456789abcdef0123456789abcdef'
const groupId = (name: string): string => {
  const found = PERMISSION_GROUPS.find(g => g.name === name)
  if (!found) throw new Error(`no permission group ${name}`)
  return found.id
}
const ITEM_WRITE = groupId('Workers R2 Storage Bucket Item Write')

const bucketPolicy = (bucket: string): TokenPolicy => ({
  effect: 'allow',
  permission_groups: [{ id: ITEM_WRITE }],
  resources: { [`com.cloudflare.edge.r2.bucket.${ACCOUNT}_default_${bucket}`]: '*' }
})

/** The simulator, with the few helpers these tests need. */
class Cf {
  readonly log = new RequestLog()
  readonly sim = new CloudflareSim(this.log)

  /** A management token: user-owned with user and ACCOUNT rights, or account-owned with ACCOUNT rights. */
  addManager(rights: { user: boolean; accounts: string[] }): string {
    const policies: TokenPolicy[] = rights.accounts.map(account => ({
      effect: 'allow',
      permission_groups: [{ id: groupId('Account API Tokens Write') }],
      resources: { [`com.cloudflare.api.account.${account}`]: '*' }
    }))
    if (rights.user) {
      policies.push({
        effect: 'allow',
        permission_groups: [{ id: groupId('API Tokens Write') }],
        resources: { [`com.cloudflare.api.user.${this.sim.userId}`]: '*' }
      })
    }
    if (policies.length === 0) policies.push(bucketPolicy('unrelated'))
    const owner =
      rights.user || rights.accounts.length === 0
        ? ({ kind: 'user' } as const)
        : ({ kind: 'account', accountId: rights.accounts[0]! } as const)
    return this.sim.addToken({ name: 'manager', owner, policies }).value
  }

  addToken(...args: Parameters<CloudflareSim['addToken']>) {
    return this.sim.addToken(...args)
  }

  inject(...args: Parameters<CloudflareSim['service']['inject']>): void {
    this.sim.service.inject(...args)
  }

  get requests() {
    return this.log.requests({ service: 'cloudflare' })
  }

  count(method: string, path: RegExp): number {
    return this.requests.filter(r => r.method === method && path.test(r.path.split('?')[0]!)).length
  }
}

interface World {
  cf: Cf
  baseURL: string
  /** A management token with user rights and rights on ACCOUNT. */
  managerValue: string
  api: TokenApi
}

async function startWorld(): Promise<World> {
  const cf = new Cf()
  const baseURL = await cf.sim.start()
  const managerValue = cf.addManager({ user: true, accounts: [ACCOUNT] })
  // Retry pauses run 20 times as fast.
  const api = new TokenApi({ apiToken: managerValue, baseURL, clock: scaledClock(0.05) })
  return { cf, baseURL, managerValue, api }
}

async function stopWorld(w: World): Promise<void> {
  await w.cf.sim.stop()
  // Every request TokenApi sent, and every answer, matched the official OpenAPI description.
  expect(w.cf.log.violations).toEqual([])
}

describe('TokenApi', () => {
  let w: World
  beforeEach(async () => {
    w = await startWorld()
  })
  afterEach(async () => {
    await stopWorld(w)
  })

  it('creates a copy without policy ids and reads it back with the same policies', async () => {
    const old = w.cf.addToken({
      name: 'app',
      policies: [bucketPolicy('avatars')],
      condition: { request_ip: { in: ['192.0.2.0/24'] } }
    })
    const current = await w.api.get({ kind: 'user' }, old.id)
    expect(current.policies[0]?.id).toBeDefined()

    const { token, value } = await w.api.create(
      { kind: 'user' },
      { name: 'app (rotated)', policies: current.policies, condition: current.condition }
    )
    expect(value).toMatch(/^cfut_/)
    expect(token.name).toBe('app (rotated)')

    const post = w.cf.requests.find(r => r.method === 'POST')!
    const body = post.body as { policies: Array<Record<string, unknown>> }
    expect(body.policies[0]).not.toHaveProperty('id')
    expect(body.policies[0]!.permission_groups).toEqual([{ id: ITEM_WRITE }])

    const reread = await w.api.get({ kind: 'user' }, token.id)
    expect(samePolicies(reread.policies, current.policies)).toBe(true)
    expect(sameCondition(reread.condition, current.condition)).toBe(true)
  })

  it('never retries a create answered with 500', async () => {
    w.cf.inject({ method: 'POST', path: /\/user\/tokens$/, status: 500 })
    const error = await w.api
      .create({ kind: 'user' }, { name: 'x', policies: [bucketPolicy('b')] })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CloudflareApiError)
    expect((error as CloudflareApiError).status).toBe(500)
    expect(w.cf.count('POST', /\/user\/tokens$/)).toBe(1)
  })

  it('never retries a create whose connection dropped, and calls the failure ambiguous', async () => {
    w.cf.inject({ method: 'POST', path: /\/user\/tokens$/, dropAfterHandling: true })
    const error = (await w.api
      .create({ kind: 'user' }, { name: 'dropped', policies: [bucketPolicy('b')] })
      .catch((e: unknown) => e)) as CloudflareApiError
    expect(error).toBeInstanceOf(CloudflareApiError)
    expect(error.status).toBeUndefined()
    expect(error.ambiguous).toBe(true)
    expect(error.message).toMatch(/may have taken effect/)
    expect(w.cf.count('POST', /\/user\/tokens$/)).toBe(1)
    // The token exists although the client never saw it: the caller finds it by name.
    const names = (await w.api.list({ kind: 'user' })).map(t => t.name)
    expect(names).toContain('dropped')
  })

  it('retries a GET answered with 503 (honouring retry-after)', async () => {
    const old = w.cf.addToken({ name: 'app', policies: [bucketPolicy('avatars')] })
    w.cf.inject({
      method: 'GET',
      path: new RegExp(`/user/tokens/${old.id}$`),
      status: 503,
      retryAfter: 0,
      times: 2
    })
    const token = await w.api.get({ kind: 'user' }, old.id)
    expect(token.id).toBe(old.id)
    expect(w.cf.count('GET', new RegExp(`/user/tokens/${old.id}$`))).toBe(3)
  })

  it('deletes, and reports a second delete as not-found', async () => {
    const old = w.cf.addToken({ name: 'app', policies: [bucketPolicy('avatars')] })
    await expect(w.api.delete({ kind: 'user' }, old.id)).resolves.toBe('deleted')
    await expect(w.api.delete({ kind: 'user' }, old.id)).resolves.toBe('not-found')
  })

  it('lists every page', async () => {
    for (let i = 0; i < 60; i++) {
      w.cf.addToken({
        name: `t${i}`,
        owner: { kind: 'account', accountId: ACCOUNT },
        policies: [bucketPolicy('b')]
      })
    }
    const tokens = await w.api.list({ kind: 'account', accountId: ACCOUNT })
    expect(tokens).toHaveLength(60)
    expect(new Set(tokens.map(t => t.id)).size).toBe(60)
    expect(w.cf.count('GET', /\/accounts\/[^/]+\/tokens$/)).toBe(2)
  })

  it('disables a token with its full definition and keeps its policies', async () => {
    const owner = { kind: 'account' as const, accountId: ACCOUNT }
    const old = w.cf.addToken({
      name: 'app',
      owner,
      policies: [bucketPolicy('avatars')],
      expires_on: '2099-01-01T00:00:00Z'
    })
    const token = await w.api.get(owner, old.id)
    const disabled = await w.api.setStatus(owner, token, 'disabled')
    expect(disabled.status).toBe('disabled')
    expect(disabled.name).toBe('app')
    expect(disabled.expires_on).toBe('2099-01-01T00:00:00Z')
    expect(samePolicies(disabled.policies, token.policies)).toBe(true)
    const put = w.cf.requests.find(r => r.method === 'PUT')!
    expect(put.body).toMatchObject({ name: 'app', status: 'disabled' })
  })

  it('lists permission groups with names', async () => {
    const groups = await w.api.permissionGroups({ kind: 'user' })
    expect(groups).toContainEqual(
      expect.objectContaining({ id: ITEM_WRITE, name: 'Workers R2 Storage Bucket Item Write' })
    )
    const accountGroups = await w.api.permissionGroups({ kind: 'account', accountId: ACCOUNT })
    expect(accountGroups.some(g => g.name === 'API Tokens Write')).toBe(false)
  })

  it('verifies a token as itself', async () => {
    const app = w.cf.addToken({ name: 'app', policies: [bucketPolicy('avatars')] })
    await expect(w.api.verify(app.value, { kind: 'user' })).resolves.toEqual({
      id: app.id,
      status: 'active'
    })
    const verify = w.cf.requests.at(-1)!
    expect(verify.headers.authorization).toBe(`Bearer ${app.value}`)
  })

  it('never puts a token value in an error message', async () => {
    const app = w.cf.addToken({ name: 'app', policies: [bucketPolicy('avatars')] })
    w.cf.addToken({ name: 'other', policies: [] })
    await w.api.delete({ kind: 'user' }, app.id)
    const error = (await w.api
      .verify(app.value, { kind: 'user' })
      .catch((e: unknown) => e)) as CloudflareApiError
    expect(error).toBeInstanceOf(CloudflareApiError)
    expect(error.status).toBe(401)
    expect(error.codes).toEqual([1000])
    expect(error.message).not.toContain(app.value)
    expect(error.message).not.toContain(w.managerValue)
  })

  it('explains a missing permission', async () => {
    const weak = w.cf.addManager({ user: false, accounts: [] })
    const api = new TokenApi({ apiToken: weak, baseURL: w.baseURL })
    const error = (await api.list({ kind: 'user' }).catch((e: unknown) => e)) as CloudflareApiError
    expect(error.status).toBe(403)
    expect(error.codes).toEqual([9109])
    expect(error.message).toMatch(/API Tokens Write/)
  })
})

describe('resolveCurrentToken', () => {
  let w: World
  beforeEach(async () => {
    w = await startWorld()
  })
  afterEach(async () => {
    await stopWorld(w)
  })

  it('finds a user-owned token by verifying its value', async () => {
    const app = w.cf.addToken({ name: 'app', policies: [bucketPolicy('avatars')] })
    const { owner, token } = await resolveCurrentToken(w.api, {
      tokenOwner: 'auto',
      accountId: ACCOUNT,
      currentToken: app.value
    })
    expect(owner).toEqual({ kind: 'user' })
    expect(token.id).toBe(app.id)
    expect(w.cf.count('GET', /\/accounts\//)).toBe(0)
  })

  it('falls back to the account endpoints on code 1000 from /user/tokens/verify', async () => {
    const owner = { kind: 'account' as const, accountId: ACCOUNT }
    const app = w.cf.addToken({ name: 'app', owner, policies: [bucketPolicy('avatars')] })
    const resolved = await resolveCurrentToken(w.api, {
      tokenOwner: 'auto',
      accountId: ACCOUNT,
      currentToken: app.value
    })
    expect(resolved.owner).toEqual(owner)
    expect(resolved.token.id).toBe(app.id)
    const paths = w.cf.requests.map(r => r.path)
    expect(paths).toEqual([
      '/client/v4/user/tokens/verify',
      `/client/v4/accounts/${ACCOUNT}/tokens/verify`,
      `/client/v4/accounts/${ACCOUNT}/tokens/${app.id}`
    ])
  })

  it('falls back to the account endpoints on 404 for an access key id', async () => {
    const owner = { kind: 'account' as const, accountId: ACCOUNT }
    const app = w.cf.addToken({ name: 'app', owner, policies: [bucketPolicy('avatars')] })
    const resolved = await resolveCurrentToken(w.api, {
      tokenOwner: 'auto',
      accountId: ACCOUNT,
      currentAccessKeyId: app.id
    })
    expect(resolved.owner).toEqual(owner)
    expect(w.cf.requests.map(r => r.status)).toEqual([404, 200])
  })

  it('falls back to the account endpoints on 403 (a manager without user rights)', async () => {
    const owner = { kind: 'account' as const, accountId: ACCOUNT }
    const accountManager = w.cf.addManager({ user: false, accounts: [ACCOUNT] })
    const app = w.cf.addToken({ name: 'app', owner, policies: [bucketPolicy('avatars')] })
    const api = new TokenApi({ apiToken: accountManager, baseURL: w.baseURL })
    const resolved = await resolveCurrentToken(api, {
      tokenOwner: 'auto',
      accountId: ACCOUNT,
      currentAccessKeyId: app.id
    })
    expect(resolved.owner).toEqual(owner)
    expect(w.cf.requests.map(r => r.status)).toEqual([403, 200])
  })

  it('says to set account-id when auto cannot fall back', async () => {
    const app = w.cf.addToken({
      name: 'app',
      owner: { kind: 'account', accountId: ACCOUNT },
      policies: [bucketPolicy('avatars')]
    })
    await expect(
      resolveCurrentToken(w.api, { tokenOwner: 'auto', currentAccessKeyId: app.id })
    ).rejects.toThrow(/set account-id/)
  })

  it('reports both attempts when the token is nowhere', async () => {
    const error = (await resolveCurrentToken(w.api, {
      tokenOwner: 'auto',
      accountId: ACCOUNT,
      currentAccessKeyId: 'ffffffffffffffffffffffffffffffff'
    }).catch((e: unknown) => e)) as CloudflareApiError
    expect(error).toBeInstanceOf(CloudflareApiError)
    expect(error.status).toBe(404)
    expect(error.message).toMatch(/User endpoints: .*Account endpoints: /)
  })

  it('uses only the endpoints token-owner names', async () => {
    const app = w.cf.addToken({ name: 'app', policies: [bucketPolicy('avatars')] })
    await expect(
      resolveCurrentToken(w.api, {
        tokenOwner: 'account',
        accountId: ACCOUNT,
        currentAccessKeyId: app.id
      })
    ).rejects.toMatchObject({ status: 404 })
    expect(w.cf.count('GET', /\/user\//)).toBe(0)
    await expect(
      resolveCurrentToken(w.api, { tokenOwner: 'account', currentAccessKeyId: app.id })
    ).rejects.toThrow(/account-id/)
    await expect(resolveCurrentToken(w.api, { tokenOwner: 'user' })).rejects.toThrow(
      /current-token/
    )
  })
})

describe('TokenApi against a bare server', () => {
  let server: http.Server
  let baseURL: string
  let posts: number
  let handler: (req: http.IncomingMessage, res: http.ServerResponse) => void

  beforeEach(async () => {
    posts = 0
    server = http.createServer((req, res) => {
      if (req.method === 'POST') posts++
      handler(req, res)
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}/client/v4`
  })
  afterEach(async () => {
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })

  it('does not retry a create that timed out', async () => {
    handler = () => undefined // never answers
    const api = new TokenApi({ apiToken: 'management-secret', baseURL, timeoutMs: 300 })
    const error = (await api
      .create({ kind: 'user' }, { name: 'slow', policies: [] })
      .catch((e: unknown) => e)) as CloudflareApiError
    expect(error).toBeInstanceOf(CloudflareApiError)
    // Node reports the abort as a timeout; under Jest's VM realms the SDK sees a plain connection failure.
    expect(error.message).toMatch(/timed out|no answer/)
    expect(error.ambiguous).toBe(true)
    expect(posts).toBe(1)
  })

  it('redacts token values an error envelope repeats', async () => {
    handler = (req, res) => {
      const auth = String(req.headers.authorization ?? '')
      res.writeHead(401, { 'content-type': 'application/json' })
      res.end(
        JSON.stringify({
          success: false,
          errors: [{ code: 1000, message: `Invalid API Token ${auth}` }],
          messages: [],
          result: null
        })
      )
    }
    const api = new TokenApi({ apiToken: 'management-secret', baseURL })
    const verifyError = (await api
      .verify('cfut_the-current-value', { kind: 'user' })
      .catch((e: unknown) => e)) as Error
    expect(verifyError.message).toContain('Invalid API Token')
    expect(verifyError.message).not.toContain('cfut_the-current-value')
    const getError = (await api.get({ kind: 'user' }, 'abc').catch((e: unknown) => e)) as Error
    expect(getError.message).not.toContain('management-secret')
    expect(getError.message).toContain('***')
  })

  it('ignores Cloudflare credentials in the environment', async () => {
    let headers: http.IncomingHttpHeaders = {}
    handler = (req, res) => {
      headers = req.headers
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ success: true, errors: [], messages: [], result: [] }))
    }
    process.env['CLOUDFLARE_API_KEY'] = 'global-key'
    process.env['CLOUDFLARE_EMAIL'] = 'someone@example.com'
    try {
      const api = new TokenApi({ apiToken: 'management-secret', baseURL })
      await api.permissionGroups({ kind: 'user' })
    } finally {
      delete process.env['CLOUDFLARE_API_KEY']
      delete process.env['CLOUDFLARE_EMAIL']
    }
    expect(headers.authorization).toBe('Bearer management-secret')
    expect(headers['x-auth-key']).toBeUndefined()
    expect(headers['x-auth-email']).toBeUndefined()
  })
})

describe('policy helpers', () => {
  const policies: TokenPolicy[] = [
    {
      id: 'p1',
      effect: 'allow',
      permission_groups: [
        { id: 'g1', name: 'One', meta: { label: 'x' } },
        { id: 'g2', name: 'Two' }
      ],
      resources: { 'com.cloudflare.api.account.a': { 'com.cloudflare.edge.r2.bucket.*': '*' } }
    },
    {
      id: 'p2',
      effect: 'deny',
      permission_groups: [{ id: 'g3' }],
      resources: { 'com.cloudflare.edge.r2.bucket.a_default_b': '*' }
    }
  ]

  it('clonePolicies drops policy ids, group names and meta, and copies resources', () => {
    const cloned = clonePolicies(policies)
    expect(cloned).toEqual([
      {
        effect: 'allow',
        permission_groups: [{ id: 'g1' }, { id: 'g2' }],
        resources: { 'com.cloudflare.api.account.a': { 'com.cloudflare.edge.r2.bucket.*': '*' } }
      },
      {
        effect: 'deny',
        permission_groups: [{ id: 'g3' }],
        resources: { 'com.cloudflare.edge.r2.bucket.a_default_b': '*' }
      }
    ])
    expect(cloned[0]!.resources).not.toBe(policies[0]!.resources)
  })

  it('samePolicies ignores order, ids and names but not grants', () => {
    const reordered: TokenPolicy[] = [
      { ...policies[1]!, id: 'other' },
      {
        effect: 'allow',
        permission_groups: [{ id: 'g2' }, { id: 'g1' }],
        resources: { 'com.cloudflare.api.account.a': { 'com.cloudflare.edge.r2.bucket.*': '*' } }
      }
    ]
    expect(samePolicies(policies, reordered)).toBe(true)
    expect(samePolicies(policies, clonePolicies(policies))).toBe(true)
    expect(samePolicies(policies, policies.slice(0, 1))).toBe(false)
    const denyToAllow = [policies[0]!, { ...policies[1]!, effect: 'allow' as const }]
    expect(samePolicies(policies, denyToAllow)).toBe(false)
    const otherBucket = [
      policies[0]!,
      { ...policies[1]!, resources: { 'com.cloudflare.edge.r2.bucket.a_default_c': '*' } }
    ]
    expect(samePolicies(policies, otherBucket)).toBe(false)
    const extraGroup = [
      { ...policies[0]!, permission_groups: [{ id: 'g1' }, { id: 'g2' }, { id: 'g4' }] },
      policies[1]!
    ]
    expect(samePolicies(policies, extraGroup)).toBe(false)
  })

  it('sameCondition compares JSON regardless of key order, spelling of the IP key and CIDR order', () => {
    const a = { request_ip: { in: ['192.0.2.0/24', '2001:db8::/32'], not_in: ['192.0.2.1/32'] } }
    const b = { request_ip: { not_in: ['192.0.2.1/32'], in: ['2001:db8::/32', '192.0.2.0/24'] } }
    expect(sameCondition(a, b)).toBe(true)
    expect(sameCondition(a, { 'request.ip': b.request_ip })).toBe(true)
    expect(sameCondition(undefined, {})).toBe(true)
    expect(sameCondition(null, undefined)).toBe(true)
    expect(sameCondition(a, undefined)).toBe(false)
    expect(sameCondition(a, { request_ip: { in: ['192.0.2.0/24'] } })).toBe(false)
    expect(
      sameCondition(a, { request_ip: { in: a.request_ip.not_in, not_in: a.request_ip.in } })
    ).toBe(false)
  })
})
