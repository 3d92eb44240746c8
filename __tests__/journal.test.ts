/**
 * The rotation journal against the GitHub simulator: created with POST (201), updated with PATCH
 * (204), a 409 on create becomes an update, a create whose answer was lost or refused is settled
 * by PATCH, errors name the permission; records that are not a version-1 journal are refused.
 * And `decidePublishedRecovery`: which way an interrupted rotation can be finished from the
 * values the `current-*` inputs hold.
 */
import { jest } from '@jest/globals'
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim } from '../sandbox/github.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import { JOURNAL_PHASES, Journal, JournalError, type JournalRecord } from '../src/journal.js'
import { type Recovery, decideRecovery, isPublished, isSettled } from '../src/decide.js'
import type { Credentials, SecretField } from '../src/model.js'

/** The recovery of a published rotation whose run has completed and whose tokens are all live. */
function decidePublishedRecovery(
  record: JournalRecord,
  known: Credentials[],
  fields: SecretField[]
): Recovery {
  return decideRecovery({ record, journalRun: 'completed', known, fields, ownerTokens: [] })
}

const TOKEN = 'github_pat_journal_test'
const NO_VARIABLES = 'github_pat_no_variables'
const NAME = 'R2_ROTATION_STATE'
const repo = { owner: 'acme', repo: 'site' }
const quiet = { info: () => {}, warning: () => {}, debug: () => {} }
const at = (iso: string) => () => new Date(iso)

let log: RequestLog
let sim: GitHubSim
let github: GitHubClient

beforeEach(async () => {
  // The journal reports each write with core.debug (a `::debug::` line on stdout).
  jest.spyOn(process.stdout, 'write').mockImplementation(() => true)
  log = new RequestLog()
  sim = new GitHubSim(log)
  sim.addToken(TOKEN)
  sim.addToken(NO_VARIABLES, { variables: false })
  sim.addRepo('acme/site')
  await sim.start()
  github = createGitHubClient({ token: TOKEN, baseUrl: sim.url, log: quiet })
})

afterEach(async () => {
  jest.restoreAllMocks()
  await sim.stop()
})

/** `METHOD status` of each variables request, in order. */
function variableRequests(): string[] {
  return log
    .requests()
    .filter(e => e.path.includes('/actions/variables'))
    .map(e => `${e.method} ${e.status}`)
}

function stored(): Record<string, unknown> {
  return JSON.parse(sim.getVariable('acme/site', NAME)!) as Record<string, unknown>
}

describe('Journal', () => {
  it('creates the variable with POST (201) when the read found none', async () => {
    const journal = new Journal(
      github,
      repo,
      NAME,
      { id: '1001', attempt: 1 },
      at('2026-03-01T10:00:00.000Z')
    )
    expect(await journal.read()).toBeUndefined()
    const record = await journal.write({
      phase: 'minting',
      previous_token_id: 'a'.repeat(32),
      pending_token_name: 'avatars (rotated 2026-03-01)'
    })
    expect(variableRequests()).toEqual(['GET 404', 'POST 201'])
    expect(record).toEqual({
      version: 1,
      phase: 'minting',
      run_id: '1001',
      run_attempt: 1,
      previous_token_id: 'a'.repeat(32),
      pending_token_name: 'avatars (rotated 2026-03-01)',
      disabled_token_ids: [],
      deploy_run_ids: [],
      updated_at: '2026-03-01T10:00:00.000Z'
    })
    expect(stored()).toEqual(record)
    expect(log.violations).toEqual([])
  })

  it('updates it with PATCH (204), keeping the fields not given', async () => {
    let now = '2026-03-01T10:00:00.000Z'
    const journal = new Journal(github, repo, NAME, { id: '1001', attempt: 1 }, () => new Date(now))
    await journal.read()
    await journal.write({ phase: 'minting', previous_token_id: 'a'.repeat(32) })
    now = '2026-03-01T10:00:05.000Z'
    await journal.write({ phase: 'minted', pending_token_id: 'b'.repeat(32) })
    await journal.write({ phase: 'deploying', deploy_run_ids: [42] })
    expect(variableRequests()).toEqual(['GET 404', 'POST 201', 'PATCH 204', 'PATCH 204'])
    expect(stored()).toMatchObject({
      phase: 'deploying',
      previous_token_id: 'a'.repeat(32),
      pending_token_id: 'b'.repeat(32),
      deploy_run_ids: [42],
      updated_at: '2026-03-01T10:00:05.000Z'
    })
    // A new run reads what the last one left, and signs its own writes.
    const next = new Journal(github, repo, NAME, { id: '2002', attempt: 1 })
    expect(await next.read()).toMatchObject({ phase: 'deploying', run_id: '1001' })
    expect(await next.write({ phase: 'pending' })).toMatchObject({
      phase: 'pending',
      run_id: '2002',
      pending_token_id: 'b'.repeat(32)
    })
    expect(log.violations).toEqual([])
  })

  it('turns a 409 on create (created meanwhile) into an update', async () => {
    const journal = new Journal(github, repo, NAME, { id: '1001', attempt: 1 })
    await journal.read()
    sim.setVariable('acme/site', NAME, '{"version":1,"phase":"done","run_id":"999"}')
    await journal.write({ phase: 'minting' })
    expect(variableRequests()).toEqual(['GET 404', 'POST 409', 'PATCH 204'])
    expect(stored()).toMatchObject({ phase: 'minting', run_id: '1001' })
  })

  it('updates a variable it did not read first; creates it when PATCH finds none (404)', async () => {
    const journal = new Journal(github, repo, NAME, { id: '1001', attempt: 1 })
    await journal.write({ phase: 'minting' })
    expect(variableRequests()).toEqual(['PATCH 404', 'POST 201'])
    expect(stored()).toMatchObject({ phase: 'minting' })
  })

  it.each([
    ['answered 500', { status: 500 }, ['GET 404', 'POST 500', 'PATCH 404', 'POST 201']],
    [
      'answered 429',
      { status: 429, retryAfter: 1 },
      ['GET 404', 'POST 429', 'PATCH 404', 'POST 201']
    ],
    [
      'acted, but its answer was lost',
      { dropAfterHandling: true },
      ['GET 404', 'POST 201', 'PATCH 204']
    ]
  ])(
    'settles a create that %s with PATCH, never failing the rotation',
    async (_what, fault, seen) => {
      sim.service.inject({ method: 'POST', path: /\/actions\/variables$/, ...fault })
      const journal = new Journal(github, repo, NAME, { id: '1001', attempt: 1 })
      await journal.read()
      await journal.write({ phase: 'minting' })
      expect(variableRequests()).toEqual(seen)
      expect(stored()).toMatchObject({ phase: 'minting', run_id: '1001' })
    }
  )

  it('retries an update answered 502', async () => {
    const journal = new Journal(github, repo, NAME, { id: '1001', attempt: 1 })
    await journal.read()
    await journal.write({ phase: 'minting' })
    sim.service.inject({
      method: 'PATCH',
      path: /\/actions\/variables\/R2_ROTATION_STATE$/,
      status: 502
    })
    await journal.write({ phase: 'minted' })
    expect(variableRequests()).toEqual(['GET 404', 'POST 201', 'PATCH 502', 'PATCH 204'])
    expect(stored()).toMatchObject({ phase: 'minted' })
  })

  it('names the permission when the token may not read or write variables', async () => {
    const denied = createGitHubClient({ token: NO_VARIABLES, baseUrl: sim.url, log: quiet })
    const journal = new Journal(denied, repo, NAME, { id: '1001', attempt: 1 })
    await expect(journal.read()).rejects.toThrow(JournalError)
    await expect(journal.read()).rejects.toThrow(
      /Cannot read the rotation journal \(variable R2_ROTATION_STATE\): GitHub answered 403.*"Variables: read and write" on acme\/site/
    )
    await expect(journal.write({ phase: 'minting' })).rejects.toThrow(
      /Cannot write the rotation journal .*"Variables: read and write"/
    )
  })

  it('is a no-op without a variable name (state-variable empty)', async () => {
    const journal = new Journal(github, repo, undefined, { id: '1001', attempt: 1 })
    expect(journal.enabled).toBe(false)
    expect(await journal.read()).toBeUndefined()
    const record = await journal.write({ phase: 'minting', previous_token_id: 'a'.repeat(32) })
    expect(record.phase).toBe('minting')
    expect(journal.record).toBe(record)
    expect(log.requests()).toEqual([])
  })

  describe('reading a record', () => {
    it.each([
      ['not JSON', 'phase=minting', /is not a rotation journal \(not JSON\)/],
      ['a JSON string', '"minting"', /is not a version-1 rotation journal/],
      ['null', 'null', /is not a version-1 rotation journal/],
      ['another version', '{"version":2,"phase":"done","run_id":"1"}', /version-1/],
      ['an unknown phase', '{"version":1,"phase":"finishing","run_id":"1"}', /version-1/],
      ['no run id', '{"version":1,"phase":"done"}', /version-1/],
      ['a numeric run id', '{"version":1,"phase":"done","run_id":1}', /version-1/]
    ])('refuses %s, saying what to do', async (_what, value, message) => {
      sim.setVariable('acme/site', NAME, value)
      const journal = new Journal(github, repo, NAME, { id: '1001', attempt: 1 })
      const read = journal.read()
      await expect(read).rejects.toThrow(JournalError)
      await expect(journal.read()).rejects.toThrow(message)
      await expect(journal.read()).rejects.toThrow(/Delete it or choose another state-variable/)
    })

    it('fills in what an older or hand-edited record leaves out', async () => {
      sim.setVariable(
        'acme/site',
        NAME,
        '{"version":1,"phase":"pending","run_id":"7","deploy_run_ids":["12",13],"disabled_token_ids":"x"}'
      )
      const record = await new Journal(github, repo, NAME, { id: '1001', attempt: 1 }).read()
      expect(record).toEqual({
        version: 1,
        phase: 'pending',
        run_id: '7',
        deploy_run_ids: [12, 13],
        disabled_token_ids: [],
        updated_at: '1970-01-01T00:00:00.000Z'
      })
    })
  })
})

describe('phases', () => {
  const settled = ['done', 'rolled-back']
  const unpublished = ['minting', 'minted']

  it.each(JOURNAL_PHASES.map(phase => [phase]))('%s', phase => {
    // Settled: nothing left to finish. Published: the new token may be in a secret.
    expect(isSettled(phase)).toBe(settled.includes(phase))
    expect(isPublished(phase)).toBe(!settled.includes(phase) && !unpublished.includes(phase))
  })
})

describe('decidePublishedRecovery', () => {
  const previous = 'a'.repeat(32)
  const pending = 'b'.repeat(32)
  const record: JournalRecord = {
    version: 1,
    phase: 'publishing',
    run_id: '1001',
    previous_token_id: previous,
    pending_token_id: pending,
    disabled_token_ids: [],
    deploy_run_ids: [],
    updated_at: '2026-03-01T10:00:00.000Z'
  }
  const all: SecretField[] = ['token', 'access-key-id', 'secret-access-key']
  const s3: SecretField[] = ['access-key-id', 'secret-access-key']

  it('goes forward when the inputs give every field of the pending token', () => {
    const next = { id: pending, value: 'cfut_new', secretAccessKey: 'c'.repeat(64) }
    expect(decidePublishedRecovery(record, [next], all)).toEqual({
      kind: 'forward',
      record,
      next,
      previousId: previous,
      from: 'publish'
    })
  })

  it('goes forward with the S3 pair alone when no secret needs the token value', () => {
    const next = { id: pending, secretAccessKey: 'c'.repeat(64) }
    expect(decidePublishedRecovery(record, [next], s3)).toMatchObject({ kind: 'forward', next })
  })

  it('prefers forward when both tokens are fully known (the new one is already in a secret)', () => {
    const known = [
      { id: previous, value: 'cfut_old', secretAccessKey: 'd'.repeat(64) },
      { id: pending, value: 'cfut_new', secretAccessKey: 'c'.repeat(64) }
    ]
    expect(decidePublishedRecovery(record, known, all).kind).toBe('forward')
  })

  it('merges what several inputs tell about one token', () => {
    const known = [
      { id: pending, value: 'cfut_new' },
      { id: pending, secretAccessKey: 'c'.repeat(64) }
    ]
    expect(decidePublishedRecovery(record, known, all)).toMatchObject({
      kind: 'forward',
      next: { id: pending, value: 'cfut_new', secretAccessKey: 'c'.repeat(64) }
    })
  })

  it('restores when only the previous token is fully known', () => {
    const old = { id: previous, value: 'cfut_old', secretAccessKey: 'd'.repeat(64) }
    const known = [old, { id: pending, secretAccessKey: 'c'.repeat(64) }]
    expect(decidePublishedRecovery(record, known, all)).toEqual({
      kind: 'restore',
      record,
      previous: old,
      pendingId: pending
    })
  })

  it('is stuck when neither token is fully known, naming what is missing', () => {
    const known = [
      { id: previous, secretAccessKey: 'd'.repeat(64) },
      { id: pending, secretAccessKey: 'c'.repeat(64) }
    ]
    const decision = decidePublishedRecovery(record, known, all)
    expect(decision.kind).toBe('stuck')
    expect(decision.kind === 'stuck' && decision.reason).toBe(
      `the current-* inputs give neither every field of the pending token ${pending} (missing: token) nor of the previous token ${previous} (missing: token)`
    )
  })

  it('is stuck when the inputs name some other token altogether', () => {
    const other = { id: 'e'.repeat(32), value: 'cfut_other', secretAccessKey: 'f'.repeat(64) }
    expect(decidePublishedRecovery(record, [other], all).kind).toBe('stuck')
  })

  it.each([
    ['pending', { pending_token_id: undefined }],
    ['previous', { previous_token_id: undefined }]
  ])('is stuck when the journal names no %s token id', (which, change) => {
    const decision = decidePublishedRecovery({ ...record, ...change }, [], all)
    expect(decision).toEqual({
      kind: 'stuck',
      record: { ...record, ...change },
      reason: `the journal (phase publishing) names no ${which} token id`
    })
  })
})
