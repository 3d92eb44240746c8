/**
 * Errors the action raises, and how to read the ones it receives. No value is ever part of a
 * message: clients build theirs from status codes, Cloudflare error codes and server texts quoted
 * through the scrubber (log.ts).
 */
import type { PhaseName } from './model.js'

/** A bad input: names the input and says what is expected. Thrown before any side effect. */
export class InputError extends Error {
  constructor(
    readonly input: string,
    message: string
  ) {
    super(`Input '${input}': ${message}`)
    this.name = 'InputError'
  }
}

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

/** A printable message for anything thrown. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message
  return String(error)
}

/** A run's one annotation of its failure (main fails the step with it): it names the phase. */
export function failureText(error: unknown): string {
  return error instanceof RotationError
    ? `Phase ${error.phase} failed: ${error.message}`
    : errorMessage(error)
}

/**
 * The innermost system error code or message of a failed request (ECONNREFUSED, ECONNRESET…),
 * for messages that say why there was no answer. Empty when there is none. undici's codes are
 * given with their message, which tells more ("Proxy response (407) !== 200 when HTTP
 * Tunneling (UND_ERR_ABORTED)": a proxy refused the credentials).
 */
export function rootCause(error: unknown): string {
  let current: unknown = error
  let last = ''
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code
    const text =
      typeof code !== 'string'
        ? current.message
        : code.startsWith('UND_ERR_') && current.message && current.message !== code
          ? `${current.message} (${code})`
          : code
    // SDKs wrap non-Error causes as `new Error(JSON.stringify(cause))`, often `{}`.
    if (text && text !== '{}') last = text
    current = (current as { cause?: unknown }).cause
  }
  return last
}

/** The HTTP status a client error carries (Octokit's RequestError, CloudflareApiError), if any. */
export function httpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('status' in error)) return undefined
  const status = (error as { status: unknown }).status
  return typeof status === 'number' ? status : undefined
}

/**
 * Whether a request that failed this way may still have taken effect: no answer at all (a dropped
 * connection, a timeout: no status, or a client's explicit `ambiguous` flag), a request timeout
 * (408) or a server error (5xx). A non-idempotent request (a token create, a workflow dispatch)
 * that failed so is never sent again before the action looked for what it did.
 */
export function mayHaveTakenEffect(error: unknown): boolean {
  if ((error as { ambiguous?: unknown } | null)?.ambiguous === true) return true
  const status = httpStatus(error)
  return status === undefined || status === 408 || status >= 500
}
