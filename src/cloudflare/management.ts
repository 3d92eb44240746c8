/**
 * Preflight of the management token (input `cloudflare-api-token`): is it valid, and may it
 * create and delete tokens of the rotated token's kind? Failing here, before anything is minted,
 * names the missing permission instead of failing halfway with a 403.
 */
import type { TokenOwner, TokenPolicy } from '../model.js'
import { log } from '../log.js'
import { CloudflareApiError, type TokenApi, firstOwner } from './tokens.js'
import { WORKERS_HINT, WORKERS_PERMISSION } from './workers.js'

/** The permission group a management token needs per owner kind (api-facts: "Minting needs …"). */
export const MANAGEMENT_PERMISSION: Record<TokenOwner['kind'], string> = {
  user: 'API Tokens Write',
  account: 'Account API Tokens Write'
}

/**
 * How a management token of each kind is made in the Cloudflare dashboard. User › API Tokens › Edit
 * ('API Tokens Write') is offered by the "Create additional tokens" template only, not by any
 * other template nor by the Custom Token builder (developers.cloudflare.com/fundamentals/api/
 * how-to/create-via-api/). Account tokens are created under Manage Account → API Tokens
 * (developers.cloudflare.com/fundamentals/api/get-started/create-token/), where
 * 'Account API Tokens Write' is Account › Account API Tokens › Edit.
 */
const HOW_TO_CREATE: Record<TokenOwner['kind'], string> = {
  user: "create one in the Cloudflare dashboard under My Profile → API Tokens → Create Token from the 'Create additional tokens' template, which grants User › API Tokens › Edit (no other template, and not the Custom Token builder, offers it)",
  account:
    'create one in the Cloudflare dashboard under Manage Account → API Tokens → Create Token with the permission Account › Account API Tokens › Edit'
}

export interface ManagementToken {
  id: string
  owner: TokenOwner
  /** Its policies, when it may read itself (a token with only account-level rights may not). */
  policies?: TokenPolicy[]
  /** When it expires, if it does (verify's `expires_on`). */
  expiresOn?: string
}

const isDenied = (error: unknown): error is CloudflareApiError =>
  error instanceof CloudflareApiError && error.status === 403

/**
 * Verifies the management token as itself: the user endpoint first, then, on code 1000 (what
 * `/user/tokens/verify` answers for an account-owned token) or 401/403, the account endpoint when
 * an account id is known. Then reads its own policies where it may.
 *
 * Reading a token needs "API Tokens Read" or "Write" (user tokens) or "Account API Tokens Read"
 * or "Write" (account tokens): the OpenAPI description's `x-api-token-group` of
 * `user-api-tokens-token-details` and `account-api-tokens-token-details`. A token refused (403)
 * even its own details, and refused the account's permission groups (same groups), may manage no
 * token the action could rotate: that fails here, naming the permission.
 */
export async function verifyManagementToken(
  api: TokenApi,
  value: string,
  accountId: string | undefined
): Promise<ManagementToken> {
  const owners: TokenOwner[] = [{ kind: 'user' }]
  if (accountId) owners.push({ kind: 'account', accountId })
  const result = await firstOwner(
    owners,
    owner => api.verify(value, owner),
    error => error.codes.includes(1000) || error.status === 401 || error.status === 403
  )
  if (!('found' in result)) {
    throw new Error(
      `The management token (cloudflare-api-token) does not verify: ${result.failures.map(f => f.message).join(' ')}${accountId ? '' : ' If it is an account-owned token, set account-id.'} A token past its expiry date, or deleted, answers the same: then create a new one and update the secret it comes from.`
    )
  }
  const { owner, value: verified } = result.found
  if (verified.status !== 'active') {
    throw new Error(
      `The management token (cloudflare-api-token) ${verified.id} is ${verified.status}. Use an active token with '${MANAGEMENT_PERMISSION.user}' (user tokens) or '${MANAGEMENT_PERMISSION.account}' (account tokens).`
    )
  }
  const token: ManagementToken = { id: verified.id, owner }
  if (verified.expires_on) token.expiresOn = verified.expires_on
  try {
    token.policies = (await api.get(owner, verified.id)).policies
  } catch (error) {
    if (!(error instanceof CloudflareApiError) || (error.status !== 403 && error.status !== 404))
      throw error
    log.debug(`The management token cannot read its own policies (${error.status})`)
    if (isDenied(error)) await requireSomeTokenAccess(api, token, accountId)
  }
  return token
}

/**
 * The management token was refused its own details, so it may not read tokens of its own kind.
 * A user-owned one may still manage the account's tokens (Account API Tokens Write): one read of
 * the account's permission groups, which needs the same groups, tells. Fails when it may read
 * no kind of token the rotation could touch.
 */
async function requireSomeTokenAccess(
  api: TokenApi,
  management: ManagementToken,
  accountId: string | undefined
): Promise<void> {
  const { id, owner } = management
  if (owner.kind === 'user' && accountId) {
    try {
      await api.permissionGroups({ kind: 'account', accountId })
      return
    } catch (error) {
      if (!isDenied(error)) throw error
    }
  }
  const account = owner.kind === 'account' ? owner.accountId : accountId
  const lacks =
    owner.kind === 'account'
      ? `'${MANAGEMENT_PERMISSION.account}' on account ${owner.accountId}`
      : account
        ? `both '${MANAGEMENT_PERMISSION.user}' (for user-owned tokens) and '${MANAGEMENT_PERMISSION.account}' on account ${account} (for account-owned tokens)`
        : `'${MANAGEMENT_PERMISSION.user}'`
  throw new Error(
    `The management token (cloudflare-api-token) ${id} may not read API tokens: Cloudflare refused it (403) even its own details. It lacks ${lacks}. To get a token that has it, ${HOW_TO_CREATE[owner.kind]}${owner.kind === 'user' && !account ? '; set account-id if the rotated token is account-owned' : ''}.`
  )
}

/**
 * Fails when the management token's own policies (when readable) grant no `allow` of the
 * permission needed for tokens owned like `rotated`, on the resource they live under (the user
 * for user tokens, the account or every account for account tokens), or deny it there.
 * `groupNames` maps permission group ids to names (permission groups API; ids have been reported
 * to change, names are what we match; the policy's own group names are the fallback).
 */
export function requireManagementPermission(
  management: ManagementToken,
  rotated: TokenOwner,
  groupNames: Map<string, string>
): void {
  if (!management.policies) return
  const needed = MANAGEMENT_PERMISSION[rotated.kind]
  if (!grants(management.policies, needed, rotated, groupNames)) {
    const where = rotated.kind === 'account' ? ` on account ${rotated.accountId}` : ''
    throw new Error(
      `The management token (cloudflare-api-token) ${management.id} lacks the permission '${needed}'${where}, needed to create and delete ${rotated.kind}-owned tokens. To get a token that has it, ${HOW_TO_CREATE[rotated.kind]}.`
    )
  }
}

/**
 * Fails, before anything is minted, when the management token's own policies (when readable) do
 * not allow `Workers Scripts Write` on an account that owns a Worker target, or deny it there. A
 * token that cannot read its policies is left to the Workers calls, whose 403 says the same.
 */
export function requireWorkersPermission(
  management: ManagementToken,
  workers: Array<{ accountId: string; script: string }>,
  groupNames: Map<string, string>
): void {
  if (!management.policies) return
  const lacking = workers.filter(
    w =>
      !grants(
        management.policies!,
        WORKERS_PERMISSION,
        { kind: 'account', accountId: w.accountId },
        groupNames
      )
  )
  if (lacking.length === 0) return
  const accounts = [...new Set(lacking.map(w => w.accountId))].join(', ')
  throw new Error(
    `The management token (cloudflare-api-token) ${management.id} lacks the permission '${WORKERS_PERMISSION}' on account ${accounts}, needed to write the secrets of ${lacking.map(w => `Worker ${w.script}`).join(', ')}. ${WORKERS_HINT} Nothing was minted or changed.`
  )
}

/** Whether `policies` allow `permission` where tokens (or Workers) owned like `owner` live, and do not deny it there. */
function grants(
  policies: TokenPolicy[],
  permission: string,
  owner: TokenOwner,
  groupNames: Map<string, string>
): boolean {
  const name = (group: { id: string; name?: string }): string | undefined =>
    groupNames.get(group.id) ?? group.name
  const granted = (effect: 'allow' | 'deny'): boolean =>
    policies.some(
      p =>
        p.effect === effect &&
        p.permission_groups.some(g => name(g) === permission) &&
        Object.keys(p.resources).some(key => coversOwner(key, owner))
    )
  return granted('allow') && !granted('deny')
}

/**
 * Whether a policy resource key names where tokens owned like `owner` live: the user
 * (`com.cloudflare.api.user.<id>`; a token only ever names its own user) or the account
 * (`com.cloudflare.api.account.<id>`, or `com.cloudflare.api.account.*` for every account).
 */
function coversOwner(key: string, owner: TokenOwner): boolean {
  if (owner.kind === 'user') return key.startsWith('com.cloudflare.api.user.')
  return (
    key === `com.cloudflare.api.account.${owner.accountId}` ||
    key === 'com.cloudflare.api.account.*'
  )
}
