/**
 * The deploy step against the GitHub simulator (workflows, dispatch, runs that move on timers,
 * ETags), on the real clock and on a simulated one (runs of simulated minutes followed in
 * milliseconds, the rate-limit cost counted by the simulator), and, where a scenario needs exact
 * control (every conclusion, an unknown status, odd headers), against a small local server.
 */
import { jest } from '@jest/globals'
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim, ManualClock, type RunBehavior, type SimRun } from '../sandbox/github.js'
import { Service, type Handler } from '../sandbox/service.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import { type Clock, virtualClock } from '../src/backoff.js'
import {
  type RunOutcome,
  type WorkflowInfo,
  dispatchWorkflow,
  followRun,
  inspectWorkflow
} from '../src/github/deploy.js'

const TOKEN = 'github_pat_deploy_test'
const quiet = { info: () => {}, warning: () => {}, debug: () => {} }
const site = { owner: 'acme', repo: 'site' }

const DEPLOY_YAML = `name: Deploy
on:
  workflow_dispatch:
    inputs:
      reason:
        description: why
        default: scheduled
      target:
        type: choice
        options: [staging, production]
        required: true
      dry:
        type: boolean
        default: false
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Deploy the app
        run: ./deploy.sh
`

const PUSH_ONLY_YAML = `name: CI
on:
  push:
    branches: [main]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: npm test
`

/** Contract violations in what we sent (the simulator's own answers are its business). */
function requestViolations(log: RequestLog): string[] {
  return log.violations.filter(v => /: request: |no such operation/.test(v))
}

describe('with the GitHub simulator', () => {
  let log: RequestLog
  let sim: GitHubSim
  let github: GitHubClient
  let deployId: number

  async function startSim(options: { rejectReturnRunDetails?: boolean } = {}): Promise<void> {
    log = new RequestLog()
    sim = new GitHubSim(log, options)
    sim.addToken(TOKEN)
    sim.addRepo('acme/site', { defaultBranch: 'trunk', branches: ['release'] })
    deployId = sim.addWorkflow('acme/site', {
      path: '.github/workflows/deploy.yml',
      name: 'Deploy',
      content: DEPLOY_YAML
    })
    sim.addWorkflow('acme/site', {
      path: '.github/workflows/ci.yml',
      name: 'CI',
      content: PUSH_ONLY_YAML
    })
    sim.addWorkflow('acme/site', {
      path: '.github/workflows/old.yml',
      name: 'Old',
      content: DEPLOY_YAML,
      state: 'disabled_manually'
    })
    sim.runBehavior = { queuedMs: 20, runningMs: 40, conclusion: 'success' }
    await sim.start()
    github = createGitHubClient({ token: TOKEN, baseUrl: sim.url, log: quiet })
  }

  afterEach(async () => {
    await sim.stop()
  })

  describe('inspectWorkflow', () => {
    beforeEach(() => startSim())

    it('reads the default branch, the workflow and its declared inputs', async () => {
      const info = await inspectWorkflow(github, site, 'deploy.yml', { target: 'production' })
      expect(info).toEqual({
        id: deployId,
        name: 'Deploy',
        path: '.github/workflows/deploy.yml',
        htmlUrl: expect.any(String),
        defaultBranch: 'trunk',
        declaredInputs: ['reason', 'target', 'dry'],
        runNameUsesRotationId: false,
        environments: []
      })
      // Read-only, and the file read at the default branch.
      expect(log.mutations()).toEqual([])
      expect(log.requests().some(r => /contents\/.*\?ref=trunk$/.test(r.path))).toBe(true)
      expect(requestViolations(log)).toEqual([])
    })

    it("lists each job's environment: a name, a {name, url} map, or an expression", async () => {
      sim.addWorkflow('acme/site', {
        path: '.github/workflows/envs.yml',
        name: 'Envs',
        content: [
          'on: workflow_dispatch',
          'jobs:',
          '  build:',
          '    runs-on: ubuntu-latest',
          '    steps: [{ run: make }]',
          '  deploy:',
          '    runs-on: ubuntu-latest',
          '    environment: production',
          '    steps: [{ run: ./deploy.sh }]',
          '  verify:',
          '    runs-on: ubuntu-latest',
          '    environment: { name: staging, url: "https://staging.example.com" }',
          '    steps: [{ run: ./verify.sh }]',
          '  preview:',
          '    runs-on: ubuntu-latest',
          '    environment: ${{ inputs.target }}',
          '    steps: [{ run: ./preview.sh }]'
        ].join('\n')
      })
      const info = await inspectWorkflow(github, site, 'envs.yml', {})
      expect(info.environments).toEqual([
        { job: 'deploy', name: 'production' },
        { job: 'verify', name: 'staging' },
        { job: 'preview', expression: '${{ inputs.target }}' }
      ])
    })

    it('accepts a numeric workflow id', async () => {
      const info = await inspectWorkflow(github, site, deployId, { target: 'staging' })
      expect(info.path).toBe('.github/workflows/deploy.yml')
    })

    it('reads the file at the deploy ref when one is given', async () => {
      await inspectWorkflow(github, site, 'deploy.yml', { target: 'staging' }, 'release')
      expect(log.requests().some(r => /contents\/.*\?ref=release$/.test(r.path))).toBe(true)
    })

    it('says what to fix when the workflow is missing, disabled or not dispatchable', async () => {
      await expect(inspectWorkflow(github, site, 'nope.yml', {})).rejects.toThrow(
        /deploy-workflow 'nope.yml' was not found in acme\/site\. Give the file name/
      )
      await expect(inspectWorkflow(github, site, 'old.yml', {})).rejects.toThrow(
        /is disabled_manually; enable it/
      )
      await expect(inspectWorkflow(github, site, 'ci.yml', {})).rejects.toThrow(
        /does not declare the workflow_dispatch trigger/
      )
      await expect(
        inspectWorkflow(github, { owner: 'acme', repo: 'gone' }, 'deploy.yml', {})
      ).rejects.toThrow(
        /deploy-repository acme\/gone: cannot read the repository\. GitHub answered 404/
      )
    })

    it('finds undeclared, missing and invalid inputs before anything is dispatched', async () => {
      await expect(
        inspectWorkflow(github, site, 'deploy.yml', { target: 'staging', Reason: 'x', extra: '1' })
      ).rejects.toThrow(
        "deploy-inputs do not fit .github/workflows/deploy.yml: 'Reason' is not declared (did you mean 'reason'?); 'extra' is not declared. Declared inputs: reason, target, dry."
      )
      await expect(inspectWorkflow(github, site, 'deploy.yml', {})).rejects.toThrow(
        /required input 'target' is missing/
      )
      await expect(
        inspectWorkflow(github, site, 'deploy.yml', { target: 'qa', dry: 'yes' })
      ).rejects.toThrow(
        /'target' must be one of staging, production; 'dry' is a boolean input; pass true or false/
      )
    })
  })

  describe('the rotation_id input', () => {
    beforeEach(() => startSim())

    function withWorkflow(content: string): void {
      sim.addFile('acme/site', '.github/workflows/deploy.yml', content)
    }

    it('is left to the action even when required, and read from run-name', async () => {
      withWorkflow(
        'name: Deploy\nrun-name: "Deploy ${{ github.event.inputs.rotation_id }} (${{ inputs.reason }})"\non:\n  workflow_dispatch:\n    inputs:\n      rotation_id:\n        required: true\n      reason:\n        required: false\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n'
      )
      const info = await inspectWorkflow(github, site, 'deploy.yml', { reason: 'x' })
      expect(info.declaredInputs).toEqual(['rotation_id', 'reason'])
      expect(info.runNameUsesRotationId).toBe(true)
    })

    it('draws a warning when declared but not used in run-name', async () => {
      withWorkflow(
        'name: Deploy\nrun-name: Deploy ${{ inputs.reason }}\non:\n  workflow_dispatch:\n    inputs:\n      rotation_id: {}\n      reason: {}\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n'
      )
      const out = jest.spyOn(process.stdout, 'write').mockImplementation(() => true)
      try {
        const info = await inspectWorkflow(github, site, 'deploy.yml', {})
        expect(info.runNameUsesRotationId).toBe(false)
        expect(out.mock.calls.map(c => String(c[0])).join('')).toContain(
          '::warning::deploy-workflow .github/workflows/deploy.yml declares the input rotation_id but its run-name does not use it; add `run-name: Deploy ${{ inputs.rotation_id }}`'
        )
      } finally {
        out.mockRestore()
      }
    })

    it('is sent only when the workflow declares it', async () => {
      withWorkflow(
        'name: Deploy\non:\n  workflow_dispatch:\n    inputs:\n      rotation_id: {}\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n'
      )
      const declared = await inspectWorkflow(github, site, 'deploy.yml', {})
      const run = await dispatchWorkflow(github, site, declared, 'trunk', {}, { log: quiet })
      expect(run.rotationId).toMatch(/^[\w-]+-[0-9a-f]{8}$/)
      expect(sim.runs.get(run.runId)!.inputs).toEqual({ rotation_id: run.rotationId })
    })
  })

  describe('dispatchWorkflow and followRun', () => {
    let workflow: WorkflowInfo

    async function setUp(options: { rejectReturnRunDetails?: boolean } = {}): Promise<void> {
      await startSim(options)
      workflow = await inspectWorkflow(github, site, 'deploy.yml', { target: 'production' })
    }

    it('dispatches once with return_run_details and follows the run to success', async () => {
      await setUp()
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      const dispatches = log.requests({ method: 'POST' })
      expect(dispatches).toHaveLength(1)
      expect(dispatches[0]!.body).toEqual({
        ref: 'trunk',
        inputs: { target: 'production' },
        return_run_details: true
      })
      expect(sim.runs.has(run.runId)).toBe(true)
      expect(run.htmlUrl).toMatch(new RegExp(`/actions/runs/${run.runId}$`))
      expect(run.apiUrl).toBe(`${sim.url}/repos/acme/site/actions/runs/${run.runId}`)

      const statuses: string[] = []
      const outcome = await followRun(github, site, run.runId, {
        timeoutMs: 10_000,
        pollMs: 10,
        onStatus: status => statuses.push(status)
      })
      expect(outcome).toEqual({
        ok: true,
        conclusion: 'success',
        runId: run.runId,
        htmlUrl: run.htmlUrl,
        attempt: 1
      })
      expect(statuses.at(-1)).toBe('completed')
      expect(new Set(statuses).size).toBe(statuses.length)
      expect(requestViolations(log)).toEqual([])
    })

    it('polls with If-None-Match: unchanged polls are 304s that cost no rate limit', async () => {
      await setUp()
      sim.queueRun({ queuedMs: 150, runningMs: 300 })
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      const outcome = await followRun(github, site, run.runId, { timeoutMs: 10_000, pollMs: 10 })
      expect(outcome.ok).toBe(true)
      const polls = log
        .requests({ method: 'GET' })
        .filter(r => r.path.includes(`/runs/${run.runId}?`))
      const notModified = polls.filter(r => r.status === 304)
      expect(notModified.length).toBeGreaterThanOrEqual(3)
      expect(notModified.every(r => typeof r.headers['if-none-match'] === 'string')).toBe(true)
      // Only the answers that changed (queued, in progress, completed) count against the limit.
      expect(polls.filter(r => r.counted).length).toBeLessThanOrEqual(4)
    })

    it('returns the failed jobs and steps of a failed run', async () => {
      await setUp()
      sim.queueRun({ conclusion: 'failure', queuedMs: 10, runningMs: 10 })
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      const outcome = await followRun(github, site, run.runId, { timeoutMs: 10_000, pollMs: 10 })
      expect(outcome).toMatchObject({
        ok: false,
        reason: 'conclusion',
        conclusion: 'failure',
        failedJobs: [{ name: 'deploy', conclusion: 'failure', failedSteps: ['Deploy the app'] }]
      })
    })

    it('leaves a run that outlives the timeout alone', async () => {
      await setUp()
      sim.queueRun({ neverStarts: true })
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      const outcome = await followRun(github, site, run.runId, { timeoutMs: 200, pollMs: 20 })
      expect(outcome).toMatchObject({
        ok: false,
        reason: 'timeout',
        runId: run.runId,
        failedJobs: []
      })
      expect(log.requests({ method: 'POST' }).map(r => r.path)).toEqual([
        `/repos/acme/site/actions/workflows/${workflow.id}/dispatches`
      ])
      expect(sim.runs.get(run.runId)!.status).toBe('queued')
    })

    it('times out with an injected sleep that returns at once, polling steadily', async () => {
      await setUp()
      sim.queueRun({ neverStarts: true })
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      const slept: number[] = []
      const outcome = await followRun(github, site, run.runId, {
        timeoutMs: 60_000,
        log: quiet,
        clock: virtualClock(undefined, ms => slept.push(ms))
      })
      expect(outcome).toMatchObject({ ok: false, reason: 'timeout', status: 'queued' })
      expect(slept.reduce((a, b) => a + b, 0)).toBe(60_000)
      // A poll a second: the unchanged run answers 304, which costs nothing.
      expect(new Set(slept)).toEqual(new Set([1000]))
      const polls = log.requests({ method: 'GET' }).filter(r => r.path.includes('/runs/'))
      expect(polls).toHaveLength(61)
      expect(polls.filter(r => r.counted)).toHaveLength(1)
    })

    it('after a 500, looks for the run before dispatching again', async () => {
      await setUp()
      sim.service.inject({ method: 'POST', path: /\/dispatches$/, status: 500 })
      const warnings: string[] = []
      const run = await dispatchWorkflow(
        github,
        site,
        workflow,
        'trunk',
        { target: 'production' },
        { clock: virtualClock(), log: { ...quiet, warning: m => warnings.push(m) } }
      )
      expect(log.requests({ method: 'POST' }).map(r => r.status)).toEqual([500, 200])
      expect(sim.runs.size).toBe(1)
      expect(sim.runs.has(run.runId)).toBe(true)
      expect(warnings).toEqual([
        expect.stringMatching(
          /^Dispatching .github\/workflows\/deploy.yml on trunk in acme\/site failed \(GitHub answered 500: .*\); looking for the run it may have started before dispatching again\.$/
        )
      ])
      // Looked at the run list (conditionally) for ten seconds in between.
      const looks = log.requests({ method: 'GET' }).filter(r => r.path.includes('/runs?'))
      expect(looks.length).toBeGreaterThanOrEqual(10)
      expect(looks.filter(r => r.counted)).toHaveLength(1)
    })

    it('takes the run of a dispatch whose answer was lost, without dispatching again', async () => {
      await setUp()
      sim.service.inject({ method: 'POST', path: /\/dispatches$/, dropAfterHandling: true })
      const run = await dispatchWorkflow(
        github,
        site,
        workflow,
        'trunk',
        { target: 'production' },
        { clock: virtualClock(), log: quiet }
      )
      expect(log.requests({ method: 'POST' })).toHaveLength(1)
      expect([...sim.runs.keys()]).toEqual([run.runId])
    })

    it('waits as asked after a 429, then dispatches again', async () => {
      await setUp()
      sim.service.inject({ method: 'POST', path: /\/dispatches$/, status: 429, retryAfter: 2 })
      const slept: number[] = []
      await dispatchWorkflow(
        github,
        site,
        workflow,
        'trunk',
        { target: 'production' },
        { clock: virtualClock(undefined, ms => slept.push(ms)), log: quiet }
      )
      expect(slept).toEqual([2000])
      expect(sim.runs.size).toBe(1)
    })

    it('gives up after three dispatches, each followed by a look for its run', async () => {
      await setUp()
      sim.service.inject({ method: 'POST', path: /\/dispatches$/, status: 503, times: 3 })
      await expect(
        dispatchWorkflow(
          github,
          site,
          workflow,
          'trunk',
          { target: 'production' },
          { clock: virtualClock(), log: quiet }
        )
      ).rejects.toThrow(
        /GitHub answered 503.*Gave up after 3 dispatches, each followed by a look for its run/s
      )
      expect(log.requests({ method: 'POST' })).toHaveLength(3)
      expect(sim.runs.size).toBe(0)
    })

    it('never repeats a dispatch GitHub answered 4xx', async () => {
      await setUp()
      sim.service.inject({ method: 'POST', path: /\/dispatches$/, status: 404 })
      await expect(
        dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' }, { log: quiet })
      ).rejects.toThrow(/GitHub answered 404.*"Actions: write"/s)
      expect(log.requests({ method: 'POST' })).toHaveLength(1)
    })

    it('falls back when the server rejects return_run_details, and picks the new run', async () => {
      await setUp({ rejectReturnRunDetails: true })
      // A run dispatched a moment earlier by someone else: inside the time window, but not ours.
      await github.request(
        'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches',
        {
          ...site,
          workflow_id: workflow.id,
          ref: 'trunk',
          inputs: { target: 'staging' }
        }
      )
      const [earlier] = [...sim.runs.keys()]
      log.entries.length = 0

      const run = await dispatchWorkflow(
        github,
        site,
        workflow,
        'trunk',
        { target: 'production' },
        {
          clock: virtualClock()
        }
      )
      expect(run.runId).not.toBe(earlier)
      expect(sim.runs.get(run.runId)!.inputs.target).toBe('production')
      expect(run.apiUrl).toBe(`${sim.url}/repos/acme/site/actions/runs/${run.runId}`)
      const posts = log.requests({ method: 'POST' })
      expect(posts.map(p => [p.status, 'return_run_details' in (p.body as object)])).toEqual([
        [422, true],
        [204, false]
      ])
      expect(sim.runs.size).toBe(2)
      expect(requestViolations(log)).toEqual([])
    })
  })
})

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

  let world: World | undefined
  afterEach(async () => {
    await world?.sim.stop()
    world = undefined
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
    world = {
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

  it('at default settings, a run queued 3 s and running 60 s costs at most 4 counted requests and is noticed within a second', async () => {
    const w = await simulate()
    const delays: number[] = []
    const counts: number[] = []
    // Ten runs whose ends fall evenly across one poll period (1 s pause + 100 ms request).
    for (let i = 0; i < 10; i++) {
      const result = await deployOnce(w, {
        queuedMs: 3000,
        runningMs: 60_000 + i * 110,
        conclusion: 'success'
      })
      expect(result.outcome.ok).toBe(true)
      expect(result.statuses).toEqual(['queued', 'in_progress', 'completed'])
      delays.push(result.delayMs)
      counts.push(result.counted)
    }
    const sorted = [...delays].sort((a, b) => a - b)
    const median = (sorted[4]! + sorted[5]!) / 2
    // Dispatch + first look (queued) + in_progress + completed; every other poll is a free 304.
    expect(Math.max(...counts)).toBeLessThanOrEqual(4)
    expect(median).toBeLessThanOrEqual(1000)
    expect(Math.max(...delays)).toBeLessThanOrEqual(1100)
    console.info(
      `deploy benchmark (queued 3 s, running 60 s, default settings, 100 ms a request): ` +
        `counted requests ${Math.max(...counts)}, detection delay median ${median} ms, ` +
        `mean ${Math.round(delays.reduce((x, y) => x + y) / delays.length)} ms, max ${Math.max(...delays)} ms`
    )
    expect(w.log.violations).toEqual([])
  })

  it('follows a three-job run of 10 simulated minutes for at most 10 counted requests', async () => {
    const w = await simulate({ yaml: THREE_JOBS_YAML })
    const result = await deployOnce(w, {
      queuedMs: 20_000,
      runningMs: 10 * 60_000,
      conclusion: 'success'
    })
    expect(result.outcome.ok).toBe(true)
    // Dispatch, queued, in progress, two job hand-overs (each changes updated_at), completed.
    expect(result.counted).toBeLessThanOrEqual(10)
    expect(result.counted).toBe(6)
    expect(result.notModified).toBeGreaterThan(500)
    expect(result.delayMs).toBeLessThanOrEqual(1100)
    expect(w.log.violations).toEqual([])
  })

  it('follows a run re-run during the wait to its latest attempt', async () => {
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

  it('reports the failed job of a re-run attempt, not of the first', async () => {
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

  it('reports a run waiting for approval, counts the wait toward the timeout, and leaves the run alone', async () => {
    const w = await simulate({ yaml: ROTATION_YAML })
    const seen: Array<{ status: string; htmlUrl: string }> = []
    w.sim.queueRun({ queuedMs: 2000, waitingMs: Infinity })
    const run = await dispatchWorkflow(w.github, site, w.workflow, 'main', {}, { log: quietLog(w) })
    const outcome = await followRun(w.github, site, run.runId, {
      timeoutMs: 5 * 60_000,
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
  })

  it('follows a run approved during the wait to success', async () => {
    const w = await simulate({ yaml: ROTATION_YAML })
    const result = await deployOnce(w, { queuedMs: 2000, waitingMs: 90_000, runningMs: 30_000 })
    expect(result.outcome.ok).toBe(true)
    expect(result.statuses).toEqual(['queued', 'waiting', 'in_progress', 'completed'])
    expect(result.counted).toBeLessThanOrEqual(5)
  })

  it('waits out a spent rate limit (403 with retry-after) and goes on following', async () => {
    const w = await simulate()
    w.sim.queueRun({ queuedMs: 1000, runningMs: 30 * 60_000 })
    const run = await dispatchWorkflow(w.github, site, w.workflow, 'main', { target: 'production' })
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
  })

  it('keeps following through GitHub errors (5xx) within the deadline', async () => {
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

  it('warns at the start when the budget is too low for the deploy', async () => {
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

    it('finds the run by the rotation id in its title, whatever else was dispatched', async () => {
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
    })

    it('without a rotation id, ignores a dispatch created one second earlier', async () => {
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
    })

    it('refuses to guess between two runs created in the same second', async () => {
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

    it('refuses a run that shows up beside ours while it settles', async () => {
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

describe('with a local server of its own', () => {
  const running: Service[] = []
  afterEach(async () => {
    while (running.length) await running.pop()!.stop()
  })

  /** GitHub Enterprise Server with rate limiting disabled answers 404 to GET /rate_limit. */
  async function serve(handler: Handler): Promise<{ github: GitHubClient; log: RequestLog }> {
    const log = new RequestLog()
    const service = new Service('github', log, req =>
      req.path === '/rate_limit'
        ? { status: 404, body: { message: 'Rate limiting is not enabled.' } }
        : handler(req)
    )
    await service.start()
    running.push(service)
    return { log, github: createGitHubClient({ token: TOKEN, baseUrl: service.url, log: quiet }) }
  }

  const workflow: WorkflowInfo = {
    id: 7,
    name: 'Deploy',
    path: '.github/workflows/deploy.yml',
    defaultBranch: 'main',
    declaredInputs: [],
    runNameUsesRotationId: false,
    environments: []
  }

  function runJson(id: number, createdAt = new Date().toISOString()) {
    return {
      id,
      html_url: `https://github.com/acme/site/actions/runs/${id}`,
      url: `http://api/repos/acme/site/actions/runs/${id}`,
      created_at: createdAt,
      display_title: 'Deploy',
      event: 'workflow_dispatch',
      head_branch: 'main',
      status: 'queued'
    }
  }

  /** An old server: 400 to the flag; without it, each dispatch creates `perDispatch` runs. */
  function oldServer(perDispatch: number): Handler {
    const runs: ReturnType<typeof runJson>[] = [runJson(1, '2020-01-01T00:00:00Z')]
    let next = 100
    return req => {
      if (req.method === 'POST') {
        if ('return_run_details' in (req.json as object)) {
          return {
            status: 400,
            body: { message: 'Invalid request.\n\n"return_run_details" is not a permitted key.' }
          }
        }
        for (let i = 0; i < perDispatch; i++) runs.unshift(runJson(next++))
        return { status: 204 }
      }
      expect(req.query.get('event')).toBe('workflow_dispatch')
      expect(req.query.get('branch')).toBe('main')
      return { status: 200, body: { total_count: runs.length, workflow_runs: runs } }
    }
  }

  it('accepts a 400 rejection of the flag (cli/cli#12672) and finds the one new run', async () => {
    const { github, log } = await serve(oldServer(1))
    const run = await dispatchWorkflow(
      github,
      site,
      workflow,
      'refs/heads/main',
      {},
      { clock: virtualClock() }
    )
    expect(run.runId).toBe(100)
    expect(log.requests({ method: 'POST' })).toHaveLength(2)
  })

  it('refuses to guess between two runs that appeared at once', async () => {
    const { github, log } = await serve(oldServer(2))
    await expect(
      dispatchWorkflow(github, site, workflow, 'main', {}, { clock: virtualClock() })
    ).rejects.toThrow(
      /2 new workflow_dispatch runs match it \(same workflow, branch and time\): https:\/\/github.com\/acme\/site\/actions\/runs\/101 \("Deploy", created .*\), https:\/\/github.com\/acme\/site\/actions\/runs\/100 .*Refusing to guess which one deploys the new secrets\. Declare a 'rotation_id' input/
    )
    expect(log.requests({ method: 'POST' })).toHaveLength(2)
  })

  it('waits for the run to be listed, and gives up after findTimeoutMs', async () => {
    let lists = 0
    const { github } = await serve(req => {
      if (req.method === 'POST') return { status: 204 }
      lists++
      const runs = lists >= 3 ? [runJson(55)] : []
      return { status: 200, body: { total_count: runs.length, workflow_runs: runs } }
    })
    // A 204 to the flag: the server ignored it; the run exists, without details.
    const found = await dispatchWorkflow(
      github,
      site,
      workflow,
      'main',
      {},
      { clock: virtualClock() }
    )
    expect(found.runId).toBe(55)
    // Listed from the third look on, then watched for 5 s in case a second one shows up.
    expect(lists).toBe(8)

    const { github: empty } = await serve(req =>
      req.method === 'POST'
        ? { status: 204 }
        : { status: 200, body: { total_count: 0, workflow_runs: [] } }
    )
    await expect(
      dispatchWorkflow(
        empty,
        site,
        workflow,
        'main',
        {},
        { clock: virtualClock(), findTimeoutMs: 5000 }
      )
    ).rejects.toThrow(/no new workflow_dispatch run appeared within 5 s/)
  })

  it('does not fall back on a 422 that is not about the flag', async () => {
    const { github, log } = await serve(() => ({
      status: 422,
      body: { message: 'Unexpected inputs provided: ["x"]' }
    }))
    await expect(dispatchWorkflow(github, site, workflow, 'main', { x: '1' })).rejects.toThrow(
      /GitHub answered 422: Unexpected inputs provided.*Check deploy-ref/s
    )
    // The free clock reading, then the one dispatch.
    expect(log.requests().map(r => `${r.method} ${r.status}`)).toEqual(['GET 404', 'POST 422'])
  })

  it('spreads polls that would count (no ETag) over the budget until its reset', async () => {
    const reset = Math.floor(Date.now() / 1000) + 3600
    const { github } = await serve(() => ({
      status: 200,
      headers: { 'x-ratelimit-remaining': '1000', 'x-ratelimit-reset': String(reset) },
      body: { id: 9, status: 'queued', conclusion: null, html_url: 'https://x/9', run_attempt: 1 }
    }))
    const slept: number[] = []
    const outcome = await followRun(github, site, 9, {
      timeoutMs: 60_000,
      log: quiet,
      clock: virtualClock(undefined, ms => slept.push(ms))
    })
    expect(outcome).toMatchObject({ ok: false, reason: 'timeout' })
    // Half of the 980 requests above the reserve, over the hour: one poll about every 7.3 s.
    expect(slept[0]).toBeGreaterThan(7000)
    expect(slept[0]).toBeLessThan(7500)
  })

  it('polls no faster than x-poll-interval asks', async () => {
    const { github } = await serve(req =>
      req.headers['if-none-match'] === 'W/"run-9"'
        ? { status: 304, headers: { etag: 'W/"run-9"', 'x-poll-interval': '5' } }
        : {
            status: 200,
            headers: { etag: 'W/"run-9"', 'x-poll-interval': '5' },
            body: { id: 9, status: 'in_progress', conclusion: null, html_url: 'https://x/9' }
          }
    )
    const slept: number[] = []
    await followRun(github, site, 9, {
      timeoutMs: 20_000,
      log: quiet,
      clock: virtualClock(undefined, ms => slept.push(ms))
    })
    expect(slept).toEqual([5000, 5000, 5000, 5000])
  })

  describe('followRun maps every conclusion', () => {
    function completedServer(conclusion: string | null, status = 'completed'): Handler {
      return req => {
        if (req.path.endsWith('/jobs')) {
          return {
            status: 200,
            body: {
              total_count: 2,
              jobs: [
                {
                  name: 'build',
                  conclusion: 'success',
                  html_url: 'https://github.com/j/1',
                  steps: [{ name: 'Build', conclusion: 'success', number: 1, status: 'completed' }]
                },
                {
                  name: 'deploy',
                  conclusion: 'failure',
                  html_url: 'https://github.com/j/2',
                  steps: [
                    { name: 'Checkout', conclusion: 'success', number: 1, status: 'completed' },
                    { name: 'Upload', conclusion: 'failure', number: 2, status: 'completed' },
                    { name: 'Notify', conclusion: 'skipped', number: 3, status: 'completed' }
                  ]
                }
              ]
            }
          }
        }
        return {
          status: 200,
          body: {
            id: 9,
            status,
            conclusion,
            html_url: 'https://github.com/acme/site/actions/runs/9',
            run_attempt: 2
          }
        }
      }
    }

    it.each([
      'failure',
      'cancelled',
      'timed_out',
      'skipped',
      'neutral',
      'action_required',
      'startup_failure',
      'stale'
    ])('%s fails with the failed jobs', async conclusion => {
      const { github } = await serve(completedServer(conclusion))
      const outcome = await followRun(github, site, 9, { timeoutMs: 1000 })
      expect(outcome).toEqual({
        ok: false,
        reason: 'conclusion',
        conclusion,
        runId: 9,
        htmlUrl: 'https://github.com/acme/site/actions/runs/9',
        attempt: 2,
        failedJobs: [
          {
            name: 'deploy',
            conclusion: 'failure',
            failedSteps: ['Upload'],
            htmlUrl: 'https://github.com/j/2'
          }
        ]
      })
    })

    it('success passes, following the latest attempt', async () => {
      const { github } = await serve(completedServer('success'))
      expect(await followRun(github, site, 9, { timeoutMs: 1000 })).toEqual({
        ok: true,
        conclusion: 'success',
        runId: 9,
        htmlUrl: 'https://github.com/acme/site/actions/runs/9',
        attempt: 2
      })
    })

    it('an unknown conclusion or status fails loudly', async () => {
      const { github } = await serve(completedServer('exploded'))
      await expect(followRun(github, site, 9, { timeoutMs: 1000 })).rejects.toThrow(
        /completed with conclusion 'exploded', which this action does not know/
      )
      const { github: odd } = await serve(completedServer(null, 'teleporting'))
      await expect(followRun(odd, site, 9, { timeoutMs: 1000 })).rejects.toThrow(
        /has status 'teleporting', which this action does not know/
      )
    })

    it('a failed run whose jobs cannot be listed still reports its conclusion', async () => {
      const inner = completedServer('failure')
      const { github } = await serve(req =>
        req.path.endsWith('/jobs') ? { status: 404, body: { message: 'Not Found' } } : inner(req)
      )
      const outcome = await followRun(github, site, 9, { timeoutMs: 1000 })
      expect(outcome).toMatchObject({ ok: false, conclusion: 'failure', failedJobs: [] })
    })

    it('says which permission is missing when the run cannot be read', async () => {
      const { github } = await serve(() => ({
        status: 403,
        body: { message: 'Resource not accessible' }
      }))
      await expect(followRun(github, site, 9, { timeoutMs: 1000 })).rejects.toThrow(
        /Cannot read deploy run 9 in acme\/site\. GitHub answered 403.*"Actions: read"/s
      )
    })
  })
})
