/**
 * The executor. It runs the phases in order and asks decide.ts at every branch:
 *
 *   preflight (read-only) → lock → [recover] → mint → verify → publish → deploy → smoke →
 *   revoke (disable, watch, delete)
 *
 * A failure before publish deletes the new token; after publish began it rolls back (previous
 * values restored everywhere, redeployed, smoke-checked, then the new token deleted) or keeps both
 * tokens valid, as decide.afterFailure says. The journal is written before and after each
 * mutating phase so that the next run can finish or undo a killed one.
 *
 * This is the only module that deletes, disables or enables a token, and each delete is asked of
 * decide.mayDelete first (`removeToken`).
 */
import type {
  ApiToken,
  Credentials,
  JournalRecord,
  PhaseName,
  RotationReport,
  TokenOwner,
  TokenScope
} from './model.js'
import type { RotationContext } from './context.js'
import * as decide from './decide.js'
import { RotationError, errorMessage, mayHaveTakenEffect } from './errors.js'
import { log, mask, maskToken } from './log.js'
import { sha256Hex } from './redact.js'
import { clonePolicies, sameCondition, samePolicies, TOKEN_QUOTA } from './cloudflare/tokens.js'
import { MANAGEMENT_PERMISSION, requireManagementPermission } from './cloudflare/management.js'
import { accountIdFromPolicies, classifyScope, r2Endpoint } from './cloudflare/r2.js'
import { describeTarget } from './github/secrets.js'
import { getRun } from './github/deploy.js'
import { expandTokenName, TOKEN_NAME_MAX_LENGTH } from './token-name.js'
import { readBaseline, readCloudflare, readDeploy, readTargets, runState } from './preflight.js'
import {
  type DeployTarget,
  type ProbeTarget,
  deployAndFollow,
  probeR2,
  publishSecrets,
  smokeAndProbe,
  verifyToken,
  watchChecks
} from './steps.js'

export type { RotationReport } from './model.js'

interface Plan {
  owner: TokenOwner
  /** The token in service now (after a restore: the previous token of the unfinished rotation). */
  current: ApiToken
  /** What the inputs tell of its values (a rollback needs them). */
  currentCredentials: Credentials
  scope: TokenScope
  probe?: ProbeTarget
  deploy?: DeployTarget
  newName: string
  expiresOn?: string
  due: decide.Due
  recovery?: decide.Recovery
  /** Tokens an earlier `revoke: disable` left behind. */
  disabledTokenIds: string[]
  ownerTokens: ApiToken[]
}

/** What has been changed so far: decides the clean-up when a phase fails. */
interface Progress {
  next?: Credentials
  nextOrigin?: 'minted' | 'recovered'
  mintedAt?: Date
  /** Set before the first secret write: from then on `next` may be in a secret. */
  publishStarted: boolean
  publishedEverywhere: boolean
  /** Distinct secrets written with `next`. */
  writtenWithNext: Set<string>
  /** Deploy runs dispatched by this run (all must have concluded before a rollback deletes `next`). */
  deployRunIds: number[]
  deployConcludedAt?: Date
  /** The previous token's `last_used_on` when the new credentials went into service (null: never used). */
  previousUseAtService?: string | null
  /** The previous token is disabled right now. */
  previousDisabled: boolean
}

export async function rotate(ctx: RotationContext): Promise<RotationReport> {
  const { settings } = ctx
  const report = newReport(ctx)
  const progress: Progress = {
    publishStarted: false,
    publishedEverywhere: false,
    writtenWithNext: new Set(),
    deployRunIds: [],
    previousDisabled: false
  }
  let plan: Plan | undefined
  let locked = false
  try {
    plan = await phase(report, 'preflight', () => preflight(ctx, report))
    const p = plan
    if (settings.dryRun) {
      report.result = 'dry-run'
      for (const line of report.plan) log.info(`plan: ${line}`)
      return report
    }
    if (!p.recovery && !p.due.due) return skip(report, p)
    locked = await claimLock(ctx)
    if (p.recovery && (await recover(ctx, report, p, progress))) {
      report.result = 'rotated'
      return report
    }
    if (!p.due.due) return skip(report, p)
    const next = await phase(report, 'mint', () => mint(ctx, report, p, progress))
    await phase(report, 'verify', async () => {
      await verifyToken(ctx, p.owner, next)
      report.probe = await probeR2(ctx, p.probe, next, 'verify')
    })
    await advance(ctx, report, p, progress, p.current.id, 'publish')
    report.result = 'rotated'
    return report
  } catch (error) {
    report.result = 'failed'
    // The one annotation of the failure (main fails the step with it) names the phase.
    report.error =
      error instanceof RotationError
        ? `Phase ${error.phase} failed: ${error.message}`
        : errorMessage(error)
    if (plan) await handleFailure(ctx, report, plan, progress, error)
    return report
  } finally {
    if (locked) await releaseLock(ctx, report)
  }
}

function newReport(ctx: RotationContext): RotationReport {
  return {
    result: 'failed',
    phases: [],
    warnings: [],
    secretsWritten: [],
    targets: ctx.settings.secretTargets.map(describeTarget),
    smoke: [],
    evidence: [],
    plan: []
  }
}

function skip(report: RotationReport, plan: Plan): RotationReport {
  report.result = 'skipped'
  const dueAt = plan.due.due ? undefined : decide.isoSeconds(plan.due.dueAt)
  log.notice(
    `Token ${plan.current.id} is not due for rotation yet (rotate-after); it will be due on ${dueAt}. Set force: true to rotate now.`
  )
  return report
}

/** Runs one phase in a log group and records its status and duration. The failure is reported once, by main. */
async function phase<T>(
  report: RotationReport,
  name: PhaseName,
  body: () => Promise<T>
): Promise<T> {
  const started = Date.now()
  log.startGroup(`Phase: ${name}`)
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
    log.info(`Phase ${name} failed.`)
    throw wrapped
  } finally {
    log.endGroup()
  }
}

async function journal(
  ctx: RotationContext,
  report: RotationReport,
  update: Partial<JournalRecord> & { phase: JournalRecord['phase'] }
): Promise<void> {
  report.journalPhase = (await ctx.journal.write(update)).phase
}

function warn(report: RotationReport, message: string): void {
  report.warnings.push(message)
  log.warning(message)
}

// ---------------------------------------------------------------- preflight (read-only)

async function preflight(ctx: RotationContext, report: RotationReport): Promise<Plan> {
  const { settings } = ctx
  const cf = await readCloudflare(ctx)
  const now = ctx.tokens.rate.serverNow() ?? new Date()
  log.info(`Management token: ${cf.management.id} (${cf.management.owner.kind}-owned)`)
  report.owner = cf.owner.kind
  const recovery =
    cf.journal && !decide.isSettled(cf.journal.phase)
      ? decide.decideRecovery({
          record: cf.journal,
          journalRun: cf.journalRun,
          ...(cf.journalRunDetail ? { journalRunDetail: cf.journalRunDetail } : {}),
          known: cf.known,
          fields: settings.secrets.map(s => s.field),
          ownerTokens: cf.ownerTokens
        })
      : undefined
  if (recovery?.kind === 'refuse') throw new RotationError('preflight', recovery.message)
  if (recovery) {
    report.recovery = decide.describeRecovery(recovery)
    warn(
      report,
      `Unfinished rotation from run ${recovery.record.run_id} (phase ${recovery.record.phase}): ${report.recovery}`
    )
  }
  // The token in use now: after a restore, the previous token; when finishing, the pending one.
  const currentId =
    recovery?.kind === 'restore'
      ? recovery.previous.id
      : recovery?.kind === 'forward'
        ? recovery.next.id
        : cf.resolved.id
  const current =
    cf.ownerTokens.find(t => t.id === currentId) ?? (await ctx.tokens.get(cf.owner, currentId))
  const currentCredentials =
    recovery?.kind === 'restore'
      ? recovery.previous
      : recovery?.kind === 'forward'
        ? recovery.next
        : (cf.known[0] ?? { id: current.id })
  report.previousTokenId = recovery?.kind === 'forward' ? recovery.previousId : current.id
  report.previousTokenName = current.name
  log.info(
    `Current token: ${current.id} "${current.name}" (${cf.owner.kind}-owned, ${current.status})`
  )

  requireManagementPermission(cf.management, cf.owner, cf.groupNames)
  const scope = classifyScope(
    current.policies,
    cf.groupNames,
    settings.r2.bucket ? { bucket: settings.r2.bucket } : {}
  )
  report.scope = scope
  report.tokenScope = scope.summary
  log.info(`Scope: ${scope.summary}`)
  if (settings.leastPrivilege !== 'off') {
    for (const warning of scope.warnings) warn(report, `Least privilege: ${warning}`)
  }
  const deletingFirst = recovery?.kind === 'delete-unpublished' ? recovery.tokenIds : []
  const refused = decide.refusals({
    owner: cf.owner,
    current,
    managementId: cf.management.id,
    ...(cf.management.expiresOn ? { managementExpiresOn: cf.management.expiresOn } : {}),
    ...(report.previousTokenId !== current.id ? { previousId: report.previousTokenId } : {}),
    ownerTokens: cf.ownerTokens,
    deletingFirst,
    ...(cf.inputsMismatch ? { inputsMismatch: cf.inputsMismatch } : {}),
    recoveringPublished: recovery !== undefined && recovery.kind !== 'delete-unpublished',
    leastPrivilege: settings.leastPrivilege,
    scopeWarnings: scope.warnings,
    now,
    quota: TOKEN_QUOTA[cf.owner.kind],
    managementPermission: MANAGEMENT_PERMISSION[cf.owner.kind]
  })
  if (refused.length > 0) throw new RotationError('preflight', refused.join('\n'))
  if (
    cf.management.expiresOn &&
    Date.parse(cf.management.expiresOn) - now.getTime() < decide.MANAGEMENT_EXPIRY_WARNING_MS
  ) {
    warn(
      report,
      `The management token (cloudflare-api-token) ${cf.management.id} expires on ${cf.management.expiresOn}. Create its successor before then and update the secret it comes from, or rotations stop and the rotated token is never renewed.`
    )
  }

  const probe = planProbe(ctx, report, scope, cf.owner, current)
  await readTargets(ctx)
  const deploy = await preflightDeploy(ctx, report)
  await preflightBaseline(ctx, recovery, current, currentCredentials, probe, cf.journal)

  const expanded = expandTokenName(settings.tokenName, {
    oldName: current.name,
    now,
    runId: settings.runId,
    repository: `${settings.repository.owner}/${settings.repository.repo}`
  })
  // The token being replaced may carry the name (a second rotation on one day): it is told apart
  // by its id, so only the other tokens' names must differ.
  const others = cf.ownerTokens.filter(t => t.id !== current.id).map(t => t.name)
  const newName = decide.uniqueTokenName(
    expanded,
    others,
    { id: settings.runId, attempt: settings.runAttempt },
    TOKEN_NAME_MAX_LENGTH
  )
  const expiresOn = decide.newExpiry(settings, current, now)
  for (const warning of decide.expiryWarnings(settings, current, expiresOn, now))
    warn(report, warning)
  const due = decide.decideDue(settings, current, now)
  const budget = decide.refusals({
    ...emptyRefusalFacts(cf.owner, current, now),
    rate: rateFacts(ctx)
  })
  if (budget.length > 0) throw new RotationError('preflight', budget.join('\n'))

  const plan: Plan = {
    owner: cf.owner,
    current,
    currentCredentials,
    scope,
    ...(probe ? { probe } : {}),
    ...(deploy ? { deploy } : {}),
    newName,
    ...(expiresOn ? { expiresOn } : {}),
    due,
    ...(recovery ? { recovery } : {}),
    disabledTokenIds: cf.journal?.disabled_token_ids ?? [],
    ownerTokens: cf.ownerTokens
  }
  report.plan = describePlan(ctx, plan)
  return plan
}

/** The refusal facts that pass every check but the one being asked (the rate budget). */
function emptyRefusalFacts(owner: TokenOwner, current: ApiToken, now: Date): decide.PreflightFacts {
  return {
    owner,
    current: { id: current.id, status: 'active' },
    managementId: '',
    ownerTokens: [],
    deletingFirst: [],
    recoveringPublished: false,
    leastPrivilege: 'off',
    scopeWarnings: [],
    now,
    quota: Infinity,
    managementPermission: ''
  }
}

function rateFacts(ctx: RotationContext): decide.PreflightFacts['rate'] {
  const { rate } = ctx.tokens
  const resetAt =
    rate.resetAt === undefined
      ? undefined
      : new Date(Date.now() + (rate.resetAt - ctx.clock.now()) * ctx.clock.scale)
  return {
    ...(rate.remaining !== undefined ? { remaining: rate.remaining } : {}),
    ...(resetAt ? { resetAt } : {})
  }
}

function planProbe(
  ctx: RotationContext,
  report: RotationReport,
  scope: TokenScope,
  owner: TokenOwner,
  current: ApiToken
): ProbeTarget | undefined {
  const { settings } = ctx
  const decision = decide.planProbe(settings, scope)
  if (decision.kind === 'refuse') throw new RotationError('preflight', decision.message)
  if (decision.kind === 'off') {
    if (decision.warning) warn(report, decision.warning)
    else log.info('R2 probe: off')
    return undefined
  }
  const accountId =
    settings.accountId ??
    (owner.kind === 'account' ? owner.accountId : accountIdFromPolicies(current.policies))
  if (!settings.r2.endpoint && !accountId) {
    throw new RotationError(
      'preflight',
      'Cannot derive the R2 endpoint: no account id. Set account-id or r2-endpoint, or r2-probe: off.'
    )
  }
  const endpoint = r2Endpoint(accountId ?? '', decision.probe.jurisdiction, settings.r2.endpoint)
  log.info(`R2 probe: ${decision.probe.mode} on bucket ${decision.probe.bucket} at ${endpoint}`)
  return { plan: decision.probe, endpoint }
}

async function preflightDeploy(
  ctx: RotationContext,
  report: RotationReport
): Promise<DeployTarget | undefined> {
  const { settings } = ctx
  const facts = await readDeploy(ctx)
  if (!facts || !settings.deploy) {
    log.info('Deploy: none (deploy-workflow: none); consumers read the secrets when they start')
    return undefined
  }
  const repo = settings.deploy.repository
  const shadows: decide.Shadow[] = []
  for (const e of facts.environmentSecrets) {
    if (e.exists !== true || decide.writesEnvironment(settings.secretTargets, repo, e.environment))
      continue
    shadows.push({
      where: `Environment '${e.environment}' of ${repo.owner}/${repo.repo}`,
      secret: e.secret,
      job: e.job,
      fix: `env:${repo.owner}/${repo.repo}:${e.environment}`
    })
  }
  for (const r of facts.repositorySecrets) {
    if (r.exists !== true || decide.writesRepository(settings.secretTargets, repo)) continue
    shadows.push({
      where: `The repository ${repo.owner}/${repo.repo}`,
      secret: r.secret,
      fix: `repo:${repo.owner}/${repo.repo}`
    })
  }
  const refusal = decide.shadowRefusal(shadows)
  if (refusal) throw new RotationError('preflight', refusal)
  for (const env of facts.computedEnvironments) {
    warn(
      report,
      `The deploy job '${env.job}' runs in environment ${env.expression}, computed at run time: the action cannot check that environment for secrets that shadow the ones it writes.`
    )
  }
  log.info(`Deploy workflow: ${facts.workflow.name} (${facts.workflow.path}) on ${facts.ref}`)
  return {
    repository: repo,
    workflow: facts.workflow,
    ref: facts.ref,
    inputs: settings.deploy.inputs,
    timeoutMs: settings.deploy.timeoutMs
  }
}

async function preflightBaseline(
  ctx: RotationContext,
  recovery: decide.Recovery | undefined,
  current: ApiToken,
  credentials: Credentials,
  probe: ProbeTarget | undefined,
  record: JournalRecord | undefined
): Promise<void> {
  // While an earlier rotation is undone or finished, either of its tokens may be serving.
  const serving =
    recovery && record
      ? [current.id, record.previous_token_id, record.pending_token_id].filter(
          (id): id is string => !!id
        )
      : [current.id]
  const baseline = await readBaseline(
    ctx,
    [...new Set(serving)],
    probe ? { ...probe, credentials } : undefined
  )
  const refusal = decide.baselineRefusal(baseline.smoke, baseline.probe, current.id)
  if (refusal) throw new RotationError('preflight', refusal)
  if (baseline.smoke.length > 0)
    log.info(
      `Baseline: ${baseline.smoke.length} smoke check(s) pass with the credentials in use now`
    )
}

function describePlan(ctx: RotationContext, plan: Plan): string[] {
  const { settings } = ctx
  const lines: string[] = []
  if (plan.recovery) lines.push(`recover first: ${decide.describeRecovery(plan.recovery)}`)
  const { current } = plan
  const revocation = decide.decideRevocation(settings, settings.smoke.checks.length)
  lines.push(
    `mint "${plan.newName}" as a copy of ${current.id} (${current.policies.length} polic${current.policies.length === 1 ? 'y' : 'ies'}, ${current.condition ? 'with' : 'no'} condition), ${plan.expiresOn ? `expiring ${plan.expiresOn}` : 'no expiry'}`,
    `verify it${plan.probe ? ` and probe bucket ${plan.probe.plan.bucket} (${plan.probe.plan.mode})` : ''}`,
    `write ${settings.secrets.map(s => `${s.name}=${s.field}`).join(', ')} to ${settings.secretTargets.map(describeTarget).join('; ')}`,
    plan.deploy
      ? `dispatch ${plan.deploy.workflow.path} on ${plan.deploy.ref} in ${plan.deploy.repository.owner}/${plan.deploy.repository.repo} and wait up to ${Math.round(plan.deploy.timeoutMs / 1000)} s`
      : 'no deploy step (deploy-workflow: none)',
    `${settings.smoke.checks.length} smoke check(s)`,
    revocation.kind === 'watched'
      ? `disable the previous token ${current.id}, watch the checks for ${Math.round(revocation.watchMs / 1000)} s, then ${revocation.thenDelete ? 'delete it' : 'leave it disabled'}`
      : revocation.kind === 'now'
        ? `${revocation.action} the previous token ${current.id} without a watch`
        : `keep the previous token ${current.id}`
  )
  if (!plan.due.due)
    lines.push(`(not due before ${decide.isoSeconds(plan.due.dueAt)}: the run would skip)`)
  return lines
}

// ---------------------------------------------------------------- the lock

/** How long a run that took over a stale lock waits before reading it back. */
export const LOCK_SETTLE_MS = 3000

/**
 * Claims the lock before anything changes; returns whether this run holds one (false without a
 * journal). Another run holding it ends this run with nothing changed but the refused claim.
 */
async function claimLock(ctx: RotationContext): Promise<boolean> {
  const { journal, settings } = ctx
  if (!journal.enabled) return false
  const self = { id: settings.runId, attempt: settings.runAttempt }
  const created = await journal.createLock()
  if (created === 'claimed') return true
  let holder = await journal.readLock()
  if (!holder && created === 'unclear')
    holder =
      (await journal.createLock()) === 'claimed'
        ? { run_id: self.id, run_attempt: self.attempt, claimed_at: '' }
        : await journal.readLock()
  if (!holder || journal.isMine(holder)) return true
  const state = await runState(ctx, holder.run_id)
  const decision = decide.decideLock(holder, state === 'self' ? 'running' : state, self)
  const refuse = (who: { run_id: string; run_attempt: number }, why: string): RotationError =>
    new RotationError(
      'preflight',
      `Another rotation holds the lock ${journal.lockName}: run ${who.run_id || '(unknown)'} (attempt ${who.run_attempt})${who.run_id ? ` ${settings.githubServerUrl}/${settings.repository.owner}/${settings.repository.repo}/actions/runs/${who.run_id}` : ''}; ${why}. Nothing was changed. Use a 'concurrency:' group so that rotations of one token never overlap.`
    )
  switch (decision.kind) {
    case 'ours':
      return true
    case 'refuse':
      throw refuse(holder, decision.why)
    case 'take-over': {
      log.warning(`Taking over the rotation lock ${journal.lockName}: ${decision.why}.`)
      await journal.overwriteLock()
      // Two runs taking over at once both write; the one read back after the pause holds it.
      await ctx.clock.sleep(LOCK_SETTLE_MS)
      const after = await journal.readLock()
      if (!journal.isMine(after)) throw refuse(after ?? holder, 'it took the lock over first')
      return true
    }
  }
}

async function releaseLock(ctx: RotationContext, report: RotationReport): Promise<void> {
  try {
    await ctx.journal.releaseLock()
  } catch (error) {
    warn(
      report,
      `${errorMessage(error)} The next run takes a lock whose run has ended over, so nothing needs doing.`
    )
  }
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
  progress: Progress
): Promise<boolean> {
  const recovery = plan.recovery!
  return phase(report, 'recover', async () => {
    switch (recovery.kind) {
      case 'refuse':
        throw new RotationError('recover', recovery.message)
      case 'delete-unpublished':
        for (const id of recovery.tokenIds) {
          const token = plan.ownerTokens.find(t => t.id === id)
          await removeToken(ctx, plan.owner, {
            kind: 'orphan',
            tokenId: id,
            name: token?.name ?? '',
            ...(recovery.record.pending_token_name
              ? { journalName: recovery.record.pending_token_name }
              : {}),
            ...(recovery.record.previous_token_id
              ? { previousId: recovery.record.previous_token_id }
              : {}),
            knownIds: [plan.current.id]
          })
        }
        return false
      case 'stuck':
        await journal(ctx, report, { phase: 'pending' })
        throw new RotationError(
          'recover',
          `An earlier rotation (run ${recovery.record.run_id}) stopped in phase ${recovery.record.phase} and ${recovery.reason}. Both tokens are still valid. Pass current-token (the value now in the secrets) so that this run can finish it, or write one token's values into every secret by hand and delete the other token.`
        )
      case 'forward':
        maskToken(recovery.next.value)
        mask(recovery.next.secretAccessKey)
        Object.assign(report, {
          tokenId: recovery.next.id,
          accessKeyId: recovery.next.id,
          tokenName: plan.current.name,
          expiresOn: plan.current.expires_on ?? undefined
        })
        progress.next = recovery.next
        progress.nextOrigin = 'recovered'
        await advance(ctx, report, plan, progress, recovery.previousId, recovery.from)
        return true
      case 'restore':
        await reenableIfDisabled(ctx, report, plan.owner, recovery.previous.id)
        progress.publishStarted = true
        await retreat(ctx, report, plan, progress, recovery.previous, recovery.pendingId)
        return false
    }
  })
}

// ---------------------------------------------------------------- mint

async function mint(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress
): Promise<Credentials> {
  // The name is recorded before the create: a token carrying it that the journal does not know is
  // an orphan of this rotation (the name is unique among the owner's tokens).
  await journal(ctx, report, {
    phase: 'minting',
    previous_token_id: plan.current.id,
    pending_token_id: undefined,
    pending_token_name: plan.newName,
    token_owner: plan.owner.kind === 'user' ? 'user' : { account_id: plan.owner.accountId },
    deploy_run_ids: [],
    revoke: undefined,
    started_at: new Date().toISOString()
  })
  const body = {
    name: plan.newName,
    policies: clonePolicies(plan.current.policies),
    ...(plan.current.condition !== undefined && plan.current.condition !== null
      ? { condition: plan.current.condition }
      : {}),
    ...(plan.expiresOn ? { expires_on: plan.expiresOn } : {})
  }
  let created: Awaited<ReturnType<RotationContext['tokens']['create']>>
  try {
    created = await ctx.tokens.create(plan.owner, body)
  } catch (error) {
    if (!mayHaveTakenEffect(error)) throw error
    // The create may have happened; its value came only in the lost answer, so a token minted
    // then can never be used: find it by its unique name, delete it, and mint once more.
    const orphans = (await ctx.tokens.list(plan.owner)).filter(
      t => t.name === plan.newName && t.id !== plan.current.id
    )
    for (const orphan of orphans) {
      await removeToken(ctx, plan.owner, {
        kind: 'orphan',
        tokenId: orphan.id,
        name: orphan.name,
        journalName: plan.newName,
        previousId: plan.current.id,
        knownIds: []
      })
    }
    log.warning(
      `The token create got no clear answer (${errorMessage(error)}); ${orphans.length} token(s) minted by it were found and deleted. Minting once more.`
    )
    created = await ctx.tokens.create(plan.owner, body)
  }
  const { token, value } = created
  maskToken(value)
  const next: Credentials = { id: token.id, value, secretAccessKey: sha256Hex(value) }
  Object.assign(progress, { next, nextOrigin: 'minted', mintedAt: new Date() })
  Object.assign(report, {
    tokenId: token.id,
    tokenName: token.name,
    accessKeyId: token.id,
    expiresOn: token.expires_on ?? plan.expiresOn
  })
  log.info(`Minted token ${token.id} "${token.name}"`)
  await journal(ctx, report, { phase: 'minted', pending_token_id: token.id })

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

// ---------------------------------------------------------------- publish → deploy → smoke → revoke

/**
 * Puts `progress.next` into service and revokes `previousId`, from `from` on. The revoke comes
 * only after the deploy concluded success and every smoke check passed (mayDelete checks it
 * again); any failure before it throws, and the caller rolls back or keeps both tokens.
 */
async function advance(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  previousId: string,
  from: decide.ResumeAt
): Promise<void> {
  const next = progress.next!
  if (from === 'publish') {
    await journal(ctx, report, { phase: 'publishing' })
    await phase(report, 'publish', () => publish(ctx, report, progress, next))
    await journal(ctx, report, { phase: 'published' })
    if (plan.deploy) {
      await journal(ctx, report, { phase: 'deploying' })
      await phase(report, 'deploy', () => deploy(ctx, report, plan, progress))
    }
    await notePreviousUse(ctx, plan, progress, previousId)
  } else {
    // Published and deployed by the run that was interrupted (the journal says so).
    progress.publishStarted = true
    progress.publishedEverywhere = true
  }
  if (from === 'publish' || from === 'smoke') {
    await journal(ctx, report, { phase: 'smoke' })
    await phase(report, 'smoke', async () => {
      const result = await smokeAndProbe(ctx, next, plan.probe, 'smoke')
      report.smoke = result.smoke
      if (result.probe) report.probe = result.probe
    })
    await gatherEvidence(ctx, report, plan, progress, previousId)
  }
  await journal(ctx, report, { phase: 'revoking' })
  const disabled = await phase(report, 'revoke', () =>
    revoke(ctx, report, plan, progress, previousId, from)
  )
  await journal(ctx, report, { phase: 'done', disabled_token_ids: disabled })
}

async function publish(
  ctx: RotationContext,
  report: RotationReport,
  progress: Progress,
  credentials: Credentials
): Promise<void> {
  const toNext = credentials.id === progress.next?.id
  await publishSecrets(ctx, credentials, {
    beforeFirst: () => {
      progress.publishStarted = true
    },
    written: key => {
      if (!report.secretsWritten.includes(key)) report.secretsWritten.push(key)
      if (toNext) progress.writtenWithNext.add(key)
      else progress.writtenWithNext.delete(key)
    }
  })
  progress.publishedEverywhere = toNext
}

async function deploy(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress
): Promise<void> {
  const known = [...(ctx.journal.record?.deploy_run_ids ?? []), ...progress.deployRunIds]
  const outcome = await deployAndFollow(ctx, plan.deploy!, known, async run => {
    progress.deployRunIds.push(run.runId)
    report.deployRunId = run.runId
    report.deployRunUrl = run.htmlUrl
    // The phase stays what it was (`deploying`, or `rolling-back` for a rollback's redeploy).
    await journal(ctx, report, {
      phase: ctx.journal.record?.phase ?? 'deploying',
      deploy_run_ids: [...new Set([...(ctx.journal.record?.deploy_run_ids ?? []), run.runId])]
    }).catch(error => {
      throw error
    })
  }).catch(error => {
    report.deployConclusion =
      error instanceof RotationError
        ? (/concluded (\w+)/.exec(error.message)?.[1] ?? 'timeout')
        : 'failed'
    throw error
  })
  report.deployConclusion = 'success'
  progress.deployConcludedAt = outcome.concludedAt
}

/** The previous token's `last_used_on` now: uses after this reading are evidence of a stale consumer. */
async function notePreviousUse(
  ctx: RotationContext,
  plan: Plan,
  progress: Progress,
  previousId: string
): Promise<void> {
  if (previousId === progress.next?.id) return
  const previous = await ctx.tokens.get(plan.owner, previousId).catch(() => undefined)
  if (previous) progress.previousUseAtService = previous.last_used_on ?? null
}

/** Both tokens' `last_used_on`, for the summary: a hint that never decides. */
async function gatherEvidence(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  previousId: string
): Promise<void> {
  const read = (id: string): Promise<ApiToken | undefined> =>
    ctx.tokens.get(plan.owner, id).catch(() => undefined)
  const [next, previous] = await Promise.all([read(progress.next!.id), read(previousId)])
  const { evidence, warning } = decide.useEvidence(next, previous, {
    ...(progress.previousUseAtService !== undefined
      ? { previousUseAtService: progress.previousUseAtService }
      : {}),
    deployed: plan.deploy !== undefined,
    probedWithNew: plan.probe !== undefined
  })
  report.evidence = evidence
  if (warning) warn(report, warning)
}

/**
 * Revokes `previousId` as `revoke` and `revoke-watch` say: disable, watch the checks, then delete
 * (or leave it disabled). A failed check during the watch enables it again at once and throws.
 * Deletes tokens earlier rotations left disabled that still are. Returns the ids left disabled now.
 */
async function revoke(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  previousId: string,
  from: decide.ResumeAt
): Promise<string[]> {
  const { settings } = ctx
  const next = progress.next!
  if (settings.revokeGraceMs > 0 && from !== 'watch' && from !== 'finish') {
    log.info(
      `Waiting ${Math.round(settings.revokeGraceMs / 1000)} s (revoke-grace) before revoking`
    )
    await ctx.clock.sleep(settings.revokeGraceMs)
  }
  await removeLeftovers(ctx, report, plan, [previousId, next.id])
  if (from === 'finish') {
    report.revoked = 'already-gone'
    return []
  }
  const proof = {
    kind: 'previous' as const,
    tokenId: previousId,
    nextId: next.id,
    publishedEverywhere: progress.publishedEverywhere,
    deploy: plan.deploy
      ? progress.deployConcludedAt || from !== 'publish'
        ? ('success' as const)
        : ('not-concluded' as const)
      : ('none' as const),
    smokePassed: true
  }
  const revocation = decide.decideRevocation(settings, settings.smoke.checks.length)
  if (revocation.kind !== 'keep' && settings.smoke.checks.length === 0) {
    warn(
      report,
      'There is no smoke URL, so nothing is watched after the old token is revoked: if a consumer still uses it, it fails. Add smoke-urls (with contains={access-key-id}) so that the action can tell; until then revoke-grace is the only help for running consumers.'
    )
  }
  switch (revocation.kind) {
    case 'keep':
      report.revoked = 'kept'
      log.info(`Kept the previous token ${previousId} (revoke: keep)`)
      return []
    case 'now':
      if (revocation.action === 'disable') {
        await setTokenStatus(ctx, report, plan.owner, previousId, 'disabled')
        report.revoked = 'disabled'
        return [previousId]
      }
      await removeToken(ctx, plan.owner, { ...proof, watch: 'off' }, report)
      return []
    case 'watched':
      return watchedRevoke(ctx, report, plan, progress, revocation, proof, from === 'watch')
  }
}

async function watchedRevoke(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  revocation: Extract<decide.Revocation, { kind: 'watched' }>,
  proof: Omit<Extract<decide.DeleteRequest, { kind: 'previous' }>, 'watch'>,
  alreadyDisabled: boolean
): Promise<string[]> {
  const previousId = proof.tokenId
  if (!alreadyDisabled) {
    // Recorded first: a token active again under a journal that says it was disabled was enabled
    // after a failed check, and the next run must not disable it blindly once more.
    await journal(ctx, report, {
      phase: 'revoking',
      revoke: { disabled_at: new Date().toISOString() }
    })
    await setTokenStatus(ctx, report, plan.owner, previousId, 'disabled')
  }
  // The failing window, if any, runs from here (the disable) to the re-enable.
  const started = ctx.clock.now()
  progress.previousDisabled = true
  log.info(
    `Watching ${ctx.settings.smoke.checks.length} check(s) every ${Math.round(revocation.intervalMs / 1000)} s for ${Math.round(revocation.watchMs / 1000)} s with the previous token disabled`
  )
  const outcome = await watchChecks(ctx, proof.nextId, revocation.watchMs, revocation.intervalMs)
  if (!outcome.ok) {
    // Something still runs on the previous token: it serves again at once.
    await setTokenStatus(ctx, report, plan.owner, previousId, 'active')
    progress.previousDisabled = false
    const windowMs = ctx.clock.now() - started
    report.watch = {
      durationMs: windowMs,
      rounds: outcome.rounds,
      outcome: 'failed',
      failingWindowMs: windowMs,
      detail: outcome.failed.map(f => `${f.url} (${f.reason ?? f.status})`).join('; ')
    }
    await journal(ctx, report, {
      phase: 'revoking',
      revoke: { ...ctx.journal.record?.revoke, reenabled_at: new Date().toISOString() }
    })
    const confirm = await smokeAndProbe(ctx, { id: previousId }, undefined, 'smoke').then(
      () => 'the checks pass again',
      (error: unknown) => `the checks still fail (${errorMessage(error)})`
    )
    throw new RotationError(
      'revoke',
      `A check failed while the previous token ${previousId} was disabled: ${report.watch.detail}. Something still runs on it, so it was enabled again at once (the app failed for at most ${Math.ceil(windowMs / 1000)} s, from the disable to the re-enable); ${confirm}. Find the consumer that did not take the new secrets (an environment secret, a cached build, a target missing from secret-targets); contains={access-key-id} in smoke-urls catches a stale deploy before anything is disabled.`
    )
  }
  report.watch = {
    durationMs: ctx.clock.now() - started,
    rounds: outcome.rounds,
    outcome: 'passed'
  }
  log.info(
    `The watch passed: ${outcome.rounds} round(s) of checks with the previous token disabled`
  )
  if (!revocation.thenDelete) {
    report.revoked = 'disabled'
    log.info(
      `Left the previous token ${previousId} disabled; the next rotation deletes it if it is still disabled`
    )
    return [previousId]
  }
  await removeToken(ctx, plan.owner, { ...proof, watch: 'passed' }, report)
  return []
}

/** Tokens an earlier `revoke: disable` left: deleted if still disabled, left alone if enabled again. */
async function removeLeftovers(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  inUse: string[]
): Promise<void> {
  if (plan.disabledTokenIds.length === 0) return
  const { remove, reenabled } = decide.leftoverTokens(
    plan.disabledTokenIds,
    plan.ownerTokens,
    inUse
  )
  for (const id of reenabled) {
    warn(
      report,
      `Token ${id}, left disabled by an earlier rotation, is active again: someone enabled it on purpose, so it is left alone (delete it by hand when nothing uses it).`
    )
  }
  for (const id of remove) {
    const status = plan.ownerTokens.find(t => t.id === id)?.status
    await removeToken(ctx, plan.owner, { kind: 'leftover', tokenId: id, status, inUse })
  }
}

// ---------------------------------------------------------------- token operations

/** The one place a token is deleted: only when decide.mayDelete agrees. */
async function removeToken(
  ctx: RotationContext,
  owner: TokenOwner,
  request: decide.DeleteRequest,
  report?: RotationReport
): Promise<void> {
  const verdict = decide.mayDelete(request)
  if (!verdict.ok) {
    throw new RotationError(
      'revoke',
      `Refusing to delete token ${request.tokenId}: ${verdict.reason}.`
    )
  }
  const outcome = await ctx.tokens.delete(owner, request.tokenId)
  log.info(
    `Deleted token ${request.tokenId} (${request.kind}${outcome === 'not-found' ? ', already gone' : ''})`
  )
  if (report && request.kind === 'previous')
    report.revoked = outcome === 'deleted' ? 'deleted' : 'already-gone'
}

/** The one place a token is disabled or enabled: the whole token is sent back (a PUT replaces it). */
async function setTokenStatus(
  ctx: RotationContext,
  report: RotationReport,
  owner: TokenOwner,
  id: string,
  status: 'active' | 'disabled'
): Promise<void> {
  const token = await ctx.tokens.get(owner, id)
  if (token.status === status) return
  await ctx.tokens.setStatus(owner, token, status)
  log.info(`${status === 'disabled' ? 'Disabled' : 'Enabled'} token ${id}`)
}

async function reenableIfDisabled(
  ctx: RotationContext,
  report: RotationReport,
  owner: TokenOwner,
  id: string
): Promise<void> {
  const token = await ctx.tokens.get(owner, id)
  if (token.status === 'disabled') {
    await ctx.tokens.setStatus(owner, token, 'active')
    warn(
      report,
      `Enabled the previous token ${id} again before restoring it: an interrupted rotation had left it disabled.`
    )
  }
}

// ---------------------------------------------------------------- failure handling

async function handleFailure(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  cause: unknown
): Promise<void> {
  const decision = decide.afterFailure({
    settings: ctx.settings,
    ...(progress.next ? { next: progress.next } : {}),
    ...(progress.nextOrigin ? { nextOrigin: progress.nextOrigin } : {}),
    publishStarted: progress.publishStarted,
    previous: plan.currentCredentials,
    previousDisabled: progress.previousDisabled
  })
  switch (decision.kind) {
    case 'nothing':
      return
    case 'delete-unpublished':
      return cleanupUnpublished(ctx, report, plan, progress, decision.tokenId)
    case 'rollback':
      try {
        await phase(report, 'rollback', () =>
          retreat(ctx, report, plan, progress, decision.previous, decision.pendingId)
        )
        report.result = 'rolled-back'
        report.rollback = 'rolled-back'
        report.error += `\nRolled back: every target holds the previous token ${decision.previous.id} again, a deploy with it concluded success and the smoke checks passed; the new token ${decision.pendingId} was deleted.`
        return
      } catch (rollbackError) {
        report.error += `\nThe rollback failed too: ${errorMessage(rollbackError)}`
        return keepBoth(ctx, report, plan, progress, 'the rollback did not complete', cause)
      }
    case 'keep-both':
      return keepBoth(ctx, report, plan, progress, decision.why, cause)
  }
}

async function cleanupUnpublished(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  tokenId: string
): Promise<void> {
  try {
    await phase(report, 'cleanup', () =>
      removeToken(ctx, plan.owner, {
        kind: 'unpublished',
        tokenId,
        mintedByThisRun: progress.nextOrigin === 'minted',
        publishStarted: progress.publishStarted
      })
    )
    Object.assign(report, { tokenId: undefined, accessKeyId: undefined, expiresOn: undefined })
    // The journal said `minting`/`minted`; the rotation is over and nothing is left behind.
    if (ctx.journal.record && !decide.isSettled(ctx.journal.record.phase))
      await journal(ctx, report, { phase: 'rolled-back' })
  } catch (error) {
    report.error += `\nThe new token ${tokenId} could not be deleted (${errorMessage(error)}); it is in no secret, so delete it by hand.`
  }
}

async function keepBoth(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  why: string,
  cause: unknown
): Promise<void> {
  const failedPhase = cause instanceof RotationError ? cause.phase : undefined
  try {
    await journal(ctx, report, { phase: 'pending' })
  } catch (error) {
    report.error += `\nThe journal could not be written: ${errorMessage(error)}`
  }
  report.rollback = 'pending'
  const next = progress.next!
  report.error +=
    `\nState: both tokens are valid and neither was revoked (${why}). The new token ${next.id} was ` +
    `written to ${progress.writtenWithNext.size} secret(s); the previous token ${report.previousTokenId ?? plan.current.id} may still ` +
    `be in the others and in the deployed app. Fix the cause${failedPhase ? ` (phase ${failedPhase})` : ''} ` +
    `and run the rotation again: with current-token (or current-access-key-id and current-secret-access-key) ` +
    `read from the secrets as they are now, it finishes or undoes this rotation from the journal` +
    `${ctx.journal.enabled ? ` (${ctx.journal.name}, phase pending)` : ''}. By hand: put one token's values ` +
    `into every secret, deploy, then delete the other token.`
}

/**
 * Restores `previous` everywhere, redeploys, smoke-checks, then deletes `pendingId`, when
 * mayDelete agrees (every deploy run of this rotation has concluded: a run left running after a
 * timeout could still ship the new token, which must then stay valid). The outputs then describe
 * what is in service: the previous token and the rollback's deploy run.
 */
async function retreat(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress,
  previous: Credentials,
  pendingId: string
): Promise<void> {
  await journal(ctx, report, { phase: 'rolling-back' })
  log.info(`Restoring the previous token ${previous.id} in every target`)
  await publish(ctx, report, progress, previous)
  const deployBefore = progress.deployConcludedAt
  if (plan.deploy) await deploy(ctx, report, plan, progress)
  const checked = await smokeAndProbe(ctx, previous, plan.probe, 'rollback')
  report.smoke = checked.smoke
  const runs = [
    ...new Set([...(ctx.journal.record?.deploy_run_ids ?? []), ...progress.deployRunIds])
  ]
  const going: number[] = []
  for (const runId of runs) {
    const run = await getRun(ctx.github, plan.deploy?.repository ?? ctx.settings.repository, runId)
    if (run && run.status !== 'completed') going.push(runId)
  }
  await removeToken(ctx, plan.owner, {
    kind: 'rolled-back',
    tokenId: pendingId,
    previousId: previous.id,
    restoredEverywhere: true,
    deploy: plan.deploy
      ? progress.deployConcludedAt && progress.deployConcludedAt !== deployBefore
        ? 'success'
        : 'not-concluded'
      : 'none',
    smokePassed: true,
    runsGoing: going
  })
  Object.assign(report, {
    tokenId: previous.id,
    accessKeyId: previous.id,
    tokenName: plan.current.name,
    expiresOn: plan.current.expires_on ?? undefined
  })
  await journal(ctx, report, { phase: 'rolled-back', pending_token_id: pendingId })
}
