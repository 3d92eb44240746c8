/**
 * End to end: every `secret-targets` form at once (repositories, environments, an organization
 * secret shared with selected repositories, Dependabot), fifty targets in one run, and the
 * preflight that refuses a target it cannot write before anything is minted.
 */
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import type { SecretScope } from '../../sandbox/github.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import { expectNoLeaks as expectNoLeaksIn, sha256, HEALTH_POLL_MS } from './scenario.js'
import type { RequestEntry } from '../../sandbox/log.js'
import { createGitHubClient } from '../../src/github/client.js'
import { SecretWriter } from '../../src/github/secrets.js'
import type { SecretTarget } from '../../src/model.js'

interface Scenario {
  sb: Sandbox
  result: ActionResult
  healthFailures: Array<{ at: number; status: number }>
  /** The log entries the run made (reads the test makes afterwards come later). */
  runEntries: number
}

async function rotateInto(options: SandboxOptions, targets: string[]): Promise<Scenario> {
  const sb = await startSandbox(options)
  const watch = sb.watchHealth(HEALTH_POLL_MS)
  const result = await runAction(sb, sandboxInputs(sb, { 'secret-targets': targets.join('\n') }))
  const healthFailures = await watch.stop()
  return { sb, result, healthFailures, runEntries: sb.log.entries.length }
}

function runRequests(scenario: Scenario): RequestEntry[] {
  return scenario.sb.log.entries
    .slice(0, scenario.runEntries)
    .filter((e): e is RequestEntry => e.kind === 'request')
}

function expectNoLeaks(scenario: Scenario): void {
  expectNoLeaksIn(scenario.sb, [scenario.result])
}

/** Each secret of `scope` decrypts to the new token's values. */
function expectNewValues(sb: Sandbox, scope: SecretScope, newId: string): void {
  const value = sb.cloudflare.findById(newId)!.value
  expect({
    token: sb.github.getSecret(scope, sb.secretNames.token),
    accessKeyId: sb.github.getSecret(scope, sb.secretNames.accessKeyId),
    secretAccessKey: sb.github.getSecret(scope, sb.secretNames.secretAccessKey)
  }).toEqual({ token: value, accessKeyId: newId, secretAccessKey: sha256(value) })
}

/** An org secret's visibility and selected repository ids, read through the API as a user would. */
async function orgSecretAccess(
  sb: Sandbox,
  org: string,
  name: string
): Promise<{ visibility: string; selectedRepositoryIds: number[] }> {
  const headers = {
    authorization: `Bearer ${sb.githubToken}`,
    accept: 'application/vnd.github+json'
  }
  const secret = (await (
    await fetch(`${sb.githubApiUrl}/orgs/${org}/actions/secrets/${name}`, { headers })
  ).json()) as { visibility: string }
  if (secret.visibility !== 'selected')
    return { visibility: secret.visibility, selectedRepositoryIds: [] }
  const list = (await (
    await fetch(
      `${sb.githubApiUrl}/orgs/${org}/actions/secrets/${name}/repositories?per_page=100`,
      {
        headers
      }
    )
  ).json()) as { repositories: Array<{ id: number }> }
  return {
    visibility: secret.visibility,
    selectedRepositoryIds: list.repositories.map(r => r.id).sort()
  }
}

const publicKeyPath = /\/secrets\/public-key$/

/** Every target form at once: 2 repositories, 2 environments, an org secret, a Dependabot secret. */
const SIX_FORMS = (() => {
  const selected = ['acme/site', 'acme/api']
  const options: SandboxOptions = {
    repositories: [{ name: 'acme/web' }],
    targets: [
      { kind: 'repo', repo: 'acme/api' },
      { kind: 'env', repo: 'acme/site', environment: 'production' },
      { kind: 'env', repo: 'acme/api', environment: 'staging' },
      { kind: 'org', org: 'acme', visibility: 'selected', selectedRepositories: selected },
      { kind: 'dependabot', repo: 'acme/api' }
    ]
  }
  const targets = [
    'repo',
    'repo:acme/api',
    'env:production',
    'env:acme/api:staging',
    'org:acme',
    'dependabot:acme/api'
  ]
  const scopes: SecretScope[] = [
    { kind: 'repo', repo: 'acme/site' },
    { kind: 'repo', repo: 'acme/api' },
    { kind: 'env', repo: 'acme/site', environment: 'production' },
    { kind: 'env', repo: 'acme/api', environment: 'staging' },
    { kind: 'org', org: 'acme' },
    { kind: 'dependabot', repo: 'acme/api' }
  ]
  return { selected, options, targets, scopes }
})()

describe('rotating into all six target forms at once', () => {
  const { selected, options, targets, scopes } = SIX_FORMS
  let scenario: Scenario
  let accessAfter: Array<{ visibility: string; selectedRepositoryIds: number[] }>

  beforeAll(async () => {
    scenario = await rotateInto(options, targets)
    const names = Object.values(scenario.sb.secretNames)
    accessAfter = await Promise.all(names.map(name => orgSecretAccess(scenario.sb, 'acme', name)))
  })
  afterAll(async () => {
    await scenario?.sb.stop()
  })

  it('rotates', () => {
    const { result, sb } = scenario
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expect(sb.cloudflare.deletedTokens.map(t => t.id)).toEqual([sb.current.id])
  })

  it('every target decrypts to the new values', () => {
    const { sb, result } = scenario
    const newId = result.outputs['token-id']!
    for (const scope of scopes) expectNewValues(sb, scope, newId)
    // Six targets times three secrets, each written once, each an update of the old value.
    expect(sb.github.secretWrites).toHaveLength(18)
    expect(sb.github.secretWrites.every(w => w.status === 204)).toBe(true)
    expect(sb.liveAccessKeyId()).toBe(newId)
  })

  it('keeps the org secret visible to the same selected repositories', () => {
    const ids = selected.map(name => scenario.sb.repositoryIds[name]!).sort()
    for (const access of accessAfter) {
      expect(access).toEqual({ visibility: 'selected', selectedRepositoryIds: ids })
    }
    // A repository outside the selection still does not see it.
    expect(scenario.sb.github.secretsForRun('acme/web')).toEqual({})
    // What was sent: the visibility and ids as read, never a change of access.
    const orgPuts = runRequests(scenario).filter(
      e => e.method === 'PUT' && e.path.startsWith('/orgs/')
    )
    expect(orgPuts).toHaveLength(3)
    for (const put of orgPuts) {
      expect(put.body).toMatchObject({ visibility: 'selected', selected_repository_ids: ids })
    }
    expect(
      runRequests(scenario).filter(e => /\/repositories(\/|$)/.test(e.path) && e.method !== 'GET')
    ).toEqual([])
  })

  it('reads every public key once, in preflight, before minting', () => {
    const requests = runRequests(scenario)
    const keyReads = requests.filter(e => e.method === 'GET' && publicKeyPath.test(e.path))
    expect(keyReads.map(e => e.path).sort()).toEqual(
      [
        '/repos/acme/site/actions/secrets/public-key',
        '/repos/acme/api/actions/secrets/public-key',
        '/repos/acme/site/environments/production/secrets/public-key',
        '/repos/acme/api/environments/staging/secrets/public-key',
        '/orgs/acme/actions/secrets/public-key',
        '/repos/acme/api/dependabot/secrets/public-key'
      ].sort()
    )
    const mint = requests.findIndex(e => e.service === 'cloudflare' && e.method === 'POST')
    expect(mint).toBeGreaterThan(requests.indexOf(keyReads.at(-1)!))
  })

  it('writes serially in target order and logs progress per secret', () => {
    const { sb, result } = scenario
    const puts = runRequests(scenario).filter(e => e.service === 'github' && e.method === 'PUT')
    const expected = scopes.flatMap(scope =>
      Object.values(sb.secretNames).map(name => `${scopePath(scope)}/${name}`)
    )
    expect(puts.map(e => e.path)).toEqual(expected)
    const progress = result.stdout.split('\n').filter(l => /^\[\d+\/18\] /.test(l))
    expect(progress).toHaveLength(18)
    expect(progress[3]).toBe(`[4/18] repo:acme/api ${sb.secretNames.token} (updated)`)
    expect(progress[17]).toBe(
      `[18/18] dependabot:acme/api ${sb.secretNames.secretAccessKey} (updated)`
    )
  })

  it('kept the app serving, sent only what the OpenAPI descriptions allow, leaked nothing', () => {
    expect(scenario.healthFailures).toEqual([])
    expect(scenario.sb.log.violations).toEqual([])
    expectNoLeaks(scenario)
  })
})

describe('a rollback across all six target forms', () => {
  let scenario: Scenario
  let accessAfter: Array<{ visibility: string; selectedRepositoryIds: number[] }>
  const { selected, options, targets, scopes } = SIX_FORMS

  beforeAll(async () => {
    const sb = await startSandbox(options)
    // The deploy with the new secrets fails: everything must go back to the old token.
    sb.github.queueRun({ conclusion: 'failure' })
    const watch = sb.watchHealth(HEALTH_POLL_MS)
    const result = await runAction(sb, sandboxInputs(sb, { 'secret-targets': targets.join('\n') }))
    const healthFailures = await watch.stop()
    scenario = { sb, result, healthFailures, runEntries: sb.log.entries.length }
    accessAfter = await Promise.all(
      Object.values(sb.secretNames).map(name => orgSecretAccess(sb, 'acme', name))
    )
  })
  afterAll(async () => {
    await scenario?.sb.stop()
  })

  it('restores every target to the previous values and deletes the new token', () => {
    const { sb, result } = scenario
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('rolled-back')
    for (const scope of scopes) {
      expect({
        token: sb.github.getSecret(scope, sb.secretNames.token),
        accessKeyId: sb.github.getSecret(scope, sb.secretNames.accessKeyId),
        secretAccessKey: sb.github.getSecret(scope, sb.secretNames.secretAccessKey)
      }).toEqual({
        token: sb.current.value,
        accessKeyId: sb.current.id,
        secretAccessKey: sb.current.secretAccessKey
      })
    }
    // 18 writes of the new values, then 18 of the previous ones.
    expect(sb.github.secretWrites).toHaveLength(36)
    expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
    const newIds = sb.log.events('token.created').map(e => e.detail.id as string)
    expect(newIds).toHaveLength(1)
    expect(sb.cloudflare.findById(newIds[0]!)).toBeUndefined()
    expect(sb.liveAccessKeyId()).toBe(sb.current.id)
  })

  it('keeps the org secret visible to the same selected repositories', () => {
    const ids = selected.map(name => scenario.sb.repositoryIds[name]!).sort()
    for (const access of accessAfter) {
      expect(access).toEqual({ visibility: 'selected', selectedRepositoryIds: ids })
    }
  })

  it('kept the app serving, sent only what the OpenAPI descriptions allow, leaked nothing', () => {
    expect(scenario.healthFailures).toEqual([])
    expect(scenario.sb.log.violations).toEqual([])
    expectNoLeaks(scenario)
  })
})

function scopePath(scope: SecretScope): string {
  switch (scope.kind) {
    case 'repo':
      return `/repos/${scope.repo}/actions/secrets`
    case 'env':
      return `/repos/${scope.repo}/environments/${scope.environment}/secrets`
    case 'org':
      return `/orgs/${scope.org}/actions/secrets`
    case 'dependabot':
      return `/repos/${scope.repo}/dependabot/secrets`
  }
}

describe('fifty targets', () => {
  let scenario: Scenario
  const services = Array.from(
    { length: 20 },
    (_, i) => `acme/svc-${String(i + 1).padStart(2, '0')}`
  )
  const entries: Array<[line: string, scope: SecretScope]> = [
    ['repo', { kind: 'repo', repo: 'acme/site' }],
    ...services.map((repo): [string, SecretScope] => [`repo:${repo}`, { kind: 'repo', repo }]),
    ...services.map((repo): [string, SecretScope] => [
      `env:${repo}:production`,
      { kind: 'env', repo, environment: 'production' }
    ]),
    ...services
      .slice(0, 8)
      .map((repo): [string, SecretScope] => [`dependabot:${repo}`, { kind: 'dependabot', repo }]),
    ['org:acme', { kind: 'org', org: 'acme' }]
  ]
  const targets = entries.map(([line]) => line)

  beforeAll(async () => {
    scenario = await rotateInto(
      {
        repositories: services.map(name => ({ name, environments: ['production'] })),
        organizations: ['acme']
      },
      targets
    )
  }, 120_000)
  afterAll(async () => {
    await scenario?.sb.stop()
  })

  it('rotates every one of them', () => {
    const { sb, result } = scenario
    expect(targets).toHaveLength(50)
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expect(sb.github.secretWrites).toHaveLength(150)
    const newId = result.outputs['token-id']!
    expectNewValues(sb, { kind: 'repo', repo: 'acme/svc-20' }, newId)
    expectNewValues(sb, { kind: 'env', repo: 'acme/svc-13', environment: 'production' }, newId)
    expectNewValues(sb, { kind: 'dependabot', repo: 'acme/svc-08' }, newId)
    expectNewValues(sb, { kind: 'org', org: 'acme' }, newId)
    expect(result.stdout).toContain(
      `[150/150] org:acme ${sb.secretNames.secretAccessKey} (created)`
    )
  })

  it('reads each public key exactly once', () => {
    const keyReads = runRequests(scenario)
      .filter(e => e.method === 'GET' && publicKeyPath.test(e.path))
      .map(e => e.path)
    expect(keyReads).toHaveLength(50)
    expect(new Set(keyReads).size).toBe(50)
  })

  it('writes one secret after another, in target order; a new org secret is private', () => {
    const { sb } = scenario
    const puts = runRequests(scenario).filter(e => e.service === 'github' && e.method === 'PUT')
    const names = Object.values(sb.secretNames)
    expect(puts.map(e => e.path)).toEqual(
      entries.flatMap(([, scope]) => names.map(name => `${scopePath(scope)}/${name}`))
    )
    // The deploy repository's secrets existed; everything else is created.
    expect(puts.slice(0, 3).every(e => e.status === 204)).toBe(true)
    expect(puts.slice(3).every(e => e.status === 201)).toBe(true)
    for (const put of puts.slice(-3)) {
      expect(put.body).toMatchObject({ visibility: 'private' })
      expect(put.body).not.toHaveProperty('selected_repository_ids')
    }
  })

  it('kept the app serving and leaked nothing', () => {
    expect(scenario.healthFailures).toEqual([])
    expect(scenario.sb.log.violations).toEqual([])
    expectNoLeaks(scenario)
  })
})

describe('preflight refuses a target it cannot write, before anything changes', () => {
  async function failing(options: SandboxOptions, targets: string[]): Promise<Scenario> {
    const scenario = await rotateInto(options, targets)
    const { sb, result } = scenario
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('failed')
    // Zero mutations anywhere: no mint, no secret, no journal, no dispatch, no S3 write.
    expect(sb.log.mutations()).toEqual([])
    expect(sb.github.secretWrites).toEqual([])
    expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
    expect(scenario.healthFailures).toEqual([])
    expect(sb.log.violations).toEqual([])
    expectNoLeaks(scenario)
    return scenario
  }

  function errorLines(result: ActionResult): string[] {
    return result.stdout.split('\n').filter(l => l.startsWith('::error'))
  }

  it('a missing environment', async () => {
    const { sb, result } = await failing({ targets: [{ kind: 'repo', repo: 'acme/api' }] }, [
      'repo',
      'repo:acme/api',
      'env:acme/api:staging'
    ])
    try {
      const errors = errorLines(result).join('\n')
      expect(errors).toContain("secret-targets line 'env:acme/api:staging'")
      expect(errors).toContain(
        '"Environments: write" on acme/api, and the environment \'staging\' must exist. ' +
          'It does not exist in acme/api'
      )
    } finally {
      await sb.stop()
    }
  })

  it('a target the github-token has no permission for', async () => {
    const { sb, result } = await failing(
      {
        githubPermissions: {
          secrets: true,
          environments: false,
          actions: true,
          variables: true,
          contents: true
        },
        targets: [{ kind: 'env', repo: 'acme/site', environment: 'production' }]
      },
      ['repo', 'env:production']
    )
    try {
      const errors = errorLines(result).join('\n')
      expect(errors).toContain("secret-targets line 'env:production'")
      expect(errors).toContain('GitHub answered 403')
      expect(errors).toContain('"Environments: write" on acme/site')
    } finally {
      await sb.stop()
    }
  })
})

describe('SecretWriter.preflightAll against the sandbox', () => {
  const quiet = { info: () => {}, warning: () => {}, debug: () => {} }
  const targets: SecretTarget[] = [
    { kind: 'repo', owner: 'acme', repo: 'site', line: 'repo' },
    { kind: 'env', owner: 'acme', repo: 'site', environment: 'staging', line: 'env:staging' },
    { kind: 'repo', owner: 'acme', repo: 'typo', line: 'repo:acme/typo' },
    { kind: 'dependabot', owner: 'acme', repo: 'site', line: 'dependabot:acme/site' }
  ]

  it('checks every target and names each line that cannot be written, reading only', async () => {
    const sb = await startSandbox()
    try {
      const writer = new SecretWriter(
        createGitHubClient({ token: sb.githubToken, baseUrl: sb.githubApiUrl, log: quiet })
      )
      const error = await writer.preflightAll(targets, ['R2_TOKEN']).then(
        () => undefined,
        (e: Error) => e
      )
      const lines = error?.message.split('\n') ?? []
      expect(lines[0]).toBe('2 of 4 secret-targets cannot be written:')
      expect(lines[1]).toMatch(
        /^secret-targets line 'env:staging' .* It does not exist in acme\/site: create it/
      )
      expect(lines[2]).toMatch(
        /^secret-targets line 'repo:acme\/typo' .* The repository acme\/typo was not found, or the github-token cannot see it/
      )
      expect(lines).toHaveLength(3)
      // Every target's key was asked for, the good ones included.
      expect(
        sb.log.requests({ method: 'GET' }).filter(e => publicKeyPath.test(e.path))
      ).toHaveLength(4)
      expect(sb.log.mutations()).toEqual([])
      expect(sb.log.violations).toEqual([])
    } finally {
      await sb.stop()
    }
  })

  it('stops at the first target when GitHub rejects the github-token itself', async () => {
    const sb = await startSandbox()
    try {
      const writer = new SecretWriter(
        createGitHubClient({ token: 'github_pat_unknown', baseUrl: sb.githubApiUrl, log: quiet })
      )
      await expect(writer.preflightAll(targets, ['R2_TOKEN'])).rejects.toThrow(
        /^secret-targets line 'repo' .*GitHub answered 401.*mistyped, revoked or expired\. Regenerate it.*update the secret it comes from\.$/
      )
      expect(sb.log.requests({ service: 'github' })).toHaveLength(1)
    } finally {
      await sb.stop()
    }
  })
})
