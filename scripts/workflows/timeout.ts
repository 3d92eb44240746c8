/**
 * How long a rotation job may run at worst, and so the least `timeout-minutes` its job needs: a
 * job cancelled midway through a rollback leaves both tokens valid and the journal `pending`.
 * docs/setup.md ("How long the job may run") documents the formula; `npm run lint:workflows`
 * checks every example and the reusable workflow against it.
 *
 * The worst case is a rotation that fails during the watch after the disable, as late as it can,
 * and then rolls back:
 *
 *   2 × deploy-timeout        the deploy run, then the rollback's deploy run
 * + 3 × smoke-timeout         the smoke phase, the checks that confirm the re-enabled token
 *                             serves again, and the rollback's checks
 * + revoke-grace + revoke-watch
 * + 10 minutes                preflight (baseline checks, at most 30 s), verify (the new token's
 *                             verify and the S3 probe, each retried up to 2 minutes while it
 *                             propagates), waits for rate limits, the job's own set-up
 * + ⌈secrets × targets ÷ 30⌉  the secret writes, about a second apart, once forward and once back
 *
 * With the defaults (30m, 5m, 0s, 2m) and three secrets in one target: 88 minutes. A run with
 * `rotate-management-token` has no deploy, smoke checks or watch (`revoke-grace` is an expiry
 * there, not a wait): 10 minutes and the writes of its one secret.
 */
import { parseDuration } from '../../src/settings.js'

/** Preflight, verify, rate-limit waits and the job's set-up, in minutes (see above). */
export const FIXED_MINUTES = 10

/** Secret writes per minute of the budget: one a second, written forward and written back. */
export const WRITES_PER_MINUTE = 30

/** A GitHub App installation token expires one hour after it is created. */
export const APP_TOKEN_MINUTES = 60

export interface TimeoutInputs {
  'deploy-timeout': string
  'smoke-timeout': string
  'revoke-grace': string
  'revoke-watch': string
  /** Lines of `secrets` (each a secret written to every target). */
  secrets: number
  /** Lines of `secret-targets`. */
  targets: number
}

const minutes = (text: string, input: string): number => parseDuration(text, input) / 60_000

/** The least `timeout-minutes` for a job that runs one rotation with these inputs. */
export function worstCaseMinutes(inputs: TimeoutInputs): number {
  const total =
    2 * minutes(inputs['deploy-timeout'], 'deploy-timeout') +
    3 * minutes(inputs['smoke-timeout'], 'smoke-timeout') +
    minutes(inputs['revoke-grace'], 'revoke-grace') +
    minutes(inputs['revoke-watch'], 'revoke-watch') +
    FIXED_MINUTES +
    Math.ceil((inputs.secrets * inputs.targets) / WRITES_PER_MINUTE)
  return Math.ceil(total)
}

/** `worstCaseMinutes` spelled out, for a finding a person can check by hand. */
export function worstCaseText(inputs: TimeoutInputs): string {
  return (
    `2 × ${inputs['deploy-timeout']} + 3 × ${inputs['smoke-timeout']} + ${inputs['revoke-grace']} + ` +
    `${inputs['revoke-watch']} + ${FIXED_MINUTES}m + ⌈${inputs.secrets} × ${inputs.targets} ÷ ${WRITES_PER_MINUTE}⌉m ` +
    `= ${worstCaseMinutes(inputs)} minutes`
  )
}
