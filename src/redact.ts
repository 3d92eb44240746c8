/**
 * The one scrubber. Every text this action prints (log lines, annotations, the job summary,
 * outputs, the journal) passes through `scrub`, which removes every registered secret value and
 * the forms derived from it, every ciphertext this run produced and every Authorization header.
 * Texts that servers sent back are quoted only through `quoteServer`, which also shortens them:
 * an error body can echo a request's headers and body, a ciphertext or a token among them.
 *
 * Registering a value here does not print anything; `log.mask` registers a value and also asks
 * the runner to mask it.
 */
import { createHash } from 'node:crypto'

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex')
}

/** Values removed from every printed text, longest first so that none is half-removed. */
const values = new Set<string>()
let ordered: string[] = []

/** Shorter strings are too likely to occur by chance and carry no secret worth the noise. */
const SHORTEST_SECRET = 8

export function register(value: string | undefined): void {
  if (!value || value.length < SHORTEST_SECRET || values.has(value)) return
  values.add(value)
  ordered = [...values].sort((a, b) => b.length - a.length)
}

/** The forms of a token value that could reach a log: itself, base64, and its SHA-256. */
export function tokenForms(value: string): string[] {
  return [value, Buffer.from(value, 'utf8').toString('base64'), sha256Hex(value)]
}

const REDACTED = '***'

/**
 * Authorization headers in any of the shapes a server may echo them: `Authorization: Bearer x`,
 * JSON `"authorization":"token x"`, a bare `Bearer x`, and SigV4's `Signature=…`.
 */
const AUTHORIZATION = [
  /(authorization["']?\s*[:=]\s*["']?)(?:(?:bearer|token|basic)\s+)?[^\s"',;}]+/gi,
  /\b(bearer\s+)[A-Za-z0-9._~+/=-]+/gi,
  /\b(Signature=)[0-9a-f]+/g
]

export function scrub(text: string): string {
  let out = text
  for (const value of ordered) {
    if (out.includes(value)) out = out.split(value).join(REDACTED)
  }
  for (const pattern of AUTHORIZATION) out = out.replace(pattern, `$1${REDACTED}`)
  return out
}

/** Server texts longer than this are cut: a message worth reading is short. */
export const SERVER_TEXT_MAX = 300

/** A text a server sent, fit to quote in a message: scrubbed, on one line, cut to a safe length. */
export function quoteServer(text: string, max = SERVER_TEXT_MAX): string {
  const line = scrub(text).replace(/\s+/g, ' ').trim()
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`
}
