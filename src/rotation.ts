/**
 * The rotation, phase by phase. This is the one module that knows the invariant:
 *
 *   a token is revoked only after a deploy that uses its replacement concluded `success`
 *   and every smoke check passed.
 *
 * The clients below it know HTTP; nothing below it decides whether a token may be revoked.
 * Phases: preflight (read-only) → mint → verify → publish → deploy → smoke → revoke → report.
 */
import * as core from '@actions/core'
import type { Settings, SecretField } from './settings.js'
import {
  type ApiToken,
  type TokenApi,
  type TokenOwner,
  clonePolicies,
  resolveCurrentToken,
  sameCondition,
  samePolicies
} from './cloudflare/tokens.js'
import {
  type Jurisdiction,
  type S3Credentials,
  type TokenScope,
  accountIdFromPolicies,
  classifyScope,
  deriveS3Credentials,
  r2Endpoint
} from './cloudflare/r2.js'
import { probeBucket } from './cloudflare/probe.js'
import type { GitHubClient } from './github/client.js'
import { type SecretWriter, describeTarget } from './github/secrets.js'
import { type WorkflowInfo, dispatchWorkflow, followRun, inspectWorkflow } from './github/deploy.js'
import { type SmokeResult, runSmokeChecks } from './smoke.js'
import { expandTokenName } from './token-name.js'
import { retryUntil, sleep } from './backoff.js'
import { mask, maskToken } from './mask.js'
import { errorMessage } from './errors.js'

export type Result = 'rotated' | 'skipped' | 'rolled-back' | 'dry-run' | 'failed'
export type PhaseName =
  'preflight' | 'mint' | 'verify' | 'publish' | 'deploy' | 'smoke' | 'revoke' | 'cleanup'

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
  /** The plan, for dry-run and the summary. */
  plan: string[]
}

export interface RotationContext {
  settings: Settings
  tokens: TokenApi
  github: GitHubClient
  secrets: SecretWriter
  now?: () => Date
  sleep?: (ms: number) => Promise<void>
}

/** How long a new token may take to work everywhere (api-facts: "retry the probe with backoff for about two minutes"). */
const PROPAGATION_DEADLINE_MS = 120_000

/** A failure with the phase it happened in; its message says what to do. */
export class RotationError extends Error {
  constructor(
    readonly phase: PhaseName,
    message: string
  ) {
    super(message)
    this.name = 'RotationError'
  }
}

interface Plan {
  owner: TokenOwner
  current: ApiToken
  accountId?: string
  scope: TokenScope
  probe?: { mode: 'read' | 'write'; bucket: string; endpoint: string }
  workflow?: WorkflowInfo
  deployRef?: string
  newName: string
  expiresOn?: string
  due: boolean
  dueAt?: Date
}

interface RunState {
  owner?: TokenOwner
  minted?: Minted
  publishStarted: boolean
}

interface Minted {
  token: ApiToken
  value: string
  credentials: S3Credentials
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
  // What has been changed so far; decides the clean-up when a phase fails.
  const state: RunState = { publishStarted: false }

  try {
    const plan = await phase(report, 'preflight', () => preflight(ctx, report, now()))
    state.owner = plan.owner
    if (!plan.due) {
      report.result = 'skipped'
      core.notice(
        `Token ${plan.current.id} is not due for rotation yet (rotate-after); it will be due on ${plan.dueAt?.toISOString()}. Set force: true to rotate now.`
      )
      return report
    }
    if (settings.dryRun) {
      report.result = 'dry-run'
      for (const line of report.plan) core.info(`plan: ${line}`)
      return report
    }

    const minted = await phase(report, 'mint', () => mint(ctx, report, plan, state))
    await phase(report, 'verify', () => verifyNewToken(ctx, report, plan, minted))

    state.publishStarted = true
    await phase(report, 'publish', () => publish(ctx, report, minted))

    if (plan.workflow && settings.deploy) {
      await phase(report, 'deploy', () => deploy(ctx, report, plan))
    }
    await phase(report, 'smoke', () => smoke(ctx, report, plan, minted))

    // The invariant: we only get here after the deploy concluded success and every smoke check passed.
    await phase(report, 'revoke', () => revoke(ctx, report, plan))
    report.result = 'rotated'
    return report
  } catch (error) {
    report.result = 'failed'
    const failedPhase = error instanceof RotationError ? error.phase : undefined
    report.error = errorMessage(error)
    const { minted, owner } = state
    if (minted && owner && !state.publishStarted) {
      // Nothing reads the new token yet: delete it so that a failed run leaves no orphan.
      await cleanupUnpublished(ctx, report, owner, minted)
    } else if (minted && state.publishStarted) {
      // Both tokens stay valid: the old one may still serve traffic and the new one is in (some of) the secrets.
      report.error +=
        `\nState: the new token ${minted.token.id} was published to ${report.secretsWritten.length} of ` +
        `${settings.secrets.length * settings.secretTargets.length} secret(s); the previous token ` +
        `${report.previousTokenId} was NOT revoked. Both tokens are valid, so nothing that uses either ` +
        `stops working. Fix the cause${failedPhase ? ` (phase ${failedPhase})` : ''} and run the rotation again, ` +
        `passing the new token as current-token/current-access-key-id if the secrets now hold it; ` +
        `then delete whichever token is no longer in the secrets.`
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

// ---------------------------------------------------------------- preflight (read-only)

async function preflight(ctx: RotationContext, report: RotationReport, now: Date): Promise<Plan> {
  const { settings, tokens } = ctx

  const { owner, token: current } = await resolveCurrentToken(tokens, {
    tokenOwner: settings.tokenOwner,
    accountId: settings.accountId,
    currentToken: settings.currentToken,
    currentAccessKeyId: settings.currentAccessKeyId
  })
  report.owner = owner.kind
  report.previousTokenId = current.id
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
  if (settings.currentAccessKeyId && settings.currentToken) {
    // Both given: they must name the same token, or the secrets would be restored to a mismatched pair.
    const verified = await tokens.verify(settings.currentToken, owner)
    if (verified.id !== current.id) {
      throw new RotationError(
        'preflight',
        `Inputs 'current-token' and 'current-access-key-id' name different tokens (${verified.id} and ${current.id}). Pass the pair the deployments use now.`
      )
    }
  }

  const groups = await tokens.permissionGroups(owner)
  const groupNames = new Map(groups.map(g => [g.id, g.name]))
  const scope = classifyScope(current.policies, groupNames)
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
  const due = settings.force || settings.rotateAfterMs === 0 || !dueAt || dueAt <= now

  const probe = planProbe(settings, scope, accountId)
  if (probe) core.info(`R2 probe: ${probe.mode} on bucket ${probe.bucket} at ${probe.endpoint}`)
  else core.info('R2 probe: off')

  for (const target of settings.secretTargets) {
    await ctx.secrets.preflight(
      target,
      settings.secrets.map(s => s.name)
    )
  }

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
  return {
    owner,
    current,
    accountId,
    scope,
    probe,
    workflow,
    deployRef,
    newName,
    expiresOn,
    due,
    dueAt
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

/** Cloudflare stores token times to the second (RFC 3339 without fractions). */
function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

// ---------------------------------------------------------------- mint

async function mint(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  state: RunState
): Promise<Minted> {
  const body = {
    name: plan.newName,
    policies: clonePolicies(plan.current.policies),
    ...(plan.current.condition !== undefined && plan.current.condition !== null
      ? { condition: plan.current.condition }
      : {}),
    ...(plan.expiresOn ? { expires_on: plan.expiresOn } : {})
  }
  // Never retried: a repeated create could mint a duplicate (TokenApi.create sends maxRetries: 0).
  const { token, value } = await ctx.tokens.create(plan.owner, body)
  maskToken(value)
  const credentials = deriveS3Credentials({ id: token.id, value })
  mask(credentials.secretAccessKey)
  report.tokenId = token.id
  report.tokenName = token.name
  report.accessKeyId = credentials.accessKeyId
  report.expiresOn = token.expires_on ?? plan.expiresOn
  core.info(`Minted token ${token.id} "${token.name}"`)
  const minted: Minted = { token, value, credentials }
  state.minted = minted

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
  return minted
}

// ---------------------------------------------------------------- verify

async function verifyNewToken(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  minted: Minted
): Promise<void> {
  let lastError = ''
  const verified = await retryUntil<boolean>(
    async () => {
      try {
        const answer = await ctx.tokens.verify(minted.value, plan.owner)
        if (answer.id === minted.token.id && answer.status === 'active') {
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
      `The new token ${minted.token.id} did not verify as active: ${lastError}`
    )
  }
  core.info(`Token ${minted.token.id} verifies as active`)
  await probeR2(ctx, report, plan, minted, 'verify')
}

async function probeR2(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  minted: Minted,
  phaseName: PhaseName
): Promise<void> {
  if (!plan.probe) return
  const result = await probeBucket({
    endpoint: plan.probe.endpoint,
    bucket: plan.probe.bucket,
    credentials: minted.credentials,
    mode: plan.probe.mode,
    deadlineMs: PROPAGATION_DEADLINE_MS
  })
  report.probe = { mode: plan.probe.mode, bucket: plan.probe.bucket, ok: result.ok }
  if (!result.ok) {
    throw new RotationError(
      phaseName,
      `The R2 ${plan.probe.mode} probe of bucket ${plan.probe.bucket} with the new credentials failed after ${result.attempts} attempt(s): ${result.reason}`
    )
  }
  core.info(
    `R2 ${plan.probe.mode} probe of ${plan.probe.bucket} passed (${result.attempts} attempt(s))`
  )
}

// ---------------------------------------------------------------- publish

function valueFor(field: SecretField, minted: Minted): string {
  switch (field) {
    case 'token':
      return minted.value
    case 'access-key-id':
      return minted.credentials.accessKeyId
    case 'secret-access-key':
      return minted.credentials.secretAccessKey
  }
}

async function publish(
  ctx: RotationContext,
  report: RotationReport,
  minted: Minted
): Promise<void> {
  const { settings } = ctx
  const total = settings.secretTargets.length * settings.secrets.length
  let n = 0
  for (const target of settings.secretTargets) {
    for (const secret of settings.secrets) {
      n++
      const outcome = await ctx.secrets.write(target, secret.name, valueFor(secret.field, minted))
      report.secretsWritten.push(`${describeTarget(target)} ${secret.name}`)
      core.info(`[${n}/${total}] ${target.line} ${secret.name} (${outcome})`)
    }
  }
}

// ---------------------------------------------------------------- deploy

async function deploy(ctx: RotationContext, report: RotationReport, plan: Plan): Promise<void> {
  const deploySettings = ctx.settings.deploy!
  const run = await dispatchWorkflow(
    ctx.github,
    deploySettings.repository,
    plan.workflow!,
    plan.deployRef!,
    deploySettings.inputs
  )
  report.deployRunId = run.runId
  report.deployRunUrl = run.htmlUrl
  core.info(`Dispatched deploy run ${run.runId}: ${run.htmlUrl}`)
  let lastStatus = ''
  const outcome = await followRun(ctx.github, deploySettings.repository, run.runId, {
    timeoutMs: deploySettings.timeoutMs,
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
        ? `Deploy run ${run.runId} did not conclude within deploy-timeout; it was left running: ${run.htmlUrl}`
        : `Deploy run ${run.runId} concluded ${outcome.conclusion}${jobs ? ` — failed: ${jobs}` : ''}: ${run.htmlUrl}`
    )
  }
  core.info(`Deploy run ${run.runId} concluded success`)
}

// ---------------------------------------------------------------- smoke

async function smoke(
  ctx: RotationContext,
  report: RotationReport,
  plan: Plan,
  minted: Minted
): Promise<void> {
  const { checks, headers, timeoutMs } = ctx.settings.smoke
  for (const value of Object.values(headers)) mask(value)
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
  await probeR2(ctx, report, plan, minted, 'smoke')
}

// ---------------------------------------------------------------- revoke

async function revoke(ctx: RotationContext, report: RotationReport, plan: Plan): Promise<void> {
  const { settings } = ctx
  if (settings.revokeGraceMs > 0) {
    core.info(
      `Waiting ${Math.round(settings.revokeGraceMs / 1000)} s (revoke-grace) before revoking`
    )
    await (ctx.sleep ?? sleep)(settings.revokeGraceMs)
  }
  switch (settings.revoke) {
    case 'delete': {
      const outcome = await ctx.tokens.delete(plan.owner, plan.current.id)
      report.revoked = outcome === 'deleted' ? 'deleted' : 'already-gone'
      core.info(
        outcome === 'deleted'
          ? `Deleted the previous token ${plan.current.id}`
          : `The previous token ${plan.current.id} was already gone`
      )
      return
    }
    case 'disable':
      await ctx.tokens.setStatus(plan.owner, plan.current, 'disabled')
      report.revoked = 'disabled'
      core.info(`Disabled the previous token ${plan.current.id}`)
      return
    case 'keep':
      report.revoked = 'kept'
      core.info(`Kept the previous token ${plan.current.id} (revoke: keep)`)
      return
  }
}

// ---------------------------------------------------------------- cleanup

async function cleanupUnpublished(
  ctx: RotationContext,
  report: RotationReport,
  owner: TokenOwner,
  minted: Minted
): Promise<void> {
  try {
    await phase(report, 'cleanup', async () => {
      await ctx.tokens.delete(owner, minted.token.id)
      core.info(`Deleted the unpublished new token ${minted.token.id}; nothing else was changed`)
    })
    report.tokenId = undefined
    report.accessKeyId = undefined
    report.expiresOn = undefined
  } catch (error) {
    report.error += `\nThe new token ${minted.token.id} could not be deleted (${errorMessage(error)}); it is in no secret, so delete it by hand.`
  }
}
