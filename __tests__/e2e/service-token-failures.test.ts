/**
 * A service token rotation that fails, and the next runs: a failed deploy rolled back (the
 * secrets hold the previous secret again, the grace open with a documented end, the journal
 * pending), the next run's refusal, and the forced rotation after it with its measured outage;
 * keep-both, finished forward by the next run without a new rotate; and a stale deploy caught by
 * the watch after the close, the grace re-opened at once.
 */
import type { Sandbox } from '../../sandbox/index.js'
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

interface Step {
  inputs?: Record<string, string>
  before?: (sb: Sandbox) => void
}

interface StepResult {
  result: ActionResult
  mutations: string[]
  /** The deployed client's failed health checks during this step. */
  clientFailures: Array<{ at: number; status: number }>
  /** Refusals at the Access app during this step. */
  accessFailures: Array<{ at: number; reason?: string }>
  journal: Record<string, unknown>
  secrets: { clientId?: string; clientSecret?: string }
  previousValid?: boolean
  previousExpiresAt?: string
}

interface Run {
  sb: Sandbox
  steps: StepResult[]
}

async function scenario(steps: Step[]): Promise<Run> {
  const sb = await startServiceTokenWorld()
  const out: StepResult[] = []
  for (const step of steps) {
    step.before?.(sb)
    const seq = sb.log.requests().at(-1)?.seq ?? 0
    const refusedBefore = sb.accessApp!.failures().length
    const watch = sb.watchAccessClient(50)
    const result = await runServiceToken(sb, step.inputs ?? {})
    const clientFailures = await watch.stop()
    const state = sb.cloudflare.access.serviceToken(sb.serviceToken!.id)
    out.push({
      result,
      mutations: accessMutations(sb, seq),
      clientFailures,
      accessFailures: accessFailures(sb).slice(refusedBefore),
      journal: accessJournal(sb),
      secrets: accessSecrets(sb),
      ...(state ? { previousValid: state.previousValid } : {}),
      ...(state?.previousExpiresAt ? { previousExpiresAt: state.previousExpiresAt } : {})
    })
  }
  return { sb, steps: out }
}

const SCENARIOS = {
  rollback: () =>
    scenario([
      { before: sb => sb.github.queueRun({ conclusion: 'failure' }) },
      {},
      { inputs: { force: 'true' } }
    ]),
  keepBoth: () =>
    scenario([
      {
        inputs: { 'on-failure': 'keep-both' },
        before: sb => sb.github.queueRun({ conclusion: 'failure' })
      },
      {}
    ]),
  stale: () => scenario([{ before: sb => sb.github.queueRun({ rollout: 'stale' }) }]),
  lostAnswer: () =>
    scenario([
      {
        before: sb =>
          sb.cloudflare.service.inject({
            method: 'POST',
            path: /\/rotate$/,
            dropAfterHandling: true
          })
      },
      {}
    ]),
  notRotated: () =>
    scenario([
      {
        before: sb =>
          sb.cloudflare.service.inject({ method: 'POST', path: /\/rotate$/, drop: true })
      }
    ])
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

/**
 * The outage of the last (forced) rotation: from the rotate request (the previous secret, which the
 * deployed client uses, ends there) to the deploy that gave the client the newest secret, in
 * simulated seconds; and the requests the Access app refused meanwhile.
 */
function forcedOutage(sb: Sandbox): { refused: number; seconds: number } {
  const rotate = sb.log
    .requests({ service: 'cloudflare', method: 'POST' })
    .filter(e => e.path.endsWith('/rotate'))
    .at(-1)!
  const deployed = sb.log
    .events('access-client.deployed')
    .find(e => e.seq > rotate.seq && e.detail.stale === undefined)!
  const refused = sb
    .accessApp!.failures()
    .filter(f => f.at >= rotate.at && f.at <= deployed.at + 100)
  return {
    refused: refused.length,
    seconds: Math.round((deployed.at - rotate.at) / sb.timeScale / 100) / 10
  }
}

/** The Access app's refusals during each step's run, as a list of reasons. */
const reasons = (step: StepResult): string[] => step.accessFailures.map(f => f.reason ?? '')

describe('a failed deploy is rolled back; the next run refuses; a forced run rotates again', () => {
  let r: Run
  let first: StepResult, refused: StepResult, forced: StepResult
  beforeAll(async () => {
    r = await run('rollback')
    ;[first, refused, forced] = r.steps as [StepResult, StepResult, StepResult]
  }, 180_000)

  it('writes the previous secret back, redeploys, checks, and journals pending', () => {
    expect(first.result.outputs.result).toBe('rolled-back')
    expect(first.result.exitCode).not.toBe(0)
    expect(first.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_ACCESS phase=rotating',
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open',
      'PUT secret repo:acme/site ACCESS_CLIENT_ID ← {client-id}',
      'PUT secret repo:acme/site ACCESS_CLIENT_SECRET ← {new}',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=published',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rolling-back',
      'PUT secret repo:acme/site ACCESS_CLIENT_ID ← {client-id}',
      'PUT secret repo:acme/site ACCESS_CLIENT_SECRET ← {old}',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rolling-back',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=pending',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    const [old] = issuedSecrets(r.sb)
    expect(first.secrets.clientSecret).toBe(old)
    expect(first.journal).toMatchObject({ phase: 'pending', secrets_hold: 'previous' })
    // The grace stays open until its documented end, which the error names.
    expect(first.previousValid).toBe(true)
    expect(first.journal.grace_until).toBe(first.previousExpiresAt)
    expect(first.result.stdout).toContain(
      `The previous secret stays valid until ${first.previousExpiresAt}`
    )
    expect(first.result.summary).toContain(`valid until ${first.previousExpiresAt}`)
    expect(first.clientFailures).toEqual([])
    expect(reasons(first)).toEqual([])
  })

  it('the next run without force refuses, naming the grace end and force, and changes nothing', () => {
    expect(refused.result.outputs.result).toBe('failed')
    expect(refused.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(refused.result.stdout).toContain(`stays valid until ${first.previousExpiresAt}`)
    expect(refused.result.stdout).toContain('Run again with force: true')
    expect(issuedSecrets(r.sb).length).toBeGreaterThanOrEqual(2)
    expect(refused.clientFailures).toEqual([])
  })

  it('with force it rotates again: the clients of the previous secret are refused until the deploy', () => {
    expect(forced.result.outputs.result).toBe('rotated')
    expect(forced.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rotating',
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open',
      'PUT secret repo:acme/site ACCESS_CLIENT_ID ← {client-id}',
      'PUT secret repo:acme/site ACCESS_CLIENT_SECRET ← {new#2}',
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
    const [old, lost, newest] = issuedSecrets(r.sb)
    expect(forced.secrets.clientSecret).toBe(newest)
    expect(r.sb.accessClient!.credentials()?.clientSecret).toBe(newest)
    expect([old, lost].map(s => admits(r.sb, s))).toEqual([false, false])
    expect(forced.result.stdout).toContain('stops at this rotate')
    // The measured outage: every refusal is the old secret, after the rotate, before the deploy.
    expect(new Set(reasons(forced))).toEqual(new Set(['wrong secret']))
    expect(forced.clientFailures.length).toBeGreaterThan(0)
    const measured = forcedOutage(r.sb)
    expect(measured.refused).toBe(forced.accessFailures.length)
    // The window is the deploy's, bounded by deploy-timeout (10m here). The sandbox's run takes
    // 0.55 s of simulated time; the rest is real HTTP round trips (the secret writes, the
    // dispatch), which the 50× time scale stretches: the figure over-estimates.
    expect(measured.seconds).toBeGreaterThan(0)
    expect(measured.seconds).toBeLessThan(600)
    console.log(
      `forced re-rotation: ${measured.refused} refused request(s) at the Access app over ${measured.seconds} simulated s (client polled every ${0.05 / r.sb.timeScale} simulated s)`
    )
    expectNoAccessLeaks(
      r.sb,
      r.steps.map(s => s.result)
    )
  })
})

describe('keep-both: the next run finishes forward without a new rotate', () => {
  let r: Run
  let first: StepResult, next: StepResult
  beforeAll(async () => {
    r = await run('keepBoth')
    ;[first, next] = r.steps as [StepResult, StepResult]
  }, 180_000)

  it('leaves the new secret in the secrets and both secrets valid, journal pending', () => {
    expect(first.result.outputs.result).toBe('failed')
    expect(first.mutations.slice(-3)).toEqual([
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=pending',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    const [old, fresh] = issuedSecrets(r.sb)
    expect(first.secrets.clientSecret).toBe(fresh)
    expect(first.journal).toMatchObject({ phase: 'pending', secrets_hold: 'next' })
    expect(first.previousValid).toBe(true)
    expect(first.result.stdout).toContain(
      `both client secrets are valid until ${first.previousExpiresAt}`
    )
    // The failed deploy shipped nothing: the client still runs on the old secret, which works.
    // (The old secret is closed by the next run, below.)
    expect(old).not.toBe(fresh)
  })

  it('the next run redeploys, checks, closes and watches, with no rotate and no failure', () => {
    expect(next.result.outputs.result).toBe('rotated')
    expect(next.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=deploying',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=smoke',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=closing',
      'PUT /accounts/{account}/access/service_tokens/{token} grace=closed',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(issuedSecrets(r.sb)).toHaveLength(2)
    expect(r.sb.accessClient!.credentials()?.clientSecret).toBe(issuedSecrets(r.sb)[1])
    expect(next.previousValid).toBe(false)
    expect([...first.clientFailures, ...next.clientFailures]).toEqual([])
    expect([...reasons(first), ...reasons(next)]).toEqual([])
    expectNoAccessLeaks(
      r.sb,
      r.steps.map(s => s.result)
    )
  })
})

describe('a stale deploy: the watch after the close fails, the grace is re-opened at once', () => {
  let r: Run
  let step: StepResult
  beforeAll(async () => {
    r = await run('stale')
    ;[step] = r.steps as [StepResult]
  }, 180_000)

  it('re-opens the grace, then rolls back, and reports the bounded failing window', () => {
    expect(step.result.outputs.result).toBe('rolled-back')
    expect(step.mutations).toEqual([
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
      'PUT /accounts/{account}/access/service_tokens/{token} grace=open',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=published',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rolling-back',
      'PUT secret repo:acme/site ACCESS_CLIENT_ID ← {client-id}',
      'PUT secret repo:acme/site ACCESS_CLIENT_SECRET ← {old}',
      'POST dispatch',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rolling-back',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=pending',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    const [old] = issuedSecrets(r.sb)
    expect(step.secrets.clientSecret).toBe(old)
    expect(r.sb.accessClient!.credentials()?.clientSecret).toBe(old)
    expect(admits(r.sb, old)).toBe(true)
    expect(step.previousValid).toBe(true)
    expect(step.journal).toMatchObject({ phase: 'pending', secrets_hold: 'previous' })
    expect(step.result.stdout).toContain('its grace was re-opened at once')
    expect(step.result.stdout).toMatch(
      /the app failed for at most \d+ s, from the close to the re-open/
    )
    // Only the stale client's calls between the close and the re-open were refused.
    expect(new Set(reasons(step))).toEqual(new Set(['previous secret expired']))
    expect(step.accessFailures.length).toBeLessThanOrEqual(3)
    expectNoAccessLeaks(
      r.sb,
      r.steps.map(s => s.result)
    )
  })
})

describe('the rotate answer is lost (the connection drops after Cloudflare rotated)', () => {
  let r: Run
  let first: StepResult, next: StepResult
  beforeAll(async () => {
    r = await run('lostAnswer')
    ;[first, next] = r.steps as [StepResult, StepResult]
  }, 180_000)

  it('reads the token, sees it rotated, sends no second rotate, and keeps the old secret working', () => {
    expect(first.result.outputs.result).toBe('failed')
    expect(first.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_ACCESS phase=rotating',
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open, answer lost',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=pending',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    const [old] = issuedSecrets(r.sb)
    expect(first.secrets.clientSecret).toBe(old)
    expect(admits(r.sb, old)).toBe(true)
    expect(first.journal).toMatchObject({
      phase: 'pending',
      lost_secret: true,
      secrets_hold: 'previous'
    })
    expect(first.result.stdout).toContain('its new client secret is lost')
    expect(first.result.stdout).toContain(`valid until ${first.previousExpiresAt}`)
    expect([...first.clientFailures, ...next.clientFailures]).toEqual([])
  })

  it('the next run refuses without force and changes nothing', () => {
    expect(next.result.outputs.result).toBe('failed')
    expect(next.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(next.result.stdout).toContain('its new client secret was lost')
    expectNoAccessLeaks(
      r.sb,
      r.steps.map(s => s.result)
    )
  })
})

describe('the rotate gets no answer and did not happen', () => {
  let r: Run
  beforeAll(async () => {
    r = await run('notRotated')
  }, 180_000)

  it('reads the token, sees it unchanged, journals rolled-back, and says nothing changed', () => {
    const [step] = r.steps as [StepResult]
    expect(step.result.outputs.result).toBe('failed')
    expect(step.mutations).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_ACCESS phase=rotating',
      'POST /accounts/{account}/access/service_tokens/{token}/rotate grace=open → no answer',
      'PATCH variable R2_ROTATION_STATE_ACCESS phase=rolled-back',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(issuedSecrets(r.sb)).toHaveLength(1)
    expect(step.result.stdout).toContain('the token shows it did not happen')
    expectNoAccessLeaks(
      r.sb,
      r.steps.map(s => s.result)
    )
  })
})
