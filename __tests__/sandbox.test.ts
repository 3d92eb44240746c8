/**
 * The wired-up sandbox: the app serves with the token in use and names it; changing the secrets
 * through the GitHub API and dispatching the deploy workflow redeploys the app with the new
 * credentials (and the app keeps answering); a failed run deploys nothing, a stale one ships the
 * old credentials, one that rolls out and then fails ships the new ones; an app that reads the
 * secrets at every check needs no deploy; an environment's secrets shadow the repository's;
 * every secret value is known to the leak checks; stop() leaves nothing running.
 */
import sodium from 'libsodium-wrappers'
import { Octokit } from '@octokit/rest'
import { DEFAULT_APP_ADDRESS, startSandbox, type Sandbox } from '../sandbox/index.js'
import { ManualClock } from '../sandbox/github.js'
import { sha256Hex } from '../sandbox/r2.js'

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** Waits (a few milliseconds at a time) until `predicate` holds: for events, never for time. */
async function until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting')
    await sleep(2)
  }
}

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

/**
 * Seals the three values into secrets through the GitHub API: the deploy's (the environment's,
 * when there is one), or the repository's.
 */
async function publishSecrets(
  sb: Sandbox,
  token: { id: string; value: string },
  scope: 'deploy' | 'repo' = 'deploy'
): Promise<void> {
  const octokit = octokitFor(sb)
  const { owner, repo } = repoOf(sb)
  await sodium.ready
  const values: Array<[string, string]> = [
    [sb.secretNames.token, token.value],
    [sb.secretNames.accessKeyId, token.id],
    [sb.secretNames.secretAccessKey, sha256Hex(token.value)]
  ]
  const environment = scope === 'deploy' ? sb.environment : undefined
  const key = environment
    ? (
        await octokit.rest.actions.getEnvironmentPublicKey({
          owner,
          repo,
          environment_name: environment
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
    if (environment) {
      await octokit.rest.actions.createOrUpdateEnvironmentSecret({
        ...params,
        environment_name: environment
      })
    } else {
      await octokit.rest.actions.createOrUpdateRepoSecret(params)
    }
  }
}

async function dispatchDeploy(sb: Sandbox): Promise<number> {
  const { owner, repo } = repoOf(sb)
  const { data } = await octokitFor(sb).request(
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
  return Number(data.workflow_run_id)
}

/** Dispatches deploy.yml and follows the run to its conclusion through the API. */
async function dispatchAndFollow(sb: Sandbox): Promise<{ id: number; conclusion: string | null }> {
  const octokit = octokitFor(sb)
  const { owner, repo } = repoOf(sb)
  const runId = await dispatchDeploy(sb)
  for (let i = 0; i < 200; i++) {
    const { data: run } = await octokit.rest.actions.getWorkflowRun({ owner, repo, run_id: runId })
    if (run.status === 'completed') return { id: runId, conclusion: run.conclusion }
    await sleep(50)
  }
  throw new Error(`run ${runId} did not complete`)
}

/**
 * Dispatches deploy.yml in a sandbox whose GitHub runs on `clock`, moves the clock past the run's
 * whole life and reads its conclusion through the API.
 */
async function dispatchOnClock(
  sb: Sandbox,
  clock: ManualClock
): Promise<{ id: number; conclusion: string | null }> {
  const { owner, repo } = repoOf(sb)
  const runId = await dispatchDeploy(sb)
  clock.advance(10 * 60_000)
  // The completion awaits the deploy hook: it lands a microtask or two after the timer fired.
  await until(() => sb.github.runs.get(runId)?.status === 'completed')
  const { data: run } = await octokitFor(sb).rest.actions.getWorkflowRun({
    owner,
    repo,
    run_id: runId
  })
  return { id: runId, conclusion: run.conclusion }
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
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok v1 access-key-id=${sb.current.id}`
    })
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
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok run-${run.id} access-key-id=${replacement.id}`
    })
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
    // R2 fails the app's next FAILURES reads. The watcher is stopped once the app itself has
    // answered them and one check more (not after a time window, which a loaded machine can
    // miss): it must report exactly those checks, as the app answered them.
    const FAILURES = 3
    const before = sb.app.healthChecks.length
    sb.r2.service.inject({ method: 'GET', path: /\/healthz\.txt$/, status: 500, times: FAILURES })
    const watch = sb.watchHealth(5)
    await until(() => sb.app.healthChecks.length >= before + FAILURES + 1)
    const failures = await watch.stop()
    const seen = sb.app.healthChecks.slice(before)
    expect(seen.slice(0, FAILURES + 1).map(c => c.status)).toEqual([503, 503, 503, 200])
    expect(seen.slice(FAILURES).every(c => c.status === 200)).toBe(true)
    expect(failures.map(f => f.status)).toEqual([503, 503, 503])

    // A release with a wrong secret fails every check until a good one replaces it.
    const last = sb.app.deployments.at(-1)!
    sb.app.deploy({ accessKeyId: last.accessKeyId!, secretAccessKey: sha256Hex('wrong') }, 'broken')
    const broken = await healthz(sb)
    expect(broken.status).toBe(503)
    expect(broken.body).toMatch(/^r2 error 403 [A-Za-z]+$/)
    const live = sb.cloudflare.findById(last.accessKeyId!)!
    sb.app.deploy({ accessKeyId: live.id, secretAccessKey: sha256Hex(live.value) }, 'fixed')
    expect(await healthz(sb)).toEqual({ status: 200, body: `ok fixed access-key-id=${live.id}` })
  })

  it('checks at once after a change a consumer can see, not only every interval', async () => {
    // An interval longer than the test: every check after the first is one a change set off.
    const live = sb.cloudflare.findById(sb.liveAccessKeyId()!)!
    const setStatus = async (status: 'active' | 'disabled'): Promise<void> => {
      const response = await fetch(`${sb.cloudflareApiUrl}/user/tokens/${live.id}`, {
        method: 'PUT',
        headers: {
          authorization: `Bearer ${sb.managementToken}`,
          'content-type': 'application/json'
        },
        body: JSON.stringify({
          name: live.name,
          policies: live.policies,
          ...(live.condition ? { condition: live.condition } : {}),
          status
        })
      })
      expect(response.status).toBe(200)
    }
    const before = sb.app.healthChecks.length
    const watch = sb.watchHealth(60_000)
    await until(() => sb.app.healthChecks.length >= before + 1)
    await setStatus('disabled')
    await until(() => sb.app.healthChecks.length >= before + 2)
    await setStatus('active')
    await until(() => sb.app.healthChecks.length >= before + 3)
    const failures = await watch.stop()
    expect(sb.app.healthChecks.slice(before).map(c => c.status)).toEqual([200, 503, 200])
    expect(failures.map(f => f.status)).toEqual([503])
  })

  it('checks just after time alone ends a credential, and at once when the clock moves', async () => {
    // Its own sandbox: the app's token ends here. The interval is longer than the test, and the
    // expiry is written into the record directly (no event): only the watcher's schedule can see it.
    const own = await startSandbox()
    try {
      const token = own.cloudflare.findById(own.liveAccessKeyId()!)!
      // A second ahead: the first check has answered long before, even on a loaded machine.
      const expiresAt = Date.now() + 1000
      token.expires_on = new Date(expiresAt).toISOString()
      const watch = own.watchHealth(60_000)
      await until(() => own.app.healthChecks.length >= 2)
      const checks = own.app.healthChecks.map(c => c.status)
      const failures = await watch.stop()
      expect(checks).toEqual([200, 503])
      expect(failures).toHaveLength(1)
      expect(failures[0]!.at).toBeGreaterThanOrEqual(expiresAt)

      // A token that lives an hour more: moving the simulators' clock two hours ends it at once.
      const live = own.cloudflare.addToken({
        name: 'lives an hour',
        policies: token.policies,
        ...(token.condition ? { condition: token.condition } : {}),
        expires_on: new Date(Date.now() + 3_600_000).toISOString()
      })
      own.app.deploy({ accessKeyId: live.id, secretAccessKey: sha256Hex(live.value) }, 'an hour')
      const before = own.app.healthChecks.length
      const again = own.watchHealth(60_000)
      await until(() => own.app.healthChecks.length >= before + 1)
      own.cloudflare.skewMs += 7_200_000
      await until(() => own.app.healthChecks.length >= before + 2)
      expect((await again.stop()).map(f => f.status)).toEqual([503])
      expect(own.app.healthChecks.slice(before).map(c => c.status)).toEqual([200, 503])
    } finally {
      await own.stop()
    }
  })

  it('checks on a secret written only when the app reads the secrets, and never on a token created', async () => {
    // The interval outlasts the test: every check after the first is set off by a change.
    const deployed = await startSandbox()
    const reading = await startSandbox({ consumer: 'reads-secrets' })
    try {
      // A deployed app sees a secret only through a deploy: minting and publishing set off no
      // check. Moving the clock (by nothing) is a change it sees: the one check after the first.
      const watch = deployed.watchHealth(60_000)
      await until(() => deployed.app.healthChecks.length >= 1)
      await publishSecrets(deployed, await mintReplacement(deployed))
      deployed.cloudflare.skewMs += 0
      await until(() => deployed.app.healthChecks.length >= 2)
      expect(await watch.stop()).toEqual([])
      expect(deployed.app.healthChecks).toHaveLength(2)

      // An app that reads the secrets at every check sees each write at once.
      const readingWatch = reading.watchHealth(60_000)
      await until(() => reading.app.healthChecks.length >= 1)
      const replacement = await mintReplacement(reading)
      expect(reading.app.healthChecks).toHaveLength(1)
      await publishSecrets(reading, replacement)
      await until(() => reading.app.healthChecks.length >= 2)
      expect(await readingWatch.stop()).toEqual([])
      expect(reading.liveAccessKeyId()).toBe(replacement.id)
    } finally {
      await Promise.all([deployed.stop(), reading.stop()])
    }
  })

  it("sends the app's address with each of its R2 requests", async () => {
    await healthz(sb)
    const read = sb.log.requests({ service: 'r2', method: 'GET' }).at(-1)!
    expect(read.path).toBe(`/${sb.bucket}/healthz.txt`)
    expect(read.headers['x-sandbox-client-address']).toBe(DEFAULT_APP_ADDRESS)
    expect(read.status).toBe(200)
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
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok v1 access-key-id=${sb.current.id}`
    })

    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    const run = await dispatchAndFollow(sb)
    expect(run.conclusion).toBe('success')
    expect(sb.liveAccessKeyId()).toBe(replacement.id)
    expect((await healthz(sb)).status).toBe(200)
    expect(sb.log.violations).toEqual([])
  })
})

describe('deploy runs whose rollout is stale, or comes before a failure', () => {
  let sb: Sandbox
  let clock: ManualClock

  beforeEach(async () => {
    clock = new ManualClock()
    sb = await startSandbox({ githubClock: clock })
  })

  afterEach(async () => {
    await sb.stop()
  })

  it('a stale deploy succeeds but the app keeps the credentials it had', async () => {
    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    sb.github.queueRun({ rollout: 'stale' })
    const run = await dispatchOnClock(sb, clock)

    expect(run.conclusion).toBe('success')
    expect(sb.liveAccessKeyId()).toBe(sb.current.id)
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok run-${run.id} access-key-id=${sb.current.id}`
    })
    expect(sb.log.events('app.deployed').map(e => e.detail)).toEqual([
      { run_id: run.id, access_key_id: sb.current.id, stale: true }
    ])
    expect(sb.log.events('run.completed').map(e => e.detail)).toEqual([
      { run_id: run.id, attempt: 1, conclusion: 'success', stale: true }
    ])
    expect(sb.log.violations).toEqual([])
  })

  it('a run that rolls out and then fails leaves the app on the new credentials', async () => {
    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    sb.github.queueRun({ conclusion: 'failure', rollout: 'always' })
    const run = await dispatchOnClock(sb, clock)

    expect(run.conclusion).toBe('failure')
    expect(sb.liveAccessKeyId()).toBe(replacement.id)
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok run-${run.id} access-key-id=${replacement.id}`
    })
    const names = sb.log.events().map(e => e.name)
    expect(names.indexOf('app.deployed')).toBeLessThan(names.indexOf('run.completed'))
    expect(sb.log.events('app.deployed')[0]!.detail).toEqual({
      run_id: run.id,
      access_key_id: replacement.id
    })
    expect(sb.log.events('run.completed')[0]!.detail).toMatchObject({ conclusion: 'failure' })
  })

  it('a run that never starts ships nothing, whatever its rollout', async () => {
    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    sb.github.queueRun({ conclusion: 'startup_failure', rollout: 'always' })
    const run = await dispatchOnClock(sb, clock)
    expect(run.conclusion).toBe('startup_failure')
    expect(sb.liveAccessKeyId()).toBe(sb.current.id)
    expect(sb.log.events('app.deployed')).toEqual([])
  })
})

describe('startSandbox() with a consumer that reads the secrets when it starts', () => {
  let sb: Sandbox
  let clock: ManualClock

  beforeAll(async () => {
    clock = new ManualClock()
    sb = await startSandbox({
      consumer: 'reads-secrets',
      environment: 'production',
      githubClock: clock
    })
  })

  afterAll(async () => {
    await sb.stop()
  })

  it('uses the secrets as they are at each check, without a deploy', async () => {
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok v1 access-key-id=${sb.current.id}`
    })
    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement)
    expect(sb.liveAccessKeyId()).toBe(replacement.id)
    expect(await healthz(sb)).toEqual({
      status: 200,
      body: `ok v1 access-key-id=${replacement.id}`
    })

    // A dispatched run concludes, but deploys nothing: there is no deploy to make.
    const run = await dispatchOnClock(sb, clock)
    expect(run.conclusion).toBe('success')
    expect(sb.log.events('app.deployed')).toEqual([])
    expect(sb.app.deployments).toHaveLength(1)
    expect(sb.log.violations).toEqual([])
  })

  it('reads the environment, which shadows the repository', async () => {
    const before = sb.liveAccessKeyId()
    const other = await mintReplacement(sb)
    await publishSecrets(sb, other, 'repo')
    expect(sb.liveAccessKeyId()).toBe(before)
    expect((await healthz(sb)).body).toBe(`ok v1 access-key-id=${before}`)
  })
})

describe('startSandbox() where the environment shadows repository secrets', () => {
  let sb: Sandbox
  let clock: ManualClock

  beforeAll(async () => {
    clock = new ManualClock()
    // The deploy job runs in `production`, which has its own copies of the R2 secrets, while the
    // repository also holds them: a run sees the environment's (docs.github.com/actions/
    // security-guides/using-secrets-in-github-actions: "If a secret with the same name exists at
    // multiple levels, the secret at the lowest level takes precedence").
    sb = await startSandbox({
      environment: 'production',
      targets: [{ kind: 'repo', repo: 'acme/site' }],
      githubClock: clock
    })
  })

  afterAll(async () => {
    await sb.stop()
  })

  it('holds the credentials in both scopes, as the secrets API shows', async () => {
    const octokit = octokitFor(sb)
    const { owner, repo } = repoOf(sb)
    const names = [sb.secretNames.accessKeyId, sb.secretNames.secretAccessKey]
    for (const secret_name of names) {
      const env = await octokit.rest.actions.getEnvironmentSecret({
        owner,
        repo,
        environment_name: 'production',
        secret_name
      })
      const repoSecret = await octokit.rest.actions.getRepoSecret({ owner, repo, secret_name })
      expect(env.data.name).toBe(secret_name)
      expect(repoSecret.data.name).toBe(secret_name)
    }
    const envScope = { kind: 'env', repo: sb.repository, environment: 'production' } as const
    const repoScope = { kind: 'repo', repo: sb.repository } as const
    expect(sb.github.getSecret(envScope, sb.secretNames.accessKeyId)).toBe(sb.current.id)
    expect(sb.github.getSecret(repoScope, sb.secretNames.accessKeyId)).toBe(sb.current.id)
  })

  it('deploys the environment values: a repository-only update changes nothing', async () => {
    const replacement = await mintReplacement(sb)
    await publishSecrets(sb, replacement, 'repo')
    const first = await dispatchOnClock(sb, clock)
    expect(first.conclusion).toBe('success')
    expect(sb.liveAccessKeyId()).toBe(sb.current.id)
    expect(sb.log.events('app.deployed').at(-1)!.detail).toEqual({
      run_id: first.id,
      access_key_id: sb.current.id
    })

    await publishSecrets(sb, replacement)
    const second = await dispatchOnClock(sb, clock)
    expect(second.conclusion).toBe('success')
    expect(sb.liveAccessKeyId()).toBe(replacement.id)
    expect((await healthz(sb)).body).toBe(`ok run-${second.id} access-key-id=${replacement.id}`)
    expect(sb.log.violations).toEqual([])
  })
})

describe('startSandbox() with more options', () => {
  let sb: Sandbox

  afterEach(async () => {
    await sb.stop()
  })

  it('sends the app address given', async () => {
    sb = await startSandbox({ appAddress: '203.0.113.7' })
    expect((await healthz(sb)).status).toBe(200)
    const read = sb.log.requests({ service: 'r2', method: 'GET' }).at(-1)!
    expect(read.headers['x-sandbox-client-address']).toBe('203.0.113.7')
  })

  it('acts as GitHub Enterprise Server, with an expiring GitHub token', async () => {
    const expiresAt = Date.UTC(2099, 0, 2, 3, 4, 5)
    sb = await startSandbox({
      enterpriseServer: { version: '3.20' },
      githubTokenExpiresAt: expiresAt
    })
    expect(sb.githubApiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/api\/v3$/)
    const { owner, repo } = repoOf(sb)
    const { headers } = await octokitFor(sb).rest.repos.get({ owner, repo })
    expect(headers['x-github-enterprise-version']).toBe('3.20.0')
    expect(headers['github-authentication-token-expiration']).toBe('2099-01-02 03:04:05 UTC')
    const run = await dispatchAndFollow(sb).catch((error: { status?: number }) => error)
    // GHES 3.20 refuses return_run_details.
    expect(run).toMatchObject({ status: 422 })
    expect(headers['x-ratelimit-limit']).toBeUndefined()
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
    expect((await healthz(sb)).body).toBe(`ok v1 access-key-id=${sb.current.id}`)
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
