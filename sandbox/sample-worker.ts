/**
 * A deployed Worker whose code reads R2 credentials from its secrets (`env.R2_ACCESS_KEY_ID`,
 * `env.R2_SECRET_ACCESS_KEY` by default) and proves them on `GET /healthz` by reading one object
 * through R2's S3 API. Every request reads the secrets of the script's LIVE version in the Workers
 * simulator (`WorkersSim.liveVersion`), as a Worker's `env` holds the bindings of the version that
 * serves the request: a secret write (a new version deployed at once) changes what the next
 * request uses, and a rollback to an older version brings that version's secrets back.
 *
 * Answers: `ok <version id> access-key-id=<id>` (200) when the read succeeds; otherwise 503 with
 * `r2 error <status> <S3 error code>` (never anything that could carry a credential), or
 * `r2 error 0 NoCredentials` when the live version lacks one of the two secrets.
 */
import type { RequestLog } from './log.js'
import { Service, type IncomingRequest, type OutgoingResponse } from './service.js'
import type { WorkersSim } from './workers.js'
import { objectUrl, s3ErrorCode, s3Getter } from './s3-client.js'

export interface SampleWorkerOptions {
  /** The Workers script this Worker runs as. */
  script: string
  r2Url: string
  bucket: string
  key: string
  /** The secret names the code reads (default R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY). */
  secretNames?: { accessKeyId: string; secretAccessKey: string }
}

export interface WorkerHealthCheck {
  at: number
  status: number
  /** The live version that served the check. */
  versionId?: string
  accessKeyId?: string
}

export class SampleWorker {
  readonly service: Service
  /** Every `/healthz` answer, in order (a health history). */
  readonly healthChecks: WorkerHealthCheck[] = []
  private readonly secretNames: { accessKeyId: string; secretAccessKey: string }

  constructor(
    log: RequestLog,
    private readonly workers: WorkersSim,
    private readonly options: SampleWorkerOptions
  ) {
    this.secretNames = options.secretNames ?? {
      accessKeyId: 'R2_ACCESS_KEY_ID',
      secretAccessKey: 'R2_SECRET_ACCESS_KEY'
    }
    this.service = new Service('worker', log, req => this.handle(req))
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

  private async handle(req: IncomingRequest): Promise<OutgoingResponse> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed')
    const version = this.workers.liveVersion(this.options.script)
    if (req.path === '/') {
      return version
        ? text(200, `sample worker ${version.id}`)
        : text(503, 'sample worker not deployed')
    }
    if (req.path !== '/healthz') return text(404, 'not found')
    const at = Date.now()
    const accessKeyId = version?.secrets[this.secretNames.accessKeyId]
    const secretAccessKey = version?.secrets[this.secretNames.secretAccessKey]
    let answer: OutgoingResponse
    if (!version) answer = text(503, 'r2 error 0 NotDeployed')
    else if (accessKeyId === undefined || secretAccessKey === undefined) {
      answer = text(503, 'r2 error 0 NoCredentials')
    } else {
      answer = await this.readObject(accessKeyId, secretAccessKey, version.id)
    }
    this.healthChecks.push({
      at,
      status: answer.status,
      ...(version ? { versionId: version.id } : {}),
      ...(accessKeyId !== undefined ? { accessKeyId } : {})
    })
    return answer
  }

  private async readObject(
    accessKeyId: string,
    secretAccessKey: string,
    versionId: string
  ): Promise<OutgoingResponse> {
    const { r2Url, bucket, key } = this.options
    let response: { status: number; body: string }
    try {
      response = await s3Getter({ accessKeyId, secretAccessKey }).get(objectUrl(r2Url, bucket, key))
    } catch {
      return text(503, 'r2 error 0 NetworkError')
    }
    if (response.status >= 200 && response.status < 300) {
      return text(200, `ok ${versionId} access-key-id=${accessKeyId}`)
    }
    return text(503, `r2 error ${response.status} ${s3ErrorCode(response.body)}`)
  }
}

function text(status: number, body: string): OutgoingResponse {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8' }, body }
}
