/**
 * The rotation journal: a repository Actions variable (input `state-variable`) holding where the
 * last rotation got to, so that a run killed midway can be finished or undone by the next one.
 * It holds ids, names, phases, run ids and timestamps — never a value.
 *
 * Variables: POST creates (201; 409 when the name exists), PATCH updates (204); values up to
 * 48 KB (docs.github.com/en/rest/actions/variables).
 */
import * as core from '@actions/core'
import type { GitHubClient } from './github/client.js'
import { describeGitHubError, httpStatus } from './github/client.js'
import type { RepoRef, SecretField } from './settings.js'
import { type Credentials, missingFields } from './credentials.js'

export type JournalPhase =
  | 'minting'
  | 'minted'
  | 'publishing'
  | 'published'
  | 'deploying'
  | 'smoke'
  | 'revoking'
  | 'rolling-back'
  | 'pending'
  | 'done'
  | 'rolled-back'

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
  'rolled-back'
]

export interface JournalRecord {
  version: 1
  phase: JournalPhase
  /** GITHUB_RUN_ID of the run that wrote it. */
  run_id: string
  previous_token_id?: string
  pending_token_id?: string
  pending_token_name?: string
  /** Who owns the two tokens: `user`, or the account id. */
  token_owner?: 'user' | { account_id: string }
  /** Tokens left disabled by `revoke: disable`, deleted at the next rotation. */
  disabled_token_ids: string[]
  deploy_run_ids: number[]
  /** When the rotation began (ISO 8601). */
  started_at?: string
  updated_at: string
}

/** Phases after which nothing is left to finish. */
export function isSettled(phase: JournalPhase): boolean {
  return phase === 'done' || phase === 'rolled-back'
}

/** Phases in which the new token may be in the secrets (publish began). */
export function isPublished(phase: JournalPhase): boolean {
  return !['minting', 'minted', 'done', 'rolled-back'].includes(phase)
}

export class JournalError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'JournalError'
  }
}

/** Reads and writes the journal; a no-op journal when `name` is undefined (`state-variable: ''`). */
export class Journal {
  private exists: boolean | undefined
  private current: JournalRecord | undefined

  constructor(
    private readonly github: GitHubClient,
    private readonly repo: RepoRef,
    readonly name: string | undefined,
    private readonly runId: string,
    private readonly now: () => Date = () => new Date()
  ) {}

  get enabled(): boolean {
    return this.name !== undefined
  }

  /** The record as last read or written. */
  get record(): JournalRecord | undefined {
    return this.current
  }

  async read(): Promise<JournalRecord | undefined> {
    if (!this.name) return undefined
    let raw: string
    try {
      const { data } = await this.github.request(
        'GET /repos/{owner}/{repo}/actions/variables/{name}',
        { ...this.repo, name: this.name }
      )
      raw = data.value
      this.exists = true
    } catch (error) {
      if (httpStatus(error) === 404) {
        this.exists = false
        return undefined
      }
      throw new JournalError(
        `Cannot read the rotation journal (variable ${this.name}): ${describeGitHubError(error)}. The github-token needs "Variables: read and write" on ${this.repo.owner}/${this.repo.repo}.`
      )
    }
    this.current = parseRecord(raw, this.name)
    return this.current
  }

  /** Writes the journal: the fields given replace the last record's; `updated_at` and `run_id` are set. */
  async write(update: Partial<JournalRecord> & { phase: JournalPhase }): Promise<JournalRecord> {
    const record: JournalRecord = {
      version: 1,
      disabled_token_ids: [],
      deploy_run_ids: [],
      ...this.current,
      ...update,
      run_id: this.runId,
      updated_at: this.now().toISOString()
    }
    this.current = record
    if (!this.name) return record
    const value = JSON.stringify(record)
    const params = { ...this.repo, name: this.name, value }
    try {
      if (this.exists !== false || !(await this.create(params))) {
        try {
          await this.github.request('PATCH /repos/{owner}/{repo}/actions/variables/{name}', params)
        } catch (error) {
          if (httpStatus(error) !== 404) throw error
          await this.github.request('POST /repos/{owner}/{repo}/actions/variables', params)
        }
      }
      this.exists = true
    } catch (error) {
      throw new JournalError(
        `Cannot write the rotation journal (variable ${this.name}): ${describeGitHubError(error)}. The github-token needs "Variables: read and write" on ${this.repo.owner}/${this.repo.repo}.`
      )
    }
    core.debug(`journal: ${record.phase}`)
    return record
  }

  /**
   * POST, which the client never repeats. Returns false when the variable may exist after all:
   * 409 (created meanwhile, or by a POST whose answer was lost), or no clear answer (5xx, 429, a
   * dropped connection); the caller then updates it with PATCH, which the client does retry, and
   * creates it once more only if PATCH finds nothing (404).
   */
  private async create(params: {
    owner: string
    repo: string
    name: string
    value: string
  }): Promise<boolean> {
    try {
      await this.github.request('POST /repos/{owner}/{repo}/actions/variables', params)
      return true
    } catch (error) {
      const status = httpStatus(error)
      if (status === 409 || status === 429 || status === undefined || status >= 500) return false
      throw error
    }
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
  return {
    ...r,
    version: 1,
    phase: r.phase as JournalPhase,
    run_id: r.run_id,
    disabled_token_ids: Array.isArray(r.disabled_token_ids) ? r.disabled_token_ids.map(String) : [],
    deploy_run_ids: Array.isArray(r.deploy_run_ids) ? r.deploy_run_ids.map(Number) : [],
    updated_at: typeof r.updated_at === 'string' ? r.updated_at : new Date(0).toISOString()
  }
}

/** What a run does about an unfinished rotation it finds in the journal. */
export type Recovery =
  /** Minted but never published (`minting`, `minted`): delete the orphan(s), then rotate afresh. */
  | { kind: 'delete-unpublished'; record: JournalRecord; tokenIds: string[] }
  /** The inputs (the secrets as they are now) hold the pending token: publish it everywhere, deploy, smoke, revoke the previous one. */
  | { kind: 'forward'; record: JournalRecord; next: Credentials; previousId: string }
  /** The inputs hold the previous token: restore it everywhere, deploy, smoke, delete the pending one. */
  | { kind: 'restore'; record: JournalRecord; previous: Credentials; pendingId: string }
  /** Neither can be completed from the inputs: keep both tokens and say what to do. */
  | { kind: 'stuck'; record: JournalRecord; reason: string }

/**
 * For a rotation that got as far as publishing: which way can it be finished, given the values the
 * inputs hold (one `Credentials` per token they name) and the fields `secrets` needs?
 * Forward is preferred: the pending token is already in at least one secret.
 */
export function decidePublishedRecovery(
  record: JournalRecord,
  known: Credentials[],
  fields: SecretField[]
): Recovery {
  const pendingId = record.pending_token_id
  const previousId = record.previous_token_id
  if (!pendingId || !previousId) {
    return {
      kind: 'stuck',
      record,
      reason: `the journal (phase ${record.phase}) names no ${pendingId ? 'previous' : 'pending'} token id`
    }
  }
  const of = (id: string): Credentials => merge(id, known)
  const next = of(pendingId)
  if (missingFields(next, fields).length === 0) {
    return { kind: 'forward', record, next, previousId }
  }
  const previous = of(previousId)
  if (missingFields(previous, fields).length === 0) {
    return { kind: 'restore', record, previous, pendingId }
  }
  return {
    kind: 'stuck',
    record,
    reason:
      `the current-* inputs give neither every field of the pending token ${pendingId} ` +
      `(missing: ${missingFields(next, fields).join(', ')}) nor of the previous token ${previousId} ` +
      `(missing: ${missingFields(previous, fields).join(', ')})`
  }
}

/** Everything the inputs tell about one token id. */
function merge(id: string, known: Credentials[]): Credentials {
  const merged: Credentials = { id }
  for (const c of known) {
    if (c.id !== id) continue
    merged.value ??= c.value
    merged.secretAccessKey ??= c.secretAccessKey
  }
  return merged
}
