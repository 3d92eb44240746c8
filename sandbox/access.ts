/**
 * Cloudflare Access service tokens, account level (`/accounts/{account_id}/access/service_tokens…`):
 * list, create, get, update (PUT), delete, refresh and rotate, as described by
 * sandbox/openapi/cloudflare-access-workers-openapi.json. The Cloudflare simulator routes these
 * calls here after validating them against the excerpt, spending the rate budget, authenticating
 * the API token and checking its permission groups on the account; so they share its base URL,
 * authentication, rate limits, clock and request log.
 *
 * A service token has a client id that never changes and a client secret that rotation replaces.
 * Machines present both to an Access application (`CF-Access-Client-Id`,
 * `CF-Access-Client-Secret`); `verifyClientCredentials` is the check such an application makes
 * (sandbox/access-app.ts).
 *
 * Grace windows (the excerpt's rotate and `previous_client_secret_expires_at`): rotate makes a new
 * secret and keeps the old one valid until `previous_client_secret_expires_at`; "If not provided,
 * it defaults to the current timestamp in order to immediately expire the previous secret." A PUT
 * can move that time later or earlier ("you may extend it further into the future … or move it
 * into the past to immediately invalidate the previous token"). Every check uses the simulator's
 * clock (`cloudflare.now()`), so a test ends a grace window by moving `cloudflare.skewMs`.
 *
 * Error answers: an unknown token id answers 404, 12135 `access.api.error.not_found` (observed
 * for other Access objects in a public report of the Python SDK's error text; for service tokens
 * UNCONFIRMED). A body the simulator refuses (a malformed duration, a past expiry, a lower
 * `client_secret_version`) answers 400 with code 12000 `access.api.error.invalid_request`: the
 * code and text are this simulator's choice.
 *
 * UNCONFIRMED behaviours (no official source says so; listed in sandbox/README.md):
 * - Only one previous secret exists: rotating again while a grace window is open ends the older
 *   secret at once (`service_token.rotated` says so with `ended_previous`).
 * - A PUT changes only the fields it sends (every body field is optional, and the SDK's own
 *   example updates with no field at all); an omitted `previous_client_secret_expires_at` keeps the
 *   window as it is. This is the opposite of the API-token PUT, which replaces the whole token.
 * - A PUT that raises `client_secret_version` rotates ("Incrementing it triggers a rotation"), but
 *   its answer (the plain token object) does not carry the new secret.
 * - A PUT of `previous_client_secret_expires_at` without a previous secret has no effect.
 * - A changed `duration` applies from the next refresh; `expires_at` stays.
 * - Refresh sets `expires_at` to the later of now and the current `expires_at`, plus the
 *   duration; a `forever` token has no `expires_at` and refresh leaves it so.
 * - Create and seeds without a duration get the documented default, 8760h. A token past its
 *   `expires_at` refuses both secrets.
 * - New client ids look like `<32 hex>.access` and new secrets like `cfast_<64 hex>` (the design
 *   notes: "new secrets look like `cfast_…`"; the part after the prefix is a guess).
 * - `last_seen_at` is set each time an Access application accepts the token (its freshness is
 *   undocumented).
 * - `search` on list matches a part of the name, case-insensitively; `name` matches it exactly.
 */
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'
import type { RequestLog } from './log.js'
import {
  failure,
  success,
  timestamp,
  type AccountApi,
  type AccountCall,
  type Clock,
  type Outcome
} from './cloudflare-api.js'

/** The permission groups of these endpoints, as the excerpt's `x-api-token-group` names them. */
export const ACCESS_GROUPS = {
  read: 'Access: Service Tokens Read',
  write: 'Access: Service Tokens Write'
} as const

export const ACCESS_ERROR_CODES = {
  /** Observed for Access objects (see the file comment). */
  notFound: 12135,
  /** This simulator's choice. */
  invalidRequest: 12000
} as const

/** "The default is 1 year in hours (8760h)" (the excerpt's `access_duration`). */
export const DEFAULT_SERVICE_TOKEN_DURATION = '8760h'

export interface ServiceTokenRecord {
  id: string
  accountId: string
  name: string
  clientId: string
  clientSecret: string
  /** Starts at 1 (the excerpt's default) and grows with every rotation. */
  clientSecretVersion: number
  /** The secret a rotation replaced, and until when (epoch ms, simulator time) it is accepted. */
  previous?: { clientSecret: string; expiresAt: number }
  duration: string
  /** Epoch ms; undefined for a `forever` token. */
  expiresAt?: number
  enabled: boolean
  createdAt: number
  updatedAt: number
  lastSeenAt?: number
}

/** What a test may read about a service token: everything but its secrets. */
export interface ServiceTokenState {
  id: string
  accountId: string
  name: string
  clientId: string
  clientSecretVersion: number
  enabled: boolean
  duration: string
  expiresAt?: string
  /** When the previous secret stops (or stopped) being accepted; undefined when none exists. */
  previousExpiresAt?: string
  /** Whether the previous secret is accepted right now. */
  previousValid: boolean
  lastSeenAt?: string
}

export interface SeedServiceToken {
  accountId: string
  name: string
  /** Default 8760h; `forever` for a token that never expires. */
  duration?: string
  /** Default: created + duration (none for `forever`). RFC 3339. */
  expiresAt?: string
  /** Default true. */
  enabled?: boolean
  /** Default: a fresh `cfast_…` secret. */
  clientSecret?: string
  /** A previous secret still inside (or past) its grace window, as after a rotation. */
  previous?: { clientSecret: string; expiresAt: string }
  /** Default: now. RFC 3339. */
  createdAt?: string
}

export interface SeededServiceToken {
  id: string
  clientId: string
  clientSecret: string
}

/** Why a presented id/secret pair was accepted or refused. */
export type ClientCredentialCheck =
  | { ok: true; tokenId: string; clientId: string; secret: 'current' | 'previous' }
  | {
      ok: false
      reason:
        | 'missing credentials'
        | 'unknown client id'
        | 'not allowed by the application'
        | 'token disabled'
        | 'token expired'
        | 'previous secret expired'
        | 'wrong secret'
      clientId?: string
    }

interface TokenBody {
  name?: string
  duration?: string
  enabled?: boolean
  client_secret_version?: number
  previous_client_secret_expires_at?: string
}

const OPERATIONS = {
  'access-service-tokens-list-service-tokens': [ACCESS_GROUPS.read, ACCESS_GROUPS.write],
  'access-service-tokens-create-a-service-token': [ACCESS_GROUPS.write],
  'access-service-tokens-get-a-service-token': [ACCESS_GROUPS.read, ACCESS_GROUPS.write],
  'access-service-tokens-update-a-service-token': [ACCESS_GROUPS.write],
  'access-service-tokens-delete-a-service-token': [ACCESS_GROUPS.write],
  'access-service-tokens-refresh-a-service-token': [ACCESS_GROUPS.write],
  // The excerpt names no group for rotate; it writes a secret, so Write (inferred).
  'access-service-tokens-rotate-a-service-token': [ACCESS_GROUPS.write]
} as const satisfies Record<string, readonly string[]>

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000
}

/**
 * A Go duration (`300ms`, `2h45m`; units ns, us/µs, ms, s, m, h: the excerpt's `access_duration`)
 * in milliseconds, `Infinity` for `forever`, or undefined when malformed or not positive.
 */
export function parseServiceTokenDuration(value: string): number | undefined {
  if (value === 'forever') return Infinity
  if (!/^(\d+(\.\d+)?(ns|us|µs|μs|ms|s|m|h))+$/.test(value)) return undefined
  let total = 0
  for (const [, amount, , unit] of value.matchAll(/(\d+(\.\d+)?)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(amount) * UNIT_MS[unit!]!
  }
  return total > 0 ? total : undefined
}

function newClientId(): string {
  return `${randomBytes(16).toString('hex')}.access`
}

function newClientSecret(): string {
  return `cfast_${randomBytes(32).toString('hex')}`
}

function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8')
  const right = Buffer.from(b, 'utf8')
  return left.length === right.length && timingSafeEqual(left, right)
}

export class AccessSim implements AccountApi {
  readonly operations: Readonly<Record<string, readonly string[]>> = OPERATIONS
  private readonly tokens = new Map<string, ServiceTokenRecord>()
  /** Every client secret ever issued or seeded (for leak scans); never printed. */
  private readonly issued: string[] = []

  constructor(
    private readonly log: RequestLog,
    private readonly now: Clock
  ) {}

  /** Seeds a token directly (no HTTP, no permission checks, no log event). */
  addServiceToken(seed: SeedServiceToken): SeededServiceToken {
    const duration = seed.duration ?? DEFAULT_SERVICE_TOKEN_DURATION
    const lifetime = parseServiceTokenDuration(duration)
    if (lifetime === undefined) throw new Error(`seed ${seed.name}: bad duration ${duration}`)
    const createdAt = seed.createdAt !== undefined ? Date.parse(seed.createdAt) : this.now()
    const expiresAt =
      seed.expiresAt !== undefined
        ? Date.parse(seed.expiresAt)
        : Number.isFinite(lifetime)
          ? createdAt + lifetime
          : undefined
    const token: ServiceTokenRecord = {
      id: randomUUID(),
      accountId: seed.accountId,
      name: seed.name,
      clientId: newClientId(),
      clientSecret: seed.clientSecret ?? newClientSecret(),
      clientSecretVersion: seed.previous ? 2 : 1,
      ...(seed.previous
        ? {
            previous: {
              clientSecret: seed.previous.clientSecret,
              expiresAt: Date.parse(seed.previous.expiresAt)
            }
          }
        : {}),
      duration,
      ...(expiresAt !== undefined ? { expiresAt } : {}),
      enabled: seed.enabled ?? true,
      createdAt,
      updatedAt: createdAt
    }
    this.tokens.set(token.id, token)
    this.issued.push(token.clientSecret, ...(seed.previous ? [seed.previous.clientSecret] : []))
    return { id: token.id, clientId: token.clientId, clientSecret: token.clientSecret }
  }

  /** A token's state without its secrets, or undefined when it does not exist (deleted). */
  serviceToken(id: string): ServiceTokenState | undefined {
    const token = this.tokens.get(id)
    return token && this.state(token)
  }

  /** The live tokens of an account (all accounts when omitted). */
  serviceTokens(accountId?: string): ServiceTokenState[] {
    return [...this.tokens.values()]
      .filter(t => accountId === undefined || t.accountId === accountId)
      .map(t => this.state(t))
  }

  /**
   * The instants (epoch ms, simulator time) at which time alone changes what a token accepts: its
   * expiry, and the end of its previous secret's grace window. Past ones included.
   */
  timedInstants(): number[] {
    return [...this.tokens.values()].flatMap(t => [
      ...(t.expiresAt !== undefined ? [t.expiresAt] : []),
      ...(t.previous ? [t.previous.expiresAt] : [])
    ])
  }

  /** Every client secret ever issued or seeded, current, previous and deleted alike. */
  secretValues(): string[] {
    return [...this.issued]
  }

  /**
   * What Access decides for a presented `CF-Access-Client-Id` / `CF-Access-Client-Secret` pair
   * right now (simulator time): the token exists (in `accountId`, and among `tokenIds` when the
   * application names its tokens), is enabled and unexpired, and the secret is the current one or
   * the previous one inside its grace window. An accepted pair sets the token's `last_seen_at`.
   */
  verifyClientCredentials(
    clientId: string | undefined,
    clientSecret: string | undefined,
    policy: { accountId?: string; tokenIds?: readonly string[] } = {}
  ): ClientCredentialCheck {
    if (!clientId || !clientSecret) return { ok: false, reason: 'missing credentials' }
    const token = [...this.tokens.values()].find(
      t =>
        t.clientId === clientId &&
        (policy.accountId === undefined || t.accountId === policy.accountId)
    )
    if (!token) return { ok: false, reason: 'unknown client id', clientId }
    if (policy.tokenIds !== undefined && !policy.tokenIds.includes(token.id)) {
      return { ok: false, reason: 'not allowed by the application', clientId }
    }
    // "A disabled service token cannot be used to authenticate; both its current and previous
    // `client_secret` stop being accepted" (the excerpt's `enabled`).
    if (!token.enabled) return { ok: false, reason: 'token disabled', clientId }
    const now = this.now()
    if (token.expiresAt !== undefined && token.expiresAt <= now) {
      return { ok: false, reason: 'token expired', clientId }
    }
    let secret: 'current' | 'previous' | undefined
    if (sameSecret(clientSecret, token.clientSecret)) secret = 'current'
    else if (token.previous && sameSecret(clientSecret, token.previous.clientSecret)) {
      if (token.previous.expiresAt <= now) {
        return { ok: false, reason: 'previous secret expired', clientId }
      }
      secret = 'previous'
    }
    if (!secret) return { ok: false, reason: 'wrong secret', clientId }
    token.lastSeenAt = now
    return { ok: true, tokenId: token.id, clientId, secret }
  }

  handle(call: AccountCall): Outcome {
    const accountId = call.accountId
    switch (call.operationId) {
      case 'access-service-tokens-list-service-tokens':
        return this.list(accountId, call.query)
      case 'access-service-tokens-create-a-service-token':
        return this.create(accountId, call.body as TokenBody & { name: string })
    }
    const id = call.params['service_token_id'] ?? ''
    const token = this.tokens.get(id)
    if (!token || token.accountId !== accountId) {
      return failure(404, {
        code: ACCESS_ERROR_CODES.notFound,
        message: 'access.api.error.not_found'
      })
    }
    switch (call.operationId) {
      case 'access-service-tokens-get-a-service-token':
        return success(this.toApi(token))
      case 'access-service-tokens-update-a-service-token':
        return this.update(token, (call.body ?? {}) as TokenBody)
      case 'access-service-tokens-delete-a-service-token':
        this.tokens.delete(token.id)
        this.log.event('cloudflare', 'service_token.deleted', { id: token.id, name: token.name })
        // The excerpt answers delete with the deleted object (access_single_response-2).
        return success(this.toApi(token))
      case 'access-service-tokens-refresh-a-service-token':
        return this.refresh(token)
      case 'access-service-tokens-rotate-a-service-token':
        return this.rotateOutcome(token, (call.body ?? {}) as TokenBody)
      default:
        throw new Error(`AccessSim: no handler for ${call.operationId}`)
    }
  }

  private list(accountId: string, query: URLSearchParams): Outcome {
    const name = query.get('name')
    const search = query.get('search')?.toLowerCase()
    const page = Math.max(1, Math.floor(Number(query.get('page') ?? 1)) || 1)
    const perPage = Math.max(1, Math.floor(Number(query.get('per_page') ?? 20)) || 20)
    const all = [...this.tokens.values()].filter(
      t =>
        t.accountId === accountId &&
        (name === null || t.name === name) &&
        (search === undefined || t.name.toLowerCase().includes(search))
    )
    const items = all.slice((page - 1) * perPage, page * perPage)
    return success(
      items.map(t => this.toApi(t)),
      {
        result_info: {
          page,
          per_page: perPage,
          count: items.length,
          total_count: all.length,
          total_pages: Math.max(1, Math.ceil(all.length / perPage))
        }
      }
    )
  }

  private create(accountId: string, body: TokenBody & { name: string }): Outcome {
    const duration = body.duration ?? DEFAULT_SERVICE_TOKEN_DURATION
    const lifetime = parseServiceTokenDuration(duration)
    if (lifetime === undefined) return this.invalid(`invalid duration: ${duration}`)
    const now = this.now()
    const token: ServiceTokenRecord = {
      id: randomUUID(),
      accountId,
      name: body.name,
      clientId: newClientId(),
      clientSecret: newClientSecret(),
      clientSecretVersion: body.client_secret_version ?? 1,
      duration,
      ...(Number.isFinite(lifetime) ? { expiresAt: now + lifetime } : {}),
      enabled: body.enabled ?? true,
      createdAt: now,
      updatedAt: now
    }
    this.tokens.set(token.id, token)
    this.issued.push(token.clientSecret)
    this.log.event('cloudflare', 'service_token.created', {
      id: token.id,
      name: token.name,
      client_id: token.clientId
    })
    // "This is the only time you can get the Client Secret" (with rotate).
    return {
      status: 201,
      body: success({ ...this.toApi(token), client_secret: token.clientSecret }).body
    }
  }

  private update(token: ServiceTokenRecord, body: TokenBody): Outcome {
    const changed: string[] = []
    if (body.duration !== undefined) {
      if (parseServiceTokenDuration(body.duration) === undefined) {
        return this.invalid(`invalid duration: ${body.duration}`)
      }
    }
    let expiry: number | undefined
    if (body.previous_client_secret_expires_at !== undefined) {
      expiry = Date.parse(body.previous_client_secret_expires_at)
      if (Number.isNaN(expiry)) return this.invalid('invalid previous_client_secret_expires_at')
    }
    const version = body.client_secret_version
    if (version !== undefined && version < token.clientSecretVersion) {
      return this.invalid(
        `client_secret_version may only grow (it is ${token.clientSecretVersion})`
      )
    }
    if (body.name !== undefined && body.name !== token.name) {
      token.name = body.name
      changed.push('name')
    }
    if (body.duration !== undefined && body.duration !== token.duration) {
      token.duration = body.duration
      changed.push('duration')
    }
    if (body.enabled !== undefined && body.enabled !== token.enabled) {
      token.enabled = body.enabled
      changed.push('enabled')
    }
    if (version !== undefined && version > token.clientSecretVersion) {
      // "Incrementing it triggers a rotation"; the new secret is not in this answer.
      this.rotate(token, expiry, version)
      changed.push('client_secret_version')
    } else if (expiry !== undefined) {
      if (token.previous) {
        token.previous.expiresAt = expiry
        changed.push('previous_client_secret_expires_at')
      }
    }
    token.updatedAt = this.now()
    this.log.event('cloudflare', 'service_token.updated', {
      id: token.id,
      name: token.name,
      changed,
      enabled: token.enabled,
      previous_expires_at:
        token.previous !== undefined ? timestamp(token.previous.expiresAt) : null,
      previous_valid: this.previousValid(token)
    })
    return success(this.toApi(token))
  }

  private refresh(token: ServiceTokenRecord): Outcome {
    const lifetime = parseServiceTokenDuration(token.duration) ?? Infinity
    if (Number.isFinite(lifetime)) {
      token.expiresAt = Math.max(this.now(), token.expiresAt ?? 0) + lifetime
    }
    token.updatedAt = this.now()
    this.log.event('cloudflare', 'service_token.refreshed', {
      id: token.id,
      name: token.name,
      expires_at: token.expiresAt !== undefined ? timestamp(token.expiresAt) : null
    })
    return success(this.toApi(token))
  }

  private rotateOutcome(token: ServiceTokenRecord, body: TokenBody): Outcome {
    let expiry: number | undefined
    if (body.previous_client_secret_expires_at !== undefined) {
      expiry = Date.parse(body.previous_client_secret_expires_at)
      if (Number.isNaN(expiry)) return this.invalid('invalid previous_client_secret_expires_at')
    }
    this.rotate(token, expiry, token.clientSecretVersion + 1)
    token.updatedAt = this.now()
    return success({ ...this.toApi(token), client_secret: token.clientSecret })
  }

  /**
   * A new current secret; the old one stays valid until `previousExpiresAt` (default: now, so it
   * dies at once). An earlier previous secret still inside its window ends here (UNCONFIRMED).
   */
  private rotate(
    token: ServiceTokenRecord,
    previousExpiresAt: number | undefined,
    version: number
  ): void {
    const now = this.now()
    const endedPrevious = this.previousValid(token)
    token.previous = { clientSecret: token.clientSecret, expiresAt: previousExpiresAt ?? now }
    token.clientSecret = newClientSecret()
    token.clientSecretVersion = version
    this.issued.push(token.clientSecret)
    this.log.event('cloudflare', 'service_token.rotated', {
      id: token.id,
      name: token.name,
      client_id: token.clientId,
      client_secret_version: version,
      previous_expires_at: timestamp(token.previous.expiresAt),
      grace_ms: Math.max(0, token.previous.expiresAt - now),
      ended_previous: endedPrevious
    })
  }

  private previousValid(token: ServiceTokenRecord): boolean {
    return token.previous !== undefined && token.previous.expiresAt > this.now()
  }

  private invalid(message: string): Outcome {
    return failure(400, {
      code: ACCESS_ERROR_CODES.invalidRequest,
      message: `access.api.error.invalid_request: ${message}`
    })
  }

  private state(token: ServiceTokenRecord): ServiceTokenState {
    return {
      id: token.id,
      accountId: token.accountId,
      name: token.name,
      clientId: token.clientId,
      clientSecretVersion: token.clientSecretVersion,
      enabled: token.enabled,
      duration: token.duration,
      ...(token.expiresAt !== undefined ? { expiresAt: timestamp(token.expiresAt) } : {}),
      ...(token.previous ? { previousExpiresAt: timestamp(token.previous.expiresAt) } : {}),
      previousValid: this.previousValid(token),
      ...(token.lastSeenAt !== undefined ? { lastSeenAt: timestamp(token.lastSeenAt) } : {})
    }
  }

  /**
   * The token as get and list show it: the excerpt's `access_service-tokens` (id, name, client_id,
   * created_at, updated_at, expires_at, duration, last_seen_at) and the SDK's `enabled`. Never a
   * secret.
   */
  private toApi(token: ServiceTokenRecord): Record<string, unknown> {
    return {
      id: token.id,
      name: token.name,
      client_id: token.clientId,
      created_at: timestamp(token.createdAt),
      updated_at: timestamp(token.updatedAt),
      ...(token.expiresAt !== undefined ? { expires_at: timestamp(token.expiresAt) } : {}),
      duration: token.duration,
      enabled: token.enabled,
      ...(token.lastSeenAt !== undefined ? { last_seen_at: timestamp(token.lastSeenAt) } : {})
    }
  }
}
