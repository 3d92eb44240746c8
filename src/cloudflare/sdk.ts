/**
 * The official `cloudflare` SDK, with only the token resources, the Workers script secrets and
 * deployments, and the Access service tokens (`cloudflare/tree-shakable`; the `Base…` classes leave out their subresources).
 * tokens.ts loads this module on its first call (`import()`): the SDK's client module imports
 * every resource of the API, about 3 MB of the bundle and most of the start-up time, and ncc puts a
 * dynamically imported module into a chunk of its own.
 */
import { APIConnectionTimeoutError, APIError } from 'cloudflare/core/error'
import { createClient } from 'cloudflare/tree-shakable'
import { Tokens as UserTokens } from 'cloudflare/resources/user/tokens/tokens'
import { Tokens as AccountTokens } from 'cloudflare/resources/accounts/tokens/tokens'
import { BaseSecrets as WorkerSecrets } from 'cloudflare/resources/workers/scripts/secrets'
import { BaseDeployments as WorkerDeployments } from 'cloudflare/resources/workers/scripts/deployments'
import { BaseServiceTokens as AccessServiceTokens } from 'cloudflare/resources/zero-trust/access/service-tokens'
import type { Log } from '../log.js'
import { scrub } from '../redact.js'

export { APIConnectionTimeoutError, APIError }

/** What sees every answer (tokens.ts reads the rate-limit headers and the date). */
export interface AnswerObserver {
  observe(headers: Headers): void
}

export function makeClient(options: {
  apiToken: string
  baseURL: string
  timeoutMs: number
  rate: AnswerObserver
  log: Log
}) {
  const { rate, log } = options
  return createClient({
    resources: [UserTokens, AccountTokens, WorkerSecrets, WorkerDeployments, AccessServiceTokens],
    apiToken: options.apiToken,
    // Explicit nulls: the SDK would otherwise pick up CLOUDFLARE_API_KEY / CLOUDFLARE_EMAIL /
    // CLOUDFLARE_API_USER_SERVICE_KEY from the runner's environment and send them as well.
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL: options.baseURL,
    maxRetries: 0,
    timeout: options.timeoutMs,
    // Every answer's rate-limit headers and date are read, failed ones included.
    fetch: async (url, init) => {
      const response = await fetch(url, init)
      rate.observe(response.headers)
      return response
    },
    logLevel: 'warn',
    logger: {
      error: (message: string) => log.debug(scrub(message)),
      warn: (message: string) => log.debug(scrub(message)),
      info: () => undefined,
      debug: () => undefined
    }
  })
}

export type TokenClient = ReturnType<typeof makeClient>

export type Sdk = typeof import('./sdk.js')
