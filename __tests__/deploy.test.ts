/**
 * The deploy step against the GitHub simulator (workflows, dispatch, runs that move on timers,
 * ETags) and, where a scenario needs exact control (several runs at once, every conclusion, an
 * unknown status), against a small local server of its own.
 */
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim } from '../sandbox/github.js'
import { Service, type Handler } from '../sandbox/service.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import {
  type WorkflowInfo,
  dispatchWorkflow,
  followRun,
  inspectWorkflow
} from '../src/github/deploy.js'

const TOKEN = 'github_pat_deploy_test'
const quiet = { info: () => {}, warning: () => {}, debug: () => {} }
const site = { owner: 'acme', repo: 'site' }
const noSleep = async (): Promise<void> => {}

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
        declaredInputs: ['reason', 'target', 'dry']
      })
      // Read-only, and the file read at the default branch.
      expect(log.mutations()).toEqual([])
      expect(log.requests().some(r => /contents\/.*\?ref=trunk$/.test(r.path))).toBe(true)
      expect(requestViolations(log)).toEqual([])
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

    it('times out with an injected sleep that returns at once, without hammering the server', async () => {
      await setUp()
      sim.queueRun({ neverStarts: true })
      const run = await dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      const slept: number[] = []
      const outcome = await followRun(github, site, run.runId, {
        timeoutMs: 60_000,
        sleep: async ms => {
          slept.push(ms)
        }
      })
      expect(outcome.ok).toBe(false)
      expect(slept.reduce((a, b) => a + b, 0)).toBe(60_000)
      // The pause grows while nothing changes: 1 s, 1.5 s, … up to 10 s.
      expect(slept.length).toBeLessThan(15)
      expect(Math.max(...slept)).toBe(10_000)
    })

    it('sends the dispatch exactly once when GitHub answers 500', async () => {
      await setUp()
      sim.service.inject({ method: 'POST', path: /\/dispatches$/, status: 500 })
      await expect(
        dispatchWorkflow(github, site, workflow, 'trunk', { target: 'production' })
      ).rejects.toThrow(
        /GitHub answered 500.*not retried, because a second dispatch would start a second run/s
      )
      expect(log.requests({ method: 'POST' })).toHaveLength(1)
      expect(sim.runs.size).toBe(0)
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
          sleep: noSleep
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

describe('with a local server of its own', () => {
  const running: Service[] = []
  afterEach(async () => {
    while (running.length) await running.pop()!.stop()
  })

  async function serve(handler: Handler): Promise<{ github: GitHubClient; log: RequestLog }> {
    const log = new RequestLog()
    const service = new Service('github', log, handler)
    await service.start()
    running.push(service)
    return { log, github: createGitHubClient({ token: TOKEN, baseUrl: service.url, log: quiet }) }
  }

  const workflow: WorkflowInfo = {
    id: 7,
    name: 'Deploy',
    path: '.github/workflows/deploy.yml',
    defaultBranch: 'main',
    declaredInputs: []
  }

  function runJson(id: number, createdAt = new Date().toISOString()) {
    return {
      id,
      html_url: `https://github.com/acme/site/actions/runs/${id}`,
      url: `http://api/repos/acme/site/actions/runs/${id}`,
      created_at: createdAt,
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
      { sleep: noSleep }
    )
    expect(run.runId).toBe(100)
    expect(log.requests({ method: 'POST' })).toHaveLength(2)
  })

  it('refuses to guess between two runs that appeared at once', async () => {
    const { github, log } = await serve(oldServer(2))
    await expect(
      dispatchWorkflow(github, site, workflow, 'main', {}, { sleep: noSleep })
    ).rejects.toThrow(
      /2 workflow_dispatch runs started at the same time: https:\/\/github.com\/acme\/site\/actions\/runs\/101, https:\/\/github.com\/acme\/site\/actions\/runs\/100\. Refusing to guess/
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
    const found = await dispatchWorkflow(github, site, workflow, 'main', {}, { sleep: noSleep })
    expect(found.runId).toBe(55)
    expect(lists).toBe(3)

    const { github: empty } = await serve(req =>
      req.method === 'POST'
        ? { status: 204 }
        : { status: 200, body: { total_count: 0, workflow_runs: [] } }
    )
    await expect(
      dispatchWorkflow(empty, site, workflow, 'main', {}, { sleep: noSleep, findTimeoutMs: 5000 })
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
    expect(log.requests()).toHaveLength(1)
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
