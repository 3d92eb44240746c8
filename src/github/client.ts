/**
 * The one GitHub client: Octokit with the retry and throttling plugins, configured so that a
 * retry can never repeat a request that acts twice (a workflow dispatch, a create).
 *
 * Modelled on peter-evans/create-pull-request `src/octokit-client.ts`.
 */
import { Octokit } from '@octokit/rest'
import { retry } from '@octokit/plugin-retry'
import { throttling } from '@octokit/plugin-throttling'
// plugin-throttling's own dependency; its `throttle.write` option takes a Bottleneck group.
import Bottleneck from 'bottleneck'
import { httpStatus } from '../errors.js'
import { retryAfterMs } from '../backoff.js'
import { type Log, log as actionLog } from '../log.js'
import { isLoopbackUrl } from '../net.js'
import { quoteServer } from '../redact.js'

export { httpStatus, isLoopbackUrl }

const RotationOctokit = Octokit.plugin(retry, throttling)

export type GitHubClient = InstanceType<typeof RotationOctokit>

export type GitHubClientLog = Log

/**
 * The REST API version every request asks for (docs.github.com/rest/about-the-rest-api/api-versions).
 * Pinned so that a new default cannot change an answer under the action: version 2026-03-10, for
 * one, removed the dispatch's `return_run_details` flag (deploy.ts handles both).
 */
export const GITHUB_API_VERSION = '2022-11-28'

/**
 * The versions this action knows how to speak, oldest first. From 2026-03-10 a dispatch always
 * answers 200 with the run, and `return_run_details` is an unknown key (deploy.ts).
 */
export const KNOWN_API_VERSIONS = ['2022-11-28', '2026-03-10'] as const

/** The version from which a dispatch always returns its run and rejects `return_run_details`. */
export const RUN_DETAILS_ALWAYS_VERSION = '2026-03-10'

/** What one client learnt from GitHub's answers. */
interface ClientState {
  /** The API version it asks for now (the pinned one, unless the server does not serve it). */
  apiVersion: string
  /** `github-authentication-token-expiration` of the latest answer that carried it. */
  tokenExpiration?: string
}
const states = new WeakMap<object, ClientState>()

/** The API version `octokit` asks for now. */
export function apiVersionOf(octokit: GitHubClient): string {
  return states.get(octokit)?.apiVersion ?? GITHUB_API_VERSION
}

/**
 * When the github-token expires, as GitHub said on an answer (`github-authentication-token-expiration`,
 * sent for fine-grained and classic PATs that have an expiry, e.g. `2026-12-31 23:59:59 UTC`;
 * github.blog/changelog/2021-07-26-expiration-options-for-personal-access-tokens). Undefined when
 * no answer carried it (a token without expiry, an App or GITHUB_TOKEN) or it is not a date.
 */
export function tokenExpirationOf(octokit: GitHubClient): Date | undefined {
  const header = states.get(octokit)?.tokenExpiration
  if (!header) return undefined
  const match =
    /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\s*(UTC|GMT|Z|[+-]\d{2}:?\d{2}))?$/.exec(
      header.trim()
    )
  if (!match) return undefined
  const zone = !match[3] || /^(UTC|GMT|Z)$/.test(match[3]) ? 'Z' : match[3]
  const date = new Date(`${match[1]}T${match[2]}${zone}`)
  return Number.isNaN(date.getTime()) ? undefined : date
}

/**
 * The newest version that both the server (as its 400 lists them) and this action know, when the
 * server refused the version asked for; else undefined.
 */
export function negotiatedVersion(error: unknown, asked: string): string | undefined {
  const served = unsupportedVersion(error)
  return KNOWN_API_VERSIONS.filter(v => served?.includes(v) && v !== asked).at(-1)
}

/**
 * For GitHub's 400 "The version you specified in the "X-GitHub-Api-Version" request header … is
 * not a supported version. The following versions are currently supported: …": the versions it
 * lists as supported. Undefined for any other answer.
 */
function unsupportedVersion(error: unknown): string[] | undefined {
  if (httpStatus(error) !== 400) return undefined
  const message = String((error as { message?: unknown })?.message ?? '')
  if (!/X-GitHub-Api-Version/i.test(message) || !/not a supported version/i.test(message)) {
    return undefined
  }
  const supported = message.split(/currently supported/i)[1] ?? ''
  return [...new Set(supported.match(/\d{4}-\d{2}-\d{2}/g) ?? [])]
}

/** The server serves no REST API version this action knows. */
export class ApiVersionError extends Error {
  override name = 'ApiVersionError'
}

/**
 * 4xx answers are final: repeating them changes nothing. 429 is left out on purpose: a 429 that
 * is a rate limit goes to the throttling plugin (see `retryRequest` below), any other 429 is
 * retried after its `retry-after`.
 */
const DO_NOT_RETRY = [400, 401, 403, 404, 410, 422, 451]

/** Attempts after the first for a 5xx or a plain 429 (retry plugin default). */
const RETRIES = 3

/** Rate-limit retries after the first attempt (create-pull-request retries twice). */
const RATE_LIMIT_RETRIES = 2

/**
 * The longest `retry-after` or rate-limit reset we wait for inside one request. A primary rate
 * limit resets on the hour; waiting that long silently would look like a hang, so a longer wait
 * fails the request with GitHub's message instead.
 */
const MAX_WAIT_SECONDS = 300

/** Methods whose repetition has the same effect as one call (RFC 9110 §9.2.2, plus PATCH of a variable). */
const REPEATABLE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'PATCH', 'DELETE'])

interface RequestLike {
  method: string
  url: string
  request?: Record<string, unknown>
}

/**
 * A POST acts every time it is sent (a second dispatch starts a second deploy run), so it is
 * repeated only when its caller opted in with `request.retries > 0`; a dispatch never is.
 */
function isRepeatable(options: RequestLike): boolean {
  const method = options.method.toUpperCase()
  if (REPEATABLE_METHODS.has(method)) return true
  if (/\/dispatches$/.test(options.url)) return false
  const retries = options.request?.['retries']
  return typeof retries === 'number' && retries > 0
}

interface ErrorLike {
  status?: number
  message: string
  response?: { headers?: Record<string, unknown>; data?: unknown }
}

/**
 * The conditions under which plugin-throttling handles a 403/429 (mirrors its `failed` handler):
 * a secondary rate limit (message), an exhausted primary limit (`x-ratelimit-remaining: 0`) or a
 * GraphQL RATE_LIMITED error.
 */
function isRateLimit(error: ErrorLike): boolean {
  if (error.status !== 403 && error.status !== 429) return false
  if (/\bsecondary rate\b/i.test(error.message)) return true
  if (error.response?.headers?.['x-ratelimit-remaining'] === '0') return true
  const data = error.response?.data as { errors?: Array<{ type?: string }> } | undefined
  return (data?.errors ?? []).some(e => e?.type === 'RATE_LIMITED')
}

export function createGitHubClient(options: {
  token: string
  baseUrl: string
  userAgent?: string
  log?: GitHubClientLog
  /** Real milliseconds per millisecond of the action's clock (the sandbox runs it faster). */
  timeScale?: number
  /** The REST API version to ask for (default `GITHUB_API_VERSION`). */
  apiVersion?: string
}): GitHubClient {
  const log = options.log ?? actionLog
  const scale = options.timeScale ?? 1
  const loopback = isLoopbackUrl(options.baseUrl)

  const onLimit =
    (kind: string) =>
    (retryAfter: number, request: RequestLike, _octokit: unknown, retryCount: number): boolean => {
      const what = `${request.method} ${request.url}`
      if (!isRepeatable(request)) {
        log.warning(`GitHub ${kind} on ${what}; not retried, because repeating it could act twice.`)
        return false
      }
      if (retryCount >= RATE_LIMIT_RETRIES || retryAfter > MAX_WAIT_SECONDS) {
        log.warning(`GitHub ${kind} on ${what}; giving up (GitHub asks to wait ${retryAfter} s).`)
        return false
      }
      log.warning(`GitHub ${kind} on ${what}; retrying in ${retryAfter} s.`)
      return true
    }

  const octokit = new RotationOctokit({
    auth: options.token,
    // Always explicit: GitHub Enterprise Server and the tests point it elsewhere, and
    // @actions/github would read GITHUB_API_URL only once, at import.
    baseUrl: options.baseUrl,
    userAgent: options.userAgent ?? 'r2-token-rotation',
    // Octokit's request log reports every answer (304s and expected 404s included) at info and
    // error level; those are debug details here. Only the message is passed on: Octokit's extra
    // arguments carry the request options, headers included. Its debug level says only
    // "request" before each request, which tells nothing without those options.
    log: {
      debug: () => {},
      info: (message: string) => log.debug(message),
      warn: (message: string) => log.warning(message),
      error: (message: string) => log.debug(message)
    },
    // Each plugin waits its seconds × `retryAfterBaseValue` ms; the sandbox's time scale shortens it.
    retry: { doNotRetry: DO_NOT_RETRY, retries: RETRIES, retryAfterBaseValue: 1000 * scale },
    throttle: {
      onRateLimit: onLimit('rate limit'),
      onSecondaryRateLimit: onLimit('secondary rate limit'),
      retryAfterBaseValue: 1000 * scale,
      // GitHub asks for about a second between content-creating requests (secondary limits);
      // the plugin's default write group keeps writes 1 s apart. A loopback simulator has no
      // secondary limits, so there writes are only serialised, not spaced.
      ...(loopback ? { write: new Bottleneck.Group({ maxConcurrent: 1, minTime: 0 }) } : {})
    }
  })

  // Registered after the plugins, so this runs first. Every request asks for the pinned API
  // version; a POST gets `retries: 0` unless its caller
  // chose otherwise (plugin-retry retries any method on 5xx). `request` is copied for every
  // request because Octokit shares it with the client's defaults, and both plugins write their
  // retry counters into it.
  const state: ClientState = { apiVersion: options.apiVersion ?? GITHUB_API_VERSION }
  states.set(octokit, state)
  octokit.hook.before('request', requestOptions => {
    requestOptions.headers['x-github-api-version'] = state.apiVersion
    const own = { ...requestOptions.request }
    if (requestOptions.method === 'POST' && own.retries === undefined) own.retries = 0
    requestOptions.request = own
  })

  // A server that no longer serves the pinned version (or GHES that does not serve it yet)
  // answers 400 before doing anything, listing the versions it serves: the request is sent again,
  // once, in the newest version both know, and every later request asks for that one
  // (docs.github.com/rest/about-the-rest-api/api-versions: "If you specify an API version that is
  // no longer supported, you will receive a 400 error").
  // Every answer, failures included (a 404 is the usual first one), also tells the token's expiry
  // when GitHub sends it.
  const noteExpiry = (headers: Record<string, unknown> | undefined): void => {
    const expiration = headers?.['github-authentication-token-expiration']
    if (typeof expiration === 'string') state.tokenExpiration = expiration
  }
  octokit.hook.wrap('request', async (request, requestOptions) => {
    try {
      const response = await request(requestOptions)
      noteExpiry(response.headers)
      return response
    } catch (error) {
      noteExpiry((error as { response?: { headers?: Record<string, unknown> } }).response?.headers)
      const asked = String(requestOptions.headers['x-github-api-version'] ?? state.apiVersion)
      const next = negotiatedVersion(error, asked)
      if (next === undefined) {
        const served = unsupportedVersion(error)
        if (served) {
          throw new ApiVersionError(
            `GitHub at ${options.baseUrl} does not serve REST API version ${asked}, nor another this action knows (${KNOWN_API_VERSIONS.join(', ')}); it serves ${served.length > 0 ? served.join(', ') : 'other versions'}.`,
            { cause: error }
          )
        }
        throw error
      }
      if (state.apiVersion !== next) {
        log.info(
          `GitHub at ${options.baseUrl} does not serve REST API version ${asked}; using ${next}, the newest version it serves that this action knows.`
        )
        state.apiVersion = next
      }
      requestOptions.headers['x-github-api-version'] = next
      return request(requestOptions)
    }
  })

  // plugin-retry waits (n+1)² s between attempts and ignores `retry-after`; its `retryRequest`
  // is the one place that sets the wait, so it is wrapped to honour the header. The plugin keeps
  // whole seconds only (it truncates), so the header is rounded up: never a shorter wait than
  // asked. Rate limits are left to the throttling plugin, which waits for the reset (otherwise
  // both would retry).
  const plugin = octokit.retry
  const retryRequest = plugin.retryRequest
  plugin.retryRequest = (error, retries, retryAfter) => {
    if (isRateLimit(error)) return retryRequest(error, 0, 0)
    const header = retryAfterMs(error.response?.headers?.['retry-after'])
    if (header === undefined) return retryRequest(error, retries, retryAfter)
    if (header > MAX_WAIT_SECONDS * 1000) return retryRequest(error, 0, 0)
    return retryRequest(error, retries, Math.ceil(header / 1000))
  }

  return octokit
}

/** What a 401 means for the github-token, and how to renew it. */
export const GITHUB_TOKEN_REFUSED =
  'GitHub refused the github-token (401): it is mistyped, revoked or expired. Regenerate it (a fine-grained PAT: Settings → Developer settings → Personal access tokens → Fine-grained tokens → the token → Regenerate token) or use a GitHub App, and update the secret it comes from.'

/** `hint` (the permission a call needs), or for a 401 what that means for the token itself. */
export function gitHubHint(error: unknown, hint: string): string {
  if (error instanceof ApiVersionError)
    return 'Update the action to a release that speaks one of them.'
  return httpStatus(error) === 401 ? GITHUB_TOKEN_REFUSED : hint
}

/**
 * GitHub's answer in one line: status and message. A RequestError's message is GitHub's
 * `message`, which a server may fill with an echo of the request (a ciphertext, a header): it is
 * quoted through the scrubber and shortened.
 */
export function describeGitHubError(error: unknown): string {
  const status = httpStatus(error)
  const raw =
    typeof (error as { message?: unknown })?.message === 'string'
      ? (error as { message: string }).message
      : String(error)
  const message = quoteServer(raw)
  return status === undefined ? message : `GitHub answered ${status}: ${message}`
}
