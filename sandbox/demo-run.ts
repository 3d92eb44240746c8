/**
 * The demo's command line and its run: starts a scenario's world (sandbox/demo-scenarios.ts), runs
 * dist/index.js for each of its runs exactly as the Actions runner would, and prints the phases,
 * each job summary as text, the outputs, and the checks. `npm run demo` is sandbox/demo.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { HEALTH_WATCHER_HEADER, actionRequests } from './index.js'
import { ACCESS_CLIENT_HEADER } from './access-client.js'
import {
  DEFAULT_SCENARIO,
  DEMO_SCENARIOS,
  findScenario,
  type DemoCheck,
  type DemoScenario
} from './demo-scenarios.js'
import type { LogServiceName } from './log.js'
import { findLeaks, runAction, type ActionResult } from './runner.js'
import { summaryPage, summaryText } from './summary-view.js'

export interface DemoOptions {
  scenario: DemoScenario
  /** Where the (first run's) job summary goes; `.html` beside it. */
  summary: string
  /** Real milliseconds per simulated millisecond: 1 (real time) unless asked. */
  timeScale: number
}

export type DemoArgs =
  | { kind: 'run'; options: DemoOptions }
  /** `--list` / `--help` (exit 0), or a usage error (exit 2): print `text` and exit. */
  | { kind: 'exit'; code: 0 | 2; text: string }

export const DEFAULT_SUMMARY = '.tmp/demo/job-summary.md'

export const USAGE = [
  'usage: npm run demo [-- --scenario NAME] [--summary FILE] [--time-scale N] [--list]',
  '',
  `  --scenario NAME   what to rotate (default ${DEFAULT_SCENARIO})`,
  `  --summary FILE    where the job summary goes (default ${DEFAULT_SUMMARY}; .html beside it)`,
  '  --time-scale N    real ms per simulated ms, 0 < N <= 1 (default 1: real time; 0.02: 50× as fast)',
  '  --list            list the scenarios'
].join('\n')

/** The scenarios, one a line: name and what it shows. */
export function scenarioList(): string {
  const width = Math.max(...DEMO_SCENARIOS.map(s => s.name.length))
  return [
    'scenarios:',
    ...DEMO_SCENARIOS.map(s => `  ${s.name.padEnd(width)}  ${s.description}`)
  ].join('\n')
}

/** `argv` without node and the script (what `npm run demo -- …` passes). */
export function parseDemoArgs(argv: string[]): DemoArgs {
  let values
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        scenario: { type: 'string', default: DEFAULT_SCENARIO },
        summary: { type: 'string', default: DEFAULT_SUMMARY },
        'time-scale': { type: 'string', default: '1' },
        list: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false }
      },
      strict: true,
      allowPositionals: false
    }))
  } catch (error) {
    // Not `instanceof Error`: under a VM context (Jest) the error comes from another realm.
    const message = String((error as { message?: unknown }).message ?? error)
    return { kind: 'exit', code: 2, text: `${message}\n\n${USAGE}\n\n${scenarioList()}` }
  }
  if (values.help) return { kind: 'exit', code: 0, text: `${USAGE}\n\n${scenarioList()}` }
  if (values.list) return { kind: 'exit', code: 0, text: scenarioList() }
  const scenario = findScenario(values.scenario)
  if (!scenario) {
    return {
      kind: 'exit',
      code: 2,
      text: `Unknown scenario "${values.scenario}".\n\n${scenarioList()}`
    }
  }
  const raw = values['time-scale']
  const timeScale = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(timeScale) || timeScale <= 0 || timeScale > 1) {
    return {
      kind: 'exit',
      code: 2,
      text: `--time-scale must be a number above 0 and at most 1 (got "${raw}").\n\n${USAGE}`
    }
  }
  if (values.summary.trim() === '') {
    return { kind: 'exit', code: 2, text: `--summary needs a file name.\n\n${USAGE}` }
  }
  return { kind: 'run', options: { scenario, summary: values.summary, timeScale } }
}

const rule = (title: string): string =>
  `\n── ${title} ${'─'.repeat(Math.max(0, 70 - title.length))}`

/**
 * The action's log as the runner's log viewer roughly shows it: groups as headings, debug lines
 * hidden (shown only with ACTIONS_STEP_DEBUG), mask registrations counted, never shown.
 */
function logViewer(print: (line: string) => void): {
  write(chunk: string): void
  masks(): number
} {
  let masks = 0
  let partial = ''
  return {
    write(chunk) {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        if (line.startsWith('::add-mask::')) masks += 1
        else if (line.startsWith('::group::')) print(`▸ ${line.slice('::group::'.length)}`)
        else if (!line.startsWith('::debug::') && !line.startsWith('::endgroup::')) {
          print(line)
        }
      }
    },
    masks: () => masks
  }
}

/** The file run `n` (from 1) writes its summary to: the given name, then `-2`, `-3`… */
export function summaryFileOf(summary: string, n: number): string {
  const file = path.resolve(summary)
  if (n === 1) return file
  return /\.md$/.test(file) ? file.replace(/\.md$/, `-${n}.md`) : `${file}-${n}`
}

/** Service names of the simulators, as the request counts say them. */
const SERVICES: Array<[LogServiceName, string]> = [
  ['github', 'GitHub'],
  ['cloudflare', 'Cloudflare'],
  ['r2', 'R2'],
  ['worker', 'the Worker'],
  ['access-app', 'the Access app'],
  ['access-client', 'the Access client'],
  ['app', 'the app (smoke checks and the watch)']
]

const and = (items: string[]): string =>
  items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`

/**
 * Runs the scenario and prints it; 0 when every check held. `print` gets whole lines; the
 * action's stderr goes to `printError` as it comes.
 */
export async function runDemo(
  options: DemoOptions,
  print: (line: string) => void = line => console.log(line),
  printError: (chunk: string) => void = chunk => process.stderr.write(chunk)
): Promise<number> {
  const stage = await options.scenario.setup({ timeScale: options.timeScale })
  const { sb, runs } = stage
  try {
    print(rule('sandbox'))
    print(`Cloudflare API  ${sb.cloudflareApiUrl}`)
    print(`GitHub API      ${sb.githubApiUrl}`)
    print(`R2 (S3)         ${sb.r2Endpoint}  bucket ${sb.bucket}`)
    print(`sample app      ${sb.appUrl}/healthz`)
    for (const line of stage.world) print(line)

    const several = runs.length > 1
    const watch = stage.watch()
    const started = Date.now()
    const results: ActionResult[] = []
    const written: string[] = []
    for (const [i, run] of runs.entries()) {
      const n = i + 1
      const which = several ? `, run ${n} of ${runs.length}` : ''
      print(rule(`action log${which} (dist/index.js)`))
      if (several) print(`${run.title}\n`)
      const viewer = logViewer(print)
      const result = await runAction(sb, run.inputs(), {
        onStdout: chunk => viewer.write(chunk),
        onStderr: printError
      })
      viewer.write('\n')
      results.push(result)
      print(`(${viewer.masks()} values were registered as masks before their first use)`)

      print(rule(`job summary${which}`))
      print(summaryText(result.summary))
      const summaryFile = summaryFileOf(options.summary, n)
      const summaryHtml = summaryFile.replace(/(\.md)?$/, '.html')
      mkdirSync(path.dirname(summaryFile), { recursive: true })
      writeFileSync(summaryFile, result.summary)
      writeFileSync(summaryHtml, summaryPage(result.summary, 'R2 token rotation: job summary'))
      written.push(summaryFile, summaryHtml)
      print(`\nAs GitHub receives it (markdown): ${path.relative(process.cwd(), summaryFile)}`)
      print(`As the run page shows it (HTML):  ${path.relative(process.cwd(), summaryHtml)}`)

      print(rule(`outputs${which}`))
      for (const [name, value] of Object.entries(result.outputs)) print(`${name}: ${value}`)
    }
    const verdict = await watch.verdict(results)

    for (const section of verdict.sections) {
      print(rule(section.title))
      for (const line of section.lines) print(line)
    }

    print(rule('checks'))
    const journals = ['', '_LOCK', '_MANAGEMENT', '_ACCESS'].map(
      suffix => sb.github.getVariable(sb.repository, `R2_ROTATION_STATE${suffix}`) ?? ''
    )
    const values = stage.secretValues()
    const leaks = results.flatMap(result => findLeaks(result, values, journals))
    const checks: DemoCheck[] = [
      ...results.map((result, i): DemoCheck => {
        const ok = result.exitCode === 0 && result.outputs.result === 'rotated'
        return several
          ? [`run ${i + 1} (${runs[i]!.title}) exited 0 with result rotated`, ok]
          : ['action exited 0 with result rotated', ok]
      }),
      ...verdict.checks,
      ['no token value, SHA-256 or ciphertext in any output', leaks.length === 0],
      [
        `every request matched the OpenAPI descriptions (${sb.log.violations.length} violations)`,
        sb.log.violations.length === 0
      ]
    ]
    for (const [label, ok] of checks) print(`${ok ? '✔' : '✘'} ${label}`)
    for (const leak of leaks) print(`  leak: ${leak}`)
    for (const v of sb.log.violations) print(`  violation: ${v}`)

    const made = actionRequests(sb, started)
    const counts = SERVICES.map(([service, label]): [number, string] => [
      made.filter(e => e.service === service).length,
      label
    ]).filter(([count], i) => count > 0 || i < 2)
    const watcher = sb.log
      .requests()
      .filter(e => e.headers[HEALTH_WATCHER_HEADER] !== undefined).length
    const readers = and(
      (
        [
          ['app', 'the app'],
          ['worker', 'the Worker']
        ] as const
      )
        .filter(([service]) => sb.log.requests({ service }).length > 0)
        .map(([, name]) => `${name}'s`)
    )
    const took = several
      ? `The runs took ${and(results.map(r => `${(r.durationMs / 1000).toFixed(1)} s`))}. The action made ${made.length} HTTP requests in all:`
      : `The rotation took ${(results[0]!.durationMs / 1000).toFixed(1)} s. The action made ${made.length} HTTP requests:`
    print(
      [
        `\n${took}`,
        `${and(counts.map(([count, label]) => `${count} to ${label}`))}.`,
        `Not counted: the demo's own ${watcher} health checks${readers ? `, and ${readers} reads from R2` : ''}${
          sb.log
            .requests({ service: 'access-app' })
            .some(e => e.headers[ACCESS_CLIENT_HEADER] !== undefined)
            ? ", and the Access client's calls to the Access app"
            : ''
        }.`
      ].join('\n')
    )
    return checks.every(([, ok]) => ok) ? 0 : 1
  } finally {
    await stage.stop()
  }
}
