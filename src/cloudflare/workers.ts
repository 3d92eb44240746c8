/**
 * A Worker's secrets as a secret target (`worker:SCRIPT`), through the official SDK's
 * `workers.scripts.secrets` and `workers.scripts.deployments` (credentials.md, "Workers secrets"):
 *
 * - every rotated field goes into ONE `PATCH …/workers/scripts/{script}/secrets-bulk` (a JSON merge
 *   patch: the names sent are set, the others stay), which makes one new version and deploys it
 *   to all traffic at once;
 * - Cloudflare refuses secret writes while the latest version is not the one deployed to 100%
 *   (a gradual rollout; code 10215), so preflight reads the live deployment (`GET …/deployments`,
 *   the first entry is live) and refuses such a Worker before anything is minted;
 * - writes may answer 429 "Too many requests are currently modifying the script": the shared
 *   client waits it out (a refused write changed nothing).
 *
 * The calls go through the management token's client (tokens.ts): same retries, same rate budget.
 * Values are sent in the request body only; no message here ever holds one.
 */
import type { WorkerTarget } from '../model.js'
import { type LiveDeployment, workerRefusal } from '../decide.js'
import { CloudflareApiError, type TokenApi } from './tokens.js'

/** The permission group that reads deployments and writes secrets (the OpenAPI `x-api-token-group`). */
export const WORKERS_PERMISSION = 'Workers Scripts Write'

/** What a 401 or 403 of a Workers call means for the management token. */
export const WORKERS_HINT = `The cloudflare-api-token needs '${WORKERS_PERMISSION}' on the account that owns the Worker to write its secrets (dashboard: My Profile → API Tokens → the management token → Edit → add Account › Workers Scripts › Edit for that account).`

/** Cloudflare's code for a secret write while the latest version is not fully deployed. */
export const VERSION_NOT_DEPLOYED = 10215

export interface WorkerSecret {
  name: string
  value: string
}

export class WorkerSecrets {
  constructor(private readonly api: TokenApi) {}

  /**
   * Read-only: the Worker exists, the management token may read it, and one version serves all
   * of its traffic (else a secret write would be refused with 10215). Throws a message naming the
   * target line and what to do.
   */
  async preflight(target: WorkerTarget): Promise<void> {
    let live: LiveDeployment | undefined
    try {
      live = await this.liveDeployment(target)
    } catch (error) {
      // A GET: the request carries no value that the cause could expose.
      throw new Error(
        `secret-targets line '${target.line}' (${describe(target)}): ${hintOf(error)}`,
        { cause: error }
      )
    }
    const refusal = workerRefusal(target.script, live)
    if (refusal) throw new Error(`secret-targets line '${target.line}': ${refusal}`)
  }

  /** The deployment serving traffic now: the first the API lists; undefined when there is none. */
  async liveDeployment(target: WorkerTarget): Promise<LiveDeployment | undefined> {
    const page = await this.api.call(
      `read the deployments of Worker ${target.script} (account ${target.accountId})`,
      client =>
        client.workers.scripts.deployments.list(target.script, { account_id: target.accountId }),
      { hint: WORKERS_HINT }
    )
    // The API answers `result: {deployments: [...]}` (the OpenAPI description), not `result.items`.
    const result = page.result as unknown as { deployments?: unknown }
    const first = Array.isArray(result?.deployments)
      ? (result.deployments[0] as unknown)
      : undefined
    if (!first || typeof first !== 'object') return undefined
    const d = first as { id?: unknown; created_on?: unknown; versions?: unknown }
    const versions = Array.isArray(d.versions) ? (d.versions as unknown[]) : []
    return {
      id: typeof d.id === 'string' ? d.id : '',
      createdOn: typeof d.created_on === 'string' ? d.created_on : '',
      versions: versions.map(v => {
        const entry = (v ?? {}) as { version_id?: unknown; percentage?: unknown }
        return {
          versionId: typeof entry.version_id === 'string' ? entry.version_id : '',
          percentage: typeof entry.percentage === 'number' ? entry.percentage : 0
        }
      })
    }
  }

  /**
   * Every entry in one `PATCH …/secrets-bulk`: one new version, deployed at once. Sent again
   * after a failure with no answer (setting the same values twice makes one more version with
   * the same secrets, nothing else); a 429 is waited out.
   */
  async write(target: WorkerTarget, secrets: WorkerSecret[]): Promise<void> {
    const patch = Object.fromEntries(
      secrets.map(s => [s.name, { name: s.name, text: s.value, type: 'secret_text' as const }])
    )
    try {
      await this.api.call(
        `write ${secrets.length} secret(s) of Worker ${target.script} (account ${target.accountId})`,
        client =>
          client.workers.scripts.secrets.bulkUpdate(target.script, {
            account_id: target.accountId,
            secrets: patch
          }),
        { mutating: true, hint: WORKERS_HINT }
      )
    } catch (error) {
      if (error instanceof CloudflareApiError && error.codes.includes(VERSION_NOT_DEPLOYED)) {
        throw new CloudflareApiError(`${error.message} ${rolloutAdvice(target.script)}`, error)
      }
      throw error
    }
  }
}

export function describe(target: WorkerTarget): string {
  return `worker ${target.script}`
}

function rolloutAdvice(script: string): string {
  return `The latest version of Worker ${script} is not the one deployed to all traffic (a gradual rollout, or a version uploaded but not deployed): finish it (wrangler versions deploy <version>@100%) or roll it back, then run again.`
}

function hintOf(error: unknown): string {
  if (error instanceof CloudflareApiError && error.status === 404) {
    return `${error.message} The Worker was not found in that account: check the name (a Wrangler environment is its own Worker, <name>-<environment>) and account-id.`
  }
  return error instanceof Error ? error.message : String(error)
}
