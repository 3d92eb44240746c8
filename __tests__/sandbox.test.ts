/**
 * The wired-up sandbox: the app serves with the token in use; changing the secrets through the
 * GitHub API and dispatching the deploy workflow redeploys the app with the new credentials (and
 * the app keeps answering); a failed run deploys nothing; every secret value is known to the
 * leak checks; stop() leaves nothing running.
 */
import sodium from 'libsodium-wrappers'
import { Octokit } from '@octokit/rest'
import { startSandbox, type Sandbox } from '../sandbox/index.js'
import { sha256Hex } from '../sandbox/r2.js'

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

async function healthz(sb: Sandbox): Promise<{ status: number; body: string }> {
  const response = await fetch(`${sb.appUrl}/healthz`)
  return { status: response.status, body: await response.text() }
}

function octokitFor(sb: Sandbox): Octokit {
  const quiet = (): void => {}
  // Expected 4xx answers would otherwise be printed by Octokit's request log.
  return new Octokit({
    auth: sb.githubToken,
    baseUrl: sb.githubApiUrl,
    log: { debug: quiet, info: quiet, warn: quiet, error: quiet }
  })
}

function repoOf(sb: Sandbox): { owner: string; repo: string } {
  const [owner, repo] = sb.repository.split('/')
  return { owner: owner!, repo: repo! }
}

/** Mints a replacement of the token in use through the Cloudflare API, as the action does. */
async function mintReplacement(sb: Sandbox): Promise<{ id: string; value: string }> {
  const old = sb.cloudflare.findById(sb.current.id)!
  const base =
    old.owner.kind === 'user' ? '/user/tokens' : `/accounts/${old.owner.accountId}/tokens`
  const response = await fetch(`${sb.cloudflareApiUrl}${base}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${sb.managementToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      name: `${old.name} (rotated)`,
      policies: old.policies.map(p => ({
        effect: p.effect,
        permission_groups: p.permission_groups.map(g => ({ id: g.id })),
        resources: p.resources
      })),
      condition: old.condition
    })
  })
  expect(response.status).toBe(200)
  const body = (await response.json()) as { result: { id: string; value: string } }
  return { id: body.result.id, value: body.result.value }
}

/** Seals the three values into the deploy's secrets through the GitHub API (repo or environment). */
async function publishSecrets(sb: Sandbox, token: { id: string; value: string }): Promise<void> {
  const octokit = octokitFor(sb)
  const { owner, repo } = repoOf(sb)
  await sodium.ready
  const values: Array<[string, string]> = [
    [sb.secretNames.token, token.value],
    [sb.secretNames.accessKeyId, token.id],
    [sb.secretNames.secretAccessKey, sha256Hex(token.value)]
  ]
  const key = sb.environment
    ? (
        await octokit.rest.actions.getEnvironmentPublicKey({
          owner,
          repo,
          environment_name: sb.environment
        })
      ).data
    : (await octokit.rest.actions.getRepoPublicKey({ owner, repo })).data
  for (const [name, value] of values) {
    const sealed = sodium.to_base64(
      sodium.crypto_box_seal(
        sodium.from_string(value),
        sodium.from_base64(key.key, sodium.base64_variants.ORIGINAL)
      ),
      sodium.base64_variants.ORIGINAL
    )
    const params = { owner, repo, secret_name: name, encrypted_value: sealed, key_id: key.key_id }
    if (sb.environment) {
      await octokit.rest.actions.createOrUpdateEnvironmentSecret({
        ...params,
        environment_name: sb.environment
      })
    } else {
      await octokit.rest.actions.createOrUpdateRepoSecret(params)
    }
  }
}

/** Dispatches deploy.yml and follows the run to its conclusion through the API. */
async function dispatchAndFollow(sb: Sandbox): Promise<{ id: number; conclusion: string | null }> {
  const octokit = octokitFor(sb)
  const { owner, repo } = repoOf(sb)
  const { data } = await octokit.request(
    'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches',
    {
      owner,
      repo,
      workflow_id: 'deploy.yml',
      ref: 'main',
      inputs: { reason: 'sandbox test' },
      return_run_details: true
    }
  )
  const runId = Number(data.workflow_run_id)
  for (let i = 0; i < 200; i++) {
    const { data: run } = await octokit.rest.actions.getWorkflowRun({ owner, repo, run_id: runId })
    if (run.status === 'completed') return { id: runId, conclusion: run.conclusion }
    await sleep(50)
  }
  throw new Error(`run ${runId} did not complete`)
}

describe('startSandbox() with defaults', () => {
  let sb: Sandbox

  beforeAll(async () => {
    sb = await startSandbox()
  })

  afterAll(async () => {
    await sb.stop()
  })

  it('serves the app with the token in use, whose credentials are in the repository secrets', async () => {
    expect(await healthz(sb)).toEqual({ status: 200, body: 'ok v1' })
    expect(sb.liveAccessKeyId()).toBe(sb.current.id)
    expect(sb.current.secretAccessKey).toBe(sha256Hex(sb.current.value))
    const scope = { kind: 'repo', repo: sb.repository } as const
    expect(sb.github.getSecret(scope, 'CLOUDFLARE_API_TOKEN')).toBe(sb.current.value)
    expect(sb.github.getSecret(scope, 'R2_ACCESS_KEY_ID')).toBe(sb.current.id)
    expect(sb.github.getSecret(scope, 'R2_SECRET_ACCESS_KEY')).toBe(sb.current.secretAccessKey)
    expect(sb.r2Endpoint).toBe(sb.r2.url)
    expect(sb.r2.listKeys(sb.bucket)).toEqual(['healthz.txt'])

    const rotated = sb.cloudflare.findById(sb.current.id)!
    expect(rotated.name).toBe('avatars-uploader')
    expect(Date.now() - Date.parse(rotated.issued_on)).toBeGreaterThan(39 * 24 * 3600 * 1000)

    const verify = await fetch(`${sb.cloudflareApiUrl}/user/tokens/verify`, {
      headers: { authorization: `Bearer ${sb.managementToken}` }
    })
    expect(verify.status).toBe(200)
  })

  it('redeploys the app when a dispatched run succeeds, with the secrets the run was given', async () => {
    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    expect(sb.liveAccessKeyId()).toBe(sb.current.id)

    const watch = sb.watchHealth(20)
    const run = await dispatchAndFollow(sb)
    const failures = await watch.stop()

    expect(run.conclusion).toBe('success')
    expect(sb.liveAccessKeyId()).toBe(replacement.id)
    expect(await healthz(sb)).toEqual({ status: 200, body: `ok run-${run.id}` })
    expect(failures).toEqual([])
    const deployed = sb.log.events('app.deployed').at(-1)
    expect(deployed?.detail).toEqual({ run_id: run.id, access_key_id: replacement.id })
    expect(sb.app.deployments.at(-1)).toMatchObject({
      version: `run-${run.id}`,
      accessKeyId: replacement.id
    })
  })

  it('does not redeploy when the run fails', async () => {
    const before = sb.liveAccessKeyId()
    const deployments = sb.app.deployments.length
    sb.github.queueRun({ queuedMs: 20, runningMs: 50, conclusion: 'failure' })
    const run = await dispatchAndFollow(sb)
    expect(run.conclusion).toBe('failure')
    expect(sb.liveAccessKeyId()).toBe(before)
    expect(sb.app.deployments).toHaveLength(deployments)
    expect((await healthz(sb)).status).toBe(200)
  })

  it('reports health failures seen while watching', async () => {
    const watch = sb.watchHealth(10)
    const last = sb.app.deployments.at(-1)!
    sb.app.deploy({ accessKeyId: last.accessKeyId!, secretAccessKey: sha256Hex('wrong') }, 'broken')
    await sleep(60)
    const live = sb.cloudflare.findById(last.accessKeyId!)!
    sb.app.deploy({ accessKeyId: live.id, secretAccessKey: sha256Hex(live.value) }, 'fixed')
    await sleep(30)
    const failures = await watch.stop()
    expect(failures.length).toBeGreaterThan(0)
    expect(failures.every(f => f.status === 503)).toBe(true)
    expect(sb.app.healthChecks.some(c => c.status === 503)).toBe(true)
    expect(await healthz(sb)).toEqual({ status: 200, body: 'ok fixed' })
  })

  it('lists every value that must never be printed, and no identifier', () => {
    const values = sb.secretValues()
    const all = [...sb.cloudflare.tokens.values()]
    expect(all.length).toBeGreaterThanOrEqual(3)
    for (const token of all) {
      expect(values).toContain(token.value)
      expect(values).toContain(sha256Hex(token.value))
      expect(values).not.toContain(token.id)
    }
    expect(values).toContain(sb.managementToken)
    expect(values).toContain(sb.current.secretAccessKey)
    expect(values).toContain(sb.githubToken)
    expect(sb.github.secretWrites.length).toBeGreaterThan(0)
    for (const write of sb.github.secretWrites) expect(values).toContain(write.ciphertext)
  })

  it('records no OpenAPI violations', () => {
    expect(sb.log.violations).toEqual([])
  })
})

describe('startSandbox() with an account-owned token and environment secrets', () => {
  let sb: Sandbox

  beforeAll(async () => {
    sb = await startSandbox({ owner: 'account', environment: 'production', bucket: 'assets' })
  })

  afterAll(async () => {
    await sb.stop()
  })

  it('deploys from the environment secrets with the account-owned replacement', async () => {
    const owner = sb.cloudflare.findById(sb.current.id)!.owner
    expect(owner).toEqual({ kind: 'account', accountId: sb.accountId })
    const envScope = { kind: 'env', repo: sb.repository, environment: 'production' } as const
    expect(sb.github.getSecret(envScope, 'R2_ACCESS_KEY_ID')).toBe(sb.current.id)
    expect(
      sb.github.getSecret({ kind: 'repo', repo: sb.repository }, 'R2_ACCESS_KEY_ID')
    ).toBeUndefined()
    expect(await healthz(sb)).toEqual({ status: 200, body: 'ok v1' })

    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    const run = await dispatchAndFollow(sb)
    expect(run.conclusion).toBe('success')
    expect(sb.liveAccessKeyId()).toBe(replacement.id)
    expect((await healthz(sb)).status).toBe(200)
    expect(sb.log.violations).toEqual([])
  })
})

describe('startSandbox() with weaker credentials', () => {
  let sb: Sandbox

  afterEach(async () => {
    await sb.stop()
  })

  it('gives a read-only management token that lists but cannot mint', async () => {
    sb = await startSandbox({ managementPermissions: 'read' })
    const auth = { authorization: `Bearer ${sb.managementToken}` }
    expect((await fetch(`${sb.cloudflareApiUrl}/user/tokens`, { headers: auth })).status).toBe(200)
    const create = await fetch(`${sb.cloudflareApiUrl}/user/tokens`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'x',
        policies: sb.cloudflare.findById(sb.current.id)!.policies.map(p => ({
          effect: p.effect,
          permission_groups: p.permission_groups.map(g => ({ id: g.id })),
          resources: p.resources
        }))
      })
    })
    expect(create.status).toBe(403)
  })

  it('gives a management token without token rights and a GitHub token without secrets access', async () => {
    sb = await startSandbox({
      managementPermissions: 'none',
      githubPermissions: { secrets: false }
    })
    const list = await fetch(`${sb.cloudflareApiUrl}/user/tokens`, {
      headers: { authorization: `Bearer ${sb.managementToken}` }
    })
    expect(list.status).toBe(403)
    const { owner, repo } = repoOf(sb)
    await expect(
      octokitFor(sb).rest.actions.getRepoPublicKey({ owner, repo })
    ).rejects.toMatchObject({
      status: 403
    })
    expect(await healthz(sb)).toEqual({ status: 200, body: 'ok v1' })
  })
})

describe('stop()', () => {
  it('closes every server, so nothing answers afterwards', async () => {
    const sb = await startSandbox()
    const urls = [sb.appUrl, sb.r2Endpoint, sb.githubApiUrl, sb.cloudflareApiUrl]
    const watch = sb.watchHealth(10)
    await sleep(30)
    await sb.stop()
    await expect(watch.stop()).resolves.toEqual([])
    for (const url of urls) await expect(fetch(url)).rejects.toThrow()
  })
})
