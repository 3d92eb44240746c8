/** What the deploy tests share: a token, the repository, and the workflows they dispatch. */
import type { GitHubSim } from '../sandbox/github.js'
import type { RequestEntry, RequestLog } from '../sandbox/log.js'

export const TOKEN = 'github_pat_deploy_test'
export const quiet = { info: () => {}, warning: () => {}, debug: () => {} }
export const site = { owner: 'acme', repo: 'site' }

/**
 * Approves the first run that waits for an approval once `enough` holds for the client's GETs of
 * that run so far, as a person would after the action had seen it waiting a while. It stops
 * trying after `giveUpMs`: the run then never starts, and the client's deploy-timeout fails the
 * test with the reason.
 */
export async function approveWhen(
  log: RequestLog,
  sim: GitHubSim,
  enough: (reads: RequestEntry[]) => boolean,
  giveUpMs = 30_000
): Promise<void> {
  const deadline = Date.now() + giveUpMs
  while (Date.now() <= deadline) {
    const runId = log.events('run.waiting')[0]?.detail.run_id as number | undefined
    const reads = log
      .requests({ method: 'GET' })
      .filter(r => runId !== undefined && r.path.split('?')[0]!.endsWith(`/actions/runs/${runId}`))
    if (runId !== undefined && enough(reads)) {
      sim.approve(runId)
      return
    }
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** Every conclusion of a workflow run other than `success`: each must fail the deploy phase. */
export const FAILED_CONCLUSIONS = [
  'failure',
  'cancelled',
  'timed_out',
  'skipped',
  'neutral',
  'action_required',
  'startup_failure',
  'stale'
]

export const DEPLOY_YAML = `name: Deploy
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

export const PUSH_ONLY_YAML = `name: CI
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
export function requestViolations(log: RequestLog): string[] {
  return log.violations.filter(v => /: request: |no such operation/.test(v))
}
