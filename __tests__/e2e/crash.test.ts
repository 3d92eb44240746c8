/**
 * The crash matrix. A normal rotation records the ordered list of mutating requests the action
 * makes (the lock, the journal's writes, the mint, each secret write, the dispatch, the disable,
 * the delete). For each of them a case kills the action (SIGKILL) right after the sandbox
 * answered that request, lets any dispatched deploy run finish, and runs the action again as the
 * next scheduled run would: with `current-*` read from the secrets as they are now. Each must end
 * with every target holding one live token, no orphan of its lineage, and an app that never went
 * down.
 *
 * A second recording, whose deploy run fails, adds the requests of a rollback; a third, whose
 * deploy keeps the old credentials, adds the re-enable after a failed watch.
 *
 * Each case is named by the request it is killed after, and proves what the next run did by its
 * ordered mutating requests (a snapshot in __snapshots__/crash.test.ts.snap, readable as is).
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
  killWhen,
  lineage,
  mutationList,
  nextRunInputs,
  requestKey,
  startNamed,
  waitForRuns,
  HEALTH_POLL_MS
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
  /** What the request did, in words: the case's name. */
  what: string
}

type Prepare = (sb: Sandbox) => void
/** The first deploy run fails, so that the rotation rolls back. */
const failFirstDeploy: Prepare = sb => sb.github.queueRun({ conclusion: 'failure' })
/** The first deploy keeps the old credentials: the watch fails and enables the old token again. */
const staleFirstDeploy: Prepare = sb => sb.github.queueRun({ rollout: 'stale' })

/** A request in words, e.g. `secret R2_TOKEN written`, `journal: deploying`. */
function describeRequest(entry: RequestEntry, key: string): string {
  const body = (entry.body ?? {}) as { name?: string; value?: string; status?: string }
  if (key.endsWith('_LOCK') || body.name?.endsWith('_LOCK')) {
    return entry.method === 'DELETE' ? 'the lock released' : 'the lock claimed'
  }
  if (key.includes('/actions/variables')) {
    return `journal: ${(JSON.parse(body.value ?? '{}') as { phase?: string }).phase}`
  }
  if (key.endsWith('/dispatches')) return 'the deploy dispatched'
  const secret = /\/secrets\/([^/]+)$/.exec(key)?.[1]
  if (secret) return `secret ${secret} written`
  if (key === 'POST /client/v4/user/tokens') return 'the new token created'
  if (entry.method === 'PUT') {
    return body.status === 'disabled'
      ? 'the previous token disabled'
      : 'the previous token enabled again'
  }
  if (entry.method === 'DELETE') return 'a token deleted'
  return key
}

/** A rotation, recorded: its mutating Cloudflare and GitHub requests, in order. */
async function recordRotation(
  prepare?: Prepare
): Promise<{ points: CrashPoint[]; result: ActionResult }> {
  const sb = await startSandbox()
  try {
    prepare?.(sb)
    const result = await runAction(sb, sandboxInputs(sb))
    const seen = new Map<string, number>()
    const said = new Map<string, number>()
    const points = apiMutations(sb.log.requests()).map((entry, i) => {
      const key = requestKey(entry)
      const occurrence = (seen.get(key) ?? 0) + 1
      seen.set(key, occurrence)
      // Named by what it did, with its rank among requests that did the same (`… (2nd)`).
      const said_ = describeRequest(entry, key)
      const rank = (said.get(said_) ?? 0) + 1
      said.set(said_, rank)
      const body = entry.body as { name?: string; value?: string } | undefined
      const lock = key.endsWith('_LOCK') || body?.name?.endsWith('_LOCK') === true
      const phase =
        key.includes('/actions/variables') && !lock
          ? (JSON.parse(body?.value ?? '{}') as { phase?: string }).phase
          : undefined
      const what = rank > 1 ? `${said_} (${rank === 2 ? '2nd' : `${rank}th`})` : said_
      return { key, occurrence, index: i + 1, phase, what, ...(lock ? { lock } : {}) }
    })
    return { points, result }
  } finally {
    await sb.stop()
  }
}

const [reference, rollback, watchFailed] = await Promise.all([
  recordRotation(),
  recordRotation(failFirstDeploy),
  recordRotation(staleFirstDeploy)
])
/** The rollback's own requests: from the journal's `rolling-back` on. */
const rollbackPoints = rollback.points.slice(
  rollback.points.findIndex(p => p.phase === 'rolling-back')
)
/** The re-enable after the failed watch. */
const reenable = watchFailed.points.find(p => p.what === 'the previous token enabled again')!

interface Crash {
  sb: Sandbox
  killed: ActionResult
  /** The mutating requests the killed run made. */
  before: RequestEntry[]
  /** The last run after the crash. */
  rerun: ActionResult
  /** Every run after the crash, in order. */
  reruns: ActionResult[]
  /** What the runs after the crash did, in order (mutationList, from the kill on). */
  afterCrash: string[]
  /** The lineage's live tokens and the journal after each of those runs. */
  states: Array<{ alive: string[]; journal: Record<string, unknown> }>
  healthFailures: Array<{ at: number; status: number }>
  /** When the request the run was killed after had taken effect. */
  killedAtMs: number
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
  const watch = sb.watchHealth(HEALTH_POLL_MS)
  let child: ChildProcess | undefined
  let count = 0
  let fired = false
  let killedAtMs = NaN
  const unhook = killWhen(
    sb,
    () => child,
    entry => {
      if (fired || requestKey(entry) !== point.key) return false
      if (!['POST', 'PUT', 'PATCH', 'DELETE'].includes(entry.method)) return false
      fired = ++count === point.occurrence
      // The request has taken effect (the hook runs after it was handled).
      if (fired) killedAtMs = Date.now()
      return fired
    }
  )
  try {
    const killed = await runAction(sb, sandboxInputs(sb), { onSpawn: c => (child = c) })
    unhook()
    const before = apiMutations(sb.log.requests())
    const killedAt = sb.log.entries.at(-1)?.seq ?? 0
    await waitForRuns(sb)
    const results: ActionResult[] = []
    const states: Crash['states'] = []
    for (const inputs of reruns) {
      results.push(await runAction(sb, inputs(sb)))
      states.push({ alive: lineage(sb).map(t => t.id), journal: journalOf(sb) })
    }
    const healthFailures = await watch.stop()
    return {
      sb,
      killed,
      before,
      rerun: results.at(-1)!,
      reruns: results,
      afterCrash: mutationList(sb, {}, killedAt),
      states,
      healthFailures,
      killedAtMs
    }
  } finally {
    // The simulators' state stays readable after they stop.
    await sb.stop()
  }
}

interface Case {
  name: string
  point: CrashPoint
  prepare?: Prepare
  /** The recording the point was cut from. */
  recorded: CrashPoint[]
}

const matrix: Case[] = [
  ...reference.points.map(point => ({
    name: `rotation: killed after ${point.what}`,
    point,
    recorded: reference.points
  })),
  ...rollbackPoints.map(point => ({
    name: `rollback: killed after ${point.what}`,
    point,
    prepare: failFirstDeploy,
    recorded: rollback.points
  })),
  {
    name: `failed watch: killed after ${reenable.what}`,
    point: reenable,
    prepare: staleFirstDeploy,
    recorded: watchFailed.points
  }
]

/** Killed after the first secret write; run once without current-token, then with it. */
const firstSecretWrite = reference.points.find(
  p => p.what === 'secret CLOUDFLARE_API_TOKEN written'
)!
const WITHOUT_VALUE = 'killed midway through publishing, then run without current-token'

/**
 * Killed after the journal's `publishing`, before any secret write: the next run restores the
 * previous token (which the secrets still hold) and starts a rotation of its own, whose new
 * token then fails the check of its copy. That token was never in a secret: the restore's
 * writes were of the previous values.
 */
const publishingJournaled = reference.points.find(p => p.what === 'journal: publishing')!
const RESTORE_THEN_FAIL =
  'killed after journal: publishing; the next run restores, and its own new token then fails its check'

/** The next token created fails the check of its copy: its re-read answers 403 (not retried). */
function failNextCopyCheck(sb: Sandbox): void {
  const before = sb.log.events('token.created').length
  sb.cloudflare.service.beforeAnswer = () => {
    const created = sb.log.events('token.created')
    if (created.length > before) {
      sb.cloudflare.service.beforeAnswer = undefined
      const id = created.at(-1)!.detail.id as string
      sb.cloudflare.service.inject({
        method: 'GET',
        path: new RegExp(`^/client/v4/user/tokens/${id}$`),
        status: 403
      })
    }
    return undefined
  }
}

/** Crash scenarios running at once (each mostly waits for its child process and the simulator). */
const CONCURRENCY = 4
const crash = startNamed(
  {
    ...Object.fromEntries(matrix.map(c => [c.name, () => crashAndRerun(c.point, c.prepare)])),
    [WITHOUT_VALUE]: () =>
      crashAndRerun(firstSecretWrite, undefined, [
        sb => nextRunInputs(sb, { 'current-token': '' }),
        sb => nextRunInputs(sb)
      ]),
    [RESTORE_THEN_FAIL]: () =>
      crashAndRerun(publishingJournaled, undefined, [
        sb => {
          failNextCopyCheck(sb)
          return nextRunInputs(sb)
        }
      ])
  },
  CONCURRENCY
)

describe('the recordings', () => {
  it('a rotation: the lock first and last, the journal around every mutating phase', () => {
    expect(reference.result.exitCode).toBe(0)
    expect(reference.points.map(p => p.what)).toEqual([
      'the lock claimed',
      'journal: minting',
      'the new token created',
      'journal: minted',
      'journal: publishing',
      'secret CLOUDFLARE_API_TOKEN written',
      'secret R2_ACCESS_KEY_ID written',
      'secret R2_SECRET_ACCESS_KEY written',
      'journal: published',
      'journal: deploying',
      'the deploy dispatched',
      'journal: deploying (2nd)',
      'journal: smoke',
      'journal: revoking',
      'journal: revoking (2nd)',
      'the previous token disabled',
      'a token deleted',
      'journal: done',
      'the lock released'
    ])
  })

  it('a rollback: the previous values everywhere, a redeploy, then the new token deleted', () => {
    expect(rollback.result.outputs.result).toBe('rolled-back')
    expect(rollbackPoints.map(p => p.what)).toEqual([
      'journal: rolling-back',
      'secret CLOUDFLARE_API_TOKEN written (2nd)',
      'secret R2_ACCESS_KEY_ID written (2nd)',
      'secret R2_SECRET_ACCESS_KEY written (2nd)',
      'the deploy dispatched (2nd)',
      'journal: rolling-back (2nd)',
      'a token deleted',
      'journal: rolled-back',
      'the lock released'
    ])
  })

  it('a failed watch: the previous token disabled, then enabled again', () => {
    expect(watchFailed.result.outputs.result).toBe('rolled-back')
    expect(reenable.index).toBe(
      watchFailed.points.findIndex(p => p.what === 'the previous token disabled') + 2
    )
  })
})

describe.each(matrix.map(c => [c.name, c] as const))('%s', (name, { point, prepare, recorded }) => {
  let c: Crash
  beforeAll(async () => {
    c = await crash(name)
  }, 180_000)

  it('the killed run had made exactly the recorded requests up to that one', () => {
    expect(c.killed.signal).toBe('SIGKILL')
    expect(c.before.map(requestKey)).toEqual(recorded.slice(0, point.index).map(p => p.key))
  })

  it('the next run finishes: one live token in every target, no orphan of its lineage', () => {
    expect(c.rerun.stderr).toBe('')
    expect(c.rerun.exitCode).toBe(0)
    expect(c.rerun.outputs.result).toBe('rotated')
    const id = expectOneLiveToken(c.sb)
    expect(journalOf(c.sb)).toMatchObject({ phase: 'done' })
    expect(c.rerun.outputs['token-id']).toBe(id)
  })

  it('what the next run did, in order', () => {
    expect(c.afterCrash).toMatchSnapshot()
  })

  it('kept the app serving, leaked nothing, and broke no API contract', () => {
    if (prepare === staleFirstDeploy) {
      // The killed run's own window (the old token disabled under a stale deploy) ended with the
      // re-enable it was killed after; the next run never let the app fail.
      for (const failure of c.healthFailures) expect(failure.at).toBeLessThanOrEqual(c.killedAtMs)
    } else {
      expect(c.healthFailures).toEqual([])
    }
    expectNoLeaks(c.sb, [c.killed, c.rerun])
    expect(c.sb.log.violations).toEqual([])
  })
})

describe(WITHOUT_VALUE, () => {
  // The secrets hold the new token's value but the old id and R2 secret: without the value, the
  // next run can finish the rotation neither way, so it must keep both tokens and say what to do.
  let c: Crash
  beforeAll(async () => {
    c = await crash(WITHOUT_VALUE)
  }, 180_000)

  it('stops with both tokens valid, the journal pending and instructions', () => {
    const [stuck] = c.reruns
    expect(stuck!.exitCode).toBe(1)
    expect(stuck!.outputs.result).toBe('failed')
    expect(stuck!.stdout).toMatch(/::error::.*Both tokens are still valid/)
    expect(stuck!.stdout).toMatch(/Pass current-token/)
    const [after] = c.states
    const [minted] = c.sb.log.events('token.created').map(e => e.detail.id as string)
    expect(after!.alive.sort()).toEqual([c.sb.current.id, minted!].sort())
    expect(after!.journal).toMatchObject({ phase: 'pending', pending_token_id: minted })
  })

  it('the run after it, given current-token, completes the rotation forward', () => {
    expect(c.rerun.exitCode).toBe(0)
    expect(c.rerun.outputs.result).toBe('rotated')
    expectOneLiveToken(c.sb)
    expect(c.afterCrash).toMatchSnapshot()
    expect(c.healthFailures).toEqual([])
    expectNoLeaks(c.sb, [c.killed, ...c.reruns])
    expect(c.sb.log.violations).toEqual([])
  })
})

describe(RESTORE_THEN_FAIL, () => {
  let c: Crash
  beforeAll(async () => {
    c = await crash(RESTORE_THEN_FAIL)
  }, 180_000)

  it('deletes its own new token at once: no secret written with it, no deploy, no rollback', () => {
    expect(c.rerun.exitCode).toBe(1)
    expect(c.rerun.outputs.result).toBe('failed')
    expect(c.rerun.stdout).toMatch(/^::error::/m)
    const [, minted] = c.sb.log.events('token.created').map(e => e.detail.id as string)
    expect(c.sb.cloudflare.tokens.has(minted!)).toBe(false)
    expect(expectOneLiveToken(c.sb)).toBe(c.sb.current.id)
    expect(journalOf(c.sb)).toMatchObject({ phase: 'rolled-back' })
    const mintedAt = c.afterCrash.indexOf('POST /user/tokens → {new#2}')
    expect(mintedAt).toBeGreaterThan(0)
    const afterMint = c.afterCrash.slice(mintedAt)
    expect(afterMint.filter(m => /secret|dispatch|rolling-back/.test(m))).toEqual([])
    expect(c.afterCrash).toMatchSnapshot()
  })

  it('kept the app serving, leaked nothing, and broke no API contract', () => {
    expect(c.healthFailures).toEqual([])
    expectNoLeaks(c.sb, [c.killed, c.rerun])
    expect(c.sb.log.violations).toEqual([])
  })
})
