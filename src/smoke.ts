/**
 * HTTP smoke checks against the deployed app: each URL must answer within its expected status
 * range (and contain a text, when asked) before the old token may be revoked.
 */
import type { SmokeCheck, SmokeResult } from './model.js'
import { type Clock, retryUntil, systemClock } from './backoff.js'
import { type Log, log as actionLog } from './log.js'
import { quoteServer } from './redact.js'

export type { SmokeResult } from './model.js'

export interface SmokeOptions {
  /** Sent with every request (input `smoke-headers`); never logged. */
  headers: Record<string, string>
  /**
   * What `{name}` placeholders in `contains=` stand for now, e.g. `access-key-id`. A list means
   * any of its values passes (several tokens may be serving while an earlier rotation is undone).
   */
  placeholders?: Record<string, string | string[]>
  /**
   * What `{name}` placeholders in header values and URLs stand for (`client-id`, `client-secret`
   * of a service token). The values are secrets: the caller masked them; nothing here prints a
   * filled header or URL (results name the URL as the input wrote it).
   */
  values?: Record<string, string>
  clock?: Clock
  /** Stops the checks: no further attempt once it aborts. */
  signal?: AbortSignal
  log?: Log
}

/**
 * Every text `text` stands for: each known `{name}` replaced by its value (one text per value
 * when there are several); other braces are text (a JSON body, say).
 */
export function resolvePlaceholders(
  text: string,
  values: Record<string, string | string[]> = {}
): string[] {
  const match = /\{([a-z-]+)\}/.exec(text)
  if (!match) return [text]
  const [whole, name] = match as unknown as [string, string]
  const value = values[name]
  const before = text.slice(0, match.index)
  const rest = text.slice(match.index + whole.length)
  const tails = resolvePlaceholders(rest, values)
  const heads = value === undefined ? [whole] : Array.isArray(value) ? value : [value]
  return heads.flatMap(head => tails.map(tail => `${before}${head}${tail}`))
}

/** `text` with each `{name}` of `values` replaced; other braces stay as they are. */
export function fillPlaceholders(text: string, values: Record<string, string> = {}): string {
  return text.replace(/\{([a-z-]+)\}/g, (whole, name: string) => values[name] ?? whole)
}

/** One request may hang on a cold start or a stuck origin; it is abandoned after this long. */
const REQUEST_TIMEOUT_MS = 10_000

interface Probe {
  ok: boolean
  status?: number
  reason?: string
}

function describeStatus(status: number, check: SmokeCheck): string {
  const { min, max } = check.expect
  return `status ${status}, expected ${min === max ? min : `${min}-${max}`}`
}

/** Where a redirect points, without its query string (which may carry state or tokens). */
function redirectTarget(response: Response, base: string): string {
  const location = response.headers.get('location')
  if (!location) return ''
  try {
    const target = new URL(location, base)
    return ` (redirect to ${target.origin}${target.pathname})`
  } catch {
    return ' (redirect)'
  }
}

function networkReason(error: unknown): string {
  // Duck-typed: fetch's errors may come from another realm (undici inside Node), where
  // `instanceof Error` is false.
  const e = (error ?? {}) as {
    name?: string
    message?: string
    cause?: { code?: string; message?: string }
  }
  if (e.name === 'TimeoutError' || e.name === 'AbortError') {
    return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
  }
  const message = e.message ?? String(error)
  const detail = e.cause?.code ?? e.cause?.message
  return quoteServer(detail ? `${message} (${detail})` : message, 200)
}

/**
 * One request. Redirects are not followed: behind Cloudflare Access (or any login wall) an
 * unauthenticated request is redirected to a login page that answers 200, which would pass a
 * check that the app itself failed. A check that expects a redirect says so with `expect=302`.
 */
export async function checkOnce(check: SmokeCheck, options: SmokeOptions): Promise<Probe> {
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
  let response: Response
  try {
    const values = options.values
    const headers = values
      ? Object.fromEntries(
          Object.entries(options.headers).map(([name, value]) => [
            name,
            fillPlaceholders(value, values)
          ])
        )
      : options.headers
    response = await fetch(values ? fillPlaceholders(check.url, values) : check.url, {
      headers,
      redirect: 'manual',
      signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout
    })
  } catch (error) {
    return { ok: false, reason: networkReason(error) }
  }
  const status = response.status
  const inRange = status >= check.expect.min && status <= check.expect.max
  if (!inRange) {
    await response.body?.cancel()
    const redirect = status >= 300 && status < 400 ? redirectTarget(response, check.url) : ''
    return { ok: false, status, reason: `${describeStatus(status, check)}${redirect}` }
  }
  if (check.contains === undefined) {
    await response.body?.cancel()
    return { ok: true, status }
  }
  const expected = resolvePlaceholders(check.contains, options.placeholders)
  let body: string
  try {
    body = await response.text()
  } catch (error) {
    return { ok: false, status, reason: `reading the body failed: ${networkReason(error)}` }
  }
  if (expected.some(text => body.includes(text))) return { ok: true, status }
  const placeholder = expected.length !== 1 || expected[0] !== check.contains
  return {
    ok: false,
    status,
    reason: placeholder
      ? `status ${status}, but the body does not name the credential that should be serving (${expected.join(' or ')}): the app runs on other credentials`
      : `status ${status}, but the body does not contain the expected text`
  }
}

/**
 * Runs every check concurrently, each retried with backoff (250 ms doubling to 5 s) until it
 * passes or `timeoutMs` elapses (or `signal` aborts). A pass: status within `expect`, and the body
 * contains `contains` (placeholders resolved) when given. Headers are never logged.
 */
export async function runSmokeChecks(
  checks: SmokeCheck[],
  timeoutMs: number,
  options: SmokeOptions
): Promise<SmokeResult[]> {
  const clock = options.clock ?? systemClock
  const log = options.log ?? actionLog
  return Promise.all(
    checks.map(async check => {
      const start = clock.now()
      const result = await retryUntil(
        async attempt => {
          const outcome = await checkOnce(check, options)
          if (!outcome.ok) log.debug(`smoke ${check.url}: attempt ${attempt}: ${outcome.reason}`)
          return { done: outcome.ok, value: outcome }
        },
        {
          deadlineMs: timeoutMs,
          initialDelayMs: 250,
          maxDelayMs: 5000,
          clock,
          ...(options.signal ? { signal: options.signal } : {})
        }
      )
      return toResult(check, result.value, result.attempts, clock.now() - start)
    })
  )
}

/** One attempt of every check, side by side (the watch's round). */
export async function runSmokeRound(
  checks: SmokeCheck[],
  options: SmokeOptions
): Promise<SmokeResult[]> {
  const clock = options.clock ?? systemClock
  return Promise.all(
    checks.map(async check => {
      const start = clock.now()
      const outcome = await checkOnce(check, options)
      return toResult(check, outcome, 1, clock.now() - start)
    })
  )
}

function toResult(
  check: SmokeCheck,
  outcome: Probe,
  attempts: number,
  durationMs: number
): SmokeResult {
  return {
    url: check.url,
    ok: outcome.ok,
    ...(outcome.status === undefined ? {} : { status: outcome.status }),
    attempts,
    durationMs,
    ...(outcome.ok ? {} : { reason: outcome.reason ?? 'failed' })
  }
}
