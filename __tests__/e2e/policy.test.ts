/**
 * End to end, the rotation policy (issue 4): least privilege (the Security Matrix and the probe
 * each class gets), due dates, expiry, token names, revoke modes, dry-run and the management
 * token's preflight. dist/index.js (or R2_ROTATION_ENTRY) runs with the runner's environment,
 * against the sandbox. Every scenario also proves that no value leaked, that every request and answer matched
 * the OpenAPI descriptions, and that the app kept serving.
 */
import { createHash } from 'node:crypto'
import { PERMISSION_GROUPS, type CfTokenRecord } from '../../sandbox/cloudflare.js'
import {
  HEALTH_OBJECT_KEY,
  startSandbox,
  type Sandbox,
  type SandboxOptions,
  type SandboxPolicy
} from '../../sandbox/index.js'
import {
  findLeaks,
  runAction,
  SANDBOX_TIME_SCALE,
  sandboxInputs,
  type ActionResult
} from '../../sandbox/runner.js'
import type { LogEntry, RequestEntry } from '../../sandbox/log.js'
import { startNamed, HEALTH_POLL_MS } from './scenario.js'

const sha256 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex')
const DAY_MS = 24 * 60 * 60 * 1000
const BUCKET = 'avatars-bucket'
const JOURNAL = 'R2_ROTATION_STATE'
const PROBE_PREFIX = '.r2-token-rotation/'

const groupId = (name: string): string => {
  const group = PERMISSION_GROUPS.find(g => g.name === name)
  if (!group) throw new Error(`no permission group ${name}`)
  return group.id
}
/** Cloudflare stores token times to the second. */
const isoSeconds = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
const today = (): string => new Date().toISOString().slice(0, 10)

interface Scenario {
  sb: Sandbox
  result: ActionResult
  healthFailures: Array<{ at: number; status: number }>
  startedAt: number
}

type Overrides = Record<string, string> | ((sb: Sandbox) => Record<string, string>)

async function rotateIn(
  options: SandboxOptions,
  overrides: Overrides = {},
  prepare?: (sb: Sandbox) => void
): Promise<Scenario> {
  const sb = await startSandbox({ bucket: BUCKET, ...options })
  prepare?.(sb)
  return runIn(sb, typeof overrides === 'function' ? overrides(sb) : overrides)
}

async function runIn(sb: Sandbox, overrides: Record<string, string>): Promise<Scenario> {
  const watch = sb.watchHealth(HEALTH_POLL_MS)
  const startedAt = Date.now()
  const result = await runAction(sb, sandboxInputs(sb, overrides))
  const healthFailures = await watch.stop()
  return { sb, result, healthFailures, startedAt }
}

const isRequest = (e: LogEntry): e is RequestEntry => e.kind === 'request'
const indexOf = (sb: Sandbox, match: (e: LogEntry) => boolean): number =>
  sb.log.entries.findIndex(match)
const stdoutLines = (result: ActionResult): string[] =>
  result.stdout.split('\n').filter(l => !l.startsWith('::add-mask::'))

/** No value leaked, no OpenAPI violation, the app served throughout. */
function expectClean(scenario: Scenario): void {
  const { sb, result } = scenario
  const values = sb.secretValues()
  expect(values).toEqual(expect.arrayContaining([sb.current.value, sb.current.secretAccessKey]))
  const journal = sb.github.getVariable(sb.repository, JOURNAL) ?? ''
  expect(findLeaks(result, values, [journal])).toEqual([])
  expect(result.stderr).toBe('')
  expect(sb.log.violations).toEqual([])
  expect(scenario.healthFailures).toEqual([])
}

/** Nothing changed: no POST, PUT, PATCH or DELETE anywhere (journal and S3 included). */
function expectNoMutation(sb: Sandbox): void {
  expect(sb.log.mutations().map(e => `${e.service} ${e.method} ${e.path}`)).toEqual([])
  expect(sb.log.events('token.created')).toEqual([])
  expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
  expect(sb.github.secretWrites).toEqual([])
  expect(sb.github.getVariable(sb.repository, JOURNAL)).toBeUndefined()
}

function journalOf(sb: Sandbox): Record<string, unknown> {
  return JSON.parse(sb.github.getVariable(sb.repository, JOURNAL) ?? '{}') as Record<
    string,
    unknown
  >
}

/** The action's own S3 requests signed with `accessKeyId` (the app reads only healthz.txt). */
function probeRequests(sb: Sandbox, accessKeyId: string): RequestEntry[] {
  return sb.log
    .requests({ service: 'r2' })
    .filter(
      e =>
        !e.path.includes(HEALTH_OBJECT_KEY) &&
        String(e.headers.authorization ?? '').includes(`Credential=${accessKeyId}/`)
    )
}

const bucketPolicy = (group: string) => (ctx: { accountId: string; bucket: string }) => [
  {
    effect: 'allow' as const,
    permission_groups: [{ id: groupId(group) }],
    resources: { [`com.cloudflare.edge.r2.bucket.${ctx.accountId}_default_${ctx.bucket}`]: '*' }
  }
]
const accountPolicy = (group: string) => (ctx: { accountId: string }) => [
  {
    effect: 'allow' as const,
    permission_groups: [{ id: groupId(group) }],
    resources: { [`com.cloudflare.api.account.${ctx.accountId}`]: '*' }
  }
]
const allBucketsPolicy = (ctx: { accountId: string }): SandboxPolicy[] => [
  {
    effect: 'allow',
    permission_groups: [{ id: groupId('Workers R2 Storage Bucket Item Write') }],
    resources: {
      [`com.cloudflare.api.account.${ctx.accountId}`]: { 'com.cloudflare.edge.r2.bucket.*': '*' }
    }
  }
]

// ------------------------------------------------------------------ the scenarios, started at once

const CLASSES = [
  {
    cls: 'admin-read-write',
    policies: accountPolicy('Workers R2 Storage Write'),
    probe: 'write',
    scope: 'admin-read-write buckets=all'
  },
  {
    cls: 'admin-read',
    policies: accountPolicy('Workers R2 Storage Read'),
    probe: 'read',
    scope: 'admin-read buckets=all'
  },
  {
    cls: 'object-read-write',
    policies: bucketPolicy('Workers R2 Storage Bucket Item Write'),
    probe: 'write',
    scope: `object-read-write bucket=${BUCKET}`
  },
  {
    cls: 'object-read',
    policies: bucketPolicy('Workers R2 Storage Bucket Item Read'),
    probe: 'read',
    scope: `object-read bucket=${BUCKET}`
  }
]

/**
 * Every first run starts now, four at a time (each mostly waits for its child process); a test
 * awaits its own by name and stops its sandbox when done.
 */
const early = startNamed<Scenario>(
  {
    ...Object.fromEntries(
      CLASSES.map(({ cls, policies }) => [
        `class ${cls}`,
        () =>
          // Admin classes reach every bucket: r2-bucket names the one to probe.
          rotateIn(
            { rotatedPolicies: policies },
            cls.startsWith('admin') ? { 'r2-bucket': BUCKET } : {}
          )
      ])
    ),
    'least-privilege: warn': () =>
      rotateIn(
        { rotatedPolicies: allBucketsPolicy },
        { 'least-privilege': 'warn', 'r2-bucket': BUCKET }
      ),
    'least-privilege: enforce': () =>
      rotateIn({ rotatedPolicies: allBucketsPolicy }, { 'least-privilege': 'enforce' }),
    'not due': () => rotateIn({}, { 'rotate-after': '60d' }),
    forced: () => rotateIn({}, { 'rotate-after': '60d', force: 'true' }),
    'token-ttl': () => rotateIn({}, { 'token-ttl': '90d', 'rotate-after': '120d', force: 'true' }),
    'about to expire': () => {
      const now = Date.now()
      return rotateIn({}, { 'rotate-after': '20d' }, sb => {
        // Issued 25 days ago, expiring in 5 days: a 30-day lifetime.
        const token = sb.cloudflare.findById(sb.current.id)!
        token.issued_on = isoSeconds(now - 25 * DAY_MS)
        token.expires_on = isoSeconds(now + 5 * DAY_MS)
      })
    },
    'revoke-grace': () => rotateIn({}, { revoke: 'delete', 'revoke-grace': '60s' }),
    'revoke: keep': () => rotateIn({}, { revoke: 'keep' }),
    'revoke: disable, named twice before': () =>
      rotateIn({}, { revoke: 'disable' }, s => {
        // Names from earlier rotations, suffixes piled up by some other tool.
        s.cloudflare.findById(s.current.id)!.name =
          'avatars-uploader (rotated 2025-01-01) (rotated 2025-02-01)'
      }),
    'revoke: disable': () => rotateIn({}, { revoke: 'disable' }),
    'dry-run': () => rotateIn({}, { 'dry-run': 'true', revoke: 'disable' }),
    'management: read': () => rotateIn({ managementPermissions: 'read' }),
    'management: none': () => rotateIn({ managementPermissions: 'none' }),
    'management: account read only': () =>
      rotateIn({ owner: 'account', environment: 'production' }, sb => ({
        'cloudflare-api-token': weakAccountManager(sb)
      }))
  },
  4
)

// ------------------------------------------------------------------ the Security Matrix

describe.each(CLASSES)('class $cls', ({ cls, probe, scope }) => {
  let scenario: Scenario
  beforeAll(async () => {
    // Admin classes reach every bucket: r2-bucket names the one to probe.
    scenario = await early(`class ${cls}`)
  })
  afterAll(async () => {
    await scenario?.sb.stop()
  })

  it('rotates and reports the class as token-scope (outputs and summary)', () => {
    const { result } = scenario
    expect(result.exitCode).toBe(0)
    expect(result.outputs.result).toBe('rotated')
    expect(result.outputs['token-scope']).toBe(scope)
    expect(result.summary).toContain(scope)
    expect(result.stdout).toContain(`R2 probe: ${probe} on bucket ${BUCKET}`)
  })

  it(`probes with a ${probe} probe`, () => {
    const { sb, result } = scenario
    const newId = result.outputs['token-id']!
    const requests = probeRequests(sb, newId)
    expect(requests.length).toBeGreaterThan(0)
    expect(requests.every(e => e.status !== undefined && e.status < 300)).toBe(true)
    const writes = sb.log
      .requests({ service: 'r2' })
      .filter(e => ['PUT', 'POST', 'DELETE'].includes(e.method))
    if (probe === 'write') {
      // PUT, GET back, DELETE of one uniquely named object under the probe prefix, in the verify
      // phase and again in the smoke phase.
      expect(requests.every(e => e.path.startsWith(`/${BUCKET}/${PROBE_PREFIX}probe-`))).toBe(true)
      expect(requests.map(e => e.method)).toEqual(['PUT', 'GET', 'DELETE', 'PUT', 'GET', 'DELETE'])
      expect(writes).toEqual(requests.filter(e => e.method !== 'GET'))
      expect(sb.r2.listKeys(BUCKET).filter(k => k.startsWith(PROBE_PREFIX))).toEqual([])
    } else {
      // ListObjectsV2 (or HEAD), never a write of any kind.
      for (const e of requests) {
        expect(
          e.method === 'HEAD' || (e.method === 'GET' && /^\/[^/?]+\?.*list-type=2/.test(e.path))
        ).toBe(true)
      }
      expect(writes).toEqual([])
    }
  })

  it('warns about an admin class (and its account-wide reach), or not at all', () => {
    const { result } = scenario
    const warnings = stdoutLines(result).filter(l => l.startsWith('::warning::Least privilege:'))
    if (cls.startsWith('admin')) {
      const group =
        cls === 'admin-read-write' ? 'Workers R2 Storage Write' : 'Workers R2 Storage Read'
      expect(warnings).toEqual([
        expect.stringMatching(/reaches every R2 bucket of account [0-9a-f]{32} \(account-scoped\)/),
        expect.stringContaining(`holds ${group}, the admin class ${cls}`)
      ])
      expect(result.summary).toContain(`the admin class ${cls}`)
    } else {
      expect(warnings).toEqual([])
    }
  })

  it('leaks nothing, violates no contract, keeps the app serving', () => {
    expectClean(scenario)
  })
})

// ------------------------------------------------------------------ account-wide tokens

describe('an account-wide R2 token', () => {
  it('least-privilege: warn rotates, with the warning in the log and the summary', async () => {
    const scenario = await early('least-privilege: warn')
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(0)
      expect(result.outputs.result).toBe('rotated')
      expect(result.outputs['token-scope']).toBe('object-read-write buckets=all')
      const warning = stdoutLines(result).find(l => l.startsWith('::warning::Least privilege:'))
      expect(warning).toMatch(
        new RegExp(
          `Policy #1 \\([0-9a-f]{32}\\) \\(Workers R2 Storage Bucket Item Write\\) reaches every R2 bucket of account ${sb.accountId} \\(account-scoped\\)`
        )
      )
      expect(result.summary).toMatch(/\[!WARNING\][\s\S]*reaches every R2 bucket of account/)
      expect(sb.cloudflare.deletedTokens.map(t => t.id)).toEqual([sb.current.id])
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('least-privilege: enforce fails before any mutation, naming the policy and a narrower one', async () => {
    const scenario = await early('least-privilege: enforce')
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(1)
      expect(result.outputs.result).toBe('failed')
      expect(result.outputs['token-scope']).toBe('object-read-write buckets=all')
      const policyId = sb.cloudflare.findById(sb.current.id)!.policies[0]!.id
      const error = stdoutLines(result)
        .filter(l => l.startsWith('::error::'))
        .at(-1)
      expect(error).toContain('least-privilege: enforce refuses to rotate')
      expect(error).toContain(
        `Policy #1 (${policyId}) (Workers R2 Storage Bucket Item Write) reaches every R2 bucket of account ${sb.accountId}`
      )
      expect(error).toContain(
        `Narrower: Workers R2 Storage Bucket Item Write on only the buckets the app uses, one resource per bucket (com.cloudflare.edge.r2.bucket.${sb.accountId}_default_`
      )
      expectNoMutation(sb)
      expect(sb.log.requests({ service: 'r2' }).filter(e => e.method !== 'GET')).toEqual([])
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })
})

// ------------------------------------------------------------------ due dates

describe('rotate-after and force', () => {
  it('a token younger than rotate-after is skipped: nothing changes, a notice says when it is due', async () => {
    // The sandbox's token was issued 40 days ago.
    const scenario = await early('not due')
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(0)
      expect(result.outputs.result).toBe('skipped')
      expect(result.outputs['token-id']).toBeUndefined()
      const issued = Date.parse(sb.cloudflare.findById(sb.current.id)!.issued_on)
      const due = new Date(issued + 60 * DAY_MS).toISOString().slice(0, 10)
      const notice = stdoutLines(result).find(l => l.startsWith('::notice::'))
      expect(notice).toContain(`Token ${sb.current.id} is not due for rotation yet`)
      expect(notice).toContain(`will be due on ${due}`)
      expect(notice).toContain('force: true')
      expect(result.summary).toContain('skipped')
      expectNoMutation(sb)
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('force: true rotates a token that is not due; the old one is deleted (revoke: delete)', async () => {
    const scenario = await early('forced')
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(0)
      expect(result.outputs.result).toBe('rotated')
      const newId = result.outputs['token-id']!
      expect(sb.cloudflare.findById(sb.current.id)).toBeUndefined()
      expect(sb.cloudflare.deletedTokens.map(t => t.id)).toEqual([sb.current.id])
      // The old token had no expiry, so neither has the new one.
      expect(sb.cloudflare.findById(newId)!.expires_on).toBeUndefined()
      expect(result.outputs['expires-on']).toBeUndefined()
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })
})

// ------------------------------------------------------------------ expiry

/**
 * The rotation minted a token that expires `lifetimeMs` after it ran (to the second): in the
 * create request, on the token, and in the `expires-on` output.
 */
function expectNewExpiry(scenario: Scenario, lifetimeMs: number): CfTokenRecord {
  const { sb, result, startedAt } = scenario
  expect(result.outputs.result).toBe('rotated')
  const minted = sb.cloudflare.findById(result.outputs['token-id']!)!
  const expires = Date.parse(minted.expires_on!)
  expect(expires).toBeGreaterThanOrEqual(startedAt + lifetimeMs - 1000)
  expect(expires).toBeLessThanOrEqual(Date.now() + lifetimeMs)
  expect(result.outputs['expires-on']).toBe(minted.expires_on)
  const create = sb.log.requests({ service: 'cloudflare', method: 'POST' })
  expect(create.map(e => (e.body as { expires_on?: string }).expires_on)).toEqual([
    minted.expires_on
  ])
  return minted
}

describe('expiry', () => {
  it('token-ttl sets expires_on; a new token that lapses before the next due date is warned about', async () => {
    const scenario = await early('token-ttl')
    const { sb, result } = scenario
    try {
      const minted = expectNewExpiry(scenario, 90 * DAY_MS)
      const warnings = stdoutLines(result).filter(l => l.startsWith('::warning::'))
      expect(warnings).toEqual([
        expect.stringContaining(
          `The new token will expire on ${minted.expires_on}, before the next rotation is due`
        )
      ])
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('without token-ttl the new token keeps the old lifetime length; an old token about to expire is warned about', async () => {
    const scenario = await early('about to expire')
    const { sb, result } = scenario
    try {
      expectNewExpiry(scenario, 30 * DAY_MS)
      const old = sb.cloudflare.deletedTokens.find(t => t.id === sb.current.id)!
      const warnings = stdoutLines(result).filter(l => l.startsWith('::warning::'))
      expect(warnings).toEqual([
        `::warning::The current token ${sb.current.id} expires on ${old.expires_on}, within 7 days.`
      ])
      expect(result.summary).toContain('within 7 days')
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })
})

// ------------------------------------------------------------------ revoke modes and names

describe('revoke', () => {
  it('revoke-grace waits before revoking the old token', async () => {
    // A minute on the action's clock: SANDBOX_TIME_SCALE of it in real time.
    const scenario = await early('revoke-grace')
    const { sb, result } = scenario
    try {
      expect(result.outputs.result).toBe('rotated')
      const newId = result.outputs['token-id']!
      expect(sb.cloudflare.deletedTokens.map(t => t.id)).toEqual([sb.current.id])
      const oldPath = `/tokens/${sb.current.id}`
      const disableOld = sb.log
        .requests({ service: 'cloudflare', method: 'PUT' })
        .find(e => e.path.endsWith(oldPath))!
      const deleteOld = sb.log
        .requests({ service: 'cloudflare', method: 'DELETE' })
        .find(e => e.path.endsWith(oldPath))!
      // The last things before the grace: the smoke phase's checks and R2 probe.
      const lastProbe = probeRequests(sb, newId)
        .filter(e => e.seq < disableOld.seq)
        .at(-1)!
      const lastSmoke = sb.log
        .requests({ service: 'app' })
        .filter(e => e.headers['x-smoke-check'] === 'r2-token-rotation' && e.seq < disableOld.seq)
        .at(-1)!
      const grace = 60_000 * SANDBOX_TIME_SCALE
      expect(disableOld.at - lastProbe.at).toBeGreaterThanOrEqual(grace)
      expect(disableOld.at - lastSmoke.at).toBeGreaterThanOrEqual(grace)
      expect(disableOld.at - lastProbe.at).toBeLessThan(grace + 10_000)
      expect(deleteOld.seq).toBeGreaterThan(disableOld.seq)
      expect(result.stdout).toContain('Waiting 60 s (revoke-grace) before revoking')
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })

  it('revoke: keep leaves the old token active', async () => {
    const scenario = await early('revoke: keep')
    const { sb, result } = scenario
    try {
      expect(result.outputs.result).toBe('rotated')
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(sb.cloudflare.findById(result.outputs['token-id']!)?.status).toBe('active')
      expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toEqual([])
      expect(sb.log.requests({ service: 'cloudflare', method: 'PUT' })).toEqual([])
      expect(journalOf(sb)).toMatchObject({ phase: 'done', disabled_token_ids: [] })
      expect(result.summary).toContain('kept')
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })

  describe('revoke: disable, rotated twice in one sandbox', () => {
    let sb: Sandbox
    let first: Scenario
    let second: Scenario
    let firstId: string
    /** What the first rotation left: the old token's status and the journal. */
    let between: { status?: string; journal: Record<string, unknown> }
    beforeAll(async () => {
      first = await early('revoke: disable, named twice before')
      sb = first.sb
      firstId = first.result.outputs['token-id']!
      between = {
        status: sb.cloudflare.findById(sb.current.id)?.status,
        journal: journalOf(sb)
      }
      const firstValue = sb.cloudflare.findById(firstId)!.value
      second = await runIn(sb, {
        revoke: 'disable',
        'current-token': firstValue,
        'current-access-key-id': firstId,
        'current-secret-access-key': sha256(firstValue)
      })
    })
    afterAll(async () => {
      await sb?.stop()
    })

    it('the first rotation disables the old token (PUT status disabled) and journals it', () => {
      expect(first.result.exitCode).toBe(0)
      expect(first.result.outputs.result).toBe('rotated')
      expect(between.status).toBe('disabled')
      expect(between.journal).toMatchObject({ phase: 'done', disabled_token_ids: [sb.current.id] })
      const disable = sb.log
        .requests({ service: 'cloudflare', method: 'PUT' })
        .find(e => e.path.endsWith(`/tokens/${sb.current.id}`))!
      expect(disable.status).toBe(200)
      expect(disable.body).toMatchObject({ status: 'disabled' })
      // Disabled only after the deploy with the new token concluded success and the smoke checks passed.
      const concluded = indexOf(sb, e => e.kind === 'event' && e.name === 'run.completed')
      const firstSmoke = indexOf(
        sb,
        e =>
          isRequest(e) && e.service === 'app' && e.headers['x-smoke-check'] === 'r2-token-rotation'
      )
      const disableAt = sb.log.entries.indexOf(disable)
      expect(disableAt).toBeGreaterThan(concluded)
      expect(disableAt).toBeGreaterThan(firstSmoke)
      expect(first.result.summary).toContain('disabled')
      expectClean(first)
    })

    it('the second rotation deletes the token the first one disabled, and disables its own predecessor', () => {
      expect(second.result.exitCode).toBe(0)
      expect(second.result.outputs.result).toBe('rotated')
      expect(second.result.outputs['previous-token-id']).toBe(firstId)
      expect(sb.cloudflare.findById(sb.current.id)).toBeUndefined()
      expect(sb.cloudflare.deletedTokens.map(t => t.id)).toEqual([sb.current.id])
      expect(sb.cloudflare.findById(firstId)?.status).toBe('disabled')
      const secondId = second.result.outputs['token-id']!
      expect(sb.cloudflare.findById(secondId)?.status).toBe('active')
      expect(journalOf(sb)).toMatchObject({ phase: 'done', disabled_token_ids: [firstId] })
      expect(sb.liveAccessKeyId()).toBe(secondId)
      expectClean(second)
    })

    it('token names do not pile up suffixes', () => {
      const name = `avatars-uploader (rotated ${today()})`
      expect(sb.cloudflare.findById(firstId)?.name).toBe(name)
      expect(sb.cloudflare.findById(second.result.outputs['token-id']!)?.name).toBe(name)
    })
  })

  describe('revoke: disable, and someone enables the disabled token again before the next rotation', () => {
    let sb: Sandbox
    let second: Scenario
    let firstId: string
    beforeAll(async () => {
      const first = await early('revoke: disable')
      sb = first.sb
      firstId = first.result.outputs['token-id']!
      // Enabled again on purpose (something still needed it): the journal still lists it.
      sb.cloudflare.findById(sb.current.id)!.status = 'active'
      const firstValue = sb.cloudflare.findById(firstId)!.value
      second = await runIn(sb, {
        revoke: 'disable',
        'current-token': firstValue,
        'current-access-key-id': firstId,
        'current-secret-access-key': sha256(firstValue)
      })
    })
    afterAll(async () => {
      await sb?.stop()
    })

    it('leaves it alone, says so, and deletes nothing', () => {
      expect(second.result.exitCode).toBe(0)
      expect(sb.cloudflare.findById(sb.current.id)?.status).toBe('active')
      expect(sb.log.requests({ service: 'cloudflare', method: 'DELETE' })).toEqual([])
      expect(second.result.stdout).toContain(
        `::warning::Token ${sb.current.id}, left disabled by an earlier rotation, is active again: someone enabled it on purpose, so it is left alone`
      )
      // The journal forgets it: only the token this rotation disabled is listed now.
      expect(journalOf(sb)).toMatchObject({ phase: 'done', disabled_token_ids: [firstId] })
      expectClean(second)
    })
  })
})

// ------------------------------------------------------------------ dry-run

describe('dry-run', () => {
  it('runs the read-only checks, prints the plan, and changes nothing', async () => {
    const scenario = await early('dry-run')
    const { sb, result } = scenario
    try {
      expect(result.exitCode).toBe(0)
      expect(result.outputs.result).toBe('dry-run')
      expect(result.outputs['token-scope']).toBe(`object-read-write bucket=${BUCKET}`)
      expect(result.outputs['token-id']).toBeUndefined()
      expectNoMutation(sb)
      expect(
        sb.log.requests({ service: 'r2' }).filter(e => ['PUT', 'POST', 'DELETE'].includes(e.method))
      ).toEqual([])
      // The read-only checks ran: the current token, the targets' public keys, the workflow.
      const paths = sb.log.requests().map(e => `${e.method} ${e.path.split('?')[0]}`)
      expect(paths).toEqual(
        expect.arrayContaining([
          `GET /client/v4/user/tokens/${sb.current.id}`,
          `GET /repos/${sb.repository}/actions/secrets/public-key`,
          expect.stringMatching(new RegExp(`^GET /repos/${sb.repository}/actions/workflows/`))
        ])
      )
      const plan = stdoutLines(result).filter(l => l.startsWith('plan: '))
      expect(plan).toEqual([
        expect.stringContaining(
          `plan: mint "avatars-uploader (rotated ${today()})" as a copy of ${sb.current.id}`
        ),
        expect.stringContaining(`probe bucket ${BUCKET} (write)`),
        expect.stringContaining(
          `write ${sb.secretNames.token}=token, ${sb.secretNames.accessKeyId}=access-key-id`
        ),
        expect.stringContaining('dispatch .github/workflows/deploy.yml on main'),
        'plan: 1 smoke check(s)',
        `plan: disable the previous token ${sb.current.id}, watch the checks for 5 s, then leave it disabled`
      ])
      expect(result.summary).toContain('Plan')
      expect(result.summary).toContain(`as a copy of ${sb.current.id}`)
      expectClean(scenario)
    } finally {
      await sb.stop()
    }
  })
})

// ------------------------------------------------------------------ the management token

describe('a management token without the permission to rotate', () => {
  const expectPreflightFailure = (scenario: Scenario, message: RegExp): void => {
    const { sb, result } = scenario
    expect(result.exitCode).toBe(1)
    expect(result.outputs.result).toBe('failed')
    const errors = stdoutLines(result).filter(l => l.startsWith('::error::'))
    expect(errors.at(0)).toMatch(/^::error::Phase preflight failed: /)
    expect(errors.at(-1)).toMatch(message)
    expect(result.summary).toMatch(message)
    expectNoMutation(sb)
    expectClean(scenario)
  }

  it("read-only (API Tokens Read): names 'API Tokens Write'", async () => {
    const scenario = await early('management: read')
    try {
      expectPreflightFailure(
        scenario,
        /management token \(cloudflare-api-token\) [0-9a-f]{32} lacks the permission 'API Tokens Write', needed to create and delete user-owned tokens/
      )
    } finally {
      await scenario.sb.stop()
    }
  })

  it("no API token rights at all: names 'API Tokens Write' and 'Account API Tokens Write'", async () => {
    const scenario = await early('management: none')
    try {
      expectPreflightFailure(
        scenario,
        new RegExp(
          `management token \\(cloudflare-api-token\\) [0-9a-f]{32} may not read API tokens: .*It lacks both 'API Tokens Write' \\(for user-owned tokens\\) and 'Account API Tokens Write' on account ${scenario.sb.accountId}`
        )
      )
    } finally {
      await scenario.sb.stop()
    }
  })

  it("an account-owned token, managed without 'Account API Tokens Write': names it", async () => {
    const scenario = await early('management: account read only')
    try {
      expectPreflightFailure(
        scenario,
        new RegExp(
          `lacks the permission 'Account API Tokens Write' on account ${scenario.sb.accountId}, needed to create and delete account-owned tokens`
        )
      )
    } finally {
      await scenario.sb.stop()
    }
  })
})

/** A user-owned management token that may write user tokens but only read the account's tokens. */
function weakAccountManager(sb: Sandbox): string {
  return sb.cloudflare.addToken({
    name: 'token-rotation-manager (account read only)',
    policies: [
      {
        effect: 'allow',
        permission_groups: [{ id: groupId('API Tokens Write') }],
        resources: { [`com.cloudflare.api.user.${sb.cloudflare.userId}`]: '*' }
      },
      {
        effect: 'allow',
        permission_groups: [{ id: groupId('Account API Tokens Read') }],
        resources: { [`com.cloudflare.api.account.${sb.accountId}`]: '*' }
      }
    ]
  }).value
}
