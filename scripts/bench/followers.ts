/**
 * Following one deploy run two ways, side by side on the same run: the naive way common
 * dispatch-and-wait actions take (GET the run every 10 s, no ETag, so every poll counts against
 * the rate limit), and the action's own `followRun` with its real GitHub client at default
 * settings (conditional polls every second; a 304 is free).
 */
import { systemClock } from '../../src/backoff.js'

const sleep = (ms: number): Promise<void> => systemClock.sleep(ms)
import { createGitHubClient, type GitHubClientLog } from '../../src/github/client.js'
import { followRun } from '../../src/github/deploy.js'

export interface Followed {
  /** When the follower knew the run had completed (its call returned). */
  noticedAt: number
  conclusion: string | null
}

const GITHUB_HEADERS = {
  accept: 'application/vnd.github+json',
  'x-github-api-version': '2022-11-28'
}

/** POST …/dispatches with `return_run_details`; the run id GitHub answers with. */
export async function dispatch(
  apiUrl: string,
  token: string,
  repository: string,
  workflow: string
): Promise<number> {
  const response = await fetch(
    `${apiUrl}/repos/${repository}/actions/workflows/${workflow}/dispatches`,
    {
      method: 'POST',
      headers: {
        ...GITHUB_HEADERS,
        authorization: `Bearer ${token}`,
        'content-type': 'application/json'
      },
      body: JSON.stringify({
        ref: 'main',
        inputs: { reason: 'benchmark' },
        return_run_details: true
      })
    }
  )
  if (response.status !== 200) throw new Error(`dispatch answered ${response.status}`)
  return ((await response.json()) as { workflow_run_id: number }).workflow_run_id
}

/** The baseline: a plain GET every `intervalMs` until the run is completed, no ETag. */
export async function naiveFollow(
  apiUrl: string,
  token: string,
  repository: string,
  runId: number,
  intervalMs: number
): Promise<Followed> {
  for (;;) {
    const response = await fetch(`${apiUrl}/repos/${repository}/actions/runs/${runId}`, {
      headers: { ...GITHUB_HEADERS, authorization: `Bearer ${token}` }
    })
    if (response.status !== 200)
      throw new Error(`naive follower: GET run answered ${response.status}`)
    const run = (await response.json()) as { status: string; conclusion: string | null }
    if (run.status === 'completed') return { noticedAt: Date.now(), conclusion: run.conclusion }
    await sleep(intervalMs)
  }
}

const quiet: GitHubClientLog = { info: () => {}, warning: () => {}, debug: () => {} }

/** The action's `followRun` with its own client, at default settings. */
export async function actionFollow(
  apiUrl: string,
  token: string,
  repository: string,
  runId: number,
  timeoutMs: number
): Promise<Followed> {
  const [owner = '', repo = ''] = repository.split('/')
  const github = createGitHubClient({ token, baseUrl: apiUrl, log: quiet })
  const outcome = await followRun(github, { owner, repo }, runId, { timeoutMs, log: quiet })
  if (!outcome.ok && outcome.reason === 'timeout') throw new Error(`run ${runId}: timed out`)
  return { noticedAt: Date.now(), conclusion: outcome.conclusion ?? null }
}
