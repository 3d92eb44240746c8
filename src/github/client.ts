/**
 * The one GitHub client: Octokit with the retry and throttling plugins, configured so that a
 * retry can never repeat a request that acts twice (a workflow dispatch, a create).
 *
 * Modelled on peter-evans/create-pull-request `src/octokit-client.ts`.
 */
import * as core from '@actions/core'
import { Octokit } from '@octokit/rest'
import { retry } from '@octokit/plugin-retry'
import { throttling } from '@octokit/plugin-throttling'
// plugin-throttling's own dependency; its `throttle.write` option takes a Bottleneck group.
import Bottleneck from 'bottleneck'

const RotationOctokit = Octokit.plugin(retry, throttling)

export type GitHubClient = InstanceType<typeof RotationOctokit>

export interface GitHubClientLog {
  info(message: string): void
  warning(message: string): void
  debug(message: string): void
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

/** True for a loopback host: a local simulator, which has no secondary rate limits. */
export function isLoopbackUrl(url: string): boolean {
  let host: string
  try {
    host = new URL(url).hostname
  } catch {
    return false
  }
  return (
    host === 'localhost' || host === '[::1]' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host)
  )
}

/** Seconds from a `retry-after` header (delta-seconds or an HTTP date), or undefined. */
function retryAfterSeconds(value: unknown): number | undefined {
  if (typeof value !== 'string' && typeof value !== 'number') return undefined
  const text = String(value).trim()
  if (/^\d+$/.test(text)) return Number(text)
  const date = Date.parse(text)
  if (Number.isNaN(date)) return undefined
  return Math.max(0, Math.ceil((date - Date.now()) / 1000))
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
}): GitHubClient {
  const log = options.log ?? core
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
    retry: { doNotRetry: DO_NOT_RETRY, retries: RETRIES },
    throttle: {
      onRateLimit: onLimit('rate limit'),
      onSecondaryRateLimit: onLimit('secondary rate limit'),
      // GitHub asks for about a second between content-creating requests (secondary limits);
      // the plugin's default write group keeps writes 1 s apart. A loopback simulator has no
      // secondary limits, so there writes are only serialised, not spaced.
      ...(loopback ? { write: new Bottleneck.Group({ maxConcurrent: 1, minTime: 0 }) } : {})
    }
  })

  // Registered after the plugins, so this runs first: a POST gets `retries: 0` unless its caller
  // chose otherwise (plugin-retry retries any method on 5xx). `request` is copied for every
  // request because Octokit shares it with the client's defaults, and both plugins write their
  // retry counters into it.
  octokit.hook.before('request', requestOptions => {
    const own = { ...requestOptions.request }
    if (requestOptions.method === 'POST' && own.retries === undefined) own.retries = 0
    requestOptions.request = own
  })

  // plugin-retry waits (n+1)² s between attempts and ignores `retry-after`; its `retryRequest`
  // is the one place that sets the wait, so it is wrapped to honour the header. Rate limits are
  // left to the throttling plugin, which waits for the reset (otherwise both would retry).
  const plugin = octokit.retry
  const retryRequest = plugin.retryRequest
  plugin.retryRequest = (error, retries, retryAfter) => {
    if (isRateLimit(error)) return retryRequest(error, 0, 0)
    const header = retryAfterSeconds(error.response?.headers?.['retry-after'])
    if (header === undefined) return retryRequest(error, retries, retryAfter)
    if (header > MAX_WAIT_SECONDS) return retryRequest(error, 0, 0)
    return retryRequest(error, retries, header)
  }

  return octokit
}

/** The HTTP status of an Octokit RequestError (undefined for anything else, e.g. a network error). */
export function httpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('status' in error)) return undefined
  const status = (error as { status: unknown }).status
  return typeof status === 'number' ? status : undefined
}

/**
 * GitHub's answer in one line: status and message. RequestError messages carry only GitHub's
 * `message` and documentation link, never the request (headers are redacted by Octokit anyway).
 */
export function describeGitHubError(error: unknown): string {
  const status = httpStatus(error)
  const message =
    typeof (error as { message?: unknown })?.message === 'string'
      ? (error as { message: string }).message
      : String(error)
  return status === undefined ? message : `GitHub answered ${status}: ${message}`
}
