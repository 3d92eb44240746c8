/**
 * The decisions of an Access service token rotation (decide.ts) as tables: the grace, due or
 * not, the refusals and warnings of preflight, what a failure leaves, and what the next run does
 * with an unfinished journal.
 */
import {
  afterServiceTokenFailure,
  describeServiceTokenRecovery,
  graceAfterFailure,
  serviceTokenDue,
  serviceTokenGraceMs,
  serviceTokenRecovery,
  serviceTokenRefusal,
  serviceTokenWarnings,
  type ServiceTokenAfterFailure,
  type ServiceTokenFailureFacts,
  type ServiceTokenRecovery,
  type ServiceTokenRecoveryFacts
} from '../src/decide.js'
import type { JournalPhase, SecretsHold } from '../src/model.js'

const MIN = 60_000
const DAY = 24 * 60 * MIN
const NOW = new Date('2026-07-01T12:00:00Z')
const at = (ms: number): Date => new Date(NOW.getTime() + ms)
const iso = (ms: number): string => at(ms).toISOString()

describe('serviceTokenGraceMs: 2 × deploy-timeout + 3 × smoke-timeout + revoke-grace + revoke-watch + 10 min', () => {
  const smoke = (
    timeoutMs: number
  ): { checks: []; headers: Record<string, string>; timeoutMs: number } => ({
    checks: [],
    headers: {},
    timeoutMs
  })
  const deploy = (timeoutMs: number) => ({
    workflow: 'deploy.yml',
    repository: { owner: 'o', repo: 'r' },
    inputs: {},
    timeoutMs
  })
  it.each([
    ['the defaults (30m, 5m, 0s, 2m)', 30, 5, 0, 2, 60 + 15 + 0 + 2 + 10],
    ['no deploy (deploy-workflow: none)', undefined, 5, 0, 2, 15 + 2 + 10],
    ['a revoke-grace', 30, 5, 60, 2, 60 + 15 + 60 + 2 + 10],
    ['no watch', 10, 1, 0, 0, 20 + 3 + 10]
  ])('%s', (_name, deployMin, smokeMin, graceMin, watchMin, expectedMin) => {
    expect(
      serviceTokenGraceMs({
        ...(deployMin !== undefined ? { deploy: deploy(deployMin * MIN) } : {}),
        smoke: smoke(smokeMin * MIN),
        revokeGraceMs: graceMin * MIN,
        revokeWatchMs: watchMin * MIN
      })
    ).toBe(expectedMin * MIN)
  })
})

describe('serviceTokenDue: rotate-after from the last rotation, else updated_at, else created_at', () => {
  const day30 = 30 * DAY
  it.each([
    ['force', { force: true, rotateAfterMs: day30 }, {}, undefined, true],
    ['no rotate-after', { force: false, rotateAfterMs: 0 }, {}, undefined, true],
    [
      'expires within 7 days',
      { force: false, rotateAfterMs: day30 },
      { expiresAt: iso(3 * DAY), updatedAt: iso(-DAY) },
      undefined,
      true
    ],
    [
      'the journal says rotated 40 days ago (updated_at is newer: an edit)',
      { force: false, rotateAfterMs: day30 },
      { updatedAt: iso(-DAY) },
      iso(-40 * DAY),
      true
    ],
    [
      'the journal says rotated 10 days ago',
      { force: false, rotateAfterMs: day30 },
      { updatedAt: iso(-40 * DAY) },
      iso(-10 * DAY),
      false
    ],
    [
      'no journal: updated_at 40 days ago',
      { force: false, rotateAfterMs: day30 },
      { updatedAt: iso(-40 * DAY), createdAt: iso(-400 * DAY) },
      undefined,
      true
    ],
    [
      'no journal, no updated_at: created_at 10 days ago',
      { force: false, rotateAfterMs: day30 },
      { createdAt: iso(-10 * DAY) },
      undefined,
      false
    ],
    ['nothing known', { force: false, rotateAfterMs: day30 }, {}, undefined, true]
  ])('%s → due %s', (_name, settings, token, last, due) => {
    expect(serviceTokenDue(settings, token, last, NOW).due).toBe(due)
  })

  it('says when it will be due', () => {
    const result = serviceTokenDue(
      { force: false, rotateAfterMs: 30 * DAY },
      { updatedAt: iso(-10 * DAY) },
      undefined,
      NOW
    )
    expect(result).toEqual({ due: false, dueAt: at(20 * DAY) })
  })
})

describe('serviceTokenRefusal and serviceTokenWarnings: what fits a service token', () => {
  it.each([
    ['enabled, no expiry', { id: 't', enabled: true }, undefined],
    ['enabled, expires later', { id: 't', enabled: true, expiresAt: iso(DAY) }, undefined],
    ['disabled', { id: 't', enabled: false }, 'is disabled'],
    ['expired', { id: 't', enabled: true, expiresAt: iso(-1000) }, 'expired on']
  ])('%s', (_name, token, refusal) => {
    const answer = serviceTokenRefusal(token, NOW)
    if (refusal === undefined) expect(answer).toBeUndefined()
    else expect(answer).toContain(refusal)
  })

  it.each([
    ['8760h, a year left, rotated monthly', '8760h', iso(300 * DAY), 30 * DAY, []],
    ['forever', 'forever', undefined, 30 * DAY, ['duration: forever']],
    ['expires within 30 days', '8760h', iso(20 * DAY), 7 * DAY, ['within 30 days', '/refresh']],
    [
      'expires before the next rotation is due',
      '8760h',
      iso(60 * DAY),
      90 * DAY,
      ['before the next rotation is due', 'longer duration']
    ]
  ])('%s', (_name, duration, expiresAt, rotateAfterMs, texts) => {
    const warnings = serviceTokenWarnings(
      { rotateAfterMs },
      { id: 't', duration, ...(expiresAt ? { expiresAt } : {}) },
      NOW
    )
    expect(warnings).toHaveLength(texts.length === 0 ? 0 : 1)
    for (const text of texts) expect(warnings[0]).toContain(text)
  })
})

describe('graceAfterFailure: extend only when less than half of the grace is left', () => {
  it.each([
    ['all of it left', 60 * MIN, false, 60 * MIN],
    ['just over half left', 31 * MIN, false, 31 * MIN],
    ['less than half left', 29 * MIN, true, 60 * MIN],
    ['already over', -5 * MIN, true, 60 * MIN]
  ])('%s', (_name, leftMs, extend, endMs) => {
    expect(graceAfterFailure(at(leftMs), NOW, 60 * MIN)).toEqual({
      graceUntil: at(endMs),
      extend
    })
  })
})

describe('afterServiceTokenFailure: what a failure leaves', () => {
  const base: ServiceTokenFailureFacts = {
    settings: { onFailure: 'rollback' },
    rotated: true,
    secretKnown: true,
    graceClosed: false,
    previousKnown: true,
    written: 2,
    total: 2,
    graceUntil: at(60 * MIN),
    now: NOW,
    graceMs: 60 * MIN
  }
  const grace = { graceUntil: at(60 * MIN), extend: false }
  // prettier-ignore
  const ROWS: Array<[string, Partial<ServiceTokenFailureFacts>, ServiceTokenAfterFailure['kind'], SecretsHold | undefined]> = [
    ['before the rotate',                                  { rotated: false },                            'nothing', undefined],
    ['after the close (watch failed, re-open failed)',     { graceClosed: true },                         'closed', undefined],
    ['deploy failed, previous secret known',               {},                                            'rollback', undefined],
    ['deploy failed, on-failure: keep-both',               { settings: { onFailure: 'keep-both' } },      'keep-both', 'next'],
    ['deploy failed, no current-client-secret',            { previousKnown: false },                      'keep-both', 'next'],
    ['publish failed half-way, previous known',            { written: 1 },                                'rollback', undefined],
    ['publish failed half-way, no previous secret',        { written: 1, previousKnown: false },          'keep-both', 'mixed'],
    ['publish failed before the first write',              { written: 0 },                                'keep-both', 'previous'],
    ['the rotate answer was lost',                         { secretKnown: false, written: 0 },            'keep-both', 'previous']
  ]
  it.each(ROWS)('%s → %s', (_name, facts, kind, hold) => {
    const answer = afterServiceTokenFailure({ ...base, ...facts })
    expect(answer.kind).toBe(kind)
    if (answer.kind === 'keep-both') expect(answer.hold).toBe(hold)
    if (answer.kind === 'rollback' || answer.kind === 'keep-both') {
      expect({ graceUntil: answer.graceUntil, extend: answer.extend }).toEqual(grace)
    }
  })

  it('extends a short grace', () => {
    const answer = afterServiceTokenFailure({ ...base, graceUntil: at(5 * MIN) })
    expect(answer).toEqual({ kind: 'rollback', graceUntil: at(60 * MIN), extend: true })
  })
})

describe('serviceTokenRecovery: every unfinished phase × what the token and the secrets show', () => {
  const facts = (
    phase: JournalPhase,
    more: Partial<ServiceTokenRecoveryFacts['record']> = {},
    rest: Partial<Omit<ServiceTokenRecoveryFacts, 'record'>> = {}
  ): ServiceTokenRecoveryFacts => ({
    record: {
      phase,
      run_id: '41',
      token_updated_before: iso(-DAY),
      grace_until: iso(30 * MIN),
      ...more
    },
    tokenUpdatedAt: iso(-DAY),
    written: 0,
    total: 2,
    force: false,
    secretKnown: true,
    now: NOW,
    ...rest
  })
  const moved = { tokenUpdatedAt: iso(-MIN) }
  // prettier-ignore
  const ROWS: Array<[string, ServiceTokenRecoveryFacts, ServiceTokenRecovery['kind'], string | undefined]> = [
    ['rotating, updated_at unchanged: nothing happened',  facts('rotating'),                                           'fresh', undefined],
    ['rotating, rotated, no target written: lost',        facts('rotating', {}, moved),                                'refuse', 'lost'],
    ['… the same with force',                             facts('rotating', {}, { ...moved, force: true }),            'rerotate', undefined],
    ['rotating, rotated, one of two written: lost',       facts('rotating', {}, { ...moved, written: 1 }),             'refuse', '1 of 2 written'],
    ['rotating, rotated, every target written',           facts('rotating', {}, { ...moved, written: 2 }),             'forward', undefined],
    ['published',                                         facts('published'),                                          'forward', undefined],
    ['deploying',                                         facts('deploying'),                                          'forward', undefined],
    ['smoke',                                             facts('smoke'),                                              'forward', undefined],
    ['closing',                                           facts('closing'),                                            'forward', undefined],
    ['pending, secrets hold next (keep-both)',            facts('pending', { secrets_hold: 'next' }),                  'forward', undefined],
    ['pending, secrets hold previous (rolled back)',      facts('pending', { secrets_hold: 'previous' }),              'refuse', 'rolled back'],
    ['… the same with force',                             facts('pending', { secrets_hold: 'previous' }, { force: true }), 'rerotate', undefined],
    ['pending, a mix',                                    facts('pending', { secrets_hold: 'mixed' }),                 'refuse', 'mix'],
    ['pending, the secret was lost',                      facts('pending', { secrets_hold: 'previous', lost_secret: true }), 'refuse', 'lost'],
    ['rolling-back: finish the rollback',  facts('rolling-back'), 'restore', 'finish the rollback'],
    ['rolling-back, no current-client-secret', facts('rolling-back', {}, { secretKnown: false }), 'refuse', 'writing the previous client secret back'],
    ['rolling-back with force',            facts('rolling-back', {}, { force: true }), 'rerotate', undefined],
    ['done (settled)',                                    facts('done'),                                               'fresh', undefined]
  ]
  it.each(ROWS)('%s → %s', (_name, input, kind, text) => {
    const answer = serviceTokenRecovery(input)
    expect(answer.kind).toBe(kind)
    if (text) expect(describeServiceTokenRecovery(answer)).toContain(text)
    if (answer.kind === 'refuse') {
      expect(answer.message).toContain(iso(30 * MIN).replace('.000Z', ''))
      expect(answer.message).toContain('force: true')
    }
  })

  it('forward from closing only closes and watches', () => {
    expect(serviceTokenRecovery(facts('closing'))).toMatchObject({ from: 'close' })
    expect(serviceTokenRecovery(facts('smoke'))).toMatchObject({ from: 'deploy' })
  })

  it('a refusal after the grace ended says its clients are refused already', () => {
    const answer = serviceTokenRecovery(
      facts('pending', { secrets_hold: 'previous', grace_until: iso(-MIN) })
    )
    expect(answer.kind === 'refuse' && answer.message).toContain('are refused already')
  })
})
