/**
 * Preflight of the management token (input `cloudflare-api-token`): is it valid, and may it
 * create and delete tokens of the rotated token's kind? Failing here, before anything is minted,
 * names the missing permission instead of failing halfway with a 403.
 */
import * as core from '@actions/core'
import { CloudflareApiError, type TokenApi, type TokenOwner, type TokenPolicy } from './tokens.js'

/** The permission group a management token needs per owner kind (api-facts: "Minting needs …"). */
export const MANAGEMENT_PERMISSION: Record<TokenOwner['kind'], string> = {
  user: 'API Tokens Write',
  account: 'Account API Tokens Write'
}

export interface ManagementToken {
  id: string
  owner: TokenOwner
  /** Its policies, when it may read itself (a token with only account-level rights may not). */
  policies?: TokenPolicy[]
}

/**
 * Verifies the management token as itself: the user endpoint first, then, on code 1000 (what
 * `/user/tokens/verify` answers for an account-owned token) or 401/403, the account endpoint when
 * an account id is known. Then reads its own policies where it may.
 */
export async function verifyManagementToken(
  api: TokenApi,
  value: string,
  accountId: string | undefined
): Promise<ManagementToken> {
  const owners: TokenOwner[] = [{ kind: 'user' }]
  if (accountId) owners.push({ kind: 'account', accountId })
  const failures: string[] = []
  for (const owner of owners) {
    try {
      const verified = await api.verify(value, owner)
      if (verified.status !== 'active') {
        throw new Error(
          `The management token (cloudflare-api-token) ${verified.id} is ${verified.status}. Use an active token with '${MANAGEMENT_PERMISSION.user}' (user tokens) or '${MANAGEMENT_PERMISSION.account}' (account tokens).`
        )
      }
      const token: ManagementToken = { id: verified.id, owner }
      try {
        token.policies = (await api.get(owner, verified.id)).policies
      } catch (error) {
        // Reading itself needs "API Tokens Read" on its own kind; without it we cannot tell its
        // permissions here and the reads that follow will say what is missing.
        if (
          !(error instanceof CloudflareApiError) ||
          (error.status !== 403 && error.status !== 404)
        ) {
          throw error
        }
        core.debug(`The management token cannot read its own policies (${error.status})`)
      }
      return token
    } catch (error) {
      const retry =
        error instanceof CloudflareApiError &&
        (error.codes.includes(1000) || error.status === 401 || error.status === 403)
      if (!retry) throw error
      failures.push(error.message)
    }
  }
  throw new Error(
    `The management token (cloudflare-api-token) does not verify: ${failures.join(' ')}${accountId ? '' : ' If it is an account-owned token, set account-id.'}`
  )
}

/**
 * Fails when the management token's own policies (when readable) grant no `allow` of the
 * permission needed for tokens owned like `rotated`. `groupNames` maps permission group ids to
 * names (permission groups API; ids have been reported to change, names are what we match).
 */
export function requireManagementPermission(
  management: ManagementToken,
  rotated: TokenOwner,
  groupNames: Map<string, string>
): void {
  if (!management.policies) return
  const needed = MANAGEMENT_PERMISSION[rotated.kind]
  const name = (group: { id: string; name?: string }): string | undefined =>
    groupNames.get(group.id) ?? group.name
  const granted = (effect: 'allow' | 'deny'): boolean =>
    management.policies!.some(
      p => p.effect === effect && p.permission_groups.some(g => name(g) === needed)
    )
  if (!granted('allow') || granted('deny')) {
    throw new Error(
      `The management token (cloudflare-api-token) ${management.id} lacks the permission '${needed}', needed to create and delete ${rotated.kind}-owned tokens. Edit it in the Cloudflare dashboard (My Profile → API Tokens) and add '${needed}'${rotated.kind === 'account' ? ` on account ${rotated.accountId}` : ''}.`
    )
  }
}
