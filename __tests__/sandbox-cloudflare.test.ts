import Cloudflare from 'cloudflare'
import { RequestLog } from '../sandbox/log.js'
import {
  CloudflareSim,
  PERMISSION_GROUPS,
  RATE_LIMIT,
  TOKEN_QUOTA,
  type CfOwner,
  type CfTokenRecord
} from '../sandbox/cloudflare.js'

const ACCOUNT = '0123456789abcdef0123456789abcdef'
const OTHER_ACCOUNT = 'fedcba9876543210fedcba9876543210'
const BUCKET_RESOURCE = `com.cloudflare.edge.r2.bucket.${ACCOUNT}_default_avatars-bucket`

function groupId(name: string): string {
  const group = PERMISSION_GROUPS.find(g => g.name === name)
  if (!group) throw new Error(`no permission group ${name}`)
  return group.id
}

interface Answer {
  status: number
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any
  headers: Headers
}

let log: RequestLog
let sim: CloudflareSim
/** A user token with API Tokens Write on the user and Account API Tokens Write on ACCOUNT. */
let manager: CfTokenRecord

async function api(
  method: string,
  path: string,
  options: { token?: string; body?: unknown; authorization?: string } = {}
): Promise<Answer> {
  const headers: Record<string, string> = {}
  if (options.authorization !== undefined) headers.authorization = options.authorization
  else if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(`${sim.apiUrl}${path}`, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body)
  })
  return { status: response.status, json: await response.json(), headers: response.headers }
}

function bucketPolicy(): {
  effect: 'allow'
  permission_groups: Array<{ id: string; name?: string }>
  resources: Record<string, unknown>
} {
  return {
    effect: 'allow',
    permission_groups: [
      { id: groupId('Workers R2 Storage Bucket Item Write'), name: 'a stale name' }
    ],
    resources: { [BUCKET_RESOURCE]: '*' }
  }
}

function seedWith(
  groups: string[],
  resource: string,
  owner: CfOwner = { kind: 'user' }
): CfTokenRecord {
  return sim.addToken({
    name: `holds ${groups.join(', ') || 'nothing'}`,
    owner,
    policies: [
      {
        effect: 'allow',
        permission_groups: groups.map(name => ({ id: groupId(name) })),
        resources: { [resource]: '*' }
      }
    ]
  })
}

beforeEach(async () => {
  log = new RequestLog()
  sim = new CloudflareSim(log)
  await sim.start()
  manager = sim.addToken({
    name: 'token manager',
    policies: [
      {
        effect: 'allow',
        permission_groups: [{ id: groupId('API Tokens Write') }],
        resources: { [`com.cloudflare.api.user.${sim.userId}`]: '*' }
      },
      {
        effect: 'allow',
        permission_groups: [{ id: groupId('Account API Tokens Write') }],
        resources: { [`com.cloudflare.api.account.${ACCOUNT}`]: '*' }
      }
    ]
  })
})

afterEach(async () => {
  await sim.stop()
})

describe('CloudflareSim user tokens', () => {
  it('creates, reads, lists, verifies, updates and deletes a token; the value comes only from create', async () => {
    const condition = { 'request.ip': { in: ['192.0.2.0/24'], not_in: ['192.0.2.7/32'] } }
    const expiresOn = new Date(Date.now() + 86_400_000).toISOString().replace(/\.\d{3}Z$/, 'Z')
    const created = await api('POST', '/user/tokens', {
      token: manager.value,
      body: {
        name: 'avatars uploader',
        policies: [bucketPolicy()],
        condition,
        expires_on: expiresOn
      }
    })
    expect(created.status).toBe(200)
    expect(created.json).toMatchObject({ success: true, errors: [], messages: [] })
    const token = created.json.result
    expect(token.value).toMatch(/^cfut_[A-Za-z0-9]{40}$/)
    expect(token.id).toMatch(/^[0-9a-f]{32}$/)
    expect(token).toMatchObject({
      name: 'avatars uploader',
      status: 'active',
      expires_on: expiresOn,
      condition
    })
    expect(token.issued_on).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    expect(token.last_used_on).toBeUndefined()
    expect(token.policies).toEqual([
      {
        id: expect.stringMatching(/^[0-9a-f]{32}$/),
        effect: 'allow',
        permission_groups: [
          {
            id: groupId('Workers R2 Storage Bucket Item Write'),
            name: 'Workers R2 Storage Bucket Item Write'
          }
        ],
        resources: { [BUCKET_RESOURCE]: '*' }
      }
    ])
    expect(log.events('token.created').map(e => e.detail)).toEqual([
      { id: token.id, name: 'avatars uploader' }
    ])
    expect(JSON.stringify(log.events())).not.toContain(token.value)

    const read = await api('GET', `/user/tokens/${token.id}`, { token: manager.value })
    expect(read.status).toBe(200)
    expect(read.json.result.value).toBeUndefined()
    expect(read.json.result.policies).toEqual(token.policies)
    expect(read.json.result.condition).toEqual(condition)

    const listed = await api('GET', '/user/tokens?page=1&per_page=20', { token: manager.value })
    expect(listed.status).toBe(200)
    expect(listed.json.result.map((t: { id: string }) => t.id)).toEqual([manager.id, token.id])
    expect(JSON.stringify(listed.json)).not.toMatch(/cfut_/)
    expect(listed.json.result_info).toEqual({ page: 1, per_page: 20, count: 2, total_count: 2 })

    const verified = await api('GET', '/user/tokens/verify', { token: token.value })
    expect(verified.status).toBe(200)
    expect(verified.json.result).toEqual({ id: token.id, status: 'active', expires_on: expiresOn })
    expect(verified.json.messages[0].code).toBe(10000)
    expect(JSON.stringify(verified.json)).not.toContain(token.value)

    // The update keeps the policies when they are sent back with their ids, and (a PUT replaces
    // the whole token) the condition and expiry only because they are sent back too.
    const updated = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: {
        name: 'avatars uploader (old)',
        policies: read.json.result.policies,
        condition,
        expires_on: expiresOn,
        status: 'disabled'
      }
    })
    expect(updated.status).toBe(200)
    expect(updated.json.result).toMatchObject({
      name: 'avatars uploader (old)',
      status: 'disabled',
      condition,
      expires_on: expiresOn
    })
    expect(updated.json.result.policies).toEqual(token.policies)
    expect(updated.json.result.value).toBeUndefined()
    expect(log.events('token.updated')).toHaveLength(1)
    const disabled = await api('GET', '/user/tokens/verify', { token: token.value })
    expect(disabled.status).toBe(401)
    expect(disabled.json).toEqual({
      success: false,
      errors: [{ code: 1000, message: 'Invalid API Token' }],
      messages: [],
      result: null
    })

    const reactivated = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'avatars uploader', policies: read.json.result.policies, status: 'active' }
    })
    expect(reactivated.json.result.status).toBe('active')
    expect((await api('GET', '/user/tokens/verify', { token: token.value })).status).toBe(200)

    const deleted = await api('DELETE', `/user/tokens/${token.id}`, { token: manager.value })
    expect(deleted.status).toBe(200)
    expect(deleted.json.result).toEqual({ id: token.id })
    expect(sim.tokens.has(token.id)).toBe(false)
    expect(sim.deletedTokens.map(t => t.id)).toEqual([token.id])
    expect(log.events('token.deleted').map(e => e.detail)).toEqual([
      { id: token.id, name: 'avatars uploader' }
    ])
    expect((await api('GET', '/user/tokens/verify', { token: token.value })).status).toBe(401)
    const gone = await api('GET', `/user/tokens/${token.id}`, { token: manager.value })
    expect(gone.status).toBe(404)
    expect(gone.json.errors[0].code).toBe(7003)
    expect((await api('DELETE', `/user/tokens/${token.id}`, { token: manager.value })).status).toBe(
      404
    )

    expect(log.violations).toEqual([])
  })

  it('updates last_used_on on every successful authentication, not on failed ones', async () => {
    const token = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    expect(token.last_used_on).toBeNull()
    expect(manager.last_used_on).toBeNull()
    await api('GET', `/user/tokens/${token.id}`, { token: manager.value })
    expect(manager.last_used_on).toMatch(/Z$/)
    const before = await api('GET', `/user/tokens/${token.id}`, { token: manager.value })
    expect(before.json.result.last_used_on).toBeUndefined()
    await api('GET', '/user/tokens/verify', { token: token.value })
    const after = await api('GET', `/user/tokens/${token.id}`, { token: manager.value })
    expect(after.json.result.last_used_on).toBe(sim.findById(token.id)?.last_used_on)
    expect(Date.parse(after.json.result.last_used_on)).toBeLessThanOrEqual(Date.now())

    const rejected = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`, {
      kind: 'account',
      accountId: ACCOUNT
    })
    await api('GET', '/user/tokens/verify', { token: rejected.value })
    expect(rejected.last_used_on).toBeNull()
    expect(log.violations).toEqual([])
  })

  it('rejects policy ids on create with code 1001, and unknown permission groups', async () => {
    const reused = await api('POST', '/user/tokens', {
      token: manager.value,
      body: { name: 'clone', policies: [{ ...bucketPolicy(), id: manager.policies[0]!.id }] }
    })
    expect(reused.status).toBe(400)
    expect(reused.json.errors).toEqual([
      { code: 1001, message: 'Reusing existing policies is not supported by token creation' }
    ])
    const unknown = await api('POST', '/user/tokens', {
      token: manager.value,
      body: {
        name: 'unknown group',
        policies: [
          {
            effect: 'allow',
            permission_groups: [{ id: 'ffffffffffffffffffffffffffffffff' }],
            resources: {}
          }
        ]
      }
    })
    expect(unknown.status).toBe(400)
    expect(unknown.json.errors[0].code).toBe(1001)
    expect(sim.tokens.size).toBe(1)
    expect(log.events('token.created')).toEqual([])
    expect(log.violations).toEqual([])
  })

  it('answers 403 9109 without the needed permission group', async () => {
    const reader = seedWith(['API Tokens Read'], `com.cloudflare.api.user.${sim.userId}`)
    const list = await api('GET', '/user/tokens', { token: reader.value })
    expect(list.status).toBe(200)
    const create = await api('POST', '/user/tokens', {
      token: reader.value,
      body: { name: 'x', policies: [bucketPolicy()] }
    })
    expect(create.status).toBe(403)
    expect(create.json.errors).toEqual([
      { code: 9109, message: 'Unauthorized to access requested resource' }
    ])
    expect(
      (await api('DELETE', `/user/tokens/${manager.id}`, { token: reader.value })).status
    ).toBe(403)

    const otherUser = seedWith(
      ['API Tokens Write'],
      'com.cloudflare.api.user.00000000000000000000000000000000'
    )
    expect((await api('GET', '/user/tokens', { token: otherUser.value })).status).toBe(403)
    const nothing = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    expect(
      (await api('GET', '/user/tokens/permission_groups', { token: nothing.value })).status
    ).toBe(403)

    // A deny policy wins over an allow policy.
    const denied = sim.addToken({
      name: 'denied',
      policies: [
        ...manager.policies.map(({ effect, permission_groups, resources }) => ({
          effect,
          permission_groups,
          resources
        })),
        {
          effect: 'deny',
          permission_groups: [{ id: groupId('API Tokens Write') }],
          resources: { [`com.cloudflare.api.user.${sim.userId}`]: '*' }
        }
      ]
    })
    expect((await api('GET', '/user/tokens', { token: denied.value })).status).toBe(403)
    expect(log.violations).toEqual([])
  })

  it('rejects missing, malformed and unknown credentials with Cloudflare codes', async () => {
    const missing = await api('GET', '/user/tokens')
    expect(missing.status).toBe(400)
    expect(missing.json.errors[0].code).toBe(9106)
    const malformed = await api('GET', '/user/tokens', { authorization: 'Token abc' })
    expect(malformed.status).toBe(400)
    expect(malformed.json.errors[0]).toMatchObject({ code: 6003, error_chain: [{ code: 6111 }] })
    const unknown = await api('GET', '/user/tokens', {
      token: 'cfut_unknownunknownunknownunknownunknown00'
    })
    expect(unknown.status).toBe(403)
    expect(unknown.json.errors).toEqual([{ code: 9109, message: 'Invalid access token' }])
    const verify = await api('GET', '/user/tokens/verify', { token: 'nope' })
    expect(verify.status).toBe(401)
    expect(verify.json.errors[0].code).toBe(1000)
    expect(log.violations).toEqual([])
  })

  it('reports expired tokens as expired and refuses them and not-yet-valid ones', async () => {
    const expired = sim.addToken({
      name: 'expired',
      policies: manager.policies,
      issued_on: '2024-01-01T00:00:00Z',
      expires_on: '2024-06-01T00:00:00Z'
    })
    const early = sim.addToken({
      name: 'early',
      policies: manager.policies,
      not_before: new Date(Date.now() + 3_600_000).toISOString()
    })
    expect(sim.authenticate(expired.value)).toBeUndefined()
    expect(sim.authenticate(early.value)).toBeUndefined()
    expect(sim.findById(expired.id)?.status).toBe('expired')
    expect((await api('GET', '/user/tokens/verify', { token: expired.value })).status).toBe(401)
    expect((await api('GET', '/user/tokens/verify', { token: early.value })).status).toBe(401)
    expect((await api('GET', '/user/tokens', { token: expired.value })).status).toBe(403)
    const read = await api('GET', `/user/tokens/${expired.id}`, { token: manager.value })
    expect(read.json.result.status).toBe('expired')

    const listed = await api('GET', '/user/tokens', { token: manager.value })
    expect(listed.json.result.map((t: { id: string }) => t.id)).toEqual([manager.id, early.id])
    const all = await api('GET', '/user/tokens?include_expired=true', { token: manager.value })
    expect(all.json.result.map((t: { id: string }) => t.id)).toEqual([
      manager.id,
      expired.id,
      early.id
    ])
    expect(log.violations).toEqual([])
  })

  it('pages the list with page and per_page', async () => {
    for (let i = 0; i < 11; i++) seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    const first = await api('GET', '/user/tokens?page=1&per_page=5', { token: manager.value })
    const third = await api('GET', '/user/tokens?page=3&per_page=5&direction=asc', {
      token: manager.value
    })
    const beyond = await api('GET', '/user/tokens?page=4&per_page=5', { token: manager.value })
    expect(first.json.result).toHaveLength(5)
    expect(first.json.result_info).toEqual({ page: 1, per_page: 5, count: 5, total_count: 12 })
    expect(third.json.result_info).toEqual({ page: 3, per_page: 5, count: 2, total_count: 12 })
    expect(beyond.json.result).toEqual([])
    const desc = await api('GET', '/user/tokens?per_page=50&direction=desc', {
      token: manager.value
    })
    expect(desc.json.result.at(-1).id).toBe(manager.id)
    expect(log.violations).toEqual([])
  })

  it('rolls a value: the old one stops working at once', async () => {
    const token = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    const oldValue = token.value
    const rolled = await api('PUT', `/user/tokens/${token.id}/value`, {
      token: manager.value,
      body: {}
    })
    expect(rolled.status).toBe(200)
    expect(rolled.json.result).toMatch(/^cfut_[A-Za-z0-9]{40}$/)
    expect(rolled.json.result).not.toBe(oldValue)
    expect((await api('GET', '/user/tokens/verify', { token: oldValue })).status).toBe(401)
    expect((await api('GET', '/user/tokens/verify', { token: rolled.json.result })).status).toBe(
      200
    )
    expect(log.events('token.rolled').map(e => e.detail)).toEqual([
      { id: token.id, name: token.name }
    ])
    expect(log.violations).toEqual([])
  })

  it('enforces the quota of 50 user tokens', async () => {
    for (let i = sim.tokens.size; i < TOKEN_QUOTA.user; i++)
      seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    const over = await api('POST', '/user/tokens', {
      token: manager.value,
      body: { name: 'one too many', policies: [bucketPolicy()] }
    })
    expect(over.status).toBe(400)
    expect(over.json.errors[0]).toMatchObject({
      code: 1001,
      message: expect.stringContaining('quota')
    })
    await api('DELETE', `/user/tokens/${[...sim.tokens.keys()].at(-1)}`, { token: manager.value })
    const fits = await api('POST', '/user/tokens', {
      token: manager.value,
      body: { name: 'fits', policies: [bucketPolicy()] }
    })
    expect(fits.status).toBe(200)
    expect(log.violations).toEqual([])
  })

  it('lists the permission groups, filtered by name and scope', async () => {
    const all = await api('GET', '/user/tokens/permission_groups', { token: manager.value })
    expect(all.status).toBe(200)
    expect(all.json.result).toContainEqual({
      id: 'bf7481a1826f439697cb59a20b22293e',
      name: 'Workers R2 Storage Write',
      scopes: ['com.cloudflare.api.account']
    })
    expect(all.json.result).toHaveLength(PERMISSION_GROUPS.length)
    const named = await api(
      'GET',
      '/user/tokens/permission_groups?name=Workers%20R2%20Storage%20Bucket%20Item%20Read',
      {
        token: manager.value
      }
    )
    expect(named.json.result).toEqual([
      {
        id: '6a018a9f2fc74eb6b293b0c548f38b39',
        name: 'Workers R2 Storage Bucket Item Read',
        scopes: ['com.cloudflare.edge.r2.bucket']
      }
    ])
    const bucketScoped = await api(
      'GET',
      '/user/tokens/permission_groups?scope=com.cloudflare.edge.r2.bucket',
      {
        token: manager.value
      }
    )
    expect(bucketScoped.json.result.map((g: { id: string }) => g.id).sort()).toEqual(
      ['2efd5506f9c8494dacb1fa10a3e7d5b6', '6a018a9f2fc74eb6b293b0c548f38b39'].sort()
    )
    const forAccount = await api('GET', `/accounts/${ACCOUNT}/tokens/permission_groups`, {
      token: manager.value
    })
    expect(
      forAccount.json.result.some((g: { scopes: string[] }) =>
        g.scopes.includes('com.cloudflare.api.user')
      )
    ).toBe(false)
    expect(sim.permissionGroupName('686d18d5ac6c441c867cbf6771e58a0a')).toBe('API Tokens Write')
    expect(log.violations).toEqual([])
  })

  it('answers an invalid request with 400 and records a violation', async () => {
    const invalid = await api('POST', '/user/tokens', {
      token: manager.value,
      body: { policies: [] }
    })
    expect(invalid.status).toBe(400)
    expect(invalid.json).toMatchObject({ success: false, result: null, errors: [{ code: 1001 }] })
    expect(log.violations).toHaveLength(1)
    expect(log.violations[0]).toContain('POST /client/v4/user/tokens')
    expect(log.violations[0]).toContain("must have required property 'name'")
    expect(log.violations[0]).not.toContain(manager.value)
    expect(manager.last_used_on).toBeNull()

    const perPage = await api('GET', '/user/tokens?per_page=500', { token: manager.value })
    expect(perPage.status).toBe(400)
    const noRoute = await api('GET', '/user/nothing-here', { token: manager.value })
    expect(noRoute.status).toBe(400)
    expect(noRoute.json.errors.map((e: { code: number }) => e.code)).toEqual([7003, 7000])
    expect(log.violations).toHaveLength(3)
  })
})

describe('CloudflareSim account tokens', () => {
  it('creates, verifies and manages account-owned tokens apart from user tokens', async () => {
    const created = await api('POST', `/accounts/${ACCOUNT}/tokens`, {
      token: manager.value,
      body: { name: 'account uploader', policies: [bucketPolicy()] }
    })
    expect(created.status).toBe(200)
    const token = created.json.result
    expect(token.value).toMatch(/^cfat_[A-Za-z0-9]{40}$/)
    expect(sim.findById(token.id)?.owner).toEqual({ kind: 'account', accountId: ACCOUNT })

    const verified = await api('GET', `/accounts/${ACCOUNT}/tokens/verify`, { token: token.value })
    expect(verified.status).toBe(200)
    expect(verified.json.result).toEqual({ id: token.id, status: 'active' })
    // The user verify endpoint does not know account-owned tokens (code 1000), nor does another account.
    const asUser = await api('GET', '/user/tokens/verify', { token: token.value })
    expect(asUser.status).toBe(401)
    expect(asUser.json.errors[0].code).toBe(1000)
    expect(
      (await api('GET', `/accounts/${OTHER_ACCOUNT}/tokens/verify`, { token: token.value })).status
    ).toBe(401)
    // …and the account verify does not know user tokens.
    expect(
      (await api('GET', `/accounts/${ACCOUNT}/tokens/verify`, { token: manager.value })).status
    ).toBe(401)

    // Each side's ids are unknown on the other.
    expect((await api('GET', `/user/tokens/${token.id}`, { token: manager.value })).status).toBe(
      404
    )
    expect(
      (await api('GET', `/accounts/${ACCOUNT}/tokens/${manager.id}`, { token: manager.value }))
        .status
    ).toBe(404)
    const userList = await api('GET', '/user/tokens', { token: manager.value })
    expect(userList.json.result.map((t: { id: string }) => t.id)).toEqual([manager.id])
    const accountList = await api('GET', `/accounts/${ACCOUNT}/tokens`, { token: manager.value })
    expect(accountList.json.result.map((t: { id: string }) => t.id)).toEqual([token.id])

    // The manager holds no rights on another account.
    const elsewhere = await api('GET', `/accounts/${OTHER_ACCOUNT}/tokens`, {
      token: manager.value
    })
    expect(elsewhere.status).toBe(403)
    expect(elsewhere.json.errors[0].code).toBe(9109)

    // An account token with Account API Tokens Write manages its own account only.
    const accountManager = seedWith(
      ['Account API Tokens Write'],
      `com.cloudflare.api.account.${ACCOUNT}`,
      {
        kind: 'account',
        accountId: ACCOUNT
      }
    )
    expect(accountManager.value).toMatch(/^cfat_/)
    expect(
      (await api('GET', `/accounts/${ACCOUNT}/tokens/${token.id}`, { token: accountManager.value }))
        .status
    ).toBe(200)
    expect((await api('GET', '/user/tokens', { token: accountManager.value })).status).toBe(403)

    // Account tokens may not carry user-level groups.
    const userGroup = await api('POST', `/accounts/${ACCOUNT}/tokens`, {
      token: manager.value,
      body: {
        name: 'user group',
        policies: [
          {
            effect: 'allow',
            permission_groups: [{ id: groupId('API Tokens Write') }],
            resources: { x: '*' }
          }
        ]
      }
    })
    expect(userGroup.status).toBe(400)

    const deleted = await api('DELETE', `/accounts/${ACCOUNT}/tokens/${token.id}`, {
      token: accountManager.value
    })
    expect(deleted.status).toBe(200)
    expect(
      (await api('GET', `/accounts/${ACCOUNT}/tokens/verify`, { token: token.value })).status
    ).toBe(401)
    expect(log.violations).toEqual([])
  })
})

describe('CloudflareSim with the official SDK', () => {
  it('serves the SDK, and the validator accepts what the SDK sends', async () => {
    const client = new Cloudflare({
      apiToken: manager.value,
      apiKey: null,
      apiEmail: null,
      userServiceKey: null,
      baseURL: sim.apiUrl,
      maxRetries: 0
    })
    const created = await client.user.tokens.create({
      name: 'sdk token',
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId('Workers R2 Storage Bucket Item Read') }],
          resources: { [BUCKET_RESOURCE]: '*' }
        }
      ],
      condition: { request_ip: { in: ['198.51.100.0/24'] } }
    })
    expect(created.value).toMatch(/^cfut_/)
    expect(created.id).toBeDefined()

    const asToken = new Cloudflare({
      apiToken: created.value!,
      apiKey: null,
      apiEmail: null,
      userServiceKey: null,
      baseURL: sim.apiUrl,
      maxRetries: 0
    })
    const verified = await asToken.user.tokens.verify()
    expect(verified).toEqual({ id: created.id, status: 'active' })

    const read = await client.user.tokens.get(created.id!)
    expect(read.policies?.[0]?.resources).toEqual({ [BUCKET_RESOURCE]: '*' })
    expect(read.condition).toEqual({ request_ip: { in: ['198.51.100.0/24'] } })
    expect(read.last_used_on).toBeDefined()

    const ids: string[] = []
    for await (const token of client.user.tokens.list({ per_page: 5 })) ids.push(token.id!)
    expect(ids).toEqual([manager.id, created.id])

    const groups: string[] = []
    for await (const group of client.user.tokens.permissionGroups.list()) groups.push(group.name!)
    expect(groups).toContain('Workers R2 Storage Bucket Item Write')

    const updated = await client.user.tokens.update(created.id!, {
      name: 'sdk token (disabled)',
      policies: read.policies!,
      status: 'disabled'
    })
    expect(updated.status).toBe('disabled')

    const account = await client.accounts.tokens.create({
      account_id: ACCOUNT,
      name: 'sdk account token',
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId('Workers R2 Storage Write') }],
          resources: { [`com.cloudflare.api.account.${ACCOUNT}`]: '*' }
        }
      ]
    })
    expect(account.value).toMatch(/^cfat_/)
    const accountRead = await client.accounts.tokens.get(account.id!, { account_id: ACCOUNT })
    expect(accountRead.name).toBe('sdk account token')
    const asAccountToken = new Cloudflare({
      apiToken: account.value!,
      apiKey: null,
      apiEmail: null,
      userServiceKey: null,
      baseURL: sim.apiUrl,
      maxRetries: 0
    })
    expect(await asAccountToken.accounts.tokens.verify({ account_id: ACCOUNT })).toEqual({
      id: account.id,
      status: 'active'
    })
    await expect(asAccountToken.user.tokens.verify()).rejects.toMatchObject({ status: 401 })

    await expect(client.user.tokens.get('0'.repeat(32))).rejects.toMatchObject({ status: 404 })
    expect(await client.accounts.tokens.delete(account.id!, { account_id: ACCOUNT })).toEqual({
      id: account.id
    })
    expect(await client.user.tokens.delete(created.id!)).toEqual({ id: created.id })

    expect(log.violations).toEqual([])
  })
})

/** Whole-second ISO timestamps, as Cloudflare writes them. */
function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`. */
const IMF_FIXDATE =
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/

function sdk(token: string): Cloudflare {
  return new Cloudflare({
    apiToken: token,
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL: sim.apiUrl,
    maxRetries: 0
  })
}

describe('CloudflareSim PUT replaces the whole token', () => {
  it('drops an omitted condition, expires_on and not_before, and logs what the update changed', async () => {
    const condition = { request_ip: { in: ['192.0.2.0/24'], not_in: [] } }
    const token = sim.addToken({
      name: 'app',
      policies: [bucketPolicy()],
      condition,
      expires_on: isoSeconds(Date.now() + 86_400_000),
      not_before: isoSeconds(Date.now() - 60_000)
    })
    const policies = (await api('GET', `/user/tokens/${token.id}`, { token: manager.value })).json
      .result.policies

    // A disable that sends only name, policies and status: the token loses its IP restriction.
    const disabled = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'app', policies, status: 'disabled' }
    })
    expect(disabled.status).toBe(200)
    expect(disabled.json.result.status).toBe('disabled')
    expect(disabled.json.result).not.toHaveProperty('condition')
    expect(disabled.json.result).not.toHaveProperty('expires_on')
    expect(disabled.json.result).not.toHaveProperty('not_before')
    expect(sim.findById(token.id)?.condition).toBeUndefined()
    expect(log.events('token.updated').map(e => e.detail)).toEqual([
      {
        id: token.id,
        name: 'app',
        status: 'disabled',
        previous_status: 'active',
        had_condition: true,
        has_condition: false,
        had_ip_rule: true,
        has_ip_rule: false,
        dropped: ['condition', 'expires_on', 'not_before']
      }
    ])

    // ASSUMPTION (the simulator's, UNCONFIRMED): an omitted status keeps the current one.
    const renamed = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'app (renamed)', policies }
    })
    expect(renamed.json.result.status).toBe('disabled')

    // Re-enabling with the condition sent back restores it.
    const enabled = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'app', policies, condition, status: 'active' }
    })
    expect(enabled.json.result).toMatchObject({ status: 'active', condition })
    expect(
      log
        .events('token.updated')
        .map(e => e.detail)
        .at(-1)
    ).toMatchObject({
      status: 'active',
      previous_status: 'disabled',
      had_condition: false,
      has_condition: true,
      has_ip_rule: true,
      dropped: []
    })

    // Policies are what the body says too: one not sent back is gone.
    const narrowed = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'app', policies: [], condition }
    })
    expect(narrowed.json.result.policies).toEqual([])
    expect(log.violations).toEqual([])
  })

  it('re-activates an expired token whose update drops the past expiry', async () => {
    const token = sim.addToken({
      name: 'expired',
      policies: [bucketPolicy()],
      issued_on: '2024-01-01T00:00:00Z',
      expires_on: '2024-06-01T00:00:00Z'
    })
    expect(sim.findById(token.id)?.status).toBe('expired')
    const kept = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'expired', policies: [], expires_on: '2024-06-01T00:00:00Z' }
    })
    expect(kept.json.result.status).toBe('expired')
    const dropped = await api('PUT', `/user/tokens/${token.id}`, {
      token: manager.value,
      body: { name: 'expired', policies: [] }
    })
    expect(dropped.json.result.status).toBe('active')
    expect((await api('GET', '/user/tokens/verify', { token: token.value })).status).toBe(200)
    expect(log.violations).toEqual([])
  })
})

describe('CloudflareSim clock', () => {
  it('writes its own time (Date.now() + skewMs) into timestamps and the Date header', async () => {
    sim.skewMs = -3000
    const before = Date.now() - 3000
    const created = await api('POST', '/user/tokens', {
      token: manager.value,
      body: { name: 'skewed', policies: [bucketPolicy()] }
    })
    const after = Date.now() - 3000
    const issued = Date.parse(created.json.result.issued_on)
    expect(issued).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000)
    expect(issued).toBeLessThanOrEqual(after)
    expect(created.json.result.modified_on).toBe(created.json.result.issued_on)
    expect(Date.parse(manager.last_used_on!)).toBeLessThanOrEqual(after)

    const date = created.headers.get('date')!
    expect(date).toMatch(IMF_FIXDATE)
    expect(Date.parse(date)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000)
    expect(Date.parse(date)).toBeLessThanOrEqual(after)
    expect(sim.now() - (Date.now() - 3000)).toBeLessThanOrEqual(1)

    // An injected fault's answer carries the simulator's date too.
    sim.service.inject({ method: 'GET', path: /\/user\/tokens$/, status: 503 })
    const faulted = await api('GET', '/user/tokens', { token: manager.value })
    expect(faulted.status).toBe(503)
    expect(Date.parse(faulted.headers.get('date')!)).toBeLessThanOrEqual(Date.now() - 3000)
    expect(log.violations).toEqual([])
  })

  it('checks not_before and expires_on against its own time', async () => {
    // The runner is 3 s ahead of Cloudflare: a not_before of the runner's "now" is still in
    // Cloudflare's future.
    sim.skewMs = -3000
    const early = sim.addToken({
      name: 'not yet',
      policies: [bucketPolicy()],
      not_before: isoSeconds(Date.now() + 1000)
    })
    expect((await api('GET', '/user/tokens/verify', { token: early.value })).status).toBe(401)
    sim.skewMs = 5000
    expect((await api('GET', '/user/tokens/verify', { token: early.value })).status).toBe(200)

    const expiring = sim.addToken({
      name: 'expiring',
      policies: [bucketPolicy()],
      expires_on: isoSeconds(Date.now() + 60_000)
    })
    expect((await api('GET', '/user/tokens/verify', { token: expiring.value })).status).toBe(200)
    sim.skewMs = 61_000
    const verify = await api('GET', '/user/tokens/verify', { token: expiring.value })
    expect(verify.status).toBe(401)
    expect(sim.findById(expiring.id)?.status).toBe('expired')
    expect(log.violations).toEqual([])
  })
})

describe('CloudflareSim rate limits', () => {
  const policy = `"default";q=${RATE_LIMIT.limit};w=${RATE_LIMIT.windowSeconds}`

  it('sends Ratelimit and Ratelimit-Policy on every answer, counting every call of the user', async () => {
    const first = await api('GET', '/user/tokens', { token: manager.value })
    expect(first.headers.get('ratelimit')).toBe('"default";r=1199;t=300')
    expect(first.headers.get('ratelimit-policy')).toBe(policy)
    expect(first.headers.get('retry-after')).toBeNull()
    expect(first.headers.get('date')).toMatch(IMF_FIXDATE)

    // A failed call counts too, and every token of the user shares the budget.
    const other = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    const refused = await api('GET', '/user/tokens', { token: other.value })
    expect(refused.status).toBe(403)
    expect(refused.headers.get('ratelimit')).toMatch(/^"default";r=1198;t=(299|300)$/)
    const verified = await api('GET', '/user/tokens/verify', { token: other.value })
    expect(verified.headers.get('ratelimit')).toMatch(/^"default";r=1197;t=/)
    expect(sim.rateState()).toMatchObject({ limit: 1200, remaining: 1197, blockedSeconds: 0 })

    // Account-owned tokens spend their account's budget, not the user's.
    const accountToken = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`, {
      kind: 'account',
      accountId: ACCOUNT
    })
    const asAccount = await api('GET', `/accounts/${ACCOUNT}/tokens/verify`, {
      token: accountToken.value
    })
    expect(asAccount.headers.get('ratelimit')).toMatch(/^"default";r=1199;t=/)
    expect(sim.rateState({ kind: 'account', accountId: ACCOUNT }).remaining).toBe(1199)
    expect(sim.rateState().remaining).toBe(1197)

    // Calls without a known token spend the anonymous budget.
    const anonymous = await api('GET', '/user/tokens')
    expect(anonymous.status).toBe(400)
    expect(anonymous.headers.get('ratelimit')).toMatch(/^"default";r=1199;t=/)
    expect(sim.rateState().remaining).toBe(1197)
    expect(log.violations).toEqual([])
  })

  it('blocks every call of the user for five minutes once the budget is spent, with 429 and code 971', async () => {
    sim.setRateBudget({ remaining: 2 })
    expect(
      (await api('GET', '/user/tokens', { token: manager.value })).headers.get('ratelimit')
    ).toMatch(/^"default";r=1;t=/)
    const last = await api('GET', '/user/tokens', { token: manager.value })
    expect(last.status).toBe(200)
    expect(last.headers.get('ratelimit')).toMatch(/^"default";r=0;t=/)

    const over = await api('POST', '/user/tokens', {
      token: manager.value,
      body: { name: 'too late', policies: [bucketPolicy()] }
    })
    expect(over.status).toBe(429)
    expect(over.json).toEqual({
      success: false,
      errors: [{ code: 971, message: 'Please wait and consider throttling your request speed' }],
      messages: [],
      result: null
    })
    expect(over.headers.get('retry-after')).toBe('300')
    expect(over.headers.get('ratelimit')).toBe('"default";r=0;t=300')
    expect(over.headers.get('ratelimit-policy')).toBe(policy)
    expect(sim.tokens.size).toBe(1)
    expect(log.events('rate_limit.blocked').map(e => e.detail)).toEqual([
      { subject: 'user', seconds: 300 }
    ])

    // Every call of every token of the user, verify included, until the block ends.
    const other = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`)
    const verify = await api('GET', '/user/tokens/verify', { token: other.value })
    expect(verify.status).toBe(429)
    expect(Number(verify.headers.get('retry-after'))).toBeGreaterThan(298)
    expect((await api('GET', '/user/nothing-here', { token: manager.value })).status).toBe(429)
    expect(sim.rateState()).toMatchObject({ remaining: 0, blockedSeconds: 300 })

    // Four minutes later it is still blocked, and says how long for.
    sim.skewMs = 240_000
    const later = await api('GET', '/user/tokens', { token: manager.value })
    expect(later.status).toBe(429)
    expect(later.headers.get('retry-after')).toBe('60')
    expect(later.headers.get('ratelimit')).toBe('"default";r=0;t=60')

    // Once the five minutes are over, a fresh window starts.
    sim.skewMs = 300_000
    const after = await api('GET', '/user/tokens', { token: manager.value })
    expect(after.status).toBe(200)
    expect(after.headers.get('ratelimit')).toBe('"default";r=1199;t=300')
    expect(after.headers.get('retry-after')).toBeNull()
    // 404 of the unknown route is recorded; the 429s are not contract violations.
    expect(log.violations).toEqual([
      expect.stringContaining('no operation of the Cloudflare token API matches')
    ])
  })

  it('lets a test block the user now, reports Retry-After rounded up, and lifts the block', async () => {
    sim.block(90.2)
    const blocked = await api('GET', '/user/tokens', { token: manager.value })
    expect(blocked.status).toBe(429)
    expect(blocked.headers.get('retry-after')).toBe('91')
    const accountToken = seedWith(['Zone Read'], `com.cloudflare.api.account.${ACCOUNT}`, {
      kind: 'account',
      accountId: ACCOUNT
    })
    expect(
      (await api('GET', `/accounts/${ACCOUNT}/tokens/verify`, { token: accountToken.value })).status
    ).toBe(200)
    sim.block(0)
    expect((await api('GET', '/user/tokens', { token: manager.value })).status).toBe(200)

    sim.block(300, { kind: 'account', accountId: ACCOUNT })
    expect(
      (await api('GET', `/accounts/${ACCOUNT}/tokens/verify`, { token: accountToken.value })).status
    ).toBe(429)
    expect((await api('GET', '/user/tokens', { token: manager.value })).status).toBe(200)
    expect(log.violations).toEqual([])
  })

  it('honours a smaller limit and window', async () => {
    sim.setRateBudget({ limit: 3, windowSeconds: 10, blockSeconds: 20 })
    for (let i = 0; i < 3; i++)
      expect((await api('GET', '/user/tokens', { token: manager.value })).status).toBe(200)
    const over = await api('GET', '/user/tokens', { token: manager.value })
    expect(over.status).toBe(429)
    expect(over.headers.get('retry-after')).toBe('20')
    expect(over.headers.get('ratelimit-policy')).toBe('"default";q=3;w=10')
    expect(log.violations).toEqual([])
  })

  it('surfaces as the SDK RateLimitError with the headers', async () => {
    sim.block()
    const error = await sdk(manager.value)
      .user.tokens.get(manager.id)
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(Cloudflare.RateLimitError)
    expect((error as InstanceType<typeof Cloudflare.RateLimitError>).status).toBe(429)
    expect(
      (error as InstanceType<typeof Cloudflare.RateLimitError>).headers.get('retry-after')
    ).toBe('300')
    expect(log.violations).toEqual([])
  })
})

describe('CloudflareSim IP conditions', () => {
  const condition = {
    request_ip: { in: ['192.0.2.0/24', '2001:db8::/32'], not_in: ['192.0.2.7'] }
  }

  it('does not enforce conditions unless enforceConditions is on', async () => {
    const token = sim.addToken({ name: 'restricted', policies: [bucketPolicy()], condition })
    expect(sim.enforceConditions).toBe(false)
    sim.clientAddress = '203.0.113.50'
    expect((await api('GET', '/user/tokens/verify', { token: token.value })).status).toBe(200)
  })

  it('answers 403 9109 "Cannot use the access token from location" outside the condition', async () => {
    sim.enforceConditions = true
    const restricted = sim.addToken({
      name: 'restricted manager',
      policies: manager.policies,
      condition
    })
    const legacy = sim.addToken({
      name: 'legacy spelling',
      policies: [bucketPolicy()],
      condition: { 'request.ip': { in: ['198.51.100.7'] } }
    })

    for (const address of ['192.0.2.10', '2001:db8:1::5']) {
      sim.clientAddress = address
      expect((await api('GET', '/user/tokens/verify', { token: restricted.value })).status).toBe(
        200
      )
      expect((await api('GET', '/user/tokens', { token: restricted.value })).status).toBe(200)
    }
    expect(restricted.last_used_on).not.toBeNull()

    for (const address of ['192.0.2.7', '198.51.100.7', '2001:db9::1']) {
      sim.clientAddress = address
      const lastUsed = restricted.last_used_on
      for (const [method, path] of [
        ['GET', '/user/tokens/verify'],
        ['GET', '/user/tokens'],
        ['DELETE', `/user/tokens/${legacy.id}`]
      ] as const) {
        const denied = await api(method, path, { token: restricted.value })
        expect(denied.status).toBe(403)
        expect(denied.json).toEqual({
          success: false,
          errors: [
            { code: 9109, message: `Cannot use the access token from location: ${address}` }
          ],
          messages: [],
          result: null
        })
      }
      expect(restricted.last_used_on).toBe(lastUsed)
    }
    expect(sim.tokens.has(legacy.id)).toBe(true)
    expect(log.events('auth.denied').at(-1)?.detail).toEqual({
      reason: 'client address outside the token condition',
      token_id: restricted.id,
      client_address: '2001:db9::1'
    })

    // The legacy key is honoured; a token without a condition works from anywhere.
    sim.clientAddress = '198.51.100.7'
    expect((await api('GET', '/user/tokens/verify', { token: legacy.value })).status).toBe(200)
    sim.clientAddress = '198.51.100.8'
    expect((await api('GET', '/user/tokens/verify', { token: legacy.value })).status).toBe(403)
    expect((await api('GET', '/user/tokens', { token: manager.value })).status).toBe(200)
    expect(log.violations).toEqual([])
  })

  it('sees the socket address (127.0.0.1) when clientAddress is not set', async () => {
    sim.enforceConditions = true
    const loopback = sim.addToken({
      name: 'loopback',
      policies: [bucketPolicy()],
      condition: { request_ip: { in: ['127.0.0.0/8'] } }
    })
    const documentation = sim.addToken({
      name: 'documentation range',
      policies: [bucketPolicy()],
      condition: { request_ip: { in: ['192.0.2.0/24'], not_in: [] } }
    })
    expect((await api('GET', '/user/tokens/verify', { token: loopback.value })).status).toBe(200)
    const denied = await api('GET', '/user/tokens/verify', { token: documentation.value })
    expect(denied.status).toBe(403)
    expect(denied.json.errors[0].message).toBe(
      'Cannot use the access token from location: 127.0.0.1'
    )
  })

  it('is seen through the SDK as a 403 PermissionDeniedError', async () => {
    sim.enforceConditions = true
    sim.clientAddress = '203.0.113.9'
    const token = sim.addToken({ name: 'sdk', policies: manager.policies, condition })
    const error = await sdk(token.value)
      .user.tokens.verify()
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(Cloudflare.PermissionDeniedError)
    expect(String((error as Error).message)).toContain(
      'Cannot use the access token from location: 203.0.113.9'
    )
  })
})

describe('CloudflareSim token quota per owner', () => {
  it('fills one owner quota without touching the others', async () => {
    const seeded = sim.fillQuota({ kind: 'account', accountId: ACCOUNT }, 'filler')
    expect(seeded).toHaveLength(TOKEN_QUOTA.account)
    expect(seeded[0]!.name).toBe('filler 1')
    expect(sim.tokensOf({ kind: 'account', accountId: ACCOUNT })).toHaveLength(TOKEN_QUOTA.account)
    expect(sim.tokensOf({ kind: 'user' })).toEqual([manager])

    const full = await api('POST', `/accounts/${ACCOUNT}/tokens`, {
      token: manager.value,
      body: { name: 'one too many', policies: [bucketPolicy()] }
    })
    expect(full.status).toBe(400)
    expect(full.json.errors[0]).toMatchObject({
      code: 1001,
      message: expect.stringContaining('quota')
    })

    // The user's quota and another account's are their own.
    expect(
      (
        await api('POST', '/user/tokens', {
          token: manager.value,
          body: { name: 'user token', policies: [bucketPolicy()] }
        })
      ).status
    ).toBe(200)
    const otherManager = seedWith(
      ['Account API Tokens Write'],
      `com.cloudflare.api.account.${OTHER_ACCOUNT}`,
      { kind: 'account', accountId: OTHER_ACCOUNT }
    )
    expect(
      (
        await api('POST', `/accounts/${OTHER_ACCOUNT}/tokens`, {
          token: otherManager.value,
          body: { name: 'elsewhere', policies: [] }
        })
      ).status
    ).toBe(200)

    // fillQuota tops up what is missing, counting the tokens already held.
    expect(sim.fillQuota()).toHaveLength(TOKEN_QUOTA.user - 2)
    expect(sim.tokensOf({ kind: 'user' })).toHaveLength(TOKEN_QUOTA.user)
    expect(sim.fillQuota()).toEqual([])
    expect(log.violations).toEqual([])
  })
})

describe('CloudflareSim echo faults', () => {
  it('quotes the request (Authorization and raw body) back inside the envelope', async () => {
    sim.service.inject({ method: 'POST', path: /\/user\/tokens$/, status: 400, echoRequest: true })
    const body = { name: 'echoed', policies: [bucketPolicy()] }
    const echoed = await api('POST', '/user/tokens', { token: manager.value, body })
    expect(echoed.status).toBe(400)
    expect(echoed.json).toEqual({
      success: false,
      errors: [{ code: 10000, message: expect.any(String) }],
      messages: [],
      result: null
    })
    const message: string = echoed.json.errors[0].message
    expect(message).toContain(`Authorization: Bearer ${manager.value}`)
    expect(message).toContain(JSON.stringify(body))
    expect(echoed.headers.get('ratelimit-policy')).toBe(
      `"default";q=${RATE_LIMIT.limit};w=${RATE_LIMIT.windowSeconds}`
    )
    expect(sim.tokens.size).toBe(1)

    // The official SDK carries the echoed credential into its error message: what the action
    // must scrub.
    sim.service.inject({ method: 'GET', path: /\/user\/tokens$/, status: 500, echoRequest: true })
    const error = await sdk(manager.value)
      .user.tokens.list()
      .catch((e: unknown) => e)
    expect(String((error as Error).message)).toContain(manager.value)

    // An ordinary fault answers the envelope too.
    sim.service.inject({ method: 'GET', path: /\/user\/tokens$/, status: 502 })
    const plain = await api('GET', '/user/tokens', { token: manager.value })
    expect(plain.json).toEqual({
      success: false,
      errors: [{ code: 10000, message: 'injected fault' }],
      messages: [],
      result: null
    })
    expect(log.violations).toEqual([])
  })
})
