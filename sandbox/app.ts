/**
 * The sample app the deploy workflow ships: it holds the R2 credentials of its latest deploy and
 * proves they work on every `GET /healthz` by reading one object through the S3 API. Smoke checks
 * hit it; a watcher polling it during a rotation shows whether the app ever lost access (the
 * zero-downtime claim).
 */
import { AwsClient } from 'aws4fetch'
import type { RequestLog } from './log.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'

export interface AppCredentials {
  accessKeyId: string
  secretAccessKey: string
}

export class SampleApp {
  readonly service: Service
  readonly deployments: Array<{ version: string; accessKeyId?: string; at: number }> = []
  readonly healthChecks: Array<{ at: number; status: number }> = []
  private client?: AwsClient
  private version?: string

  constructor(
    log: RequestLog,
    private readonly options: { r2Url: string; bucket: string; key: string }
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
    this.client = credentials
      ? new AwsClient({
          accessKeyId: credentials.accessKeyId,
          secretAccessKey: credentials.secretAccessKey,
          region: 'auto',
          service: 's3',
          // aws4fetch retries 5xx and 429 ten times by default; a health check must answer at once.
          retries: 0
        })
      : undefined
    this.version = version
    this.deployments.push({ version, accessKeyId: credentials?.accessKeyId, at: Date.now() })
  }

  private async handle(req: IncomingRequest): Promise<OutgoingResponse> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed')
    if (req.path === '/') {
      return this.version === undefined
        ? text(503, 'sample app not deployed')
        : text(200, `sample app ${this.version}`)
    }
    if (req.path === '/healthz') {
      const answer = await this.checkHealth()
      this.healthChecks.push({ at: Date.now(), status: answer.status })
      return answer
    }
    return text(404, 'not found')
  }

  private async checkHealth(): Promise<OutgoingResponse> {
    if (this.version === undefined) return text(503, 'r2 error 0 NotDeployed')
    if (!this.client) return text(503, 'r2 error 0 NoCredentials')
    const { r2Url, bucket, key } = this.options
    const objectUrl = `${r2Url}/${encodeURIComponent(bucket)}/${key.split('/').map(encodeURIComponent).join('/')}`
    let response: Response
    try {
      response = await this.client.fetch(objectUrl, { method: 'GET' })
    } catch {
      return text(503, 'r2 error 0 NetworkError')
    }
    const body = await response.text()
    if (response.ok) return text(200, `ok ${this.version}`)
    // Only the S3 error code is echoed: never anything that could carry a credential.
    const code = /<Code>([A-Za-z0-9]+)<\/Code>/.exec(body)?.[1] ?? 'Unknown'
    return text(503, `r2 error ${response.status} ${code}`)
  }
}

function text(status: number, body: string): OutgoingResponse {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8' }, body }
}
