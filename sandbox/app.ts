/**
 * The sample app the deploy workflow ships: it holds the R2 credentials of its latest deploy and
 * proves they work on every `GET /healthz` by reading one object through the S3 API. Smoke checks
 * hit it; a watcher polling it during a rotation shows whether the app ever lost access (the
 * zero-downtime claim).
 *
 * `/healthz` answers `ok <version> access-key-id=<id>`: the app names the credential it runs on,
 * so that a check can tell a deploy that rolled out the new token from one that did not.
 *
 * Instead of deployed credentials the app can take them from a source read at every health check
 * (`readCredentials`): a consumer that reads the secrets when it starts, as a job started later
 * does, rather than one that a deploy step hands them to.
 */
import type { RequestLog } from './log.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'
import { objectUrl, s3ErrorCode, s3Getter, type S3Getter } from './s3-client.js'

export interface AppCredentials {
  accessKeyId: string
  secretAccessKey: string
}

export interface SampleAppOptions {
  r2Url: string
  bucket: string
  key: string
  /**
   * The address the app's R2 requests come from, sent as `x-sandbox-client-address` (see
   * `CLIENT_ADDRESS_HEADER`). Default: none (the header is not sent).
   */
  clientAddress?: string
  /**
   * When set, every health check takes its credentials from here (undefined: none to be had)
   * instead of from the latest deploy.
   */
  readCredentials?: () => AppCredentials | undefined
}

/**
 * SANDBOX ONLY, no such header exists on R2: every request reaches the simulators from 127.0.0.1,
 * so the app states the address it would have on the internet, and the R2 simulator enforces a
 * token's IP condition (`request.ip`) against it. A real app sends nothing of the kind; R2 sees
 * its real address.
 */
export const CLIENT_ADDRESS_HEADER = 'x-sandbox-client-address'

export class SampleApp {
  readonly service: Service
  readonly deployments: Array<{ version: string; accessKeyId?: string; at: number }> = []
  /** Each `/healthz` answer: when it began (the credentials are read then) and ended. */
  readonly healthChecks: Array<{ startedAt: number; at: number; status: number }> = []
  private deployed?: { credentials: AppCredentials; client: S3Getter }
  private version?: string

  constructor(
    log: RequestLog,
    private readonly options: SampleAppOptions
  ) {
    this.service = new Service('app', log, req => this.handle(req))
  }

  get url(): string {
    return this.service.url
  }

  start(): Promise<string> {
    return this.service.start()
  }

  stop(): Promise<void> {
    return this.service.stop()
  }

  /** Replaces the running release: the next health check uses these credentials. */
  deploy(credentials: AppCredentials | undefined, version: string): void {
    this.deployed = credentials ? { credentials, client: s3Getter(credentials) } : undefined
    this.version = version
    this.deployments.push({ version, accessKeyId: credentials?.accessKeyId, at: Date.now() })
  }

  /** The credentials the next health check uses (deployed, or read from `readCredentials`). */
  credentials(): AppCredentials | undefined {
    return this.options.readCredentials
      ? this.options.readCredentials()
      : this.deployed?.credentials
  }

  private async handle(req: IncomingRequest): Promise<OutgoingResponse> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed')
    if (req.path === '/') {
      return this.version === undefined
        ? text(503, 'sample app not deployed')
        : text(200, `sample app ${this.version}`)
    }
    if (req.path === '/healthz') {
      const startedAt = Date.now()
      const answer = await this.checkHealth()
      this.healthChecks.push({ startedAt, at: Date.now(), status: answer.status })
      return answer
    }
    return text(404, 'not found')
  }

  private client(): { credentials: AppCredentials; client: S3Getter } | undefined {
    if (!this.options.readCredentials) return this.deployed
    const credentials = this.options.readCredentials()
    return credentials ? { credentials, client: s3Getter(credentials) } : undefined
  }

  private async checkHealth(): Promise<OutgoingResponse> {
    if (this.version === undefined) return text(503, 'r2 error 0 NotDeployed')
    const current = this.client()
    if (!current) return text(503, 'r2 error 0 NoCredentials')
    const { r2Url, bucket, key, clientAddress } = this.options
    let response: { status: number; body: string }
    try {
      response = await current.client.get(
        objectUrl(r2Url, bucket, key),
        clientAddress === undefined ? {} : { [CLIENT_ADDRESS_HEADER]: clientAddress }
      )
    } catch {
      return text(503, 'r2 error 0 NetworkError')
    }
    if (response.status >= 200 && response.status < 300) {
      // The one line a real app adds: it names the credential it runs on. The Access Key ID is
      // the Cloudflare token's id, an identifier and not a secret (the secret is its SHA-256
      // partner), so it may be shown; it lets a smoke check see which token the app really uses.
      return text(200, `ok ${this.version} access-key-id=${current.credentials.accessKeyId}`)
    }
    // Only the S3 error code is echoed: never anything that could carry a credential.
    return text(503, `r2 error ${response.status} ${s3ErrorCode(response.body)}`)
  }
}

function text(status: number, body: string): OutgoingResponse {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8' }, body }
}
