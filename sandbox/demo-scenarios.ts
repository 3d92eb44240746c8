/**
 * What `npm run demo -- --scenario NAME` can show: one entry per kind of thing the action rotates.
 * An entry sets up its world in the sandbox and says which runs of the action to make, with which
 * inputs; sandbox/demo-run.ts runs them, prints what happened and the entry's verdict. Adding a
 * kind is adding an entry to `DEMO_SCENARIOS`.
 */
import { startSandbox, watchHealth, type Sandbox, type SandboxOptions } from './index.js'
import { startCredentialsWorldBeside } from './credentials-world.js'
import { sha256Hex } from './r2.js'
import { sandboxInputs, serviceTokenInputs, type ActionResult } from './runner.js'

/** A line of the demo's checks: what must hold, and whether it did. */
export type DemoCheck = [label: string, ok: boolean]

export interface DemoRun {
  /** What the run does (the heading of its log when a scenario makes more than one run). */
  title: string
  /** The inputs a workflow would pass, read when the run starts (after the runs before it). */
  inputs(): Record<string, string>
}

export interface DemoVerdict {
  /** Shown after the outputs, before the checks (e.g. a Worker's versions). */
  sections: Array<{ title: string; lines: string[] }>
  /** Shown between each run's own check and the leak and OpenAPI checks. */
  checks: DemoCheck[]
}

export interface DemoStage {
  sb: Sandbox
  /** Lines of the "sandbox" section after the simulators' addresses. */
  world: string[]
  runs: DemoRun[]
  /**
   * Starts watching what must keep serving, just before the first run; `verdict` is called
   * once the last run has ended.
   */
  watch(): { verdict(results: ActionResult[]): Promise<DemoVerdict> }
  /** Every value that must never appear in any output (called after the runs). */
  secretValues(): string[]
  stop(): Promise<void>
}

export interface DemoScenario {
  name: string
  /** One line for the list (`--list`, or an unknown name). */
  description: string
  /** Starts the sandbox and whatever the scenario adds to it. */
  setup(options: { timeScale: number }): Promise<DemoStage>
}

/** The watch after the disable, shortened from its default two minutes so the demo ends soon. */
const REVOKE_WATCH = '10s'
/** How often the demo asks each health endpoint, as a person watching it would (real ms). */
const WATCH_INTERVAL_MS = 100

/** The app's health endpoint, demanding the credential that should be serving. */
const appSmoke = (sb: Sandbox): string =>
  `${sb.appUrl}/healthz expect=200 contains=access-key-id={access-key-id}`

/** Checks that an R2 rotation left the app on the new token and the old one deleted. */
function r2Checks(
  sb: Sandbox,
  result: ActionResult | undefined,
  previousId: string,
  failures: unknown[],
  endpoint = '/healthz'
): DemoCheck[] {
  const live = sb.liveAccessKeyId()
  return [
    [
      `the app now serves with the new token (${live})`,
      live !== undefined && live === result?.outputs['token-id']
    ],
    [`the old token ${previousId} is deleted`, !sb.cloudflare.tokens.has(previousId)],
    [
      `${endpoint} never failed during the rotation (${failures.length} failures)`,
      failures.length === 0
    ]
  ]
}

async function sandbox(options: SandboxOptions): Promise<Sandbox> {
  return startSandbox(options)
}

// --------------------------------------------------------------------------- r2-token

const r2Token: DemoScenario = {
  name: 'r2-token',
  description:
    'an R2 token rotated: GitHub secrets, deploy, smoke checks, disable, watch, delete (the default)',
  async setup({ timeScale }) {
    const sb = await sandbox({ timeScale })
    return {
      sb,
      world: [`token in use    ${sb.current.id} (serving the app)`],
      runs: [
        {
          title: 'an R2 token rotation',
          // The health endpoint names the credential it runs on.
          inputs: () =>
            sandboxInputs(sb, { 'smoke-urls': appSmoke(sb), 'revoke-watch': REVOKE_WATCH })
        }
      ],
      watch() {
        const app = sb.watchHealth(WATCH_INTERVAL_MS)
        return {
          async verdict(results) {
            const failures = await app.stop()
            return { sections: [], checks: r2Checks(sb, results[0], sb.current.id, failures) }
          }
        }
      },
      secretValues: () => sb.secretValues(),
      stop: () => sb.stop()
    }
  }
}

// --------------------------------------------------------------------------- worker

const SCRIPT = 'avatars-worker'

const worker: DemoScenario = {
  name: 'worker',
  description: `an R2 token rotated into the GitHub secrets and the secrets of Worker ${SCRIPT} (worker:${SCRIPT})`,
  async setup({ timeScale }) {
    // The management token may also write the account's Workers scripts.
    const sb = await sandbox({ timeScale, managementWorkers: 'write' })
    let world
    try {
      world = await startCredentialsWorldBeside(sb, { scriptName: SCRIPT })
    } catch (error) {
      await sb.stop()
      throw error
    }
    const cw = world
    const workers = sb.cloudflare.workers
    const version = (id: string | undefined): number | undefined =>
      workers.versionsOf(SCRIPT).find(v => v.id === id)?.number
    return {
      sb,
      world: [
        `Worker          ${cw.workerUrl}/healthz  script ${SCRIPT}, version ${version(cw.script.versionId)}`,
        `token in use    ${sb.current.id} (serving the app and the Worker)`
      ],
      runs: [
        {
          title: 'an R2 token rotation with a Worker target',
          inputs: () =>
            sandboxInputs(sb, {
              'secret-targets': `repo\nworker:${SCRIPT}`,
              'smoke-urls': `${appSmoke(sb)}\n${cw.workerUrl}/healthz expect=200 contains=access-key-id={access-key-id}`,
              'revoke-watch': REVOKE_WATCH
            })
        }
      ],
      watch() {
        const started = Date.now()
        const app = sb.watchHealth(WATCH_INTERVAL_MS)
        const workerWatch = watchHealth(`${cw.workerUrl}/healthz`, WATCH_INTERVAL_MS, sb.log)
        return {
          async verdict(results) {
            const [appFailures, workerFailures] = await Promise.all([
              app.stop(),
              workerWatch.stop()
            ])
            const result = results[0]
            const newId = result?.outputs['token-id']
            const next = newId ? sb.cloudflare.findById(newId) : undefined
            const live = workers.liveVersion(SCRIPT)
            const versions = workers.versionsOf(SCRIPT)
            const history = cw.worker.healthChecks
            const failed = history.filter(c => c.status !== 200)
            const checks: DemoCheck[] = r2Checks(
              sb,
              result,
              sb.current.id,
              appFailures,
              "the app's /healthz"
            )
            checks.splice(1, 0, [
              `the Worker runs a new version (${live?.number}, made by ${live?.origin}) with the new token (${live?.secrets[cw.secretNames.accessKeyId]})`,
              live !== undefined &&
                versions.length === 2 &&
                live.id === versions[1]!.id &&
                next !== undefined &&
                live.secrets[cw.secretNames.accessKeyId] === next.id &&
                live.secrets[cw.secretNames.secretAccessKey] === sha256Hex(next.value)
            ])
            checks.push([
              `the Worker's /healthz never failed (${history.length} checks, ${failed.length + workerFailures.length} failures)`,
              history.length > 0 && failed.length === 0 && workerFailures.length === 0
            ])
            return {
              sections: [
                {
                  title: `Worker ${SCRIPT}`,
                  lines: [
                    'versions:',
                    ...versions.map(
                      v =>
                        `  ${v.number}  ${v.id}  ${v.origin.padEnd(12)}  ${cw.secretNames.accessKeyId}=${v.secrets[cw.secretNames.accessKeyId]}${v.id === live?.id ? '  (live)' : ''}`
                    ),
                    'health history (every /healthz it answered: the watch and the smoke checks):',
                    ...healthHistory(history, started, version)
                  ]
                }
              ],
              checks
            }
          }
        }
      },
      secretValues: () => {
        // A token id is no secret (the Worker and the app print it); every other value is.
        const ids = new Set(
          [...sb.cloudflare.tokens.values(), ...sb.cloudflare.deletedTokens].map(t => t.id)
        )
        return [...new Set([...sb.secretValues(), ...cw.secretValues()])].filter(v => !ids.has(v))
      },
      stop: async () => {
        await cw.stop()
        await sb.stop()
      }
    }
  }
}

/**
 * A health history in spans: consecutive answers of one status from one version, with the time
 * they cover from the start of the watch.
 */
export function healthHistory(
  checks: Array<{ at: number; status: number; versionId?: string; accessKeyId?: string }>,
  started: number,
  versionNumber: (id: string | undefined) => number | undefined
): string[] {
  const spans: Array<{ from: number; to: number; status: number; key: string; count: number }> = []
  for (const check of checks) {
    const key = `version ${versionNumber(check.versionId) ?? '?'} (token ${check.accessKeyId ?? 'none'})`
    const last = spans.at(-1)
    if (last && last.status === check.status && last.key === key) {
      last.to = check.at
      last.count += 1
    } else spans.push({ from: check.at, to: check.at, status: check.status, key, count: 1 })
  }
  const s = (at: number): string => `${(Math.max(0, at - started) / 1000).toFixed(1)} s`
  return spans.map(
    span =>
      `  ${s(span.from).padStart(7)} – ${s(span.to).padEnd(7)}  ${String(span.count).padStart(4)} × ${span.status}  ${span.key}`
  )
}

// --------------------------------------------------------------------------- management-token

const MANAGEMENT_SECRET = 'CF_MANAGEMENT_TOKEN'

const managementToken: DemoScenario = {
  name: 'management-token',
  description: `the management token rotates itself (rotate-management-token: ${MANAGEMENT_SECRET}), then an R2 rotation runs on the new value`,
  async setup({ timeScale }) {
    const sb = await sandbox({ timeScale })
    const repo = { kind: 'repo' as const, repo: sb.repository }
    // The workflow passes the secret that holds the management token as cloudflare-api-token.
    sb.github.setSecret(repo, MANAGEMENT_SECRET, sb.managementToken)
    const inSecret = (): string => sb.github.getSecret(repo, MANAGEMENT_SECRET) ?? ''
    const tokenOf = (value: string): { id: string } | undefined =>
      [...sb.cloudflare.tokens.values(), ...sb.cloudflare.deletedTokens].find(
        t => t.value === value
      )
    const firstId = tokenOf(sb.managementToken)!.id
    let secondRunFrom = 0
    return {
      sb,
      world: [
        `management      ${firstId} (in the secret ${MANAGEMENT_SECRET})`,
        `token in use    ${sb.current.id} (serving the app)`
      ],
      runs: [
        {
          title: 'the management token rotates itself',
          inputs: () => ({
            'cloudflare-api-token': inSecret(),
            'cloudflare-api-url': sb.cloudflareApiUrl,
            'account-id': sb.accountId,
            'github-token': sb.githubToken,
            'rotate-management-token': MANAGEMENT_SECRET
          })
        },
        {
          title: 'the next R2 rotation, with the management token read from the secret',
          inputs: () => {
            secondRunFrom = sb.log.entries.at(-1)?.seq ?? 0
            return sandboxInputs(sb, {
              'cloudflare-api-token': inSecret(),
              'smoke-urls': appSmoke(sb),
              'revoke-watch': REVOKE_WATCH
            })
          }
        }
      ],
      watch() {
        const app = sb.watchHealth(WATCH_INTERVAL_MS)
        return {
          async verdict(results) {
            const failures = await app.stop()
            const [self, next] = results
            const successorId = self?.outputs['token-id'] ?? ''
            const successor = sb.cloudflare.findById(successorId)
            const held = inSecret()
            const verifies = async (value: string): Promise<boolean> => {
              const response = await fetch(`${sb.cloudflareApiUrl}/user/tokens/verify`, {
                headers: { authorization: `Bearer ${value}` }
              })
              await response.arrayBuffer()
              return response.status === 200
            }
            // Which management token the second run's Cloudflare calls carried (compared, never shown).
            const bearers = sb.log
              .requests({ service: 'cloudflare' })
              .filter(e => e.seq > secondRunFrom)
              .map(e => e.headers.authorization)
            const checks: DemoCheck[] = [
              [
                `${MANAGEMENT_SECRET} holds the successor ${successorId}`,
                successor !== undefined && successorId !== firstId && successor.value === held
              ],
              [
                `the old management token ${firstId} is deleted and no longer verifies`,
                sb.cloudflare.findById(firstId) === undefined &&
                  !(await verifies(sb.managementToken))
              ],
              [
                'the second run called Cloudflare with the successor, never the old token',
                bearers.includes(`Bearer ${held}`) &&
                  !bearers.includes(`Bearer ${sb.managementToken}`)
              ],
              ...r2Checks(sb, next, sb.current.id, failures)
            ]
            return {
              sections: [
                {
                  title: 'management token',
                  lines: [
                    `${MANAGEMENT_SECRET}: ${firstId} → ${successorId} (run 1), then used by run 2`,
                    `live tokens of the management lineage: ${
                      [...sb.cloudflare.tokens.values()]
                        .filter(t => t.name.startsWith('token-rotation-manager'))
                        .map(t => t.id)
                        .join(', ') || 'none'
                    }`
                  ]
                }
              ],
              checks
            }
          }
        }
      },
      secretValues: () => sb.secretValues(),
      stop: () => sb.stop()
    }
  }
}

/** Every scenario, the default first. */
// --------------------------------------------------------------------------- service-token

const serviceToken: DemoScenario = {
  name: 'service-token',
  description:
    'an Access service token rotated: a grace window for the old client secret, the new one written, deploy, checks through Access, the grace closed, watch',
  async setup({ timeScale }) {
    const sb = await sandbox({ timeScale, credential: 'access-service-token' })
    const token = sb.serviceToken!
    const names = sb.accessSecretNames!
    const scope = sb.environment
      ? { kind: 'env' as const, repo: sb.repository, environment: sb.environment }
      : { kind: 'repo' as const, repo: sb.repository }
    const access = sb.cloudflare.access
    const seeded = access.secretValues()[0]
    return {
      sb,
      world: [
        `Access app      ${sb.accessApp!.url}/healthz  admits only a valid service token`,
        `Access client   ${sb.accessClient!.url}/healthz  the deployed app, calling it with its secrets`,
        `service token   ${token.id} "${access.serviceToken(token.id)?.name}", client id ${token.clientId}`
      ],
      runs: [
        {
          title: 'an Access service token rotation',
          inputs: () => serviceTokenInputs(sb, { 'revoke-watch': REVOKE_WATCH })
        }
      ],
      watch() {
        const client = sb.watchAccessClient(WATCH_INTERVAL_MS)
        return {
          async verdict(results) {
            const failures = await client.stop()
            const state = access.serviceToken(token.id)
            const issued = access.secretValues()
            const newest = issued.at(-1)
            const held = sb.github.getSecret(scope, names.clientSecret)
            const checks = sb.accessApp!.checks
            const refused = sb.accessApp!.failures()
            const bySecret = (secret: 'current' | 'previous'): number =>
              checks.filter(c => c.status === 200 && c.secret === secret).length
            return {
              sections: [
                {
                  title: 'the Access app, every request it answered',
                  lines: [
                    `${checks.length} request(s): ${bySecret('previous')} admitted with the previous secret (inside the grace), ${bySecret('current')} with the current one, ${refused.length} refused`,
                    `grace of the previous secret: ${state?.previousExpiresAt ?? 'none'} (${state?.previousValid ? 'still open' : 'closed'})`
                  ]
                }
              ],
              checks: [
                [
                  `the outputs name the service token (token-id ${token.id})`,
                  results[0]?.outputs['token-id'] === token.id
                ],
                [
                  `${names.clientSecret} holds the newest client secret`,
                  held !== undefined && held === newest && held !== seeded
                ],
                [
                  `${names.clientId} holds the client id, unchanged`,
                  sb.github.getSecret(scope, names.clientId) === token.clientId
                ],
                [
                  'the grace is closed: Access refuses the previous secret',
                  state?.previousValid === false &&
                    !access.verifyClientCredentials(token.clientId, seeded).ok
                ],
                [
                  `the deployed client never failed (${failures.length} failed health check(s))`,
                  failures.length === 0
                ],
                [`the Access app refused no request (${refused.length})`, refused.length === 0]
              ]
            }
          }
        }
      },
      secretValues: () => sb.secretValues(),
      stop: () => sb.stop()
    }
  }
}

export const DEMO_SCENARIOS: readonly DemoScenario[] = [
  r2Token,
  worker,
  managementToken,
  serviceToken
]

export const DEFAULT_SCENARIO = DEMO_SCENARIOS[0]!.name

export function findScenario(name: string): DemoScenario | undefined {
  return DEMO_SCENARIOS.find(s => s.name === name)
}
