/**
 * End to end, the deploy step: dist/index.js, run as the Actions runner runs it, against the
 * sandbox. The action must follow the run it dispatched and no other, treat every conclusion but
 * `success` as a failure (and then revoke nothing), report a run that waits for an approval and
 * wait for it within deploy-timeout, leave a run that outlives the timeout alone, follow a re-run
 * to its latest attempt, and do all that at almost no cost against the rate limit.
 */
import YAML from 'yaml'
import {
  DEPLOY_WORKFLOW_PATH,
  startSandbox,
  type Sandbox,
  type SandboxOptions
} from '../../sandbox/index.js'
import type { SimRun } from '../../sandbox/github.js'
import { findLeaks, runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import type { RequestEntry } from '../../sandbox/log.js'
import { startNamed, HEALTH_POLL_MS } from './scenario.js'
import { approveWhen, FAILED_CONCLUSIONS } from '../deploy-fixtures.js'

interface Scenario {
  sb: Sandbox
  result: ActionResult
  healthFailures: Array<{ at: number; status: number }>
}

/**
 * Runs the action once in a fresh sandbox; `during` runs alongside it (e.g. an approver). The
 * sandbox is stopped at the end; its state stays readable.
 */
async function rotate(
  options: SandboxOptions,
  overrides: Record<string, string> = {},
  prepare?: (sb: Sandbox) => void,
  during?: (sb: Sandbox) => Promise<void>
): Promise<Scenario> {
  const sb = await startSandbox(options)
  try {
    prepare?.(sb)
    const watch = sb.watchHealth(HEALTH_POLL_MS)
    const [result] = await Promise.all([runAction(sb, sandboxInputs(sb, overrides)), during?.(sb)])
    const healthFailures = await watch.stop()
    return { sb, result, healthFailures }
  } finally {
    await sb.stop()
  }
}

const deleteOfOldToken = (sb: Sandbox) =>
  sb.log
    .requests({ service: 'cloudflare', method: 'DELETE' })
    .filter(e => e.path.endsWith(`/tokens/${sb.current.id}`))

/** What every scenario must keep: no value printed, the OpenAPI contract, the app serving. */
function expectSound({ sb, result, healthFailures }: Scenario): void {
  const journal = sb.github.getVariable(sb.repository, 'R2_ROTATION_STATE') ?? ''
  expect(findLeaks(result, sb.secretValues(), [journal])).toEqual([])
  expect(sb.log.violations).toEqual([])
  expect(healthFailures).toEqual([])
}

/** A failed deploy revokes nothing: the old token stays active and is never deleted. */
function expectOldTokenKept({ sb, result }: Scenario): void {
  expect(result.exitCode).toBe(1)
  expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
  expect(deleteOfOldToken(sb)).toEqual([])
}

function errorLines(result: ActionResult): string {
  return result.stdout
    .split('\n')
    .filter(line => line.startsWith('::error'))
    .join('\n')
}

const dispatchPosts = (sb: Sandbox): RequestEntry[] =>
  sb.log.requests({ service: 'github', method: 'POST' }).filter(e => e.path.endsWith('/dispatches'))

/** The deploy workflow, with the documented `rotation_id` input named in its runs' title. */
const ROTATION_WORKFLOW = YAML.stringify({
  name: 'Deploy',
  'run-name': 'Deploy ${{ inputs.rotation_id }}',
  on: {
    workflow_dispatch: {
      inputs: {
        reason: { description: 'Why this deploy runs', required: false, type: 'string' },
        rotation_id: { description: 'Set by r2-token-rotation', required: false, type: 'string' }
      }
    }
  },
  jobs: {
    deploy: {
      'runs-on': 'ubuntu-latest',
      steps: [{ uses: 'actions/checkout@v4' }, { name: 'Deploy the app', run: './deploy.sh' }]
    }
  }
})

/**
 * Another dispatch of the deploy workflow by the same user, created when the action's own run is
 * created, time-stamped `createdAt(ours)`. It is listed only from then on, as GitHub lists a run
 * a moment after creating it, so it is missing from any list the action read before its dispatch.
 * It fails fast: following it instead of ours would fail the rotation.
 */
function dispatchBeside(
  sb: Sandbox,
  inputs: Record<string, string>,
  createdAt: (ours: SimRun) => number
): void {
  let done = false
  const wired = sb.github.hooks.onDispatch
  sb.github.hooks.onDispatch = run => {
    wired?.(run)
    if (done) return
    done = true
    sb.github.dispatchAs('sandbox-bot', sb.repository, 'deploy.yml', {
      inputs,
      createdAtMs: createdAt(run),
      behavior: { queuedMs: 100, runningMs: 200, conclusion: 'failure' }
    })
  }
}

/** The last list of the workflow's runs the action read before the request now being handled. */
function lastListBefore(sb: Sandbox): RequestEntry {
  return sb.log
    .requests({ service: 'github', method: 'GET' })
    .filter(e => /\/actions\/workflows\/\d+\/runs\?/.test(e.path))
    .at(-1)!
}

const SAME_SECOND = 'a dispatch of the same second, told apart by its rotation id'
const SECOND_EARLIER = 'no rotation id, a dispatch one second earlier'
const CANNOT_TELL = 'no rotation id, a dispatch of the same second'
const APPROVAL = 'a run waiting for an approval'
const NEVER_STARTS = 'a run that never starts'
const RERUN = 'a run re-run during the wait'
const COUNTED = 'a run polled while it waits'

/** Every scenario runs at once (four at a time); each test awaits its own by name. */
const scenarios = startNamed<Scenario>(
  {
    [SAME_SECOND]: () =>
      rotate({ rejectReturnRunDetails: true }, {}, sb => {
        sb.github.addFile(sb.repository, DEPLOY_WORKFLOW_PATH, ROTATION_WORKFLOW)
        dispatchBeside(sb, { reason: 'manual', rotation_id: 'someone-else' }, ours =>
          Date.parse(ours.createdAt)
        )
      }),
    [SECOND_EARLIER]: () =>
      rotate({ rejectReturnRunDetails: true }, {}, sb => {
        // Whole seconds, as GitHub stamps them: the second before the list the action read just
        // before it dispatched, so at least one second before the action's own run.
        dispatchBeside(
          sb,
          { reason: 'manual' },
          () => Math.floor(lastListBefore(sb).at / 1000) * 1000 - 1000
        )
      }),
    [CANNOT_TELL]: () =>
      rotate({ rejectReturnRunDetails: true }, {}, sb => {
        dispatchBeside(sb, { reason: 'scheduled token rotation' }, ours =>
          Date.parse(ours.createdAt)
        )
      }),
    ...Object.fromEntries(
      FAILED_CONCLUSIONS.map(conclusion => [
        `concluded ${conclusion}`,
        () => rotate({}, {}, sb => sb.github.queueRun({ conclusion }))
      ])
    ),
    [APPROVAL]: () =>
      rotate(
        { environment: 'production' },
        {},
        sb => sb.github.queueRun({ waitingMs: Infinity }),
        // A person approves the deployment once the action has seen the run waiting a while.
        sb => approveWhen(sb.log, sb.github, reads => reads.length >= 3)
      ),
    [NEVER_STARTS]: () =>
      rotate({}, { 'deploy-timeout': '3s' }, sb => sb.github.queueRun({ neverStarts: true })),
    [RERUN]: () =>
      rotate({}, {}, sb =>
        // Long enough on GitHub's (scaled) clock for the action to see the first attempt going.
        sb.github.queueRun({
          queuedMs: 5_000,
          runningMs: 20_000,
          conclusion: 'failure',
          rerun: { queuedMs: 150, runningMs: 400, conclusion: 'success' }
        })
      ),
    [COUNTED]: () =>
      rotate(
        { environment: 'production' },
        {},
        sb => sb.github.queueRun({ waitingMs: Infinity }),
        // Unchanged reads are 304s, however slowly a loaded machine lets the action poll.
        sb => approveWhen(sb.log, sb.github, reads => reads.length >= 4)
      )
  },
  4
)

describe('the right run, when the server rejects return_run_details', () => {
  it('finds its run by the rotation id in the run title, beside a dispatch of the same second', async () => {
    const scenario = await scenarios(SAME_SECOND)
    const { sb, result } = scenario
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    const ours = sb.github.runs.get(Number(result.outputs['deploy-run-id']))!
    expect(ours.displayTitle).toMatch(/^Deploy \d+-1-[0-9a-f]{8}$/)
    expect(ours.inputs).toEqual({
      reason: 'scheduled token rotation',
      rotation_id: expect.any(String)
    })
    expect(ours.conclusion).toBe('success')
    expect(sb.github.runs.size).toBe(2)
    // The rejected dispatch, then the one that started the run; both carried the rotation id.
    expect(dispatchPosts(sb).map(e => [e.status, (e.body as { inputs: object }).inputs])).toEqual([
      [422, ours.inputs],
      [204, ours.inputs]
    ])
    expect(result.stdout).toContain(`rotation_id=${ours.inputs.rotation_id}`)
    expect(deleteOfOldToken(sb)).toHaveLength(1)
    expectSound(scenario)
  })

  it('without a rotation id, ignores a dispatch created one second earlier', async () => {
    const scenario = await scenarios(SECOND_EARLIER)
    const { sb, result } = scenario
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    const ours = sb.github.runs.get(Number(result.outputs['deploy-run-id']))!
    const other = [...sb.github.runs.values()].find(r => r.id !== ours.id)!
    expect(ours.inputs.reason).toBe('scheduled token rotation')
    expect(other.inputs.reason).toBe('manual')
    expect(Date.parse(ours.createdAt) - Date.parse(other.createdAt)).toBeGreaterThanOrEqual(1000)
    expect(other.conclusion).toBe('failure')
    // No rotation_id is sent to a workflow that does not declare it.
    expect(dispatchPosts(sb).map(e => e.body)).toEqual([
      { ref: 'main', inputs: { reason: 'scheduled token rotation' }, return_run_details: true },
      { ref: 'main', inputs: { reason: 'scheduled token rotation' } }
    ])
    expect(deleteOfOldToken(sb)).toHaveLength(1)
    expectSound(scenario)
  })

  it('refuses to guess between two runs it cannot tell apart, and revokes nothing', async () => {
    const scenario = await scenarios(CANNOT_TELL)
    const { sb, result } = scenario
    expectOldTokenKept(scenario)
    const [first, second] = [...sb.github.runs.values()]
    const errors = errorLines(result)
    expect(errors).toContain('2 new workflow_dispatch runs match it')
    expect(errors).toContain(first!.id.toString())
    expect(errors).toContain(second!.id.toString())
    expect(errors).toContain('Refusing to guess')
    expect(errors).toContain("Declare a 'rotation_id' input")
    expectSound(scenario)
  })
})

describe('every conclusion but success fails the deploy, and nothing is revoked', () => {
  it.each(FAILED_CONCLUSIONS)('%s', async conclusion => {
    const scenario = await scenarios(`concluded ${conclusion}`)
    const { sb, result } = scenario
    expectOldTokenKept(scenario)
    const runId = sb.log.events('run.created')[0]!.detail.run_id as number
    expect(sb.github.runs.get(runId)!.conclusion).toBe(conclusion)
    expect(errorLines(result)).toContain(`Deploy run ${runId} concluded ${conclusion}`)
    expectSound(scenario)
  })

  it('names the failed job and step', async () => {
    const scenario = await scenarios('concluded timed_out')
    expect(errorLines(scenario.result)).toMatch(
      /concluded timed_out — failed: deploy: timed_out \(Deploy the app\)/
    )
  })
})

describe('waiting, timing out and re-runs', () => {
  it('reports a run that waits for an environment approval, and completes once it is approved', async () => {
    const scenario = await scenarios(APPROVAL)
    const { sb, result } = scenario
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    const runUrl = result.outputs['deploy-run-url']!
    expect(result.stdout).toContain(
      `::warning::Deploy run ${result.outputs['deploy-run-id']} is waiting for an environment approval: ${runUrl}`
    )
    const at = (name: string) => sb.log.entries.indexOf(sb.log.events(name)[0]!)
    const deleted = sb.log.entries.indexOf(deleteOfOldToken(sb)[0]!)
    expect(at('run.waiting')).toBeLessThan(at('run.in_progress'))
    expect(at('run.completed')).toBeLessThan(deleted)
    expectSound(scenario)
  })

  it('leaves a run that never starts alone after deploy-timeout, and revokes nothing', async () => {
    const scenario = await scenarios(NEVER_STARTS)
    const { sb, result } = scenario
    expectOldTokenKept(scenario)
    const runId = sb.log.events('run.created')[0]!.detail.run_id as number
    expect(errorLines(result)).toContain(
      `Deploy run ${runId} did not conclude within deploy-timeout`
    )
    expect(sb.github.runs.get(runId)!.status).toBe('queued')
    expect(sb.log.requests({ method: 'POST' }).filter(e => e.path.endsWith('/cancel'))).toEqual([])
    expectSound(scenario)
  })

  it('follows a run re-run during the wait to the conclusion of its latest attempt', async () => {
    const scenario = await scenarios(RERUN)
    const { sb, result } = scenario
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    const runId = Number(result.outputs['deploy-run-id'])
    expect(
      sb.log
        .events('run.completed')
        .map(e => [e.detail.run_id, e.detail.attempt, e.detail.conclusion])
    ).toEqual([
      [runId, 1, 'failure'],
      [runId, 2, 'success']
    ])
    expect(result.stdout).toContain(`Deploy run ${runId} was re-run; following attempt 2.`)
    // The second attempt deployed the new credentials, and only then was the old token deleted.
    expect(sb.liveAccessKeyId()).toBe(result.outputs['token-id'])
    const completed = sb.log.entries.indexOf(sb.log.events('run.completed')[1]!)
    expect(sb.log.entries.indexOf(deleteOfOldToken(sb)[0]!)).toBeGreaterThan(completed)
    expectSound(scenario)
  })

  it('costs at most 4 counted requests to dispatch and follow a run, the budget read for free', async () => {
    const scenario = await scenarios(COUNTED)
    const { sb, result } = scenario
    expect(result.exitCode).toBe(0)
    const runId = Number(result.outputs['deploy-run-id'])
    const deployRequests = sb.log
      .requests({ service: 'github' })
      .filter(e => e.path.endsWith('/dispatches') || e.path.includes(`/actions/runs/${runId}`))
    expect(deployRequests.filter(e => e.counted).length).toBeLessThanOrEqual(4)
    expect(deployRequests.filter(e => e.status === 304).length).toBeGreaterThanOrEqual(2)
    const rateLimitReads = sb.log
      .requests({ service: 'github' })
      .filter(e => e.path === '/rate_limit')
    expect(rateLimitReads.length).toBeGreaterThan(0)
    expect(rateLimitReads.every(e => e.counted === false)).toBe(true)
    expectSound(scenario)
  })
})
