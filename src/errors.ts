import type { PhaseName } from './rotation.js'

/** A printable message for anything thrown. Clients build their messages without values. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message
  return String(error)
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

/**
 * The innermost system error code or message of a failed request (ECONNREFUSED, ECONNRESET…),
 * for messages that say why there was no answer. Empty when there is none.
 */
export function rootCause(error: unknown): string {
  let current: unknown = error
  let last = ''
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code
    const text = typeof code === 'string' ? code : current.message
    // SDKs wrap non-Error causes as `new Error(JSON.stringify(cause))`, often `{}`.
    if (text && text !== '{}') last = text
    current = (current as { cause?: unknown }).cause
  }
  return last
}
