/**
 * Shared checks for the crash, fault and input scenarios (not a test file itself): what "the world
 * is sound" means after a run — every target consistent with one live token, no orphan of the
 * rotated token's lineage, no value anywhere in the output or the journal.
 */
import { createHash } from 'node:crypto'
import { startSandbox, type Sandbox, type SandboxOptions } from '../../sandbox/index.js'
import type { SecretScope } from '../../sandbox/github.js'
import type { ChildProcess } from 'node:child_process'
import type { RequestEntry } from '../../sandbox/log.js'
import { findLeaks, runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'

export const sha256 = (text: string): string =>
  createHash('sha256').update(text, 'utf8').digest('hex')

export const JOURNAL = 'R2_ROTATION_STATE'

/**
 * How often a scenario's health watcher polls the app between changes (real ms; 50 s of simulated
 * time). The watcher also checks at once after every change a consumer can see (a token updated or
 * deleted, a deploy, the simulators' clock moved, a secret written when the app reads the secrets:
 * `RequestLog.onChange`) and just after every instant at which time alone changes one (a token's
 * expiry: `nextTimedChange`). A failing window begins with one of those, so this interval is only a
 * backstop, in every end-to-end test (proof.test.ts and invariant.test.ts polled every 25 ms,
 * workers.test.ts every 50 ms, from before the watchers followed the changes). Each poll costs an
 * app request and an R2 read: at 250 ms the backstop's polls were three quarters of all checks and
 * a fifth of the Jest workers' CPU.
 */
export const HEALTH_POLL_MS = 1000

/** The name every token of the rotated lineage starts with (sandbox: `avatars-uploader`). */
export const LINEAGE = 'avatars-uploader'

export function secretScope(sb: Sandbox): SecretScope {
  return sb.environment
    ? { kind: 'env', repo: sb.repository, environment: sb.environment }
    : { kind: 'repo', repo: sb.repository }
}

/** The three secrets as they are now (what the deploy workflow and the next run would read). */
export function secretsNow(sb: Sandbox): {
  token: string | undefined
  accessKeyId: string | undefined
  secretAccessKey: string | undefined
} {
  const scope = secretScope(sb)
  return {
    token: sb.github.getSecret(scope, sb.secretNames.token),
    accessKeyId: sb.github.getSecret(scope, sb.secretNames.accessKeyId),
    secretAccessKey: sb.github.getSecret(scope, sb.secretNames.secretAccessKey)
  }
}

/** The inputs of the next scheduled run: `current-*` read from the secrets as they are now. */
export function nextRunInputs(
  sb: Sandbox,
  overrides: Record<string, string> = {}
): Record<string, string> {
  const now = secretsNow(sb)
  return sandboxInputs(sb, {
    'current-token': now.token ?? '',
    'current-access-key-id': now.accessKeyId ?? '',
    'current-secret-access-key': now.secretAccessKey ?? '',
    ...overrides
  })
}

/** Live tokens of the rotated lineage (the management token is not one of them). */
export function lineage(sb: Sandbox): Array<{ id: string; name: string; status: string }> {
  return [...sb.cloudflare.tokens.values()]
    .filter(t => t.name.startsWith(LINEAGE))
    .map(t => ({ id: t.id, name: t.name, status: t.status }))
}

/**
 * Every target secret holds the value, id and SHA-256 of the same active token, that token is the
 * only one of its lineage left, and the app is deployed with it. Returns its id.
 */
export function expectOneLiveToken(sb: Sandbox): string {
  const now = secretsNow(sb)
  const id = now.accessKeyId!
  const token = sb.cloudflare.findById(id)
  expect(token?.status).toBe('active')
  expect(now).toEqual({
    token: token!.value,
    accessKeyId: id,
    secretAccessKey: sha256(token!.value)
  })
  expect(lineage(sb).map(t => t.id)).toEqual([id])
  expect(sb.liveAccessKeyId()).toBe(id)
  return id
}

export function journalText(sb: Sandbox): string {
  return sb.github.getVariable(sb.repository, JOURNAL) ?? ''
}

export function journalOf(sb: Sandbox): Record<string, unknown> {
  return JSON.parse(journalText(sb) || '{}') as Record<string, unknown>
}

/**
 * No token value, SHA-256 secret or ciphertext in any run's stdout, stderr, outputs or summary,
 * nor in the journal. The scan must cover what it is meant to: the first token's value and hash.
 */
export function expectNoLeaks(sb: Sandbox, results: ActionResult[]): void {
  const values = sb.secretValues()
  expect(values).toEqual(expect.arrayContaining([sb.current.value, sb.current.secretAccessKey]))
  const journal = journalText(sb)
  for (const result of results) expect(findLeaks(result, values, [journal])).toEqual([])
}

/** Waits until every run the simulator knows has completed (a killed action leaves its run going). */
export async function waitForRuns(sb: Sandbox, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ([...sb.github.runs.values()].some(run => run.status !== 'completed')) {
    if (Date.now() > deadline) throw new Error('a deploy run did not complete in the simulator')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** `METHOD /path` with ids replaced, so that requests of different sandboxes compare equal. */
export function requestKey(entry: Pick<RequestEntry, 'method' | 'path'>): string {
  const path = entry.path
    .split('?')[0]!
    .replace(/\b[0-9a-f]{32}\b/g, '{id}')
    .replace(/\/runs\/\d+/g, '/runs/{run_id}')
    .replace(/\/workflows\/\d+/g, '/workflows/{workflow_id}')
  return `${entry.method} ${path}`
}

/**
 * Kills the action (SIGKILL) once a Cloudflare or GitHub request `matches` has taken effect, and
 * before its answer is sent: the process dies with that request done and no later one sent,
 * however fast it is (killing it after the answer races its next request). `child` is read when
 * the request arrives. Returns the function that removes the hook.
 */
export function killWhen(
  sb: Sandbox,
  child: () => ChildProcess | undefined,
  matches: (entry: RequestEntry) => boolean
): () => void {
  const hook = (entry: RequestEntry): Promise<void> | undefined => {
    const process = child()
    if (!process || !matches(entry)) return undefined
    return new Promise<void>(resolve => {
      if (process.exitCode !== null || process.signalCode !== null) return resolve()
      process.once('exit', () => resolve())
      process.kill('SIGKILL')
    })
  }
  sb.cloudflare.service.beforeAnswer = hook
  sb.github.service.beforeAnswer = hook
  return () => {
    sb.cloudflare.service.beforeAnswer = undefined
    sb.github.service.beforeAnswer = undefined
  }
}

/** The mutating Cloudflare and GitHub requests among `entries` (the R2 probe's writes are not). */
export function apiMutations(entries: RequestEntry[]): RequestEntry[] {
  return entries.filter(
    e =>
      (e.service === 'cloudflare' || e.service === 'github') &&
      ['POST', 'PUT', 'PATCH', 'DELETE'].includes(e.method)
  )
}

/** Dispatch requests that were answered (a faulted one started no run). */
export function dispatches(sb: Sandbox): RequestEntry[] {
  return sb.log
    .requests({ service: 'github', method: 'POST' })
    .filter(e => e.path.endsWith('/dispatches'))
}

/**
 * Runs at most `concurrency` tasks at a time. Scenarios spend most of their time waiting for a
 * child process or a simulated run, so a few at once fit two cores.
 */
export function limited(concurrency: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0
  const waiting: Array<() => void> = []
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= concurrency) await new Promise<void>(resolve => waiting.push(resolve))
    running++
    try {
      return await task()
    } finally {
      running--
      waiting.shift()?.()
    }
  }
}

/**
 * Starts every named scenario now (at most `concurrency` at a time); each `describe` awaits its
 * own by name. A failure is reported by the `describe` that awaits it, not as an unhandled
 * rejection.
 */
export function startNamed<T>(
  tasks: Record<string, () => Promise<T>>,
  concurrency: number
): (name: string) => Promise<T> {
  const names = Object.keys(tasks)
  const started = startAll(
    names.map(name => tasks[name]!),
    concurrency
  )
  const byName = new Map(names.map((name, i) => [name, started[i]!]))
  return name => {
    const promise = byName.get(name)
    if (!promise) throw new Error(`no scenario named ${name}`)
    return promise
  }
}

/**
 * Starts every scenario now (at most `concurrency` at a time); each `describe` awaits its own.
 * A failure is reported by the `describe` that awaits it, not as an unhandled rejection.
 */
export function startAll<T>(
  tasks: Array<() => Promise<T>>,
  concurrency: number,
  /** Indexes of the slow tasks, started first so that the others overlap them. */
  slow: number[] = []
): Promise<T>[] {
  const schedule = limited(concurrency)
  const order = [...slow, ...tasks.keys()].filter((i, at, all) => all.indexOf(i) === at)
  const started: Promise<T>[] = []
  for (const i of order) started[i] = schedule(tasks[i]!)
  for (const promise of started) promise.catch(() => undefined)
  return started
}

/**
 * The ordered mutating requests to Cloudflare and GitHub as a reader checks them, one line each:
 * token ids replaced by their role (`{previous}`, `{new}`, `{new#2}`…), a token update with its
 * status, a secret write with the token its value belongs to (decrypted by the simulator), a
 * journal write with its phase, and any answer that was not a success. The R2 probe's object
 * writes are not API mutations and are left out.
 *
 *   POST variable R2_ROTATION_STATE_LOCK
 *   POST /user/tokens → {new}
 *   PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {new}
 *   PATCH worker avatars-worker secrets R2_ACCESS_KEY_ID ← {new}, R2_SECRET_ACCESS_KEY ← {new}
 *   PUT /user/tokens/{previous} status=disabled
 *   DELETE /user/tokens/{previous}
 */
export function mutationList(
  sb: Sandbox,
  extraRoles: Record<string, string> = {},
  /** Only the requests after this log position (a later run's). */
  afterSeq = 0
): string[] {
  const roles = tokenRoles(sb, extraRoles)
  const role = (id: string): string => `{${roles.get(id) ?? 'other'}}`
  const ofValue = (plaintext: string): string => {
    for (const token of [...sb.cloudflare.tokens.values(), ...sb.cloudflare.deletedTokens]) {
      if ([token.value, token.id, sha256(token.value)].includes(plaintext)) return role(token.id)
    }
    return '{unknown value}'
  }
  const created = new Map(sb.log.events('token.created').map(e => [e.seq, e.detail.id as string]))
  return apiMutations(sb.log.requests().filter(e => e.seq > afterSeq)).map(entry => {
    const path = entry.path.split('?')[0]!
    // A request the client got no answer to: dropped (status 0), or handled and then dropped.
    const lost = entry.faulted === true && (entry.status ?? 0) < 300
    const failed = lost
      ? entry.status === 0
        ? ' → no answer'
        : ''
      : entry.status === undefined || entry.status >= 300
        ? ` → ${entry.status ?? 'no answer'}`
        : ''
    const lostNote = lost && entry.status !== 0 ? ', answer lost' : ''
    const body = (entry.body ?? {}) as Record<string, unknown>
    if (entry.service === 'cloudflare') {
      const cf = path
        .replace(/^\/client\/v4/, '')
        .replace(`/accounts/${sb.accountId}/`, '/accounts/{account}/')
        .replace(/\b[0-9a-f]{32}\b/g, id => role(id))
      const worker = /^\/accounts\/\{account\}\/workers\/scripts\/([^/]+)\/secrets-bulk$/.exec(cf)
      if (worker && entry.method === 'PATCH') {
        const secrets = (body.secrets ?? {}) as Record<string, { text?: string } | null>
        const writes = Object.entries(secrets).map(([name, secret]) =>
          secret === null ? `${name} ← (deleted)` : `${name} ← ${ofValue(secret.text ?? '')}`
        )
        return `PATCH worker ${worker[1]} secrets ${writes.join(', ')}${failed}${lostNote}`
      }
      if (entry.method === 'PUT' && typeof body.status === 'string')
        return `PUT ${cf} status=${body.status}${failed}${lostNote}`
      // An update that only gives the token an expiry (the management token's grace).
      if (entry.method === 'PUT' && /\/tokens\/\{[^}]+\}$/.test(cf) && body.expires_on)
        return `PUT ${cf} expires_on${failed}${lostNote}`
      if (entry.method === 'POST' && /\/tokens$/.test(cf)) {
        const next = [...created].find(([seq]) => seq > entry.seq)
        return `POST ${cf}${failed || (next ? ` → ${role(next[1])}` : '')}${lostNote}`
      }
      return `${entry.method} ${cf}${failed}${lostNote}`
    }
    const variable = /\/actions\/variables(?:\/([^/]+))?$/.exec(path)
    if (variable) {
      const name = variable[1] ?? String(body.name)
      const phase = name.endsWith('_LOCK')
        ? undefined
        : (JSON.parse(String(body.value ?? '{}')) as { phase?: string }).phase
      return `${entry.method} variable ${name}${phase ? ` phase=${phase}` : ''}${failed}`
    }
    const secret = secretPlace(path)
    if (secret) {
      const write = sb.github.secretWrites.find(w => w.ciphertext === body.encrypted_value)
      return `PUT secret ${secret}${write ? ` ← ${ofValue(write.plaintext)}` : ''}${failed}`
    }
    if (path.endsWith('/dispatches')) return `POST dispatch${failed}`
    return `${entry.method} ${path}${failed}`
  })
}

/** Token ids by role: the one in use at start is `previous`, the minted ones `new`, `new#2`… */
function tokenRoles(sb: Sandbox, extra: Record<string, string>): Map<string, string> {
  const roles = new Map<string, string>([[sb.current.id, 'previous']])
  sb.log.events('token.created').forEach((e, i) => {
    roles.set(e.detail.id as string, i === 0 ? 'new' : `new#${i + 1}`)
  })
  for (const [id, name] of Object.entries(extra)) roles.set(id, name)
  return roles
}

/** `repo:acme/site R2_TOKEN`, `env:acme/site:production R2_TOKEN`, … for a secret write's path. */
function secretPlace(path: string): string | undefined {
  let m = /^\/repos\/([^/]+\/[^/]+)\/actions\/secrets\/([^/]+)$/.exec(path)
  if (m) return `repo:${m[1]} ${m[2]}`
  m = /^\/repos\/([^/]+\/[^/]+)\/environments\/([^/]+)\/secrets\/([^/]+)$/.exec(path)
  if (m) return `env:${m[1]}:${decodeURIComponent(m[2]!)} ${m[3]}`
  m = /^\/orgs\/([^/]+)\/actions\/secrets\/([^/]+)$/.exec(path)
  if (m) return `org:${m[1]} ${m[2]}`
  m = /^\/repos\/([^/]+\/[^/]+)\/dependabot\/secrets\/([^/]+)$/.exec(path)
  if (m) return `dependabot:${m[1]} ${m[2]}`
  return undefined
}

/** One run of the action in a sandbox of its own, and the app's health failures meanwhile. */
export interface CheckedRun {
  sb: Sandbox
  result: ActionResult
  healthFailures: Array<{ at: number; status: number }>
}

/**
 * Starts a sandbox (added to `started`, for the file's afterAll to stop), lets `prepare` change
 * it, and runs the action with `overrides` while the app's health is watched; then checks what
 * every run must hold: no value leaked, no OpenAPI violation, nothing on stderr.
 */
export async function runChecked(
  started: Sandbox[],
  options: SandboxOptions,
  overrides: Record<string, string> = {},
  prepare?: (sb: Sandbox) => void
): Promise<CheckedRun> {
  const sb = await startSandbox(options)
  started.push(sb)
  prepare?.(sb)
  const watch = sb.watchHealth(HEALTH_POLL_MS)
  const result = await runAction(sb, sandboxInputs(sb, overrides))
  const healthFailures = await watch.stop()
  expectNoLeaks(sb, [result])
  expect(sb.log.violations).toEqual([])
  expect(result.stderr).toBe('')
  return { sb, result, healthFailures }
}
