/**
 * The rotation journal and its lock, both repository Actions variables. Storage only: what the
 * records mean, and when a lock may be taken over, is decided in decide.ts.
 *
 * - The journal (input `state-variable`) holds where the last rotation got to, so that a run
 *   killed midway can be finished or undone by the next one: ids, names, phases, run ids and
 *   timestamps, never a value.
 * - The lock (`<state-variable>_LOCK`) is held while a run changes anything. It is claimed by
 *   creating the variable: GitHub answers 201 to exactly one of two simultaneous creates and 409
 *   to the other, so two runs started in the same second cannot both proceed. It names the run
 *   (id and attempt) that holds it and is deleted when that run ends. A lock left by a run that no
 *   longer runs (killed) is taken over by overwriting it and reading it back after a pause.
 *
 * Variables: POST creates (201; 409 when the name exists), PATCH updates (204), DELETE removes
 * (204); values up to 48 KB (docs.github.com/en/rest/actions/variables).
 */
import type { JournalPhase, JournalRecord, RepoRef } from './model.js'
import { httpStatus } from './errors.js'
import { log } from './log.js'
import { scrub } from './redact.js'
import { type GitHubClient, describeGitHubError, gitHubHint } from './github/client.js'

export type { JournalPhase, JournalRecord } from './model.js'

export const JOURNAL_PHASES: readonly JournalPhase[] = [
  'minting',
  'minted',
  'publishing',
  'published',
  'deploying',
  'smoke',
  'revoking',
  'rolling-back',
  'pending',
  'done',
  'rolled-back',
  'rotating',
  'closing'
]

export class JournalError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'JournalError'
  }
}

/** Who holds the lock, as stored in the lock variable. */
export interface LockHolder {
  run_id: string
  run_attempt: number
  claimed_at: string
}

/** This run, as the journal and the lock name it. */
export interface RunIdentity {
  id: string
  attempt: number
}

type VariableParams = { owner: string; repo: string; name: string; value: string }

/** Reads and writes the journal; a no-op journal when `name` is undefined (`state-variable: ''`). */
export class Journal {
  private exists: boolean | undefined
  private current: JournalRecord | undefined

  constructor(
    private readonly github: GitHubClient,
    private readonly repo: RepoRef,
    readonly name: string | undefined,
    private readonly run: RunIdentity,
    private readonly now: () => Date = () => new Date()
  ) {}

  get enabled(): boolean {
    return this.name !== undefined
  }

  /** The record as last read or written. */
  get record(): JournalRecord | undefined {
    return this.current
  }

  /** The lock variable's name. */
  get lockName(): string | undefined {
    return this.name === undefined ? undefined : `${this.name}_LOCK`
  }

  async read(): Promise<JournalRecord | undefined> {
    if (!this.name) return undefined
    const raw = await this.readVariable(this.name, 'read the rotation journal')
    this.exists = raw !== undefined
    if (raw === undefined) return undefined
    this.current = parseRecord(raw, this.name)
    return this.current
  }

  /** Writes the journal: the fields given replace the last record's; `updated_at` and the run are set. */
  async write(update: Partial<JournalRecord> & { phase: JournalPhase }): Promise<JournalRecord> {
    const record: JournalRecord = {
      version: 1,
      disabled_token_ids: [],
      deploy_run_ids: [],
      ...this.current,
      ...update,
      run_id: this.run.id,
      run_attempt: this.run.attempt,
      updated_at: this.now().toISOString()
    }
    this.current = record
    if (!this.name) return record
    // The record holds ids only; the scrub is a second line of defence.
    const params = { ...this.repo, name: this.name, value: scrub(JSON.stringify(record)) }
    try {
      if (this.exists !== false || !(await this.create(params))) await this.update(params)
      this.exists = true
    } catch (error) {
      throw this.failure('write the rotation journal', this.name, error)
    }
    log.debug(`journal: ${record.phase}`)
    return record
  }

  // ------------------------------------------------------------------------------ the lock

  /**
   * Claims the lock by creating its variable. 'claimed' when this create made it; 'held' when it
   * exists (409: another run holds it, or an earlier run left it); 'unclear' when the answer was
   * lost (read it to see whose it is).
   */
  async createLock(): Promise<'claimed' | 'held' | 'unclear'> {
    const name = this.lockName!
    try {
      await this.github.request('POST /repos/{owner}/{repo}/actions/variables', {
        ...this.repo,
        name,
        value: this.lockValue()
      })
      return 'claimed'
    } catch (error) {
      const status = httpStatus(error)
      if (status === 409) return 'held'
      if (status === undefined || status === 429 || status >= 500) return 'unclear'
      throw this.failure('claim the rotation lock', name, error)
    }
  }

  /** The lock's holder, or undefined when there is no lock. */
  async readLock(): Promise<LockHolder | undefined> {
    const name = this.lockName!
    const raw = await this.readVariable(name, 'read the rotation lock')
    if (raw === undefined) return undefined
    try {
      const parsed = JSON.parse(raw) as Partial<LockHolder>
      return {
        run_id: typeof parsed.run_id === 'string' ? parsed.run_id : '',
        run_attempt: typeof parsed.run_attempt === 'number' ? parsed.run_attempt : 1,
        claimed_at: typeof parsed.claimed_at === 'string' ? parsed.claimed_at : ''
      }
    } catch {
      // Not ours to read: treat it as held by an unknown run.
      return { run_id: '', run_attempt: 1, claimed_at: '' }
    }
  }

  /** Overwrites the lock with this run's claim (taking over a stale one). */
  async overwriteLock(): Promise<void> {
    const name = this.lockName!
    try {
      await this.update({ ...this.repo, name, value: this.lockValue() })
    } catch (error) {
      throw this.failure('take over the rotation lock', name, error)
    }
  }

  /** Whether `holder` is this run. */
  isMine(holder: LockHolder | undefined): boolean {
    // A lock naming no run is nobody's, not even a run without a run id (outside Actions).
    if (!holder || holder.run_id === '') return false
    return holder.run_id === this.run.id && holder.run_attempt === this.run.attempt
  }

  /** Deletes the lock; a lock already gone is fine. */
  async releaseLock(): Promise<void> {
    const name = this.lockName!
    try {
      await this.github.request('DELETE /repos/{owner}/{repo}/actions/variables/{name}', {
        ...this.repo,
        name
      })
    } catch (error) {
      if (httpStatus(error) === 404) return
      throw this.failure('release the rotation lock', name, error)
    }
  }

  // ------------------------------------------------------------------------------ storage

  private lockValue(): string {
    const holder: LockHolder = {
      run_id: this.run.id,
      run_attempt: this.run.attempt,
      claimed_at: this.now().toISOString()
    }
    return JSON.stringify(holder)
  }

  private async readVariable(name: string, doing: string): Promise<string | undefined> {
    try {
      const { data } = await this.github.request(
        'GET /repos/{owner}/{repo}/actions/variables/{name}',
        { ...this.repo, name }
      )
      return data.value
    } catch (error) {
      if (httpStatus(error) === 404) return undefined
      throw this.failure(doing, name, error)
    }
  }

  /** PATCH (which the client retries); a variable that PATCH does not find (404) is created. */
  private async update(params: VariableParams): Promise<void> {
    try {
      await this.github.request('PATCH /repos/{owner}/{repo}/actions/variables/{name}', params)
    } catch (error) {
      if (httpStatus(error) !== 404) throw error
      await this.github.request('POST /repos/{owner}/{repo}/actions/variables', params)
    }
  }

  /**
   * POST, which the client never repeats. Returns false when the variable may exist after all:
   * 409 (created meanwhile, or by a POST whose answer was lost), or no clear answer (5xx, 429, a
   * dropped connection); the caller then updates it with PATCH, which the client does retry, and
   * creates it once more only if PATCH finds nothing (404).
   */
  private async create(params: VariableParams): Promise<boolean> {
    try {
      await this.github.request('POST /repos/{owner}/{repo}/actions/variables', params)
      return true
    } catch (error) {
      const status = httpStatus(error)
      if (status === 409 || status === 429 || status === undefined || status >= 500) return false
      throw error
    }
  }

  private failure(doing: string, name: string, error: unknown): JournalError {
    return new JournalError(
      `Cannot ${doing} (variable ${name}): ${describeGitHubError(error)}. ${gitHubHint(error, `The github-token needs "Variables: read and write" on ${this.repo.owner}/${this.repo.repo}.`)}`
    )
  }
}

function parseRecord(raw: string, name: string): JournalRecord {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    throw new JournalError(
      `The variable ${name} is not a rotation journal (not JSON). Delete it or choose another state-variable.`
    )
  }
  const r = parsed as Partial<JournalRecord>
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    r.version !== 1 ||
    !JOURNAL_PHASES.includes(r.phase as JournalPhase) ||
    typeof r.run_id !== 'string'
  ) {
    throw new JournalError(
      `The variable ${name} is not a version-1 rotation journal. Delete it or choose another state-variable.`
    )
  }
  const { revoke: rawRevoke, ...rest } = r
  const revoke: JournalRecord['revoke'] = {}
  if (typeof rawRevoke === 'object' && rawRevoke !== null) {
    if (typeof rawRevoke.disabled_at === 'string') revoke.disabled_at = rawRevoke.disabled_at
    if (typeof rawRevoke.reenabled_at === 'string') revoke.reenabled_at = rawRevoke.reenabled_at
  }
  return {
    ...rest,
    version: 1,
    phase: r.phase as JournalPhase,
    run_id: r.run_id as string,
    disabled_token_ids: Array.isArray(r.disabled_token_ids) ? r.disabled_token_ids.map(String) : [],
    deploy_run_ids: Array.isArray(r.deploy_run_ids) ? r.deploy_run_ids.map(Number) : [],
    ...(Object.keys(revoke).length > 0 ? { revoke } : {}),
    updated_at: typeof r.updated_at === 'string' ? r.updated_at : new Date(0).toISOString()
  }
}

/**
 * The journal of a run mode of its own (the management token's self-rotation, a service token's
 * rotation): the token rotation's variable name with `suffix`, and the token rotation's lock
 * (`<state-variable>_LOCK`), so that no two modes ever run at once.
 */
export class ModeJournal extends Journal {
  private readonly sharedLock: string | undefined

  constructor(
    github: GitHubClient,
    /** The run's settings: where the journal lives, its base name and the run writing it. */
    run: {
      repository: RepoRef
      stateVariable?: string
      runId: RunIdentity['id']
      runAttempt: RunIdentity['attempt']
    },
    suffix: string
  ) {
    const { stateVariable } = run
    super(github, run.repository, stateVariable ? `${stateVariable}${suffix}` : undefined, {
      id: run.runId,
      attempt: run.runAttempt
    })
    this.sharedLock = stateVariable ? `${stateVariable}_LOCK` : undefined
  }

  override get lockName(): string | undefined {
    return this.sharedLock
  }
}
