/**
 * A local simulator of Cloudflare's API token endpoints (`/client/v4/user/tokens…` and
 * `/client/v4/accounts/{account_id}/tokens…`): create, list, get, update, delete, roll, verify and
 * permission groups, with the `{success, errors, messages, result, result_info}` envelope.
 *
 * Every request is routed and validated against sandbox/openapi/cloudflare-tokens-openapi.json and
 * every answer is validated too; each mismatch is recorded in the RequestLog as a violation, and
 * a request the description rejects gets a 400, as the real API would give.
 *
 * Error answers, and where they come from (the real API documents few of them):
 * - no Authorization header: 400, 9106 "Missing X-Auth-Key, X-Auth-Email or Authorization headers"
 *   (observed on api.cloudflare.com by many public clients);
 * - an Authorization header that is not `Bearer <token>`: 400, 6003 "Invalid request headers" with
 *   error_chain 6111 "Invalid format for Authorization header" (observed likewise);
 * - a token that may not be used here (unknown, deleted, rolled, disabled, expired, not yet valid,
 *   or owned elsewhere): on verify 401, 1000 "Invalid API Token"; elsewhere 403, 9109 "Invalid
 *   access token" (both observed; `/user/tokens/verify` answers 1000 for account-owned tokens);
 * - a valid token without the needed permission group: 403, 9109 "Unauthorized to access requested
 *   resource" (what token creation answers without "API Tokens Write",
 *   cloudflare/terraform-provider-cloudflare#3227);
 * - create with `policies[].id`: 400, 1001 "Reusing existing policies is not supported by token
 *   creation" (cloudflare/cloudflare-docs#352);
 * - other bad requests (invalid body, unknown permission group, over the token quota): 400, 1001,
 *   the token service's generic bad-request code. The quota code is not documented: 1001 is this
 *   simulator's choice.
 * - a token id that does not exist for this owner (user endpoints never see account-owned tokens
 *   and vice versa): 404, 7003 "Could not route to …, perhaps your object identifier is invalid?",
 *   Cloudflare's wording for an unknown object identifier. The real code is not documented.
 * - a path that matches no operation: 400, 7003 + 7000 "No route for that URI".
 * - a token whose IP condition excludes the client's address (only when `enforceConditions` is
 *   on): 403, 9109 "Cannot use the access token from location: <address>" (observed on
 *   api.cloudflare.com, jeessy2/ddns-go#1341 and #1273). UNCONFIRMED: that verify answers the same
 *   (the reports are of other endpoints); the simulator answers it on every endpoint.
 * - over the rate limit: 429, 971 "Please wait and consider throttling your request speed" (the
 *   code and text as wrangler prints them from the API, cloudflare/workers-sdk#10025; the same
 *   text in lablabs/cloudflare-exporter#74), with `Retry-After` (see "Rate limits" below).
 *
 * Rate limits (developers.cloudflare.com/fundamentals/api/reference/limits/, and the changelog
 * "Introducing new headers for rate limiting on Cloudflare's API", 2025-09-03): 1,200 requests per
 * five minutes per user, "cumulatively regardless of whether the request is made via the dashboard,
 * API key, or API token"; past it "all API calls for the next five minutes will be blocked" with
 * 429. Every answer carries `Ratelimit: "default";r=<remaining>;t=<seconds until the window
 * resets>` and `Ratelimit-Policy: "default";q=<quota>;w=<window seconds>`; a 429 also carries
 * `Retry-After` (seconds, rounded up). The simulator keeps one budget per owner: the user (all its
 * tokens share it) and each account (its account-owned tokens share it). UNCONFIRMED: the docs say
 * "per user/account token"; whether two account-owned tokens of one account share a budget is not
 * stated, and sharing is the cautious reading. UNCONFIRMED too: the policy name `default` in
 * `Ratelimit-Policy` (the docs' example names it `burst`), and that `t` counts down the block
 * while blocked. A request whose Authorization names no known token (missing, malformed, unknown,
 * deleted or rolled value) counts against one `anonymous` budget, which stands in for the per-IP
 * limit; the 200 requests per second per IP are not simulated. Injected faults are not counted
 * (they stand for failures before the API).
 *
 * Time: the simulator's clock is `Date.now() + skewMs` (see `skewMs`); every timestamp it writes,
 * its expiry and not_before checks, its rate windows and its `Date` header follow it, and so does
 * the R2 simulator that shares it.
 *
 * Account APIs: the same base URL also serves Access service tokens (`access`, sandbox/access.ts)
 * and Workers script secrets and deployments (`workers`, sandbox/workers.ts), validated against
 * sandbox/openapi/cloudflare-access-workers-openapi.json. They share the authentication, the rate
 * budgets, the clock and the request log; a token without one of the operation's permission
 * groups (the excerpt's `x-api-token-group`) on the account gets 403, 9109 "Unauthorized to access
 * requested resource", as the token endpoints answer. UNCONFIRMED: a public note reports that
 * listing service tokens without "Access: Service Tokens Read" answers 200 with an empty list
 * rather than 403; the simulator answers 403, which an action notices.
 */
import { randomBytes, randomInt } from 'node:crypto'
import { AccessSim } from './access.js'
import { failure, success, timestamp, type AccountApi, type Outcome } from './cloudflare-api.js'
import {
  conditionAllows as ipConditionAllows,
  hasIpRule,
  normalizeAddress
} from './ip-condition.js'
import type { RequestLog } from './log.js'
import { OpenApiValidator, type MatchedOperation } from './openapi.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'
import { WorkersSim } from './workers.js'

export interface CfPermissionGroupRef {
  id: string
  name?: string
}

export interface CfPolicy {
  id: string
  effect: 'allow' | 'deny'
  permission_groups: CfPermissionGroupRef[]
  resources: Record<string, unknown>
}

export type CfOwner = { kind: 'user' } | { kind: 'account'; accountId: string }

export interface CfTokenRecord {
  id: string
  value: string
  name: string
  status: 'active' | 'disabled' | 'expired'
  issued_on: string
  modified_on: string
  last_used_on: string | null
  expires_on?: string
  not_before?: string
  policies: CfPolicy[]
  condition?: unknown
  owner: CfOwner
}

export interface SeedToken {
  name: string
  /** Default: user-owned. */
  owner?: CfOwner
  /** Default: a fresh `cfut_`/`cfat_` value. */
  value?: string
  policies: Array<Omit<CfPolicy, 'id'> & { id?: string }>
  condition?: unknown
  status?: 'active' | 'disabled'
  issued_on?: string
  expires_on?: string
  not_before?: string
}

const USER_SCOPE = 'com.cloudflare.api.user'
const ACCOUNT_SCOPE = 'com.cloudflare.api.account'
const ZONE_SCOPE = 'com.cloudflare.api.account.zone'
const R2_BUCKET_SCOPE = 'com.cloudflare.edge.r2.bucket'

/**
 * The permission groups the simulator knows, with Cloudflare's public ids. Token permissions:
 * cloudflare-docs "API Tokens Permissions" list; Account API Tokens Read/Write as seen in public
 * account-token tooling; the R2 groups as in /work/shared/design/api-facts.md. The names of the
 * Access service-token and Workers groups are the excerpt's `x-api-token-group`; their ids (and
 * Workers Tail Read's) come from a public static copy of `GET /user/tokens/permission_groups`
 * (the alchemy project's PermissionGroups catalog, 2026), the Access ids corroborated by other
 * public token tooling. Not from Cloudflare's documentation, which lists no ids: resolve names
 * through the permission-groups endpoint.
 */
export const PERMISSION_GROUPS: ReadonlyArray<{ id: string; name: string; scopes: string[] }> = [
  { id: '0cc3a61731504c89b99ec1be78b77aa0', name: 'API Tokens Read', scopes: [USER_SCOPE] },
  { id: '686d18d5ac6c441c867cbf6771e58a0a', name: 'API Tokens Write', scopes: [USER_SCOPE] },
  { id: '3518d0f75557482e952c6762d3e64903', name: 'Memberships Read', scopes: [USER_SCOPE] },
  { id: '8acbe5bb0d54464ab867149d7f7cf8ac', name: 'User Details Read', scopes: [USER_SCOPE] },
  {
    id: 'eb56a6953c034b9d97dd838155666f06',
    name: 'Account API Tokens Read',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: '5bc3f8b21c554832afc660159ab75fa4',
    name: 'Account API Tokens Write',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: 'c1fde68c7bcc44588cbb6ddbc16d6480',
    name: 'Account Settings Read',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: 'bf7481a1826f439697cb59a20b22293e',
    name: 'Workers R2 Storage Write',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: 'b4992e1108244f5d8bfbd5744320c2e1',
    name: 'Workers R2 Storage Read',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: '2efd5506f9c8494dacb1fa10a3e7d5b6',
    name: 'Workers R2 Storage Bucket Item Write',
    scopes: [R2_BUCKET_SCOPE]
  },
  {
    id: '6a018a9f2fc74eb6b293b0c548f38b39',
    name: 'Workers R2 Storage Bucket Item Read',
    scopes: [R2_BUCKET_SCOPE]
  },
  { id: '1a71c399035b4950a1bd1466bbe4f420', name: 'Workers Scripts Read', scopes: [ACCOUNT_SCOPE] },
  { id: '05880cd1bdc24d8bae0be2136972816b', name: 'Workers Tail Read', scopes: [ACCOUNT_SCOPE] },
  {
    id: '91f7ce32fa614d73b7e1fc8f0e78582b',
    name: 'Access: Service Tokens Read',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: 'a1c0fec57cf94af79479a6d827fa518c',
    name: 'Access: Service Tokens Write',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: 'e086da7e2179491d91ee5f35b3ca210a',
    name: 'Workers Scripts Write',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: '8b47d2786a534c08a1f94ee8f9f599ef',
    name: 'Workers KV Storage Read',
    scopes: [ACCOUNT_SCOPE]
  },
  {
    id: 'f7f0eda5697f475c90846e879bab8666',
    name: 'Workers KV Storage Write',
    scopes: [ACCOUNT_SCOPE]
  },
  { id: 'c8fed203ed3043cba015a93ad1616f1f', name: 'Zone Read', scopes: [ZONE_SCOPE] },
  { id: '82e64a83756745bbbb1c9c2701bf816b', name: 'DNS Read', scopes: [ZONE_SCOPE] },
  { id: '4755a26eedb94da69e1066d98aa820be', name: 'DNS Write', scopes: [ZONE_SCOPE] }
]

/** The error codes the simulator answers with (see the file comment for their sources). */
export const CF_ERROR_CODES = {
  invalidApiToken: 1000,
  badRequest: 1001,
  reusedPolicy: 1001,
  quotaExceeded: 1001,
  invalidHeaders: 6003,
  malformedJson: 6007,
  invalidAuthorizationFormat: 6111,
  noRoute: 7000,
  unknownObject: 7003,
  missingAuth: 9106,
  unauthorized: 9109,
  forbiddenLocation: 9109,
  rateLimited: 971
} as const

/** Token quotas (developers.cloudflare.com/fundamentals/api/reference/limits, cloudflare-docs#20525). */
export const TOKEN_QUOTA = { user: 50, account: 500 } as const

/**
 * The API rate limit: 1,200 requests per 5 minutes per user, then every call blocked for five
 * minutes (developers.cloudflare.com/fundamentals/api/reference/limits/).
 */
export const RATE_LIMIT = { limit: 1200, windowSeconds: 300, blockSeconds: 300 } as const

/** Whose rate budget a request spends: a token owner's, or the one of requests without a known token. */
export type RateSubject = CfOwner | { kind: 'anonymous' }

export interface RateState {
  limit: number
  windowSeconds: number
  /** Requests left in the current window (0 while blocked). */
  remaining: number
  /** Seconds until the current window resets (rounded up; the full window when none started). */
  resetSeconds: number
  /** Seconds until the block ends (rounded up); 0 when not blocked. */
  blockedSeconds: number
}

interface RateBucket {
  used: number
  /** Epoch ms (simulator time) when the window resets. */
  resetAt: number
  /** Epoch ms (simulator time) when the block ends; 0 when not blocked. */
  blockedUntil: number
}

const API_PREFIX = '/client/v4'

function groupIdByName(name: string): string {
  const group = PERMISSION_GROUPS.find(g => g.name === name)
  if (!group) throw new Error(`unknown permission group ${name}`)
  return group.id
}

/** The groups each management call needs (the spec's `x-api-token-group`). */
const MANAGEMENT_GROUPS = {
  user: {
    read: [groupIdByName('API Tokens Read'), groupIdByName('API Tokens Write')],
    write: [groupIdByName('API Tokens Write')]
  },
  account: {
    read: [groupIdByName('Account API Tokens Read'), groupIdByName('Account API Tokens Write')],
    write: [groupIdByName('Account API Tokens Write')]
  }
} as const

type Action =
  'list' | 'create' | 'permissionGroups' | 'verify' | 'delete' | 'get' | 'update' | 'roll'

const OPERATIONS: Record<string, { scope: 'user' | 'account'; action: Action }> = {
  'user-api-tokens-list-tokens': { scope: 'user', action: 'list' },
  'user-api-tokens-create-token': { scope: 'user', action: 'create' },
  'permission-groups-list-permission-groups': { scope: 'user', action: 'permissionGroups' },
  'user-api-tokens-verify-token': { scope: 'user', action: 'verify' },
  'user-api-tokens-delete-token': { scope: 'user', action: 'delete' },
  'user-api-tokens-token-details': { scope: 'user', action: 'get' },
  'user-api-tokens-update-token': { scope: 'user', action: 'update' },
  'user-api-tokens-roll-token': { scope: 'user', action: 'roll' },
  'account-api-tokens-list-tokens': { scope: 'account', action: 'list' },
  'account-api-tokens-create-token': { scope: 'account', action: 'create' },
  'account-api-tokens-list-permission-groups': { scope: 'account', action: 'permissionGroups' },
  'account-api-tokens-verify-token': { scope: 'account', action: 'verify' },
  'account-api-tokens-delete-token': { scope: 'account', action: 'delete' },
  'account-api-tokens-token-details': { scope: 'account', action: 'get' },
  'account-api-tokens-update-token': { scope: 'account', action: 'update' },
  'account-api-tokens-roll-token': { scope: 'account', action: 'roll' }
}

const WRITE_ACTIONS: ReadonlySet<Action> = new Set(['create', 'update', 'delete', 'roll'])

/**
 * OpenAPI 3.0 says a property that is both `readOnly` and `required` is required in responses
 * only; openapi-backend enforces it in requests too. `policies[].id` is such a property, and the
 * real API even rejects it on create (code 1001), so that one error is not a contract violation.
 */
const READ_ONLY_REQUIRED = /^\/requestBody\/policies\/\d+ must have required property 'id'$/

/**
 * The excerpt's error items declare `code` with `minimum: 1000`, but the API's rate limiter
 * answers code 971 (see the file comment). The 429 itself is documented (every operation has a
 * `4XX` failure response); only this bound of the excerpt cannot describe it, so that one finding
 * on a 429 is not a contract violation (the excerpt stays verbatim).
 */
const RATE_LIMIT_CODE_BELOW_MINIMUM = /^\/errors\/\d+\/code must be >= 1000$/

/**
 * The Workers secrets-bulk PATCH deletes a secret sent as `null` ("Set to `null` to delete"), and
 * the excerpt says so with `nullable: true` beside an `allOf` whose member is `type: object`.
 * OpenAPI 3.0's `nullable` does not reach into the `allOf`, so a JSON Schema validator rejects
 * the null the description documents; such findings on a null value are not violations.
 */
function nullDeletesOnly(errors: string[], body: unknown): string[] {
  const secrets = (body as { secrets?: Record<string, unknown> } | undefined)?.secrets
  if (typeof secrets !== 'object' || secrets === null) return errors
  return errors.filter(e => {
    const name = /^\/requestBody\/secrets\/([^/\s]+)[/\s]/.exec(e)?.[1]
    return name === undefined || secrets[name.replace(/~1/g, '/').replace(/~0/g, '~')] !== null
  })
}

/** How a request reached its operation: a token endpoint, or an account API (Access, Workers). */
type Route =
  | {
      kind: 'tokens'
      validator: OpenApiValidator
      matched: MatchedOperation
      operation: { scope: 'user' | 'account'; action: Action }
    }
  | { kind: 'account'; validator: OpenApiValidator; matched: MatchedOperation; api: AccountApi }

interface PolicyInput {
  id?: string
  effect: 'allow' | 'deny'
  permission_groups: CfPermissionGroupRef[]
  resources: Record<string, unknown>
}

interface TokenBodyInput {
  name: string
  policies: PolicyInput[]
  condition?: unknown
  expires_on?: string
  not_before?: string
  status?: 'active' | 'disabled' | 'expired'
}

function hexId(): string {
  return randomBytes(16).toString('hex')
}

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** New token values: `cfut_` (user) or `cfat_` (account) and 40 random characters. */
function tokenValue(owner: CfOwner): string {
  let body = ''
  for (let i = 0; i < 40; i++) body += BASE62[randomInt(BASE62.length)]
  return `${owner.kind === 'user' ? 'cfut_' : 'cfat_'}${body}`
}

function sameOwner(a: CfOwner, b: CfOwner): boolean {
  if (a.kind === 'user' || b.kind === 'user') return a.kind === b.kind
  return a.accountId === b.accountId
}

function describeOwner(owner: CfOwner): string {
  return owner.kind === 'user' ? '/user/tokens' : `/accounts/${owner.accountId}/tokens`
}

function rateKey(subject: RateSubject): string {
  return subject.kind === 'account' ? `account:${subject.accountId}` : subject.kind
}

function ceilSeconds(ms: number): number {
  return Math.max(0, Math.ceil(ms / 1000))
}

/** Every Cloudflare error answer is the envelope with `success: false` and `result: null`. */
function envelopeFault(message: string): unknown {
  return { success: false, errors: [{ code: 10000, message }], messages: [], result: null }
}

export class CloudflareSim {
  /** The simulated user's id (32 hex), the resource `com.cloudflare.api.user.<userId>`. */
  readonly userId: string
  readonly service: Service
  /** Live tokens by id; a deleted token is removed at once. */
  readonly tokens = new Map<string, CfTokenRecord>()
  readonly deletedTokens: CfTokenRecord[] = []
  /**
   * Milliseconds added to the real clock to make the simulator's time (default 0): `issued_on`,
   * `modified_on`, `last_used_on`, the expiry and not_before checks, the rate-limit windows and
   * blocks, the `Date` header, and the R2 simulator's time. `skewMs = -3000` puts the runner 3 s
   * ahead of Cloudflare; moving it forward also ends a rate-limit block without waiting. May be
   * changed at any time: setting it tells the health watchers (`RequestLog.changed`), since moving
   * the clock may end a token's life or a grace window.
   */
  get skewMs(): number {
    return this.skew
  }
  set skewMs(ms: number) {
    this.skew = ms
    this.log.changed('clock')
  }
  private skew = 0
  /**
   * The client address the simulator "sees", standing for the runner's egress address (all
   * sandbox traffic comes from 127.0.0.1). Undefined (the default): the socket's address.
   */
  clientAddress?: string
  /**
   * Whether tokens' IP conditions are enforced (default false), here and in the R2 simulator.
   * Opt-in because the sandbox's default rotated token carries `request_ip.in: ['192.0.2.0/24']`
   * (a documentation range, see sandbox/index.ts) while every sandbox request comes from
   * 127.0.0.1: enforcing conditions by default would lock that token out of every existing
   * end-to-end scenario. Tests of conditions turn it on and set `clientAddress`.
   */
  enforceConditions = false
  private readonly byValue = new Map<string, CfTokenRecord>()
  private readonly rateBudget: { limit: number; windowSeconds: number; blockSeconds: number } = {
    ...RATE_LIMIT
  }
  private readonly rateBuckets = new Map<string, RateBucket>()
  private validator?: OpenApiValidator
  private accountValidator?: OpenApiValidator
  /**
   * Access service tokens under `/client/v4/accounts/{account_id}/access/service_tokens…`, sharing
   * this simulator's authentication, rate limits, clock and log (see sandbox/access.ts).
   */
  readonly access: AccessSim
  /**
   * Workers scripts, their secrets, versions and deployments under
   * `/client/v4/accounts/{account_id}/workers/scripts/…` (see sandbox/workers.ts).
   */
  readonly workers: WorkersSim

  constructor(
    private readonly log: RequestLog,
    options: { userId?: string } = {}
  ) {
    this.userId = options.userId ?? hexId()
    this.service = new Service('cloudflare', log, req => this.handle(req), {
      // Injected faults carry the date and the caller's rate state too (without spending it).
      answerHeaders: req => this.rateHeaders(this.rateSubject(req.headers.authorization), false),
      faultBody: envelopeFault
    })
    this.access = new AccessSim(log, () => this.now())
    this.workers = new WorkersSim(log, () => this.now())
    log.addTimedChanges(() => this.nextTimedChange())
  }

  /** The simulator's time in epoch milliseconds: `Date.now() + skewMs`. */
  now(): number {
    return Date.now() + this.skew
  }

  /**
   * The next instant, on the real clock (epoch ms), at which time alone changes what a credential
   * of this simulator allows: a live token's `expires_on` or `not_before` passing, an Access
   * service token expiring or its previous secret's grace ending. Undefined when none is ahead.
   */
  nextTimedChange(): number | undefined {
    const now = this.now()
    let next = Infinity
    const consider = (at: number): void => {
      if (at > now && at < next) next = at
    }
    for (const token of this.tokens.values()) {
      if (token.expires_on !== undefined) consider(Date.parse(token.expires_on))
      if (token.not_before !== undefined) consider(Date.parse(token.not_before))
    }
    for (const at of this.access.timedInstants()) consider(at)
    return next === Infinity ? undefined : next - this.skew
  }

  get apiUrl(): string {
    return `${this.service.url}${API_PREFIX}`
  }

  async start(): Promise<string> {
    ;[this.validator, this.accountValidator] = await Promise.all([
      OpenApiValidator.load('cloudflare-tokens'),
      OpenApiValidator.load('cloudflare-access-workers')
    ])
    await this.service.start()
    return this.apiUrl
  }

  async stop(): Promise<void> {
    await this.service.stop()
  }

  /** Seed a token directly, without HTTP, quota or permission checks, and without a log event. */
  addToken(seed: SeedToken): CfTokenRecord {
    const owner = seed.owner ?? { kind: 'user' }
    const unknown = this.unknownPermissionGroups(seed.policies, owner)
    if (unknown.length > 0)
      throw new Error(`seed ${seed.name}: unknown permission groups ${unknown.join(', ')}`)
    if (seed.value !== undefined && this.byValue.has(seed.value)) {
      throw new Error(`seed ${seed.name}: the value is already in use`)
    }
    const issued = seed.issued_on ?? timestamp(this.now())
    return this.insert({
      id: hexId(),
      value: seed.value ?? tokenValue(owner),
      name: seed.name,
      status: seed.status ?? 'active',
      issued_on: issued,
      modified_on: issued,
      last_used_on: null,
      ...(seed.expires_on !== undefined ? { expires_on: seed.expires_on } : {}),
      ...(seed.not_before !== undefined ? { not_before: seed.not_before } : {}),
      policies: seed.policies.map(p => this.storedPolicy(p, p.id ?? hexId())),
      ...(seed.condition !== undefined ? { condition: structuredClone(seed.condition) } : {}),
      owner
    })
  }

  /** The live tokens of one owner (what counts against its quota). */
  tokensOf(owner: CfOwner): CfTokenRecord[] {
    return [...this.tokens.values()].filter(t => sameOwner(t.owner, owner))
  }

  /**
   * Seeds tokens for `owner` (default: the user) until it holds its full quota (50 user tokens,
   * 500 per account), so that the next create answers the quota error. Returns the seeded tokens
   * (named `<namePrefix> 1`, `<namePrefix> 2`, …; each holds Zone Read on every zone).
   */
  fillQuota(owner: CfOwner = { kind: 'user' }, namePrefix = 'quota filler'): CfTokenRecord[] {
    const quota = owner.kind === 'user' ? TOKEN_QUOTA.user : TOKEN_QUOTA.account
    const seeded: CfTokenRecord[] = []
    for (let n = this.tokensOf(owner).length; n < quota; n++) {
      seeded.push(
        this.addToken({
          name: `${namePrefix} ${seeded.length + 1}`,
          owner,
          policies: [
            {
              effect: 'allow',
              permission_groups: [{ id: groupIdByName('Zone Read') }],
              resources: { [`${ZONE_SCOPE}.*`]: '*' }
            }
          ]
        })
      )
    }
    return seeded
  }

  /**
   * Changes the rate limit (default 1,200 requests per 300 s, then a 300 s block) and, with
   * `remaining`, what is left of one budget's current window (`owner`, default the user; see
   * `RateSubject`). A new `windowSeconds` applies from the next window on.
   */
  setRateBudget(budget: {
    limit?: number
    windowSeconds?: number
    blockSeconds?: number
    remaining?: number
    owner?: RateSubject
  }): void {
    if (budget.limit !== undefined) this.rateBudget.limit = budget.limit
    if (budget.windowSeconds !== undefined) this.rateBudget.windowSeconds = budget.windowSeconds
    if (budget.blockSeconds !== undefined) this.rateBudget.blockSeconds = budget.blockSeconds
    if (budget.remaining !== undefined) {
      const bucket = this.rateBucket(budget.owner ?? { kind: 'user' }, this.now())
      bucket.used = Math.min(
        this.rateBudget.limit,
        Math.max(0, this.rateBudget.limit - budget.remaining)
      )
    }
  }

  /**
   * Blocks one budget (`owner`, default the user) right now for `seconds` (default 300), as when
   * it ran out: every call it makes answers 429 until then. `block(0)` lifts a block.
   */
  block(seconds: number = RATE_LIMIT.blockSeconds, owner: RateSubject = { kind: 'user' }): void {
    const now = this.now()
    const bucket = this.rateBucket(owner, now)
    if (seconds <= 0) {
      this.rateBuckets.delete(rateKey(owner))
      return
    }
    bucket.blockedUntil = now + seconds * 1000
    this.log.event('cloudflare', 'rate_limit.blocked', { subject: rateKey(owner), seconds })
  }

  /** One budget's state (`owner`, default the user), as the `Ratelimit` header would tell it. */
  rateState(owner: RateSubject = { kind: 'user' }): RateState {
    const now = this.now()
    const bucket = this.rateBucket(owner, now)
    const blocked = bucket.blockedUntil > now
    return {
      limit: this.rateBudget.limit,
      windowSeconds: this.rateBudget.windowSeconds,
      remaining: blocked ? 0 : Math.max(0, this.rateBudget.limit - bucket.used),
      resetSeconds: ceilSeconds((blocked ? bucket.blockedUntil : bucket.resetAt) - now),
      blockedSeconds: blocked ? ceilSeconds(bucket.blockedUntil - now) : 0
    }
  }

  /** Whether `token` may be used from `address` under its IP condition (ignores `enforceConditions`). */
  conditionAllows(token: Pick<CfTokenRecord, 'condition'>, address: string): boolean {
    return ipConditionAllows(token.condition, address)
  }

  findById(id: string): CfTokenRecord | undefined {
    const token = this.tokens.get(id)
    return token && this.refresh(token)
  }

  /** The token if it may be used right now (exists, active, not expired, not before not_before); updates last_used_on. */
  authenticate(value: string): CfTokenRecord | undefined {
    const token = this.usable(value)
    if (token) token.last_used_on = timestamp(this.now())
    return token
  }

  permissionGroupName(id: string): string | undefined {
    return PERMISSION_GROUPS.find(g => g.id === id)?.name
  }

  private insert(token: CfTokenRecord): CfTokenRecord {
    this.tokens.set(token.id, token)
    this.byValue.set(token.value, token)
    return this.refresh(token)
  }

  /** Reports an `active` token whose `expires_on` has passed as `expired`. */
  private refresh(token: CfTokenRecord): CfTokenRecord {
    if (
      token.status === 'active' &&
      token.expires_on !== undefined &&
      Date.parse(token.expires_on) <= this.now()
    ) {
      token.status = 'expired'
    }
    return token
  }

  /** Like authenticate, without touching last_used_on. */
  private usable(value: string): CfTokenRecord | undefined {
    const token = this.byValue.get(value)
    if (!token || this.refresh(token).status !== 'active') return undefined
    if (token.not_before !== undefined && Date.parse(token.not_before) > this.now())
      return undefined
    return token
  }

  private storedPolicy(policy: Omit<PolicyInput, 'id'>, id: string): CfPolicy {
    return {
      id,
      effect: policy.effect,
      // The API answers with each group's canonical name, whatever name the request carried.
      permission_groups: policy.permission_groups.map(g => ({
        id: g.id,
        name: this.permissionGroupName(g.id) ?? g.id
      })),
      // Opaque: returned exactly as sent.
      resources: structuredClone(policy.resources)
    }
  }

  /** Groups that do not exist, or that an account-owned token may not carry (user-level ones). */
  private unknownPermissionGroups(
    policies: ReadonlyArray<Pick<PolicyInput, 'permission_groups'>>,
    owner: CfOwner
  ): string[] {
    const available = this.availableGroups(owner)
    return policies
      .flatMap(p => p.permission_groups.map(g => g.id))
      .filter(id => !available.some(g => g.id === id))
  }

  private availableGroups(
    owner: CfOwner
  ): ReadonlyArray<{ id: string; name: string; scopes: string[] }> {
    return owner.kind === 'user'
      ? PERMISSION_GROUPS
      : PERMISSION_GROUPS.filter(g => !g.scopes.includes(USER_SCOPE))
  }

  /** Whether an allow policy (and no deny policy) grants one of `groups` on one of `resources`. */
  private grants(
    token: CfTokenRecord,
    groups: readonly string[],
    resources: readonly string[]
  ): boolean {
    let allowed = false
    for (const policy of token.policies) {
      const coversGroup = policy.permission_groups.some(g => groups.includes(g.id))
      const coversResource = resources.some(r => policy.resources[r] === '*')
      if (!coversGroup || !coversResource) continue
      if (policy.effect === 'deny') return false
      allowed = true
    }
    return allowed
  }

  private mayManage(caller: CfTokenRecord, owner: CfOwner, need: 'read' | 'write'): boolean {
    if (owner.kind === 'user') {
      return this.grants(caller, MANAGEMENT_GROUPS.user[need], [
        `${USER_SCOPE}.${this.userId}`,
        `${USER_SCOPE}.*`
      ])
    }
    return this.grants(caller, MANAGEMENT_GROUPS.account[need], [
      `${ACCOUNT_SCOPE}.${owner.accountId}`,
      `${ACCOUNT_SCOPE}.*`
    ])
  }

  private toApi(token: CfTokenRecord): Record<string, unknown> {
    this.refresh(token)
    return {
      id: token.id,
      name: token.name,
      status: token.status,
      issued_on: token.issued_on,
      modified_on: token.modified_on,
      // The description types last_used_on as a string: a never-used token has none.
      ...(token.last_used_on !== null ? { last_used_on: token.last_used_on } : {}),
      ...(token.expires_on !== undefined ? { expires_on: token.expires_on } : {}),
      ...(token.not_before !== undefined ? { not_before: token.not_before } : {}),
      policies: structuredClone(token.policies),
      ...(token.condition !== undefined ? { condition: structuredClone(token.condition) } : {})
    }
  }

  private handle(req: IncomingRequest): OutgoingResponse {
    const where = `cloudflare ${req.method} ${req.path}`
    const path = req.path.startsWith(`${API_PREFIX}/`)
      ? req.path.slice(API_PREFIX.length)
      : undefined
    const route = path === undefined ? undefined : this.route(req.method, path)
    if (!route) {
      this.log.violation(
        `${where}: no operation of the Cloudflare token API matches (nor of the Access and Workers excerpt)`
      )
    }

    // The rate limiter stands in front of the API: every answered call spends the budget, and a
    // blocked caller gets 429 whatever it asked.
    const subject = this.rateSubject(req.headers.authorization)
    const admitted = this.admit(subject)
    let outcome: Outcome
    if (!admitted) {
      outcome = failure(429, {
        code: CF_ERROR_CODES.rateLimited,
        message: 'Please wait and consider throttling your request speed'
      })
    } else if (!route || path === undefined) {
      outcome = failure(
        400,
        {
          code: CF_ERROR_CODES.unknownObject,
          message: `Could not route to ${req.path}, perhaps your object identifier is invalid?`
        },
        { code: CF_ERROR_CODES.noRoute, message: 'No route for that URI' }
      )
    } else if (route.kind === 'tokens') {
      outcome = this.perform(route.validator, route.matched, route.operation, path, req)
    } else {
      outcome = this.performAccount(route.validator, route.matched, route.api, path, req)
    }
    if (route) {
      const errors = route.validator
        .validateResponse(route.matched, outcome.status, outcome.body)
        .filter(e => admitted || !RATE_LIMIT_CODE_BELOW_MINIMUM.test(e))
      if (errors.length > 0)
        this.log.violation(`${where}: response ${outcome.status}: ${errors.join('; ')}`)
    }
    // Retry-After belongs to the rate limiter's 429 only (a Workers 429 is another refusal).
    return { ...outcome, headers: this.rateHeaders(subject, !admitted) }
  }

  /** The operation a request names: a token endpoint first, then the account APIs. */
  private route(method: string, path: string): Route | undefined {
    const validator = this.validator
    const accountValidator = this.accountValidator
    if (!validator || !accountValidator) throw new Error('CloudflareSim.start() was not awaited')
    const matched = validator.match(method, path)
    const operation = matched && OPERATIONS[matched.operationId]
    if (matched && operation) return { kind: 'tokens', validator, matched, operation }
    const accountMatch = accountValidator.match(method, path)
    const api =
      accountMatch &&
      [this.access, this.workers].find(a => accountMatch.operationId in a.operations)
    return accountMatch && api
      ? { kind: 'account', validator: accountValidator, matched: accountMatch, api }
      : undefined
  }

  /** Whose budget a request spends: the owner of the token it names, else the anonymous one. */
  private rateSubject(header: string | undefined): RateSubject {
    const value = header === undefined ? undefined : /^Bearer ([^\s]+)$/.exec(header)?.[1]
    const token = value === undefined ? undefined : this.byValue.get(value)
    return token ? token.owner : { kind: 'anonymous' }
  }

  /**
   * The subject's budget at `now`: a fresh window when none is running, when the last one ran
   * out, or when a block just ended.
   */
  private rateBucket(subject: RateSubject, now: number): RateBucket {
    const key = rateKey(subject)
    let bucket = this.rateBuckets.get(key)
    const over =
      bucket !== undefined &&
      (bucket.blockedUntil > 0 ? now >= bucket.blockedUntil : now >= bucket.resetAt)
    if (!bucket || over) {
      bucket = { used: 0, resetAt: now + this.rateBudget.windowSeconds * 1000, blockedUntil: 0 }
      this.rateBuckets.set(key, bucket)
    }
    return bucket
  }

  /** Spends one request of the subject's budget; false when it is blocked (or just ran out). */
  private admit(subject: RateSubject): boolean {
    const now = this.now()
    const bucket = this.rateBucket(subject, now)
    if (bucket.blockedUntil > now) return false
    if (bucket.used >= this.rateBudget.limit) {
      // "If you exceed this limit, all API calls for the next five minutes will be blocked."
      bucket.blockedUntil = now + this.rateBudget.blockSeconds * 1000
      this.log.event('cloudflare', 'rate_limit.blocked', {
        subject: rateKey(subject),
        seconds: this.rateBudget.blockSeconds
      })
      return false
    }
    bucket.used += 1
    return true
  }

  /** `Date`, `Ratelimit`, `Ratelimit-Policy`, and on a 429 `Retry-After`. */
  private rateHeaders(subject: RateSubject, limited: boolean): Record<string, string> {
    const state = this.rateState(subject)
    const headers: Record<string, string> = {
      // IMF-fixdate (RFC 9110 §5.6.7), from the simulator's clock.
      date: new Date(this.now()).toUTCString(),
      ratelimit: `"default";r=${state.remaining};t=${state.resetSeconds}`,
      'ratelimit-policy': `"default";q=${state.limit};w=${state.windowSeconds}`
    }
    if (limited) headers['retry-after'] = String(state.blockedSeconds)
    return headers
  }

  private perform(
    validator: OpenApiValidator,
    matched: MatchedOperation,
    operation: { scope: 'user' | 'account'; action: Action },
    path: string,
    req: IncomingRequest
  ): Outcome {
    const rejected = this.rejectInvalid(validator, matched, path, req, errors =>
      errors.filter(e => !READ_ONLY_REQUIRED.test(e))
    )
    if (rejected) return rejected

    const owner: CfOwner =
      operation.scope === 'user'
        ? { kind: 'user' }
        : { kind: 'account', accountId: matched.params['account_id'] ?? '' }
    const auth = this.authorize(
      req.headers.authorization,
      owner,
      operation.action === 'verify',
      normalizeAddress(this.clientAddress ?? req.remoteAddress)
    )
    if ('rejected' in auth) return auth.rejected
    const caller = auth.token

    if (operation.action === 'verify') {
      return {
        status: 200,
        body: {
          success: true,
          errors: [],
          messages: [{ code: 10000, message: 'This API Token is valid and active', type: null }],
          result: {
            id: caller.id,
            status: caller.status,
            ...(caller.expires_on !== undefined ? { expires_on: caller.expires_on } : {}),
            ...(caller.not_before !== undefined ? { not_before: caller.not_before } : {})
          }
        }
      }
    }
    if (!this.mayManage(caller, owner, WRITE_ACTIONS.has(operation.action) ? 'write' : 'read')) {
      return failure(403, {
        code: CF_ERROR_CODES.unauthorized,
        message: 'Unauthorized to access requested resource'
      })
    }

    switch (operation.action) {
      case 'list':
        return this.list(owner, req.query)
      case 'create':
        return this.create(owner, req.json as TokenBodyInput)
      case 'permissionGroups':
        return this.listPermissionGroups(owner, req.query)
      case 'get':
      case 'update':
      case 'delete':
      case 'roll': {
        const id = matched.params['token_id'] ?? ''
        const token = this.tokens.get(id)
        if (!token || !sameOwner(token.owner, owner)) {
          return failure(404, {
            code: CF_ERROR_CODES.unknownObject,
            message: `Could not route to ${describeOwner(owner)}/${id}, perhaps your object identifier is invalid?`
          })
        }
        if (operation.action === 'get') return success(this.toApi(token))
        if (operation.action === 'update') return this.update(token, req.json as TokenBodyInput)
        if (operation.action === 'delete') return this.remove(token)
        return this.roll(token)
      }
    }
  }

  /**
   * An Access or Workers call: validated like a token call, authenticated for the account of the
   * path, and allowed when an allow policy (and no deny policy) of the caller grants one of the
   * operation's permission groups on that account; then the account API does the work.
   */
  private performAccount(
    validator: OpenApiValidator,
    matched: MatchedOperation,
    api: AccountApi,
    path: string,
    req: IncomingRequest
  ): Outcome {
    const rejected = this.rejectInvalid(validator, matched, path, req, errors =>
      nullDeletesOnly(errors, req.json)
    )
    if (rejected) return rejected
    const { account_id: accountId = '', ...params } = matched.params
    const auth = this.authorize(
      req.headers.authorization,
      { kind: 'account', accountId },
      false,
      normalizeAddress(this.clientAddress ?? req.remoteAddress)
    )
    if ('rejected' in auth) return auth.rejected
    const groups = (api.operations[matched.operationId] ?? []).map(groupIdByName)
    if (!this.grants(auth.token, groups, [`${ACCOUNT_SCOPE}.${accountId}`, `${ACCOUNT_SCOPE}.*`])) {
      return failure(403, {
        code: CF_ERROR_CODES.unauthorized,
        message: 'Unauthorized to access requested resource'
      })
    }
    return api.handle({
      operationId: matched.operationId,
      accountId,
      params,
      query: req.query,
      body: req.json,
      caller: { id: auth.token.id, name: auth.token.name }
    })
  }

  /**
   * A 400 for a body that is not JSON or a request the excerpt rejects (each a violation), after
   * `exempt` dropped the findings that are not contract violations; undefined when valid.
   */
  private rejectInvalid(
    validator: OpenApiValidator,
    matched: MatchedOperation,
    path: string,
    req: IncomingRequest,
    exempt: (errors: string[]) => string[]
  ): Outcome | undefined {
    const where = `cloudflare ${req.method} ${req.path}`
    if (req.raw.length > 0 && req.json === undefined) {
      this.log.violation(`${where}: request: the body is not valid JSON`)
      return failure(400, {
        code: CF_ERROR_CODES.malformedJson,
        message: 'Malformed JSON in request body'
      })
    }
    const invalid = exempt(
      validator.validateRequest(matched, {
        method: req.method,
        path,
        query: req.query,
        headers: req.headers,
        body: req.json
      })
    )
    if (invalid.length === 0) return undefined
    this.log.violation(`${where}: request: ${invalid.join('; ')}`)
    return failure(400, {
      code: CF_ERROR_CODES.badRequest,
      message: `Invalid request: ${invalid.join('; ')}`
    })
  }

  /** Authenticates the caller for an endpoint of `owner`; a successful authentication updates last_used_on. */
  private authorize(
    header: string | undefined,
    owner: CfOwner,
    verifying: boolean,
    clientAddress: string
  ): { token: CfTokenRecord } | { rejected: Outcome } {
    if (header === undefined || header === '') {
      return {
        rejected: failure(400, {
          code: CF_ERROR_CODES.missingAuth,
          message: 'Missing X-Auth-Key, X-Auth-Email or Authorization headers'
        })
      }
    }
    const bearer = /^Bearer ([^\s]+)$/.exec(header)
    if (!bearer?.[1]) {
      return {
        rejected: failure(400, {
          code: CF_ERROR_CODES.invalidHeaders,
          message: 'Invalid request headers',
          error_chain: [
            {
              code: CF_ERROR_CODES.invalidAuthorizationFormat,
              message: 'Invalid format for Authorization header'
            }
          ]
        })
      }
    }
    const token = this.usable(bearer[1])
    if (token && this.enforceConditions && !ipConditionAllows(token.condition, clientAddress)) {
      this.log.event('cloudflare', 'auth.denied', {
        reason: 'client address outside the token condition',
        token_id: token.id,
        client_address: clientAddress
      })
      return {
        rejected: failure(403, {
          code: CF_ERROR_CODES.forbiddenLocation,
          message: `Cannot use the access token from location: ${clientAddress}`
        })
      }
    }
    // A user-owned token may manage account tokens (with the account groups), but only account-owned
    // tokens of that account pass the account verify, and user endpoints never accept account tokens.
    const accepted =
      token !== undefined &&
      (owner.kind === 'user'
        ? token.owner.kind === 'user'
        : token.owner.kind === 'account'
          ? token.owner.accountId === owner.accountId
          : !verifying)
    if (!token || !accepted) {
      return {
        rejected: verifying
          ? failure(401, { code: CF_ERROR_CODES.invalidApiToken, message: 'Invalid API Token' })
          : failure(403, { code: CF_ERROR_CODES.unauthorized, message: 'Invalid access token' })
      }
    }
    token.last_used_on = timestamp(this.now())
    return { token }
  }

  private list(owner: CfOwner, query: URLSearchParams): Outcome {
    const page = Math.max(1, Math.floor(Number(query.get('page') ?? 1)))
    const perPage = Math.floor(Number(query.get('per_page') ?? 20))
    const includeExpired = query.get('include_expired') === 'true'
    const all = [...this.tokens.values()]
      .filter(t => sameOwner(t.owner, owner))
      .map(t => this.refresh(t))
      .filter(t => includeExpired || t.status !== 'expired')
    if (query.get('direction') === 'desc') all.reverse()
    const items = all.slice((page - 1) * perPage, page * perPage)
    return success(
      items.map(t => this.toApi(t)),
      { result_info: { page, per_page: perPage, count: items.length, total_count: all.length } }
    )
  }

  private listPermissionGroups(owner: CfOwner, query: URLSearchParams): Outcome {
    const name = query.get('name')
    const scope = query.get('scope')
    const groups = this.availableGroups(owner).filter(
      g => (name === null || g.name === name) && (scope === null || g.scopes.includes(scope))
    )
    return success(
      groups.map(g => ({ id: g.id, name: g.name, scopes: [...g.scopes] })),
      {
        result_info: {
          page: 1,
          per_page: groups.length,
          count: groups.length,
          total_count: groups.length
        }
      }
    )
  }

  private badRequest(message: string): Outcome {
    return failure(400, { code: CF_ERROR_CODES.badRequest, message })
  }

  private create(owner: CfOwner, body: TokenBodyInput): Outcome {
    if (body.policies.some(p => p.id !== undefined)) {
      return failure(400, {
        code: CF_ERROR_CODES.reusedPolicy,
        message: 'Reusing existing policies is not supported by token creation'
      })
    }
    const unknown = this.unknownPermissionGroups(body.policies, owner)
    if (unknown.length > 0)
      return this.badRequest(`Unknown permission groups: ${unknown.join(', ')}`)
    const quota = owner.kind === 'user' ? TOKEN_QUOTA.user : TOKEN_QUOTA.account
    if (this.tokensOf(owner).length >= quota) {
      return failure(400, {
        code: CF_ERROR_CODES.quotaExceeded,
        message: `Token quota exceeded: at most ${quota} ${owner.kind} API tokens`
      })
    }
    const now = timestamp(this.now())
    const token = this.insert({
      id: hexId(),
      value: tokenValue(owner),
      name: body.name,
      status: 'active',
      issued_on: now,
      modified_on: now,
      last_used_on: null,
      ...(body.expires_on !== undefined ? { expires_on: body.expires_on } : {}),
      ...(body.not_before !== undefined ? { not_before: body.not_before } : {}),
      policies: body.policies.map(p => this.storedPolicy(p, hexId())),
      ...(body.condition !== undefined ? { condition: structuredClone(body.condition) } : {}),
      owner
    })
    this.log.event('cloudflare', 'token.created', { id: token.id, name: token.name })
    // The only answer, with roll, that carries the value.
    return success({ ...this.toApi(token), value: token.value })
  }

  /**
   * PUT replaces the whole token (PUT semantics; the design notes: "`PUT …/tokens/{id}` replaces
   * the whole token"): name, policies, condition, expires_on and not_before become what the body
   * says, and an omitted condition, expires_on or not_before is dropped. So an update that
   * disables a token without sending its IP condition back lifts the restriction, and the
   * `token.updated` event shows it (`dropped`).
   *
   * UNCONFIRMED, and contradicted for the condition: a Cloudflare maintainer wrote in 2021 that
   * "if you create an API token with IP restrictions and then wish to remove them, you cannot --
   * you must recreate the token" (cloudflare/terraform-provider-cloudflare#902), and #2253 (2023)
   * reports an update without the condition leaving it in place. Dropping is still the reading
   * to test against: an action that forgets to send the condition back fails here instead of
   * passing by the grace of the real API, and an action that sends it back is right either way.
   *
   * ASSUMPTION (UNCONFIRMED): an omitted `status` keeps the current one. Both the excerpt's
   * `iam_token_body` and the SDK's `TokenUpdateParams` make `status` optional (only name and
   * policies are required), and nothing documents what its absence means; keeping it is the
   * reading under which an update that only renames cannot re-enable a disabled token.
   */
  private update(token: CfTokenRecord, body: TokenBodyInput): Outcome {
    if (body.status === 'expired')
      return this.badRequest('status may only be set to active or disabled')
    const unknown = this.unknownPermissionGroups(body.policies, token.owner)
    if (unknown.length > 0)
      return this.badRequest(`Unknown permission groups: ${unknown.join(', ')}`)
    const previousStatus = this.refresh(token).status
    const hadCondition = token.condition !== undefined
    const hadIpRule = hasIpRule(token.condition)
    const dropped = (['condition', 'expires_on', 'not_before'] as const).filter(
      field => token[field] !== undefined && body[field] === undefined
    )
    const kept = new Set(token.policies.map(p => p.id))
    token.name = body.name
    // A policy sent back with its id keeps it; a new one gets a fresh id.
    token.policies = body.policies.map(p =>
      this.storedPolicy(p, p.id !== undefined && kept.has(p.id) ? p.id : hexId())
    )
    if (body.expires_on !== undefined) token.expires_on = body.expires_on
    else delete token.expires_on
    if (body.not_before !== undefined) token.not_before = body.not_before
    else delete token.not_before
    if (body.condition !== undefined) token.condition = structuredClone(body.condition)
    else delete token.condition
    // An expired token updated without a status is re-activated; refresh() expires it again
    // when its (new) expires_on has passed too.
    token.status = body.status ?? (previousStatus === 'expired' ? 'active' : previousStatus)
    token.modified_on = timestamp(this.now())
    this.refresh(token)
    this.log.event('cloudflare', 'token.updated', {
      id: token.id,
      name: token.name,
      status: token.status,
      previous_status: previousStatus,
      had_condition: hadCondition,
      has_condition: token.condition !== undefined,
      had_ip_rule: hadIpRule,
      has_ip_rule: hasIpRule(token.condition),
      dropped
    })
    return success(this.toApi(token))
  }

  private remove(token: CfTokenRecord): Outcome {
    this.tokens.delete(token.id)
    this.byValue.delete(token.value)
    this.deletedTokens.push(token)
    this.log.event('cloudflare', 'token.deleted', { id: token.id, name: token.name })
    return success({ id: token.id })
  }

  /** The old value stops working at once (which is why the action never rolls). */
  private roll(token: CfTokenRecord): Outcome {
    this.byValue.delete(token.value)
    token.value = tokenValue(token.owner)
    token.modified_on = timestamp(this.now())
    this.byValue.set(token.value, token)
    this.log.event('cloudflare', 'token.rolled', { id: token.id, name: token.name })
    return success(token.value)
  }
}
