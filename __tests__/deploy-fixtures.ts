/** What the deploy tests share: a token, the repository, and the workflows they dispatch. */
import type { RequestLog } from '../sandbox/log.js'

export const TOKEN = 'github_pat_deploy_test'
export const quiet = { info: () => {}, warning: () => {}, debug: () => {} }
export const site = { owner: 'acme', repo: 'site' }

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
