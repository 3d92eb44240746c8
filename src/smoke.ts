/**
 * HTTP smoke checks against the deployed app: each URL must answer within its expected status
 * range (and contain a text, when asked) before the old token may be revoked.
 */
import * as core from '@actions/core'
import type { SmokeCheck } from './settings.js'
import { retryUntil, sleep as realSleep } from './backoff.js'

export interface SmokeResult {
  url: string
  ok: boolean
  status?: number
  attempts: number
  durationMs: number
  reason?: string
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
  return detail ? `${message} (${detail})` : message
}

/**
 * One request. Redirects are not followed: behind Cloudflare Access (or any login wall) an
 * unauthenticated request is redirected to a login page that answers 200, which would pass a
 * check that the app itself failed. A check that expects a redirect says so with `expect=302`.
 */
async function probe(check: SmokeCheck, headers: Record<string, string>): Promise<Probe> {
  let response: Response
  try {
    response = await fetch(check.url, {
      headers,
      redirect: 'manual',
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
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
  let body: string
  try {
    body = await response.text()
  } catch (error) {
    return { ok: false, status, reason: `reading the body failed: ${networkReason(error)}` }
  }
  return body.includes(check.contains)
    ? { ok: true, status }
    : {
        ok: false,
        status,
        reason: `status ${status}, but the body does not contain the expected text`
      }
}

/**
 * Runs every check concurrently, each retried with backoff (250 ms doubling to 5 s) until it
 * passes or `timeoutMs` elapses. A pass: status within `expect`, and the body contains `contains`
 * when given. `headers` go with every request and are never logged.
 */
export async function runSmokeChecks(
  checks: SmokeCheck[],
  headers: Record<string, string>,
  timeoutMs: number,
  options: { sleep?: (ms: number) => Promise<void> } = {}
): Promise<SmokeResult[]> {
  return Promise.all(
    checks.map(async check => {
      const start = Date.now()
      // Counts slept time too, so the deadline passes even with an injected sleep that returns at once.
      let slept = 0
      const sleep = options.sleep ?? realSleep
      const result = await retryUntil(
        async attempt => {
          const outcome = await probe(check, headers)
          if (!outcome.ok) core.debug(`smoke ${check.url}: attempt ${attempt}: ${outcome.reason}`)
          return { done: outcome.ok, value: outcome }
        },
        {
          deadlineMs: timeoutMs,
          initialDelayMs: 250,
          maxDelayMs: 5000,
          sleep: async ms => {
            slept += ms
            await sleep(ms)
          },
          now: () => Math.max(Date.now(), start + slept)
        }
      )
      return {
        url: check.url,
        ok: result.done,
        ...(result.value.status === undefined ? {} : { status: result.value.status }),
        attempts: result.attempts,
        durationMs: Date.now() - start,
        ...(result.done ? {} : { reason: result.value.reason })
      }
    })
  )
}
