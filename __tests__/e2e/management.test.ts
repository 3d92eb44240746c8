/**
 * The management token rotating itself (`rotate-management-token`). The sandbox's management
 * token (user-owned, "API Tokens Write") is held in the repository secret CF_MANAGEMENT_TOKEN, and
 * each run passes that secret's value as `cloudflare-api-token`, as a workflow does. Each scenario
 * asserts the ordered mutating requests, the secret's value as GitHub decrypted it, and that no
 * value (the old and the new management token's included) reached any output or the journal.
 *
 * The crash matrix kills the action right after each request this mode adds (the create, the
 * journal's `minted` and `publishing`, the secret write, the delete, and the expiry PUT), then
 * runs it again with the secret as it is now: each ends with the secret holding one live
 * management token, no orphan successor, and the first token ended.
 */
import type { ChildProcess } from 'node:child_process'
import { startSandbox, type Sandbox } from '../../sandbox/index.js'
import type { RequestEntry } from '../../sandbox/log.js'
import { runAction, sandboxInputs, type ActionResult } from '../../sandbox/runner.js'
import {
  expectNoLeaks,
  expectOneLiveToken,
  journalOf,
  killWhen,
  mutationList,
  requestKey,
  startNamed
} from './scenario.js'

const SECRET = 'CF_MANAGEMENT_TOKEN'
const JOURNAL = 'R2_ROTATION_STATE_MANAGEMENT'
const LINEAGE = 'token-rotation-manager'

async function world(): Promise<Sandbox> {
  const sb = await startSandbox()
  sb.github.setSecret({ kind: 'repo', repo: sb.repository }, SECRET, sb.managementToken)
  return sb
}

/** The management token as the secret holds it now (what the next workflow run passes). */
function secretValue(sb: Sandbox): string {
  return sb.github.getSecret({ kind: 'repo', repo: sb.repository }, SECRET) ?? ''
}

/** The inputs of a self-rotation run, with `cloudflare-api-token` read from the secret now. */
function selfInputs(sb: Sandbox, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    'cloudflare-api-token': secretValue(sb),
    'cloudflare-api-url': sb.cloudflareApiUrl,
    'github-token': sb.githubToken,
    'rotate-management-token': SECRET,
    ...overrides
  }
}

/** Live tokens of the management token's lineage. */
function managers(sb: Sandbox): Array<{ id: string; name: string; expires_on?: string }> {
  return [...sb.cloudflare.tokens.values()]
    .filter(t => t.name.startsWith(LINEAGE))
    .map(t => sb.cloudflare.findById(t.id)!)
    .filter(t => t.status === 'active')
    .map(t => ({ id: t.id, name: t.name, ...(t.expires_on ? { expires_on: t.expires_on } : {}) }))
}

function managementId(sb: Sandbox): string {
  return [...sb.cloudflare.tokens.values(), ...sb.cloudflare.deletedTokens].find(
    t => t.value === sb.managementToken
  )!.id
}

/** Whether Cloudflare accepts `value` now (a verify as itself). */
async function verifies(sb: Sandbox, value: string): Promise<boolean> {
  const response = await fetch(`${sb.cloudflareApiUrl}/user/tokens/verify`, {
    headers: { authorization: `Bearer ${value}` }
  })
  await response.arrayBuffer()
  return response.status === 200
}

/** No value leaked, and the scan covered both management tokens' values. */
function expectNothingLeaked(sb: Sandbox, results: ActionResult[]): void {
  const values = sb.secretValues()
  expect(values).toEqual(expect.arrayContaining([sb.managementToken, secretValue(sb)]))
  expectNoLeaks(sb, results)
  const journal = sb.github.getVariable(sb.repository, JOURNAL) ?? ''
  for (const value of values) expect(journal.includes(value)).toBe(false)
}

function managementJournal(sb: Sandbox): Record<string, unknown> {
  return JSON.parse(sb.github.getVariable(sb.repository, JOURNAL) ?? '{}') as Record<
    string,
    unknown
  >
}

const roles = (sb: Sandbox): Record<string, string> => ({ [managementId(sb)]: 'management' })

describe('a self-rotation with revoke-grace', () => {
  let sb: Sandbox
  let result: ActionResult
  let oldId: string
  beforeAll(async () => {
    sb = await world()
    oldId = managementId(sb)
    result = await runAction(sb, selfInputs(sb, { 'revoke-grace': '1h' }))
  }, 120_000)
  afterAll(() => sb.stop())

  it('mints a successor, writes it to the secret, and gives the old token an expiry', () => {
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expect(result.outputs['previous-token-id']).toBe(oldId)
    const newId = result.outputs['token-id']!
    expect(newId).not.toBe(oldId)
    expect(result.outputs['access-key-id']).toBeUndefined()
    expect(mutationList(sb, roles(sb))).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_MANAGEMENT phase=minting',
      'POST /user/tokens → {new}',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=minted',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=publishing',
      'PUT secret repo:acme/site CF_MANAGEMENT_TOKEN ← {new}',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=published',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=revoking',
      'PUT /user/tokens/{management} expires_on',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    // The secret holds the successor's value, as GitHub decrypted it.
    expect(sb.cloudflare.findById(newId)!.value).toBe(secretValue(sb))
    expect(managementJournal(sb)).toMatchObject({
      kind: 'management-token',
      phase: 'done',
      previous_token_id: oldId,
      pending_token_id: newId
    })
  })

  it('the successor carries exactly the old policies and condition, under a rotated name', () => {
    const old = sb.cloudflare.findById(oldId)!
    const next = sb.cloudflare.findById(result.outputs['token-id']!)!
    const shape = (t: typeof old): unknown =>
      t.policies.map(p => ({
        effect: p.effect,
        groups: p.permission_groups.map(g => g.id),
        resources: p.resources
      }))
    expect(shape(next)).toEqual(shape(old))
    expect(next.condition).toEqual(old.condition)
    expect(next.name).toMatch(/^token-rotation-manager \(rotated \d{4}-\d{2}-\d{2}\)$/)
  })

  it('the expiry PUT, sent by the successor, sends the old body back with only expires_on new', () => {
    const put = sb.log
      .requests({ service: 'cloudflare', method: 'PUT' })
      .find(e => e.path.endsWith(`/tokens/${oldId}`))!
    const body = put.body as Record<string, unknown>
    const old = sb.cloudflare.findById(oldId)!
    expect(body).toEqual({
      name: old.name,
      policies: old.policies.map(p => ({
        effect: p.effect,
        permission_groups: p.permission_groups.map(g => ({ id: g.id })),
        resources: p.resources
      })),
      expires_on: old.expires_on
    })
    // Compared, never printed: a failure message must not carry a value.
    expect(put.headers.authorization === `Bearer ${secretValue(sb)}`).toBe(true)
  })

  it('the old token keeps working until its expiry, with its policies unchanged', async () => {
    const old = sb.cloudflare.findById(oldId)!
    const left = Date.parse(old.expires_on!) - sb.cloudflare.now()
    expect(left).toBeGreaterThan(55 * 60_000)
    expect(left).toBeLessThanOrEqual(60 * 60_000)
    expect(await verifies(sb, sb.managementToken)).toBe(true)
    sb.cloudflare.skewMs = 61 * 60_000
    expect(await verifies(sb, sb.managementToken)).toBe(false)
    expect(await verifies(sb, secretValue(sb))).toBe(true)
    sb.cloudflare.skewMs = 0
  })

  it('leaks nothing', () => {
    expectNothingLeaked(sb, [result])
    expect(sb.log.violations).toEqual([])
  })
})

describe('a self-rotation without grace, then an ordinary rotation with the new value', () => {
  let sb: Sandbox
  let self: ActionResult
  let next: ActionResult
  let oldId: string
  let afterSelf: number
  beforeAll(async () => {
    sb = await world()
    oldId = managementId(sb)
    self = await runAction(sb, selfInputs(sb))
    afterSelf = sb.log.entries.at(-1)?.seq ?? 0
    // The next scheduled R2 rotation: cloudflare-api-token is read from the secret now.
    next = await runAction(sb, sandboxInputs(sb, { 'cloudflare-api-token': secretValue(sb) }))
  }, 120_000)
  afterAll(() => sb.stop())

  it('deletes the old management token with the successor', async () => {
    expect(self.stderr).toBe('')
    expect(self.exitCode).toBe(0)
    expect(self.outputs.result).toBe('rotated')
    expect(mutationList(sb, roles(sb)).slice(0, 11)).toEqual([
      'POST variable R2_ROTATION_STATE_LOCK',
      'POST variable R2_ROTATION_STATE_MANAGEMENT phase=minting',
      'POST /user/tokens → {new}',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=minted',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=publishing',
      'PUT secret repo:acme/site CF_MANAGEMENT_TOKEN ← {new}',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=published',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=revoking',
      'DELETE /user/tokens/{management}',
      'PATCH variable R2_ROTATION_STATE_MANAGEMENT phase=done',
      'DELETE variable R2_ROTATION_STATE_LOCK'
    ])
    expect(sb.cloudflare.findById(oldId)).toBeUndefined()
    expect(await verifies(sb, sb.managementToken)).toBe(false)
    expect(managers(sb).map(t => t.id)).toEqual([self.outputs['token-id']])
    expect(sb.cloudflare.findById(self.outputs['token-id']!)!.value).toBe(secretValue(sb))
  })

  it('the next run, an R2 rotation, works with the new value from the secret', () => {
    expect(next.stderr).toBe('')
    expect(next.exitCode).toBe(0)
    expect(next.outputs.result).toBe('rotated')
    expectOneLiveToken(sb)
    const r2 = mutationList(sb, roles(sb), afterSelf)
    expect(r2[0]).toBe('POST variable R2_ROTATION_STATE_LOCK')
    expect(r2).toContain('POST /user/tokens → {new#2}')
    expect(r2).toContain('DELETE /user/tokens/{previous}')
    expect(r2.at(-1)).toBe('DELETE variable R2_ROTATION_STATE_LOCK')
    // Its journal is the token rotation's own; the self-rotation's is untouched.
    expect(journalOf(sb)).toMatchObject({ phase: 'done' })
    expect(journalOf(sb).kind).toBeUndefined()
    expect(managementJournal(sb)).toMatchObject({ kind: 'management-token', phase: 'done' })
  })

  it('leaks nothing', () => {
    expectNothingLeaked(sb, [self, next])
    expect(sb.log.violations).toEqual([])
  })
})

// ------------------------------------------------------------------------- the crash matrix

interface CrashPoint {
  name: string
  /** `METHOD /path` with ids replaced (requestKey). */
  key: string
  /** For a journal write: the phase it writes. */
  phase?: string
  grace?: string
  /** What the next run does, in order (mutationList). */
  after: string[]
}

const TOKENS = 'POST /client/v4/user/tokens'
const VARIABLE = `PATCH /repos/acme/site/actions/variables/${JOURNAL}`
const J = `PATCH variable ${JOURNAL} phase=`
/** The next run takes over the lock the killed run left, and releases it at the end. */
const TAKE_OVER = [
  'POST variable R2_ROTATION_STATE_LOCK → 409',
  'PATCH variable R2_ROTATION_STATE_LOCK'
]
const RELEASE = 'DELETE variable R2_ROTATION_STATE_LOCK'
/** A fresh self-rotation after the clean-up: the second successor replaces the first token. */
const FRESH = [
  `${J}minting`,
  'POST /user/tokens → {new#2}',
  `${J}minted`,
  `${J}publishing`,
  `PUT secret repo:acme/site ${SECRET} ← {new#2}`,
  `${J}published`,
  `${J}revoking`,
  'DELETE /user/tokens/{management}',
  `${J}done`,
  RELEASE
]
const POINTS: CrashPoint[] = [
  {
    name: 'the successor created',
    key: TOKENS,
    // Minted, never written: the successor found by its journalled name is deleted.
    after: [...TAKE_OVER, 'DELETE /user/tokens/{new}', `${J}rolled-back`, ...FRESH]
  },
  {
    name: 'journal: minted',
    key: VARIABLE,
    phase: 'minted',
    after: [...TAKE_OVER, 'DELETE /user/tokens/{new}', `${J}rolled-back`, ...FRESH]
  },
  {
    name: 'journal: publishing',
    key: VARIABLE,
    phase: 'publishing',
    // The secret may hold either: the run holds the first token, writes it back, then deletes the successor.
    after: [
      ...TAKE_OVER,
      `${J}rolling-back`,
      `PUT secret repo:acme/site ${SECRET} ← {management}`,
      'DELETE /user/tokens/{new}',
      `${J}rolled-back`,
      ...FRESH
    ]
  },
  {
    name: 'the secret written',
    key: `PUT /repos/acme/site/actions/secrets/${SECRET}`,
    // The run holds the successor: it writes it everywhere again, then ends the first token.
    after: [
      ...TAKE_OVER,
      `${J}publishing`,
      `PUT secret repo:acme/site ${SECRET} ← {new}`,
      `${J}published`,
      `${J}revoking`,
      'DELETE /user/tokens/{management}',
      `${J}done`,
      RELEASE
    ]
  },
  {
    name: 'the old token deleted',
    key: 'DELETE /client/v4/user/tokens/{id}',
    after: [...TAKE_OVER, `${J}revoking`, `${J}done`, RELEASE]
  },
  {
    name: 'the old token given an expiry',
    key: 'PUT /client/v4/user/tokens/{id}',
    grace: '1h',
    // Its expiry is within the grace already: nothing is sent again.
    after: [...TAKE_OVER, `${J}revoking`, `${J}done`, RELEASE]
  }
]

interface Crash {
  sb: Sandbox
  killed: ActionResult
  rerun: ActionResult
  afterCrash: string[]
  firstId: string
}

function phaseOf(entry: RequestEntry): string | undefined {
  const body = entry.body as { value?: string } | undefined
  return (JSON.parse(body?.value ?? '{}') as { phase?: string }).phase
}

async function crashAndRerun(point: CrashPoint): Promise<Crash> {
  const sb = await world()
  const firstId = managementId(sb)
  const extra: Record<string, string> = point.grace ? { 'revoke-grace': point.grace } : {}
  let child: ChildProcess | undefined
  let fired = false
  const unhook = killWhen(
    sb,
    () => child,
    entry => {
      if (fired || requestKey(entry) !== point.key) return false
      if (point.phase && phaseOf(entry) !== point.phase) return false
      return (fired = true)
    }
  )
  try {
    const killed = await runAction(sb, selfInputs(sb, extra), { onSpawn: c => (child = c) })
    unhook()
    const killedAt = sb.log.entries.at(-1)?.seq ?? 0
    const rerun = await runAction(sb, selfInputs(sb, extra))
    return {
      sb,
      killed,
      rerun,
      afterCrash: mutationList(sb, { [firstId]: 'management' }, killedAt),
      firstId
    }
  } finally {
    await sb.stop()
  }
}

const crash = startNamed(Object.fromEntries(POINTS.map(p => [p.name, () => crashAndRerun(p)])), 2)

describe.each(POINTS.map(p => [p.name, p] as const))('killed after %s', (name, point) => {
  let c: Crash
  beforeAll(async () => {
    c = await crash(name)
  }, 180_000)

  it('the killed run stopped there', () => {
    expect(c.killed.signal).toBe('SIGKILL')
  })

  it('what the next run did, in order', () => {
    expect(c.afterCrash).toEqual(point.after)
  })

  it('the next run settles: one live successor in the secret, no orphan, the first token ended', () => {
    expect(c.rerun.stderr).toBe('')
    expect(c.rerun.exitCode).toBe(0)
    expect(c.rerun.outputs.result).toBe('rotated')
    const inSecret = [...c.sb.cloudflare.tokens.values()].find(t => t.value === secretValue(c.sb))!
    expect(inSecret.id).not.toBe(c.firstId)
    expect(c.rerun.outputs['token-id']).toBe(inSecret.id)
    const live = managers(c.sb)
    const first = c.sb.cloudflare.findById(c.firstId)
    if (point.grace) {
      // The first token lives out its grace: it expires within the hour, and nothing else lives.
      expect(live.map(t => t.id).sort()).toEqual([inSecret.id, c.firstId].sort())
      expect(Date.parse(first!.expires_on!) - c.sb.cloudflare.now()).toBeLessThanOrEqual(3_600_000)
    } else {
      expect(live.map(t => t.id)).toEqual([inSecret.id])
      expect(first).toBeUndefined()
    }
    expect(managementJournal(c.sb)).toMatchObject({ phase: 'done', pending_token_id: inSecret.id })
  })

  it('leaked nothing', () => {
    expectNothingLeaked(c.sb, [c.killed, c.rerun])
    expect(c.sb.log.violations).toEqual([])
  })
})
