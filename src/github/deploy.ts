/**
 * The deploy step: check the workflow before anything changes, dispatch it exactly once, find
 * the run it started (and no other), and follow that run to its conclusion at almost no cost
 * against the rate limit.
 *
 * Modelled on Codex-/await-remote-run: results are values, a total switch over run status and
 * conclusion where an unknown value fails loudly, conditional requests (ETag) while polling, and
 * the failed jobs of a failed run reported.
 */
import { randomBytes } from 'node:crypto'
import { parse as parseYaml } from 'yaml'
import type { RepoRef } from '../model.js'
import { type Clock, retryAfterMs, systemClock } from '../backoff.js'
import { mayHaveTakenEffect } from '../errors.js'
import { log as actionLog } from '../log.js'
import {
  type GitHubClient,
  type GitHubClientLog,
  RUN_DETAILS_ALWAYS_VERSION,
  apiVersionOf,
  describeGitHubError,
  httpStatus
} from './client.js'

/**
 * The deploy workflow input through which the action tags the run it dispatches. A workflow that
 * declares it and names its runs by it (`run-name: Deploy ${{ inputs.rotation_id }}`) lets the
 * action find its run by title on servers that give no run id for a dispatch (GitHub Enterprise
 * Server 3.20 and older), however many other dispatches happen at the same time.
 */
export const ROTATION_ID_INPUT = 'rotation_id'

export interface WorkflowInfo {
  id: number
  name: string
  path: string
  htmlUrl?: string
  defaultBranch: string
  declaredInputs: string[]
  /** The workflow's `run-name` contains `inputs.rotation_id`, so a run's title names its rotation. */
  runNameUsesRotationId: boolean
  /**
   * The `environment:` of each job that names one: its secrets shadow the repository's (and those
   * the organization shares) for that job. `expression` when the name is computed (`${{ … }}`) and
   * cannot be known before the run.
   */
  environments: JobEnvironment[]
}

export type JobEnvironment = { job: string; name: string } | { job: string; expression: string }

// ------------------------------------------------------------------ preflight

interface DeclaredInput {
  required: boolean
  hasDefault: boolean
  type?: string
  options?: string[]
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * The `workflow_dispatch` trigger of a workflow file and its inputs (undefined when the file does
 * not declare the trigger), and its `run-name`. `on` may be a string, a list or a map (GitHub's
 * workflow syntax); the `yaml` package parses YAML 1.2, where `on` stays a string key and never
 * becomes `true`.
 */
function readWorkflowFile(
  text: string,
  path: string
): {
  trigger: Map<string, DeclaredInput> | undefined
  runName?: string
  environments: JobEnvironment[]
} {
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (error) {
    throw new Error(`${path} is not valid YAML: ${(error as Error).message}`, { cause: error })
  }
  if (!isRecord(doc)) throw new Error(`${path} is not a workflow (no top-level map).`)
  const runName = typeof doc['run-name'] === 'string' ? doc['run-name'] : undefined
  return { trigger: dispatchTrigger(doc['on']), runName, environments: jobEnvironments(doc) }
}

/**
 * `jobs.<id>.environment` is a name or `{name, url}` (docs.github.com, "Workflow syntax":
 * jobs.<job_id>.environment); a name may be an expression.
 */
function jobEnvironments(doc: Record<string, unknown>): JobEnvironment[] {
  const jobs = doc['jobs']
  if (!isRecord(jobs)) return []
  const found: JobEnvironment[] = []
  for (const [job, spec] of Object.entries(jobs)) {
    if (!isRecord(spec)) continue
    const environment = spec['environment']
    const name = isRecord(environment) ? environment['name'] : environment
    if (typeof name !== 'string' || name.trim() === '') continue
    found.push(name.includes('${{') ? { job, expression: name } : { job, name: name.trim() })
  }
  return found
}

function dispatchTrigger(on: unknown): Map<string, DeclaredInput> | undefined {
  const inputs = new Map<string, DeclaredInput>()
  if (on === 'workflow_dispatch') return inputs
  if (Array.isArray(on)) return on.includes('workflow_dispatch') ? inputs : undefined
  if (!isRecord(on) || !('workflow_dispatch' in on)) return undefined
  const trigger = on['workflow_dispatch']
  const declared = isRecord(trigger) ? trigger['inputs'] : undefined
  if (isRecord(declared)) {
    for (const [name, spec] of Object.entries(declared)) {
      const s = isRecord(spec) ? spec : {}
      inputs.set(name, {
        required: s['required'] === true || s['required'] === 'true',
        hasDefault: s['default'] !== undefined && s['default'] !== null,
        type: typeof s['type'] === 'string' ? s['type'] : undefined,
        options: Array.isArray(s['options']) ? s['options'].map(String) : undefined
      })
    }
  }
  return inputs
}

/** Every problem GitHub would answer a dispatch with 422 for, found before anything changes. */
function inputProblems(
  declared: Map<string, DeclaredInput>,
  inputs: Record<string, string>,
  path: string
): string | undefined {
  const problems: string[] = []
  const names = [...declared.keys()]
  for (const key of Object.keys(inputs)) {
    if (declared.has(key)) continue
    const sameButCase = names.find(n => n.toLowerCase() === key.toLowerCase())
    problems.push(
      sameButCase
        ? `'${key}' is not declared (did you mean '${sameButCase}'?)`
        : `'${key}' is not declared`
    )
  }
  for (const [name, spec] of declared) {
    const value = inputs[name]
    if (value === undefined) {
      // The action always supplies the rotation id itself.
      if (spec.required && !spec.hasDefault && name !== ROTATION_ID_INPUT) {
        problems.push(`required input '${name}' is missing`)
      }
      continue
    }
    if (spec.type === 'boolean' && value !== 'true' && value !== 'false') {
      problems.push(`'${name}' is a boolean input; pass true or false`)
    }
    if (spec.type === 'number' && (value.trim() === '' || !Number.isFinite(Number(value)))) {
      problems.push(`'${name}' is a number input; '${value}' is not a number`)
    }
    if (spec.type === 'choice' && spec.options && !spec.options.includes(value)) {
      problems.push(`'${name}' must be one of ${spec.options.join(', ')}`)
    }
  }
  if (problems.length === 0) return undefined
  const list = names.length ? names.join(', ') : 'none'
  return `deploy-inputs do not fit ${path}: ${problems.join('; ')}. Declared inputs: ${list}.`
}

/**
 * Preflight (read-only): GET the repository (default branch), GET the workflow (file name or id),
 * check it is active; read its file through the contents API at `ref` (default: the default
 * branch, where GitHub requires a dispatchable workflow to live) and check that it declares
 * `workflow_dispatch`, every key of `inputs`, and that no required input without a default is
 * missing. Throws an Error that says what to fix.
 */
export async function inspectWorkflow(
  octokit: GitHubClient,
  repo: RepoRef,
  workflow: string | number,
  inputs: Record<string, string>,
  ref?: string
): Promise<WorkflowInfo> {
  const where = `${repo.owner}/${repo.repo}`

  let defaultBranch: string
  try {
    const { data } = await octokit.request('GET /repos/{owner}/{repo}', { ...repo })
    defaultBranch = data.default_branch
  } catch (error) {
    throw new Error(
      `deploy-repository ${where}: cannot read the repository. ${describeGitHubError(error)}. ` +
        `Check the name, and that the github-token has access to it.`,
      { cause: error }
    )
  }

  let found: { id: number; name: string; path: string; state: string; html_url: string }
  try {
    ;({ data: found } = await octokit.request(
      'GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}',
      { ...repo, workflow_id: workflow }
    ))
  } catch (error) {
    const status = httpStatus(error)
    throw new Error(
      status === 404
        ? `deploy-workflow '${workflow}' was not found in ${where}. Give the file name under .github/workflows (e.g. deploy.yml) or the numeric workflow id; the github-token needs "Actions: read" (and "Actions: write" to dispatch).`
        : `deploy-workflow '${workflow}' in ${where}: cannot read the workflow. ${describeGitHubError(error)}. The github-token needs "Actions: read" (and "Actions: write" to dispatch).`,
      { cause: error }
    )
  }
  if (found.state !== 'active') {
    throw new Error(
      `deploy-workflow ${found.path} in ${where} is ${found.state}; enable it (Actions tab, or \`gh workflow enable ${found.id} -R ${where}\`) and run again.`
    )
  }

  const fileRef = ref ?? defaultBranch
  let text: string
  try {
    const { data } = await octokit.request('GET /repos/{owner}/{repo}/contents/{path}', {
      ...repo,
      path: found.path,
      ref: fileRef
    })
    if (Array.isArray(data) || data.type !== 'file' || !('content' in data)) {
      throw new Error(`${found.path} is not a file`)
    }
    if (data.encoding !== 'base64') {
      throw new Error(`GitHub sent ${found.path} as '${data.encoding}' (files over 1 MB)`)
    }
    text = Buffer.from(data.content, 'base64').toString('utf8')
  } catch (error) {
    const status = httpStatus(error)
    throw new Error(
      `deploy-workflow ${found.path}: cannot read the file at ${fileRef} in ${where}. ${describeGitHubError(error)}.` +
        (status === 403 || status === 404 ? ' The github-token needs "Contents: read".' : ''),
      { cause: error }
    )
  }

  const { trigger: declared, runName, environments } = readWorkflowFile(text, found.path)
  if (!declared) {
    throw new Error(
      `deploy-workflow ${found.path} (at ${fileRef}) does not declare the workflow_dispatch trigger; add \`on: workflow_dispatch\` so that the action can start it.`
    )
  }
  const problems = inputProblems(declared, inputs, found.path)
  if (problems) throw new Error(problems)

  const runNameUsesRotationId =
    runName !== undefined &&
    /\$\{\{[^}]*\b(?:github\.event\.)?inputs\.rotation_id\b[^}]*\}\}/.test(runName)
  if (declared.has(ROTATION_ID_INPUT) && !runNameUsesRotationId) {
    actionLog.warning(
      `deploy-workflow ${found.path} declares the input ${ROTATION_ID_INPUT} but its run-name does not use it; add \`run-name: ${found.name} \${{ inputs.${ROTATION_ID_INPUT} }}\` so that the action can tell its run from other dispatches on servers that do not return the run id.`
    )
  }

  return {
    id: found.id,
    name: found.name,
    path: found.path,
    htmlUrl: found.html_url,
    defaultBranch,
    declaredInputs: [...declared.keys()],
    runNameUsesRotationId,
    environments
  }
}

/** One workflow run as the rotation needs it; undefined when GitHub has no such run (404). */
export async function getRun(
  octokit: GitHubClient,
  repo: RepoRef,
  runId: number
): Promise<
  | { status: string | null; conclusion: string | null; htmlUrl: string; updatedAt: string }
  | undefined
> {
  try {
    const { data } = await octokit.request('GET /repos/{owner}/{repo}/actions/runs/{run_id}', {
      ...repo,
      run_id: runId,
      exclude_pull_requests: true
    })
    return {
      status: data.status,
      conclusion: data.conclusion,
      htmlUrl: data.html_url,
      updatedAt: data.updated_at
    }
  } catch (error) {
    if (httpStatus(error) === 404) return undefined
    throw new Error(
      `Cannot read run ${runId} of ${repo.owner}/${repo.repo}: ${describeGitHubError(error)}. The github-token needs "Actions: read".`,
      { cause: error }
    )
  }
}

// ------------------------------------------------------------------ GitHub's clock and budget

type Headers = Record<string, unknown>

function headersOf(error: unknown): Headers | undefined {
  return (error as { response?: { headers?: Headers } }).response?.headers
}

/** GitHub's time (whole seconds) from a response's `date` header, if it sent one. */
function serverTime(headers: Headers | undefined): number | undefined {
  const value = headers?.['date']
  if (typeof value !== 'string') return undefined
  const ms = Date.parse(value)
  return Number.isNaN(ms) ? undefined : ms
}

export interface RateBudget {
  limit: number
  remaining: number
  /** Epoch milliseconds. */
  resetAt: number
}

/**
 * GET /rate_limit, which "does not count against your REST API rate limit"
 * (docs.github.com/rest/rate-limit/rate-limit): the core budget, and GitHub's clock. GitHub
 * Enterprise Server with rate limiting disabled answers 404; neither is then known for certain
 * (its `date` header still gives the clock).
 */
async function readRateLimit(
  octokit: GitHubClient,
  log: GitHubClientLog
): Promise<{ budget?: RateBudget; serverMs?: number }> {
  try {
    const response = await octokit.request('GET /rate_limit')
    const limits = response.data.resources.core
    return {
      budget: { limit: limits.limit, remaining: limits.remaining, resetAt: limits.reset * 1000 },
      serverMs: serverTime(response.headers)
    }
  } catch (error) {
    log.debug(`GET /rate_limit: ${describeGitHubError(error)}`)
    return { serverMs: serverTime(headersOf(error)) }
  }
}

// ------------------------------------------------------------------ conditional requests

interface Conditional<T> {
  etag?: string
  value?: T
}

/**
 * One GET with `If-None-Match` when a body is cached. A 304 costs no primary rate limit
 * (docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate);
 * Octokit has no cache and throws a RequestError with status 304, so the last body is kept here.
 */
async function conditionalGet<D, T>(
  cache: Conditional<T>,
  get: (headers: Record<string, string>) => Promise<{ headers: Headers; data: D }>,
  parse: (data: D) => T
): Promise<{ value: T; changed: boolean; headers: Headers }> {
  try {
    const response = await get(cache.etag === undefined ? {} : { 'if-none-match': cache.etag })
    const etag = response.headers['etag']
    cache.etag = typeof etag === 'string' ? etag : undefined
    cache.value = parse(response.data)
    return { value: cache.value, changed: true, headers: response.headers }
  } catch (error) {
    if (httpStatus(error) !== 304 || cache.value === undefined) throw error
    return { value: cache.value, changed: false, headers: headersOf(error) ?? {} }
  }
}

// ------------------------------------------------------------------ dispatch

export interface DispatchedRun {
  runId: number
  htmlUrl: string
  apiUrl: string
  /** The value sent as the `rotation_id` input, when the workflow declares it. */
  rotationId?: string
  /**
   * The core rate-limit budget as read just before the dispatch, less the dispatches sent (each
   * counts); pass it to `followRun` as `rateBudget` so that it need not read it again.
   */
  rateBudget?: RateBudget
}

export interface DispatchOptions {
  clock?: Clock
  /** How long to look for the run when the server gives no run details (default 60 s). */
  findTimeoutMs?: number
  /**
   * After a dispatch whose answer leaves open whether a run started (5xx, a lost connection),
   * how long to look for that run before dispatching again (default 10 s).
   */
  lookMs?: number
  /** Pause between looks at the run list when the server gives no run details (default 1 s). */
  pollMs?: number
  /**
   * Without a rotation id in the run's title, how long a new run must stay the only candidate
   * before it is taken (default 5 s): another dispatch made at the same moment may be listed a
   * little later than it.
   */
  settleMs?: number
  /** The rotation id to send (default: `newRotationId` of an unknown run). */
  rotationId?: string
  /** Runs known not to be this dispatch's (e.g. the rotation's earlier deploy runs). */
  knownRunIds?: Iterable<number>
  /** Default: @actions/core. */
  log?: GitHubClientLog
}

/** GitHub usually lists a dispatched run within seconds; a minute covers a busy queue. */
const FIND_RUN_TIMEOUT_MS = 60_000
const FIND_POLL_MS = 1000
const SETTLE_MS = 5000
/** How long to look for the run of a dispatch whose answer was lost before dispatching again. */
const LOOK_AFTER_AMBIGUOUS_MS = 10_000
const MAX_DISPATCHES = 3
/** Longer rate-limit waits fail the dispatch instead (a primary limit resets on the hour). */
const MAX_REFUSED_WAIT_MS = 300_000

/**
 * Without GitHub's `date` header, the runner's clock stands in for GitHub's, allowing this much
 * difference between them when comparing with a run's `created_at`.
 */
const CLOCK_SKEW_MS = 30_000

const DISPATCH_ROUTE = 'POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches'

/**
 * GitHub Enterprise Server 3.20 and older answer 400 (or 422) to the unknown body field
 * `return_run_details` and dispatch nothing (cli/cli#12672).
 */
function rejectsRunDetails(error: unknown): boolean {
  const status = httpStatus(error)
  if (status !== 400 && status !== 422) return false
  const data = (error as { response?: { data?: unknown } }).response?.data
  const text = `${(error as Error).message ?? ''} ${data === undefined ? '' : JSON.stringify(data)}`
  return text.includes('return_run_details')
}

function dispatchError(
  workflow: WorkflowInfo,
  repo: RepoRef,
  ref: string,
  error: unknown,
  sent: number
): Error {
  const status = httpStatus(error)
  const hint =
    status === 403 || status === 404
      ? ' The github-token needs "Actions: write" on the deploy repository.'
      : status === 422
        ? ' Check deploy-ref (the branch or tag must exist) and deploy-inputs.'
        : sent > 1
          ? ` Gave up after ${sent} dispatches, each followed by a look for its run; check the Actions tab before running again.`
          : ''
  return new Error(
    `Dispatching ${workflow.path} on ${ref} in ${repo.owner}/${repo.repo} failed. ${describeGitHubError(error)}.${hint}`,
    { cause: error }
  )
}

interface ListedRun {
  id: number
  html_url: string
  url: string
  created_at: string
  display_title: string
  event: string
}

/** `refs/heads/main` → `main`: the runs list filters on the short branch (or tag) name. */
function shortRef(ref: string): string {
  return ref.replace(/^refs\/(heads|tags)\//, '')
}

/**
 * The newest `workflow_dispatch` runs of the workflow on `ref` (the API's order), by a conditional
 * request. `created` is compared by the caller rather than sent as a `created=>=…` query, whose
 * range syntax the OpenAPI description (format date-time) does not describe.
 */
async function listDispatchRuns(
  octokit: GitHubClient,
  repo: RepoRef,
  workflow: WorkflowInfo,
  ref: string,
  cache: Conditional<ListedRun[]>
): Promise<{ runs: ListedRun[]; headers: Headers }> {
  const { value, headers } = await conditionalGet(
    cache,
    ifNoneMatch =>
      octokit.request('GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs', {
        ...repo,
        workflow_id: workflow.id,
        event: 'workflow_dispatch',
        branch: shortRef(ref),
        per_page: 100,
        exclude_pull_requests: true,
        headers: ifNoneMatch
      }),
    data =>
      data.workflow_runs.map(run => ({
        id: Number(run.id),
        html_url: run.html_url,
        url: run.url,
        created_at: run.created_at,
        display_title: run.display_title,
        event: run.event
      }))
  )
  return { runs: value, headers }
}

function listError(workflow: WorkflowInfo, repo: RepoRef, error: unknown): Error {
  return new Error(
    `Cannot list the runs of ${workflow.path} in ${repo.owner}/${repo.repo}. ${describeGitHubError(error)}. The github-token needs "Actions: read".`,
    { cause: error }
  )
}

/**
 * How the dispatched run is told from others when the server gives no run id:
 * - `title`: its `display_title` contains the unique rotation id (the workflow names its runs by
 *   the `rotation_id` input), which no other run can carry;
 * - `time`: a `workflow_dispatch` run of the workflow on the ref, not listed before the dispatch,
 *   created (on GitHub's clock) no earlier than the last answer before the dispatch. The actor is
 *   not compared: the login of the github-token's user is known only through GET /user, which a
 *   GitHub App installation token may not call (403, actions/create-github-app-token#258), and
 *   GITHUB_ACTOR names whoever started this job, not the token's user. So a dispatch by the same
 *   or another user at the same moment cannot be told apart, and the action refuses to guess.
 */
type RunMatch = { by: 'title'; rotationId: string } | { by: 'time' }

interface RunSearch {
  match: RunMatch
  /** Runs listed before the dispatch. */
  known: Set<number>
  /** GitHub's time just before the dispatch (whole seconds). */
  notBeforeMs: number
}

/** The title carries the id as a word of its own (`Deploy 42-1-ab12`, not `… 42-1-ab12-2`). */
function titleNames(title: string, rotationId: string): boolean {
  return title.split(/[^\w-]+/).includes(rotationId)
}

function describeCandidates(runs: ListedRun[]): string {
  return runs.map(r => `${r.html_url} ("${r.display_title}", created ${r.created_at})`).join(', ')
}

/**
 * Looks at the run list until the dispatched run is found (see `RunMatch`), or `lookMs` passes
 * without one (undefined). Throws when it cannot tell which of several runs is the one.
 */
async function lookForRun(
  octokit: GitHubClient,
  repo: RepoRef,
  workflow: WorkflowInfo,
  ref: string,
  search: RunSearch,
  lookMs: number,
  options: DispatchOptions
): Promise<DispatchedRun | undefined> {
  const clock = options.clock ?? systemClock
  const start = clock.now()
  const elapsed = (): number => clock.now() - start
  const settleMs = options.settleMs ?? SETTLE_MS
  const pollMs = options.pollMs ?? FIND_POLL_MS
  const cache: Conditional<ListedRun[]> = {}
  const { match } = search
  const what = `Dispatched ${workflow.path} on ${ref} in ${repo.owner}/${repo.repo}`
  // The one candidate seen so far, and since when it has been the only one.
  let alone: { run: ListedRun; since: number } | undefined
  for (;;) {
    let runs: ListedRun[]
    try {
      ;({ runs } = await listDispatchRuns(octokit, repo, workflow, ref, cache))
    } catch (error) {
      throw listError(workflow, repo, error)
    }
    const fresh = runs.filter(run => run.event === 'workflow_dispatch' && !search.known.has(run.id))
    if (match.by === 'title') {
      const ours = fresh.filter(run => titleNames(run.display_title, match.rotationId))
      if (ours.length === 1) return toDispatched(ours[0]!)
      if (ours.length > 1) {
        throw new Error(
          `${what}, but ${ours.length} runs carry rotation id ${match.rotationId}: ${describeCandidates(ours)}. Refusing to guess which one deploys the new secrets.`
        )
      }
    } else {
      const candidates = fresh.filter(run => Date.parse(run.created_at) >= search.notBeforeMs)
      if (candidates.length > 1) {
        throw new Error(
          `${what}, but ${candidates.length} new workflow_dispatch runs match it (same workflow, branch and time): ${describeCandidates(candidates)}. ` +
            `Refusing to guess which one deploys the new secrets. Declare a '${ROTATION_ID_INPUT}' input in the deploy workflow and name its runs by it ` +
            `(run-name: ${workflow.name} \${{ inputs.${ROTATION_ID_INPUT} }}), or do not dispatch this workflow while the rotation runs.`
        )
      }
      const only = candidates[0]
      if (only === undefined) alone = undefined
      else if (alone?.run.id !== only.id) alone = { run: only, since: elapsed() }
      if (alone && elapsed() - alone.since >= settleMs) return toDispatched(alone.run)
    }
    const remaining = lookMs - elapsed()
    if (remaining <= 0 && !alone) return undefined
    const settleLeft = alone ? settleMs - (elapsed() - alone.since) : Infinity
    await clock.sleep(Math.max(0, Math.min(pollMs, settleLeft, alone ? Infinity : remaining)))
  }
}

function toDispatched(run: ListedRun): DispatchedRun {
  return { runId: run.id, htmlUrl: run.html_url, apiUrl: run.url }
}

/** Unique per dispatch, and telling: this job's run id and attempt, and random hex. */
export function newRotationId(runId: string, attempt: number): string {
  return `${runId || 'local'}-${attempt}-${randomBytes(4).toString('hex')}`
}

/**
 * How long to wait before dispatching again when GitHub refused the dispatch for a rate limit
 * (429, or 403 naming one): a refused request did nothing. Undefined for any other answer.
 */
function refusedFor(error: unknown): number | undefined {
  const status = httpStatus(error)
  if (status !== 429 && status !== 403) return undefined
  return rateLimitWait(error, Date.now())
}

/**
 * POST …/dispatches with `return_run_details: true`. Since 2026-02-19 GitHub answers 200 with
 * `workflow_run_id`, `run_url` and `html_url` (docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event).
 * Under API version 2026-03-10 (when the server serves no older one the action knows, see
 * client.ts) the flag is gone and every dispatch answers so: it is not sent.
 *
 * When the workflow declares the input `rotation_id`, a unique id is sent in it (replacing any
 * value from deploy-inputs). A server that rejects the flag (GHES ≤ 3.20: 400/422 naming it)
 * dispatched nothing: the action dispatches again without it and finds the new run, by the id in
 * its title when the workflow's run-name carries it, otherwise by event, branch and creation
 * time, refusing to guess between several (see `RunMatch`). A 204 (the flag ignored) dispatched a
 * run without details: it is found the same way.
 *
 * A dispatch is never repeated blindly (`request.retries: 0`; the client's throttling callbacks
 * refuse to repeat it too). After an answer that leaves it open whether a run started (5xx, a lost
 * connection) the action looks for that run first and dispatches again only when none appears;
 * after a rate-limit refusal it waits as GitHub asks. At most three dispatches in all.
 */
export async function dispatchWorkflow(
  octokit: GitHubClient,
  repo: RepoRef,
  workflow: WorkflowInfo,
  ref: string,
  inputs: Record<string, string>,
  options: DispatchOptions = {}
): Promise<DispatchedRun> {
  const log = options.log ?? actionLog
  const clock = options.clock ?? systemClock
  const declaresId = workflow.declaredInputs.includes(ROTATION_ID_INPUT)
  if (declaresId && inputs[ROTATION_ID_INPUT] !== undefined) {
    log.info(`deploy-inputs sets ${ROTATION_ID_INPUT}; the action sends its own unique id.`)
  }
  const baseId = declaresId ? (options.rotationId ?? newRotationId('', 1)) : undefined
  const where = `${workflow.path} on ${ref} in ${repo.owner}/${repo.repo}`

  // Any run created before this instant, on GitHub's clock, is not ours.
  const before = await readRateLimit(octokit, log)
  const spent = (dispatches: number): RateBudget | undefined =>
    before.budget && {
      ...before.budget,
      remaining: Math.max(0, before.budget.remaining - dispatches)
    }
  const search: RunSearch = {
    match: { by: 'time' },
    known: new Set(options.knownRunIds),
    notBeforeMs: before.serverMs ?? Date.now() - CLOCK_SKEW_MS
  }
  // From API version 2026-03-10 every dispatch answers with its run, and the flag is unknown.
  let withDetails = apiVersionOf(octokit) < RUN_DETAILS_ALWAYS_VERSION
  for (let sent = 1; ; sent++) {
    // Each dispatch its own id, so that a run of an earlier, ambiguous one is not taken for it.
    const rotationId = baseId === undefined ? undefined : sent === 1 ? baseId : `${baseId}-${sent}`
    search.match =
      rotationId !== undefined && workflow.runNameUsesRotationId
        ? { by: 'title', rotationId }
        : { by: 'time' }
    if (rotationId !== undefined) {
      log.info(`Dispatching ${workflow.path} with ${ROTATION_ID_INPUT}=${rotationId}`)
    }
    const body = {
      ...repo,
      workflow_id: workflow.id,
      ref,
      inputs: rotationId === undefined ? inputs : { ...inputs, [ROTATION_ID_INPUT]: rotationId },
      ...(withDetails ? { return_run_details: true } : {}),
      request: { retries: 0 }
    }
    let response: { status: number; data: unknown }
    try {
      response = await octokit.request(DISPATCH_ROUTE, body)
    } catch (error) {
      if (withDetails && rejectsRunDetails(error)) {
        // Rejected before dispatching anything: the same dispatch again, without the flag.
        withDetails = false
        sent -= 1
        log.info(
          `${repo.owner}/${repo.repo}: the server does not know return_run_details (GitHub Enterprise Server 3.20 or older); dispatching without it and finding the run ${search.match.by === 'title' ? `by ${ROTATION_ID_INPUT} in its title` : 'by event, branch and time'}.`
        )
        if (search.match.by === 'time') await snapshot(octokit, repo, workflow, ref, search)
        continue
      }
      const refused = refusedFor(error)
      const ambiguous = refused === undefined && mayHaveTakenEffect(error)
      if (
        sent >= MAX_DISPATCHES ||
        (refused === undefined && !ambiguous) ||
        (refused ?? 0) > MAX_REFUSED_WAIT_MS
      ) {
        throw dispatchError(workflow, repo, ref, error, sent)
      }
      if (refused !== undefined) {
        log.warning(
          `Dispatching ${where} was refused (${describeGitHubError(error)}): nothing was dispatched, so it is sent again in ${Math.ceil(refused / 1000)} s.`
        )
        await clock.sleep(refused)
        continue
      }
      log.warning(
        `Dispatching ${where} failed (${describeGitHubError(error)}); looking for the run it may have started before dispatching again.`
      )
      const lookMs = options.lookMs ?? LOOK_AFTER_AMBIGUOUS_MS
      const run = await lookForRun(octokit, repo, workflow, ref, search, lookMs, options)
      if (run) return { ...run, rotationId, rateBudget: spent(sent) }
      log.info(
        `No run of that dispatch appeared; dispatching again (looked for ${Math.round(lookMs / 1000)} s).`
      )
      continue
    }
    const details = response.data as
      { workflow_run_id?: unknown; html_url?: unknown; run_url?: unknown } | undefined
    if (response.status === 200 && typeof details?.workflow_run_id === 'number') {
      return {
        runId: details.workflow_run_id,
        htmlUrl: String(details.html_url ?? ''),
        apiUrl: String(details.run_url ?? ''),
        rotationId,
        rateBudget: spent(sent)
      }
    }
    const findMs = options.findTimeoutMs ?? FIND_RUN_TIMEOUT_MS
    const run = await lookForRun(octokit, repo, workflow, ref, search, findMs, options)
    if (run) return { ...run, rotationId, rateBudget: spent(sent) }
    const hint =
      search.match.by === 'title'
        ? ` with rotation id ${search.match.rotationId} in its title; check that the run-name of ${workflow.path} contains \${{ inputs.${ROTATION_ID_INPUT} }}`
        : ''
    throw new Error(
      `Dispatched ${where}, but no new workflow_dispatch run appeared${hint} within ${Math.round(findMs / 1000)} s; check the Actions tab of ${repo.owner}/${repo.repo}.`
    )
  }
}

/** Runs listed now are not ours, whatever their time stamps say; nor is anything older. */
async function snapshot(
  octokit: GitHubClient,
  repo: RepoRef,
  workflow: WorkflowInfo,
  ref: string,
  search: RunSearch
): Promise<void> {
  try {
    const listed = await listDispatchRuns(octokit, repo, workflow, ref, {})
    for (const run of listed.runs) search.known.add(run.id)
    search.notBeforeMs = serverTime(listed.headers) ?? search.notBeforeMs
  } catch (error) {
    throw listError(workflow, repo, error)
  }
}

// ------------------------------------------------------------------ follow

export type RunOutcome =
  | { ok: true; conclusion: 'success'; runId: number; htmlUrl: string; attempt: number }
  | {
      ok: false
      reason: 'conclusion' | 'timeout'
      conclusion?: string
      /** On timeout: the status the run was last seen in (e.g. `waiting`, `queued`). */
      status?: string
      runId: number
      htmlUrl: string
      attempt: number
      failedJobs: Array<{
        name: string
        conclusion: string
        failedSteps: string[]
        htmlUrl?: string
      }>
    }

export interface FollowOptions {
  timeoutMs: number
  /**
   * Pause between polls (default 1 s). Polls are conditional, so an unchanged run costs nothing
   * against the rate limit; the pause grows only when GitHub asks for it (`retry-after`, a
   * spent rate limit, `x-poll-interval`) or when polls would count (no ETag support).
   */
  pollMs?: number
  /**
   * The core budget as read just before (`DispatchedRun.rateBudget`); without it the budget is
   * read once at the start (GET /rate_limit, free but one more round trip).
   */
  rateBudget?: RateBudget
  /** Called when the run's status or attempt changes (`waiting`: an environment approval). */
  onStatus?: (status: string, run: { htmlUrl: string; attempt: number }) => void
  /** Default: @actions/core (warnings: a low rate budget at start, rate limits, GitHub errors). */
  log?: GitHubClientLog
  clock?: Clock
}

type FailedJob = Extract<RunOutcome, { ok: false }>['failedJobs'][number]

/** Polls while nothing changes; a 304 is free, so this only bounds how soon a change is seen. */
const POLL_MS = 1000

/**
 * Requests that count which following one run may need: one per change of the run resource
 * (queued, waiting, in progress, each job starting or finishing, completed, a re-run) and its jobs
 * when it fails.
 */
const FOLLOW_BUDGET = 10

/** Requests kept for what follows the deploy (the journal, a rollback's writes and redeploy). */
const RESERVE = 20

/** The longest pause after GitHub errors (5xx, a dropped connection) while following. */
const MAX_TROUBLE_PAUSE_MS = 30_000

/** Job and step conclusions that do not count as failed. */
const PASSING = new Set(['success', 'skipped', 'neutral'])

async function failedJobsOf(
  octokit: GitHubClient,
  repo: RepoRef,
  runId: number,
  log: GitHubClientLog
): Promise<FailedJob[]> {
  try {
    const jobs = await octokit.paginate('GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs', {
      ...repo,
      run_id: runId,
      // The jobs of the latest attempt, the one whose conclusion is reported.
      filter: 'latest',
      per_page: 100
    })
    return jobs
      .filter(job => job.conclusion !== null && !PASSING.has(job.conclusion))
      .map(job => ({
        name: job.name,
        conclusion: job.conclusion ?? '',
        failedSteps: (job.steps ?? [])
          .filter(step => step.conclusion !== null && !PASSING.has(step.conclusion))
          .map(step => step.name),
        htmlUrl: job.html_url ?? undefined
      }))
  } catch (error) {
    log.warning(`Could not list the jobs of run ${runId}: ${describeGitHubError(error)}`)
    return []
  }
}

interface RunState {
  status: string | null
  conclusion: string | null
  htmlUrl: string
  attempt: number
}

function finite(value: unknown): number | undefined {
  const n = typeof value === 'string' || typeof value === 'number' ? Number(value) : NaN
  return Number.isFinite(n) ? n : undefined
}

/**
 * How long GitHub asks to wait after a rate-limit answer (403 or 429), or undefined for any other
 * error: `retry-after` first, then the reset of a spent primary limit, else at least a minute
 * (docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately).
 */
function rateLimitWait(error: unknown, nowMs: number): number | undefined {
  const status = httpStatus(error)
  if (status !== 403 && status !== 429) return undefined
  const headers = headersOf(error) ?? {}
  const retryAfter = retryAfterMs(headers['retry-after'], nowMs)
  if (retryAfter !== undefined) return retryAfter
  const reset = finite(headers['x-ratelimit-reset'])
  if (headers['x-ratelimit-remaining'] === '0' && reset !== undefined) {
    return Math.max(1000, reset * 1000 - nowMs)
  }
  const message = (error as { message?: unknown }).message
  if (status === 429 || (typeof message === 'string' && /secondary rate limit/i.test(message))) {
    return 60_000
  }
  return undefined
}

/**
 * The pause before the next poll after an answer. `x-poll-interval` is GitHub's own request to
 * poll no faster. When polls count (the server sends no ETag, or answers every poll in full) they
 * are spread so that at most half of the budget above `RESERVE` is spent before it resets.
 */
function pollPause(headers: Headers, pollMs: number, pollsCount: boolean, nowMs: number): number {
  let pause = pollMs
  const asked = finite(headers['x-poll-interval'])
  if (asked !== undefined && asked > 0) pause = Math.max(pause, asked * 1000)
  const remaining = finite(headers['x-ratelimit-remaining'])
  const reset = finite(headers['x-ratelimit-reset'])
  if (pollsCount && remaining !== undefined && reset !== undefined) {
    const windowMs = Math.max(0, reset * 1000 - nowMs)
    const spendable = (remaining - RESERVE) / 2
    pause = Math.max(pause, spendable >= 1 ? windowMs / spendable : windowMs)
  }
  return pause
}

/**
 * Reads the budget once (free), unless the caller just did, and warns when following the run
 * could run out of it.
 */
async function warnIfBudgetLow(
  octokit: GitHubClient,
  timeoutMs: number,
  log: GitHubClientLog,
  nowMs: number,
  known: RateBudget | undefined
): Promise<void> {
  const budget = known ?? (await readRateLimit(octokit, log)).budget
  if (!budget) return
  const resets = new Date(budget.resetAt).toISOString().replace(/\.\d{3}Z$/, 'Z')
  log.debug(`GitHub rate limit: ${budget.remaining} of ${budget.limit} left, resets at ${resets}`)
  if (budget.remaining >= FOLLOW_BUDGET + RESERVE) return
  const inTime = budget.resetAt <= nowMs + timeoutMs
  log.warning(
    `Only ${budget.remaining} of ${budget.limit} GitHub API requests are left until ${resets}. ` +
      `Following the deploy run needs about ${FOLLOW_BUDGET} (unchanged polls are free) and the rest of the rotation about ${RESERVE}. ` +
      (inTime
        ? 'The budget resets within deploy-timeout; if it runs out, the action waits for the reset.'
        : 'It resets only after deploy-timeout: if it runs out, the run cannot be followed to its end. Rotate when the budget has recovered, or use a token with a budget of its own (a GitHub App).')
  )
}

/**
 * Polls GET …/runs/{id} every `pollMs` with `If-None-Match`: an unchanged run answers 304, which
 * costs no rate limit, so the run is watched closely (a change is seen within `pollMs`) at the
 * cost of one counted request per change. The run resource always describes its latest attempt
 * (`run_attempt`), so a run re-run during the wait is followed to its latest attempt's conclusion.
 * Only `success` passes; an unknown status or conclusion throws. Rate limits are waited out, and
 * GitHub errors (5xx, a dropped connection) retried, within the deadline. A timeout (`waiting`
 * for an approval included) leaves the run alone.
 */
export async function followRun(
  octokit: GitHubClient,
  repo: RepoRef,
  runId: number,
  options: FollowOptions
): Promise<RunOutcome> {
  const log = options.log ?? actionLog
  const clock = options.clock ?? systemClock
  const now = (): number => clock.now()
  const start = now()
  const pollMs = options.pollMs ?? POLL_MS
  await warnIfBudgetLow(octokit, options.timeoutMs, log, now(), options.rateBudget)

  const cache: Conditional<RunState> = {}
  let seen: { status: string | null; attempt: number } | undefined
  // Consecutive polls answered in full: three in a row mean the server ignores If-None-Match.
  let fullAnswers = 0
  let troubles = 0
  for (;;) {
    let pause: number
    try {
      const polled = await conditionalGet(
        cache,
        ifNoneMatch =>
          octokit.request('GET /repos/{owner}/{repo}/actions/runs/{run_id}', {
            ...repo,
            run_id: runId,
            exclude_pull_requests: true,
            headers: ifNoneMatch
          }),
        (data): RunState => ({
          status: data.status,
          conclusion: data.conclusion,
          htmlUrl: data.html_url,
          attempt: data.run_attempt ?? 1
        })
      )
      fullAnswers = polled.changed ? fullAnswers + 1 : 0
      troubles = 0
      const pollsCount = polled.changed && (cache.etag === undefined || fullAnswers >= 3)
      pause = pollPause(polled.headers, pollMs, pollsCount, now())
    } catch (error) {
      const wait = rateLimitWait(error, now())
      const status = httpStatus(error)
      if (wait !== undefined) {
        pause = wait
        log.warning(
          `GitHub rate limit while following deploy run ${runId}; polling again in ${Math.ceil(wait / 1000)} s. ${describeGitHubError(error)}`
        )
      } else if (status === undefined || status >= 500) {
        troubles += 1
        pause = Math.min(pollMs * 2 ** troubles, MAX_TROUBLE_PAUSE_MS)
        log.warning(
          `Reading deploy run ${runId} failed (${describeGitHubError(error)}); trying again in ${Math.ceil(pause / 1000)} s.`
        )
      } else {
        throw new Error(
          `Cannot read deploy run ${runId} in ${repo.owner}/${repo.repo}. ${describeGitHubError(error)}. The github-token needs "Actions: read".`,
          { cause: error }
        )
      }
    }

    const run = cache.value
    if (run !== undefined) {
      if (run.status !== seen?.status || run.attempt !== seen.attempt) {
        if (seen !== undefined && run.attempt !== seen.attempt) {
          log.info(`Deploy run ${runId} was re-run; following attempt ${run.attempt}.`)
        }
        seen = { status: run.status, attempt: run.attempt }
        options.onStatus?.(run.status ?? 'null', { htmlUrl: run.htmlUrl, attempt: run.attempt })
      }
      switch (run.status) {
        case 'queued':
        case 'in_progress':
        case 'waiting': // an environment approval is pending
        case 'pending':
        case 'requested':
          break
        case 'completed':
          return conclude(octokit, repo, runId, run, log)
        default:
          throw new Error(
            `Deploy run ${runId} has status '${run.status}', which this action does not know; treating it as a failure: ${run.htmlUrl}`
          )
      }
    }

    const remaining = options.timeoutMs - (now() - start)
    if (remaining <= 0) {
      return {
        ok: false,
        reason: 'timeout',
        status: run?.status ?? undefined,
        runId,
        htmlUrl: run?.htmlUrl ?? '',
        attempt: run?.attempt ?? 1,
        failedJobs: []
      }
    }
    await clock.sleep(Math.min(pause, remaining))
  }
}

async function conclude(
  octokit: GitHubClient,
  repo: RepoRef,
  runId: number,
  run: RunState,
  log: GitHubClientLog
): Promise<RunOutcome> {
  const base = { runId, htmlUrl: run.htmlUrl, attempt: run.attempt }
  switch (run.conclusion) {
    case 'success':
      return { ok: true, conclusion: 'success', ...base }
    case 'failure':
    case 'cancelled':
    case 'timed_out':
    case 'skipped':
    case 'neutral':
    case 'action_required':
    case 'startup_failure':
    case 'stale':
      return {
        ok: false,
        reason: 'conclusion',
        conclusion: run.conclusion,
        ...base,
        failedJobs: await failedJobsOf(octokit, repo, runId, log)
      }
    default:
      throw new Error(
        `Deploy run ${runId} completed with conclusion '${run.conclusion}', which this action does not know; treating it as a failure: ${run.htmlUrl}`
      )
  }
}
