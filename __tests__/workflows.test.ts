/**
 * The workflow checks behind `npm run lint:workflows`: the timeout formula and what it is made
 * of, the reusable workflow's contract with action.yml, and what a caller must pass; the project's
 * own examples and reusable workflow pass, and each rule catches the mistake it is there for.
 */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { BASELINE_TIMEOUT_MS } from '../src/preflight.js'
import { PROPAGATION_DEADLINE_MS } from '../src/steps.js'
import {
  REUSABLE_PATH,
  checkCaller,
  checkPins,
  checkReusable,
  type Contracts,
  type Doc
} from '../scripts/workflows/checks.js'
import { markdownWorkflows } from '../scripts/workflows/sources.js'
import { FIXED_MINUTES, worstCaseMinutes } from '../scripts/workflows/timeout.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8')
const contracts: Contracts = {
  action: parse(read('action.yml')) as Doc,
  reusable: parse(read(REUSABLE_PATH)) as Doc
}
const clone = <T>(value: T): T => structuredClone(value)

const DEFAULTS = {
  'deploy-timeout': '30m',
  'smoke-timeout': '5m',
  'revoke-grace': '0s',
  'revoke-watch': '2m',
  secrets: 3,
  targets: 1
}

describe('the timeout formula', () => {
  it('is 88 minutes with the defaults and three secrets in one target', () => {
    expect(worstCaseMinutes(DEFAULTS)).toBe(88)
    expect(worstCaseMinutes({ ...DEFAULTS, 'deploy-timeout': '15m', 'smoke-timeout': '3m' })).toBe(
      52
    )
    // 150 secret writes, forward and back: five more minutes.
    expect(worstCaseMinutes({ ...DEFAULTS, targets: 50 })).toBe(92)
  })

  it('keeps room for preflight, verify and the job set-up', () => {
    // Baseline checks, then the new token's verify and S3 probe, each retried while it
    // propagates; the rest is rate-limit waits and the runner's set-up.
    const measured = BASELINE_TIMEOUT_MS + 2 * PROPAGATION_DEADLINE_MS
    expect(FIXED_MINUTES * 60_000).toBeGreaterThanOrEqual(measured + 5 * 60_000)
  })
})

describe('the project workflows', () => {
  it('the reusable workflow mirrors action.yml and runs the action from its own commit', () => {
    expect(checkReusable(contracts)).toEqual([])
  })

  it.each(readdirSync(path.join(root, 'examples')).filter(f => f.endsWith('.yml')))(
    'examples/%s passes every rule',
    file => {
      const source = read(`examples/${file}`)
      expect(checkCaller(parse(source) as Doc, contracts)).toEqual([])
      expect(checkPins(source)).toEqual([])
    }
  )

  it('every workflow under .github/ pins its actions by commit', () => {
    for (const file of readdirSync(path.join(root, '.github/workflows'))) {
      expect({ file, problems: checkPins(read(`.github/workflows/${file}`)) }).toEqual({
        file,
        problems: []
      })
    }
  })
})

describe('the reusable workflow rules catch', () => {
  const rotateJob = (reusable: Doc): Doc =>
    (reusable.jobs as Record<string, Doc>).rotate as unknown as Doc
  const stepsOf = (reusable: Doc): Doc[] => rotateJob(reusable).steps as Doc[]

  it('a floating @v1 instead of its own commit', () => {
    const reusable = clone(contracts.reusable)
    const step = stepsOf(reusable).find(s => s.id === 'rotate')!
    step.uses = 'r2-token-rotation/r2-token-rotation@v1'
    expect(checkReusable({ ...contracts, reusable })).toContain(
      "no step runs the action from the workflow's own commit (uses: ./…)"
    )
  })

  it("a checkout of the caller's ref instead of the workflow's", () => {
    const reusable = clone(contracts.reusable)
    const checkout = stepsOf(reusable).find(s => String(s.uses).startsWith('actions/checkout@'))!
    ;(checkout.with as Doc).ref = '${{ github.sha }}'
    expect(checkReusable({ ...contracts, reusable })).toEqual([
      "job rotate: the checkout of '.r2-token-rotation' must take ref: ${{ job.workflow_sha }}"
    ])
  })

  it('no timeout, and a default too short for the defaults', () => {
    const reusable = clone(contracts.reusable)
    delete rotateJob(reusable)['timeout-minutes']
    const call = (reusable.on as Doc).workflow_call as Doc
    ;((call.inputs as Doc)['timeout-minutes'] as Doc).default = 60
    expect(checkReusable({ ...contracts, reusable })).toEqual([
      "job rotate: timeout-minutes must be '${{ inputs.timeout-minutes }}'",
      "input 'timeout-minutes': default 60 is less than the worst case with the defaults and three secrets: 2 × 30m + 3 × 5m + 0s + 2m + 10m + ⌈3 × 1 ÷ 30⌉m = 88 minutes"
    ])
  })

  it('a description that drifted from action.yml', () => {
    const reusable = clone(contracts.reusable)
    const call = (reusable.on as Doc).workflow_call as Doc
    ;((call.inputs as Doc)['rotate-after'] as Doc).description = 'Skip young tokens.'
    expect(checkReusable({ ...contracts, reusable })).toEqual([
      "input 'rotate-after': the description differs from action.yml's"
    ])
  })
})

describe('the caller rules catch', () => {
  const weekly = (): Doc => parse(read('examples/weekly-rotation.yml')) as Doc
  const stepWith = (doc: Doc): Doc =>
    ((((doc.jobs as Doc).rotate as Doc).steps as Doc[]).at(-1)!.with ?? {}) as Doc

  it('a job timeout shorter than the worst case with a rollback', () => {
    const doc = weekly()
    ;((doc.jobs as Doc).rotate as Doc)['timeout-minutes'] = 60
    expect(checkCaller(doc, contracts)).toEqual([
      'job rotate: timeout-minutes 60 is less than the worst case with a rollback: 2 × 30m + 3 × 5m + 0s + 2m + 10m + ⌈3 × 1 ÷ 30⌉m = 88 minutes'
    ])
  })

  it('a longer deploy-timeout without a longer job', () => {
    const doc = weekly()
    stepWith(doc)['deploy-timeout'] = '45m'
    expect(checkCaller(doc, contracts)).toEqual([
      'job rotate: timeout-minutes 90 is less than the worst case with a rollback: 2 × 45m + 3 × 5m + 0s + 2m + 10m + ⌈3 × 1 ÷ 30⌉m = 118 minutes'
    ])
  })

  it('workflow_dispatch without force and dry-run', () => {
    const doc = weekly()
    delete ((doc.on as Doc).workflow_dispatch as Doc).inputs
    delete stepWith(doc).force
    expect(checkCaller(doc, contracts)).toEqual([
      "workflow_dispatch needs a boolean input 'force'",
      "job rotate step 1: pass 'force' from the workflow_dispatch input (inputs.force)",
      "workflow_dispatch needs a boolean input 'dry-run'"
    ])
  })

  it('no account-id, and an input the action does not have', () => {
    const doc = weekly()
    delete stepWith(doc)['account-id']
    stepWith(doc)['deploy-timout'] = '20m'
    expect(checkCaller(doc, contracts)).toEqual([
      "job rotate step 1: 'deploy-timout' is not an input",
      'job rotate step 1: pass account-id (e.g. ${{ vars.CLOUDFLARE_ACCOUNT_ID }}): account-owned tokens need it'
    ])
  })

  it("create-github-app-token's old app-id, and a job longer than the App token's hour", () => {
    const doc = parse(read('examples/github-app-token.yml')) as Doc
    const job = (doc.jobs as Doc).rotate as Doc
    job['timeout-minutes'] = 90
    const app = (job.steps as Doc[])[0]!.with as Doc
    app['app-id'] = app['client-id']
    delete app['client-id']
    expect(checkCaller(doc, contracts)).toEqual([
      'job rotate: timeout-minutes 90: a GitHub App token expires after 60 minutes, so the job must end before; shorten deploy-timeout or smoke-timeout',
      'job rotate: actions/create-github-app-token: pass client-id, not app-id',
      'job rotate: actions/create-github-app-token: client-id is missing'
    ])
  })

  it('a reusable-workflow call with neither a GitHub token nor an App, and one with both', () => {
    const doc = parse(read('examples/reusable-with-github-app.yml')) as Doc
    const job = (doc.jobs as Doc).rotate as Doc
    const secrets = job.secrets as Doc
    delete (job.with as Doc)['github-app-client-id']
    delete secrets['github-app-private-key']
    expect(checkCaller(doc, contracts)).toEqual([
      'job rotate: pass the secret github-token, or github-app-client-id with its key'
    ])
    ;(job.with as Doc)['github-app-client-id'] = '${{ vars.APP }}'
    secrets['github-app-private-key'] = '${{ secrets.KEY }}'
    secrets['github-token'] = '${{ secrets.PAT }}'
    expect(checkCaller(doc, contracts)).toEqual([
      'job rotate: pass github-token or a GitHub App, not both'
    ])
  })

  it('with rotate-management-token: inputs of a token rotation, and no secrets needed', () => {
    const doc = parse(read('examples/rotate-management-token.yml')) as Doc
    expect(checkCaller(doc, contracts)).toEqual([])
    stepWith(doc)['smoke-urls'] = 'https://www.example.com/healthz'
    ;((doc.jobs as Doc).rotate as Doc)['timeout-minutes'] = 10
    expect(checkCaller(doc, contracts)).toEqual([
      "job rotate step 1: 'smoke-urls' is refused with rotate-management-token",
      'job rotate: timeout-minutes 10 is less than the worst case with a rollback: 2 × 0 + 3 × 0 + 0 + 0 + 10m + ⌈1 × 1 ÷ 30⌉m = 11 minutes'
    ])
  })

  it('the largest matrix entry counts', () => {
    const doc = parse(read('examples/org-wide-matrix.yml')) as Doc
    const job = (doc.jobs as Doc).rotate as Doc
    const include = ((job.strategy as Doc).matrix as Doc).include as Doc[]
    include[1]!.targets = Array.from({ length: 40 }, (_, i) => `repo:acme/r${i}`).join('\n')
    expect(checkCaller(doc, contracts)).toEqual([
      'job rotate: with: timeout-minutes 90 is less than the worst case with a rollback: 2 × 30m + 3 × 5m + 0s + 2m + 10m + ⌈3 × 40 ÷ 30⌉m = 91 minutes'
    ])
  })

  it('an action pinned by tag, or by SHA without its version', () => {
    expect(
      checkPins(
        [
          '      - uses: actions/checkout@v5',
          '      - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8',
          '      - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0',
          '      - uses: ./.r2-token-rotation',
          '      - uses: r2-token-rotation/r2-token-rotation@v1'
        ].join('\n')
      )
    ).toEqual([
      'line 1: pin actions/checkout@v5 by its full commit SHA',
      'line 2: say which version actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 is, in a comment (# v1.2.3)'
    ])
  })
})

describe('workflows written out in the docs', () => {
  it('are found by the marker before their yaml block', () => {
    const markdown = [
      '# Title',
      '',
      '<!-- workflow: .github/workflows/deploy.yml -->',
      '',
      '```yaml',
      'name: Deploy',
      'on: workflow_dispatch',
      '```',
      '',
      '```yaml',
      'not: named',
      '```'
    ].join('\n')
    expect(markdownWorkflows(markdown, 'docs/x.md')).toEqual([
      {
        file: 'docs/x.md:6',
        name: '.github/workflows/deploy.yml',
        firstLine: 6,
        source: 'name: Deploy\non: workflow_dispatch\n'
      }
    ])
  })
})
