/**
 * An Access service token's client secret rotated end to end (`credential:
 * access-service-token`) against the sandbox: the service token on the account, its pair in the
 * repository secrets, the Access-protected app, and its deployed client, which a watcher polls
 * during every run. Each scenario asserts the ordered mutating requests, the secrets as GitHub
 * decrypts them, the Access app's health history and the token's grace, and scans every output
 * and the journal for values.
 */
import type { Sandbox } from '../../sandbox/index.js'
import { PERMISSION_GROUPS } from '../../sandbox/cloudflare.js'
import { ACCESS_GROUPS } from '../../sandbox/access.js'
import type { ActionResult } from '../../sandbox/runner.js'
import { startNamed } from './scenario.js'
import {
  accessFailures,
  accessJournal,
  accessMutations,
  accessSecrets,
  admits,
  expectNoAccessLeaks,
  issuedSecrets,
  runServiceToken,
  startServiceTokenWorld
} from './service-token-world.js'

interface Run {
  sb: Sandbox
  results: ActionResult[]
  /** The deployed client's failed health checks during the runs. */
  clientFailures: Array<{ at: number; status: number }>
  /** Mutations of each run, in order. */
  mutations: string[][]
}

/** Runs `steps` one after the other in a fresh world, watching the deployed client throughout. */
async function scenario(
  prepare: (sb: Sandbox) => void,
  steps: Array<{
    inputs?: Record<string, string> | (() => Record<string, string>)
    before?: (sb: Sandbox) => void
  }>
): Promise<Run> {
  const sb = await startServiceTokenWorld()
  prepare(sb)
  const watch = sb.watchAccessClient(50)
  const results: ActionResult[] = []
  const mutations: string[][] = []
  for (const step of steps) {
    step.before?.(sb)
    const seq = sb.log.requests().at(-1)?.seq ?? 0
    const inputs = typeof step.inputs === 'function' ? step.inputs() : (step.inputs ?? {})
    results.push(await runServiceToken(sb, inputs))
    mutations.push(accessMutations(sb, seq))
  }
  const clientFailures = await watch.stop()
  return { sb, results, clientFailures, mutations }
}

/** Inputs refused before any request, each naming the input. */
const BAD: Array<[string, Record<string, string>]> = [
  ['service-token-id', { 'service-token-id': 'deploy-bot' }],
  ['revoke', { revoke: 'disable' }],
  ['current-token', { 'current-token': 'cfut_notarealtoken0123456789' }],
  ['secrets', { secrets: 'R2_TOKEN=token' }],
  ['credential', { credential: 'service-token' }],
  ['current-client-secret', { 'current-client-secret': '' }]
]

/** A management token that may read service tokens but not rotate them. */
let readOnly = ''
function grantReadOnly(sb: Sandbox): void {
  const id = PERMISSION_GROUPS.find(g => g.name === ACCESS_GROUPS.read)!.id
  readOnly = sb.cloudflare.addToken({
    name: 'access-reader',
    policies: [
      {
        effect: 'allow',
        permission_groups: [{ id }],
        resources: { [`com.cloudflare.api.account.${sb.accountId}`]: '*' }
      }
    ]
  }).value
}

const SCENARIOS = {
  happy: () => scenario(() => undefined, [{}]),
  keep: () => scenario(() => undefined, [{ inputs: { revoke: 'keep' } }]),
  readOnly: () =>
    scenario(grantReadOnly, [{ inputs: () => ({ 'cloudflare-api-token': readOnly }) }]),
  bad: () =>
    scenario(
      () => undefined,
      BAD.map(([, inputs]) => ({ inputs }))
    ),
  dryRun: () => scenario(() => undefined, [{ inputs: { 'dry-run': 'true' } }])
}
type ScenarioName = keyof typeof SCENARIOS
/** Every scenario starts now, two at a time; a describe awaits its own by name. */
const run = startNamed<Run>(SCENARIOS, 2) as (name: ScenarioName) => Promise<Run>
afterAll(async () => {
  const runs = await Promise.all(
    (Object.keys(SCENARIOS) as ScenarioName[]).map(name => run(name).catch(() => undefined))
  )
  await Promise.all(runs.map(r => r?.sb.stop()))
})

describe('a service token rotation', () => {
  let r: Run
  beforeAll(async () => {
    r = await run('happy')
  }, 120_000)

  it('rotates with a grace, publishes, deploys, checks, closes the grace and watches', () => {
    const [result] = r.results
    expect(result!.stderr).toBe('')
    expect(result!.outputs.result).toBe('rotated')
    expect(result!.exitCode).toBe(0)
    expect(result!.outputs['token-id']).toBe(r.sb.serviceToken!.id)
    expect(r.mutations[0]).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_ACCESS phase=rotating',
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open',
      'PUT secret repo:acme/site ACCESS_CLIENT_ID ← {client-id}',
      'PUT secret repo:acme/site ACCESS_CLIENT_SECRET ← {new}',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=published',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=smoke',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=closing',
      'PUT /accounts/{account}/access/service_tokens/{token} grace=closed',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
  })

  it('leaves the new secret in the secrets and the deployed client, the old one refused', () => {
    const { sb } = r
    const [old, next] = issuedSecrets(sb)
    expect(accessSecrets(sb)).toEqual({ clientId: sb.serviceToken!.clientId, clientSecret: next })
    expect(sb.accessClient!.credentials()?.clientSecret).toBe(next)
    expect(sb.cloudflare.access.serviceToken(sb.serviceToken!.id)?.previousValid).toBe(false)
    expect(admits(sb, old)).toBe(false)
    expect(admits(sb, next)).toBe(true)
  })

  it('never failed a request at the Access-protected app, nor at the deployed client', () => {
    expect(accessFailures(r.sb)).toEqual([])
    expect(r.clientFailures).toEqual([])
    // The client was watched throughout: its calls reached the protected app many times.
    expect(r.sb.accessApp!.checks.length).toBeGreaterThan(20)
  })

  it('says in the job summary what was rotated and that the previous secret is closed', () => {
    const summary = r.results[0]!.summary
    expect(summary).toContain('Access service token rotation: Token rotated')
    expect(summary).toContain('closed (its grace ended once the checks passed)')
    expect(summary).toContain('with the previous secret closed')
  })

  it('journals done with the grace and the rotation time, never a value', () => {
    expect(accessJournal(r.sb)).toMatchObject({
      phase: 'done',
      kind: 'access-service-token',
      service_token_id: r.sb.serviceToken!.id,
      secrets_hold: 'next',
      grace_until: expect.any(String),
      rotated_at: expect.any(String)
    })
    expectNoAccessLeaks(r.sb, r.results)
    expect(r.sb.log.violations).toEqual([])
  })
})

describe('a dry run', () => {
  let r: Run
  beforeAll(async () => {
    r = await run('dryRun')
  }, 120_000)

  it('checks with the current secret, prints the plan with the grace, and changes nothing', () => {
    const [result] = r.results
    expect(result!.stderr).toBe('')
    expect(result!.outputs.result).toBe('dry-run')
    expect(r.mutations[0]).toEqual([])
    expect(result!.stdout).toContain('plan: rotate the client secret of service token')
    expect(result!.stdout).toContain('valid for 33 min more')
    expect(issuedSecrets(r.sb)).toHaveLength(1)
    expectNoAccessLeaks(r.sb, r.results)
  })
})

describe('bad input', () => {
  let r: Run
  beforeAll(async () => {
    r = await run('bad')
  }, 120_000)

  it.each(BAD.map(([name], i) => [name, i] as const))(
    'refuses %s, naming it, with no mutating request',
    (name, i) => {
      const result = r.results[i]!
      expect(result.exitCode).not.toBe(0)
      expect(result.outputs.result).toBe('failed')
      expect(result.stdout).toContain(`::error::Input '${name}'`)
      expect(r.mutations[i]).toEqual([])
    }
  )

  it('leaks nothing and leaves the token as it was', () => {
    expect(issuedSecrets(r.sb)).toHaveLength(1)
    expectNoAccessLeaks(r.sb, r.results)
  })
})

describe('a management token that may read service tokens but not rotate them', () => {
  let r: Run
  beforeAll(async () => {
    r = await run('readOnly')
  }, 120_000)

  it('fails at the rotate with nothing changed, naming the permission it lacks', () => {
    const [result] = r.results
    expect(result!.outputs.result).toBe('failed')
    expect(r.mutations[0]).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_ACCESS phase=rotating',
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open → 403',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rolled-back',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(result!.stdout).toContain('Access: Service Tokens Write')
    expect(issuedSecrets(r.sb)).toHaveLength(1)
    expect(r.clientFailures).toEqual([])
    expectNoAccessLeaks(r.sb, r.results)
  })
})

describe('revoke: keep', () => {
  let r: Run
  beforeAll(async () => {
    r = await run('keep')
  }, 120_000)

  it('leaves the previous secret valid until the grace ends: no close, no watch', () => {
    const [result] = r.results
    expect(result!.outputs.result).toBe('rotated')
    expect(r.mutations[0]!.filter(m => m.includes('service_tokens'))).toEqual([
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open'
    ])
    const [old, next] = issuedSecrets(r.sb)
    expect(accessSecrets(r.sb).clientSecret).toBe(next)
    expect(admits(r.sb, old)).toBe(true)
    const state = r.sb.cloudflare.access.serviceToken(r.sb.serviceToken!.id)!
    expect(state.previousValid).toBe(true)
    expect(accessJournal(r.sb)).toMatchObject({
      phase: 'done',
      grace_until: state.previousExpiresAt
    })
    expect(result!.stdout).toContain(
      `stays valid until ${state.previousExpiresAt} (not closed early)`
    )
    expect(result!.summary).toContain(`valid until ${state.previousExpiresAt}`)
    expect(r.clientFailures).toEqual([])
    expectNoAccessLeaks(r.sb, r.results)
  })
})
