/**
 * The deployable client of the Access-protected app (sandbox/access-app.ts): what the deploy
 * workflow ships when the rotated credential is an Access service token. It holds the client id
 * and secret of its latest deploy and proves they work on every `GET /healthz` by calling the
 * protected app with them (`CF-Access-Client-Id`, `CF-Access-Client-Secret`), as a service behind
 * Access would be called by another service. It answers 200 `ok client-id=<id>` when Access let
 * it through and 503 `access refused <status>` when not (the client id is an identifier, not a
 * secret; the secret is never echoed).
 *
 * The sandbox's deploy wiring (sandbox/index.ts) redeploys it with the secrets a successful run
 * was dispatched with, and honours the runs' `rollout` (fresh, stale, rolled out then failed) as
 * for the R2 sample app.
 */
import type { RequestLog } from './log.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'
import { httpGet, type GetAnswer } from './http-get.js'

/**
 * Marks the client's own calls to the Access app, so that request counts can leave them out (as
 * they leave out the R2 app's reads of its health object): they are the deployed app's traffic,
 * not the action's.
 */
export const ACCESS_CLIENT_HEADER = 'x-sandbox-access-client'

export interface AccessClientCredentials {
  clientId: string
  clientSecret: string
}

export class AccessClientApp {
  readonly service: Service
  readonly deployments: Array<{ version: string; clientId?: string; at: number }> = []
  /** Each `/healthz` answer, in order (a health history). */
  readonly healthChecks: Array<{ at: number; status: number }> = []
  private deployed?: AccessClientCredentials
  private version?: string

  constructor(
    log: RequestLog,
    private readonly accessAppUrl: string
  ) {
    this.service = new Service('access-client', log, req => this.handle(req))
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

  /** Replaces the running release: the next health check presents these credentials. */
  deploy(credentials: AccessClientCredentials | undefined, version: string): void {
    this.deployed = credentials ? { ...credentials } : undefined
    this.version = version
    this.deployments.push({ version, clientId: credentials?.clientId, at: Date.now() })
  }

  /** The credentials the next health check presents. */
  credentials(): AccessClientCredentials | undefined {
    return this.deployed ? { ...this.deployed } : undefined
  }

  private async handle(req: IncomingRequest): Promise<OutgoingResponse> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed')
    if (req.path === '/') {
      return this.version === undefined
        ? text(503, 'access client not deployed')
        : text(200, `access client ${this.version}`)
    }
    if (req.path !== '/healthz') return text(404, 'not found')
    const answer = await this.checkHealth()
    this.healthChecks.push({ at: Date.now(), status: answer.status })
    return answer
  }

  private async checkHealth(): Promise<OutgoingResponse> {
    const credentials = this.deployed
    if (this.version === undefined) return text(503, 'access client not deployed')
    if (!credentials) return text(503, 'access refused 0 NoCredentials')
    let response: GetAnswer
    try {
      response = await httpGet(`${this.accessAppUrl}/healthz`, {
        'CF-Access-Client-Id': credentials.clientId,
        'CF-Access-Client-Secret': credentials.clientSecret,
        [ACCESS_CLIENT_HEADER]: this.version
      })
    } catch {
      return text(503, 'access refused 0 NetworkError')
    }
    if (response.status !== 200) return text(503, `access refused ${response.status}`)
    return text(200, `ok ${this.version} client-id=${credentials.clientId}`)
  }
}

function text(status: number, body: string): OutgoingResponse {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8' }, body }
}
