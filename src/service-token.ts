/**
 * An Access service token's client secret (input `credential: access-service-token`): a run mode
 * of its own.
 *
 *   preflight (read-only) → lock → [recover] → journal `rotating` → rotate with a grace window
 *   (`previous_client_secret_expires_at` = now + graceMs) → write the new secret into every
 *   target (no journal write in between) → journal `published` → deploy → smoke with the new
 *   secret → journal `closing` → close the grace (PUT … = now) → watch → journal `done`
 *
 * The previous secret stays valid during the whole rotation, so the deployed app keeps working
 * until the deploy with the new secret concluded and the checks passed. A failure before the
 * close writes the previous secret back (`current-client-secret`), redeploys and checks, and
 * leaves the grace open with a documented end (extended when short); without the previous
 * secret, or with `on-failure: keep-both`, the secrets stay as they are and both secrets stay
 * valid. A failed watch after the close re-opens the grace at once.
 *
 * Only one previous secret exists. When the secrets hold the previous secret (after a rollback,
 * or when the new secret was lost with the rotate's answer), another rotation ends that secret at
 * once; the next run refuses that without `force: true`.
 *
 * Its journal is a variable of its own (`<state-variable>_ACCESS`); the lock is the token
 * rotation's. This module is the only one that rotates a service token or moves its grace.
 */
import type {
  Credentials,
  GitHubTarget,
  JournalRecord,
  RotationReport,
  SecretsHold
} from './model.js'
import type { RotationContext } from './context.js'
import * as decide from './decide.js'
import { RotationError, errorMessage, failureText, mayHaveTakenEffect } from './errors.js'
import { log, mask } from './log.js'
import { newReport, phase, skipNotDue, warn } from './report.js'
import { ModeJournal } from './journal.js'
import { claimLock, releaseLock } from './lock.js'
import { readTargets, runBaselineSmoke } from './preflight.js'
import { preflightDeploy } from './plan.js'
import { AccessServiceTokens, CloudflareApiError } from './cloudflare/access.js'
import { describeTarget } from './github/secrets.js'
import { readSecretStamp } from './github/secret-stamp.js'
import {
  type DeployTarget,
  type Progress,
  deploy as deployAndRecord,
  newProgress,
  publishSecrets,
  record as journal,
  smokeAndProbe,
  smokeValues,
  watchChecks
} from './steps.js'

/** The journal of service token rotations: the token rotation's name with this suffix. */
export const ACCESS_JOURNAL_SUFFIX = '_ACCESS'

interface Plan {
  access: AccessServiceTokens
  token: decide.ServiceTokenFacts
  graceMs: number
  deploy?: DeployTarget
  /** Each target secret's `updated_at` now (`<target> <NAME>`; null: it does not exist). */
  stamps: Record<string, string | null>
  due: decide.Due
  recovery?: decide.ServiceTokenRecovery
  /** The unsettled record the recovery came from. */
  record?: JournalRecord
  /** Target secrets written since the record's stamps (a `rotating` record only). */
  written: number
}

interface StProgress {
  /** The rotate took effect (its answer arrived, or a read showed it afterwards). */
  rotated: boolean
  /** The new credentials, when this run knows the new secret. */
  next?: Credentials
  graceUntil?: Date
  /** The grace is closed right now (and not re-opened). */
  graceClosed: boolean
  /** Target secrets that hold the new secret (`<target> <NAME>`). */
  written: Set<string>
  /**
   * This run finishes an earlier rotation: `current-client-secret` holds the new secret, and the
   * previous one is known to no one (a failure cannot roll back).
   */
  recovered: boolean
  steps: Progress
}

export async function rotateServiceToken(base: RotationContext): Promise<RotationReport> {
  const { settings } = base
  const ctx: RotationContext = {
    ...base,
    journal: new ModeJournal(base.github, settings, ACCESS_JOURNAL_SUFFIX)
  }
  const report = newReport(settings.secretTargets.map(describeTarget))
  report.subject = 'access-service-token'
  const progress: StProgress = {
    rotated: false,
    graceClosed: false,
    written: new Set(),
    recovered: false,
    steps: newProgress()
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
    const recovery = p.recovery
    const pendingWork = recovery !== undefined && recovery.kind !== 'fresh'
    if (!pendingWork && !p.due.due) return skip(report, p)
    locked = await claimLock(ctx)
    if (recovery?.kind === 'refuse') {
      if (p.record?.phase === 'rotating') {
        // The rotate happened and its secret is lost: say so in the journal for the next run.
        await journal(ctx, report, {
          phase: 'pending',
          lost_secret: true,
          secrets_hold: p.written === 0 ? 'previous' : 'mixed'
        })
      }
      throw new RotationError('recover', recovery.message)
    }
    if (recovery?.kind === 'restore') {
      await phase(report, 'recover', () => finishRollback(ctx, report, p, progress))
      report.result = 'rolled-back'
      report.rollback = 'rolled-back'
      report.error = `An earlier rotation (run ${p.record!.run_id}) stopped while rolling back; this run finished that: every target holds current-client-secret again, deployed and checked. The previous secret stays valid until ${report.graceUntil}; after that its clients are refused. Only one previous secret exists: the next run refuses to rotate again without force: true (with it, clients of the previous secret are refused from that rotate until its deploy concludes).`
      return report
    }
    if (recovery?.kind === 'forward') {
      await phase(report, 'recover', () => recoverForward(ctx, report, p, progress, recovery))
      report.result = 'rotated'
      return report
    }
    if (recovery?.kind === 'rerotate') {
      warn(
        report,
        `Rotating again (force: true): ${recovery.why}. The previous client secret, which the deployed app may still use, stops at this rotate; clients of it are refused until the deploy with the new secret concludes.`
      )
    }
    await rotateAndPublish(ctx, report, p, progress)
    await finish(ctx, report, p, progress, 'deploy')
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

function skip(report: RotationReport, plan: Plan): RotationReport {
  return skipNotDue(report, `The service token ${plan.token.id}`, plan.due)
}

/** Cloudflare's time (its `Date` header), else the runner's. */
function cloudflareNow(ctx: RotationContext): Date {
  return ctx.tokens.rate.serverNow() ?? new Date()
}

/** The GitHub targets (settings refuse Worker targets with this kind). */
function githubTargets(ctx: RotationContext): GitHubTarget[] {
  return ctx.settings.secretTargets.filter((t): t is GitHubTarget => t.kind !== 'worker')
}

/**
 * Every target × secret (`<target> <NAME>`). With `onlySecret`, the `client-secret` secrets only:
 * the client id never changes, so whether a target holds the new secret depends on those alone.
 */
function secretKeys(
  ctx: RotationContext,
  onlySecret = false
): Array<{ target: GitHubTarget; name: string; key: string }> {
  const secrets = ctx.settings.secrets.filter(s => !onlySecret || s.field === 'client-secret')
  return githubTargets(ctx).flatMap(target =>
    secrets.map(s => ({
      target,
      name: s.name,
      key: `${describeTarget(target)} ${s.name}`
    }))
  )
}

// ---------------------------------------------------------------- preflight

async function preflight(ctx: RotationContext, report: RotationReport): Promise<Plan> {
  const { settings } = ctx
  const id = settings.serviceTokenId!
  const journalRead = ctx.journal.read()
  journalRead.catch(() => undefined)
  const access = new AccessServiceTokens(ctx.tokens, settings.accountId!)
  let token: decide.ServiceTokenFacts
  try {
    token = await access.get(id)
  } catch (error) {
    if (error instanceof CloudflareApiError && error.status === 404) {
      throw new RotationError(
        'preflight',
        `The service token ${id} (service-token-id) was not found in the account ${settings.accountId} (account-id). Check both ids (Zero Trust → Access → Service Auth); a zone-level service token cannot be rotated.`
      )
    }
    throw error
  }
  report.tokenId = token.id
  report.tokenName = token.name
  if (token.expiresAt) report.expiresOn = token.expiresAt
  log.info(
    `Service token: ${token.id} "${token.name}" (client id ${token.clientId}, duration ${token.duration ?? 'unknown'}, ${token.expiresAt ? `expires ${token.expiresAt}` : 'no expiry'})`
  )
  const now = cloudflareNow(ctx)
  const refusal = decide.serviceTokenRefusal(token, now)
  if (refusal) throw new RotationError('preflight', refusal)
  await readTargets(ctx)
  const deploy = await preflightDeploy(ctx, report)
  const stamps: Record<string, string | null> = {}
  for (const { target, name, key } of secretKeys(ctx)) {
    stamps[key] = (await readSecretStamp(ctx.github, target, name)).updatedAt ?? null
  }

  const record = await journalRead
  let recovery: decide.ServiceTokenRecovery | undefined
  let written = 0
  let unsettled: JournalRecord | undefined
  if (record && !decide.isSettled(record.phase)) {
    if (record.kind !== 'access-service-token') {
      throw new RotationError(
        'preflight',
        `The variable ${ctx.journal.name} is not a journal of a service token rotation. Delete it or choose another state-variable.`
      )
    }
    if (record.service_token_id !== id) {
      throw new RotationError(
        'preflight',
        `The journal ${ctx.journal.name} holds an unfinished rotation of another service token (${record.service_token_id}, phase ${record.phase}). Finish it first (run with that service-token-id), or use another state-variable for each token.`
      )
    }
    unsettled = record
    const secretOnly = secretKeys(ctx, true).map(k => k.key)
    if (record.phase === 'rotating') {
      const before = record.secret_stamps ?? {}
      written = secretOnly.filter(key => {
        const at = stamps[key]
        return at !== null && at !== undefined && key in before && before[key] !== at
      }).length
    }
    recovery = decide.serviceTokenRecovery({
      record,
      ...(token.updatedAt ? { tokenUpdatedAt: token.updatedAt } : {}),
      written,
      total: secretOnly.length,
      force: settings.force,
      secretKnown: settings.currentClientSecret !== undefined,
      now
    })
    report.recovery = decide.describeServiceTokenRecovery(recovery)
    warn(
      report,
      `Unfinished rotation of the service token from run ${record.run_id} (phase ${record.phase}): ${report.recovery}`
    )
    if (record.grace_until) report.graceUntil = record.grace_until
  }
  const lastRotatedAt =
    record?.kind === 'access-service-token' &&
    record.service_token_id === id &&
    record.phase === 'done'
      ? record.rotated_at
      : undefined
  const due = decide.serviceTokenDue(settings, token, lastRotatedAt, now)
  if (settings.leastPrivilege === 'warn') {
    for (const warning of decide.serviceTokenWarnings(settings, token, now)) warn(report, warning)
  }
  const graceMs = decide.serviceTokenGraceMs(settings)
  const plan: Plan = {
    access,
    token,
    graceMs,
    ...(deploy ? { deploy } : {}),
    stamps,
    due,
    ...(recovery ? { recovery } : {}),
    ...(unsettled ? { record: unsettled } : {}),
    written
  }
  if (!recovery || recovery.kind === 'fresh') await baseline(ctx, token)
  report.plan = describePlan(ctx, plan)
  return plan
}

/** Every smoke check with the credentials in use now: the app must work before anything changes. */
async function baseline(ctx: RotationContext, token: decide.ServiceTokenFacts): Promise<void> {
  if (ctx.settings.smoke.checks.length === 0) return
  const results = await runBaselineSmoke(ctx, smokeValues(currentCredentials(ctx, token)))
  const failed = results.filter(r => !r.ok)
  if (failed.length > 0) {
    throw new RotationError(
      'preflight',
      `The smoke checks fail before anything changed, with the client secret in use now: ${failed.map(f => `${f.url} (${f.reason ?? f.status})`).join('; ')}. Fix the app (or current-client-secret) first; nothing was changed.`
    )
  }
  log.info('Baseline: every smoke check passes with the client secret in use now')
}

function currentCredentials(ctx: RotationContext, token: decide.ServiceTokenFacts): Credentials {
  return {
    id: token.id,
    clientId: token.clientId,
    ...(ctx.settings.currentClientSecret !== undefined
      ? { clientSecret: ctx.settings.currentClientSecret }
      : {})
  }
}

function describePlan(ctx: RotationContext, plan: Plan): string[] {
  const { settings } = ctx
  const minutes = Math.round(plan.graceMs / 60_000)
  const lines: string[] = []
  if (plan.recovery)
    lines.push(`recover first: ${decide.describeServiceTokenRecovery(plan.recovery)}`)
  lines.push(
    `rotate the client secret of service token ${plan.token.id}, the previous secret valid for ${minutes} min more (2 × deploy-timeout + 3 × smoke-timeout + revoke-grace + revoke-watch + 10 min)`,
    `write it to ${settings.secrets.map(s => s.name).join(', ')} in ${settings.secretTargets.map(describeTarget).join('; ')}`,
    plan.deploy
      ? `dispatch ${plan.deploy.workflow.path} and follow the run`
      : 'no deploy (deploy-workflow: none)',
    `run ${settings.smoke.checks.length} smoke check(s) with the new secret`,
    settings.revoke === 'keep'
      ? 'leave the previous secret valid until its grace ends (revoke: keep)'
      : `close the previous secret's grace${settings.revokeWatchMs > 0 && settings.smoke.checks.length > 0 ? ` and watch the checks for ${Math.round(settings.revokeWatchMs / 1000)} s` : ''}`
  )
  if (!plan.due.due)
    lines.push(`(not due before ${decide.isoSeconds(plan.due.dueAt)}: the run would skip)`)
  return lines
}

// ---------------------------------------------------------------- rotate and publish

async function rotateAndPublish(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress
): Promise<void> {
  const { token, access } = plan
  const graceUntil = new Date(cloudflareNow(ctx).getTime() + plan.graceMs)
  const graceText = decide.isoSeconds(graceUntil)
  await journal(ctx, report, {
    phase: 'rotating',
    kind: 'access-service-token',
    service_token_id: token.id,
    grace_until: graceText,
    token_updated_before: token.updatedAt,
    secret_stamps: plan.stamps,
    secrets_hold: undefined,
    lost_secret: undefined,
    rotated_at: undefined,
    deploy_run_ids: [],
    disabled_token_ids: [],
    started_at: new Date().toISOString()
  })
  progress.graceUntil = graceUntil
  report.graceUntil = graceText
  const rotated = await phase(report, 'mint', async () => {
    try {
      return await access.rotate(token.id, graceText)
    } catch (error) {
      if (!mayHaveTakenEffect(error)) {
        await journal(ctx, report, { phase: 'rolled-back' })
        throw error
      }
      // No answer: did the rotate happen? Its secret came only in the lost answer.
      const after = await access.get(token.id)
      if (after.updatedAt !== undefined && after.updatedAt !== token.updatedAt) {
        progress.rotated = true
        throw new RotationError(
          'mint',
          `The rotate of service token ${token.id} got no answer (${errorMessage(error)}), and the token shows it happened: its new client secret is lost (it came only in that answer).`
        )
      }
      await journal(ctx, report, { phase: 'rolled-back' })
      throw new RotationError(
        'mint',
        `The rotate of service token ${token.id} got no answer (${errorMessage(error)}); the token shows it did not happen. Nothing was changed; run again.`
      )
    }
  })
  // Masked before anything else can print it.
  mask(rotated.clientSecret)
  progress.rotated = true
  progress.next = {
    id: token.id,
    clientId: rotated.token.clientId || token.clientId,
    clientSecret: rotated.clientSecret
  }
  log.info(
    `Rotated the client secret of service token ${token.id}; the previous secret stays valid until ${graceText}`
  )
  // No journal write before the first secret write: until a target holds it, the new secret
  // exists only in this process.
  await phase(report, 'publish', () => publish(ctx, report, progress, progress.next!))
  await journal(ctx, report, {
    phase: 'published',
    secrets_hold: 'next',
    rotated_at: rotated.token.updatedAt ?? new Date().toISOString()
  })
}

/** Writes `credentials` into every target written (all of them for the new secret). */
async function publish(
  ctx: RotationContext,
  report: RotationReport,
  progress: StProgress,
  credentials: Credentials
): Promise<void> {
  const toNext = credentials.clientSecret === progress.next?.clientSecret
  const all = githubTargets(ctx)
  const targets = toNext
    ? all
    : all.filter(t => [...progress.written].some(key => key.startsWith(`${describeTarget(t)} `)))
  await publishSecrets(ctx, credentials, targets, {
    beforeFirst: () => undefined,
    written: key => {
      if (!report.secretsWritten.includes(key)) report.secretsWritten.push(key)
      if (toNext) progress.written.add(key)
      else progress.written.delete(key)
    }
  })
}

// ---------------------------------------------------------------- deploy, smoke, close, watch

async function recoverForward(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress,
  recovery: Extract<decide.ServiceTokenRecovery, { kind: 'forward' }>
): Promise<void> {
  const record = plan.record!
  progress.rotated = true
  progress.recovered = true
  progress.next = currentCredentials(ctx, plan.token)
  for (const { key } of secretKeys(ctx)) progress.written.add(key)
  if (record.grace_until) progress.graceUntil = new Date(record.grace_until)
  if (record.phase === 'rotating') {
    await journal(ctx, report, { phase: 'published', secrets_hold: 'next' })
  }
  log.info(`Finishing the rotation of run ${record.run_id} forward: ${recovery.why}`)
  await finish(ctx, report, plan, progress, recovery.from)
}

/**
 * A rollback stopped midway: `current-client-secret` (which the first target holds now) goes into
 * every target, then a redeploy and the checks. The secrets are recorded as holding the previous
 * secret: if they hold the new one after all, the next run's refusal costs nothing but a forced
 * run, whereas the opposite mistake would close the grace on the secret in use.
 */
async function finishRollback(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress
): Promise<void> {
  const record = plan.record!
  progress.rotated = true
  progress.recovered = true
  for (const { key } of secretKeys(ctx)) progress.written.add(key)
  const now = cloudflareNow(ctx)
  const until = record.grace_until ? new Date(record.grace_until) : now
  await rollback(ctx, report, plan, progress, decide.graceAfterFailure(until, now, plan.graceMs))
}

async function finish(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress,
  from: 'deploy' | 'close'
): Promise<void> {
  const { settings } = ctx
  const next = progress.next!
  if (from === 'deploy') {
    if (plan.deploy) {
      const target = plan.deploy
      await journal(ctx, report, { phase: 'deploying' })
      await phase(report, 'deploy', () => deployAndRecord(ctx, report, target, progress.steps))
    }
    await journal(ctx, report, { phase: 'smoke' })
    await phase(report, 'smoke', async () => {
      const { smoke } = await smokeAndProbe(ctx, next, undefined, 'smoke')
      report.smoke = smoke
    })
    if (settings.revokeGraceMs > 0) {
      log.info(
        `Waiting ${Math.round(settings.revokeGraceMs / 1000)} s (revoke-grace) before closing the grace`
      )
      await ctx.clock.sleep(settings.revokeGraceMs)
    }
  }
  if (settings.revoke === 'keep') {
    report.revoked = 'kept'
    await journal(ctx, report, { phase: 'done', secrets_hold: 'next' })
    log.notice(
      `revoke: keep: the previous client secret stays valid until ${report.graceUntil ?? 'its grace ends'} (not closed early).`
    )
    return
  }
  await journal(ctx, report, { phase: 'closing' })
  await phase(report, 'revoke', async () => {
    await plan.access.setPreviousExpiry(next.id, decide.isoSeconds(cloudflareNow(ctx)))
    progress.graceClosed = true
    report.revoked = 'grace-closed'
    log.info(`Closed the grace: the previous client secret of ${next.id} no longer works`)
    await watch(ctx, report, plan, progress)
  })
  await journal(ctx, report, { phase: 'done', secrets_hold: 'next' })
}

/** Every check each interval for `revoke-watch`, the previous secret dead; a failure re-opens it. */
async function watch(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress
): Promise<void> {
  const { settings } = ctx
  const checks = settings.smoke.checks.length
  if (settings.revokeWatchMs === 0 || checks === 0) {
    report.watch = { durationMs: 0, rounds: 0, outcome: 'skipped' }
    return
  }
  const start = ctx.clock.now()
  const outcome = await watchChecks(
    ctx,
    progress.next!,
    settings.revokeWatchMs,
    decide.watchInterval(settings.revokeWatchMs)
  )
  if (outcome.ok) {
    report.watch = {
      durationMs: ctx.clock.now() - start,
      rounds: outcome.rounds,
      outcome: 'passed'
    }
    log.info(`Watch passed: ${outcome.rounds} round(s) with the previous secret closed`)
    return
  }
  // Something still runs on the previous secret: re-open its grace at once.
  const reopenTo = decide.graceAfterFailure(
    progress.graceUntil ?? cloudflareNow(ctx),
    cloudflareNow(ctx),
    plan.graceMs
  ).graceUntil
  const reopenText = decide.isoSeconds(
    progress.graceUntil && progress.graceUntil > cloudflareNow(ctx) ? progress.graceUntil : reopenTo
  )
  await plan.access.setPreviousExpiry(progress.next!.id, reopenText)
  progress.graceClosed = false
  progress.graceUntil = new Date(reopenText)
  report.graceUntil = reopenText
  const windowMs = ctx.clock.now() - start
  const failed = outcome.failed.map(f => `${f.url} (${f.reason ?? f.status})`).join('; ')
  report.watch = {
    durationMs: windowMs,
    rounds: outcome.rounds,
    outcome: 'failed',
    failingWindowMs: windowMs,
    detail: failed
  }
  // The targets hold the new secret but the app does not run on it: the next run redeploys.
  await journal(ctx, report, { grace_until: reopenText, phase: 'published' })
  throw new RotationError(
    'revoke',
    `A check failed while the previous client secret was closed: ${failed}. Something still runs on it (a stale deploy, a secret missing from secret-targets), so its grace was re-opened at once, until ${reopenText} (the app failed for at most ${Math.ceil(windowMs / 1000)} s, from the close to the re-open).`
  )
}

// ---------------------------------------------------------------- failures

async function handleFailure(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress
): Promise<void> {
  if (progress.recovered && !progress.next) {
    // Finishing an earlier rollback failed: which secret each target holds is unclear.
    const now = cloudflareNow(ctx)
    await keepBoth(ctx, report, plan, progress, {
      why: "finishing the earlier rotation's rollback failed",
      hold: 'mixed',
      ...decide.graceAfterFailure(progress.graceUntil ?? now, now, plan.graceMs)
    }).catch((error: unknown) => {
      report.error += `\nRecording the pending state failed too (${errorMessage(error)}).`
    })
    return
  }
  const secretOnly = secretKeys(ctx, true).map(k => k.key)
  const total = secretOnly.length
  const written = secretOnly.filter(key => progress.written.has(key)).length
  const now = cloudflareNow(ctx)
  const decision = decide.afterServiceTokenFailure({
    settings: ctx.settings,
    rotated: progress.rotated,
    secretKnown: progress.next?.clientSecret !== undefined,
    graceClosed: progress.graceClosed,
    previousKnown: ctx.settings.currentClientSecret !== undefined && !progress.recovered,
    written,
    total,
    graceUntil: progress.graceUntil ?? now,
    now,
    graceMs: plan.graceMs
  })
  switch (decision.kind) {
    case 'nothing':
      return
    case 'closed':
      report.error += `\nThe previous client secret's grace is closed and every target holds the new secret; the next run finishes the rotation (it closes again and watches).`
      return
    case 'rollback':
      try {
        await phase(report, 'rollback', () => rollback(ctx, report, plan, progress, decision))
        report.result = 'rolled-back'
        report.rollback = 'rolled-back'
        report.error += `\nRolled back: every target holds the previous client secret again, deployed and checked. The previous secret stays valid until ${report.graceUntil}; after that its clients are refused. Only one previous secret exists: the next run refuses to rotate again without force: true (with it, clients of the previous secret are refused from that rotate until its deploy concludes). Fix the cause and run again before ${report.graceUntil}.`
        return
      } catch (error) {
        report.error += `\nThe rollback failed too (${errorMessage(error)}).`
        await keepBoth(ctx, report, plan, progress, {
          why: 'the rollback failed',
          hold:
            progress.written.size === 0
              ? 'previous'
              : progress.written.size >= total
                ? 'next'
                : 'mixed',
          graceUntil: decision.graceUntil,
          extend: decision.extend
        }).catch(() => undefined)
        return
      }
    case 'keep-both':
      await keepBoth(ctx, report, plan, progress, decision).catch((error: unknown) => {
        report.error += `\nRecording the pending state failed too (${errorMessage(error)}).`
      })
  }
}

async function extendGrace(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress,
  to: { graceUntil: Date; extend: boolean }
): Promise<void> {
  if (to.extend) {
    const text = decide.isoSeconds(to.graceUntil)
    await plan.access.setPreviousExpiry(plan.token.id, text)
    log.info(`Extended the previous client secret's grace until ${text}`)
  }
  progress.graceUntil = to.graceUntil
  report.graceUntil = decide.isoSeconds(to.graceUntil)
}

async function rollback(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress,
  to: { graceUntil: Date; extend: boolean }
): Promise<void> {
  await extendGrace(ctx, report, plan, progress, to)
  await journal(ctx, report, { phase: 'rolling-back', grace_until: report.graceUntil })
  const previous = currentCredentials(ctx, plan.token)
  log.info(
    'Writing the previous client secret (current-client-secret) back into every target written'
  )
  await publish(ctx, report, progress, previous)
  if (plan.deploy) await deployAndRecord(ctx, report, plan.deploy, progress.steps)
  await smokeAndProbe(ctx, previous, undefined, 'rollback')
  await journal(ctx, report, { phase: 'pending', secrets_hold: 'previous' })
  report.rollback = 'rolled-back'
}

async function keepBoth(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  progress: StProgress,
  decision: { why: string; hold: SecretsHold; graceUntil: Date; extend: boolean }
): Promise<void> {
  report.rollback = 'pending'
  await extendGrace(ctx, report, plan, progress, decision)
  const lost = !progress.recovered && progress.next?.clientSecret === undefined
  await journal(ctx, report, {
    phase: 'pending',
    secrets_hold: decision.hold,
    grace_until: report.graceUntil,
    ...(lost ? { lost_secret: true } : {})
  })
  const next =
    decision.hold === 'next'
      ? 'Every target holds the new client secret: the next run (current-client-secret read from the secrets as they are then) redeploys, checks, closes the grace and watches, without rotating again.'
      : `The targets hold ${decision.hold === 'previous' ? 'the previous client secret' : 'a mix of the previous and the new client secret'}${lost ? ' (the new one is lost)' : ''}. Only one previous secret exists: the next run refuses to rotate again without force: true (with it, clients of the previous secret are refused from that rotate until its deploy concludes).`
  report.error += `\nState: both client secrets are valid until ${report.graceUntil} (${decision.why}); after that the previous one stops. ${next} Journal ${ctx.journal.name ?? '(disabled)'}, phase pending.`
}
