/**
 * `npm run demo`: starts the sandbox (Cloudflare, GitHub, R2 and a sample app on 127.0.0.1),
 * runs dist/index.js exactly as the Actions runner would, and prints the phases and the job
 * summary. Exit code 0 when the token was rotated with the app serving throughout.
 */
import { existsSync } from 'node:fs'
import { startSandbox } from './index.js'
import { ACTION_ENTRY, findLeaks, runAction, sandboxInputs } from './runner.js'

const rule = (title: string): string =>
  `\n── ${title} ${'─'.repeat(Math.max(0, 70 - title.length))}`

async function main(): Promise<number> {
  if (!existsSync(ACTION_ENTRY)) {
    console.error('dist/index.js is missing: run `npm run package` first.')
    return 1
  }
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
    const result = await runAction(sb, inputs, {
      onStdout: chunk =>
        process.stdout.write(
          chunk
            .split('\n')
            // Render workflow commands roughly as the runner's log viewer does: masks registered
            // (never the value), debug lines hidden (shown only with ACTIONS_STEP_DEBUG), groups as headings.
            .filter(line => !line.startsWith('::debug::') && !line.startsWith('::endgroup::'))
            .map(line =>
              line.startsWith('::add-mask::')
                ? '(a value was masked)'
                : line.startsWith('::group::')
                  ? `▸ ${line.slice('::group::'.length)}`
                  : line
            )
            .join('\n')
        ),
      onStderr: chunk => process.stderr.write(chunk)
    })
    const failures = await watch.stop()

    console.log(rule('job summary (markdown)'))
    console.log(result.summary.trim())
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
    console.log(
      `\nrotation took ${(result.durationMs / 1000).toFixed(1)} s; ${sb.log.requests().length} HTTP requests in the sandbox`
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
