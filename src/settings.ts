/**
 * The action's inputs, parsed and validated into one typed object before any side effect.
 * Every field below maps to one input of action.yml (see ../action.yml for the user-facing text).
 */

import type {
  DeploySettings,
  RepoRef,
  SecretField,
  SecretMapping,
  SecretTarget,
  Settings,
  SmokeCheck
} from './model.js'
import { InputError } from './errors.js'
import { isLoopbackHost } from './net.js'
import { TOKEN_NAME_MAX_LENGTH, TOKEN_NAME_PLACEHOLDERS } from './token-name.js'

export { InputError }

/** Reads an input by its action.yml name ('' when absent), e.g. core.getInput. */
export type InputReader = (name: string) => string

/**
 * The defaults of action.yml. The runner applies them itself, but the reader returns '' for an
 * absent input when the action runs anywhere else (tests, the demo), so getSettings applies them
 * to an empty value too. `state-variable` is missing on purpose: empty disables the journal.
 */
export const INPUT_DEFAULTS: Readonly<Record<string, string>> = {
  'cloudflare-api-url': 'https://api.cloudflare.com/client/v4',
  'token-owner': 'auto',
  'secret-targets': 'repo',
  'deploy-inputs': '{}',
  'deploy-timeout': '30m',
  'smoke-timeout': '5m',
  'r2-probe': 'auto',
  'token-name': '{name} (rotated {date})',
  'rotate-after': '0',
  force: 'false',
  'least-privilege': 'warn',
  revoke: 'delete',
  'revoke-watch': '2m',
  'revoke-grace': '0s',
  'on-failure': 'rollback',
  'dry-run': 'false',
  credential: 'api-token'
}

const MS_PER_UNIT = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
const DURATION = /^(?:\d+(?:\.\d+)?[smhd])+$/
const DURATION_PART = /(\d+(?:\.\d+)?)([smhd])/g

/**
 * Node.js runs a timer longer than 2^31-1 ms after 1 ms instead ("When delay is larger than
 * 2147483647 … the delay will be set to 1", Node.js timers docs), so every wait is capped below it.
 */
const LONGEST_TIMER_MS = 24 * MS_PER_UNIT.d

/**
 * A token lives at least this long: a shorter one could expire between minting and revoking the
 * old one (deploy, smoke checks, grace), which would break the invariant from the other side.
 */
const SHORTEST_TOKEN_TTL_MS = MS_PER_UNIT.h

/**
 * Parses a duration: a number with a unit s, m, h or d (`90s`, `30m`, `1.5h`, `7d`), or several
 * such parts (`1h30m`), or a bare `0`. A plain number is rejected because its unit would be a guess.
 * Returns whole milliseconds; throws InputError naming `input`.
 */
export function parseDuration(text: string, input: string): number {
  const value = text.trim()
  if (value === '0') return 0
  if (!DURATION.test(value)) {
    throw new InputError(input, `expected a duration such as 90s, 30m, 12h or 7d, got '${text}'.`)
  }
  let ms = 0
  for (const [, amount, unit] of value.matchAll(DURATION_PART)) {
    ms += Number(amount) * MS_PER_UNIT[unit as keyof typeof MS_PER_UNIT]
  }
  ms = Math.round(ms)
  if (!Number.isSafeInteger(ms)) {
    throw new InputError(input, `the duration '${text}' is too long.`)
  }
  return ms
}

/**
 * Builds the Settings from the inputs and the runner's environment, validating every value before
 * the action does anything. Pure: no network, no logging, no core.* calls.
 */
export function getSettings(input: InputReader, env: NodeJS.ProcessEnv): Settings {
  const read = (name: string): string => (input(name) ?? '').trim() || (INPUT_DEFAULTS[name] ?? '')

  const cloudflareApiToken = credential(
    read,
    'cloudflare-api-token',
    'the Cloudflare management token'
  )
  const cloudflareApiUrl = serviceUrl(
    'cloudflare-api-url',
    read('cloudflare-api-url'),
    'https://api.cloudflare.com/client/v4'
  )
  const accountId = optionalHex(read, 'account-id', 32, 'a Cloudflare account id')
  const tokenOwner = oneOf(read, 'token-owner', ['user', 'account', 'auto'] as const)
  if (tokenOwner === 'account' && !accountId) {
    throw new InputError(
      'account-id',
      "required when token-owner is 'account' (account-owned tokens live under /accounts/{account_id}/tokens); give the 32-character account id."
    )
  }

  const kind = oneOf(read, 'credential', CREDENTIAL_KINDS)
  const serviceToken = kind === 'access-service-token'
  if (serviceToken) rejectServiceTokenMisfits(read, accountId)
  else rejectServiceTokenInputs(read)
  const serviceTokenId = serviceToken ? uuid(read, 'service-token-id') : undefined
  const currentClientSecret = optionalCredential(read, 'current-client-secret')

  // The management token rotating itself: a mode of its own, without the rotated token's inputs.
  const rotateManagementToken = optionalSecretName(read, 'rotate-management-token')
  if (rotateManagementToken) rejectTokenRotationInputs(read)

  const currentToken = optionalCredential(read, 'current-token')
  const currentAccessKeyId = optionalHex(read, 'current-access-key-id', 32, 'a token id')
  const currentSecretAccessKey = optionalSecretHex(read, 'current-secret-access-key')
  if (!serviceToken && !rotateManagementToken && !currentToken && !currentAccessKeyId) {
    throw new InputError(
      'current-token',
      'give current-token (the value of the token in use now) or current-access-key-id (its id), so that the action knows which token to rotate.'
    )
  }
  if (currentToken && currentToken === cloudflareApiToken) {
    throw new InputError(
      'cloudflare-api-token',
      'must not be the token being rotated (current-token): revoking the old token would revoke the management token too. Use a separate token with API Tokens Write.'
    )
  }
  // current-token and current-secret-access-key may name different tokens: after a run was killed
  // midway through publishing, the secrets hold a mix, and the rotation's recovery sorts it out.

  const secrets = rotateManagementToken ? [] : parseSecrets(read('secrets'), kind)
  const repository = repositoryFromEnv(env)
  const secretTargets = parseSecretTargets(read('secret-targets'), repository, accountId)
  const worker = secretTargets.find(t => t.kind === 'worker')
  if (serviceToken && worker) {
    // A crash between the rotate and the writes is recovered by reading each secret's write
    // back; a Worker's secrets cannot be read back (the API lists names only).
    throw new InputError(
      'secret-targets',
      `line '${worker.line}': a Worker cannot hold a service token's secret with credential: access-service-token, whose crash recovery reads every secret's write back (Workers list secret names only). Use repo, env:, org: or dependabot: targets.`
    )
  }
  if (rotateManagementToken && worker) {
    // A Worker's secrets cannot be read back (the API lists names only), and the management
    // token's self-rotation confirms every write before it ends the old token.
    throw new InputError(
      'secret-targets',
      `line '${worker.line}': a Worker cannot hold the management token with rotate-management-token, which reads every write back (Workers list secret names only). Use repo, env:, org: or dependabot: targets.`
    )
  }
  const githubToken = credential(read, 'github-token', 'a GitHub token')
  const githubApiUrl = serviceUrl(
    'GITHUB_API_URL',
    env.GITHUB_API_URL?.trim() || 'https://api.github.com',
    'https://api.github.com'
  )
  const githubServerUrl = linkUrl(
    'GITHUB_SERVER_URL',
    env.GITHUB_SERVER_URL?.trim() || 'https://github.com'
  )
  const runId = env.GITHUB_RUN_ID?.trim() ?? ''
  const attemptText = env.GITHUB_RUN_ATTEMPT?.trim() ?? ''
  const runAttempt = /^[1-9]\d{0,5}$/.test(attemptText) ? Number(attemptText) : 1

  const deploy = rotateManagementToken ? undefined : parseDeploy(read, repository)
  const smoke = parseSmoke(read)
  checkPlaceholders(smoke, kind, currentClientSecret !== undefined)
  const r2 = {
    bucket: optionalBucket(read('r2-bucket')),
    probe: oneOf(read, 'r2-probe', ['auto', 'write', 'read', 'off'] as const),
    endpoint: optionalEndpoint(read('r2-endpoint'))
  }

  const tokenName = tokenNameTemplate(read('token-name'))
  const ttl = read('token-ttl')
  const tokenTtlMs = ttl ? duration('token-ttl', ttl, { min: SHORTEST_TOKEN_TTL_MS }) : undefined
  const rotateAfterMs = duration('rotate-after', read('rotate-after'), { min: 0 })
  const force = boolean(read, 'force')
  const leastPrivilege = oneOf(read, 'least-privilege', ['warn', 'enforce', 'off'] as const)
  const revoke = oneOf(read, 'revoke', ['delete', 'disable', 'keep'] as const)
  const revokeWatchMs = duration('revoke-watch', read('revoke-watch'), {
    min: 0,
    max: LONGEST_TIMER_MS
  })
  const revokeGraceMs = duration('revoke-grace', read('revoke-grace'), {
    min: 0,
    max: LONGEST_TIMER_MS
  })
  const onFailure = oneOf(read, 'on-failure', ['rollback', 'keep-both'] as const)
  const stateVariable = optionalVariableName(read('state-variable'))
  const dryRun = boolean(read, 'dry-run')

  return {
    credential: kind,
    ...(serviceTokenId && { serviceTokenId }),
    ...(currentClientSecret && { currentClientSecret }),
    cloudflareApiToken,
    cloudflareApiUrl,
    ...(accountId && { accountId }),
    tokenOwner,
    ...(currentToken && { currentToken }),
    ...(currentAccessKeyId && { currentAccessKeyId }),
    ...(currentSecretAccessKey && { currentSecretAccessKey }),
    secrets,
    secretTargets,
    githubToken,
    githubApiUrl,
    githubServerUrl,
    repository,
    runId,
    runAttempt,
    ...(deploy && { deploy }),
    smoke,
    r2: {
      ...(r2.bucket && { bucket: r2.bucket }),
      probe: r2.probe,
      ...(r2.endpoint && { endpoint: r2.endpoint })
    },
    tokenName,
    ...(tokenTtlMs !== undefined && { tokenTtlMs }),
    rotateAfterMs,
    force,
    leastPrivilege,
    revoke,
    revokeWatchMs,
    revokeGraceMs,
    onFailure,
    ...(stateVariable && { stateVariable }),
    dryRun,
    ...(rotateManagementToken && { rotateManagementToken })
  }
}

/** Inputs of a token rotation, which `rotate-management-token` does not take. */
export const TOKEN_ROTATION_INPUTS = [
  'current-token',
  'current-access-key-id',
  'current-secret-access-key',
  'secrets',
  'deploy-workflow',
  'deploy-repository',
  'deploy-ref',
  'smoke-urls',
  'smoke-headers',
  'r2-bucket',
  'r2-endpoint'
] as const

function rejectTokenRotationInputs(read: Read): void {
  for (const name of TOKEN_ROTATION_INPUTS) {
    if (read(name)) {
      throw new InputError(
        name,
        'is set, but rotate-management-token rotates the management token (cloudflare-api-token) itself, which takes no input of a token rotation. Rotate the token your app uses in a separate step, without rotate-management-token.'
      )
    }
  }
}

type Read = (name: string) => string

export const CREDENTIAL_KINDS = ['api-token', 'access-service-token'] as const

/** Inputs of an Access service token rotation only. */
export const SERVICE_TOKEN_INPUTS = ['service-token-id', 'current-client-secret'] as const

/**
 * Inputs that make no sense for an Access service token, refused with credential:
 * access-service-token when set (to anything but their default). `revoke: disable` is refused on
 * its own: disabling a service token stops both of its secrets.
 */
export const SERVICE_TOKEN_MISFITS: ReadonlyArray<{ input: string; why: string }> = [
  { input: 'current-token', why: 'an API token value; give current-client-secret instead' },
  { input: 'current-access-key-id', why: 'an R2 credential; a service token has none' },
  { input: 'current-secret-access-key', why: 'an R2 credential; a service token has none' },
  { input: 'token-owner', why: 'service tokens belong to the account of account-id' },
  {
    input: 'token-name',
    why: 'a service token keeps its name: a rotation replaces its secret only'
  },
  {
    input: 'token-ttl',
    why: 'a service token keeps its duration and expires_at (refresh it, or change its duration, in Zero Trust)'
  },
  {
    input: 'least-privilege',
    why: "a service token has no policies to check ('warn', the default, reports its expiry and duration; 'off' silences that)"
  },
  {
    input: 'rotate-management-token',
    why: 'the management token rotates itself in a run of its own, without credential: access-service-token'
  },
  { input: 'r2-bucket', why: 'a service token has no R2 credentials to probe' },
  { input: 'r2-endpoint', why: 'a service token has no R2 credentials to probe' },
  { input: 'r2-probe', why: 'a service token has no R2 credentials to probe' }
]

/** With credential: access-service-token, refuse what does not apply (a default is fine). */
function rejectServiceTokenMisfits(read: Read, accountId: string | undefined): void {
  for (const { input, why } of SERVICE_TOKEN_MISFITS) {
    const value = read(input)
    const allowed = input === 'least-privilege' ? ['warn', 'off'] : [INPUT_DEFAULTS[input] ?? '']
    if (value && !allowed.includes(value)) {
      throw new InputError(
        input,
        `is set, but does not apply with credential: access-service-token: ${why}. Remove it.`
      )
    }
  }
  if (read('revoke') === 'disable') {
    throw new InputError(
      'revoke',
      "'disable' does not apply with credential: access-service-token: disabling a service token stops BOTH its secrets, the new one too. Use 'delete' (the default: close the previous secret's grace once the checks pass) or 'keep' (let the grace run out at its planned end)."
    )
  }
  if (!accountId) {
    throw new InputError(
      'account-id',
      'required with credential: access-service-token: service tokens live under /accounts/{account_id}/access/service_tokens; give the 32-character account id.'
    )
  }
}

/** Without credential: access-service-token, its inputs are a mistake. */
function rejectServiceTokenInputs(read: Read): void {
  for (const name of SERVICE_TOKEN_INPUTS) {
    if (read(name)) {
      throw new InputError(
        name,
        "is set, but credential is 'api-token' (the default); set credential: access-service-token to rotate an Access service token, or remove this input."
      )
    }
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function uuid(read: Read, name: string): string {
  const value = read(name)
  if (!value) {
    throw new InputError(
      name,
      'required with credential: access-service-token: the id (a UUID) of the service token to rotate, as Zero Trust → Access → Service Auth shows it.'
    )
  }
  if (!UUID.test(value)) {
    // Not quoted: a secret pasted here by mistake must not reach the log.
    throw new InputError(
      name,
      `expected a UUID such as f174e90a-fafe-4643-bbbc-4a0ed4fc8415, got something else (${value.length} characters).`
    )
  }
  return value.toLowerCase()
}

/** Placeholders a smoke check may use, by kind (`contains=` and URLs never hold a secret). */
function checkPlaceholders(
  smoke: Settings['smoke'],
  kind: (typeof CREDENTIAL_KINDS)[number],
  secretKnown: boolean
): void {
  const used = (text: string, name: string): boolean => text.includes(`{${name}}`)
  const headerValues = Object.values(smoke.headers)
  const texts = [...smoke.checks.flatMap(c => [c.url, c.contains ?? ''])]
  if (kind === 'access-service-token') {
    for (const text of [...texts, ...headerValues]) {
      if (used(text, 'access-key-id')) {
        throw new InputError(
          text === '' ? 'smoke-urls' : headerValues.includes(text) ? 'smoke-headers' : 'smoke-urls',
          '{access-key-id} stands for an R2 credential and does not apply with credential: access-service-token; use {client-id}.'
        )
      }
    }
    if (texts.some(text => used(text, 'client-secret'))) {
      throw new InputError(
        'smoke-urls',
        '{client-secret} may be used in smoke-headers only (a URL or contains= text could show it); send it as CF-Access-Client-Secret: {client-secret}.'
      )
    }
    if (!secretKnown && headerValues.some(v => used(v, 'client-secret'))) {
      throw new InputError(
        'current-client-secret',
        'required when smoke-headers use {client-secret}: the checks before the rotation (and after a rollback) present the client secret in use now. Pass current-client-secret: ${{ secrets.… }} (the secret that holds it).'
      )
    }
    return
  }
  for (const text of [...texts, ...headerValues]) {
    for (const name of ['client-id', 'client-secret']) {
      if (used(text, name)) {
        throw new InputError(
          headerValues.includes(text) ? 'smoke-headers' : 'smoke-urls',
          `{${name}} stands for an Access service token's credential and applies only with credential: access-service-token.`
        )
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Credentials. Their values are never quoted in a message, whatever is wrong with them.

function credential(read: Read, name: string, what: string): string {
  const value = read(name)
  if (!value) {
    throw new InputError(name, `required and not supplied; pass ${what}, e.g. \${{ secrets.… }}.`)
  }
  checkSingleToken(name, value)
  return value
}

function optionalCredential(read: Read, name: string): string | undefined {
  const value = read(name)
  if (!value) return undefined
  checkSingleToken(name, value)
  return value
}

function checkSingleToken(name: string, value: string): void {
  if (/\s/.test(value)) {
    throw new InputError(
      name,
      'must be a single token value without spaces or line breaks (no "Bearer " prefix); check the secret it comes from.'
    )
  }
}

function optionalSecretHex(read: Read, name: string): string | undefined {
  const value = read(name)
  if (!value) return undefined
  if (!/^[0-9a-fA-F]{64}$/.test(value)) {
    throw new InputError(
      name,
      'expected 64 hexadecimal characters (the R2 Secret Access Key, i.e. the SHA-256 of the token value).'
    )
  }
  return value.toLowerCase()
}

// ---------------------------------------------------------------------------------------------
// Scalars

function optionalHex(read: Read, name: string, length: number, what: string): string | undefined {
  const value = read(name)
  if (!value) return undefined
  if (!new RegExp(`^[0-9a-fA-F]{${length}}$`).test(value)) {
    throw new InputError(
      name,
      // Not quoted: a token value passed here by mistake must not reach the log.
      `expected ${what}: ${length} hexadecimal characters, got something else (${value.length} characters).`
    )
  }
  return value.toLowerCase()
}

function oneOf<const T extends readonly string[]>(read: Read, name: string, allowed: T): T[number] {
  const value = read(name)
  if (!allowed.includes(value)) {
    throw new InputError(name, `expected ${listOr(allowed)}, got '${value}'.`)
  }
  return value as T[number]
}

/** What core.getBooleanInput accepts: the booleans of the YAML 1.2 core schema. */
function boolean(read: Read, name: string): boolean {
  const value = read(name)
  if (['true', 'True', 'TRUE'].includes(value)) return true
  if (['false', 'False', 'FALSE'].includes(value)) return false
  throw new InputError(name, `expected true or false, got '${value}'.`)
}

function duration(name: string, text: string, bounds: { min: number; max?: number }): number {
  const ms = parseDuration(text, name)
  if (ms < bounds.min) {
    throw new InputError(name, `must be at least ${formatDuration(bounds.min)}, got '${text}'.`)
  }
  if (bounds.max !== undefined && ms > bounds.max) {
    throw new InputError(
      name,
      `must be at most ${formatDuration(bounds.max)} (the longest wait a Node.js timer supports), got '${text}'.`
    )
  }
  return ms
}

function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms >= MS_PER_UNIT[unit] && ms % MS_PER_UNIT[unit] === 0)
      return `${ms / MS_PER_UNIT[unit]}${unit}`
  }
  return `${ms / 1000}s`
}

function listOr(values: readonly string[]): string {
  const quoted = values.map(v => `'${v}'`)
  return quoted.length < 2
    ? quoted.join('')
    : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}`
}

/** Splits a multi-line input; blank lines and `#` comments are skipped, `line` is 1-based. */
function lines(text: string): { text: string; line: number }[] {
  return text
    .split(/\r?\n/)
    .map((raw, index) => ({ text: raw.trim(), line: index + 1 }))
    .filter(l => l.text !== '' && !l.text.startsWith('#'))
}

// Code points below 0x20 other than tab, and DEL: never valid in a header value (RFC 9110).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/
// Any control character, tab included: not in a name.
// eslint-disable-next-line no-control-regex
const CONTROL_OR_TAB = /[\u0000-\u001f\u007f]/

// ---------------------------------------------------------------------------------------------
// URLs

/**
 * Parses a URL that receives credentials or is fetched: https, or http on loopback only.
 * A URL that may carry a user name or password is never quoted back.
 */
function secureUrl(name: string, text: string, example: string, where = ''): URL {
  const shown = text.includes('@') ? '' : `, got '${text}'`
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new InputError(name, `${where}expected an absolute URL such as ${example}${shown}.`)
  }
  if (url.username || url.password) {
    throw new InputError(
      name,
      `${where}must not carry a user name or password; pass credentials another way.`
    )
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
    throw new InputError(
      name,
      `${where}must use https (http only on loopback: localhost, 127.0.0.0/8 or ::1)${shown}.`
    )
  }
  return url
}

/** An API base URL: a path is allowed, a query or fragment is not; no trailing slash. */
function serviceUrl(name: string, text: string, example: string): string {
  const url = secureUrl(name, text, example)
  if (url.search || url.hash) {
    throw new InputError(
      name,
      `must be a base URL without a query or fragment, such as ${example}, got '${text}'.`
    )
  }
  return url.origin + url.pathname.replace(/\/+$/, '')
}

/** GITHUB_SERVER_URL only builds links for the summary, so plain http is harmless there. */
function linkUrl(name: string, text: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new InputError(
      name,
      `expected an absolute URL such as https://github.com, got '${text}'.`
    )
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InputError(name, `expected an http(s) URL such as https://github.com, got '${text}'.`)
  }
  return url.origin + url.pathname.replace(/\/+$/, '')
}

function optionalEndpoint(text: string): string | undefined {
  if (!text) return undefined
  const name = 'r2-endpoint'
  const example = 'https://<account-id>.r2.cloudflarestorage.com'
  const url = secureUrl(name, text, example)
  // Requests are addressed path-style (<endpoint>/<bucket>/<key>), so a path here would be a mistake.
  if (url.pathname !== '/' || url.search || url.hash) {
    throw new InputError(
      name,
      `expected only a scheme and host such as ${example}, without a path or query, got '${text}'.`
    )
  }
  return url.origin
}

// ---------------------------------------------------------------------------------------------
// GitHub names. Secret and variable names: letters, digits and `_`, not starting with a digit or
// GITHUB_, case-insensitive (docs.github.com, "Naming your secrets" / "Naming conventions for
// configuration variables").

const GITHUB_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

function githubNameProblem(value: string): string | undefined {
  if (!GITHUB_NAME.test(value)) {
    return 'may hold only letters, digits and _, and must not start with a digit'
  }
  if (/^GITHUB_/i.test(value)) return 'must not start with GITHUB_ (reserved by GitHub)'
  return undefined
}

function optionalSecretName(read: Read, name: string): string | undefined {
  const value = read(name)
  if (!value) return undefined
  const problem = githubNameProblem(value)
  if (problem) {
    // Not quoted: a token value passed here by mistake (not its secret's name) must not be printed.
    throw new InputError(
      name,
      `expected the name of the GitHub secret that holds the management token (CLOUDFLARE_MANAGEMENT_TOKEN), not its value; a secret name ${problem}.`
    )
  }
  return value
}

function optionalVariableName(text: string): string | undefined {
  if (!text) return undefined
  const problem = githubNameProblem(text)
  if (problem) {
    throw new InputError(
      'state-variable',
      `'${text}' is not a valid Actions variable name: it ${problem}.`
    )
  }
  return text
}

// Owners and organisations: alphanumerics and hyphens, not starting with a hyphen, at most 39.
const OWNER = /^[A-Za-z0-9][A-Za-z0-9-]{0,38}$/
// Repositories: alphanumerics, `-`, `_` and `.`, at most 100; `.` and `..` are not names.
const REPO = /^[A-Za-z0-9._-]{1,100}$/

function parseRepoRef(text: string): RepoRef | undefined {
  const parts = text.split('/')
  if (parts.length !== 2) return undefined
  const [owner = '', repo = ''] = parts
  if (!OWNER.test(owner) || !REPO.test(repo) || repo === '.' || repo === '..') return undefined
  return { owner, repo }
}

function repositoryFromEnv(env: NodeJS.ProcessEnv): RepoRef {
  const text = env.GITHUB_REPOSITORY?.trim() ?? ''
  if (!text) {
    throw new InputError(
      'GITHUB_REPOSITORY',
      'the environment variable is not set; the runner sets it to OWNER/REPO (set it yourself outside GitHub Actions).'
    )
  }
  const ref = parseRepoRef(text)
  if (!ref) {
    throw new InputError(
      'GITHUB_REPOSITORY',
      `invalid repository '${text}'. Expected format {owner}/{repo}.`
    )
  }
  return ref
}

// ---------------------------------------------------------------------------------------------
// secrets

const SECRET_FIELDS = ['token', 'access-key-id', 'secret-access-key'] as const
const SERVICE_TOKEN_FIELDS = ['client-id', 'client-secret'] as const

function parseSecrets(text: string, kind: (typeof CREDENTIAL_KINDS)[number]): SecretMapping[] {
  const name = 'secrets'
  const fields: readonly string[] =
    kind === 'access-service-token' ? SERVICE_TOKEN_FIELDS : SECRET_FIELDS
  const expected = `one line per GitHub secret: NAME=field, where field is ${listOr(fields)}${kind === 'access-service-token' ? ' (credential: access-service-token)' : ''}`
  const entries = lines(text)
  if (entries.length === 0) {
    throw new InputError(name, `required and not supplied; give ${expected}.`)
  }
  const seen = new Map<string, number>()
  const mappings = entries.map(({ text: line, line: n }) => {
    const eq = line.indexOf('=')
    if (eq < 0) throw new InputError(name, `line ${n}: expected ${expected}, got '${line}'.`)
    const secret = line.slice(0, eq).trim()
    const field = line.slice(eq + 1).trim()
    const problem = githubNameProblem(secret)
    if (problem) {
      throw new InputError(
        name,
        `line ${n}: '${secret}' is not a valid secret name: it ${problem}.`
      )
    }
    if (!fields.includes(field)) {
      const other =
        kind === 'access-service-token'
          ? (SECRET_FIELDS as readonly string[]).includes(field)
            ? ` ('${field}' belongs to an API token; credential is access-service-token)`
            : ''
          : (SERVICE_TOKEN_FIELDS as readonly string[]).includes(field)
            ? ` ('${field}' belongs to an Access service token; set credential: access-service-token)`
            : ''
      throw new InputError(
        name,
        `line ${n}: unknown field '${field}' for ${secret}${other}; expected ${listOr(fields)}.`
      )
    }
    const key = secret.toUpperCase()
    const first = seen.get(key)
    if (first !== undefined) {
      throw new InputError(
        name,
        `line ${n}: secret ${secret} is already mapped on line ${first} (GitHub secret names are case-insensitive).`
      )
    }
    seen.set(key, n)
    return { name: secret, field: field as SecretField }
  })
  if (kind === 'access-service-token' && !mappings.some(m => m.field === 'client-secret')) {
    throw new InputError(
      name,
      'maps no secret to client-secret: a service token rotation replaces the client secret, so at least one line must be NAME=client-secret (and NAME=client-id for the id, which never changes).'
    )
  }
  return mappings
}

// ---------------------------------------------------------------------------------------------
// secret-targets

const TARGET_FORMS =
  '`repo`, `repo:OWNER/REPO`, `env:NAME`, `env:OWNER/REPO:NAME`, `org:ORG`, `dependabot:OWNER/REPO` or `worker:SCRIPT`'

/**
 * Workers script names: the OpenAPI description's `workers_script_name` pattern
 * (`^[a-z0-9_][a-z0-9-_]*$`), at most 63 characters as the dashboard allows.
 */
const SCRIPT_NAME = /^[a-z0-9_][a-z0-9-_]{0,62}$/

/** `worker:SCRIPT`: a Worker of the `account-id` account (required then). */
function workerTarget(
  script: string,
  n: number,
  line: string,
  accountId: string | undefined
): SecretTarget {
  if (!SCRIPT_NAME.test(script)) {
    throw new InputError(
      'secret-targets',
      `line ${n}: invalid Worker name '${script}' in '${line}'; a Worker (script) name holds lowercase letters, digits, '-' and '_' (at most 63 characters). A Wrangler environment is its own Worker named <name>-<environment>.`
    )
  }
  if (!accountId) {
    throw new InputError(
      'account-id',
      `required by secret-targets line ${n} ('${line}'): a Worker's secrets live under /accounts/{account_id}/workers/scripts/…; give the 32-character account id that owns the Worker.`
    )
  }
  return { kind: 'worker', accountId, script, line }
}

/**
 * Environment names: at most 255 characters, case-insensitive (docs.github.com, "Managing
 * environments for deployment"). They may contain `/` (github/rest-api-description#3159), so the
 * GitHub client must URL-encode them. `env:NAME` holding a `:` is read as `env:OWNER/REPO:NAME`;
 * an environment of this repository whose name has a `:` needs that full form.
 */
function environmentName(text: string, n: number): string {
  if (text.length === 0 || text.length > 255 || CONTROL_OR_TAB.test(text)) {
    throw new InputError(
      'secret-targets',
      `line ${n}: an environment name has 1 to 255 characters and no control characters.`
    )
  }
  return text
}

function parseSecretTargets(
  text: string,
  repository: RepoRef,
  accountId: string | undefined
): SecretTarget[] {
  const name = 'secret-targets'
  const entries = lines(text)
  if (entries.length === 0) {
    throw new InputError(name, `expected at least one target: ${TARGET_FORMS}.`)
  }
  const repoRef = (value: string, n: number, line: string): RepoRef => {
    const ref = parseRepoRef(value)
    if (!ref) {
      throw new InputError(
        name,
        `line ${n}: invalid repository '${value}' in '${line}'. Expected format {owner}/{repo}.`
      )
    }
    return ref
  }
  const seen = new Map<string, number>()
  return entries.map(({ text: line, line: n }) => {
    const colon = line.indexOf(':')
    const kind = colon < 0 ? line : line.slice(0, colon)
    const rest = colon < 0 ? undefined : line.slice(colon + 1).trim()
    let target: SecretTarget
    if (kind === 'repo' && rest === undefined) {
      target = { kind: 'repo', ...repository, line }
    } else if (kind === 'repo' && rest !== undefined) {
      target = { kind: 'repo', ...repoRef(rest, n, line), line }
    } else if (kind === 'env' && rest) {
      const sep = rest.indexOf(':')
      if (sep < 0) {
        target = { kind: 'env', ...repository, environment: environmentName(rest, n), line }
      } else {
        const ref = repoRef(rest.slice(0, sep).trim(), n, line)
        const environment = environmentName(rest.slice(sep + 1).trim(), n)
        target = { kind: 'env', ...ref, environment, line }
      }
    } else if (kind === 'org' && rest !== undefined) {
      if (!OWNER.test(rest)) {
        throw new InputError(
          name,
          `line ${n}: invalid organization '${rest}'; an organization name holds letters, digits and hyphens.`
        )
      }
      target = { kind: 'org', org: rest, line }
    } else if (kind === 'dependabot' && rest !== undefined) {
      target = { kind: 'dependabot', ...repoRef(rest, n, line), line }
    } else if (kind === 'worker' && rest !== undefined) {
      target = workerTarget(rest, n, line, accountId)
    } else {
      throw new InputError(name, `line ${n}: expected ${TARGET_FORMS}, got '${line}'.`)
    }
    const key = targetKey(target)
    const first = seen.get(key)
    if (first !== undefined) {
      throw new InputError(name, `line ${n}: '${line}' is the same target as line ${first}.`)
    }
    seen.set(key, n)
    return target
  })
}

/**
 * GitHub compares owners, repositories, organisations and environments case-insensitively; a
 * Worker's name is lowercase already.
 */
function targetKey(target: SecretTarget): string {
  switch (target.kind) {
    case 'worker':
      return `worker:${target.script}`
    case 'repo':
    case 'dependabot':
      return `${target.kind}:${target.owner}/${target.repo}`.toLowerCase()
    case 'env':
      return `env:${target.owner}/${target.repo}:${target.environment}`.toLowerCase()
    case 'org':
      return `org:${target.org}`.toLowerCase()
  }
}

// ---------------------------------------------------------------------------------------------
// deploy

/** Rules of `git check-ref-format`, plus no leading `-` (as for --branch). */
function refProblem(ref: string): string | undefined {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f~^:?*[\\]/.test(ref)) {
    return 'spaces, control characters and ~ ^ : ? * [ \\ are not allowed'
  }
  if (ref.includes('..')) return "'..' is not allowed"
  if (ref.includes('@{') || ref === '@') return "'@{' and a lone '@' are not allowed"
  if (ref.startsWith('/') || ref.endsWith('/') || ref.includes('//')) {
    return 'it must not start or end with / or contain //'
  }
  if (ref.startsWith('-')) return 'it must not start with -'
  if (ref.endsWith('.')) return 'it must not end with .'
  if (ref.split('/').some(part => part.startsWith('.') || part.endsWith('.lock'))) {
    return 'no part may start with . or end with .lock'
  }
  return undefined
}

/** `workflow_dispatch` input ids (SchemaStore github-workflow.json: ^[_a-zA-Z][a-zA-Z0-9_-]*$). */
const WORKFLOW_INPUT_ID = /^[_a-zA-Z][a-zA-Z0-9_-]*$/
/** GitHub rejects a dispatch with more than 25 inputs (api-facts, Dispatch). */
const MAX_DISPATCH_INPUTS = 25

/**
 * `deploy-workflow` is required: a workflow, or `none` said explicitly. An empty value used to mean
 * "no deploy step", and a forgotten input then let the old token be revoked while the app still
 * ran on it; `none` is for setups whose consumers read the secrets when they start.
 */
const NO_DEPLOY = 'none'

function parseDeploy(read: Read, repository: RepoRef): DeploySettings | undefined {
  const workflowText = read('deploy-workflow')
  const repositoryText = read('deploy-repository')
  const refText = read('deploy-ref')
  const inputsText = read('deploy-inputs')
  // Validated even without a deploy step: a malformed value is a mistake either way.
  const timeoutMs = duration('deploy-timeout', read('deploy-timeout'), {
    min: MS_PER_UNIT.s,
    max: LONGEST_TIMER_MS
  })
  const inputs = parseDeployInputs(inputsText)

  if (!workflowText) {
    throw new InputError(
      'deploy-workflow',
      `required: the file name of the workflow that deploys the app with the new secrets (deploy.yml) or its id, or '${NO_DEPLOY}' when nothing is deployed (consumers read the secrets when they start; then only the watch after the disable protects them).`
    )
  }
  if (workflowText === NO_DEPLOY) {
    // Deploy settings with no deploy step mean a mistake, not a wish.
    for (const [name, given] of [
      ['deploy-repository', repositoryText !== ''],
      ['deploy-ref', refText !== ''],
      ['deploy-inputs', Object.keys(inputs).length > 0]
    ] as const) {
      if (given) {
        throw new InputError(
          name,
          `is set but deploy-workflow is '${NO_DEPLOY}'; name the deploy workflow, or remove this input.`
        )
      }
    }
    return undefined
  }

  let workflow: string | number
  if (/^\d+$/.test(workflowText)) {
    workflow = Number(workflowText)
    if (!Number.isSafeInteger(workflow) || workflow < 1) {
      throw new InputError(
        'deploy-workflow',
        `expected a workflow file name such as deploy.yml or a positive workflow id, got '${workflowText}'.`
      )
    }
  } else if (/[/\\]/.test(workflowText)) {
    throw new InputError(
      'deploy-workflow',
      `expected the workflow file name only (deploy.yml; .github/workflows/ is implied), got '${workflowText}'.`
    )
  } else if (!/\.ya?ml$/.test(workflowText) || CONTROL_OR_TAB.test(workflowText)) {
    throw new InputError(
      'deploy-workflow',
      `expected a workflow file name ending in .yml or .yaml (deploy.yml), or a workflow id, got '${workflowText}'.`
    )
  } else {
    workflow = workflowText
  }

  let deployRepository = repository
  if (repositoryText) {
    const ref = parseRepoRef(repositoryText)
    if (!ref) {
      throw new InputError(
        'deploy-repository',
        `invalid repository '${repositoryText}'. Expected format {owner}/{repo}.`
      )
    }
    deployRepository = ref
  }

  if (refText) {
    const problem = refProblem(refText)
    if (problem) {
      throw new InputError(
        'deploy-ref',
        `'${refText}' is not a valid branch or tag name: ${problem}.`
      )
    }
  }

  return {
    workflow,
    repository: deployRepository,
    ...(refText && { ref: refText }),
    inputs,
    timeoutMs
  }
}

/**
 * Dispatch inputs travel as strings; numbers and booleans are converted with String(), so `1.0`
 * arrives as "1" (write it as "1.0" to keep it).
 */
function parseDeployInputs(text: string): Record<string, string> {
  const name = 'deploy-inputs'
  const example = 'a JSON object such as {"environment": "production"}'
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new InputError(
      name,
      `expected ${example}; it does not parse: ${(error as Error).message}.`
    )
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const got = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`
    throw new InputError(name, `expected ${example}, got ${got}.`)
  }
  const entries = Object.entries(parsed)
  if (entries.length > MAX_DISPATCH_INPUTS) {
    throw new InputError(
      name,
      `has ${entries.length} keys; a workflow dispatch takes at most ${MAX_DISPATCH_INPUTS} inputs.`
    )
  }
  // Object.fromEntries defines own properties, so a "__proto__" key stays a plain key.
  return Object.fromEntries(
    entries.map(([key, value]) => {
      if (!WORKFLOW_INPUT_ID.test(key)) {
        throw new InputError(
          name,
          `'${key}' is not a valid workflow input id (a letter or _ first, then letters, digits, - or _).`
        )
      }
      if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
        const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : 'an object'
        throw new InputError(
          name,
          `the value of '${key}' is ${got}; expected a string, number or boolean.`
        )
      }
      return [key, String(value)]
    })
  )
}

// ---------------------------------------------------------------------------------------------
// smoke

/**
 * Parses `smoke-urls`: `URL [expect=200|200-299] [contains=TEXT]`. `contains=` takes the rest of
 * the line, spaces included (so it comes last); the line is trimmed, so surrounding spaces of the
 * text are not significant.
 */
function parseSmokeChecks(text: string): SmokeCheck[] {
  const name = 'smoke-urls'
  return lines(text).map(({ text: line, line: n }) => {
    const where = `line ${n}: `
    const [, urlText = '', options = ''] = /^(\S+)(.*)$/.exec(line) ?? []
    const url = secureUrl(name, urlText, 'https://app.example.com/health', where)
    const check: SmokeCheck = { url: url.href, expect: { min: 200, max: 299 } }
    let rest = options.trim()
    let expectSeen = false
    while (rest) {
      if (rest.startsWith('contains=')) {
        const contains = rest.slice('contains='.length).trim()
        if (!contains) {
          throw new InputError(
            name,
            `${where}contains= needs the text the response body must contain.`
          )
        }
        check.contains = contains
        break
      }
      const [option = ''] = /^\S+/.exec(rest) ?? []
      rest = rest.slice(option.length).trim()
      if (option.startsWith('expect=') && !expectSeen) {
        check.expect = parseExpect(option.slice('expect='.length), where)
        expectSeen = true
      } else {
        throw new InputError(
          name,
          `${where}unexpected '${option}'; after the URL only expect=200 (or a range such as 200-299) and then contains=TEXT may follow.`
        )
      }
    }
    return check
  })
}

function parseExpect(text: string, where: string): { min: number; max: number } {
  const match = /^(\d{3})(?:-(\d{3}))?$/.exec(text)
  const min = Number(match?.[1])
  const max = match?.[2] === undefined ? min : Number(match[2])
  if (!match || min < 100 || max > 599 || min > max) {
    throw new InputError(
      'smoke-urls',
      `${where}expect= takes an HTTP status (100-599) such as 200, or a range such as 200-299, got '${text}'.`
    )
  }
  return { min, max }
}

/** RFC 9110 field names are tokens. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * Parses `smoke-headers`. Values are secrets (e.g. Cloudflare Access). A message quotes nothing
 * from this input, not even a header name: a pasted value can look like one.
 */
function parseSmokeHeaders(text: string): Record<string, string> {
  const name = 'smoke-headers'
  const headers: Record<string, string> = {}
  const seen = new Map<string, number>()
  for (const { text: line, line: n } of lines(text)) {
    const colon = line.indexOf(':')
    const header = colon < 0 ? '' : line.slice(0, colon).trim()
    const value = colon < 0 ? '' : line.slice(colon + 1).trim()
    if (!HEADER_NAME.test(header)) {
      throw new InputError(
        name,
        `line ${n}: expected 'Name: value' with a header name of letters, digits and -.`
      )
    }
    if (!value || CONTROL.test(value)) {
      throw new InputError(
        name,
        `line ${n}: a header needs a value on the same line, without control characters.`
      )
    }
    const first = seen.get(header.toLowerCase())
    if (first !== undefined) {
      throw new InputError(
        name,
        `line ${n}: the same header is already set on line ${first} (header names are case-insensitive).`
      )
    }
    seen.set(header.toLowerCase(), n)
    headers[header] = value
  }
  return headers
}

function parseSmoke(read: Read): Settings['smoke'] {
  const checks = parseSmokeChecks(read('smoke-urls'))
  const headers = parseSmokeHeaders(read('smoke-headers'))
  if (checks.length === 0 && Object.keys(headers).length > 0) {
    throw new InputError(
      'smoke-headers',
      'is set but smoke-urls is empty; add the URLs to check, or remove the headers.'
    )
  }
  const timeoutMs = duration('smoke-timeout', read('smoke-timeout'), {
    min: 0,
    max: LONGEST_TIMER_MS
  })
  return { checks, headers, timeoutMs }
}

// ---------------------------------------------------------------------------------------------
// r2 and token-name

/** R2 bucket names: 3-63 lowercase letters, digits and hyphens, a letter or digit at each end. */
const BUCKET = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/

function optionalBucket(text: string): string | undefined {
  if (!text) return undefined
  if (!BUCKET.test(text)) {
    throw new InputError(
      'r2-bucket',
      `'${text}' is not an R2 bucket name: 3 to 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit.`
    )
  }
  return text
}

function tokenNameTemplate(text: string): string {
  const name = 'token-name'
  if (Array.from(text).length > TOKEN_NAME_MAX_LENGTH) {
    throw new InputError(
      name,
      `must be at most ${TOKEN_NAME_MAX_LENGTH} characters (Cloudflare's limit for a token name).`
    )
  }
  if (CONTROL_OR_TAB.test(text)) {
    throw new InputError(name, 'must not contain tabs, line breaks or other control characters.')
  }
  const known = TOKEN_NAME_PLACEHOLDERS.map(p => `{${p}}`)
  for (const [placeholder] of text.matchAll(/\{[^{}]*\}/g)) {
    if (!known.includes(placeholder)) {
      throw new InputError(name, `unknown placeholder ${placeholder}; known: ${known.join(', ')}.`)
    }
  }
  return text
}
