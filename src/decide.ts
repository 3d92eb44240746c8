/**
 * Every decision of the rotation, as pure functions: no `await`, no I/O, no logging. They take
 * what was read (facts) and return what to do (values: discriminated unions with a total
 * `switch`), so that each can be checked in a table (see __tests__/decide.test.ts). rotation.ts
 * carries the decisions out and asks here at every branch.
 *
 * The invariant lives in `mayDelete`: the one answer to "may this token be deleted now?". Every
 * token delete of the action is preceded by it.
 *
 *   A token is revoked only after a deploy that uses its replacement concluded `success`, every
 *   smoke check passed, and (unless turned off) the app was watched while the token was disabled.
 */
import type {
  ApiToken,
  Credentials,
  JournalPhase,
  JournalRecord,
  Jurisdiction,
  SecretField,
  SecretsHold,
  SecretTarget,
  Settings,
  SmokeResult,
  TokenOwner,
  TokenScope,
  UseEvidence
} from './model.js'

// ------------------------------------------------------------------------------- journal phases

/** Phases after which nothing is left to finish. */
export function isSettled(phase: JournalPhase): boolean {
  return phase === 'done' || phase === 'rolled-back'
}

/** Phases in which the new token may be in the secrets (publish began). */
export function isPublished(phase: JournalPhase): boolean {
  return !['minting', 'minted', 'done', 'rolled-back', 'rotating'].includes(phase)
}

// ------------------------------------------------------------------------------- credentials

export function fieldValue(field: SecretField, credentials: Credentials): string | undefined {
  switch (field) {
    case 'token':
      return credentials.value
    case 'access-key-id':
      return credentials.id
    case 'secret-access-key':
      return credentials.secretAccessKey
    case 'client-id':
      return credentials.clientId
    case 'client-secret':
      return credentials.clientSecret
  }
}

/** The fields among `fields` whose value is not known for `credentials`. */
export function missingFields(credentials: Credentials, fields: SecretField[]): SecretField[] {
  return [...new Set(fields)].filter(field => fieldValue(field, credentials) === undefined)
}

/** Everything the inputs tell about one token id. */
export function credentialsOf(id: string, known: Credentials[]): Credentials {
  const merged: Credentials = { id }
  for (const c of known) {
    if (c.id !== id) continue
    merged.value ??= c.value
    merged.secretAccessKey ??= c.secretAccessKey
  }
  return merged
}

// ------------------------------------------------------------------------------- the plan

/** A token that expires within this long is due now, or it lapses in production. */
export const EXPIRY_WARNING_MS = 7 * 24 * 3600 * 1000

/** Cloudflare stores token times to the second (RFC 3339 without fractions). */
export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

export type Due = { due: true; why: string } | { due: false; dueAt: Date }

/**
 * Whether the token in use is due: `force`, no `rotate-after`, no known issue date, its issue date
 * plus `rotate-after` reached, or an expiry within 7 days (it would lapse before the next run).
 */
export function decideDue(
  settings: Pick<Settings, 'force' | 'rotateAfterMs'>,
  token: Pick<ApiToken, 'issued_on' | 'expires_on'>,
  now: Date
): Due {
  if (settings.force) return { due: true, why: 'force: true' }
  if (settings.rotateAfterMs === 0) return { due: true, why: 'no rotate-after' }
  if (token.expires_on && Date.parse(token.expires_on) - now.getTime() < EXPIRY_WARNING_MS) {
    return { due: true, why: `it expires on ${token.expires_on}, within 7 days` }
  }
  const issued = token.issued_on ? Date.parse(token.issued_on) : NaN
  if (Number.isNaN(issued)) return { due: true, why: 'its issue date is unknown' }
  const dueAt = new Date(issued + settings.rotateAfterMs)
  if (dueAt <= now) return { due: true, why: `it is older than rotate-after` }
  return { due: false, dueAt }
}

/** token-ttl wins; else keep the old lifetime length when the old token expires; else no expiry. */
export function newExpiry(
  settings: Pick<Settings, 'tokenTtlMs'>,
  token: Pick<ApiToken, 'issued_on' | 'expires_on'>,
  now: Date
): string | undefined {
  if (settings.tokenTtlMs !== undefined) {
    return isoSeconds(new Date(now.getTime() + settings.tokenTtlMs))
  }
  if (token.expires_on && token.issued_on) {
    const lifetime = Date.parse(token.expires_on) - Date.parse(token.issued_on)
    if (lifetime > 0) return isoSeconds(new Date(now.getTime() + lifetime))
  }
  return undefined
}

export function expiryWarnings(
  settings: Pick<Settings, 'rotateAfterMs'>,
  token: Pick<ApiToken, 'id' | 'expires_on'>,
  newExpiresOn: string | undefined,
  now: Date
): string[] {
  const warnings: string[] = []
  if (token.expires_on && Date.parse(token.expires_on) - now.getTime() < EXPIRY_WARNING_MS) {
    warnings.push(`The current token ${token.id} expires on ${token.expires_on}, within 7 days.`)
  }
  if (newExpiresOn && settings.rotateAfterMs > 0) {
    const nextDue = new Date(now.getTime() + settings.rotateAfterMs)
    if (new Date(newExpiresOn) < nextDue) {
      warnings.push(
        `The new token will expire on ${newExpiresOn}, before the next rotation is due (${isoSeconds(nextDue)}, rotate-after). Raise token-ttl or lower rotate-after, or the token will lapse between rotations.`
      )
    }
  }
  return warnings
}

/** The management token's own expiry: a warning within 30 days, a refusal once it has passed. */
export const MANAGEMENT_EXPIRY_WARNING_MS = 30 * 24 * 3600 * 1000

/** Where a management token is made, in the dashboard's words (api-facts, credentials.md). */
export const MANAGEMENT_RENEWAL =
  "dashboard: My Profile → API Tokens → Create Token → the 'Create additional tokens' template for a user-owned token, or Manage Account → API Tokens with Account › Account API Tokens › Edit for an account-owned one"

/**
 * The new token's name: the expanded template, made unique among the owner's tokens with the run
 * (` #<run id>`, ` #<run id>-<attempt>` on a re-run) when another token carries it already. The
 * journal records it before the create, and a token with this name that the journal does not
 * know is an orphan of this rotation: no clock is compared.
 */
export function uniqueTokenName(
  expanded: string,
  existingNames: string[],
  run: { id: string; attempt: number },
  maxLength: number
): string {
  const taken = new Set(existingNames)
  if (!taken.has(expanded)) return expanded
  const base = `#${run.id || 'local'}${run.attempt > 1 ? `-${run.attempt}` : ''}`
  for (let n = 1; ; n++) {
    const tag = ` ${base}${n > 1 ? `.${n}` : ''}`
    const head = Array.from(expanded)
      .slice(0, Math.max(0, maxLength - tag.length))
      .join('')
      .trimEnd()
    if (!taken.has(`${head}${tag}`)) return `${head}${tag}`
  }
}

export interface ProbePlan {
  mode: 'read' | 'write'
  bucket: string
  jurisdiction: Jurisdiction
}

/**
 * The R2 probe: `auto` probes writes if the token may write objects, reads if it may only read,
 * nothing when no single bucket is known; `read`/`write` need a bucket.
 */
export function planProbe(
  settings: Pick<Settings, 'r2'>,
  scope: TokenScope
):
  | { kind: 'probe'; probe: ProbePlan }
  | { kind: 'off'; warning?: string }
  | { kind: 'refuse'; message: string } {
  if (settings.r2.probe === 'off') return { kind: 'off' }
  const single =
    scope.buckets !== 'all' && scope.buckets.length === 1 ? scope.buckets[0] : undefined
  const bucket = settings.r2.bucket ?? single?.bucket
  let mode: 'read' | 'write' | undefined
  if (settings.r2.probe === 'auto') {
    mode = scope.canWrite ? 'write' : scope.canRead ? 'read' : undefined
    if (!mode) return { kind: 'off' }
    if (!bucket) {
      return {
        kind: 'off',
        warning:
          'R2 probe: off, because the token is not scoped to exactly one bucket. Set r2-bucket to a bucket it can reach so that the new credentials are proven through the S3 API before anything uses them.'
      }
    }
  } else {
    mode = settings.r2.probe
    if (!bucket) {
      return {
        kind: 'refuse',
        message: `Input 'r2-probe' is '${mode}' but no bucket is known: the token is not scoped to exactly one bucket. Set r2-bucket.`
      }
    }
  }
  const jurisdiction =
    (scope.buckets !== 'all' && scope.buckets.find(b => b.bucket === bucket)?.jurisdiction) ||
    'default'
  return { kind: 'probe', probe: { mode, bucket, jurisdiction } }
}

// -------------------------------------------------------------------------- IP conditions

/** One IP rule of a token condition: the addresses it admits and those it excludes. */
export interface IpRule {
  in?: string[]
  notIn: string[]
}

/**
 * The IP rules of a token's `condition` (`request_ip`, or its older spelling `request.ip`; both
 * must pass when both are present); empty when the token has no IP condition.
 */
export function ipRules(condition: unknown): IpRule[] {
  if (!condition || typeof condition !== 'object') return []
  const rules: IpRule[] = []
  for (const key of ['request_ip', 'request.ip']) {
    const rule = (condition as Record<string, unknown>)[key]
    if (!rule || typeof rule !== 'object') continue
    const list = (value: unknown): string[] | undefined =>
      Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : undefined
    const admitted = list((rule as Record<string, unknown>).in)
    rules.push({
      ...(admitted ? { in: admitted } : {}),
      notIn: list((rule as Record<string, unknown>).not_in) ?? []
    })
  }
  return rules
}

/** A condition in words: "only from 192.0.2.0/24, not from 192.0.2.7"; undefined without one. */
export function describeCondition(condition: unknown): string | undefined {
  const rules = ipRules(condition)
  if (rules.length === 0) return undefined
  return rules
    .map(rule => {
      const parts: string[] = []
      if (rule.in)
        parts.push(rule.in.length > 0 ? `only from ${rule.in.join(', ')}` : 'from no address')
      if (rule.notIn.length > 0) parts.push(`not from ${rule.notIn.join(', ')}`)
      return parts.length > 0 ? parts.join(', ') : 'from any address'
    })
    .join('; and ')
}

/** What a token's IP condition means for this run, for the log and the job summary. */
export function conditionNote(facts: {
  condition: unknown
  /** Where Cloudflare refused the token from this runner, if it did. */
  refusedFrom?: string
  probe: boolean
}): string | undefined {
  const words = describeCondition(facts.condition)
  if (!words) return undefined
  const here =
    facts.refusedFrom === undefined
      ? facts.probe
        ? 'The R2 probe uses the credentials from this runner, so its address must be inside the filter.'
        : 'Only the management token is used from this runner; the smoke checks prove the new token where the app runs.'
      : `Cloudflare refuses the token from this runner${facts.refusedFrom ? ` (${facts.refusedFrom})` : ''}: the new token is checked with the management token instead of by itself, and proven by the smoke checks where the app runs.`
  return `IP condition: requests ${words}. The new token gets the same condition, unchanged. ${here}`
}

/**
 * Cloudflare refused the current token from this runner's address (its IP condition): refused
 * when the run needs the token from here — to learn which token `current-token` is (no
 * `current-access-key-id`), or for the R2 probe (the new token keeps the condition, so its probe
 * would fail after the mint). Otherwise undefined: the run goes on without using it from here.
 */
export function locationRefusal(facts: {
  tokenId?: string
  condition?: unknown
  refusedFrom: string
  /** No `current-access-key-id`: only a verify from here can tell which token it is. */
  needsVerify: boolean
  probePlanned: boolean
}): string | undefined {
  if (!facts.needsVerify && !facts.probePlanned) return undefined
  const words = describeCondition(facts.condition)
  const uses = [
    ...(facts.needsVerify ? ['a verify, to learn which token current-token is'] : []),
    ...(facts.probePlanned ? ['the R2 probe with the current and the new credentials'] : [])
  ]
  const off = [
    ...(facts.probePlanned ? ['r2-probe: off'] : []),
    ...(facts.needsVerify ? ['current-access-key-id set to the token id'] : [])
  ]
  return (
    `Cloudflare refuses ${facts.tokenId ? `token ${facts.tokenId}` : 'the current-token'} from this runner's address${facts.refusedFrom ? ` (${facts.refusedFrom})` : ''}` +
    `${words ? `: its IP condition admits requests ${words}` : ' (code 9109, an IP condition)'}. ` +
    `This run would use the token from here (${uses.join('; ')}), and the new token keeps the same condition. Nothing was minted or changed. ` +
    `Either run the rotation on a runner whose fixed egress address is inside the filter (a self-hosted runner, or a larger runner with a static IP), ` +
    `or set ${off.join(' and ')}: the new token is then checked with the management token, and the smoke checks, which run where the app is, prove that it works. ` +
    'Do not widen the filter for the rotation: the new token copies it as it is.'
  )
}

// ------------------------------------------------------------------------------- refusals

/** Facts that can stop a rotation before anything is minted. */
export interface PreflightFacts {
  owner: TokenOwner
  /** The token the deployments use now. */
  current: Pick<ApiToken, 'id' | 'status'>
  managementId: string
  managementExpiresOn?: string
  /** The previous token of a rotation being finished, if any. */
  previousId?: string
  /** Live tokens of the owner (the quota counts them), with those about to be deleted. */
  ownerTokens: Array<Pick<ApiToken, 'id' | 'name' | 'status'>>
  deletingFirst: string[]
  /** What the current-* inputs say, when they describe more than one token. */
  inputsMismatch?: string
  /** Whether the mismatch is expected (a recovery that finishes or undoes a publish). */
  recoveringPublished: boolean
  leastPrivilege: Settings['leastPrivilege']
  scopeWarnings: string[]
  now: Date
  /** How many tokens the owner may hold (Cloudflare's quota for its kind). */
  quota: number
  /** The permission a management token needs for this owner, in Cloudflare's words. */
  managementPermission: string
}

/** Requests to Cloudflare that a rotation makes after preflight, at most (create, re-read, verify, disable, watch, enable, delete, evidence…). */
export const ROTATION_CLOUDFLARE_REQUESTS = 25

/**
 * The github-token's expiry, when GitHub sent it: a warning within
 * `MANAGEMENT_EXPIRY_WARNING_MS` (30 days), a refusal once passed; undefined otherwise.
 */
export function githubTokenExpiry(
  expires: Date | undefined,
  now: Date
): { kind: 'warn' | 'refuse'; message: string } | undefined {
  if (!expires) return undefined
  const left = expires.getTime() - now.getTime()
  const renew =
    'Regenerate it (a fine-grained PAT: Settings → Developer settings → Personal access tokens → Fine-grained tokens → the token → Regenerate token; or use a GitHub App, whose tokens are minted per run) and update the secret it comes from'
  if (left <= 0) {
    return {
      kind: 'refuse',
      message: `The github-token expired on ${isoSeconds(expires)}. ${renew}.`
    }
  }
  if (left >= MANAGEMENT_EXPIRY_WARNING_MS) return undefined
  const days = Math.floor(left / (24 * 3600 * 1000))
  return {
    kind: 'warn',
    message: `The github-token expires on ${isoSeconds(expires)} (in ${days === 0 ? 'less than a day' : `${days} day(s)`}). ${renew} before then: once it expires every rotation fails, and the rotated token is no longer renewed.`
  }
}

/** Every reason found to refuse, in the order a user should fix them; empty when none. */
export function refusals(facts: PreflightFacts): string[] {
  const out: string[] = []
  if (facts.inputsMismatch && !facts.recoveringPublished) out.push(facts.inputsMismatch)
  if (facts.current.status !== 'active') {
    out.push(
      `The current token ${facts.current.id} is ${facts.current.status}. Only an active token can be rotated; pass the token the deployments use now as current-token or current-access-key-id.`
    )
  }
  if (facts.managementId === facts.current.id || facts.managementId === facts.previousId) {
    out.push(
      `The management token (cloudflare-api-token) is the token being rotated (${facts.managementId}); revoking it would end the rotation midway. Use a separate token with '${facts.managementPermission}'.`
    )
  }
  if (facts.managementExpiresOn && Date.parse(facts.managementExpiresOn) <= facts.now.getTime()) {
    out.push(
      `The management token (cloudflare-api-token) ${facts.managementId} expired on ${facts.managementExpiresOn}. Create a new one (${MANAGEMENT_RENEWAL}) and update the secret it comes from.`
    )
  }
  if (facts.leastPrivilege === 'enforce' && facts.scopeWarnings.length > 0) {
    out.push(
      `least-privilege: enforce refuses to rotate token ${facts.current.id}: ${facts.scopeWarnings.join(' ')} Narrow the token's policies (one bucket, object-level permissions) or set least-privilege: warn.`
    )
  }
  const quota = facts.quota
  const counted = facts.ownerTokens.filter(t => !facts.deletingFirst.includes(t.id))
  if (counted.length >= quota) {
    const disabled = counted.filter(t => t.status === 'disabled')
    const owner =
      facts.owner.kind === 'user'
        ? 'user-owned'
        : `account-owned (account ${facts.owner.accountId})`
    out.push(
      `Cloudflare allows ${quota} ${owner} API tokens and ${counted.length} exist: the new token needs a free slot, because it is created before the old one is deleted. ` +
        (disabled.length > 0
          ? `Delete tokens you no longer need, for example the ${disabled.length} disabled one(s): ${disabled
              .slice(0, 10)
              .map(t => `${t.id} "${t.name}"`)
              .join(', ')}${disabled.length > 10 ? ', …' : ''}.`
          : 'Delete tokens you no longer need (dashboard: API Tokens).')
    )
  }
  return out
}

/**
 * Whether Cloudflare's rate budget (requests left in its five-minute window, read from the last
 * answer) covers what a rotation needs after preflight; checked last, after preflight's own reads.
 */
export function budgetRefusal(rate: { remaining?: number; resetAt?: Date }): string | undefined {
  const { remaining } = rate
  if (remaining === undefined || remaining >= ROTATION_CLOUDFLARE_REQUESTS) return undefined
  const reset = rate.resetAt ? ` The budget resets at ${isoSeconds(rate.resetAt)}.` : ''
  return `Only ${remaining} Cloudflare API requests are left in this five-minute window, and a rotation needs up to ${ROTATION_CLOUDFLARE_REQUESTS} after preflight: starting now could leave it stuck midway. The budget is shared by every person and tool of this Cloudflare user.${reset} Run again later.`
}

/** The one failing sentence about the app before anything changes, or undefined when healthy. */
export function baselineRefusal(
  smoke: SmokeResult[],
  probe: { ok: true } | { ok: false; reason: string } | undefined,
  currentId: string,
  condition?: unknown
): string | undefined {
  const failed = smoke.filter(r => !r.ok)
  const parts: string[] = []
  if (failed.length > 0) {
    parts.push(
      `${failed.length} smoke check(s) fail with the credentials in use now: ${failed.map(f => `${f.url} (${f.reason ?? f.status})`).join('; ')}`
    )
  }
  if (probe && !probe.ok) {
    const words = describeCondition(condition)
    parts.push(
      `the R2 probe with the current credentials of token ${currentId} fails: ${probe.reason}` +
        (words
          ? ` (the token's IP condition admits requests ${words}: from a runner outside it the probe cannot pass; run on a runner inside it, or set r2-probe: off and let the smoke checks prove the new token)`
          : '')
    )
  }
  if (parts.length === 0) return undefined
  return `The app is failing before the rotation: ${parts.join('; and ')}. Nothing was minted or changed. Fix the app (or the smoke-urls input, if a URL is wrong) and run again.`
}

export interface Shadow {
  /** `env production of acme/site`, or `repository acme/site`. */
  where: string
  secret: string
  /** The job that reads it, when it is an environment's. */
  job?: string
  /** The secret-targets line that would write it. */
  fix: string
}

/**
 * Environment secrets take precedence over repository secrets, and repository secrets over
 * organization secrets (docs.github.com/actions/security-guides/using-secrets-in-github-actions:
 * "If a secret with the same name exists at multiple levels, the secret at the lowest level takes
 * precedence"). A copy at a lower level that the rotation does not write makes the deploy ship the
 * old credentials while the run concludes success.
 */
export function shadowRefusal(shadows: Shadow[]): string | undefined {
  if (shadows.length === 0) return undefined
  const lines = shadows.map(
    s =>
      `${s.where} holds its own secret ${s.secret}${s.job ? `, which the deploy job '${s.job}' reads` : ''} instead of the one this rotation writes; add \`${s.fix}\` to secret-targets (or delete that copy)`
  )
  return `The deploy would run on the old credentials: ${lines.join('; ')}. Secrets at a lower level (environment, then repository, then organization) shadow those above them. Nothing was changed.`
}

/** What preflight read of the secrets the deploy will see (names only). */
export interface ShadowFacts {
  repository: { owner: string; repo: string }
  /** For each job environment with a name: whether it holds each rotated secret itself. */
  environmentSecrets: Array<{ job: string; environment: string; secret: string; exists?: boolean }>
  /** When an org target exists: whether the deploy repository holds each rotated secret. */
  repositorySecrets: Array<{ secret: string; exists?: boolean }>
}

/** The copies of the rotated secrets that the deploy would read instead of those written. */
export function shadowsOf(facts: ShadowFacts, targets: SecretTarget[]): Shadow[] {
  const repo = facts.repository
  const where = `${repo.owner}/${repo.repo}`
  const shadows: Shadow[] = []
  for (const e of facts.environmentSecrets) {
    if (e.exists !== true || writesEnvironment(targets, repo, e.environment)) continue
    shadows.push({
      where: `Environment '${e.environment}' of ${where}`,
      secret: e.secret,
      job: e.job,
      fix: `env:${where}:${e.environment}`
    })
  }
  for (const r of facts.repositorySecrets) {
    if (r.exists !== true || writesRepository(targets, repo)) continue
    shadows.push({ where: `The repository ${where}`, secret: r.secret, fix: `repo:${where}` })
  }
  return shadows
}

/** Which secret-targets line writes the secrets a deploy job in `environment` of `repo` reads. */
export function writesEnvironment(
  targets: SecretTarget[],
  repo: { owner: string; repo: string },
  environment: string
): boolean {
  const same = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase()
  return targets.some(
    t =>
      t.kind === 'env' &&
      same(t.owner, repo.owner) &&
      same(t.repo, repo.repo) &&
      same(t.environment, environment)
  )
}

export function writesRepository(
  targets: SecretTarget[],
  repo: { owner: string; repo: string }
): boolean {
  const same = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase()
  return targets.some(
    t => t.kind === 'repo' && same(t.owner, repo.owner) && same(t.repo, repo.repo)
  )
}

// ------------------------------------------------------------------------------- Workers

/** A Worker's live deployment as the API lists it (the first entry of `GET …/deployments`). */
export interface LiveDeployment {
  id: string
  createdOn: string
  versions: Array<{ versionId: string; percentage: number }>
}

/**
 * Why the secrets of Worker `script` cannot be written now, or undefined when they can. A write
 * makes a version and deploys it to all traffic; Cloudflare refuses it (code 10215) while the
 * live deployment splits traffic between versions (a gradual rollout), so the rotation must not
 * mint a token it could not publish.
 */
export function workerRefusal(
  script: string,
  live: LiveDeployment | undefined
): string | undefined {
  if (!live || live.versions.length === 0) {
    return `Worker ${script} has no deployment serving traffic: deploy it first (wrangler deploy), then run again. Nothing was minted or changed.`
  }
  const whole = live.versions.length === 1 && live.versions[0]!.percentage === 100
  if (whole) return undefined
  const split = live.versions.map(v => `${v.versionId} at ${v.percentage}%`).join(', ')
  return `Worker ${script} is in a gradual rollout (deployment ${live.id}: ${split}): Cloudflare refuses secret writes (code 10215) until one version serves all traffic. Finish the rollout (wrangler versions deploy <version>@100%) or roll it back, then run again. Nothing was minted or changed.`
}

/**
 * The targets a restore of the previous values writes: every one, except a Worker this run knows
 * it never gave the new values (its write was refused outright, or not sent). A Worker write
 * makes and deploys a new version, and a Worker that refused the new values (a rollout begun
 * since preflight: 10215) would refuse the restore too. `knowsWrites` is false after a crash
 * (a recovered rotation): then nothing is known, and every target is written.
 */
export function restoreTargets(
  targets: SecretTarget[],
  facts: { knowsWrites: boolean; workersMaybeNew: ReadonlySet<string> }
): SecretTarget[] {
  if (!facts.knowsWrites) return targets
  return targets.filter(t => t.kind !== 'worker' || facts.workersMaybeNew.has(t.line))
}

/**
 * The summary's caution for the Workers this run wrote: their older versions hold the
 * credentials of a token that is gone now, so a rollback of the Worker to one of them (dashboard
 * Deployments → Rollback, `wrangler rollback`) breaks it. Undefined when no token was revoked.
 */
export function workerRollbackNote(facts: {
  scripts: string[]
  /** The token whose values the older versions hold, and what became of it. */
  goneId: string
  gone: 'deleted' | 'disabled' | 'rolled-back'
  /** When the run wrote the new values into the Workers (ISO). */
  at: string
}): string | undefined {
  if (facts.scripts.length === 0) return undefined
  const workers = facts.scripts.map(s => `Worker ${s}`).join(', ')
  if (facts.gone === 'rolled-back') {
    return `${workers}: the version this run made at ${facts.at} holds the new token ${facts.goneId}, deleted by the rollback (the newest version holds the previous values again). Rolling the Worker back to that version (Deployments → Rollback, wrangler rollback) brings back a revoked credential and breaks it.`
  }
  return `${workers}: every version made before ${facts.at} holds the previous token ${facts.goneId}, now ${facts.gone}. Rolling the Worker back to such a version (Deployments → Rollback, wrangler rollback) brings back a revoked credential and breaks it; roll back only to a version made since.`
}

// ------------------------------------------------------------------------------- the lock

export type LockDecision =
  { kind: 'ours' } | { kind: 'take-over'; why: string } | { kind: 'refuse'; why: string }

/**
 * A lock that exists: whose is it, and may this run take it? `holderRun` is the state of the
 * holder's workflow run: 'running' (queued, in progress, waiting), 'completed', 'gone' (404), or
 * 'unknown' when the lock names no run this action can look up.
 */
export function decideLock(
  holder: { run_id: string; run_attempt: number },
  holderRun: 'running' | 'completed' | 'gone' | 'unknown',
  self: { id: string; attempt: number }
): LockDecision {
  // A lock naming no run is nobody's, not even a run without a run id (outside Actions).
  if (holder.run_id !== '' && holder.run_id === self.id && holder.run_attempt === self.attempt) {
    return { kind: 'ours' }
  }
  if (holder.run_id !== '' && holder.run_id === self.id && holder.run_attempt < self.attempt) {
    return { kind: 'take-over', why: `it was left by attempt ${holder.run_attempt} of this run` }
  }
  switch (holderRun) {
    case 'running':
      return { kind: 'refuse', why: 'that run is still going' }
    case 'completed':
      return { kind: 'take-over', why: 'that run has completed without releasing it (killed?)' }
    case 'gone':
      return { kind: 'take-over', why: 'that run no longer exists' }
    case 'unknown':
      return {
        kind: 'refuse',
        why: 'it names no workflow run this action can look up; if no rotation is running, delete the variable by hand'
      }
  }
}

// ------------------------------------------------------------------------------- recovery

/** What the run whose id the journal records is doing now. */
export type JournalRunState = 'self' | 'running' | 'completed' | 'gone' | 'unknown'

/** Where a rotation finished forward resumes. */
export type ResumeAt = 'publish' | 'smoke' | 'watch' | 'finish'

/** What a run does about an unfinished rotation it finds in the journal. */
export type Recovery =
  /** Another run is still rotating: change nothing. */
  | { kind: 'refuse'; record: JournalRecord; message: string }
  /** Minted but never published (`minting`, `minted`): delete the orphan(s), then rotate afresh. */
  | { kind: 'delete-unpublished'; record: JournalRecord; tokenIds: string[] }
  /** The inputs (the secrets as they are now) hold the pending token: finish the rotation. */
  | {
      kind: 'forward'
      record: JournalRecord
      next: Credentials
      previousId: string
      from: ResumeAt
    }
  /** The inputs hold the previous token: restore it everywhere, deploy, smoke, delete the pending one. */
  | { kind: 'restore'; record: JournalRecord; previous: Credentials; pendingId: string }
  /** Neither can be completed from the inputs: keep both tokens and say what to do. */
  | { kind: 'stuck'; record: JournalRecord; reason: string }

export interface RecoveryFacts {
  record: JournalRecord
  journalRun: JournalRunState
  /** The journal's run as GitHub shows it (its status and link), when it was read. */
  journalRunDetail?: { status: string; url: string }
  /** What the current-* inputs give, one entry per token they name. */
  known: Credentials[]
  fields: SecretField[]
  /** The owner's live tokens (status, name), to find orphans and the state of the previous token. */
  ownerTokens: Array<Pick<ApiToken, 'id' | 'name' | 'status'>>
}

/**
 * For an unfinished rotation (`record` not settled): refuse while its run goes on; delete what
 * was minted and never published; otherwise finish it forward (the inputs give every field of the
 * pending token: it is in at least one secret) or restore the previous token (the inputs give
 * its fields), or keep both when neither is possible.
 */
export function decideRecovery(facts: RecoveryFacts): Recovery {
  const { record } = facts
  if (facts.journalRun === 'running') {
    return {
      kind: 'refuse',
      record,
      message: `Another rotation is in progress in run ${record.run_id} (${facts.journalRunDetail ? `${facts.journalRunDetail.status}, ` : ''}phase ${record.phase})${facts.journalRunDetail ? `: ${facts.journalRunDetail.url}` : ''}. Nothing was changed. Let it finish, and use a 'concurrency:' group so that rotations of one token never overlap.`
    }
  }
  if (!isPublished(record.phase)) {
    return { kind: 'delete-unpublished', record, tokenIds: orphansOf(record, facts) }
  }
  const pendingId = record.pending_token_id
  const previousId = record.previous_token_id
  if (!pendingId || !previousId) {
    return {
      kind: 'stuck',
      record,
      reason: `the journal (phase ${record.phase}) names no ${pendingId ? 'previous' : 'pending'} token id`
    }
  }
  const next = credentialsOf(pendingId, facts.known)
  const previous = credentialsOf(previousId, facts.known)
  const nextMissing = missingFields(next, facts.fields)
  if (nextMissing.length === 0) {
    return { kind: 'forward', record, next, previousId, from: resumePoint(facts) }
  }
  const previousMissing = missingFields(previous, facts.fields)
  if (previousMissing.length === 0) {
    if (!facts.ownerTokens.some(t => t.id === previousId)) {
      return {
        kind: 'stuck',
        record,
        reason: `the previous token ${previousId} is gone, and the current-* inputs do not give every field of the pending token ${pendingId} (missing: ${nextMissing.join(', ')}) to finish the rotation with`
      }
    }
    return { kind: 'restore', record, previous, pendingId }
  }
  return {
    kind: 'stuck',
    record,
    reason:
      `the current-* inputs give neither every field of the pending token ${pendingId} ` +
      `(missing: ${nextMissing.join(', ')}) nor of the previous token ${previousId} ` +
      `(missing: ${previousMissing.join(', ')})`
  }
}

/**
 * Where a forward recovery starts. The journal moves to `smoke` only after the deploy concluded
 * success and to `revoking` only after the smoke checks passed, so those need not be repeated; the
 * previous token's own state says how far the revoke got: disabled (the watch was interrupted),
 * gone (it was deleted), or active again after a disable (a check failed and it was re-enabled:
 * the deploy did not take, so everything is done again).
 */
function resumePoint(facts: RecoveryFacts): ResumeAt {
  const { record } = facts
  const previous = facts.ownerTokens.find(t => t.id === record.previous_token_id)
  switch (record.phase) {
    case 'smoke':
      return 'smoke'
    case 'revoking':
      if (!previous) return 'finish'
      if (previous.status === 'disabled') return 'watch'
      return record.revoke?.disabled_at ? 'publish' : 'smoke'
    default:
      return 'publish'
  }
}

/**
 * Tokens minted under the journal's pending name and never published: the name was unique among
 * the owner's tokens when it was recorded, before the create, so a token carrying it that is
 * neither the previous token nor one the inputs name was minted by that rotation.
 */
export function orphansOf(
  record: JournalRecord,
  facts: Pick<RecoveryFacts, 'known' | 'ownerTokens'>
): string[] {
  const inUse = new Set([...facts.known.map(k => k.id), record.previous_token_id])
  const byName = record.pending_token_name
    ? facts.ownerTokens
        .filter(t => t.name === record.pending_token_name && !inUse.has(t.id))
        .map(t => t.id)
    : []
  // The pending token only while it exists: a clean-up killed after its delete leaves it named.
  const id = record.pending_token_id
  const pending = id && !inUse.has(id) && facts.ownerTokens.some(t => t.id === id) ? [id] : []
  return [...new Set([...pending, ...byName])]
}

/**
 * The token in service now, as preflight plans from it: the one the inputs name, or, while an
 * earlier rotation is finished or undone, the token that rotation leaves in service. Also the ids
 * a smoke check's `{access-key-id}` may name in preflight (either token of that rotation may be
 * serving) and the token the report calls previous.
 */
export function serving(
  recovery: Recovery | undefined,
  resolvedId: string,
  known: Credentials[]
): {
  currentId: string
  credentials: Credentials
  /** The token this run revokes, and what the inputs tell of it (a rollback restores it). */
  previous: Credentials
  candidates: string[]
} {
  switch (recovery?.kind) {
    case 'restore':
      return {
        currentId: recovery.previous.id,
        credentials: recovery.previous,
        previous: recovery.previous,
        candidates: tokensOf(recovery.record, recovery.previous.id)
      }
    case 'forward':
      return {
        currentId: recovery.next.id,
        credentials: recovery.next,
        previous: credentialsOf(recovery.previousId, known),
        candidates: tokensOf(recovery.record, recovery.next.id)
      }
    default: {
      const candidates = recovery ? tokensOf(recovery.record, resolvedId) : [resolvedId]
      const credentials = known.find(k => k.id === resolvedId) ?? known[0] ?? { id: resolvedId }
      return { currentId: resolvedId, credentials, previous: credentials, candidates }
    }
  }
}

function tokensOf(record: JournalRecord, current: string): string[] {
  const ids = [current, record.previous_token_id, record.pending_token_id]
  return [...new Set(ids.filter((id): id is string => !!id))]
}

export function describeRecovery(recovery: Recovery): string {
  switch (recovery.kind) {
    case 'refuse':
      return recovery.message
    case 'delete-unpublished':
      return recovery.tokenIds.length
        ? `delete the unpublished token(s) ${recovery.tokenIds.join(', ')}, then rotate afresh`
        : 'no token was minted; rotate afresh'
    case 'forward':
      switch (recovery.from) {
        case 'publish':
          return `the secrets hold the new token ${recovery.next.id}: publish it everywhere, deploy, smoke-check, then revoke ${recovery.previousId}`
        case 'smoke':
          return `the new token ${recovery.next.id} was deployed: smoke-check, then revoke ${recovery.previousId}`
        case 'watch':
          return `the previous token ${recovery.previousId} is disabled: watch the checks again, then finish its revoke`
        case 'finish':
          return `the previous token ${recovery.previousId} is gone: the rotation to ${recovery.next.id} is complete`
      }
      break
    case 'restore':
      return `the secrets hold the previous token ${recovery.previous.id}: restore it everywhere, deploy, smoke-check, delete ${recovery.pendingId}, then rotate afresh`
    case 'stuck':
      return `cannot finish it: ${recovery.reason}`
  }
}

// ------------------------------------------------------------------------------- revocation

export type Revocation =
  | { kind: 'keep' }
  /** Delete (or disable) at once: no watch (`revoke-watch: 0s`, or nothing to watch). */
  | { kind: 'now'; action: 'delete' | 'disable' }
  /** Disable, watch the checks for `watchMs`, then delete (`revoke: delete`) or leave it disabled. */
  | { kind: 'watched'; watchMs: number; intervalMs: number; thenDelete: boolean }

/** How often the watch runs every check: 24 rounds over the watch, between 1 s and 5 s apart. */
export function watchInterval(watchMs: number): number {
  return Math.min(5000, Math.max(1000, Math.round(watchMs / 24)))
}

export function decideRevocation(
  settings: Pick<Settings, 'revoke' | 'revokeWatchMs'>,
  checks: number
): Revocation {
  switch (settings.revoke) {
    case 'keep':
      return { kind: 'keep' }
    case 'delete':
    case 'disable':
      if (settings.revokeWatchMs === 0 || checks === 0) {
        return { kind: 'now', action: settings.revoke }
      }
      return {
        kind: 'watched',
        watchMs: settings.revokeWatchMs,
        intervalMs: watchInterval(settings.revokeWatchMs),
        thenDelete: settings.revoke === 'delete'
      }
  }
}

/** Tokens an earlier `revoke: disable` left: delete those still disabled, leave those re-enabled. */
export function leftoverTokens(
  ids: string[],
  tokens: Array<Pick<ApiToken, 'id' | 'status'>>,
  exclude: string[]
): { remove: string[]; reenabled: string[]; gone: string[] } {
  const remove: string[] = []
  const reenabled: string[] = []
  const gone: string[] = []
  for (const id of new Set(ids)) {
    if (exclude.includes(id)) continue
    const token = tokens.find(t => t.id === id)
    if (!token) gone.push(id)
    // Expired is as unusable as disabled: nothing can run on it.
    else if (token.status === 'disabled' || token.status === 'expired') remove.push(id)
    else reenabled.push(id)
  }
  return { remove, reenabled, gone }
}

// ------------------------------------------------------------------------------- may it be deleted?

/** Why a delete is asked for, with the facts that must hold for it. */
export type DeleteRequest =
  /** The new token of this run, after a failure before any secret write began. */
  | { kind: 'unpublished'; tokenId: string; mintedByThisRun: boolean; publishStarted: boolean }
  /** A token the journal ties to a rotation (its pending id, or its pending name) and never published. */
  | {
      kind: 'orphan'
      tokenId: string
      name: string
      journalName?: string
      journalPendingId?: string
      previousId?: string
      knownIds: string[]
    }
  /** The previous token at the end of a rotation. */
  | {
      kind: 'previous'
      tokenId: string
      nextId: string
      /** Every target was written with the next token. */
      publishedEverywhere: boolean
      /** `success`, or `none` for `deploy-workflow: none`. */
      deploy: 'success' | 'none' | 'not-concluded'
      smokePassed: boolean
      /** The watch: passed, or off (`revoke-watch: 0s` or nothing to check). */
      watch: 'passed' | 'off' | 'failed' | 'not-run'
    }
  /** The new token at the end of a rollback (or a restore). */
  | {
      kind: 'rolled-back'
      tokenId: string
      previousId: string
      restoredEverywhere: boolean
      deploy: 'success' | 'none' | 'not-concluded'
      smokePassed: boolean
      /** Deploy runs of this rotation still queued or running (one could still ship `tokenId`). */
      runsGoing: number[]
    }
  /** A token an earlier `revoke: disable` left, at a later rotation. */
  | { kind: 'leftover'; tokenId: string; status: string | undefined; inUse: string[] }
  /** The management token, at the end of its self-rotation (`rotate-management-token`). */
  | {
      kind: 'management-previous'
      tokenId: string
      nextId: string
      /** The successor answered verify as itself and read the owner's tokens. */
      nextVerified: boolean
      /** Every target was written with the successor and the write read back. */
      confirmedEverywhere: boolean
    }
  /** The successor of a self-rotation that is undone: the previous management token restored. */
  | {
      kind: 'management-pending'
      tokenId: string
      previousId: string
      /** The token this run authenticates with (the value of `cloudflare-api-token`). */
      servingId: string
      /** Every target holds the previous token again, read back. */
      restoredEverywhere: boolean
    }

export type Verdict = { ok: true } | { ok: false; reason: string }

const no = (reason: string): Verdict => ({ ok: false, reason })

/** The one answer to "may this token be deleted now?". */
export function mayDelete(request: DeleteRequest): Verdict {
  switch (request.kind) {
    case 'unpublished':
      if (!request.mintedByThisRun) return no('this run did not mint it')
      if (request.publishStarted) return no('it may already be in a secret')
      return { ok: true }
    case 'orphan':
      if (
        request.tokenId !== request.journalPendingId &&
        (!request.journalName || request.name !== request.journalName)
      ) {
        return no('the journal does not tie it to this rotation (neither its id nor its name)')
      }
      if (request.tokenId === request.previousId || request.knownIds.includes(request.tokenId)) {
        return no('it is the token in use')
      }
      return { ok: true }
    case 'previous':
      if (request.tokenId === request.nextId) return no('it is the token now in service')
      if (!request.publishedEverywhere) return no('not every target holds its replacement')
      if (request.deploy === 'not-concluded') {
        return no('no deploy with its replacement concluded success')
      }
      if (!request.smokePassed) return no('the smoke checks did not pass')
      if (request.watch === 'failed' || request.watch === 'not-run') {
        return no('the watch after the disable did not pass')
      }
      return { ok: true }
    case 'rolled-back':
      if (request.tokenId === request.previousId) return no('it is the token restored to service')
      if (!request.restoredEverywhere) return no('not every target holds the previous token again')
      if (request.deploy === 'not-concluded') {
        return no('no deploy with the previous token concluded success')
      }
      if (!request.smokePassed) return no('the smoke checks did not pass with the previous token')
      if (request.runsGoing.length > 0) {
        return no(
          `deploy run(s) ${request.runsGoing.join(', ')} of this rotation did not conclude and may still deploy the new token; it stays valid until they have`
        )
      }
      return { ok: true }
    case 'management-previous':
      if (request.tokenId === request.nextId) return no('it is the successor now in service')
      if (!request.nextVerified) return no('its successor has not proven that it works')
      if (!request.confirmedEverywhere) return no('not every target holds its successor')
      return { ok: true }
    case 'management-pending':
      if (request.tokenId === request.previousId) return no('it is the token restored to service')
      if (request.tokenId === request.servingId) {
        return no('it is the token this run authenticates with (cloudflare-api-token)')
      }
      if (!request.restoredEverywhere) return no('not every target holds the previous token again')
      return { ok: true }
    case 'leftover':
      if (request.inUse.includes(request.tokenId)) return no('it is in use in this rotation')
      if (request.status !== 'disabled' && request.status !== 'expired') {
        return no(
          request.status === undefined ? 'it is already gone' : `it is ${request.status} again`
        )
      }
      return { ok: true }
  }
}

// ------------------------------------------------------------------------------- after a failure

export interface FailureFacts {
  settings: Pick<Settings, 'onFailure' | 'secrets'>
  /** The token being introduced, if any. */
  next?: Credentials
  nextOrigin?: 'minted' | 'recovered'
  publishStarted: boolean
  /** The token to fall back on and what the inputs tell of its values. */
  previous?: Credentials
  /** The previous token is disabled right now (a re-enable after a failed watch failed too). */
  previousDisabled: boolean
}

export type AfterFailure =
  | { kind: 'nothing' }
  | { kind: 'delete-unpublished'; tokenId: string }
  | { kind: 'rollback'; previous: Credentials; pendingId: string }
  | { kind: 'keep-both'; why: string }

/**
 * A failure: delete the new token when nothing reads it yet; after publish began, roll back when
 * `on-failure: rollback` and every value the secrets need of the previous token is known, else
 * keep both tokens valid.
 */
export function afterFailure(facts: FailureFacts): AfterFailure {
  const { next } = facts
  if (!next) return { kind: 'nothing' }
  if (!facts.publishStarted) {
    return facts.nextOrigin === 'minted'
      ? { kind: 'delete-unpublished', tokenId: next.id }
      : { kind: 'keep-both', why: 'the new token was found in the secrets, so it is kept' }
  }
  if (facts.previousDisabled) {
    const whose = facts.previous && facts.previous.id !== next.id ? ` ${facts.previous.id}` : ''
    return {
      kind: 'keep-both',
      why: `the previous token${whose} could not be enabled again; enable it in the Cloudflare dashboard at once`
    }
  }
  if (facts.settings.onFailure === 'keep-both') {
    return { kind: 'keep-both', why: 'on-failure is keep-both' }
  }
  const previous = facts.previous
  // After a recovery that finished a rotation forward, "previous" could be the new token itself.
  if (!previous || previous.id === next.id) {
    return { kind: 'keep-both', why: "the previous token's values are not known" }
  }
  const missing = missingFields(
    previous,
    facts.settings.secrets.map(s => s.field)
  )
  if (missing.length > 0) {
    return {
      kind: 'keep-both',
      why: `the previous token's values are not known (missing: ${missing.join(', ')}; pass current-token, or current-access-key-id with current-secret-access-key)`
    }
  }
  return { kind: 'rollback', previous, pendingId: next.id }
}

/** What a check that failed during the watch says (`stillFailing`: why the app still fails after the re-enable, if it does). */
export function watchFailureMessage(
  previousId: string,
  failed: string,
  windowMs: number,
  stillFailing: string | undefined
): string {
  const after = stillFailing ? `the checks still fail (${stillFailing})` : 'the checks pass again'
  return `A check failed while the previous token ${previousId} was disabled: ${failed}. Something still runs on it, so it was enabled again at once (the app failed for at most ${Math.ceil(windowMs / 1000)} s, from the disable to the re-enable); ${after}. Find the consumer that did not take the new secrets (an environment secret, a cached build, a target missing from secret-targets); contains={access-key-id} in smoke-urls catches a stale deploy before anything is disabled.`
}

/** What a failure that keeps both tokens says: the state, and how to finish or undo it. */
export function pendingMessage(facts: {
  why: string
  nextId: string
  previousId: string
  writtenWithNext: number
  failedPhase?: string
  journal?: string
}): string {
  return (
    `State: both tokens are valid and neither was revoked (${facts.why}). The new token ${facts.nextId} was ` +
    `written to ${facts.writtenWithNext} secret(s); the previous token ${facts.previousId} may still ` +
    `be in the others and in the deployed app. Fix the cause${facts.failedPhase ? ` (phase ${facts.failedPhase})` : ''} ` +
    `and run the rotation again: with current-token (or current-access-key-id and current-secret-access-key) ` +
    `read from the secrets as they are now, it finishes or undoes this rotation from the journal` +
    `${facts.journal ? ` (${facts.journal}, phase pending)` : ''}. By hand: put one token's values ` +
    `into every secret, deploy, then delete the other token.`
  )
}

// ------------------------------------------------------------------------------- evidence of use

/**
 * What the two tokens' `last_used_on` say after the smoke phase. A hint only: Cloudflare does not
 * document how fresh the field is, so it decides nothing. Only Cloudflare's own times are
 * compared: the new token's use with its issue date, and the previous token's use with its value
 * when the new credentials went into service (read then: the deploy concluded, or the publish
 * ended without a deploy). The one warning is a previous token used since (something still runs
 * on it).
 */
export function useEvidence(
  next: Pick<ApiToken, 'id' | 'last_used_on' | 'issued_on'> | undefined,
  previous: Pick<ApiToken, 'id' | 'last_used_on'> | undefined,
  facts: {
    /** The previous token's `last_used_on` when the new credentials went into service. */
    previousUseAtService?: string | null
    /** Whether there was a deploy (else the publish put the new credentials in service). */
    deployed: boolean
    probedWithNew: boolean
  }
): { evidence: UseEvidence[]; warning?: string } {
  const evidence: UseEvidence[] = []
  let warning: string | undefined
  const at = (text: string | null | undefined): Date | undefined => {
    const ms = text ? Date.parse(text) : NaN
    return Number.isNaN(ms) ? undefined : new Date(ms)
  }
  if (next) {
    const used = at(next.last_used_on)
    const issued = at(next.issued_on)
    const after = used && (!issued || used >= issued)
    evidence.push({
      tokenId: next.id,
      role: 'new',
      ...(used ? { lastUsedOn: isoSeconds(used) } : {}),
      verdict: !used
        ? 'not used yet'
        : after
          ? `used after it was minted (${isoSeconds(used)})${facts.probedWithNew ? '; the action’s own verify and R2 probe count too' : ''}`
          : `last used ${isoSeconds(used)}`
    })
  }
  if (previous) {
    const used = at(previous.last_used_on)
    const then = at(facts.previousUseAtService)
    const moment = facts.deployed ? 'the deploy concluded' : 'the publish'
    const late =
      used !== undefined &&
      (then === undefined || used > then) &&
      facts.previousUseAtService !== undefined
    evidence.push({
      tokenId: previous.id,
      role: 'previous',
      ...(used ? { lastUsedOn: isoSeconds(used) } : {}),
      verdict: !used
        ? 'no recorded use'
        : facts.previousUseAtService === undefined
          ? `last used ${isoSeconds(used)}`
          : late
            ? `used after ${moment} (last used ${isoSeconds(used)}${then ? `, ${isoSeconds(then)} then` : ''})`
            : `not used since ${moment} (last used ${isoSeconds(used)})`
    })
    if (late) {
      warning = `The previous token ${previous.id} was used after ${moment} (last used ${isoSeconds(used)}): something may still run on it. A hint only (Cloudflare does not document how fresh last_used_on is); the watch after the disable decides.`
    }
  }
  return { evidence, ...(warning ? { warning } : {}) }
}

// ------------------------------------------------------------------ the management token itself

/**
 * What a self-rotation (`rotate-management-token`) does about an unfinished one in its journal.
 * The token this run authenticates with (`cloudflare-api-token`, read from the secret as it is
 * now) tells how far it got: the successor (finish forward), the previous token (undo what the
 * secrets may hold, delete the successor), or neither (stop, change nothing).
 */
export type ManagementRecovery =
  | { kind: 'refuse'; record: JournalRecord; message: string }
  /** Minted, never written to a secret: delete what was minted, then rotate afresh. */
  | { kind: 'delete-unpublished'; record: JournalRecord; tokenIds: string[] }
  /** The run holds the successor: write it everywhere when not confirmed yet, then end the previous one. */
  | {
      kind: 'forward'
      record: JournalRecord
      previousId: string
      nextId: string
      republish: boolean
    }
  /** The run holds the previous token: write it back everywhere, delete the successor. */
  | { kind: 'restore'; record: JournalRecord; previousId: string; pendingId: string }
  | { kind: 'stuck'; record: JournalRecord; reason: string }

export function decideManagementRecovery(facts: {
  record: JournalRecord
  journalRun: JournalRunState
  /** The id `cloudflare-api-token` verifies as. */
  managementId: string
  ownerTokens: Array<Pick<ApiToken, 'id' | 'name' | 'status'>>
}): ManagementRecovery {
  const { record, managementId } = facts
  if (facts.journalRun === 'running') {
    return {
      kind: 'refuse',
      record,
      message: `Another rotation of the management token is in progress in run ${record.run_id} (phase ${record.phase}). Nothing was changed. Let it finish, and use a 'concurrency:' group so that rotations never overlap.`
    }
  }
  if (!isPublished(record.phase)) {
    const tokenIds = orphansOf(record, {
      known: [{ id: managementId }],
      ownerTokens: facts.ownerTokens
    })
    return { kind: 'delete-unpublished', record, tokenIds }
  }
  const pendingId = record.pending_token_id
  const previousId = record.previous_token_id
  if (!pendingId || !previousId) {
    return {
      kind: 'stuck',
      record,
      reason: `the journal (phase ${record.phase}) names no ${pendingId ? 'previous' : 'pending'} token id`
    }
  }
  if (managementId === pendingId) {
    // `published` and `revoking` come only after every target was written and read back.
    const republish = !['published', 'revoking'].includes(record.phase)
    return { kind: 'forward', record, previousId, nextId: pendingId, republish }
  }
  if (managementId === previousId) {
    if (['published', 'revoking'].includes(record.phase)) {
      return {
        kind: 'stuck',
        record,
        reason: `every target was written with the successor ${pendingId} and read back, yet cloudflare-api-token holds the previous token ${previousId}: pass the secret named in rotate-management-token as cloudflare-api-token (it holds the successor), so that this run can finish`
      }
    }
    return { kind: 'restore', record, previousId, pendingId }
  }
  return {
    kind: 'stuck',
    record,
    reason: `cloudflare-api-token is token ${managementId}, neither the previous management token ${previousId} nor its successor ${pendingId}: pass the value the secret named in rotate-management-token holds`
  }
}

export function describeManagementRecovery(recovery: ManagementRecovery): string {
  switch (recovery.kind) {
    case 'refuse':
      return recovery.message
    case 'delete-unpublished':
      return recovery.tokenIds.length
        ? `delete the unpublished successor(s) ${recovery.tokenIds.join(', ')}, then rotate afresh`
        : 'no successor was minted; rotate afresh'
    case 'forward':
      return `the run holds the successor ${recovery.nextId}: ${recovery.republish ? 'write it to every target, then ' : ''}end the previous token ${recovery.previousId}`
    case 'restore':
      return `the run holds the previous token ${recovery.previousId}: write it back to every target, delete the successor ${recovery.pendingId}, then rotate afresh`
    case 'stuck':
      return `cannot finish it: ${recovery.reason}`
  }
}

/** How the previous management token ends once its successor is in every target. */
export type ManagementEnd =
  | { kind: 'delete' }
  /** A full-body PUT with this `expires_on` (policies, condition, not_before unchanged). */
  | { kind: 'expire'; expiresOn: string }
  /** It ends within the grace already (an earlier run set it, or it always did). */
  | { kind: 'ending'; expiresOn: string }
  | { kind: 'gone' }

/**
 * `revoke-grace` 0 deletes the previous management token; a grace gives it `expires_on` = now +
 * grace (Cloudflare's time), never later than an expiry it already has.
 */
export function decideManagementEnd(
  graceMs: number,
  previous: Pick<ApiToken, 'expires_on' | 'status'> | undefined,
  now: Date
): ManagementEnd {
  if (!previous) return { kind: 'gone' }
  if (graceMs === 0) return { kind: 'delete' }
  const end = isoSeconds(new Date(now.getTime() + graceMs))
  if (previous.expires_on && Date.parse(previous.expires_on) <= Date.parse(end)) {
    return { kind: 'ending', expiresOn: previous.expires_on }
  }
  if (previous.status === 'expired')
    return { kind: 'ending', expiresOn: previous.expires_on ?? end }
  return { kind: 'expire', expiresOn: end }
}

/** Reasons a self-rotation cannot start, in the order to fix them; empty when none. */
export function managementRefusals(facts: {
  token: Pick<ApiToken, 'id' | 'status' | 'expires_on'>
  owner: TokenOwner
  ownerTokens: Array<Pick<ApiToken, 'id'>>
  deletingFirst: string[]
  quota: number
  now: Date
}): string[] {
  const out: string[] = []
  const { token } = facts
  if (token.status !== 'active') {
    out.push(`The management token (cloudflare-api-token) ${token.id} is ${token.status}.`)
  }
  if (token.expires_on && Date.parse(token.expires_on) <= facts.now.getTime()) {
    out.push(
      `The management token (cloudflare-api-token) ${token.id} expired on ${token.expires_on}: it cannot mint its successor. Create a new one (${MANAGEMENT_RENEWAL}) and update the secret it comes from.`
    )
  }
  const counted = facts.ownerTokens.filter(t => !facts.deletingFirst.includes(t.id)).length
  if (counted >= facts.quota) {
    out.push(
      `Cloudflare allows ${facts.quota} ${facts.owner.kind}-owned API tokens and ${counted} exist: the successor needs a free slot, because it is created before the management token ends. Delete tokens you no longer need (dashboard: API Tokens).`
    )
  }
  return out
}

// ------------------------------------------------------------------ Access service tokens

/** A service token's details as get and list show them (never a secret). */
export interface ServiceTokenFacts {
  id: string
  name: string
  clientId: string
  enabled: boolean
  duration?: string
  expiresAt?: string
  createdAt?: string
  updatedAt?: string
}

/**
 * How long the previous client secret stays valid after the rotate: the deploy (twice: a
 * rollback redeploys), the smoke checks (three times: after the rotate, after a rollback, and a
 * recovery), the revoke grace and the watch, and ten minutes of margin. The same sum as the job
 * timeout the README documents.
 */
export function serviceTokenGraceMs(
  settings: Pick<Settings, 'deploy' | 'smoke' | 'revokeGraceMs' | 'revokeWatchMs'>
): number {
  const deployMs = settings.deploy?.timeoutMs ?? 0
  return (
    2 * deployMs +
    3 * settings.smoke.timeoutMs +
    settings.revokeGraceMs +
    settings.revokeWatchMs +
    10 * 60_000
  )
}

/**
 * Whether the service token is due: `force`, no `rotate-after`, an expiry within 7 days, or
 * `rotate-after` counted from the last rotation this journal completed, else from the token's
 * `updated_at` (an approximation: any update moves it), else from its `created_at`.
 */
export function serviceTokenDue(
  settings: Pick<Settings, 'force' | 'rotateAfterMs'>,
  token: Pick<ServiceTokenFacts, 'expiresAt' | 'updatedAt' | 'createdAt'>,
  lastRotatedAt: string | undefined,
  now: Date
): Due {
  if (settings.force) return { due: true, why: 'force: true' }
  if (settings.rotateAfterMs === 0) return { due: true, why: 'no rotate-after' }
  if (token.expiresAt && Date.parse(token.expiresAt) - now.getTime() < EXPIRY_WARNING_MS) {
    return { due: true, why: `it expires on ${token.expiresAt}, within 7 days` }
  }
  const since = [lastRotatedAt, token.updatedAt, token.createdAt]
    .map(t => (t ? Date.parse(t) : NaN))
    .find(t => !Number.isNaN(t))
  if (since === undefined) return { due: true, why: 'its last rotation is unknown' }
  const dueAt = new Date(since + settings.rotateAfterMs)
  if (dueAt <= now) return { due: true, why: 'it is older than rotate-after' }
  return { due: false, dueAt }
}

/** A service token that expires within this long gets a warning. */
export const SERVICE_TOKEN_EXPIRY_WARNING_MS = 30 * 24 * 3600 * 1000

/** Why the service token cannot be rotated now, if it cannot (preflight). */
export function serviceTokenRefusal(
  token: Pick<ServiceTokenFacts, 'id' | 'enabled' | 'expiresAt'>,
  now: Date
): string | undefined {
  if (!token.enabled) {
    return `The service token ${token.id} is disabled: it admits nobody, with either secret. Enable it in Zero Trust (Access → Service Auth) first; nothing was changed.`
  }
  if (token.expiresAt && Date.parse(token.expiresAt) <= now.getTime()) {
    return `The service token ${token.id} expired on ${token.expiresAt}: rotating its secret does not renew it. Refresh it (POST …/access/service_tokens/${token.id}/refresh, or Zero Trust → Service Auth → Refresh) first; nothing was changed.`
  }
  return undefined
}

/** Expiry and duration findings that fit a service token (least-privilege: warn). */
export function serviceTokenWarnings(
  settings: Pick<Settings, 'rotateAfterMs'>,
  token: Pick<ServiceTokenFacts, 'id' | 'duration' | 'expiresAt'>,
  now: Date
): string[] {
  const warnings: string[] = []
  if (token.duration === 'forever') {
    warnings.push(
      `The service token ${token.id} has duration: forever (it never expires). A lifetime such as 8760h, refreshed on purpose, bounds the damage of a lost token.`
    )
  }
  if (token.expiresAt) {
    const expires = Date.parse(token.expiresAt)
    const nextDue = now.getTime() + settings.rotateAfterMs
    if (expires - now.getTime() < SERVICE_TOKEN_EXPIRY_WARNING_MS) {
      warnings.push(
        `The service token ${token.id} expires on ${token.expiresAt}, within 30 days; a rotation does not extend it. Refresh it (POST …/access/service_tokens/${token.id}/refresh) or give it a longer duration.`
      )
    } else if (settings.rotateAfterMs > 0 && expires < nextDue) {
      warnings.push(
        `The service token ${token.id} expires on ${token.expiresAt}, before the next rotation is due (${isoSeconds(new Date(nextDue))}, rotate-after); a rotation does not extend it. Refresh it (POST …/access/service_tokens/${token.id}/refresh) or give it a longer duration.`
      )
    }
  }
  return warnings
}

/** What the run knows when a service token rotation fails. */
export interface ServiceTokenFailureFacts {
  settings: Pick<Settings, 'onFailure'>
  /** The rotate took effect (answered, or found afterwards). */
  rotated: boolean
  /** The new secret is known to this run (the rotate answered). */
  secretKnown: boolean
  /** The previous secret's grace is closed right now (closed and not re-opened). */
  graceClosed: boolean
  /** The client secret in use before the rotation is known (`current-client-secret`). */
  previousKnown: boolean
  /** Targets × secrets written with the new secret, and how many there are. */
  written: number
  total: number
  /** The planned end of the grace, and now. */
  graceUntil: Date
  now: Date
  graceMs: number
}

export type ServiceTokenAfterFailure =
  /** Nothing was rotated: nothing to undo. */
  | { kind: 'nothing' }
  /** The grace is closed: the new secret is the only one; the next run finishes forward. */
  | { kind: 'closed' }
  /** Write the previous secret back, redeploy, check; the grace stays open (until `graceUntil`). */
  | { kind: 'rollback'; graceUntil: Date; extend: boolean }
  /** Leave the secrets as they are, both secrets valid until `graceUntil`. */
  | { kind: 'keep-both'; why: string; hold: SecretsHoldFact; graceUntil: Date; extend: boolean }

type SecretsHoldFact = SecretsHold

/**
 * When the grace must move after a failure: with less than half of `graceMs` left it is extended
 * to now + `graceMs`, so that the next run (or a person) has the time of a whole rotation before
 * the previous secret stops; with more left it stays (no PUT for a few seconds' gain).
 */
export function graceAfterFailure(
  graceUntil: Date,
  now: Date,
  graceMs: number
): { graceUntil: Date; extend: boolean } {
  if (graceUntil.getTime() - now.getTime() >= graceMs / 2) return { graceUntil, extend: false }
  return { graceUntil: new Date(now.getTime() + graceMs), extend: true }
}

export function afterServiceTokenFailure(
  facts: ServiceTokenFailureFacts
): ServiceTokenAfterFailure {
  if (!facts.rotated) return { kind: 'nothing' }
  if (facts.graceClosed) return { kind: 'closed' }
  const grace = graceAfterFailure(facts.graceUntil, facts.now, facts.graceMs)
  const hold: SecretsHoldFact =
    facts.written === 0 ? 'previous' : facts.written >= facts.total ? 'next' : 'mixed'
  if (!facts.secretKnown) {
    return {
      kind: 'keep-both',
      why: 'the new secret was lost with the rotate answer',
      hold,
      ...grace
    }
  }
  if (facts.written === 0) {
    // Nothing holds the new secret: the secrets are as they were; the grace keeps them working.
    return { kind: 'keep-both', why: 'no secret holds the new client secret', hold, ...grace }
  }
  if (facts.settings.onFailure === 'keep-both') {
    return { kind: 'keep-both', why: 'on-failure is keep-both', hold, ...grace }
  }
  if (!facts.previousKnown) {
    return {
      kind: 'keep-both',
      why: 'the previous client secret is not known (current-client-secret holds it only before a rotation; after one it holds the new secret)',
      hold,
      ...grace
    }
  }
  return { kind: 'rollback', ...grace }
}

/** What the next run finds in the journal of a service token rotation, and does. */
export type ServiceTokenRecovery =
  /** Nothing happened (the rotate never took effect): rotate as usual. */
  | { kind: 'fresh'; why: string }
  /** The secrets hold the new secret: redeploy, smoke, close, watch (no new rotate). */
  | { kind: 'forward'; from: 'deploy' | 'close'; why: string }
  /** The secrets hold the previous secret (or a mix), or the newest secret is lost. */
  | { kind: 'refuse'; message: string }
  /** As `refuse`, with `force: true`: rotate again, ending the previous secret at once. */
  | { kind: 'rerotate'; why: string }
  /**
   * A rollback stopped midway: write `current-client-secret` into every target, redeploy and
   * check, and leave the rotation pending (the secrets then hold the previous secret).
   */
  | { kind: 'restore'; why: string }

export interface ServiceTokenRecoveryFacts {
  record: Pick<
    JournalRecord,
    'phase' | 'secrets_hold' | 'token_updated_before' | 'grace_until' | 'lost_secret' | 'run_id'
  >
  /** The token's `updated_at` now. */
  tokenUpdatedAt?: string
  /** Target secrets whose write-back shows a write since the record's stamps. */
  written: number
  total: number
  force: boolean
  /** `current-client-secret` is given (a stopped rollback can be finished with it). */
  secretKnown: boolean
  now: Date
}

/** Which secret the targets hold after an unclear `rotating` or `rolling-back`. */
function stuckMessage(
  facts: ServiceTokenRecoveryFacts,
  what: string,
  graceUntil: string | undefined
): string {
  const end = graceUntil
    ? Date.parse(graceUntil) > facts.now.getTime()
      ? `The previous client secret, which the secrets and the deployed app still use, stays valid until ${graceUntil} and then stops`
      : `The previous client secret's grace ended on ${graceUntil}: clients that still present it are refused already`
    : 'The previous client secret stays valid only until its grace ends'
  return `${what}. ${end}. Only one previous secret exists, so another rotation ends that secret at once: clients of it are refused from the rotate until the deploy with the newest secret concludes. Run again with force: true to rotate anyway (best right before a quiet period), or rotate the token in Zero Trust and update the secrets by hand.`
}

export function serviceTokenRecovery(facts: ServiceTokenRecoveryFacts): ServiceTokenRecovery {
  const { record } = facts
  const graceUntil = record.grace_until
  const refuseOrRerotate = (what: string): ServiceTokenRecovery =>
    facts.force
      ? { kind: 'rerotate', why: `${what}; force: true rotates again` }
      : { kind: 'refuse', message: stuckMessage(facts, what, graceUntil) }
  switch (record.phase) {
    case 'rotating': {
      const moved =
        facts.tokenUpdatedAt !== undefined &&
        record.token_updated_before !== undefined &&
        facts.tokenUpdatedAt !== record.token_updated_before
      if (!moved) {
        return {
          kind: 'fresh',
          why: `the rotation of run ${record.run_id} stopped before its rotate took effect (the token's updated_at did not move)`
        }
      }
      if (facts.total > 0 && facts.written >= facts.total) {
        return {
          kind: 'forward',
          from: 'deploy',
          why: `the rotation of run ${record.run_id} stopped after writing the new secret to every target`
        }
      }
      return refuseOrRerotate(
        `The rotation of run ${record.run_id} was rotated (the token's updated_at moved) but stopped before its new client secret reached ${facts.written === 0 ? 'any' : 'every'} target (${facts.written} of ${facts.total} written): the newest secret is lost`
      )
    }
    case 'published':
    case 'deploying':
    case 'smoke':
      return {
        kind: 'forward',
        from: 'deploy',
        why: `the rotation of run ${record.run_id} stopped in phase ${record.phase}, with the new secret in every target`
      }
    case 'closing':
      return {
        kind: 'forward',
        from: 'close',
        why: `the rotation of run ${record.run_id} stopped while closing the previous secret's grace`
      }
    case 'pending':
      if (record.secrets_hold === 'next' && !record.lost_secret) {
        return {
          kind: 'forward',
          from: 'deploy',
          why: `the rotation of run ${record.run_id} is pending with the new secret in every target`
        }
      }
      return refuseOrRerotate(
        record.lost_secret
          ? `The rotation of run ${record.run_id} is pending: its new client secret was lost before any target held it`
          : `The rotation of run ${record.run_id} is pending with the ${record.secrets_hold === 'mixed' ? 'targets holding a mix of the previous and the new' : 'previous'} client secret${record.secrets_hold === 'mixed' ? 's' : ' in the secrets (rolled back)'}`
      )
    case 'rolling-back':
      if (!facts.force && facts.secretKnown) {
        return {
          kind: 'restore',
          why: `the rotation of run ${record.run_id} stopped while writing the previous client secret back`
        }
      }
      return refuseOrRerotate(
        `The rotation of run ${record.run_id} stopped while writing the previous client secret back`
      )
    case 'minting':
    case 'minted':
    case 'publishing':
    case 'revoking':
    case 'done':
    case 'rolled-back':
      return { kind: 'fresh', why: `the journal is settled (phase ${record.phase})` }
  }
}

export function describeServiceTokenRecovery(recovery: ServiceTokenRecovery): string {
  switch (recovery.kind) {
    case 'fresh':
      return `nothing to finish: ${recovery.why}`
    case 'forward':
      return `finish forward (${recovery.from === 'deploy' ? 'redeploy, smoke-check, close the grace, watch' : 'close the grace, watch'}): ${recovery.why}`
    case 'refuse':
      return `refused: ${recovery.message}`
    case 'rerotate':
      return `rotate again: ${recovery.why}`
    case 'restore':
      return `finish the rollback (write current-client-secret into every target, redeploy, check): ${recovery.why}`
  }
}
