/**
 * A tiny HTTP service base shared by the simulators: listens on 127.0.0.1 (ephemeral port),
 * records every request and its answer in the shared RequestLog, and can inject faults
 * (a status, an optional `retry-after`, a dropped connection, an error that quotes the request
 * back) for the next matching requests, and a network latency (`latencyMs`) that delays every
 * answer.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { RequestLog, RequestEntry, LogServiceName } from './log.js'

export interface Fault {
  method?: string
  /** Matched against the request path (without the query string). */
  path: RegExp
  /** Answer with this status (and a small JSON body); ignored when `drop` is set. */
  status?: number
  retryAfter?: number
  /** Handle the request normally but destroy the connection instead of answering (an ambiguous failure). */
  dropAfterHandling?: boolean
  /** Destroy the connection without handling the request. */
  drop?: boolean
  /** How many matching requests are faulted (default 1). */
  times?: number
  /**
   * Answer with `status` (default 500) and an error message that quotes the request back: its
   * Authorization header and its raw body, as a careless server (or a proxy in front of one) may
   * do. Tests of the action's scrubbing of server error texts use it: whatever the action prints
   * of such an answer must not carry the credential. The body's shape comes from the service's
   * `faultBody` (the Cloudflare envelope for the Cloudflare simulator; `{message, …}` otherwise).
   */
  echoRequest?: boolean
}

export interface IncomingRequest {
  method: string
  /** Path without the query string. */
  path: string
  query: URLSearchParams
  headers: http.IncomingHttpHeaders
  raw: Buffer
  /**
   * The peer's address as the socket reports it (always loopback in the sandbox; simulators that
   * care about the client's address let tests stand another one in for it).
   */
  remoteAddress: string
  /** JSON-parsed body when the content type says JSON (undefined otherwise or when empty). */
  json?: unknown
  entry: RequestEntry
}

export interface OutgoingResponse {
  status: number
  headers?: Record<string, string>
  /** Objects are sent as JSON; strings and Buffers as they are. */
  body?: unknown
}

export type Handler = (req: IncomingRequest) => Promise<OutgoingResponse> | OutgoingResponse

export interface ServiceOptions {
  /** See `Service.latencyMs` (default 0). */
  latencyMs?: number
  /**
   * Headers sent with every answer, an injected fault's too (e.g. the server's `date`, computed
   * from the simulator's own clock). The handler's own headers win over these.
   */
  answerHeaders?: (req: { headers: http.IncomingHttpHeaders }) => Record<string, string>
  /**
   * The JSON body of an injected fault, given its message (`injected fault`, or the quoted request
   * of an `echoRequest` fault). Default: `{message, success: false, errors: [{code: 10000,
   * message}]}`, which both GitHub (`message`) and Cloudflare (`errors`) clients read.
   */
  faultBody?: (message: string, status: number) => unknown
}

function defaultFaultBody(message: string): unknown {
  return { message, success: false, errors: [{ code: 10000, message }] }
}

export class Service {
  readonly faults: Fault[] = []
  /**
   * Called right after an answer was sent (crash tests kill the action here: "the sandbox
   * answered that request, then the process died").
   */
  onAnswered?: (entry: RequestEntry) => void
  /**
   * Called once a request was handled (its effect has taken place, `entry.status` is set) and
   * before its answer is written; the answer waits for the promise it returns. Crash tests kill
   * the action here: the request took effect, and the process died before it could send another
   * (after the answer, a fast client may already have sent its next request).
   */
  beforeAnswer?: (entry: RequestEntry) => Promise<void> | undefined
  /**
   * Holds a request before it is handled until the promise it returns settles (undefined: no
   * hold). Race tests pause one run at a point of their choosing while another runs.
   */
  hold?: (entry: RequestEntry) => Promise<void> | undefined
  /**
   * A simulated network round trip: every answer (a fault's and a dropped connection's too) is
   * held this long after the request arrived and was handled. The log's `at` stays the arrival
   * time. 0 (the default) answers at once. May be changed while the service runs.
   */
  latencyMs: number
  private server?: http.Server
  private readonly answerHeaders?: ServiceOptions['answerHeaders']
  private readonly faultBody: NonNullable<ServiceOptions['faultBody']>
  url = ''

  constructor(
    readonly name: LogServiceName,
    readonly log: RequestLog,
    private readonly handler: Handler,
    options: ServiceOptions = {}
  ) {
    this.latencyMs = options.latencyMs ?? 0
    this.answerHeaders = options.answerHeaders
    this.faultBody = options.faultBody ?? defaultFaultBody
  }

  async start(port = 0): Promise<string> {
    this.server = http.createServer((req, res) => {
      void this.dispatch(req, res)
    })
    this.server.keepAliveTimeout = 30_000
    await new Promise<void>(resolve => this.server!.listen(port, '127.0.0.1', resolve))
    const { port: actual } = this.server.address() as AddressInfo
    this.url = `http://127.0.0.1:${actual}`
    return this.url
  }

  async stop(): Promise<void> {
    if (!this.server) return
    this.server.closeAllConnections()
    await new Promise<void>(resolve => this.server!.close(() => resolve()))
    this.server = undefined
  }

  /** Fault the next matching request(s). */
  inject(fault: Fault): void {
    this.faults.push({ times: 1, ...fault })
  }

  /** Awaited only when there is a latency, so that without one the answer path stays synchronous. */
  private networkDelay(): Promise<void> {
    return new Promise(resolve => setTimeout(resolve, this.latencyMs))
  }

  private takeFault(method: string, path: string): Fault | undefined {
    const i = this.faults.findIndex(
      f =>
        (f.method === undefined || f.method === method) && f.path.test(path) && (f.times ?? 1) > 0
    )
    if (i < 0) return undefined
    const fault = this.faults[i]!
    fault.times = (fault.times ?? 1) - 1
    if (fault.times <= 0) this.faults.splice(i, 1)
    return fault
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const raw = Buffer.concat(chunks)
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const method = (req.method ?? 'GET').toUpperCase()
    let json: unknown
    const type = String(req.headers['content-type'] ?? '')
    if (raw.length > 0 && (type.includes('json') || type === '')) {
      try {
        json = JSON.parse(raw.toString('utf8'))
      } catch {
        json = undefined
      }
    }
    const entry = this.log.addRequest({
      at: Date.now(),
      service: this.name,
      method,
      path: url.pathname + url.search,
      body: json,
      headers: { ...req.headers },
      remotePort: req.socket.remotePort
    })
    const held = this.hold?.(entry)
    if (held) await held
    const fault = this.takeFault(method, url.pathname)
    if (fault?.drop) {
      entry.faulted = true
      entry.status = 0
      if (this.latencyMs > 0) await this.networkDelay()
      req.socket.destroy()
      return
    }
    if (fault && !fault.dropAfterHandling) {
      if (this.latencyMs > 0) await this.networkDelay()
      entry.faulted = true
      entry.status = fault.status ?? 500
      const headers: Record<string, string> = {
        ...(this.answerHeaders?.(req) ?? {}),
        'content-type': 'application/json'
      }
      if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter)
      const message = fault.echoRequest
        ? echoMessage(method, url.pathname, req, raw)
        : 'injected fault'
      res.writeHead(entry.status, headers)
      res.end(JSON.stringify(this.faultBody(message, entry.status)))
      return
    }
    let out: OutgoingResponse
    try {
      out = await this.handler({
        method,
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        raw,
        remoteAddress: req.socket.remoteAddress ?? '',
        json,
        entry
      })
    } catch (error) {
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error)
      this.log.violation(`${this.name} ${method} ${url.pathname}: simulator error: ${message}`)
      out = { status: 500, body: { message: 'simulator error' } }
    }
    if (this.latencyMs > 0) await this.networkDelay()
    if (fault?.dropAfterHandling) {
      entry.faulted = true
      entry.status = out.status
      req.socket.destroy()
      return
    }
    entry.status = out.status
    const before = this.beforeAnswer?.(entry)
    if (before) await before
    const headers: Record<string, string> = {
      ...(this.answerHeaders?.(req) ?? {}),
      ...(out.headers ?? {})
    }
    let payload: Buffer | string | undefined
    if (out.body === undefined || out.status === 204 || out.status === 304) {
      payload = undefined
    } else if (Buffer.isBuffer(out.body) || typeof out.body === 'string') {
      payload = out.body
    } else {
      payload = JSON.stringify(out.body)
      headers['content-type'] ??= 'application/json; charset=utf-8'
    }
    res.writeHead(out.status, headers)
    res.end(payload, () => {
      entry.answeredAt = Date.now()
      this.onAnswered?.(entry)
    })
  }
}

/**
 * The message of an `echoRequest` fault: the request quoted back verbatim, credential included
 * (that is the point: the action must scrub it before printing anything).
 */
function echoMessage(method: string, path: string, req: http.IncomingMessage, raw: Buffer): string {
  const authorization = req.headers.authorization ?? '(none)'
  return `Request rejected: ${method} ${path} with Authorization: ${authorization} and body: ${raw.toString('utf8')}`
}
