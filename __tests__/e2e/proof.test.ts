/**
 * Proof before revoke, end to end: the old token dies only when the app is shown to run without
 * it. Each scenario asserts the ordered list of mutating requests (mutationList) and the app's
 * health history.
 *
 * - A deploy that keeps the old credentials ("stale": a cached build, another environment's
 *   secrets) concludes success. With `contains={access-key-id}` the smoke phase catches it and
 *   nothing is ever disabled; without it, the watch after the disable catches it, the previous
 *   token is enabled again at once, and the failing window is bounded.
 * - A shadowing environment secret, an empty deploy-workflow and an app failing before the
 *   rotation are refused with no mutation; `deploy-workflow: none` rotates when the consumers
 *   read the secrets when they start.
 * - A healthy rotation disables the old token, watches, and only then deletes it.
 */
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import type { RequestEntry } from '../../sandbox/log.js'
import {
  expectNoLeaks,
  expectOneLiveToken,
  journalOf,
  mutationList,
  secretsNow,
  startAll,
  HEALTH_POLL_MS
} from './scenario.js'

interface Scenario {
  sb: Sandbox
  result: ActionResult
  /** The app's failed health checks while the action ran (the watcher, see HEALTH_POLL_MS). */
  healthFailures: Array<{ at: number; status: number }>
}

async function scenario(
  options: SandboxOptions,
  overrides: (sb: Sandbox) => Record<string, string>,
  prepare?: (sb: Sandbox) => void
): Promise<Scenario> {
  const sb = await startSandbox(options)
  try {
    prepare?.(sb)
    const watch = sb.watchHealth(HEALTH_POLL_MS)
    const result = await runAction(sb, sandboxInputs(sb, overrides(sb)))
    const healthFailures = await watch.stop()
    return { sb, result, healthFailures }
  } finally {
    await sb.stop()
  }
}

const errors = (result: ActionResult): string[] =>
  result.stdout.split('\n').filter(l => l.startsWith('::error'))

/** The smoke check that proves which credential serves (the sample app names its key). */
const proving = (sb: Sandbox): Record<string, string> => ({
  'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=access-key-id={access-key-id}`
})

/** The requests of a rotation from its start to its publish (the same in every scenario). */
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

/** A rollback: the previous values everywhere, a deploy, the smoke checks, then the new token deleted. */
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

const stale = (sb: Sandbox): void => sb.github.queueRun({ rollout: 'stale' })

/**
 * A stale deploy, and Cloudflare's clock moving two seconds on once the action has read the old
 * token's `last_used_on` after the deploy: the app keeps using the old token, so its uses from
 * then on carry a later second (whole seconds), as on a real run where seconds pass between the
 * deploy and the smoke checks.
 */
const staleThenSecondsPass = (sb: Sandbox): void => {
  stale(sb)
  let moved = false
  sb.cloudflare.service.onAnswered = entry => {
    const readsOld = entry.method === 'GET' && entry.path.endsWith(`/tokens/${sb.current.id}`)
    if (!moved && readsOld && sb.log.events('run.completed').length > 0) {
      moved = true
      sb.cloudflare.skewMs += 2000
    }
  }
}

const scenarios = {
  staleCaught: () => scenario({}, proving, stale),
  staleWatched: () => scenario({}, () => ({ 'revoke-watch': '30s' }), staleThenSecondsPass),
  shadowed: () =>
    scenario(
      // The deploy job runs in environment production, which holds its own R2 secrets.
      { environment: 'production', targets: [{ kind: 'repo', repo: 'acme/site' }] },
      () => ({ 'secret-targets': 'repo' })
    ),
  noWorkflow: () => scenario({}, () => ({ 'deploy-workflow': '' })),
  none: () =>
    scenario({ consumer: 'reads-secrets' }, sb => ({
      ...proving(sb),
      'deploy-workflow': 'none',
      'deploy-inputs': ''
    })),
  unhealthy: () =>
    scenario(
      {},
      () => ({}),
      sb => sb.app.service.inject({ path: /^\/healthz$/, status: 503, times: 1_000_000 })
    ),
  unhealthyDryRun: () =>
    scenario(
      {},
      () => ({ 'dry-run': 'true' }),
      sb => sb.app.service.inject({ path: /^\/healthz$/, status: 503, times: 1_000_000 })
    ),
  healthy: () => scenario({}, sb => ({ ...proving(sb), 'revoke-watch': '2m' }))
}
const names = Object.keys(scenarios) as Array<keyof typeof scenarios>
const started = startAll(
  names.map(name => scenarios[name]),
  4
)
const run = (name: keyof typeof scenarios): Promise<Scenario> => started[names.indexOf(name)]!

describe('a deploy that keeps the old credentials, caught by contains={access-key-id}', () => {
  let s: Scenario
  beforeAll(async () => {
    s = await run('staleCaught')
  }, 120_000)

  it('disables nothing: the smoke phase fails and the rotation rolls back', () => {
    expect(s.result.exitCode).toBe(1)
    expect(s.result.outputs.result).toBe('rolled-back')
    expect(mutationList(s.sb)).toEqual([
      ...PUBLISH,
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      ...ROLLBACK
    ])
    expect(errors(s.result)).toEqual([
      expect.stringMatching(
        /^::error::Phase smoke failed: 1 smoke check\(s\) failed: .*\/healthz \(status 200, but the body does not name the credential that should be serving \(access-key-id=[0-9a-f]{32}\): the app runs on other credentials\)/
      )
    ])
  })

  it('never let /healthz fail, and leaves the previous token serving everywhere', () => {
    expect(s.healthFailures).toEqual([])
    expect(s.sb.app.healthChecks.length).toBeGreaterThan(0)
    expectOneLiveToken(s.sb)
    expect(secretsNow(s.sb).accessKeyId).toBe(s.sb.current.id)
    // After a rollback the outputs describe what is in service.
    expect(s.result.outputs['token-id']).toBe(s.sb.current.id)
    expect(s.result.outputs['access-key-id']).toBe(s.sb.current.id)
    expectNoLeaks(s.sb, [s.result])
    expect(s.sb.log.violations).toEqual([])
  })
})

describe('a deploy that keeps the old credentials, caught by the watch', () => {
  let s: Scenario
  let disable: RequestEntry
  let enable: RequestEntry
  beforeAll(async () => {
    s = await run('staleWatched')
    const puts = s.sb.log
      .requests({ service: 'cloudflare', method: 'PUT' })
      .filter(e => e.path.endsWith(`/tokens/${s.sb.current.id}`))
    ;[disable, enable] = puts as [RequestEntry, RequestEntry]
  }, 120_000)

  it('disables the previous token, enables it again at once, then rolls back', () => {
    expect(s.result.exitCode).toBe(1)
    expect(s.result.outputs.result).toBe('rolled-back')
    expect(mutationList(s.sb)).toEqual([
      ...PUBLISH,
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PUT /user/tokens/{previous} status=disabled',
      'PUT /user/tokens/{previous} status=active',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      ...ROLLBACK
    ])
    // The journal recorded the disable before it happened, and the re-enable after.
    expect(journalOf(s.sb)).toMatchObject({
      phase: 'rolled-back',
      revoke: { disabled_at: expect.any(String), reenabled_at: expect.any(String) }
    })
  })

  it('sends the whole token back on each update: the IP condition survives', () => {
    const condition = s.sb.cloudflare.findById(s.sb.current.id)!.condition
    expect(condition).toEqual({ request_ip: { in: ['192.0.2.0/24'], not_in: [] } })
    for (const put of [disable, enable]) {
      expect(put.body).toMatchObject({ condition, name: 'avatars-uploader' })
    }
  })

  it('bounds and reports the window the app failed: from the disable to the re-enable', () => {
    // The outside watcher checks at the disable, but on a loaded machine its check may begin
    // after the window closed; the app's own record (the action's watch checks it too) cannot
    // miss it. Its R2 read is refused only while the token is disabled, so each failed check
    // ended after the disable reached Cloudflare and began before the re-enable had taken
    // effect (answered).
    const failed = s.sb.app.healthChecks.filter(h => h.status !== 200)
    expect(failed.length).toBeGreaterThan(0)
    for (const check of failed) {
      expect(check.at).toBeGreaterThanOrEqual(disable.at)
      expect(check.startedAt).toBeLessThanOrEqual(enable.answeredAt!)
    }
    // The re-enable followed the first round of checks after the disable (one check: one request).
    const between = s.sb.log
      .requests({ service: 'app' })
      .filter(e => e.headers['x-smoke-check'] && e.seq > disable.seq && e.seq < enable.seq)
    expect(between).toHaveLength(1)
    const reported = /the app failed for at most (\d+) s, from the disable to the re-enable/.exec(
      s.result.stdout
    )
    expect(reported).not.toBeNull()
    // Simulated seconds (the sandbox runs the action's clock 50 times as fast). An upper bound:
    // at least the window the simulators saw (the disable's arrival to the re-enable's answer),
    // taken in the action from before the disable is sent to after the re-enable is answered;
    // and within the 30 s watch plus the two requests.
    const reportedMs = Number(reported![1]) * 1000 * s.sb.timeScale
    expect(reportedMs).toBeGreaterThanOrEqual(enable.answeredAt! - disable.at)
    expect(Number(reported![1])).toBeLessThanOrEqual(40)
    expect(s.result.summary).toContain('Watch')
    expect(s.result.summary).toMatch(
      /the previous token was enabled again \(app failing for at most/
    )
  })

  it('reports that the previous token was used after the deploy concluded (a hint)', () => {
    expect(s.result.stdout).toMatch(
      /::warning::The previous token [0-9a-f]{32} was used after the deploy concluded/
    )
    expect(s.result.summary).toContain('Evidence of use')
  })

  it('ends with the previous token serving everywhere and the new one deleted', () => {
    expectOneLiveToken(s.sb)
    expect(s.result.outputs['token-id']).toBe(s.sb.current.id)
    expectNoLeaks(s.sb, [s.result])
    expect(s.sb.log.violations).toEqual([])
  })
})

describe('refused before anything changes', () => {
  it('an environment secret that shadows the one written: names the environment, the secret and the fix', async () => {
    const s = await run('shadowed')
    expect(s.result.exitCode).toBe(1)
    expect(mutationList(s.sb)).toEqual([])
    const [error] = errors(s.result)
    expect(error).toMatch(
      /Environment 'production' of acme\/site holds its own secret CLOUDFLARE_API_TOKEN, which the deploy job 'deploy' reads instead of the one this rotation writes; add `env:acme\/site:production` to secret-targets/
    )
    expect(error).toMatch(/Nothing was changed\./)
  })

  it('an empty deploy-workflow: an error naming it, and no request at all', async () => {
    const s = await run('noWorkflow')
    expect(s.result.exitCode).toBe(1)
    expect(errors(s.result)).toEqual([
      expect.stringContaining("::error::Input 'deploy-workflow': required")
    ])
    expect(s.sb.log.requests({ service: 'cloudflare' })).toEqual([])
    expect(s.sb.log.requests({ service: 'github' })).toEqual([])
  })

  it('an app failing before the rotation: refused, nothing minted; a dry run says the same', async () => {
    for (const s of [await run('unhealthy'), await run('unhealthyDryRun')]) {
      expect(s.result.exitCode).toBe(1)
      expect(s.result.outputs.result).toBe('failed')
      expect(mutationList(s.sb)).toEqual([])
      expect(errors(s.result)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^::error::Phase preflight failed: The app is failing before the rotation: 1 smoke check\\(s\\) fail with the credentials in use now: ${s.sb.appUrl}/healthz \\(status 503, expected 200\\)`
          )
        )
      ])
    }
  })
})

describe('deploy-workflow: none, with consumers that read the secrets when they start', () => {
  it('rotates: publish, smoke, then the watched revoke', async () => {
    const s = await run('none')
    expect(s.result.exitCode).toBe(0)
    expect(s.result.outputs.result).toBe('rotated')
    expect(mutationList(s.sb)).toEqual([
      ...PUBLISH.slice(0, 9),
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PUT /user/tokens/{previous} status=disabled',
      'DELETE /user/tokens/{previous}',
      'PATCH variable R2_ROTATION_STATE phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    // A consumer that starts between two secret writes reads a mix of old and new values (GitHub
    // writes one secret at a time); outside the publish, including the whole watch, none failed:
    // each failed check read the secrets (when it began) between the first write's arrival and
    // the last write's answer.
    const writes = s.sb.log.requests({ service: 'github', method: 'PUT' })
    const failed = s.sb.app.healthChecks.filter(h => h.status !== 200)
    for (const check of failed) {
      expect(check.startedAt).toBeGreaterThanOrEqual(writes[0]!.at)
      expect(check.startedAt).toBeLessThanOrEqual(writes.at(-1)!.answeredAt!)
    }
    expectOneLiveToken(s.sb)
    expectNoLeaks(s.sb, [s.result])
  })
})

describe('a healthy rotation', () => {
  let s: Scenario
  beforeAll(async () => {
    s = await run('healthy')
  }, 120_000)

  it('disables the previous token, watches for revoke-watch, and only then deletes it', () => {
    expect(s.result.exitCode).toBe(0)
    expect(mutationList(s.sb)).toEqual([
      ...PUBLISH,
      'PATCH variable R2_ROTATION_STATE phase=smoke',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PATCH variable R2_ROTATION_STATE phase=revoking',
      'PUT /user/tokens/{previous} status=disabled',
      'DELETE /user/tokens/{previous}',
      'PATCH variable R2_ROTATION_STATE phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    // The checks ran throughout the watch: two simulated minutes (2.4 s of real time), a round
    // every five simulated seconds at most.
    const disable = s.sb.log.requests({ service: 'cloudflare', method: 'PUT' })[0]!
    const remove = s.sb.log.requests({ service: 'cloudflare', method: 'DELETE' })[0]!
    const watched = s.sb.log
      .requests({ service: 'app' })
      .filter(e => e.headers['x-smoke-check'] && e.seq > disable.seq && e.seq < remove.seq)
    expect(watched.length).toBeGreaterThanOrEqual(10)
    expect(watched.every(e => e.status === 200)).toBe(true)
    expect(remove.at - disable.at).toBeGreaterThanOrEqual(120_000 * s.sb.timeScale)
    // The watch as reported: at least revoke-watch (simulated seconds; a loaded machine adds to it).
    const watch =
      /passed: \d+ round\(s\) of checks over (\d+\.\d) s with the previous token disabled/.exec(
        s.result.summary
      )
    expect(Number(watch?.[1])).toBeGreaterThanOrEqual(120)
  })

  it('never let the app fail, and leaked nothing', () => {
    expect(s.healthFailures).toEqual([])
    expectOneLiveToken(s.sb)
    expectNoLeaks(s.sb, [s.result])
    expect(s.sb.log.violations).toEqual([])
  })
})
