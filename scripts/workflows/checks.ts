/**
 * What actionlint cannot know about this project's workflow files, as pure functions of the
 * parsed YAML (used by `npm run lint:workflows` and by the tests):
 * - the reusable workflow mirrors action.yml (every input, its default and description; the
 *   credentials as secrets; every output), takes a GitHub token or a GitHub App, runs the action
 *   from its own commit, and bounds its job by the timeout formula;
 * - a caller (an example, or a workflow in the docs) passes only inputs and secrets that exist and
 *   every required one, gives `force` and `dry-run` inputs to `workflow_dispatch`, passes
 *   `account-id`, and gives its job a `timeout-minutes` that the worst case fits in (an hour at
 *   most with a GitHub App token);
 * - a deploy workflow can be dispatched with the inputs given and reads the secrets written;
 * - every third-party action is pinned by commit SHA with its version in a comment.
 */
import { TOKEN_ROTATION_INPUTS, parseDuration } from '../../src/settings.js'
import {
  APP_TOKEN_MINUTES,
  type TimeoutInputs,
  worstCaseMinutes,
  worstCaseText
} from './timeout.js'

/** The action's public name (the owner part is a placeholder until it is published). */
export const ACTION = 'r2-token-rotation/r2-token-rotation'
export const REUSABLE_PATH = '.github/workflows/rotate-r2-token.yml'
export const APP_TOKEN_ACTION = 'actions/create-github-app-token'
/** Where the reusable workflow checks out its own commit, to run the action from it. */
export const SELF_CHECKOUT_PATH = '.r2-token-rotation'

/** The action inputs that are credentials: the reusable workflow takes them as secrets. */
export const SECRET_INPUTS = [
  'cloudflare-api-token',
  'current-token',
  'current-access-key-id',
  'current-secret-access-key',
  'github-token',
  'smoke-headers',
  'current-client-secret'
]
/** Inputs of the reusable workflow that belong to its job, not to the action. */
export const JOB_INPUTS = [
  'runs-on',
  'timeout-minutes',
  'github-app-client-id',
  'github-app-repositories'
]
/** Secrets of the reusable workflow that belong to its job: the App's key. */
export const JOB_SECRETS = ['github-app-private-key']
/**
 * Required by action.yml for a token rotation, but not taken by the management token's own
 * rotation (`rotate-management-token`): the reusable workflow declares them optional, and the
 * action says when one is missing.
 */
export const TOKEN_ROTATION_REQUIRED = ['secrets', 'deploy-workflow']
export const MANAGEMENT_MODE = 'rotate-management-token'

/** What the rotation step of the reusable workflow passes as `github-token`. */
export const REUSABLE_GITHUB_TOKEN = '${{ steps.app-token.outputs.token || secrets.github-token }}'

export type Doc = Record<string, unknown>

export interface InputSpec {
  description?: string
  required?: boolean
  default?: unknown
  type?: string
}

/** action.yml and the reusable workflow, parsed: what callers are checked against. */
export interface Contracts {
  action: Doc
  reusable: Doc
}

export function object(value: unknown): Doc {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Doc) : {}
}

/** `on.<event>` of a workflow, whatever form `on` takes (a name, a list or a map). */
function trigger(doc: Doc, event: string): Doc | undefined {
  const on = doc.on
  if (on === event) return {}
  if (Array.isArray(on)) return on.includes(event) ? {} : undefined
  const map = object(on)
  return event in map ? object(map[event]) : undefined
}

function workflowCall(doc: Doc): Doc {
  return trigger(doc, 'workflow_call') ?? {}
}

/** A default as the runner hands it to an action: a string (`false`, not false). */
function asInputString(value: unknown): string {
  return value === undefined || value === null ? '' : String(value)
}

function steps(job: Doc): Doc[] {
  return Array.isArray(job.steps) ? job.steps.map(object) : []
}

const usesOf = (step: Doc): string => (typeof step.uses === 'string' ? step.uses : '')

// ------------------------------------------------------------------------- the reusable workflow

/** The input defaults a call of the reusable workflow gets, as strings. */
function reusableDefaults(reusable: Doc): Record<string, string> {
  const inputs = object(workflowCall(reusable).inputs) as Record<string, InputSpec>
  return Object.fromEntries(
    Object.entries(inputs).map(([name, spec]) => [name, asInputString(spec.default)])
  )
}

export function checkReusable({ action, reusable }: Contracts): string[] {
  const problems: string[] = []
  const actionInputs = object(action.inputs) as Record<string, InputSpec>
  const call = workflowCall(reusable)
  const inputs = object(call.inputs) as Record<string, InputSpec>
  const secrets = object(call.secrets) as Record<string, InputSpec>
  const outputs = object(call.outputs) as Record<string, { value?: string }>

  for (const [name, spec] of Object.entries(actionInputs)) {
    const asSecret = SECRET_INPUTS.includes(name)
    const declared = asSecret ? secrets[name] : inputs[name]
    if (!declared) {
      problems.push(
        `action input '${name}' is missing from workflow_call ${asSecret ? 'secrets' : 'inputs'}`
      )
      continue
    }
    // github-token may give way to a GitHub App, whose token the workflow mints itself; the
    // management token's own rotation takes no secrets and no deploy workflow.
    const required =
      name === 'github-token' || TOKEN_ROTATION_REQUIRED.includes(name)
        ? false
        : Boolean(spec.required)
    if (Boolean(declared.required) !== required) {
      problems.push(
        `'${name}': required is ${Boolean(declared.required)}, expected ${required} (action.yml says ${Boolean(spec.required)})`
      )
    }
    if (
      !asSecret &&
      !spec.required &&
      asInputString(declared.default) !== asInputString(spec.default)
    ) {
      problems.push(
        `input '${name}': default '${asInputString(declared.default)}', action.yml says '${asInputString(spec.default)}'`
      )
    }
    if (!asSecret && declared.description !== spec.description) {
      problems.push(`input '${name}': the description differs from action.yml's`)
    }
  }
  for (const name of Object.keys(inputs)) {
    if (!(name in actionInputs) && !JOB_INPUTS.includes(name))
      problems.push(`input '${name}' is not an action input`)
    if (SECRET_INPUTS.includes(name))
      problems.push(`'${name}' is a credential: declare it under secrets`)
  }
  for (const name of Object.keys(secrets)) {
    if (!SECRET_INPUTS.includes(name) && !JOB_SECRETS.includes(name))
      problems.push(`secret '${name}' is not a credential input of the action`)
  }
  for (const name of JOB_SECRETS) {
    if (!secrets[name]) problems.push(`secret '${name}' is missing`)
  }

  const actionOutputs = Object.keys(object(action.outputs))
  const declaredOutputs = Object.keys(outputs)
  if (actionOutputs.join() !== declaredOutputs.join()) {
    problems.push(
      `outputs [${declaredOutputs.join(', ')}] differ from action.yml's [${actionOutputs.join(', ')}]`
    )
  }
  for (const name of actionOutputs) {
    const value = outputs[name]?.value ?? ''
    if (!value.startsWith('${{ jobs.') || !value.endsWith(`.outputs.${name} }}`)) {
      problems.push(`output '${name}' is not the job output of the same name`)
    }
  }

  const jobs = Object.entries(object(reusable.jobs)).map(([id, job]) => [id, object(job)] as const)
  const found = jobs.find(([, job]) => steps(job).some(s => usesOf(s).startsWith('./')))
  if (!found) {
    problems.push(`no step runs the action from the workflow's own commit (uses: ./…)`)
    return problems
  }
  const [jobId, job] = found
  problems.push(...checkSelfCheckout(steps(job)).map(p => `job ${jobId}: ${p}`))
  const step = steps(job).find(s => usesOf(s).startsWith('./'))!
  if (typeof step.id !== 'string') problems.push('the rotation step needs an id for its outputs')
  const withs = object(step.with)
  for (const name of Object.keys(actionInputs)) {
    const context = SECRET_INPUTS.includes(name) ? 'secrets' : 'inputs'
    const expected = name === 'github-token' ? REUSABLE_GITHUB_TOKEN : `\${{ ${context}.${name} }}`
    if (withs[name] !== expected)
      problems.push(`the step passes '${name}' as '${String(withs[name])}', expected '${expected}'`)
  }
  problems.push(...checkAppTokenSteps(steps(job)).map(p => `job ${jobId}: ${p}`))

  // Its job's timeout is the caller's `timeout-minutes`, whose default fits the defaults.
  if (job['timeout-minutes'] !== '${{ inputs.timeout-minutes }}') {
    problems.push(`job ${jobId}: timeout-minutes must be '\${{ inputs.timeout-minutes }}'`)
  }
  const defaults = reusableDefaults(reusable)
  const budget = timeoutInputsOf(defaults, {}, { secrets: 3, targets: 1 })
  const given = Number(defaults['timeout-minutes'])
  if (typeof budget !== 'string' && !(given >= worstCaseMinutes(budget))) {
    problems.push(
      `input 'timeout-minutes': default ${defaults['timeout-minutes']} is less than the worst case with the defaults and three secrets: ${worstCaseText(budget)}`
    )
  }
  return problems
}

/**
 * The step that runs `./<path>` follows a checkout of the workflow's own repository at its own
 * commit into `<path>`: in a called workflow `./` alone is the caller's workspace, and `@v1`
 * would float away from the commit the caller pinned.
 */
function checkSelfCheckout(list: Doc[]): string[] {
  const at = list.findIndex(s => usesOf(s).startsWith('./'))
  const local = usesOf(list[at]!).replace(/^\.\//, '').replace(/\/$/, '')
  const checkout = list
    .slice(0, at)
    .find(s => usesOf(s).startsWith('actions/checkout@') && object(s.with).path === local)
  if (!checkout) return [`no actions/checkout step puts the action's own commit at '${local}'`]
  const withs = object(checkout.with)
  const problems: string[] = []
  if (withs.repository !== '${{ job.workflow_repository }}')
    problems.push(
      `the checkout of '${local}' must take repository: \${{ job.workflow_repository }}`
    )
  if (withs.ref !== '${{ job.workflow_sha }}')
    problems.push(`the checkout of '${local}' must take ref: \${{ job.workflow_sha }}`)
  if (withs['persist-credentials'] !== false)
    problems.push(`the checkout of '${local}' must set persist-credentials: false`)
  return problems
}

/** create-github-app-token v2 and later take `client-id`; v1's `app-id` is deprecated. */
function checkAppTokenSteps(list: Doc[]): string[] {
  return list
    .filter(s => usesOf(s).startsWith(`${APP_TOKEN_ACTION}@`))
    .flatMap(s => {
      const withs = object(s.with)
      const problems: string[] = []
      if ('app-id' in withs) problems.push(`${APP_TOKEN_ACTION}: pass client-id, not app-id`)
      if (!('client-id' in withs)) problems.push(`${APP_TOKEN_ACTION}: client-id is missing`)
      return problems
    })
}

// ---------------------------------------------------------------------------------- callers

/**
 * The values an input takes in a job: one for a literal, one per matrix entry for
 * `${{ matrix.X }}`; undefined for any other expression, unless `embedded` allows expressions
 * inside a longer text (a line of `secret-targets` naming the repository owner).
 */
function valuesOf(value: unknown, matrix: Doc, embedded = false): string[] | undefined {
  if (value === undefined) return undefined
  const text = asInputString(value)
  const only = /^\$\{\{\s*matrix\.([\w-]+)\s*\}\}$/.exec(text.trim())
  if (only) {
    const key = only[1]!
    const include = Array.isArray(matrix.include) ? matrix.include.map(object) : []
    const listed = Array.isArray(matrix[key]) ? (matrix[key] as unknown[]) : []
    const all = [...include.map(entry => entry[key]), ...listed].filter(v => v !== undefined)
    return all.length > 0 ? all.map(asInputString) : undefined
  }
  if (!text.includes('${{')) return [text]
  return embedded && !/^\$\{\{[^}]*\}\}$/.test(text.trim()) ? [text] : undefined
}

const lineCount = (text: string): number => text.split('\n').filter(l => l.trim() !== '').length

/**
 * The timeout formula's inputs for one call: each duration at its largest over the matrix, the
 * secrets and targets at their most; a message when one is an expression that cannot be read.
 */
function timeoutInputsOf(
  defaults: Record<string, string>,
  withs: Doc,
  counts: { secrets?: number; targets?: number },
  matrix: Doc = {}
): TimeoutInputs | string {
  if (MANAGEMENT_MODE in withs && asInputString(withs[MANAGEMENT_MODE]) !== '') {
    // No deploy, no smoke checks, no watch; revoke-grace is an expiry, not a wait. One secret.
    const management = timeoutInputsOf(
      { ...defaults, 'secret-targets': defaults['secret-targets'] ?? 'repo' },
      { 'secret-targets': withs['secret-targets'] ?? defaults['secret-targets'] ?? 'repo' },
      { secrets: 1 },
      matrix
    )
    return typeof management === 'string'
      ? management
      : {
          ...management,
          'deploy-timeout': '0',
          'smoke-timeout': '0',
          'revoke-grace': '0',
          'revoke-watch': '0'
        }
  }
  const durations = ['deploy-timeout', 'smoke-timeout', 'revoke-grace', 'revoke-watch'] as const
  const result: Partial<TimeoutInputs> = {}
  for (const name of durations) {
    const values = name in withs ? valuesOf(withs[name], matrix) : [defaults[name] ?? '0']
    if (!values) return `cannot check the timeout: '${name}' is an expression; give it literally`
    result[name] = values.reduce((a, b) =>
      parseDuration(b, name) > parseDuration(a, name) ? b : a
    )
  }
  for (const [name, key] of [
    ['secrets', 'secrets'],
    ['secret-targets', 'targets']
  ] as const) {
    const given = counts[key]
    if (given !== undefined) {
      result[key] = given
      continue
    }
    const values = name in withs ? valuesOf(withs[name], matrix, true) : [defaults[name] ?? '']
    if (!values) return `cannot check the timeout: '${name}' is an expression; give it literally`
    result[key] = Math.max(...values.map(lineCount))
  }
  return result as TimeoutInputs
}

/** A caller's `with:` and `secrets:` against the inputs and secrets it calls. */
function checkCall(
  what: string,
  given: { with: Doc; secrets?: unknown },
  inputs: Record<string, InputSpec>,
  secrets?: Record<string, InputSpec>
): string[] {
  const problems: string[] = []
  const management = MANAGEMENT_MODE in given.with
  const passed = object(given.secrets)
  for (const name of Object.keys(given.with)) {
    if (!(name in inputs)) problems.push(`${what}: '${name}' is not an input`)
  }
  for (const [name, spec] of Object.entries(inputs)) {
    const required = TOKEN_ROTATION_REQUIRED.includes(name) ? !management : spec.required
    if (required && !(name in given.with))
      problems.push(`${what}: required input '${name}' is missing`)
  }
  if (management) {
    for (const name of TOKEN_ROTATION_INPUTS.filter((n: string) => n in given.with || n in passed))
      problems.push(`${what}: '${name}' is refused with ${MANAGEMENT_MODE}`)
  }
  if (!secrets) return problems
  if (given.secrets === 'inherit') {
    problems.push(
      `${what}: 'secrets: inherit' cannot fill secrets whose names hold a hyphen; pass each one`
    )
    return problems
  }
  for (const name of Object.keys(passed)) {
    if (!(name in secrets))
      problems.push(`${what}: '${name}' is not a secret of the called workflow`)
  }
  for (const [name, spec] of Object.entries(secrets)) {
    if (spec.required && !(name in passed))
      problems.push(`${what}: required secret '${name}' is missing`)
  }
  // A GitHub token, or a GitHub App: one of the two.
  const app = 'github-app-client-id' in given.with
  if (app && !('github-app-private-key' in passed))
    problems.push(`${what}: github-app-client-id needs the secret github-app-private-key`)
  if (app && 'github-token' in passed)
    problems.push(`${what}: pass github-token or a GitHub App, not both`)
  if (!app && !('github-token' in passed))
    problems.push(`${what}: pass the secret github-token, or github-app-client-id with its key`)
  return problems
}

/**
 * `workflow_dispatch` declares `force` and `dry-run` (booleans), and the call passes both: the
 * first manual run of a fresh token would otherwise end `skipped` under `rotate-after`.
 */
function checkDispatchInputs(doc: Doc, what: string, withs: Doc): string[] {
  const dispatch = trigger(doc, 'workflow_dispatch')
  if (!dispatch) return []
  const inputs = object(dispatch.inputs)
  const problems: string[] = []
  for (const name of ['force', 'dry-run']) {
    if (object(inputs[name]).type !== 'boolean')
      problems.push(`workflow_dispatch needs a boolean input '${name}'`)
    const passed = asInputString(withs[name])
    if (!new RegExp(`\\binputs\\.${name.replace('-', '\\-')}\\b`).test(passed))
      problems.push(`${what}: pass '${name}' from the workflow_dispatch input (inputs.${name})`)
  }
  return problems
}

/**
 * A workflow that runs a rotation (an example, or one in the docs): what it calls exists, and its
 * job is given the time the worst case takes. `hygiene` adds the top-level rules every example
 * keeps: `permissions:` and `concurrency:`.
 */
export function checkCaller(doc: Doc, contracts: Contracts, hygiene = true): string[] {
  const problems: string[] = []
  const actionInputs = object(contracts.action.inputs) as Record<string, InputSpec>
  const actionDefaults = Object.fromEntries(
    Object.entries(actionInputs).map(([name, spec]) => [name, asInputString(spec.default)])
  )
  const call = workflowCall(contracts.reusable)
  let rotations = 0

  for (const [jobId, value] of Object.entries(object(doc.jobs))) {
    const job = object(value)
    const matrix = object(object(job.strategy).matrix)
    const uses = typeof job.uses === 'string' ? job.uses : ''
    if (uses.includes(`/${REUSABLE_PATH}@`)) {
      rotations += 1
      const what = `job ${jobId}`
      if (!uses.startsWith(`${ACTION}/${REUSABLE_PATH}@`))
        problems.push(`${what}: call ${ACTION}/${REUSABLE_PATH}@<ref>`)
      const withs = object(job.with)
      problems.push(
        ...checkCall(
          what,
          { with: withs, secrets: job.secrets },
          object(call.inputs) as Record<string, InputSpec>,
          object(call.secrets) as Record<string, InputSpec>
        ),
        ...checkDispatchInputs(doc, what, withs),
        ...checkAccountId(what, withs)
      )
      const defaults = reusableDefaults(contracts.reusable)
      const timeout = valuesOf(withs['timeout-minutes'] ?? defaults['timeout-minutes'], matrix)
      problems.push(
        ...checkTimeout(
          what,
          timeoutInputsOf(defaults, withs, {}, matrix),
          timeout,
          'github-app-client-id' in withs,
          `${what}: with: timeout-minutes`
        )
      )
    }
    const list = steps(job)
    list.forEach((step, i) => {
      if (!usesOf(step).startsWith(`${ACTION}@`)) return
      rotations += 1
      const what = `job ${jobId} step ${i + 1}`
      const withs = object(step.with)
      problems.push(
        ...checkCall(what, { with: withs }, actionInputs),
        ...checkDispatchInputs(doc, what, withs),
        ...checkAccountId(what, withs)
      )
      const app = list.some(s => usesOf(s).startsWith(`${APP_TOKEN_ACTION}@`))
      problems.push(
        ...checkTimeout(
          what,
          timeoutInputsOf(actionDefaults, withs, {}, matrix),
          job['timeout-minutes'] === undefined
            ? undefined
            : valuesOf(job['timeout-minutes'], matrix),
          app,
          `job ${jobId}: timeout-minutes`
        )
      )
    })
    problems.push(...checkAppTokenSteps(list).map(p => `job ${jobId}: ${p}`))
  }
  if (hygiene) {
    if (rotations === 0)
      problems.push(`runs no rotation (neither ${ACTION}@<ref> nor the reusable workflow)`)
    if (!('permissions' in doc)) problems.push('sets no top-level permissions:')
    if (!('concurrency' in doc)) problems.push('sets no top-level concurrency:')
  }
  return problems
}

/** Account-owned tokens need it: every caller shows where it comes from. */
function checkAccountId(what: string, withs: Doc): string[] {
  return 'account-id' in withs
    ? []
    : [
        `${what}: pass account-id (e.g. \${{ vars.CLOUDFLARE_ACCOUNT_ID }}): account-owned tokens need it`
      ]
}

function checkTimeout(
  what: string,
  budget: TimeoutInputs | string,
  timeout: string[] | undefined,
  app: boolean,
  where: string
): string[] {
  if (typeof budget === 'string') return [`${what}: ${budget}`]
  const least = worstCaseMinutes(budget)
  if (!timeout) return [`${where} is not set: at least ${worstCaseText(budget)}`]
  const problems: string[] = []
  for (const value of timeout) {
    const minutes = Number(value)
    if (!Number.isFinite(minutes)) {
      problems.push(`${where} '${value}' is not a number`)
    } else if (minutes < least) {
      problems.push(
        `${where} ${minutes} is less than the worst case with a rollback: ${worstCaseText(budget)}`
      )
    } else if (app && minutes > APP_TOKEN_MINUTES) {
      problems.push(
        `${where} ${minutes}: a GitHub App token expires after ${APP_TOKEN_MINUTES} minutes, so the job must end before; shorten deploy-timeout or smoke-timeout`
      )
    }
  }
  return problems
}

// ------------------------------------------------------------------------- deploy workflows

/**
 * A deploy workflow the action dispatches: it declares `workflow_dispatch` with every key the
 * rotation passes in `deploy-inputs`, and reads the secrets an app runs on (the S3 pair, or the
 * token when there is no pair), so that its run ships the ones the rotation just wrote.
 */
export function checkDeploy(deploy: Doc, rotation: Doc): string[] {
  const problems: string[] = []
  const dispatch = trigger(deploy, 'workflow_dispatch')
  if (!dispatch) return ['does not declare on: workflow_dispatch']
  const declared = Object.keys(object(dispatch.inputs))
  const text = JSON.stringify(deploy)
  for (const job of Object.values(object(rotation.jobs))) {
    for (const step of steps(object(job))) {
      if (!usesOf(step).startsWith(`${ACTION}@`)) continue
      const withs = object(step.with)
      if (withs['deploy-workflow'] === 'none') continue
      const inputs = Object.keys(JSON.parse(asInputString(withs['deploy-inputs']) || '{}') as Doc)
      for (const key of inputs.filter(k => !declared.includes(k)))
        problems.push(`deploy-inputs passes '${key}', which workflow_dispatch does not declare`)
      const written = asInputString(withs.secrets)
        .split('\n')
        .map(line => line.split('=').map(part => part.trim()))
        .filter(([name, field]) => name && field)
      const pair = written.filter(([, field]) => field !== 'token')
      for (const [name] of pair.length > 0 ? pair : written) {
        if (!text.includes(`secrets.${name}`))
          problems.push(`does not read the secret ${name} that the rotation writes`)
      }
    }
  }
  return problems
}

// ------------------------------------------------------------------------------------ pins

/**
 * Every `uses:` of a third-party action or workflow is a full commit SHA followed by its version
 * in a comment (`@<40 hex> # v1.2.3`). Local paths and this project's own action (which has no
 * release yet) are exempt.
 */
export function checkPins(source: string): string[] {
  const problems: string[] = []
  source.split('\n').forEach((line, i) => {
    const match = /^\s*(?:-\s+)?uses:\s*['"]?([^\s'"#]+)['"]?\s*(#\s*(.*))?$/.exec(line)
    if (!match) return
    const [, ref, , comment] = match
    if (ref!.startsWith('./') || ref!.startsWith(`${ACTION}@`) || ref!.startsWith(`${ACTION}/`))
      return
    if (!/@[0-9a-f]{40}$/.test(ref!)) {
      problems.push(`line ${i + 1}: pin ${ref} by its full commit SHA`)
    } else if (!/^v?\d+(\.\d+){0,2}\b/.test(comment ?? '')) {
      problems.push(`line ${i + 1}: say which version ${ref} is, in a comment (# v1.2.3)`)
    }
  })
  return problems
}
