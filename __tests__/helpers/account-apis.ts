/**
 * What the tests of the Cloudflare simulator's account APIs (Access service tokens, Workers)
 * share: API tokens that hold given permission groups on an account, and an official SDK client
 * pointed at the simulator.
 */
import Cloudflare from 'cloudflare'
import {
  PERMISSION_GROUPS,
  type CfTokenRecord,
  type CloudflareSim
} from '../../sandbox/cloudflare.js'

export const ACCOUNT = '0123456789abcdef0123456789abcdef'
export const OTHER_ACCOUNT = 'fedcba9876543210fedcba9876543210'

export function groupId(name: string): string {
  const group = PERMISSION_GROUPS.find(g => g.name === name)
  if (!group) throw new Error(`no permission group ${name}`)
  return group.id
}

/** A user API token with one policy: `effect` of these groups on `account` (`*` for all). */
export function accountToken(
  sim: CloudflareSim,
  groups: string[],
  account = ACCOUNT,
  effect: 'allow' | 'deny' = 'allow'
): CfTokenRecord {
  return sim.addToken({
    name: `holds ${groups.join(', ') || 'nothing'}`,
    policies: [
      {
        effect,
        permission_groups: groups.map(name => ({ id: groupId(name) })),
        resources: { [`com.cloudflare.api.account.${account}`]: '*' }
      }
    ]
  })
}

/** The official SDK against the simulator, without retries (so a refusal surfaces at once). */
export function sdk(sim: CloudflareSim, token: string): Cloudflare {
  return new Cloudflare({
    apiToken: token,
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL: sim.apiUrl,
    maxRetries: 0
  })
}
