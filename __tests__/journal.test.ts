/**
 * The rotation journal and its lock against the GitHub simulator: created with POST (201),
 * updated with PATCH (204), a 409 on create becomes an update, a create whose answer was lost or
 * refused is settled by PATCH, errors name the permission; records that are not a version-1
 * journal are refused. The lock is claimed by a create that only one run can win (201, else 409),
 * read, overwritten on a take-over and deleted at the end. What a record or a held lock means is
 * decided in decide.ts (__tests__/decide.test.ts).
 */
import { jest } from '@jest/globals'
import { RequestLog } from '../sandbox/log.js'
import { GitHubSim } from '../sandbox/github.js'
import { createGitHubClient, type GitHubClient } from '../src/github/client.js'
import { Journal, JournalError } from '../src/journal.js'

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
  // Retry waits (a second after a 5xx) run 20 times as fast.
  github = createGitHubClient({ token: TOKEN, baseUrl: sim.url, log: quiet, timeScale: 0.05 })
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

describe('the lock', () => {
  const LOCK = 'R2_ROTATION_STATE_LOCK'
  const CLAIMED_AT = '2026-03-01T10:00:00.000Z'
  const runOf = (id: string, attempt = 1, client: GitHubClient = github) =>
    new Journal(client, repo, NAME, { id, attempt }, at(CLAIMED_AT))
  const storedLock = (): unknown => JSON.parse(sim.getVariable('acme/site', LOCK)!)
  const denied = () => createGitHubClient({ token: NO_VARIABLES, baseUrl: sim.url, log: quiet })
  const PERMISSION = /GitHub answered 403.*"Variables: read and write" on acme\/site/

  it('is the journal variable with _LOCK appended; none without a journal', () => {
    expect(runOf('1001').lockName).toBe(LOCK)
    expect(new Journal(github, repo, undefined, { id: '1001', attempt: 1 }).lockName).toBe(
      undefined
    )
  })

  describe('createLock', () => {
    it('claims a free lock (201), naming this run, its attempt and when', async () => {
      expect(await runOf('1001', 2).createLock()).toBe('claimed')
      expect(variableRequests()).toEqual(['POST 201'])
      expect(storedLock()).toEqual({ run_id: '1001', run_attempt: 2, claimed_at: CLAIMED_AT })
    })

    it('finds a held lock (409) and leaves it as it was', async () => {
      await runOf('1001').createLock()
      expect(await runOf('2002').createLock()).toBe('held')
      expect(variableRequests()).toEqual(['POST 201', 'POST 409'])
      expect(storedLock()).toEqual({ run_id: '1001', run_attempt: 1, claimed_at: CLAIMED_AT })
    })

    it('lets exactly one of two runs that claim at once hold it', async () => {
      const answers = await Promise.all([runOf('1001').createLock(), runOf('2002').createLock()])
      expect([...answers].sort()).toEqual(['claimed', 'held'])
      const winner = answers[0] === 'claimed' ? '1001' : '2002'
      expect(storedLock()).toMatchObject({ run_id: winner })
    })

    it.each([
      // The create happened: a read shows whose it is.
      ['acted, but its answer was lost', { dropAfterHandling: true }, 'POST 201', true],
      ['answered 500', { status: 500 }, 'POST 500', false],
      ['answered 429', { status: 429, retryAfter: 1 }, 'POST 429', false]
    ])('is unclear when the create %s, and is never repeated', async (_what, fault, seen, made) => {
      sim.service.inject({ method: 'POST', path: /\/actions\/variables$/, ...fault })
      expect(await runOf('1001').createLock()).toBe('unclear')
      expect(variableRequests()).toEqual([seen])
      expect(sim.getVariable('acme/site', LOCK) !== undefined).toBe(made)
    })

    it('names the permission when the token may not write variables', async () => {
      await expect(runOf('1001', 1, denied()).createLock()).rejects.toThrow(JournalError)
      await expect(runOf('1001', 1, denied()).createLock()).rejects.toThrow(
        /Cannot claim the rotation lock \(variable R2_ROTATION_STATE_LOCK\): /
      )
      await expect(runOf('1001', 1, denied()).createLock()).rejects.toThrow(PERMISSION)
    })
  })

  describe('readLock', () => {
    it('reads no lock as none (404)', async () => {
      expect(await runOf('1001').readLock()).toBeUndefined()
      expect(variableRequests()).toEqual(['GET 404'])
    })

    it('reads the holder a claim stored', async () => {
      await runOf('2002', 3).createLock()
      expect(await runOf('1001').readLock()).toEqual({
        run_id: '2002',
        run_attempt: 3,
        claimed_at: CLAIMED_AT
      })
    })

    it.each([
      [
        'not JSON: held by a run it cannot name',
        'held by the nightly job',
        { run_id: '', run_attempt: 1, claimed_at: '' }
      ],
      [
        'JSON null: held by a run it cannot name',
        'null',
        { run_id: '', run_attempt: 1, claimed_at: '' }
      ],
      [
        'of fields of the wrong type: held by a run it cannot name',
        '{"run_id":2002,"run_attempt":"3","claimed_at":1}',
        { run_id: '', run_attempt: 1, claimed_at: '' }
      ],
      [
        'without an attempt: the first attempt',
        '{"run_id":"2002","claimed_at":"2026-03-01T09:00:00Z"}',
        { run_id: '2002', run_attempt: 1, claimed_at: '2026-03-01T09:00:00Z' }
      ]
    ])('reads a lock %s', async (_what, value, holder) => {
      // decideLock refuses a lock that names no run it can look up (run_id '').
      sim.setVariable('acme/site', LOCK, value)
      expect(await runOf('1001').readLock()).toEqual(holder)
    })

    it('names the permission when the token may not read variables', async () => {
      await expect(runOf('1001', 1, denied()).readLock()).rejects.toThrow(
        /Cannot read the rotation lock \(variable R2_ROTATION_STATE_LOCK\): /
      )
      await expect(runOf('1001', 1, denied()).readLock()).rejects.toThrow(PERMISSION)
    })
  })

  describe('overwriteLock', () => {
    it("takes over another run's lock with PATCH (204)", async () => {
      await runOf('2002').createLock()
      const taker = runOf('1001', 2)
      await taker.overwriteLock()
      expect(variableRequests()).toEqual(['POST 201', 'PATCH 204'])
      expect(storedLock()).toEqual({ run_id: '1001', run_attempt: 2, claimed_at: CLAIMED_AT })
      expect(taker.isMine(await taker.readLock())).toBe(true)
    })

    it('creates the lock when it was released meanwhile (PATCH 404, then POST)', async () => {
      await runOf('1001').overwriteLock()
      expect(variableRequests()).toEqual(['PATCH 404', 'POST 201'])
      expect(storedLock()).toEqual({ run_id: '1001', run_attempt: 1, claimed_at: CLAIMED_AT })
    })

    it('names the permission when the token may not write variables', async () => {
      sim.setVariable('acme/site', LOCK, '{"run_id":"2002","run_attempt":1}')
      await expect(runOf('1001', 1, denied()).overwriteLock()).rejects.toThrow(
        /Cannot take over the rotation lock \(variable R2_ROTATION_STATE_LOCK\): /
      )
      await expect(runOf('1001', 1, denied()).overwriteLock()).rejects.toThrow(PERMISSION)
      expect(sim.getVariable('acme/site', LOCK)).toBe('{"run_id":"2002","run_attempt":1}')
    })
  })

  describe('isMine', () => {
    it.each([
      ['this run and attempt', true, { run_id: '1001', run_attempt: 2, claimed_at: CLAIMED_AT }],
      [
        'an earlier attempt of this run',
        false,
        { run_id: '1001', run_attempt: 1, claimed_at: CLAIMED_AT }
      ],
      ['another run', false, { run_id: '2002', run_attempt: 2, claimed_at: CLAIMED_AT }],
      ['a lock that names no run', false, { run_id: '', run_attempt: 1, claimed_at: '' }],
      ['no lock', false, undefined]
    ])('%s → %s', (_what, mine, holder) => {
      expect(runOf('1001', 2).isMine(holder)).toBe(mine)
    })

    // A run outside Actions has no run id, so it takes a lock that names no run (hand-made, or
    // another such run's) for its own; two of them started together would both proceed. See the
    // matching decideLock row in decide.test.ts.
    it('a lock that names no run is not the lock of a run without a run id', () => {
      expect(runOf('').isMine({ run_id: '', run_attempt: 1, claimed_at: '' })).toBe(false)
    })
  })

  describe('releaseLock', () => {
    it('deletes the lock (204)', async () => {
      const holder = runOf('1001')
      await holder.createLock()
      await holder.releaseLock()
      expect(variableRequests()).toEqual(['POST 201', 'DELETE 204'])
      expect(sim.getVariable('acme/site', LOCK)).toBeUndefined()
    })

    it('counts a lock already gone (404) as released', async () => {
      await expect(runOf('1001').releaseLock()).resolves.toBeUndefined()
      expect(variableRequests()).toEqual(['DELETE 404'])
    })

    it('retries a delete answered 502', async () => {
      const holder = runOf('1001')
      await holder.createLock()
      sim.service.inject({
        method: 'DELETE',
        path: /\/actions\/variables\/R2_ROTATION_STATE_LOCK$/,
        status: 502
      })
      await holder.releaseLock()
      expect(variableRequests()).toEqual(['POST 201', 'DELETE 502', 'DELETE 204'])
      expect(sim.getVariable('acme/site', LOCK)).toBeUndefined()
    })

    it('names the permission when the token may not delete variables', async () => {
      sim.setVariable('acme/site', LOCK, '{"run_id":"1001","run_attempt":1}')
      await expect(runOf('1001', 1, denied()).releaseLock()).rejects.toThrow(
        /Cannot release the rotation lock \(variable R2_ROTATION_STATE_LOCK\): /
      )
      await expect(runOf('1001', 1, denied()).releaseLock()).rejects.toThrow(PERMISSION)
      expect(sim.getVariable('acme/site', LOCK)).toBeDefined()
    })
  })
})
