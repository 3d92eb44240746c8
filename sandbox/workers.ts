/**
 * Workers scripts with secrets, versions and deployments
 * (`/accounts/{account_id}/workers/scripts/{script_name}/…`): list, put, get and delete one secret,
 * `PATCH …/secrets-bulk`, and `GET …/deployments`, as described by
 * sandbox/openapi/cloudflare-access-workers-openapi.json. The Cloudflare simulator routes these
 * calls here after validating them, spending the rate budget, authenticating the API token and
 * checking its permission groups on the account.
 *
 * The model (developers.cloudflare.com/workers/configuration/versions-and-deployments/): a script
 * has versions, each an immutable snapshot of its code and bindings, secrets included; a
 * deployment says which versions serve traffic and at what percentage, and "the first deployment
 * in the list is the latest deployment actively serving traffic" (the excerpt's list). Secret
 * values live in the versions, so deploying (rolling back to) an old version brings its secret
 * values back. Writing a secret makes one new version that is deployed to 100% at once; a
 * `secrets-bulk` PATCH is a JSON merge patch (RFC 7396: an object sets, `null` deletes, an omitted
 * name stays) that makes ONE version for all its changes.
 *
 * A script in a gradual rollout refuses secret writes: when the latest version is not the one
 * deployed to 100% (versions uploaded but not deployed, a split deployment, or a rollback to an
 * older version) the API answers code 10215 (wrangler's `VERSION_NOT_DEPLOYED_ERR_CODE`,
 * cloudflare/workers-sdk packages/wrangler/src/secret/index.ts; a rollback leaving the latest
 * version undeployed breaks the next secret write, pollinations/pollinations#12084).
 *
 * Values are kept in memory only: no event and no answer carries one.
 *
 * Error answers:
 * - a script that does not exist in the account: 404, 10007 `workers.api.error.script_not_found`
 *   (wrangler treats code 10007 as "the Worker does not exist"; the status and text are
 *   UNCONFIRMED);
 * - a secret that does not exist: 404, 10056 "Secret not found" (code and text are this
 *   simulator's choice);
 * - a write while the latest version is not fully deployed: 400, 10215 with the sentence wrangler
 *   shows for it (UNCONFIRMED: the API's own text is not published, and the status is a guess);
 * - a write while `injectBusy` is armed: 429, 10429 "Too many requests are currently modifying
 *   the script." (the excerpt documents the 429 and its description; the code is this simulator's
 *   choice);
 * - a body the simulator refuses (a `secret_key` binding, which it does not simulate; a map key
 *   that differs from the secret's `name`): 400, 10001 (this simulator's choice).
 *
 * UNCONFIRMED, beside the codes above (listed in sandbox/README.md): that PATCH …/secrets-bulk and
 * DELETE …/secrets/{name} are refused with 10215 like PUT; that a DELETE makes and deploys a new
 * version like a write; that a PATCH that changes nothing still makes a version; the deployment
 * annotation `workers/triggered_by` values (`secret`, `rollback`, `deployment`); that list and get
 * show the latest version's secrets (the version script-level writes build on), which differs
 * from the live one during a rollout or after a rollback; and which version a split deployment's
 * "live" secrets come from (`liveVersion`: the version with the largest share, the newer one on a
 * tie).
 */
import { randomUUID } from 'node:crypto'
import type { RequestLog } from './log.js'
import {
  failure,
  success,
  timestamp,
  type AccountApi,
  type AccountCall,
  type Clock,
  type Outcome
} from './cloudflare-api.js'

/** The permission groups of these endpoints, as the excerpt's `x-api-token-group` names them. */
export const WORKERS_GROUPS = {
  read: 'Workers Scripts Read',
  write: 'Workers Scripts Write',
  tail: 'Workers Tail Read'
} as const

export const WORKERS_ERROR_CODES = {
  badRequest: 10001,
  scriptNotFound: 10007,
  secretNotFound: 10056,
  versionNotDeployed: 10215,
  busy: 10429
} as const

/** The sentence wrangler prints for code 10215 (see the file comment). */
export const VERSION_NOT_DEPLOYED_MESSAGE =
  "Secret edit failed. You attempted to modify a secret, but the latest version of your Worker isn't currently deployed. Please ensure that the latest version of your Worker is fully deployed before modifying secrets."

export const BUSY_MESSAGE = 'Too many requests are currently modifying the script.'

export interface WorkerVersion {
  id: string
  /** 1, 2, 3… in upload order. */
  number: number
  createdOn: string
  /** Secret names and values (the version's snapshot). */
  secrets: Readonly<Record<string, string>>
  /** What made it: `seed`, `upload`, `secret-put`, `secret-delete`, `secrets-bulk`. */
  origin: string
}

export interface WorkerDeployment {
  id: string
  created_on: string
  source: string
  strategy: 'percentage'
  versions: Array<{ version_id: string; percentage: number }>
  annotations: { 'workers/triggered_by': string; 'workers/message'?: string }
}

interface ScriptRecord {
  name: string
  accountId: string
  /** Oldest first. */
  versions: Array<{
    id: string
    number: number
    createdOn: number
    secrets: Map<string, string>
    origin: string
  }>
  /** Oldest first; the last one is live. */
  deployments: WorkerDeployment[]
  /** Writes still to be answered with 429. */
  busy: number
}

interface SecretBody {
  name?: string
  type?: string
  text?: string
}

type WriteOrigin = 'secret-put' | 'secret-delete' | 'secrets-bulk'

const READ = [WORKERS_GROUPS.tail, WORKERS_GROUPS.write, WORKERS_GROUPS.read]
const OPERATIONS = {
  'worker-deployments-list-deployments': READ,
  'worker-list-script-secrets': READ,
  // The excerpt names no group for get; it reads what list reads (inferred).
  'worker-get-script-secret': READ,
  'worker-put-script-secret': [WORKERS_GROUPS.write],
  'worker-delete-script-secret': [WORKERS_GROUPS.write],
  // The excerpt names no group for the bulk PATCH; it writes secrets like PUT (inferred).
  'worker-patch-script-secrets-bulk': [WORKERS_GROUPS.write]
} as const satisfies Record<string, readonly string[]>

export class WorkersSim implements AccountApi {
  readonly operations: Readonly<Record<string, readonly string[]>> = OPERATIONS
  private readonly scripts = new Map<string, ScriptRecord>()
  /** Every secret value ever held by a version (for leak scans); never printed. */
  private readonly values = new Set<string>()

  constructor(
    private readonly log: RequestLog,
    private readonly now: Clock
  ) {}

  /**
   * Seeds a script (no HTTP, no log event) with one version holding `secrets`, deployed to 100%.
   * Script names follow the excerpt's pattern (`^[a-z0-9_][a-z0-9-_]*$`).
   */
  addScript(
    name: string,
    options: { accountId: string; secrets?: Record<string, string> }
  ): { name: string; versionId: string } {
    if (!/^[a-z0-9_][a-z0-9-_]*$/.test(name)) throw new Error(`addScript: bad script name ${name}`)
    if (this.scripts.has(name)) throw new Error(`addScript: script ${name} exists`)
    const script: ScriptRecord = {
      name,
      accountId: options.accountId,
      versions: [],
      deployments: [],
      busy: 0
    }
    this.scripts.set(name, script)
    const version = this.addVersion(script, new Map(Object.entries(options.secrets ?? {})), 'seed')
    this.deploy(script, [{ version_id: version.id, percentage: 100 }], 'deployment', false)
    return { name, versionId: version.id }
  }

  /**
   * Uploads a new version without deploying it (`wrangler versions upload`): its secrets are the
   * latest version's with `secrets` merged in (`null` removes). From now on secret writes answer
   * 10215 until the latest version is deployed to 100%.
   */
  uploadVersion(script: string, options: { secrets?: Record<string, string | null> } = {}): string {
    const record = this.mustGet(script)
    const secrets = new Map(record.versions.at(-1)!.secrets)
    for (const [name, value] of Object.entries(options.secrets ?? {})) {
      if (value === null) secrets.delete(name)
      else secrets.set(name, value)
    }
    const version = this.addVersion(record, secrets, 'upload')
    this.log.event('cloudflare', 'worker.version_created', {
      script,
      version_id: version.id,
      number: version.number,
      origin: 'upload',
      deployed: false
    })
    return version.id
  }

  /**
   * A gradual rollout: uploads a new version (as `uploadVersion`) and deploys it to `percentage`
   * (default 10) of the traffic, the live version keeping the rest. Secret writes answer 10215
   * until `finishRollout`.
   */
  startGradualRollout(
    script: string,
    options: { percentage?: number; secrets?: Record<string, string | null> } = {}
  ): { versionId: string } {
    const percentage = options.percentage ?? 10
    if (!(percentage > 0 && percentage < 100)) {
      throw new Error('startGradualRollout: the percentage must be between 0 and 100, exclusive')
    }
    const record = this.mustGet(script)
    const live = this.liveRecord(record)
    const versionId = this.uploadVersion(script, options)
    this.deploy(
      record,
      [
        { version_id: versionId, percentage },
        { version_id: live.id, percentage: 100 - percentage }
      ],
      'deployment',
      true
    )
    return { versionId }
  }

  /** Deploys the latest version to 100% (ends a rollout, or deploys an uploaded version). */
  finishRollout(script: string): void {
    const record = this.mustGet(script)
    this.deploy(
      record,
      [{ version_id: record.versions.at(-1)!.id, percentage: 100 }],
      'deployment',
      true
    )
  }

  /**
   * What a user's rollback does: deploys an older version to 100%, which brings its secret values
   * back; the latest version is then no longer deployed, so secret writes answer 10215.
   */
  rollbackTo(script: string, versionId: string): void {
    const record = this.mustGet(script)
    if (!record.versions.some(v => v.id === versionId)) {
      throw new Error(`rollbackTo: ${script} has no version ${versionId}`)
    }
    this.deploy(record, [{ version_id: versionId, percentage: 100 }], 'rollback', true)
  }

  /** The next `times` secret writes to the script answer 429 (default 1). */
  injectBusy(script: string, times = 1): void {
    this.mustGet(script).busy += times
  }

  /**
   * The version serving the script's traffic: the newest deployment's version with the largest
   * share (the newer one on a tie).
   */
  liveVersion(script: string): WorkerVersion | undefined {
    const record = this.scripts.get(script)
    return record && this.toVersion(this.liveRecord(record))
  }

  /** The live version's secret values (see `liveVersion`). */
  secretsOf(script: string): Record<string, string> {
    return { ...(this.liveVersion(script)?.secrets ?? {}) }
  }

  /** Every version, oldest first. */
  versionsOf(script: string): WorkerVersion[] {
    return this.mustGet(script).versions.map(v => this.toVersion(v))
  }

  /** Every deployment, newest first (as the API lists them). */
  deploymentsOf(script: string): WorkerDeployment[] {
    return structuredClone(this.mustGet(script).deployments).reverse()
  }

  /** Whether secret writes are refused with 10215 right now. */
  inRollout(script: string): boolean {
    return this.rolloutBlocks(this.mustGet(script))
  }

  /** Every secret value any version ever held. */
  secretValues(): string[] {
    return [...this.values]
  }

  handle(call: AccountCall): Outcome {
    const name = call.params['script_name'] ?? ''
    const script = this.scripts.get(name)
    if (!script || script.accountId !== call.accountId) {
      return failure(404, {
        code: WORKERS_ERROR_CODES.scriptNotFound,
        message: 'workers.api.error.script_not_found'
      })
    }
    switch (call.operationId) {
      case 'worker-deployments-list-deployments':
        return success({ deployments: this.deploymentsOf(name) })
      case 'worker-list-script-secrets':
        return success([...script.versions.at(-1)!.secrets.keys()].sort().map(n => secretMeta(n)))
      case 'worker-get-script-secret': {
        const secretName = this.secretName(call)
        return script.versions.at(-1)!.secrets.has(secretName)
          ? success(secretMeta(secretName))
          : this.secretNotFound(secretName)
      }
      case 'worker-put-script-secret':
        return this.put(script, call.body as SecretBody)
      case 'worker-delete-script-secret':
        return this.remove(script, this.secretName(call))
      case 'worker-patch-script-secrets-bulk':
        return this.patch(script, (call.body ?? {}) as { secrets?: Record<string, unknown> })
      default:
        throw new Error(`WorkersSim: no handler for ${call.operationId}`)
    }
  }

  private put(script: ScriptRecord, body: SecretBody): Outcome {
    const refused = this.refuseWrite(script)
    if (refused) return refused
    const bad = badSecret(body, body.name)
    if (bad) return bad
    const secrets = new Map(script.versions.at(-1)!.secrets)
    secrets.set(body.name!, body.text!)
    this.writeVersion(script, secrets, 'secret-put', [body.name!], [])
    return success(secretMeta(body.name!))
  }

  private remove(script: ScriptRecord, name: string): Outcome {
    const refused = this.refuseWrite(script)
    if (refused) return refused
    const secrets = new Map(script.versions.at(-1)!.secrets)
    if (!secrets.has(name)) return this.secretNotFound(name)
    secrets.delete(name)
    this.writeVersion(script, secrets, 'secret-delete', [], [name])
    // The excerpt's delete answers a result that may be null.
    return success(null)
  }

  private patch(script: ScriptRecord, body: { secrets?: Record<string, unknown> }): Outcome {
    const refused = this.refuseWrite(script)
    if (refused) return refused
    const secrets = new Map(script.versions.at(-1)!.secrets)
    const changed: string[] = []
    const removed: string[] = []
    for (const [name, value] of Object.entries(body.secrets ?? {})) {
      if (value === null) {
        if (secrets.delete(name)) removed.push(name)
        continue
      }
      const bad = badSecret(value as SecretBody, name)
      if (bad) return bad
      secrets.set(name, (value as SecretBody).text!)
      changed.push(name)
    }
    this.writeVersion(script, secrets, 'secrets-bulk', changed, removed)
    // "Map of secret names to secret metadata for resulting secrets."
    return success(Object.fromEntries([...secrets.keys()].sort().map(n => [n, secretMeta(n)])))
  }

  /** 429 while `injectBusy` is armed; 10215 while the latest version is not fully deployed. */
  private refuseWrite(script: ScriptRecord): Outcome | undefined {
    if (script.busy > 0) {
      script.busy -= 1
      this.log.event('cloudflare', 'worker.busy', { script: script.name })
      return failure(429, { code: WORKERS_ERROR_CODES.busy, message: BUSY_MESSAGE })
    }
    if (this.rolloutBlocks(script)) {
      const live = script.deployments.at(-1)!
      this.log.event('cloudflare', 'worker.secret_write_refused', {
        script: script.name,
        code: WORKERS_ERROR_CODES.versionNotDeployed,
        latest_version_id: script.versions.at(-1)!.id,
        deployed: structuredClone(live.versions)
      })
      return failure(400, {
        code: WORKERS_ERROR_CODES.versionNotDeployed,
        message: VERSION_NOT_DEPLOYED_MESSAGE
      })
    }
    return undefined
  }

  /** The latest version is not the one and only version of the live deployment. */
  private rolloutBlocks(script: ScriptRecord): boolean {
    const live = script.deployments.at(-1)!
    const latest = script.versions.at(-1)!
    return !(
      live.versions.length === 1 &&
      live.versions[0]!.percentage === 100 &&
      live.versions[0]!.version_id === latest.id
    )
  }

  /** One new version with these secrets, deployed to 100% at once. */
  private writeVersion(
    script: ScriptRecord,
    secrets: Map<string, string>,
    origin: WriteOrigin,
    changed: string[],
    removed: string[]
  ): void {
    const version = this.addVersion(script, secrets, origin)
    this.log.event('cloudflare', 'worker.version_created', {
      script: script.name,
      version_id: version.id,
      number: version.number,
      origin,
      changed,
      removed,
      deployed: true
    })
    this.deploy(script, [{ version_id: version.id, percentage: 100 }], 'secret', true)
  }

  private addVersion(
    script: ScriptRecord,
    secrets: Map<string, string>,
    origin: string
  ): ScriptRecord['versions'][number] {
    const version = {
      id: randomUUID(),
      number: script.versions.length + 1,
      createdOn: this.now(),
      secrets,
      origin
    }
    script.versions.push(version)
    for (const value of secrets.values()) this.values.add(value)
    return version
  }

  private deploy(
    script: ScriptRecord,
    versions: WorkerDeployment['versions'],
    triggeredBy: string,
    logged: boolean
  ): void {
    const deployment: WorkerDeployment = {
      id: randomUUID(),
      created_on: timestamp(this.now()),
      source: 'api',
      strategy: 'percentage',
      versions,
      annotations: { 'workers/triggered_by': triggeredBy }
    }
    script.deployments.push(deployment)
    if (logged) {
      this.log.event('cloudflare', 'worker.deployed', {
        script: script.name,
        deployment_id: deployment.id,
        versions: structuredClone(versions),
        triggered_by: triggeredBy
      })
    }
  }

  private liveRecord(script: ScriptRecord): ScriptRecord['versions'][number] {
    const shares = script.deployments.at(-1)!.versions
    const number = (id: string): number => script.versions.find(v => v.id === id)!.number
    const top = [...shares].sort(
      (a, b) => b.percentage - a.percentage || number(b.version_id) - number(a.version_id)
    )[0]!
    return script.versions.find(v => v.id === top.version_id)!
  }

  private toVersion(version: ScriptRecord['versions'][number]): WorkerVersion {
    return {
      id: version.id,
      number: version.number,
      createdOn: timestamp(version.createdOn),
      secrets: Object.fromEntries(version.secrets),
      origin: version.origin
    }
  }

  /** The `{secret_name}` path parameter, decoded when `url_encoded=true` says it is encoded. */
  private secretName(call: AccountCall): string {
    const raw = call.params['secret_name'] ?? ''
    if (call.query.get('url_encoded') !== 'true') return raw
    try {
      return decodeURIComponent(raw)
    } catch {
      return raw
    }
  }

  private secretNotFound(name: string): Outcome {
    return failure(404, {
      code: WORKERS_ERROR_CODES.secretNotFound,
      message: `Secret not found: ${name}`
    })
  }

  private mustGet(script: string): ScriptRecord {
    const record = this.scripts.get(script)
    if (!record) throw new Error(`WorkersSim: no script ${script}`)
    return record
  }
}

/** What the API shows of a secret: its name and type, never its value. */
function secretMeta(name: string): { name: string; type: 'secret_text' } {
  return { name, type: 'secret_text' }
}

/** A 400 for a secret the simulator will not store (see the file comment), or undefined. */
function badSecret(body: SecretBody, expectedName: string | undefined): Outcome | undefined {
  const bad = (message: string): Outcome =>
    failure(400, { code: WORKERS_ERROR_CODES.badRequest, message })
  if (body.type !== 'secret_text') {
    return bad(`Secrets of type ${String(body.type)} are not simulated; use secret_text`)
  }
  if (typeof body.name !== 'string' || typeof body.text !== 'string') {
    return bad('A secret_text binding needs a name and a text')
  }
  if (expectedName !== undefined && body.name !== expectedName) {
    return bad(`The secret under ${expectedName} is named ${body.name}`)
  }
  return undefined
}
