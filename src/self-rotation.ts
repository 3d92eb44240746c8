/**
 * The management token rotating itself (input `rotate-management-token`): a run mode of its own.
 *
 *   preflight (read-only) → lock → [recover] → mint the successor (with the management token) →
 *   verify it (as itself: verify, list the owner's tokens, its permission groups) → write it to
 *   the named secret in every target and read each write back → end the previous token (with
 *   the successor): a near-future `expires_on` (`revoke-grace`) or a delete
 *
 * The successor carries exactly the management token's policies and condition. The previous
 * token's policies are never changed: a PUT replaces them, and one without the token permission
 * would lock it out. Its journal is a variable of its own (`<state-variable>_MANAGEMENT`) with
 * `kind: management-token`; the lock is the token rotation's, so the two modes never overlap.
 * The next run may start with either value in the secret (the run was killed before, during or
 * after the write): with the successor it finishes forward, with the previous token it writes
 * that back and deletes the successor. Every delete is asked of decide.mayDelete first.
 */
import type {
  ApiToken,
  Credentials,
  GitHubTarget,
  JournalRecord,
  RotationReport,
  TokenOwner
} from './model.js'
import type { RotationContext } from './context.js'
import * as decide from './decide.js'
import { RotationError, errorMessage, failureText } from './errors.js'
import { log } from './log.js'
import { newReport, phase, skipNotDue, warn } from './report.js'
import { ModeJournal } from './journal.js'
import { claimLock, releaseLock } from './lock.js'
import { runState } from './preflight.js'
import { CloudflareApiError, TOKEN_QUOTA, TokenApi, samePolicies } from './cloudflare/tokens.js'
import {
  MANAGEMENT_PERMISSION,
  requireManagementPermission,
  verifyManagementToken
} from './cloudflare/management.js'
import { describeTarget } from './github/secrets.js'
import { confirmsWrite, readSecretStamp } from './github/secret-stamp.js'
import { expandTokenName, TOKEN_NAME_MAX_LENGTH } from './token-name.js'
import { checkCopy, mintCopy, newProgress, record as journal, verifyToken } from './steps.js'

/** The journal of self-rotations: the token rotation's name with this suffix. */
export const MANAGEMENT_JOURNAL_SUFFIX = '_MANAGEMENT'

interface SelfPlan {
  owner: TokenOwner
  /** The management token, as it reads itself. */
  current: ApiToken
  ownerTokens: ApiToken[]
  newName: string
  expiresOn?: string
  due: decide.Due
  recovery?: decide.ManagementRecovery
}

/** What the run has changed so far. */
interface SelfProgress {
  next?: Credentials
  nextOrigin?: 'minted' | 'recovered'
  /** The successor authenticated as itself (once it is known to work). */
  nextApi?: TokenApi
  nextVerified: boolean
  /** Set before the first write of the successor: from then on it may be in a secret. */
  publishStarted: boolean
  /** Every target holds the successor, read back. */
  confirmedEverywhere: boolean
}

export async function rotateManagementToken(base: RotationContext): Promise<RotationReport> {
  const { settings } = base
  const ctx: RotationContext = {
    ...base,
    journal: new ModeJournal(base.github, settings, MANAGEMENT_JOURNAL_SUFFIX)
  }
  const report = newReport(settings.secretTargets.map(describeTarget))
  report.subject = 'management-token'
  const progress: SelfProgress = {
    nextVerified: false,
    publishStarted: false,
    confirmedEverywhere: false
  }
  let plan: SelfPlan | undefined
  let locked = false
  try {
    plan = await phase(report, 'preflight', () => preflightSelf(ctx, report))
    const p = plan
    if (settings.dryRun) {
      report.result = 'dry-run'
      for (const line of report.plan) log.info(`plan: ${line}`)
      return report
    }
    if (!p.recovery && !p.due.due) return skip(report, p)
    locked = await claimLock(ctx)
    if (p.recovery && (await phase(report, 'recover', () => recover(ctx, report, p, progress)))) {
      report.result = 'rotated'
      return report
    }
    if (!p.due.due) return skip(report, p)
    await phase(report, 'mint', () => mint(ctx, report, p, progress))
    await phase(report, 'verify', () => verifySuccessor(ctx, p.owner, progress))
    await advance(ctx, report, p, progress, p.current.id, true)
    report.result = 'rotated'
    return report
  } catch (error) {
    report.result = 'failed'
    report.error = failureText(error)
    if (plan) await handleFailure(ctx, report, plan, progress)
    return report
  } finally {
    if (locked) await releaseLock(ctx, report)
  }
}

function skip(report: RotationReport, plan: SelfPlan): RotationReport {
  return skipNotDue(report, `The management token ${plan.current.id}`, plan.due)
}

// ---------------------------------------------------------------- preflight

async function preflightSelf(ctx: RotationContext, report: RotationReport): Promise<SelfPlan> {
  const { settings, tokens } = ctx
  const journalRead = ctx.journal.read()
  journalRead.catch(() => undefined)
  const management = await verifyManagementToken(
    tokens,
    settings.cloudflareApiToken,
    settings.accountId
  )
  const { owner } = management
  report.owner = owner.kind
  const current = await readItself(tokens, owner, management.id)
  const groups = await tokens.permissionGroups(owner)
  requireManagementPermission(
    { ...management, policies: current.policies },
    owner,
    new Map(groups.map(g => [g.id, g.name]))
  )
  Object.assign(report, { previousTokenId: current.id, previousTokenName: current.name })
  log.info(`Management token: ${current.id} "${current.name}" (${owner.kind}-owned)`)
  const ownerTokens = await tokens.list(owner)
  const recovery = await recoveryOf(ctx, report, await journalRead, current.id, ownerTokens)
  const now = tokens.rate.serverNow() ?? new Date()
  const refused = decide.managementRefusals({
    token: current,
    owner,
    ownerTokens,
    deletingFirst: recovery?.kind === 'delete-unpublished' ? recovery.tokenIds : [],
    quota: TOKEN_QUOTA[owner.kind],
    now
  })
  if (refused.length > 0) throw new RotationError('preflight', refused.join('\n'))
  await ctx.secrets.preflightAll(settings.secretTargets, [settings.rotateManagementToken!])
  const plan: SelfPlan = {
    owner,
    current,
    ownerTokens,
    ...nameAndExpiry(ctx, report, current, ownerTokens, now),
    due: decide.decideDue(settings, current, now),
    ...(recovery ? { recovery } : {})
  }
  const budget = decide.budgetRefusal({
    ...(tokens.rate.remaining !== undefined ? { remaining: tokens.rate.remaining } : {})
  })
  if (budget) throw new RotationError('preflight', budget)
  report.plan = describePlan(ctx, plan)
  return plan
}

/** The management token's own details: it must read them to copy them into its successor. */
async function readItself(tokens: TokenApi, owner: TokenOwner, id: string): Promise<ApiToken> {
  try {
    return await tokens.get(owner, id)
  } catch (error) {
    if (!(error instanceof CloudflareApiError) || (error.status !== 403 && error.status !== 404))
      throw error
    throw new RotationError(
      'preflight',
      `The management token (cloudflare-api-token) ${id} cannot read its own details (HTTP ${error.status}). rotate-management-token copies its policies and condition into its successor, so the token needs '${MANAGEMENT_PERMISSION[owner.kind]}' on the ${owner.kind === 'user' ? 'user' : `account ${owner.accountId}`} it belongs to. Nothing was changed.`
    )
  }
}

async function recoveryOf(
  ctx: RotationContext,
  report: RotationReport,
  record: JournalRecord | undefined,
  managementId: string,
  ownerTokens: ApiToken[]
): Promise<decide.ManagementRecovery | undefined> {
  if (!record || decide.isSettled(record.phase)) return undefined
  if (record.kind !== 'management-token') {
    throw new RotationError(
      'preflight',
      `The variable ${ctx.journal.name} is not a journal of the management token's rotation. Delete it or choose another state-variable.`
    )
  }
  const recovery = decide.decideManagementRecovery({
    record,
    journalRun: await runState(ctx, record.run_id),
    managementId,
    ownerTokens
  })
  if (recovery.kind === 'refuse') throw new RotationError('preflight', recovery.message)
  report.recovery = decide.describeManagementRecovery(recovery)
  warn(
    report,
    `Unfinished rotation of the management token from run ${record.run_id} (phase ${record.phase}): ${report.recovery}`
  )
  return recovery
}

function nameAndExpiry(
  ctx: RotationContext,
  report: RotationReport,
  current: ApiToken,
  ownerTokens: ApiToken[],
  now: Date
): { newName: string; expiresOn?: string } {
  const { settings } = ctx
  const expanded = expandTokenName(settings.tokenName, {
    oldName: current.name,
    now,
    runId: settings.runId,
    repository: `${settings.repository.owner}/${settings.repository.repo}`
  })
  const newName = decide.uniqueTokenName(
    expanded,
    ownerTokens.filter(t => t.id !== current.id).map(t => t.name),
    { id: settings.runId, attempt: settings.runAttempt },
    TOKEN_NAME_MAX_LENGTH
  )
  const expiresOn = decide.newExpiry(settings, current, now)
  for (const warning of decide.expiryWarnings(settings, current, expiresOn, now)) {
    warn(report, warning.replace('The current token', 'The management token'))
  }
  return { newName, ...(expiresOn ? { expiresOn } : {}) }
}

function describePlan(ctx: RotationContext, plan: SelfPlan): string[] {
  const { settings } = ctx
  const { current } = plan
  const lines: string[] = []
  if (plan.recovery)
    lines.push(`recover first: ${decide.describeManagementRecovery(plan.recovery)}`)
  lines.push(
    `mint "${plan.newName}" as a copy of the management token ${current.id} (${current.policies.length} polic${current.policies.length === 1 ? 'y' : 'ies'}, ${current.condition ? 'with' : 'no'} condition), ${plan.expiresOn ? `expiring ${plan.expiresOn}` : 'no expiry'}`,
    'verify it as itself: verify, list the tokens, read the permission groups',
    `write it to ${settings.rotateManagementToken} in ${settings.secretTargets.map(describeTarget).join('; ')} and read each write back`,
    settings.revokeGraceMs > 0
      ? `give ${current.id} an expiry ${Math.round(settings.revokeGraceMs / 1000)} s from then (revoke-grace), its policies unchanged`
      : `delete ${current.id}`
  )
  if (!plan.due.due) {
    lines.push(`(not due before ${decide.isoSeconds(plan.due.dueAt)}: the run would skip)`)
  }
  return lines
}

// ---------------------------------------------------------------- recover

/** Returns true when it completed the unfinished rotation, false when a fresh one may follow. */
async function recover(
  ctx: RotationContext,
  report: RotationReport,
  plan: SelfPlan,
  progress: SelfProgress
): Promise<boolean> {
  const recovery = plan.recovery!
  switch (recovery.kind) {
    case 'refuse':
      throw new RotationError('recover', recovery.message)
    case 'stuck':
      throw new RotationError(
        'recover',
        `An earlier rotation of the management token (run ${recovery.record.run_id}) stopped in phase ${recovery.record.phase} and ${recovery.reason}. Nothing was changed.`
      )
    case 'delete-unpublished':
      for (const id of recovery.tokenIds) {
        await removeToken(ctx.tokens, plan.owner, {
          kind: 'orphan',
          tokenId: id,
          name: plan.ownerTokens.find(t => t.id === id)?.name ?? '',
          ...(recovery.record.pending_token_name
            ? { journalName: recovery.record.pending_token_name }
            : {}),
          ...(recovery.record.pending_token_id
            ? { journalPendingId: recovery.record.pending_token_id }
            : {}),
          ...(recovery.record.previous_token_id
            ? { previousId: recovery.record.previous_token_id }
            : {}),
          knownIds: [plan.current.id]
        })
      }
      await journal(ctx, report, { phase: 'rolled-back' })
      return false
    case 'restore':
      await restore(ctx, report, plan, recovery.previousId, recovery.pendingId)
      return false
    case 'forward':
      progress.next = { id: recovery.nextId, value: ctx.settings.cloudflareApiToken }
      progress.nextOrigin = 'recovered'
      Object.assign(report, {
        tokenId: recovery.nextId,
        tokenName: plan.current.name,
        previousTokenId: recovery.previousId,
        expiresOn: plan.current.expires_on ?? undefined
      })
      await verifySuccessor(ctx, plan.owner, progress)
      await advance(ctx, report, plan, progress, recovery.previousId, recovery.republish)
      return true
  }
}

// ---------------------------------------------------------------- mint and verify

async function mint(
  ctx: RotationContext,
  report: RotationReport,
  plan: SelfPlan,
  progress: SelfProgress
): Promise<void> {
  await journal(ctx, report, {
    phase: 'minting',
    kind: 'management-token',
    previous_token_id: plan.current.id,
    pending_token_id: undefined,
    pending_token_name: plan.newName,
    token_owner: plan.owner.kind === 'user' ? 'user' : { account_id: plan.owner.accountId },
    deploy_run_ids: [],
    disabled_token_ids: [],
    revoke: undefined,
    started_at: new Date().toISOString()
  })
  const steps = newProgress()
  const next = await mintCopy(ctx, report, steps, plan, orphan =>
    removeToken(ctx.tokens, plan.owner, {
      kind: 'orphan',
      tokenId: orphan.id,
      name: orphan.name,
      journalName: plan.newName,
      previousId: plan.current.id,
      knownIds: []
    })
  )
  // A management token has no R2 credentials.
  delete report.accessKeyId
  progress.next = next
  progress.nextOrigin = 'minted'
  await journal(ctx, report, { phase: 'minted', pending_token_id: next.id })
  await checkCopy(ctx, plan, next.id)
}

/**
 * The successor works as a management token: it verifies as itself (retried while it
 * propagates), and, authenticated as itself, lists the owner's tokens and reads the permission
 * groups; its policies grant the token permission. A throwaway create is not made.
 */
async function verifySuccessor(
  ctx: RotationContext,
  owner: TokenOwner,
  progress: SelfProgress
): Promise<void> {
  const next = progress.next!
  await verifyToken(ctx, owner, next)
  const api =
    next.value === ctx.settings.cloudflareApiToken
      ? ctx.tokens
      : new TokenApi({
          apiToken: next.value!,
          baseURL: ctx.settings.cloudflareApiUrl,
          clock: ctx.clock
        })
  const tokens = await api.list(owner)
  const groups = await api.permissionGroups(owner)
  const itself = tokens.find(t => t.id === next.id) ?? (await api.get(owner, next.id))
  requireManagementPermission(
    { id: next.id, owner, policies: itself.policies },
    owner,
    new Map(groups.map(g => [g.id, g.name]))
  )
  progress.nextApi = api
  progress.nextVerified = true
  log.info(
    `The successor ${next.id} reads the ${owner.kind}-owned tokens and permission groups as itself`
  )
}

// ---------------------------------------------------------------- publish and end

/**
 * Writes the successor into every target (unless an earlier run confirmed that already), then
 * ends `previousId` with the successor: an expiry `revoke-grace` from now, or a delete.
 */
async function advance(
  ctx: RotationContext,
  report: RotationReport,
  plan: SelfPlan,
  progress: SelfProgress,
  previousId: string,
  publishNow: boolean
): Promise<void> {
  const next = progress.next!
  if (publishNow) {
    await journal(ctx, report, { phase: 'publishing' })
    progress.publishStarted = true
    await phase(report, 'publish', () => writeEverywhere(ctx, report, next))
    await journal(ctx, report, { phase: 'published' })
  } else {
    progress.publishStarted = true
  }
  progress.confirmedEverywhere = true
  await journal(ctx, report, { phase: 'revoking' })
  await phase(report, 'revoke', () => endPrevious(ctx, report, plan.owner, progress, previousId))
  await journal(ctx, report, { phase: 'done' })
}

/** Writes `credentials`' value to the named secret in every target and reads each write back. */
async function writeEverywhere(
  ctx: RotationContext,
  report: RotationReport,
  credentials: Credentials
): Promise<void> {
  const name = ctx.settings.rotateManagementToken!
  // Settings refuse worker: lines in this mode.
  const targets = ctx.settings.secretTargets.filter((t): t is GitHubTarget => t.kind !== 'worker')
  for (const [i, target] of targets.entries()) {
    await writeConfirmed(ctx, target, name, credentials)
    const key = `${describeTarget(target)} ${name}`
    if (!report.secretsWritten.includes(key)) report.secretsWritten.push(key)
    log.info(
      `[${i + 1}/${targets.length}] ${target.line} ${name} (token ${credentials.id}, read back)`
    )
  }
}

async function writeConfirmed(
  ctx: RotationContext,
  target: GitHubTarget,
  name: string,
  credentials: Credentials
): Promise<void> {
  const before = await readSecretStamp(ctx.github, target, name)
  await ctx.secrets.write(target, name, credentials.value!)
  const after = await readSecretStamp(ctx.github, target, name)
  if (!confirmsWrite(before, after)) {
    throw new RotationError(
      'publish',
      `secret-targets line '${target.line}' (${describeTarget(target)}): secret ${name} was written but reading it back does not show the write (updated_at ${after.updatedAt ?? 'missing'}).`
    )
  }
}

/** Ends the previous management token with the successor, as revoke-grace says. */
async function endPrevious(
  ctx: RotationContext,
  report: RotationReport,
  owner: TokenOwner,
  progress: SelfProgress,
  previousId: string
): Promise<void> {
  const api = progress.nextApi!
  const previous = await api.get(owner, previousId).catch((error: unknown) => {
    if (error instanceof CloudflareApiError && error.status === 404) return undefined
    throw error
  })
  const now = api.rate.serverNow() ?? new Date()
  const end = decide.decideManagementEnd(ctx.settings.revokeGraceMs, previous, now)
  switch (end.kind) {
    case 'gone':
      report.revoked = 'already-gone'
      log.info(`The previous management token ${previousId} is gone already`)
      return
    case 'ending':
      report.revoked = 'expiring'
      log.info(`The previous management token ${previousId} expires on ${end.expiresOn}`)
      return
    case 'delete':
      await removeToken(api, owner, {
        kind: 'management-previous',
        tokenId: previousId,
        nextId: progress.next!.id,
        nextVerified: progress.nextVerified,
        confirmedEverywhere: progress.confirmedEverywhere
      })
      report.revoked = 'deleted'
      return
    case 'expire': {
      const updated = await api.setExpiry(owner, previous!, end.expiresOn)
      if (!samePolicies(updated.policies, previous!.policies)) {
        throw new RotationError(
          'revoke',
          `Cloudflare answered the expiry update of ${previousId} with other policies than it had. Check the token in the dashboard.`
        )
      }
      report.revoked = 'expiring'
      log.info(
        `The previous management token ${previousId} expires on ${end.expiresOn} (revoke-grace); its policies are unchanged`
      )
    }
  }
}

// ---------------------------------------------------------------- failures

async function handleFailure(
  ctx: RotationContext,
  report: RotationReport,
  plan: SelfPlan,
  progress: SelfProgress
): Promise<void> {
  const next = progress.next
  if (!next) return
  if (progress.confirmedEverywhere) {
    report.error += `\nThe successor ${next.id} is in every target; the previous management token ${report.previousTokenId} was not ended yet. The next run, with the value the secret holds now, ends it.`
    return
  }
  try {
    if (!progress.publishStarted && progress.nextOrigin === 'minted') {
      await phase(report, 'cleanup', () =>
        removeToken(ctx.tokens, plan.owner, {
          kind: 'unpublished',
          tokenId: next.id,
          mintedByThisRun: true,
          publishStarted: false
        })
      )
      Object.assign(report, { tokenId: undefined, expiresOn: undefined })
      await journal(ctx, report, { phase: 'rolled-back' })
      return
    }
    if (progress.nextOrigin !== 'minted') return
    await phase(report, 'rollback', () => restore(ctx, report, plan, plan.current.id, next.id))
    report.result = 'rolled-back'
    report.rollback = 'rolled-back'
    report.error += `\nRolled back: every target holds the management token ${plan.current.id} again (read back), and the successor ${next.id} was deleted.`
  } catch (error) {
    report.rollback = 'pending'
    await journal(ctx, report, { phase: 'pending' }).catch(() => undefined)
    report.error += `\nThe clean-up failed too (${errorMessage(error)}). Both management tokens are valid; the next run, with the value the secret ${ctx.settings.rotateManagementToken} holds then, finishes or undoes the rotation.`
  }
}

/**
 * Writes the previous management token (this run's own value) back into every target, reads each
 * write back, then deletes the successor `pendingId` when mayDelete agrees.
 */
async function restore(
  ctx: RotationContext,
  report: RotationReport,
  plan: SelfPlan,
  previousId: string,
  pendingId: string
): Promise<void> {
  await journal(ctx, report, { phase: 'rolling-back' })
  log.info(`Writing the management token ${previousId} back into every target`)
  await writeEverywhere(ctx, report, { id: previousId, value: ctx.settings.cloudflareApiToken })
  await removeToken(ctx.tokens, plan.owner, {
    kind: 'management-pending',
    tokenId: pendingId,
    previousId,
    servingId: plan.current.id,
    restoredEverywhere: true
  })
  await journal(ctx, report, { phase: 'rolled-back' })
}

/** Deletes a token when decide.mayDelete agrees; a 404 counts as done. */
async function removeToken(
  api: TokenApi,
  owner: TokenOwner,
  request: decide.DeleteRequest
): Promise<void> {
  const verdict = decide.mayDelete(request)
  if (!verdict.ok) {
    throw new RotationError(
      'revoke',
      `Refusing to delete token ${request.tokenId}: ${verdict.reason}.`
    )
  }
  const outcome = await api.delete(owner, request.tokenId)
  log.info(
    `Deleted token ${request.tokenId} (${request.kind}${outcome === 'not-found' ? ', already gone' : ''})`
  )
}
