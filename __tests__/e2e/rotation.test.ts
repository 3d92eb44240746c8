/**
 * End to end: dist/index.js, run as the Actions runner runs it, against the sandbox (Cloudflare,
 * GitHub, R2 and the sample app on 127.0.0.1). The ordered request log is the proof of the
 * invariant: the old token is deleted only after the deploy run concluded success and the smoke
 * checks passed.
 */
import {
  HEALTH_OBJECT_KEY,
  startSandbox,
  type Sandbox,
  type SandboxOptions
} from '../../sandbox/index.js'
import {
  findLeaks,
  runAction,
  sandboxInputs,
  type ActionResult,
  type RunOptions
} from '../../sandbox/runner.js'
import type { RequestEntry, LogEntry } from '../../sandbox/log.js'
import {
  expectNoLeaks as expectNoLeaksIn,
  journalOf,
  mutationList,
  secretScope,
  sha256,
  HEALTH_POLL_MS
} from './scenario.js'

interface Scenario {
  sb: Sandbox
  result: ActionResult
  healthFailures: Array<{ at: number; status: number }>
}

async function rotateIn(
  options: SandboxOptions,
  overrides: Record<string, string> = {},
  prepare?: (sb: Sandbox) => void,
  run: RunOptions = {}
): Promise<Scenario> {
  const sb = await startSandbox(options)
  prepare?.(sb)
  const watch = sb.watchHealth(HEALTH_POLL_MS)
  const result = await runAction(sb, sandboxInputs(sb, overrides), run)
  const healthFailures = await watch.stop()
  return { sb, result, healthFailures }
}

const isRequest = (e: LogEntry): e is RequestEntry => e.kind === 'request'

/** Index in the log of the first entry matching, or -1. */
function indexOf(sb: Sandbox, match: (e: LogEntry) => boolean): number {
  return sb.log.entries.findIndex(match)
}
function lastIndexOf(sb: Sandbox, match: (e: LogEntry) => boolean): number {
  for (let i = sb.log.entries.length - 1; i >= 0; i--) if (match(sb.log.entries[i]!)) return i
  return -1
}

function expectNoLeaks(scenario: Scenario): void {
  expectNoLeaksIn(scenario.sb, [scenario.result])
}

describe.each(['user', 'account'] as const)('a %s-owned R2 token', owner => {
  let scenario: Scenario
  beforeAll(async () => {
    // `node dist/index.js` and nothing else, exactly as the runner starts it (the other scenarios
    // add SANDBOX_NODE_FLAGS, SANDBOX_MALLOC_TUNABLES and the code cache of sandbox/code-cache.mjs,
    // which only make them cheaper).
    scenario = await rotateIn(
      { owner, environment: owner === 'account' ? 'production' : undefined },
      {},
      undefined,
      { nodeFlags: [] }
    )
  })
  afterAll(async () => {
    await scenario?.sb.stop()
  })

  it('rotates: result, outputs, exit code', () => {
    const { result, sb } = scenario
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expect(result.outputs['previous-token-id']).toBe(sb.current.id)
    expect(result.outputs['token-id']).toMatch(/^[0-9a-f]{32}$/)
    expect(result.outputs['token-id']).not.toBe(sb.current.id)
    expect(result.outputs['access-key-id']).toBe(result.outputs['token-id'])
    expect(result.outputs['token-scope']).toBe(`object-read-write bucket=${sb.bucket}`)
    expect(result.outputs['deploy-run-id']).toMatch(/^\d+$/)
    expect(result.outputs['deploy-run-url']).toContain(
      `/actions/runs/${result.outputs['deploy-run-id']}`
    )
  })

  it('mints a copy with the same policies and condition, and deletes the old token', () => {
    const { sb, result } = scenario
    const newId = result.outputs['token-id']!
    const minted = sb.cloudflare.findById(newId)!
    expect(minted).toBeDefined()
    expect(minted.owner.kind).toBe(owner)
    const old = sb.cloudflare.deletedTokens.find(t => t.id === sb.current.id)!
    expect(old).toBeDefined()
    const strip = (policies: typeof old.policies) =>
      policies.map(p => ({
        effect: p.effect,
        resources: p.resources,
        permission_groups: p.permission_groups.map(g => g.id)
      }))
    expect(strip(minted.policies)).toEqual(strip(old.policies))
    expect(minted.condition).toEqual(old.condition)
    expect(minted.name).toMatch(/^avatars-uploader \(rotated \d{4}-\d{2}-\d{2}\)$/)
    // The create carried no policy id (Cloudflare rejects those with code 1001).
    const create = sb.log.requests({ service: 'cloudflare', method: 'POST' })
    expect(create).toHaveLength(1)
    const body = create[0]!.body as { policies: Array<Record<string, unknown>> }
    for (const policy of body.policies) expect(policy).not.toHaveProperty('id')
  })

  it('every target secret decrypts to the new values', () => {
    const { sb, result } = scenario
    const newId = result.outputs['token-id']!
    const newValue = sb.cloudflare.findById(newId)!.value
    const scope = secretScope(sb)
    expect(sb.github.getSecret(scope, sb.secretNames.token)).toBe(newValue)
    expect(sb.github.getSecret(scope, sb.secretNames.accessKeyId)).toBe(newId)
    expect(sb.github.getSecret(scope, sb.secretNames.secretAccessKey)).toBe(sha256(newValue))
    expect(sb.github.secretWrites).toHaveLength(3)
    expect(sb.liveAccessKeyId()).toBe(newId)
  })

  it('deletes the old token only after the deploy concluded success and the smoke checks passed', () => {
    const { sb, result } = scenario
    const tokens = owner === 'user' ? '/user/tokens' : '/accounts/{account}/tokens'
    const target = owner === 'user' ? 'repo:acme/site' : 'env:acme/site:production'
    // The whole rotation, in order: every mutating request it made.
    expect(mutationList(sb)).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE phase=minting',
      `POST ${tokens} → {new}`,
      'PATCH variable R2_ROTATION_STATE phase=minted',
      'PATCH variable R2_ROTATION_STATE phase=publishing',
      `PUT secret ${target} CLOUDFLARE_API_TOKEN ← {new}`,
      `PUT secret ${target} R2_ACCESS_KEY_ID ← {new}`,
      `PUT secret ${target} R2_SECRET_ACCESS_KEY ← {new}`,
      'PATCH variable R2_ROTATION_STATE phase=published',
      'PATCH variable R2_ROTATION_STATE phase=deploying',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE phase=deploying',
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      `PUT ${tokens}/{previous} status=disabled`,
      `DELETE ${tokens}/{previous}`,
      'PATCH variable R2_ROTATION_STATE phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    // What came before the disable: the deploy run concluded success and shipped the new token,
    // and every smoke check and R2 probe with the new credentials was answered, successfully.
    const newId = result.outputs['token-id']!
    const oldPath = `/tokens/${sb.current.id}`
    const disable = sb.log.requests({ method: 'PUT' }).find(e => e.path.endsWith(oldPath))!
    const runId = Number(result.outputs['deploy-run-id'])
    const concluded = sb.log.events('run.completed').find(e => e.detail.run_id === runId)!
    const deployed = sb.log.events('app.deployed').find(e => e.detail.run_id === runId)!
    expect(concluded.detail.conclusion).toBe('success')
    expect(deployed.detail.access_key_id).toBe(newId)
    const smoke = sb.log
      .requests({ service: 'app' })
      .filter(e => e.headers['x-smoke-check'] === 'r2-token-rotation')
    const beforeDisable = smoke.filter(e => e.seq < disable.seq)
    const probes = sb.log
      .requests({ service: 'r2' })
      .filter(
        e =>
          !e.path.includes(HEALTH_OBJECT_KEY) &&
          String(e.headers.authorization ?? '').includes(`Credential=${newId}/`)
      )
    for (const before of [concluded, deployed, ...beforeDisable, ...probes]) {
      expect(before.seq).toBeLessThan(disable.seq)
    }
    for (const answered of [...beforeDisable, ...probes]) {
      expect([200, 204]).toContain(answered.status)
      expect(answered.answeredAt).toBeLessThanOrEqual(disable.at)
    }
    // The smoke phase ran after the deploy concluded, and so did the probe of the smoke phase.
    expect(beforeDisable.some(e => e.seq > concluded.seq)).toBe(true)
    expect(probes.some(e => e.seq > concluded.seq)).toBe(true)
    // The watch ran its checks while the old token was disabled, before it was deleted.
    const remove = sb.log.requests({ method: 'DELETE' }).find(e => e.path.endsWith(oldPath))!
    expect(smoke.filter(e => e.seq > disable.seq && e.seq < remove.seq).length).toBeGreaterThan(0)
  })

  it('kept the app serving throughout', () => {
    expect(scenario.healthFailures).toEqual([])
    expect(scenario.sb.app.healthChecks.length).toBeGreaterThan(0)
  })

  it('sent and received only what the official OpenAPI descriptions allow', () => {
    expect(scenario.sb.log.violations).toEqual([])
  })

  it('never printed a value: stdout, stderr, outputs and summary are clean', () => {
    expectNoLeaks(scenario)
    // Every value was masked before its first use.
    const masks = scenario.result.stdout
      .split('\n')
      .filter(l => l.startsWith('::add-mask::'))
      .map(l => l.slice(12))
    const newValue = scenario.sb.cloudflare.findById(scenario.result.outputs['token-id']!)!.value
    expect(masks).toEqual(
      expect.arrayContaining([
        newValue,
        sha256(newValue),
        scenario.sb.managementToken,
        scenario.sb.githubToken,
        // The smoke-headers values (they may be Access service-token secrets).
        'r2-token-rotation'
      ])
    )
  })

  it('writes a job summary with phases, ids, targets and the run link', () => {
    const { summary, outputs } = scenario.result
    for (const text of ['preflight', 'mint', 'verify', 'publish', 'deploy', 'smoke', 'revoke']) {
      expect(summary).toContain(text)
    }
    expect(summary).toContain(outputs['token-id']!)
    expect(summary).toContain(outputs['previous-token-id']!)
    expect(summary).toContain(outputs['deploy-run-url']!)
  })
})

describe('natural failures', () => {
  it('a failed deploy run rolls back: previous values restored, redeployed, smoke-checked, then the new token deleted', async () => {
    const scenario = await rotateIn({}, {}, sb => sb.github.queueRun({ conclusion: 'failure' }))
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(1)
      expect(result.outputs.result).toBe('rolled-back')
      expect(result.stdout).toMatch(/::error::.*concluded failure/)
      const newId = sb.log.events('token.created')[0]!.detail.id as string
      // The old token is alive and back in every secret; the new one is gone.
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(sb.cloudflare.findById(newId)).toBeUndefined()
      const scope = secretScope(sb)
      expect(sb.github.getSecret(scope, sb.secretNames.token)).toBe(sb.current.value)
      expect(sb.github.getSecret(scope, sb.secretNames.accessKeyId)).toBe(sb.current.id)
      expect(sb.github.getSecret(scope, sb.secretNames.secretAccessKey)).toBe(
        sb.current.secretAccessKey
      )
      expect(sb.liveAccessKeyId()).toBe(sb.current.id)
      // The new token was deleted only after the rollback deploy concluded success and the smoke checks passed.
      const runs = sb.log.events('run.completed')
      expect(runs.map(r => r.detail.conclusion)).toEqual(['failure', 'success'])
      const deleteNew = indexOf(
        sb,
        e => isRequest(e) && e.method === 'DELETE' && e.path.endsWith(`/tokens/${newId}`)
      )
      const rollbackDeploy = sb.log.entries.indexOf(runs[1]!)
      const lastSmoke = lastIndexOf(
        sb,
        e =>
          isRequest(e) && e.service === 'app' && e.headers['x-smoke-check'] === 'r2-token-rotation'
      )
      expect(deleteNew).toBeGreaterThan(rollbackDeploy)
      expect(deleteNew).toBeGreaterThan(lastSmoke)
      expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toHaveLength(1)
      expect(journalOf(sb)).toMatchObject({
        phase: 'rolled-back',
        previous_token_id: sb.current.id,
        pending_token_id: newId
      })
      expect(scenario.healthFailures).toEqual([])
      expect(sb.log.violations).toEqual([])
      expectNoLeaks(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('on-failure: keep-both leaves both tokens valid and the journal pending', async () => {
    const scenario = await rotateIn({}, { 'on-failure': 'keep-both' }, sb =>
      sb.github.queueRun({ conclusion: 'cancelled' })
    )
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(1)
      expect(result.outputs.result).toBe('failed')
      expect(result.stdout).toMatch(/::error::.*concluded cancelled/)
      expect(result.stdout).toMatch(/both tokens are valid/)
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(sb.cloudflare.findById(result.outputs['token-id']!)?.status).toBe('active')
      expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toEqual([])
      expect(journalOf(sb)).toMatchObject({
        phase: 'pending',
        pending_token_id: result.outputs['token-id']
      })
      expect(scenario.healthFailures).toEqual([])
      expectNoLeaks(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('a failure before publish deletes the new token and changes nothing else', async () => {
    const scenario = await rotateIn({}, {}, sb => {
      // Every read of a token minted from now on fails (more often than the SDK retries a GET), so the
      // re-read after minting cannot confirm its policies.
      sb.cloudflare.service.inject({
        method: 'GET',
        path: new RegExp(
          `^/client/v4/user/tokens/(?!verify$|permission_groups$|${[...sb.cloudflare.tokens.keys()].join('$|')}$)[0-9a-f]{32}$`
        ),
        status: 500,
        times: 50
      })
    })
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(1)
      expect(result.outputs.result).toBe('failed')
      const created = sb.log.requests({ service: 'cloudflare', method: 'POST' })
      expect(created).toHaveLength(1)
      const mutations = sb.log
        .mutations()
        .filter(e => e.service === 'cloudflare')
        .map(e => `${e.method} ${e.path.replace(/[0-9a-f]{32}/, 'ID')}`)
      expect(mutations).toEqual(['POST /client/v4/user/tokens', 'DELETE /client/v4/user/tokens/ID'])
      expect(sb.cloudflare.deletedTokens.map(t => t.id)).not.toContain(sb.current.id)
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(sb.cloudflare.tokens.size).toBe(2) // management + current: the new one is gone
      expect(sb.github.secretWrites).toEqual([])
      expect(result.outputs['token-id']).toBeUndefined()
      expect(scenario.healthFailures).toEqual([])
      expectNoLeaks(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('a smoke check that keeps failing revokes nothing, even after the rollback fails too', async () => {
    const scenario = await rotateIn({}, { 'smoke-timeout': '3s' }, sb => {
      // Healthy before the rotation (preflight checks it); from the deploy on, the app keeps
      // answering 503 on the smoke URL the caller configured.
      sb.github.service.onAnswered = entry => {
        if (entry.method === 'POST' && entry.path.endsWith('/dispatches')) {
          sb.app.service.inject({ path: /^\/healthz$/, status: 503, times: 1_000_000 })
        }
      }
    })
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(1)
      expect(result.outputs.result).toBe('failed')
      expect(result.stdout).toMatch(/::error::.*smoke check/)
      expect(result.stdout).toMatch(/rollback failed too/)
      expect(journalOf(sb)).toMatchObject({ phase: 'pending' })
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toEqual([])
      expectNoLeaks(scenario)
    } finally {
      await sb.stop()
    }
  }, 90_000)

  it('a bad input fails with one ::error:: line naming it, and mutates nothing', async () => {
    const sb = await startSandbox()
    try {
      const result = await runAction(sb, sandboxInputs(sb, { secrets: 'GITHUB_TOKEN_COPY=token' }))
      expect(result.exitCode).toBe(1)
      const errors = result.stdout.split('\n').filter(l => l.startsWith('::error'))
      expect(errors).toHaveLength(1)
      expect(errors[0]).toContain("'secrets'")
      expect(result.outputs.result).toBe('failed')
      expect(sb.log.mutations()).toEqual([])
      expect(sb.log.requests()).toEqual([])
      expect(findLeaks(result, sb.secretValues())).toEqual([])
    } finally {
      await sb.stop()
    }
  })
})
