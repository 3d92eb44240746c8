/**
 * The deploy step against the GitHub simulator on a simulated clock: runs of simulated minutes
 * followed in milliseconds, the rate-limit cost counted by the simulator.
 */
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim, ManualClock, type RunBehavior, type SimRun } from '../sandbox/github.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import type { Clock } from '../src/backoff.js'
import {
  type RunOutcome,
  type WorkflowInfo,
  dispatchWorkflow,
  followRun,
  inspectWorkflow
} from '../src/github/deploy.js'
import { DEPLOY_YAML, TOKEN, site } from './deploy-fixtures.js'

describe('on a simulated clock', () => {
  const ROTATION_YAML = `name: Deploy
run-name: Deploy \${{ inputs.rotation_id }}
on:
  workflow_dispatch:
    inputs:
      rotation_id:
        description: set by the token rotation
        required: true
      reason:
        default: scheduled
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment: production
    steps:
      - name: Deploy the app
        run: ./deploy.sh
`

  const THREE_JOBS_YAML = `name: Deploy
on: workflow_dispatch
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: npm run build
  deploy:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: ./deploy.sh
  verify:
    needs: deploy
    runs-on: ubuntu-latest
    steps:
      - run: ./verify.sh
`

  interface World {
    clock: ManualClock
    log: RequestLog
    sim: GitHubSim
    github: GitHubClient
    workflow: WorkflowInfo
    sleep: (ms: number) => Promise<void>
    now: () => number
    /** The simulator's clock as the action's: each sleep moves it. */
    time: Clock
    warnings: string[]
    infos: string[]
  }

  // The tests run side by side (each has its own simulator and clock): most of their time is
  // spent waiting on the loopback round trips, which then overlap.
  const worlds: World[] = []
  afterAll(async () => {
    await Promise.all(worlds.map(w => w.sim.stop()))
  })

  /** Each request takes `latencyMs` of simulated time (a round trip to api.github.com). */
  async function simulate(
    options: { rejectReturnRunDetails?: boolean; yaml?: string; latencyMs?: number } = {}
  ): Promise<World> {
    // From a whole second, so that time stamps (whole seconds) fall where the test expects them.
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000)
    const log = new RequestLog()
    const sim = new GitHubSim(log, {
      clock,
      rejectReturnRunDetails: options.rejectReturnRunDetails
    })
    sim.addToken(TOKEN)
    sim.addRepo('acme/site', { environments: ['production'] })
    sim.addWorkflow('acme/site', {
      path: '.github/workflows/deploy.yml',
      name: 'Deploy',
      content: options.yaml ?? DEPLOY_YAML
    })
    await sim.start()
    const warnings: string[] = []
    const infos: string[] = []
    const github = createGitHubClient({
      token: TOKEN,
      baseUrl: sim.url,
      log: { info: m => infos.push(m), warning: m => warnings.push(m), debug: () => {} }
    })
    const latency = options.latencyMs ?? 100
    github.hook.before('request', () => clock.advance(latency))
    const inputs: Record<string, string> =
      options.yaml === undefined ? { target: 'production' } : {}
    const workflow = await inspectWorkflow(github, site, 'deploy.yml', inputs)
    log.entries.length = 0
    const world: World = {
      clock,
      log,
      sim,
      github,
      workflow,
      sleep: async ms => clock.advance(ms),
      now: () => clock.now(),
      time: { now: () => clock.now(), sleep: async ms => clock.advance(ms), scale: 1 },
      warnings,
      infos
    }
    worlds.push(world)
    return world
  }

  const quietLog = (w: World) => ({
    info: (m: string) => w.infos.push(m),
    warning: (m: string) => w.warnings.push(m),
    debug: () => {}
  })

  /** Dispatches and follows one run; what it cost and how soon its conclusion was noticed. */
  async function deployOnce(
    w: World,
    behavior: RunBehavior,
    timeoutMs = 30 * 60_000
  ): Promise<{
    outcome: RunOutcome
    counted: number
    notModified: number
    delayMs: number
    statuses: string[]
  }> {
    w.sim.queueRun(behavior)
    const first = w.log.entries.length
    const inputs: Record<string, string> = w.workflow.declaredInputs.includes('target')
      ? { target: 'production' }
      : {}
    const run = await dispatchWorkflow(w.github, site, w.workflow, 'main', inputs, {
      clock: w.time,
      log: quietLog(w)
    })
    let noticed = NaN
    const statuses: string[] = []
    const outcome = await followRun(w.github, site, run.runId, {
      timeoutMs,
      clock: w.time,
      log: quietLog(w),
      onStatus: status => {
        statuses.push(status)
        if (status === 'completed') noticed = w.clock.now()
      }
    })
    const requests = w.log.entries.slice(first).filter(e => e.kind === 'request')
    const attempt = w.sim.runs.get(run.runId)!.attempts.at(-1)!
    return {
      outcome,
      counted: requests.filter(r => r.counted).length,
      notModified: requests.filter(r => r.status === 304).length,
      delayMs: noticed - (attempt.completedAtMs ?? NaN),
      statuses
    }
  }

  // The real-time comparison with a run of 60 s is `npm run bench`; here the runs are shorter
  // (the number of counted requests does not depend on the length: every other poll is a 304).
  it.concurrent(
    'at default settings, a run queued 3 s and running 20 s costs at most 4 counted requests and is noticed within a second',
    async () => {
      const w = await simulate()
      const delays: number[] = []
      const counts: number[] = []
      // Five runs whose ends fall evenly across one poll period (1 s pause + 100 ms request).
      for (let i = 0; i < 5; i++) {
        const result = await deployOnce(w, {
          queuedMs: 3000,
          runningMs: 20_000 + i * 220,
          conclusion: 'success'
        })
        expect(result.outcome.ok).toBe(true)
        expect(result.statuses).toEqual(['queued', 'in_progress', 'completed'])
        delays.push(result.delayMs)
        counts.push(result.counted)
      }
      const sorted = [...delays].sort((a, b) => a - b)
      const median = sorted[2]!
      // Dispatch + first look (queued) + in_progress + completed; every other poll is a free 304.
      expect(Math.max(...counts)).toBeLessThanOrEqual(4)
      expect(median).toBeLessThanOrEqual(1000)
      expect(Math.max(...delays)).toBeLessThanOrEqual(1100)
      console.info(
        `deploy benchmark (queued 3 s, running 20 s, default settings, 100 ms a request): ` +
          `counted requests ${Math.max(...counts)}, detection delay median ${median} ms, ` +
          `mean ${Math.round(delays.reduce((x, y) => x + y) / delays.length)} ms, max ${Math.max(...delays)} ms`
      )
      expect(w.log.violations).toEqual([])
    }
  )

  it.concurrent(
    'follows a three-job run of 2 simulated minutes for at most 10 counted requests',
    async () => {
      const w = await simulate({ yaml: THREE_JOBS_YAML })
      const result = await deployOnce(w, {
        queuedMs: 20_000,
        runningMs: 2 * 60_000,
        conclusion: 'success'
      })
      expect(result.outcome.ok).toBe(true)
      // Dispatch, queued, in progress, two job hand-overs (each changes updated_at), completed.
      expect(result.counted).toBeLessThanOrEqual(10)
      expect(result.counted).toBe(6)
      expect(result.notModified).toBeGreaterThan(100)
      expect(result.delayMs).toBeLessThanOrEqual(1100)
      expect(w.log.violations).toEqual([])
    }
  )

  it.concurrent('follows a run re-run during the wait to its latest attempt', async () => {
    const w = await simulate()
    const result = await deployOnce(w, {
      queuedMs: 2000,
      runningMs: 20_000,
      conclusion: 'failure',
      // Re-run at once, before anyone could read the failure (e.g. an automatic retry).
      rerun: { queuedMs: 2000, runningMs: 20_000, conclusion: 'success' }
    })
    expect(result.outcome).toMatchObject({ ok: true, attempt: 2 })
    expect(w.infos).toContain(`Deploy run ${result.outcome.runId} was re-run; following attempt 2.`)
    expect(w.log.events('run.rerun')).toHaveLength(1)
  })

  it.concurrent('reports the failed job of a re-run attempt, not of the first', async () => {
    const w = await simulate()
    const result = await deployOnce(w, {
      queuedMs: 1000,
      runningMs: 5000,
      conclusion: 'cancelled',
      rerun: { queuedMs: 1000, runningMs: 5000, conclusion: 'timed_out' }
    })
    expect(result.outcome).toMatchObject({
      ok: false,
      reason: 'conclusion',
      conclusion: 'timed_out',
      attempt: 2,
      failedJobs: [{ name: 'deploy', conclusion: 'timed_out', failedSteps: ['Deploy the app'] }]
    })
  })

  it.concurrent(
    'reports a run waiting for approval, counts the wait toward the timeout, and leaves the run alone',
    async () => {
      const w = await simulate({ yaml: ROTATION_YAML })
      const seen: Array<{ status: string; htmlUrl: string }> = []
      w.sim.queueRun({ queuedMs: 2000, waitingMs: Infinity })
      const run = await dispatchWorkflow(
        w.github,
        site,
        w.workflow,
        'main',
        {},
        { log: quietLog(w) }
      )
      const outcome = await followRun(w.github, site, run.runId, {
        timeoutMs: 90_000,
        clock: w.time,
        log: quietLog(w),
        onStatus: (status, r) => seen.push({ status, htmlUrl: r.htmlUrl })
      })
      expect(seen).toEqual([
        { status: 'queued', htmlUrl: run.htmlUrl },
        { status: 'waiting', htmlUrl: run.htmlUrl }
      ])
      expect(outcome).toMatchObject({ ok: false, reason: 'timeout', status: 'waiting' })
      expect(w.sim.runs.get(run.runId)!.status).toBe('waiting')
      expect(w.log.requests({ method: 'POST' })).toHaveLength(1)
    }
  )

  it.concurrent('follows a run approved during the wait to success', async () => {
    const w = await simulate({ yaml: ROTATION_YAML })
    const result = await deployOnce(w, { queuedMs: 2000, waitingMs: 30_000, runningMs: 10_000 })
    expect(result.outcome.ok).toBe(true)
    expect(result.statuses).toEqual(['queued', 'waiting', 'in_progress', 'completed'])
    expect(result.counted).toBeLessThanOrEqual(5)
  })

  it.concurrent(
    'waits out a spent rate limit (403 with retry-after) and goes on following',
    async () => {
      const w = await simulate()
      w.sim.queueRun({ queuedMs: 1000, runningMs: 30 * 60_000 })
      const run = await dispatchWorkflow(w.github, site, w.workflow, 'main', {
        target: 'production'
      })
      w.sim.setRateLimitRemaining(TOKEN, 0)
      const sleeps: number[] = []
      const outcome = await followRun(w.github, site, run.runId, {
        timeoutMs: 2 * 3600_000,
        clock: {
          ...w.time,
          sleep: async ms => {
            sleeps.push(ms)
            await w.sleep(ms)
          }
        },
        log: quietLog(w)
      })
      expect(outcome.ok).toBe(true)
      expect(w.warnings[0]).toMatch(
        /^Only 0 of 5000 GitHub API requests are left until .*The budget resets within deploy-timeout/
      )
      // The client does not wait an hour inside one request; followRun waits between polls.
      expect(w.warnings).toContainEqual(
        expect.stringMatching(
          /^GitHub rate limit while following deploy run \d+; polling again in 360\d s\. GitHub answered 403: API rate limit exceeded/
        )
      )
      // One wait of about the hour until the reset, not a poll a second against a closed door.
      expect(Math.max(...sleeps)).toBeGreaterThan(3000_000)
      expect(w.log.requests().filter(r => r.status === 403)).toHaveLength(1)
    }
  )

  it.concurrent('keeps following through GitHub errors (5xx) within the deadline', async () => {
    const w = await simulate()
    w.sim.queueRun({ queuedMs: 1000, runningMs: 20_000 })
    const run = await dispatchWorkflow(w.github, site, w.workflow, 'main', { target: 'production' })
    // More failures in a row than the client retries (3), each asking for no wait.
    w.sim.service.inject({
      method: 'GET',
      path: /\/runs\/\d+$/,
      status: 502,
      retryAfter: 0,
      times: 4
    })
    const outcome = await followRun(w.github, site, run.runId, {
      timeoutMs: 60_000,
      clock: w.time,
      log: quietLog(w)
    })
    expect(outcome.ok).toBe(true)
    expect(
      w.warnings.some(m => /^Reading deploy run \d+ failed \(GitHub answered 502/.test(m))
    ).toBe(true)
  })

  it.concurrent('warns at the start when the budget is too low for the deploy', async () => {
    const w = await simulate()
    w.sim.queueRun({ queuedMs: 1000, runningMs: 2000 })
    const run = await dispatchWorkflow(w.github, site, w.workflow, 'main', { target: 'production' })
    w.sim.setRateLimitRemaining(TOKEN, 25)
    const outcome = await followRun(w.github, site, run.runId, {
      timeoutMs: 10 * 60_000,
      clock: w.time,
      log: quietLog(w)
    })
    expect(outcome.ok).toBe(true)
    expect(w.warnings).toEqual([
      expect.stringMatching(
        /^Only 25 of 5000 GitHub API requests are left until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\. Following the deploy run needs about 10 .* It resets only after deploy-timeout/
      )
    ])
    // The budget was read for free.
    expect(w.log.requests().find(r => r.path === '/rate_limit')?.counted).toBe(false)
  })

  describe('when the server rejects return_run_details', () => {
    /** Another dispatch of the same workflow by the same user, `offsetMs` from ours, listed late. */
    function unrelatedDispatch(w: World, offsetMs: number, inputs: Record<string, string>): void {
      let done = false
      w.sim.hooks.onDispatch = (ours: SimRun) => {
        if (done) return
        done = true
        w.sim.dispatchAs('sandbox-bot', 'acme/site', 'deploy.yml', {
          inputs,
          createdAtMs: Date.parse(ours.createdAt) + offsetMs,
          behavior: { queuedMs: 500, runningMs: 1000, conclusion: 'failure' }
        })
      }
    }

    it.concurrent(
      'finds the run by the rotation id in its title, whatever else was dispatched',
      async () => {
        const w = await simulate({ rejectReturnRunDetails: true, yaml: ROTATION_YAML })
        expect(w.workflow.runNameUsesRotationId).toBe(true)
        unrelatedDispatch(w, 0, { rotation_id: 'someone-else' })
        const run = await dispatchWorkflow(
          w.github,
          site,
          w.workflow,
          'main',
          { reason: 'rotation' },
          { clock: w.time, log: quietLog(w), rotationId: 'r-42' }
        )
        const ours = w.sim.runs.get(run.runId)!
        expect(ours.displayTitle).toBe('Deploy r-42')
        expect(run.rotationId).toBe('r-42')
        const posts = w.log.requests({ method: 'POST' })
        expect(posts.map(p => [p.status, p.body])).toEqual([
          [
            422,
            {
              ref: 'main',
              inputs: { reason: 'rotation', rotation_id: 'r-42' },
              return_run_details: true
            }
          ],
          [204, { ref: 'main', inputs: { reason: 'rotation', rotation_id: 'r-42' } }]
        ])
        // No snapshot of the list is needed: one look found it.
        expect(w.log.requests({ method: 'GET' }).map(r => r.path.split('?')[0])).toEqual([
          '/rate_limit',
          `/repos/acme/site/actions/workflows/${w.workflow.id}/runs`
        ])
        expect(w.log.violations).toEqual([])
      }
    )

    it.concurrent(
      'without a rotation id, ignores a dispatch created one second earlier',
      async () => {
        // Requests of 10 ms: everything up to our dispatch happens within its first second.
        const w = await simulate({ rejectReturnRunDetails: true, latencyMs: 10 })
        unrelatedDispatch(w, -1000, { target: 'staging' })
        const run = await dispatchWorkflow(
          w.github,
          site,
          w.workflow,
          'main',
          { target: 'production' },
          { clock: w.time, log: quietLog(w) }
        )
        expect(w.sim.runs.size).toBe(2)
        expect(w.sim.runs.get(run.runId)!.inputs.target).toBe('production')
        expect(run.rotationId).toBeUndefined()
        // The rejected POST, the snapshot, the POST; then looks until the one candidate settled.
        const posts = w.log.requests({ method: 'POST' })
        expect(
          posts.map(p => 'rotation_id' in ((p.body as { inputs: object }).inputs ?? {}))
        ).toEqual([false, false])
        expect(w.log.violations).toEqual([])
      }
    )

    it.concurrent('refuses to guess between two runs created in the same second', async () => {
      const w = await simulate({ rejectReturnRunDetails: true })
      unrelatedDispatch(w, 0, { target: 'staging' })
      await expect(
        dispatchWorkflow(
          w.github,
          site,
          w.workflow,
          'main',
          { target: 'production' },
          { clock: w.time, log: quietLog(w) }
        )
      ).rejects.toThrow(
        /but 2 new workflow_dispatch runs match it \(same workflow, branch and time\): https:\/\/github\.com\/acme\/site\/actions\/runs\/\d+ .*, https:\/\/github\.com\/acme\/site\/actions\/runs\/\d+ .*Refusing to guess/
      )
    })

    it.concurrent('refuses a run that shows up beside ours while it settles', async () => {
      const w = await simulate({ rejectReturnRunDetails: true })
      let ours: SimRun | undefined
      w.sim.hooks.onDispatch = run => {
        ours ??= run
      }
      const sleep = async (ms: number) => {
        await w.sleep(ms)
        // Someone else's dispatch in the same second, listed two seconds after ours.
        if (ours && w.sim.runs.size === 1 && w.clock.now() - Date.parse(ours.createdAt) > 2000) {
          w.sim.dispatchAs('sandbox-bot', 'acme/site', 'deploy.yml', {
            inputs: { target: 'staging' },
            createdAtMs: Date.parse(ours.createdAt)
          })
        }
      }
      await expect(
        dispatchWorkflow(
          w.github,
          site,
          w.workflow,
          'main',
          { target: 'production' },
          { clock: { ...w.time, sleep }, log: quietLog(w) }
        )
      ).rejects.toThrow(/but 2 new workflow_dispatch runs match it/)
    })
  })
})
