/**
 * The I/O of the rotation's phases that decides nothing: prove a new token works, write the
 * secrets, dispatch and follow the deploy, run the smoke checks with the R2 probe beside them,
 * watch the checks while the previous token is disabled, read the evidence of use, write the
 * journal. Each records what it did in the run's `Progress` and report (or throws a RotationError
 * that says what failed); rotation.ts decides what follows. No token is deleted, disabled or
 * enabled here.
 */
import type {
  ApiToken,
  Credentials,
  JournalRecord,
  RepoRef,
  RotationReport,
  SecretTarget,
  SmokeResult,
  TokenOwner,
  WorkerTarget
} from './model.js'
import type { RotationContext } from './context.js'
import type { ProbePlan } from './decide.js'
import { fieldValue, isoSeconds, restoreTargets, useEvidence } from './decide.js'
import { warn } from './report.js'
import { retryUntil } from './backoff.js'
import { RotationError, errorMessage, mayHaveTakenEffect } from './errors.js'
import { log, maskToken } from './log.js'
import { sha256Hex } from './redact.js'
import {
  CloudflareApiError,
  clonePolicies,
  sameCondition,
  samePolicies
} from './cloudflare/tokens.js'
import { probeBucket } from './cloudflare/probe.js'
import { describeTarget } from './github/secrets.js'
import {
  type WorkflowInfo,
  dispatchWorkflow,
  followRun,
  getRun,
  newRotationId
} from './github/deploy.js'
import { runSmokeChecks, runSmokeRound } from './smoke.js'

/** How long a new token may take to work everywhere (api-facts: "retry the probe with backoff for about two minutes"). */
export const PROPAGATION_DEADLINE_MS = 120_000

/** The deploy step, resolved: the inputs and the workflow as read in preflight. */
export interface DeployTarget {
  repository: RepoRef
  workflow: WorkflowInfo
  ref: string
  inputs: Record<string, string>
  timeoutMs: number
}

export interface ProbeTarget {
  plan: ProbePlan
  endpoint: string
}

/**
 * `…/tokens/verify` as the new token answers active; retried while it propagates. When the
 * token's IP condition refuses this runner (it keeps the current token's condition), the token is
 * read with the management token instead: active there, and proven by the smoke checks later.
 */
export async function verifyToken(
  ctx: RotationContext,
  owner: TokenOwner,
  next: Credentials
): Promise<void> {
  let lastError = ''
  let refusedFrom: string | undefined
  const verified = await retryUntil<boolean>(
    async () => {
      try {
        const answer = await ctx.tokens.verify(next.value!, owner)
        if (answer.id === next.id && answer.status === 'active') return { done: true, value: true }
        lastError = `verify answered status ${answer.status} for ${answer.id}`
      } catch (error) {
        if (error instanceof CloudflareApiError && error.refusedFrom !== undefined) {
          refusedFrom = error.refusedFrom
          return { done: true, value: false }
        }
        lastError = errorMessage(error)
      }
      return { done: false, value: false }
    },
    { deadlineMs: PROPAGATION_DEADLINE_MS, clock: ctx.clock }
  )
  if (refusedFrom !== undefined) {
    const token = await ctx.tokens.get(owner, next.id)
    if (token.status !== 'active') {
      throw new RotationError('verify', `The new token ${next.id} is ${token.status}, not active.`)
    }
    log.info(
      `Token ${next.id} is active (read with the management token: its IP condition refuses this runner${refusedFrom ? `, ${refusedFrom}` : ''}, so it cannot verify itself from here; the smoke checks prove it where the app runs)`
    )
    return
  }
  if (!verified.done) {
    throw new RotationError(
      'verify',
      `The new token ${next.id} did not verify as active: ${lastError}`
    )
  }
  log.info(`Token ${next.id} verifies as active`)
}

/** The R2 probe with `credentials`; undefined when there is no probe or no R2 secret to sign with. */
export async function probeR2(
  ctx: RotationContext,
  probe: ProbeTarget | undefined,
  credentials: Credentials,
  phase: 'verify' | 'smoke' | 'rollback',
  signal?: AbortSignal
): Promise<{ mode: 'read' | 'write'; bucket: string; ok: boolean } | undefined> {
  if (!probe) return undefined
  if (!credentials.secretAccessKey) {
    log.info(`R2 probe skipped: the R2 secret of token ${credentials.id} is not known to this run`)
    return undefined
  }
  const { mode, bucket } = probe.plan
  const result = await probeBucket({
    endpoint: probe.endpoint,
    bucket,
    credentials: { accessKeyId: credentials.id, secretAccessKey: credentials.secretAccessKey },
    mode,
    deadlineMs: PROPAGATION_DEADLINE_MS,
    clock: ctx.clock,
    ...(signal ? { signal } : {})
  })
  if (!result.ok) {
    if (signal?.aborted) return { mode, bucket, ok: false }
    throw new RotationError(
      phase,
      `The R2 ${mode} probe of bucket ${bucket} with the credentials of token ${credentials.id} failed after ${result.attempts} attempt(s): ${result.reason}`
    )
  }
  log.info(
    `R2 ${mode} probe of ${bucket} with token ${credentials.id} passed (${result.attempts} attempt(s))`
  )
  return { mode, bucket, ok: true }
}

/**
 * Writes every `secrets` × `targets` pair with `credentials`: one write per GitHub secret, and
 * one bulk patch per Worker (every field in one new version). `beforeFirst` runs before the first
 * write (from then on the token may be in a secret); `sending` before each Worker patch and
 * `refused` after one that surely changed nothing; `written` after each secret written.
 */
export async function publishSecrets(
  ctx: RotationContext,
  credentials: Credentials,
  targets: SecretTarget[],
  hooks: {
    beforeFirst: () => void
    written: (key: string) => void
    sending?: (worker: WorkerTarget) => void
    refused?: (worker: WorkerTarget) => void
  }
): Promise<void> {
  const { secrets } = ctx.settings
  const total = targets.length * secrets.length
  const values = secrets.map(secret => {
    const value = fieldValue(secret.field, credentials)
    if (value === undefined) {
      // Callers check coverage first; this guards the invariant that no secret is left stale.
      throw new RotationError(
        'publish',
        `The ${secret.field} of token ${credentials.id} is not known; cannot write ${secret.name}.`
      )
    }
    return { name: secret.name, value }
  })
  let n = 0
  hooks.beforeFirst()
  for (const target of targets) {
    if (target.kind === 'worker') {
      hooks.sending?.(target)
      try {
        await ctx.secrets.writeWorker(target, values)
      } catch (error) {
        if (!mayHaveTakenEffect(error)) hooks.refused?.(target)
        throw error
      }
      for (const { name } of values) hooks.written(`${describeTarget(target)} ${name}`)
      n += values.length
      log.info(
        `[${n}/${total}] ${target.line} ${values.map(v => v.name).join(', ')} (one new version, deployed)`
      )
      continue
    }
    for (const { name, value } of values) {
      n++
      const outcome = await ctx.secrets.write(target, name, value)
      hooks.written(`${describeTarget(target)} ${name}`)
      log.info(`[${n}/${total}] ${target.line} ${name} (${outcome})`)
    }
  }
}

/** A deploy run that concluded anything but success, or did not conclude in time. */
export class DeployFailed extends RotationError {
  constructor(
    message: string,
    /** Its conclusion, or `timeout`. */
    readonly conclusion: string
  ) {
    super('deploy', message)
  }
}

export interface DeployOutcome {
  runId: number
  htmlUrl: string
  concludedAt: Date
}

/**
 * Dispatches the deploy workflow once and follows that run to its conclusion; anything but
 * `success` throws. `dispatched` runs as soon as the run is known (the journal records it).
 */
export async function deployAndFollow(
  ctx: RotationContext,
  deploy: DeployTarget,
  knownRunIds: number[],
  dispatched: (run: { runId: number; htmlUrl: string }) => Promise<void>
): Promise<DeployOutcome> {
  const { settings, clock } = ctx
  const run = await dispatchWorkflow(
    ctx.github,
    deploy.repository,
    deploy.workflow,
    deploy.ref,
    deploy.inputs,
    {
      clock,
      rotationId: newRotationId(settings.runId, settings.runAttempt),
      // After a dispatch with no clear answer, none of this rotation's runs may be taken for its run.
      knownRunIds
    }
  )
  log.info(`Dispatched deploy run ${run.runId}: ${run.htmlUrl}`)
  await dispatched({ runId: run.runId, htmlUrl: run.htmlUrl })
  let lastStatus = ''
  const outcome = await followRun(ctx.github, deploy.repository, run.runId, {
    timeoutMs: deploy.timeoutMs,
    // The budget read just before the dispatch: no second /rate_limit read.
    ...(run.rateBudget ? { rateBudget: run.rateBudget } : {}),
    clock,
    onStatus: status => {
      if (status === lastStatus) return
      lastStatus = status
      if (status === 'waiting') {
        log.warning(
          `Deploy run ${run.runId} is waiting for an environment approval: ${run.htmlUrl}`
        )
      } else {
        log.info(`Deploy run ${run.runId}: ${status}`)
      }
    }
  })
  if (!outcome.ok) {
    const jobs = outcome.failedJobs
      .map(
        j =>
          `${j.name}: ${j.conclusion}${j.failedSteps.length ? ` (${j.failedSteps.join(', ')})` : ''}`
      )
      .join('; ')
    throw new DeployFailed(
      outcome.reason === 'timeout'
        ? `Deploy run ${run.runId} did not conclude within deploy-timeout${outcome.status ? ` (still ${outcome.status === 'waiting' ? 'waiting for an environment approval' : outcome.status})` : ''}; it was left running: ${run.htmlUrl}`
        : `Deploy run ${run.runId} concluded ${outcome.conclusion}${jobs ? ` — failed: ${jobs}` : ''}: ${run.htmlUrl}`,
      outcome.reason === 'timeout' ? 'timeout' : (outcome.conclusion ?? 'failed')
    )
  }
  log.info(`Deploy run ${run.runId} concluded success`)
  return { runId: run.runId, htmlUrl: run.htmlUrl, concludedAt: new Date() }
}

/**
 * What the smoke checks' placeholders stand for with `credentials`: `{access-key-id}` for an API
 * token; `{client-id}` (and, in headers, `{client-secret}` when known) for a service token.
 */
export function smokeValues(credentials: Credentials): {
  placeholders: Record<string, string>
  values?: Record<string, string>
} {
  if (credentials.clientId === undefined)
    return { placeholders: { 'access-key-id': credentials.id } }
  return {
    placeholders: { 'client-id': credentials.clientId },
    values: {
      'client-id': credentials.clientId,
      ...(credentials.clientSecret !== undefined
        ? { 'client-secret': credentials.clientSecret }
        : {})
    }
  }
}

/**
 * Every smoke check, with `{access-key-id}` standing for `credentials`, and the R2 probe with
 * `credentials`, side by side. A failed check stops the probe (nothing waits for it any more);
 * both are awaited, and a failure of either throws.
 */
export async function smokeAndProbe(
  ctx: RotationContext,
  credentials: Credentials,
  probe: ProbeTarget | undefined,
  phase: 'smoke' | 'rollback'
): Promise<{
  smoke: SmokeResult[]
  probe?: { mode: 'read' | 'write'; bucket: string; ok: boolean }
}> {
  const { checks, headers, timeoutMs } = ctx.settings.smoke
  const stop = new AbortController()
  const probing = probeR2(ctx, probe, credentials, phase, stop.signal)
  // Handled now: a probe that fails while the checks still run must not be an unhandled rejection
  // (which ends the process); its failure is rethrown by the `await` below.
  probing.catch(() => undefined)
  let smoke: SmokeResult[] = []
  try {
    if (checks.length > 0) {
      smoke = await runSmokeChecks(checks, timeoutMs, {
        headers,
        ...smokeValues(credentials),
        clock: ctx.clock
      })
      for (const result of smoke) {
        log.info(
          `smoke ${result.ok ? 'passed' : 'FAILED'}: ${result.url} (${result.status ?? 'no answer'}, ${result.attempts} attempt(s))`
        )
      }
      const failed = smoke.filter(r => !r.ok)
      if (failed.length > 0) {
        stop.abort()
        throw new RotationError(
          phase,
          `${failed.length} smoke check(s) failed: ${failed.map(f => `${f.url} (${f.reason ?? f.status})`).join('; ')}`
        )
      }
    }
  } finally {
    // Awaited either way: a probe left running would outlive its phase.
    await probing.catch(() => undefined)
  }
  const probed = await probing
  return { smoke, ...(probed ? { probe: probed } : {}) }
}

export type WatchOutcome =
  { ok: true; rounds: number } | { ok: false; rounds: number; failed: SmokeResult[] }

/**
 * Runs every smoke check (one attempt each) every `intervalMs` for `watchMs`, with the
 * placeholders standing for the credentials that should be serving (`smokeValues`); stops at the
 * first failure.
 */
export async function watchChecks(
  ctx: RotationContext,
  serving: string | Credentials,
  watchMs: number,
  intervalMs: number
): Promise<WatchOutcome> {
  const { checks, headers } = ctx.settings.smoke
  const start = ctx.clock.now()
  const values = smokeValues(typeof serving === 'string' ? { id: serving } : serving)
  for (let rounds = 1; ; rounds++) {
    const results = await runSmokeRound(checks, {
      headers,
      ...values,
      clock: ctx.clock
    })
    const failed = results.filter(r => !r.ok)
    if (failed.length > 0) return { ok: false, rounds, failed }
    const remaining = watchMs - (ctx.clock.now() - start)
    if (remaining <= 0) return { ok: true, rounds }
    await ctx.clock.sleep(Math.min(intervalMs, remaining))
  }
}

// ------------------------------------------------------------------ mint

/**
 * `POST …/tokens` with the current token's policies (without policy ids) and condition, under
 * the planned name and expiry. Never sent twice blindly: after a failure that leaves open whether
 * the create happened, the tokens carrying the (unique) name are handed to `deleteOrphan` before
 * one more create; a 429 is waited out by the client (a refused create minted nothing).
 */
export async function mintCopy(
  ctx: RotationContext,
  report: RotationReport,
  progress: Progress,
  plan: { owner: TokenOwner; current: ApiToken; newName: string; expiresOn?: string },
  deleteOrphan: (orphan: ApiToken) => Promise<void>
): Promise<Credentials> {
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
    // Its value came only in the lost answer, so a token minted then can never be used.
    const orphans = (await ctx.tokens.list(plan.owner)).filter(
      t => t.name === plan.newName && t.id !== plan.current.id
    )
    for (const orphan of orphans) await deleteOrphan(orphan)
    log.warning(
      `The token create got no clear answer (${errorMessage(error)}); ${orphans.length} token(s) minted by it were found and deleted. Minting once more.`
    )
    created = await ctx.tokens.create(plan.owner, body)
  }
  const { token, value } = created
  maskToken(value)
  const next: Credentials = { id: token.id, value, secretAccessKey: sha256Hex(value) }
  progress.next = next
  progress.nextOrigin = 'minted'
  Object.assign(report, {
    tokenId: token.id,
    tokenName: token.name,
    accessKeyId: token.id,
    expiresOn: token.expires_on ?? plan.expiresOn
  })
  log.info(`Minted token ${token.id} "${token.name}"`)
  return next
}

/** Re-reads the new token: the copy must grant exactly what the old token granted. */
export async function checkCopy(
  ctx: RotationContext,
  plan: { owner: TokenOwner; current: ApiToken },
  id: string
): Promise<void> {
  const reread = await ctx.tokens.get(plan.owner, id)
  if (!samePolicies(reread.policies, plan.current.policies)) {
    throw new RotationError(
      'mint',
      `The new token ${id} does not carry the same policies as ${plan.current.id}; it was not used.`
    )
  }
  if (!sameCondition(reread.condition ?? undefined, plan.current.condition ?? undefined)) {
    throw new RotationError(
      'mint',
      `The new token ${id} does not carry the same condition (IP restrictions) as ${plan.current.id}; it was not used.`
    )
  }
}

// ------------------------------------------------------------------ what the run has changed

/** What has been changed so far: decides the clean-up when a phase fails. */
export interface Progress {
  next?: Credentials
  nextOrigin?: 'minted' | 'recovered'
  /** Set before the first secret write: from then on `next` may be in a secret. */
  publishStarted: boolean
  /** Every target holds `next` (the last publish wrote it everywhere). */
  publishedEverywhere: boolean
  /** Distinct secrets written with `next` and not restored since. */
  writtenWithNext: Set<string>
  /** The `line` of each Worker target whose patch with `next` was sent and not surely refused. */
  workersMaybeNew: Set<string>
  /** Deploy runs dispatched by this run (all must have concluded before a rollback deletes `next`). */
  deployRunIds: number[]
  /** When the last deploy of this run concluded success. */
  deployConcludedAt?: Date
  /** The previous token's `last_used_on` when the new credentials went into service (null: never used). */
  previousUseAtService?: string | null
  /** The previous token is disabled right now. */
  previousDisabled: boolean
}

export function newProgress(): Progress {
  return {
    publishStarted: false,
    publishedEverywhere: false,
    writtenWithNext: new Set(),
    workersMaybeNew: new Set(),
    deployRunIds: [],
    previousDisabled: false
  }
}

/** Writes the journal and notes its phase in the report. */
export async function record(
  ctx: RotationContext,
  report: RotationReport,
  update: Partial<JournalRecord> & { phase: JournalRecord['phase'] }
): Promise<void> {
  report.journalPhase = (await ctx.journal.write(update)).phase
}

/**
 * Writes `credentials` into every target, noting which secrets hold the new token. A restore of
 * the previous values skips a Worker known never to have received the new ones
 * (decide.restoreTargets).
 */
export async function publish(
  ctx: RotationContext,
  report: RotationReport,
  progress: Progress,
  credentials: Credentials
): Promise<void> {
  const toNext = credentials.id === progress.next?.id
  const all = ctx.settings.secretTargets
  const targets = toNext
    ? all
    : restoreTargets(all, {
        knowsWrites: progress.nextOrigin === 'minted',
        workersMaybeNew: progress.workersMaybeNew
      })
  for (const skipped of all.filter(t => !targets.includes(t))) {
    log.info(`${skipped.line}: never received the new values; nothing to restore`)
  }
  await publishSecrets(ctx, credentials, targets, {
    beforeFirst: () => {
      progress.publishStarted = true
    },
    written: key => {
      if (!report.secretsWritten.includes(key)) report.secretsWritten.push(key)
      if (toNext) progress.writtenWithNext.add(key)
      else progress.writtenWithNext.delete(key)
    },
    sending: worker => {
      if (toNext) progress.workersMaybeNew.add(worker.line)
    },
    refused: worker => {
      if (toNext) progress.workersMaybeNew.delete(worker.line)
    }
  })
  const workers = targets.filter(t => t.kind === 'worker').map(t => t.script)
  if (toNext && workers.length > 0 && !report.workersWritten) {
    report.workersWritten = {
      scripts: workers,
      tokenId: credentials.id,
      at: isoSeconds(new Date())
    }
  }
  progress.publishedEverywhere = toNext
}

/** Dispatches and follows a deploy, journaling its run as soon as it is known. */
export async function deploy(
  ctx: RotationContext,
  report: RotationReport,
  target: DeployTarget,
  progress: Progress
): Promise<void> {
  const earlier = ctx.journal.record?.deploy_run_ids ?? []
  try {
    const outcome = await deployAndFollow(
      ctx,
      target,
      [...earlier, ...progress.deployRunIds],
      async run => {
        progress.deployRunIds.push(run.runId)
        report.deployRunId = run.runId
        report.deployRunUrl = run.htmlUrl
        // The phase stays what it was (`deploying`, or `rolling-back` for a rollback's redeploy).
        await record(ctx, report, {
          phase: ctx.journal.record?.phase ?? 'deploying',
          deploy_run_ids: [...new Set([...(ctx.journal.record?.deploy_run_ids ?? []), run.runId])]
        })
      }
    )
    report.deployConclusion = 'success'
    progress.deployConcludedAt = outcome.concludedAt
  } catch (error) {
    report.deployConclusion = error instanceof DeployFailed ? error.conclusion : 'failed'
    throw error
  }
}

/** The previous token's `last_used_on` now: a use after this reading hints at a stale consumer. */
export async function notePreviousUse(
  ctx: RotationContext,
  owner: TokenOwner,
  progress: Progress,
  previousId: string
): Promise<void> {
  if (previousId === progress.next?.id) return
  const previous = await ctx.tokens.get(owner, previousId).catch(() => undefined)
  if (previous) progress.previousUseAtService = previous.last_used_on ?? null
}

/** Both tokens' `last_used_on`, for the summary: a hint that never decides. */
export async function gatherEvidence(
  ctx: RotationContext,
  report: RotationReport,
  owner: TokenOwner,
  progress: Progress,
  facts: { previousId: string; deployed: boolean; probed: boolean }
): Promise<void> {
  const read = (id: string): Promise<ApiToken | undefined> =>
    ctx.tokens.get(owner, id).catch(() => undefined)
  const [next, previous] = await Promise.all([read(progress.next!.id), read(facts.previousId)])
  const { evidence, warning } = useEvidence(next, previous, {
    ...(progress.previousUseAtService !== undefined
      ? { previousUseAtService: progress.previousUseAtService }
      : {}),
    deployed: facts.deployed,
    probedWithNew: facts.probed
  })
  report.evidence = evidence
  if (warning) warn(report, warning)
}

/**
 * Deploy runs of this rotation (the journal's and this run's) that have not completed: one left
 * running after a timeout could still ship the new token.
 */
export async function runsStillGoing(
  ctx: RotationContext,
  repository: RepoRef | undefined,
  progress: Progress
): Promise<number[]> {
  const runs = new Set([...(ctx.journal.record?.deploy_run_ids ?? []), ...progress.deployRunIds])
  const going: number[] = []
  for (const runId of runs) {
    const run = await getRun(ctx.github, repository ?? ctx.settings.repository, runId)
    if (run && run.status !== 'completed') going.push(runId)
  }
  return going
}
