/**
 * A GitHub REST API simulator for the sandbox: repositories, environments, sealed-box secrets
 * (repository, environment, organization, Dependabot) with real libsodium key pairs, Actions
 * variables, workflows and their files, workflow dispatch and runs that move through their states
 * on timers (telling a deploy hook what each completing run shipped), jobs, conditional
 * requests (ETag), the primary rate limit, API versions (`X-GitHub-Api-Version`), tokens that
 * expire, and GitHub Enterprise Server's variant of all this (`enterpriseServer`).
 *
 * Time comes from a clock: the real one, or a `ManualClock` that a test moves, so that a run of
 * simulated minutes is followed in a moment. A run's resource changes (and so its ETag) only
 * when GitHub's would: when its state changes and when one of its jobs starts or finishes.
 *
 * Every request is routed and validated through the official OpenAPI excerpt
 * (sandbox/openapi/github-actions-openapi.json) and so is every answer; a mismatch is recorded in
 * the RequestLog as a violation, so both a drifting simulator and an action that sends what GitHub
 * would reject fail the tests. Secret values are kept in memory only and never printed.
 */
import { createHash, randomBytes } from 'node:crypto'
import sodium from 'libsodium-wrappers'
import { parse as parseYaml } from 'yaml'
import type { RequestLog } from './log.js'
import { OpenApiValidator, type MatchedOperation } from './openapi.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'
import { sharedCache } from './shared-cache.js'

export type SecretScope =
  | { kind: 'repo'; repo: string }
  | { kind: 'env'; repo: string; environment: string }
  | { kind: 'org'; org: string }
  | { kind: 'dependabot'; repo: string }

export interface RunBehavior {
  /** How long the run stays `queued` (default 200 ms). */
  queuedMs?: number
  /** How long it stays `in_progress`, shared equally by the workflow's jobs, which run one after
   *  the other (default 500 ms). */
  runningMs?: number
  /** When set, the run waits this long in `waiting` (an environment approval) before it starts;
   *  `Infinity` waits until `approve()`. */
  waitingMs?: number
  /** The conclusion it reaches (default `success`). A failing conclusion fails the last job.
   *  `startup_failure`, `action_required`, `stale` and `skipped` conclude from `queued` without
   *  running a job. */
  conclusion?: string
  /** The run stays `queued` for ever. */
  neverStarts?: boolean
  /** When this attempt concludes, someone re-runs it (same run id, next attempt) with this
   *  behaviour, after `rerunAfterMs` (default 0: at once, before anyone can read the conclusion). */
  rerun?: RunBehavior
  rerunAfterMs?: number
  /**
   * What the run's deploy ships (default `on-success`):
   * - `on-success`: a run that concludes `success` rolls out the secrets it was dispatched with;
   *   any other conclusion ships nothing (the deploy step failed, or never ran);
   * - `stale`: the run concludes as `conclusion` says, but what it ships carries the credentials
   *   the app already had (a deploy that restored a cached build, or read other secrets);
   * - `always`: the run rolls out the secrets it was dispatched with and THEN concludes as
   *   `conclusion` says, even `failure` (a post-deploy step failed after the rollout).
   * A run that concludes without running a job (`startup_failure`, `action_required`, `stale`,
   * `skipped`) ships nothing whatever this says. The simulator only tells `hooks.beforeComplete`
   * (see `RunCompletion.deploy`); the sandbox's deploy wiring acts on it.
   */
  rollout?: Rollout
}

export type Rollout = 'on-success' | 'stale' | 'always'

/** What a completing attempt's deploy step shipped, as `hooks.beforeComplete` is told. */
export interface RunCompletion {
  /** The conclusion the attempt reaches (unless the hook throws: then `success` becomes `failure`). */
  conclusion: string
  /** The attempt's `RunBehavior.rollout`, defaulted. */
  rollout: Rollout
  /**
   * `fresh`: the deploy shipped the secrets the run was dispatched with; `stale`: it shipped, but
   * with the credentials the app already had; `none`: nothing was shipped.
   */
  deploy: 'fresh' | 'stale' | 'none'
}

/** The simulator's time: run timers, timestamps, the rate-limit window and the `date` header. */
export interface SimClock {
  now(): number
  setTimeout(callback: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

const realClock: SimClock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => {
    const timer = setTimeout(callback, ms)
    // Timers must not keep a test process alive once the sandbox is forgotten.
    timer.unref()
    return timer
  },
  clearTimeout: handle => clearTimeout(handle as NodeJS.Timeout)
}

/**
 * A clock that runs `1 / scale` times as fast as real time: a run that stays queued for 150 ms of
 * its time is queued for `150 * scale` real milliseconds. The sandbox's tests run the simulator
 * and the action (its R2_ROTATION_TIME_SCALE) on the same scale.
 */
export function scaledClock(scale: number): SimClock {
  const origin = Date.now()
  return {
    now: () => origin + (Date.now() - origin) / scale,
    setTimeout: (callback, ms) => realClock.setTimeout(callback, ms * scale),
    clearTimeout: handle => realClock.clearTimeout(handle)
  }
}

/**
 * A clock that moves only when told to, so that a test can follow a run of simulated minutes in
 * a fraction of a second: `advance(ms)` fires every timer that falls due on the way, in order,
 * with the clock set to each timer's due time. HTTP requests take no simulated time.
 */
export class ManualClock implements SimClock {
  private time: number
  private seq = 0
  private readonly pending = new Map<number, { at: number; callback: () => void }>()

  constructor(start = Date.now()) {
    this.time = start
  }

  now(): number {
    return this.time
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const handle = ++this.seq
    this.pending.set(handle, { at: this.time + Math.max(0, ms), callback })
    return handle
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number)
  }

  advance(ms: number): void {
    const end = this.time + Math.max(0, ms)
    for (;;) {
      let next: [number, { at: number; callback: () => void }] | undefined
      for (const entry of this.pending) {
        if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry
      }
      if (!next) break
      this.pending.delete(next[0])
      this.time = Math.max(this.time, next[1].at)
      next[1].callback()
    }
    this.time = end
  }
}

/**
 * Acting as GitHub Enterprise Server instead of github.com. What changes (each with its source):
 * - the REST API lives under `/api/v3` (docs.github.com/enterprise-server@latest/rest/quickstart:
 *   `http(s)://HOSTNAME/api/v3`), so `GitHubSim.url` ends in `/api/v3` and a request outside it
 *   gets 404 and a violation; `html_url`s point at the server itself;
 * - every answer carries `x-github-enterprise-version: <version>.0` (the REST docs' example
 *   response for GHES, github/docs content/rest/overview/resources-in-the-rest-api.md);
 * - rate limiting is off unless an administrator turns it on: `GET /rate_limit` answers 404
 *   "Rate limiting is not enabled." and no answer carries `x-ratelimit-*` (reported from GHES
 *   3.15 in actions/stale#1227 and with full headers in vermiculus/magithub#104). That it is
 *   off by default is UNCONFIRMED;
 * - releases up to 3.20 reject `return_run_details` on a dispatch (api-facts; see `dispatch`);
 *   that later releases accept it is UNCONFIRMED;
 * - only API version `2022-11-28` is served (UNCONFIRMED: which GHES release adds `2026-03-10`
 *   is not known here; pass `apiVersions` to choose).
 */
export interface EnterpriseServerOptions {
  /** The GHES feature release, e.g. `'3.20'`. */
  version: string
  /** Rate limiting as on github.com (default false: off, see above). */
  rateLimiting?: boolean
}

export interface GitHubSimOptions {
  /**
   * Answer a dispatch that carries `return_run_details` as GitHub Enterprise Server ≤ 3.20 does.
   * Default: true when `enterpriseServer` is 3.20 or older, else false.
   */
  rejectReturnRunDetails?: boolean
  /** Act as GitHub Enterprise Server (default: github.com). */
  enterpriseServer?: EnterpriseServerOptions
  /**
   * The REST API versions served (`X-GitHub-Api-Version`); any other gets 400. Default:
   * `2022-11-28` and `2026-03-10` on github.com, `2022-11-28` on GHES.
   */
  apiVersions?: string[]
  /** Default: the real clock. */
  clock?: SimClock
}

/** What a token may do; each defaults to true. */
export interface TokenPermissions {
  secrets?: boolean
  environments?: boolean
  actions?: boolean
  variables?: boolean
  contents?: boolean
}

export interface TokenOptions extends TokenPermissions {
  /** The user the token acts as (the `actor` of the runs it dispatches); default `sandbox-bot`. */
  login?: string
  /** Decides GitHub's 403 wording; default: `integration` for `ghs_`/`ghu_` tokens, else a PAT. */
  kind?: 'personal-access-token' | 'integration'
  /**
   * When the token expires (default: never). Until then every answer to a request made with it
   * carries `github-authentication-token-expiration`; from then on it gets 401 `Bad credentials`,
   * like an unknown token. Measured on the simulator's clock.
   */
  expiresAt?: Date | number
}

export interface SecretWrite {
  scope: SecretScope
  name: string
  ciphertext: string
  plaintext: string
  at: number
  status: 201 | 204
}

export interface SimJob {
  id: number
  startedAt: string | null
  completedAt: string | null
}

export interface RunAttempt {
  attempt: number
  status: string
  conclusion: string | null
  behavior: RunBehavior
  /** When this attempt was requested (the run's `run_started_at` for this attempt). */
  createdAt: string
  startedAt: string | null
  completedAt: string | null
  /** Changes when the attempt's state changes and when one of its jobs starts or finishes,
   *  nothing else (GitHub's run resource, and so its ETag, stays the same in between). */
  updatedAt: string
  /** When it concluded, in the simulator's milliseconds (for measuring how soon it is noticed). */
  completedAtMs: number | null
  /** One per job of the workflow, in order; they run one after the other. */
  jobs: SimJob[]
  /** The job running now (or the last one that ran). */
  currentJob: number
  /** Why the attempt failed when `hooks.beforeComplete` threw. */
  failure?: string
}

export interface SimRun {
  id: number
  /** `owner/name` as registered with `addRepo`. */
  repo: string
  workflowId: number
  workflowPath: string
  workflowName: string
  /** The ref as dispatched (`main`, `refs/heads/main`, `v1`). */
  ref: string
  headBranch: string
  headSha: string
  event: string
  /** The inputs the run sees: those sent plus the declared defaults, as strings. */
  inputs: Record<string, string>
  /** The environment the workflow's first job deploys to, if it names one. */
  environment?: string
  actor: string
  displayTitle: string
  runNumber: number
  status: string
  conclusion: string | null
  createdAt: string
  updatedAt: string
  runStartedAt: string
  attempt: number
  attempts: RunAttempt[]
}

export interface GitHubSimHooks {
  /** Called synchronously when a run is created (also for a re-run's new attempt). */
  onDispatch?: (run: SimRun) => void
  /**
   * Awaited just before an attempt is marked completed, whatever its conclusion (the deploy
   * step's moment: `completion` says what it shipped). A throw fails a run that was about to
   * succeed, and is kept as the attempt's `failure` in any case. Not called when the run is
   * cancelled through the API.
   */
  beforeComplete?: (run: SimRun, completion: RunCompletion) => Promise<void> | void
}

type Permission = keyof TokenPermissions

interface TokenState {
  value: string
  login: string
  kind: 'personal-access-token' | 'integration'
  permissions: Required<TokenPermissions>
  /** Epoch milliseconds. */
  expiresAt?: number
}

interface StoredSecret {
  name: string
  value: string
  createdAt: string
  updatedAt: string
}

interface OrgSecret extends StoredSecret {
  visibility: 'all' | 'private' | 'selected'
  selectedRepositoryIds: number[]
}

interface EnvironmentState {
  id: number
  name: string
  createdAt: string
  updatedAt: string
  secrets: Map<string, StoredSecret>
}

interface WorkflowState {
  id: number
  name: string
  path: string
  state: 'active' | 'disabled_manually'
  createdAt: string
  updatedAt: string
  runNumber: number
}

interface VariableState {
  name: string
  value: string
  createdAt: string
  updatedAt: string
}

interface RepoState {
  id: number
  owner: string
  name: string
  fullName: string
  private: boolean
  defaultBranch: string
  branches: Set<string>
  tags: Set<string>
  createdAt: string
  environments: Map<string, EnvironmentState>
  secrets: Map<string, StoredSecret>
  dependabotSecrets: Map<string, StoredSecret>
  variables: Map<string, VariableState>
  workflows: Map<number, WorkflowState>
  files: Map<string, string>
}

interface OrgState {
  id: number
  login: string
  secrets: Map<string, OrgSecret>
}

interface KeyPair {
  keyId: string
  publicKey: Uint8Array
  privateKey: Uint8Array
}

interface RateBucket {
  limit: number
  used: number
  /** Epoch seconds when the window resets. */
  reset: number
}

interface Reply {
  status: number
  headers?: Record<string, string>
  body?: unknown
}

interface Context {
  req: IncomingRequest
  params: Record<string, string>
  token: TokenState
  repo?: RepoState
  org?: OrgState
  apiVersion: string
}

interface Operation {
  /** The simulator's permission flag that gates the operation (none: any valid token). */
  needs?: Permission
  /** GitHub's fine-grained permission name, for `x-accepted-github-permissions`. */
  githubPermission: string
  handler: (ctx: Context) => Reply | Promise<Reply>
}

interface ParsedJob {
  name: string
  environment?: string
  labels: string[]
  steps: string[]
}

interface ParsedWorkflow {
  dispatchInputs: Record<string, DispatchInput> | null
  runName?: string
  jobs: ParsedJob[]
}

interface DispatchInput {
  required?: boolean
  default?: unknown
  type?: string
  options?: unknown[]
}

const DOCS = 'https://docs.github.com/rest'
const WEB = 'https://github.com'
// A PAT or GitHub App gets 5,000 requests an hour; anonymous callers 60
// (docs: "Rate limits for the REST API").
const RATE_LIMIT = 5000
const ANONYMOUS_RATE_LIMIT = 60
const RATE_WINDOW_SECONDS = 3600
// "Secrets can store up to 48 KB"; 100 secrets per repository and environment, 1,000 per
// organization (docs: "Using secrets in GitHub Actions", limits for secrets). Variables also hold
// up to 48 KB.
const SECRET_VALUE_LIMIT = 48 * 1024
const VARIABLE_VALUE_LIMIT = 48 * 1024
const SECRET_COUNT_LIMIT: Record<SecretScope['kind'], number> = {
  repo: 100,
  env: 100,
  org: 1000,
  dependabot: 100
}
// The API version from which a dispatch always answers 200 with the run details: the excerpt's
// x-github-breaking-changes for actions/create-workflow-dispatch removes the 204 and the
// `return_run_details` property (docs.github.com/rest/about-the-rest-api/breaking-changes).
const RUN_DETAILS_ALWAYS_VERSION = '2026-03-10'
// "Requests without the X-GitHub-Api-Version header will default to use the 2022-11-28 version.
// If you specify an API version that is no longer supported, you will receive a 400 error."
// (docs.github.com/rest/about-the-rest-api/api-versions)
const DEFAULT_API_VERSION = '2022-11-28'
const DOTCOM_API_VERSIONS = [DEFAULT_API_VERSION, RUN_DETAILS_ALWAYS_VERSION]
const ENTERPRISE_API_VERSIONS = [DEFAULT_API_VERSION]
const API_VERSIONS_DOCS = 'https://docs.github.com/rest/about-the-rest-api/api-versions'
// GHES serves the REST API under this prefix (docs.github.com/enterprise-server@latest/rest/quickstart).
const ENTERPRISE_API_PREFIX = '/api/v3'
// Conclusions a run reaches without running a job: it could not start (an invalid workflow), it
// needs someone's approval first, it went stale in the queue, or every job's `if` was false.
const CONCLUDES_UNSTARTED = new Set(['startup_failure', 'action_required', 'stale', 'skipped'])
const NAME_RULE =
  'Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_), ' +
  'must not start with a number, and must not start with the GITHUB_ prefix.'

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {}
  ) {
    super(message)
  }
}

/** GitHub's timestamps carry whole seconds. */
function iso(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z')
}

/**
 * A token's expiry as GitHub writes it in `github-authentication-token-expiration`, e.g.
 * `2021-10-07 19:07:53 UTC` (github/gh-aw#20097; go-github parses it with the layout
 * `2006-01-02 15:04:05 MST`, google/go-github#2031, after the changelog
 * github.blog/changelog/2021-07-26-expiration-options-for-personal-access-tokens).
 */
function tokenExpirationHeader(ms: number): string {
  return `${iso(ms).replace('T', ' ').replace('Z', '')} UTC`
}

/** `3.20` <= `3.9`? Compares GHES feature releases numerically, part by part. */
function releaseAtMost(version: string, limit: string): boolean {
  const a = version.split('.').map(Number)
  const b = limit.split('.').map(Number)
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0
    const y = b[i] ?? 0
    if (x !== y) return x < y
  }
  return true
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex')
}

function nodeId(prefix: string, id: number | string): string {
  return `${prefix}_${Buffer.from(`0:${String(id)}`).toString('base64url')}`
}

/** The git blob id of a file, as the contents API reports it. */
function blobSha(content: string): string {
  const bytes = Buffer.from(content, 'utf8')
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex')
}

/** A secret or variable name as GitHub accepts it; names are case-insensitive, stored upper-cased. */
function canonicalName(raw: string, what: 'Secret' | 'Variable'): string {
  const name = raw.toUpperCase()
  if (!/^[A-Z_][A-Z0-9_]*$/.test(name) || name.startsWith('GITHUB_')) {
    throw new ApiError(
      422,
      what === 'Secret' ? NAME_RULE : NAME_RULE.replace('Secret names', 'Variable names')
    )
  }
  return name
}

/**
 * What an attempt's deploy step shipped when it concludes `conclusion` (see `RunBehavior.rollout`):
 * nothing when no job ran; under `always`, the dispatched secrets whatever the conclusion;
 * otherwise only a success ships, stale or fresh.
 */
function completionOf(attempt: RunAttempt, conclusion: string): RunCompletion {
  const rollout = attempt.behavior.rollout ?? 'on-success'
  const ran = attempt.startedAt !== null
  const deploy = !ran
    ? 'none'
    : rollout === 'always'
      ? 'fresh'
      : conclusion !== 'success'
        ? 'none'
        : rollout === 'stale'
          ? 'stale'
          : 'fresh'
  return { conclusion, rollout, deploy }
}

function errorReply(
  status: number,
  message: string,
  documentationUrl: string,
  headers: Record<string, string> = {}
): Reply {
  return {
    status,
    headers,
    body: { message, documentation_url: documentationUrl, status: String(status) }
  }
}

/** The contents API takes a multi-segment path (`x-multi-segment` in the excerpt) that the router
 *  matches only as one segment; GitHub accepts the slashes literally or percent-encoded. */
function routablePath(pathname: string): string {
  const m = /^(\/repos\/[^/]+\/[^/]+\/contents\/)(.+)$/.exec(pathname)
  if (!m || !m[2]!.includes('/')) return pathname
  return m[1]! + m[2]!.split('/').join('%2F')
}

/** The bounds of one `created` date in GitHub's search syntax, in epoch seconds. */
function dateBounds(text: string): { start: number; end: number } | undefined {
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) {
    const start = Date.parse(`${text}T00:00:00Z`) / 1000
    return Number.isNaN(start) ? undefined : { start, end: start + 86399 }
  }
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/.test(text))
    return undefined
  const ms = Date.parse(/(Z|[+-]\d{2}:?\d{2})$/.test(text) ? text : `${text}Z`)
  if (Number.isNaN(ms)) return undefined
  const at = Math.floor(ms / 1000)
  return { start: at, end: at }
}

/** A predicate for the `created` filter: `>=2026-01-01T00:00:00Z`, `2026-01-01..2026-01-31`,
 *  `2026-01-01`. */
function createdFilter(expression: string): ((createdSeconds: number) => boolean) | undefined {
  const range = /^(.+)\.\.(.+)$/.exec(expression)
  if (range) {
    const from = range[1] === '*' ? { start: -Infinity, end: -Infinity } : dateBounds(range[1]!)
    const to = range[2] === '*' ? { start: Infinity, end: Infinity } : dateBounds(range[2]!)
    if (!from || !to) return undefined
    return t => t >= from.start && t <= to.end
  }
  const cmp = /^(>=|<=|>|<)?(.+)$/.exec(expression)
  const bounds = cmp ? dateBounds(cmp[2]!) : undefined
  if (!cmp || !bounds) return undefined
  switch (cmp[1]) {
    case '>=':
      return t => t >= bounds.start
    case '>':
      return t => t > bounds.end
    case '<=':
      return t => t <= bounds.end
    case '<':
      return t => t < bounds.start
    default:
      return t => t >= bounds.start && t <= bounds.end
  }
}

/** The value at a JSON pointer (`/jobs/0/conclusion`) of a body. */
function valueAt(body: unknown, pointer: string): unknown {
  let value = body
  for (const part of pointer.split('/').slice(1)) {
    if (value === null || typeof value !== 'object') return undefined
    value = (value as Record<string, unknown>)[part.replace(/~1/g, '/').replace(/~0/g, '~')]
  }
  return value
}

/**
 * Validator findings that are artefacts of the excerpt, not contract breaches:
 * - a numeric `workflow_id` path segment matches both branches of its `oneOf: [integer, string]`,
 *   though GitHub documents both forms;
 * - `nullable: true` next to an `enum` without null (e.g. a job's `conclusion`) rejects the null
 *   GitHub sends for an unfinished job.
 */
function isExcerptArtefact(problem: string, body: unknown): boolean {
  if (/^\/path\/\w+ must match exactly one schema in oneOf$/.test(problem)) return true
  const m = /^(\S+) must be equal to one of the allowed values$/.exec(problem)
  return m !== null && valueAt(body, m[1] === '/' ? '' : m[1]!) === null
}

/** Weak comparison of an `If-None-Match` header with an ETag (RFC 9110 §13.1.2). */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false
  const opaque = (tag: string) => tag.trim().replace(/^W\//, '')
  return header.split(',').some(tag => tag.trim() === '*' || opaque(tag) === opaque(etag))
}

function stepName(step: unknown, index: number): string {
  if (step && typeof step === 'object') {
    const s = step as Record<string, unknown>
    if (typeof s.name === 'string') return s.name
    if (typeof s.uses === 'string') return `Run ${s.uses}`
    if (typeof s.run === 'string') return `Run ${s.run.split('\n')[0]!.trim()}`
  }
  return `Step ${index + 1}`
}

/**
 * Parsed workflow files by their text, per process or Jest worker: a dispatch parses its
 * workflow, and so does every run it creates and every read of its jobs. Frozen, so that no
 * caller changes what another gets.
 */
const parsedWorkflows = sharedCache('parsed-workflows', () => new Map<string, ParsedWorkflow>())

function parseWorkflow(content: string): ParsedWorkflow {
  const known = parsedWorkflows.get(content)
  if (known) return known
  const parsed = deepFreeze(parseWorkflowText(content))
  if (parsedWorkflows.size >= 500) parsedWorkflows.clear()
  parsedWorkflows.set(content, parsed)
  return parsed
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const inner of Object.values(value)) deepFreeze(inner)
  }
  return value
}

function parseWorkflowText(content: string): ParsedWorkflow {
  let doc: unknown
  try {
    doc = parseYaml(content)
  } catch (error) {
    throw new ApiError(
      422,
      `Invalid workflow file: ${error instanceof Error ? error.message.split('\n')[0] : 'YAML error'}`
    )
  }
  const root = (doc && typeof doc === 'object' ? doc : {}) as Record<string, unknown>
  const on = root.on
  let dispatchInputs: Record<string, DispatchInput> | null = null
  if (on === 'workflow_dispatch' || (Array.isArray(on) && on.includes('workflow_dispatch'))) {
    dispatchInputs = {}
  } else if (on && typeof on === 'object' && !Array.isArray(on) && 'workflow_dispatch' in on) {
    const trigger = (on as Record<string, unknown>).workflow_dispatch
    const inputs =
      trigger && typeof trigger === 'object'
        ? (trigger as Record<string, unknown>).inputs
        : undefined
    dispatchInputs = {}
    if (inputs && typeof inputs === 'object') {
      for (const [key, spec] of Object.entries(inputs as Record<string, unknown>)) {
        dispatchInputs[key] = spec && typeof spec === 'object' ? (spec as DispatchInput) : {}
      }
    }
  }
  const entries =
    root.jobs && typeof root.jobs === 'object'
      ? Object.entries(root.jobs as Record<string, unknown>)
      : []
  const jobs = (entries.length > 0 ? entries : [['deploy', {}] as [string, unknown]]).map(
    ([key, value]) => parseJob(key, value)
  )
  return {
    dispatchInputs,
    runName: typeof root['run-name'] === 'string' ? root['run-name'] : undefined,
    jobs
  }
}

function parseJob(key: string, value: unknown): ParsedJob {
  const job = (value && typeof value === 'object' ? value : {}) as Record<string, unknown>
  const env = job.environment
  const environment =
    typeof env === 'string'
      ? env
      : env && typeof env === 'object' && typeof (env as Record<string, unknown>).name === 'string'
        ? ((env as Record<string, unknown>).name as string)
        : undefined
  const runsOn = job['runs-on']
  const labels =
    typeof runsOn === 'string'
      ? [runsOn]
      : Array.isArray(runsOn)
        ? runsOn.map(String)
        : ['ubuntu-latest']
  const steps = Array.isArray(job.steps) ? job.steps.map(stepName) : ['Deploy']
  return { name: typeof job.name === 'string' ? job.name : key, environment, labels, steps }
}

/** The inputs a dispatch gives the run, checked as GitHub checks them. */
function resolveInputs(
  declared: Record<string, DispatchInput>,
  given: Record<string, unknown>
): Record<string, string> {
  const unexpected = Object.keys(given).filter(key => !(key in declared))
  if (unexpected.length > 0)
    throw new ApiError(422, `Unexpected inputs provided: ${JSON.stringify(unexpected)}`)
  const resolved: Record<string, string> = {}
  for (const [key, spec] of Object.entries(declared)) {
    const raw = key in given ? given[key] : spec.default
    if (
      raw !== undefined &&
      raw !== null &&
      !['string', 'number', 'boolean'].includes(typeof raw)
    ) {
      throw new ApiError(422, `Invalid value for input '${key}': expected a string`)
    }
    const value = raw === undefined || raw === null ? '' : String(raw)
    if (spec.required === true && value === '')
      throw new ApiError(422, `Required input '${key}' not provided`)
    if (value !== '' && spec.type === 'boolean' && value !== 'true' && value !== 'false') {
      throw new ApiError(422, `Provided value '${value}' for input '${key}' is not a boolean`)
    }
    if (value !== '' && spec.type === 'number' && Number.isNaN(Number(value))) {
      throw new ApiError(422, `Provided value '${value}' for input '${key}' is not a number`)
    }
    if (
      value !== '' &&
      spec.type === 'choice' &&
      Array.isArray(spec.options) &&
      !spec.options.map(String).includes(value)
    ) {
      throw new ApiError(
        422,
        `Provided value '${value}' for input '${key}' not in the list of allowed values`
      )
    }
    if (key in given || raw !== undefined) resolved[key] = value
  }
  return resolved
}

export class GitHubSim {
  readonly service: Service
  readonly secretWrites: SecretWrite[] = []
  readonly runs = new Map<number, SimRun>()
  runBehavior: RunBehavior = { queuedMs: 200, runningMs: 500, conclusion: 'success' }
  hooks: GitHubSimHooks = {}

  private validator?: OpenApiValidator
  private readonly tokens = new Map<string, TokenState>()
  private readonly buckets = new Map<string, RateBucket>()
  private readonly repos = new Map<string, RepoState>()
  private readonly orgs = new Map<string, OrgState>()
  private readonly users = new Map<
    string,
    { login: string; id: number; type: 'User' | 'Organization' }
  >()
  private readonly keys = new Map<string, KeyPair>()
  private readonly behaviorQueue: RunBehavior[] = []
  private readonly timers = new Map<number, unknown>()
  private readonly operations: Record<string, Operation>
  private stopped = false
  private nextRepoId = 100_000_001
  private nextUserId = 300_000_001
  private nextWorkflowId = 400_000_001
  private nextEnvironmentId = 600_000_001
  private nextRunId = 20_000_000_001
  private nextJobId = 50_000_000_001

  private readonly clock: SimClock
  private readonly enterprise?: EnterpriseServerOptions
  private readonly apiVersions: string[]
  private readonly rejectsReturnRunDetails: boolean
  private readonly rateLimited: boolean

  constructor(
    private readonly log: RequestLog,
    options: GitHubSimOptions = {}
  ) {
    this.clock = options.clock ?? realClock
    this.enterprise = options.enterpriseServer
    this.apiVersions =
      options.apiVersions ?? (this.enterprise ? ENTERPRISE_API_VERSIONS : DOTCOM_API_VERSIONS)
    this.rejectsReturnRunDetails =
      options.rejectReturnRunDetails ??
      (this.enterprise !== undefined && releaseAtMost(this.enterprise.version, '3.20'))
    this.rateLimited = this.enterprise ? (this.enterprise.rateLimiting ?? false) : true
    this.service = new Service('github', log, req => this.handle(req))
    this.operations = this.buildOperations()
  }

  /** The simulator's time in milliseconds (its clock's, which a test may drive). */
  now(): number {
    return this.clock.now()
  }

  private iso(): string {
    return iso(this.clock.now())
  }

  /** The REST API's base URL (what a client takes as `baseUrl`; on GHES it ends in `/api/v3`). */
  get url(): string {
    return this.enterprise ? `${this.service.url}${ENTERPRISE_API_PREFIX}` : this.service.url
  }

  /** Where `html_url`s point: github.com, or the enterprise server itself. */
  private get web(): string {
    return this.enterprise ? this.service.url : WEB
  }

  async start(): Promise<string> {
    await sodium.ready
    this.validator = await OpenApiValidator.load('github-actions')
    this.stopped = false
    await this.service.start()
    return this.url
  }

  /** Stops the server and every pending run timer (runs stay where they are). */
  async stop(): Promise<void> {
    this.stopped = true
    for (const timer of this.timers.values()) this.clock.clearTimeout(timer)
    this.timers.clear()
    await this.service.stop()
  }

  // ---- seeding -------------------------------------------------------------------------------

  addToken(value: string, options: TokenOptions = {}): void {
    const login = options.login ?? 'sandbox-bot'
    this.user(login, 'User')
    this.tokens.set(value, {
      value,
      login,
      kind: options.kind ?? (/^gh[su]_/.test(value) ? 'integration' : 'personal-access-token'),
      expiresAt: options.expiresAt === undefined ? undefined : Number(options.expiresAt),
      permissions: {
        secrets: options.secrets ?? true,
        environments: options.environments ?? true,
        actions: options.actions ?? true,
        variables: options.variables ?? true,
        contents: options.contents ?? true
      }
    })
  }

  /** Sets how many requests the token has left in the current window (to exercise rate limiting). */
  setRateLimitRemaining(token: string, remaining: number): void {
    const bucket = this.bucket(this.tokens.get(token))
    bucket.used = Math.max(0, bucket.limit - remaining)
  }

  addRepo(
    fullName: string,
    options: {
      defaultBranch?: string
      branches?: string[]
      tags?: string[]
      environments?: string[]
      id?: number
      private?: boolean
    } = {}
  ): void {
    const [owner, name, ...rest] = fullName.split('/')
    if (!owner || !name || rest.length > 0)
      throw new Error(`addRepo: expected OWNER/REPO, got '${fullName}'`)
    const defaultBranch = options.defaultBranch ?? 'main'
    const now = this.iso()
    const repo: RepoState = {
      id: options.id ?? this.nextRepoId++,
      owner,
      name,
      fullName,
      private: options.private ?? true,
      defaultBranch,
      branches: new Set([defaultBranch, ...(options.branches ?? [])]),
      tags: new Set(options.tags ?? []),
      createdAt: now,
      environments: new Map(),
      secrets: new Map(),
      dependabotSecrets: new Map(),
      variables: new Map(),
      workflows: new Map(),
      files: new Map()
    }
    for (const env of options.environments ?? []) {
      repo.environments.set(env.toLowerCase(), {
        id: this.nextEnvironmentId++,
        name: env,
        createdAt: now,
        updatedAt: now,
        secrets: new Map()
      })
    }
    this.user(owner, this.orgs.has(owner.toLowerCase()) ? 'Organization' : 'User')
    this.repos.set(fullName.toLowerCase(), repo)
  }

  addOrg(org: string): void {
    const user = this.user(org, 'Organization')
    user.type = 'Organization'
    this.orgs.set(org.toLowerCase(), { id: user.id, login: org, secrets: new Map() })
  }

  /** Adds a workflow and its file (on every ref); returns its id. */
  addWorkflow(
    repoName: string,
    workflow: {
      path: string
      name: string
      content: string
      state?: 'active' | 'disabled_manually'
      id?: number
    }
  ): number {
    const repo = this.requireRepo(repoName)
    const id = workflow.id ?? this.nextWorkflowId++
    const now = this.iso()
    repo.workflows.set(id, {
      id,
      name: workflow.name,
      path: workflow.path,
      state: workflow.state ?? 'active',
      createdAt: now,
      updatedAt: now,
      runNumber: 0
    })
    repo.files.set(workflow.path, workflow.content)
    return id
  }

  /** Adds (or replaces) a file served by the contents API. */
  addFile(repoName: string, path: string, content: string): void {
    this.requireRepo(repoName).files.set(path.replace(/^\/+/, ''), content)
  }

  /** Seeds a secret without HTTP (no write is recorded). */
  setSecret(
    scope: SecretScope,
    name: string,
    value: string,
    org?: { visibility: 'all' | 'private' | 'selected'; selectedRepositoryIds?: number[] }
  ): void {
    const store = this.secretStore(scope)
    const key = canonicalName(name, 'Secret')
    const now = this.iso()
    const existing = store.get(key)
    const secret: StoredSecret = {
      name: key,
      value,
      createdAt: existing?.createdAt ?? now,
      updatedAt: now
    }
    if (scope.kind === 'org') {
      const previous = existing as OrgSecret | undefined
      const orgSecret: OrgSecret = {
        ...secret,
        visibility: org?.visibility ?? previous?.visibility ?? 'private',
        selectedRepositoryIds: org?.selectedRepositoryIds ?? previous?.selectedRepositoryIds ?? []
      }
      store.set(key, orgSecret)
    } else {
      store.set(key, secret)
    }
  }

  /** The plaintext of a secret (as decrypted from the last write). */
  getSecret(scope: SecretScope, name: string): string | undefined {
    return this.secretStore(scope).get(name.toUpperCase())?.value
  }

  /** The secrets a workflow run of `repo` sees: org (visible to repo) < repo < environment
   *  (if given); names upper-case. */
  secretsForRun(repoName: string, environment?: string): Record<string, string> {
    const repo = this.requireRepo(repoName)
    const result: Record<string, string> = {}
    const org = this.orgs.get(repo.owner.toLowerCase())
    for (const secret of org?.secrets.values() ?? []) {
      const visible =
        secret.visibility === 'all' ||
        (secret.visibility === 'private' && repo.private) ||
        (secret.visibility === 'selected' && secret.selectedRepositoryIds.includes(repo.id))
      if (visible) result[secret.name] = secret.value
    }
    for (const secret of repo.secrets.values()) result[secret.name] = secret.value
    if (environment !== undefined) {
      for (const secret of repo.environments.get(environment.toLowerCase())?.secrets.values() ??
        []) {
        result[secret.name] = secret.value
      }
    }
    return result
  }

  /** Replaces a scope's key pair: a write sealed for the old key then fails with 422. */
  rotatePublicKey(scope: SecretScope): void {
    this.secretStore(scope)
    this.keys.delete(this.scopeKey(scope))
  }

  getVariable(repoName: string, name: string): string | undefined {
    return this.requireRepo(repoName).variables.get(name.toUpperCase())?.value
  }

  setVariable(repoName: string, name: string, value: string): void {
    const repo = this.requireRepo(repoName)
    const key = canonicalName(name, 'Variable')
    const now = this.iso()
    repo.variables.set(key, {
      name: key,
      value,
      createdAt: repo.variables.get(key)?.createdAt ?? now,
      updatedAt: now
    })
  }

  // ---- runs ----------------------------------------------------------------------------------

  /** The behaviour of the next dispatched run (FIFO), merged over `runBehavior`. */
  queueRun(behavior: RunBehavior): void {
    this.behaviorQueue.push(behavior)
  }

  /** A `waiting` run proceeds to `in_progress`. */
  approve(runId: number): void {
    const run = this.requireRun(runId)
    const attempt = run.attempts[run.attempts.length - 1]!
    if (attempt.status !== 'waiting')
      throw new Error(`approve: run ${runId} is ${attempt.status}, not waiting`)
    this.clearTimer(runId)
    this.startRunning(run, attempt)
  }

  /** Starts a new attempt of a completed run (same run id), as "Re-run all jobs" does. */
  rerun(runId: number, behavior: RunBehavior = {}): void {
    const run = this.requireRun(runId)
    if (run.status !== 'completed')
      throw new Error(`rerun: run ${runId} is ${run.status}, not completed`)
    const attempt = this.newAttempt(run, { ...this.runBehavior, ...behavior })
    this.log.event('github', 'run.rerun', {
      run_id: run.id,
      attempt: attempt.attempt,
      conclusion: null
    })
    this.hooks.onDispatch?.(run)
    this.advance(run, attempt)
  }

  /**
   * A run of `workflow` (file name or id) dispatched by `actor` — someone else's dispatch, or an
   * earlier one — without an HTTP request. `createdAtMs` backdates it: GitHub lists a dispatched
   * run only a moment after creating it, so a run created before a client's snapshot of the list
   * can still be missing from that snapshot. Does not take a behaviour from `queueRun`.
   */
  dispatchAs(
    actor: string,
    repoName: string,
    workflowIdOrFile: string | number,
    options: {
      ref?: string
      inputs?: Record<string, string>
      createdAtMs?: number
      behavior?: RunBehavior
    } = {}
  ): SimRun {
    const repo = this.requireRepo(repoName)
    this.user(actor, 'User')
    const workflow = this.workflow(repo, String(workflowIdOrFile))
    const dispatched = options.ref ?? repo.defaultBranch
    const ref = this.resolveRef(repo, dispatched)
    if (!ref) throw new Error(`dispatchAs: no ref ${dispatched} in ${repoName}`)
    const parsed = parseWorkflow(repo.files.get(workflow.path) ?? '')
    if (!parsed.dispatchInputs) throw new Error(`dispatchAs: ${workflow.path} is not dispatchable`)
    const inputs = resolveInputs(parsed.dispatchInputs, options.inputs ?? {})
    return this.createRun(repo, workflow, dispatched, ref, inputs, parsed, actor, {
      behavior: { ...this.runBehavior, ...(options.behavior ?? {}) },
      createdAtMs: options.createdAtMs
    })
  }

  /**
   * A run that only the test moves, such as the run of the workflow that runs the action (its
   * GITHUB_RUN_ID): `in_progress` from now until `finishRun`. No job of it runs, so no deploy
   * hook fires for it.
   */
  startManualRun(repoName: string, workflowIdOrFile: string | number, actor = 'scheduler'): SimRun {
    const run = this.dispatchAs(actor, repoName, workflowIdOrFile, {
      behavior: { neverStarts: true }
    })
    this.setState(run, run.attempts.at(-1)!, 'in_progress')
    return run
  }

  /**
   * Completes a run started with `startManualRun` with `conclusion`, at once. It logs no
   * `run.completed` event: those are the deploy runs' (the tests read them as such).
   */
  finishRun(runId: number, conclusion = 'success'): void {
    const run = this.requireRun(runId)
    const attempt = run.attempts.at(-1)!
    if (attempt.status === 'completed') return
    this.clearTimer(runId)
    this.setState(run, attempt, 'completed', conclusion)
  }

  private requireRun(runId: number): SimRun {
    const run = this.runs.get(runId)
    if (!run) throw new Error(`no run ${runId}`)
    return run
  }

  private newAttempt(run: SimRun, behavior: RunBehavior, createdAtMs?: number): RunAttempt {
    const now = createdAtMs === undefined ? this.iso() : iso(createdAtMs)
    const jobs = this.parsedWorkflowOf(run).jobs.map(() => ({
      id: this.nextJobId++,
      startedAt: null,
      completedAt: null
    }))
    const attempt: RunAttempt = {
      attempt: run.attempts.length + 1,
      status: 'queued',
      conclusion: null,
      behavior,
      createdAt: now,
      startedAt: null,
      completedAt: null,
      updatedAt: now,
      completedAtMs: null,
      jobs,
      currentJob: 0
    }
    run.attempts.push(attempt)
    this.sync(run, attempt)
    return attempt
  }

  private sync(run: SimRun, attempt: RunAttempt): void {
    run.attempt = attempt.attempt
    run.status = attempt.status
    run.conclusion = attempt.conclusion
    run.updatedAt = attempt.updatedAt
    run.runStartedAt = attempt.createdAt
  }

  private setState(
    run: SimRun,
    attempt: RunAttempt,
    status: string,
    conclusion: string | null = null
  ): void {
    const now = this.iso()
    attempt.status = status
    attempt.conclusion = conclusion
    attempt.updatedAt = now
    if (status === 'in_progress') {
      attempt.startedAt = now
      attempt.currentJob = 0
      attempt.jobs[0]!.startedAt = now
    }
    if (status === 'completed') {
      attempt.completedAt = now
      attempt.completedAtMs = this.clock.now()
      const job = attempt.jobs[attempt.currentJob]!
      if (job.startedAt !== null) job.completedAt = now
    }
    if (attempt.attempt === run.attempts.length) this.sync(run, attempt)
  }

  private schedule(runId: number, ms: number, next: () => void): void {
    if (this.stopped) return
    this.clearTimer(runId)
    const timer = this.clock.setTimeout(() => {
      this.timers.delete(runId)
      next()
    }, ms)
    this.timers.set(runId, timer)
  }

  private clearTimer(runId: number): void {
    const timer = this.timers.get(runId)
    if (timer !== undefined) this.clock.clearTimeout(timer)
    this.timers.delete(runId)
  }

  private advance(run: SimRun, attempt: RunAttempt): void {
    const behavior = attempt.behavior
    if (behavior.neverStarts) return
    this.schedule(run.id, behavior.queuedMs ?? 0, () => {
      const conclusion = behavior.conclusion ?? 'success'
      if (CONCLUDES_UNSTARTED.has(conclusion)) return void this.complete(run, attempt, conclusion)
      if (behavior.waitingMs === undefined) return this.startRunning(run, attempt)
      this.setState(run, attempt, 'waiting')
      this.log.event('github', 'run.waiting', {
        run_id: run.id,
        attempt: attempt.attempt,
        conclusion: null
      })
      if (Number.isFinite(behavior.waitingMs)) {
        this.schedule(run.id, behavior.waitingMs, () => this.startRunning(run, attempt))
      }
    })
  }

  /** The jobs run one after the other; each start and finish changes the run's `updated_at`. */
  private startRunning(run: SimRun, attempt: RunAttempt): void {
    this.setState(run, attempt, 'in_progress')
    this.log.event('github', 'run.in_progress', {
      run_id: run.id,
      attempt: attempt.attempt,
      conclusion: null
    })
    const share = (attempt.behavior.runningMs ?? 0) / attempt.jobs.length
    const nextJob = (): void => {
      if (attempt.currentJob === attempt.jobs.length - 1) {
        void this.complete(run, attempt, attempt.behavior.conclusion ?? 'success')
        return
      }
      const now = this.iso()
      attempt.jobs[attempt.currentJob]!.completedAt = now
      attempt.currentJob += 1
      attempt.jobs[attempt.currentJob]!.startedAt = now
      attempt.updatedAt = now
      if (attempt.attempt === run.attempts.length) this.sync(run, attempt)
      this.schedule(run.id, share, nextJob)
    }
    this.schedule(run.id, share, nextJob)
  }

  private async complete(run: SimRun, attempt: RunAttempt, conclusion: string): Promise<void> {
    let final = conclusion
    const completion = completionOf(attempt, conclusion)
    if (this.hooks.beforeComplete) {
      try {
        await this.hooks.beforeComplete(run, completion)
      } catch (error) {
        if (conclusion === 'success') final = 'failure'
        attempt.failure = error instanceof Error ? error.message : String(error)
      }
      // Cancelled while the deploy hook ran: the cancellation stands.
      if (attempt.status === 'completed') return
    }
    this.setState(run, attempt, 'completed', final)
    this.log.event('github', 'run.completed', {
      run_id: run.id,
      attempt: attempt.attempt,
      conclusion: final,
      ...(completion.deploy === 'stale' ? { stale: true } : {}),
      ...(attempt.failure !== undefined ? { failure: attempt.failure } : {})
    })
    const again = attempt.behavior.rerun
    if (again === undefined || attempt.attempt !== run.attempts.length) return
    if (!attempt.behavior.rerunAfterMs) this.rerun(run.id, again)
    else this.schedule(run.id, attempt.behavior.rerunAfterMs, () => this.rerun(run.id, again))
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private async handle(received: IncomingRequest): Promise<OutgoingResponse> {
    const where = `github ${received.method} ${received.path}`
    const token = this.authenticate(received.headers.authorization)
    const bucket = this.bucket(token.state)
    // On GHES the API lives under /api/v3; everything below sees the path without it.
    const req = this.enterprise
      ? { ...received, path: received.path.slice(ENTERPRISE_API_PREFIX.length) || '/' }
      : received
    const routed = routablePath(req.path)
    const outside =
      this.enterprise !== undefined &&
      !received.path.startsWith(`${ENTERPRISE_API_PREFIX}/`) &&
      received.path !== ENTERPRISE_API_PREFIX
    const matched = outside ? undefined : this.validator!.match(req.method, routed)
    const apiVersion = this.selectedApiVersion(req)
    let reply: Reply
    if (!matched) {
      this.log.violation(
        outside
          ? `${where}: GitHub Enterprise Server serves the REST API under ${ENTERPRISE_API_PREFIX}`
          : `${where}: no such operation in the GitHub OpenAPI excerpt`
      )
      reply = errorReply(404, 'Not Found', DOCS)
    } else if (apiVersion === undefined) {
      // UNCONFIRMED: where GitHub checks the version (here before authentication) and the exact
      // wording; this is the message reported in expipiplus1/update-nix-fetchgit#79 (2023).
      const requested = String(req.headers['x-github-api-version'])
      reply = errorReply(
        400,
        `The version you specified in the "X-GitHub-Api-Version" request header, "${requested}", ` +
          'is not a supported version. The following versions are currently supported: ' +
          [...this.apiVersions]
            .sort()
            .reverse()
            .map((v, i) => (i === 0 ? `"${v}" (most recent)` : `"${v}"`))
            .join(', ') +
          '.',
        API_VERSIONS_DOCS
      )
    } else {
      const docs = (matched.operation.externalDocs?.url as string | undefined) ?? DOCS
      try {
        reply = await this.answer(req, routed, matched, token, bucket, apiVersion)
      } catch (error) {
        if (!(error instanceof ApiError)) throw error
        reply = errorReply(error.status, error.message, docs, error.headers)
      }
      for (const problem of this.responseErrors(matched, reply))
        this.log.violation(`${where}: response ${reply.status}: ${problem}`)
    }
    const counted =
      this.rateLimited && reply.status !== 304 && matched?.operationId !== 'rate-limit/get'
    req.entry.counted = counted
    if (counted) bucket.used = Math.min(bucket.limit, bucket.used + 1)
    return {
      status: reply.status,
      headers: {
        ...(this.rateLimited ? this.rateHeaders(bucket) : {}),
        ...(apiVersion !== undefined ? { 'x-github-api-version-selected': apiVersion } : {}),
        ...(this.enterprise
          ? { 'x-github-enterprise-version': `${this.enterprise.version}.0` }
          : {}),
        ...(token.state?.expiresAt !== undefined
          ? {
              'github-authentication-token-expiration': tokenExpirationHeader(token.state.expiresAt)
            }
          : {}),
        'x-github-media-type': 'github.v3; format=json',
        'x-github-request-id': randomBytes(8).toString('hex').toUpperCase(),
        // The simulator's time, which clients may use to compare with `created_at`.
        date: new Date(this.clock.now()).toUTCString(),
        ...(reply.headers ?? {})
      },
      body: reply.body
    }
  }

  /** The API version a request selects (the default when it names none); undefined: unsupported. */
  private selectedApiVersion(req: IncomingRequest): string | undefined {
    const header = req.headers['x-github-api-version']
    if (header === undefined) return DEFAULT_API_VERSION
    const requested = String(header).trim()
    return this.apiVersions.includes(requested) ? requested : undefined
  }

  private async answer(
    req: IncomingRequest,
    routed: string,
    matched: MatchedOperation,
    token: { state?: TokenState; presented: boolean },
    bucket: RateBucket,
    apiVersion: string
  ): Promise<Reply> {
    const where = `github ${req.method} ${req.path}`
    const unparseable = req.raw.length > 0 && req.json === undefined
    const problems = unparseable ? ['body is not JSON'] : this.requestErrors(req, routed, matched)
    for (const problem of problems) this.log.violation(`${where}: request: ${problem}`)
    const opId = matched.operationId
    if (opId !== 'rate-limit/get' || token.presented) {
      if (!token.presented) throw new ApiError(401, 'Requires authentication')
      if (!token.state) throw new ApiError(401, 'Bad credentials')
    }
    if (opId === 'rate-limit/get' && !this.rateLimited)
      throw new ApiError(404, 'Rate limiting is not enabled.')
    if (this.rateLimited && opId !== 'rate-limit/get' && bucket.used >= bucket.limit) {
      throw new ApiError(
        403,
        `API rate limit exceeded for user ID ${this.user(token.state?.login ?? 'anonymous', 'User').id}. ` +
          'If you reach out to GitHub Support for help, please include the request ID.',
        { 'retry-after': String(Math.max(0, bucket.reset - Math.floor(this.clock.now() / 1000))) }
      )
    }
    if (unparseable) throw new ApiError(400, 'Problems parsing JSON')
    if (problems.length > 0) throw new ApiError(422, `Invalid request.\n\n${problems.join('\n')}`)

    const operation = this.operations[opId]
    if (!operation) {
      this.log.violation(`${where}: ${opId} is in the excerpt but not simulated`)
      throw new ApiError(404, 'Not Found')
    }
    const params = matched.params
    const ctx: Context = { req, params, token: token.state ?? this.anonymous(), apiVersion }
    if (params.owner !== undefined && params.repo !== undefined) {
      ctx.repo = this.repos.get(`${params.owner}/${params.repo}`.toLowerCase())
      if (!ctx.repo) throw new ApiError(404, 'Not Found')
    }
    if (params.org !== undefined) {
      ctx.org = this.orgs.get(params.org.toLowerCase())
      if (!ctx.org) throw new ApiError(404, 'Not Found')
    }
    const level = req.method === 'GET' ? 'read' : 'write'
    const accepted = { 'x-accepted-github-permissions': `${operation.githubPermission}=${level}` }
    if (operation.needs && !ctx.token.permissions[operation.needs]) {
      const by = ctx.token.kind === 'integration' ? 'integration' : 'personal access token'
      throw new ApiError(403, `Resource not accessible by ${by}`, accepted)
    }
    const reply = await operation.handler(ctx)
    reply.headers = { ...accepted, ...(reply.headers ?? {}) }
    if (req.method === 'GET' && reply.status === 200 && reply.body !== undefined) {
      const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body)
      const etag = `W/"${createHash('sha256').update(text).digest('hex')}"`
      reply.headers.etag = etag
      reply.headers['cache-control'] = 'private, max-age=60, s-maxage=60'
      reply.headers.vary = 'Accept, Authorization, Cookie, X-GitHub-OTP'
      const header = req.headers['if-none-match']
      if (etagMatches(Array.isArray(header) ? header.join(',') : header, etag)) {
        return { status: 304, headers: reply.headers }
      }
    }
    return reply
  }

  private requestErrors(req: IncomingRequest, routed: string, matched: MatchedOperation): string[] {
    const query = new URLSearchParams(req.query)
    const problems: string[] = []
    // The excerpt types `created` as a date-time, but GitHub documents (and clients send) the
    // search syntax (`>=2026-01-01T00:00:00Z`, `a..b`): check that syntax here instead.
    const created = query.get('created')
    if (created !== null) {
      query.delete('created')
      if (!createdFilter(created))
        problems.push(`/query/created '${created}' is not a date or date range`)
    }
    const found = this.validator!.validateRequest(matched, {
      method: req.method,
      path: routed,
      query,
      headers: req.headers,
      body: req.json
    })
    return [...problems, ...found.filter(problem => !isExcerptArtefact(problem, req.json))]
  }

  private responseErrors(matched: MatchedOperation, reply: Reply): string[] {
    // GitHub answers 304 to any conditional GET, and errors (401, 403, 404, 409, 422) from
    // operations whose excerpt does not list them: check those bodies against GitHub's error shape.
    if (reply.status === 304) return reply.body === undefined ? [] : ['a 304 carries no body']
    if (reply.status >= 400) {
      const body = reply.body as { message?: unknown } | undefined
      if (typeof body?.message !== 'string') return ['error body has no message']
      const documented = String(reply.status) in (matched.operation.responses ?? {})
      return documented ? this.validator!.validateResponse(matched, reply.status, reply.body) : []
    }
    // A raw media type answer (a file's bytes) has no JSON schema to meet.
    if (typeof reply.body === 'string')
      return this.validator!.validateResponse(matched, reply.status, undefined)
    return this.validator!.validateResponse(matched, reply.status, reply.body).filter(
      problem => !isExcerptArtefact(problem, reply.body)
    )
  }

  /** An expired token is as good as an unknown one: GitHub answers 401 `Bad credentials`. */
  private authenticate(header: string | undefined): { state?: TokenState; presented: boolean } {
    if (!header) return { presented: false }
    const m = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(header)
    const state = m ? this.tokens.get(m[1]!) : undefined
    const expired = state?.expiresAt !== undefined && this.clock.now() >= state.expiresAt
    return { presented: true, state: expired ? undefined : state }
  }

  private anonymous(): TokenState {
    return {
      value: '',
      login: 'anonymous',
      kind: 'personal-access-token',
      permissions: {
        secrets: false,
        environments: false,
        actions: false,
        variables: false,
        contents: false
      }
    }
  }

  private bucket(token: TokenState | undefined): RateBucket {
    const key = token?.value ?? ''
    const now = Math.floor(this.clock.now() / 1000)
    let bucket = this.buckets.get(key)
    if (!bucket || now >= bucket.reset) {
      bucket = {
        limit: token ? RATE_LIMIT : ANONYMOUS_RATE_LIMIT,
        used: 0,
        reset: now + RATE_WINDOW_SECONDS
      }
      this.buckets.set(key, bucket)
    }
    return bucket
  }

  private rateHeaders(bucket: RateBucket): Record<string, string> {
    return {
      'x-ratelimit-limit': String(bucket.limit),
      'x-ratelimit-remaining': String(Math.max(0, bucket.limit - bucket.used)),
      'x-ratelimit-used': String(bucket.used),
      'x-ratelimit-reset': String(bucket.reset),
      'x-ratelimit-resource': 'core'
    }
  }

  // ---- state helpers -------------------------------------------------------------------------

  private user(
    login: string,
    type: 'User' | 'Organization'
  ): { login: string; id: number; type: 'User' | 'Organization' } {
    let user = this.users.get(login.toLowerCase())
    if (!user) {
      user = { login, id: this.nextUserId++, type }
      this.users.set(login.toLowerCase(), user)
    }
    return user
  }

  private requireRepo(fullName: string): RepoState {
    const repo = this.repos.get(fullName.toLowerCase())
    if (!repo) throw new Error(`unknown repository '${fullName}': call addRepo first`)
    return repo
  }

  private requireEnvironment(repo: RepoState, name: string): EnvironmentState {
    const env = repo.environments.get(name.toLowerCase())
    if (!env) throw new Error(`unknown environment '${name}' of ${repo.fullName}`)
    return env
  }

  private secretStore(scope: SecretScope): Map<string, StoredSecret> {
    switch (scope.kind) {
      case 'repo':
        return this.requireRepo(scope.repo).secrets
      case 'env':
        return this.requireEnvironment(this.requireRepo(scope.repo), scope.environment).secrets
      case 'dependabot':
        return this.requireRepo(scope.repo).dependabotSecrets
      case 'org': {
        const org = this.orgs.get(scope.org.toLowerCase())
        if (!org) throw new Error(`unknown organization '${scope.org}': call addOrg first`)
        return org.secrets
      }
    }
  }

  private scopeKey(scope: SecretScope): string {
    switch (scope.kind) {
      case 'repo':
      case 'dependabot':
        return `${scope.kind}:${scope.repo.toLowerCase()}`
      case 'env':
        return `env:${scope.repo.toLowerCase()}:${scope.environment.toLowerCase()}`
      case 'org':
        return `org:${scope.org.toLowerCase()}`
    }
  }

  private keyPair(scope: SecretScope): KeyPair {
    const key = this.scopeKey(scope)
    let pair = this.keys.get(key)
    if (!pair) {
      const { publicKey, privateKey } = sodium.crypto_box_keypair()
      // GitHub's key ids are long decimal strings.
      const keyId = (BigInt(`0x${randomBytes(8).toString('hex')}`) % 10n ** 18n)
        .toString()
        .padStart(18, '1')
      pair = { keyId, publicKey, privateKey }
      this.keys.set(key, pair)
    }
    return pair
  }

  private scopeOf(ctx: Context, kind: SecretScope['kind']): SecretScope {
    switch (kind) {
      case 'repo':
      case 'dependabot':
        return { kind, repo: ctx.repo!.fullName }
      case 'env':
        return { kind, repo: ctx.repo!.fullName, environment: this.environment(ctx).name }
      case 'org':
        return { kind, org: ctx.org!.login }
    }
  }

  private environment(ctx: Context): EnvironmentState {
    const env = ctx.repo!.environments.get(String(ctx.params.environment_name).toLowerCase())
    if (!env) throw new ApiError(404, 'Not Found')
    return env
  }

  private workflow(repo: RepoState, idOrFile: string): WorkflowState {
    const byId = /^\d+$/.test(idOrFile) ? repo.workflows.get(Number(idOrFile)) : undefined
    const found =
      byId ?? [...repo.workflows.values()].find(w => w.path.split('/').pop() === idOrFile)
    if (!found) throw new ApiError(404, 'Not Found')
    return found
  }

  private run(ctx: Context): SimRun {
    const run = this.runs.get(Number(ctx.params.run_id))
    if (!run || run.repo.toLowerCase() !== ctx.repo!.fullName.toLowerCase())
      throw new ApiError(404, 'Not Found')
    return run
  }

  /** A branch, tag or commit of the repository: its branch/tag name and head commit. */
  private resolveRef(repo: RepoState, ref: string): { name: string; sha: string } | undefined {
    const sha = (name: string) => sha1(`${repo.fullName}@${name}`)
    if (ref.startsWith('refs/heads/')) {
      const name = ref.slice('refs/heads/'.length)
      return repo.branches.has(name) ? { name, sha: sha(name) } : undefined
    }
    if (ref.startsWith('refs/tags/')) {
      const name = ref.slice('refs/tags/'.length)
      return repo.tags.has(name) ? { name, sha: sha(name) } : undefined
    }
    if (repo.branches.has(ref) || repo.tags.has(ref)) return { name: ref, sha: sha(ref) }
    const byCommit = [...repo.branches, ...repo.tags].find(name => sha(name) === ref)
    return byCommit === undefined ? undefined : { name: byCommit, sha: ref }
  }

  // ---- JSON shapes ---------------------------------------------------------------------------

  private userJson(login: string): Record<string, unknown> {
    const user = this.user(login, 'User')
    const api = `${this.url}/users/${user.login}`
    return {
      login: user.login,
      id: user.id,
      node_id: nodeId(user.type === 'User' ? 'U' : 'O', user.id),
      avatar_url: `https://avatars.githubusercontent.com/u/${user.id}?v=4`,
      gravatar_id: '',
      url: api,
      html_url: `${this.web}/${user.login}`,
      followers_url: `${api}/followers`,
      following_url: `${api}/following{/other_user}`,
      gists_url: `${api}/gists{/gist_id}`,
      starred_url: `${api}/starred{/owner}{/repo}`,
      subscriptions_url: `${api}/subscriptions`,
      organizations_url: `${api}/orgs`,
      repos_url: `${api}/repos`,
      events_url: `${api}/events{/privacy}`,
      received_events_url: `${api}/received_events`,
      type: user.type,
      user_view_type: 'public',
      site_admin: false
    }
  }

  private repoJson(repo: RepoState, full: boolean): Record<string, unknown> {
    const base = `${this.url}/repos/${repo.fullName}`
    const minimal: Record<string, unknown> = {
      id: repo.id,
      node_id: nodeId('R', repo.id),
      name: repo.name,
      full_name: repo.fullName,
      owner: this.userJson(repo.owner),
      private: repo.private,
      html_url: `${this.web}/${repo.fullName}`,
      description: null,
      fork: false,
      url: base,
      archive_url: `${base}/{archive_format}{/ref}`,
      assignees_url: `${base}/assignees{/user}`,
      blobs_url: `${base}/git/blobs{/sha}`,
      branches_url: `${base}/branches{/branch}`,
      collaborators_url: `${base}/collaborators{/collaborator}`,
      comments_url: `${base}/comments{/number}`,
      commits_url: `${base}/commits{/sha}`,
      compare_url: `${base}/compare/{base}...{head}`,
      contents_url: `${base}/contents/{+path}`,
      contributors_url: `${base}/contributors`,
      deployments_url: `${base}/deployments`,
      downloads_url: `${base}/downloads`,
      events_url: `${base}/events`,
      forks_url: `${base}/forks`,
      git_commits_url: `${base}/git/commits{/sha}`,
      git_refs_url: `${base}/git/refs{/sha}`,
      git_tags_url: `${base}/git/tags{/sha}`,
      hooks_url: `${base}/hooks`,
      issue_comment_url: `${base}/issues/comments{/number}`,
      issue_events_url: `${base}/issues/events{/number}`,
      issues_url: `${base}/issues{/number}`,
      keys_url: `${base}/keys{/key_id}`,
      labels_url: `${base}/labels{/name}`,
      languages_url: `${base}/languages`,
      merges_url: `${base}/merges`,
      milestones_url: `${base}/milestones{/number}`,
      notifications_url: `${base}/notifications{?since,all,participating}`,
      pulls_url: `${base}/pulls{/number}`,
      releases_url: `${base}/releases{/id}`,
      stargazers_url: `${base}/stargazers`,
      statuses_url: `${base}/statuses/{sha}`,
      subscribers_url: `${base}/subscribers`,
      subscription_url: `${base}/subscription`,
      tags_url: `${base}/tags`,
      teams_url: `${base}/teams`,
      trees_url: `${base}/git/trees{/sha}`
    }
    if (!full) return minimal
    return {
      ...minimal,
      git_url: `git://github.com/${repo.fullName}.git`,
      ssh_url: `git@github.com:${repo.fullName}.git`,
      clone_url: `${this.web}/${repo.fullName}.git`,
      svn_url: `${this.web}/${repo.fullName}`,
      mirror_url: null,
      homepage: null,
      language: null,
      forks_count: 0,
      forks: 0,
      stargazers_count: 0,
      watchers_count: 0,
      watchers: 0,
      size: 0,
      default_branch: repo.defaultBranch,
      open_issues_count: 0,
      open_issues: 0,
      is_template: false,
      topics: [],
      has_issues: true,
      has_projects: false,
      has_wiki: false,
      has_pages: false,
      has_downloads: true,
      has_discussions: false,
      archived: false,
      disabled: false,
      visibility: repo.private ? 'private' : 'public',
      pushed_at: repo.createdAt,
      created_at: repo.createdAt,
      updated_at: repo.createdAt,
      permissions: { admin: true, maintain: true, push: true, triage: true, pull: true },
      allow_forking: false,
      web_commit_signoff_required: false,
      license: null,
      network_count: 0,
      subscribers_count: 0
    }
  }

  private environmentJson(repo: RepoState, env: EnvironmentState): Record<string, unknown> {
    return {
      id: env.id,
      node_id: nodeId('EN', env.id),
      name: env.name,
      url: `${this.url}/repos/${repo.fullName}/environments/${encodeURIComponent(env.name)}`,
      html_url: `${this.web}/${repo.fullName}/deployments/activity_log?environments_filter=${encodeURIComponent(env.name)}`,
      created_at: env.createdAt,
      updated_at: env.updatedAt,
      protection_rules: [],
      deployment_branch_policy: null
    }
  }

  private workflowJson(repo: RepoState, workflow: WorkflowState): Record<string, unknown> {
    return {
      id: workflow.id,
      node_id: nodeId('W', workflow.id),
      name: workflow.name,
      path: workflow.path,
      state: workflow.state,
      created_at: workflow.createdAt,
      updated_at: workflow.updatedAt,
      url: `${this.url}/repos/${repo.fullName}/actions/workflows/${workflow.id}`,
      html_url: `${this.web}/${repo.fullName}/blob/${repo.defaultBranch}/${workflow.path}`,
      badge_url: `${this.web}/${repo.fullName}/workflows/${encodeURIComponent(workflow.name)}/badge.svg`
    }
  }

  private runJson(run: SimRun, attemptNumber = run.attempt): Record<string, unknown> {
    const repo = this.requireRepo(run.repo)
    const attempt = run.attempts[attemptNumber - 1]!
    const base = `${this.url}/repos/${repo.fullName}/actions/runs/${run.id}`
    const checkSuiteId = run.id * 10 + attempt.attempt
    const repository = this.repoJson(repo, false)
    return {
      id: run.id,
      name: run.workflowName,
      node_id: nodeId('WFR', run.id),
      head_branch: run.headBranch,
      head_sha: run.headSha,
      path: run.workflowPath,
      display_title: run.displayTitle,
      run_number: run.runNumber,
      event: run.event,
      status: attempt.status,
      conclusion: attempt.conclusion,
      workflow_id: run.workflowId,
      check_suite_id: checkSuiteId,
      check_suite_node_id: nodeId('CS', checkSuiteId),
      url: base,
      html_url: `${this.web}/${repo.fullName}/actions/runs/${run.id}`,
      pull_requests: [],
      created_at: run.createdAt,
      updated_at: attempt.updatedAt,
      actor: this.userJson(run.actor),
      run_attempt: attempt.attempt,
      referenced_workflows: [],
      run_started_at: attempt.createdAt,
      triggering_actor: this.userJson(run.actor),
      jobs_url: `${base}/jobs`,
      logs_url: `${base}/logs`,
      check_suite_url: `${this.url}/repos/${repo.fullName}/check-suites/${checkSuiteId}`,
      artifacts_url: `${base}/artifacts`,
      cancel_url: `${base}/cancel`,
      rerun_url: `${base}/rerun`,
      previous_attempt_url: attempt.attempt > 1 ? `${base}/attempts/${attempt.attempt - 1}` : null,
      workflow_url: `${this.url}/repos/${repo.fullName}/actions/workflows/${run.workflowId}`,
      head_commit: {
        id: run.headSha,
        tree_id: sha1(`tree:${run.headSha}`),
        message: `Update ${run.headBranch}`,
        timestamp: repo.createdAt,
        author: { name: repo.owner, email: `${repo.owner.toLowerCase()}@users.noreply.github.com` },
        committer: { name: 'GitHub', email: 'noreply@github.com' }
      },
      repository,
      head_repository: repository,
      head_repository_id: repo.id
    }
  }

  /** A job's status and conclusion, from its attempt's and its place in the sequence. */
  private jobState(
    attempt: RunAttempt,
    index: number
  ): { status: string; conclusion: string | null; ran: boolean } {
    const ran = attempt.jobs[index]!.startedAt !== null
    if (attempt.status === 'in_progress') {
      if (index < attempt.currentJob) return { status: 'completed', conclusion: 'success', ran }
      return {
        status: index === attempt.currentJob ? 'in_progress' : 'queued',
        conclusion: null,
        ran
      }
    }
    if (attempt.status !== 'completed') return { status: attempt.status, conclusion: null, ran }
    const conclusion = attempt.conclusion ?? 'failure'
    if (!ran) {
      // Never reached: skipped behind a failure; cancelled with its run; or the run never started.
      const after = attempt.startedAt !== null
      return {
        status: 'completed',
        conclusion: after ? (conclusion === 'cancelled' ? 'cancelled' : 'skipped') : conclusion,
        ran
      }
    }
    if (index < attempt.currentJob) return { status: 'completed', conclusion: 'success', ran }
    return { status: 'completed', conclusion, ran }
  }

  private jobJson(run: SimRun, attempt: RunAttempt, index: number): Record<string, unknown> {
    const repo = this.requireRepo(run.repo)
    const specs = this.parsedWorkflowOf(run).jobs
    const spec = specs[Math.min(index, specs.length - 1)]!
    const job = attempt.jobs[index]!
    const state = this.jobState(attempt, index)
    const names = ['Set up job', ...spec.steps, 'Complete job']
    const lastUserStep = names.length - 2
    const failed = ['failure', 'timed_out', 'cancelled'].includes(state.conclusion ?? '')
    const steps = names.map((name, i) => {
      let status = 'queued'
      let stepConclusion: string | null = null
      if (state.status === 'in_progress') {
        status = i === 0 ? 'completed' : i === 1 ? 'in_progress' : 'queued'
        stepConclusion = i === 0 ? 'success' : null
      } else if (state.status === 'completed' && state.ran) {
        status = 'completed'
        if (!failed || i < lastUserStep || i === names.length - 1) stepConclusion = 'success'
        else stepConclusion = state.conclusion
      } else if (state.status === 'completed') {
        status = 'completed'
        stepConclusion = 'skipped'
      }
      return {
        name,
        status,
        conclusion: stepConclusion,
        number: i + 1,
        started_at: status === 'queued' ? null : (job.startedAt ?? attempt.updatedAt),
        completed_at: status === 'completed' ? (job.completedAt ?? attempt.updatedAt) : null
      }
    })
    const jobConclusions = [
      'success',
      'failure',
      'neutral',
      'cancelled',
      'skipped',
      'timed_out',
      'action_required'
    ]
    const conclusion = state.conclusion
    return {
      id: job.id,
      run_id: run.id,
      run_url: `${this.url}/repos/${repo.fullName}/actions/runs/${run.id}`,
      run_attempt: attempt.attempt,
      node_id: nodeId('CR', job.id),
      head_sha: run.headSha,
      url: `${this.url}/repos/${repo.fullName}/actions/jobs/${job.id}`,
      html_url: `${this.web}/${repo.fullName}/actions/runs/${run.id}/job/${job.id}`,
      status: state.status,
      conclusion:
        conclusion === null ? null : jobConclusions.includes(conclusion) ? conclusion : 'failure',
      created_at: attempt.createdAt,
      started_at: job.startedAt ?? attempt.createdAt,
      completed_at: state.status === 'completed' ? (job.completedAt ?? attempt.completedAt) : null,
      name: spec.name,
      steps,
      check_run_url: `${this.url}/repos/${repo.fullName}/check-runs/${job.id}`,
      labels: spec.labels,
      runner_id: state.ran ? 1 : null,
      runner_name: state.ran ? 'GitHub Actions 1' : null,
      runner_group_id: state.ran ? 0 : null,
      runner_group_name: state.ran ? 'GitHub Actions' : null,
      workflow_name: run.workflowName,
      head_branch: run.headBranch
    }
  }

  private parsedWorkflowOf(run: SimRun): ParsedWorkflow {
    const content = this.requireRepo(run.repo).files.get(run.workflowPath)
    try {
      return parseWorkflow(content ?? '')
    } catch {
      return {
        dispatchInputs: null,
        jobs: [{ name: 'deploy', labels: ['ubuntu-latest'], steps: ['Deploy'] }]
      }
    }
  }

  private contentJson(
    repo: RepoState,
    path: string,
    ref: string,
    content?: string
  ): Record<string, unknown> {
    const base = `${this.url}/repos/${repo.fullName}`
    const encodedPath = path.split('/').map(encodeURIComponent).join('/')
    const isFile = content !== undefined
    const sha = isFile ? blobSha(content) : sha1(`tree:${repo.fullName}:${ref}:${path}`)
    const self = `${base}/contents/${encodedPath}?ref=${encodeURIComponent(ref)}`
    const git = isFile ? `${base}/git/blobs/${sha}` : `${base}/git/trees/${sha}`
    const html = `${this.web}/${repo.fullName}/${isFile ? 'blob' : 'tree'}/${encodeURIComponent(ref)}/${encodedPath}`
    return {
      type: isFile ? 'file' : 'dir',
      size: isFile ? Buffer.byteLength(content, 'utf8') : 0,
      name: path.split('/').pop(),
      path,
      sha,
      url: self,
      git_url: git,
      html_url: html,
      download_url: isFile
        ? `https://raw.githubusercontent.com/${repo.fullName}/${encodeURIComponent(ref)}/${encodedPath}`
        : null,
      _links: { self, git, html }
    }
  }

  /** One page of `items` and the `Link` header that names the others. */
  private page<T>(
    ctx: Context,
    items: T[],
    defaultPerPage: number,
    maxPerPage: number
  ): { items: T[]; headers: Record<string, string> } {
    const perPage = Math.min(
      maxPerPage,
      Math.max(1, Number(ctx.req.query.get('per_page') ?? defaultPerPage) || defaultPerPage)
    )
    const page = Math.max(1, Number(ctx.req.query.get('page') ?? 1) || 1)
    const last = Math.max(1, Math.ceil(items.length / perPage))
    const link = (n: number, rel: string) => {
      const query = new URLSearchParams(ctx.req.query)
      query.set('per_page', String(perPage))
      query.set('page', String(n))
      return `<${this.url}${ctx.req.path}?${query.toString()}>; rel="${rel}"`
    }
    const rels: string[] = []
    if (page > 1) rels.push(link(page - 1, 'prev'), link(1, 'first'))
    if (page < last) rels.push(link(page + 1, 'next'), link(last, 'last'))
    return {
      items: items.slice((page - 1) * perPage, page * perPage),
      headers: rels.length > 0 ? { link: rels.join(', ') } : {}
    }
  }

  // ---- operations ----------------------------------------------------------------------------

  private buildOperations(): Record<string, Operation> {
    const secretOps = (
      kind: SecretScope['kind'],
      needs: Permission,
      githubPermission: string,
      prefix: string
    ) => ({
      [`${prefix}-public-key`]: {
        needs,
        githubPermission,
        handler: (ctx: Context) => this.getPublicKey(ctx, kind)
      },
      [`${prefix}-secret`]: {
        needs,
        githubPermission,
        handler: (ctx: Context) => this.getSecretMetadata(ctx, kind)
      },
      [`${prefix}-put`]: {
        needs,
        githubPermission,
        handler: (ctx: Context) => this.putSecret(ctx, kind)
      },
      [`${prefix}-delete`]: {
        needs,
        githubPermission,
        handler: (ctx: Context) => this.deleteSecret(ctx, kind)
      }
    })
    const repoSecrets = secretOps('repo', 'secrets', 'secrets', 'repo')
    const envSecrets = secretOps('env', 'environments', 'environments', 'env')
    const orgSecrets = secretOps('org', 'secrets', 'organization_secrets', 'org')
    const dependabotSecrets = secretOps('dependabot', 'secrets', 'dependabot_secrets', 'dependabot')
    return {
      'repos/get': {
        githubPermission: 'metadata',
        handler: ctx => ({ status: 200, body: this.repoJson(ctx.repo!, true) })
      },
      'repos/get-all-environments': {
        needs: 'environments',
        githubPermission: 'environments',
        handler: ctx => {
          const all = [...ctx.repo!.environments.values()].map(env =>
            this.environmentJson(ctx.repo!, env)
          )
          const { items, headers } = this.page(ctx, all, 30, 100)
          return { status: 200, headers, body: { total_count: all.length, environments: items } }
        }
      },
      'repos/get-environment': {
        needs: 'environments',
        githubPermission: 'environments',
        handler: ctx => ({
          status: 200,
          body: this.environmentJson(ctx.repo!, this.environment(ctx))
        })
      },
      'actions/get-repo-public-key': repoSecrets['repo-public-key']!,
      'actions/get-repo-secret': repoSecrets['repo-secret']!,
      'actions/create-or-update-repo-secret': repoSecrets['repo-put']!,
      'actions/delete-repo-secret': repoSecrets['repo-delete']!,
      'actions/get-environment-public-key': envSecrets['env-public-key']!,
      'actions/get-environment-secret': envSecrets['env-secret']!,
      'actions/create-or-update-environment-secret': envSecrets['env-put']!,
      'actions/delete-environment-secret': envSecrets['env-delete']!,
      'actions/get-org-public-key': orgSecrets['org-public-key']!,
      'actions/get-org-secret': orgSecrets['org-secret']!,
      'actions/create-or-update-org-secret': orgSecrets['org-put']!,
      'actions/delete-org-secret': orgSecrets['org-delete']!,
      'actions/list-selected-repos-for-org-secret': {
        needs: 'secrets',
        githubPermission: 'organization_secrets',
        handler: ctx => this.listSelectedRepos(ctx)
      },
      'actions/set-selected-repos-for-org-secret': {
        needs: 'secrets',
        githubPermission: 'organization_secrets',
        handler: ctx => this.setSelectedRepos(ctx)
      },
      'dependabot/get-repo-public-key': dependabotSecrets['dependabot-public-key']!,
      'dependabot/get-repo-secret': dependabotSecrets['dependabot-secret']!,
      'dependabot/create-or-update-repo-secret': dependabotSecrets['dependabot-put']!,
      'actions/list-repo-variables': {
        needs: 'variables',
        githubPermission: 'actions_variables',
        handler: ctx => this.listVariables(ctx)
      },
      'actions/create-repo-variable': {
        needs: 'variables',
        githubPermission: 'actions_variables',
        handler: ctx => this.createVariable(ctx)
      },
      'actions/get-repo-variable': {
        needs: 'variables',
        githubPermission: 'actions_variables',
        handler: ctx => ({ status: 200, body: this.variableJson(this.variable(ctx)) })
      },
      'actions/update-repo-variable': {
        needs: 'variables',
        githubPermission: 'actions_variables',
        handler: ctx => this.updateVariable(ctx)
      },
      'actions/delete-repo-variable': {
        needs: 'variables',
        githubPermission: 'actions_variables',
        handler: ctx => {
          ctx.repo!.variables.delete(this.variable(ctx).name)
          return { status: 204 }
        }
      },
      'actions/list-repo-workflows': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => {
          const all = [...ctx.repo!.workflows.values()].map(w => this.workflowJson(ctx.repo!, w))
          const { items, headers } = this.page(ctx, all, 30, 100)
          return { status: 200, headers, body: { total_count: all.length, workflows: items } }
        }
      },
      'actions/get-workflow': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => ({
          status: 200,
          body: this.workflowJson(ctx.repo!, this.workflow(ctx.repo!, ctx.params.workflow_id!))
        })
      },
      'actions/create-workflow-dispatch': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => this.dispatch(ctx)
      },
      'actions/list-workflow-runs': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => this.listRuns(ctx, this.workflow(ctx.repo!, ctx.params.workflow_id!).id)
      },
      'actions/list-workflow-runs-for-repo': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => this.listRuns(ctx)
      },
      'actions/get-workflow-run': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => ({ status: 200, body: this.runJson(this.run(ctx)) })
      },
      'actions/get-workflow-run-attempt': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => {
          const run = this.run(ctx)
          const n = Number(ctx.params.attempt_number)
          if (!Number.isInteger(n) || n < 1 || n > run.attempts.length)
            throw new ApiError(404, 'Not Found')
          return { status: 200, body: this.runJson(run, n) }
        }
      },
      'actions/list-jobs-for-workflow-run': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => this.listJobs(ctx)
      },
      'actions/cancel-workflow-run': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => this.cancel(ctx)
      },
      'actions/get-pending-deployments-for-run': {
        needs: 'actions',
        githubPermission: 'actions',
        handler: ctx => this.pendingDeployments(ctx)
      },
      'repos/get-content': {
        needs: 'contents',
        githubPermission: 'contents',
        handler: ctx => this.getContent(ctx)
      },
      'rate-limit/get': {
        githubPermission: 'metadata',
        handler: ctx => {
          const bucket = this.bucket(ctx.token.value === '' ? undefined : ctx.token)
          const core = {
            limit: bucket.limit,
            used: bucket.used,
            remaining: Math.max(0, bucket.limit - bucket.used),
            reset: bucket.reset
          }
          const search = {
            limit: 30,
            used: 0,
            remaining: 30,
            reset: Math.floor(this.clock.now() / 1000) + 60
          }
          const graphql = { limit: 5000, used: 0, remaining: 5000, reset: bucket.reset }
          return { status: 200, body: { resources: { core, search, graphql }, rate: core } }
        }
      }
    }
  }

  private getPublicKey(ctx: Context, kind: SecretScope['kind']): Reply {
    const pair = this.keyPair(this.scopeOf(ctx, kind))
    return {
      status: 200,
      body: {
        key_id: pair.keyId,
        key: sodium.to_base64(pair.publicKey, sodium.base64_variants.ORIGINAL)
      }
    }
  }

  private storedSecret(
    ctx: Context,
    kind: SecretScope['kind']
  ): { store: Map<string, StoredSecret>; secret: StoredSecret } {
    const store = this.secretStore(this.scopeOf(ctx, kind))
    const secret = store.get(String(ctx.params.secret_name).toUpperCase())
    if (!secret) throw new ApiError(404, 'Not Found')
    return { store, secret }
  }

  private getSecretMetadata(ctx: Context, kind: SecretScope['kind']): Reply {
    const { secret } = this.storedSecret(ctx, kind)
    const body: Record<string, unknown> = {
      name: secret.name,
      created_at: secret.createdAt,
      updated_at: secret.updatedAt
    }
    if (kind === 'org') {
      const org = secret as OrgSecret
      body.visibility = org.visibility
      if (org.visibility === 'selected') {
        body.selected_repositories_url = `${this.url}/orgs/${ctx.org!.login}/actions/secrets/${secret.name}/repositories`
      }
    }
    return { status: 200, body }
  }

  private deleteSecret(ctx: Context, kind: SecretScope['kind']): Reply {
    const { store, secret } = this.storedSecret(ctx, kind)
    store.delete(secret.name)
    return { status: 204 }
  }

  private putSecret(ctx: Context, kind: SecretScope['kind']): Reply {
    const scope = this.scopeOf(ctx, kind)
    const store = this.secretStore(scope)
    const name = canonicalName(String(ctx.params.secret_name), 'Secret')
    const body = (ctx.req.json ?? {}) as {
      encrypted_value?: string
      key_id?: string
      visibility?: 'all' | 'private' | 'selected'
      selected_repository_ids?: Array<number | string>
    }
    const existing = store.get(name)
    const now = this.iso()
    let plaintext: string | undefined
    if (body.encrypted_value !== undefined || body.key_id !== undefined || kind !== 'org') {
      if (body.encrypted_value === undefined || body.key_id === undefined) {
        throw new ApiError(
          422,
          'Invalid request.\n\nencrypted_value and key_id are required to set a value.'
        )
      }
      const pair = this.keyPair(scope)
      if (body.key_id !== pair.keyId) {
        throw new ApiError(
          422,
          'Bad request: key_id does not match the current public key; fetch the public key again.'
        )
      }
      try {
        const sealed = sodium.from_base64(body.encrypted_value, sodium.base64_variants.ORIGINAL)
        plaintext = Buffer.from(
          sodium.crypto_box_seal_open(sealed, pair.publicKey, pair.privateKey)
        ).toString('utf8')
      } catch {
        throw new ApiError(
          422,
          'Bad request: encrypted_value could not be decrypted with the public key.'
        )
      }
      if (Buffer.byteLength(plaintext, 'utf8') > SECRET_VALUE_LIMIT) {
        throw new ApiError(422, 'Secret value is too large: secrets are limited to 48 KB.')
      }
    } else if (!existing) {
      throw new ApiError(
        422,
        'Invalid request.\n\nencrypted_value and key_id are required to create a secret.'
      )
    }
    if (!existing && store.size >= SECRET_COUNT_LIMIT[kind]) {
      throw new ApiError(
        422,
        `Too many secrets: at most ${SECRET_COUNT_LIMIT[kind]} in this scope.`
      )
    }
    const secret: StoredSecret = {
      name,
      value: plaintext ?? existing!.value,
      createdAt: existing?.createdAt ?? now,
      updatedAt: now
    }
    if (kind === 'org') {
      const visibility =
        body.visibility ?? (existing as OrgSecret | undefined)?.visibility ?? 'private'
      const ids = (
        body.selected_repository_ids ??
        (existing as OrgSecret | undefined)?.selectedRepositoryIds ??
        []
      ).map(Number)
      store.set(name, {
        ...secret,
        visibility,
        selectedRepositoryIds: visibility === 'selected' ? ids : []
      } as OrgSecret)
    } else {
      store.set(name, secret)
    }
    const status = existing ? 204 : 201
    if (plaintext !== undefined) {
      this.secretWrites.push({
        scope,
        name,
        ciphertext: body.encrypted_value!,
        plaintext,
        at: this.clock.now(),
        status
      })
    }
    // A consumer that reads the secrets at every check (`consumer: 'reads-secrets'`) sees this now.
    this.log.changed('secret')
    return status === 201 ? { status: 201, body: {} } : { status: 204 }
  }

  private orgSecret(ctx: Context): OrgSecret {
    const secret = ctx.org!.secrets.get(String(ctx.params.secret_name).toUpperCase())
    if (!secret) throw new ApiError(404, 'Not Found')
    if (secret.visibility !== 'selected') {
      throw new ApiError(
        409,
        "The visibility of this secret is not 'selected'; repository access can only be listed or set for selected visibility."
      )
    }
    return secret
  }

  private listSelectedRepos(ctx: Context): Reply {
    const secret = this.orgSecret(ctx)
    const all = [...this.repos.values()]
      .filter(r => secret.selectedRepositoryIds.includes(r.id))
      .map(r => this.repoJson(r, false))
    const { items, headers } = this.page(ctx, all, 30, 100)
    return { status: 200, headers, body: { total_count: all.length, repositories: items } }
  }

  private setSelectedRepos(ctx: Context): Reply {
    const secret = this.orgSecret(ctx)
    secret.selectedRepositoryIds = (
      (ctx.req.json as { selected_repository_ids: number[] }).selected_repository_ids ?? []
    ).map(Number)
    secret.updatedAt = this.iso()
    return { status: 204 }
  }

  private variableJson(variable: VariableState): Record<string, unknown> {
    return {
      name: variable.name,
      value: variable.value,
      created_at: variable.createdAt,
      updated_at: variable.updatedAt
    }
  }

  private variable(ctx: Context): VariableState {
    const variable = ctx.repo!.variables.get(String(ctx.params.name).toUpperCase())
    if (!variable) throw new ApiError(404, 'Not Found')
    return variable
  }

  private listVariables(ctx: Context): Reply {
    const all = [...ctx.repo!.variables.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(v => this.variableJson(v))
    // Variables page by 10, at most 30 (the excerpt's `variables-per-page`).
    const { items, headers } = this.page(ctx, all, 10, 30)
    return { status: 200, headers, body: { total_count: all.length, variables: items } }
  }

  private checkVariableValue(value: string): void {
    if (Buffer.byteLength(value, 'utf8') > VARIABLE_VALUE_LIMIT) {
      throw new ApiError(422, 'Variable value is too large: variables are limited to 48 KB.')
    }
  }

  private createVariable(ctx: Context): Reply {
    const body = ctx.req.json as { name: string; value: string }
    const name = canonicalName(body.name, 'Variable')
    if (ctx.repo!.variables.has(name))
      throw new ApiError(409, 'Already exists - Variable already exists')
    this.checkVariableValue(body.value)
    const now = this.iso()
    ctx.repo!.variables.set(name, { name, value: body.value, createdAt: now, updatedAt: now })
    return { status: 201, body: {} }
  }

  private updateVariable(ctx: Context): Reply {
    const variable = this.variable(ctx)
    const body = (ctx.req.json ?? {}) as { name?: string; value?: string }
    const newName = body.name === undefined ? variable.name : canonicalName(body.name, 'Variable')
    if (newName !== variable.name && ctx.repo!.variables.has(newName)) {
      throw new ApiError(409, 'Already exists - Variable already exists')
    }
    if (body.value !== undefined) this.checkVariableValue(body.value)
    ctx.repo!.variables.delete(variable.name)
    ctx.repo!.variables.set(newName, {
      ...variable,
      name: newName,
      value: body.value ?? variable.value,
      updatedAt: this.iso()
    })
    return { status: 204 }
  }

  private dispatch(ctx: Context): Reply {
    const repo = ctx.repo!
    const body = ctx.req.json as {
      ref: string
      inputs?: Record<string, unknown>
      return_run_details?: boolean
    }
    // GitHub Enterprise Server 3.20 and older reject the field as GitHub rejects any unknown key
    // (422, 'Invalid request. "return_run_details" is not a permitted key.', reported from GHES 3.19
    // in benc-uk/workflow-dispatch#86; cli/cli#12672 expects a 400, so clients should accept both).
    // API version 2026-03-10 removed the field (the excerpt's x-github-breaking-changes), so it is
    // an unknown key there too, whatever its value. UNCONFIRMED: that github.com words it the same.
    const removed = ctx.apiVersion >= RUN_DETAILS_ALWAYS_VERSION
    if ('return_run_details' in body && (this.rejectsReturnRunDetails || removed)) {
      throw new ApiError(422, 'Invalid request.\n\n"return_run_details" is not a permitted key.')
    }
    const workflow = this.workflow(repo, ctx.params.workflow_id!)
    const ref = this.resolveRef(repo, body.ref)
    if (!ref) throw new ApiError(422, `No ref found for: ${body.ref}`)
    if (workflow.state !== 'active') {
      throw new ApiError(422, "Cannot trigger a 'workflow_dispatch' on a disabled workflow")
    }
    const parsed = parseWorkflow(repo.files.get(workflow.path) ?? '')
    if (!parsed.dispatchInputs)
      throw new ApiError(422, "Workflow does not have 'workflow_dispatch' trigger")
    const inputs = resolveInputs(parsed.dispatchInputs, body.inputs ?? {})
    const run = this.createRun(repo, workflow, body.ref, ref, inputs, parsed, ctx.token.login)
    const details = body.return_run_details === true || removed
    if (!details) return { status: 204 }
    const json = this.runJson(run)
    return {
      status: 200,
      body: { workflow_run_id: run.id, run_url: json.url, html_url: json.html_url }
    }
  }

  private createRun(
    repo: RepoState,
    workflow: WorkflowState,
    dispatchedRef: string,
    ref: { name: string; sha: string },
    inputs: Record<string, string>,
    parsed: ParsedWorkflow,
    actor: string,
    options: { behavior?: RunBehavior; createdAtMs?: number } = {}
  ): SimRun {
    const now = options.createdAtMs === undefined ? this.iso() : iso(options.createdAtMs)
    const expression = (expr: string): string => {
      const input = /^(?:github\.event\.)?inputs\.([\w-]+)$/.exec(expr)
      if (input) return inputs[input[1]!] ?? ''
      const known: Record<string, string> = {
        'github.ref_name': ref.name,
        'github.actor': actor,
        'github.event_name': 'workflow_dispatch',
        'github.workflow': workflow.name,
        'github.repository': repo.fullName
      }
      return known[expr] ?? ''
    }
    const displayTitle = parsed.runName
      ? parsed.runName.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expr: string) => expression(expr))
      : workflow.name
    workflow.runNumber += 1
    const run: SimRun = {
      id: this.nextRunId++,
      repo: repo.fullName,
      workflowId: workflow.id,
      workflowPath: workflow.path,
      workflowName: workflow.name,
      ref: dispatchedRef,
      headBranch: ref.name,
      headSha: ref.sha,
      event: 'workflow_dispatch',
      inputs,
      environment: parsed.jobs.find(job => job.environment !== undefined)?.environment,
      actor,
      displayTitle,
      runNumber: workflow.runNumber,
      status: 'queued',
      conclusion: null,
      createdAt: now,
      updatedAt: now,
      runStartedAt: now,
      attempt: 1,
      attempts: []
    }
    const attempt = this.newAttempt(
      run,
      options.behavior ?? { ...this.runBehavior, ...(this.behaviorQueue.shift() ?? {}) },
      options.createdAtMs
    )
    this.runs.set(run.id, run)
    this.log.event('github', 'run.created', {
      run_id: run.id,
      repo: repo.fullName,
      workflow: workflow.path,
      ref: ref.name,
      attempt: 1,
      conclusion: null
    })
    this.hooks.onDispatch?.(run)
    this.advance(run, attempt)
    return run
  }

  private listRuns(ctx: Context, workflowId?: number): Reply {
    const q = ctx.req.query
    const status = q.get('status')
    const statuses = ['completed', 'in_progress', 'queued', 'requested', 'waiting', 'pending']
    const created = q.get('created')
    const inRange = created === null ? undefined : createdFilter(created)
    const runs = [...this.runs.values()]
      .filter(run => run.repo.toLowerCase() === ctx.repo!.fullName.toLowerCase())
      .filter(run => workflowId === undefined || run.workflowId === workflowId)
      .filter(run => q.get('event') === null || run.event === q.get('event'))
      .filter(run => q.get('branch') === null || run.headBranch === q.get('branch'))
      .filter(
        run => q.get('actor') === null || run.actor.toLowerCase() === q.get('actor')!.toLowerCase()
      )
      .filter(run => q.get('head_sha') === null || run.headSha === q.get('head_sha'))
      .filter(
        run =>
          status === null ||
          (statuses.includes(status) ? run.status === status : run.conclusion === status)
      )
      .filter(run => !inRange || inRange(Date.parse(run.createdAt) / 1000))
      .filter(run => {
        const suite = q.get('check_suite_id')
        return suite === null || run.attempts.some(a => String(run.id * 10 + a.attempt) === suite)
      })
      // Newest first.
      .sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || b.id - a.id)
    const { items, headers } = this.page(ctx, runs, 30, 100)
    return {
      status: 200,
      headers,
      body: { total_count: runs.length, workflow_runs: items.map(run => this.runJson(run)) }
    }
  }

  private listJobs(ctx: Context): Reply {
    const run = this.run(ctx)
    const attempts = ctx.req.query.get('filter') === 'all' ? run.attempts : run.attempts.slice(-1)
    // A startup failure never gets as far as a job.
    const jobs = attempts
      .filter(a => a.conclusion !== 'startup_failure')
      .flatMap(a => a.jobs.map((_, i) => this.jobJson(run, a, i)))
    const { items, headers } = this.page(ctx, jobs, 30, 100)
    return { status: 200, headers, body: { total_count: jobs.length, jobs: items } }
  }

  private cancel(ctx: Context): Reply {
    const run = this.run(ctx)
    const attempt = run.attempts[run.attempts.length - 1]!
    if (attempt.status === 'completed')
      throw new ApiError(409, 'Cannot cancel a workflow run that is completed.')
    this.clearTimer(run.id)
    this.setState(run, attempt, 'completed', 'cancelled')
    this.log.event('github', 'run.completed', {
      run_id: run.id,
      attempt: attempt.attempt,
      conclusion: 'cancelled'
    })
    return { status: 202, body: {} }
  }

  private pendingDeployments(ctx: Context): Reply {
    const run = this.run(ctx)
    if (run.status !== 'waiting' || run.environment === undefined) return { status: 200, body: [] }
    const repo = ctx.repo!
    const env = repo.environments.get(run.environment.toLowerCase())
    const envJson = env
      ? this.environmentJson(repo, env)
      : {
          id: 0,
          node_id: nodeId('EN', 0),
          name: run.environment,
          url: `${this.url}/repos/${repo.fullName}/environments/${run.environment}`,
          html_url: `${this.web}/${repo.fullName}`
        }
    const attempt = run.attempts[run.attempts.length - 1]!
    return {
      status: 200,
      body: [
        {
          environment: {
            id: envJson.id,
            node_id: envJson.node_id,
            name: envJson.name,
            url: envJson.url,
            html_url: envJson.html_url
          },
          wait_timer: 0,
          wait_timer_started_at: attempt.updatedAt,
          current_user_can_approve: true,
          reviewers: []
        }
      ]
    }
  }

  private getContent(ctx: Context): Reply {
    const repo = ctx.repo!
    const refParam = ctx.req.query.get('ref')
    const ref = refParam === null ? repo.defaultBranch : this.resolveRef(repo, refParam)?.name
    if (ref === undefined) throw new ApiError(404, `No commit found for the ref ${refParam}`)
    const path = String(ctx.params.path).replace(/^\/+|\/+$/g, '')
    const content = repo.files.get(path)
    if (content !== undefined) {
      const accept = String(ctx.req.headers.accept ?? '')
      if (/application\/vnd\.github(\.v3)?\.raw/.test(accept)) {
        return {
          status: 200,
          headers: { 'content-type': 'application/vnd.github.raw; charset=utf-8' },
          body: content
        }
      }
      // GitHub wraps the base64 content at 60 characters.
      const base64 = Buffer.from(content, 'utf8')
        .toString('base64')
        .replace(/(.{60})/g, '$1\n')
      return {
        status: 200,
        body: { ...this.contentJson(repo, path, ref, content), content: base64, encoding: 'base64' }
      }
    }
    const prefix = `${path}/`
    const children = new Map<string, string | undefined>()
    for (const [file, text] of repo.files) {
      if (!file.startsWith(prefix)) continue
      const [child, ...deeper] = file.slice(prefix.length).split('/')
      children.set(`${prefix}${child}`, deeper.length === 0 ? text : undefined)
    }
    if (children.size === 0) throw new ApiError(404, 'Not Found')
    return {
      status: 200,
      body: [...children.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([child, text]) => this.contentJson(repo, child, ref, text))
    }
  }
}
