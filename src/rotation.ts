/**
 * The rotation, phase by phase. This is the one module that knows the invariant:
 *
 *   a token is revoked only after a deploy that uses its replacement concluded `success`
 *   and every smoke check passed.
 *
 * The clients below it know HTTP; nothing below it decides whether a token may be revoked.
 *
 * Phases: preflight (read-only) → [recover] → mint → verify → publish → deploy → smoke → revoke.
 * A failure before publish deletes the new token. A failure at or after publish either rolls back
 * (previous values restored everywhere, redeployed, smoke-checked, then the new token deleted) or
 * leaves both tokens valid and the journal `pending`. The journal (an Actions variable) is written
 * before and after each mutating phase so that the next run can finish or undo a killed one.
 */
import * as core from '@actions/core'
import type { Settings } from './settings.js'
import {
  type ApiToken,
  type TokenApi,
  type TokenOwner,
  CloudflareApiError,
  clonePolicies,
  resolveCurrentToken,
  sameCondition,
  samePolicies
} from './cloudflare/tokens.js'
import {
  type Jurisdiction,
  type TokenScope,
  accountIdFromPolicies,
  classifyScope,
  r2Endpoint,
  sha256Hex
} from './cloudflare/r2.js'
import { probeBucket } from './cloudflare/probe.js'
import {
  MANAGEMENT_PERMISSION,
  requireManagementPermission,
  verifyManagementToken
} from './cloudflare/management.js'
import type { GitHubClient } from './github/client.js'
import { type SecretWriter, describeTarget } from './github/secrets.js'
import { type WorkflowInfo, dispatchWorkflow, followRun, inspectWorkflow } from './github/deploy.js'
import { type SmokeResult, runSmokeChecks } from './smoke.js'
import { expandTokenName } from './token-name.js'
import { retryUntil, sleep } from './backoff.js'
import { mask, maskToken } from './mask.js'
import { RotationError, errorMessage } from './errors.js'
import { describeRecovery, knownCredentials, planRecovery } from './recovery.js'
import { type Credentials, fieldValue, missingFields } from './credentials.js'
import { type Journal, type JournalRecord, type Recovery, isSettled } from './journal.js'

export { RotationError }

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

export interface PhaseRecord {
  name: PhaseName
  status: 'ok' | 'failed'
  durationMs: number
  detail?: string
}

/** What the run did; everything here may be printed (ids, names, links — never a value). */
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
  scope?: TokenScope
  owner?: TokenOwner['kind']
  /** One line per secret written: `<target> <NAME>`. */
  secretsWritten: string[]
  targets: string[]
  deployRunId?: number
  deployRunUrl?: string
  deployConclusion?: string
  smoke: SmokeResult[]
  probe?: { mode: 'read' | 'write'; bucket: string; ok: boolean }
  revoked?: 'deleted' | 'disabled' | 'kept' | 'already-gone'
  /** What an unfinished earlier rotation led this run to do. */
  recovery?: string
  /** How a failure after publish was handled. */
  rollback?: 'rolled-back' | 'pending'
  /** The journal's phase at the end of the run. */
  journalPhase?: string
  /** The plan, for dry-run and the summary. */
  plan: string[]
}

export interface RotationContext {
  settings: Settings
  tokens: TokenApi
  github: GitHubClient
  secrets: SecretWriter
  journal: Journal
  now?: () => Date
  sleep?: (ms: number) => Promise<void>
}

/** How long a new token may take to work everywhere (api-facts: "retry the probe with backoff for about two minutes"). */
const PROPAGATION_DEADLINE_MS = 120_000

interface Plan {
  owner: TokenOwner
  /** The token the deployments use now (after a restore: the previous token). */
  current: ApiToken
  /** What the inputs tell of its values (a rollback needs them). */
  currentCredentials: Credentials
  accountId?: string
  scope: TokenScope
  probe?: { mode: 'read' | 'write'; bucket: string; endpoint: string }
  workflow?: WorkflowInfo
  deployRef?: string
  newName: string
  expiresOn?: string
  due: boolean
  dueAt?: Date
  recovery?: Recovery
  /** Tokens an earlier `revoke: disable` left behind, deleted once this rotation succeeds. */
  disabledTokenIds: string[]
}

/** What has been changed so far: decides the clean-up when a phase fails. */
interface RunState {
  /** The token being introduced and what is known of it. */
  next?: Credentials
  /** Where `next` came from: minted by this run, or found in the secrets by a recovery. */
  nextOrigin?: 'minted' | 'recovered'
  /** Set once the first secret write may have happened. */
  publishStarted: boolean
  /** Deploy runs dispatched by this run (all must have concluded before a rollback deletes `next`). */
  deployRunIds: number[]
}

export async function rotate(ctx: RotationContext): Promise<RotationReport> {
  const { settings } = ctx
  const now = ctx.now ?? (() => new Date())
  const report: RotationReport = {
    result: 'failed',
    phases: [],
    warnings: [],
    secretsWritten: [],
    targets: settings.secretTargets.map(describeTarget),
    smoke: [],
    plan: []
  }
  const state: RunState = { publishStarted: false, deployRunIds: [] }
  let plan: Plan | undefined

  try {
    plan = await phase(report, 'preflight', () => preflight(ctx, report, now()))
    const p = plan

    if (settings.dryRun) {
      report.result = 'dry-run'
      for (const line of report.plan) core.info(`plan: ${line}`)
      return report
    }

    if (p.recovery) {
      const finished = await phase(report, 'recover', () => recover(ctx, report, p, state))
      if (finished) {
        report.result = 'rotated'
        return report
      }
    }

    if (!p.due) {
      report.result = 'skipped'
      core.notice(
        `Token ${p.current.id} is not due for rotation yet (rotate-after); it will be due on ${p.dueAt ? isoSeconds(p.dueAt) : 'its issue date plus rotate-after'}. Set force: true to rotate now.`
      )
      return report
    }

    const startedAt = now()
    await journalWrite(ctx, report, {
      phase: 'minting',
      previous_token_id: p.current.id,
      pending_token_id: undefined,
      pending_token_name: p.newName,
      token_owner: p.owner.kind === 'user' ? 'user' : { account_id: p.owner.accountId },
      deploy_run_ids: [],
      started_at: startedAt.toISOString()
    })
    const minted = await phase(report, 'mint', () => mint(ctx, report, p, state, startedAt))
    await journalWrite(ctx, report, { phase: 'minted', pending_token_id: minted.id })
    await phase(report, 'verify', () => verifyNewToken(ctx, report, p, minted))

    await advance(ctx, report, p, state, minted, p.current.id)
    report.result = 'rotated'
    return report
  } catch (error) {
    report.result = 'failed'
    report.error = errorMessage(error)
    if (plan && state.next && !state.publishStarted && state.nextOrigin === 'minted') {
      // Nothing reads the new token yet: delete it so that a failed run leaves no orphan.
      await cleanupUnpublished(ctx, report, plan.owner, state.next)
    } else if (plan && state.next && state.publishStarted) {
      await afterPublishFailure(ctx, report, plan, state, error)
    }
    return report
  }
}

/** Runs one phase in a log group and records its status and duration. */
async function phase<T>(
  report: RotationReport,
  name: PhaseName,
  body: () => Promise<T>
): Promise<T> {
  const started = Date.now()
  core.startGroup(`Phase: ${name}`)
  try {
    const value = await body()
    report.phases.push({ name, status: 'ok', durationMs: Date.now() - started })
    return value
  } catch (error) {
    const wrapped =
      error instanceof RotationError ? error : new RotationError(name, errorMessage(error))
    report.phases.push({
      name,
      status: 'failed',
      durationMs: Date.now() - started,
      detail: wrapped.message
    })
    core.error(`Phase ${name} failed: ${wrapped.message}`)
    throw wrapped
  } finally {
    core.endGroup()
  }
}

async function journalWrite(
  ctx: RotationContext,
  report: RotationReport,
  update: Partial<JournalRecord> & { phase: JournalRecord['phase'] }
): Promise<void> {
  const record = await ctx.journal.write(update)
  report.journalPhase = record.phase
}

// ---------------------------------------------------------------- preflight (read-only)

async function preflight(ctx: RotationContext, report: RotationReport, now: Date): Promise<Plan> {
  const { settings, tokens } = ctx

  const management = await verifyManagementToken(
    tokens,
    settings.cloudflareApiToken,
    settings.accountId
  )
  core.info(`Management token: ${management.id} (${management.owner.kind}-owned)`)

  const resolved = await resolveCurrentToken(tokens, {
    tokenOwner: settings.tokenOwner,
    accountId: settings.accountId,
    currentToken: settings.currentToken,
    currentAccessKeyId: settings.currentAccessKeyId
  })
  const owner = resolved.owner
  report.owner = owner.kind
  const { known, mismatch } = await knownCredentials(ctx, owner, resolved.token.id)

  // The journal: an unfinished rotation is recovered before anything else.
  const record = await ctx.journal.read()
  const recovery =
    record && !isSettled(record.phase) ? await planRecovery(ctx, record, known, owner) : undefined
  // Inputs that describe more than one token are what a run killed midway through writing the
  // secrets leaves behind; anywhere else they are a mistake.
  if (mismatch && !(recovery && recovery.kind !== 'delete-unpublished')) {
    throw new RotationError('preflight', mismatch)
  }
  if (recovery) {
    report.recovery = describeRecovery(recovery)
    core.warning(
      `Unfinished rotation from run ${recovery.record.run_id} (phase ${recovery.record.phase}): ${report.recovery}`
    )
  }

  // The token in use now. After a restore it is the previous token of the unfinished rotation.
  let current = resolved.token
  if (recovery?.kind === 'restore' && recovery.previous.id !== current.id) {
    current = await tokens.get(owner, recovery.previous.id)
  } else if (recovery?.kind === 'forward' && recovery.next.id !== current.id) {
    current = await tokens.get(owner, recovery.next.id)
  }
  const currentCredentials =
    recovery?.kind === 'restore'
      ? recovery.previous
      : recovery?.kind === 'forward'
        ? recovery.next
        : (known[0] ?? { id: current.id })
  report.previousTokenId = recovery?.kind === 'forward' ? recovery.previousId : current.id
  report.previousTokenName = current.name
  core.info(
    `Current token: ${current.id} "${current.name}" (${owner.kind}-owned, ${current.status})`
  )
  if (current.status !== 'active') {
    throw new RotationError(
      'preflight',
      `The current token ${current.id} is ${current.status}. Only an active token can be rotated; pass the token the deployments use now as current-token or current-access-key-id.`
    )
  }
  if (management.id === current.id || management.id === report.previousTokenId) {
    throw new RotationError(
      'preflight',
      `The management token (cloudflare-api-token) is the token being rotated (${management.id}); revoking it would end the rotation midway. Use a separate token with '${MANAGEMENT_PERMISSION[owner.kind]}'.`
    )
  }

  const groups = await tokens.permissionGroups(owner)
  const groupNames = new Map(groups.map(g => [g.id, g.name]))
  requireManagementPermission(management, owner, groupNames)
  const scope = classifyScope(current.policies, groupNames, { bucket: settings.r2.bucket })
  report.scope = scope
  report.tokenScope = scope.summary
  core.info(`Scope: ${scope.summary}`)
  if (settings.leastPrivilege !== 'off') {
    for (const warning of scope.warnings) {
      report.warnings.push(warning)
      core.warning(`Least privilege: ${warning}`)
    }
    if (settings.leastPrivilege === 'enforce' && scope.warnings.length > 0) {
      throw new RotationError(
        'preflight',
        `least-privilege: enforce refuses to rotate token ${current.id}: ${scope.warnings.join(' ')} Narrow the token's policies (one bucket, object-level permissions) or set least-privilege: warn.`
      )
    }
  }

  const accountId =
    settings.accountId ??
    (owner.kind === 'account' ? owner.accountId : accountIdFromPolicies(current.policies))

  // Due date: rotate-after counts from the token's issue date.
  const issued = current.issued_on ? new Date(current.issued_on) : undefined
  const dueAt = issued ? new Date(issued.getTime() + settings.rotateAfterMs) : undefined
  // A token that would expire before the next scheduled run is due now, or it lapses in production.
  const expiresSoon =
    !!current.expires_on && Date.parse(current.expires_on) - now.getTime() < EXPIRY_WARNING_MS
  const due =
    settings.force || settings.rotateAfterMs === 0 || !dueAt || dueAt <= now || expiresSoon

  const probe = planProbe(settings, scope, accountId)
  if (probe) {
    core.info(`R2 probe: ${probe.mode} on bucket ${probe.bucket} at ${probe.endpoint}`)
  } else if (settings.r2.probe === 'auto' && (scope.canRead || scope.canWrite)) {
    const warning =
      'R2 probe: off, because the token is not scoped to exactly one bucket. Set r2-bucket to a bucket it can reach so that the new credentials are proven through the S3 API before anything uses them.'
    report.warnings.push(warning)
    core.warning(warning)
  } else {
    core.info('R2 probe: off')
  }

  // Every target is checked (and every failing line reported) before anything is minted.
  await ctx.secrets.preflightAll(
    settings.secretTargets,
    settings.secrets.map(s => s.name)
  )

  let workflow: WorkflowInfo | undefined
  let deployRef: string | undefined
  if (settings.deploy) {
    // A dispatched run uses the workflow file as it is at the ref it runs on.
    workflow = await inspectWorkflow(
      ctx.github,
      settings.deploy.repository,
      settings.deploy.workflow,
      settings.deploy.inputs,
      settings.deploy.ref
    )
    deployRef = settings.deploy.ref ?? workflow.defaultBranch
    core.info(`Deploy workflow: ${workflow.name} (${workflow.path}) on ${deployRef}`)
  }

  const newName = expandTokenName(settings.tokenName, {
    oldName: current.name,
    now,
    runId: settings.runId,
    repository: `${settings.repository.owner}/${settings.repository.repo}`
  })
  const expiresOn = newExpiry(settings, current, now)
  for (const warning of expiryWarnings(settings, current, expiresOn, now)) {
    report.warnings.push(warning)
    core.warning(warning)
  }

  if (recovery) report.plan.push(`recover first: ${report.recovery}`)
  report.plan.push(
    `mint "${newName}" as a copy of ${current.id} (${current.policies.length} polic${current.policies.length === 1 ? 'y' : 'ies'}, ${current.condition ? 'with' : 'no'} condition), ${expiresOn ? `expiring ${expiresOn}` : 'no expiry'}`,
    `verify it${probe ? ` and probe bucket ${probe.bucket} (${probe.mode})` : ''}`,
    `write ${settings.secrets.map(s => `${s.name}=${s.field}`).join(', ')} to ${report.targets.join('; ')}`,
    workflow
      ? `dispatch ${workflow.path} on ${deployRef} in ${settings.deploy!.repository.owner}/${settings.deploy!.repository.repo} and wait up to ${Math.round(settings.deploy!.timeoutMs / 1000)} s`
      : 'no deploy step',
    `${settings.smoke.checks.length} smoke check(s)`,
    `${settings.revoke} the previous token ${current.id}${settings.revokeGraceMs ? ` after ${Math.round(settings.revokeGraceMs / 1000)} s` : ''}`
  )
  if (!due && dueAt) report.plan.push(`(not due before ${isoSeconds(dueAt)}: the run would skip)`)
  return {
    owner,
    current,
    currentCredentials,
    accountId,
    scope,
    probe,
    workflow,
    deployRef,
    newName,
    expiresOn,
    due,
    dueAt,
    recovery,
    disabledTokenIds: record?.disabled_token_ids ?? []
  }
}

function planProbe(
  settings: Settings,
  scope: TokenScope,
  accountId: string | undefined
): Plan['probe'] {
  if (settings.r2.probe === 'off') return undefined
  const single =
    scope.buckets !== 'all' && scope.buckets.length === 1 ? scope.buckets[0] : undefined
  const bucket = settings.r2.bucket ?? single?.bucket
  let mode: 'read' | 'write' | undefined
  if (settings.r2.probe === 'auto') {
    mode = scope.canWrite ? 'write' : scope.canRead ? 'read' : undefined
    if (!mode || !bucket) return undefined
  } else {
    mode = settings.r2.probe
    if (!bucket) {
      throw new RotationError(
        'preflight',
        `Input 'r2-probe' is '${mode}' but no bucket is known: the token is not scoped to exactly one bucket. Set r2-bucket.`
      )
    }
  }
  const jurisdiction: Jurisdiction =
    (scope.buckets !== 'all' && scope.buckets.find(b => b.bucket === bucket)?.jurisdiction) ||
    'default'
  if (!settings.r2.endpoint && !accountId) {
    throw new RotationError(
      'preflight',
      `Cannot derive the R2 endpoint: no account id. Set account-id or r2-endpoint, or r2-probe: off.`
    )
  }
  return { mode, bucket, endpoint: r2Endpoint(accountId ?? '', jurisdiction, settings.r2.endpoint) }
}

/** token-ttl wins; else keep the old lifetime length when the old token expires; else no expiry. */
function newExpiry(settings: Settings, current: ApiToken, now: Date): string | undefined {
  if (settings.tokenTtlMs !== undefined) {
    return isoSeconds(new Date(now.getTime() + settings.tokenTtlMs))
  }
  if (current.expires_on && current.issued_on) {
    const lifetime = new Date(current.expires_on).getTime() - new Date(current.issued_on).getTime()
    if (lifetime > 0) return isoSeconds(new Date(now.getTime() + lifetime))
  }
  return undefined
}

/** A token that will expire before it is rotated again means downtime on the day it expires. */
const EXPIRY_WARNING_MS = 7 * 24 * 3600 * 1000

function expiryWarnings(
  settings: Settings,
  current: ApiToken,
  newExpiresOn: string | undefined,
  now: Date
): string[] {
  const warnings: string[] = []
  if (current.expires_on) {
    const left = new Date(current.expires_on).getTime() - now.getTime()
    if (left < EXPIRY_WARNING_MS) {
      warnings.push(
        `The current token ${current.id} expires on ${current.expires_on}, within 7 days.`
      )
    }
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

/** Cloudflare stores token times to the second (RFC 3339 without fractions). */
function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

// ---------------------------------------------------------------- recover

/**
 * Acts on an unfinished rotation. Returns true when it completed that rotation (nothing more to
 * do this run), false when the way is clear for a fresh rotation.
 */
async function recover(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState
): Promise<boolean> {
  const recovery = plan.recovery!
  switch (recovery.kind) {
    case 'delete-unpublished':
      for (const id of recovery.tokenIds) {
        const outcome = await ctx.tokens.delete(plan.owner, id)
        core.info(`Deleted the unpublished token ${id} (${outcome})`)
      }
      return false
    case 'stuck':
      await journalWrite(ctx, report, { phase: 'pending' })
      throw new RotationError(
        'recover',
        `An earlier rotation (run ${recovery.record.run_id}) stopped in phase ${recovery.record.phase} and ${recovery.reason}. ` +
          `Both tokens are still valid. Pass current-token (the value now in the secrets) so that this run can finish it, ` +
          `or write one token's values into every secret by hand and delete the other token.`
      )
    case 'forward': {
      // The pending token is already in (some of) the secrets: finish what the earlier run began.
      maskToken(recovery.next.value)
      mask(recovery.next.secretAccessKey)
      report.tokenId = recovery.next.id
      report.accessKeyId = recovery.next.id
      report.tokenName = plan.current.name
      report.expiresOn = plan.current.expires_on ?? undefined
      state.next = recovery.next
      state.nextOrigin = 'recovered'
      await advance(ctx, report, plan, state, recovery.next, recovery.previousId)
      return true
    }
    case 'restore': {
      await retreat(ctx, report, plan, state, recovery.previous, recovery.pendingId)
      report.tokenId = undefined
      report.accessKeyId = undefined
      return false
    }
  }
}

// ---------------------------------------------------------------- mint

async function mint(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState,
  startedAt: Date
): Promise<Credentials> {
  const body = {
    name: plan.newName,
    policies: clonePolicies(plan.current.policies),
    ...(plan.current.condition !== undefined && plan.current.condition !== null
      ? { condition: plan.current.condition }
      : {}),
    ...(plan.expiresOn ? { expires_on: plan.expiresOn } : {})
  }
  let created: { token: ApiToken; value: string }
  try {
    // Never retried by the client: a repeated create could mint a duplicate.
    created = await createUnlessRefused(ctx, plan.owner, body)
  } catch (error) {
    if (!isAmbiguous(error)) throw error
    // The create may have happened. Its value came only in the lost answer, so a token minted
    // then can never be used: find it by name and issue time, delete it, and mint once more.
    const orphans = (await ctx.tokens.list(plan.owner)).filter(
      t =>
        t.name === plan.newName &&
        t.id !== plan.current.id &&
        Date.parse(t.issued_on ?? '') >= startedAt.getTime() - 1000
    )
    for (const orphan of orphans) await ctx.tokens.delete(plan.owner, orphan.id)
    core.warning(
      `The token create got no clear answer (${errorMessage(error)}); ${orphans.length} token(s) minted by it were found and deleted. Minting once more.`
    )
    created = await createUnlessRefused(ctx, plan.owner, body)
  }
  const { token, value } = created
  maskToken(value)
  const next: Credentials = { id: token.id, value, secretAccessKey: sha256Hex(value) }
  mask(next.secretAccessKey)
  state.next = next
  state.nextOrigin = 'minted'
  report.tokenId = token.id
  report.tokenName = token.name
  report.accessKeyId = token.id
  report.expiresOn = token.expires_on ?? plan.expiresOn
  core.info(`Minted token ${token.id} "${token.name}"`)

  // Re-read and compare: the copy must grant exactly what the old token granted.
  const reread = await ctx.tokens.get(plan.owner, token.id)
  if (!samePolicies(reread.policies, plan.current.policies)) {
    throw new RotationError(
      'mint',
      `The new token ${token.id} does not carry the same policies as ${plan.current.id}; it was not used.`
    )
  }
  if (!sameCondition(reread.condition ?? undefined, plan.current.condition ?? undefined)) {
    throw new RotationError(
      'mint',
      `The new token ${token.id} does not carry the same condition (IP restrictions) as ${plan.current.id}; it was not used.`
    )
  }
  return next
}

/** How long a create that Cloudflare refused with 429 is sent again. */
const CREATE_REFUSED_DEADLINE_MS = 30_000

/**
 * `tokens.create`, sent again only after a 429: a rate-limited request was refused before it was
 * processed, so nothing was minted (developers.cloudflare.com/fundamentals/api/reference/limits/).
 * Any other failure is the caller's to judge.
 */
async function createUnlessRefused(
  ctx: RotationContext,
  owner: TokenOwner,
  body: Parameters<TokenApi['create']>[1]
): Promise<{ token: ApiToken; value: string }> {
  let refusal: unknown
  const result = await retryUntil<{ token: ApiToken; value: string } | undefined>(
    async () => {
      try {
        return { done: true, value: await ctx.tokens.create(owner, body) }
      } catch (error) {
        if (!(error instanceof CloudflareApiError && error.status === 429)) throw error
        refusal = error
        core.warning('Cloudflare refused the token create (429, rate limit); nothing was minted.')
        return { done: false, value: undefined }
      }
    },
    { deadlineMs: CREATE_REFUSED_DEADLINE_MS, initialDelayMs: 1000, sleep: ctx.sleep }
  )
  if (!result.value) throw refusal
  return result.value
}

/** No answer, or a server error: the request may have taken effect. */
function isAmbiguous(error: unknown): boolean {
  return (
    error instanceof CloudflareApiError &&
    (error.ambiguous || (error.status !== undefined && error.status >= 500))
  )
}

// ---------------------------------------------------------------- verify

async function verifyNewToken(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  next: Credentials
): Promise<void> {
  let lastError = ''
  const verified = await retryUntil<boolean>(
    async () => {
      try {
        const answer = await ctx.tokens.verify(next.value!, plan.owner)
        if (answer.id === next.id && answer.status === 'active') {
          return { done: true, value: true }
        }
        lastError = `verify answered status ${answer.status} for ${answer.id}`
      } catch (error) {
        lastError = errorMessage(error)
      }
      return { done: false, value: false }
    },
    { deadlineMs: PROPAGATION_DEADLINE_MS, sleep: ctx.sleep }
  )
  if (!verified.done) {
    throw new RotationError(
      'verify',
      `The new token ${next.id} did not verify as active: ${lastError}`
    )
  }
  core.info(`Token ${next.id} verifies as active`)
  await probeR2(ctx, report, plan, next, 'verify')
}

async function probeR2(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  credentials: Credentials,
  phaseName: PhaseName
): Promise<void> {
  if (!plan.probe) return
  if (!credentials.secretAccessKey) {
    core.info(`R2 probe skipped: the R2 secret of token ${credentials.id} is not known to this run`)
    return
  }
  const result = await probeBucket({
    endpoint: plan.probe.endpoint,
    bucket: plan.probe.bucket,
    credentials: { accessKeyId: credentials.id, secretAccessKey: credentials.secretAccessKey },
    mode: plan.probe.mode,
    deadlineMs: PROPAGATION_DEADLINE_MS
  })
  report.probe = { mode: plan.probe.mode, bucket: plan.probe.bucket, ok: result.ok }
  if (!result.ok) {
    throw new RotationError(
      phaseName,
      `The R2 ${plan.probe.mode} probe of bucket ${plan.probe.bucket} with the credentials of token ${credentials.id} failed after ${result.attempts} attempt(s): ${result.reason}`
    )
  }
  core.info(
    `R2 ${plan.probe.mode} probe of ${plan.probe.bucket} with token ${credentials.id} passed (${result.attempts} attempt(s))`
  )
}

// ---------------------------------------------------------------- publish → deploy → smoke → revoke

/**
 * Puts `next` into service and revokes `previousId`: publish, deploy, smoke, revoke. The
 * invariant lives here: the revoke comes only after the deploy concluded success and every smoke
 * check passed; any failure before it throws, and the caller rolls back or keeps both tokens.
 */
async function advance(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState,
  next: Credentials,
  previousId: string
): Promise<void> {
  await journalWrite(ctx, report, { phase: 'publishing' })
  state.publishStarted = true
  await phase(report, 'publish', () => publish(ctx, report, next))
  await journalWrite(ctx, report, { phase: 'published' })

  if (plan.workflow) {
    await journalWrite(ctx, report, { phase: 'deploying' })
    await phase(report, 'deploy', () => deploy(ctx, report, plan, state))
  }
  await journalWrite(ctx, report, { phase: 'smoke' })
  await phase(report, 'smoke', () => smoke(ctx, report, plan, next))

  await journalWrite(ctx, report, { phase: 'revoking' })
  const disabled = await phase(report, 'revoke', () =>
    revoke(ctx, report, plan, previousId, next.id)
  )
  await journalWrite(ctx, report, { phase: 'done', disabled_token_ids: disabled })
}

async function publish(
  ctx: RotationContext,
  report: RotationReport,
  credentials: Credentials
): Promise<void> {
  const { settings } = ctx
  const total = settings.secretTargets.length * settings.secrets.length
  let n = 0
  for (const target of settings.secretTargets) {
    for (const secret of settings.secrets) {
      n++
      const value = fieldValue(secret.field, credentials)
      if (value === undefined) {
        // Callers check coverage first; this guards the invariant that no secret is left stale.
        throw new RotationError(
          'publish',
          `The ${secret.field} of token ${credentials.id} is not known; cannot write ${secret.name}.`
        )
      }
      const outcome = await ctx.secrets.write(target, secret.name, value)
      report.secretsWritten.push(`${describeTarget(target)} ${secret.name}`)
      core.info(`[${n}/${total}] ${target.line} ${secret.name} (${outcome})`)
    }
  }
}

async function deploy(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState
): Promise<void> {
  const deploySettings = ctx.settings.deploy!
  const run = await dispatchWorkflow(
    ctx.github,
    deploySettings.repository,
    plan.workflow!,
    plan.deployRef!,
    deploySettings.inputs,
    {
      sleep: ctx.sleep,
      // After a dispatch with no clear answer, none of this rotation's runs may be taken for its run.
      knownRunIds: [...(ctx.journal.record?.deploy_run_ids ?? []), ...state.deployRunIds]
    }
  )
  state.deployRunIds.push(run.runId)
  report.deployRunId = run.runId
  report.deployRunUrl = run.htmlUrl
  core.info(`Dispatched deploy run ${run.runId}: ${run.htmlUrl}`)
  // The phase stays what it was (`deploying`, or `rolling-back` for a rollback's redeploy).
  await journalWrite(ctx, report, {
    phase: ctx.journal.record?.phase ?? 'deploying',
    deploy_run_ids: [...(ctx.journal.record?.deploy_run_ids ?? []), run.runId]
  })
  let lastStatus = ''
  const outcome = await followRun(ctx.github, deploySettings.repository, run.runId, {
    timeoutMs: deploySettings.timeoutMs,
    // The budget read just before the dispatch: no second /rate_limit read.
    rateBudget: run.rateBudget,
    sleep: ctx.sleep,
    onStatus: status => {
      if (status !== lastStatus) {
        lastStatus = status
        if (status === 'waiting') {
          core.warning(
            `Deploy run ${run.runId} is waiting for an environment approval: ${run.htmlUrl}`
          )
        } else {
          core.info(`Deploy run ${run.runId}: ${status}`)
        }
      }
    }
  })
  report.deployConclusion = outcome.ok ? outcome.conclusion : (outcome.conclusion ?? outcome.reason)
  if (!outcome.ok) {
    const jobs = outcome.failedJobs
      .map(
        j =>
          `${j.name}: ${j.conclusion}${j.failedSteps.length ? ` (${j.failedSteps.join(', ')})` : ''}`
      )
      .join('; ')
    throw new RotationError(
      'deploy',
      outcome.reason === 'timeout'
        ? `Deploy run ${run.runId} did not conclude within deploy-timeout${outcome.status ? ` (still ${outcome.status === 'waiting' ? 'waiting for an environment approval' : outcome.status})` : ''}; it was left running: ${run.htmlUrl}`
        : `Deploy run ${run.runId} concluded ${outcome.conclusion}${jobs ? ` — failed: ${jobs}` : ''}: ${run.htmlUrl}`
    )
  }
  core.info(`Deploy run ${run.runId} concluded success`)
}

async function smoke(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  credentials: Credentials
): Promise<void> {
  const { checks, headers, timeoutMs } = ctx.settings.smoke
  // The S3 probe and the smoke URLs are independent: run them side by side.
  const probe = probeR2(ctx, report, plan, credentials, 'smoke')
  probe.catch(() => undefined)
  if (checks.length > 0) {
    report.smoke = await runSmokeChecks(checks, headers, timeoutMs, { sleep: ctx.sleep })
    for (const result of report.smoke) {
      core.info(
        `smoke ${result.ok ? 'passed' : 'FAILED'}: ${result.url} (${result.status ?? 'no answer'}, ${result.attempts} attempt(s))`
      )
    }
    const failed = report.smoke.filter(r => !r.ok)
    if (failed.length > 0) {
      throw new RotationError(
        'smoke',
        `${failed.length} smoke check(s) failed: ${failed.map(f => `${f.url} (${f.reason ?? f.status})`).join('; ')}`
      )
    }
  }
  await probe
}

/** Revokes `previousId` as `revoke` says; deletes tokens earlier runs left disabled. Returns the ids left disabled now. */
async function revoke(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  previousId: string,
  nextId: string
): Promise<string[]> {
  const { settings } = ctx
  if (settings.revokeGraceMs > 0) {
    core.info(
      `Waiting ${Math.round(settings.revokeGraceMs / 1000)} s (revoke-grace) before revoking`
    )
    await (ctx.sleep ?? sleep)(settings.revokeGraceMs)
  }
  // Tokens that an earlier `revoke: disable` left behind: their time is up.
  for (const id of plan.disabledTokenIds) {
    if (id === nextId || id === previousId) continue
    const outcome = await ctx.tokens.delete(plan.owner, id)
    core.info(`Deleted the token ${id} left disabled by an earlier rotation (${outcome})`)
  }
  switch (settings.revoke) {
    case 'delete': {
      const outcome = await ctx.tokens.delete(plan.owner, previousId)
      report.revoked = outcome === 'deleted' ? 'deleted' : 'already-gone'
      core.info(
        outcome === 'deleted'
          ? `Deleted the previous token ${previousId}`
          : `The previous token ${previousId} was already gone`
      )
      return []
    }
    case 'disable': {
      const previous = await ctx.tokens.get(plan.owner, previousId)
      await ctx.tokens.setStatus(plan.owner, previous, 'disabled')
      report.revoked = 'disabled'
      core.info(`Disabled the previous token ${previousId}; the next rotation deletes it`)
      return [previousId]
    }
    case 'keep':
      report.revoked = 'kept'
      core.info(`Kept the previous token ${previousId} (revoke: keep)`)
      return []
  }
}

// ---------------------------------------------------------------- failure handling

async function cleanupUnpublished(
  ctx: RotationContext,
  report: RotationReport,
  owner: TokenOwner,
  next: Credentials
): Promise<void> {
  try {
    await phase(report, 'cleanup', async () => {
      await ctx.tokens.delete(owner, next.id)
      core.info(`Deleted the unpublished new token ${next.id}; nothing else was changed`)
    })
    report.tokenId = undefined
    report.accessKeyId = undefined
    report.expiresOn = undefined
    // The journal said `minting`/`minted`; the rotation is over and nothing is left behind.
    if (ctx.journal.record && !isSettled(ctx.journal.record.phase)) {
      await journalWrite(ctx, report, { phase: 'rolled-back' })
    }
  } catch (error) {
    report.error += `\nThe new token ${next.id} could not be deleted (${errorMessage(error)}); it is in no secret, so delete it by hand.`
  }
}

/**
 * A failure at or after publish. `on-failure: rollback` with the previous values known: restore
 * them everywhere, redeploy, smoke-check, and only then delete the new token (`rolled-back`).
 * Otherwise, or when that fails too: both tokens stay valid, the journal says `pending`.
 */
async function afterPublishFailure(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState,
  cause: unknown
): Promise<void> {
  const { settings } = ctx
  const next = state.next!
  const previous = plan.currentCredentials.id === next.id ? undefined : plan.currentCredentials
  const previousId = report.previousTokenId ?? plan.current.id
  const missing = previous
    ? missingFields(
        previous,
        settings.secrets.map(s => s.field)
      )
    : ['every field']
  const failedPhase = cause instanceof RotationError ? cause.phase : undefined

  if (settings.onFailure === 'rollback' && previous && missing.length === 0) {
    try {
      await phase(report, 'rollback', () => retreat(ctx, report, plan, state, previous, next.id))
      report.result = 'rolled-back'
      report.rollback = 'rolled-back'
      report.error = `${report.error}\nRolled back: every target holds the previous token ${previous.id} again, a deploy with it concluded success and the smoke checks passed; the new token ${next.id} was deleted.`
      return
    } catch (rollbackError) {
      report.error += `\nThe rollback failed too: ${errorMessage(rollbackError)}`
    }
  }
  const why =
    settings.onFailure === 'keep-both'
      ? 'on-failure is keep-both'
      : missing.length > 0
        ? `the previous token's values are not known (missing: ${missing.join(', ')}; pass current-token, or current-access-key-id with current-secret-access-key)`
        : 'the rollback did not complete'
  try {
    await journalWrite(ctx, report, { phase: 'pending' })
  } catch (error) {
    report.error += `\nThe journal could not be written: ${errorMessage(error)}`
  }
  report.rollback = 'pending'
  report.error +=
    `\nState: both tokens are valid and neither was revoked (${why}). The new token ${next.id} was ` +
    `written to ${report.secretsWritten.length} secret(s); the previous token ${previousId} may still ` +
    `be in the others and in the deployed app. Fix the cause${failedPhase ? ` (phase ${failedPhase})` : ''} ` +
    `and run the rotation again: with current-token (or current-access-key-id and current-secret-access-key) ` +
    `read from the secrets as they are now, it finishes or undoes this rotation from the journal` +
    `${ctx.journal.enabled ? ` (${ctx.journal.name}, phase pending)` : ''}. By hand: put one token's values ` +
    `into every secret, deploy, then delete the other token.`
}

/**
 * Restores `previous` everywhere, redeploys, smoke-checks, then deletes `pendingId` — but only
 * when every deploy run of this rotation has concluded (a run left running after a timeout could
 * still deploy the new token, which must then stay valid).
 */
async function retreat(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState,
  previous: Credentials,
  pendingId: string
): Promise<void> {
  await journalWrite(ctx, report, { phase: 'rolling-back' })
  core.info(`Restoring the previous token ${previous.id} in every target`)
  await publish(ctx, report, previous)
  if (plan.workflow) await deploy(ctx, report, plan, state)
  await smoke(ctx, report, plan, previous)
  const runs = [...new Set([...(ctx.journal.record?.deploy_run_ids ?? []), ...state.deployRunIds])]
  for (const runId of runs) {
    const { data } = await ctx.github.request('GET /repos/{owner}/{repo}/actions/runs/{run_id}', {
      ...ctx.settings.deploy!.repository,
      run_id: runId
    })
    if (data.status !== 'completed') {
      throw new RotationError(
        'rollback',
        `The previous token is back in every secret and deployed, but deploy run ${runId} (${data.status}) may still deploy the new token ${pendingId}, so it was not deleted: ${data.html_url}`
      )
    }
  }
  const outcome = await ctx.tokens.delete(plan.owner, pendingId)
  core.info(`Deleted the new token ${pendingId} (${outcome})`)
  await journalWrite(ctx, report, { phase: 'rolled-back', pending_token_id: pendingId })
}
