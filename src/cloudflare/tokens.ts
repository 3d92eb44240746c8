/**
 * Cloudflare's API token endpoints (user-owned `/user/tokens…` and account-owned
 * `/accounts/{account_id}/tokens…`), through the official `cloudflare` SDK (sdk.ts). The SDK is
 * most of the bundle and of the start-up time, so it is loaded on the first Cloudflare call (a
 * chunk of its own in dist/), not when the action starts.
 *
 * Retries are this module's, not the SDK's (`maxRetries: 0`): the SDK honours any `Retry-After`
 * without a cap, so one call could stall for the five minutes of a rate-limit block, three times
 * over. Here an idempotent call is retried on a dropped connection or a server error with a short
 * backoff, a 429 is waited out when Cloudflare asks for at most `MAX_RATE_LIMIT_WAIT_MS`, and a
 * longer block fails at once with a message that says when to run again. A create is never sent
 * again after a failure that leaves open whether it happened (see `create`).
 */
import type { Sdk, TokenClient } from './sdk.js'
import type { ApiToken, CreateTokenBody, TokenOwner, TokenPolicy } from '../model.js'
import { InputError, rootCause } from '../errors.js'
import { type Clock, retryAfterMs, systemClock } from '../backoff.js'
import { quoteServer, register, scrub } from '../redact.js'
import { type Log, log as actionLog } from '../log.js'

export type { ApiToken, CreateTokenBody, TokenOwner, TokenPolicy } from '../model.js'

/**
 * A failed Cloudflare API call. The message is built from the envelope's `errors` (code and
 * message, quoted through the scrubber) and never contains a value.
 */
export class CloudflareApiError extends Error {
  /** HTTP status; undefined when no answer arrived (connection error, timeout). */
  readonly status?: number
  /** Cloudflare error codes from the envelope (`errors[].code`). */
  readonly codes: number[]
  /**
   * True when a mutating request got no answer: it may or may not have taken effect. After an
   * ambiguous create, list the tokens and look for the name that was minted (api-facts).
   */
  readonly ambiguous: boolean
  /** How long Cloudflare asked to wait (`Retry-After`), for a 429. */
  readonly retryAfterMs?: number
  /**
   * Set when the token's IP condition refused the caller (403, 9109 "Cannot use the access token
   * from location: ADDRESS"): the address Cloudflare saw, or '' when it did not say.
   */
  readonly refusedFrom?: string

  constructor(
    message: string,
    options: {
      status?: number
      codes?: number[]
      ambiguous?: boolean
      retryAfterMs?: number
      refusedFrom?: string
    }
  ) {
    super(message)
    this.name = 'CloudflareApiError'
    this.status = options.status
    this.codes = options.codes ?? []
    this.ambiguous = options.ambiguous ?? false
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs
    if (options.refusedFrom !== undefined) this.refusedFrom = options.refusedFrom
  }
}

/**
 * Cloudflare's rate-limit budget and clock, as its answers tell them. Every answer carries
 * `Ratelimit: "default";r=<remaining>;t=<seconds to reset>` and
 * `Ratelimit-Policy: "default";q=<quota>;w=<window seconds>`; a 429 carries `Retry-After`
 * (developers.cloudflare.com/fundamentals/api/reference/limits/, "Rate limiting headers"). The
 * older `X-RateLimit-Remaining`/`-Reset` pair is read too. The `Date` header gives Cloudflare's
 * time, so that times compared with Cloudflare's own (`issued_on`, `expires_on`) do not depend on
 * the runner's clock.
 */
export class CloudflareRate {
  remaining?: number
  limit?: number
  /** When the window resets, on the clock passed to `observe`. */
  resetAt?: number
  private server?: { at: number; date: number }

  constructor(private readonly clock: Clock = systemClock) {}

  observe(headers: Headers): void {
    const now = this.clock.now()
    const date = Date.parse(headers.get('date') ?? '')
    if (!Number.isNaN(date)) this.server = { at: now, date }
    const current = parseRateLimitItem(headers.get('ratelimit'))
    if (current?.r !== undefined) {
      this.remaining = current.r
      if (current.t !== undefined) this.resetAt = now + current.t * 1000
    } else {
      const remaining = finiteNumber(
        headers.get('x-ratelimit-remaining') ?? headers.get('ratelimit-remaining')
      )
      if (remaining !== undefined) this.remaining = remaining
      const reset = finiteNumber(headers.get('x-ratelimit-reset') ?? headers.get('ratelimit-reset'))
      // Epoch seconds or delta seconds, as servers differ.
      if (reset !== undefined) {
        this.resetAt = reset > 1e9 ? now + (reset * 1000 - Date.now()) : now + reset * 1000
      }
    }
    const policy = parseRateLimitItem(headers.get('ratelimit-policy'))
    const limit = policy?.q ?? finiteNumber(headers.get('x-ratelimit-limit'))
    if (limit !== undefined) this.limit = limit
  }

  /** Cloudflare's time now, from its last `Date` header (whole seconds), or undefined. */
  serverNow(): Date | undefined {
    if (!this.server) return undefined
    return new Date(this.server.date + (this.clock.now() - this.server.at) * this.clock.scale)
  }
}

/** One item of an RFC 9651 list such as `"default";r=50;t=30`: its numeric parameters. */
function parseRateLimitItem(header: string | null): Record<string, number> | undefined {
  if (!header) return undefined
  const first = header.split(',')[0] ?? ''
  const params: Record<string, number> = {}
  for (const part of first.split(';').slice(1)) {
    const [key, value] = part.split('=').map(s => s.trim())
    const n = finiteNumber(value)
    if (key && n !== undefined) params[key] = n
  }
  return Object.keys(params).length > 0 ? params : undefined
}

function finiteNumber(text: string | null | undefined): number | undefined {
  if (text === null || text === undefined || text.trim() === '') return undefined
  const n = Number(text)
  return Number.isFinite(n) ? n : undefined
}

export interface TokenApiOptions {
  /** The management token (input `cloudflare-api-token`). */
  apiToken: string
  /** API base URL (input `cloudflare-api-url`), e.g. `https://api.cloudflare.com/client/v4`. */
  baseURL: string
  /** Retries of idempotent requests after a dropped connection or a server error (default 3). */
  maxRetries?: number
  /** Per-request timeout in milliseconds (default 60 s, the SDK's default). */
  timeoutMs?: number
  clock?: Clock
  log?: Log
}

const DEFAULT_MAX_RETRIES = 3
const DEFAULT_TIMEOUT_MS = 60_000

/**
 * The longest `Retry-After` one call waits for. Past the budget of 1,200 requests per five minutes
 * (shared by every person and tool of the user) Cloudflare blocks every call for five minutes
 * (developers.cloudflare.com/fundamentals/api/reference/limits/): waiting that out silently would
 * look like a hang, so a longer wait fails the call with a message saying when to run again.
 */
export const MAX_RATE_LIMIT_WAIT_MS = 60_000

/** Rate-limit refusals waited out per call before giving up. */
const MAX_RATE_LIMIT_RETRIES = 3

// The list endpoints accept per_page 5..50 (Cloudflare OpenAPI, user-api-tokens-list-tokens).
const PAGE_SIZE = 50
// A quota of 50 user and 500 account tokens (api-facts) fits in 10 pages; the cap guards
// against a server that ignores `page` and answers the same page forever.
const MAX_PAGES = 100

/** Token quotas (developers.cloudflare.com/fundamentals/api/reference/limits/, "API token limits"). */
export const TOKEN_QUOTA: Record<TokenOwner['kind'], number> = { user: 50, account: 500 }

/** Where a token of each kind is created, in the dashboard's words. */
export const MANAGEMENT_HINT =
  "The cloudflare-api-token needs 'API Tokens Write' for user-owned tokens (dashboard: My Profile → API Tokens → Create Token → the 'Create additional tokens' template; the Custom Token builder does not offer it) or 'Account API Tokens Write' for account-owned tokens (Manage Account → API Tokens → Create Token, permission Account › Account API Tokens › Edit)."

/** The SDK, loaded once, on first use. */
let sdk: Promise<Sdk> | undefined
export function loadSdk(): Promise<Sdk> {
  // One turn of the event loop first: requests already started (the journal read) leave before
  // the SDK's module evaluation holds the thread.
  return (sdk ??= new Promise(resolve => setImmediate(resolve)).then(() => import('./sdk.js')))
}

export class TokenApi {
  readonly rate: CloudflareRate
  private client?: Promise<TokenClient>
  private readonly apiToken: string
  private readonly baseURL: string
  private readonly maxRetries: number
  private readonly timeoutMs: number
  private readonly clock: Clock
  private readonly log: Log

  constructor(options: TokenApiOptions) {
    this.baseURL = options.baseURL.replace(/\/+$/, '')
    this.maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.clock = options.clock ?? systemClock
    this.log = options.log ?? actionLog
    this.rate = new CloudflareRate(this.clock)
    register(options.apiToken)
    this.apiToken = options.apiToken
  }

  /** A client authenticated as `apiToken` (the management token unless given). */
  private async clientFor(apiToken?: string): Promise<TokenClient> {
    const make = async (token: string): Promise<TokenClient> =>
      (await loadSdk()).makeClient({
        apiToken: token,
        baseURL: this.baseURL,
        timeoutMs: this.timeoutMs,
        rate: this.rate,
        log: this.log
      })
    if (apiToken !== undefined) return make(apiToken)
    return (this.client ??= make(this.apiToken))
  }

  /** `GET …/tokens/verify` authenticated as `tokenValue` itself (a second client). */
  async verify(
    tokenValue: string,
    owner: TokenOwner
  ): Promise<{ id: string; status: string; expires_on?: string | null }> {
    register(tokenValue)
    const result = await this.call(
      `verify a token (${describeOwner(owner)})`,
      client =>
        owner.kind === 'user'
          ? client.user.tokens.verify()
          : client.accounts.tokens.verify({ account_id: owner.accountId }),
      { asToken: tokenValue }
    )
    if (!result?.id || !result.status) {
      throw new CloudflareApiError(
        'Cloudflare API: verify answered without a token id or status.',
        {}
      )
    }
    const answer: { id: string; status: string; expires_on?: string | null } = {
      id: result.id,
      status: result.status
    }
    if (result.expires_on !== undefined) answer.expires_on = result.expires_on
    return answer
  }

  async get(owner: TokenOwner, id: string): Promise<ApiToken> {
    const raw = await this.call(`read token ${id} (${describeOwner(owner)})`, client =>
      owner.kind === 'user'
        ? client.user.tokens.get(id)
        : client.accounts.tokens.get(id, { account_id: owner.accountId })
    )
    return toApiToken(raw)
  }

  /** Every token of the owner, all pages (the SDK's iterator stops only at an empty page). */
  async list(owner: TokenOwner): Promise<ApiToken[]> {
    const tokens: ApiToken[] = []
    const seen = new Set<string>()
    for (let page = 1; page <= MAX_PAGES; page++) {
      const current = await this.call(`list tokens (${describeOwner(owner)})`, client =>
        owner.kind === 'user'
          ? client.user.tokens.list({ page, per_page: PAGE_SIZE })
          : client.accounts.tokens.list({
              account_id: owner.accountId,
              page,
              per_page: PAGE_SIZE
            })
      )
      const items = current.getPaginatedItems()
      let fresh = 0
      for (const item of items) {
        const token = toApiToken(item)
        if (seen.has(token.id)) continue
        seen.add(token.id)
        tokens.push(token)
        fresh++
      }
      const info = current.result_info as { total_pages?: number } | undefined
      const lastPage =
        items.length < PAGE_SIZE ||
        fresh === 0 ||
        (typeof info?.total_pages === 'number' && page >= info.total_pages)
      if (lastPage) return tokens
    }
    return tokens
  }

  /**
   * `POST …/tokens`. Sent again only after a 429 (a rate-limited request was refused before it was
   * processed, so nothing was minted), never after a failure that leaves open whether it happened:
   * a repeated create could mint a duplicate (api-facts). The value is shown by Cloudflare only
   * once; it is registered with the scrubber here and must be masked by the caller at once.
   */
  async create(
    owner: TokenOwner,
    body: CreateTokenBody
  ): Promise<{ token: ApiToken; value: string }> {
    const params = {
      name: body.name,
      policies: clonePolicies(body.policies) as ClonedPolicyParam[],
      ...(body.condition !== undefined && body.condition !== null
        ? { condition: body.condition as object }
        : {}),
      ...(body.expires_on ? { expires_on: body.expires_on } : {}),
      ...(body.not_before ? { not_before: body.not_before } : {})
    }
    const result = await this.call(
      `create token "${body.name}" (${describeOwner(owner)})`,
      client =>
        owner.kind === 'user'
          ? client.user.tokens.create(params)
          : client.accounts.tokens.create({ account_id: owner.accountId, ...params }),
      { mutating: true, once: true }
    )
    const { value, ...rest } = result
    if (typeof value !== 'string' || value === '') {
      throw new CloudflareApiError(
        `Cloudflare API: create token "${body.name}" answered without a token value` +
          (rest.id ? ` (token ${rest.id} was created; delete it)` : '') +
          '.',
        { ambiguous: true }
      )
    }
    register(value)
    return { token: toApiToken(rest), value }
  }

  /** `DELETE …/tokens/{id}`; a 404 means it is already gone. */
  async delete(owner: TokenOwner, id: string): Promise<'deleted' | 'not-found'> {
    try {
      await this.call(
        `delete token ${id} (${describeOwner(owner)})`,
        client =>
          owner.kind === 'user'
            ? client.user.tokens.delete(id)
            : client.accounts.tokens.delete(id, { account_id: owner.accountId }),
        { mutating: true }
      )
      return 'deleted'
    } catch (error) {
      if (error instanceof CloudflareApiError && error.status === 404) return 'not-found'
      throw error
    }
  }

  /**
   * `PUT …/tokens/{id}` with only the status changed. An update replaces the whole token (an
   * omitted condition or expiry is dropped, credentials.md "PUT … replaces the whole token"), so
   * the token's name, policies (in the create form, without policy ids, as the SDK's
   * `TokenPolicyParam` has none), condition and validity window are sent back as they are.
   */
  async setStatus(
    owner: TokenOwner,
    token: ApiToken,
    status: 'active' | 'disabled'
  ): Promise<ApiToken> {
    const body = {
      name: token.name,
      policies: clonePolicies(token.policies) as ClonedPolicyParam[],
      ...(token.condition !== undefined && token.condition !== null
        ? { condition: token.condition as object }
        : {}),
      ...(token.expires_on ? { expires_on: token.expires_on } : {}),
      ...(token.not_before ? { not_before: token.not_before } : {}),
      status
    }
    const raw = await this.call(
      `set token ${token.id} ${status} (${describeOwner(owner)})`,
      client =>
        owner.kind === 'user'
          ? client.user.tokens.update(token.id, body)
          : client.accounts.tokens.update(token.id, { account_id: owner.accountId, ...body }),
      { mutating: true }
    )
    return toApiToken(raw)
  }

  /**
   * `PUT …/tokens/{id}` that gives the token `expiresOn` and changes nothing else: name, policies
   * (create form, as for setStatus), condition and not_before are sent back as they are, and the
   * status is left out (kept). Policies are never changed here: a PUT replaces them, and a
   * management token sent back without its token permission would lock itself out.
   */
  async setExpiry(owner: TokenOwner, token: ApiToken, expiresOn: string): Promise<ApiToken> {
    const body = {
      name: token.name,
      policies: clonePolicies(token.policies) as ClonedPolicyParam[],
      ...(token.condition !== undefined && token.condition !== null
        ? { condition: token.condition as object }
        : {}),
      expires_on: expiresOn,
      ...(token.not_before ? { not_before: token.not_before } : {})
    }
    const raw = await this.call(
      `set token ${token.id} to expire on ${expiresOn} (${describeOwner(owner)})`,
      client =>
        owner.kind === 'user'
          ? client.user.tokens.update(token.id, body)
          : client.accounts.tokens.update(token.id, { account_id: owner.accountId, ...body }),
      { mutating: true }
    )
    return toApiToken(raw)
  }

  /** The permission groups the owner's tokens may use (id → name), to classify policies by name. */
  async permissionGroups(
    owner: TokenOwner
  ): Promise<Array<{ id: string; name: string; scopes?: string[] }>> {
    const page = await this.call(`list permission groups (${describeOwner(owner)})`, client =>
      owner.kind === 'user'
        ? client.user.tokens.permissionGroups.list()
        : client.accounts.tokens.permissionGroups.list({ account_id: owner.accountId })
    )
    const groups: Array<{ id: string; name: string; scopes?: string[] }> = []
    for (const item of page.getPaginatedItems()) {
      if (!item.id || !item.name) continue
      groups.push(
        item.scopes
          ? { id: item.id, name: item.name, scopes: [...item.scopes] }
          : { id: item.id, name: item.name }
      )
    }
    return groups
  }

  /**
   * Runs one SDK call and turns its failures into `CloudflareApiError`. Waits out a rate limit
   * of at most `MAX_RATE_LIMIT_WAIT_MS`; retries an idempotent call after a dropped connection, a
   * timeout or a server error, with a short exponential backoff. Public for the other Cloudflare
   * APIs the management token calls (workers.ts), which share its client and rate budget.
   */
  async call<T>(
    what: string,
    run: (client: TokenClient) => PromiseLike<T>,
    how: CallKind = {}
  ): Promise<T> {
    const client = await this.clientFor(how.asToken)
    const { APIConnectionTimeoutError, APIError } = await loadSdk()
    let limited = 0
    let troubled = 0
    for (;;) {
      try {
        return await run(client)
      } catch (raw) {
        const error = toCloudflareError(raw, what, how, { APIError, APIConnectionTimeoutError })
        if (error.status === 429) {
          const wait = error.retryAfterMs ?? 1000 * 2 ** limited
          if (wait > MAX_RATE_LIMIT_WAIT_MS || limited >= MAX_RATE_LIMIT_RETRIES) {
            throw rateLimitError(what, wait, this.rate)
          }
          limited++
          this.log.warning(
            `Cloudflare rate limit on ${what}: waiting ${Math.ceil(wait / 1000)} s as Cloudflare asks (nothing was done by the refused request).`
          )
          await this.clock.sleep(wait)
          continue
        }
        const transient =
          error.status === undefined ||
          error.status === 408 ||
          error.status === 409 ||
          error.status >= 500
        if (how.once || !transient || troubled >= this.maxRetries) throw error
        troubled++
        const pause = 500 * 2 ** (troubled - 1) * (0.8 + Math.random() * 0.4)
        this.log.debug(`${error.message} Retrying in ${Math.round(pause)} ms.`)
        await this.clock.sleep(pause)
      }
    }
  }
}

export interface CallKind {
  /** What a 401 or 403 of the management token lacks (default: the API-token permissions). */
  hint?: string
  /** Authenticated as this token (verify checks a token with its own value), not the management token. */
  asToken?: string
  /** Changes state: without an answer it may or may not have happened. */
  mutating?: boolean
  /** Never sent again after a failure, but a rate-limit refusal (create). */
  once?: boolean
}

type ClonedPolicyParam = {
  effect: 'allow' | 'deny'
  permission_groups: Array<{ id: string }>
  resources: Record<string, string> | Record<string, Record<string, string>>
}

function describeOwner(owner: TokenOwner): string {
  return owner.kind === 'user' ? 'user-owned' : `account ${owner.accountId}`
}

function rateLimitError(what: string, waitMs: number, rate: CloudflareRate): CloudflareApiError {
  const seconds = Math.ceil(waitMs / 1000)
  const when = new Date(Date.now() + waitMs).toISOString().replace(/\.\d{3}Z$/, 'Z')
  return new CloudflareApiError(
    `Cloudflare API: ${what} was refused for a rate limit (HTTP 429) and Cloudflare asks to wait ${seconds} s, longer than the ${MAX_RATE_LIMIT_WAIT_MS / 1000} s this action waits for one call. ` +
      `The budget of ${rate.limit ?? 1200} requests per five minutes is shared by every person and tool of this Cloudflare user; past it every call is blocked for five minutes. Run the rotation again after ${when}.`,
    { status: 429, retryAfterMs: waitMs }
  )
}

function toCloudflareError(
  error: unknown,
  what: string,
  how: CallKind,
  { APIError, APIConnectionTimeoutError }: Pick<Sdk, 'APIError' | 'APIConnectionTimeoutError'>
): CloudflareApiError {
  if (error instanceof CloudflareApiError) return error
  let message: string
  let status: number | undefined
  let codes: number[] = []
  let ambiguous = false
  let retryAfter: number | undefined
  let refusedFrom: string | undefined
  if (error instanceof APIError && error.status !== undefined) {
    status = error.status
    const envelope = (error.errors ?? []) as Array<{ code?: unknown; message?: unknown }>
    codes = envelope.map(e => Number(e.code)).filter(code => Number.isFinite(code))
    const details = envelope
      .map(
        e =>
          `${typeof e.message === 'string' ? quoteServer(e.message, 200) : 'error'} (code ${quoteServer(String(e.code), 20)})`
      )
      .join('; ')
    message = `Cloudflare API: ${what} failed with HTTP ${status}${details ? `: ${quoteServer(details)}` : ''}.`
    // 9109 also answers a token used from outside its IP filter ("Cannot use the access token
    // from location: …", as reported in jeessy2/ddns-go#1341): a permission would not help there.
    refusedFrom = locationRefusal(error.status, envelope)
    if (
      how.asToken === undefined &&
      (status === 401 || status === 403) &&
      refusedFrom === undefined
    ) {
      message += ` ${how.hint ?? MANAGEMENT_HINT}`
    }
    retryAfter = retryAfterMs(error.headers?.get('retry-after') ?? undefined)
  } else {
    // No answer (connection error, timeout): a mutating request may still have taken effect.
    ambiguous = how.mutating === true
    const timedOut = error instanceof APIConnectionTimeoutError
    const cause = rootCause(error)
    message = `Cloudflare API: ${what} failed: ${timedOut ? 'the request timed out' : `no answer${cause ? ` (${quoteServer(cause, 100)})` : ''}`}.`
    if (how.mutating)
      message += ` It may have taken effect${how.once ? '; it was not sent again' : ''}.`
  }
  return new CloudflareApiError(scrub(message), {
    status,
    codes,
    ambiguous,
    ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}),
    ...(refusedFrom !== undefined ? { refusedFrom } : {})
  })
}

/**
 * The address an IP condition refused (403 with code 9109 "Cannot use the access token from
 * location: 203.0.113.7"; '' when the text names none), else undefined. Code 9109 alone also
 * means a missing permission, so the text decides.
 */
function locationRefusal(
  status: number,
  envelope: Array<{ code?: unknown; message?: unknown }>
): string | undefined {
  if (status !== 403) return undefined
  for (const e of envelope) {
    if (Number(e.code) !== 9109 || typeof e.message !== 'string') continue
    const match = /from location(?::\s*([0-9a-f.:]{2,45}))?/i.exec(e.message)
    if (match) return match[1] ?? ''
  }
  return undefined
}

const STATUSES = new Set(['active', 'disabled', 'expired'])

/** The SDK's token shape → ours; an answer without id or a known status is an API error. */
function toApiToken(raw: unknown): ApiToken {
  const t = (raw ?? {}) as Record<string, unknown>
  if (typeof t.id !== 'string' || t.id === '') {
    throw new CloudflareApiError('Cloudflare API: a token in the answer has no id.', {})
  }
  if (typeof t.status !== 'string' || !STATUSES.has(t.status)) {
    throw new CloudflareApiError(
      `Cloudflare API: token ${t.id} has an unknown status ${quoteServer(JSON.stringify(t.status), 40)}.`,
      {}
    )
  }
  const token: ApiToken = {
    id: t.id,
    name: typeof t.name === 'string' ? t.name : '',
    status: t.status as ApiToken['status'],
    policies: Array.isArray(t.policies) ? (t.policies as TokenPolicy[]) : []
  }
  for (const key of ['issued_on', 'modified_on'] as const) {
    if (typeof t[key] === 'string') token[key] = t[key]
  }
  for (const key of ['last_used_on', 'expires_on', 'not_before'] as const) {
    if (typeof t[key] === 'string' || t[key] === null) token[key] = t[key]
  }
  if (t.condition !== undefined) token.condition = t.condition
  return token
}

/**
 * Policies ready for a create: without `policies[].id` (a create with a policy id fails with
 * 400, code 1001 "Reusing existing policies is not supported", cloudflare-docs#352), permission
 * groups with only their `id` (names and meta are read-only), resources unchanged.
 */
export function clonePolicies(policies: TokenPolicy[]): TokenPolicy[] {
  return policies.map(policy => ({
    effect: policy.effect,
    permission_groups: policy.permission_groups.map(group => ({ id: group.id })),
    resources: structuredClone(policy.resources)
  }))
}

/** True when two policy lists grant the same (order-insensitive; ignores ids and group names). */
export function samePolicies(a: TokenPolicy[], b: TokenPolicy[]): boolean {
  if (a.length !== b.length) return false
  const key = (policy: TokenPolicy): string =>
    canonicalJson({
      effect: policy.effect,
      groups: policy.permission_groups.map(group => group.id).sort(),
      resources: policy.resources
    })
  const left = a.map(key).sort()
  const right = b.map(key).sort()
  return left.every((k, i) => k === right[i])
}

/**
 * True when two conditions are the same JSON (key order ignored). An absent, null or empty
 * condition all mean "no restriction"; the IP key's two historical spellings (`request.ip`,
 * `request_ip`) count as one; CIDR lists are sets, so the order of primitive list items is ignored.
 */
export function sameCondition(a: unknown, b: unknown): boolean {
  return canonicalJson(normalizeCondition(a), true) === canonicalJson(normalizeCondition(b), true)
}

function normalizeCondition(condition: unknown): unknown {
  if (condition === undefined || condition === null) return {}
  if (typeof condition !== 'object' || Array.isArray(condition)) return condition
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(condition)) {
    out[key === 'request.ip' ? 'request_ip' : key] = value
  }
  return out
}

/** JSON with object keys sorted; optionally with lists of primitives sorted as well. */
function canonicalJson(value: unknown, sortPrimitiveLists = false): string {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) {
      const items = v.map(walk)
      if (sortPrimitiveLists && items.every(i => i === null || typeof i !== 'object')) {
        return [...items].sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1))
      }
      return items
    }
    if (v !== null && typeof v === 'object') {
      const sorted: Record<string, unknown> = {}
      for (const key of Object.keys(v).sort()) {
        const child = (v as Record<string, unknown>)[key]
        if (child !== undefined) sorted[key] = walk(child)
      }
      return sorted
    }
    return v
  }
  return JSON.stringify(walk(value)) ?? 'undefined'
}

/**
 * Tries `attempt` with each owner in turn (the user endpoints, then the account's). A failure
 * that means "not here" (`fallsThrough`) moves on to the next owner; any other failure is thrown.
 * Returns the first owner that worked, or every "not here" failure when none did. Used to find the
 * rotated token's owner and the management token's own.
 */
export async function firstOwner<T>(
  owners: TokenOwner[],
  attempt: (owner: TokenOwner) => Promise<T>,
  fallsThrough: (error: CloudflareApiError) => boolean
): Promise<{ found: { owner: TokenOwner; value: T } } | { failures: CloudflareApiError[] }> {
  const failures: CloudflareApiError[] = []
  for (const owner of owners) {
    try {
      return { found: { owner, value: await attempt(owner) } }
    } catch (error) {
      if (!(error instanceof CloudflareApiError) || !fallsThrough(error)) throw error
      failures.push(error)
    }
  }
  return { failures }
}

/**
 * Finds the owner of the token in use now and reads it.
 * - `user` → user endpoints; `account` → account endpoints (`accountId` required);
 * - `auto` → the user endpoints first; on 403, 404 or Cloudflare code 1000 (what
 *   `/user/tokens/verify` answers for an account-owned token, api-facts) the account endpoints,
 *   when `accountId` is set.
 * The token is identified by `currentAccessKeyId` (`GET …/tokens/{id}`) or, when that is absent,
 * by verifying `currentToken` (`GET …/tokens/verify` as the token itself) and then reading it.
 */
export async function resolveCurrentToken(
  api: TokenApi,
  options: {
    tokenOwner: 'user' | 'account' | 'auto'
    accountId?: string
    currentToken?: string
    currentAccessKeyId?: string
  }
): Promise<{ owner: TokenOwner; token: ApiToken }> {
  const { tokenOwner, accountId, currentToken, currentAccessKeyId } = options
  if (!currentAccessKeyId && !currentToken) {
    throw new InputError(
      'current-token',
      'set current-token or current-access-key-id to the token the deployments use now.'
    )
  }
  const account: TokenOwner | undefined = accountId ? { kind: 'account', accountId } : undefined
  if (tokenOwner === 'account' && !account) {
    throw new InputError(
      'account-id',
      "is required when token-owner is 'account' (the API paths carry it)."
    )
  }
  const owners: TokenOwner[] =
    tokenOwner === 'account'
      ? [account!]
      : tokenOwner === 'user' || !account
        ? [{ kind: 'user' }]
        : [{ kind: 'user' }, account]
  const result = await firstOwner(
    owners,
    async owner => {
      const id = currentAccessKeyId ?? (await api.verify(currentToken!, owner)).id
      return api.get(owner, id)
    },
    error =>
      tokenOwner === 'auto' &&
      error.refusedFrom === undefined &&
      (error.status === 403 || error.status === 404 || error.codes.includes(1000))
  )
  if ('found' in result) return { owner: result.found.owner, token: result.found.value }
  const [user, second] = result.failures
  if (!second) {
    throw new CloudflareApiError(
      `${user!.message} If the current token is account-owned, set account-id (and token-owner: account).`,
      { status: user!.status, codes: user!.codes }
    )
  }
  throw new CloudflareApiError(
    `The current token was found neither among user-owned tokens nor in account ${accountId}. User endpoints: ${user!.message} Account endpoints: ${second.message}`,
    { status: second.status, codes: second.codes }
  )
}
