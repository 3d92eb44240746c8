/**
 * The one retry loop for "keep trying until it works or the deadline passes" waits: token
 * propagation (verify, R2 probe) and smoke checks. HTTP-level retries of idempotent requests
 * (5xx, 429 with retry-after) belong to the API clients, not here.
 */
export interface BackoffOptions {
  /** Total time budget in milliseconds, measured from the first attempt. */
  deadlineMs: number
  /** First pause between attempts (default 250 ms); doubles up to `maxDelayMs`. */
  initialDelayMs?: number
  /** Longest pause between attempts (default 5 s). */
  maxDelayMs?: number
  sleep?: (ms: number) => Promise<void>
  now?: () => number
}

export type Attempt<T> = { done: true; value: T } | { done: false; value: T }

export const sleep = (ms: number): Promise<void> =>
  new Promise(resolve => setTimeout(resolve, Math.max(0, ms)))

/**
 * Calls `attempt` until it reports `done` or the deadline passes; returns the last value and the
 * number of attempts. Pauses grow exponentially with ±20 % jitter so that parallel waiters spread.
 */
export async function retryUntil<T>(
  attempt: (n: number) => Promise<Attempt<T>>,
  options: BackoffOptions
): Promise<{ done: boolean; value: T; attempts: number }> {
  const wait = options.sleep ?? sleep
  const now = options.now ?? Date.now
  const start = now()
  let delay = options.initialDelayMs ?? 250
  const maxDelay = options.maxDelayMs ?? 5000
  for (let n = 1; ; n++) {
    const result = await attempt(n)
    if (result.done) return { done: true, value: result.value, attempts: n }
    const remaining = options.deadlineMs - (now() - start)
    if (remaining <= 0) return { done: false, value: result.value, attempts: n }
    const jittered = delay * (0.8 + Math.random() * 0.4)
    await wait(Math.min(jittered, remaining))
    delay = Math.min(delay * 2, maxDelay)
  }
}
