/**
 * Every decision of decide.ts as a table: each row is a set of facts and the one answer the
 * rotation acts on, so that the invariant can be checked by reading rows rather than code.
 *
 *   A token is revoked only after a deploy that uses its replacement concluded `success`, every
 *   smoke check passed, and (unless turned off) the app was watched while the token was disabled.
 *
 * `mayDelete` comes first: it is the one answer to "may this token be deleted now?", asked before
 * every token delete. Then what a run does about an unfinished rotation (`decideRecovery`), after
 * a failure (`afterFailure`), at the revoke, and the plan, the refusals, the lock and the messages.
 *
 * Rows marked `it.failing` would state what the contract asks where decide.ts answered otherwise;
 * the comment on each says why.
 */
import {
  type AfterFailure,
  type DeleteRequest,
  type FailureFacts,
  type JournalRunState,
  type ManagementEnd,
  type ManagementRecovery,
  type PreflightFacts,
  type Recovery,
  type RecoveryFacts,
  type ResumeAt,
  type Revocation,
  type Shadow,
  type ShadowFacts,
  type Verdict,
  EXPIRY_WARNING_MS,
  ROTATION_CLOUDFLARE_REQUESTS,
  afterFailure,
  baselineRefusal,
  budgetRefusal,
  conditionNote,
  credentialsOf,
  decideDue,
  decideLock,
  decideManagementEnd,
  decideManagementRecovery,
  decideRecovery,
  decideRevocation,
  describeCondition,
  describeRecovery,
  expiryWarnings,
  githubTokenExpiry,
  ipRules,
  locationRefusal,
  fieldValue,
  isPublished,
  isSettled,
  isoSeconds,
  leftoverTokens,
  managementRefusals,
  mayDelete,
  missingFields,
  newExpiry,
  orphansOf,
  pendingMessage,
  planProbe,
  refusals,
  restoreTargets,
  serving,
  shadowRefusal,
  shadowsOf,
  uniqueTokenName,
  useEvidence,
  watchFailureMessage,
  watchInterval,
  workerRefusal,
  workerRollbackNote,
  writesEnvironment,
  writesRepository
} from '../src/decide.js'
import { JOURNAL_PHASES } from '../src/journal.js'
import type {
  ApiToken,
  Credentials,
  JournalPhase,
  JournalRecord,
  SecretField,
  SecretTarget,
  Settings,
  SmokeResult,
  TokenScope,
  TokenStatus
} from '../src/model.js'

// ------------------------------------------------------------------------------- facts

/** The token being replaced, the new one, and tokens that belong to neither. */
const PREVIOUS = 'a'.repeat(32)
const NEXT = 'b'.repeat(32)
const STRANGER = 'e'.repeat(32)
const MANAGEMENT = '9'.repeat(32)
const PENDING_NAME = 'avatars (rotated 2026-03-10)'

/** What the inputs can tell of each token's values. */
const OLD: Credentials = { id: PREVIOUS, value: 'cfut_old', secretAccessKey: 'd'.repeat(64) }
const NEW: Credentials = { id: NEXT, value: 'cfut_new', secretAccessKey: 'c'.repeat(64) }
const OTHER: Credentials = { id: STRANGER, value: 'cfut_other', secretAccessKey: 'f'.repeat(64) }

const ALL_FIELDS: SecretField[] = ['token', 'access-key-id', 'secret-access-key']
const S3_FIELDS: SecretField[] = ['access-key-id', 'secret-access-key']
const secretsFor = (fields: SecretField[]): Settings['secrets'] =>
  fields.map(field => ({ name: `R2_${field.toUpperCase().replace(/-/g, '_')}`, field }))

const NOW = new Date('2026-03-10T12:00:00.000Z')
const DAY = 24 * 3600 * 1000
const ago = (ms: number): string => isoSeconds(new Date(NOW.getTime() - ms))
const ahead = (ms: number): string => isoSeconds(new Date(NOW.getTime() + ms))

/** Names the ids in row labels. */
const roleOf = (id: string): string =>
  ({ [PREVIOUS]: 'previous', [NEXT]: 'pending', [STRANGER]: 'stranger' })[id] ?? id

type Request<K extends DeleteRequest['kind']> = Extract<DeleteRequest, { kind: K }>

/** Each delete request with every fact holding: these are deletable. */
const unpublished = (facts: Partial<Request<'unpublished'>> = {}): DeleteRequest => ({
  kind: 'unpublished',
  tokenId: NEXT,
  mintedByThisRun: true,
  publishStarted: false,
  ...facts
})
const orphan = (facts: Partial<Request<'orphan'>> = {}): DeleteRequest => ({
  kind: 'orphan',
  tokenId: NEXT,
  name: PENDING_NAME,
  journalName: PENDING_NAME,
  previousId: PREVIOUS,
  knownIds: [PREVIOUS],
  ...facts
})
const previous = (facts: Partial<Request<'previous'>> = {}): DeleteRequest => ({
  kind: 'previous',
  tokenId: PREVIOUS,
  nextId: NEXT,
  publishedEverywhere: true,
  deploy: 'success',
  smokePassed: true,
  watch: 'passed',
  ...facts
})
const rolledBack = (facts: Partial<Request<'rolled-back'>> = {}): DeleteRequest => ({
  kind: 'rolled-back',
  tokenId: NEXT,
  previousId: PREVIOUS,
  restoredEverywhere: true,
  deploy: 'success',
  smokePassed: true,
  runsGoing: [],
  ...facts
})
const leftover = (facts: Partial<Request<'leftover'>> = {}): DeleteRequest => ({
  kind: 'leftover',
  tokenId: STRANGER,
  status: 'disabled',
  inUse: [PREVIOUS, NEXT],
  ...facts
})

const ALLOWED: Verdict = { ok: true }
const refused = (reason: string): Verdict => ({ ok: false, reason })

/** A journal record in `phase`; `pending_token_id` is recorded once the token exists (`minted`). */
function journalRecord(phase: JournalPhase, changes: Partial<JournalRecord> = {}): JournalRecord {
  return {
    version: 1,
    phase,
    run_id: '1001',
    run_attempt: 1,
    previous_token_id: PREVIOUS,
    ...(phase === 'minting' ? {} : { pending_token_id: NEXT }),
    pending_token_name: PENDING_NAME,
    disabled_token_ids: [],
    deploy_run_ids: [],
    updated_at: '2026-03-10T11:00:00.000Z',
    ...changes
  }
}

type OwnerToken = Pick<ApiToken, 'id' | 'name' | 'status'>

/** The owner's tokens: the previous one (in `previousStatus`, or gone), the pending one, a stranger. */
function ownerTokens(previousStatus: TokenStatus | 'gone' = 'active'): OwnerToken[] {
  return [
    ...(previousStatus === 'gone'
      ? []
      : [{ id: PREVIOUS, name: 'avatars', status: previousStatus }]),
    { id: NEXT, name: PENDING_NAME, status: 'active' },
    { id: STRANGER, name: 'deploy bot', status: 'active' }
  ]
}

// =============================================================================== mayDelete

describe('mayDelete: may this token be deleted now?', () => {
  it.each<[string, string, DeleteRequest, Verdict]>([
    // The new token of this run, after a failure before any secret write began.
    ['unpublished', 'minted by this run, no secret written yet', unpublished(), ALLOWED],
    [
      'unpublished',
      'found, not minted, by this run (it may serve elsewhere)',
      unpublished({ mintedByThisRun: false }),
      refused('this run did not mint it')
    ],
    [
      'unpublished',
      'a secret write began (it may be in a secret)',
      unpublished({ publishStarted: true }),
      refused('it may already be in a secret')
    ],
    [
      'unpublished',
      'neither holds',
      unpublished({ mintedByThisRun: false, publishStarted: true }),
      refused('this run did not mint it')
    ],

    // A token minted under the journal's pending name: the name, not a clock, ties it to the rotation.
    ['orphan', "it carries the journal's pending name", orphan(), ALLOWED],
    [
      'orphan',
      'it carries another name',
      orphan({ name: 'avatars (prod)' }),
      refused('the journal does not tie it to this rotation (neither its id nor its name)')
    ],
    [
      'orphan',
      'the journal records no name',
      orphan({ journalName: undefined }),
      refused('the journal does not tie it to this rotation (neither its id nor its name)')
    ],
    [
      'orphan',
      "it is the journal's pending token, whatever its name",
      orphan({ name: 'renamed by hand', journalPendingId: NEXT }),
      ALLOWED
    ],
    [
      'orphan',
      'the journal names another pending token',
      orphan({ name: 'renamed by hand', journalPendingId: PREVIOUS }),
      refused('the journal does not tie it to this rotation (neither its id nor its name)')
    ],
    [
      'orphan',
      'the journal name and the token name are both empty',
      orphan({ name: '', journalName: '' }),
      refused('the journal does not tie it to this rotation (neither its id nor its name)')
    ],
    [
      'orphan',
      "it is the previous token, under the journal's name (a second rotation on one day)",
      orphan({ tokenId: PREVIOUS }),
      refused('it is the token in use')
    ],
    [
      'orphan',
      "an input names it, under the journal's name",
      orphan({ knownIds: [NEXT] }),
      refused('it is the token in use')
    ],

    // The previous token at the end of a rotation: the invariant.
    [
      'previous',
      'published everywhere, deploy success, smoke passed, watch passed',
      previous(),
      ALLOWED
    ],
    ['previous', 'no deploy step (deploy-workflow: none)', previous({ deploy: 'none' }), ALLOWED],
    ['previous', 'the watch is off (revoke-watch: 0s)', previous({ watch: 'off' }), ALLOWED],
    [
      'previous',
      'no deploy step and no watch',
      previous({ deploy: 'none', watch: 'off' }),
      ALLOWED
    ],
    [
      'previous',
      'it is the token in service (a forward recovery names the new token previous)',
      previous({ nextId: PREVIOUS }),
      refused('it is the token now in service')
    ],
    [
      'previous',
      'a target does not hold its replacement',
      previous({ publishedEverywhere: false }),
      refused('not every target holds its replacement')
    ],
    [
      'previous',
      'the deploy did not conclude success',
      previous({ deploy: 'not-concluded' }),
      refused('no deploy with its replacement concluded success')
    ],
    [
      'previous',
      'the smoke checks did not pass',
      previous({ smokePassed: false }),
      refused('the smoke checks did not pass')
    ],
    [
      'previous',
      'a check failed during the watch',
      previous({ watch: 'failed' }),
      refused('the watch after the disable did not pass')
    ],
    [
      'previous',
      'the watch has not run',
      previous({ watch: 'not-run' }),
      refused('the watch after the disable did not pass')
    ],
    [
      'previous',
      'nothing holds: the first missing fact is named',
      previous({
        publishedEverywhere: false,
        deploy: 'not-concluded',
        smokePassed: false,
        watch: 'not-run'
      }),
      refused('not every target holds its replacement')
    ],

    // The new token at the end of a rollback: a deploy run still going could ship it.
    ['rolled-back', 'restored everywhere, deploy success, smoke passed', rolledBack(), ALLOWED],
    ['rolled-back', 'no deploy step', rolledBack({ deploy: 'none' }), ALLOWED],
    [
      'rolled-back',
      'it is the token restored to service',
      rolledBack({ tokenId: PREVIOUS }),
      refused('it is the token restored to service')
    ],
    [
      'rolled-back',
      'a target does not hold the previous token again',
      rolledBack({ restoredEverywhere: false }),
      refused('not every target holds the previous token again')
    ],
    [
      'rolled-back',
      "the rollback's deploy did not conclude success",
      rolledBack({ deploy: 'not-concluded' }),
      refused('no deploy with the previous token concluded success')
    ],
    [
      'rolled-back',
      'the smoke checks did not pass with the previous token',
      rolledBack({ smokePassed: false }),
      refused('the smoke checks did not pass with the previous token')
    ],
    [
      'rolled-back',
      'a deploy run that timed out is still going',
      rolledBack({ runsGoing: [4242] }),
      refused(
        'deploy run(s) 4242 of this rotation did not conclude and may still deploy the new token; it stays valid until they have'
      )
    ],
    [
      'rolled-back',
      'two deploy runs are still going, without a deploy step now',
      rolledBack({ deploy: 'none', runsGoing: [4242, 4243] }),
      refused(
        'deploy run(s) 4242, 4243 of this rotation did not conclude and may still deploy the new token; it stays valid until they have'
      )
    ],

    // A token an earlier `revoke: disable` left: deleted only while it is still disabled.
    ['leftover', 'still disabled', leftover(), ALLOWED],
    [
      'leftover',
      'enabled again (on purpose)',
      leftover({ status: 'active' }),
      refused('it is active again')
    ],
    ['leftover', 'expired', leftover({ status: 'expired' }), ALLOWED],
    ['leftover', 'gone already', leftover({ status: undefined }), refused('it is already gone')],
    [
      'leftover',
      'in use in this rotation, though disabled',
      leftover({ tokenId: PREVIOUS }),
      refused('it is in use in this rotation')
    ]
  ])('%s: %s', (_kind, _facts, request, verdict) => {
    expect(mayDelete(request)).toEqual(verdict)
  })

  // Every combination of the facts, not only one missing at a time: the delete is allowed in
  // exactly the combinations listed, and refused in every other one.
  it('the previous token: of all 96 combinations of facts, only these allow the delete', () => {
    const allowed: string[] = []
    let combinations = 0
    for (const tokenId of [PREVIOUS, NEXT])
      for (const publishedEverywhere of [true, false])
        for (const deploy of ['success', 'none', 'not-concluded'] as const)
          for (const smokePassed of [true, false])
            for (const watch of ['passed', 'off', 'failed', 'not-run'] as const) {
              combinations++
              const request = previous({ tokenId, publishedEverywhere, deploy, smokePassed, watch })
              if (!mayDelete(request).ok) continue
              allowed.push(
                [
                  tokenId === NEXT ? 'the token in service' : 'the previous token',
                  publishedEverywhere ? 'published everywhere' : 'not everywhere',
                  `deploy ${deploy}`,
                  smokePassed ? 'smoke passed' : 'smoke failed',
                  `watch ${watch}`
                ].join(', ')
              )
            }
    expect(combinations).toBe(96)
    expect(allowed).toEqual([
      'the previous token, published everywhere, deploy success, smoke passed, watch passed',
      'the previous token, published everywhere, deploy success, smoke passed, watch off',
      'the previous token, published everywhere, deploy none, smoke passed, watch passed',
      'the previous token, published everywhere, deploy none, smoke passed, watch off'
    ])
  })

  it('the rolled-back token: of all 48 combinations of facts, only these allow the delete', () => {
    const allowed: string[] = []
    let combinations = 0
    for (const tokenId of [NEXT, PREVIOUS])
      for (const restoredEverywhere of [true, false])
        for (const deploy of ['success', 'none', 'not-concluded'] as const)
          for (const smokePassed of [true, false])
            for (const runsGoing of [[], [4242]]) {
              combinations++
              const request = rolledBack({
                tokenId,
                restoredEverywhere,
                deploy,
                smokePassed,
                runsGoing
              })
              if (!mayDelete(request).ok) continue
              allowed.push(
                [
                  tokenId === NEXT ? 'the new token' : 'the restored token',
                  restoredEverywhere ? 'restored everywhere' : 'not everywhere',
                  `deploy ${deploy}`,
                  smokePassed ? 'smoke passed' : 'smoke failed',
                  runsGoing.length ? 'a deploy run going' : 'no deploy run going'
                ].join(', ')
              )
            }
    expect(combinations).toBe(48)
    expect(allowed).toEqual([
      'the new token, restored everywhere, deploy success, smoke passed, no deploy run going',
      'the new token, restored everywhere, deploy none, smoke passed, no deploy run going'
    ])
  })
})

// =============================================================================== recovery

/** What the current-* inputs give, and what a stuck recovery then says is missing. */
interface Inputs {
  known: Credentials[]
  stuck: string
}
const stuckReason = (missing: string): string =>
  `the current-* inputs give neither every field of the pending token ${NEXT} (missing: ${missing}) nor of the previous token ${PREVIOUS} (missing: ${missing})`
const INPUTS: Record<'pending' | 'previous' | 'neither' | 'stranger', Inputs> = {
  pending: { known: [NEW], stuck: '' },
  previous: { known: [OLD], stuck: '' },
  // A run killed midway through publishing: the secrets hold a mix.
  neither: {
    known: [
      { id: PREVIOUS, secretAccessKey: OLD.secretAccessKey! },
      { id: NEXT, secretAccessKey: NEW.secretAccessKey! }
    ],
    stuck: stuckReason('token')
  },
  stranger: { known: [OTHER], stuck: stuckReason('token, secret-access-key') }
}
const INPUT_LABELS: Record<keyof typeof INPUTS, string> = {
  pending: "every field of the pending token's",
  previous: "only the previous token's",
  neither: 'a field of each, neither complete',
  stranger: 'some other token'
}

/** An expected recovery, with its label. */
interface Cell {
  label: string
  build: (record: JournalRecord, inputs: Inputs) => Recovery
}
const deletes = (...ids: string[]): Cell => ({
  label: `delete-unpublished [${ids.map(roleOf).join(', ')}]`,
  build: record => ({ kind: 'delete-unpublished', record, tokenIds: ids })
})
const forward = (from: ResumeAt): Cell => ({
  label: `forward from ${from}`,
  build: record => ({ kind: 'forward', record, next: NEW, previousId: PREVIOUS, from })
})
const RESTORE: Cell = {
  label: 'restore',
  build: record => ({ kind: 'restore', record, previous: OLD, pendingId: NEXT })
}
const PREVIOUS_GONE: Cell = {
  label: 'stuck (the previous token is gone)',
  build: record => ({
    kind: 'stuck',
    record,
    reason: `the previous token ${PREVIOUS} is gone, and the current-* inputs do not give every field of the pending token ${NEXT} (missing: token, secret-access-key) to finish the rotation with`
  })
}
const STUCK: Cell = {
  label: 'stuck',
  build: (record, inputs) => ({ kind: 'stuck', record, reason: inputs.stuck })
}

/** The previous token's state, which only phase `revoking` reads. */
type PreviousState = 'active' | 'disabled' | 'active, disable recorded' | 'gone'

function recoveryFacts(
  phase: JournalPhase,
  state: PreviousState,
  journalRun: JournalRunState,
  inputs: Inputs
): RecoveryFacts {
  return {
    record: journalRecord(
      phase,
      state === 'active, disable recorded'
        ? { revoke: { disabled_at: '2026-03-10T11:30:00.000Z' } }
        : {}
    ),
    journalRun,
    known: inputs.known,
    fields: ALL_FIELDS,
    ownerTokens: ownerTokens(
      state === 'gone' ? 'gone' : state === 'disabled' ? 'disabled' : 'active'
    )
  }
}

/*
 * The recovery of every unfinished phase (the settled ones, `done` and `rolled-back`, never
 * recover), by what the current-* inputs give. Minted and never published: the pending token is
 * deleted unless an input names it. Published: forward when the inputs give the pending token
 * (it is in at least one secret), else restore when they give the previous one, else stuck. In
 * `revoking` the previous token's own state says how far the revoke got.
 *
 * Columns: the inputs give every field of the pending token; only the previous token's; a field of
 * each, neither complete (a run killed midway through publishing); some other token altogether.
 */
// prettier-ignore
const GRID: Array<[JournalPhase, PreviousState, Cell, Cell, Cell, Cell]> = [
  //                                            what the current-* inputs give of
  // phase         previous token               pending             previous        neither     another
  ['minting',      'active',                    deletes(),          deletes(NEXT),  deletes(),  deletes(NEXT)],
  ['minted',       'active',                    deletes(),          deletes(NEXT),  deletes(),  deletes(NEXT)],
  ['publishing',   'active',                    forward('publish'), RESTORE,        STUCK,      STUCK],
  ['published',    'active',                    forward('publish'), RESTORE,        STUCK,      STUCK],
  ['deploying',    'active',                    forward('publish'), RESTORE,        STUCK,      STUCK],
  // The journal moves to `smoke` only after the deploy concluded success.
  ['smoke',        'active',                    forward('smoke'),   RESTORE,        STUCK,      STUCK],
  // Killed during the watch: watch again, then delete.
  ['revoking',     'disabled',                  forward('watch'),   RESTORE,        STUCK,      STUCK],
  // Enabled again after a failed check (or killed between recording the disable and sending
  // it): the deploy did not take, so everything is done again.
  ['revoking',     'active, disable recorded',  forward('publish'), RESTORE,        STUCK,      STUCK],
  // Killed before the disable was recorded: the smoke checks again, then the revoke.
  ['revoking',     'active',                    forward('smoke'),   RESTORE,        STUCK,      STUCK],
  // Deleted already: nothing is left but the journal.
  // …and a previous token that is gone cannot be restored.
  ['revoking',     'gone',                      forward('finish'),  PREVIOUS_GONE,  STUCK,      STUCK],
  ['rolling-back', 'active',                    forward('publish'), RESTORE,        STUCK,      STUCK],
  ['pending',      'active',                    forward('publish'), RESTORE,        STUCK,      STUCK]
]
const INPUT_COLUMNS = ['pending', 'previous', 'neither', 'stranger'] as const

const cells = GRID.flatMap(([phase, state, ...row]) =>
  INPUT_COLUMNS.map((input, i) => ({ phase, state, input, cell: row[i]! }))
)
const rowLabel = (phase: JournalPhase, state: PreviousState): string =>
  phase === 'revoking' ? `revoking (previous token ${state})` : phase

describe('decideRecovery: every unfinished phase × the current-* inputs × the journal run', () => {
  it('the grid holds every phase that is not settled (a service token rotation has its own)', () => {
    expect([...new Set(GRID.map(([phase]) => phase))]).toEqual(
      JOURNAL_PHASES.filter(
        phase => !isSettled(phase) && phase !== 'rotating' && phase !== 'closing'
      )
    )
  })

  describe.each<[JournalRunState, string]>([
    ['self', 'an earlier attempt of this run wrote it'],
    ['completed', 'its run has completed'],
    ['gone', 'its run no longer exists'],
    ['unknown', 'it names no run that can be looked up']
  ])('journal run %s (%s)', journalRun => {
    it.each(
      cells.map(({ phase, state, input, cell }) => [
        rowLabel(phase, state),
        INPUT_LABELS[input],
        cell.label,
        phase,
        state,
        input,
        cell
      ])
    )('%s, inputs give %s → %s', (_row, _inputs, _label, phase, state, input, cell) => {
      const facts = recoveryFacts(phase, state, journalRun, INPUTS[input])
      expect(decideRecovery(facts)).toEqual(cell.build(facts.record, INPUTS[input]))
    })
  })

  describe('journal run running: another run is still rotating, whatever the phase and inputs', () => {
    it.each(
      cells.map(({ phase, state, input }) => [
        rowLabel(phase, state),
        INPUT_LABELS[input],
        phase,
        state,
        input
      ])
    )('%s, inputs give %s → refuse', (_row, _inputs, phase, state, input) => {
      const facts = recoveryFacts(phase, state, 'running', INPUTS[input])
      expect(decideRecovery(facts)).toEqual({
        kind: 'refuse',
        record: facts.record,
        message: `Another rotation is in progress in run 1001 (phase ${phase}). Nothing was changed. Let it finish, and use a 'concurrency:' group so that rotations of one token never overlap.`
      })
    })

    it("names the run's status and link when they were read", () => {
      const facts = {
        ...recoveryFacts('deploying', 'active', 'running', INPUTS.pending),
        journalRunDetail: {
          status: 'in_progress',
          url: 'https://github.com/acme/site/actions/runs/1001'
        }
      }
      expect(decideRecovery(facts)).toEqual({
        kind: 'refuse',
        record: facts.record,
        message:
          "Another rotation is in progress in run 1001 (in_progress, phase deploying): https://github.com/acme/site/actions/runs/1001. Nothing was changed. Let it finish, and use a 'concurrency:' group so that rotations of one token never overlap."
      })
    })
  })
})

describe('decideRecovery: what the current-* inputs give of a published rotation', () => {
  const record = journalRecord('publishing')
  const decidePublished = (
    known: Credentials[],
    fields: SecretField[],
    changes: Partial<JournalRecord> = {}
  ): Recovery =>
    decideRecovery({
      record: { ...record, ...changes },
      journalRun: 'completed',
      known,
      fields,
      ownerTokens: ownerTokens()
    })

  it('goes forward when the inputs give every field of the pending token', () => {
    expect(decidePublished([NEW], ALL_FIELDS)).toEqual({
      kind: 'forward',
      record,
      next: NEW,
      previousId: PREVIOUS,
      from: 'publish'
    })
  })

  it('goes forward with the S3 pair alone when no secret needs the token value', () => {
    const next = { id: NEXT, secretAccessKey: NEW.secretAccessKey! }
    expect(decidePublished([next], S3_FIELDS)).toEqual({
      kind: 'forward',
      record,
      next,
      previousId: PREVIOUS,
      from: 'publish'
    })
  })

  it('prefers forward when both tokens are fully known (the new one is already in a secret)', () => {
    expect(decidePublished([OLD, NEW], ALL_FIELDS)).toEqual({
      kind: 'forward',
      record,
      next: NEW,
      previousId: PREVIOUS,
      from: 'publish'
    })
  })

  it('merges what several inputs tell about one token', () => {
    const known = [
      { id: NEXT, value: NEW.value! },
      { id: NEXT, secretAccessKey: NEW.secretAccessKey! }
    ]
    expect(decidePublished(known, ALL_FIELDS)).toEqual({
      kind: 'forward',
      record,
      next: NEW,
      previousId: PREVIOUS,
      from: 'publish'
    })
  })

  it('restores when only the previous token is fully known', () => {
    const known = [OLD, { id: NEXT, secretAccessKey: NEW.secretAccessKey! }]
    expect(decidePublished(known, ALL_FIELDS)).toEqual({
      kind: 'restore',
      record,
      previous: OLD,
      pendingId: NEXT
    })
  })

  it('is stuck when neither token is fully known, naming what is missing', () => {
    expect(decidePublished(INPUTS.neither.known, ALL_FIELDS)).toEqual({
      kind: 'stuck',
      record,
      reason: `the current-* inputs give neither every field of the pending token ${NEXT} (missing: token) nor of the previous token ${PREVIOUS} (missing: token)`
    })
  })

  it('is stuck when the inputs name some other token altogether', () => {
    expect(decidePublished([OTHER], ALL_FIELDS)).toEqual({
      kind: 'stuck',
      record,
      reason: stuckReason('token, secret-access-key')
    })
  })

  it.each([
    ['pending', { pending_token_id: undefined }],
    ['previous', { previous_token_id: undefined }]
  ])('is stuck when the journal names no %s token id', (which, change) => {
    expect(decidePublished([OLD, NEW], ALL_FIELDS, change)).toEqual({
      kind: 'stuck',
      record: { ...record, ...change },
      reason: `the journal (phase publishing) names no ${which} token id`
    })
  })
})

describe('orphansOf: tokens minted under the journal name and never published', () => {
  const named = (id: string, name = PENDING_NAME): OwnerToken => ({ id, name, status: 'active' })
  const LOST = 'c'.repeat(32)

  it.each<[string, Partial<JournalRecord>, Credentials[], OwnerToken[], string[]]>([
    [
      'the token under the pending name (killed before the id was recorded)',
      { phase: 'minting', pending_token_id: undefined },
      [OLD],
      [named(PREVIOUS, 'avatars'), named(NEXT)],
      [NEXT]
    ],
    [
      'the pending token and another under its name (a create whose answer was lost)',
      {},
      [OLD],
      [named(PREVIOUS, 'avatars'), named(LOST), named(NEXT)],
      [NEXT, LOST]
    ],
    [
      'never the previous token, though it carries the name (a second rotation on one day)',
      { phase: 'minting', pending_token_id: undefined },
      [],
      [named(PREVIOUS), named(NEXT)],
      [NEXT]
    ],
    [
      'never the previous token, though the journal calls it pending',
      { pending_token_id: PREVIOUS },
      [],
      [named(PREVIOUS)],
      []
    ],
    ['never a token an input names', {}, [NEW], [named(PREVIOUS, 'avatars'), named(NEXT)], []],
    [
      'never a token under another name',
      { phase: 'minting', pending_token_id: undefined },
      [OLD],
      [named(PREVIOUS, 'avatars'), named(STRANGER, 'avatars (prod)')],
      []
    ],
    [
      'the pending token by its id when the journal records no name',
      { pending_token_name: undefined },
      [OLD],
      [named(PREVIOUS, 'avatars'), named(NEXT, 'renamed')],
      [NEXT]
    ],
    [
      'nothing when the journal records neither name nor id',
      { phase: 'minting', pending_token_id: undefined, pending_token_name: undefined },
      [OLD],
      [named(PREVIOUS, 'avatars'), named(NEXT)],
      []
    ]
  ])('%s', (_what, changes, known, tokens, orphans) => {
    const record = journalRecord('minted', changes)
    expect(orphansOf(record, { known, ownerTokens: tokens })).toEqual(orphans)
  })

  // A clean-up killed right after its delete leaves the journal at `minted` with a token that is
  // gone. The contract deletes the pending token and rotates afresh; listing a gone token instead
  // hands the executor a delete that mayDelete refuses (a token not in the owner's list carries no
  // name, so nothing ties it to the journal), and every later run fails at the same place.
  it('not the pending token once it is gone: there is nothing left to delete', () => {
    const record = journalRecord('minted')
    const tokens = [named(PREVIOUS, 'avatars')]
    expect(orphansOf(record, { known: [OLD], ownerTokens: tokens })).toEqual([])
  })

  it('every orphan a recovery lists is one mayDelete lets the executor delete', () => {
    const record = journalRecord('minted')
    const tokens = [named(PREVIOUS, 'avatars'), named(LOST), named(NEXT)]
    const recovery = decideRecovery({
      record,
      journalRun: 'completed',
      known: [OLD],
      fields: ALL_FIELDS,
      ownerTokens: tokens
    })
    expect(recovery).toEqual({ kind: 'delete-unpublished', record, tokenIds: [NEXT, LOST] })
    for (const tokenId of recovery.kind === 'delete-unpublished' ? recovery.tokenIds : []) {
      const request = orphan({
        tokenId,
        name: tokens.find(t => t.id === tokenId)?.name ?? '',
        knownIds: [PREVIOUS]
      })
      expect([tokenId, mayDelete(request)]).toEqual([tokenId, ALLOWED])
    }
  })
})

// =============================================================================== after a failure

type NextFact = 'minted' | 'recovered' | 'absent'
type PreviousFact = 'complete' | 'missing a field' | 'equal to next' | 'unknown'

const PREVIOUS_FACTS: Record<PreviousFact, Credentials | undefined> = {
  complete: OLD,
  'missing a field': { id: PREVIOUS, secretAccessKey: OLD.secretAccessKey! },
  // After a forward recovery the token in service, which a rollback would fall back on, is the new one.
  'equal to next': NEW,
  unknown: undefined
}

function failureFacts(
  publishStarted: boolean,
  next: NextFact,
  onFailure: Settings['onFailure'],
  previousFact: PreviousFact,
  previousDisabled: boolean,
  fields: SecretField[] = ALL_FIELDS
): FailureFacts {
  const previous = PREVIOUS_FACTS[previousFact]
  return {
    settings: { onFailure, secrets: secretsFor(fields) },
    ...(next === 'absent' ? {} : { next: NEW, nextOrigin: next }),
    publishStarted,
    ...(previous ? { previous } : {}),
    previousDisabled
  }
}

const ON_FAILURE: Array<Settings['onFailure']> = ['rollback', 'keep-both']
const PREVIOUS_VALUES = Object.keys(PREVIOUS_FACTS) as PreviousFact[]
const label = (onFailure: string, previousFact: PreviousFact, previousDisabled: boolean): string =>
  `on-failure ${onFailure}, previous ${previousFact}${previousDisabled ? ', disabled' : ''}`

const KEEP_BOTH_UNKNOWN: AfterFailure = {
  kind: 'keep-both',
  why: "the previous token's values are not known"
}
const KEEP_BOTH_SETTING: AfterFailure = { kind: 'keep-both', why: 'on-failure is keep-both' }
const ROLLBACK: AfterFailure = { kind: 'rollback', previous: OLD, pendingId: NEXT }
const keepBothMissing = (missing: string): AfterFailure => ({
  kind: 'keep-both',
  why: `the previous token's values are not known (missing: ${missing}; pass current-token, or current-access-key-id with current-secret-access-key)`
})
const keepBothDisabled = (id: string): AfterFailure => ({
  kind: 'keep-both',
  why: `the previous token ${id} could not be enabled again; enable it in the Cloudflare dashboard at once`
})

describe('afterFailure: what a failure leaves', () => {
  describe('no new token: nothing to undo, whatever else holds', () => {
    it.each(
      [false, true].flatMap(publishStarted =>
        ON_FAILURE.flatMap(onFailure =>
          PREVIOUS_VALUES.flatMap(previousFact =>
            [false, true].map((previousDisabled): [string, FailureFacts] => [
              `publish ${publishStarted ? 'started' : 'not started'}, ${label(onFailure, previousFact, previousDisabled)}`,
              failureFacts(publishStarted, 'absent', onFailure, previousFact, previousDisabled)
            ])
          )
        )
      )
    )('%s → nothing', (_label, facts) => {
      expect(afterFailure(facts)).toEqual({ kind: 'nothing' })
    })
  })

  describe('before any secret write: the new token is in no secret', () => {
    it.each(
      (['minted', 'recovered'] as const).flatMap(next =>
        ON_FAILURE.flatMap(onFailure =>
          PREVIOUS_VALUES.flatMap(previousFact =>
            [false, true].map((previousDisabled): [string, FailureFacts, AfterFailure] => [
              `next ${next}, ${label(onFailure, previousFact, previousDisabled)}`,
              failureFacts(false, next, onFailure, previousFact, previousDisabled),
              // Minted by this run: deleted. Recovered from the secrets: it may serve, so kept.
              next === 'minted'
                ? { kind: 'delete-unpublished', tokenId: NEXT }
                : {
                    kind: 'keep-both',
                    why: 'the new token was found in the secrets, so it is kept'
                  }
            ])
          )
        )
      )
    )('%s → %j', (_label, facts, expected) => {
      expect(afterFailure(facts)).toEqual(expected)
    })
  })

  describe('after publish began, the previous token disabled (its re-enable failed): keep both', () => {
    it.each(
      (['minted', 'recovered'] as const).flatMap(next =>
        ON_FAILURE.flatMap(onFailure =>
          (['complete', 'missing a field'] as const).map((previousFact): [string, FailureFacts] => [
            `next ${next}, ${label(onFailure, previousFact, true)}`,
            failureFacts(true, next, onFailure, previousFact, true)
          ])
        )
      )
    )('%s → keep-both, enable it by hand', (_label, facts) => {
      // Restoring a disabled token would put a dead credential everywhere.
      expect(afterFailure(facts)).toEqual(keepBothDisabled(PREVIOUS))
    })

    it.each(
      (['minted', 'recovered'] as const).flatMap(next =>
        ON_FAILURE.map((onFailure): [string, FailureFacts] => [
          `next ${next}, ${label(onFailure, 'unknown', true)}`,
          failureFacts(true, next, onFailure, 'unknown', true)
        ])
      )
    )('%s → keep-both, enable it by hand', (_label, facts) => {
      expect(afterFailure(facts)).toEqual({
        kind: 'keep-both',
        why: expect.stringMatching(
          /could not be enabled again; enable it in the Cloudflare dashboard at once$/
        )
      })
    })

    // After a forward recovery the executor passes the token in service (the new one) as previous.
    // The decision is right to keep both, but its sentence then asks the user to enable the new
    // token, which is active, instead of the disabled previous one.
    it.each(
      (['minted', 'recovered'] as const).flatMap(next =>
        ON_FAILURE.map((onFailure): [string, FailureFacts] => [
          `next ${next}, ${label(onFailure, 'equal to next', true)}`,
          failureFacts(true, next, onFailure, 'equal to next', true)
        ])
      )
    )('%s → keep-both, never naming the new token as the one to enable', (_label, facts) => {
      const decision = afterFailure(facts)
      expect(decision.kind).toBe('keep-both')
      expect(decision.kind === 'keep-both' && decision.why).not.toContain(NEXT)
    })
  })

  describe('after publish began, the previous token enabled: roll back only when every value is known', () => {
    it.each<[NextFact, Settings['onFailure'], PreviousFact, AfterFailure]>([
      ['minted', 'rollback', 'complete', ROLLBACK],
      ['minted', 'rollback', 'missing a field', keepBothMissing('token')],
      ['minted', 'rollback', 'equal to next', KEEP_BOTH_UNKNOWN],
      ['minted', 'rollback', 'unknown', KEEP_BOTH_UNKNOWN],
      ['minted', 'keep-both', 'complete', KEEP_BOTH_SETTING],
      ['minted', 'keep-both', 'missing a field', KEEP_BOTH_SETTING],
      ['minted', 'keep-both', 'equal to next', KEEP_BOTH_SETTING],
      ['minted', 'keep-both', 'unknown', KEEP_BOTH_SETTING],
      ['recovered', 'rollback', 'complete', ROLLBACK],
      ['recovered', 'rollback', 'missing a field', keepBothMissing('token')],
      ['recovered', 'rollback', 'equal to next', KEEP_BOTH_UNKNOWN],
      ['recovered', 'rollback', 'unknown', KEEP_BOTH_UNKNOWN],
      ['recovered', 'keep-both', 'complete', KEEP_BOTH_SETTING],
      ['recovered', 'keep-both', 'missing a field', KEEP_BOTH_SETTING],
      ['recovered', 'keep-both', 'equal to next', KEEP_BOTH_SETTING],
      ['recovered', 'keep-both', 'unknown', KEEP_BOTH_SETTING]
    ])('next %s, on-failure %s, previous %s → %j', (next, onFailure, previousFact, expected) => {
      expect(afterFailure(failureFacts(true, next, onFailure, previousFact, false))).toEqual(
        expected
      )
    })

    it.each<[string, SecretField[], Credentials, AfterFailure]>([
      [
        'the S3 pair alone suffices when no secret needs the token value',
        S3_FIELDS,
        { id: PREVIOUS, secretAccessKey: OLD.secretAccessKey! },
        {
          kind: 'rollback',
          previous: { id: PREVIOUS, secretAccessKey: OLD.secretAccessKey! },
          pendingId: NEXT
        }
      ],
      [
        'the token value alone suffices when only the token is written',
        ['token'],
        { id: PREVIOUS, value: OLD.value! },
        { kind: 'rollback', previous: { id: PREVIOUS, value: OLD.value! }, pendingId: NEXT }
      ],
      [
        'an id alone: every missing field is named once',
        ['token', 'secret-access-key', 'token'],
        { id: PREVIOUS },
        keepBothMissing('token, secret-access-key')
      ]
    ])('%s', (_what, fields, previousValues, expected) => {
      const facts = failureFacts(true, 'minted', 'rollback', 'complete', false, fields)
      expect(afterFailure({ ...facts, previous: previousValues })).toEqual(expected)
    })
  })
})

// =============================================================================== revocation

describe('decideRevocation: revoke × revoke-watch × the number of checks', () => {
  const TWO_MINUTES = 120_000
  it.each<[Settings['revoke'], number, number, Revocation]>([
    ['keep', 0, 0, { kind: 'keep' }],
    ['keep', 0, 2, { kind: 'keep' }],
    ['keep', TWO_MINUTES, 0, { kind: 'keep' }],
    ['keep', TWO_MINUTES, 2, { kind: 'keep' }],
    ['delete', 0, 0, { kind: 'now', action: 'delete' }],
    ['delete', 0, 2, { kind: 'now', action: 'delete' }],
    // Nothing to watch: the watch is off, and the rotation warns.
    ['delete', TWO_MINUTES, 0, { kind: 'now', action: 'delete' }],
    [
      'delete',
      TWO_MINUTES,
      2,
      { kind: 'watched', watchMs: TWO_MINUTES, intervalMs: 5000, thenDelete: true }
    ],
    ['disable', 0, 0, { kind: 'now', action: 'disable' }],
    ['disable', 0, 2, { kind: 'now', action: 'disable' }],
    ['disable', TWO_MINUTES, 0, { kind: 'now', action: 'disable' }],
    [
      'disable',
      TWO_MINUTES,
      2,
      { kind: 'watched', watchMs: TWO_MINUTES, intervalMs: 5000, thenDelete: false }
    ]
  ])(
    'revoke %s, revoke-watch %i ms, %i check(s) → %j',
    (revoke, revokeWatchMs, checks, expected) => {
      expect(decideRevocation({ revoke, revokeWatchMs }, checks)).toEqual(expected)
    }
  )
})

describe('watchInterval: 24 rounds over the watch, 1 s to 5 s apart', () => {
  it.each([
    [0, 1000],
    [1000, 1000],
    [24_000, 1000],
    [30_000, 1250],
    [60_000, 2500],
    [90_000, 3750],
    [120_000, 5000],
    [600_000, 5000]
  ])('revoke-watch %i ms → every %i ms', (watchMs, interval) => {
    expect(watchInterval(watchMs)).toBe(interval)
  })
})

describe('leftoverTokens: what an earlier revoke: disable left', () => {
  const tokens: Array<Pick<ApiToken, 'id' | 'status'>> = [
    { id: 'd1', status: 'disabled' },
    { id: 'a1', status: 'active' },
    { id: 'x1', status: 'expired' },
    { id: PREVIOUS, status: 'disabled' }
  ]
  it.each<[string, string[], { remove: string[]; reenabled: string[]; gone: string[] }]>([
    ['still disabled: deleted', ['d1'], { remove: ['d1'], reenabled: [], gone: [] }],
    [
      'active again (enabled on purpose): left alone',
      ['a1'],
      { remove: [], reenabled: ['a1'], gone: [] }
    ],
    // Expired is as unusable as disabled: nothing can run on it.
    ['expired: deleted', ['x1'], { remove: ['x1'], reenabled: [], gone: [] }],
    ['gone already', ['g1'], { remove: [], reenabled: [], gone: ['g1'] }],
    [
      'a token of this rotation: not considered, though disabled',
      [PREVIOUS],
      { remove: [], reenabled: [], gone: [] }
    ],
    [
      'each once, in the journal order',
      ['g1', 'd1', 'a1', 'd1', PREVIOUS, 'x1', 'g1'],
      { remove: ['d1', 'x1'], reenabled: ['a1'], gone: ['g1'] }
    ]
  ])('%s', (_what, ids, expected) => {
    expect(leftoverTokens(ids, tokens, [PREVIOUS, NEXT])).toEqual(expected)
  })
})

// =============================================================================== the plan

describe('decideDue', () => {
  const THIRTY_DAYS = 30 * DAY
  const settings = (changes: { force?: boolean; rotateAfterMs?: number } = {}) => ({
    force: false,
    rotateAfterMs: THIRTY_DAYS,
    ...changes
  })
  it.each<[string, { force?: boolean; rotateAfterMs?: number }, Partial<ApiToken>, unknown]>([
    [
      'force, on a young token',
      { force: true },
      { issued_on: ago(DAY) },
      { due: true, why: 'force: true' }
    ],
    [
      'force wins over an expiry within 7 days',
      { force: true },
      { issued_on: ago(DAY), expires_on: ahead(DAY) },
      { due: true, why: 'force: true' }
    ],
    [
      'rotate-after 0 (always due)',
      { rotateAfterMs: 0 },
      { issued_on: ago(DAY) },
      { due: true, why: 'no rotate-after' }
    ],
    [
      'a young token that expires within 7 days (it would lapse before the next run)',
      {},
      { issued_on: ago(DAY), expires_on: ahead(6 * DAY) },
      { due: true, why: `it expires on ${ahead(6 * DAY)}, within 7 days` }
    ],
    [
      'a young token that has expired already',
      {},
      { issued_on: ago(DAY), expires_on: ago(1000) },
      { due: true, why: `it expires on ${ago(1000)}, within 7 days` }
    ],
    [
      'a young token that expires in exactly 7 days: not yet',
      {},
      { issued_on: ago(DAY), expires_on: ahead(EXPIRY_WARNING_MS) },
      { due: false, dueAt: new Date(NOW.getTime() - DAY + THIRTY_DAYS) }
    ],
    [
      'a young token that expires in 8 days',
      {},
      { issued_on: ago(DAY), expires_on: ahead(8 * DAY) },
      { due: false, dueAt: new Date(NOW.getTime() - DAY + THIRTY_DAYS) }
    ],
    ['no issue date', {}, {}, { due: true, why: 'its issue date is unknown' }],
    [
      'an issue date that does not parse',
      {},
      { issued_on: 'yesterday' },
      { due: true, why: 'its issue date is unknown' }
    ],
    [
      'an expiry that does not parse is ignored',
      {},
      { issued_on: ago(DAY), expires_on: 'soon' },
      { due: false, dueAt: new Date(NOW.getTime() - DAY + THIRTY_DAYS) }
    ],
    [
      'older than rotate-after',
      {},
      { issued_on: ago(THIRTY_DAYS + DAY) },
      { due: true, why: 'it is older than rotate-after' }
    ],
    [
      'exactly rotate-after old',
      {},
      { issued_on: ago(THIRTY_DAYS) },
      { due: true, why: 'it is older than rotate-after' }
    ],
    [
      'younger than rotate-after: skipped until it is due',
      {},
      { issued_on: ago(DAY) },
      { due: false, dueAt: new Date(NOW.getTime() - DAY + THIRTY_DAYS) }
    ]
  ])('%s', (_what, changes, token, expected) => {
    expect(decideDue(settings(changes), token, NOW)).toEqual(expected)
  })
})

describe('newExpiry', () => {
  it.each<[string, number | undefined, Partial<ApiToken>, string | undefined]>([
    [
      'token-ttl wins over the old lifetime',
      90 * DAY,
      { issued_on: ago(DAY), expires_on: ahead(DAY) },
      ahead(90 * DAY)
    ],
    ['token-ttl, to the second', 1500, {}, '2026-03-10T12:00:01Z'],
    [
      'the old lifetime length is kept',
      undefined,
      { issued_on: ago(10 * DAY), expires_on: ahead(20 * DAY) },
      ahead(30 * DAY)
    ],
    ['no expiry before: none after', undefined, { issued_on: ago(DAY) }, undefined],
    ['an expiry without an issue date: none', undefined, { expires_on: ahead(DAY) }, undefined],
    [
      'a lifetime that is not positive: none',
      undefined,
      { issued_on: ago(0), expires_on: ago(DAY) },
      undefined
    ]
  ])('%s', (_what, tokenTtlMs, token, expected) => {
    expect(newExpiry(tokenTtlMs === undefined ? {} : { tokenTtlMs }, token, NOW)).toBe(expected)
  })
})

describe('expiryWarnings', () => {
  const soon = `The current token ${PREVIOUS} expires on ${ahead(DAY)}, within 7 days.`
  const early = (expiresOn: string, due: string) =>
    `The new token will expire on ${expiresOn}, before the next rotation is due (${due}, rotate-after). Raise token-ttl or lower rotate-after, or the token will lapse between rotations.`
  it.each<[string, number, string | null | undefined, string | undefined, string[]]>([
    ['nothing to say', 30 * DAY, ahead(60 * DAY), ahead(90 * DAY), []],
    ['the current token expires within 7 days', 30 * DAY, ahead(DAY), ahead(90 * DAY), [soon]],
    [
      'the new token expires before the next rotation is due',
      30 * DAY,
      undefined,
      ahead(10 * DAY),
      [early(ahead(10 * DAY), ahead(30 * DAY))]
    ],
    [
      'both',
      30 * DAY,
      ahead(DAY),
      ahead(10 * DAY),
      [soon, early(ahead(10 * DAY), ahead(30 * DAY))]
    ],
    ['rotate-after 0: every run is due, so no next due date', 0, undefined, ahead(DAY), []],
    ['no expiry for the new token', 30 * DAY, null, undefined, []]
  ])('%s', (_what, rotateAfterMs, currentExpiry, newExpiresOn, expected) => {
    const token = {
      id: PREVIOUS,
      ...(currentExpiry !== undefined ? { expires_on: currentExpiry } : {})
    }
    expect(expiryWarnings({ rotateAfterMs }, token, newExpiresOn, NOW)).toEqual(expected)
  })
})

describe('uniqueTokenName', () => {
  const run = { id: '987654321', attempt: 1 }
  const long = 'x'.repeat(120)
  it.each<[string, string, string[], { id: string; attempt: number }, string]>([
    ['free: kept as it is', PENDING_NAME, ['avatars'], run, PENDING_NAME],
    [
      'taken: the run id is appended',
      PENDING_NAME,
      [PENDING_NAME],
      run,
      `${PENDING_NAME} #987654321`
    ],
    [
      'taken, on a re-run: the attempt too',
      PENDING_NAME,
      [PENDING_NAME],
      { id: '987654321', attempt: 2 },
      `${PENDING_NAME} #987654321-2`
    ],
    [
      'taken, outside Actions (no run id)',
      PENDING_NAME,
      [PENDING_NAME],
      { id: '', attempt: 1 },
      `${PENDING_NAME} #local`
    ],
    [
      'taken at the 120-character limit: the name is cut so that the tag fits',
      long,
      [long],
      run,
      `${'x'.repeat(120 - ' #987654321'.length)} #987654321`
    ],
    [
      'cut before a space: no double space before the tag',
      `${'x'.repeat(108)} ${'y'.repeat(11)}`,
      [`${'x'.repeat(108)} ${'y'.repeat(11)}`],
      run,
      `${'x'.repeat(108)} #987654321`
    ],
    [
      'characters, not UTF-16 units, are counted',
      '🔑'.repeat(120),
      ['🔑'.repeat(120)],
      run,
      `${'🔑'.repeat(109)} #987654321`
    ]
  ])('%s', (_what, expanded, names, runId, expected) => {
    const name = uniqueTokenName(expanded, names, runId, 120)
    expect(name).toBe(expected)
    expect(Array.from(name).length).toBeLessThanOrEqual(120)
  })

  // The journal relies on the name being unique among the owner's tokens: after a create whose
  // answer was lost, every other token carrying it is deleted as an orphan. Runs outside Actions
  // (all tagged ` #local`) on one day with `revoke: keep` reach this row: the kept tokens of the
  // earlier runs carry both the name and the tagged name.
  it('the tagged name is taken as well: still unique', () => {
    const names = [PENDING_NAME, `${PENDING_NAME} #local`]
    expect(names).not.toContain(uniqueTokenName(PENDING_NAME, names, { id: '', attempt: 1 }, 120))
  })
})

describe('planProbe', () => {
  const bucket = (name: string, jurisdiction: 'default' | 'eu' | 'fedramp' = 'default') => ({
    accountId: '0123456789abcdef0123456789abcdef',
    jurisdiction,
    bucket: name
  })
  const scope = (changes: Partial<TokenScope>): TokenScope => ({
    canRead: true,
    canWrite: true,
    buckets: [bucket('avatars')],
    accountIds: ['0123456789abcdef0123456789abcdef'],
    otherPermissions: [],
    warnings: [],
    policies: [],
    summary: 'object-read-write bucket=avatars',
    ...changes
  })
  const r2 = (probe: Settings['r2']['probe'], bucketName?: string): Pick<Settings, 'r2'> => ({
    r2: { probe, ...(bucketName ? { bucket: bucketName } : {}) }
  })
  const NO_BUCKET_WARNING =
    'R2 probe: off, because the token is not scoped to exactly one bucket. Set r2-bucket to a bucket it can reach so that the new credentials are proven through the S3 API before anything uses them.'
  const refuseWithout = (mode: string) => ({
    kind: 'refuse',
    message: `Input 'r2-probe' is '${mode}' but no bucket is known: the token is not scoped to exactly one bucket. Set r2-bucket.`
  })

  it.each<[string, Pick<Settings, 'r2'>, TokenScope, unknown]>([
    ['off', r2('off'), scope({}), { kind: 'off' }],
    [
      'auto, may write, one bucket: a write probe there',
      r2('auto'),
      scope({ buckets: [bucket('avatars', 'eu')] }),
      { kind: 'probe', probe: { mode: 'write', bucket: 'avatars', jurisdiction: 'eu' } }
    ],
    [
      'auto, may only read: a read probe',
      r2('auto'),
      scope({ canWrite: false }),
      { kind: 'probe', probe: { mode: 'read', bucket: 'avatars', jurisdiction: 'default' } }
    ],
    [
      'auto, no R2 permission: off, silently',
      r2('auto'),
      scope({ canRead: false, canWrite: false, buckets: [] }),
      { kind: 'off' }
    ],
    [
      'auto, every bucket and no r2-bucket: off, with a warning',
      r2('auto'),
      scope({ buckets: 'all' }),
      { kind: 'off', warning: NO_BUCKET_WARNING }
    ],
    [
      'auto, two buckets and no r2-bucket: off, with a warning',
      r2('auto'),
      scope({ buckets: [bucket('avatars'), bucket('logs')] }),
      { kind: 'off', warning: NO_BUCKET_WARNING }
    ],
    [
      'auto, every bucket, r2-bucket set',
      r2('auto', 'avatars'),
      scope({ buckets: 'all' }),
      { kind: 'probe', probe: { mode: 'write', bucket: 'avatars', jurisdiction: 'default' } }
    ],
    [
      'auto, two buckets, r2-bucket names one: its jurisdiction',
      r2('auto', 'logs'),
      scope({ buckets: [bucket('avatars'), bucket('logs', 'fedramp')] }),
      { kind: 'probe', probe: { mode: 'write', bucket: 'logs', jurisdiction: 'fedramp' } }
    ],
    [
      'auto, r2-bucket outside the scope: the default jurisdiction',
      r2('auto', 'other'),
      scope({ buckets: [bucket('avatars', 'eu')] }),
      { kind: 'probe', probe: { mode: 'write', bucket: 'other', jurisdiction: 'default' } }
    ],
    [
      'read, one bucket',
      r2('read'),
      scope({}),
      { kind: 'probe', probe: { mode: 'read', bucket: 'avatars', jurisdiction: 'default' } }
    ],
    [
      'write asked of a token that may only read: as asked',
      r2('write'),
      scope({ canWrite: false }),
      { kind: 'probe', probe: { mode: 'write', bucket: 'avatars', jurisdiction: 'default' } }
    ],
    [
      'read, no bucket known: refused',
      r2('read'),
      scope({ buckets: 'all' }),
      refuseWithout('read')
    ],
    [
      'write, no bucket known: refused',
      r2('write'),
      scope({ buckets: [bucket('avatars'), bucket('logs')] }),
      refuseWithout('write')
    ]
  ])('%s', (_what, settings, tokenScope, expected) => {
    expect(planProbe(settings, tokenScope)).toEqual(expected)
  })
})

// =============================================================================== refusals

describe('refusals: what stops a rotation before anything is minted', () => {
  const facts = (changes: Partial<PreflightFacts> = {}): PreflightFacts => ({
    owner: { kind: 'user' },
    current: { id: PREVIOUS, status: 'active' },
    managementId: MANAGEMENT,
    ownerTokens: [
      { id: PREVIOUS, name: 'avatars', status: 'active' },
      { id: MANAGEMENT, name: 'rotator', status: 'active' }
    ],
    deletingFirst: [],
    recoveringPublished: false,
    leastPrivilege: 'warn',
    scopeWarnings: [],
    now: NOW,
    quota: 3,
    managementPermission: 'API Tokens Write',
    ...changes
  })
  const MISMATCH = `current-token is token ${NEXT} but current-access-key-id is ${PREVIOUS}.`
  const WARNING = 'Policy #1 grants R2 access to every bucket of the account.'
  const full = (disabled: number): PreflightFacts['ownerTokens'] => [
    { id: PREVIOUS, name: 'avatars', status: 'active' },
    ...Array.from({ length: disabled }, (_, i) => ({
      id: `old${i + 1}`,
      name: `avatars (rotated 2026-0${(i % 9) + 1}-01)`,
      status: 'disabled' as const
    }))
  ]
  const quota = (owner: string, allowed: number, exist: number, fix: string): string =>
    `Cloudflare allows ${allowed} ${owner} API tokens and ${exist} exist: the new token needs a free slot, because it is created before the old one is deleted. ${fix}`

  const REFUSAL = {
    mismatch: MISMATCH,
    disabled: `The current token ${PREVIOUS} is disabled. Only an active token can be rotated; pass the token the deployments use now as current-token or current-access-key-id.`,
    expired: `The current token ${PREVIOUS} is expired. Only an active token can be rotated; pass the token the deployments use now as current-token or current-access-key-id.`,
    itself: (id: string) =>
      `The management token (cloudflare-api-token) is the token being rotated (${id}); revoking it would end the rotation midway. Use a separate token with 'API Tokens Write'.`,
    managementExpired: (on: string) =>
      `The management token (cloudflare-api-token) ${MANAGEMENT} expired on ${on}. Create a new one (dashboard: My Profile → API Tokens → Create Token → the 'Create additional tokens' template for a user-owned token, or Manage Account → API Tokens with Account › Account API Tokens › Edit for an account-owned one) and update the secret it comes from.`,
    enforce: `least-privilege: enforce refuses to rotate token ${PREVIOUS}: ${WARNING} Narrow the token's policies (one bucket, object-level permissions) or set least-privilege: warn.`
  }

  it.each<[string, Partial<PreflightFacts>, string[]]>([
    ['none: a healthy rotation', {}, []],
    ['the inputs name two tokens', { inputsMismatch: MISMATCH }, [REFUSAL.mismatch]],
    [
      'the inputs name two tokens while a published rotation is finished or undone: expected',
      { inputsMismatch: MISMATCH, recoveringPublished: true },
      []
    ],
    [
      'the current token is disabled',
      { current: { id: PREVIOUS, status: 'disabled' } },
      [REFUSAL.disabled]
    ],
    [
      'the current token is expired',
      { current: { id: PREVIOUS, status: 'expired' } },
      [REFUSAL.expired]
    ],
    [
      'the management token is the current token',
      { managementId: PREVIOUS },
      [REFUSAL.itself(PREVIOUS)]
    ],
    [
      'the management token is the previous token of the rotation being finished',
      { managementId: NEXT, previousId: NEXT },
      [REFUSAL.itself(NEXT)]
    ],
    [
      'the management token has expired',
      { managementExpiresOn: ago(1000) },
      [REFUSAL.managementExpired(ago(1000))]
    ],
    [
      'the management token expires this very second',
      { managementExpiresOn: ago(0) },
      [REFUSAL.managementExpired(ago(0))]
    ],
    [
      'the management token expires later (a warning, elsewhere)',
      { managementExpiresOn: ahead(DAY) },
      []
    ],
    [
      'least-privilege: enforce with findings',
      { leastPrivilege: 'enforce', scopeWarnings: [WARNING] },
      [REFUSAL.enforce]
    ],
    [
      'least-privilege: warn with findings',
      { leastPrivilege: 'warn', scopeWarnings: [WARNING] },
      []
    ],
    ['least-privilege: enforce without findings', { leastPrivilege: 'enforce' }, []],
    [
      'the quota is reached, user-owned, with a disabled token to delete',
      { ownerTokens: full(2) },
      [
        quota(
          'user-owned',
          3,
          3,
          'Delete tokens you no longer need, for example the 2 disabled one(s): old1 "avatars (rotated 2026-01-01)", old2 "avatars (rotated 2026-02-01)".'
        )
      ]
    ],
    [
      'the quota is reached, account-owned, nothing disabled',
      {
        owner: { kind: 'account', accountId: 'acc1' },
        ownerTokens: [
          { id: PREVIOUS, name: 'avatars', status: 'active' },
          { id: MANAGEMENT, name: 'rotator', status: 'active' },
          { id: STRANGER, name: 'deploy bot', status: 'active' }
        ]
      },
      [
        quota(
          'account-owned (account acc1)',
          3,
          3,
          'Delete tokens you no longer need (dashboard: API Tokens).'
        )
      ]
    ],
    [
      'the quota is passed with 12 disabled tokens: ten are named',
      { ownerTokens: full(12), quota: 12 },
      [
        quota(
          'user-owned',
          12,
          13,
          `Delete tokens you no longer need, for example the 12 disabled one(s): ${Array.from(
            { length: 10 },
            (_, i) => `old${i + 1} "avatars (rotated 2026-0${(i % 9) + 1}-01)"`
          ).join(', ')}, ….`
        )
      ]
    ],
    [
      'the quota is reached but an orphan is deleted first: a slot is free',
      { ownerTokens: full(2), deletingFirst: ['old1'] },
      []
    ]
  ])('%s', (_what, changes, expected) => {
    expect(refusals(facts(changes))).toEqual(expected)
  })

  it('every refusal at once, in the order a user should fix them', () => {
    expect(
      refusals(
        facts({
          inputsMismatch: MISMATCH,
          current: { id: PREVIOUS, status: 'disabled' },
          managementId: PREVIOUS,
          managementExpiresOn: ago(DAY),
          leastPrivilege: 'enforce',
          scopeWarnings: [WARNING],
          ownerTokens: full(2)
        })
      )
    ).toEqual([
      REFUSAL.mismatch,
      REFUSAL.disabled,
      REFUSAL.itself(PREVIOUS),
      `The management token (cloudflare-api-token) ${PREVIOUS} expired on ${ago(DAY)}. Create a new one (dashboard: My Profile → API Tokens → Create Token → the 'Create additional tokens' template for a user-owned token, or Manage Account → API Tokens with Account › Account API Tokens › Edit for an account-owned one) and update the secret it comes from.`,
      REFUSAL.enforce,
      expect.stringMatching(/^Cloudflare allows 3 user-owned API tokens and 3 exist/)
    ])
  })
})

describe('IP conditions: ipRules, describeCondition, conditionNote, locationRefusal', () => {
  it.each<[string, unknown, string | undefined]>([
    ['none', undefined, undefined],
    ['null', null, undefined],
    ['empty', {}, undefined],
    ['in only', { request_ip: { in: ['192.0.2.0/24'] } }, 'only from 192.0.2.0/24'],
    [
      'in and not_in',
      { request_ip: { in: ['192.0.2.0/24', '2001:db8::/32'], not_in: ['192.0.2.7'] } },
      'only from 192.0.2.0/24, 2001:db8::/32, not from 192.0.2.7'
    ],
    ['not_in only', { request_ip: { not_in: ['203.0.113.0/24'] } }, 'not from 203.0.113.0/24'],
    ['an empty in list admits nothing', { request_ip: { in: [], not_in: [] } }, 'from no address'],
    ['the legacy key', { 'request.ip': { in: ['198.51.100.1'] } }, 'only from 198.51.100.1'],
    [
      'both keys: both must pass',
      { request_ip: { in: ['192.0.2.0/24'] }, 'request.ip': { not_in: ['192.0.2.7'] } },
      'only from 192.0.2.0/24; and not from 192.0.2.7'
    ]
  ])('%s', (_, condition, words) => {
    expect(describeCondition(condition)).toBe(words)
    expect(ipRules(condition).length > 0).toBe(words !== undefined)
  })

  it('conditionNote says what the condition means for this run', () => {
    const condition = { request_ip: { in: ['192.0.2.0/24'] } }
    expect(conditionNote({ condition: undefined, probe: true })).toBeUndefined()
    expect(conditionNote({ condition, probe: true })).toBe(
      'IP condition: requests only from 192.0.2.0/24. The new token gets the same condition, unchanged. The R2 probe uses the credentials from this runner, so its address must be inside the filter.'
    )
    expect(conditionNote({ condition, probe: false })).toContain(
      'Only the management token is used from this runner'
    )
    expect(conditionNote({ condition, probe: false, refusedFrom: '203.0.113.9' })).toContain(
      'Cloudflare refuses the token from this runner (203.0.113.9): the new token is checked with the management token'
    )
  })

  it.each<[string, { needsVerify: boolean; probePlanned: boolean }, string[] | undefined]>([
    ['nothing needs the token from here', { needsVerify: false, probePlanned: false }, undefined],
    [
      'the probe',
      { needsVerify: false, probePlanned: true },
      ['the R2 probe', 'set r2-probe: off:']
    ],
    [
      'a verify to name the token',
      { needsVerify: true, probePlanned: false },
      ['a verify, to learn which token', 'set current-access-key-id set to the token id:']
    ],
    [
      'both',
      { needsVerify: true, probePlanned: true },
      ['a verify, to learn which token', 'set r2-probe: off and current-access-key-id']
    ]
  ])('locationRefusal: %s', (_, facts, parts) => {
    const message = locationRefusal({
      tokenId: 'abc',
      condition: { request_ip: { in: ['192.0.2.0/24'] } },
      refusedFrom: '127.0.0.1',
      ...facts
    })
    if (!parts) return expect(message).toBeUndefined()
    expect(message).toContain(
      "Cloudflare refuses token abc from this runner's address (127.0.0.1): its IP condition admits requests only from 192.0.2.0/24."
    )
    for (const part of [...parts, 'Nothing was minted or changed', 'fixed egress address'])
      expect(message).toContain(part)
  })
})

describe('githubTokenExpiry: the github-token expiry GitHub sent', () => {
  const now = new Date('2026-03-10T12:00:00Z')
  const at = (days: number): Date => new Date(now.getTime() + days * 24 * 3600 * 1000)
  it.each<[string, Date | undefined, 'warn' | 'refuse' | undefined, string]>([
    ['none sent', undefined, undefined, ''],
    ['in 40 days', at(40), undefined, ''],
    ['in exactly 30 days', at(30), undefined, ''],
    ['in 29.5 days', at(29.5), 'warn', '(in 29 day(s))'],
    ['in an hour', at(1 / 24), 'warn', '(in less than a day)'],
    ['an hour ago', at(-1 / 24), 'refuse', 'expired on 2026-03-10T11:00:00Z'],
    ['right now', now, 'refuse', 'expired']
  ])('%s', (_, expires, kind, text) => {
    const result = githubTokenExpiry(expires, now)
    expect(result?.kind).toBe(kind)
    if (text) expect(result?.message).toContain(text)
    if (result) expect(result.message).toContain('Regenerate it')
  })
})

describe('budgetRefusal', () => {
  const refusal = (remaining: number, reset = '') =>
    `Only ${remaining} Cloudflare API requests are left in this five-minute window, and a rotation needs up to 25 after preflight: starting now could leave it stuck midway. The budget is shared by every person and tool of this Cloudflare user.${reset} Run again later.`
  it.each<[string, { remaining?: number; resetAt?: Date }, string | undefined]>([
    ['no rate headers seen', {}, undefined],
    ['plenty left', { remaining: 1100 }, undefined],
    ['exactly what a rotation needs', { remaining: ROTATION_CLOUDFLARE_REQUESTS }, undefined],
    ['one short', { remaining: ROTATION_CLOUDFLARE_REQUESTS - 1 }, refusal(24)],
    [
      'none left, with the reset',
      { remaining: 0, resetAt: new Date('2026-03-10T12:04:30.500Z') },
      refusal(0, ' The budget resets at 2026-03-10T12:04:30Z.')
    ]
  ])('%s', (_what, rate, expected) => {
    expect(budgetRefusal(rate)).toBe(expected)
  })
})

describe('baselineRefusal: the app fails before anything changes', () => {
  const check = (url: string, changes: Partial<SmokeResult> = {}): SmokeResult => ({
    url,
    ok: true,
    status: 200,
    attempts: 1,
    durationMs: 40,
    ...changes
  })
  const tail =
    '. Nothing was minted or changed. Fix the app (or the smoke-urls input, if a URL is wrong) and run again.'
  it.each<
    [
      string,
      SmokeResult[],
      { ok: true } | { ok: false; reason: string } | undefined,
      string | undefined
    ]
  >([
    ['healthy, no probe', [check('https://app.example/health')], undefined, undefined],
    ['healthy, probe passed', [check('https://app.example/health')], { ok: true }, undefined],
    ['no smoke checks, no probe', [], undefined, undefined],
    [
      'a failing check, by its reason',
      [
        check('https://app.example/health'),
        check('https://app.example/r2', { ok: false, status: 500, reason: 'status 500' })
      ],
      undefined,
      `The app is failing before the rotation: 1 smoke check(s) fail with the credentials in use now: https://app.example/r2 (status 500)${tail}`
    ],
    [
      'two failing checks, one without a reason',
      [
        check('https://a.example', { ok: false, status: 503 }),
        check('https://b.example', { ok: false, status: undefined, reason: 'timeout' })
      ],
      undefined,
      `The app is failing before the rotation: 2 smoke check(s) fail with the credentials in use now: https://a.example (503); https://b.example (timeout)${tail}`
    ],
    [
      'the probe with the current credentials fails',
      [],
      { ok: false, reason: 'AccessDenied' },
      `The app is failing before the rotation: the R2 probe with the current credentials of token ${PREVIOUS} fails: AccessDenied${tail}`
    ],
    [
      'both',
      [check('https://a.example', { ok: false, status: 503 })],
      { ok: false, reason: 'AccessDenied' },
      `The app is failing before the rotation: 1 smoke check(s) fail with the credentials in use now: https://a.example (503); and the R2 probe with the current credentials of token ${PREVIOUS} fails: AccessDenied${tail}`
    ]
  ])('%s', (_what, smoke, probe, expected) => {
    expect(baselineRefusal(smoke, probe, PREVIOUS)).toBe(expected)
  })
})

// =============================================================================== shadows

describe('writesEnvironment and writesRepository: which target writes what a deploy reads', () => {
  const repo = { owner: 'acme', repo: 'site' }
  const env = (owner: string, name: string, environment: string): SecretTarget => ({
    kind: 'env',
    owner,
    repo: name,
    environment,
    line: `env:${owner}/${name}:${environment}`
  })
  const repoTarget = (owner: string, name: string): SecretTarget => ({
    kind: 'repo',
    owner,
    repo: name,
    line: `repo:${owner}/${name}`
  })
  const org: SecretTarget = { kind: 'org', org: 'acme', line: 'org:acme' }
  const dependabot: SecretTarget = {
    kind: 'dependabot',
    owner: 'acme',
    repo: 'site',
    line: 'dependabot:acme/site'
  }

  it.each<[string, SecretTarget[], boolean, boolean]>([
    // targets                                              environment production, repository
    ['no target', [], false, false],
    ['the environment, same case', [env('acme', 'site', 'production')], true, false],
    [
      'the environment, names cased otherwise (GitHub ignores case)',
      [env('ACME', 'Site', 'Production')],
      true,
      false
    ],
    ['another environment', [env('acme', 'site', 'staging')], false, false],
    ['the environment of another repository', [env('acme', 'api', 'production')], false, false],
    ['the repository', [repoTarget('acme', 'site')], false, true],
    ['the repository, cased otherwise', [repoTarget('Acme', 'SITE')], false, true],
    ['another repository', [repoTarget('acme', 'api')], false, false],
    ['the organization (shadowed by both)', [org], false, false],
    ['Dependabot secrets (Actions does not read them)', [dependabot], false, false],
    [
      'the environment and the repository',
      [org, repoTarget('acme', 'site'), env('acme', 'site', 'production')],
      true,
      true
    ]
  ])('%s', (_what, targets, writesEnv, writesRepo) => {
    expect(writesEnvironment(targets, repo, 'production')).toBe(writesEnv)
    expect(writesRepository(targets, repo)).toBe(writesRepo)
  })
})

describe('shadowsOf and shadowRefusal: copies the deploy would read instead', () => {
  const repository = { owner: 'acme', repo: 'site' }
  const shadowFacts = (changes: Partial<ShadowFacts>): ShadowFacts => ({
    repository,
    environmentSecrets: [],
    repositorySecrets: [],
    ...changes
  })
  const envSecret = (exists: boolean | undefined) => ({
    job: 'deploy',
    environment: 'production',
    secret: 'R2_TOKEN',
    ...(exists === undefined ? {} : { exists })
  })
  const ENV_SHADOW: Shadow = {
    where: "Environment 'production' of acme/site",
    secret: 'R2_TOKEN',
    job: 'deploy',
    fix: 'env:acme/site:production'
  }
  const REPO_SHADOW: Shadow = {
    where: 'The repository acme/site',
    secret: 'R2_TOKEN',
    fix: 'repo:acme/site'
  }
  const repoTarget: SecretTarget = {
    kind: 'repo',
    owner: 'Acme',
    repo: 'Site',
    line: 'repo:Acme/Site'
  }
  const envTarget: SecretTarget = {
    kind: 'env',
    owner: 'acme',
    repo: 'site',
    environment: 'PRODUCTION',
    line: 'env:acme/site:PRODUCTION'
  }
  const org: SecretTarget = { kind: 'org', org: 'acme', line: 'org:acme' }

  it.each<[string, Partial<ShadowFacts>, SecretTarget[], Shadow[]]>([
    ['nothing read', {}, [repoTarget], []],
    [
      'an environment secret no target writes',
      { environmentSecrets: [envSecret(true)] },
      [repoTarget],
      [ENV_SHADOW]
    ],
    [
      'an environment secret a target writes (case-insensitive)',
      { environmentSecrets: [envSecret(true)] },
      [envTarget],
      []
    ],
    [
      'the environment holds no such secret',
      { environmentSecrets: [envSecret(false)] },
      [repoTarget],
      []
    ],
    [
      'whether the environment holds it is unknown',
      { environmentSecrets: [envSecret(undefined)] },
      [repoTarget],
      []
    ],
    [
      'an org target, and the repository holds its own copy',
      { repositorySecrets: [{ secret: 'R2_TOKEN', exists: true }] },
      [org],
      [REPO_SHADOW]
    ],
    [
      'an org target, and a repo target writes that copy too',
      { repositorySecrets: [{ secret: 'R2_TOKEN', exists: true }] },
      [org, repoTarget],
      []
    ],
    [
      'the repository holds no copy',
      { repositorySecrets: [{ secret: 'R2_TOKEN', exists: false }] },
      [org],
      []
    ],
    [
      'both levels',
      {
        environmentSecrets: [envSecret(true)],
        repositorySecrets: [{ secret: 'R2_TOKEN', exists: true }]
      },
      [org],
      [ENV_SHADOW, REPO_SHADOW]
    ]
  ])('%s', (_what, changes, targets, expected) => {
    expect(shadowsOf(shadowFacts(changes), targets)).toEqual(expected)
  })

  const tail =
    '. Secrets at a lower level (environment, then repository, then organization) shadow those above them. Nothing was changed.'
  it.each<[string, Shadow[], string | undefined]>([
    ['no shadow', [], undefined],
    [
      'an environment copy, read by a job',
      [ENV_SHADOW],
      `The deploy would run on the old credentials: Environment 'production' of acme/site holds its own secret R2_TOKEN, which the deploy job 'deploy' reads instead of the one this rotation writes; add \`env:acme/site:production\` to secret-targets (or delete that copy)${tail}`
    ],
    [
      'a repository copy and an environment copy',
      [REPO_SHADOW, ENV_SHADOW],
      `The deploy would run on the old credentials: The repository acme/site holds its own secret R2_TOKEN instead of the one this rotation writes; add \`repo:acme/site\` to secret-targets (or delete that copy); Environment 'production' of acme/site holds its own secret R2_TOKEN, which the deploy job 'deploy' reads instead of the one this rotation writes; add \`env:acme/site:production\` to secret-targets (or delete that copy)${tail}`
    ]
  ])('refusal: %s', (_what, shadows, expected) => {
    expect(shadowRefusal(shadows)).toBe(expected)
  })
})

// =============================================================================== the lock

describe('decideLock: whose is the lock, and may this run take it?', () => {
  const self = { id: '1001', attempt: 2 }
  const OURS = { kind: 'ours' }
  const UNKNOWN_RUN =
    'it names no workflow run this action can look up; if no rotation is running, delete the variable by hand'
  it.each<
    [
      string,
      { run_id: string; run_attempt: number },
      'running' | 'completed' | 'gone' | 'unknown',
      unknown
    ]
  >([
    ['this attempt of this run', { run_id: '1001', run_attempt: 2 }, 'running', OURS],
    [
      'this attempt of this run, its run read as unknown',
      { run_id: '1001', run_attempt: 2 },
      'unknown',
      OURS
    ],
    [
      'an earlier attempt of this run (it is over: this attempt runs)',
      { run_id: '1001', run_attempt: 1 },
      'running',
      { kind: 'take-over', why: 'it was left by attempt 1 of this run' }
    ],
    [
      'a later attempt of this run, running',
      { run_id: '1001', run_attempt: 3 },
      'running',
      { kind: 'refuse', why: 'that run is still going' }
    ],
    [
      'another run, still going',
      { run_id: '2002', run_attempt: 1 },
      'running',
      { kind: 'refuse', why: 'that run is still going' }
    ],
    [
      'another run, completed without releasing it (killed)',
      { run_id: '2002', run_attempt: 1 },
      'completed',
      { kind: 'take-over', why: 'that run has completed without releasing it (killed?)' }
    ],
    [
      'another run that no longer exists',
      { run_id: '2002', run_attempt: 1 },
      'gone',
      { kind: 'take-over', why: 'that run no longer exists' }
    ],
    [
      'a run that cannot be looked up',
      { run_id: 'abc', run_attempt: 1 },
      'unknown',
      { kind: 'refuse', why: UNKNOWN_RUN }
    ],
    [
      'a lock that names no run (hand-made)',
      { run_id: '', run_attempt: 1 },
      'unknown',
      { kind: 'refuse', why: UNKNOWN_RUN }
    ]
  ])('%s → %j', (_what, holder, holderRun, expected) => {
    expect(decideLock(holder, holderRun, self)).toEqual(expected)
  })

  // The README: "a lock that names no run the action can look up (hand-made) is never taken
  // over". A run outside Actions has no run id either, and takes such a lock for its own; two
  // such runs started together would both proceed.
  it('a lock that names no run is not ours, even for a run without a run id', () => {
    expect(decideLock({ run_id: '', run_attempt: 1 }, 'unknown', { id: '', attempt: 1 })).toEqual({
      kind: 'refuse',
      why: UNKNOWN_RUN
    })
  })
})

// =============================================================================== recovery, as planned

describe('serving: the token in service while preflight plans', () => {
  const record = journalRecord('deploying')
  const forwardRecovery: Recovery = {
    kind: 'forward',
    record,
    next: NEW,
    previousId: PREVIOUS,
    from: 'publish'
  }
  const restoreRecovery: Recovery = { kind: 'restore', record, previous: OLD, pendingId: NEXT }
  const stuckRecovery: Recovery = { kind: 'stuck', record, reason: 'neither' }
  const deleteRecovery: Recovery = {
    kind: 'delete-unpublished',
    record: journalRecord('minted'),
    tokenIds: [NEXT]
  }

  it.each<[string, Recovery | undefined, string, Credentials[], ReturnType<typeof serving>]>([
    [
      'no recovery: the token the inputs name',
      undefined,
      PREVIOUS,
      [OLD],
      { currentId: PREVIOUS, credentials: OLD, previous: OLD, candidates: [PREVIOUS] }
    ],
    [
      'no recovery, the inputs tell nothing of it: its id alone',
      undefined,
      PREVIOUS,
      [],
      {
        currentId: PREVIOUS,
        credentials: { id: PREVIOUS },
        previous: { id: PREVIOUS },
        candidates: [PREVIOUS]
      }
    ],
    [
      'forward: the new token serves, the previous one is revoked at the end',
      forwardRecovery,
      PREVIOUS,
      [OLD, NEW],
      { currentId: NEXT, credentials: NEW, previous: OLD, candidates: [NEXT, PREVIOUS] }
    ],
    [
      'restore: the previous token serves again',
      restoreRecovery,
      NEXT,
      [OLD],
      { currentId: PREVIOUS, credentials: OLD, previous: OLD, candidates: [PREVIOUS, NEXT] }
    ],
    [
      'stuck: the token the inputs name; either token of that rotation may serve',
      stuckRecovery,
      STRANGER,
      [OTHER],
      {
        currentId: STRANGER,
        credentials: OTHER,
        previous: OTHER,
        candidates: [STRANGER, PREVIOUS, NEXT]
      }
    ],
    [
      'delete-unpublished: the token the inputs name',
      deleteRecovery,
      PREVIOUS,
      [OLD],
      { currentId: PREVIOUS, credentials: OLD, previous: OLD, candidates: [PREVIOUS, NEXT] }
    ]
  ])('%s', (_what, recovery, resolvedId, known, expected) => {
    expect(serving(recovery, resolvedId, known)).toEqual(expected)
  })
})

describe('describeRecovery', () => {
  const record = journalRecord('revoking')
  const fwd = (from: ResumeAt): Recovery => ({
    kind: 'forward',
    record,
    next: NEW,
    previousId: PREVIOUS,
    from
  })
  it.each<[string, Recovery, string]>([
    [
      'refuse',
      { kind: 'refuse', record, message: 'Another rotation is in progress.' },
      'Another rotation is in progress.'
    ],
    [
      'delete-unpublished, a token minted',
      { kind: 'delete-unpublished', record, tokenIds: [NEXT, STRANGER] },
      `delete the unpublished token(s) ${NEXT}, ${STRANGER}, then rotate afresh`
    ],
    [
      'delete-unpublished, nothing minted',
      { kind: 'delete-unpublished', record, tokenIds: [] },
      'no token was minted; rotate afresh'
    ],
    [
      'forward from publish',
      fwd('publish'),
      `the secrets hold the new token ${NEXT}: publish it everywhere, deploy, smoke-check, then revoke ${PREVIOUS}`
    ],
    [
      'forward from smoke',
      fwd('smoke'),
      `the new token ${NEXT} was deployed: smoke-check, then revoke ${PREVIOUS}`
    ],
    [
      'forward from watch',
      fwd('watch'),
      `the previous token ${PREVIOUS} is disabled: watch the checks again, then finish its revoke`
    ],
    [
      'forward from finish',
      fwd('finish'),
      `the previous token ${PREVIOUS} is gone: the rotation to ${NEXT} is complete`
    ],
    [
      'restore',
      { kind: 'restore', record, previous: OLD, pendingId: NEXT },
      `the secrets hold the previous token ${PREVIOUS}: restore it everywhere, deploy, smoke-check, delete ${NEXT}, then rotate afresh`
    ],
    [
      'stuck',
      { kind: 'stuck', record, reason: 'the journal names no pending token id' },
      'cannot finish it: the journal names no pending token id'
    ]
  ])('%s', (_what, recovery, expected) => {
    expect(describeRecovery(recovery)).toBe(expected)
  })
})

// =============================================================================== evidence and messages

describe('useEvidence: a hint from last_used_on, never a decision', () => {
  const ISSUED = '2026-03-10T11:00:00Z'
  const next = (
    last_used_on: string | null | undefined,
    issued_on: string | undefined = ISSUED
  ) => ({
    id: NEXT,
    ...(last_used_on !== undefined ? { last_used_on } : {}),
    ...(issued_on !== undefined ? { issued_on } : {})
  })
  const deployed = { deployed: true, probedWithNew: false }

  it.each<[string, ReturnType<typeof next>, boolean, string, string | undefined]>([
    ['not used yet', next(null), false, 'not used yet', undefined],
    ['a last use that does not parse', next('never'), false, 'not used yet', undefined],
    [
      'used after it was minted',
      next('2026-03-10T11:05:30.250Z'),
      false,
      'used after it was minted (2026-03-10T11:05:30Z)',
      '2026-03-10T11:05:30Z'
    ],
    [
      "used after it was minted, the action's own probe counting",
      next('2026-03-10T11:05:30Z'),
      true,
      'used after it was minted (2026-03-10T11:05:30Z); the action’s own verify and R2 probe count too',
      '2026-03-10T11:05:30Z'
    ],
    [
      'used, no issue date',
      next('2026-03-10T11:05:30Z', undefined),
      false,
      'used after it was minted (2026-03-10T11:05:30Z)',
      '2026-03-10T11:05:30Z'
    ],
    [
      'a use before its issue date (clocks apart)',
      next('2026-03-10T10:59:59Z'),
      false,
      'last used 2026-03-10T10:59:59Z',
      '2026-03-10T10:59:59Z'
    ]
  ])('the new token: %s', (_what, token, probedWithNew, verdict, lastUsedOn) => {
    expect(useEvidence(token, undefined, { deployed: true, probedWithNew })).toEqual({
      evidence: [{ tokenId: NEXT, role: 'new', ...(lastUsedOn ? { lastUsedOn } : {}), verdict }]
    })
  })

  const warning = (moment: string, used: string) =>
    `The previous token ${PREVIOUS} was used after ${moment} (last used ${used}): something may still run on it. A hint only (Cloudflare does not document how fresh last_used_on is); the watch after the disable decides.`
  it.each<
    [
      string,
      string | null | undefined,
      string | null | undefined,
      boolean,
      string,
      string | undefined
    ]
  >([
    // what                                     last_used_on now        when in service            deployed
    ['no recorded use', null, null, true, 'no recorded use', undefined],
    [
      'used, not read when the new one went into service',
      '2026-03-10T11:00:00Z',
      undefined,
      true,
      'last used 2026-03-10T11:00:00Z',
      undefined
    ],
    [
      'not used since the deploy concluded',
      '2026-03-10T11:00:00Z',
      '2026-03-10T11:00:00Z',
      true,
      'not used since the deploy concluded (last used 2026-03-10T11:00:00Z)',
      undefined
    ],
    [
      'used after the deploy concluded',
      '2026-03-10T11:10:00Z',
      '2026-03-10T11:00:00Z',
      true,
      'used after the deploy concluded (last used 2026-03-10T11:10:00Z, 2026-03-10T11:00:00Z then)',
      warning('the deploy concluded', '2026-03-10T11:10:00Z')
    ],
    [
      'used after the publish (no deploy step)',
      '2026-03-10T11:10:00Z',
      '2026-03-10T11:00:00Z',
      false,
      'used after the publish (last used 2026-03-10T11:10:00Z, 2026-03-10T11:00:00Z then)',
      warning('the publish', '2026-03-10T11:10:00Z')
    ],
    [
      'never used then, used since',
      '2026-03-10T11:10:00Z',
      null,
      true,
      'used after the deploy concluded (last used 2026-03-10T11:10:00Z)',
      warning('the deploy concluded', '2026-03-10T11:10:00Z')
    ]
  ])(
    'the previous token: %s',
    (_what, lastUsed, atService, wasDeployed, verdict, expectedWarning) => {
      const token = { id: PREVIOUS, ...(lastUsed !== undefined ? { last_used_on: lastUsed } : {}) }
      const facts = {
        deployed: wasDeployed,
        probedWithNew: false,
        ...(atService !== undefined ? { previousUseAtService: atService } : {})
      }
      expect(useEvidence(undefined, token, facts)).toEqual({
        evidence: [
          {
            tokenId: PREVIOUS,
            role: 'previous',
            ...(lastUsed ? { lastUsedOn: lastUsed } : {}),
            verdict
          }
        ],
        ...(expectedWarning ? { warning: expectedWarning } : {})
      })
    }
  )

  it('both tokens, new first; neither token: no evidence', () => {
    expect(useEvidence(next(null), { id: PREVIOUS, last_used_on: null }, deployed)).toEqual({
      evidence: [
        { tokenId: NEXT, role: 'new', verdict: 'not used yet' },
        { tokenId: PREVIOUS, role: 'previous', verdict: 'no recorded use' }
      ]
    })
    expect(useEvidence(undefined, undefined, deployed)).toEqual({ evidence: [] })
  })
})

describe('pendingMessage: both tokens kept, and how to finish', () => {
  it.each<[string, { failedPhase?: string; journal?: string }, string, string]>([
    [
      'with the phase and the journal',
      { failedPhase: 'deploy', journal: 'R2_ROTATION_STATE' },
      ' (phase deploy)',
      ' (R2_ROTATION_STATE, phase pending)'
    ],
    ['without either', {}, '', '']
  ])('%s', (_what, extra, phase, journal) => {
    expect(
      pendingMessage({
        why: 'on-failure is keep-both',
        nextId: NEXT,
        previousId: PREVIOUS,
        writtenWithNext: 3,
        ...extra
      })
    ).toBe(
      `State: both tokens are valid and neither was revoked (on-failure is keep-both). The new token ${NEXT} was written to 3 secret(s); the previous token ${PREVIOUS} may still be in the others and in the deployed app. Fix the cause${phase} and run the rotation again: with current-token (or current-access-key-id and current-secret-access-key) read from the secrets as they are now, it finishes or undoes this rotation from the journal${journal}. By hand: put one token's values into every secret, deploy, then delete the other token.`
    )
  })
})

describe('watchFailureMessage: a check failed while the previous token was disabled', () => {
  it.each<[string, number, string | undefined, string, string]>([
    ['the checks pass again after the re-enable', 4200, undefined, '5', 'the checks pass again'],
    [
      'the checks still fail',
      1000,
      'https://app.example/r2 (503)',
      '1',
      'the checks still fail (https://app.example/r2 (503))'
    ]
  ])('%s', (_what, windowMs, stillFailing, seconds, after) => {
    expect(
      watchFailureMessage(PREVIOUS, 'https://app.example/r2 (403)', windowMs, stillFailing)
    ).toBe(
      `A check failed while the previous token ${PREVIOUS} was disabled: https://app.example/r2 (403). Something still runs on it, so it was enabled again at once (the app failed for at most ${seconds} s, from the disable to the re-enable); ${after}. Find the consumer that did not take the new secrets (an environment secret, a cached build, a target missing from secret-targets); contains={access-key-id} in smoke-urls catches a stale deploy before anything is disabled.`
    )
  })
})

// =============================================================================== small facts

describe('isSettled and isPublished: what each journal phase means', () => {
  // Settled: nothing left to finish. Published: the new token may be in a secret.
  // prettier-ignore
  const PHASES: Array<[JournalPhase, boolean, boolean]> = [
    // phase         settled published
    ['minting',      false,  false],
    ['minted',       false,  false],
    ['publishing',   false,  true],
    ['published',    false,  true],
    ['deploying',    false,  true],
    ['smoke',        false,  true],
    ['revoking',     false,  true],
    ['rolling-back', false,  true],
    ['pending',      false,  true],
    ['done',         true,   false],
    ['rolled-back',  true,   false],
    // a service token rotation's own phases
    ['rotating',     false,  false],
    ['closing',      false,  true]
  ]

  it('the table holds every journal phase', () => {
    expect(PHASES.map(([phase]) => phase)).toEqual([...JOURNAL_PHASES])
  })

  it.each(PHASES)('%s: settled %s, published %s', (phase, settled, published) => {
    expect(isSettled(phase)).toBe(settled)
    expect(isPublished(phase)).toBe(published)
  })
})

describe('fieldValue, missingFields and credentialsOf', () => {
  it.each<[SecretField, Credentials, string | undefined]>([
    ['token', NEW, 'cfut_new'],
    ['access-key-id', NEW, NEXT],
    ['secret-access-key', NEW, 'c'.repeat(64)],
    ['token', { id: NEXT }, undefined],
    ['access-key-id', { id: NEXT }, NEXT],
    ['secret-access-key', { id: NEXT }, undefined]
  ])('fieldValue %s of %j', (field, credentials, value) => {
    expect(fieldValue(field, credentials)).toBe(value)
  })

  it.each<[string, Credentials, SecretField[], SecretField[]]>([
    ['everything known', NEW, ALL_FIELDS, []],
    [
      'the id alone: the id is always known',
      { id: NEXT },
      ALL_FIELDS,
      ['token', 'secret-access-key']
    ],
    [
      'the S3 pair, asked for the S3 pair',
      { id: NEXT, secretAccessKey: 'c'.repeat(64) },
      S3_FIELDS,
      []
    ],
    [
      'each missing field once',
      { id: NEXT },
      ['token', 'token', 'secret-access-key'],
      ['token', 'secret-access-key']
    ],
    ['nothing asked', { id: NEXT }, [], []]
  ])('missingFields: %s', (_what, credentials, fields, missing) => {
    expect(missingFields(credentials, fields)).toEqual(missing)
  })

  it.each<[string, Credentials[], Credentials]>([
    ['nothing known: the id alone', [], { id: NEXT }],
    ['one input', [NEW], NEW],
    [
      'several inputs about one token, merged',
      [
        { id: NEXT, value: 'cfut_new' },
        { id: NEXT, secretAccessKey: 'c'.repeat(64) }
      ],
      NEW
    ],
    [
      'the first value wins',
      [
        { id: NEXT, value: 'cfut_new' },
        { id: NEXT, value: 'cfut_later' }
      ],
      { id: NEXT, value: 'cfut_new' }
    ],
    ['other tokens are ignored', [OLD, OTHER], { id: NEXT }]
  ])('credentialsOf: %s', (_what, known, expected) => {
    expect(credentialsOf(NEXT, known)).toEqual(expected)
  })
})

describe('isoSeconds: Cloudflare stores times to the second', () => {
  it.each([
    ['2026-03-10T12:00:00.000Z', '2026-03-10T12:00:00Z'],
    ['2026-03-10T12:00:00.999Z', '2026-03-10T12:00:00Z']
  ])('%s → %s', (iso, expected) => {
    expect(isoSeconds(new Date(iso))).toBe(expected)
  })
})

// ------------------------------------------------------------------ the management token itself

describe('mayDelete: the management token rotating itself', () => {
  const previous = (changes: object = {}): DeleteRequest => ({
    kind: 'management-previous',
    tokenId: PREVIOUS,
    nextId: NEXT,
    nextVerified: true,
    confirmedEverywhere: true,
    ...changes
  })
  const pending = (changes: object = {}): DeleteRequest => ({
    kind: 'management-pending',
    tokenId: NEXT,
    previousId: PREVIOUS,
    servingId: PREVIOUS,
    restoredEverywhere: true,
    ...changes
  })
  it.each<[string, DeleteRequest, boolean]>([
    ['the previous token, successor verified and read back everywhere', previous(), true],
    ['the successor itself', previous({ tokenId: NEXT }), false],
    ['the successor not verified', previous({ nextVerified: false }), false],
    ['a target not read back with the successor', previous({ confirmedEverywhere: false }), false],
    ['the successor, previous restored everywhere', pending(), true],
    ['the restored token itself', pending({ tokenId: PREVIOUS }), false],
    ['the token the run authenticates with', pending({ servingId: NEXT }), false],
    ['a target not restored', pending({ restoredEverywhere: false }), false]
  ])('%s → %s', (_, request, ok) => {
    expect(mayDelete(request).ok).toBe(ok)
  })
})

describe('decideManagementRecovery: the journal phase × the token cloudflare-api-token holds', () => {
  const owner = [
    { id: PREVIOUS, name: 'manager', status: 'active' as const },
    { id: NEXT, name: PENDING_NAME, status: 'active' as const }
  ]
  const decide = (
    phase: JournalPhase,
    managementId: string,
    run: JournalRunState = 'completed',
    changes: Partial<JournalRecord> = {}
  ): ManagementRecovery['kind'] | string => {
    const r = decideManagementRecovery({
      record: journalRecord(phase, { kind: 'management-token', ...changes }),
      journalRun: run,
      managementId,
      ownerTokens: owner
    })
    return r.kind === 'forward' ? `forward${r.republish ? '+publish' : ''}` : r.kind
  }
  it.each<[JournalPhase, string, string]>([
    ['minting', PREVIOUS, 'delete-unpublished'],
    ['minted', PREVIOUS, 'delete-unpublished'],
    ['publishing', PREVIOUS, 'restore'],
    ['publishing', NEXT, 'forward+publish'],
    ['pending', PREVIOUS, 'restore'],
    ['pending', NEXT, 'forward+publish'],
    ['rolling-back', PREVIOUS, 'restore'],
    ['rolling-back', NEXT, 'forward+publish'],
    ['published', NEXT, 'forward'],
    ['revoking', NEXT, 'forward'],
    // Every target was read back with the successor: the previous value comes from elsewhere.
    ['published', PREVIOUS, 'stuck'],
    ['revoking', PREVIOUS, 'stuck'],
    ['publishing', 'c'.repeat(32), 'stuck']
  ])('%s, cloudflare-api-token = %s → %s', (phase, id, expected) => {
    expect(decide(phase, id)).toBe(expected)
  })

  it('refuses while the journal run goes on', () => {
    expect(decide('publishing', NEXT, 'running')).toBe('refuse')
  })

  it('never names the token the run holds as an orphan', () => {
    const r = decideManagementRecovery({
      record: journalRecord('minted', { kind: 'management-token' }),
      journalRun: 'gone',
      managementId: PREVIOUS,
      ownerTokens: owner
    })
    expect(r).toMatchObject({ kind: 'delete-unpublished', tokenIds: [NEXT] })
  })

  it('is stuck when the journal names no pending token after publish began', () => {
    expect(decide('publishing', PREVIOUS, 'gone', { pending_token_id: undefined })).toBe('stuck')
  })
})

describe('decideManagementEnd: revoke-grace × the previous token', () => {
  const now = new Date('2026-03-10T12:00:00Z')
  it.each<[string, number, Pick<ApiToken, 'expires_on' | 'status'> | undefined, ManagementEnd]>([
    ['no grace', 0, { status: 'active' }, { kind: 'delete' }],
    [
      'no grace, an expiry already set',
      0,
      { status: 'active', expires_on: '2026-03-10T12:30:00Z' },
      { kind: 'delete' }
    ],
    [
      'a grace',
      3_600_000,
      { status: 'active' },
      { kind: 'expire', expiresOn: '2026-03-10T13:00:00Z' }
    ],
    [
      'a later expiry is brought forward',
      3_600_000,
      { status: 'active', expires_on: '2027-01-01T00:00:00Z' },
      { kind: 'expire', expiresOn: '2026-03-10T13:00:00Z' }
    ],
    [
      'an earlier expiry is kept',
      3_600_000,
      { status: 'active', expires_on: '2026-03-10T12:30:00Z' },
      { kind: 'ending', expiresOn: '2026-03-10T12:30:00Z' }
    ],
    ['gone', 3_600_000, undefined, { kind: 'gone' }],
    ['gone, no grace', 0, undefined, { kind: 'gone' }]
  ])('%s', (_, grace, previous, expected) => {
    expect(decideManagementEnd(grace, previous, now)).toEqual(expected)
  })
})

describe('managementRefusals', () => {
  const now = new Date('2026-03-10T12:00:00Z')
  type Facts = Parameters<typeof managementRefusals>[0]
  const base: Facts = {
    token: { id: PREVIOUS, status: 'active' },
    owner: { kind: 'user' },
    ownerTokens: [{ id: PREVIOUS }],
    deletingFirst: [],
    quota: 50,
    now
  }
  it.each<[string, Partial<Facts>, RegExp | undefined]>([
    ['an active token with a free slot', {}, undefined],
    ['a disabled token', { token: { id: PREVIOUS, status: 'disabled' } }, /is disabled/],
    [
      'an expired token',
      { token: { id: PREVIOUS, status: 'active', expires_on: '2026-03-01T00:00:00Z' } },
      /expired on/
    ],
    ['no free slot', { quota: 1 }, /needs a free slot/],
    [
      'a slot freed by an orphan first',
      { quota: 2, ownerTokens: [{ id: PREVIOUS }, { id: NEXT }], deletingFirst: [NEXT] },
      undefined
    ]
  ])('%s', (_, changes, expected) => {
    const out = managementRefusals({ ...base, ...changes } as Parameters<
      typeof managementRefusals
    >[0])
    if (expected) expect(out.join(' ')).toMatch(expected)
    else expect(out).toEqual([])
  })
})

describe("workerRefusal: may a Worker's secrets be written now?", () => {
  const live = (versions: Array<[string, number]>) => ({
    id: 'dep-1',
    createdOn: '2026-01-01T00:00:00Z',
    versions: versions.map(([versionId, percentage]) => ({ versionId, percentage }))
  })

  it('accepts one version serving all traffic', () => {
    expect(workerRefusal('api', live([['v2', 100]]))).toBeUndefined()
  })

  it.each([
    [
      'a gradual rollout',
      [
        ['v3', 10],
        ['v2', 90]
      ]
    ],
    ['one version below 100%', [['v2', 50]]]
  ] as const)('refuses %s, naming the Worker, the split and what to do', (_, versions) => {
    const message = workerRefusal('api', live(versions.map(v => [...v])))!
    expect(message).toContain('Worker api is in a gradual rollout (deployment dep-1: ')
    expect(message).toContain(`${versions[0]![0]} at ${versions[0]![1]}%`)
    expect(message).toContain('code 10215')
    expect(message).toContain('wrangler versions deploy <version>@100%')
    expect(message).toContain('Nothing was minted or changed.')
  })

  it('refuses a Worker with no deployment', () => {
    expect(workerRefusal('api', undefined)).toContain('Worker api has no deployment')
    expect(workerRefusal('api', live([]))).toContain('Worker api has no deployment')
  })
})

describe('restoreTargets: what a restore of the previous values writes', () => {
  const repo: SecretTarget = { kind: 'repo', owner: 'o', repo: 'r', line: 'repo' }
  const w1: SecretTarget = { kind: 'worker', accountId: 'a', script: 'w1', line: 'worker:w1' }
  const w2: SecretTarget = { kind: 'worker', accountId: 'a', script: 'w2', line: 'worker:w2' }
  const targets = [repo, w1, w2]

  it('skips a Worker this run never gave the new values (refused, or not reached)', () => {
    expect(
      restoreTargets(targets, { knowsWrites: true, workersMaybeNew: new Set(['worker:w1']) })
    ).toEqual([repo, w1])
    expect(restoreTargets(targets, { knowsWrites: true, workersMaybeNew: new Set() })).toEqual([
      repo
    ])
  })

  it('writes every target after a crash, when nothing is known of the writes', () => {
    expect(restoreTargets(targets, { knowsWrites: false, workersMaybeNew: new Set() })).toEqual(
      targets
    )
  })
})

describe('workerRollbackNote: the summary caution about rolling a Worker back', () => {
  const at = '2026-02-01T10:00:00Z'

  it('after a rotation: older versions hold the revoked previous token', () => {
    const note = workerRollbackNote({
      scripts: ['api', 'web'],
      goneId: 'old',
      gone: 'deleted',
      at
    })!
    expect(note).toContain('Worker api, Worker web: every version made before 2026-02-01T10:00:00Z')
    expect(note).toContain('holds the previous token old, now deleted')
    expect(note).toContain('brings back a revoked credential')
  })

  it('after a rollback: the version made with the new token holds a deleted token', () => {
    const note = workerRollbackNote({ scripts: ['api'], goneId: 'new', gone: 'rolled-back', at })!
    expect(note).toContain('holds the new token new, deleted by the rollback')
  })

  it('says nothing without a Worker', () => {
    expect(workerRollbackNote({ scripts: [], goneId: 'x', gone: 'disabled', at })).toBeUndefined()
  })
})
