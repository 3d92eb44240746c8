/**
 * The management token's preflight (src/cloudflare/management.ts) against the Cloudflare
 * simulator, which answers as the real API does (403 code 9109 for a token without the needed
 * permission group) and validates every request and answer against the OpenAPI excerpt.
 */
import { CloudflareSim, PERMISSION_GROUPS, type SeedToken } from '../sandbox/cloudflare.js'
import { RequestLog } from '../sandbox/log.js'
import { TokenApi, type TokenOwner } from '../src/cloudflare/tokens.js'
import {
  requireManagementPermission,
  verifyManagementToken,
  type ManagementToken
} from '../src/cloudflare/management.js'

const ACCOUNT = '0123456789abcdef0123456789abcdef'
const OTHER_ACCOUNT = 'fedcba9876543210fedcba9876543210'
const USER: TokenOwner = { kind: 'user' }
const IN_ACCOUNT: TokenOwner = { kind: 'account', accountId: ACCOUNT }

const groupId = (name: string): string => {
  const found = PERMISSION_GROUPS.find(g => g.name === name)
  if (!found) throw new Error(`no permission group ${name}`)
  return found.id
}

type Policy = SeedToken['policies'][number]
const grant = (groups: string[], resource: string, effect: 'allow' | 'deny' = 'allow'): Policy => ({
  effect,
  permission_groups: groups.map(name => ({ id: groupId(name) })),
  resources: { [resource]: '*' }
})
const accountResource = (account: string): string => `com.cloudflare.api.account.${account}`

let log: RequestLog
let sim: CloudflareSim
let baseURL: string
const userResource = (): string => `com.cloudflare.api.user.${sim.userId}`
const names = (): Map<string, string> => new Map(PERMISSION_GROUPS.map(g => [g.id, g.name]))

beforeEach(async () => {
  log = new RequestLog()
  sim = new CloudflareSim(log)
  baseURL = await sim.start()
})
afterEach(async () => {
  await sim.stop()
  expect(log.violations).toEqual([])
  // A preflight only reads.
  expect(log.mutations()).toEqual([])
})

/** Seeds a management token and verifies it as the rotation's preflight does. */
async function preflight(
  seed: Omit<SeedToken, 'name'>,
  accountId: string | null = ACCOUNT
): Promise<{ value: string; id: string; result: Promise<ManagementToken> }> {
  const token = sim.addToken({ name: 'token-rotation-manager', ...seed })
  const api = new TokenApi({ apiToken: token.value, baseURL, maxRetries: 0 })
  return {
    value: token.value,
    id: token.id,
    result: verifyManagementToken(api, token.value, accountId ?? undefined)
  }
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e
  )
  expect(error).toBeInstanceOf(Error)
  return error as Error
}

describe('verifyManagementToken', () => {
  it('verifies a user-owned token and reads its own policies', async () => {
    const { id, result } = await preflight({
      policies: [grant(['API Tokens Write'], userResource())]
    })
    const management = await result
    expect(management).toMatchObject({ id, owner: USER })
    expect(management.policies?.map(p => p.permission_groups.map(g => g.name))).toEqual([
      ['API Tokens Write']
    ])
  })

  it('falls back to the account endpoints for an account-owned token', async () => {
    const { id, result } = await preflight({
      owner: IN_ACCOUNT,
      policies: [grant(['Account API Tokens Write'], accountResource(ACCOUNT))]
    })
    const management = await result
    expect(management).toMatchObject({ id, owner: IN_ACCOUNT })
    expect(management.policies).toHaveLength(1)
    const verifies = log.requests({ service: 'cloudflare' }).map(r => r.path)
    expect(verifies.slice(0, 2)).toEqual([
      '/client/v4/user/tokens/verify',
      `/client/v4/accounts/${ACCOUNT}/tokens/verify`
    ])
  })

  it('accepts a user-owned token that manages only account tokens, without its policies', async () => {
    const { result } = await preflight({
      policies: [grant(['Account API Tokens Write'], accountResource(ACCOUNT))]
    })
    const management = await result
    expect(management.owner).toEqual(USER)
    expect(management.policies).toBeUndefined()
    // It was refused its own details, then allowed the account's permission groups.
    expect(
      log.requests({ service: 'cloudflare' }).map(r => `${r.status} ${r.path.split('?')[0]}`)
    ).toEqual([
      '200 /client/v4/user/tokens/verify',
      expect.stringMatching(/^403 \/client\/v4\/user\/tokens\/[0-9a-f]{32}$/),
      `200 /client/v4/accounts/${ACCOUNT}/tokens/permission_groups`
    ])
  })

  it('names both permissions when the token may read no API token at all', async () => {
    const { value, id, result } = await preflight({
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: groupId('Zone Read') }],
          resources: { [accountResource(ACCOUNT)]: { 'com.cloudflare.api.account.zone.*': '*' } }
        }
      ]
    })
    const error = await failure(result)
    expect(error.message).toBe(
      `The management token (cloudflare-api-token) ${id} may not read API tokens: Cloudflare refused it (403) even its own details. It lacks both 'API Tokens Write' (for user-owned tokens) and 'Account API Tokens Write' on account ${ACCOUNT} (for account-owned tokens). To get a token that has it, create one in the Cloudflare dashboard under My Profile → API Tokens → Create Token from the 'Create additional tokens' template, which grants User › API Tokens › Edit (no other template, and not the Custom Token builder, offers it).`
    )
    expect(error.message).not.toContain(value)
  })

  it('without account-id, names API Tokens Write and asks for account-id', async () => {
    const { result } = await preflight(
      { policies: [grant(['Account Settings Read'], accountResource(ACCOUNT))] },
      null
    )
    const error = await failure(result)
    expect(error.message).toMatch(/It lacks 'API Tokens Write'\./)
    expect(error.message).toMatch(/'Create additional tokens' template/)
    expect(error.message).toMatch(/set account-id if the rotated token is account-owned/)
  })

  it('names Account API Tokens Write for an account-owned token without token rights', async () => {
    const { result } = await preflight({
      owner: IN_ACCOUNT,
      policies: [grant(['Account Settings Read'], accountResource(ACCOUNT))]
    })
    const error = await failure(result)
    expect(error.message).toMatch(
      new RegExp(
        `It lacks 'Account API Tokens Write' on account ${ACCOUNT}\\. To get a token that has it, create one in the Cloudflare dashboard under Manage Account → API Tokens → Create Token with the permission Account › Account API Tokens › Edit\\.`
      )
    )
  })

  it('fails for a disabled or unknown token, without printing the value', async () => {
    const { value, result } = await preflight({
      status: 'disabled',
      policies: [grant(['API Tokens Write'], userResource())]
    })
    const error = await failure(result)
    expect(error.message).toMatch(/does not verify/)
    expect(error.message).not.toContain(value)

    const api = new TokenApi({ apiToken: 'cfut_unknown', baseURL, maxRetries: 0 })
    const unknown = await failure(verifyManagementToken(api, 'cfut_unknown', undefined))
    expect(unknown.message).toMatch(
      /does not verify.*If it is an account-owned token, set account-id\./
    )
    expect(unknown.message).not.toContain('cfut_unknown')
  })
})

describe('requireManagementPermission', () => {
  const management = (policies: Policy[], owner: TokenOwner = USER): ManagementToken => ({
    id: 'f00dfeedf00dfeedf00dfeedf00dfeed',
    owner,
    policies: policies.map(p => ({
      ...p,
      permission_groups: p.permission_groups.map(g => ({ id: g.id }))
    }))
  })

  it('passes with API Tokens Write for user tokens', () => {
    const m = management([grant(['API Tokens Write', 'API Tokens Read'], userResource())])
    expect(() => requireManagementPermission(m, USER, names())).not.toThrow()
  })

  it('names API Tokens Write when the token may only read', () => {
    const m = management([grant(['API Tokens Read'], userResource())])
    expect(() => requireManagementPermission(m, USER, names())).toThrow(
      "The management token (cloudflare-api-token) f00dfeedf00dfeedf00dfeedf00dfeed lacks the permission 'API Tokens Write', needed to create and delete user-owned tokens. To get a token that has it, create one in the Cloudflare dashboard under My Profile → API Tokens → Create Token from the 'Create additional tokens' template, which grants User › API Tokens › Edit (no other template, and not the Custom Token builder, offers it)."
    )
  })

  it('names Account API Tokens Write on the account for account tokens', () => {
    const m = management([
      grant(['API Tokens Write'], userResource()),
      grant(['Account API Tokens Read'], accountResource(ACCOUNT))
    ])
    expect(() => requireManagementPermission(m, IN_ACCOUNT, names())).toThrow(
      `lacks the permission 'Account API Tokens Write' on account ${ACCOUNT}, needed to create and delete account-owned tokens`
    )
  })

  it('requires the grant on the rotated token’s account (or every account)', () => {
    const elsewhere = management([
      grant(['Account API Tokens Write'], accountResource(OTHER_ACCOUNT))
    ])
    expect(() => requireManagementPermission(elsewhere, IN_ACCOUNT, names())).toThrow(
      /Account API Tokens Write' on account/
    )
    const everywhere = management([
      grant(['Account API Tokens Write'], 'com.cloudflare.api.account.*')
    ])
    expect(() => requireManagementPermission(everywhere, IN_ACCOUNT, names())).not.toThrow()
  })

  it('a deny on the same resource wins; a deny elsewhere does not', () => {
    const denied = management([
      grant(['Account API Tokens Write'], 'com.cloudflare.api.account.*'),
      grant(['Account API Tokens Write'], accountResource(ACCOUNT), 'deny')
    ])
    expect(() => requireManagementPermission(denied, IN_ACCOUNT, names())).toThrow(/lacks/)
    const deniedElsewhere = management([
      grant(['Account API Tokens Write'], 'com.cloudflare.api.account.*'),
      grant(['Account API Tokens Write'], accountResource(OTHER_ACCOUNT), 'deny')
    ])
    expect(() => requireManagementPermission(deniedElsewhere, IN_ACCOUNT, names())).not.toThrow()
  })

  it('goes by the policy’s own group names when the map does not know an id', () => {
    const m: ManagementToken = {
      id: 'f00dfeedf00dfeedf00dfeedf00dfeed',
      owner: USER,
      policies: [
        {
          effect: 'allow',
          permission_groups: [{ id: 'renamed0000000000000000000000000', name: 'API Tokens Write' }],
          resources: { [userResource()]: '*' }
        }
      ]
    }
    expect(() => requireManagementPermission(m, USER, names())).not.toThrow()
  })

  it('checks nothing when the policies could not be read', () => {
    const m: ManagementToken = { id: 'f00dfeedf00dfeedf00dfeedf00dfeed', owner: USER }
    expect(() => requireManagementPermission(m, IN_ACCOUNT, names())).not.toThrow()
  })
})
