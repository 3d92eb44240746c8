/**
 * The crash matrix of a service token rotation. A rotation is recorded: its ordered mutating
 * requests (the lock, the journal's writes, the rotate, each secret write, the dispatch, the
 * close of the grace). For each of them a case kills the action (SIGKILL) once the sandbox has
 * handled that request and before its answer is sent, lets any dispatched deploy run finish,
 * and runs the action again as the next scheduled run would (`current-client-secret` read from
 * the secret as it is now). When that run does not rotate (it refuses because the newest secret
 * is lost, or finishes a rollback, or keeps both), one more run with `force: true` follows. Every case must end with the
 * journal `done`, the secrets and the deployed client holding the token's one valid secret, and
 * the previous secret closed.
 *
 * Two more recordings add the requests of a rollback (the first deploy fails) and the re-open of
 * the grace after a failed watch (the first deploy is stale).
 *
 * The point that cannot be undone is the rotate: its answer carries the only copy of the new
 * secret. Killed there (before the first secret write), the next run finds the token rotated and
 * no target written, refuses, and the forced run measures the outage it costs.
 *
 * Each case is named by the request it is killed after; what the runs after the crash did is a
 * snapshot (__snapshots__/service-token-crash.test.ts.snap), readable as is.
 */
import type { ChildProcess } from 'node:child_process'
import type { Sandbox } from '../../sandbox/index.js'
import type { RequestEntry } from '../../sandbox/log.js'
import type { ActionResult } from '../../sandbox/runner.js'
import {
  apiMutations,
  HEALTH_POLL_MS,
  killWhen,
  requestKey,
  startNamed,
  waitForRuns
} from './scenario.js'
import {
  accessJournal,
  accessMutations,
  accessSecrets,
  admits,
  expectNoAccessLeaks,
  issuedSecrets,
  runServiceToken,
  startServiceTokenWorld
} from './service-token-world.js'

interface CrashPoint {
  key: string
  occurrence: number
  what: string
  phase?: string
}

type Prepare = (sb: Sandbox) => void
const failFirstDeploy: Prepare = sb => sb.github.queueRun({ conclusion: 'failure' })
const staleFirstDeploy: Prepare = sb => sb.github.queueRun({ rollout: 'stale' })

function describeRequest(entry: RequestEntry, key: string): string {
  const body = (entry.body ?? {}) as {
    name?: string
    value?: string
    previous_client_secret_expires_at?: string
  }
  if (key.endsWith('_LOCK') || body.name?.endsWith('_LOCK')) {
    return entry.method === 'DELETE' ? 'the lock released' : 'the lock claimed'
  }
  if (key.includes('/actions/variables')) {
    return `journal: ${(JSON.parse(body.value ?? '{}') as { phase?: string }).phase}`
  }
  if (key.endsWith('/dispatches')) return 'the deploy dispatched'
  if (key.endsWith('/rotate')) return 'the rotate answered (before the first secret write)'
  const secret = /\/secrets\/([^/]+)$/.exec(key)?.[1]
  if (secret) return `secret ${secret} written`
  if (entry.method === 'PUT' && body.previous_client_secret_expires_at) {
    const closes = Date.parse(body.previous_client_secret_expires_at) <= entry.at + 1000
    return closes ? 'the grace closed' : 'the grace re-opened'
  }
  return key
}

async function record(prepare?: Prepare): Promise<CrashPoint[]> {
  const sb = await startServiceTokenWorld()
  try {
    prepare?.(sb)
    await runServiceToken(sb)
    const seen = new Map<string, number>()
    const said = new Map<string, number>()
    return apiMutations(sb.log.requests()).map(entry => {
      const key = requestKey(entry).replace(sb.serviceToken!.id, '{token}')
      const occurrence = (seen.get(key) ?? 0) + 1
      seen.set(key, occurrence)
      const text = describeRequest(entry, key)
      const rank = (said.get(text) ?? 0) + 1
      said.set(text, rank)
      const body = entry.body as { value?: string; name?: string } | undefined
      const phase =
        key.includes('/actions/variables') && !text.includes('lock')
          ? (JSON.parse(body?.value ?? '{}') as { phase?: string }).phase
          : undefined
      return {
        key,
        occurrence,
        what: rank > 1 ? `${text} (${rank === 2 ? '2nd' : `${rank}th`})` : text,
        ...(phase ? { phase } : {})
      }
    })
  } finally {
    await sb.stop()
  }
}

const [reference, rollback, stale] = await Promise.all([
  record(),
  record(failFirstDeploy),
  record(staleFirstDeploy)
])
const rollbackPoints = rollback.slice(rollback.findIndex(p => p.phase === 'rolling-back'))
const reopen = stale.find(p => p.what === 'the grace re-opened')!

interface Crash {
  sb: Sandbox
  killed: ActionResult
  results: ActionResult[]
  /** What the runs after the crash did, one list per run. */
  after: string[][]
  outcomes: string[]
  /** A second run followed (the first after the crash did not rotate). */
  second: boolean
  /** The deployed client's failed health checks during the whole case. */
  clientFailures: Array<{ at: number; status: number }>
  /** Refusals at the Access app. */
  refusals: Array<{ at: number; reason?: string }>
  /**
   * When the previous secret was allowed to fail its clients: a forced rotation (from its rotate
   * to the deploy of the newest secret) and a failed watch (from the close to the re-open).
   */
  windows: Array<{ why: 'forced rotation' | 'failed watch'; from: number; to: number }>
}

async function crashAndRerun(point: CrashPoint, prepare?: Prepare): Promise<Crash> {
  const sb = await startServiceTokenWorld()
  prepare?.(sb)
  const watch = sb.watchAccessClient(HEALTH_POLL_MS)
  let child: ChildProcess | undefined
  let count = 0
  let fired = false
  const tokenId = sb.serviceToken!.id
  const unhook = killWhen(
    sb,
    () => child,
    entry => {
      if (fired || requestKey(entry).replace(tokenId, '{token}') !== point.key) return false
      if (!['POST', 'PUT', 'PATCH', 'DELETE'].includes(entry.method)) return false
      fired = ++count === point.occurrence
      return fired
    }
  )
  try {
    const killed = await runServiceToken(sb, {}, { onSpawn: c => (child = c) })
    unhook()
    await waitForRuns(sb)
    const results: ActionResult[] = []
    const after: string[][] = []
    const outcomes: string[] = []
    const rerun = async (overrides: Record<string, string>): Promise<ActionResult> => {
      const seq = sb.log.entries.at(-1)?.seq ?? 0
      const result = await runServiceToken(sb, overrides)
      results.push(result)
      after.push(accessMutations(sb, seq))
      outcomes.push(`${result.outputs.result} (journal ${String(accessJournal(sb).phase)})`)
      return result
    }
    const first = await rerun({})
    const second = first.outputs.result !== 'rotated'
    let windows: Crash['windows'] = []
    if (second) {
      const seq = sb.log.entries.at(-1)?.seq ?? 0
      await rerun({ force: 'true' })
      const rotate = sb.log
        .requests({ service: 'cloudflare', method: 'POST' })
        .find(e => e.seq > seq && e.path.endsWith('/rotate'))
      const deployed = sb.log
        .events('access-client.deployed')
        .find(e => rotate !== undefined && e.seq > rotate.seq)
      if (rotate && deployed) {
        windows.push({ why: 'forced rotation', from: rotate.at, to: deployed.at })
      }
    }
    windows = [...windows, ...watchWindows(sb)]
    const clientFailures = await watch.stop()
    return {
      sb,
      killed,
      results,
      after,
      outcomes,
      second,
      clientFailures,
      refusals: sb
        .accessApp!.failures()
        .map(f => ({ at: f.at, ...(f.reason ? { reason: f.reason } : {}) })),
      windows
    }
  } finally {
    await sb.stop()
  }
}

/** Each close of the grace followed by a re-open: the watch saw a stale client in between. */
function watchWindows(sb: Sandbox): Crash['windows'] {
  const puts = sb.log
    .requests({ service: 'cloudflare', method: 'PUT' })
    .filter(e => e.path.includes('/access/service_tokens/'))
  const windows: Crash['windows'] = []
  puts.forEach((put, i) => {
    const until = (put.body as { previous_client_secret_expires_at?: string } | undefined)
      ?.previous_client_secret_expires_at
    const next = puts[i + 1]
    if (until && Date.parse(until) <= put.at + sb.cloudflare.skewMs + 1000 && next) {
      windows.push({ why: 'failed watch', from: put.at, to: next.at })
    }
  })
  return windows
}

interface Case {
  name: string
  point: CrashPoint
  prepare?: Prepare
}

const matrix: Case[] = [
  ...reference.map(point => ({ name: `rotation: killed after ${point.what}`, point })),
  ...rollbackPoints.map(point => ({
    name: `rollback: killed after ${point.what}`,
    point,
    prepare: failFirstDeploy
  })),
  { name: `failed watch: killed after ${reopen.what}`, point: reopen, prepare: staleFirstDeploy }
]

const crash = startNamed(
  Object.fromEntries(matrix.map(c => [c.name, () => crashAndRerun(c.point, c.prepare)])),
  3
)

describe('the recordings', () => {
  it('a rotation: the rotate right after the journal, the secrets right after the rotate', () => {
    expect(reference.map(p => p.what)).toEqual([
      'the lock claimed',
      'journal: rotating',
      'the rotate answered (before the first secret write)',
      'secret ACCESS_CLIENT_ID written',
      'secret ACCESS_CLIENT_SECRET written',
      'journal: published',
      'journal: deploying',
      'the deploy dispatched',
      'journal: deploying (2nd)',
      'journal: smoke',
      'journal: closing',
      'the grace closed',
      'journal: done',
      'the lock released'
    ])
  })

  it('a rollback and a failed watch add their own requests', () => {
    expect(rollbackPoints.map(p => p.what)).toEqual([
      'journal: rolling-back',
      'secret ACCESS_CLIENT_ID written (2nd)',
      'secret ACCESS_CLIENT_SECRET written (2nd)',
      'the deploy dispatched (2nd)',
      'journal: rolling-back (2nd)',
      'journal: pending',
      'the lock released'
    ])
    expect(reopen).toBeDefined()
  })
})

describe.each(matrix.map(c => [c.name]))('%s', name => {
  let c: Crash
  beforeAll(async () => {
    c = await crash(name)
  }, 300_000)

  it('was killed', () => {
    expect(c.killed.signal).toBe('SIGKILL')
  })

  it('the next runs settle: journal done, one valid secret everywhere, the grace closed', () => {
    const { sb } = c
    expect(c.results.at(-1)!.outputs.result).toBe('rotated')
    expect(accessJournal(sb)).toMatchObject({ phase: 'done', secrets_hold: 'next' })
    const secret = accessSecrets(sb).clientSecret
    expect(secret).toBe(issuedSecrets(sb).at(-1))
    expect(sb.accessClient!.credentials()?.clientSecret).toBe(secret)
    expect(admits(sb, secret)).toBe(true)
    expect(issuedSecrets(sb).filter(s => admits(sb, s))).toEqual([secret])
    expect(sb.cloudflare.access.serviceToken(sb.serviceToken!.id)?.previousValid).toBe(false)
    for (const result of c.results) expect(result.stderr).toBe('')
  })

  it('what the runs after the crash did', () => {
    expect({ outcomes: c.outcomes, requests: c.after }).toMatchSnapshot()
  })

  it('Access refused the client only in a forced rotation (rotate → deploy) or a failed watch (close → re-open)', () => {
    const outside = c.refusals.filter(
      r => !c.windows.some(w => r.at >= w.from && r.at <= w.to + 100)
    )
    expect(outside).toEqual([])
    if (c.windows.length === 0) expect(c.clientFailures).toEqual([])
  })

  it('leaked nothing', () => {
    expectNoAccessLeaks(c.sb, [c.killed, ...c.results])
    expect(c.sb.log.violations).toEqual([])
  })
})

describe('the crash that cannot be undone: between the rotate answer and the first secret write', () => {
  let c: Crash
  beforeAll(async () => {
    c = await crash('rotation: killed after the rotate answered (before the first secret write)')
  }, 300_000)

  it('the next run refuses (the newest secret is lost), the old secret valid until the grace end', () => {
    expect(c.outcomes[0]).toBe('failed (journal pending)')
    expect(c.results[0]!.stdout).toContain('the newest secret is lost')
    expect(c.results[0]!.stdout).toContain('force: true')
  })

  it('the forced run rotates again; its outage is measured', () => {
    expect(c.second).toBe(true)
    const window = c.windows.find(w => w.why === 'forced rotation')!
    const seconds = Math.round((window.to - window.from) / c.sb.timeScale / 100) / 10
    expect(c.refusals.length).toBeGreaterThan(0)
    expect(new Set(c.refusals.map(r => r.reason))).toEqual(new Set(['wrong secret']))
    console.log(
      `lost secret, forced re-rotation: ${c.refusals.length} refused request(s) at the Access app over ${seconds} simulated s`
    )
  })
})
