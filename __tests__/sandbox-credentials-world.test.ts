import { startSandbox, type Sandbox } from '../sandbox/index.js'
import { startCredentialsWorldBeside, type CredentialsWorld } from '../sandbox/credentials-world.js'
import { sdk } from './helpers/account-apis.js'

let sb: Sandbox
let world: CredentialsWorld

beforeAll(async () => {
  sb = await startSandbox()
  world = await startCredentialsWorldBeside(sb)
})

afterAll(async () => {
  await world.stop()
  await sb.stop()
  expect(sb.log.violations).toEqual([])
})

function access(secret: string): Promise<Response> {
  return fetch(`${world.accessAppUrl}/healthz`, {
    headers: {
      'CF-Access-Client-Id': world.serviceToken.clientId,
      'CF-Access-Client-Secret': secret
    }
  })
}

describe('startCredentialsWorld beside a sandbox', () => {
  it('seeds a service token the Access app admits, and a Worker healthy with the current R2 key', async () => {
    const admitted = await access(world.serviceToken.clientSecret)
    expect(admitted.status).toBe(200)
    expect(await admitted.text()).toBe(`ok client-id=${world.serviceToken.clientId}`)
    expect((await access('cfast_not-it')).status).toBe(403)

    const health = await fetch(`${world.workerUrl}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.text()).toBe(`ok ${world.script.versionId} access-key-id=${sb.current.id}`)
    expect(sb.cloudflare.workers.secretsOf(world.script.name)).toEqual({
      R2_ACCESS_KEY_ID: sb.current.id,
      R2_SECRET_ACCESS_KEY: sb.current.secretAccessKey
    })
  })

  it('hands out an API token that may rotate the service token and write the Worker secrets', async () => {
    const cf = sdk(sb.cloudflare, world.managementToken)
    const rotated = await cf.zeroTrust.access.serviceTokens.rotate(world.serviceToken.id, {
      account_id: world.accountId,
      previous_client_secret_expires_at: new Date(sb.cloudflare.now() + 60_000).toISOString()
    })
    expect((await access(rotated.client_secret!)).status).toBe(200)
    expect((await access(world.serviceToken.clientSecret)).status).toBe(200)
    sb.cloudflare.skewMs += 60_000
    expect((await access(world.serviceToken.clientSecret)).status).toBe(403)

    await cf.workers.scripts.secrets.bulkUpdate(world.script.name, {
      account_id: world.accountId,
      secrets: {
        [world.secretNames.accessKeyId]: {
          name: world.secretNames.accessKeyId,
          text: 'not-a-key',
          type: 'secret_text'
        }
      }
    })
    const broken = await fetch(`${world.workerUrl}/healthz`)
    expect(broken.status).toBe(503)
    expect(await broken.text()).toBe('r2 error 403 InvalidAccessKeyId')
    sb.cloudflare.workers.rollbackTo(world.script.name, world.script.versionId)
    expect((await fetch(`${world.workerUrl}/healthz`)).status).toBe(200)

    const secrets = world.secretValues()
    expect(secrets).toEqual(
      expect.arrayContaining([
        world.serviceToken.clientSecret,
        rotated.client_secret,
        'not-a-key',
        world.managementToken
      ])
    )
    const entries = sb.log.entries.filter(e => e.service === 'access-app' || e.service === 'worker')
    expect(entries.length).toBeGreaterThan(0)
  })
})
