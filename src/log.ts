/**
 * Everything the action writes for the runner goes through here, and through the scrubber
 * (redact.ts) on its way: log lines, annotations, groups, outputs, the job summary and the step's
 * failure. No other module imports @actions/core (an ESLint rule keeps it so).
 *
 * `mask` is the one masking helper. `core.setSecret` registers a mask for the exact string only,
 * so each derived form that could reach a log is registered on its own (api-facts: "Mask every
 * derived form separately"). Registering prints `::add-mask::<value>`, the only place a value is
 * ever written, so each value is registered once per process.
 */
import * as core from '@actions/core'
import { register, scrub, tokenForms } from './redact.js'

const masked = new Set<string>()

/** Masks a value for the runner and removes it from everything this action prints. */
export function mask(value: string | undefined): void {
  if (!value || masked.has(value)) return
  masked.add(value)
  core.setSecret(value)
  register(value)
}

/** Masks a token value, its base64 form and the R2 Secret Access Key derived from it. */
export function maskToken(value: string | undefined): void {
  if (!value) return
  for (const form of tokenForms(value)) mask(form)
}

/** The log interface the clients take (tests pass their own). */
export interface Log {
  info(message: string): void
  warning(message: string): void
  debug(message: string): void
}

export const log = {
  info: (message: string): void => core.info(scrub(message)),
  warning: (message: string): void => core.warning(scrub(message)),
  /** An error annotation. A failure of the step is reported once, by `fail`, not with this. */
  error: (message: string): void => core.error(scrub(message)),
  notice: (message: string): void => core.notice(scrub(message)),
  debug: (message: string): void => core.debug(scrub(message)),
  startGroup: (name: string): void => core.startGroup(scrub(name)),
  endGroup: (): void => core.endGroup()
}

/** Fails the step: one `::error::` annotation and exit code 1. */
export function fail(message: string): void {
  core.setFailed(scrub(message))
}

export function setOutput(name: string, value: string): void {
  core.setOutput(name, scrub(value))
}

/** Replaces the step's job summary with `markdown` (a no-op outside the runner). */
export async function writeSummary(markdown: string): Promise<void> {
  if (!process.env.GITHUB_STEP_SUMMARY) return
  core.summary.emptyBuffer()
  await core.summary.addRaw(scrub(markdown)).write()
}

/** The summary builder of @actions/core, for report.ts to compose tables with. */
export function summaryBuilder(): typeof core.summary {
  return core.summary.emptyBuffer()
}
