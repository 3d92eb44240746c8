/**
 * The deploy step against the GitHub simulator on the real clock: workflows, dispatch, runs that
 * move on timers, ETags. deploy-clock.test.ts follows runs of simulated minutes on a simulated
 * clock; deploy-server.test.ts uses a small local server where a scenario needs exact control.
 */
import { jest } from '@jest/globals'
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim } from '../sandbox/github.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import { virtualClock } from '../src/backoff.js'
import {
  type WorkflowInfo,
  dispatchWorkflow,
  followRun,
  inspectWorkflow
} from '../src/github/deploy.js'
import {
  DEPLOY_YAML,
  PUSH_ONLY_YAML,
  approveWhen,
  TOKEN,
  quiet,
  requestViolations,
  site
} from './deploy-fixtures.js'

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
      // The run waits for an approval that comes once three reads were answered 304, however
      // slowly a loaded machine lets the client poll (a fixed queue time could see fewer).
      sim.queueRun({ waitingMs: Infinity, runningMs: 50 })
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      // A client that never gets a 304 is never approved: followRun then times out.
      const approval = approveWhen(
        log,
        sim,
        reads => reads.filter(r => r.status === 304).length >= 3,
        10_000
      )
      const outcome = await followRun(github, site, run.runId, { timeoutMs: 10_000, pollMs: 10 })
      await approval
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
