/**
 * Cloudflare's API token endpoints (user-owned `/user/tokens…` and account-owned
 * `/accounts/{account_id}/tokens…`), through the official `cloudflare` SDK.
 *
 * The SDK retries idempotent requests itself (5xx, 408, 409, 429, connection errors) and honours
 * `retry-after`; a create is never retried (see `create`).
 */
import * as core from '@actions/core'
import Cloudflare, { APIConnectionTimeoutError, APIError } from 'cloudflare'
import { InputError } from '../settings.js'
import { rootCause } from '../errors.js'

export type TokenOwner = { kind: 'user' } | { kind: 'account'; accountId: string }

export interface PermissionGroupRef {
  id: string
  name?: string
  meta?: unknown
}

export interface TokenPolicy {
  id?: string
  effect: 'allow' | 'deny'
  permission_groups: PermissionGroupRef[]
  resources: Record<string, unknown>
}

export interface ApiToken {
  id: string
  name: string
  status: 'active' | 'disabled' | 'expired'
  issued_on?: string
  modified_on?: string
  last_used_on?: string | null
  expires_on?: string | null
  not_before?: string | null
  policies: TokenPolicy[]
  condition?: unknown
}

export interface CreateTokenBody {
  name: string
  policies: TokenPolicy[]
  condition?: unknown
  expires_on?: string
  not_before?: string
}

/**
 * A failed Cloudflare API call. The message is built from the envelope's `errors` (code and
 * message) and never contains a token value: every value the client knows is redacted from it.
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

  constructor(
    message: string,
    options: { status?: number; codes?: number[]; ambiguous?: boolean }
  ) {
    super(message)
    this.name = 'CloudflareApiError'
    this.status = options.status
    this.codes = options.codes ?? []
    this.ambiguous = options.ambiguous ?? false
  }
}

export interface TokenApiOptions {
  /** The management token (input `cloudflare-api-token`). */
  apiToken: string
  /** API base URL (input `cloudflare-api-url`), e.g. `https://api.cloudflare.com/client/v4`. */
  baseURL: string
  /** Retries of idempotent requests (default 3). Creates are never retried. */
  maxRetries?: number
  /** Per-request timeout in milliseconds (default 60 s, the SDK's default). */
  timeoutMs?: number
}

const DEFAULT_MAX_RETRIES = 3
const DEFAULT_TIMEOUT_MS = 60_000
// The list endpoints accept per_page 5..50 (Cloudflare OpenAPI, user-api-tokens-list-tokens).
const PAGE_SIZE = 50
// A quota of 50 user and 500 account tokens (api-facts) fits in 10 pages; the cap guards
// against a server that ignores `page` and answers the same page forever.
const MAX_PAGES = 100

const PERMISSION_HINT =
  "The cloudflare-api-token needs 'API Tokens Write' for user-owned tokens or 'Account API Tokens Write' for account-owned tokens."

function makeClient(
  apiToken: string,
  baseURL: string,
  maxRetries: number,
  timeoutMs: number
): Cloudflare {
  return new Cloudflare({
    apiToken,
    // Explicit nulls: the SDK would otherwise pick up CLOUDFLARE_API_KEY / CLOUDFLARE_EMAIL /
    // CLOUDFLARE_API_USER_SERVICE_KEY from the runner's environment and send them as well.
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL,
    maxRetries,
    timeout: timeoutMs,
    // The SDK's info lines (retries) go to the debug log; its request details are not passed on.
    logLevel: 'info',
    logger: {
      error: (message: string) => core.error(message),
      warn: (message: string) => core.warning(message),
      info: (message: string) => core.debug(message),
      debug: () => undefined
    }
  })
}

export class TokenApi {
  private readonly client: Cloudflare
  private readonly baseURL: string
  private readonly maxRetries: number
  private readonly timeoutMs: number
  /** Values that must never appear in an error message. */
  private readonly secrets: string[]

  constructor(options: TokenApiOptions) {
    this.baseURL = options.baseURL.replace(/\/+$/, '')
    this.maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.secrets = [options.apiToken]
    this.client = makeClient(options.apiToken, this.baseURL, this.maxRetries, this.timeoutMs)
  }

  /** `GET …/tokens/verify` authenticated as `tokenValue` itself (a second client). */
  async verify(
    tokenValue: string,
    owner: TokenOwner
  ): Promise<{ id: string; status: string; expires_on?: string | null }> {
    const client = makeClient(tokenValue, this.baseURL, this.maxRetries, this.timeoutMs)
    const result = await this.call(
      `verify a token (${describeOwner(owner)})`,
      () =>
        owner.kind === 'user'
          ? client.user.tokens.verify()
          : client.accounts.tokens.verify({ account_id: owner.accountId }),
      { asToken: true, secrets: [tokenValue] }
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
    const raw = await this.call(`read token ${id} (${describeOwner(owner)})`, () =>
      owner.kind === 'user'
        ? this.client.user.tokens.get(id)
        : this.client.accounts.tokens.get(id, { account_id: owner.accountId })
    )
    return toApiToken(raw)
  }

  /** Every token of the owner, all pages (the SDK's iterator stops only at an empty page). */
  async list(owner: TokenOwner): Promise<ApiToken[]> {
    const tokens: ApiToken[] = []
    const seen = new Set<string>()
    for (let page = 1; page <= MAX_PAGES; page++) {
      const current = await this.call(`list tokens (${describeOwner(owner)})`, () =>
        owner.kind === 'user'
          ? this.client.user.tokens.list({ page, per_page: PAGE_SIZE })
          : this.client.accounts.tokens.list({
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
   * `POST …/tokens`, never retried: the SDK retries a POST on 408/409/429/5xx and on connection
   * errors by default, and a repeated create could mint a duplicate token (api-facts). The
   * returned value is shown only once by Cloudflare; the caller must mask it at once.
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
      () =>
        owner.kind === 'user'
          ? this.client.user.tokens.create(params, { maxRetries: 0 })
          : this.client.accounts.tokens.create(
              { account_id: owner.accountId, ...params },
              { maxRetries: 0 }
            ),
      { mutating: true, once: true }
    )
    const { value, ...rest } = result
    if (typeof value !== 'string' || value === '') {
      throw new CloudflareApiError(
        `Cloudflare API: create token "${body.name}" answered without a token value` +
          (rest.id ? ` (token ${rest.id} was created; delete it)` : '') +
          '.',
        {}
      )
    }
    this.secrets.push(value)
    return { token: toApiToken(rest), value }
  }

  /** `DELETE …/tokens/{id}`; a 404 means it is already gone. */
  async delete(owner: TokenOwner, id: string): Promise<'deleted' | 'not-found'> {
    try {
      await this.call(
        `delete token ${id} (${describeOwner(owner)})`,
        () =>
          owner.kind === 'user'
            ? this.client.user.tokens.delete(id)
            : this.client.accounts.tokens.delete(id, { account_id: owner.accountId }),
        { mutating: true }
      )
      return 'deleted'
    } catch (error) {
      if (error instanceof CloudflareApiError && error.status === 404) return 'not-found'
      throw error
    }
  }

  /**
   * `PUT …/tokens/{id}` with the status changed. The update replaces the whole token definition
   * and requires `name` and `policies` (SDK `TokenUpdateParams`), so the token's current name,
   * policies (in the create form, without policy ids, as the SDK's `TokenPolicyParam` has none),
   * condition and validity window are sent back unchanged.
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
      () =>
        owner.kind === 'user'
          ? this.client.user.tokens.update(token.id, body)
          : this.client.accounts.tokens.update(token.id, { account_id: owner.accountId, ...body }),
      { mutating: true }
    )
    return toApiToken(raw)
  }

  /** The permission groups the owner's tokens may use (id → name), to classify policies by name. */
  async permissionGroups(
    owner: TokenOwner
  ): Promise<Array<{ id: string; name: string; scopes?: string[] }>> {
    const page = await this.call(`list permission groups (${describeOwner(owner)})`, () =>
      owner.kind === 'user'
        ? this.client.user.tokens.permissionGroups.list()
        : this.client.accounts.tokens.permissionGroups.list({ account_id: owner.accountId })
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

  /** Runs one SDK call and turns its failures into `CloudflareApiError`. */
  private async call<T>(what: string, run: () => PromiseLike<T>, how: CallKind = {}): Promise<T> {
    try {
      return await run()
    } catch (error) {
      throw toCloudflareError(error, what, how, [...this.secrets, ...(how.secrets ?? [])])
    }
  }
}

interface CallKind {
  /** Authenticated as the token being checked (verify), not the management token. */
  asToken?: boolean
  /** More values to redact from the message. */
  secrets?: string[]
  /** Changes state: without an answer it may or may not have happened. */
  mutating?: boolean
  /** Sent once only (create). */
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

function toCloudflareError(
  error: unknown,
  what: string,
  how: CallKind,
  secrets: string[]
): CloudflareApiError {
  if (error instanceof CloudflareApiError) return error
  let message: string
  let status: number | undefined
  let codes: number[] = []
  let ambiguous = false
  if (error instanceof APIError && error.status !== undefined) {
    status = error.status
    const envelope = (error.errors ?? []) as Array<{ code?: unknown; message?: unknown }>
    codes = envelope.map(e => Number(e.code)).filter(code => Number.isFinite(code))
    const details = envelope
      .map(e => `${typeof e.message === 'string' ? e.message : 'error'} (code ${String(e.code)})`)
      .join('; ')
    message = `Cloudflare API: ${what} failed with HTTP ${status}${details ? `: ${details}` : ''}.`
    if (!how.asToken && (status === 401 || status === 403)) message += ` ${PERMISSION_HINT}`
  } else {
    // No answer (connection error, timeout): a mutating request may still have taken effect.
    ambiguous = how.mutating === true
    const timedOut = error instanceof APIConnectionTimeoutError
    const cause = rootCause(error)
    message = `Cloudflare API: ${what} failed: ${timedOut ? 'the request timed out' : `no answer${cause ? ` (${cause})` : ''}`}.`
    if (how.mutating)
      message += ` It may have taken effect${how.once ? '; it was not retried' : ''}.`
  }
  return new CloudflareApiError(redact(message, secrets), { status, codes, ambiguous })
}

function redact(text: string, secrets: string[]): string {
  let out = text
  for (const secret of secrets) {
    if (secret) out = out.split(secret).join('***')
  }
  return out
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
      `Cloudflare API: token ${t.id} has an unknown status ${JSON.stringify(t.status)}.`,
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

  const identify = async (owner: TokenOwner): Promise<{ owner: TokenOwner; token: ApiToken }> => {
    const id = currentAccessKeyId ?? (await api.verify(currentToken!, owner)).id
    return { owner, token: await api.get(owner, id) }
  }

  if (tokenOwner === 'account') return identify(account!)
  if (tokenOwner === 'user') return identify({ kind: 'user' })

  try {
    return await identify({ kind: 'user' })
  } catch (error) {
    const fallback =
      error instanceof CloudflareApiError &&
      (error.status === 403 || error.status === 404 || error.codes.includes(1000))
    if (!fallback) throw error
    if (!account) {
      throw new CloudflareApiError(
        `${error.message} If the current token is account-owned, set account-id (and token-owner: account).`,
        { status: error.status, codes: error.codes }
      )
    }
    core.debug(
      `Current token not found among user-owned tokens; trying account ${account.accountId}`
    )
    try {
      return await identify(account)
    } catch (second) {
      if (!(second instanceof CloudflareApiError)) throw second
      throw new CloudflareApiError(
        `The current token was found neither among user-owned tokens nor in account ${account.accountId}. User endpoints: ${error.message} Account endpoints: ${second.message}`,
        { status: second.status, codes: second.codes }
      )
    }
  }
}
