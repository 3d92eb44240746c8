import { baseTokenName, expandTokenName, TOKEN_NAME_MAX_LENGTH } from '../src/token-name.js'

const NOW = new Date('2026-03-04T23:59:59.999Z')
const vars = (oldName: string, extra: Partial<Parameters<typeof expandTokenName>[1]> = {}) => ({
  oldName,
  now: NOW,
  runId: '987654321',
  repository: 'octo/app',
  ...extra
})

describe('baseTokenName', () => {
  it.each([
    ['Avatars', 'Avatars'],
    ['Avatars (rotated 2026-01-01)', 'Avatars'],
    ['Avatars (rotated 2026-01-01) (rotated 2026-02-01)', 'Avatars'],
    ['Avatars (rotated 2026-01-01)(rotated 2026-02-01)  ', 'Avatars'],
    ['Avatars (Rotated by octo/app #12)', 'Avatars'],
    ['Avatars (rotated)', 'Avatars'],
    ['  Avatars (prod)  ', 'Avatars (prod)'],
    ['Avatars (rotated 2026-01-01) prod', 'Avatars (rotated 2026-01-01) prod'],
    ['Avatars (rotatedx)', 'Avatars (rotatedx)'],
    ['(rotated 2026-01-01)', '']
  ])('%j -> %j', (name, base) => {
    expect(baseTokenName(name)).toBe(base)
  })
})

describe('expandTokenName', () => {
  it('does not pile up suffixes over repeated rotations', () => {
    expect(
      expandTokenName(
        '{name} (rotated {date})',
        vars('Avatars (rotated 2026-01-01) (rotated 2026-02-01)')
      )
    ).toBe('Avatars (rotated 2026-03-04)')
    let name = 'Avatars'
    for (const day of ['2026-01-01', '2026-02-01', '2026-03-01']) {
      name = expandTokenName(
        '{name} (rotated {date})',
        vars(name, { now: new Date(`${day}T12:00:00Z`) })
      )
    }
    expect(name).toBe('Avatars (rotated 2026-03-01)')
  })

  it.each([
    ['{name} #{run_id}', 'Avatars #123 #456', 'Avatars #987654321'],
    ['{name} [{date}]', 'Avatars [2026-01-01] [2026-02-01]', 'Avatars [2026-03-04]'],
    ['{date} {name}', '2026-01-01 2026-02-01 Avatars', '2026-03-04 Avatars'],
    ['{name}-{repository}', 'Avatars-octo/app-octo/app', 'Avatars-octo/app'],
    ['rotated: {name}', 'rotated:  rotated: Avatars', 'rotated: Avatars'],
    [
      '{name} (rotated {date} by {repository} #{run_id})',
      'Avatars (rotated 2026-01-01 by o/r #1)',
      'Avatars (rotated 2026-03-04 by octo/app #987654321)'
    ]
  ])('a custom template %j does not pile up either: %j', (template, oldName, expected) => {
    expect(expandTokenName(template, vars(oldName))).toBe(expected)
    expect(expandTokenName(template, vars(expected))).toBe(expected)
  })

  it('takes digits alone for no sign of an earlier rotation: a name keeps its own digits', () => {
    expect(expandTokenName('{name} {run_id}', vars('uploader v2'))).toBe('uploader v2 987654321')
    expect(expandTokenName('{name}{run_id}', vars('app2'))).toBe('app2987654321')
  })

  it('uses the UTC date', () => {
    expect(
      expandTokenName('{date}', vars('x', { now: new Date('2026-03-05T01:00:00+02:00') }))
    ).toBe('2026-03-04')
  })

  it('expands every placeholder, each as often as it occurs, and leaves other text alone', () => {
    expect(
      expandTokenName('{name}/{repository}#{run_id} {date} {name} {x}', vars('R2 (rotated y)'))
    ).toBe('R2/octo/app#987654321 2026-03-04 R2 {x}')
  })

  it('trims the result', () => {
    expect(expandTokenName('  {name} {run_id} ', vars('Avatars', { runId: '' }))).toBe('Avatars')
  })

  it('shortens the old name so that the suffix survives the length limit', () => {
    const long = 'N'.repeat(150)
    const name = expandTokenName('{name} (rotated {date})', vars(long))
    expect(name).toHaveLength(TOKEN_NAME_MAX_LENGTH)
    expect(name).toBe(`${'N'.repeat(120 - ' (rotated 2026-03-04)'.length)} (rotated 2026-03-04)`)
    // ... and the next rotation still finds the base name.
    expect(expandTokenName('{name} (rotated {date})', vars(name))).toBe(name)
  })

  it('shares the room among several {name}s and cuts the whole when the rest is too long', () => {
    const two = expandTokenName('{name}-{name}-{date}', vars('a'.repeat(100)))
    expect(two).toBe(`${'a'.repeat(54)}-${'a'.repeat(54)}-2026-03-04`)
    const fixed = expandTokenName(`${'x'.repeat(119)} {date}`, vars('n'))
    expect(fixed).toBe('x'.repeat(119))
  })

  it('cuts by code points and never splits a surrogate pair', () => {
    const name = expandTokenName('{name}', vars('🔑'.repeat(130)))
    expect(Array.from(name)).toHaveLength(TOKEN_NAME_MAX_LENGTH)
    expect(name).toBe('🔑'.repeat(120))
  })

  it('refuses to produce an empty name', () => {
    expect(() =>
      expandTokenName('{name}{run_id}', vars('(rotated 2026-01-01)', { runId: '' }))
    ).toThrow(/token-name '\{name\}\{run_id\}' expanded to nothing.*add text or \{date\}/)
  })
})

describe('the unique tag of a name that was taken', () => {
  const now = new Date('2026-12-04T10:00:00Z')
  const vars = (oldName: string) => ({ oldName, now, runId: '99', repository: 'acme/site' })

  it('is stripped after an earlier expansion, so that suffixes do not pile up', () => {
    expect(expandTokenName('{name} (rotated {date})', vars('app (rotated 2026-11-01) #123'))).toBe(
      'app (rotated 2026-12-04)'
    )
    expect(expandTokenName('{name}-{date}', vars('app-2026-11-01 #123-2'))).toBe('app-2026-12-04')
  })

  it("is kept when it is the name's own", () => {
    expect(expandTokenName('{name} (rotated {date})', vars('uploader #2'))).toBe(
      'uploader #2 (rotated 2026-12-04)'
    )
  })
})
