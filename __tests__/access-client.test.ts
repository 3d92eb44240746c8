/**
 * src/cloudflare/access.ts against the Cloudflare simulator (HTTP, the official SDK): get, the
 * rotate with a grace window, moving the grace, and what a missing permission says.
 */
import { RequestLog } from '../sandbox/log.js'
import { CloudflareSim } from '../sandbox/cloudflare.js'
import { ACCESS_GROUPS } from '../sandbox/access.js'
import { ACCOUNT, accountToken } from './helpers/account-apis.js'
import { TokenApi } from '../src/cloudflare/tokens.js'
import { AccessServiceTokens, CloudflareApiError } from '../src/cloudflare/access.js'
import { scaledClock } from '../src/backoff.js'

const HOUR = 3_600_000
let log: RequestLog
let sim: CloudflareSim

function client(groups: string[] = [ACCESS_GROUPS.write]): AccessServiceTokens {
  const token = accountToken(sim, groups, ACCOUNT)
  return new AccessServiceTokens(
    new TokenApi({ apiToken: token.value, baseURL: sim.apiUrl, clock: scaledClock(0.001) }),
    ACCOUNT
  )
}

beforeEach(async () => {
  log = new RequestLog()
  sim = new CloudflareSim(log)
  await sim.start()
})

afterEach(async () => {
  await sim.stop()
  expect(log.violations).toEqual([])
})

describe('AccessServiceTokens', () => {
  it('reads a token: ids, duration, expiry and times, never a secret', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const token = await client().get(seeded.id)
    expect(token).toMatchObject({
      id: seeded.id,
      name: 'deploy-bot',
      clientId: seeded.clientId,
      enabled: true,
      duration: '8760h'
    })
    expect(token.updatedAt).toBeDefined()
    expect(token.createdAt).toBeDefined()
    expect(token.expiresAt).toBeDefined()
    expect(JSON.stringify(token)).not.toContain(seeded.clientSecret)
  })

  it('rotates with the previous secret valid until the time given, then closes and re-opens the grace', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const access = client()
    const graceUntil = new Date(sim.now() + HOUR).toISOString()
    const { token, clientSecret } = await access.rotate(seeded.id, graceUntil)
    expect(clientSecret).toMatch(/^cfast_/)
    expect(token.clientId).toBe(seeded.clientId)
    const body = log.requests({ method: 'POST' }).at(-1)?.body
    expect(body).toEqual({ previous_client_secret_expires_at: graceUntil })
    const check = (secret: string) => sim.access.verifyClientCredentials(seeded.clientId, secret)
    expect(check(seeded.clientSecret)).toMatchObject({ ok: true, secret: 'previous' })
    expect(check(clientSecret)).toMatchObject({ ok: true, secret: 'current' })

    await access.setPreviousExpiry(seeded.id, new Date(sim.now()).toISOString())
    expect(check(seeded.clientSecret)).toMatchObject({ ok: false })
    expect(sim.access.serviceToken(seeded.id)?.previousValid).toBe(false)

    await access.setPreviousExpiry(seeded.id, graceUntil)
    expect(check(seeded.clientSecret)).toMatchObject({ ok: true, secret: 'previous' })
    expect(log.requests({ method: 'PUT' }).map(e => e.body)).toEqual([
      { previous_client_secret_expires_at: expect.any(String) },
      { previous_client_secret_expires_at: graceUntil }
    ])
  })

  it('names the permission a management token without Access lacks', async () => {
    const seeded = sim.access.addServiceToken({ accountId: ACCOUNT, name: 'deploy-bot' })
    const error = await client(['Zone Read'])
      .get(seeded.id)
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CloudflareApiError)
    expect((error as CloudflareApiError).status).toBe(403)
    expect((error as Error).message).toContain('Access: Service Tokens Write')
  })

  it('answers 404 for an unknown token', async () => {
    const error = await client()
      .get('f174e90a-fafe-4643-bbbc-4a0ed4fc8415')
      .catch((e: unknown) => e)
    expect((error as CloudflareApiError).status).toBe(404)
  })
})
