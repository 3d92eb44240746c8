/**
 * End to end, what a real GitHub and a real account add: REST API versions (github.com on
 * 2022-11-28 and 2026-03-10, a server that serves only 2026-03-10, GitHub Enterprise Server) and
 * credentials that expire (the github-token's `github-authentication-token-expiration`, the
 * management token's `expires_on`).
 */
import type { Sandbox } from '../../sandbox/index.js'
import type { ActionResult } from '../../sandbox/runner.js'
import type { RequestEntry } from '../../sandbox/log.js'
import { type CheckedRun, mutationList, runChecked } from './scenario.js'

const DAY_MS = 24 * 3600 * 1000

const sandboxes: Sandbox[] = []
afterAll(async () => {
  await Promise.all(sandboxes.map(sb => sb.stop()))
})

const rotate = (
  ...args: Parameters<typeof runChecked> extends [unknown, ...infer Rest] ? Rest : never
): Promise<CheckedRun> => runChecked(sandboxes, ...args)

const github = (sb: Sandbox): RequestEntry[] => sb.log.requests({ service: 'github' })
const versionsAsked = (sb: Sandbox): string[] => [
  ...new Set(github(sb).map(e => String(e.headers['x-github-api-version'])))
]
const dispatchBodies = (sb: Sandbox): Array<Record<string, unknown>> =>
  github(sb)
    .filter(e => e.method === 'POST' && e.path.endsWith('/dispatches'))
    .map(e => e.body as Record<string, unknown>)
const lines = (result: ActionResult, prefix: string): string[] =>
  result.stdout.split('\n').filter(line => line.startsWith(prefix))

function expectRotated({ sb, result, healthFailures }: CheckedRun): void {
  expect(result.exitCode).toBe(0)
  expect(result.outputs.result).toBe('rotated')
  expect(healthFailures).toEqual([])
  expect(sb.cloudflare.findById(sb.current.id)).toBeUndefined()
}

describe('GitHub REST API versions', () => {
  it.concurrent(
    'github.com: every request asks for the pinned 2022-11-28, and the dispatch returns its run',
    async () => {
      const run = await rotate({})
      expectRotated(run)
      expect(versionsAsked(run.sb)).toEqual(['2022-11-28'])
      expect(dispatchBodies(run.sb)).toEqual([
        expect.objectContaining({ return_run_details: true })
      ])
      expect(github(run.sb).filter(e => e.status === 400)).toEqual([])
    }
  )

  it.concurrent(
    'a server that serves only 2026-03-10: one refused request, then 2026-03-10 throughout and a dispatch without the flag',
    async () => {
      const run = await rotate({ githubApiVersions: ['2026-03-10'] })
      expectRotated(run)
      const requests = github(run.sb)
      // The first request is refused (400, before it does anything) and sent again once.
      expect(requests.filter(e => e.status === 400).map(e => e.seq)).toEqual([requests[0]!.seq])
      expect(requests.slice(1).every(e => e.headers['x-github-api-version'] === '2026-03-10')).toBe(
        true
      )
      const [dispatch, ...more] = dispatchBodies(run.sb)
      expect(more).toEqual([])
      expect(dispatch).not.toHaveProperty('return_run_details')
      expect(run.result.stdout).toContain(
        'does not serve REST API version 2022-11-28; using 2026-03-10, the newest version it serves that this action knows.'
      )
      // The run came with the dispatch's answer: no search of the runs list.
      expect(
        requests.filter(e => e.method === 'GET' && /\/workflows\/[^/]+\/runs/.test(e.path))
      ).toEqual([])
      expect(mutationList(run.sb)).toEqual(mutationList((await rotate({})).sb))
    }
  )

  it.concurrent(
    'a server whose versions the action does not know: a clear error, nothing changed',
    async () => {
      const { sb, result } = await rotate({ githubApiVersions: ['2031-01-01'] })
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      const [error] = lines(result, '::error')
      expect(error).toContain(
        'does not serve REST API version 2022-11-28, nor another this action knows'
      )
      expect(error).toContain('2031-01-01')
    }
  )

  it.concurrent(
    'GitHub Enterprise Server 3.20: the REST API under /api/v3, a dispatch without run details',
    async () => {
      const run = await rotate({ enterpriseServer: { version: '3.20' } })
      expectRotated(run)
      expect(versionsAsked(run.sb)).toEqual(['2022-11-28'])
      expect(github(run.sb).every(e => e.path.startsWith('/api/v3/'))).toBe(true)
      // 3.20 rejects the flag (422) before dispatching; the action dispatches once more without it.
      const bodies = dispatchBodies(run.sb)
      expect(bodies.map(b => 'return_run_details' in b)).toEqual([true, false])
      expect(run.sb.github.runs.size).toBe(1)
    }
  )
})

describe('credentials that expire', () => {
  it.concurrent(
    'a github-token expiring in 10 days: a warning with how to renew, in the log and the summary',
    async () => {
      const run = await rotate({ githubTokenExpiresAt: Date.now() + 10 * DAY_MS + 3600_000 })
      expectRotated(run)
      const warning = lines(run.result, '::warning').find(l => l.includes('github-token expires'))
      expect(warning).toMatch(/The github-token expires on \S+ \(in 10 day\(s\)\)\. Regenerate it/)
      expect(run.result.summary).toContain('The github-token expires on')
    }
  )

  it.concurrent('a github-token expiring in 40 days: no warning', async () => {
    const run = await rotate({ githubTokenExpiresAt: Date.now() + 40 * DAY_MS })
    expectRotated(run)
    expect(run.result.stdout).not.toContain('github-token expires')
  })

  it.concurrent(
    'an expired github-token: fails at the first request, says how to renew, nothing changed',
    async () => {
      const { sb, result } = await rotate({ githubTokenExpiresAt: Date.now() - 1000 })
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      expect(sb.log.events('token.created')).toEqual([])
      const [error, ...more] = lines(result, '::error')
      expect(more).toEqual([])
      expect(error).toContain('github-token')
      expect(error).toMatch(/expired/)
    }
  )

  it.concurrent(
    'a management token expiring in 5 days: a warning with where to make its successor',
    async () => {
      const run = await rotate({}, {}, sb => {
        const management = [...sb.cloudflare.tokens.values()].find(
          t => t.value === sb.managementToken
        )!
        management.expires_on = new Date(Date.now() + 5 * DAY_MS).toISOString()
      })
      expectRotated(run)
      const warning = lines(run.result, '::warning').find(l => l.includes('management token'))
      expect(warning).toContain('expires on')
      expect(warning).toContain("the 'Create additional tokens' template")
      expect(run.result.summary).toContain('The management token (cloudflare-api-token)')
    }
  )

  it.concurrent(
    'an expired management token: refused at the first call, nothing changed',
    async () => {
      const { sb, result } = await rotate({}, {}, sb => {
        const management = [...sb.cloudflare.tokens.values()].find(
          t => t.value === sb.managementToken
        )!
        management.expires_on = new Date(Date.now() - 1000).toISOString()
      })
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      const [error] = lines(result, '::error')
      expect(error).toContain('The management token (cloudflare-api-token) does not verify')
      expect(error).toContain('A token past its expiry date')
    }
  )
})
