/**
 * The `.env` that `npm run sandbox` writes for the official local runner
 * (`npx @github/local-action run . src/main.ts .env`): what the Actions runner would set for one
 * run of the action in the sandbox's repository, with the sandbox's credentials as the inputs.
 */
import type { Sandbox } from './index.js'
import { inputEnvName, sandboxInputs } from './runner.js'

/**
 * The first line of every file written here (and of `.env.example`): `npm run sandbox` overwrites
 * no `.env` that does not start with it.
 */
export const DOTENV_HEADER =
  '# A run of the action in the sandbox: `npm run sandbox` writes .env for `npx @github/local-action run . src/main.ts .env`.'

export interface ServingCredentials {
  id: string
  value: string
  secretAccessKey: string
}

/**
 * One `KEY=value` line as dotenv (and Node's `util.parseEnv`) reads it: quoted, the value's line
 * breaks kept (a quoted value may span lines), in the first quote it does not contain; single
 * quotes first, since nothing is expanded inside them.
 */
export function dotenvLine(key: string, value: string): string {
  const quote = ["'", '`', '"'].find(q => !value.includes(q))
  if (!quote) throw new Error(`${key}: a value holding all three quote characters`)
  return `${key}=${quote}${value}${quote}`
}

/**
 * The runner's variables and the action's inputs for a run with `current` as the credentials in
 * service: GITHUB_API_URL and the repository point at the sandbox, the action's clock runs on
 * the sandbox's time scale (it honours R2_ROTATION_TIME_SCALE on loopback only), and the smoke
 * check demands that the app names the credential it runs on.
 */
export function sandboxRunEnv(
  sb: Sandbox,
  current: ServingCredentials,
  options: { runId: number; summaryFile: string }
): Record<string, string> {
  const inputs = sandboxInputs(sb, {
    'current-token': current.value,
    'current-access-key-id': current.id,
    'current-secret-access-key': current.secretAccessKey,
    'smoke-urls': `${sb.appUrl}/healthz expect=200 contains=access-key-id={access-key-id}`
  })
  const env: Record<string, string> = {
    GITHUB_API_URL: sb.githubApiUrl,
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_REPOSITORY: sb.repository,
    GITHUB_RUN_ID: String(options.runId),
    GITHUB_RUN_ATTEMPT: '1',
    GITHUB_STEP_SUMMARY: options.summaryFile,
    R2_ROTATION_TIME_SCALE: String(sb.timeScale)
  }
  // local-action reads INPUT_<NAME> as the runner sets it: upper-cased, hyphens kept.
  for (const [name, value] of Object.entries(inputs)) env[inputEnvName(name)] = value
  return env
}

export function dotenvText(env: Record<string, string>): string {
  return [
    DOTENV_HEADER,
    '# Sandbox values only: none of these tokens exists outside this machine. The sandbox rewrites',
    '# this file after each rotation, so that the next run rotates the token now in service.',
    '# Uncomment to see the debug lines: ACTIONS_STEP_DEBUG=true',
    ...Object.entries(env).map(([key, value]) => dotenvLine(key, value)),
    ''
  ].join('\n')
}
