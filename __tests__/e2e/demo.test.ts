/**
 * `npm run demo -- --scenario NAME`: every scenario runs the bundled action to a successful end
 * (every check of the demo holds, exit code 0), on the sandbox's time scale so that the suite
 * stays fast; and the command line exits 2 with the list for a scenario it does not know.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { runDemo } from '../../sandbox/demo-run.js'
import { DEMO_SCENARIOS } from '../../sandbox/demo-scenarios.js'
import { SANDBOX_TIME_SCALE } from '../../sandbox/index.js'

let dir: string
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'r2-rotation-demo-'))
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe.each(DEMO_SCENARIOS.map(s => [s.name, s] as const))(
  'the %s scenario',
  (name, scenario) => {
    it('runs to a successful end, every check holding', async () => {
      const lines: string[] = []
      const errors: string[] = []
      const summary = path.join(dir, name, 'job-summary.md')
      const code = await runDemo(
        { scenario, summary, timeScale: SANDBOX_TIME_SCALE },
        line => lines.push(line),
        chunk => errors.push(chunk)
      )
      const output = lines.join('\n')
      // The whole output on failure: it holds no secret value (the demo checks that too).
      expect({ code, failed: output.split('\n').filter(l => l.startsWith('✘')) }).toEqual({
        code: 0,
        failed: []
      })
      expect(errors.join('')).toBe('')
      expect(output).toMatch(/── checks ─+\n(✔ .*\n)+/)
      expect(output).toContain('✔ no token value, SHA-256 or ciphertext in any output')
      expect(existsSync(summary)).toBe(true)
      expect(existsSync(summary.replace(/\.md$/, '.html'))).toBe(true)
    }, 120_000)
  }
)

describe('the command line', () => {
  it('exits 2 for an unknown scenario, listing the scenarios, before starting anything', () => {
    const tsx = path.resolve('node_modules/.bin/tsx')
    const result = spawnSync(tsx, ['sandbox/demo.ts', '--scenario', 'no-such-kind'], {
      encoding: 'utf8',
      timeout: 60_000
    })
    expect(result.status).toBe(2)
    expect(result.stdout).toBe('')
    expect(result.stderr).toContain('Unknown scenario "no-such-kind"')
    for (const s of DEMO_SCENARIOS) expect(result.stderr).toContain(s.name)
  }, 60_000)
})
