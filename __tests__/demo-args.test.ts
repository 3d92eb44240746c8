/**
 * `npm run demo`'s command line: the scenario to run (default `r2-token`), where the summary goes,
 * the time scale, and exit code 2 with the list of scenarios for anything it does not know.
 */
import path from 'node:path'
import {
  DEFAULT_SUMMARY,
  parseDemoArgs,
  scenarioList,
  summaryFileOf,
  type DemoArgs
} from '../sandbox/demo-run.js'
import { DEFAULT_SCENARIO, DEMO_SCENARIOS, healthHistory } from '../sandbox/demo-scenarios.js'

function options(args: DemoArgs): { scenario: string; summary: string; timeScale: number } {
  if (args.kind !== 'run') throw new Error(`expected a run, got exit ${args.code}: ${args.text}`)
  return { ...args.options, scenario: args.options.scenario.name }
}

function exit(args: DemoArgs): { code: number; text: string } {
  if (args.kind !== 'exit') throw new Error(`expected an exit, got ${args.options.scenario.name}`)
  return args
}

describe('parseDemoArgs', () => {
  it('runs r2-token in real time with the usual summary file when given nothing', () => {
    expect(DEFAULT_SCENARIO).toBe('r2-token')
    expect(options(parseDemoArgs([]))).toEqual({
      scenario: 'r2-token',
      summary: DEFAULT_SUMMARY,
      timeScale: 1
    })
    expect(DEFAULT_SUMMARY).toBe('.tmp/demo/job-summary.md')
  })

  it.each(DEMO_SCENARIOS.map(s => s.name))('takes --scenario %s, in both spellings', name => {
    expect(options(parseDemoArgs(['--scenario', name])).scenario).toBe(name)
    expect(options(parseDemoArgs([`--scenario=${name}`])).scenario).toBe(name)
  })

  it('lists at least the three kinds, each once', () => {
    const names = DEMO_SCENARIOS.map(s => s.name)
    expect(names).toEqual(expect.arrayContaining(['r2-token', 'worker', 'management-token']))
    expect(new Set(names).size).toBe(names.length)
    for (const s of DEMO_SCENARIOS) expect(s.description).not.toBe('')
  })

  it('takes --summary and --time-scale', () => {
    expect(
      options(
        parseDemoArgs(['--scenario', 'worker', '--summary', 'x/s.md', '--time-scale', '0.02'])
      )
    ).toEqual({ scenario: 'worker', summary: 'x/s.md', timeScale: 0.02 })
  })

  it('exits 2 on an unknown scenario, naming it and listing every scenario', () => {
    const result = exit(parseDemoArgs(['--scenario', 'service-tokn']))
    expect(result.code).toBe(2)
    expect(result.text).toContain('Unknown scenario "service-tokn"')
    for (const s of DEMO_SCENARIOS) {
      expect(result.text).toContain(`  ${s.name}`)
      expect(result.text).toContain(s.description)
    }
  })

  it.each([
    ['an empty scenario', ['--scenario', '']],
    ['an unknown option', ['--scenaro', 'worker']],
    ['a positional argument', ['worker']],
    ['a missing value', ['--scenario']]
  ])('exits 2 with the list on %s', (_, argv) => {
    const result = exit(parseDemoArgs(argv))
    expect(result.code).toBe(2)
    expect(result.text).toContain(scenarioList())
    expect(result.text).not.toMatch(/^TypeError/)
  })

  it.each(['0', '-1', '2', 'fast', ''])('exits 2 on --time-scale %p', value => {
    const result = exit(parseDemoArgs([`--time-scale=${value}`]))
    expect(result.code).toBe(2)
    expect(result.text).toContain('--time-scale must be a number above 0 and at most 1')
  })

  it('exits 2 on an empty --summary', () => {
    expect(exit(parseDemoArgs(['--summary', ''])).code).toBe(2)
  })

  it('prints the list with --list, and usage with it with --help, exiting 0', () => {
    expect(exit(parseDemoArgs(['--list']))).toEqual({ kind: 'exit', code: 0, text: scenarioList() })
    const help = exit(parseDemoArgs(['-h']))
    expect(help.code).toBe(0)
    expect(help.text).toMatch(/^usage: npm run demo/)
    expect(help.text).toContain(scenarioList())
  })
})

describe('summaryFileOf', () => {
  it('gives the first run the file named, later runs -2, -3', () => {
    expect(summaryFileOf('.tmp/demo/job-summary.md', 1)).toBe(
      path.resolve('.tmp/demo/job-summary.md')
    )
    expect(summaryFileOf('.tmp/demo/job-summary.md', 2)).toBe(
      path.resolve('.tmp/demo/job-summary-2.md')
    )
    expect(summaryFileOf('/tmp/summary', 3)).toBe('/tmp/summary-3')
  })
})

describe('healthHistory', () => {
  it('folds consecutive answers of one status and version into spans', () => {
    const version = (id: string | undefined): number | undefined =>
      ({ a: 1, b: 2 })[id as 'a' | 'b']
    const lines = healthHistory(
      [
        { at: 1000, status: 200, versionId: 'a', accessKeyId: 'k1' },
        { at: 1100, status: 200, versionId: 'a', accessKeyId: 'k1' },
        { at: 1200, status: 503, versionId: 'b', accessKeyId: 'k2' },
        { at: 1300, status: 200, versionId: 'b', accessKeyId: 'k2' }
      ],
      1000,
      version
    )
    expect(lines).toEqual([
      '    0.0 s – 0.1 s       2 × 200  version 1 (token k1)',
      '    0.2 s – 0.2 s       1 × 503  version 2 (token k2)',
      '    0.3 s – 0.3 s       1 × 200  version 2 (token k2)'
    ])
  })
})
