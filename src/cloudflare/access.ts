/**
 * Cloudflare Access service tokens of an account (`/accounts/{account_id}/access/service_tokens…`),
 * through the official SDK's `zeroTrust.access.serviceTokens` (credentials.md, "Cloudflare Access
 * service tokens"):
 *
 * - `get` reads the token (never a secret);
 * - `rotate` makes a new client secret and keeps the previous one valid until
 *   `previous_client_secret_expires_at`; it is never sent without that time (the API's default
 *   is "now": the previous secret would die at once), and never sent again after a failure that
 *   leaves open whether it happened (a second rotate would end the secret the first one kept);
 * - `setPreviousExpiry` moves that time with `PUT …/{id}` (earlier: closes the grace; later:
 *   extends or re-opens it). Setting the same time twice changes nothing, so it is retried.
 *
 * The calls go through the management token's client (tokens.ts): same retries, same rate budget.
 * The rotate's answer carries the new secret; it leaves this module only in the returned value.
 */
import type { ServiceTokenFacts } from '../decide.js'
import { CloudflareApiError, type TokenApi } from './tokens.js'

export { CloudflareApiError }

/** The permission group the rotation needs on the account. */
export const ACCESS_PERMISSION = 'Access: Service Tokens Write'

export function accessHint(accountId: string): string {
  return `The cloudflare-api-token needs '${ACCESS_PERMISSION}' on the account ${accountId} to read and rotate its service tokens (dashboard: My Profile → API Tokens → the management token → Edit → add Account › Access: Service Tokens › Edit for that account).`
}

export class AccessServiceTokens {
  constructor(
    private readonly api: TokenApi,
    readonly accountId: string
  ) {}

  async get(id: string): Promise<ServiceTokenFacts> {
    const token = await this.api.call(
      `read the service token ${id} (account ${this.accountId})`,
      client => client.zeroTrust.access.serviceTokens.get(id, { account_id: this.accountId }),
      { hint: accessHint(this.accountId) }
    )
    return facts(token, id)
  }

  /**
   * `POST …/rotate` with the previous secret valid until `previousExpiresAt`. Sent once: after a
   * failure with no answer the caller reads the token to learn whether it happened.
   */
  async rotate(
    id: string,
    previousExpiresAt: string
  ): Promise<{ token: ServiceTokenFacts; clientSecret: string }> {
    const answer = await this.api.call(
      `rotate the client secret of service token ${id} (account ${this.accountId})`,
      client =>
        client.zeroTrust.access.serviceTokens.rotate(id, {
          account_id: this.accountId,
          previous_client_secret_expires_at: previousExpiresAt
        }),
      { mutating: true, once: true, hint: accessHint(this.accountId) }
    )
    const clientSecret = answer.client_secret
    if (typeof clientSecret !== 'string' || clientSecret === '') {
      throw new CloudflareApiError(
        `Cloudflare answered the rotate of service token ${id} without a client secret.`,
        { status: 200 }
      )
    }
    return { token: facts(answer, id), clientSecret }
  }

  /** `PUT …/{id}` of `previous_client_secret_expires_at` only (the other fields stay). */
  async setPreviousExpiry(id: string, at: string): Promise<ServiceTokenFacts> {
    const token = await this.api.call(
      `set the end of the previous client secret of service token ${id} (account ${this.accountId})`,
      client =>
        client.zeroTrust.access.serviceTokens.update(id, {
          account_id: this.accountId,
          previous_client_secret_expires_at: at
        }),
      { mutating: true, hint: accessHint(this.accountId) }
    )
    return facts(token, id)
  }
}

/** The SDK types a subset of the JSON; `created_at` and `updated_at` are read from the object. */
function facts(raw: object, id: string): ServiceTokenFacts {
  const t = raw as Record<string, unknown>
  const text = (key: string): string | undefined =>
    typeof t[key] === 'string' && t[key] !== '' ? t[key] : undefined
  return {
    id: text('id') ?? id,
    name: text('name') ?? '',
    clientId: text('client_id') ?? '',
    enabled: t.enabled !== false,
    ...(text('duration') ? { duration: text('duration')! } : {}),
    ...(text('expires_at') ? { expiresAt: text('expires_at')! } : {}),
    ...(text('created_at') ? { createdAt: text('created_at')! } : {}),
    ...(text('updated_at') ? { updatedAt: text('updated_at')! } : {})
  }
}
