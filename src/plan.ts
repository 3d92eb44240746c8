/**
 * The preflight phase: every read (preflight.ts) and every decision on it (decide.ts) that comes
 * before a change, turned into the plan the executor carries out. Read-only: a refusal here
 * leaves the world as it was.
 */
import type {
  ApiToken,
  Credentials,
  RotationReport,
  TokenOwner,
  TokenScope,
  WorkerTarget
} from './model.js'
import type { RotationContext } from './context.js'
import * as decide from './decide.js'
import { RotationError } from './errors.js'
import { log } from './log.js'
import { warn } from './report.js'
import { TOKEN_QUOTA } from './cloudflare/tokens.js'
import {
  MANAGEMENT_PERMISSION,
  requireManagementPermission,
  requireWorkersPermission
} from './cloudflare/management.js'
import { accountIdFromPolicies, classifyScope, r2Endpoint } from './cloudflare/r2.js'
import { tokenExpirationOf } from './github/client.js'
import { describeTarget } from './github/secrets.js'
import { expandTokenName, TOKEN_NAME_MAX_LENGTH } from './token-name.js'
import {
  type CloudflareFacts,
  readBaseline,
  readCloudflare,
  readDeploy,
  readTargets
} from './preflight.js'
import type { DeployTarget, ProbeTarget } from './steps.js'

export interface Plan {
  owner: TokenOwner
  /** The token in service now (after a restore: the previous token of the unfinished rotation). */
  current: ApiToken
  /** What the inputs tell of its values. */
  currentCredentials: Credentials
  /** The token this run revokes and what the inputs tell of it (a rollback restores it). */
  previous: Credentials
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

export async function preflight(ctx: RotationContext, report: RotationReport): Promise<Plan> {
  const cf = await readCloudflare(ctx)
  const now = ctx.tokens.rate.serverNow() ?? new Date()
  log.info(`Management token: ${cf.management.id} (${cf.management.owner.kind}-owned)`)
  report.owner = cf.owner.kind
  const recovery = recoveryOf(ctx, report, cf)
  const serving = decide.serving(recovery, cf.resolved.id, cf.known)
  const current =
    cf.ownerTokens.find(t => t.id === serving.currentId) ??
    (await ctx.tokens.get(cf.owner, serving.currentId))
  report.previousTokenId = serving.previous.id
  report.previousTokenName = current.name
  log.info(
    `Current token: ${current.id} "${current.name}" (${cf.owner.kind}-owned, ${current.status})`
  )
  const scope = checkToken(ctx, report, cf, current, recovery, now)
  const probe = planProbe(ctx, report, scope, cf.owner, current)
  checkCondition(report, cf, current, probe)
  requireWorkersPermission(cf.management, workerTargets(ctx), cf.groupNames)
  await readTargets(ctx)
  const deploy = await preflightDeploy(ctx, report)
  await preflightBaseline(ctx, serving.candidates, current, serving.credentials, probe)
  const plan: Plan = {
    owner: cf.owner,
    current,
    currentCredentials: serving.credentials,
    previous: serving.previous,
    scope,
    ...(probe ? { probe } : {}),
    ...(deploy ? { deploy } : {}),
    ...nameAndExpiry(ctx, report, cf, current, now),
    due: decide.decideDue(ctx.settings, current, now),
    ...(recovery ? { recovery } : {}),
    disabledTokenIds: cf.journal?.disabled_token_ids ?? [],
    ownerTokens: cf.ownerTokens
  }
  // Last, after preflight's own reads spent their share of the budget.
  const budget = decide.budgetRefusal(rateFacts(ctx))
  if (budget) throw new RotationError('preflight', budget)
  report.plan = describePlan(ctx, plan)
  return plan
}

function workerTargets(ctx: RotationContext): WorkerTarget[] {
  return ctx.settings.secretTargets.filter((t): t is WorkerTarget => t.kind === 'worker')
}

/** What to do about an unfinished rotation the journal names, if any. */
function recoveryOf(
  ctx: RotationContext,
  report: RotationReport,
  cf: CloudflareFacts
): decide.Recovery | undefined {
  if (!cf.journal || decide.isSettled(cf.journal.phase)) return undefined
  const recovery = decide.decideRecovery({
    record: cf.journal,
    journalRun: cf.journalRun,
    ...(cf.journalRunDetail ? { journalRunDetail: cf.journalRunDetail } : {}),
    known: cf.known,
    fields: ctx.settings.secrets.map(s => s.field),
    ownerTokens: cf.ownerTokens
  })
  if (recovery.kind === 'refuse') throw new RotationError('preflight', recovery.message)
  report.recovery = decide.describeRecovery(recovery)
  warn(
    report,
    `Unfinished rotation from run ${recovery.record.run_id} (phase ${recovery.record.phase}): ${report.recovery}`
  )
  return recovery
}

/**
 * The management token may manage this token; the token's scope and its least-privilege
 * findings; every refusal (inputs naming two tokens, an inactive token, the management token
 * itself, `enforce`, the quota, an expired management token); the management token's expiry.
 */
function checkToken(
  ctx: RotationContext,
  report: RotationReport,
  cf: CloudflareFacts,
  current: ApiToken,
  recovery: decide.Recovery | undefined,
  now: Date
): TokenScope {
  const { settings } = ctx
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
  const refused = decide.refusals({
    owner: cf.owner,
    current,
    managementId: cf.management.id,
    ...(cf.management.expiresOn ? { managementExpiresOn: cf.management.expiresOn } : {}),
    ...(report.previousTokenId !== current.id ? { previousId: report.previousTokenId } : {}),
    ownerTokens: cf.ownerTokens,
    deletingFirst: recovery?.kind === 'delete-unpublished' ? recovery.tokenIds : [],
    ...(cf.inputsMismatch ? { inputsMismatch: cf.inputsMismatch } : {}),
    recoveringPublished: recovery !== undefined && recovery.kind !== 'delete-unpublished',
    leastPrivilege: settings.leastPrivilege,
    scopeWarnings: scope.warnings,
    now,
    quota: TOKEN_QUOTA[cf.owner.kind],
    managementPermission: MANAGEMENT_PERMISSION[cf.owner.kind]
  })
  if (refused.length > 0) throw new RotationError('preflight', refused.join('\n'))
  const expires = cf.management.expiresOn
  if (expires && Date.parse(expires) - now.getTime() < decide.MANAGEMENT_EXPIRY_WARNING_MS) {
    warn(
      report,
      `The management token (cloudflare-api-token) ${cf.management.id} expires on ${expires}. Create its successor before then (${decide.MANAGEMENT_RENEWAL}) and update the secret it comes from, or rotations stop and the rotated token is never renewed.`
    )
  }
  // GitHub has answered by now (the journal read): its expiry header, if it sent one.
  const github = decide.githubTokenExpiry(tokenExpirationOf(ctx.github), now)
  if (github?.kind === 'refuse') throw new RotationError('preflight', github.message)
  if (github) warn(report, github.message)
  return scope
}

/**
 * The current token's IP condition: what it means for this run (log and summary), and the
 * refusal when this runner cannot use the token but the run would have to.
 */
function checkCondition(
  report: RotationReport,
  cf: CloudflareFacts,
  current: ApiToken,
  probe: ProbeTarget | undefined
): void {
  if (cf.refusedFrom !== undefined) {
    const refusal = decide.locationRefusal({
      tokenId: current.id,
      condition: current.condition,
      refusedFrom: cf.refusedFrom,
      needsVerify: false,
      probePlanned: probe !== undefined
    })
    if (refusal) throw new RotationError('preflight', refusal)
  }
  const note = decide.conditionNote({
    condition: current.condition,
    ...(cf.refusedFrom !== undefined ? { refusedFrom: cf.refusedFrom } : {}),
    probe: probe !== undefined
  })
  if (!note) return
  report.condition = decide.describeCondition(current.condition)
  log.info(note)
}

/** The new token's name (unique among the owner's other tokens) and expiry. */
function nameAndExpiry(
  ctx: RotationContext,
  report: RotationReport,
  cf: CloudflareFacts,
  current: ApiToken,
  now: Date
): { newName: string; expiresOn?: string } {
  const { settings } = ctx
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
  for (const warning of decide.expiryWarnings(settings, current, expiresOn, now)) {
    warn(report, warning)
  }
  return { newName, ...(expiresOn ? { expiresOn } : {}) }
}

/** Cloudflare's budget as its last answer told it, with the reset on the wall clock. */
function rateFacts(ctx: RotationContext): { remaining?: number; resetAt?: Date } {
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

/** The deploy workflow, and no secret the deploy would read in place of those written. */
export async function preflightDeploy(
  ctx: RotationContext,
  report: RotationReport
): Promise<DeployTarget | undefined> {
  const { settings } = ctx
  const facts = await readDeploy(ctx)
  if (!facts || !settings.deploy) {
    log.info('Deploy: none (deploy-workflow: none); consumers read the secrets when they start')
    return undefined
  }
  const repository = settings.deploy.repository
  const refusal = decide.shadowRefusal(
    decide.shadowsOf({ ...facts, repository }, settings.secretTargets)
  )
  if (refusal) throw new RotationError('preflight', refusal)
  for (const env of facts.computedEnvironments) {
    warn(
      report,
      `The deploy job '${env.job}' runs in environment ${env.expression}, computed at run time: the action cannot check that environment for secrets that shadow the ones it writes.`
    )
  }
  log.info(`Deploy workflow: ${facts.workflow.name} (${facts.workflow.path}) on ${facts.ref}`)
  return {
    repository,
    workflow: facts.workflow,
    ref: facts.ref,
    inputs: settings.deploy.inputs,
    timeoutMs: settings.deploy.timeoutMs
  }
}

/** The app is healthy with the credentials in service now, before anything changes. */
async function preflightBaseline(
  ctx: RotationContext,
  servingIds: string[],
  current: ApiToken,
  credentials: Credentials,
  probe: ProbeTarget | undefined
): Promise<void> {
  const baseline = await readBaseline(
    ctx,
    servingIds,
    probe ? { ...probe, credentials } : undefined
  )
  const refusal = decide.baselineRefusal(
    baseline.smoke,
    baseline.probe,
    current.id,
    current.condition
  )
  if (refusal) throw new RotationError('preflight', refusal)
  if (baseline.smoke.length > 0) {
    log.info(
      `Baseline: ${baseline.smoke.length} smoke check(s) pass with the credentials in use now`
    )
  }
}

function describePlan(ctx: RotationContext, plan: Plan): string[] {
  const { settings } = ctx
  const lines: string[] = []
  if (plan.recovery) lines.push(`recover first: ${decide.describeRecovery(plan.recovery)}`)
  const { current } = plan
  const revocation = decide.decideRevocation(settings, settings.smoke.checks.length)
  const policies = `${current.policies.length} polic${current.policies.length === 1 ? 'y' : 'ies'}`
  lines.push(
    `mint "${plan.newName}" as a copy of ${current.id} (${policies}, ${current.condition ? 'with' : 'no'} condition), ${plan.expiresOn ? `expiring ${plan.expiresOn}` : 'no expiry'}`,
    `verify it${plan.probe ? ` and probe bucket ${plan.probe.plan.bucket} (${plan.probe.plan.mode})` : ''}`,
    `write ${settings.secrets.map(s => `${s.name}=${s.field}`).join(', ')} to ${settings.secretTargets.map(t => (t.kind === 'worker' ? `${describeTarget(t)} (one secrets-bulk patch: a new version, deployed at once)` : describeTarget(t))).join('; ')}`,
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
  if (!plan.due.due) {
    lines.push(`(not due before ${decide.isoSeconds(plan.due.dueAt)}: the run would skip)`)
  }
  return lines
}
