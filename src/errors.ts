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
