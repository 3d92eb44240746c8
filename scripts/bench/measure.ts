/**
 * What the benchmark reads out of a sandbox's request log: which requests the action made, how
 * many of them had to wait for each other, what GitHub counted, and the simulator's run events.
 */
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import type { EventEntry, RequestEntry } from '../../sandbox/log.js'

/** A sandbox whose every service answers after `latencyMs`, and when each answer went out. */
export interface Timed {
  sb: Sandbox
  /** When the answer to a request was sent (after the injected latency). */
  answeredAt(entry: RequestEntry): number
}

export async function timedSandbox(options: SandboxOptions, latencyMs: number): Promise<Timed> {
  const sb = await startSandbox(options)
  const answered = new Map<RequestEntry, number>()
  for (const sim of [sb.cloudflare, sb.github, sb.r2, sb.app]) {
    sim.service.latencyMs = latencyMs
    sim.service.onAnswered = entry => answered.set(entry, Date.now())
  }
  // A dropped connection never gets an answer: it ends where it began.
  return { sb, answeredAt: entry => answered.get(entry) ?? entry.at }
}

export { actionRequests } from '../../sandbox/index.js'

/**
 * The longest chain of requests each of which began only after the one before it was answered
 * (earliest-answer-first greedy, which is optimal for this): the requests that could not have
 * overlapped. Requests sent together count once; a strictly sequential client counts them all.
 */
export function sequentialChain(
  entries: RequestEntry[],
  answeredAt: (e: RequestEntry) => number
): RequestEntry[] {
  const byAnswer = [...entries].sort((a, b) => answeredAt(a) - answeredAt(b))
  const chain: RequestEntry[] = []
  let free = -Infinity
  for (const entry of byAnswer) {
    if (entry.at < free) continue
    chain.push(entry)
    free = answeredAt(entry)
  }
  return chain
}

export interface RequestCounts {
  total: number
  /** GitHub answers that count against the primary rate limit. */
  githubCounted: number
  /** GitHub 304s: free. */
  github304: number
  /** Other free GitHub answers (GET /rate_limit). */
  githubFree: number
  /** GitHub POST, PUT, PATCH and DELETE. */
  githubWrites: number
  cloudflare: number
  r2: number
  app: number
}

export function countRequests(entries: RequestEntry[]): RequestCounts {
  const github = entries.filter(e => e.service === 'github')
  return {
    total: entries.length,
    githubCounted: github.filter(e => e.counted === true).length,
    github304: github.filter(e => e.status === 304).length,
    githubFree: github.filter(e => e.counted !== true && e.status !== 304).length,
    githubWrites: github.filter(e => e.method !== 'GET' && e.method !== 'HEAD').length,
    cloudflare: entries.filter(e => e.service === 'cloudflare').length,
    r2: entries.filter(e => e.service === 'r2').length,
    app: entries.filter(e => e.service === 'app').length
  }
}

/** The simulator's events about one deploy run (`run.created`, `run.completed`, …). */
export function runEvent(sb: Sandbox, name: string, runId: number): EventEntry | undefined {
  return sb.log.events(name).find(e => e.detail.run_id === runId)
}

/** The requests for one run's resource (`GET …/actions/runs/{id}`, not its jobs). */
export function isRunRead(entry: RequestEntry, runId: number): boolean {
  return (
    entry.method === 'GET' && /\/actions\/runs\/(\d+)(\?|$)/.exec(entry.path)?.[1] === String(runId)
  )
}

/**
 * Time the smoke checks spent waiting between attempts: for each URL, the gaps between an
 * attempt's answer and the next attempt. None when the first attempt passed.
 */
export function smokeWaits(
  entries: RequestEntry[],
  answeredAt: (e: RequestEntry) => number
): number {
  const byPath = new Map<string, RequestEntry[]>()
  for (const e of entries.filter(e => e.service === 'app')) {
    byPath.set(e.path, [...(byPath.get(e.path) ?? []), e])
  }
  let waits = 0
  for (const attempts of byPath.values()) {
    for (let i = 1; i < attempts.length; i++) {
      waits += Math.max(0, attempts[i]!.at - answeredAt(attempts[i - 1]!))
    }
  }
  return waits
}

/**
 * GitHub's client spaces writes at least `spacingMs` apart by their start (plugin-throttling's
 * write group, which the action's client keeps for every host but a loopback one). Replays the
 * writes of a loopback run with that spacing: each delay pushes everything after it later.
 * Returns the time it adds.
 */
export function writeSpacingDelay(entries: RequestEntry[], spacingMs = 1000): number {
  let shift = 0
  let last = -Infinity
  for (const e of entries) {
    if (e.service !== 'github' || e.method === 'GET' || e.method === 'HEAD') continue
    const start = e.at + shift
    if (start < last + spacingMs) shift += last + spacingMs - start
    last = Math.max(start, last + spacingMs)
  }
  return shift
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function mean(values: number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length
}
