/**
 * The second credential kind's world, started beside a running sandbox: an Access service token
 * and the application it opens (sandbox/access-app.ts), and a Workers script holding R2
 * credentials in its secrets with the Worker that uses them (sandbox/sample-worker.ts), plus an
 * API token that may manage both. It needs the sandbox's Cloudflare and R2 simulators (the
 * Access and Workers APIs live in the Cloudflare simulator) and its request log.
 *
 * How to call it (e.g. from startSandbox or an end-to-end test):
 *
 * ```ts
 * const sb = await startSandbox()
 * const world = await startCredentialsWorldBeside(sb, { scriptName: 'avatars-worker' })
 * // or, with simulators of your own: startCredentialsWorld({ cloudflare, r2, log }, { r2: … })
 * // world.accessAppUrl, world.serviceToken.{id, clientId, clientSecret},
 * // world.workerUrl, world.script.{name, versionId}, world.managementToken
 * await world.stop() // before sb.stop()
 * ```
 */
import type { CloudflareSim } from './cloudflare.js'
import { HEALTH_OBJECT_KEY, type Sandbox } from './index.js'
import { PERMISSION_GROUPS } from './cloudflare.js'
import { ACCESS_GROUPS, type SeededServiceToken } from './access.js'
import { AccessProtectedApp } from './access-app.js'
import type { RequestLog } from './log.js'
import type { R2Sim } from './r2.js'
import { SampleWorker } from './sample-worker.js'
import { WORKERS_GROUPS } from './workers.js'

export interface CredentialsWorldOptions {
  /** The account that owns the service token and the script (default: the R2 simulator's). */
  accountId?: string
  /** The R2 object the Worker reads on /healthz, and the credentials its script starts with. */
  r2: { bucket: string; key: string; accessKeyId: string; secretAccessKey: string }
  /** Default 'deploy-bot'. */
  serviceTokenName?: string
  /** Default '8760h' (the API's default). */
  serviceTokenDuration?: string
  /** Default 'avatars-worker'. */
  scriptName?: string
  /** The Worker's secret names (default R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY). */
  secretNames?: { accessKeyId: string; secretAccessKey: string }
}

export interface CredentialsWorld {
  accountId: string
  accessApp: AccessProtectedApp
  /** Answers `GET /healthz` with 200 only for a valid service token pair. */
  accessAppUrl: string
  /** The seeded service token (its secret as issued). */
  serviceToken: SeededServiceToken & { name: string }
  worker: SampleWorker
  /** Answers `GET /healthz` with the live version's R2 credentials. */
  workerUrl: string
  /** The seeded script and its first (deployed) version. */
  script: { name: string; versionId: string }
  secretNames: { accessKeyId: string; secretAccessKey: string }
  /**
   * The value of a user API token with "Access: Service Tokens Write" and "Workers Scripts Write"
   * on the account (the sandbox's own management token holds only API-token rights).
   */
  managementToken: string
  /**
   * Every value that must never appear in output: all service-token secrets ever issued, every
   * value any Worker version held, and the management token.
   */
  secretValues(): string[]
  stop(): Promise<void>
}

function groupId(name: string): string {
  const group = PERMISSION_GROUPS.find(g => g.name === name)
  if (!group) throw new Error(`credentials world: no permission group ${name}`)
  return group.id
}

/**
 * The world beside a running sandbox: its simulators and log, the Worker reading the sandbox's
 * health object with the R2 credentials the sandbox starts with.
 */
export function startCredentialsWorldBeside(
  sb: Sandbox,
  options: Omit<CredentialsWorldOptions, 'r2'> = {}
): Promise<CredentialsWorld> {
  return startCredentialsWorld(
    { cloudflare: sb.cloudflare, r2: sb.r2, log: sb.log },
    {
      ...options,
      r2: {
        bucket: sb.bucket,
        key: HEALTH_OBJECT_KEY,
        accessKeyId: sb.current.id,
        secretAccessKey: sb.current.secretAccessKey
      }
    }
  )
}

export async function startCredentialsWorld(
  sims: { cloudflare: CloudflareSim; r2: R2Sim; log: RequestLog },
  options: CredentialsWorldOptions
): Promise<CredentialsWorld> {
  const { cloudflare, r2, log } = sims
  const accountId = options.accountId ?? r2.accountId
  const secretNames = options.secretNames ?? {
    accessKeyId: 'R2_ACCESS_KEY_ID',
    secretAccessKey: 'R2_SECRET_ACCESS_KEY'
  }
  const name = options.serviceTokenName ?? 'deploy-bot'
  const seeded = cloudflare.access.addServiceToken({
    accountId,
    name,
    ...(options.serviceTokenDuration !== undefined
      ? { duration: options.serviceTokenDuration }
      : {})
  })
  const script = cloudflare.workers.addScript(options.scriptName ?? 'avatars-worker', {
    accountId,
    secrets: {
      [secretNames.accessKeyId]: options.r2.accessKeyId,
      [secretNames.secretAccessKey]: options.r2.secretAccessKey
    }
  })
  const manager = cloudflare.addToken({
    name: 'credentials-manager',
    policies: [
      {
        effect: 'allow',
        permission_groups: [
          { id: groupId(ACCESS_GROUPS.write) },
          { id: groupId(WORKERS_GROUPS.write) }
        ],
        resources: { [`com.cloudflare.api.account.${accountId}`]: '*' }
      }
    ]
  })

  const accessApp = new AccessProtectedApp(log, cloudflare.access, { accountId })
  const worker = new SampleWorker(log, cloudflare.workers, {
    script: script.name,
    r2Url: r2.url,
    bucket: options.r2.bucket,
    key: options.r2.key,
    secretNames
  })
  const started: Array<{ stop(): Promise<void> }> = []
  try {
    for (const service of [accessApp, worker]) {
      await service.start()
      started.push(service)
    }
  } catch (error) {
    await Promise.all(started.map(s => s.stop()))
    throw error
  }

  return {
    accountId,
    accessApp,
    accessAppUrl: accessApp.url,
    serviceToken: { ...seeded, name },
    worker,
    workerUrl: worker.url,
    script,
    secretNames,
    managementToken: manager.value,
    secretValues: () => [
      ...new Set([
        ...cloudflare.access.secretValues(),
        ...cloudflare.workers.secretValues(),
        manager.value
      ])
    ],
    stop: async () => {
      await Promise.all(started.map(s => s.stop()))
    }
  }
}
