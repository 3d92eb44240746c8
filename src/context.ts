/**
 * What the rotation works with: the settings, one client per API, the journal, and time. Built
 * once by main.ts; the tests build their own against the sandbox.
 */
import type { Settings } from './model.js'
import type { Clock } from './backoff.js'
import type { TokenApi } from './cloudflare/tokens.js'
import type { GitHubClient } from './github/client.js'
import type { SecretWriter } from './github/secrets.js'
import type { Journal } from './journal.js'

export interface RotationContext {
  settings: Settings
  tokens: TokenApi
  github: GitHubClient
  secrets: SecretWriter
  journal: Journal
  /** Waits and durations (the sandbox runs it faster). */
  clock: Clock
}
