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
 * This is the only module that deletes, disables or enables a rotated token, and each delete is
 * asked of decide.mayDelete first (`removeToken`). The management token's own rotation
 * (self-rotation.ts) ends its previous token likewise, through mayDelete.
 */
import type { Credentials, RotationReport, TokenOwner } from './model.js'
import type { RotationContext } from './context.js'
import * as decide from './decide.js'
import { RotationError, errorMessage, failureText } from './errors.js'
import { log, mask, maskToken } from './log.js'
import { newReport, phase, skipNotDue, warn } from './report.js'
import { describeTarget } from './github/secrets.js'
import { type Plan, preflight } from './plan.js'
import { claimLock, releaseLock } from './lock.js'
import {
  type Progress,
  checkCopy,
  deploy,
  gatherEvidence,
  mintCopy,
  newProgress,
  notePreviousUse,
  probeR2,
  publish,
  record as journal,
  runsStillGoing,
  smokeAndProbe,
  verifyToken,
  watchChecks
} from './steps.js'

export type { RotationReport } from './model.js'

export async function rotate(ctx: RotationContext): Promise<RotationReport> {
  const { settings } = ctx
  const report = newReport(ctx.settings.secretTargets.map(describeTarget))
  let progress: Progress = newProgress()
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
    // The earlier rotation is over (restored, or its unpublished token deleted). This run's own
    // starts from nothing: a restore's secret writes were of the previous values, and must not
    // count as a publish of the token minted next (its failure would roll back, not delete it).
    progress = newProgress()
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
    report.error = failureText(error)
    if (plan) await handleFailure(ctx, report, plan, progress, error)
    return report
  } finally {
    if (locked) await releaseLock(ctx, report)
  }
}

function skip(report: RotationReport, plan: Plan): RotationReport {
  return skipNotDue(report, `Token ${plan.current.id}`, plan.due)
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
            ...(recovery.record.pending_token_id
              ? { journalPendingId: recovery.record.pending_token_id }
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
        await retreat(ctx, report, plan, progress, recovery.previous, recovery.pendingId)
        return false
    }
  })
}

// ---------------------------------------------------------------- mint

/**
 * Mints the copy (steps.mintCopy): the name recorded first, never created twice blindly. After a
 * create with no clear answer, the tokens it may have minted (found by their unique name) are
 * deleted here, through mayDelete, before one more create.
 */
async function mint(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: Progress
): Promise<Credentials> {
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
  const next = await mintCopy(ctx, report, progress, plan, orphan =>
    removeToken(ctx, plan.owner, {
      kind: 'orphan',
      tokenId: orphan.id,
      name: orphan.name,
      journalName: plan.newName,
      previousId: plan.current.id,
      knownIds: []
    })
  )
  await journal(ctx, report, { phase: 'minted', pending_token_id: next.id })
  await checkCopy(ctx, plan, next.id)
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
      const target = plan.deploy
      await phase(report, 'deploy', () => deploy(ctx, report, target, progress))
    }
    await notePreviousUse(ctx, plan.owner, progress, previousId)
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
    await gatherEvidence(ctx, report, plan.owner, progress, {
      previousId,
      deployed: plan.deploy !== undefined,
      probed: plan.probe !== undefined
    })
  }
  await journal(ctx, report, { phase: 'revoking' })
  const disabled = await phase(report, 'revoke', () =>
    revoke(ctx, report, plan, progress, previousId, from)
  )
  await journal(ctx, report, { phase: 'done', disabled_token_ids: disabled })
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
  // The failing window, if any, runs from the disable (taken before it is sent: it may take
  // effect before its answer arrives) to the re-enable's answer, so that the report is a bound.
  const started = ctx.clock.now()
  if (!alreadyDisabled) {
    // Recorded first: a token active again under a journal that says it was disabled was enabled
    // after a failed check, and the next run must not disable it blindly once more.
    await journal(ctx, report, {
      phase: 'revoking',
      revoke: { disabled_at: new Date().toISOString() }
    })
    await setTokenStatus(ctx, report, plan.owner, previousId, 'disabled')
  }
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
    const recovered = await smokeAndProbe(ctx, { id: previousId }, undefined, 'smoke').then(
      () => undefined,
      (error: unknown) => errorMessage(error)
    )
    throw new RotationError(
      'revoke',
      decide.watchFailureMessage(previousId, report.watch.detail!, windowMs, recovered)
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
    previous: plan.previous,
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
  try {
    await journal(ctx, report, { phase: 'pending' })
  } catch (error) {
    report.error += `\nThe journal could not be written: ${errorMessage(error)}`
  }
  report.rollback = 'pending'
  const message = decide.pendingMessage({
    why,
    nextId: progress.next!.id,
    previousId: report.previousTokenId ?? plan.current.id,
    writtenWithNext: progress.writtenWithNext.size,
    ...(cause instanceof RotationError ? { failedPhase: cause.phase } : {}),
    ...(ctx.journal.name ? { journal: ctx.journal.name } : {})
  })
  report.error += `\n${message}`
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
  if (plan.deploy) await deploy(ctx, report, plan.deploy, progress)
  const checked = await smokeAndProbe(ctx, previous, plan.probe, 'rollback')
  report.smoke = checked.smoke
  const going = await runsStillGoing(ctx, plan.deploy?.repository, progress)
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
