import * as core from '@actions/core'
import { sha256Hex } from './cloudflare/r2.js'

/**
 * The one masking helper. `core.setSecret` only registers a mask for the exact string, so each
 * derived form that could ever reach a log is registered on its own (api-facts: "Mask every
 * derived form separately"). Registering prints `::add-mask::<value>` — the only place a value is
 * ever written — so each value is registered once per process.
 */
const masked = new Set<string>()

export function mask(value: string | undefined): void {
  if (!value || masked.has(value)) return
  masked.add(value)
  core.setSecret(value)
}

/** Masks a token value, its base64 form and the R2 Secret Access Key derived from it. */
export function maskToken(value: string | undefined): void {
  if (!value) return
  mask(value)
  mask(Buffer.from(value, 'utf8').toString('base64'))
  mask(sha256Hex(value))
}
