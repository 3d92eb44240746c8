/**
 * The crash matrix. One normal rotation records the ordered list of mutating requests the action
 * makes (the journal's writes, the mint, each secret write, the dispatch, the revoke). For each
 * of them a scenario kills the action (SIGKILL) right after the sandbox answered that request,
 * lets any dispatched deploy run finish, and runs the action again as the next scheduled run
 * would: with `current-*` read from the secrets as they are now. Each must end with every target
 * consistent with one live token, no orphan of its lineage, and an app that never went down.
 *
 * A second recording, whose deploy run fails, adds the requests of a rollback (the journal's
 * `rolling-back`, the restoring secret writes, the redeploy, the delete of the new token).
 */
import type { ChildProcess } from 'node:child_process'
import { startSandbox, type Sandbox } from '../../sandbox/index.js'
import type { RequestEntry } from '../../sandbox/log.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  apiMutations,
  expectNoLeaks,
  expectOneLiveToken,
  journalOf,
  lineage,
  nextRunInputs,
  requestKey,
  startAll,
  waitForRuns
} from './scenario.js'

interface CrashPoint {
  /** `METHOD /path` with ids replaced. */
  key: string
  /** 1 for the first request with this key, 2 for the second… */
  occurrence: number
  /** Position among all mutating requests of the recorded run (1-based). */
  index: number
  /** The journal phase the request wrote, for a journal write. */
  phase?: string
  /** A write of the lock (its claim or its release), not of the journal. */
  lock?: boolean
}

/** Makes the first deploy run fail, so that the rotation rolls back. */
type Prepare = (sb: Sandbox) => void
const failFirstDeploy: Prepare = sb => sb.github.queueRun({ conclusion: 'failure' })

/** A rotation, recorded: its mutating Cloudflare and GitHub requests, in order. */
async function recordRotation(
  prepare?: Prepare
): Promise<{ points: CrashPoint[]; result: ActionResult }> {
  const sb = await startSandbox()
  try {
    prepare?.(sb)
    const result = await runAction(sb, sandboxInputs(sb))
    const seen = new Map<string, number>()
    const points = apiMutations(sb.log.requests()).map((entry, i) => {
      const key = requestKey(entry)
      const occurrence = (seen.get(key) ?? 0) + 1
      seen.set(key, occurrence)
      const body = entry.body as { name?: string; value?: string } | undefined
      const lock = key.endsWith('_LOCK') || body?.name?.endsWith('_LOCK') === true
      const phase =
        key.includes('/actions/variables') && !lock
          ? (JSON.parse(body?.value ?? '{}') as { phase?: string }).phase
          : undefined
      return { key, occurrence, index: i + 1, phase, ...(lock ? { lock } : {}) }
    })
    return { points, result }
  } finally {
    await sb.stop()
  }
}

/** Makes the first deploy keep the old credentials, so that the watch fails and enables the old token again. */
const staleFirstDeploy: Prepare = sb => sb.github.queueRun({ rollout: 'stale' })

const [reference, rollback, watchFailed] = await Promise.all([
  recordRotation(),
  recordRotation(failFirstDeploy),
  recordRotation(staleFirstDeploy)
])
/** The re-enable after the failed watch (the second update of the previous token). */
const reenable = watchFailed.points.filter(p => p.key === 'PUT /client/v4/user/tokens/{id}')[1]!
/** The rollback's own requests: from the journal's `rolling-back` on. */
const rollbackPoints = rollback.points.slice(
  rollback.points.findIndex(p => p.phase === 'rolling-back')
)

interface Crash {
  sb: Sandbox
  killed: ActionResult
  /** The mutating requests the killed run made. */
  before: RequestEntry[]
  /** The last run after the crash. */
  rerun: ActionResult
  /** Every run after the crash, in order. */
  reruns: ActionResult[]
  /** The lineage's live tokens and the journal after each of those runs. */
  states: Array<{ alive: string[]; journal: Record<string, unknown> }>
  healthFailures: Array<{ at: number; status: number }>
}

/** The runs after the crash: by default one, as the next scheduled run would run. */
type Rerun = (sb: Sandbox) => Record<string, string>

async function crashAndRerun(
  point: CrashPoint,
  prepare?: Prepare,
  reruns: Rerun[] = [sb => nextRunInputs(sb)]
): Promise<Crash> {
  const sb = await startSandbox()
  prepare?.(sb)
  const watch = sb.watchHealth(50)
  let child: ChildProcess | undefined
  let count = 0
  let fired = false
  const onAnswered = (entry: RequestEntry): void => {
    if (fired || requestKey(entry) !== point.key) return
    if (!['POST', 'PUT', 'PATCH', 'DELETE'].includes(entry.method)) return
    if (++count === point.occurrence) {
      fired = true
      child?.kill('SIGKILL')
    }
  }
  sb.cloudflare.service.onAnswered = onAnswered
  sb.github.service.onAnswered = onAnswered
  try {
    const killed = await runAction(sb, sandboxInputs(sb), { onSpawn: c => (child = c) })
    sb.cloudflare.service.onAnswered = undefined
    sb.github.service.onAnswered = undefined
    const before = apiMutations(sb.log.requests())
    await waitForRuns(sb)
    const results: ActionResult[] = []
    const states: Crash['states'] = []
    for (const inputs of reruns) {
      results.push(await runAction(sb, inputs(sb)))
      states.push({ alive: lineage(sb).map(t => t.id), journal: journalOf(sb) })
    }
    const healthFailures = await watch.stop()
    return { sb, killed, before, rerun: results.at(-1)!, reruns: results, states, healthFailures }
  } finally {
    // The simulators' state stays readable after they stop.
    await sb.stop()
  }
}

describe('the recorded rotation', () => {
  it('rotated, and its mutating requests cover every kind the matrix must kill at', () => {
    expect(reference.result.exitCode).toBe(0)
    const keys = reference.points.map(p => p.key)
    expect(keys).toEqual(
      expect.arrayContaining([
        'POST /repos/acme/site/actions/variables',
        'PATCH /repos/acme/site/actions/variables/R2_ROTATION_STATE',
        'POST /client/v4/user/tokens',
        'PUT /repos/acme/site/actions/secrets/CLOUDFLARE_API_TOKEN',
        'PUT /repos/acme/site/actions/secrets/R2_ACCESS_KEY_ID',
        'PUT /repos/acme/site/actions/secrets/R2_SECRET_ACCESS_KEY',
        'POST /repos/acme/site/actions/workflows/{workflow_id}/dispatches',
        'DELETE /client/v4/user/tokens/{id}'
      ])
    )
    // The lock is claimed first and released last; before minting the journal says so, and
    // after the revoke it says done.
    expect(reference.points[0]).toMatchObject({
      key: 'POST /repos/acme/site/actions/variables',
      lock: true
    })
    expect(reference.points[1]).toMatchObject({
      key: 'POST /repos/acme/site/actions/variables',
      phase: 'minting'
    })
    expect(reference.points.at(-2)).toMatchObject({
      key: 'PATCH /repos/acme/site/actions/variables/R2_ROTATION_STATE',
      phase: 'done'
    })
    expect(keys.at(-1)).toBe('DELETE /repos/acme/site/actions/variables/R2_ROTATION_STATE_LOCK')
  })
})

describe('the recorded rollback', () => {
  it('rolled back, and its own requests restore every secret, redeploy and delete the new token', () => {
    expect(rollback.result.exitCode).toBe(1)
    expect(rollback.result.outputs.result).toBe('rolled-back')
    expect(rollbackPoints.map(p => p.key)).toEqual(
      expect.arrayContaining([
        'PUT /repos/acme/site/actions/secrets/CLOUDFLARE_API_TOKEN',
        'PUT /repos/acme/site/actions/secrets/R2_ACCESS_KEY_ID',
        'PUT /repos/acme/site/actions/secrets/R2_SECRET_ACCESS_KEY',
        'POST /repos/acme/site/actions/workflows/{workflow_id}/dispatches',
        'DELETE /client/v4/user/tokens/{id}'
      ])
    )
    expect(rollbackPoints.map(p => p.phase).filter(Boolean)).toEqual([
      'rolling-back',
      'rolling-back',
      'rolled-back'
    ])
  })
})

const matrix: Array<{ name: string; point: CrashPoint; prepare?: Prepare }> = [
  ...reference.points.map(point => ({ name: `rotation #${point.index}`, point })),
  ...rollbackPoints.map(point => ({
    name: `rollback #${point.index}`,
    point,
    prepare: failFirstDeploy
  })),
  {
    name: `failed watch #${reenable.index} (the re-enable)`,
    point: reenable,
    prepare: staleFirstDeploy
  }
]

/** The recording a matrix entry was cut from. */
const recordingOf = (prepare: Prepare | undefined): CrashPoint[] =>
  prepare === failFirstDeploy
    ? rollback.points
    : prepare === staleFirstDeploy
      ? watchFailed.points
      : reference.points

/** Crash scenarios running at once (each mostly waits for its child process and the simulator). */
const CONCURRENCY = 4
/** Killed after the first secret write; run once without current-token, then with it. */
const firstSecretWrite = reference.points.find(p =>
  p.key.endsWith('/secrets/CLOUDFLARE_API_TOKEN')
)!
const withoutValue: Rerun[] = [
  sb => nextRunInputs(sb, { 'current-token': '' }),
  sb => nextRunInputs(sb)
]

const crashes = startAll(
  [
    ...matrix.map(
      ({ point, prepare }) =>
        () =>
          crashAndRerun(point, prepare)
    ),
    () => crashAndRerun(firstSecretWrite, undefined, withoutValue)
  ],
  CONCURRENCY
)

describe.each(
  matrix.map(
    ({ name, point, prepare }, i) =>
      [
        `${name} ${point.key} (${point.occurrence}${point.phase ? `, ${point.phase}` : ''})`,
        point,
        prepare,
        i
      ] as const
  )
)('killed right after %s was answered', (_name, point, prepare, i) => {
  let crash: Crash
  beforeAll(async () => {
    crash = await crashes[i]!
  }, 180_000)

  it('the first run died there', () => {
    expect(crash.killed.signal).toBe('SIGKILL')
    // It had made exactly the recorded requests up to this one.
    const recorded = recordingOf(prepare)
    expect(crash.before.map(requestKey)).toEqual(recorded.slice(0, point.index).map(p => p.key))
  })

  it('the next run finishes: one live token in every target, no orphan of its lineage', () => {
    expect(crash.rerun.stderr).toBe('')
    expect(crash.rerun.exitCode).toBe(0)
    expect(crash.rerun.outputs.result).toBe('rotated')
    const id = expectOneLiveToken(crash.sb)
    expect(journalOf(crash.sb)).toMatchObject({ phase: 'done' })
    expect(crash.rerun.outputs['token-id']).toBe(id)
  })

  it('the next run recovered from the phase the journal was left in', () => {
    const recorded = recordingOf(prepare)
    const left = recorded
      .slice(0, point.index)
      .map(p => p.phase)
      .filter(Boolean)
      .at(-1)
    if (left === undefined || left === 'done' || left === 'rolled-back') {
      expect(crash.rerun.stdout).not.toMatch(/Unfinished rotation/)
    } else {
      expect(crash.rerun.stdout).toMatch(
        new RegExp(`::warning::Unfinished rotation from run \\d+ \\(phase ${left}\\)`)
      )
    }
  })

  it('took over the lock the killed run held', () => {
    const held = recordingOf(prepare)
      .slice(0, point.index)
      .filter(p => p.lock)
    // Claimed and not yet released: the next run finds it, and its run has ended.
    if (held.length === 1) {
      expect(crash.rerun.stdout).toMatch(
        /::warning::Taking over the rotation lock R2_ROTATION_STATE_LOCK/
      )
    } else {
      expect(crash.rerun.stdout).not.toMatch(/Taking over the rotation lock/)
    }
  })

  it('kept the app serving, leaked nothing, and broke no API contract', () => {
    if (prepare === staleFirstDeploy) {
      // The killed run's own window (the old token disabled under a stale deploy) ended with the
      // re-enable it was killed after; the next run never let the app fail.
      const killedAt = Math.max(...crash.before.map(e => e.at))
      for (const failure of crash.healthFailures) expect(failure.at).toBeLessThanOrEqual(killedAt)
    } else {
      expect(crash.healthFailures).toEqual([])
    }
    expectNoLeaks(crash.sb, [crash.killed, crash.rerun])
    expect(crash.sb.log.violations).toEqual([])
  })
})

it('covers every mutating request of a rotation and of a rollback, and the re-enable of a failed watch', () => {
  expect(matrix).toHaveLength(reference.points.length + rollbackPoints.length + 1)
  expect(reference.points.map(p => p.key)).toContain('PUT /client/v4/user/tokens/{id}')
  expect(watchFailed.result.outputs.result).toBe('rolled-back')
})

describe('killed midway through publishing, then run without current-token', () => {
  // The secrets hold the new token's value but the old id and R2 secret: without the value, the
  // next run can finish the rotation neither way, so it must keep both tokens and say what to do.
  let crash: Crash
  beforeAll(async () => {
    crash = await crashes[matrix.length]!
  }, 180_000)

  it('stops with both tokens valid, the journal pending and instructions', () => {
    const [stuck] = crash.reruns
    expect(stuck!.exitCode).toBe(1)
    expect(stuck!.outputs.result).toBe('failed')
    expect(stuck!.stdout).toMatch(/::error::.*Both tokens are still valid/)
    expect(stuck!.stdout).toMatch(/Pass current-token/)
    const [after] = crash.states
    const [minted] = crash.sb.log.events('token.created').map(e => e.detail.id as string)
    expect(after!.alive.sort()).toEqual([crash.sb.current.id, minted!].sort())
    expect(after!.journal).toMatchObject({ phase: 'pending', pending_token_id: minted })
  })

  it('the run after it, given current-token, completes the rotation forward', () => {
    expect(crash.rerun.exitCode).toBe(0)
    expect(crash.rerun.outputs.result).toBe('rotated')
    expectOneLiveToken(crash.sb)
    expect(crash.healthFailures).toEqual([])
    expectNoLeaks(crash.sb, [crash.killed, ...crash.reruns])
    expect(crash.sb.log.violations).toEqual([])
  })
})
