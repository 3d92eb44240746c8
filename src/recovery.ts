/**
 * Reading an unfinished rotation: what the current-* inputs say about the tokens in the secrets,
 * whether the run that wrote the journal is still going, and which way the rotation can be
 * finished (rotation.ts carries it out).
 */
import type { RotationContext } from './rotation.js'
import type { TokenOwner } from './cloudflare/tokens.js'
import { sha256Hex } from './cloudflare/r2.js'
import { describeGitHubError, httpStatus } from './github/client.js'
import { mask } from './mask.js'
import { RotationError } from './errors.js'
import type { Credentials } from './credentials.js'
import {
  type JournalRecord,
  type Recovery,
  decidePublishedRecovery,
  isPublished
} from './journal.js'

/**
 * What the current-* inputs say, one entry per token they name. They normally name one token;
 * after a run was killed midway through publishing they may name two (the secrets hold a mix).
 * The R2 secret belongs to the token whose value hashes to it, else to `current-access-key-id`'s;
 * when both name one token and the secret is not its own, it belongs to a token the inputs do not
 * name (a mix again) and is left out. `mismatch` says why the inputs do not describe one token.
 */
export async function knownCredentials(
  ctx: RotationContext,
  owner: TokenOwner,
  resolvedId: string
): Promise<{ known: Credentials[]; mismatch?: string }> {
  const { currentToken, currentAccessKeyId, currentSecretAccessKey } = ctx.settings
  const known: Credentials[] = []
  let tokenId: string | undefined
  if (currentToken) {
    tokenId = currentAccessKeyId ? (await ctx.tokens.verify(currentToken, owner)).id : resolvedId
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
        mismatch: `Input 'current-secret-access-key' does not belong to current-token (an R2 Secret Access Key is the SHA-256 of its token value). Pass the secrets of the same token.`
      }
    }
  } else if (currentAccessKeyId && !currentToken) {
    known.push({
      id: currentAccessKeyId,
      ...(currentSecretAccessKey ? { secretAccessKey: currentSecretAccessKey } : {})
    })
  }
  if (known.length > 1) {
    return {
      known,
      mismatch: `Inputs 'current-token' and 'current-access-key-id' name different tokens (${known.map(k => k.id).join(' and ')}). Pass the values the deployments use now, from the same token.`
    }
  }
  return { known }
}

export async function planRecovery(
  ctx: RotationContext,
  record: JournalRecord,
  known: Credentials[],
  owner: TokenOwner
): Promise<Recovery> {
  await refuseIfStillRunning(ctx, record)
  if (!isPublished(record.phase)) {
    // Minted, never published: the token(s) minted under the journal's name are orphans.
    let ids: string[]
    if (record.phase === 'minted' && record.pending_token_id) {
      ids = [record.pending_token_id]
    } else {
      const since = Date.parse(record.updated_at) - 1000 // Cloudflare times are whole seconds
      const inUse = new Set(known.map(k => k.id))
      ids = (await ctx.tokens.list(owner))
        .filter(
          t =>
            t.name === record.pending_token_name &&
            !inUse.has(t.id) &&
            t.id !== record.previous_token_id &&
            Date.parse(t.issued_on ?? '') >= since
        )
        .map(t => t.id)
    }
    return { kind: 'delete-unpublished', record, tokenIds: ids }
  }
  return decidePublishedRecovery(
    record,
    known,
    ctx.settings.secrets.map(s => s.field)
  )
}

/** A rotation whose run is still queued or in progress must not be touched (contract, crash safety). */
async function refuseIfStillRunning(ctx: RotationContext, record: JournalRecord): Promise<void> {
  if (!record.run_id || record.run_id === ctx.settings.runId) return
  const runId = Number(record.run_id)
  if (!Number.isSafeInteger(runId) || runId <= 0) return
  let status: string | null | undefined
  let url: string
  try {
    const { data } = await ctx.github.request('GET /repos/{owner}/{repo}/actions/runs/{run_id}', {
      ...ctx.settings.repository,
      run_id: runId
    })
    status = data.status
    url = data.html_url
  } catch (error) {
    if (httpStatus(error) === 404) return
    throw new RotationError(
      'preflight',
      `Cannot tell whether the rotation of run ${runId} is still running: ${describeGitHubError(error)}`
    )
  }
  if (status !== 'completed') {
    throw new RotationError(
      'preflight',
      `Another rotation is in progress in run ${runId} (${status}, phase ${record.phase}): ${url}. Nothing was changed. Let it finish, and use a 'concurrency:' group so that rotations of one token never overlap.`
    )
  }
}

export function describeRecovery(recovery: Recovery): string {
  switch (recovery.kind) {
    case 'delete-unpublished':
      return recovery.tokenIds.length
        ? `delete the unpublished token(s) ${recovery.tokenIds.join(', ')}, then rotate afresh`
        : 'no token was minted; rotate afresh'
    case 'forward':
      return `the secrets hold the new token ${recovery.next.id}: publish it everywhere, deploy, smoke-check, then revoke ${recovery.previousId}`
    case 'restore':
      return `the secrets hold the previous token ${recovery.previous.id}: restore it everywhere, deploy, smoke-check, delete ${recovery.pendingId}, then rotate afresh`
    case 'stuck':
      return `cannot finish it: ${recovery.reason}`
  }
}
