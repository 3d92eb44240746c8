/**
 * Faults, end to end. A deploy run that fails, is cancelled, times out or never starts, and smoke
 * checks that fail after publish: the rotation rolls back (previous values restored, redeployed,
 * smoke-checked, then the new token deleted) or, when it cannot finish that, keeps both tokens
 * valid and says so. Transient faults (5xx, 429 with `retry-after`, answers lost after the server
 * acted) on every kind of request: the rotation completes with exactly one surviving new token and
 * exactly one run per deploy. The app never goes down and no value ever shows.
 */
import { startSandbox, type Sandbox } from '../../sandbox/index.js'
import type { ServiceName } from '../../sandbox/log.js'
import type { Fault } from '../../sandbox/service.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  dispatches,
  expectNoLeaks,
  expectOneLiveToken,
  JOURNAL,
  journalOf,
  lineage,
  nextRunInputs,
  secretsNow,
  startAll,
  HEALTH_POLL_MS
} from './scenario.js'

interface Outcome {
  sb: Sandbox
  result: ActionResult
  healthFailures: Array<{ at: number; status: number }>
  /** Runs made by `then`, in order. */
  later: ActionResult[]
  /** The world right after the first run (before `then`). */
  afterFirst: {
    alive: string[]
    secrets: ReturnType<typeof secretsNow>
    live: string | undefined
    journal: Record<string, unknown>
  }
}

interface Setup {
  /** Before the run: queue run behaviours, inject faults. */
  prepare?: (sb: Sandbox) => void
  overrides?: (sb: Sandbox) => Record<string, string>
  /** After the run, before the sandbox stops: further runs (returned in `later`). */
  then?: (sb: Sandbox) => Promise<ActionResult[]>
}

async function rotateWith(setup: Setup): Promise<Outcome> {
  const sb = await startSandbox()
  try {
    setup.prepare?.(sb)
    const watch = sb.watchHealth(HEALTH_POLL_MS)
    const result = await runAction(sb, sandboxInputs(sb, setup.overrides?.(sb) ?? {}))
    const afterFirst = {
      alive: lineage(sb).map(t => t.id),
      secrets: secretsNow(sb),
      live: sb.liveAccessKeyId(),
      journal: journalOf(sb)
    }
    const later = (await setup.then?.(sb)) ?? []
    const healthFailures = await watch.stop()
    return { sb, result, healthFailures, later, afterFirst }
  } finally {
    // The simulators' state stays readable after they stop.
    await sb.stop()
  }
}

/** The token minted by the run (the first `token.created` event). */
function mintedIds(sb: Sandbox): string[] {
  return sb.log.events('token.created').map(e => e.detail.id as string)
}

/** Conclusions of the deploy runs, in the order they concluded. */
function conclusions(sb: Sandbox): unknown[] {
  return sb.log.events('run.completed').map(e => e.detail.conclusion)
}

function expectPreviousRestored(sb: Sandbox): void {
  expect(secretsNow(sb)).toEqual({
    token: sb.current.value,
    accessKeyId: sb.current.id,
    secretAccessKey: sb.current.secretAccessKey
  })
  expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
  expect(sb.liveAccessKeyId()).toBe(sb.current.id)
}

function faultOn(service: ServiceName, fault: Fault): (sb: Sandbox) => void {
  return sb => {
    const target = { cloudflare: sb.cloudflare, github: sb.github, r2: sb.r2, app: sb.app }[service]
    target.service.inject(fault)
  }
}

/** How many requests a fault of the scenario answered (proves the scenario tested something). */
function faulted(sb: Sandbox): number {
  return sb.log.requests().filter(e => e.faulted).length
}

// ------------------------------------------------------------------ deploy and smoke failures

/** Token deletes made by the run that found the timed-out deploy run still queued. */
let deletesWhileQueued = -1

const failures = {
  failure: { prepare: (sb: Sandbox) => sb.github.queueRun({ conclusion: 'failure' }) },
  cancelled: { prepare: (sb: Sandbox) => sb.github.queueRun({ conclusion: 'cancelled' }) },
  timed_out: { prepare: (sb: Sandbox) => sb.github.queueRun({ conclusion: 'timed_out' }) },
  neverStarts: {
    prepare: (sb: Sandbox) => sb.github.queueRun({ neverStarts: true }),
    overrides: () => ({ 'deploy-timeout': '3s' }),
    // The next scheduled run while that run is still queued; then someone cancels it, and the
    // run after that finishes the job.
    then: async (sb: Sandbox) => {
      const deletesBefore = sb.log.requests({ service: 'cloudflare', method: 'DELETE' }).length
      const next = await runAction(sb, nextRunInputs(sb))
      deletesWhileQueued =
        sb.log.requests({ service: 'cloudflare', method: 'DELETE' }).length - deletesBefore
      const queued = [...sb.github.runs.values()].filter(r => r.status === 'queued')
      for (const run of queued) {
        await fetch(`${sb.githubApiUrl}/repos/${sb.repository}/actions/runs/${run.id}/cancel`, {
          method: 'POST',
          headers: { authorization: `Bearer ${sb.githubToken}` }
        })
      }
      return [next, await runAction(sb, nextRunInputs(sb))]
    }
  },
  smokeFailsOnce: {
    // The app's `/` fails from the deploy of the new token until the rollback begins (it was
    // healthy in preflight); `/healthz` (watched) stays fine.
    prepare: (sb: Sandbox) => {
      sb.github.service.onAnswered = entry => {
        const body = entry.body as { value?: string } | undefined
        if (entry.method === 'POST' && entry.path.endsWith('/dispatches')) {
          if (
            sb.log.requests({ method: 'POST' }).filter(e => e.path.endsWith('/dispatches'))
              .length === 1
          ) {
            sb.app.service.inject({ method: 'GET', path: /^\/$/, status: 503, times: 1_000_000 })
          }
        }
        if (entry.method === 'PATCH' && body?.value?.includes('"phase":"rolling-back"')) {
          sb.app.service.faults.length = 0
        }
      }
    },
    overrides: (sb: Sandbox) => ({
      'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=ok\n${sb.appUrl}/ expect=200`,
      'smoke-timeout': '2s'
    })
  },
  smokeAlwaysFails: {
    // Healthy in preflight; from the deploy on, `/` keeps failing.
    prepare: (sb: Sandbox) => {
      sb.github.service.onAnswered = entry => {
        if (entry.method === 'POST' && entry.path.endsWith('/dispatches')) {
          sb.app.service.inject({ method: 'GET', path: /^\/$/, status: 503, times: 1_000_000 })
        }
      }
    },
    overrides: (sb: Sandbox) => ({
      'smoke-urls': `${sb.appUrl}/ expect=200`,
      'smoke-timeout': '2s'
    })
  },
  anotherRunInProgress: {
    // The journal names a rotation whose run is still queued (another run of the caller workflow).
    prepare: (sb: Sandbox) => {
      const other = sb.github.dispatchAs('scheduler', sb.repository, 'deploy.yml', {
        behavior: { neverStarts: true }
      })
      sb.github.setVariable(
        sb.repository,
        JOURNAL,
        JSON.stringify({
          version: 1,
          phase: 'deploying',
          run_id: String(other.id),
          previous_token_id: sb.current.id,
          pending_token_id: 'f'.repeat(32),
          disabled_token_ids: [],
          deploy_run_ids: [],
          updated_at: new Date().toISOString()
        })
      )
    }
  }
} satisfies Record<string, Setup>

// ------------------------------------------------------------------ transient faults

interface Transient {
  name: string
  service: ServiceName
  method: string
  path: RegExp
  overrides?: (sb: Sandbox) => Record<string, string>
}

const ID = '[0-9a-f]{32}'
const TRANSIENT: Transient[] = [
  {
    name: 'Cloudflare token GET',
    service: 'cloudflare',
    method: 'GET',
    path: new RegExp(`^/client/v4/user/tokens/${ID}$`)
  },
  {
    name: 'Cloudflare token DELETE (revoke)',
    service: 'cloudflare',
    method: 'DELETE',
    path: new RegExp(`^/client/v4/user/tokens/${ID}$`)
  },
  {
    name: 'Cloudflare token create',
    service: 'cloudflare',
    method: 'POST',
    path: /^\/client\/v4\/user\/tokens$/
  },
  {
    name: 'GitHub public-key GET',
    service: 'github',
    method: 'GET',
    path: /\/actions\/secrets\/public-key$/
  },
  {
    name: 'GitHub secret PUT',
    service: 'github',
    method: 'PUT',
    path: /\/actions\/secrets\/R2_ACCESS_KEY_ID$/
  },
  {
    name: 'GitHub variable POST (journal create)',
    service: 'github',
    method: 'POST',
    path: /\/actions\/variables$/
  },
  {
    name: 'GitHub variable PATCH (journal update)',
    service: 'github',
    method: 'PATCH',
    path: /\/actions\/variables\/R2_ROTATION_STATE$/
  },
  { name: 'GitHub workflow dispatch', service: 'github', method: 'POST', path: /\/dispatches$/ },
  { name: 'GitHub run GET', service: 'github', method: 'GET', path: /\/actions\/runs\/\d+$/ },
  { name: 'R2 probe PUT', service: 'r2', method: 'PUT', path: /\/\.r2-token-rotation\// },
  {
    name: 'smoke GET',
    service: 'app',
    method: 'GET',
    path: /^\/$/,
    // `/` rather than the watched `/healthz`, so that the fault hits the smoke check only.
    overrides: sb => ({ 'smoke-urls': `${sb.appUrl}/ expect=200 contains=sample app` })
  }
]

/** Requests whose answer is lost after the server acted: the ambiguous cases. */
const LOST_ANSWERS = TRANSIENT.filter(t =>
  [
    'Cloudflare token create',
    'GitHub workflow dispatch',
    'GitHub variable POST (journal create)',
    'GitHub secret PUT'
  ].includes(t.name)
)

const transientCases = [
  ...TRANSIENT.flatMap(t => [
    { label: `${t.name} answered 500`, t, fault: { method: t.method, path: t.path, status: 500 } },
    {
      label: `${t.name} answered 429 (retry-after: 1)`,
      t,
      fault: { method: t.method, path: t.path, status: 429, retryAfter: 1 }
    }
  ]),
  ...LOST_ANSWERS.map(t => ({
    label: `${t.name} acted but its answer was lost`,
    t,
    fault: { method: t.method, path: t.path, dropAfterHandling: true } as Fault
  }))
]

const tokenCreates = (sb: Sandbox) =>
  sb.log.requests({ service: 'cloudflare', method: 'POST' }).filter(e => e.path.endsWith('/tokens'))

/** What the non-idempotent requests did about their fault, beyond "the rotation completed". */
const HOW: Record<string, (o: Outcome) => void> = {
  'Cloudflare token create answered 500': ({ sb, result }) => {
    // Ambiguous: the tokens were listed (nothing of this name was found), then one more create.
    expect(tokenCreates(sb)).toHaveLength(2)
    expect(mintedIds(sb)).toHaveLength(1)
    expect(result.stdout).toMatch(/0 token\(s\) minted by it were found and deleted/)
  },
  'Cloudflare token create answered 429 (retry-after: 1)': ({ sb, result }) => {
    // Refused: nothing was minted, so the create was simply sent again.
    expect(tokenCreates(sb)).toHaveLength(2)
    expect(mintedIds(sb)).toHaveLength(1)
    expect(result.stdout).toMatch(
      /Cloudflare rate limit on create token .*: waiting 1 s as Cloudflare asks \(nothing was done by the refused request\)/
    )
  },
  'Cloudflare token create acted but its answer was lost': ({ sb }) => {
    // The token minted by the lost create was found by name and deleted; its value was never known.
    const [lost, survivor] = mintedIds(sb)
    expect(mintedIds(sb)).toHaveLength(2)
    expect(sb.cloudflare.findById(lost!)).toBeUndefined()
    expect(sb.cloudflare.findById(survivor!)?.status).toBe('active')
  },
  'GitHub workflow dispatch answered 500': ({ sb, result }) => {
    expect(dispatches(sb)).toHaveLength(2)
    expect(result.stdout).toMatch(/looking for the run it may have started/)
    expect(result.stdout).toMatch(/No run of that dispatch appeared; dispatching/)
  },
  'GitHub workflow dispatch answered 429 (retry-after: 1)': ({ sb, result }) => {
    expect(dispatches(sb)).toHaveLength(2)
    expect(result.stdout).toMatch(/nothing was dispatched, so it is sent again in 1 s/)
  },
  'GitHub workflow dispatch acted but its answer was lost': ({ sb, result }) => {
    // The run it started was found and followed; no second dispatch.
    expect(dispatches(sb)).toHaveLength(1)
    expect(result.stdout).toMatch(/looking for the run it may have started/)
    expect(result.outputs['deploy-run-id']).toBe(String([...sb.github.runs.keys()][0]))
  }
}

// ------------------------------------------------------------------ start everything at once

const CONCURRENCY = 4
const failureNames = Object.keys(failures) as Array<keyof typeof failures>
const all = startAll<Outcome>(
  [
    ...failureNames.map(name => () => rotateWith(failures[name])),
    ...transientCases.map(
      c => () => rotateWith({ prepare: faultOn(c.t.service, c.fault), overrides: c.t.overrides })
    )
  ],
  CONCURRENCY,
  [
    // Looks for a run that never appeared before it dispatches again.
    failureNames.length +
      transientCases.findIndex(c => c.label.startsWith('GitHub workflow dispatch answered 5')),
    failureNames.indexOf('neverStarts')
  ]
)
const failureOutcome = (name: keyof typeof failures): Promise<Outcome> =>
  all[failureNames.indexOf(name)]!
const transientOutcome = (i: number): Promise<Outcome> => all[failureNames.length + i]!

describe.each([
  ['failure', 'failure'],
  ['cancelled', 'cancelled'],
  ['timed_out', 'timed_out']
] as const)('a deploy run that concludes %s', (name, conclusion) => {
  let o: Outcome
  beforeAll(async () => {
    o = await failureOutcome(name)
  }, 120_000)

  it('rolls back: previous values restored, redeployed, smoke-checked, then the new token deleted', () => {
    const { sb, result } = o
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('rolled-back')
    expect(result.stdout).toContain(`concluded ${conclusion}`)
    const [newId] = mintedIds(sb)
    expect(mintedIds(sb)).toHaveLength(1)
    expect(sb.cloudflare.findById(newId!)).toBeUndefined()
    expectPreviousRestored(sb)
    expect(conclusions(sb)).toEqual([conclusion, 'success'])
    // The delete came after the rollback's deploy concluded success.
    const deleted = sb.log.entries.findIndex(
      e => e.kind === 'request' && e.method === 'DELETE' && e.path.endsWith(`/tokens/${newId}`)
    )
    const redeployed = sb.log.entries.findIndex(
      e => e.kind === 'event' && e.name === 'run.completed' && e.detail.conclusion === 'success'
    )
    expect(redeployed).toBeGreaterThan(0)
    expect(deleted).toBeGreaterThan(redeployed)
    expect(journalOf(sb)).toMatchObject({ phase: 'rolled-back', pending_token_id: newId })
  })

  it('kept the app serving, leaked nothing, broke no API contract', () => {
    expect(o.healthFailures).toEqual([])
    expectNoLeaks(o.sb, [o.result])
    expect(o.sb.log.violations).toEqual([])
  })
})

describe('a deploy run that never starts (deploy-timeout)', () => {
  let o: Outcome
  beforeAll(async () => {
    o = await failureOutcome('neverStarts')
  }, 180_000)

  it('restores the previous values and redeploys, but keeps the new token while that run could still start', () => {
    const { sb, result } = o
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('failed')
    expect(result.stdout).toMatch(/did not conclude within deploy-timeout/)
    expect(result.stdout).toMatch(/may still deploy the new token/)
    expect(result.stdout).toMatch(/both tokens are valid/)
    // Both tokens alive, the previous values back everywhere and deployed, the journal pending.
    const { afterFirst } = o
    expect(afterFirst.journal).toMatchObject({ phase: 'pending' })
    expect(afterFirst.alive.sort()).toEqual([sb.current.id, mintedIds(sb)[0]!].sort())
    expect(afterFirst.secrets).toEqual({
      token: sb.current.value,
      accessKeyId: sb.current.id,
      secretAccessKey: sb.current.secretAccessKey
    })
    expect(afterFirst.live).toBe(sb.current.id)
  })

  it('the next run, with that run still queued, deletes no token either', () => {
    const [next] = o.later
    expect(next!.exitCode).toBe(1)
    expect(next!.stdout).toMatch(/may still deploy the new token/)
    expect(deletesWhileQueued).toBe(0)
  })

  it('once that run is cancelled, the next run deletes the new token and rotates afresh', () => {
    const { sb } = o
    const afterCancel = o.later[1]!
    expect(afterCancel.exitCode).toBe(0)
    expect(afterCancel.outputs.result).toBe('rotated')
    const [first] = mintedIds(sb)
    expect(sb.cloudflare.findById(first!)).toBeUndefined()
    expectOneLiveToken(sb)
    // Over all three runs: the app never went down, no value showed.
    expect(o.healthFailures).toEqual([])
    expectNoLeaks(sb, [o.result, ...o.later])
    expect(sb.log.violations).toEqual([])
  })
})

describe('a rotation still in progress in another run', () => {
  it('is refused at once, naming that run, and nothing is changed', async () => {
    const { sb, result, afterFirst } = await failureOutcome('anotherRunInProgress')
    const [other] = [...sb.github.runs.keys()]
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('failed')
    expect(result.stdout).toMatch(
      new RegExp(
        `::error::.*Another rotation is in progress in run ${other} \\(queued, phase deploying\\)`
      )
    )
    expect(result.stdout).toMatch(/concurrency/)
    expect(sb.log.mutations()).toEqual([])
    expect(afterFirst.journal).toMatchObject({ run_id: String(other), phase: 'deploying' })
    expectNoLeaks(sb, [result])
  })
})

describe('smoke checks that fail after publish', () => {
  it('fail while the new token is deployed: rolled back, the old token alive, the new one deleted', async () => {
    const { sb, result, healthFailures } = await failureOutcome('smokeFailsOnce')
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('rolled-back')
    expect(result.stdout).toMatch(/::error::.*smoke check/)
    expect(sb.cloudflare.findById(mintedIds(sb)[0]!)).toBeUndefined()
    expectPreviousRestored(sb)
    expect(conclusions(sb)).toEqual(['success', 'success'])
    expect(journalOf(sb)).toMatchObject({ phase: 'rolled-back' })
    expect(healthFailures).toEqual([])
    expectNoLeaks(sb, [result])
    expect(sb.log.violations).toEqual([])
  })

  it('keep failing, after the rollback too: both tokens stay valid, nothing revoked, journal pending', async () => {
    const { sb, result, healthFailures } = await failureOutcome('smokeAlwaysFails')
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('failed')
    expect(result.stdout).toMatch(/rollback failed too/)
    expect(result.stdout).toMatch(/both tokens are valid/)
    expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toEqual([])
    expect(sb.cloudflare.findById(mintedIds(sb)[0]!)?.status).toBe('active')
    expectPreviousRestored(sb)
    expect(journalOf(sb)).toMatchObject({ phase: 'pending' })
    expect(healthFailures).toEqual([])
    expectNoLeaks(sb, [result])
  })
})

it('checks what each non-idempotent request did about its fault', () => {
  const labels = transientCases.map(c => c.label)
  for (const label of Object.keys(HOW)) expect(labels).toContain(label)
})

describe.each(transientCases.map((c, i) => [c.label, i] as const))('transient: %s', (_label, i) => {
  let o: Outcome
  beforeAll(async () => {
    o = await transientOutcome(i)
  }, 180_000)

  it('the rotation completes with one surviving new token and one run per deploy', () => {
    const { sb, result } = o
    expect(faulted(sb)).toBeGreaterThan(0)
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    const id = expectOneLiveToken(sb)
    expect(id).toBe(result.outputs['token-id'])
    expect(sb.cloudflare.findById(sb.current.id)).toBeUndefined()
    // Every token minted besides the survivor was deleted again (a create whose answer was lost).
    for (const minted of mintedIds(sb).filter(m => m !== id)) {
      expect(sb.cloudflare.findById(minted)).toBeUndefined()
    }
    expect(sb.github.runs.size).toBe(1)
    expect(dispatches(sb).filter(e => !e.faulted || e.status === 200)).toHaveLength(1)
    expect(journalOf(sb)).toMatchObject({ phase: 'done' })
    HOW[transientCases[i]!.label]?.(o)
  })

  it('kept the app serving, leaked nothing, broke no API contract', () => {
    expect(o.healthFailures).toEqual([])
    expectNoLeaks(o.sb, [o.result])
    expect(o.sb.log.violations).toEqual([])
  })
})
