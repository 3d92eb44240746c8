/**
 * What the Cloudflare simulator shares with the account APIs it routes (sandbox/access.ts,
 * sandbox/workers.ts): the `{success, errors, messages, result}` envelope, Cloudflare's timestamp
 * form, and the contract between the router and an account API. The router (CloudflareSim)
 * validates the request against the excerpt, spends the rate budget, authenticates the API token
 * and checks its permission groups on the account; the account API only does the work.
 */

export interface ErrorItem {
  code: number
  message: string
  error_chain?: Array<{ code: number; message: string }>
}

/** An answer before it is sent: a status and the JSON envelope. */
export interface Outcome {
  status: number
  body: Record<string, unknown>
}

export function success(result: unknown, extra: Record<string, unknown> = {}): Outcome {
  return { status: 200, body: { success: true, errors: [], messages: [], result, ...extra } }
}

export function failure(status: number, ...errors: ErrorItem[]): Outcome {
  return { status, body: { success: false, errors, messages: [], result: null } }
}

/** Cloudflare timestamps carry whole seconds (`2018-07-01T05:20:00Z`). */
export function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** One routed call of an account API, after validation, authentication and authorization. */
export interface AccountCall {
  operationId: string
  /** The `{account_id}` of the path. */
  accountId: string
  /** The other path parameters, as the router matched them (not URL-decoded). */
  params: Record<string, string>
  query: URLSearchParams
  /** The parsed JSON body (undefined when there was none). */
  body: unknown
  /** The API token that made the call (for events; never its value). */
  caller: { id: string; name: string }
}

/**
 * An API under `/accounts/{account_id}/…` that the Cloudflare simulator routes: the operations of
 * the excerpt it serves, each with the permission groups (by name) any one of which lets a token
 * call it on the account.
 */
export interface AccountApi {
  readonly operations: Readonly<Record<string, readonly string[]>>
  handle(call: AccountCall): Outcome
}

/** The simulator's clock, `cloudflare.now()` (epoch milliseconds, skewable). */
export type Clock = () => number
