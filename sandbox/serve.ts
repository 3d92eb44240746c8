/**
 * `npm run sandbox`: starts the simulators (Cloudflare, GitHub, R2 and the sample app on
 * 127.0.0.1), prints their URLs, and writes a `.env` that the official local runner can use:
 *
 *   npx @github/local-action run . src/main.ts .env
 *
 * It runs until Ctrl-C. Whenever a rotation changes the secrets, it writes the `.env` again with
 * the credentials now in service (and a new run id), so that the next run rotates again.
 *
 * Options: `--env FILE` (default `.env`; a file it did not write is never overwritten),
 * `--time-scale N` (real ms per simulated ms, default the sandbox's 0.02: a two-minute watch takes
 * 2.4 s; `1` is real time, for stepping through in a debugger), `--owner user|account`,
 * `--summary FILE` (the job summary local-action writes, default `.tmp/local-action-summary.md`).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { DOTENV_HEADER, dotenvText, sandboxRunEnv, type ServingCredentials } from './dotenv.js'
import { SANDBOX_TIME_SCALE, startSandbox } from './index.js'
import { sha256Hex } from './r2.js'

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      env: { type: 'string', default: '.env' },
      'time-scale': { type: 'string', default: String(SANDBOX_TIME_SCALE) },
      owner: { type: 'string', default: 'user' },
      summary: { type: 'string', default: '.tmp/local-action-summary.md' }
    }
  })
  const timeScale = Number(values['time-scale'])
  if (!(timeScale > 0 && timeScale <= 1)) throw new Error('--time-scale: a number in (0, 1]')
  if (values.owner !== 'user' && values.owner !== 'account')
    throw new Error('--owner: user or account')
  const envFile = path.resolve(values.env)
  if (existsSync(envFile) && !readFileSync(envFile, 'utf8').startsWith(DOTENV_HEADER)) {
    throw new Error(
      `${values.env} exists and was not written by npm run sandbox: move it away, or pass --env FILE.`
    )
  }
  const summaryFile = path.resolve(values.summary)
  mkdirSync(path.dirname(summaryFile), { recursive: true })

  const sb = await startSandbox({ timeScale, owner: values.owner })
  let runId = 4_200_000
  let current: ServingCredentials = sb.current
  const write = (): void => {
    runId += 1
    const env = sandboxRunEnv(sb, current, { runId, summaryFile })
    writeFileSync(envFile, dotenvText(env), { mode: 0o600 })
  }
  write()

  console.log(`Sandbox running (time scale ${timeScale}; Ctrl-C stops it).`)
  console.log(`  Cloudflare API  ${sb.cloudflareApiUrl}`)
  console.log(`  GitHub API      ${sb.githubApiUrl}  repository ${sb.repository}`)
  console.log(`  R2 (S3)         ${sb.r2Endpoint}  bucket ${sb.bucket}`)
  console.log(`  sample app      ${sb.appUrl}/healthz`)
  console.log(`  token in use    ${current.id} (${values.owner}-owned)`)
  console.log(`Wrote ${envFile}. Run the action:`)
  console.log(`  npx @github/local-action run . src/main.ts ${values.env}`)
  console.log(`The job summary goes to ${summaryFile}.`)

  // Follow the secrets: once a rotation has written new credentials, the next run needs them.
  const names = sb.secretNames
  const follow = setInterval(() => {
    const secrets = sb.github.secretsForRun(sb.repository, sb.environment)
    const id = secrets[names.accessKeyId.toUpperCase()]
    const value = secrets[names.token.toUpperCase()]
    const secretAccessKey = secrets[names.secretAccessKey.toUpperCase()]
    if (!id || !value || !secretAccessKey || id === current.id) return
    // Secrets are written one at a time: wait until all three name the same token.
    if (sb.cloudflare.tokens.get(id)?.value !== value || sha256Hex(value) !== secretAccessKey)
      return
    current = { id, value, secretAccessKey }
    write()
    console.log(`The secrets now hold token ${id}; ${values.env} updated for the next run.`)
  }, 250)

  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    clearInterval(follow)
    void sb.stop().then(() => process.exit(0))
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

main().catch(error => {
  console.error(error instanceof Error ? error.message : error)
  process.exit(1)
})
