/**
 * `npm run demo`: starts the sandbox (Cloudflare, GitHub, R2 and a sample app on 127.0.0.1),
 * runs dist/index.js exactly as the Actions runner would, and prints the phases, the job summary
 * as text, and what the action did. Exit code 0 when the token was rotated with the app serving
 * throughout.
 *
 * The job summary is written as GitHub receives it (markdown with HTML tables) to a file the demo
 * names (`--summary FILE`, default `.tmp/demo/job-summary.md`), next to an HTML page of it as the
 * run page renders it.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { HEALTH_WATCHER_HEADER, actionRequests, startSandbox } from './index.js'
import { ACTION_ENTRY, findLeaks, runAction, sandboxInputs } from './runner.js'
import { summaryPage, summaryText } from './summary-view.js'

const rule = (title: string): string =>
  `\n── ${title} ${'─'.repeat(Math.max(0, 70 - title.length))}`

/**
 * The action's log as the runner's log viewer roughly shows it: groups as headings, debug lines
 * hidden (shown only with ACTIONS_STEP_DEBUG), mask registrations counted, never shown.
 */
function logViewer(): { write(chunk: string): void; masks(): number } {
  let masks = 0
  let partial = ''
  return {
    write(chunk) {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        if (line.startsWith('::add-mask::')) masks += 1
        else if (line.startsWith('::group::')) console.log(`▸ ${line.slice('::group::'.length)}`)
        else if (!line.startsWith('::debug::') && !line.startsWith('::endgroup::')) {
          console.log(line)
        }
      }
    },
    masks: () => masks
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { summary: { type: 'string', default: '.tmp/demo/job-summary.md' } }
  })
  if (!existsSync(ACTION_ENTRY)) {
    console.error('dist/index.js is missing: run `npm run package` first.')
    return 1
  }
  const summaryFile = path.resolve(values.summary)
  const summaryHtml = summaryFile.replace(/(\.md)?$/, '.html')
  // Real time: the demo is watched by a person.
  const sb = await startSandbox({ timeScale: 1 })
  try {
    console.log(rule('sandbox'))
    console.log(`Cloudflare API  ${sb.cloudflareApiUrl}`)
    console.log(`GitHub API      ${sb.githubApiUrl}`)
    console.log(`R2 (S3)         ${sb.r2Endpoint}  bucket ${sb.bucket}`)
    console.log(`sample app      ${sb.appUrl}/healthz`)
    console.log(`token in use    ${sb.current.id} (serving the app)`)

    console.log(rule('action log (dist/index.js)'))
    const watch = sb.watchHealth(100)
    // The health endpoint names the credential it runs on, and the watch after the disable is
    // shortened from its default two minutes so that the demo ends soon.
    const inputs = sandboxInputs(sb, {
      'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=access-key-id={access-key-id}`,
      'revoke-watch': '10s'
    })
    const viewer = logViewer()
    const started = Date.now()
    const result = await runAction(sb, inputs, {
      onStdout: chunk => viewer.write(chunk),
      onStderr: chunk => process.stderr.write(chunk)
    })
    viewer.write('\n')
    const failures = await watch.stop()
    console.log(`(${viewer.masks()} values were registered as masks before their first use)`)

    console.log(rule('job summary'))
    console.log(summaryText(result.summary))
    mkdirSync(path.dirname(summaryFile), { recursive: true })
    writeFileSync(summaryFile, result.summary)
    writeFileSync(summaryHtml, summaryPage(result.summary, 'R2 token rotation: job summary'))
    console.log(`\nAs GitHub receives it (markdown): ${path.relative(process.cwd(), summaryFile)}`)
    console.log(`As the run page shows it (HTML):  ${path.relative(process.cwd(), summaryHtml)}`)

    console.log(rule('outputs'))
    for (const [name, value] of Object.entries(result.outputs)) console.log(`${name}: ${value}`)

    console.log(rule('checks'))
    const live = sb.liveAccessKeyId()
    const leaks = findLeaks(result, sb.secretValues())
    const checks: Array<[string, boolean]> = [
      [
        'action exited 0 with result rotated',
        result.exitCode === 0 && result.outputs.result === 'rotated'
      ],
      [
        `the app now serves with the new token (${live})`,
        live !== undefined && live === result.outputs['token-id']
      ],
      [`the old token ${sb.current.id} is deleted`, !sb.cloudflare.tokens.has(sb.current.id)],
      [
        `/healthz never failed during the rotation (${failures.length} failures)`,
        failures.length === 0
      ],
      ['no token value, SHA-256 or ciphertext in any output', leaks.length === 0],
      [
        `every request matched the OpenAPI descriptions (${sb.log.violations.length} violations)`,
        sb.log.violations.length === 0
      ]
    ]
    for (const [label, ok] of checks) console.log(`${ok ? '✔' : '✘'} ${label}`)
    for (const v of sb.log.violations) console.log(`  violation: ${v}`)

    const made = actionRequests(sb, started)
    const by = (service: string): number => made.filter(e => e.service === service).length
    const watcher = sb.log
      .requests({ service: 'app' })
      .filter(e => e.headers[HEALTH_WATCHER_HEADER] !== undefined).length
    console.log(
      [
        `\nThe rotation took ${(result.durationMs / 1000).toFixed(1)} s. The action made ${made.length} HTTP requests:`,
        `${by('github')} to GitHub, ${by('cloudflare')} to Cloudflare, ${by('r2')} to R2 and ${by('app')} to the app (smoke checks and the watch).`,
        `Not counted: the demo's own ${watcher} health checks, and the app's reads from R2.`
      ].join('\n')
    )
    return checks.every(([, ok]) => ok) ? 0 : 1
  } finally {
    await sb.stop()
  }
}

main().then(
  code => process.exit(code),
  error => {
    console.error(error)
    process.exit(1)
  }
)
