/**
 * Claiming and releasing the rotation lock: journal.ts stores it, decide.ts says when a held lock
 * may be taken over, and this carries it out.
 */
import type { RotationReport } from './model.js'
import type { RotationContext } from './context.js'
import { decideLock } from './decide.js'
import { RotationError, errorMessage } from './errors.js'
import { log } from './log.js'
import { warn } from './report.js'
import { runState } from './preflight.js'

/** How long a run that took over a stale lock waits before reading it back. */
export const LOCK_SETTLE_MS = 3000

/**
 * Claims the lock before anything changes; returns whether this run holds one (false without a
 * journal). Another run holding it ends this run with nothing changed but the refused claim.
 */
export async function claimLock(ctx: RotationContext): Promise<boolean> {
  const { journal, settings } = ctx
  if (!journal.enabled) return false
  const self = { id: settings.runId, attempt: settings.runAttempt }
  const created = await journal.createLock()
  if (created === 'claimed') return true
  let holder = await journal.readLock()
  // A create without an answer, and no lock now: it was not made; one more create settles it.
  if (!holder && created === 'unclear' && (await journal.createLock()) === 'claimed') return true
  holder ??= await journal.readLock()
  if (!holder || journal.isMine(holder)) return true
  const state = await runState(ctx, holder.run_id)
  const decision = decideLock(holder, state === 'self' ? 'running' : state, self)
  const refuse = (who: { run_id: string; run_attempt: number }, why: string): RotationError => {
    const link = who.run_id
      ? ` ${settings.githubServerUrl}/${settings.repository.owner}/${settings.repository.repo}/actions/runs/${who.run_id}`
      : ''
    return new RotationError(
      'preflight',
      `Another rotation holds the lock ${journal.lockName}: run ${who.run_id || '(unknown)'} (attempt ${who.run_attempt})${link}; ${why}. Nothing was changed. Use a 'concurrency:' group so that rotations of one token never overlap.`
    )
  }
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

export async function releaseLock(ctx: RotationContext, report: RotationReport): Promise<void> {
  try {
    await ctx.journal.releaseLock()
  } catch (error) {
    warn(
      report,
      `${errorMessage(error)} The next run takes a lock whose run has ended over, so nothing needs doing.`
    )
  }
}
