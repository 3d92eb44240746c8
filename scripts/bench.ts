/**
 * `npm run bench`: what the action costs, measured against the sandbox with a simulated network
 * latency on every request (default 40 ms), and printed as a table.
 *
 *   npm run bench [-- --latency 40 --runs 7 --target-runs 3 --deploy-runs 5 --startup-runs 15
 *                    --only startup,rotation,targets,deploy]
 *
 * Environment: BENCH_LATENCY_MS, BENCH_RUNS, BENCH_TARGET_RUNS, BENCH_DEPLOY_RUNS,
 * BENCH_STARTUP_RUNS (flags win);
 * R2_ROTATION_ENTRY runs a private bundle instead of dist/index.js (as the e2e tests do).
 *
 * What it measures (medians; min–max next to them, because a 2-core machine is noisy):
 * - Start-up (scripts/bench/startup.ts): process start → the action's first request, next to a
 *   bare `node -e ''` and a bare Node process whose first act is a request, alternated in one
 *   run; the ratio is the figure to compare across machines. The bundle's start chunk and the
 *   whole of dist/ (the Cloudflare SDK and libsodium are chunks loaded on first use).
 * - Cold start: from spawning `node dist/index.js` (with the runner's environment and the
 *   sandbox's Node flags, sandbox/runner.ts, but never its code cache: a runner compiles the bundle
 *   afresh in every job) to the first request any simulator receives; and the size of the bundle's
 *   directory.
 * - One rotation (one secret target, deploy run 0.15 s queued + 0.4 s running): wall time, less
 *   the simulated deploy (the simulator's run.created → run.completed) and the smoke checks' waits
 *   between attempts, is the action's own overhead. The floor is the longest chain of requests
 *   that had to wait for each other times the latency; overhead ÷ floor says how much the action
 *   adds beyond the network. Requests are split into those GitHub counts against the rate limit,
 *   304s, and free reads (GET /rate_limit).
 * - 1, 10 and 50 secret targets (repositories, environments, Dependabot and an org secret, all
 *   holding the current credentials): wall time and requests.
 * - GitHub write spacing: on github.com the action's client starts GitHub writes at least 1 s
 *   apart (plugin-throttling's write group; a loopback server is exempt, so the sandbox runs never
 *   wait for it). The table gives the time that spacing adds, modelled by replaying each run's
 *   writes with it. It is a model, not a measurement: the sandbox only speaks http on loopback.
 * - Following a deploy run (queued 3 s, running 60 s): the action's `followRun` (its real client,
 *   default settings) and a naive follower (GET the run every 10 s without ETag, as common
 *   dispatch-and-wait actions do) follow the same runs at the same time. Counted requests include
 *   the dispatch for both; the detection delay runs from the simulator's `run.completed` to the
 *   follower returning. Both followers' delays depend on where the completion falls in their poll
 *   period, so both phases are spread: the runs' running times over one 10 s naive period (56, 58,
 *   60, 62, 64 s for five runs), and each run is followed by four instances of `followRun`
 *   started 0, 0.25, 0.5 and 0.75 s after the dispatch (its period is 1 s plus a round trip;
 *   without the spread, five runs 2 s apart sampled only a 0.4 s band of it). Each follower has
 *   a token of its own, so that its requests are counted apart.
 *
 * Why real time, run concurrently, and not the simulator's ManualClock: a manual clock makes
 * every HTTP request take no simulated time, so the latency and the followers' own processing
 * would vanish from the detection delay, and both followers' sleeps would have to be driven by the
 * clock instead of the timers they really use: the comparison would measure arithmetic on the
 * poll schedule, not the code. Real time keeps latency, client and timers real; the five runs and
 * their 25 followers share one ~75 s window, which keeps the whole bench under about 3 minutes.
 */
import { readdirSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import type { Sandbox, SandboxOptions, SandboxTarget } from '../sandbox/index.js'
import { ACTION_ENTRY, actionDefaults, runAction, sandboxInputs } from '../sandbox/runner.js'
import { systemClock } from '../src/backoff.js'

const sleep = (ms: number): Promise<void> => systemClock.sleep(ms)
import { parseDuration } from '../src/settings.js'
import {
  type RequestCounts,
  actionRequests,
  countRequests,
  isRunRead,
  mean,
  median,
  runEvent,
  sequentialChain,
  smokeWaits,
  timedSandbox,
  writeSpacingDelay
} from './bench/measure.js'
import { actionFollow, dispatch, naiveFollow } from './bench/followers.js'
import { type StartupSample, measureStartup } from './bench/startup.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

interface BenchOptions {
  /** The bundle to run: R2_ROTATION_ENTRY, else dist/index.js. */
  entry: string
  latencyMs: number
  runs: number
  targetRuns: number
  deployRuns: number
  startupRuns: number
  only: Set<string>
}

const SECTIONS = ['startup', 'rotation', 'targets', 'deploy']
const NAIVE_POLL_MS = 10_000
/** `followRun`'s default pause between polls, and how many of it follow each run. */
const ACTION_POLL_MS = 1_000
const ACTION_FOLLOWERS = 4
const DEPLOY_QUEUED_MS = 3_000
const DEPLOY_RUNNING_MS = 60_000
/** The default deploy run of the sandbox, kept for the rotation figures. */
const ROTATION_RUN = { queuedMs: 150, runningMs: 400, conclusion: 'success' }

function options(): BenchOptions {
  const { values } = parseArgs({
    options: {
      latency: { type: 'string' },
      runs: { type: 'string' },
      'target-runs': { type: 'string' },
      'deploy-runs': { type: 'string' },
      'startup-runs': { type: 'string' },
      only: { type: 'string' }
    }
  })
  const count = (flag: string | undefined, env: string, fallback: number, min: number): number => {
    const text = flag ?? process.env[env]
    const value = text === undefined || text === '' ? fallback : Number(text)
    if (!Number.isInteger(value) || value < min) {
      throw new Error(
        `${env} / --${env.replace(/^BENCH_/, '').toLowerCase()}: expected an integer ≥ ${min}, got '${text}'`
      )
    }
    return value
  }
  const only = new Set((values.only ?? SECTIONS.join(',')).split(',').map(s => s.trim()))
  for (const section of only) {
    if (!SECTIONS.includes(section))
      throw new Error(`--only: unknown section '${section}' (${SECTIONS.join(', ')})`)
  }
  return {
    entry: path.resolve(process.env.R2_ROTATION_ENTRY || ACTION_ENTRY),
    latencyMs: count(values.latency, 'BENCH_LATENCY_MS', 40, 0),
    runs: count(values.runs, 'BENCH_RUNS', 7, 1),
    targetRuns: count(values['target-runs'], 'BENCH_TARGET_RUNS', 3, 1),
    deployRuns: count(values['deploy-runs'], 'BENCH_DEPLOY_RUNS', 5, 1),
    startupRuns: count(values['startup-runs'], 'BENCH_STARTUP_RUNS', 15, 1),
    only
  }
}

// ------------------------------------------------------------------ one rotation

interface RotationSample {
  coldMs: number
  wallMs: number
  deployMs: number
  smokeWaitMs: number
  /** From the run completing to the answer that told the action so. */
  detectMs: number
  overheadMs: number
  sequential: number
  /** Time the simulators took on the chain beyond the latency (the app's own R2 read included). */
  simulatorMs: number
  counts: RequestCounts
  /** Modelled: what starting GitHub writes ≥ 1 s apart would add (github.com). */
  spacingMs: number
}

async function rotateOnce(
  { latencyMs, entry }: BenchOptions,
  sandbox: SandboxOptions,
  overrides: Record<string, string> = {}
): Promise<RotationSample> {
  const { sb, answeredAt } = await timedSandbox({ run: ROTATION_RUN, ...sandbox }, latencyMs)
  try {
    let spawnedAt = 0
    const result = await runAction(sb, sandboxInputs(sb, overrides), {
      onSpawn: () => (spawnedAt = Date.now()),
      timeoutMs: 300_000,
      entry,
      codeCache: false
    })
    const endedAt = Date.now()
    if (result.exitCode !== 0 || result.outputs.result !== 'rotated') {
      // Never the values: the action's own errors, with every sandbox secret blanked out.
      const lines = [...result.stdout.split('\n'), ...result.stderr.split('\n')].filter(
        l => l.startsWith('::error') || (l.trim() !== '' && !l.startsWith('::'))
      )
      let text = lines.slice(-20).join('\n')
      for (const value of sb.secretValues()) if (value) text = text.split(value).join('***')
      throw new Error(`the rotation did not succeed (exit ${result.exitCode}):\n${text}`)
    }
    const requests = actionRequests(sb, spawnedAt)
    const runId = Number(result.outputs['deploy-run-id'])
    const created = runEvent(sb, 'run.created', runId)
    const completed = runEvent(sb, 'run.completed', runId)
    if (!created || !completed) throw new Error(`no events for deploy run ${runId}`)
    const noticed = requests.find(e => isRunRead(e, runId) && e.at >= completed.at)
    const deployMs = completed.at - created.at
    const smokeWaitMs = smokeWaits(requests, answeredAt)
    const wallMs = endedAt - spawnedAt
    const chain = sequentialChain(requests, answeredAt)
    return {
      coldMs: requests[0]!.at - spawnedAt,
      wallMs,
      deployMs,
      smokeWaitMs,
      detectMs: noticed ? answeredAt(noticed) - completed.at : NaN,
      overheadMs: wallMs - deployMs - smokeWaitMs,
      sequential: chain.length,
      simulatorMs: chain.reduce((sum, e) => sum + answeredAt(e) - e.at - latencyMs, 0),
      counts: countRequests(requests),
      spacingMs: writeSpacingDelay(requests)
    }
  } finally {
    await sb.stop()
  }
}

async function rotations(
  n: number,
  opts: BenchOptions,
  sandbox: SandboxOptions = {},
  overrides: Record<string, string> = {},
  label = ''
): Promise<RotationSample[]> {
  const samples: RotationSample[] = []
  for (let i = 0; i < n; i++) {
    progress(`${label} run ${i + 1}/${n}`)
    samples.push(await rotateOnce(opts, sandbox, overrides))
  }
  progress('')
  return samples
}

// ------------------------------------------------------------------ targets

/** `n` secret targets: the deploy repository, then repositories, environments, Dependabot, org. */
function targetWorld(n: number): { sandbox: SandboxOptions; lines: string[] } {
  if (n <= 1) return { sandbox: {}, lines: ['repo'] }
  const rest = n - 2
  const dependabot = Math.floor(rest / 6)
  const repos = Math.ceil((rest - dependabot) / 2)
  const envs = rest - dependabot - repos
  const name = (i: number): string => `acme/svc-${String(i + 1).padStart(2, '0')}`
  const targets: SandboxTarget[] = []
  const lines = ['repo']
  for (let i = 0; i < repos; i++) {
    targets.push({ kind: 'repo', repo: name(i) })
    lines.push(`repo:${name(i)}`)
  }
  for (let i = 0; i < envs; i++) {
    targets.push({ kind: 'env', repo: name(i), environment: 'production' })
    lines.push(`env:${name(i)}:production`)
  }
  for (let i = 0; i < dependabot; i++) {
    targets.push({ kind: 'dependabot', repo: name(i) })
    lines.push(`dependabot:${name(i)}`)
  }
  targets.push({ kind: 'org', org: 'acme', visibility: 'private' })
  lines.push('org:acme')
  return { sandbox: { targets }, lines }
}

// ------------------------------------------------------------------ following a deploy run

interface Follower {
  /** Requests counted against the rate limit, the dispatch included. */
  counted: number
  notModified: number
  /** From the simulator's `run.completed` to the follower returning. */
  delayMs: number
}

interface FollowSample {
  offsetMs: number
  naive: Follower
  actions: Follower[]
}

/** A token of its own for each follower, so that its requests can be told apart. */
function followerToken(sb: Sandbox): string {
  const token = `github_pat_${randomBytes(30).toString('base64url')}`
  sb.github.addToken(token, { actions: true })
  return token
}

async function followComparison(latencyMs: number, runs: number): Promise<FollowSample[]> {
  const { sb } = await timedSandbox({}, latencyMs)
  try {
    const timeoutMs = parseDuration(actionDefaults()['deploy-timeout'] ?? '30m', 'deploy-timeout')
    const offsets = Array.from({ length: runs }, (_, i) =>
      Math.round(((i + 0.5) / runs - 0.5) * NAIVE_POLL_MS)
    )
    // Dispatched one after the other (each run takes its queued behaviour in order); each run's
    // followers start as it is dispatched (the action's spread over one of its poll periods), and
    // all of them follow at the same time.
    const following = []
    for (const offsetMs of offsets) {
      sb.github.queueRun({
        queuedMs: DEPLOY_QUEUED_MS,
        runningMs: DEPLOY_RUNNING_MS + offsetMs,
        conclusion: 'success'
      })
      const runId = await dispatch(sb.githubApiUrl, sb.githubToken, sb.repository, 'deploy.yml')
      const naiveToken = followerToken(sb)
      const actionTokens = Array.from({ length: ACTION_FOLLOWERS }, () => followerToken(sb))
      following.push(
        Promise.all([
          naiveFollow(sb.githubApiUrl, naiveToken, sb.repository, runId, NAIVE_POLL_MS),
          ...actionTokens.map(async (token, k) => {
            await sleep((k * ACTION_POLL_MS) / ACTION_FOLLOWERS)
            return actionFollow(sb.githubApiUrl, token, sb.repository, runId, timeoutMs)
          })
        ]).then(([naive, ...actions]) => ({
          offsetMs,
          runId,
          followed: [naive, ...actions],
          tokens: [naiveToken, ...actionTokens]
        }))
      )
    }
    return (await Promise.all(following)).map(({ offsetMs, runId, followed, tokens }) => {
      const completed = runEvent(sb, 'run.completed', runId)
      if (!completed) throw new Error(`run ${runId} never completed`)
      const reads = sb.log.requests({ service: 'github' }).filter(e => isRunRead(e, runId))
      const [naive, ...actions] = followed.map((result, i): Follower => {
        if (result.conclusion !== 'success') {
          throw new Error(`run ${runId}: a follower saw it conclude ${result.conclusion}`)
        }
        const mine = reads.filter(e =>
          [`Bearer ${tokens[i]}`, `token ${tokens[i]}`].includes(String(e.headers.authorization))
        )
        return {
          counted: 1 + mine.filter(e => e.counted === true).length,
          notModified: mine.filter(e => e.status === 304).length,
          delayMs: result.noticedAt - completed.at
        }
      })
      return { offsetMs, naive: naive!, actions }
    })
  } finally {
    await sb.stop()
  }
}

// ------------------------------------------------------------------ output

/** A one-line progress note on a terminal's stderr (nothing when stderr is a file or a pipe). */
function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K${text ? `  ${text}` : ''}`)
}

/** A path relative to the repository when inside it. */
function shown(file: string): string {
  const relative = path.relative(root, file)
  return relative && !relative.startsWith('..') ? relative : file
}

const ms = (v: number): string => (Number.isNaN(v) ? '–' : `${Math.round(v)} ms`)
const s = (v: number): string => (Number.isNaN(v) ? '–' : `${(v / 1000).toFixed(2)} s`)
const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)}×` : '–')
const n0 = (v: number): string => (Number.isInteger(v) ? String(v) : v.toFixed(1))

function spread(values: number[], unit: (v: number) => string): string {
  return `${unit(Math.min(...values))} – ${unit(Math.max(...values))}`
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map(r => (r[c] ?? '').length)))
  const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`
  return [
    line(rows[0]!),
    `|${widths.map(w => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line)
  ].join('\n')
}

function dirSize(dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    total += entry.isDirectory() ? dirSize(full) : statSync(full).size
  }
  return total
}

function medianOf(samples: RotationSample[], pick: (s: RotationSample) => number): number {
  return median(samples.map(pick))
}

function rotationTable(samples: RotationSample[], latencyMs: number, entry: string): string {
  const m = (pick: (s: RotationSample) => number) => medianOf(samples, pick)
  const row = (label: string, pick: (s: RotationSample) => number, unit: (v: number) => string) => [
    label,
    unit(m(pick)),
    spread(samples.map(pick), unit)
  ]
  const floor = (r: RotationSample) => r.sequential * latencyMs
  const bundle = dirSize(path.dirname(entry))
  return table([
    ['metric', 'median', 'min – max'],
    row('cold start: spawn → first request', r => r.coldMs, ms),
    [`bundle size (${shown(path.dirname(entry))}/)`, `${(bundle / 1e6).toFixed(2)} MB`, ''],
    row('rotation wall time', r => r.wallMs, s),
    row('− simulated deploy run', r => r.deployMs, s),
    row('− smoke waits between attempts', r => r.smokeWaitMs, s),
    row('= overhead (the action’s own)', r => r.overheadMs, s),
    row('  of which cold start', r => r.coldMs, s),
    row('  of which noticing the deploy ended', r => r.detectMs, s),
    row('  of which simulators’ processing', r => r.simulatorMs, s),
    row(`floor: sequential requests × ${latencyMs} ms`, floor, s),
    row('  sequential requests', r => r.sequential, n0),
    row('overhead ÷ floor', r => r.overheadMs / floor(r), x),
    row('requests per rotation', r => r.counts.total, n0),
    row('  GitHub, rate-limit counted', r => r.counts.githubCounted, n0),
    row('  GitHub, 304 (free)', r => r.counts.github304, n0),
    row('  GitHub, other free (/rate_limit)', r => r.counts.githubFree, n0),
    row('  Cloudflare', r => r.counts.cloudflare, n0),
    row('  R2', r => r.counts.r2, n0),
    row('  app (smoke checks)', r => r.counts.app, n0),
    row('GitHub writes', r => r.counts.githubWrites, n0),
    row('+ github.com write spacing (model)', r => r.spacingMs, s)
  ])
}

function startupTable(samples: StartupSample[], entry: string): string {
  const row = (label: string, pick: (s: StartupSample) => number, unit: (v: number) => string) => [
    label,
    unit(median(samples.map(pick))),
    spread(samples.map(pick), unit)
  ]
  const dir = path.dirname(entry)
  const main = statSync(entry).size
  return table([
    ['metric', 'median', 'min – max'],
    row("bare `node -e ''`: spawn → exit", r => r.bareExitMs, ms),
    row('bare `node -e "fetch(…)"`: spawn → its request', r => r.bareFetchMs, ms),
    row('the action: spawn → first request', r => r.actionMs, ms),
    row("  ÷ bare `node -e ''`", r => r.actionMs / r.bareExitMs, x),
    row('  − bare first request', r => r.actionMs - r.bareFetchMs, ms),
    [`bundle: ${shown(entry)} (loaded at start)`, `${(main / 1e6).toFixed(2)} MB`, ''],
    [
      `bundle: ${shown(dir)}/ (with the chunks loaded when needed)`,
      `${(dirSize(dir) / 1e6).toFixed(2)} MB`,
      ''
    ]
  ])
}

function targetsTable(byCount: Array<[number, RotationSample[]]>): string {
  const base = byCount[0]?.[1] ?? []
  const baseWall = medianOf(base, r => r.wallMs)
  const rows = [
    [
      'targets',
      'runs',
      'wall',
      'overhead',
      '× 1 target',
      'requests',
      'GitHub counted',
      'GitHub writes',
      '+ github.com spacing (model)'
    ]
  ]
  for (const [count, samples] of byCount) {
    const m = (pick: (s: RotationSample) => number) => medianOf(samples, pick)
    rows.push([
      String(count),
      String(samples.length),
      s(m(r => r.wallMs)),
      s(m(r => r.overheadMs)),
      x(m(r => r.wallMs) / baseWall),
      n0(m(r => r.counts.total)),
      n0(m(r => r.counts.githubCounted)),
      n0(m(r => r.counts.githubWrites)),
      s(m(r => r.spacingMs))
    ])
  }
  return table(rows)
}

function followTable(samples: FollowSample[]): string {
  const naive = samples.map(sample => sample.naive)
  const action = samples.flatMap(sample => sample.actions)
  const rows = [
    [
      'follower',
      'samples',
      'counted requests',
      '304s',
      'detection delay median',
      'mean',
      'min – max'
    ]
  ]
  for (const [label, followers] of [
    ['naive: GET every 10 s, no ETag', naive],
    ['action: followRun, defaults', action]
  ] as const) {
    const delays = followers.map(f => f.delayMs)
    rows.push([
      label,
      String(followers.length),
      n0(median(followers.map(f => f.counted))),
      n0(median(followers.map(f => f.notModified))),
      s(median(delays)),
      s(mean(delays)),
      spread(delays, s)
    ])
  }
  const m = (followers: Follower[], pick: (f: Follower) => number) => median(followers.map(pick))
  const avg = (followers: Follower[]) => mean(followers.map(f => f.delayMs))
  rows.push([
    'naive ÷ action',
    '',
    x(m(naive, f => f.counted) / m(action, f => f.counted)),
    '',
    x(m(naive, f => f.delayMs) / m(action, f => f.delayMs)),
    x(avg(naive) / avg(action)),
    ''
  ])
  const counted = m(action, f => f.counted)
  const delay = m(action, f => f.delayMs)
  rows.push([
    'target (issue #6)',
    '',
    `≤ 4: ${counted <= 4 ? 'met' : 'MISSED'}`,
    '',
    `≤ 1 s: ${delay <= 1000 ? 'met' : 'MISSED'}`,
    '',
    ''
  ])
  const perRun = samples
    .map(sample => {
      const offset = `${sample.offsetMs >= 0 ? '+' : ''}${(sample.offsetMs / 1000).toFixed(0)} s`
      const delays = sample.actions.map(f => f.delayMs)
      return (
        `  running 60 s ${offset}: naive ${sample.naive.counted} counted, ${s(sample.naive.delayMs)}; ` +
        `action ${n0(m(sample.actions, f => f.counted))} counted + ${n0(m(sample.actions, f => f.notModified))} × 304, ${spread(delays, s)}`
      )
    })
    .join('\n')
  return `${table(rows)}\n${perRun}`
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const opts = options()
  const entry = opts.entry
  const began = Date.now()
  console.log(
    `r2-token-rotation benchmark: ${opts.latencyMs} ms latency on every request; node ${process.version}, ${os.cpus().length} CPU(s); action ${shown(entry)}`
  )

  if (opts.only.has('startup')) {
    progress(`start-up: ${opts.startupRuns} runs of each …`)
    const samples = await measureStartup(entry, opts.startupRuns)
    progress('')
    console.log(
      `\nStart-up: process start → first request, next to a bare Node process; ${opts.startupRuns} runs each\n`
    )
    console.log(startupTable(samples, entry))
  }

  let single: RotationSample[] = []
  if (opts.only.has('rotation') || opts.only.has('targets')) {
    // A warm-up run (discarded) fills the file cache and warms the simulators up.
    await rotations(1, opts, {}, {}, 'warm-up')
    single = await rotations(opts.runs, opts, {}, {}, '1 target')
  }
  if (opts.only.has('rotation')) {
    console.log(
      `\nStart-up and one rotation: 1 secret target, deploy run ${ROTATION_RUN.queuedMs / 1000} s queued + ${ROTATION_RUN.runningMs / 1000} s running; ${opts.runs} runs\n`
    )
    console.log(rotationTable(single, opts.latencyMs, entry))
  }

  if (opts.only.has('targets')) {
    const byCount: Array<[number, RotationSample[]]> = [[1, single]]
    for (const count of [10, 50]) {
      const world = targetWorld(count)
      const samples = await rotations(
        opts.targetRuns,
        opts,
        world.sandbox,
        { 'secret-targets': world.lines.join('\n') },
        `${count} targets`
      )
      byCount.push([count, samples])
    }
    console.log(
      `\nSecret targets (3 secrets each; repositories, environments, Dependabot, an org)\n`
    )
    console.log(targetsTable(byCount))
  }

  if (opts.only.has('deploy')) {
    progress(`following ${opts.deployRuns} deploy runs (about 75 s) …`)
    const samples = await followComparison(opts.latencyMs, opts.deployRuns)
    progress('')
    console.log(
      `\nFollowing a deploy run: queued ${DEPLOY_QUEUED_MS / 1000} s, running ${DEPLOY_RUNNING_MS / 1000} s ± ${NAIVE_POLL_MS / 2000} s over ${opts.deployRuns} runs; each run followed at once by the naive follower and by ${ACTION_FOLLOWERS} × followRun started across one of its poll periods; counted requests include the dispatch\n`
    )
    console.log(followTable(samples))
  }

  console.log(`\nbench took ${((Date.now() - began) / 1000).toFixed(0)} s`)
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error))
  process.exit(1)
})
