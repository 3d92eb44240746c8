/**
 * End to end, IP-restricted tokens: the Cloudflare and R2 simulators enforce the rotated token's
 * `condition.request_ip` (192.0.2.0/24 by default, where the sample app's R2 requests come from),
 * and the runner is 127.0.0.1, outside it unless a test admits it.
 *
 * - A run that would need the token from the runner (the R2 probe, or a verify to learn which
 *   token current-token is) is refused before anything is minted, with the options.
 * - With `r2-probe: off` the rotation goes through: the new token is read with the management token
 *   instead of verifying itself, the smoke checks (where the app runs) prove it, and it carries the
 *   condition unchanged, through the disable of the previous token as well.
 * - A runner inside the filter rotates with the probe, as without a condition.
 */
import type { Sandbox, SandboxOptions } from '../../sandbox/index.js'
import type { ActionResult } from '../../sandbox/runner.js'
import { type CheckedRun, mutationList, runChecked } from './scenario.js'

const CONDITION = { request_ip: { in: ['192.0.2.0/24'], not_in: ['192.0.2.99'] } }

const sandboxes: Sandbox[] = []
afterAll(async () => {
  await Promise.all(sandboxes.map(sb => sb.stop()))
})

/** The simulators enforce IP conditions; the runner is 127.0.0.1. */
const rotate = (
  options: SandboxOptions,
  overrides: Record<string, string> = {}
): Promise<CheckedRun> =>
  runChecked(sandboxes, { condition: CONDITION, ...options }, overrides, sb => {
    sb.cloudflare.enforceConditions = true
  })

const errorLines = (result: ActionResult): string[] =>
  result.stdout.split('\n').filter(line => line.startsWith('::error'))

/** Requests that Cloudflare or R2 refused because of the IP condition. */
const refusedByCondition = (sb: Sandbox): number =>
  sb.log
    .requests()
    .filter(
      e =>
        (e.service === 'cloudflare' || e.service === 'r2') &&
        e.status === 403 &&
        e.headers['authorization'] !== `Bearer ${sb.managementToken}`
    ).length

describe('a token whose IP condition refuses the runner', () => {
  it.concurrent(
    'with the R2 probe on: refused before minting, the options named, nothing changed',
    async () => {
      const { sb, result, healthFailures } = await rotate({})
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      expect(sb.log.events('token.created')).toEqual([])
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(healthFailures).toEqual([])
      const [error, ...more] = errorLines(result)
      expect(more).toEqual([])
      expect(error).toContain(
        `Cloudflare refuses token ${sb.current.id} from this runner's address`
      )
      expect(error).toContain('127.0.0.1')
      expect(error).toContain('admits requests only from 192.0.2.0/24, not from 192.0.2.99')
      expect(error).toContain('the R2 probe')
      expect(error).toContain('fixed egress address is inside the filter')
      expect(error).toContain('r2-probe: off')
      expect(error).toContain('Nothing was minted or changed')
      expect(result.outputs.result).toBe('failed')
    }
  )

  it.concurrent(
    'with only current-token: refused, and the message asks for current-access-key-id too',
    async () => {
      const { sb, result } = await rotate({}, { 'current-access-key-id': '' })
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      expect(sb.log.events('token.created')).toEqual([])
      const [error] = errorLines(result)
      expect(error).toContain("Cloudflare refuses the current-token from this runner's address")
      expect(error).toContain('a verify, to learn which token current-token is')
      expect(error).toContain('r2-probe: off and current-access-key-id set to the token id')
    }
  )

  it.concurrent(
    'with only the R2 key pair: the baseline probe fails, and the error points at the condition',
    async () => {
      const { sb, result } = await rotate({}, { 'current-token': '' })
      expect(result.exitCode).toBe(1)
      expect(mutationList(sb)).toEqual([])
      const [error] = errorLines(result)
      expect(error).toContain('the R2 probe with the current credentials')
      expect(error).toContain("the token's IP condition admits requests only from 192.0.2.0/24")
      expect(error).toContain('set r2-probe: off')
    }
  )

  it.concurrent(
    'with r2-probe: off: rotates, proven by the smoke checks, the condition kept everywhere',
    async () => {
      const { sb, result, healthFailures } = await rotate({}, { 'r2-probe': 'off' })
      expect(result.exitCode).toBe(0)
      expect(result.outputs.result).toBe('rotated')
      expect(healthFailures).toEqual([])
      const newId = result.outputs['token-id']!
      expect(mutationList(sb)).toEqual([
        'POST variable R2_ROTATION_STATE_LOCK',
        'POST variable R2_ROTATION_STATE phase=minting',
        'POST /user/tokens → {new}',
        'PATCH variable R2_ROTATION_STATE phase=minted',
        'PATCH variable R2_ROTATION_STATE phase=publishing',
        'PUT secret repo:acme/site CLOUDFLARE_API_TOKEN ← {new}',
        'PUT secret repo:acme/site R2_ACCESS_KEY_ID ← {new}',
        'PUT secret repo:acme/site R2_SECRET_ACCESS_KEY ← {new}',
        'PATCH variable R2_ROTATION_STATE phase=published',
        'PATCH variable R2_ROTATION_STATE phase=deploying',
        'POST dispatch',
        'PATCH variable R2_ROTATION_STATE phase=deploying',
        'PATCH variable R2_ROTATION_STATE phase=smoke',
        'PATCH variable R2_ROTATION_STATE phase=revoking',
        'PATCH variable R2_ROTATION_STATE phase=revoking',
        'PUT /user/tokens/{previous} status=disabled',
        'DELETE /user/tokens/{previous}',
        'PATCH variable R2_ROTATION_STATE phase=done',
        'DELETE variable R2_ROTATION_STATE_LOCK'
      ])
      // The new token carries the condition as it was, and so did every write of a whole token.
      expect(sb.cloudflare.findById(newId)?.condition).toEqual(CONDITION)
      const puts = sb.log
        .requests({ service: 'cloudflare', method: 'PUT' })
        .map(e => (e.body as { condition?: unknown }).condition)
      expect(puts.length).toBeGreaterThan(0)
      for (const condition of puts) expect(condition).toEqual(CONDITION)
      // Nothing was tried with the tokens themselves from the runner but the one refused verify.
      expect(refusedByCondition(sb)).toBe(2)
      expect(result.stdout).toContain(
        'IP condition: requests only from 192.0.2.0/24, not from 192.0.2.99. The new token gets the same condition, unchanged.'
      )
      expect(result.stdout).toContain(
        `Token ${newId} is active (read with the management token: its IP condition refuses this runner`
      )
      expect(result.summary).toContain('IP condition')
    }
  )
})

describe('a token whose IP condition admits the runner', () => {
  it.concurrent('rotates with the R2 probe, and the new token keeps the condition', async () => {
    const condition = { request_ip: { in: ['192.0.2.0/24', '127.0.0.0/8'], not_in: [] } }
    const { sb, result, healthFailures } = await rotate({ condition })
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expect(healthFailures).toEqual([])
    expect(refusedByCondition(sb)).toBe(0)
    expect(sb.cloudflare.findById(result.outputs['token-id']!)?.condition).toEqual(condition)
    expect(result.stdout).toContain(
      'The R2 probe uses the credentials from this runner, so its address must be inside the filter.'
    )
    expect(result.stdout).toMatch(/R2 write probe of avatars-bucket with token \w+ passed/)
  })
})
