/**
 * The action's vocabulary, as types only: tokens and their owners, policies, credentials, secret
 * targets, smoke checks, the settings, phase names, the journal record and the report. This
 * module imports nothing, so every other module may import it without creating a cycle.
 */

// ------------------------------------------------------------------------------- Cloudflare

/** Who owns an API token: the user (`/user/tokens…`) or an account (`/accounts/{id}/tokens…`). */
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

export type TokenStatus = 'active' | 'disabled' | 'expired'

/** A Cloudflare API token as the API describes it (never its value). */
export interface ApiToken {
  id: string
  name: string
  status: TokenStatus
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

/** R2 jurisdictions: each has its own S3 endpoint. */
export type Jurisdiction = 'default' | 'eu' | 'fedramp'

/** The R2 classes of the Security Matrix, strongest first. */
export type ScopeClass = 'admin-read-write' | 'admin-read' | 'object-read-write' | 'object-read'

export interface TokenScope {
  /** The strongest R2 class the token holds; undefined when it holds no R2 permission. */
  class?: ScopeClass
  canRead: boolean
  canWrite: boolean
  /** Buckets it may access, or 'all' when any policy spans every bucket of the account. */
  buckets: Array<{ accountId: string; jurisdiction: Jurisdiction; bucket: string }> | 'all'
  accountIds: string[]
  /** Names (or ids when unknown) of non-R2 permission groups. */
  otherPermissions: string[]
  /**
   * Least-privilege findings, one per policy and finding (account-wide R2 access, admin class).
   * Each sentence names the policy and says what a narrower one would be.
   */
  warnings: string[]
  /** One row per policy, for the job summary. */
  policies: PolicyScope[]
  /** e.g. `object-read-write bucket=avatars-bucket`, `admin-read-write buckets=all`, `none`. */
  summary: string
}

/** What one policy of the token grants, as the job summary shows it (names and ids, no values). */
export interface PolicyScope {
  /** `#1 (<policy id>)`, or `#1` when the policy carries no id: the position in the token. */
  ref: string
  effect: 'allow' | 'deny'
  /** Permission group names (ids when the name is unknown). */
  permissions: string[]
  /** The strongest R2 class the policy's own groups grant, before any deny. */
  class?: ScopeClass
  /** What its resources reach: `bucket avatars-bucket`, `every bucket of account <id>`, … */
  reach: string
}

// ------------------------------------------------------------------------------- credentials

/** Which GitHub secret receives which derived value of the token. */
export type SecretField =
  | 'token'
  | 'access-key-id'
  | 'secret-access-key'
  /** An Access service token's client id (unchanged by a rotation). */
  | 'client-id'
  /** An Access service token's client secret. */
  | 'client-secret'

/** What is rotated (input `credential`). */
export type CredentialKind = 'api-token' | 'access-service-token'

/**
 * What is known of one token's values: its id always, its value and its R2 Secret Access Key
 * when the inputs (or a create) gave them. Which secrets can be written for a token depends on
 * which of these are known.
 */
export interface Credentials {
  /** Token id = R2 Access Key ID. */
  id: string
  /** The token value (only create returns it; otherwise from the `current-token` input). */
  value?: string
  /** Lowercase hex SHA-256 of the value. */
  secretAccessKey?: string
  /** An Access service token's client id (`id` is then the service token's id). */
  clientId?: string
  /** An Access service token's client secret, when known. */
  clientSecret?: string
}

// ------------------------------------------------------------------------------- GitHub

export interface RepoRef {
  owner: string
  repo: string
}

export interface SecretMapping {
  /** GitHub secret name, as the user wrote it (GitHub treats names case-insensitively). */
  name: string
  field: SecretField
}

/** One `secret-targets` line, resolved to full coordinates. `line` is the text the user wrote. */
export type SecretTarget =
  | { kind: 'repo'; owner: string; repo: string; line: string }
  | { kind: 'env'; owner: string; repo: string; environment: string; line: string }
  | { kind: 'org'; org: string; line: string }
  | { kind: 'dependabot'; owner: string; repo: string; line: string }
  /** A Worker's secrets (`worker:SCRIPT`), in the account of the `account-id` input. */
  | { kind: 'worker'; accountId: string; script: string; line: string }

/** The targets GitHub holds (sealed-box secrets). */
export type GitHubTarget = Exclude<SecretTarget, { kind: 'worker' }>
/** A Workers script whose secrets hold the rotated fields. */
export type WorkerTarget = Extract<SecretTarget, { kind: 'worker' }>

export interface SmokeCheck {
  url: string
  /** Accepted status range, inclusive. `expect=200` gives {min: 200, max: 200}. Default 200-299. */
  expect: { min: number; max: number }
  /**
   * Text the body must contain, when given. May hold `{access-key-id}`: the id of the token that
   * should be serving at the time of the check (the current one in preflight, the new one after
   * publish, the previous one after a restore).
   */
  contains?: string
}

/** The deploy step as the inputs describe it (before the workflow was read). */
export interface DeploySettings {
  /** Input `deploy-workflow`: a file name (`deploy.yml`) or a numeric id. */
  workflow: string | number
  /** Input `deploy-repository`, default the repository the action runs in. */
  repository: RepoRef
  /** Input `deploy-ref`; undefined = the repository's default branch. */
  ref?: string
  /** Input `deploy-inputs`: every value converted to a string. At most 25 keys. */
  inputs: Record<string, string>
  /** Input `deploy-timeout` in milliseconds. */
  timeoutMs: number
}

// ------------------------------------------------------------------------------- settings

export interface Settings {
  /** Input `credential`: what is rotated. */
  credential: CredentialKind
  /** Input `service-token-id` (a UUID); set with `credential: access-service-token`. */
  serviceTokenId?: string
  /** Input `current-client-secret`; undefined when empty. */
  currentClientSecret?: string
  /** Management token (input `cloudflare-api-token`). */
  cloudflareApiToken: string
  /** Input `cloudflare-api-url`, without a trailing slash. */
  cloudflareApiUrl: string
  /** Input `account-id`; undefined when empty. 32 hex characters. */
  accountId?: string
  /** Input `token-owner`. */
  tokenOwner: 'user' | 'account' | 'auto'
  /** Input `current-token`; undefined when empty. */
  currentToken?: string
  /** Input `current-access-key-id`; undefined when empty. */
  currentAccessKeyId?: string
  /** Input `current-secret-access-key`; undefined when empty. */
  currentSecretAccessKey?: string
  /** Input `secrets`: at least one line; names unique case-insensitively. */
  secrets: SecretMapping[]
  /** Input `secret-targets`: at least one line, no duplicates. */
  secretTargets: SecretTarget[]
  /** Input `github-token`. */
  githubToken: string
  /** From GITHUB_API_URL (default https://api.github.com), without a trailing slash. */
  githubApiUrl: string
  /** From GITHUB_SERVER_URL (default https://github.com), for links in the summary. */
  githubServerUrl: string
  /** From GITHUB_REPOSITORY: the repository the action runs in. */
  repository: RepoRef
  /** From GITHUB_RUN_ID (may be empty outside Actions). */
  runId: string
  /** From GITHUB_RUN_ATTEMPT (default 1). */
  runAttempt: number
  /** Deploy step; undefined for `deploy-workflow: none`. */
  deploy?: DeploySettings
  smoke: {
    /** Input `smoke-urls`. */
    checks: SmokeCheck[]
    /** Input `smoke-headers`. */
    headers: Record<string, string>
    /** Input `smoke-timeout` in milliseconds. */
    timeoutMs: number
  }
  r2: {
    /** Input `r2-bucket`; undefined when empty. */
    bucket?: string
    /** Input `r2-probe`. */
    probe: 'auto' | 'write' | 'read' | 'off'
    /** Input `r2-endpoint`, without a trailing slash; undefined = derived from the account id. */
    endpoint?: string
  }
  /** Input `token-name`: the template, not yet expanded. */
  tokenName: string
  /** Input `token-ttl` in milliseconds; undefined = keep the old lifetime length. */
  tokenTtlMs?: number
  /** Input `rotate-after` in milliseconds (0 = always due). */
  rotateAfterMs: number
  /** Input `force`. */
  force: boolean
  /** Input `least-privilege`. */
  leastPrivilege: 'warn' | 'enforce' | 'off'
  /** Input `revoke`. */
  revoke: 'delete' | 'disable' | 'keep'
  /** Input `revoke-watch` in milliseconds (0 = no watch). */
  revokeWatchMs: number
  /** Input `revoke-grace` in milliseconds. */
  revokeGraceMs: number
  /** Input `on-failure`. */
  onFailure: 'rollback' | 'keep-both'
  /** Input `state-variable`; undefined when empty (journal and lock disabled). */
  stateVariable?: string
  /** Input `dry-run`. */
  dryRun: boolean
  /**
   * Input `rotate-management-token`: the GitHub secret that holds the management token. When
   * set, the run rotates the management token itself (src/self-rotation.ts), not an R2 token.
   */
  rotateManagementToken?: string
}

// ------------------------------------------------------------------------------- the rotation

export type Result = 'rotated' | 'skipped' | 'rolled-back' | 'dry-run' | 'failed'

export type PhaseName =
  | 'preflight'
  | 'recover'
  | 'mint'
  | 'verify'
  | 'publish'
  | 'deploy'
  | 'smoke'
  | 'revoke'
  | 'rollback'
  | 'cleanup'

export type JournalPhase =
  | 'minting'
  | 'minted'
  | 'publishing'
  | 'published'
  | 'deploying'
  | 'smoke'
  | 'revoking'
  | 'rolling-back'
  | 'pending'
  | 'done'
  | 'rolled-back'
  /** A service token: the rotate is about to be sent (or was sent without an answer). */
  | 'rotating'
  /** A service token: the grace of the previous secret is being closed. */
  | 'closing'

/** Which secret of a service token the targets hold (its journal's `secrets_hold`). */
export type SecretsHold = 'previous' | 'next' | 'mixed'

/**
 * The rotation journal (an Actions variable): where the last rotation got to. Ids, names, phases,
 * run ids and timestamps only, never a value.
 */
export interface JournalRecord {
  version: 1
  phase: JournalPhase
  /** GITHUB_RUN_ID of the run that wrote it. */
  run_id: string
  /** GITHUB_RUN_ATTEMPT of the run that wrote it. */
  run_attempt?: number
  previous_token_id?: string
  pending_token_id?: string
  /** The name the new token is minted under, unique among the owner's tokens when recorded. */
  pending_token_name?: string
  /** Who owns the two tokens: `user`, or the account id. */
  token_owner?: 'user' | { account_id: string }
  /** Tokens left disabled by `revoke: disable`, deleted at the next rotation if still disabled. */
  disabled_token_ids: string[]
  deploy_run_ids: number[]
  /**
   * The reversible revoke of `previous_token_id` (phase `revoking`): when it was disabled, and
   * when it was enabled again because a check failed during the watch.
   */
  revoke?: { disabled_at?: string; reenabled_at?: string }
  /** When the rotation began (ISO 8601). */
  started_at?: string
  /** What is rotated: absent for the rotated token, `management-token` for a self-rotation. */
  kind?: 'management-token' | 'access-service-token'
  /** A service token rotation: the token's id. */
  service_token_id?: string
  /** A service token rotation: the planned end of the previous secret's grace (RFC 3339). */
  grace_until?: string
  /** A service token rotation: the token's `updated_at` before the rotate. */
  token_updated_before?: string
  /** A service token rotation: when the rotate answered (the token's `updated_at` then). */
  rotated_at?: string
  /** A service token rotation: each target secret's `updated_at` before the rotate (`<target> <NAME>`). */
  secret_stamps?: Record<string, string | null>
  /** A service token rotation: which secret the targets hold, when known. */
  secrets_hold?: SecretsHold
  /** A service token rotation: the rotate happened but its secret never reached a target. */
  lost_secret?: boolean
  updated_at: string
}

export interface PhaseRecord {
  name: PhaseName
  status: 'ok' | 'failed'
  durationMs: number
  detail?: string
}

export interface SmokeResult {
  url: string
  ok: boolean
  status?: number
  attempts: number
  durationMs: number
  reason?: string
}

/** What one token's `last_used_on` says, read after the smoke phase (a hint, never a decision). */
export interface UseEvidence {
  tokenId: string
  role: 'new' | 'previous'
  lastUsedOn?: string
  /** The sentence for the summary. */
  verdict: string
}

/** What the run did; everything here may be printed (ids, names, links, never a value). */
export interface RotationReport {
  result: Result
  phases: PhaseRecord[]
  warnings: string[]
  error?: string
  previousTokenId?: string
  previousTokenName?: string
  tokenId?: string
  tokenName?: string
  accessKeyId?: string
  expiresOn?: string
  tokenScope?: string
  /** The token's IP condition in words, when it has one (decide.describeCondition). */
  condition?: string
  scope?: TokenScope
  owner?: TokenOwner['kind']
  /** Distinct secrets written, one line each: `<target> <NAME>`. */
  secretsWritten: string[]
  /** The Workers given the new token's values (ids and a time only), for the rollback caution. */
  workersWritten?: { scripts: string[]; tokenId: string; at: string }
  targets: string[]
  deployRunId?: number
  deployRunUrl?: string
  deployConclusion?: string
  smoke: SmokeResult[]
  probe?: { mode: 'read' | 'write'; bucket: string; ok: boolean }
  revoked?: 'deleted' | 'disabled' | 'kept' | 'already-gone' | 'expiring' | 'grace-closed'
  /** What the run rotated: absent for a token rotation, `management-token` for a self-rotation. */
  subject?: 'management-token' | 'access-service-token'
  /** A service token rotation: until when the previous client secret is accepted. */
  graceUntil?: string
  /** The watch after the disable: how long it ran, its checks, and the window the app failed. */
  watch?: {
    durationMs: number
    rounds: number
    outcome: 'passed' | 'failed' | 'skipped'
    /** From the disable to the re-enable, when a check failed. */
    failingWindowMs?: number
    detail?: string
  }
  evidence: UseEvidence[]
  /** What an unfinished earlier rotation led this run to do. */
  recovery?: string
  /** How a failure after publish was handled. */
  rollback?: 'rolled-back' | 'pending'
  /** The journal's phase at the end of the run. */
  journalPhase?: string
  /** The plan, for dry-run and the summary. */
  plan: string[]
}
