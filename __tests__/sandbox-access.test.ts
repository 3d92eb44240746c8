import type Cloudflare from 'cloudflare'
import { RequestLog } from '../sandbox/log.js'
import { CloudflareSim, type CfTokenRecord } from '../sandbox/cloudflare.js'
import { ACCOUNT, OTHER_ACCOUNT, accountToken, groupId, sdk } from './helpers/account-apis.js'
import {
  ACCESS_ERROR_CODES,
  ACCESS_GROUPS,
  parseServiceTokenDuration,
  type SeededServiceToken
} from '../sandbox/access.js'
import { AccessProtectedApp } from '../sandbox/access-app.js'

const HOUR = 3_600_000

let log: RequestLog
let sim: CloudflareSim
/** A user API token with Access: Service Tokens Write on ACCOUNT. */
let manager: CfTokenRecord

function client(token: string = manager.value): Cloudflare {
  return sdk(sim, token)
}

function apiToken(groups: string[], account = ACCOUNT, effect: 'allow' | 'deny' = 'allow') {
  return accountToken(sim, groups, account, effect)
}

/** RFC 3339 at the simulator's clock plus `ms`. */
function at(ms: number): string {
  return new Date(sim.now() + ms).toISOString()
}

function check(token: Pick<SeededServiceToken, 'clientId'>, secret: string) {
  return sim.access.verifyClientCredentials(token.clientId, secret)
}

beforeEach(async () => {
  log = new RequestLog()
  sim = new CloudflareSim(log)
  await sim.start()
  manager = apiToken([ACCESS_GROUPS.write])
})

afterEach(async () => {
  await sim.stop()
  expect(log.violations).toEqual([])
})

describe('Access service tokens through the SDK', () => {
  it('creates (201, the only answer with the secret besides rotate), gets, lists, updates and deletes', async () => {
    const cf = client()
    const created = await cf.zeroTrust.access.serviceTokens.create({
      account_id: ACCOUNT,
      name: 'deploy-bot',
      duration: '720h'
    })
    expect(created.client_id).toMatch(/^[0-9a-f]{32}\.access$/)
    expect(created.client_secret).toMatch(/^cfast_[0-9a-f]{64}$/)
    expect(created).toMatchObject({ name: 'deploy-bot', duration: '720h', enabled: true })
    expect(log.requests({ method: 'POST' }).at(-1)?.status).toBe(201)

    const got = await cf.zeroTrust.access.serviceTokens.get(created.id!, { account_id: ACCOUNT })
    expect(got).toMatchObject({ id: created.id, client_id: created.client_id, name: 'deploy-bot' })
    expect(JSON.stringify(got)).not.toContain(created.client_secret!)
    expect(Date.parse(got.expires_at!) - sim.now()).toBeGreaterThan(719 * HOUR)

    const listed = []
    for await (const token of cf.zeroTrust.access.serviceTokens.list({ account_id: ACCOUNT })) {
      listed.push(token)
    }
    expect(listed.map(t => t.id)).toEqual([created.id])
    expect(JSON.stringify(listed)).not.toContain(created.client_secret!)

    const renamed = await cf.zeroTrust.access.serviceTokens.update(created.id!, {
      account_id: ACCOUNT,
      name: 'deploy-bot-2'
    })
    // A PUT changes only what it sends: the duration stays.
    expect(renamed).toMatchObject({ name: 'deploy-bot-2', duration: '720h', enabled: true })

    const deleted = await cf.zeroTrust.access.serviceTokens.delete(created.id!, {
      account_id: ACCOUNT
    })
    expect(deleted).toMatchObject({ id: created.id, name: 'deploy-bot-2' })
    await expect(
      cf.zeroTrust.access.serviceTokens.get(created.id!, { account_id: ACCOUNT })
    ).rejects.toMatchObject({
      status: 404,
      errors: [{ code: ACCESS_ERROR_CODES.notFound, message: 'access.api.error.not_found' }]
    })
    expect(log.events().map(e => e.name)).toEqual([
      'service_token.created',
      'service_token.updated',
      'service_token.deleted'
    ])
  })

  it('lists by exact name, by search, and page by page', async () => {
    for (const name of ['ci-alpha', 'ci-beta', 'deploy', 'CI-gamma']) {
      sim.access.addServiceToken({ accountId: ACCOUNT, name })
    }
    sim.access.addServiceToken({ accountId: OTHER_ACCOUNT, name: 'ci-elsewhere' })
    const cf = client()
    const byName = await cf.zeroTrust.access.serviceTokens.list({
      account_id: ACCOUNT,
      name: 'deploy'
    })
    expect(byName.result.map(t => t.name)).toEqual(['deploy'])
    const bySearch = await cf.zeroTrust.access.serviceTokens.list({
      account_id: ACCOUNT,
      search: 'ci-'
    })
    expect(bySearch.result.map(t => t.name)).toEqual(['ci-alpha', 'ci-beta', 'CI-gamma'])
    const names: string[] = []
    for await (const token of cf.zeroTrust.access.serviceTokens.list({
      account_id: ACCOUNT,
      per_page: 3
    })) {
      names.push(token.name!)
    }
    expect(names).toHaveLength(4)
    const first = await cf.zeroTrust.access.serviceTokens.list({ account_id: ACCOUNT, per_page: 3 })
    expect(first.result_info).toMatchObject({ page: 1, per_page: 3, count: 3, total_count: 4 })
  })

  it('rotate with a grace window: both secrets work until it ends, by the simulator clock', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const cf = client()
    const graceEnd = at(HOUR)
    const rotated = await cf.zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: graceEnd
    })
    // Health watchers check when the grace ends (the next timed change, on the real clock).
    expect(log.nextTimedChange()).toBe(Date.parse(graceEnd))
    // The client id never changes; only the secret does.
    expect(rotated.client_id).toBe(seeded.clientId)
    expect(rotated.client_secret).toMatch(/^cfast_/)
    expect(rotated.client_secret).not.toBe(seeded.clientSecret)
    expect(check(seeded, rotated.client_secret!)).toMatchObject({ ok: true, secret: 'current' })
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: true, secret: 'previous' })
    expect(sim.access.serviceToken(seeded.id)).toMatchObject({
      clientSecretVersion: 2,
      previousValid: true
    })

    sim.skewMs += HOUR + 1000
    // Past the grace, the next is the token's own expiry (a year; its state shows whole seconds),
    // less the clock's skew.
    const expiresAt = Date.parse(sim.access.serviceToken(seeded.id)!.expiresAt!)
    expect(log.nextTimedChange()! - (expiresAt - sim.skewMs)).toBeGreaterThanOrEqual(0)
    expect(log.nextTimedChange()! - (expiresAt - sim.skewMs)).toBeLessThan(1000)
    expect(check(seeded, seeded.clientSecret)).toEqual({
      ok: false,
      reason: 'previous secret expired',
      clientId: seeded.clientId
    })
    expect(check(seeded, rotated.client_secret!)).toMatchObject({ ok: true })
    const event = log.events('service_token.rotated')[0]!
    expect(event.detail).toMatchObject({ id: seeded.id, ended_previous: false })
    expect(event.detail.grace_ms).toBeGreaterThan(HOUR - 1000)
    expect(JSON.stringify(log.events())).not.toContain(seeded.clientSecret)
    expect(JSON.stringify(log.events())).not.toContain(rotated.client_secret!)
  })

  it('rotate without previous_client_secret_expires_at kills the old secret at once', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const rotated = await client().zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT
    })
    expect(check(seeded, seeded.clientSecret)).toMatchObject({
      ok: false,
      reason: 'previous secret expired'
    })
    expect(check(seeded, rotated.client_secret!)).toMatchObject({ ok: true, secret: 'current' })
  })

  it('a PUT of previous_client_secret_expires_at closes the grace (now) or extends it', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const cf = client()
    await cf.zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(HOUR)
    })
    await cf.zeroTrust.access.serviceTokens.update(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(3 * HOUR)
    })
    sim.skewMs += 2 * HOUR
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: true, secret: 'previous' })
    const closed = await cf.zeroTrust.access.serviceTokens.update(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(0)
    })
    expect(closed).toMatchObject({ name: 'deploy-bot', enabled: true })
    expect(check(seeded, seeded.clientSecret)).toMatchObject({
      ok: false,
      reason: 'previous secret expired'
    })
    expect(log.events('service_token.updated').at(-1)?.detail).toMatchObject({
      changed: ['previous_client_secret_expires_at'],
      previous_valid: false
    })
  })

  it('rotating again inside a grace window ends the older secret (assumed)', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const cf = client()
    const first = await cf.zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(HOUR)
    })
    const second = await cf.zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(HOUR)
    })
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: false, reason: 'wrong secret' })
    expect(check(seeded, first.client_secret!)).toMatchObject({ ok: true, secret: 'previous' })
    expect(check(seeded, second.client_secret!)).toMatchObject({ ok: true, secret: 'current' })
    expect(log.events('service_token.rotated').map(e => e.detail.ended_previous)).toEqual([
      false,
      true
    ])
  })

  it('enabled: false stops both secrets; enabling again restores them', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const cf = client()
    const rotated = await cf.zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(HOUR)
    })
    const disabled = await cf.zeroTrust.access.serviceTokens.update(seeded.id, {
      account_id: ACCOUNT,
      enabled: false
    })
    expect(disabled.enabled).toBe(false)
    for (const secret of [seeded.clientSecret, rotated.client_secret!]) {
      expect(check(seeded, secret)).toMatchObject({ ok: false, reason: 'token disabled' })
    }
    await cf.zeroTrust.access.serviceTokens.update(seeded.id, {
      account_id: ACCOUNT,
      enabled: true
    })
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: true, secret: 'previous' })
    expect(check(seeded, rotated.client_secret!)).toMatchObject({ ok: true, secret: 'current' })
  })

  it('refresh extends expires_at by the duration; an expired token refuses its secret', async () => {
    const seeded = sim.access.addServiceToken({
      accountId: ACCOUNT,
      name: 'short',
      duration: '2h',
      expiresAt: at(HOUR)
    })
    const cf = client()
    const refreshed = await cf.zeroTrust.access.serviceTokens.refresh(seeded.id, {
      account_id: ACCOUNT
    })
    expect(Date.parse(refreshed.expires_at!)).toBeGreaterThanOrEqual(
      Date.parse(at(3 * HOUR)) - 2000
    )
    sim.skewMs += 4 * HOUR
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: false, reason: 'token expired' })
    // Refreshing an expired token starts from now.
    const again = await cf.zeroTrust.access.serviceTokens.refresh(seeded.id, {
      account_id: ACCOUNT
    })
    expect(Date.parse(again.expires_at!)).toBeGreaterThan(sim.now() + HOUR)
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: true })

    const forever = await cf.zeroTrust.access.serviceTokens.create({
      account_id: ACCOUNT,
      name: 'forever',
      duration: 'forever'
    })
    expect(forever.duration).toBe('forever')
    const read = await cf.zeroTrust.access.serviceTokens.get(forever.id!, { account_id: ACCOUNT })
    expect(read.expires_at).toBeUndefined()
  })

  it('a PUT that raises client_secret_version rotates without answering the secret', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const cf = client()
    const updated = await cf.zeroTrust.access.serviceTokens.update(seeded.id, {
      account_id: ACCOUNT,
      client_secret_version: 2,
      previous_client_secret_expires_at: at(HOUR)
    })
    expect(updated).not.toHaveProperty('client_secret')
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: true, secret: 'previous' })
    expect(sim.access.serviceToken(seeded.id)?.clientSecretVersion).toBe(2)
    await expect(
      cf.zeroTrust.access.serviceTokens.update(seeded.id, {
        account_id: ACCOUNT,
        client_secret_version: 1
      })
    ).rejects.toMatchObject({ status: 400, errors: [{ code: ACCESS_ERROR_CODES.invalidRequest }] })
  })

  it('refuses a malformed duration and unknown or foreign ids', async () => {
    const cf = client()
    await expect(
      cf.zeroTrust.access.serviceTokens.create({ account_id: ACCOUNT, name: 'x', duration: '1y' })
    ).rejects.toMatchObject({ status: 400, errors: [{ code: ACCESS_ERROR_CODES.invalidRequest }] })
    const elsewhere = sim.access.addServiceToken({ accountId: OTHER_ACCOUNT, name: 'other' })
    const both = apiToken([ACCESS_GROUPS.write], '*')
    for (const id of [elsewhere.id, 'f174e90a-fafe-4643-bbbc-4a0ed4fc8415']) {
      await expect(
        client(both.value).zeroTrust.access.serviceTokens.rotate(id, { account_id: ACCOUNT })
      ).rejects.toMatchObject({ status: 404 })
    }
    expect(check(elsewhere, elsewhere.clientSecret)).toMatchObject({ ok: true })
  })
})

describe('Access service tokens: who may call', () => {
  it('Read may list and get, not write; no group, a deny, or another account gets 403 9109', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const reader = client(apiToken([ACCESS_GROUPS.read]).value)
    await expect(
      reader.zeroTrust.access.serviceTokens.list({ account_id: ACCOUNT })
    ).resolves.toBeDefined()
    await expect(
      reader.zeroTrust.access.serviceTokens.get(seeded.id, { account_id: ACCOUNT })
    ).resolves.toMatchObject({ id: seeded.id })
    const forbidden = {
      status: 403,
      errors: [{ code: 9109, message: 'Unauthorized to access requested resource' }]
    }
    await expect(
      reader.zeroTrust.access.serviceTokens.rotate(seeded.id, { account_id: ACCOUNT })
    ).rejects.toMatchObject(forbidden)

    const workersOnly = client(apiToken(['Workers Scripts Write']).value)
    await expect(
      workersOnly.zeroTrust.access.serviceTokens.list({ account_id: ACCOUNT })
    ).rejects.toMatchObject(forbidden)
    const elsewhere = client(apiToken([ACCESS_GROUPS.write], OTHER_ACCOUNT).value)
    await expect(
      elsewhere.zeroTrust.access.serviceTokens.rotate(seeded.id, { account_id: ACCOUNT })
    ).rejects.toMatchObject(forbidden)
    const denied = sim.addToken({
      name: 'allow then deny',
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId(ACCESS_GROUPS.write) }],
          resources: { 'com.cloudflare.api.account.*': '*' }
        },
        {
          effect: 'deny',
          permission_groups: [{ id: groupId(ACCESS_GROUPS.write) }],
          resources: { [`com.cloudflare.api.account.${ACCOUNT}`]: '*' }
        }
      ]
    })
    await expect(
      client(denied.value).zeroTrust.access.serviceTokens.rotate(seeded.id, { account_id: ACCOUNT })
    ).rejects.toMatchObject(forbidden)
    // An account-owned API token of another account is not a token of this account at all.
    const foreign = sim.addToken({
      name: 'foreign account token',
      owner: { kind: 'account', accountId: OTHER_ACCOUNT },
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId(ACCESS_GROUPS.write) }],
          resources: { [`com.cloudflare.api.account.${OTHER_ACCOUNT}`]: '*' }
        }
      ]
    })
    await expect(
      client(foreign.value).zeroTrust.access.serviceTokens.list({ account_id: ACCOUNT })
    ).rejects.toMatchObject({
      status: 403,
      errors: [{ code: 9109, message: 'Invalid access token' }]
    })
    // Nothing was rotated.
    expect(check(seeded, seeded.clientSecret)).toMatchObject({ ok: true, secret: 'current' })
  })

  it('an account-owned API token of the account may manage its service tokens', async () => {
    const own = sim.addToken({
      name: 'account token',
      owner: { kind: 'account', accountId: ACCOUNT },
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId(ACCESS_GROUPS.write) }],
          resources: { [`com.cloudflare.api.account.${ACCOUNT}`]: '*' }
        }
      ]
    })
    const created = await client(own.value).zeroTrust.access.serviceTokens.create({
      account_id: ACCOUNT,
      name: 'made by an account token'
    })
    expect(created.client_secret).toBeDefined()
  })

  it('shares the rate budget with the token endpoints (429, code 971)', async () => {
    sim.setRateBudget({ remaining: 0 })
    const answer = await fetch(`${sim.apiUrl}/accounts/${ACCOUNT}/access/service_tokens`, {
      headers: { authorization: `Bearer ${manager.value}` }
    })
    expect(answer.status).toBe(429)
    expect(answer.headers.get('retry-after')).toBe('300')
    expect(await answer.json()).toMatchObject({ errors: [{ code: 971 }] })
  })

  it('a body the excerpt rejects is a 400 and a recorded violation', async () => {
    const answer = await fetch(`${sim.apiUrl}/accounts/${ACCOUNT}/access/service_tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${manager.value}`, 'content-type': 'application/json' },
      body: JSON.stringify({ duration: '1h' })
    })
    expect(answer.status).toBe(400)
    expect(log.violations).toEqual([expect.stringContaining("must have required property 'name'")])
    log.violations.length = 0
  })
})

describe('parseServiceTokenDuration', () => {
  it.each([
    ['8760h', 8760 * HOUR],
    ['2h45m', 2 * HOUR + 45 * 60_000],
    ['300ms', 300],
    ['1.5h', 1.5 * HOUR],
    ['forever', Infinity]
  ])('%s', (text, ms) => {
    expect(parseServiceTokenDuration(text)).toBe(ms)
  })

  it.each(['', '1y', '-1h', '0s', 'h', '10'])('refuses %j', text => {
    expect(parseServiceTokenDuration(text)).toBeUndefined()
  })
})

describe('the Access-protected app', () => {
  let app: AccessProtectedApp

  beforeEach(async () => {
    app = new AccessProtectedApp(log, sim.access, { accountId: ACCOUNT })
    await app.start()
  })

  afterEach(async () => {
    await app.stop()
  })

  function get(
    token: { clientId?: string; clientSecret?: string },
    path = '/healthz'
  ): Promise<Response> {
    const headers: Record<string, string> = {}
    if (token.clientId !== undefined) headers['CF-Access-Client-Id'] = token.clientId
    if (token.clientSecret !== undefined) headers['CF-Access-Client-Secret'] = token.clientSecret
    return fetch(`${app.url}${path}`, { headers })
  }

  it('answers 200 naming the client id only for a valid pair, else 403', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const ok = await get(seeded)
    expect(ok.status).toBe(200)
    expect(await ok.text()).toBe(`ok client-id=${seeded.clientId}`)
    expect((await get(seeded, '/')).status).toBe(200)
    expect((await get(seeded, '/elsewhere')).status).toBe(404)
    expect((await get({ clientId: seeded.clientId, clientSecret: 'cfast_wrong' })).status).toBe(403)
    expect((await get({})).status).toBe(403)
    // Access answers before the origin: an unknown path without a token is 403 too.
    expect((await get({}, '/elsewhere')).status).toBe(403)
    const other = sim.access.addServiceToken({ accountId: OTHER_ACCOUNT, name: 'other' })
    expect((await get(other)).status).toBe(403)
    expect(app.checks.map(c => c.status)).toEqual([200, 200, 404, 403, 403, 403, 403])
    expect(app.failures().map(c => c.reason)).toEqual([
      undefined,
      'wrong secret',
      'missing credentials',
      'missing credentials',
      'unknown client id'
    ])
    expect(sim.access.serviceToken(seeded.id)?.lastSeenAt).toBeDefined()
    expect(JSON.stringify(log.events())).not.toContain(seeded.clientSecret)
  })

  it('follows a rotation: the old secret until the grace ends, then only the new one', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const rotated = await client().zeroTrust.access.serviceTokens.rotate(seeded.id, {
      account_id: ACCOUNT,
      previous_client_secret_expires_at: at(10 * 60_000)
    })
    const fresh = { clientId: seeded.clientId, clientSecret: rotated.client_secret! }
    expect((await get(seeded)).status).toBe(200)
    expect((await get(fresh)).status).toBe(200)
    sim.skewMs += 10 * 60_000
    expect((await get(seeded)).status).toBe(403)
    expect((await get(fresh)).status).toBe(200)
    expect(app.checks.map(c => c.secret ?? c.reason)).toEqual([
      'previous',
      'current',
      'previous secret expired',
      'current'
    ])
  })

  it('a policy that names service tokens admits only those', async () => {
    const named = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'named' })
    const unnamed = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'unnamed' })
    app.policy = { accountId: ACCOUNT, serviceTokenIds: [named.id] }
    expect((await get(named)).status).toBe(200)
    expect((await get(unnamed)).status).toBe(403)
    expect(app.failures()[0]?.reason).toBe('not allowed by the application')
  })
})
