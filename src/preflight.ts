/**
 * Every read that preflight makes, returning plain facts. Nothing here decides (decide.ts does)
 * and nothing here changes anything: a failure at this stage leaves the world as it was.
 */
import type { ApiToken, Credentials, JournalRecord, SmokeResult, TokenOwner } from './model.js'
import type { RotationContext } from './context.js'
import { type JournalRunState, type ProbePlan, locationRefusal } from './decide.js'
import { RotationError } from './errors.js'
import { mask } from './log.js'
import { sha256Hex } from './redact.js'
import { CloudflareApiError, resolveCurrentToken } from './cloudflare/tokens.js'
import { type ManagementToken, verifyManagementToken } from './cloudflare/management.js'
import { probeBucket } from './cloudflare/probe.js'
import { type JobEnvironment, type WorkflowInfo, getRun, inspectWorkflow } from './github/deploy.js'
import { type SmokeOptions, runSmokeChecks } from './smoke.js'

export interface CloudflareFacts {
  management: ManagementToken
  owner: TokenOwner
  /** The token the current-* inputs name (the one in use now). */
  resolved: ApiToken
  /** What the current-* inputs tell, one entry per token they name. */
  known: Credentials[]
  /**
   * Where Cloudflare refused the current token from this runner (its IP condition), when a
   * verify with it was refused: the address it saw, or ''.
   */
  refusedFrom?: string
  /** Why the inputs do not describe one token, when they do not. */
  inputsMismatch?: string
  /** Permission group id → name, to classify policies by name. */
  groupNames: Map<string, string>
  /** Every live token of the owner. */
  ownerTokens: ApiToken[]
  journal?: JournalRecord
  /** What the journal's run is doing now (for an unsettled journal). */
  journalRun: JournalRunState
  /** Its status and link as GitHub shows them, when it was read. */
  journalRunDetail?: { status: string; url: string }
}

/** The management token, the token in use, its owner's tokens, the journal. */
export async function readCloudflare(ctx: RotationContext): Promise<CloudflareFacts> {
  const { settings, tokens } = ctx
  // The journal is read while the Cloudflare SDK loads (its first call imports it): the first
  // request leaves sooner, and a failing verify still reports first.
  const journalRead = ctx.journal.read()
  journalRead.catch(() => undefined)
  const management = await verifyManagementToken(
    tokens,
    settings.cloudflareApiToken,
    settings.accountId
  )
  const { owner, token: resolved } = await resolveCurrentToken(tokens, {
    tokenOwner: settings.tokenOwner,
    ...(settings.accountId ? { accountId: settings.accountId } : {}),
    ...(settings.currentToken ? { currentToken: settings.currentToken } : {}),
    ...(settings.currentAccessKeyId ? { currentAccessKeyId: settings.currentAccessKeyId } : {})
  }).catch((error: unknown) => {
    // Only a verify from here could name the token (no current-access-key-id), and its IP
    // condition refuses this runner: nothing to go on (the refusal's text is decide.ts's).
    const refusedFrom = refusedFromOf(error)
    if (refusedFrom === undefined) throw error
    throw new RotationError(
      'preflight',
      locationRefusal({
        refusedFrom,
        needsVerify: true,
        probePlanned: settings.r2.probe !== 'off'
      })!
    )
  })
  const { known, mismatch, refusedFrom } = await readKnownCredentials(ctx, owner, resolved.id)
  const journal = await journalRead
  const settled = !journal || journal.phase === 'done' || journal.phase === 'rolled-back'
  const run = settled ? undefined : await readRun(ctx, journal.run_id)
  const ownerTokens = await tokens.list(owner)
  const groups = await tokens.permissionGroups(owner)
  return {
    management,
    owner,
    resolved,
    known,
    ...(refusedFrom !== undefined ? { refusedFrom } : {}),
    ...(mismatch ? { inputsMismatch: mismatch } : {}),
    groupNames: new Map(groups.map(g => [g.id, g.name])),
    ownerTokens,
    ...(journal ? { journal } : {}),
    journalRun: run?.state ?? 'unknown',
    ...(run?.detail ? { journalRunDetail: run.detail } : {})
  }
}

/** The state of a workflow run of the repository the action runs in, by its id. */
export async function runState(ctx: RotationContext, runId: string): Promise<JournalRunState> {
  return (await readRun(ctx, runId)).state
}

async function readRun(
  ctx: RotationContext,
  runId: string
): Promise<{ state: JournalRunState; detail?: { status: string; url: string } }> {
  if (!runId) return { state: 'unknown' }
  if (runId === ctx.settings.runId) return { state: 'self' }
  const id = Number(runId)
  if (!Number.isSafeInteger(id) || id <= 0) return { state: 'unknown' }
  let run: Awaited<ReturnType<typeof getRun>>
  try {
    run = await getRun(ctx.github, ctx.settings.repository, id)
  } catch (error) {
    throw new RotationError(
      'preflight',
      `Cannot tell whether run ${runId} is still going: ${(error as Error).message}`
    )
  }
  if (!run) return { state: 'gone' }
  const detail = { status: run.status ?? 'unknown', url: run.htmlUrl }
  return { state: run.status === 'completed' ? 'completed' : 'running', detail }
}

/**
 * What the current-* inputs say, one entry per token they name. They normally name one token;
 * after a run was killed midway through publishing they may name two (the secrets hold a mix).
 * The R2 secret belongs to the token whose value hashes to it, else to `current-access-key-id`'s;
 * when both name one token and the secret is not its own, it belongs to a token the inputs do not
 * name (a mix again) and is left out. `mismatch` says why the inputs do not describe one token.
 */
async function readKnownCredentials(
  ctx: RotationContext,
  owner: TokenOwner,
  resolvedId: string
): Promise<{ known: Credentials[]; mismatch?: string; refusedFrom?: string }> {
  const { currentToken, currentAccessKeyId, currentSecretAccessKey } = ctx.settings
  const known: Credentials[] = []
  let tokenId: string | undefined
  let refusedFrom: string | undefined
  if (currentToken) {
    tokenId = resolvedId
    if (currentAccessKeyId) {
      try {
        tokenId = (await ctx.tokens.verify(currentToken, owner)).id
      } catch (error) {
        // Its IP condition refuses this runner: the value is taken to be current-access-key-id's
        // (it cannot be checked from here; decide.ts says what that means for the run).
        refusedFrom = refusedFromOf(error)
        if (refusedFrom === undefined) throw error
        tokenId = currentAccessKeyId
      }
    }
    const secretAccessKey = sha256Hex(currentToken)
    mask(secretAccessKey)
    known.push({ id: tokenId, value: currentToken, secretAccessKey })
  }
  if (currentAccessKeyId && currentAccessKeyId !== tokenId) {
    const secretBelongsToKey =
      currentSecretAccessKey !== undefined &&
      (!currentToken || sha256Hex(currentToken) !== currentSecretAccessKey)
    known.push({
      id: currentAccessKeyId,
      ...(secretBelongsToKey ? { secretAccessKey: currentSecretAccessKey } : {})
    })
  } else if (currentAccessKeyId && currentSecretAccessKey && known[0]) {
    // Same token: the given secret must be its own (else a rollback would restore a broken pair).
    if (known[0].secretAccessKey !== currentSecretAccessKey) {
      return {
        known,
        ...(refusedFrom !== undefined ? { refusedFrom } : {}),
        mismatch: `Input 'current-secret-access-key' does not belong to current-token (an R2 Secret Access Key is the SHA-256 of its token value). Pass the secrets of the same token.`
      }
    }
  }
  if (known.length > 1) {
    return {
      known,
      ...(refusedFrom !== undefined ? { refusedFrom } : {}),
      mismatch: `Inputs 'current-token' and 'current-access-key-id' name different tokens (${known.map(k => k.id).join(' and ')}). Pass the values the deployments use now, from the same token.`
    }
  }
  return { known, ...(refusedFrom !== undefined ? { refusedFrom } : {}) }
}

/** The address of an IP-condition refusal (see `CloudflareApiError.refusedFrom`), else undefined. */
function refusedFromOf(error: unknown): string | undefined {
  return error instanceof CloudflareApiError ? error.refusedFrom : undefined
}

// ------------------------------------------------------------------------------- GitHub

export interface DeployFacts {
  workflow: WorkflowInfo
  /** The ref the run is dispatched on: `deploy-ref`, or the repository's default branch. */
  ref: string
  /** For each job environment with a name: which of the rotated secrets it holds itself. */
  environmentSecrets: Array<{ job: string; environment: string; secret: string; exists?: boolean }>
  /** Environments named by an expression, which cannot be checked before the run. */
  computedEnvironments: Array<Extract<JobEnvironment, { expression: string }>>
  /** When an org target exists: which of the rotated secrets the deploy repository holds itself. */
  repositorySecrets: Array<{ secret: string; exists?: boolean }>
}

/**
 * Every secret target's public key (and an org secret's visibility): one error names every line
 * that cannot be written.
 */
export async function readTargets(ctx: RotationContext): Promise<void> {
  await ctx.secrets.preflightAll(
    ctx.settings.secretTargets,
    ctx.settings.secrets.map(s => s.name)
  )
}

/**
 * The deploy workflow (active, dispatchable, inputs declared) and, for the secrets it will read:
 * whether an environment its jobs run in, or the repository under an organization secret, holds
 * its own copy (names only, never values).
 */
export async function readDeploy(ctx: RotationContext): Promise<DeployFacts | undefined> {
  const deploy = ctx.settings.deploy
  if (!deploy) return undefined
  // A dispatched run uses the workflow file as it is at the ref it runs on.
  const workflow = await inspectWorkflow(
    ctx.github,
    deploy.repository,
    deploy.workflow,
    deploy.inputs,
    deploy.ref
  )
  const names = ctx.settings.secrets.map(s => s.name)
  const environmentSecrets: DeployFacts['environmentSecrets'] = []
  const computedEnvironments: DeployFacts['computedEnvironments'] = []
  const asked = new Set<string>()
  for (const env of workflow.environments) {
    if ('expression' in env) {
      computedEnvironments.push(env)
      continue
    }
    for (const secret of names) {
      const key = `${env.name.toLowerCase()}/${secret.toUpperCase()}`
      const exists = asked.has(key)
        ? environmentSecrets.find(
            e => e.environment.toLowerCase() === env.name.toLowerCase() && e.secret === secret
          )?.exists
        : await ctx.secrets.exists({ ...deploy.repository, environment: env.name }, secret)
      asked.add(key)
      environmentSecrets.push({
        job: env.job,
        environment: env.name,
        secret,
        ...(exists === undefined ? {} : { exists })
      })
    }
  }
  const repositorySecrets: DeployFacts['repositorySecrets'] = []
  if (ctx.settings.secretTargets.some(t => t.kind === 'org')) {
    for (const secret of names) {
      const exists = await ctx.secrets.exists(deploy.repository, secret)
      repositorySecrets.push({ secret, ...(exists === undefined ? {} : { exists }) })
    }
  }
  return {
    workflow,
    ref: deploy.ref ?? workflow.defaultBranch,
    environmentSecrets,
    computedEnvironments,
    repositorySecrets
  }
}

// ------------------------------------------------------------------------------- the app, now

/** Baseline checks run with a short budget: the app is expected to be up already. */
export const BASELINE_TIMEOUT_MS = 30_000
const BASELINE_PROBE_DEADLINE_MS = 10_000

/**
 * The app before anything changes: every smoke check once (retried briefly), with the ids of the
 * tokens that may be serving now for `{access-key-id}`; and a read-only R2 probe with the current
 * credentials when they are known.
 */
export async function readBaseline(
  ctx: RotationContext,
  servingIds: string[],
  probe: { plan: ProbePlan; endpoint: string; credentials: Credentials } | undefined
): Promise<{
  smoke: SmokeResult[]
  probe?: { ok: true } | { ok: false; reason: string }
}> {
  const smokeRun = runBaselineSmoke(ctx, { placeholders: { 'access-key-id': servingIds } })
  const probeRun =
    probe?.credentials.secretAccessKey !== undefined
      ? probeBucket({
          endpoint: probe.endpoint,
          bucket: probe.plan.bucket,
          credentials: {
            accessKeyId: probe.credentials.id,
            secretAccessKey: probe.credentials.secretAccessKey
          },
          // Read-only, whatever the rotation will probe later: preflight changes nothing.
          mode: 'read',
          deadlineMs: BASELINE_PROBE_DEADLINE_MS,
          clock: ctx.clock
        })
      : undefined
  const [smoke, probed] = await Promise.all([smokeRun, probeRun])
  return {
    smoke,
    ...(probed ? { probe: probed.ok ? { ok: true } : { ok: false, reason: probed.reason } } : {})
  }
}

/**
 * Every smoke check once before anything changes (retried briefly: the app is expected to be up
 * already), with the placeholders standing for the credentials in use now.
 */
export function runBaselineSmoke(
  ctx: RotationContext,
  fill: Pick<SmokeOptions, 'placeholders' | 'values'>
): Promise<SmokeResult[]> {
  const { checks, headers, timeoutMs } = ctx.settings.smoke
  if (checks.length === 0) return Promise.resolve([])
  return runSmokeChecks(checks, Math.min(timeoutMs, BASELINE_TIMEOUT_MS), {
    headers,
    ...fill,
    clock: ctx.clock
  })
}
