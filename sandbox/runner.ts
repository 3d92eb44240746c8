/**
 * Runs the bundled action (dist/index.js) as the runner does: inputs as INPUT_<NAME> environment
 * variables, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files, GITHUB_API_URL pointing at the sandbox.
 * Used by the end-to-end tests and by `npm run demo`. Node gets V8 flags and allocator settings the
 * runner does not pass (`SANDBOX_NODE_FLAGS`, `SANDBOX_MALLOC_TUNABLES`), and the bundle a code
 * cache kept between runs (sandbox/code-cache.mjs); `nodeFlags: []` runs exactly
 * `node dist/index.js`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { ROTATE_WORKFLOW_PATH, type Sandbox } from './index.js'
import { sharedCache } from './shared-cache.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const ACTION_ENTRY = path.join(root, 'dist', 'index.js')
/** Runs a bundle with a V8 code cache (see the file); the cache lives in CODE_CACHE_DIR. */
const CODE_CACHE_ENTRY = path.join(root, 'sandbox', 'code-cache.mjs')
export const CODE_CACHE_DIR = path.join(root, 'node_modules', '.cache', 'r2-token-rotation', 'v8')

export interface ActionResult {
  exitCode: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Parsed from the GITHUB_OUTPUT file. */
  outputs: Record<string, string>
  /** Raw GITHUB_OUTPUT file content (scanned for leaks as written). */
  outputsFile: string
  /** The job summary (GITHUB_STEP_SUMMARY) as written. */
  summary: string
  durationMs: number
}

export { SANDBOX_TIME_SCALE } from './index.js'

/**
 * The V8 flags the action's process starts with: tiers of V8 that a process living about a second
 * pays for and never gets back. None changes what the code does, only how V8 compiles it and when
 * it collects garbage; the standard rotations of `__tests__/e2e/rotation.test.ts` run without
 * them, exactly as the runner does (`nodeFlags: []`).
 * - `--liftoff-only`: WebAssembly on the baseline compiler only. The fetch built into Node parses
 *   HTTP with llhttp, compiled to WebAssembly, and V8's optimizing compiler spent about 120 ms of
 *   CPU on it in every process that made a request: about 0.8 s → 0.65 s per rotation.
 * - `--no-opt`, `--no-maglev`, `--no-sparkplug`: JavaScript stays in the interpreter, with no
 *   optimizing or baseline JIT compiling the functions that turn warm.
 * - `--single-threaded-gc`: the collector works on the main thread, without helper threads.
 * - `--max-semi-space-size=1`: a young generation of 1 MB (V8 grows it to 16 MB). Scavenges come
 *   more often but reuse memory already touched; growing it costs page faults, which are dear on
 *   a virtual machine.
 * - `--no-incremental-marking`: the one full collection of a rotation (at about 13 MB) marks in
 *   one pause of a few milliseconds instead of some 130 steps interleaved with the code, each
 *   with the write barriers that incremental marking turns on.
 * Together, the JIT and GC flags took about another 0.06 s of a rotation's 0.62 s (24 runs of
 * each, paired, 23 of them cheaper); the small young generation 0.025 s of the 0.51 s left (12
 * pairs, 11 cheaper); marking in one pause 0.02 to 0.03 s of 0.55 s (24 pairs, 18 cheaper).
 * The last two measured together against the flags without them: 0.023 and 0.042 s in two
 * series (11 and 9 of 12 pairs cheaper), less than the sum of the separate figures. Measured on
 * this project's 2-core machine, where `npm test` starts the action about 370 times.
 */
export const SANDBOX_NODE_FLAGS: readonly string[] = [
  '--liftoff-only',
  '--no-opt',
  '--no-maglev',
  '--no-sparkplug',
  '--single-threaded-gc',
  '--max-semi-space-size=1',
  '--no-incremental-marking'
]

/**
 * The C library's allocator settings for the action's process, as `GLIBC_TUNABLES` (glibc 2.35 or
 * later reads them at start; other C libraries ignore the variable), with `SANDBOX_NODE_FLAGS`:
 * - `hugetlb=1`: the allocator asks the kernel for transparent huge pages (`MADV_HUGEPAGE`), so
 *   its memory faults in 2 MB at a time instead of 4 KB;
 * - `arena_max=1`: one arena, the main one, rather than one per thread that allocates;
 * - `top_pad=16777216`: the heap grows 16 MB at a time, not 128 KB.
 * A page fault is the dearest thing a short process does on a virtual machine: a rotation took
 * about 7,500 of them, 12% of its CPU, and takes about 5,200 with these (paired rotations: 0.048
 * and 0.034 s less of 0.55 s, 14 and 12 of 16 pairs cheaper). jest.config.js gives the Jest
 * workers the same settings. None changes what the code does.
 */
export const SANDBOX_MALLOC_TUNABLES =
  'glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.top_pad=16777216'

export interface RunOptions {
  /** Extra environment (e.g. GITHUB_RUN_ID). */
  env?: Record<string, string>
  /** Live copy of stdout (the demo prints it). */
  onStdout?: (chunk: string) => void
  onStderr?: (chunk: string) => void
  /** Called once the process is spawned (crash tests kill it). */
  onSpawn?: (child: ChildProcess) => void
  timeoutMs?: number
  /** The bundle to run (default dist/index.js; R2_ROTATION_ENTRY overrides it for private builds). */
  entry?: string
  /**
   * Node's own flags before the bundle (default `SANDBOX_NODE_FLAGS`). `[]` runs the process as the
   * runner does: no flags, and no `SANDBOX_MALLOC_TUNABLES` either.
   */
  nodeFlags?: readonly string[]
  /**
   * Compile the bundle with the code cache of earlier runs (sandbox/code-cache.mjs): default with
   * the sandbox's flags, never with `nodeFlags: []`. The benchmark turns it off, to measure what a
   * runner's first and only start of the action costs.
   */
  codeCache?: boolean
  /**
   * Run as a run of the repository's rotation workflow (`ROTATE_WORKFLOW_PATH`), in progress
   * until the action exits, so that another run sees it going (the race tests).
   */
  asWorkflowRun?: boolean
}

/** The inputs a caller workflow would pass for the sandbox's world; `overrides` wins ('' removes). */
export function sandboxInputs(
  sb: Sandbox,
  overrides: Record<string, string> = {}
): Record<string, string> {
  const names = sb.secretNames
  const inputs: Record<string, string> = {
    'cloudflare-api-token': sb.managementToken,
    'cloudflare-api-url': sb.cloudflareApiUrl,
    'account-id': sb.accountId,
    'current-token': sb.current.value,
    'current-access-key-id': sb.current.id,
    'current-secret-access-key': sb.current.secretAccessKey,
    secrets: [
      `${names.token}=token`,
      `${names.accessKeyId}=access-key-id`,
      `${names.secretAccessKey}=secret-access-key`
    ].join('\n'),
    'secret-targets': sb.environment ? `env:${sb.environment}` : 'repo',
    'github-token': sb.githubToken,
    'deploy-workflow': 'deploy.yml',
    'deploy-inputs': '{"reason":"scheduled token rotation"}',
    'deploy-timeout': '10m',
    'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=ok`,
    'smoke-headers': 'X-Smoke-Check: r2-token-rotation',
    'smoke-timeout': '1m',
    // Simulated seconds (see SANDBOX_TIME_SCALE): five rounds of checks, one a second, 0.1 s of
    // real time. A stale deploy fails the first round; the tests that measure the watch itself
    // set their own (proof.test.ts).
    'revoke-watch': '5s',
    'r2-endpoint': sb.r2Endpoint
  }
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) delete inputs[name]
    else inputs[name] = value
  }
  return inputs
}

/**
 * The inputs a caller workflow would pass to rotate the sandbox's Access service token
 * (`startSandbox({ credential: 'access-service-token' })`): the two secrets, smoke checks that go
 * through Access with the credentials being rotated (the protected app itself, with the
 * `{client-id}`/`{client-secret}` headers, and the deployed client), and `current-client-secret`
 * read from the secret as it is now. `overrides` wins ('' removes).
 */
export function serviceTokenInputs(
  sb: Sandbox,
  overrides: Record<string, string> = {}
): Record<string, string> {
  if (!sb.serviceToken || !sb.accessApp || !sb.accessClient || !sb.accessSecretNames) {
    throw new Error("serviceTokenInputs: start the sandbox with credential: 'access-service-token'")
  }
  const names = sb.accessSecretNames
  const scope = sb.environment
    ? { kind: 'env' as const, repo: sb.repository, environment: sb.environment }
    : { kind: 'repo' as const, repo: sb.repository }
  const inputs: Record<string, string> = {
    credential: 'access-service-token',
    'service-token-id': sb.serviceToken.id,
    'cloudflare-api-token': sb.managementToken,
    'cloudflare-api-url': sb.cloudflareApiUrl,
    'account-id': sb.accountId,
    'current-client-secret': sb.github.getSecret(scope, names.clientSecret) ?? '',
    secrets: [`${names.clientId}=client-id`, `${names.clientSecret}=client-secret`].join('\n'),
    'secret-targets': sb.environment ? `env:${sb.environment}` : 'repo',
    'github-token': sb.githubToken,
    'deploy-workflow': 'deploy.yml',
    'deploy-inputs': '{"reason":"scheduled service token rotation"}',
    'deploy-timeout': '10m',
    'smoke-urls': [
      `${sb.accessApp.url}/healthz expect=200 contains=client-id={client-id}`,
      `${sb.accessClient.url}/healthz expect=200 contains=client-id={client-id}`
    ].join('\n'),
    'smoke-headers': 'CF-Access-Client-Id: {client-id}\nCF-Access-Client-Secret: {client-secret}',
    'smoke-timeout': '1m',
    'revoke-watch': '5s'
  }
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) delete inputs[name]
    else inputs[name] = value
  }
  return inputs
}

/**
 * action.yml's defaults, read once per process or Jest worker (every run of the action asks for
 * them, and parsing action.yml took a few hundredths of a second each time).
 */
const defaultInputs = sharedCache('action-defaults', () => {
  const action = parseYaml(readFileSync(path.join(root, 'action.yml'), 'utf8')) as {
    inputs: Record<string, { default?: string }>
  }
  const defaults: Record<string, string> = {}
  for (const [name, input] of Object.entries(action.inputs)) {
    if (input.default !== undefined) defaults[name] = String(input.default)
  }
  return Object.freeze(defaults)
})

/** The action.yml defaults: the runner passes them for every input the workflow leaves out. */
export function actionDefaults(): Record<string, string> {
  return { ...defaultInputs }
}

/** INPUT_<NAME>: upper-cased, spaces to `_`, hyphens kept (as the runner and @actions/core do). */
export function inputEnvName(name: string): string {
  return `INPUT_${name.replace(/ /g, '_').toUpperCase()}`
}

/** Parses the GITHUB_OUTPUT file format (`name<<DELIM\nvalue\nDELIM`). */
export function parseOutputs(text: string): Record<string, string> {
  const outputs: Record<string, string> = {}
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    const heredoc = /^([^<=]+)<<(.+)$/.exec(line)
    if (heredoc) {
      const [, name, delimiter] = heredoc
      const value: string[] = []
      for (i++; i < lines.length && lines[i] !== delimiter; i++) value.push(lines[i]!)
      outputs[name!] = value.join('\n')
    } else if (line.includes('=')) {
      const at = line.indexOf('=')
      outputs[line.slice(0, at)] = line.slice(at + 1)
    }
  }
  return outputs
}

export async function runAction(
  sb: Sandbox,
  inputs: Record<string, string>,
  options: RunOptions = {}
): Promise<ActionResult> {
  const dir = mkdtempSync(path.join(tmpdir(), 'r2-rotation-run-'))
  const outputFile = path.join(dir, 'output')
  const summaryFile = path.join(dir, 'summary')
  writeFileSync(outputFile, '')
  writeFileSync(summaryFile, '')
  const nodeFlags = options.nodeFlags ?? SANDBOX_NODE_FLAGS
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? dir,
    GITHUB_ACTIONS: 'true',
    CI: 'true',
    GITHUB_API_URL: sb.githubApiUrl,
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_REPOSITORY: sb.repository,
    GITHUB_OUTPUT: outputFile,
    GITHUB_STEP_SUMMARY: summaryFile,
    RUNNER_TEMP: dir,
    // The action's clock runs on the sandbox's scale (honoured on loopback only).
    R2_ROTATION_TIME_SCALE: String(sb.timeScale),
    ...(nodeFlags.length > 0 ? { GLIBC_TUNABLES: SANDBOX_MALLOC_TUNABLES } : {}),
    ...options.env
  }
  for (const [name, value] of Object.entries({ ...actionDefaults(), ...inputs })) {
    env[inputEnvName(name)] = value
  }

  // With `asWorkflowRun`, the action runs as a run of the caller's rotation workflow, in progress
  // until it exits; otherwise its run id names no run the simulator knows (a lock it leaves counts
  // as ended).
  const ownRun = options.asWorkflowRun
    ? sb.github.startManualRun(sb.repository, ROTATE_WORKFLOW_PATH.split('/').pop()!)
    : undefined
  env.GITHUB_RUN_ID =
    options.env?.GITHUB_RUN_ID ??
    String(ownRun?.id ?? 1_000_000 + Math.floor(Math.random() * 1_000_000))
  const started = Date.now()
  const entry = options.entry ?? process.env.R2_ROTATION_ENTRY ?? ACTION_ENTRY
  const codeCache = nodeFlags.length > 0 && options.codeCache !== false
  const args = codeCache ? [CODE_CACHE_ENTRY, CODE_CACHE_DIR, entry] : [entry]
  const child = spawn(process.execPath, [...nodeFlags, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  options.onSpawn?.(child)
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
    options.onStdout?.(chunk)
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
    options.onStderr?.(chunk)
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
  const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(resolve =>
    child.on('close', (code, sig) => resolve([code, sig]))
  )
  clearTimeout(timer)
  if (ownRun) sb.github.finishRun(ownRun.id, exitCode === 0 ? 'success' : 'failure')
  const outputsFile = readFileSync(outputFile, 'utf8')
  const summary = readFileSync(summaryFile, 'utf8')
  rmSync(dir, { recursive: true, force: true })
  return {
    exitCode,
    signal,
    stdout,
    stderr,
    outputs: parseOutputs(outputsFile),
    outputsFile,
    summary,
    durationMs: Date.now() - started
  }
}

/**
 * Every place a value could leak: stdout and stderr (less the `::add-mask::` registrations, the
 * one sanctioned exception), the outputs file, the summary, and any extra text (the journal).
 * Returns the leaked values' descriptions (never the values themselves).
 */
export function findLeaks(result: ActionResult, values: string[], extra: string[] = []): string[] {
  const scrub = (text: string): string =>
    text
      .split('\n')
      .filter(line => !line.startsWith('::add-mask::'))
      .join('\n')
  const places: Array<[string, string]> = [
    ['stdout', scrub(result.stdout)],
    ['stderr', result.stderr],
    ['outputs', result.outputsFile],
    ['summary', result.summary],
    ...extra.map((text, i): [string, string] => [`extra#${i}`, text])
  ]
  const leaks: string[] = []
  values.forEach((value, i) => {
    if (!value) return
    for (const [place, text] of places) {
      if (text.includes(value)) leaks.push(`secret value #${i} (${value.length} chars) in ${place}`)
    }
  })
  return leaks
}
