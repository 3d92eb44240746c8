/**
 * The deploy step against a small local server, where a scenario needs exact control: every
 * conclusion, an unknown status, odd headers, servers that reject return_run_details.
 */
import { RequestLog } from '../sandbox/log.js'
import { Service, type Handler } from '../sandbox/service.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import { virtualClock } from '../src/backoff.js'
import { type WorkflowInfo, dispatchWorkflow, followRun } from '../src/github/deploy.js'
import { FAILED_CONCLUSIONS, TOKEN, quiet, site } from './deploy-fixtures.js'

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

    it.each(FAILED_CONCLUSIONS)('%s fails with the failed jobs', async conclusion => {
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
