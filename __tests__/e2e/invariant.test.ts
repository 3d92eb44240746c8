/**
 * The invariant under the faults that a weaker suite let through. Each case names the fault it
 * would catch in the code; each asserts the ordered mutating requests (mutationList).
 *
 * - The revoke waits for the smoke phase to end, even when its answers are slow (a smoke phase
 *   that was started but not awaited would let the revoke through first).
 * - The smoke phase's R2 probe with the new credentials is awaited: its failure rolls back.
 * - A publish that fails for good midway (the second of three writes refused) leaves a token that
 *   is in a secret: it is deleted only after the previous values are back everywhere.
 * - A recovery that finished a rotation forward and then fails never "rolls back" to the new
 *   token: both tokens stay.
 * - A deploy that rolled the new credentials out and then failed is rolled back for real.
 * - A token expiring within 7 days is due whatever rotate-after says.
 */
import type { ChildProcess } from 'node:child_process'
import { startSandbox, type Sandbox } from '../../sandbox/index.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  expectNoLeaks,
  expectOneLiveToken,
  journalOf,
  killWhen,
  lineage,
  mutationList,
  nextRunInputs,
  secretsNow,
  startAll,
  waitForRuns,
  HEALTH_POLL_MS
} from './scenario.js'

const PUBLISH = [
  'POST variable R2_ROTATION_STATE_LOCK',
  'POST variable R2_ROTATION_STATE phase=minting',
  'POST /user/tokens → {new}',
  'PATCH variable R2_ROTATION_STATE phase=minted',
  'PATCH variable R2_ROTATION_STATE phase=publishing',
  'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {new}',
  'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {new}',
  'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {new}',
  'PATCH variable R2_ROTATION_STATE phase=published',
  'PATCH variable R2_ROTATION_STATE phase=deploying',
  'POST dispatch',
  'PATCH variable R2_ROTATION_STATE phase=deploying'
]
const ROLLBACK = [
  'PATCH variable R2_ROTATION_STATE phase=rolling-back',
  'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {previous}',
  'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {previous}',
  'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {previous}',
  'POST dispatch',
  'PATCH variable R2_ROTATION_STATE phase=rolling-back',
  'DELETE /user/tokens/{new}',
  'PATCH variable R2_ROTATION_STATE phase=rolled-back',
  'DELETE variable R2_ROTATION_STATE_LOCK'
]

interface Case {
  sb: Sandbox
  results: ActionResult[]
  healthFailures: Array<{ at: number; status: number }>
}

async function run(
  prepare: (sb: Sandbox) => void,
  options: {
    then?: (sb: Sandbox, first: ActionResult) => Promise<ActionResult[]>
    overrides?: Record<string, string>
    /** Kills the first run right after the sandbox answered the request this matches. */
    killAfter?: (entry: { method: string; path: string }) => boolean
  } = {}
): Promise<Case> {
  const sb = await startSandbox()
  try {
    prepare(sb)
    let child: ChildProcess | undefined
    const unhook = options.killAfter ? killWhen(sb, () => child, options.killAfter) : () => {}
    const watch = sb.watchHealth(HEALTH_POLL_MS)
    const first = await runAction(sb, sandboxInputs(sb, options.overrides ?? {}), {
      onSpawn: c => (child = c)
    })
    unhook()
    const later = (await options.then?.(sb, first)) ?? []
    return { sb, results: [first, ...later], healthFailures: await watch.stop() }
  } finally {
    await sb.stop()
  }
}

/** Once the first deploy has been dispatched (the app was healthy in preflight), until the rollback begins. */
function afterDispatch(sb: Sandbox, start: () => void, stop?: () => void): void {
  let started = false
  sb.github.service.onAnswered = entry => {
    if (!started && entry.method === 'POST' && entry.path.endsWith('/dispatches')) {
      started = true
      start()
    }
    const body = entry.body as { value?: string } | undefined
    if (body?.value?.includes('"phase":"rolling-back"')) stop?.()
  }
}

const cases = {
  slowAnswers: () =>
    run(sb => {
      // Every smoke answer and every R2 answer arrives late.
      sb.app.service.latencyMs = 150
      sb.r2.service.latencyMs = 60
    }),
  probeFails: () =>
    run(sb =>
      afterDispatch(
        sb,
        // From the deploy of the new token until the rollback begins, the R2 probe's object
        // writes fail for good (404, not retried); the app's reads work.
        () => sb.r2.service.inject({ path: /\.r2-token-rotation\//, status: 404, times: 1000 }),
        () => (sb.r2.service.faults.length = 0)
      )
    ),
  publishRefusedMidway: () =>
    run(sb =>
      sb.github.service.inject({
        method: 'PUT',
        path: /\/actions\/secrets\/R2_ACCESS_KEY_ID$/,
        status: 403,
        times: 1
      })
    ),
  forwardThenFails: () =>
    run(() => undefined, {
      // Killed right after its first secret write: the secrets hold a mix.
      killAfter: e => e.method === 'PUT' && e.path.endsWith('/secrets/CLOUDFLARE_API_TOKEN'),
      then: async sb => {
        await waitForRuns(sb)
        // The next run finishes the rotation forward; its deploy fails.
        sb.github.queueRun({ conclusion: 'failure' })
        return [await runAction(sb, nextRunInputs(sb))]
      }
    }),
  rolledOutThenFailed: () =>
    run(sb => sb.github.queueRun({ conclusion: 'failure', rollout: 'always' })),
  expiresSoon: () =>
    run(
      sb => {
        // Issued yesterday, so not due under rotate-after 30d, but it expires in 3 days.
        const token = sb.cloudflare.findById(sb.current.id)!
        const at = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
        token.issued_on = at(Date.now() - 86_400_000)
        token.expires_on = at(Date.now() + 3 * 86_400_000)
      },
      { overrides: { 'rotate-after': '30d' } }
    )
}
type Name = keyof typeof cases
const names = Object.keys(cases) as Name[]
const started = startAll(
  names.map(name => cases[name]),
  3
)
const outcome = (name: Name): Promise<Case> => started[names.indexOf(name)]!

describe('the revoke waits for the smoke phase to end, however slow its answers', () => {
  it('disables the old token only after every smoke answer and probe answer was sent', async () => {
    const { sb, results } = await outcome('slowAnswers')
    expect(results[0]!.outputs.result).toBe('rotated')
    const disable = sb.log
      .requests({ service: 'cloudflare', method: 'PUT' })
      .find(e => e.path.endsWith(`/tokens/${sb.current.id}`))!
    const newId = results[0]!.outputs['token-id']!
    const smokePhase = sb.log
      .requests({ service: 'app' })
      .filter(e => e.headers['x-smoke-check'] && e.seq < disable.seq)
    const probes = sb.log
      .requests({ service: 'r2' })
      .filter(e => String(e.headers.authorization).includes(`Credential=${newId}/`))
      .filter(e => e.path.includes('.r2-token-rotation/') && e.seq < disable.seq)
    expect(smokePhase.length).toBeGreaterThan(0)
    expect(probes.length).toBeGreaterThan(0)
    for (const answered of [...smokePhase, ...probes]) {
      expect(answered.answeredAt).toBeDefined()
      expect(disable.at).toBeGreaterThanOrEqual(answered.answeredAt!)
    }
    expectOneLiveToken(sb)
  })
})

describe("the smoke phase's R2 probe fails after the deploy", () => {
  it('rolls back; nothing is disabled', async () => {
    const { sb, results, healthFailures } = await outcome('probeFails')
    const [result] = results
    expect(result!.outputs.result).toBe('rolled-back')
    expect(result!.stdout).toMatch(
      /::error::Phase smoke failed: The R2 write probe of bucket avatars-bucket with the credentials of token [0-9a-f]{32} failed/
    )
    expect(mutationList(sb)).toEqual([
      ...PUBLISH,
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      ...ROLLBACK
    ])
    expect(healthFailures).toEqual([])
    expectOneLiveToken(sb)
  })
})

describe('a publish refused for good at its second write (403)', () => {
  it('does not delete the new token at once: the previous values go back everywhere first', async () => {
    const { sb, results, healthFailures } = await outcome('publishRefusedMidway')
    expect(results[0]!.outputs.result).toBe('rolled-back')
    expect(mutationList(sb)).toEqual([
      ...PUBLISH.slice(0, 6),
      'PUT secret repo:acme/site R2_ACCESS_KEY_ID → 403',
      'PATCH variable R2_ROTATION_STATE phase=rolling-back',
      ...ROLLBACK.slice(1)
    ])
    expect(healthFailures).toEqual([])
    expectOneLiveToken(sb)
    expectNoLeaks(sb, results)
  })
})

describe('a recovery that finished a rotation forward, then failed after its publish', () => {
  it('keeps both tokens: it never rolls back to the new token nor deletes it', async () => {
    const { sb, results } = await outcome('forwardThenFails')
    const [killed, recovery] = results
    expect(killed!.signal).toBe('SIGKILL')
    expect(recovery!.exitCode).toBe(1)
    expect(recovery!.outputs.result).toBe('failed')
    expect(recovery!.stdout).toMatch(/both tokens are valid and neither was revoked/)
    expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toEqual([])
    expect(lineage(sb)).toHaveLength(2)
    // Every secret holds the new token (published again everywhere), still valid.
    const minted = sb.log.events('token.created')[0]!.detail.id as string
    expect(secretsNow(sb).accessKeyId).toBe(minted)
    expect(sb.cloudflare.findById(minted)?.status).toBe('active')
    expect(journalOf(sb)).toMatchObject({ phase: 'pending', pending_token_id: minted })
    expectNoLeaks(sb, results)
  })
})

describe('a deploy that rolled the new credentials out and then failed', () => {
  it('is rolled back for real: the app ends on the previous token and never failed', async () => {
    const { sb, results, healthFailures } = await outcome('rolledOutThenFailed')
    expect(results[0]!.outputs.result).toBe('rolled-back')
    const minted = sb.log.events('token.created')[0]!.detail.id as string
    expect(sb.app.deployments.map(d => d.accessKeyId)).toEqual([
      sb.current.id,
      minted,
      sb.current.id
    ])
    expect(mutationList(sb)).toEqual([...PUBLISH, ...ROLLBACK])
    expect(healthFailures).toEqual([])
    expectOneLiveToken(sb)
  })
})

describe('a token expiring within 7 days', () => {
  it('is due whatever rotate-after says', async () => {
    const { sb, results } = await outcome('expiresSoon')
    expect(results[0]!.outputs.result).toBe('rotated')
    expect(results[0]!.stdout).toMatch(
      /::warning::The current token [0-9a-f]{32} expires on .*, within 7 days\./
    )
    expectOneLiveToken(sb)
  })
})
