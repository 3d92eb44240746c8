/** A printable message for anything thrown. Clients build their messages without values. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message
  return String(error)
}
