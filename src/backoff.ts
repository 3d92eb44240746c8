/**
 * Time, for everything that waits: one injectable clock, one retry loop for "keep trying until it
 * works or the deadline passes" (token propagation, smoke checks, the watch), and one reading of
 * `Retry-After`. HTTP-level retries of idempotent requests belong to the API clients; they wait
 * through this clock too.
 */

/**
 * Milliseconds on one scale for deadlines and durations, and a way to wait. Wall-clock times
 * (journal stamps, token expiry) do not come from here.
 */
export interface Clock {
  now(): number
  /** Resolves after `ms` (at once when `signal` aborts). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>
  /**
   * Real milliseconds per clock millisecond: 1 for the system clock. Libraries that wait on their
   * own (Octokit's retry plugin) are given waits multiplied by it.
   */
  readonly scale: number
}

function realSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, Math.max(0, ms))
    function done(): void {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

export const systemClock: Clock = { now: () => Date.now(), sleep: realSleep, scale: 1 }

/**
 * A clock that runs `1 / scale` times as fast as real time: every wait takes `scale` of its real
 * length, and `now()` advances accordingly. The sandbox's tests use it so that simulated minutes
 * (a two-minute watch, a deploy timeout) pass in a second; main.ts honours it only against
 * loopback endpoints (the local simulators), never against real APIs.
 */
export function scaledClock(scale: number): Clock {
  if (!(scale > 0 && scale <= 1)) throw new Error(`clock scale must be in (0, 1], got ${scale}`)
  const origin = Date.now()
  return {
    now: () => origin + (Date.now() - origin) / scale,
    sleep: (ms, signal) => realSleep(ms * scale, signal),
    scale
  }
}

/**
 * A clock whose time moves only when something sleeps, by exactly the time slept, and whose
 * sleeps return at once (after `onSleep`, which a test may use to move a simulator's own clock).
 */
export function virtualClock(
  start = Date.now(),
  onSleep?: (ms: number) => unknown
): Clock & { slept: number[] } {
  let time = start
  const slept: number[] = []
  return {
    now: () => time,
    sleep: async ms => {
      const wait = Math.max(0, ms)
      slept.push(wait)
      time += wait
      await onSleep?.(wait)
    },
    scale: 0,
    slept
  }
}

export interface BackoffOptions {
  /** Total time budget in milliseconds, measured from the first attempt. */
  deadlineMs: number
  /** First pause between attempts (default 250 ms); doubles up to `maxDelayMs`. */
  initialDelayMs?: number
  /** Longest pause between attempts (default 5 s). */
  maxDelayMs?: number
  clock?: Clock
  /** Stops the loop: no further attempt once it aborts. */
  signal?: AbortSignal
}

export type Attempt<T> = { done: boolean; value: T }

/**
 * Calls `attempt` until it reports `done`, the deadline passes or `signal` aborts; returns the
 * last value and the number of attempts. Pauses grow exponentially with ±20 % jitter so that
 * parallel waiters spread.
 */
export async function retryUntil<T>(
  attempt: (n: number) => Promise<Attempt<T>>,
  options: BackoffOptions
): Promise<{ done: boolean; value: T; attempts: number }> {
  const clock = options.clock ?? systemClock
  const start = clock.now()
  let delay = options.initialDelayMs ?? 250
  const maxDelay = options.maxDelayMs ?? 5000
  for (let n = 1; ; n++) {
    const result = await attempt(n)
    if (result.done) return { done: true, value: result.value, attempts: n }
    const remaining = options.deadlineMs - (clock.now() - start)
    if (remaining <= 0 || options.signal?.aborted) {
      return { done: false, value: result.value, attempts: n }
    }
    const jittered = delay * (0.8 + Math.random() * 0.4)
    await clock.sleep(Math.min(jittered, remaining), options.signal)
    if (options.signal?.aborted) return { done: false, value: result.value, attempts: n }
    delay = Math.min(delay * 2, maxDelay)
  }
}

/**
 * Milliseconds from a `Retry-After` header (delta-seconds or an HTTP date, RFC 9110 §10.2.3), or
 * undefined when absent or unreadable. `nowMs` is the time to count an HTTP date from.
 */
export function retryAfterMs(value: unknown, nowMs = Date.now()): number | undefined {
  if (typeof value !== 'string' && typeof value !== 'number') return undefined
  const text = String(value).trim()
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000)
  const date = Date.parse(text)
  if (Number.isNaN(date)) return undefined
  return Math.max(0, date - nowMs)
}
