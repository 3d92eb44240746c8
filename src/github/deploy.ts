/**
 * The deploy step: check the workflow before anything changes, dispatch it exactly once, and
 * follow the run to its conclusion.
 *
 * Modelled on Codex-/await-remote-run: results are values, a total switch over run status and
 * conclusion where an unknown value fails loudly, conditional requests (ETag) while polling, and
 * the failed jobs of a failed run reported.
 */
import * as core from '@actions/core'
import { parse as parseYaml } from 'yaml'
import { sleep as realSleep } from '../backoff.js'
import { type GitHubClient, describeGitHubError, httpStatus } from './client.js'

export interface WorkflowInfo {
  id: number
  name: string
  path: string
  htmlUrl?: string
  defaultBranch: string
  declaredInputs: string[]
}

interface Repo {
  owner: string
  repo: string
}

type Sleep = (ms: number) => Promise<void>

/**
 * Elapsed time that also counts the time slept, so a deadline passes even when a test injects a
 * sleep that returns at once (otherwise such a loop would poll as fast as it can until real time
 * runs out).
 */
function sleepClock(sleep: Sleep = realSleep): { sleep: Sleep; elapsed: () => number } {
  const start = Date.now()
  let slept = 0
  return {
    sleep: async ms => {
      slept += ms
      await sleep(ms)
    },
    elapsed: () => Math.max(Date.now() - start, slept)
  }
}

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
 * The `workflow_dispatch` trigger of a workflow file and its inputs; undefined when the file does
 * not declare the trigger. `on` may be a string, a list or a map (GitHub's workflow syntax); the
 * `yaml` package parses YAML 1.2, where `on` stays a string key and never becomes `true`.
 */
function dispatchTrigger(text: string, path: string): Map<string, DeclaredInput> | undefined {
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (error) {
    throw new Error(`${path} is not valid YAML: ${(error as Error).message}`, { cause: error })
  }
  if (!isRecord(doc)) throw new Error(`${path} is not a workflow (no top-level map).`)
  const on = doc['on']
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
      if (spec.required && !spec.hasDefault) problems.push(`required input '${name}' is missing`)
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
  repo: Repo,
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
        : `deploy-workflow '${workflow}' in ${where}: cannot read the workflow. ${describeGitHubError(error)}. The github-token needs "Actions: read".`,
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

  const declared = dispatchTrigger(text, found.path)
  if (!declared) {
    throw new Error(
      `deploy-workflow ${found.path} (at ${fileRef}) does not declare the workflow_dispatch trigger; add \`on: workflow_dispatch\` so that the action can start it.`
    )
  }
  const problems = inputProblems(declared, inputs, found.path)
  if (problems) throw new Error(problems)

  return {
    id: found.id,
    name: found.name,
    path: found.path,
    htmlUrl: found.html_url,
    defaultBranch,
    declaredInputs: [...declared.keys()]
  }
}

// ------------------------------------------------------------------ dispatch

export interface DispatchedRun {
  runId: number
  htmlUrl: string
  apiUrl: string
}

export interface DispatchOptions {
  /** Injected by tests. */
  sleep?: Sleep
  /** How long to look for the run when the server gives no run details (default 60 s). */
  findTimeoutMs?: number
}

/** GitHub usually lists a dispatched run within seconds; a minute covers a busy queue. */
const FIND_RUN_TIMEOUT_MS = 60_000

/** Clock difference between the runner and GitHub tolerated when matching a run's `created_at`. */
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

function dispatchError(workflow: WorkflowInfo, repo: Repo, ref: string, error: unknown): Error {
  const status = httpStatus(error)
  const hint =
    status === 403 || status === 404
      ? ' The github-token needs "Actions: write" on the deploy repository.'
      : status === 422
        ? ' Check deploy-ref (the branch or tag must exist) and deploy-inputs.'
        : status !== undefined && status >= 500
          ? ' It was not retried, because a second dispatch would start a second run; check the Actions tab before running again.'
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
}

/** `refs/heads/main` → `main`: the runs list filters on the short branch (or tag) name. */
function shortRef(ref: string): string {
  return ref.replace(/^refs\/(heads|tags)\//, '')
}

/**
 * Recent `workflow_dispatch` runs of the workflow on `ref`, newest first (the API's order).
 * `created` is compared here rather than sent as a `created=>=…` query, whose range syntax the
 * OpenAPI description (format date-time) does not describe.
 */
async function recentDispatchRuns(
  octokit: GitHubClient,
  repo: Repo,
  workflow: WorkflowInfo,
  ref: string,
  sinceMs: number
): Promise<ListedRun[]> {
  const { data } = await octokit.request(
    'GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs',
    {
      ...repo,
      workflow_id: workflow.id,
      event: 'workflow_dispatch',
      branch: shortRef(ref),
      per_page: 30,
      exclude_pull_requests: true
    }
  )
  return data.workflow_runs
    .filter(run => Date.parse(run.created_at) >= sinceMs)
    .map(run => ({
      id: Number(run.id),
      html_url: run.html_url,
      url: run.url,
      created_at: run.created_at
    }))
}

async function findDispatchedRun(
  octokit: GitHubClient,
  repo: Repo,
  workflow: WorkflowInfo,
  ref: string,
  dispatchedAt: number,
  known: Set<number>,
  options: DispatchOptions
): Promise<DispatchedRun> {
  const clock = sleepClock(options.sleep)
  const deadline = options.findTimeoutMs ?? FIND_RUN_TIMEOUT_MS
  let delay = 1000
  for (;;) {
    let candidates: ListedRun[]
    try {
      candidates = (
        await recentDispatchRuns(octokit, repo, workflow, ref, dispatchedAt - CLOCK_SKEW_MS)
      ).filter(run => !known.has(run.id))
    } catch (error) {
      throw new Error(
        `Dispatched ${workflow.path} on ${ref}, but listing its runs failed. ${describeGitHubError(error)}. The github-token needs "Actions: read".`,
        { cause: error }
      )
    }
    if (candidates.length === 1) {
      const run = candidates[0]!
      return { runId: run.id, htmlUrl: run.html_url, apiUrl: run.url }
    }
    if (candidates.length > 1) {
      throw new Error(
        `Dispatched ${workflow.path} on ${ref}, but ${candidates.length} workflow_dispatch runs started at the same time: ` +
          `${candidates.map(r => r.html_url).join(', ')}. Refusing to guess which one deploys the new secrets; ` +
          `avoid concurrent dispatches of this workflow, or use a GitHub version that supports return_run_details.`
      )
    }
    const remaining = deadline - clock.elapsed()
    if (remaining <= 0) {
      throw new Error(
        `Dispatched ${workflow.path} on ${ref}, but no new workflow_dispatch run appeared within ${Math.round(deadline / 1000)} s; check the Actions tab of ${repo.owner}/${repo.repo}.`
      )
    }
    await clock.sleep(Math.min(delay, remaining))
    delay = Math.min(delay * 2, 5000)
  }
}

/**
 * POST …/dispatches with `return_run_details: true`, never repeated (`request.retries: 0`; the
 * client's throttling callbacks refuse to repeat it too). Since 2026-02-19 GitHub answers 200
 * with `workflow_run_id`, `run_url` and `html_url` (docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event).
 * A server that rejects the flag (GHES ≤ 3.20: 400/422 naming it) dispatched nothing: dispatch
 * again without it and find the new run by event, branch and creation time, refusing to guess
 * between several. A 204 (the flag ignored) dispatched a run without details: find it the same way.
 */
export async function dispatchWorkflow(
  octokit: GitHubClient,
  repo: Repo,
  workflow: WorkflowInfo,
  ref: string,
  inputs: Record<string, string>,
  options: DispatchOptions = {}
): Promise<DispatchedRun> {
  const params = { ...repo, workflow_id: workflow.id, ref, inputs }
  const firstAt = Date.now()
  let response: { status: number; data: unknown }
  try {
    response = await octokit.request(DISPATCH_ROUTE, {
      ...params,
      return_run_details: true,
      request: { retries: 0 }
    })
  } catch (error) {
    if (!rejectsRunDetails(error)) throw dispatchError(workflow, repo, ref, error)
    core.info(
      `${repo.owner}/${repo.repo}: the server does not know return_run_details (GitHub Enterprise Server 3.20 or older); dispatching without it and finding the run by event, branch and time.`
    )
    // Runs that already exist are not ours, whatever their time stamps say.
    const secondAt = Date.now()
    let known: Set<number>
    try {
      const before = await recentDispatchRuns(
        octokit,
        repo,
        workflow,
        ref,
        secondAt - CLOCK_SKEW_MS
      )
      known = new Set(before.map(run => run.id))
    } catch (listError) {
      throw new Error(
        `Cannot list the runs of ${workflow.path} in ${repo.owner}/${repo.repo}. ${describeGitHubError(listError)}. The github-token needs "Actions: read".`,
        { cause: listError }
      )
    }
    try {
      await octokit.request(DISPATCH_ROUTE, { ...params, request: { retries: 0 } })
    } catch (retryError) {
      throw dispatchError(workflow, repo, ref, retryError)
    }
    return findDispatchedRun(octokit, repo, workflow, ref, secondAt, known, options)
  }
  const details = response.data as
    { workflow_run_id?: unknown; html_url?: unknown; run_url?: unknown } | undefined
  if (response.status === 200 && typeof details?.workflow_run_id === 'number') {
    return {
      runId: details.workflow_run_id,
      htmlUrl: String(details.html_url ?? ''),
      apiUrl: String(details.run_url ?? '')
    }
  }
  return findDispatchedRun(octokit, repo, workflow, ref, firstAt, new Set(), options)
}

// ------------------------------------------------------------------ follow

export type RunOutcome =
  | { ok: true; conclusion: 'success'; runId: number; htmlUrl: string; attempt: number }
  | {
      ok: false
      reason: 'conclusion' | 'timeout'
      conclusion?: string
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
  /** First pause between polls (default 1000 ms); grows while nothing changes. */
  pollMs?: number
  onStatus?: (status: string, run: { htmlUrl: string }) => void
  sleep?: (ms: number) => Promise<void>
}

type FailedJob = Extract<RunOutcome, { ok: false }>['failedJobs'][number]

/** Job and step conclusions that do not count as failed. */
const PASSING = new Set(['success', 'skipped', 'neutral'])

async function failedJobsOf(
  octokit: GitHubClient,
  repo: Repo,
  runId: number
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
    core.warning(`Could not list the jobs of run ${runId}: ${describeGitHubError(error)}`)
    return []
  }
}

interface RunState {
  status: string | null
  conclusion: string | null
  htmlUrl: string
  attempt: number
}

/**
 * Polls GET …/runs/{id} with `If-None-Match`: an unchanged run answers 304, which does not count
 * against the primary rate limit (docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
 * Octokit has no cache, and throws a RequestError with status 304, so the last body is kept here.
 * The run resource always describes its latest attempt (`run_attempt`), so a re-run is followed.
 * Only `success` passes; an unknown status or conclusion throws. A timeout leaves the run alone.
 */
export async function followRun(
  octokit: GitHubClient,
  repo: Repo,
  runId: number,
  options: FollowOptions
): Promise<RunOutcome> {
  const clock = sleepClock(options.sleep)
  const pollMs = options.pollMs ?? 1000
  // While nothing changes the pause grows by half each poll, up to 10× (at most 15 s).
  const maxPollMs = Math.max(pollMs, Math.min(pollMs * 10, 15_000))
  let interval = pollMs
  let etag: string | undefined
  let run: RunState | undefined
  let lastStatus: string | null | undefined

  for (;;) {
    let changed = false
    try {
      const response = await octokit.request('GET /repos/{owner}/{repo}/actions/runs/{run_id}', {
        ...repo,
        run_id: runId,
        exclude_pull_requests: true,
        headers: etag === undefined ? {} : { 'if-none-match': etag }
      })
      etag = response.headers.etag ?? undefined
      run = {
        status: response.data.status,
        conclusion: response.data.conclusion,
        htmlUrl: response.data.html_url,
        attempt: response.data.run_attempt ?? 1
      }
      changed = true
    } catch (error) {
      if (httpStatus(error) !== 304 || run === undefined) {
        throw new Error(
          `Cannot read deploy run ${runId} in ${repo.owner}/${repo.repo}. ${describeGitHubError(error)}. The github-token needs "Actions: read".`,
          { cause: error }
        )
      }
    }

    if (run.status !== lastStatus) {
      lastStatus = run.status
      options.onStatus?.(run.status ?? 'null', { htmlUrl: run.htmlUrl })
    }

    switch (run.status) {
      case 'queued':
      case 'in_progress':
      case 'waiting': // an environment approval is pending
      case 'pending':
      case 'requested':
        break
      case 'completed':
        return conclude(octokit, repo, runId, run)
      default:
        throw new Error(
          `Deploy run ${runId} has status '${run.status}', which this action does not know; treating it as a failure: ${run.htmlUrl}`
        )
    }

    const remaining = options.timeoutMs - clock.elapsed()
    if (remaining <= 0) {
      return {
        ok: false,
        reason: 'timeout',
        runId,
        htmlUrl: run.htmlUrl,
        attempt: run.attempt,
        failedJobs: []
      }
    }
    interval = changed ? pollMs : Math.min(interval * 1.5, maxPollMs)
    await clock.sleep(Math.min(interval, remaining))
  }
}

async function conclude(
  octokit: GitHubClient,
  repo: Repo,
  runId: number,
  run: RunState
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
        failedJobs: await failedJobsOf(octokit, repo, runId)
      }
    default:
      throw new Error(
        `Deploy run ${runId} completed with conclusion '${run.conclusion}', which this action does not know; treating it as a failure: ${run.htmlUrl}`
      )
  }
}
