import type Cloudflare from 'cloudflare'
import type { Deployment } from 'cloudflare/resources/workers/scripts/deployments'
import { RequestLog } from '../sandbox/log.js'
import { CloudflareSim, type CfTokenRecord } from '../sandbox/cloudflare.js'
import { ACCOUNT, OTHER_ACCOUNT, accountToken, groupId, sdk } from './helpers/account-apis.js'
import { R2Sim, sha256Hex } from '../sandbox/r2.js'
import {
  BUSY_MESSAGE,
  VERSION_NOT_DEPLOYED_MESSAGE,
  WORKERS_ERROR_CODES,
  WORKERS_GROUPS
} from '../sandbox/workers.js'
import { SampleWorker } from '../sandbox/sample-worker.js'

const SCRIPT = 'avatars-worker'

let log: RequestLog
let sim: CloudflareSim
/** A user API token with Workers Scripts Write on ACCOUNT. */
let manager: CfTokenRecord

function client(token: string = manager.value): Cloudflare {
  return sdk(sim, token)
}

function apiToken(groups: string[], account = ACCOUNT, effect: 'allow' | 'deny' = 'allow') {
  return accountToken(sim, groups, account, effect)
}

/**
 * The deployments of a `deployments.list` page. The SDK (7.3.0) types the page as
 * `V4PagePagination` (items under `result.items`), but the API answers `result.deployments`, as
 * the excerpt says: read them there, and do not iterate the page (it yields nothing).
 */
function deploymentsOf(page: { result: unknown }): Deployment[] {
  return (page.result as { deployments: Deployment[] }).deployments
}

function secretText(name: string, text: string) {
  return { name, text, type: 'secret_text' as const }
}

beforeEach(async () => {
  log = new RequestLog()
  sim = new CloudflareSim(log)
  await sim.start()
  manager = apiToken([WORKERS_GROUPS.write])
  sim.workers.addScript(SCRIPT, {
    accountId: ACCOUNT,
    secrets: { R2_ACCESS_KEY_ID: 'old-id', R2_SECRET_ACCESS_KEY: 'old-secret' }
  })
})

afterEach(async () => {
  await sim.stop()
  expect(log.violations).toEqual([])
})

describe('Workers secrets through the SDK', () => {
  it('lists names and types only, gets one, and the first deployment is live at 100%', async () => {
    const cf = client()
    const secrets = await cf.workers.scripts.secrets.list(SCRIPT, { account_id: ACCOUNT })
    expect(secrets.result).toEqual([
      { name: 'R2_ACCESS_KEY_ID', type: 'secret_text' },
      { name: 'R2_SECRET_ACCESS_KEY', type: 'secret_text' }
    ])
    const one = await cf.workers.scripts.secrets.get('R2_ACCESS_KEY_ID', {
      account_id: ACCOUNT,
      script_name: SCRIPT
    })
    expect(one).toEqual({ name: 'R2_ACCESS_KEY_ID', type: 'secret_text' })
    const page = await cf.workers.scripts.deployments.list(SCRIPT, { account_id: ACCOUNT })
    const live = deploymentsOf(page)[0]!
    expect(live).toMatchObject({
      strategy: 'percentage',
      versions: [{ version_id: sim.workers.liveVersion(SCRIPT)!.id, percentage: 100 }]
    })
    const iterated = []
    for await (const item of cf.workers.scripts.deployments.list(SCRIPT, { account_id: ACCOUNT })) {
      iterated.push(item)
    }
    expect(iterated).toEqual([])
    await expect(
      cf.workers.scripts.secrets.get('NOPE', { account_id: ACCOUNT, script_name: SCRIPT })
    ).rejects.toMatchObject({ status: 404, errors: [{ code: WORKERS_ERROR_CODES.secretNotFound }] })
  })

  it('secrets-bulk writes every change in ONE new version, deployed to 100% at once', async () => {
    const before = sim.workers.versionsOf(SCRIPT)
    const result = await client().workers.scripts.secrets.bulkUpdate(SCRIPT, {
      account_id: ACCOUNT,
      secrets: {
        R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'new-id'),
        R2_SECRET_ACCESS_KEY: secretText('R2_SECRET_ACCESS_KEY', 'new-secret')
      }
    })
    // "Map of secret names to secret metadata for resulting secrets": no values.
    expect(result).toEqual({
      R2_ACCESS_KEY_ID: { name: 'R2_ACCESS_KEY_ID', type: 'secret_text' },
      R2_SECRET_ACCESS_KEY: { name: 'R2_SECRET_ACCESS_KEY', type: 'secret_text' }
    })
    const after = sim.workers.versionsOf(SCRIPT)
    expect(after).toHaveLength(before.length + 1)
    expect(after.at(-1)).toMatchObject({ number: 2, origin: 'secrets-bulk' })
    expect(sim.workers.secretsOf(SCRIPT)).toEqual({
      R2_ACCESS_KEY_ID: 'new-id',
      R2_SECRET_ACCESS_KEY: 'new-secret'
    })
    // The old version still holds the old values.
    expect(after[0]!.secrets).toEqual({
      R2_ACCESS_KEY_ID: 'old-id',
      R2_SECRET_ACCESS_KEY: 'old-secret'
    })
    const [live] = sim.workers.deploymentsOf(SCRIPT)
    expect(live).toMatchObject({
      versions: [{ version_id: after.at(-1)!.id, percentage: 100 }],
      annotations: { 'workers/triggered_by': 'secret' }
    })
    expect(log.events().map(e => e.name)).toEqual(['worker.version_created', 'worker.deployed'])
    expect(log.events('worker.version_created')[0]!.detail).toMatchObject({
      changed: ['R2_ACCESS_KEY_ID', 'R2_SECRET_ACCESS_KEY'],
      removed: []
    })
  })

  it('a merge patch: null deletes, an omitted name stays; one secret PUT and DELETE make a version each', async () => {
    const cf = client()
    await cf.workers.scripts.secrets.bulkUpdate(SCRIPT, {
      account_id: ACCOUNT,
      secrets: { EXTRA: secretText('EXTRA', 'x'), R2_SECRET_ACCESS_KEY: null }
    })
    expect(sim.workers.secretsOf(SCRIPT)).toEqual({ R2_ACCESS_KEY_ID: 'old-id', EXTRA: 'x' })
    const put = await cf.workers.scripts.secrets.update(SCRIPT, {
      account_id: ACCOUNT,
      ...secretText('R2_SECRET_ACCESS_KEY', 'put-secret')
    })
    expect(put).toEqual({ name: 'R2_SECRET_ACCESS_KEY', type: 'secret_text' })
    await cf.workers.scripts.secrets.delete('EXTRA', { account_id: ACCOUNT, script_name: SCRIPT })
    expect(sim.workers.secretsOf(SCRIPT)).toEqual({
      R2_ACCESS_KEY_ID: 'old-id',
      R2_SECRET_ACCESS_KEY: 'put-secret'
    })
    expect(sim.workers.versionsOf(SCRIPT).map(v => v.origin)).toEqual([
      'seed',
      'secrets-bulk',
      'secret-put',
      'secret-delete'
    ])
    await expect(
      cf.workers.scripts.secrets.delete('EXTRA', { account_id: ACCOUNT, script_name: SCRIPT })
    ).rejects.toMatchObject({ status: 404 })
  })

  it('a gradual rollout refuses every secret write with 10215 until it is finished', async () => {
    const cf = client()
    const { versionId } = sim.workers.startGradualRollout(SCRIPT, { percentage: 25 })
    const page = await cf.workers.scripts.deployments.list(SCRIPT, { account_id: ACCOUNT })
    expect(deploymentsOf(page)[0]!.versions).toEqual([
      { version_id: versionId, percentage: 25 },
      { version_id: sim.workers.versionsOf(SCRIPT)[0]!.id, percentage: 75 }
    ])
    const refused = {
      status: 400,
      errors: [
        { code: WORKERS_ERROR_CODES.versionNotDeployed, message: VERSION_NOT_DEPLOYED_MESSAGE }
      ]
    }
    await expect(
      cf.workers.scripts.secrets.bulkUpdate(SCRIPT, {
        account_id: ACCOUNT,
        secrets: { R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'new-id') }
      })
    ).rejects.toMatchObject(refused)
    await expect(
      cf.workers.scripts.secrets.update(SCRIPT, {
        account_id: ACCOUNT,
        ...secretText('R2_ACCESS_KEY_ID', 'new-id')
      })
    ).rejects.toMatchObject(refused)
    await expect(
      cf.workers.scripts.secrets.delete('R2_ACCESS_KEY_ID', {
        account_id: ACCOUNT,
        script_name: SCRIPT
      })
    ).rejects.toMatchObject(refused)
    expect(sim.workers.secretsOf(SCRIPT).R2_ACCESS_KEY_ID).toBe('old-id')
    expect(log.events('worker.secret_write_refused')).toHaveLength(3)

    sim.workers.finishRollout(SCRIPT)
    expect(sim.workers.inRollout(SCRIPT)).toBe(false)
    await cf.workers.scripts.secrets.bulkUpdate(SCRIPT, {
      account_id: ACCOUNT,
      secrets: { R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'new-id') }
    })
    expect(sim.workers.secretsOf(SCRIPT).R2_ACCESS_KEY_ID).toBe('new-id')
  })

  it('an uploaded but undeployed version refuses secret writes too', async () => {
    sim.workers.uploadVersion(SCRIPT)
    expect(sim.workers.inRollout(SCRIPT)).toBe(true)
    await expect(
      client().workers.scripts.secrets.update(SCRIPT, {
        account_id: ACCOUNT,
        ...secretText('R2_ACCESS_KEY_ID', 'new-id')
      })
    ).rejects.toMatchObject({ errors: [{ code: WORKERS_ERROR_CODES.versionNotDeployed }] })
  })

  it('a rollback to an older version brings its secrets back, and blocks the next write', async () => {
    const first = sim.workers.liveVersion(SCRIPT)!
    await client().workers.scripts.secrets.bulkUpdate(SCRIPT, {
      account_id: ACCOUNT,
      secrets: { R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'new-id') }
    })
    sim.workers.rollbackTo(SCRIPT, first.id)
    expect(sim.workers.secretsOf(SCRIPT).R2_ACCESS_KEY_ID).toBe('old-id')
    expect(sim.workers.deploymentsOf(SCRIPT)[0]!.annotations['workers/triggered_by']).toBe(
      'rollback'
    )
    await expect(
      client().workers.scripts.secrets.bulkUpdate(SCRIPT, {
        account_id: ACCOUNT,
        secrets: { R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'newer-id') }
      })
    ).rejects.toMatchObject({ errors: [{ code: WORKERS_ERROR_CODES.versionNotDeployed }] })
  })

  it('an injected busy script answers 429 without Retry-After, then accepts the write', async () => {
    sim.workers.injectBusy(SCRIPT)
    const cf = client()
    const write = () =>
      cf.workers.scripts.secrets.bulkUpdate(SCRIPT, {
        account_id: ACCOUNT,
        secrets: { R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'new-id') }
      })
    const error = await write().then(
      () => undefined,
      (e: unknown) => e as { status: number; errors: unknown; headers: Headers }
    )
    expect(error).toMatchObject({
      status: 429,
      errors: [{ code: WORKERS_ERROR_CODES.busy, message: BUSY_MESSAGE }]
    })
    expect(error?.headers.get('retry-after')).toBeNull()
    expect(sim.workers.versionsOf(SCRIPT)).toHaveLength(1)
    await write()
    expect(sim.workers.secretsOf(SCRIPT).R2_ACCESS_KEY_ID).toBe('new-id')
  })

  it('never shows or logs a value', async () => {
    await client().workers.scripts.secrets.bulkUpdate(SCRIPT, {
      account_id: ACCOUNT,
      secrets: { R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', 'new-id') }
    })
    const answers = await Promise.all(
      [`/workers/scripts/${SCRIPT}/secrets`, `/workers/scripts/${SCRIPT}/deployments`].map(
        async path => {
          const response = await fetch(`${sim.apiUrl}/accounts/${ACCOUNT}${path}`, {
            headers: { authorization: `Bearer ${manager.value}` }
          })
          return response.text()
        }
      )
    )
    const shown = JSON.stringify(log.events()) + answers.join('')
    for (const value of sim.workers.secretValues()) expect(shown).not.toContain(value)
    expect(sim.workers.secretValues()).toEqual(
      expect.arrayContaining(['old-id', 'old-secret', 'new-id'])
    )
  })
})

describe('Workers secrets: who may call, and what the excerpt refuses', () => {
  it('Read and Tail Read may list, not write; no group or another account gets 403 9109', async () => {
    const forbidden = {
      status: 403,
      errors: [{ code: 9109, message: 'Unauthorized to access requested resource' }]
    }
    for (const group of [WORKERS_GROUPS.read, WORKERS_GROUPS.tail]) {
      const reader = client(apiToken([group]).value)
      await expect(
        reader.workers.scripts.deployments.list(SCRIPT, { account_id: ACCOUNT })
      ).resolves.toBeDefined()
      await expect(
        reader.workers.scripts.secrets.update(SCRIPT, {
          account_id: ACCOUNT,
          ...secretText('R2_ACCESS_KEY_ID', 'x')
        })
      ).rejects.toMatchObject(forbidden)
    }
    await expect(
      client(apiToken(['Access: Service Tokens Write']).value).workers.scripts.secrets.list(
        SCRIPT,
        { account_id: ACCOUNT }
      )
    ).rejects.toMatchObject(forbidden)
    await expect(
      client(apiToken([WORKERS_GROUPS.write], OTHER_ACCOUNT).value).workers.scripts.secrets.list(
        SCRIPT,
        { account_id: ACCOUNT }
      )
    ).rejects.toMatchObject(forbidden)
    expect(sim.workers.versionsOf(SCRIPT)).toHaveLength(1)
  })

  it('an unknown script, or one of another account, is 404 10007', async () => {
    sim.workers.addScript('elsewhere', { accountId: OTHER_ACCOUNT })
    for (const script of ['no-such-worker', 'elsewhere']) {
      await expect(
        client().workers.scripts.secrets.list(script, { account_id: ACCOUNT })
      ).rejects.toMatchObject({
        status: 404,
        errors: [{ code: WORKERS_ERROR_CODES.scriptNotFound }]
      })
    }
  })

  it('a secret_key binding, and a name that differs from its key, are refused with 400', async () => {
    const answer = await fetch(
      `${sim.apiUrl}/accounts/${ACCOUNT}/workers/scripts/${SCRIPT}/secrets-bulk`,
      {
        method: 'PATCH',
        headers: { authorization: `Bearer ${manager.value}`, 'content-type': 'application/json' },
        body: JSON.stringify({ secrets: { A: secretText('B', 'x') } })
      }
    )
    expect(answer.status).toBe(400)
    expect(await answer.json()).toMatchObject({
      errors: [{ code: WORKERS_ERROR_CODES.badRequest }]
    })
    expect(sim.workers.versionsOf(SCRIPT)).toHaveLength(1)
  })

  it('a script name outside the excerpt pattern is a 400 and a recorded violation', async () => {
    const answer = await fetch(
      `${sim.apiUrl}/accounts/${ACCOUNT}/workers/scripts/Bad.Name/secrets`,
      {
        headers: { authorization: `Bearer ${manager.value}` }
      }
    )
    expect(answer.status).toBe(400)
    expect(log.violations).toEqual([expect.stringContaining('script_name')])
    log.violations.length = 0
  })
})

describe('the sample Worker', () => {
  let r2: R2Sim
  let worker: SampleWorker
  let oldToken: CfTokenRecord
  let newToken: CfTokenRecord

  function r2Token(name: string): CfTokenRecord {
    return sim.addToken({
      name,
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId('Workers R2 Storage Bucket Item Read') }],
          resources: { [r2.bucketResource('avatars-bucket')]: '*' }
        }
      ]
    })
  }

  beforeEach(async () => {
    r2 = new R2Sim(log, sim, { accountId: ACCOUNT })
    await r2.start()
    r2.addBucket('avatars-bucket')
    r2.putObject('avatars-bucket', 'healthz.txt', 'ok\n')
    oldToken = r2Token('old')
    newToken = r2Token('new')
    sim.workers.addScript('r2-worker', {
      accountId: ACCOUNT,
      secrets: { R2_ACCESS_KEY_ID: oldToken.id, R2_SECRET_ACCESS_KEY: sha256Hex(oldToken.value) }
    })
    worker = new SampleWorker(log, sim.workers, {
      script: 'r2-worker',
      r2Url: r2.url,
      bucket: 'avatars-bucket',
      key: 'healthz.txt'
    })
    await worker.start()
  })

  afterEach(async () => {
    await worker.stop()
    await r2.stop()
  })

  async function health(): Promise<{ status: number; body: string }> {
    const response = await fetch(`${worker.url}/healthz`)
    return { status: response.status, body: await response.text() }
  }

  it('proves the live version’s credentials and follows secret writes and rollbacks', async () => {
    const first = sim.workers.liveVersion('r2-worker')!
    expect(await health()).toEqual({
      status: 200,
      body: `ok ${first.id} access-key-id=${oldToken.id}`
    })
    await client().workers.scripts.secrets.bulkUpdate('r2-worker', {
      account_id: ACCOUNT,
      secrets: {
        R2_ACCESS_KEY_ID: secretText('R2_ACCESS_KEY_ID', newToken.id),
        R2_SECRET_ACCESS_KEY: secretText('R2_SECRET_ACCESS_KEY', sha256Hex(newToken.value))
      }
    })
    const second = sim.workers.liveVersion('r2-worker')!
    expect(await health()).toEqual({
      status: 200,
      body: `ok ${second.id} access-key-id=${newToken.id}`
    })
    // The old token is revoked; then a user rolls the Worker back: the old secret returns and fails.
    const tokenManager = sim.addToken({
      name: 'token manager',
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId('API Tokens Write') }],
          resources: { [`com.cloudflare.api.user.${sim.userId}`]: '*' }
        }
      ]
    })
    const revoked = await fetch(`${sim.apiUrl}/user/tokens/${oldToken.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${tokenManager.value}` }
    })
    expect(revoked.status).toBe(200)
    sim.workers.rollbackTo('r2-worker', first.id)
    expect(await health()).toEqual({ status: 503, body: 'r2 error 403 InvalidAccessKeyId' })
    expect(worker.healthChecks.map(c => [c.status, c.versionId])).toEqual([
      [200, first.id],
      [200, second.id],
      [503, first.id]
    ])
  })

  it('answers 503 NoCredentials when the live version lacks a secret', async () => {
    await client().workers.scripts.secrets.delete('R2_SECRET_ACCESS_KEY', {
      account_id: ACCOUNT,
      script_name: 'r2-worker'
    })
    expect(await health()).toEqual({ status: 503, body: 'r2 error 0 NoCredentials' })
  })
})
